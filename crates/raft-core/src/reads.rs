//! Linearizable reads through ReadIndex (thesis 6.4).

use crate::error::{Error, Result};
use crate::quorum::joint;
use crate::raw_node::RawNode;
use crate::ready::{ReadState, Role};
use crate::storage::Storage;

impl<S: Storage> RawNode<S> {
    /// Requests a linearizable read. When confirmed, a [`ReadState`] with `ctx` appears in
    /// a Ready; the read may be served once the state machine has applied its index.
    /// Reads wait until the leader has committed an entry of its own term. Reads pending
    /// when leadership is lost are dropped (the driver times them out and retries).
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<()> {
        self.debug_check_not_in_ready();
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if self.log.term(self.log.committed) != Ok(self.term) {
            self.read_only.park(ctx);
            return Ok(());
        }
        self.register_read(ctx);
        Ok(())
    }

    fn register_read(&mut self, ctx: Vec<u8>) {
        let index = self.log.committed;
        if self.cfg.lease_reads {
            // CheckQuorum keeps this node leader only while a quorum hears from it.
            self.read_states.push(ReadState { index, ctx });
            return;
        }
        self.read_only.register(index, ctx);
        // A single voter confirms its own rounds.
        self.confirm_reads();
    }

    /// Called on the first commit of the leader's term.
    pub(crate) fn release_parked_reads(&mut self) {
        for ctx in self.read_only.take_parked() {
            self.register_read(ctx);
        }
    }

    /// Releases reads whose round a quorum of voters has acknowledged.
    pub(crate) fn confirm_reads(&mut self) {
        let me = self.id;
        let own_round = self.read_only.round();
        let confirmed = joint::committed_index(&self.conf, |id| {
            if id == me {
                Some(own_round)
            } else {
                self.progress.get(&id).map(|p| p.read_round_acked)
            }
        });
        self.read_only.confirm(confirmed, &mut self.read_states);
    }
}
