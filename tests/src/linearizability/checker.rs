//! Wing & Gong's linearizability search with Lowe's memoization, run per key.
//!
//! The operations of a key become call and return events sorted by time, kept
//! in a doubly-linked list. The search walks the list from the front: at a
//! call it tries to linearize that operation next (the model must accept its
//! output); it then removes ("lifts") the call and its return from the list
//! and starts over from the front. Reaching a return event means the pending
//! operation it belongs to had to be linearized before anything later, so the
//! search backtracks. A cache of (set of linearized operations, model state)
//! pairs already explored prunes the search (Lowe), which is what makes
//! realistic histories fast.
//!
//! An operation with an unknown outcome has no return event: it may be
//! linearized anywhere after its call. The search succeeds as soon as every
//! completed operation is linearized; unknown operations left over are those
//! that never took effect (equivalently, took effect after everything else).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::history::{History, HistoryError, Input, OpId, Operation};
use super::model::{compile, CompiledOp, State, ABSENT};
use super::shrink::{render_failure, shrink};

/// Limits and knobs of the checker.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Most (linearized set, state) pairs explored for one key before giving
    /// up with [`KeyVerdict::Unknown`].
    pub max_states_per_key: u64,
    /// Most bytes the memoization cache of one key may hold before giving up
    /// with [`KeyVerdict::Unknown`] (each entry holds a bitset of the key's
    /// operations).
    pub max_cache_bytes_per_key: usize,
    /// Wall-clock limit of the search for one key (`None` = no limit).
    pub time_limit_per_key: Option<Duration>,
    /// Time spent shrinking the failing history of one key; `Duration::ZERO`
    /// reports the whole history of the key.
    pub shrink_budget: Duration,
    /// Keys checked in parallel (at least 1).
    pub threads: usize,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            max_states_per_key: 2_000_000,
            max_cache_bytes_per_key: 1 << 30,
            time_limit_per_key: Some(Duration::from_secs(60)),
            shrink_budget: Duration::from_secs(10),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// A key whose history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The key.
    pub key: String,
    /// How many operations the key's history had.
    pub total_ops: usize,
    /// A failing sub-history of the key, sorted by call time, as small as
    /// shrinking could make it; it fails when checked on its own. Operations
    /// that returned after the culprit appear with an unknown outcome.
    pub ops: Vec<Operation>,
    /// The operation whose outcome first cannot be explained (the history
    /// up to its return is already non-linearizable), if shrinking got that
    /// far.
    pub culprit: Option<OpId>,
    /// Whether shrinking finished: removing any single operation (together
    /// with the operations that observed the value it wrote) makes it
    /// linearizable or changes the reason it fails. `false` when the shrink
    /// budget ran out first.
    pub minimal: bool,
    /// A human-readable rendering: one operation per line with client, times,
    /// input and output.
    pub rendering: String,
}

/// The verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyVerdict {
    /// The key's history is linearizable.
    Linearizable {
        /// The key.
        key: String,
        /// Operations checked (reads with unknown outcome excluded).
        ops: usize,
        /// (linearized set, state) pairs the search explored.
        states: u64,
    },
    /// The key's history is not linearizable.
    NotLinearizable(Box<Failure>),
    /// The search hit a limit before reaching a verdict.
    Unknown {
        /// The key.
        key: String,
        /// Which limit, and how far the search got.
        reason: String,
    },
}

impl KeyVerdict {
    /// The key this verdict is about.
    pub fn key(&self) -> &str {
        match self {
            KeyVerdict::Linearizable { key, .. } | KeyVerdict::Unknown { key, .. } => key,
            KeyVerdict::NotLinearizable(f) => &f.key,
        }
    }
}

/// The overall verdict of a [`Report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every key is linearizable.
    Linearizable,
    /// At least one key is not linearizable.
    NotLinearizable,
    /// No key failed, but at least one could not be decided.
    Unknown,
}

/// The verdicts of every key of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// One verdict per key, sorted by key.
    pub keys: Vec<KeyVerdict>,
}

impl Report {
    /// Not linearizable if any key failed; else unknown if any key was
    /// undecided; else linearizable.
    pub fn verdict(&self) -> Verdict {
        if self.failures().next().is_some() {
            Verdict::NotLinearizable
        } else if self
            .keys
            .iter()
            .any(|k| matches!(k, KeyVerdict::Unknown { .. }))
        {
            Verdict::Unknown
        } else {
            Verdict::Linearizable
        }
    }

    /// Whether every key is linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.verdict() == Verdict::Linearizable
    }

    /// The keys that are not linearizable.
    pub fn failures(&self) -> impl Iterator<Item = &Failure> {
        self.keys.iter().filter_map(|k| match k {
            KeyVerdict::NotLinearizable(f) => Some(&**f),
            _ => None,
        })
    }

    /// The verdict for `key`, if the history touched it.
    pub fn key(&self, key: &str) -> Option<&KeyVerdict> {
        self.keys.iter().find(|k| k.key() == key)
    }

    /// A human-readable summary: counts, every undecided key with its reason,
    /// and the rendering of every failure.
    pub fn render(&self) -> String {
        let ok = self
            .keys
            .iter()
            .filter(|k| matches!(k, KeyVerdict::Linearizable { .. }))
            .count();
        let failed = self.failures().count();
        let mut out = format!(
            "{:?}: {} keys, {ok} linearizable, {failed} not linearizable, {} unknown\n",
            self.verdict(),
            self.keys.len(),
            self.keys.len() - ok - failed
        );
        for k in &self.keys {
            match k {
                KeyVerdict::Unknown { key, reason } => {
                    out.push_str(&format!("key {key:?}: unknown: {reason}\n"));
                }
                KeyVerdict::NotLinearizable(f) => {
                    out.push('\n');
                    out.push_str(&f.rendering);
                }
                KeyVerdict::Linearizable { .. } => {}
            }
        }
        out
    }
}

/// Checks every key of `history` independently.
pub fn check_history(history: &History, config: &CheckConfig) -> Result<Report, HistoryError> {
    history.validate()?;
    let keys: Vec<(String, Vec<Operation>)> = history.by_key().into_iter().collect();
    let threads = config.threads.clamp(1, keys.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<KeyVerdict>>> = Mutex::new(vec![None; keys.len()]);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some((key, ops)) = keys.get(i) else {
            return;
        };
        let verdict = check_key(key, ops, config);
        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(verdict);
    };
    if threads == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(work);
            }
        });
    }
    let keys = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|v| v.expect("every key is checked"))
        .collect();
    Ok(Report { keys })
}

/// Loads a history saved as JSON lines (see [`History::save`]) and checks it.
pub fn check_file(path: impl AsRef<Path>, config: &CheckConfig) -> Result<Report, HistoryError> {
    check_history(&History::load(path)?, config)
}

/// Checks the operations of one key (all of `ops` must be on `key`; the
/// history is assumed valid, see [`History::validate`]). A failing history is
/// shrunk within `config.shrink_budget`.
pub fn check_key(key: &str, ops: &[Operation], config: &CheckConfig) -> KeyVerdict {
    let started = Instant::now();
    match search(ops, config) {
        SearchOutcome::Linearizable { ops, states } => {
            tracing::debug!(key, ops, states, elapsed = ?started.elapsed(), "linearizable");
            KeyVerdict::Linearizable {
                key: key.to_string(),
                ops,
                states,
            }
        }
        SearchOutcome::Unknown(reason) => {
            tracing::warn!(key, %reason, "linearizability unknown");
            KeyVerdict::Unknown {
                key: key.to_string(),
                reason,
            }
        }
        SearchOutcome::NotLinearizable => {
            let shrunk = shrink(ops, config);
            tracing::warn!(
                key,
                total = ops.len(),
                shrunk = shrunk.ops.len(),
                minimal = shrunk.minimal,
                "not linearizable"
            );
            let rendering = render_failure(key, ops, &shrunk);
            KeyVerdict::NotLinearizable(Box::new(Failure {
                key: key.to_string(),
                total_ops: ops.len(),
                culprit: shrunk.culprit,
                ops: shrunk.ops,
                minimal: shrunk.minimal,
                rendering,
            }))
        }
    }
}

/// What the search of one key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SearchOutcome {
    Linearizable { ops: usize, states: u64 },
    NotLinearizable,
    Unknown(String),
}

/// End of the event list.
const NIL: u32 = u32::MAX;
/// The list head sentinel.
const HEAD: u32 = 0;

/// A call or return event in the search list.
#[derive(Debug, Clone, Copy)]
struct Event {
    /// Index into the compiled operations.
    op: u32,
    /// For a call: the list node of its return event, or [`NIL`] when the
    /// outcome is unknown. For a return: [`NIL`].
    ret: u32,
    is_call: bool,
}

/// The doubly-linked event list with unlink/relink in the style of dancing
/// links: an unlinked node keeps its own pointers, so relinking in reverse
/// order restores the list exactly.
struct EventList {
    events: Vec<Event>,
    next: Vec<u32>,
    prev: Vec<u32>,
}

impl EventList {
    fn new(events: Vec<Event>) -> Self {
        let n = events.len() as u32;
        let next = (0..=n).map(|i| if i == n { NIL } else { i + 1 }).collect();
        let prev = (0..=n).map(|i| i.wrapping_sub(1)).collect();
        EventList { events, next, prev }
    }

    /// The event of list node `node` (nodes are 1-based; 0 is the head).
    fn event(&self, node: u32) -> Event {
        self.events[node as usize - 1]
    }

    fn unlink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    fn relink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = node;
        if n != NIL {
            self.prev[n as usize] = node;
        }
    }

    /// Removes a call event and its return event.
    fn lift(&mut self, call: u32) {
        self.unlink(call);
        let ret = self.event(call).ret;
        if ret != NIL {
            self.unlink(ret);
        }
    }

    /// Undoes [`EventList::lift`].
    fn unlift(&mut self, call: u32) {
        let ret = self.event(call).ret;
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// A fixed-size set of operation indices.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BitSet(Box<[u64]>);

impl BitSet {
    fn new(n: usize) -> Self {
        BitSet(vec![0; n.div_ceil(64)].into_boxed_slice())
    }

    fn flip(&mut self, i: usize) {
        self.0[i / 64] ^= 1 << (i % 64);
    }
}

/// A 64-bit mix (splitmix64 finalizer); gives each operation a random-looking
/// fingerprint so a set's fingerprint is the XOR of its members'.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Hasher for the cache keys, which are already well-mixed fingerprints.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = mix64(self.0 ^ x);
    }
}

/// Lowe's cache: every (linearized set, state) explored, bucketed by the
/// set's fingerprint so lookups compare bitsets only on a fingerprint match.
type Cache = HashMap<(u64, State), Vec<BitSet>, BuildHasherDefault<FingerprintHasher>>;

/// Runs the search on the operations of one key.
pub(crate) fn search(ops: &[Operation], config: &CheckConfig) -> SearchOutcome {
    let started = Instant::now();
    // A read with an unknown outcome constrains nothing.
    let ops: Vec<&Operation> = ops
        .iter()
        .filter(|op| op.is_completed() || op.input != Input::Get)
        .collect();
    let model: Vec<CompiledOp> = compile(ops.iter().copied());
    let n = ops.len();
    let completed = ops.iter().filter(|op| op.is_completed()).count();
    if completed == 0 {
        return SearchOutcome::Linearizable { ops: n, states: 0 };
    }

    // Events sorted by time; at equal times calls come first, so operations
    // that touch at an instant count as concurrent (never a false failure).
    let mut order: Vec<(u64, bool, u32)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.call, false, i as u32));
        if let Some(ret) = op.ret {
            order.push((ret, true, i as u32));
        }
    }
    order.sort_unstable();
    let mut ret_index = vec![NIL; n];
    for (pos, &(_, is_ret, op)) in order.iter().enumerate() {
        if is_ret {
            ret_index[op as usize] = pos as u32 + 1;
        }
    }
    let events = order
        .iter()
        .map(|&(_, is_ret, op)| Event {
            op,
            ret: if is_ret { NIL } else { ret_index[op as usize] },
            is_call: !is_ret,
        })
        .collect();
    let mut list = EventList::new(events);

    let fingerprints: Vec<u64> = (0..n as u64).map(mix64).collect();
    let words = n.div_ceil(64);
    let entry_bytes = words * 8 + std::mem::size_of::<BitSet>() + 16;
    let mut cache = Cache::default();
    let mut states: u64 = 0;
    let mut linearized = BitSet::new(n);
    let mut fingerprint = 0u64;
    let mut state: State = ABSENT;
    let mut remaining = completed;
    // (call node lifted, state before it)
    let mut stack: Vec<(u32, State)> = Vec::with_capacity(n);
    let mut node = list.next[HEAD as usize];
    let mut steps: u64 = 0;
    let mut deepest = 0usize;

    loop {
        if remaining == 0 {
            return SearchOutcome::Linearizable { ops: n, states };
        }
        steps += 1;
        if steps.is_multiple_of(4096) {
            if let Some(limit) = config.time_limit_per_key {
                if started.elapsed() > limit {
                    return SearchOutcome::Unknown(format!(
                        "time limit of {limit:?} reached after exploring {states} states \
                         ({n} operations, at most {deepest} linearized on one path)"
                    ));
                }
            }
        }
        let backtrack = if node == NIL {
            true
        } else {
            let ev = list.event(node);
            if ev.is_call {
                let op = ev.op as usize;
                if let Some(next_state) = model[op].step(state) {
                    linearized.flip(op);
                    fingerprint ^= fingerprints[op];
                    let bucket = cache.entry((fingerprint, next_state)).or_default();
                    if !bucket.contains(&linearized) {
                        bucket.push(linearized.clone());
                        states += 1;
                        if states > config.max_states_per_key {
                            return SearchOutcome::Unknown(format!(
                                "explored more than {} states ({n} operations, at most \
                                 {deepest} linearized on one path)",
                                config.max_states_per_key,
                            ));
                        }
                        if (states as usize).saturating_mul(entry_bytes)
                            > config.max_cache_bytes_per_key
                        {
                            return SearchOutcome::Unknown(format!(
                                "memoization cache exceeded {} bytes after {states} states \
                                 ({n} operations, at most {deepest} linearized on one path)",
                                config.max_cache_bytes_per_key
                            ));
                        }
                        stack.push((node, state));
                        deepest = deepest.max(stack.len());
                        state = next_state;
                        list.lift(node);
                        if ops[op].is_completed() {
                            remaining -= 1;
                        }
                        node = list.next[HEAD as usize];
                        continue;
                    }
                    linearized.flip(op);
                    fingerprint ^= fingerprints[op];
                }
                node = list.next[node as usize];
                false
            } else {
                true
            }
        };
        if backtrack {
            let Some((call, before)) = stack.pop() else {
                return SearchOutcome::NotLinearizable;
            };
            let op = list.event(call).op as usize;
            linearized.flip(op);
            fingerprint ^= fingerprints[op];
            state = before;
            list.unlift(call);
            if ops[op].is_completed() {
                remaining += 1;
            }
            node = list.next[call as usize];
        }
    }
}
