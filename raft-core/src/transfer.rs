//! Leadership transfer (thesis 3.10): catch the target up, then tell it to campaign.

use crate::entry::NodeId;
use crate::error::{Error, Result};
use crate::message::MessageBody;
use crate::raw_node::RawNode;
use crate::ready::Role;
use crate::storage::Storage;

impl<S: Storage> RawNode<S> {
    /// Hands leadership to voter `to`. Proposals are refused until the transfer ends;
    /// it is abandoned after an election timeout.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<()> {
        self.debug_check_not_in_ready();
        self.check_failure()?;
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if to == self.id || !self.conf.is_voter(to) {
            return Err(Error::InvalidTransferTarget);
        }
        if self.lead_transferee == Some(to) {
            return Ok(());
        }
        self.lead_transferee = Some(to);
        // The transfer must finish within one election timeout.
        self.election_elapsed_ticks = 0;
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.lease_revoked = true;
            self.send(to, MessageBody::TimeoutNow);
        } else {
            self.send_append(to, true);
        }
        Ok(())
    }

    /// Target of the leadership transfer in progress, if any.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.lead_transferee
    }
}
