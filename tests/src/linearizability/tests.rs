//! Tests of the checker on hand-written and generated histories.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::model;
use super::*;

/// Builds histories by hand; ids are assigned in order, the key is "k" unless
/// set with [`Builder::key`].
#[derive(Default)]
struct Builder {
    ops: Vec<Operation>,
    key: Option<String>,
}

fn val(s: Option<&str>) -> Option<Value> {
    s.map(Value::from)
}

impl Builder {
    fn key(&mut self, key: &str) -> &mut Self {
        self.key = Some(key.to_string());
        self
    }

    fn push(
        &mut self,
        client: u64,
        call: u64,
        ret: Option<u64>,
        input: Input,
        output: Option<Output>,
    ) -> &mut Self {
        let id = self.ops.len() as OpId;
        self.ops.push(Operation {
            id,
            client,
            key: self.key.clone().unwrap_or_else(|| "k".to_string()),
            call,
            ret,
            input,
            output,
        });
        self
    }

    fn put(&mut self, client: u64, call: u64, ret: u64, v: &str) -> &mut Self {
        let input = Input::Put { value: v.into() };
        self.push(client, call, Some(ret), input, Some(Output::Put))
    }

    fn put_unknown(&mut self, client: u64, call: u64, v: &str) -> &mut Self {
        self.push(client, call, None, Input::Put { value: v.into() }, None)
    }

    fn get(&mut self, client: u64, call: u64, ret: u64, v: Option<&str>) -> &mut Self {
        let output = Output::Get { value: val(v) };
        self.push(client, call, Some(ret), Input::Get, Some(output))
    }

    fn delete(&mut self, client: u64, call: u64, ret: u64, deleted: Option<bool>) -> &mut Self {
        let output = Output::Delete { deleted };
        self.push(client, call, Some(ret), Input::Delete, Some(output))
    }

    #[allow(clippy::too_many_arguments)]
    fn cas(
        &mut self,
        client: u64,
        call: u64,
        ret: u64,
        expected: Option<&str>,
        new: Option<&str>,
        succeeded: bool,
    ) -> &mut Self {
        let input = Input::Cas {
            expected: val(expected),
            new: val(new),
        };
        let output = Output::Cas {
            succeeded,
            current: None,
        };
        self.push(client, call, Some(ret), input, Some(output))
    }

    fn history(&self) -> History {
        History::new(self.ops.clone())
    }

    fn check(&self) -> Report {
        check_history(&self.history(), &test_config()).expect("valid history")
    }
}

fn test_config() -> CheckConfig {
    CheckConfig {
        threads: 1,
        shrink_budget: Duration::from_secs(2),
        ..CheckConfig::default()
    }
}

fn assert_ok(b: &Builder) {
    let report = b.check();
    assert_eq!(
        report.verdict(),
        Verdict::Linearizable,
        "expected linearizable:\n{}\n{:#?}",
        report.render(),
        b.ops
    );
}

/// Asserts the history fails and returns the failure of key "k".
fn assert_fails(b: &Builder) -> Failure {
    let report = b.check();
    assert_eq!(
        report.verdict(),
        Verdict::NotLinearizable,
        "expected a violation: {:#?}",
        b.ops
    );
    let failure = report.failures().next().expect("a failure").clone();
    failure
}

#[test]
fn sequential_put_get_is_linearizable() {
    let mut b = Builder::default();
    b.get(1, 0, 1, None)
        .put(1, 2, 3, "a")
        .get(1, 4, 5, Some("a"))
        .put(2, 6, 7, "b")
        .get(1, 8, 9, Some("b"))
        .delete(2, 10, 11, Some(true))
        .get(1, 12, 13, None);
    assert_ok(&b);
}

#[test]
fn concurrent_writes_may_be_seen_in_either_order_until_they_complete() {
    let mut b = Builder::default();
    b.put(1, 0, 10, "a")
        .put(2, 0, 10, "b")
        .get(3, 1, 5, Some("b"))
        .get(4, 6, 9, Some("a"))
        .get(3, 11, 12, Some("a"));
    assert_ok(&b);

    let mut b = Builder::default();
    b.put(1, 0, 10, "a")
        .put(2, 0, 10, "b")
        .get(3, 1, 5, Some("a"))
        .get(4, 2, 6, Some("b"));
    assert_ok(&b);

    // Once both writes completed, reads must agree on the last one.
    let mut b = Builder::default();
    b.put(1, 0, 10, "a")
        .put(2, 0, 10, "b")
        .get(3, 11, 12, Some("a"))
        .get(3, 13, 14, Some("b"));
    assert_fails(&b);
}

#[test]
fn stale_read_is_not_linearizable_and_shrinks_to_three_ops() {
    let mut b = Builder::default();
    b.put(1, 0, 1, "a")
        .get(2, 0, 1, Some("a"))
        .put(1, 2, 3, "b")
        .get(3, 2, 3, Some("a"))
        .get(2, 4, 5, Some("a"))
        .get(3, 4, 5, Some("b"));
    let f = assert_fails(&b);
    assert_eq!(f.key, "k");
    assert_eq!(f.total_ops, 6);
    assert!(f.minimal, "{}", f.rendering);
    let ids: Vec<OpId> = f.ops.iter().map(|op| op.id).collect();
    assert_eq!(ids, vec![0, 2, 4], "{}", f.rendering);
    for needle in [
        "key \"k\"",
        "#4",
        "client 2",
        "get => \"a\"",
        "put \"b\" => ok",
    ] {
        assert!(
            f.rendering.contains(needle),
            "{needle:?} in\n{}",
            f.rendering
        );
    }
    assert_eq!(f.culprit, Some(4));
    assert!(f
        .rendering
        .contains("#4  client 2  call +4  ret +5  get => \"a\"  <== culprit"));
    assert_eq!(f.rendering.lines().count(), 4 + 3, "{}", f.rendering);
}

#[test]
fn read_of_a_value_never_written_is_not_linearizable() {
    let mut b = Builder::default();
    b.put(1, 0, 10, "a")
        .get(2, 1, 9, Some("zzz"))
        .get(2, 11, 12, Some("a"));
    let f = assert_fails(&b);
    assert_eq!(f.ops.len(), 1, "{}", f.rendering);
    assert_eq!(f.ops[0].id, 1);
}

#[test]
fn lost_acknowledged_write_is_not_linearizable() {
    let mut b = Builder::default();
    b.put(1, 0, 5, "a").put(2, 1, 6, "b").get(3, 10, 11, None);
    assert_fails(&b);

    let mut b = Builder::default();
    b.put(1, 0, 5, "a")
        .put(2, 6, 8, "b")
        .get(3, 10, 11, Some("a"));
    assert_fails(&b);
}

#[test]
fn unknown_write_may_or_may_not_take_effect() {
    // Appears in a later read.
    let mut b = Builder::default();
    b.put(1, 0, 1, "a")
        .put_unknown(2, 2, "b")
        .get(3, 10, 11, Some("b"));
    assert_ok(&b);

    // Never appears.
    let mut b = Builder::default();
    b.put(1, 0, 1, "a")
        .put_unknown(2, 2, "b")
        .get(3, 10, 11, Some("a"))
        .get(3, 1000, 1001, Some("a"));
    assert_ok(&b);

    // Takes effect long after the client gave up.
    let mut b = Builder::default();
    b.put(1, 0, 1, "a")
        .put_unknown(2, 2, "b")
        .get(3, 10, 11, Some("a"))
        .get(3, 1000, 1001, Some("b"));
    assert_ok(&b);

    // Once seen, it cannot be undone.
    let mut b = Builder::default();
    b.put(1, 0, 1, "a")
        .put_unknown(2, 2, "b")
        .get(3, 10, 11, Some("b"))
        .get(3, 12, 13, Some("a"));
    assert_fails(&b);

    // It cannot take effect before it was invoked.
    let mut b = Builder::default();
    b.get(3, 0, 1, Some("b")).put_unknown(2, 5, "b");
    assert_fails(&b);
}

#[test]
fn unknown_reads_constrain_nothing() {
    let mut b = Builder::default();
    b.put(1, 0, 1, "a").push(2, 2, None, Input::Get, None);
    let report = b.check();
    assert!(report.is_linearizable(), "{}", report.render());
    match report.key("k") {
        Some(KeyVerdict::Linearizable { ops, .. }) => assert_eq!(*ops, 1),
        other => panic!("unexpected verdict {other:?}"),
    }
}

#[test]
fn absent_and_empty_values_are_distinct() {
    let mut b = Builder::default();
    b.get(1, 0, 1, None).put(1, 2, 3, "").get(1, 4, 5, Some(""));
    assert_ok(&b);

    let mut b = Builder::default();
    b.put(1, 0, 1, "").get(1, 2, 3, None);
    assert_fails(&b);

    let mut b = Builder::default();
    b.get(1, 0, 1, Some(""));
    assert_fails(&b);

    let mut b = Builder::default();
    b.put(1, 0, 1, "")
        .cas(1, 2, 3, None, Some("x"), false)
        .cas(1, 4, 5, Some(""), None, true)
        .get(1, 6, 7, None);
    assert_ok(&b);
}

#[test]
fn cas_results_must_be_consistent() {
    let mut b = Builder::default();
    b.cas(1, 0, 1, None, Some("a"), true)
        .cas(1, 2, 3, Some("x"), Some("b"), false)
        .cas(1, 4, 5, Some("a"), Some("b"), true)
        .get(1, 6, 7, Some("b"))
        .cas(1, 8, 9, Some("b"), None, true)
        .get(1, 10, 11, None);
    assert_ok(&b);

    // A CAS that failed although the comparison held.
    let mut b = Builder::default();
    b.put(1, 0, 1, "a")
        .cas(1, 2, 3, Some("a"), Some("b"), false);
    assert_fails(&b);

    // A CAS that succeeded although the comparison failed.
    let mut b = Builder::default();
    b.put(1, 0, 1, "a").cas(1, 2, 3, Some("z"), Some("b"), true);
    assert_fails(&b);

    // Two concurrent CASes from the same value cannot both succeed...
    let mut b = Builder::default();
    b.put(1, 0, 1, "a")
        .cas(1, 2, 10, Some("a"), Some("b"), true)
        .cas(2, 2, 10, Some("a"), Some("c"), true);
    assert_fails(&b);

    // ...but one may succeed and the other fail.
    let mut b = Builder::default();
    b.put(1, 0, 1, "a")
        .cas(1, 2, 10, Some("a"), Some("b"), true)
        .cas(2, 2, 10, Some("a"), Some("c"), false)
        .get(3, 11, 12, Some("b"));
    assert_ok(&b);

    // The reported current value is checked when present.
    let mut b = Builder::default();
    b.put(1, 0, 1, "a").push(
        1,
        2,
        Some(3),
        Input::Cas {
            expected: val(Some("z")),
            new: val(Some("b")),
        },
        Some(Output::Cas {
            succeeded: false,
            current: Some(None),
        }),
    );
    assert_fails(&b);
}

#[test]
fn delete_results_are_checked_when_known() {
    let mut b = Builder::default();
    b.delete(1, 0, 1, Some(false))
        .put(1, 2, 3, "a")
        .delete(1, 4, 5, None)
        .get(1, 6, 7, None);
    assert_ok(&b);

    let mut b = Builder::default();
    b.put(1, 0, 1, "a").delete(1, 2, 3, Some(false));
    assert_fails(&b);
}

#[test]
fn keys_are_checked_independently() {
    let mut b = Builder::default();
    b.key("x").put(1, 0, 1, "a").get(2, 2, 3, Some("a"));
    b.key("y").put(1, 0, 1, "a").get(2, 2, 3, None);
    // "a" on x does not make a read of "a" on y legal.
    b.key("z").get(1, 5, 6, Some("a"));
    let report = b.check();
    assert_eq!(report.verdict(), Verdict::NotLinearizable);
    let failed: Vec<&str> = report.failures().map(|f| f.key.as_str()).collect();
    assert_eq!(failed, vec!["y", "z"], "{}", report.render());
    assert!(matches!(
        report.key("x"),
        Some(KeyVerdict::Linearizable { ops: 2, .. })
    ));
    assert!(report.render().contains("key \"y\": NOT LINEARIZABLE"));
}

#[test]
fn equal_times_count_as_concurrent() {
    let mut b = Builder::default();
    b.put(1, 0, 5, "a").get(2, 5, 6, None);
    assert_ok(&b);
}

#[test]
fn state_limit_yields_unknown_not_a_verdict() {
    // Many concurrent unknown writes and a read that nothing explains: the
    // search must explore every subset before failing.
    let mut b = Builder::default();
    for i in 0..20 {
        b.put_unknown(i, 0, &format!("v{i}"));
    }
    b.get(100, 1, 2, Some("never"));
    let config = CheckConfig {
        max_states_per_key: 50,
        ..test_config()
    };
    let report = check_history(&b.history(), &config).unwrap();
    assert_eq!(report.verdict(), Verdict::Unknown, "{}", report.render());
    match &report.keys[0] {
        KeyVerdict::Unknown { key, reason } => {
            assert_eq!(key, "k");
            assert!(reason.contains("50 states"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn invalid_histories_are_rejected() {
    let mut b = Builder::default();
    b.push(1, 5, Some(4), Input::Get, Some(Output::Get { value: None }));
    assert!(matches!(
        check_history(&b.history(), &test_config()),
        Err(HistoryError::Invalid { id: 0, .. })
    ));
    let mut b = Builder::default();
    b.push(1, 0, Some(1), Input::Get, Some(Output::Put));
    assert!(check_history(&b.history(), &test_config()).is_err());
    let mut b = Builder::default();
    b.get(1, 0, 1, None).get(1, 2, 3, None);
    b.ops[1].id = 0;
    assert!(check_history(&b.history(), &test_config()).is_err());
}

#[test]
fn histories_round_trip_through_json_lines() {
    let mut b = Builder::default();
    b.put(1, 0, 1, "a")
        .put(1, 2, 3, "")
        .push(
            1,
            4,
            Some(5),
            Input::Put {
                value: Value(vec![0xff, 0, 7]),
            },
            Some(Output::Put),
        )
        .push(
            2,
            6,
            Some(7),
            Input::Cas {
                expected: Some(Value(vec![0xff, 0, 7])),
                new: None,
            },
            Some(Output::Cas {
                succeeded: true,
                current: Some(None),
            }),
        )
        .cas(2, 8, 9, None, Some("c"), true)
        .delete(2, 10, 11, Some(true))
        .delete(2, 12, 13, None)
        .get(3, 14, 15, None)
        .put_unknown(3, 16, "d");
    let history = b.history();
    let mut buf = Vec::new();
    history.write_jsonl(&mut buf).unwrap();
    let text = String::from_utf8(buf.clone()).unwrap();
    assert_eq!(text.lines().count(), history.ops.len());
    assert!(text.contains(r#"{"hex":"ff0007"}"#), "{text}");
    let back = History::read_jsonl(&buf[..]).unwrap();
    assert_eq!(back, history);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    history.save(&path).unwrap();
    assert!(check_file(&path, &test_config()).unwrap().is_linearizable());

    // A saved failing history fails again when re-checked.
    b.get(3, 100, 101, Some("a"));
    b.history().save(&path).unwrap();
    let report = check_file(&path, &test_config()).unwrap();
    assert_eq!(report.verdict(), Verdict::NotLinearizable);

    std::fs::write(&path, "{\"id\": 1}\n").unwrap();
    assert!(matches!(
        check_file(&path, &test_config()),
        Err(HistoryError::Parse { line: 1, .. })
    ));
}

#[test]
fn recorder_records_concurrent_clients() {
    let rec = Arc::new(HistoryRecorder::new());
    let threads: Vec<_> = (0..4u64)
        .map(|client| {
            let rec = Arc::clone(&rec);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let value = Value::from(format!("c{client}-{i}"));
                    let id = rec.invoke(client, format!("k{client}"), Input::Put { value });
                    rec.complete(id, Output::Put).unwrap();
                    let id = rec.invoke(client, format!("k{client}"), Input::Get);
                    if i % 10 == 9 {
                        rec.complete_unknown(id).unwrap();
                    } else {
                        let value = Some(Value::from(format!("c{client}-{i}")));
                        rec.complete(id, Output::Get { value }).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Still in flight when the history is taken: unknown.
    let pending = rec.invoke(9, "k0", Input::Put { value: "p".into() });
    let history = rec.history();
    assert_eq!(history.ops.len(), 401);
    history.validate().unwrap();
    assert!(history
        .ops
        .iter()
        .all(|op| op.ret.is_none_or(|r| r >= op.call)));
    assert_eq!(
        history.ops.iter().filter(|op| !op.is_completed()).count(),
        21
    );
    let report = check_history(&history, &test_config()).unwrap();
    assert!(report.is_linearizable(), "{}", report.render());
    assert_eq!(report.keys.len(), 4);

    assert_eq!(
        rec.complete(pending, Output::Get { value: None }),
        Err(RecordError::WrongOutputKind(pending))
    );
    rec.complete(pending, Output::Put).unwrap();
    assert_eq!(
        rec.complete(pending, Output::Put),
        Err(RecordError::AlreadyCompleted(pending))
    );
    assert_eq!(
        rec.complete_unknown(pending),
        Err(RecordError::AlreadyCompleted(pending))
    );
    assert_eq!(rec.complete_unknown(999), Err(RecordError::UnknownOp(999)));
}

/// Generates a history by running operations against a real sequential
/// register at random linearization points inside random intervals.
struct Generated {
    history: History,
    /// Number of keys used.
    keys: usize,
}

fn generate(seed: u64, clients: u64, ops_per_client: usize, keys: usize) -> Generated {
    let mut rng = SmallRng::seed_from_u64(seed);
    struct Pending {
        op: Operation,
        lin: u64,
        applied: bool,
    }
    let mut pending = Vec::new();
    let mut fresh = 0u64;
    let mut recent: Vec<Vec<Value>> = vec![Vec::new(); keys];
    for client in 0..clients {
        let mut t = rng.gen_range(0..50u64);
        for _ in 0..ops_per_client {
            let k = rng.gen_range(0..keys);
            let mut new_value = || {
                fresh += 1;
                Value::from(format!("v{fresh}"))
            };
            let roll = rng.gen_range(0..100);
            let input = if roll < 35 {
                let value = new_value();
                recent[k].push(value.clone());
                Input::Put { value }
            } else if roll < 75 {
                Input::Get
            } else if roll < 80 {
                Input::Delete
            } else {
                let expected = if rng.gen_bool(0.2) || recent[k].is_empty() {
                    None
                } else {
                    let back = rng.gen_range(1..=recent[k].len().min(3));
                    Some(recent[k][recent[k].len() - back].clone())
                };
                let new = if rng.gen_bool(0.1) {
                    None
                } else {
                    let v = new_value();
                    recent[k].push(v.clone());
                    Some(v)
                };
                Input::Cas { expected, new }
            };
            let call = t + rng.gen_range(0..20);
            let lin = call + rng.gen_range(0..60);
            let ret = lin + rng.gen_range(0..60);
            t = ret;
            let unknown = rng.gen_range(0..100) < 5;
            pending.push(Pending {
                op: Operation {
                    id: 0,
                    client,
                    key: format!("k{k}"),
                    call,
                    ret: (!unknown).then_some(ret),
                    input,
                    output: None,
                },
                lin,
                applied: !unknown || rng.gen_bool(0.5),
            });
        }
    }
    pending.sort_by_key(|p| p.lin);
    let mut state: HashMap<String, Option<Value>> = HashMap::new();
    for p in &mut pending {
        if !p.applied {
            continue;
        }
        let s = state.entry(p.op.key.clone()).or_default();
        let (next, mut output) = model::apply(s, &p.op.input);
        *s = next;
        match &mut output {
            Output::Delete { deleted } if rng.gen_bool(0.3) => *deleted = None,
            Output::Cas { current, .. } if rng.gen_bool(0.5) => *current = None,
            _ => {}
        }
        if p.op.ret.is_some() {
            p.op.output = Some(output);
        }
    }
    let mut ops: Vec<Operation> = pending.into_iter().map(|p| p.op).collect();
    ops.sort_by_key(|op| op.call);
    for (i, op) in ops.iter_mut().enumerate() {
        op.id = i as OpId;
    }
    Generated {
        history: History::new(ops),
        keys,
    }
}

/// Finds a read that returned something, and a write `w1` of the same key
/// that was overwritten by a put `w2` before the read began: making the read
/// return `w1`'s value is a stale read.
fn stale_read_mutation(history: &History) -> Option<(usize, Value)> {
    let ops = &history.ops;
    for (r, read) in ops.iter().enumerate() {
        if !matches!(read.output, Some(Output::Get { .. })) {
            continue;
        }
        for w2 in ops.iter() {
            let (Input::Put { .. }, Some(w2_ret)) = (&w2.input, w2.ret) else {
                continue;
            };
            if w2.key != read.key || w2_ret >= read.call {
                continue;
            }
            for w1 in ops.iter() {
                if let (Input::Put { value }, Some(w1_ret)) = (&w1.input, w1.ret) {
                    let reads_it = read.output
                        == Some(Output::Get {
                            value: Some(value.clone()),
                        });
                    if w1.key == read.key && w1_ret < w2.call && !reads_it {
                        return Some((r, value.clone()));
                    }
                }
            }
        }
    }
    None
}

#[test]
fn generated_histories_are_linearizable_and_mutations_are_caught() {
    let started = Instant::now();
    let config = CheckConfig {
        shrink_budget: Duration::from_millis(500),
        ..test_config()
    };
    let mut stale_checked = 0;
    for seed in 0..40 {
        let g = generate(seed, 8, 40, 3);
        let report = check_history(&g.history, &config).unwrap();
        assert!(
            report.is_linearizable(),
            "seed {seed}: generated history rejected:\n{}",
            report.render()
        );
        assert_eq!(report.keys.len(), g.keys);

        // A read of a value nobody wrote.
        let mut bad = g.history.clone();
        let r = bad
            .ops
            .iter()
            .position(|op| matches!(op.output, Some(Output::Get { .. })))
            .expect("some completed read");
        bad.ops[r].output = Some(Output::Get {
            value: Some("bogus".into()),
        });
        let report = check_history(&bad, &config).unwrap();
        assert_eq!(report.verdict(), Verdict::NotLinearizable, "seed {seed}");
        let f = report.failures().next().unwrap();
        assert_eq!(f.key, bad.ops[r].key);
        assert!(
            f.ops.iter().any(|op| op.id == bad.ops[r].id),
            "{}",
            f.rendering
        );

        // A stale read.
        if let Some((r, value)) = stale_read_mutation(&g.history) {
            let mut bad = g.history.clone();
            bad.ops[r].output = Some(Output::Get { value: Some(value) });
            let report = check_history(&bad, &config).unwrap();
            assert_eq!(
                report.verdict(),
                Verdict::NotLinearizable,
                "seed {seed}: stale read of op {r} not caught"
            );
            let f = report.failures().next().unwrap();
            assert!(f.ops.len() < g.history.ops.len() / 4, "{}", f.rendering);
            stale_checked += 1;
        }
    }
    assert!(
        stale_checked > 20,
        "only {stale_checked} stale reads injected"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

/// Reference checker: tries every order consistent with real time. Only for
/// tiny histories.
fn brute_force(ops: &[Operation]) -> bool {
    fn go(ops: &[Operation], done: &mut Vec<bool>, state: &Option<Value>) -> bool {
        if ops
            .iter()
            .zip(done.iter())
            .all(|(op, d)| *d || !op.is_completed())
        {
            return true;
        }
        for i in 0..ops.len() {
            if done[i] {
                continue;
            }
            let blocked = ops
                .iter()
                .enumerate()
                .any(|(j, p)| !done[j] && j != i && p.ret.is_some_and(|r| r < ops[i].call));
            if blocked {
                continue;
            }
            if let Some(next) = model::step(state, &ops[i].input, ops[i].output.as_ref()) {
                done[i] = true;
                let ok = go(ops, done, &next);
                done[i] = false;
                if ok {
                    return true;
                }
            }
        }
        false
    }
    go(ops, &mut vec![false; ops.len()], &None)
}

#[test]
fn search_agrees_with_brute_force_on_small_histories() {
    let mut rng = SmallRng::seed_from_u64(7);
    let values = ["a", "b", ""];
    let pick = |rng: &mut SmallRng| -> Option<Value> {
        let i = rng.gen_range(0..=values.len());
        values.get(i).map(|v| Value::from(*v))
    };
    let (mut ok, mut bad) = (0, 0);
    for case in 0..3000 {
        let n = rng.gen_range(1..=6);
        let mut ops = Vec::new();
        for id in 0..n {
            let call = rng.gen_range(0..10u64);
            let ret = call + rng.gen_range(0..6);
            let input = match rng.gen_range(0..4) {
                0 => Input::Put {
                    value: pick(&mut rng).unwrap_or_else(|| "a".into()),
                },
                1 => Input::Get,
                2 => Input::Delete,
                _ => Input::Cas {
                    expected: pick(&mut rng),
                    new: pick(&mut rng),
                },
            };
            let output = match &input {
                Input::Put { .. } => Output::Put,
                Input::Get => Output::Get {
                    value: pick(&mut rng),
                },
                Input::Delete => Output::Delete {
                    deleted: [None, Some(false), Some(true)][rng.gen_range(0..3)],
                },
                Input::Cas { .. } => Output::Cas {
                    succeeded: rng.gen_bool(0.5),
                    current: if rng.gen_bool(0.5) {
                        None
                    } else {
                        Some(pick(&mut rng))
                    },
                },
            };
            let unknown = rng.gen_bool(0.15);
            ops.push(Operation {
                id,
                client: id,
                key: "k".into(),
                call,
                ret: (!unknown).then_some(ret),
                input,
                output: (!unknown).then_some(output),
            });
        }
        let expected = brute_force(&ops);
        let report = check_history(&History::new(ops.clone()), &test_config()).unwrap();
        assert_eq!(
            report.is_linearizable(),
            expected,
            "case {case}: checker says {:?}, brute force {expected}: {ops:#?}",
            report.verdict()
        );
        if let Some(f) = report.failures().next() {
            assert!(!brute_force(&f.ops), "case {case}: shrunk history passes");
        }
        if expected {
            ok += 1;
        } else {
            bad += 1;
        }
    }
    assert!(
        ok > 300 && bad > 300,
        "unbalanced cases: {ok} ok, {bad} bad"
    );
}

#[test]
fn large_concurrent_history_checks_quickly() {
    // One key, 10 clients, 4000 operations.
    let g = generate(99, 10, 400, 1);
    let started = Instant::now();
    let report = check_history(&g.history, &test_config()).unwrap();
    let elapsed = started.elapsed();
    assert!(report.is_linearizable(), "{}", report.render());
    let states = match &report.keys[0] {
        KeyVerdict::Linearizable { states, .. } => *states,
        other => panic!("unexpected {other:?}"),
    };
    assert!(
        elapsed < Duration::from_secs(3),
        "4000 ops took {elapsed:?} ({states} states)"
    );
}
