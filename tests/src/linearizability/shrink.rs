//! Shrinking a non-linearizable history of one key to a small failing
//! sub-history, and rendering it for humans.
//!
//! Shrinking removes chunks of operations (halves, then quarters, ... down to
//! single operations) as long as the rest stays non-linearizable, within a time
//! budget. Removing reads never changes why a history fails, but removing a
//! write can create a new, unrelated anomaly (drop the put a read observed and
//! the read now sees a value "never written"; drop a delete and a later read of
//! an absent key looks like a lost write). So a candidate must stay
//! *explained*: every observation (a value, "present", "absent") that some
//! operation of the full history could justify in time must still be
//! justifiable within the candidate. At single-operation granularity, removing
//! a write also removes the operations that observed its value. This is a
//! heuristic: with several deletes or CASes the shrunk history can still show a
//! different anomaly than the one that first broke the full history.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Instant;

use super::checker::{search, CheckConfig, SearchOutcome};
use super::history::{Input, OpId, Operation, Output, Value};

/// Values `op` may have written (a put, or a CAS that succeeded or whose
/// outcome is unknown).
fn written(op: &Operation) -> Option<&Value> {
    match (&op.input, &op.output) {
        (Input::Put { value }, _) => Some(value),
        (
            Input::Cas { new, .. },
            None
            | Some(Output::Cas {
                succeeded: true, ..
            }),
        ) => new.as_ref(),
        _ => None,
    }
}

/// What an operation learned about the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Observation<'a> {
    /// It held this value.
    Value(&'a Value),
    /// It held some value.
    Present,
    /// It was absent.
    Absent,
}

/// What `op` observed about the state it was applied to (or saw afterwards).
fn observations(op: &Operation) -> Vec<Observation<'_>> {
    use Observation::*;
    let mut seen = Vec::new();
    match (&op.input, &op.output) {
        (Input::Get, Some(Output::Get { value })) => {
            seen.push(value.as_ref().map_or(Absent, Value));
        }
        (Input::Delete, Some(Output::Delete { deleted: Some(d) })) => {
            seen.push(if *d { Present } else { Absent });
        }
        (Input::Cas { expected, .. }, Some(Output::Cas { succeeded, current })) => {
            match (succeeded, expected) {
                (true, e) => seen.push(e.as_ref().map_or(Absent, Value)),
                (false, None) => seen.push(Present),
                (false, Some(_)) => {}
            }
            if let (false, Some(c)) = (succeeded, current) {
                seen.push(c.as_ref().map_or(Absent, Value));
            }
        }
        _ => {}
    }
    seen
}

/// Whether `op` may have deleted the key.
fn deletes(op: &Operation) -> bool {
    matches!(
        (&op.input, &op.output),
        (Input::Delete, _)
            | (
                Input::Cas { new: None, .. },
                None | Some(Output::Cas {
                    succeeded: true,
                    ..
                }),
            )
    )
}

/// Earliest times at which operations of a (sub-)history could justify an
/// observation.
#[derive(Debug, Default)]
struct Support<'a> {
    /// Earliest call of a write of each value.
    value_call: HashMap<&'a Value, u64>,
    /// Earliest call of any write of a value.
    write_call: Option<u64>,
    /// Earliest return of a completed write of a value.
    write_ret: Option<u64>,
    /// Earliest call of a delete.
    delete_call: Option<u64>,
}

fn earliest(slot: &mut Option<u64>, t: u64) {
    *slot = Some(slot.map_or(t, |s| s.min(t)));
}

impl<'a> Support<'a> {
    fn of(ops: impl IntoIterator<Item = &'a Operation>) -> Self {
        let mut s = Support::default();
        for op in ops {
            if let Some(v) = written(op) {
                let c = s.value_call.entry(v).or_insert(op.call);
                *c = (*c).min(op.call);
                earliest(&mut s.write_call, op.call);
                if let Some(ret) = op.ret {
                    earliest(&mut s.write_ret, ret);
                }
            }
            if deletes(op) {
                earliest(&mut s.delete_call, op.call);
            }
        }
        s
    }

    /// Whether something here could justify `obs` made by an operation that
    /// returned at `ret` (after any write that completed before `call`).
    fn justifies(&self, obs: Observation<'_>, call: u64, ret: u64) -> bool {
        let before = |t: Option<u64>| t.is_some_and(|t| t < ret);
        match obs {
            Observation::Value(v) => self.value_call.get(v).is_some_and(|&t| t < ret),
            Observation::Present => before(self.write_call),
            Observation::Absent => {
                // The initial state explains absence unless a write finished
                // before the operation began.
                self.write_ret.is_none_or(|t| t >= call) || before(self.delete_call)
            }
        }
    }
}

/// Whether every observation in `candidate` that the full history could
/// justify (`full`) can still be justified within `candidate`: removing a
/// write must not leave a read that only fails because its write is gone.
fn explained(candidate: &[Operation], full: &Support<'_>) -> bool {
    let here = Support::of(candidate);
    candidate.iter().all(|op| {
        let ret = op.ret.unwrap_or(u64::MAX);
        observations(op)
            .into_iter()
            .all(|obs| here.justifies(obs, op.call, ret) || !full.justifies(obs, op.call, ret))
    })
}

/// Whether `op` observed the value `v`.
fn observes(op: &Operation, v: &Value) -> bool {
    observations(op).contains(&Observation::Value(v))
}

/// Keeps the operations that could have happened by time `t`: those invoked at
/// or before `t`. Operations that returned later lose their outcome (unknown
/// outcome: a write may or may not take effect, a read is dropped).
///
/// Truncation is sound: any linearization of the full history restricted to
/// these operations is a linearization of the truncated history (an operation
/// invoked after `t` can only be ordered before operations whose outcome was
/// dropped). So a failing truncation proves the full history fails, for the
/// same reason.
fn truncate(ops: &[Operation], t: u64) -> Vec<Operation> {
    ops.iter()
        .filter(|op| op.call <= t)
        .filter_map(|op| {
            if op.ret.is_some_and(|r| r <= t) {
                Some(op.clone())
            } else if op.input == Input::Get {
                None
            } else {
                Some(Operation {
                    ret: None,
                    output: None,
                    ..op.clone()
                })
            }
        })
        .collect()
}

/// `ops` with the outcomes of `ids` made unknown (reads among them dropped).
fn relax(ops: &[Operation], ids: &[OpId]) -> Vec<Operation> {
    ops.iter()
        .filter(|op| !(ids.contains(&op.id) && op.input == Input::Get))
        .map(|op| {
            if ids.contains(&op.id) {
                Operation {
                    ret: None,
                    output: None,
                    ..op.clone()
                }
            } else {
                op.clone()
            }
        })
        .collect()
}

/// The result of shrinking.
#[derive(Debug)]
pub(crate) struct Shrunk {
    /// The failing sub-history, sorted by call time; operations whose outcome
    /// was dropped by truncation appear with an unknown outcome.
    pub ops: Vec<Operation>,
    /// The operation whose outcome first cannot be explained: the earliest
    /// return time at which the history stops being linearizable.
    pub culprit: Option<OpId>,
    /// Whether no single allowed removal keeps it failing.
    pub minimal: bool,
}

/// Shrinks the failing history `ops` of one key.
///
/// First the history is truncated at the earliest return time at which it is
/// already non-linearizable (binary search; sound, see [`truncate`]); the
/// operations returning then are the culprits. Then operations are removed
/// ddmin-style while the rest still fails, stays explained (see
/// [`explained`]) and still needs the culprits' outcomes to fail.
pub(crate) fn shrink(ops: &[Operation], config: &CheckConfig) -> Shrunk {
    let mut cur: Vec<Operation> = ops
        .iter()
        .filter(|op| op.is_completed() || op.input != Input::Get)
        .cloned()
        .collect();
    cur.sort_by_key(|op| (op.call, op.id));
    if config.shrink_budget.is_zero() {
        return Shrunk {
            ops: cur,
            culprit: None,
            minimal: false,
        };
    }
    let deadline = Instant::now() + config.shrink_budget;
    let fails = |candidate: &[Operation]| -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut trial = config.clone();
        trial.time_limit_per_key = Some(config.time_limit_per_key.map_or(left, |l| l.min(left)));
        search(candidate, &trial) == SearchOutcome::NotLinearizable
    };

    // Earliest failing truncation.
    let mut rets: Vec<u64> = cur.iter().filter_map(|op| op.ret).collect();
    rets.sort_unstable();
    rets.dedup();
    let (mut lo, mut hi) = (0, rets.len().saturating_sub(1));
    while lo < hi && Instant::now() < deadline {
        let mid = lo + (hi - lo) / 2;
        if fails(&truncate(&cur, rets[mid])) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut culprits: Vec<OpId> = Vec::new();
    if let Some(&t) = rets.get(hi) {
        let truncated = truncate(&cur, t);
        if fails(&truncated) {
            let at_t: Vec<OpId> = truncated
                .iter()
                .filter(|op| op.ret == Some(t))
                .map(|op| op.id)
                .collect();
            // Of several operations returning at `t`, the culprits are those
            // whose outcome the failure needs.
            culprits = at_t
                .iter()
                .copied()
                .filter(|&c| !fails(&relax(&truncated, &[c])))
                .collect();
            if culprits.is_empty() {
                culprits = at_t.into_iter().take(1).collect();
            }
            cur = truncated;
        }
    }
    let culprit = culprits.first().copied();

    let full = Support::of(ops);
    let keeps_failing = |candidate: &[Operation]| -> bool {
        if !explained(candidate, &full) || !fails(candidate) {
            return false;
        }
        if culprits.is_empty() {
            return true;
        }
        // The culprits' outcomes must still be what breaks it.
        !fails(&relax(candidate, &culprits)) && Instant::now() < deadline
    };

    let mut chunk = (cur.len() / 2).max(1);
    loop {
        let mut removed_any = false;
        let mut i = 0;
        while i < cur.len() {
            if Instant::now() >= deadline {
                tracing::debug!(len = cur.len(), "shrink budget exhausted");
                return Shrunk {
                    ops: cur,
                    culprit,
                    minimal: false,
                };
            }
            let end = (i + chunk).min(cur.len());
            let mut drop: HashSet<usize> = (i..end).collect();
            if chunk == 1 {
                // Take the readers of the value along with its write.
                if let Some(v) = written(&cur[i]) {
                    drop.extend(
                        cur.iter()
                            .enumerate()
                            .filter(|(_, op)| observes(op, v))
                            .map(|(j, _)| j),
                    );
                }
            }
            let keeps_culprits = cur
                .iter()
                .enumerate()
                .all(|(j, op)| !drop.contains(&j) || !culprits.contains(&op.id));
            let candidate: Vec<Operation> = cur
                .iter()
                .enumerate()
                .filter(|(j, _)| !drop.contains(j))
                .map(|(_, op)| op.clone())
                .collect();
            if keeps_culprits && !candidate.is_empty() && keeps_failing(&candidate) {
                cur = candidate;
                removed_any = true;
                // Retry at the same index, which now holds the next operation.
                i = i.min(cur.len());
            } else {
                i += chunk;
            }
        }
        if chunk == 1 && !removed_any {
            return Shrunk {
                ops: cur,
                culprit,
                minimal: true,
            };
        }
        if !removed_any || chunk > cur.len() {
            chunk = (chunk / 2).max(1);
        }
    }
}

/// Renders a failing sub-history, one operation per line. `full` is the whole
/// history of the key, used to show outcomes that truncation dropped.
pub(crate) fn render_failure(key: &str, full: &[Operation], shrunk: &Shrunk) -> String {
    let ops = &shrunk.ops;
    let originals: HashMap<OpId, &Operation> = full.iter().map(|op| (op.id, op)).collect();
    let t0 = ops.iter().map(|op| op.call).min().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(out, "key {key:?}: NOT LINEARIZABLE");
    let _ = writeln!(
        out,
        "failing sub-history: {} of {} operations ({})",
        ops.len(),
        full.len(),
        if shrunk.minimal {
            "shrunk: removing any one operation makes it linearizable"
        } else {
            "not fully shrunk"
        }
    );
    if let Some(c) = shrunk.culprit {
        let _ = writeln!(
            out,
            "first unexplainable outcome: #{c}; outcomes returned after it are ignored"
        );
    }
    let _ = writeln!(
        out,
        "times relative to t0 = {t0} (history clock, e.g. ns since recorder start); \
         ret \"never\" = unknown outcome"
    );
    let rows: Vec<[String; 5]> = ops
        .iter()
        .map(|op| {
            let original = originals.get(&op.id).copied().unwrap_or(op);
            let mut what = original.describe();
            if op.output.is_none() && original.output.is_some() {
                what.push_str("  [outcome ignored: returned after the culprit]");
            }
            if Some(op.id) == shrunk.culprit {
                what.push_str("  <== culprit");
            }
            [
                format!("#{}", op.id),
                format!("client {}", op.client),
                format!("call +{}", op.call - t0),
                match original.ret {
                    Some(r) => format!("ret +{}", r - t0),
                    None => "ret never".to_string(),
                },
                what,
            ]
        })
        .collect();
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in &rows {
        let _ = writeln!(
            out,
            "  {:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
    }
    out
}
