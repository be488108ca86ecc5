//! Who a node is to its peers: the cluster it belongs to and its incarnation.
//!
//! Both are written to `DIR/identity` when a node first starts on a data
//! directory. The cluster id of a founding member is derived from the founding
//! members' ids (the same value as [`NodeConfig::cluster_id`], which etcd
//! clients see); a joining node does not know it yet and sends 0. The
//! incarnation is random: a member that lost its data directory and started
//! again is a new incarnation of the same id.
//!
//! Every Raft message on the peer lane carries both ([`PeerMessage`]). A
//! [`PeerGate`] drops messages from another cluster, and from a known peer
//! that comes back as a new incarnation: such a node forgot the votes it cast
//! and what it acknowledged, so it must be removed and added back before it
//! takes part again. The incarnations a node has seen are kept in
//! `DIR/peer-incarnations`, so a restart does not forget them. Removing a
//! member forgets its incarnation (it may come back as a new one).
//!
//! A follower hears only from its leader, so on its own it would not know
//! the incarnation of a peer that never wrote to it, and would take that
//! peer's re-created self for a new member once it leads. A leader's
//! heartbeats therefore carry the incarnations it knows
//! ([`PeerMessage::peers`]), and a receiver records those it had none for.
//!
//! [`NodeConfig::cluster_id`]: crate::config::NodeConfig::cluster_id

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use raft_core::{Message, MessageBody};
use serde::{Deserialize, Serialize};

const IDENTITY_FILE: &str = "identity";
const PEERS_FILE: &str = "peer-incarnations";

/// This node's cluster id and incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The cluster (0: not known yet, a joining node).
    pub cluster_id: u64,
    /// Random, chosen when the data directory was first used.
    pub incarnation: u64,
}

/// The cluster id of a cluster founded by `ids`: FNV-1a over the sorted ids.
pub fn founding_cluster_id(ids: &[u64]) -> u64 {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.iter()
        .flat_map(|id| id.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Writes `bytes` to `path` durably (temporary file, fsync, rename, directory
/// fsync).
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
    )
}

impl Identity {
    /// Reads `dir/identity`, or writes a new one: a founding member (with
    /// `founding` ids) gets their cluster id, a joining node 0; the
    /// incarnation is random.
    pub fn load_or_create(dir: &Path, founding: Option<&[u64]>) -> io::Result<Identity> {
        let path = dir.join(IDENTITY_FILE);
        if let Some(bytes) = read_optional(&path)? {
            return postcard::from_bytes(&bytes).map_err(|e| corrupt(&path, e));
        }
        use rand::RngCore;
        let id = Identity {
            cluster_id: founding.map_or(0, founding_cluster_id),
            incarnation: rand::rngs::OsRng.next_u64().max(1),
        };
        let bytes = postcard::to_stdvec(&id).map_err(|e| corrupt(&path, e))?;
        write_durably(&path, &bytes)?;
        tracing::info!(
            cluster_id = id.cluster_id,
            incarnation = id.incarnation,
            "recorded this member's identity"
        );
        Ok(id)
    }
}

/// A Raft message on the peer lane, with its sender's identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerMessage {
    /// The sender's cluster id (0: a joining node that does not know it yet).
    pub cluster_id: u64,
    /// The sender's incarnation.
    pub incarnation: u64,
    /// The receiver's incarnation as the sender knows it (0: not known yet).
    /// A re-created node learns from it that its peers knew another
    /// incarnation, and does not follow them either.
    pub to_incarnation: u64,
    /// Incarnations the sender knows of other members, sent with heartbeats
    /// (empty on other messages): `(id, incarnation)`.
    pub peers: Vec<(u64, u64)>,
    /// The message.
    pub msg: Message,
}

impl raft_net::Envelope for PeerMessage {
    fn claimed_sender(&self) -> Option<u64> {
        Some(self.msg.from)
    }
}

/// Decides whose messages this node accepts (see the module docs).
pub struct PeerGate {
    me: Identity,
    path: PathBuf,
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    /// Incarnation seen for each peer.
    known: BTreeMap<u64, u64>,
    /// Peers whose last message was refused (their bulk traffic is dropped too).
    refused: BTreeSet<u64>,
}

impl PeerGate {
    /// A gate for node `me` keeping what it has seen in `dir`.
    pub fn load(dir: &Path, me: Identity) -> io::Result<PeerGate> {
        let path = dir.join(PEERS_FILE);
        let known = match read_optional(&path)? {
            Some(bytes) => postcard::from_bytes(&bytes).map_err(|e| corrupt(&path, e))?,
            None => BTreeMap::new(),
        };
        Ok(PeerGate {
            me,
            path,
            state: Mutex::new(GateState {
                known,
                refused: BTreeSet::new(),
            }),
        })
    }

    /// Wraps `msg` for sending.
    pub fn wrap(&self, msg: Message) -> PeerMessage {
        let st = self.lock();
        let to_incarnation = st.known.get(&msg.to).copied().unwrap_or(0);
        let peers = match msg.body {
            MessageBody::Heartbeat { .. } => st
                .known
                .iter()
                .filter(|&(&id, _)| id != msg.to)
                .map(|(&id, &inc)| (id, inc))
                .collect(),
            _ => Vec::new(),
        };
        PeerMessage {
            cluster_id: self.me.cluster_id,
            incarnation: self.me.incarnation,
            to_incarnation,
            peers,
            msg,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, known: &BTreeMap<u64, u64>) {
        let res = postcard::to_stdvec(known)
            .map_err(|e| corrupt(&self.path, e))
            .and_then(|b| write_durably(&self.path, &b));
        if let Err(e) = res {
            // Only a restart loses the record; the check in memory stands.
            tracing::error!(path = %self.path.display(), error = %e, "cannot record peer incarnations");
        }
    }

    /// The message from authenticated peer `from`, if it may be delivered.
    pub fn admit(&self, from: u64, m: PeerMessage) -> Option<Message> {
        let mut st = self.lock();
        let ok = self.judge(&mut st, from, &m);
        if ok {
            st.refused.remove(&from);
            self.learn(&mut st, &m);
            Some(m.msg)
        } else {
            st.refused.insert(from);
            None
        }
    }

    fn judge(&self, st: &mut GateState, from: u64, m: &PeerMessage) -> bool {
        if m.msg.from != from {
            return false;
        }
        if self.me.cluster_id != 0 && m.cluster_id != 0 && m.cluster_id != self.me.cluster_id {
            if !st.refused.contains(&from) {
                tracing::error!(
                    from,
                    theirs = m.cluster_id,
                    ours = self.me.cluster_id,
                    "peer belongs to another cluster; its messages are dropped"
                );
            }
            return false;
        }
        if m.to_incarnation != 0 && m.to_incarnation != self.me.incarnation {
            if !st.refused.contains(&from) {
                tracing::error!(
                    from,
                    known_as = m.to_incarnation,
                    me = self.me.incarnation,
                    "peer knows this node as another incarnation: this node lost its data or \
                     was re-created; remove it from the cluster and add it back"
                );
            }
            return false;
        }
        match st.known.get(&from) {
            Some(&i) if i == m.incarnation => true,
            Some(&i) => {
                if !st.refused.contains(&from) {
                    tracing::error!(
                        from,
                        known = i,
                        now = m.incarnation,
                        "peer came back as a new incarnation (it lost its data or was re-created); \
                         its messages are dropped until it is removed and added back"
                    );
                }
                false
            }
            None => {
                st.known.insert(from, m.incarnation);
                let known = st.known.clone();
                self.save(&known);
                true
            }
        }
    }

    /// Records the incarnations an admitted message tells of members this
    /// node has not heard from itself. One it knows otherwise is kept: what
    /// this node saw itself wins over hearsay.
    fn learn(&self, st: &mut GateState, m: &PeerMessage) {
        let mut changed = false;
        for &(id, inc) in &m.peers {
            if id == m.msg.to || id == m.msg.from || inc == 0 {
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = st.known.entry(id) {
                e.insert(inc);
                changed = true;
            }
        }
        if changed {
            let known = st.known.clone();
            self.save(&known);
        }
    }

    /// True if the last message from `from` was refused: its bulk traffic
    /// (snapshots, forwarded requests) is dropped too.
    pub fn refuses(&self, from: u64) -> bool {
        self.lock().refused.contains(&from)
    }

    /// Member `id` was removed: it may come back as a new incarnation.
    pub fn forget(&self, id: u64) {
        let mut st = self.lock();
        st.refused.remove(&id);
        if st.known.remove(&id).is_some() {
            let known = st.known.clone();
            self.save(&known);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(from: u64, cluster_id: u64, incarnation: u64) -> PeerMessage {
        PeerMessage {
            cluster_id,
            incarnation,
            to_incarnation: 0,
            peers: Vec::new(),
            msg: Message {
                from,
                to: 1,
                term: 1,
                body: MessageBody::TimeoutNow,
            },
        }
    }

    #[test]
    fn identity_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path(), Some(&[3, 1, 2])).unwrap();
        assert_eq!(a.cluster_id, founding_cluster_id(&[1, 2, 3]));
        let b = Identity::load_or_create(dir.path(), None).unwrap();
        assert_eq!(a, b, "read back, not re-created");
        let other = tempfile::tempdir().unwrap();
        let c = Identity::load_or_create(other.path(), Some(&[1, 2, 3])).unwrap();
        assert_eq!(c.cluster_id, a.cluster_id);
        assert_ne!(c.incarnation, a.incarnation);
        let joiner = Identity::load_or_create(tempfile::tempdir().unwrap().path(), None).unwrap();
        assert_eq!(joiner.cluster_id, 0);
    }

    #[test]
    fn another_cluster_and_a_new_incarnation_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity {
            cluster_id: 7,
            incarnation: 1,
        };
        let gate = PeerGate::load(dir.path(), me).unwrap();
        assert!(gate.admit(2, msg(2, 7, 20)).is_some());
        assert!(gate.admit(2, msg(2, 7, 20)).is_some());
        assert!(gate.admit(3, msg(3, 8, 30)).is_none(), "another cluster");
        assert!(gate.refuses(3));
        assert!(
            gate.admit(3, msg(2, 7, 30)).is_none(),
            "speaks for another node"
        );
        assert!(gate.admit(4, msg(4, 0, 40)).is_some(), "a joining node");
        // Node 2 lost its data and started again: a new incarnation.
        assert!(gate.admit(2, msg(2, 7, 21)).is_none());
        assert!(gate.refuses(2));
        // Remembered across a restart.
        drop(gate);
        let gate = PeerGate::load(dir.path(), me).unwrap();
        assert!(gate.admit(2, msg(2, 7, 21)).is_none());
        assert!(gate.admit(2, msg(2, 7, 20)).is_some());
        // Removed and added back: its new incarnation is welcome.
        gate.forget(2);
        assert!(gate.admit(2, msg(2, 7, 21)).is_some());
        // What it sends stamps the receiver's incarnation as it knows it.
        let to_2 = gate.wrap(msg(1, 7, 1).msg.clone());
        assert_eq!(to_2.to_incarnation, 0, "addressed to node 1 here");
        let mut m = msg(2, 7, 1).msg;
        m.from = 1;
        m.to = 2;
        assert_eq!(gate.wrap(m).to_incarnation, 21);
    }

    #[test]
    fn a_recreated_node_does_not_follow_peers_that_knew_its_old_self() {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity {
            cluster_id: 7,
            incarnation: 99,
        };
        let gate = PeerGate::load(dir.path(), me).unwrap();
        let mut m = msg(2, 7, 20);
        m.to_incarnation = 98;
        assert!(gate.admit(2, m.clone()).is_none());
        m.to_incarnation = 99;
        assert!(gate.admit(2, m).is_some());
    }

    /// A follower that never heard from node 3 learns its incarnation from
    /// the leader's heartbeats, and refuses node 3's re-created self once it
    /// hears from it (as it must if it becomes leader).
    #[test]
    fn a_follower_learns_peers_incarnations_from_the_leaders_heartbeats() {
        let leader_dir = tempfile::tempdir().unwrap();
        let leader = PeerGate::load(
            leader_dir.path(),
            Identity {
                cluster_id: 7,
                incarnation: 10,
            },
        )
        .unwrap();
        assert!(leader.admit(3, msg(3, 7, 30)).is_some());
        assert!(leader.admit(2, msg(2, 7, 20)).is_some());
        let heartbeat = leader.wrap(Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::Heartbeat {
                commit: 0,
                read_round: 0,
                tag: 0,
            },
        });
        assert_eq!(heartbeat.peers, vec![(3, 30)], "not the receiver itself");
        let other = leader.wrap(msg(2, 7, 20).msg);
        assert!(other.peers.is_empty(), "only heartbeats carry the list");

        let dir = tempfile::tempdir().unwrap();
        let me = Identity {
            cluster_id: 7,
            incarnation: 20,
        };
        let follower = PeerGate::load(dir.path(), me).unwrap();
        assert!(follower.admit(1, heartbeat).is_some());
        assert!(
            follower.admit(3, msg(3, 7, 31)).is_none(),
            "node 3 re-created"
        );
        drop(follower);
        let follower = PeerGate::load(dir.path(), me).unwrap();
        assert!(follower.admit(3, msg(3, 7, 31)).is_none(), "kept on disk");
        assert!(follower.admit(3, msg(3, 7, 30)).is_some());
        // Hearsay never overrides what the node saw itself.
        let mut stale = msg(1, 7, 10);
        stale.peers = vec![(3, 29)];
        assert!(follower.admit(1, stale).is_some());
        assert!(follower.admit(3, msg(3, 7, 30)).is_some());
    }
}
