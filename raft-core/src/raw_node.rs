//! The node: its state, the driver-facing API, and the Ready / advance cycle.
//!
//! The algorithm itself lives in sibling files as further `impl RawNode` blocks:
//! `step.rs` (term rules and dispatch), `election.rs`, `replication.rs`,
//! `membership.rs`, `transfer.rs` and `reads.rs`.

use std::collections::BTreeMap;

use crate::confchange::{ConfChange, ConfState};
use crate::config::Config;
use bytes::Bytes;

use crate::entry::{Entry, EntryId, EntryKind, HardState, NodeId, ProposedBatch, SnapshotMeta};
use crate::error::{Error, Result, StorageError};
use crate::log::RaftLog;
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::progress_map::ProgressMap;
use crate::read_only::ReadOnly;
use crate::ready::{ReadState, Ready, Role, RoleState};
use crate::rng::SeededRng;
use crate::storage::Storage;

/// What the last [`Ready`] asked for, so [`RawNode::advance`] knows what is now done.
#[derive(Debug, Default)]
struct InProgress {
    last_entry: Option<EntryId>,
    snapshot_index: Option<u64>,
    applied_to: Option<u64>,
    applied_bytes: u64,
    conf_changes: Vec<ConfChange>,
}

/// A leader that applied a configuration without itself as a voter, waiting to step down.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepDown {
    /// A quorum of the new configuration must have learned this index committed.
    pub conf_index: u64,
    /// Ticks spent waiting; the leader gives up after two election timeouts.
    pub ticks: u32,
}

/// One Raft node as a pure state machine. See the crate docs for the driver loop.
pub struct RawNode<S: Storage> {
    pub(crate) cfg: Config,
    pub(crate) id: NodeId,
    pub(crate) log: RaftLog<S>,
    pub(crate) term: u64,
    pub(crate) vote: Option<NodeId>,
    pub(crate) leader_id: Option<NodeId>,
    pub(crate) role: Role,
    /// Configuration after every applied entry.
    pub(crate) conf: ConfState,
    /// Leader only: progress of every member, this node included.
    pub(crate) progress: ProgressMap,
    /// Votes received in the current (pre-)campaign.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    /// Configuration the current (pre-)campaign counts votes in.
    pub(crate) election_conf: ConfState,
    /// Leader only: the latest configuration in the log (applied or not).
    pub(crate) latest_conf: ConfState,
    pub(crate) election_elapsed_ticks: u32,
    pub(crate) heartbeat_elapsed_ticks: u32,
    pub(crate) randomized_election_timeout_ticks: u32,
    pub(crate) rng: SeededRng,
    msgs_now: Vec<Message>,
    msgs_after_persist: Vec<Message>,
    /// Leader only: index of the last configuration change it may not yet have applied.
    pub(crate) pending_conf_index: u64,
    /// Leader only: bytes of entries appended and not yet applied.
    pub(crate) uncommitted_bytes: u64,
    pub(crate) lead_transferee: Option<NodeId>,
    pub(crate) read_only: ReadOnly,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) next_progress_tag: u64,
    /// Ticks since this node started (the leader lease is measured in them too).
    pub(crate) ticks: u64,
    /// The driver's latest monotonic clock reading (see [`RawNode::set_clock`]).
    pub(crate) clock_nanos: Option<u64>,
    /// Leader only: removed by the applied configuration, leading until the new one
    /// knows it is in force.
    pub(crate) stepping_down: Option<StepDown>,
    /// Leader only: a TimeoutNow went out this term, so the lease may no longer hold.
    pub(crate) lease_revoked: bool,
    /// With lease reads: refuse votes for an election timeout after a restart, since
    /// this node may have acknowledged a leader's lease just before crashing.
    pub(crate) startup_lease_guard: bool,
    /// Leader only: new entries or a new commit index must be sent at the next `ready()`.
    pub(crate) broadcast_pending: bool,
    /// Set by the driver while its state machine cannot take entries (see
    /// [`RawNode::hold_apply`]): committed entries stay in the log until released.
    apply_held: bool,
    prev_hard_state: HardState,
    prev_role: RoleState,
    in_progress: Option<InProgress>,
}

impl<S: Storage> RawNode<S> {
    /// Opens a node over `storage`, which holds everything persisted before (or is empty
    /// for a node joining a cluster, or bootstrapped: see [`crate::MemStorage`]).
    pub fn new(cfg: Config, storage: S) -> Result<Self> {
        cfg.validate()?;
        let hs = storage.hard_state();
        let snapshot = storage.snapshot_meta();
        if hs.commit > storage.last_index() {
            return Err(Error::InvalidConfig(
                "persisted commit index is beyond the stored log",
            ));
        }
        let log = RaftLog::new(storage, cfg.applied_index);
        // The configuration in force is the snapshot's plus every applied change after it.
        let mut conf = snapshot.conf.clone();
        if log.applied > snapshot.index {
            for e in log.entries(snapshot.index + 1, log.applied + 1, u64::MAX)? {
                if let EntryKind::ConfChange(cc) = &e.kind {
                    if let Ok(next) = conf.apply(cc) {
                        conf = next;
                    }
                }
            }
        }
        let mut node = RawNode {
            id: cfg.id,
            rng: SeededRng::new(cfg.seed ^ cfg.id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            cfg,
            log,
            term: hs.term,
            vote: hs.vote,
            leader_id: None,
            role: Role::Follower,
            conf,
            progress: ProgressMap::default(),
            votes: BTreeMap::new(),
            election_conf: ConfState::default(),
            latest_conf: ConfState::default(),
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            randomized_election_timeout_ticks: 0,
            msgs_now: Vec::new(),
            msgs_after_persist: Vec::new(),
            pending_conf_index: 0,
            uncommitted_bytes: 0,
            lead_transferee: None,
            read_only: ReadOnly::default(),
            read_states: Vec::new(),
            next_progress_tag: 1,
            ticks: 0,
            clock_nanos: None,
            stepping_down: None,
            lease_revoked: false,
            startup_lease_guard: false,
            broadcast_pending: false,
            apply_held: false,
            prev_hard_state: hs,
            prev_role: RoleState {
                role: Role::Follower,
                term: hs.term,
                leader_id: None,
            },
            in_progress: None,
        };
        node.startup_lease_guard = node.cfg.lease_reads;
        node.reset_randomized_election_timeout();
        Ok(node)
    }

    // ----- inputs -----

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.debug_check_not_in_ready();
        if self.failed() {
            return;
        }
        self.ticks += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    /// Tells the core the driver's monotonic clock, in nanoseconds since any fixed origin
    /// (the core never reads a clock itself). Only the leader lease uses it; a driver
    /// with `lease_reads` must call it before every `tick` and before every `read_index`,
    /// with a clock that keeps counting while the process is stopped or the machine
    /// suspended (on Linux `CLOCK_BOOTTIME`). A reading below an earlier one is ignored.
    ///
    /// The lease: a read is served at once only if a quorum echoed a heartbeat round
    /// whose clock reading `sent` satisfies `now < sent + lease`, with
    /// `lease = (election_timeout_ticks - 1 - 2) * tick_interval_nanos * (1 - 2ρ)`,
    /// and also, in ticks, fewer than `election_timeout_ticks - 2` ticks ago. A follower
    /// that echoed the round refuses votes until it has counted `election_timeout_ticks`
    /// ticks since receiving it, which takes at least `election_timeout_ticks - 1` tick
    /// intervals of its own clock. With every clock running within a factor `1 ± ρ` of
    /// real time, `ρ` = [`MAX_CLOCK_DRIFT_PPM`](crate::config::MAX_CLOCK_DRIFT_PPM)
    /// (1%, far above real oscillators and NTP slewing at 500 ppm), no other leader can
    /// be elected before the lease ends, however long this node stalled meanwhile.
    pub fn set_clock(&mut self, now_nanos: u64) {
        if self.clock_nanos.is_none_or(|c| now_nanos > c) {
            self.clock_nanos = Some(now_nanos);
        }
    }

    /// Holds back committed entries (`true`) or hands them out again (`false`).
    ///
    /// While held, [`Ready::committed_entries`] stays empty and the applied index does
    /// not move; everything else goes on as usual (appends are persisted and
    /// acknowledged, votes answered, the commit index learned). A driver holds them
    /// while its state machine is being rebuilt from an installed snapshot on another
    /// thread, so that the node keeps taking part in replication meanwhile; released,
    /// the entries after the snapshot come out of the log in order. A held
    /// configuration change is not in force until it is applied, as always.
    ///
    /// ```
    /// use raft_core::{Config, MemStorage, RawNode};
    ///
    /// let mut node = RawNode::new(Config::new(1), MemStorage::new_bootstrap([1])).unwrap();
    /// node.campaign();
    /// node.hold_apply(true);
    /// let id = node.propose(b"x".to_vec()).unwrap();
    /// while node.has_ready() {
    ///     let rd = node.ready().unwrap();
    ///     assert!(rd.committed_entries.is_empty(), "held back");
    ///     node.storage_mut().append(&rd.entries);
    ///     if let Some(hs) = rd.hard_state {
    ///         node.storage_mut().set_hard_state(hs);
    ///     }
    ///     node.advance();
    /// }
    /// assert_eq!(node.commit_index(), id.index);
    ///
    /// node.hold_apply(false);
    /// let rd = node.ready().unwrap();
    /// assert_eq!(rd.committed_entries.last().map(|e| e.index), Some(id.index));
    /// node.advance();
    /// ```
    pub fn hold_apply(&mut self, hold: bool) {
        self.apply_held = hold;
    }

    /// Whether committed entries are held back (see [`hold_apply`](Self::hold_apply)).
    pub fn apply_held(&self) -> bool {
        self.apply_held
    }

    /// Proposes application data. On success returns where the entry was appended; it is
    /// committed if the driver later applies an entry with this index *and* term.
    ///
    /// `data` is anything that converts into [`Bytes`] (a `Vec<u8>` converts without a
    /// copy). To propose many entries at once, [`propose_batch`](Self::propose_batch)
    /// is cheaper than one call per entry.
    pub fn propose(&mut self, data: impl Into<Bytes>) -> Result<EntryId> {
        self.debug_check_not_in_ready();
        self.check_can_propose()?;
        let data = data.into();
        let size = crate::entry::ENTRY_OVERHEAD_BYTES + data.len() as u64;
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + size > self.cfg.max_uncommitted_entries_bytes
        {
            return Err(Error::UncommittedLimitExceeded);
        }
        Ok(self.append_entry(EntryKind::Normal, data))
    }

    /// Proposes many entries of application data in one call, in the order given: they
    /// are appended at consecutive indexes of the current term, and go out in the same
    /// appends (and the same `Ready`) as any other proposal made before the next
    /// [`ready`](Self::ready). Equivalent to calling [`propose`](Self::propose) once per
    /// entry, but all or nothing: either every entry is appended or none is.
    ///
    /// The uncommitted limit (`max_uncommitted_entries_bytes`) applies to the batch as
    /// a whole; as for a single proposal, a batch is always accepted when nothing is
    /// uncommitted, however large. An empty batch appends nothing and succeeds
    /// (`indexes` is then empty).
    ///
    /// # Errors
    /// As [`propose`](Self::propose): [`Error::NotLeader`], [`Error::TransferInProgress`],
    /// [`Error::UncommittedLimitExceeded`], [`Error::Storage`]. Nothing is appended then.
    ///
    /// # Example
    ///
    /// ```
    /// use raft_core::{Config, MemStorage, RawNode};
    ///
    /// let mut node = RawNode::new(Config::new(1), MemStorage::new_bootstrap([1])).unwrap();
    /// node.campaign();
    /// let rd = node.ready().unwrap();
    /// node.storage_mut().append(&rd.entries);
    /// node.advance();
    ///
    /// let batch = node
    ///     .propose_batch([b"a".to_vec(), b"b".to_vec(), b"c".to_vec()])
    ///     .unwrap();
    /// assert_eq!(batch.len(), 3);
    /// assert_eq!(batch.indexes.end - 1, node.last_index());
    ///
    /// // One Ready carries the three entries; a lone voter commits them at once.
    /// let rd = node.ready().unwrap();
    /// assert_eq!(rd.entries.len(), 3);
    /// node.storage_mut().append(&rd.entries);
    /// node.advance();
    /// let rd = node.ready().unwrap();
    /// let applied: Vec<&[u8]> = rd.committed_entries.iter().map(|e| &e.data[..]).collect();
    /// assert_eq!(applied, [&b"a"[..], b"b", b"c"]);
    /// node.advance();
    /// ```
    pub fn propose_batch<I>(&mut self, data: I) -> Result<ProposedBatch>
    where
        I: IntoIterator,
        I::Item: Into<Bytes>,
    {
        self.debug_check_not_in_ready();
        self.check_can_propose()?;
        let term = self.term;
        let first = self.log.last_index() + 1;
        let iter = data.into_iter();
        let mut entries = Vec::with_capacity(iter.size_hint().0);
        let mut bytes = 0u64;
        for (i, data) in iter.enumerate() {
            let e = Entry {
                index: first + i as u64,
                term,
                kind: EntryKind::Normal,
                data: data.into(),
            };
            bytes += e.size_bytes();
            entries.push(e);
        }
        let indexes = first..first + entries.len() as u64;
        if entries.is_empty() {
            return Ok(ProposedBatch { term, indexes });
        }
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + bytes > self.cfg.max_uncommitted_entries_bytes
        {
            return Err(Error::UncommittedLimitExceeded);
        }
        self.uncommitted_bytes += bytes;
        self.log.append(entries);
        self.broadcast_pending = true;
        Ok(ProposedBatch { term, indexes })
    }

    /// Starts an election now (used to bootstrap quickly; normally ticks do this).
    pub fn campaign(&mut self) {
        self.debug_check_not_in_ready();
        self.hup(false);
    }

    /// The leader stops sending to `id` optimistically (the transport lost contact).
    pub fn report_unreachable(&mut self, id: NodeId) {
        if let Some(pr) = self.progress.get_mut(&id) {
            if pr.state == crate::progress::ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    /// The transport reports whether the snapshot sent to `id` was delivered.
    /// On failure the leader falls back to probing; on success it waits for the ack.
    pub fn report_snapshot(&mut self, id: NodeId, delivered: bool) {
        if let Some(pr) = self.progress.get_mut(&id) {
            if pr.state == crate::progress::ProgressState::Snapshot && !delivered {
                pr.become_probe();
            }
        }
    }

    // ----- the Ready cycle -----

    /// True if [`ready`](Self::ready) has work (and the previous Ready was advanced).
    /// Also true once the storage has failed, so that a driver looping on `has_ready`
    /// gets the error from `ready` instead of spinning or idling.
    pub fn has_ready(&self) -> bool {
        if self.in_progress.is_some() {
            return false;
        }
        self.failed()
            || self.broadcast_pending
            || (self.role == Role::Leader && self.read_only.round_wanted())
            || !self.msgs_now.is_empty()
            || !self.msgs_after_persist.is_empty()
            || self.role_state() != self.prev_role
            || self.hard_state() != self.prev_hard_state
            || self.log.unstable.snapshot.is_some()
            || !self.log.unstable.entries.is_empty()
            || !self.read_states.is_empty()
            || (!self.apply_held
                && self.log.committed > self.log.applied
                && self.log.applied + 1 >= self.log.first_index())
    }

    /// Collects everything to do since the last Ready. Handle it as [`Ready`] describes,
    /// then call [`advance`](Self::advance) before calling `ready` again.
    ///
    /// # Errors
    /// [`Error::Storage`] once a storage read has failed (see [`StorageError::Io`]): the
    /// node is stopped for good. Nothing computed after the failure is handed out (no
    /// message, no entry, no commit), so the driver must stop the node and exit; a
    /// restart reopens the storage from what is durable.
    ///
    /// # Panics
    /// If the previous Ready was not advanced (a driver bug, never caused by peers).
    pub fn ready(&mut self) -> Result<Ready> {
        assert!(
            self.in_progress.is_none(),
            "advance() must be called before the next ready()"
        );
        self.check_failure()?;
        if self.role == Role::Leader {
            if std::mem::take(&mut self.broadcast_pending) {
                self.bcast_append();
            }
            if self.read_only.round_wanted() {
                self.bcast_heartbeat();
            }
        }
        let mut rd = Ready::default();
        let role = self.role_state();
        if role != self.prev_role {
            rd.role = Some(role);
            self.prev_role = role;
        }
        let hs = self.hard_state();
        // Term and vote changes must be durable before *any* message carrying the new
        // term leaves, even a leader's (a node that won an election in this very batch).
        let term_or_vote_changed =
            (hs.term, hs.vote) != (self.prev_hard_state.term, self.prev_hard_state.vote);
        if hs != self.prev_hard_state {
            rd.hard_state = Some(hs);
            self.prev_hard_state = hs;
        }
        rd.snapshot = self.log.unstable.snapshot.clone();
        rd.entries = self.log.unstable.entries.clone();
        rd.messages = std::mem::take(&mut self.msgs_now);
        rd.persisted_messages = std::mem::take(&mut self.msgs_after_persist);
        if term_or_vote_changed && !rd.messages.is_empty() {
            let mut all = std::mem::take(&mut rd.messages);
            all.append(&mut rd.persisted_messages);
            rd.persisted_messages = all;
        }
        if rd.snapshot.is_none() && !self.apply_held {
            rd.committed_entries = self
                .log
                .next_committed_entries(self.cfg.max_committed_bytes_per_ready)?;
        }
        // A read may have failed while the messages above were built (their terms, their
        // entries): none of them may leave.
        self.check_failure()?;
        rd.read_states = std::mem::take(&mut self.read_states);
        let mut ip = InProgress {
            last_entry: rd.entries.last().map(Entry::id),
            snapshot_index: rd.snapshot.as_ref().map(|s| s.index),
            applied_to: rd.committed_entries.last().map(|e| e.index),
            ..Default::default()
        };
        for e in &rd.committed_entries {
            ip.applied_bytes += e.size_bytes();
            if let EntryKind::ConfChange(cc) = &e.kind {
                ip.conf_changes.push(cc.clone());
            }
        }
        self.in_progress = Some(ip);
        Ok(rd)
    }

    /// Acknowledges that the last [`Ready`] was fully handled: persisted, sent and applied.
    pub fn advance(&mut self) {
        let Some(ip) = self.in_progress.take() else {
            return;
        };
        if let Some(index) = ip.snapshot_index {
            self.log.unstable.stable_snapshot(index);
            self.log.applied = self.log.applied.max(index);
        }
        if let Some(id) = ip.last_entry {
            self.log.unstable.stable_to(id.index, id.term);
        }
        if let Some(index) = ip.applied_to {
            debug_assert!(index <= self.log.committed, "applied beyond commit");
            self.log.applied = self.log.applied.max(index);
        }
        for cc in &ip.conf_changes {
            self.apply_conf_change(cc);
        }
        if self.role == Role::Leader {
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(ip.applied_bytes);
            let persisted = self.log.persisted_index();
            if let Some(pr) = self.progress.get_mut(&self.id) {
                pr.maybe_update(persisted);
            }
            if self.maybe_commit() {
                self.broadcast_pending = true;
            }
            self.maybe_auto_leave_joint();
        }
    }

    // ----- observers -----

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Leader of the current term, if known.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }

    /// Commit index.
    pub fn commit_index(&self) -> u64 {
        self.log.committed
    }

    /// Index of the last entry acknowledged as applied.
    pub fn applied_index(&self) -> u64 {
        self.log.applied
    }

    /// Last log index (durable or not).
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    /// On the leader, the highest index known to be replicated (and persisted) on member
    /// `id`; `None` on other nodes or for a non-member. A driver can use it, for example,
    /// to refuse promoting a learner that has not caught up yet.
    ///
    /// ```
    /// # use raft_core::{Config, MemStorage, RawNode};
    /// let mut node = RawNode::new(Config::new(1), MemStorage::new_bootstrap([1])).unwrap();
    /// assert_eq!(node.match_index(1), None, "not the leader yet");
    /// node.campaign();
    /// let rd = node.ready().unwrap();
    /// node.storage_mut().append(&rd.entries);
    /// node.advance();
    /// assert_eq!(node.match_index(1), Some(node.last_index()));
    /// assert_eq!(node.match_index(9), None);
    /// ```
    pub fn match_index(&self, id: NodeId) -> Option<u64> {
        if self.role != Role::Leader {
            return None;
        }
        self.progress.get(&id).map(|p| p.match_index)
    }

    /// On the leader, the lowest log index that a follower heard from recently still
    /// needs: the entry after its match index, or after the snapshot being sent to it.
    /// `None` on other nodes, or when no such follower lags. A driver that compacts the
    /// log after a snapshot can keep the entries from here (within a bound of its
    /// own), so that a follower that just installed a snapshot catches up from the log
    /// instead of needing the next snapshot. Followers not heard from since the last
    /// CheckQuorum round (down, partitioned away) are not counted.
    ///
    /// ```
    /// # use raft_core::{Config, MemStorage, RawNode};
    /// let mut node = RawNode::new(Config::new(1), MemStorage::new_bootstrap([1])).unwrap();
    /// assert_eq!(node.catch_up_index(), None, "not the leader yet");
    /// node.campaign();
    /// let rd = node.ready().unwrap();
    /// node.storage_mut().append(&rd.entries);
    /// node.advance();
    /// assert_eq!(node.catch_up_index(), None, "no follower");
    /// ```
    pub fn catch_up_index(&self) -> Option<u64> {
        if self.role != Role::Leader {
            return None;
        }
        self.progress
            .iter()
            .filter(|(&id, pr)| id != self.id && pr.recent_active)
            .map(|(_, pr)| match pr.state {
                crate::progress::ProgressState::Snapshot => {
                    pr.match_index.max(pr.pending_snapshot) + 1
                }
                _ => pr.match_index + 1,
            })
            .filter(|&i| i <= self.log.last_index())
            .min()
    }

    /// Term of the entry at `index`, as this node's log holds it.
    pub fn entry_term(&self, index: u64) -> std::result::Result<u64, StorageError> {
        self.log.term(index)
    }

    /// Membership after every applied entry.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }

    /// Current hard state (term, vote, commit).
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// Role, term and leader.
    pub fn role_state(&self) -> RoleState {
        RoleState {
            role: self.role,
            term: self.term,
            leader_id: self.leader_id,
        }
    }

    /// The metadata a snapshot of the state machine taken right now (at the applied
    /// index) must carry. Pass it to the storage's compaction after writing the snapshot.
    pub fn snapshot_meta_at_applied(&self) -> Result<SnapshotMeta> {
        let index = self.log.applied;
        Ok(SnapshotMeta {
            index,
            term: self.log.term(index)?,
            conf: self.conf.clone(),
        })
    }

    /// The storage failure that stopped this node, if any (see [`StorageError::Io`]).
    pub fn storage_failure(&self) -> Option<StorageError> {
        self.log.failure()
    }

    /// Number of linearizable reads waiting for confirmation.
    pub fn pending_read_count(&self) -> usize {
        self.read_only.pending_count()
    }

    /// The storage.
    pub fn storage(&self) -> &S {
        &self.log.storage
    }

    /// The storage, for the driver to persist a Ready or compact the log.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.log.storage
    }

    /// Consumes the node and returns its storage (e.g. to simulate a crash).
    pub fn into_storage(self) -> S {
        self.log.storage
    }

    // ----- crate internals shared by the algorithm files -----

    /// True once a storage read has failed: the node takes no more input.
    pub(crate) fn failed(&self) -> bool {
        self.log.has_failed()
    }

    /// The storage failure as an error, if there was one.
    pub(crate) fn check_failure(&self) -> Result<()> {
        match self.log.failure() {
            Some(e) => Err(Error::Storage(e)),
            None => Ok(()),
        }
    }

    pub(crate) fn debug_check_not_in_ready(&self) {
        debug_assert!(
            self.in_progress.is_none(),
            "inputs must not arrive between ready() and advance()"
        );
    }

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send_with_term(to, term, body);
    }

    pub(crate) fn send_with_term(&mut self, to: NodeId, term: u64, body: MessageBody) {
        let m = Message {
            from: self.id,
            to,
            term,
            body,
        };
        if m.needs_persist_first(self.role == Role::Leader) {
            self.msgs_after_persist.push(m);
        } else {
            self.msgs_now.push(m);
        }
    }

    pub(crate) fn reset_randomized_election_timeout(&mut self) {
        let t = self.cfg.election_timeout_ticks as u64;
        self.randomized_election_timeout_ticks = self.rng.range(t, 2 * t) as u32;
    }

    pub(crate) fn check_can_propose(&self) -> Result<()> {
        self.check_failure()?;
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if self.lead_transferee.is_some() {
            return Err(Error::TransferInProgress);
        }
        if self.stepping_down.is_some() {
            // Removed from the configuration: only finishing the hand-over remains.
            return Err(Error::NotLeader { leader_hint: None });
        }
        Ok(())
    }

    /// Leader only: appends one entry of the current term to its own log.
    pub(crate) fn append_entry(&mut self, kind: EntryKind, data: Bytes) -> EntryId {
        debug_assert_eq!(self.role, Role::Leader);
        let id = EntryId {
            index: self.log.last_index() + 1,
            term: self.term,
        };
        let new_conf = match &kind {
            EntryKind::ConfChange(cc) => self.latest_conf.apply(cc).ok(),
            _ => None,
        };
        let entry = Entry {
            index: id.index,
            term: id.term,
            kind,
            data,
        };
        self.uncommitted_bytes += entry.size_bytes();
        self.log.push(entry);
        if let Some(conf) = new_conf {
            self.latest_conf = conf;
            self.sync_progress_with_members();
        }
        self.broadcast_pending = true;
        id
    }

    pub(crate) fn new_progress(&mut self, next_index: u64) -> Progress {
        let tag = self.next_progress_tag;
        self.next_progress_tag += 1;
        Progress::new(
            next_index,
            tag,
            self.cfg.max_inflight_msgs,
            self.cfg.max_inflight_bytes,
        )
    }
}
