//! Unit and model tests of the MVCC store.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::api::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::api::pb::etcdserverpb::request_op::Request as Op;
use crate::api::pb::etcdserverpb::response_op;
use crate::api::pb::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest,
};

fn apply(s: &mut Store, req: Request) -> Result<Response, MvccError> {
    let index = s.applied_index() + 1;
    match s.apply(index, 1, &Command(req).encode()) {
        Applied::Command(r) => r,
        Applied::Nothing => panic!("command not applied"),
    }
}

fn put(s: &mut Store, k: &str, v: &str) -> i64 {
    match apply(s, Command::put(k, v).0).unwrap() {
        Response::Put(p) => p.header.unwrap().revision,
        other => panic!("{other:?}"),
    }
}

fn range(key: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

#[test]
fn revisions_versions_and_history() {
    let mut s = Store::default();
    assert_eq!(s.revision(), 1, "an empty store is at revision 1, as etcd");
    assert_eq!(put(&mut s, "a", "1"), 2);
    assert_eq!(put(&mut s, "a", "2"), 3);
    let r = s.range(&range("a", "")).unwrap();
    let kv = &r.kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(r.header.unwrap().revision, 3);
    let old = s
        .range(&RangeRequest {
            revision: 2,
            ..range("a", "")
        })
        .unwrap();
    assert_eq!(old.kvs[0].value, b"1");
    // A delete of nothing uses no revision.
    let d = apply(&mut s, Command::delete("zz").0).unwrap();
    assert!(matches!(d, Response::DeleteRange(ref d) if d.deleted == 0));
    assert_eq!(s.revision(), 3);
    apply(&mut s, Command::delete("a").0).unwrap();
    assert_eq!(s.revision(), 4);
    assert_eq!(put(&mut s, "a", "3"), 5);
    let kv = &s.range(&range("a", "")).unwrap().kvs[0];
    assert_eq!(
        (kv.create_revision, kv.version),
        (5, 1),
        "recreated after a delete"
    );
    assert_eq!(
        s.range(&RangeRequest {
            revision: 6,
            ..range("a", "")
        }),
        Err(MvccError::FutureRevision)
    );
}

/// A compaction leaves alone the keys it frees nothing of: a view taken
/// before it still shares their part of the map (touching every key would
/// copy the whole map on the driver thread).
#[test]
fn compaction_copies_only_the_keys_it_frees_something_of() {
    let mut s = Store::default();
    for i in 0..2_000 {
        put(&mut s, &format!("once/{i:04}"), "v");
    }
    put(&mut s, "twice", "1");
    put(&mut s, "twice", "2");
    let view = s.clone();
    let now = s.revision();
    apply(
        &mut s,
        Request::Compaction(CompactionRequest {
            revision: now,
            physical: false,
        }),
    )
    .unwrap();
    assert_eq!(s.keys.get(&b"twice"[..]).unwrap().versions().len(), 1);
    let shared = s
        .keys
        .iter()
        .zip(view.keys.iter())
        .filter(|((k, a), (_, b))| k.starts_with(b"once/") && std::ptr::eq(*a, *b))
        .count();
    assert!(
        shared > 1_900,
        "{shared} of 2,000 untouched keys still shared with the view"
    );
}

#[test]
fn compaction_refuses_old_reads_and_frees_history() {
    let mut s = Store::default();
    for i in 0..10 {
        put(&mut s, "k", &i.to_string());
    }
    put(&mut s, "gone", "x");
    apply(&mut s, Command::delete("gone").0).unwrap();
    let size_before = s.size();
    apply(
        &mut s,
        Request::Compaction(CompactionRequest {
            revision: 9,
            physical: true,
        }),
    )
    .unwrap();
    assert!(s.size() < size_before);
    let at = |rev| {
        s.range(&RangeRequest {
            revision: rev,
            ..range("k", "")
        })
    };
    assert_eq!(at(8), Err(MvccError::Compacted));
    assert_eq!(at(9).unwrap().kvs[0].value, b"7");
    assert_eq!(
        apply(
            &mut s,
            Request::Compaction(CompactionRequest {
                revision: 9,
                physical: false
            })
        ),
        Err(MvccError::Compacted)
    );
    let now = s.revision();
    apply(
        &mut s,
        Request::Compaction(CompactionRequest {
            revision: now,
            physical: false,
        }),
    )
    .unwrap();
    assert!(
        s.keys.get(&b"gone"[..]).is_none(),
        "a deleted key's history is dropped"
    );
}

#[test]
fn range_limits_sorting_and_filters() {
    let mut s = Store::default();
    for k in ["a", "b", "c", "d"] {
        put(&mut s, k, &format!("v{k}"));
    }
    put(&mut s, "b", "again");
    let all = range("\0", "\0");
    assert_eq!(keys(&s.range(&all).unwrap()), ["a", "b", "c", "d"]);
    let limited = s
        .range(&RangeRequest {
            limit: 2,
            ..all.clone()
        })
        .unwrap();
    assert_eq!(
        (keys(&limited), limited.more, limited.count),
        (vec!["a".into(), "b".into()], true, 4)
    );
    let by_mod_desc = s
        .range(&RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Mod as i32,
            ..all.clone()
        })
        .unwrap();
    assert_eq!(keys(&by_mod_desc), ["b", "d", "c", "a"]);
    let filtered = s
        .range(&RangeRequest {
            min_mod_revision: 4,
            ..all.clone()
        })
        .unwrap();
    assert_eq!(
        (keys(&filtered), filtered.count),
        (vec!["b".to_string(), "c".into(), "d".into()], 4)
    );
    let count = s
        .range(&RangeRequest {
            count_only: true,
            ..range("b", "d")
        })
        .unwrap();
    assert_eq!((count.kvs.len(), count.count), (0, 2));
    let keys_only = s
        .range(&RangeRequest {
            keys_only: true,
            ..range("a", "")
        })
        .unwrap();
    assert!(keys_only.kvs[0].value.is_empty());
    assert_eq!(keys(&s.range(&range("c", "\0")).unwrap()), ["c", "d"]);
    assert_eq!(
        keys(&s.range(&range("c", "a")).unwrap()),
        Vec::<String>::new()
    );
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    }
}

#[test]
fn txn_is_one_revision_and_atomic() {
    let mut s = Store::default();
    put(&mut s, "x", "1");
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            op_put("a", "1"),
            op_put("b", "2"),
            RequestOp {
                request: Some(Op::RequestRange(range("a", ""))),
            },
        ],
        failure: vec![],
    };
    let Response::Txn(resp) = apply(&mut s, Request::Txn(t)).unwrap() else {
        panic!()
    };
    assert!(resp.succeeded);
    assert_eq!(s.revision(), 3, "one revision for the whole txn");
    let Some(response_op::Response::ResponseRange(r)) = &resp.responses[2].response else {
        panic!()
    };
    assert_eq!(r.kvs[0].value, b"1", "reads in a txn see its writes");
    // A failing op (ignore_value on a missing key) rolls back everything.
    let bad = TxnRequest {
        compare: vec![],
        success: vec![
            op_put("c", "3"),
            RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: b"missing".to_vec(),
                    ignore_value: true,
                    ..Default::default()
                })),
            },
        ],
        failure: vec![],
    };
    assert_eq!(
        apply(&mut s, Request::Txn(bad)),
        Err(MvccError::KeyNotFound)
    );
    assert_eq!((s.revision(), s.get(b"c")), (3, Ok(None)));
    let dup = TxnRequest {
        compare: vec![],
        success: vec![op_put("d", "1"), op_put("d", "2")],
        failure: vec![],
    };
    assert_eq!(check_txn(&dup), Err(MvccError::DuplicateKey));
    let put_in_deleted = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp {
                request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                    key: b"a".to_vec(),
                    range_end: b"z".to_vec(),
                    prev_kv: false,
                })),
            },
            op_put("m", "1"),
        ],
        failure: vec![],
    };
    assert_eq!(check_txn(&put_in_deleted), Err(MvccError::DuplicateKey));
}

#[test]
fn cas_through_txn() {
    let mut s = Store::default();
    let cas = |s: &mut Store, e: Option<&str>, v: Option<&str>| {
        let c = Command::cas(
            b"k".to_vec(),
            e.map(|x| x.as_bytes().to_vec()),
            v.map(|x| x.as_bytes().to_vec()),
        );
        match apply(s, c.0).unwrap() {
            Response::Txn(t) => t.succeeded,
            other => panic!("{other:?}"),
        }
    };
    assert!(cas(&mut s, None, Some("a")));
    assert!(!cas(&mut s, None, Some("b")));
    assert!(!cas(&mut s, Some("b"), Some("c")));
    assert!(cas(&mut s, Some("a"), None));
    assert_eq!(s.get(b"k"), Ok(None));
}

#[test]
fn nospace_alarm_refuses_puts_until_disarmed() {
    let mut s = Store::default();
    let alarm = |action: AlarmAction| {
        Request::Alarm(AlarmRequest {
            action: action as i32,
            member_id: 1,
            alarm: AlarmType::Nospace as i32,
        })
    };
    apply(&mut s, alarm(AlarmAction::Activate)).unwrap();
    assert_eq!(
        apply(&mut s, Command::put("a", "1").0),
        Err(MvccError::NoSpace)
    );
    apply(&mut s, Command::delete("a").0).unwrap();
    apply(&mut s, alarm(AlarmAction::Deactivate)).unwrap();
    put(&mut s, "a", "1");
}

#[test]
fn snapshot_round_trip_keeps_history_and_refuses_damage() {
    let mut s = Store::default();
    for i in 0..50 {
        put(&mut s, &format!("k{}", i % 7), &i.to_string());
    }
    apply(&mut s, Command::delete("k3").0).unwrap();
    s.set_member(2, Some(b"ctx".to_vec()));
    let mut bytes = Vec::new();
    s.write_snapshot(&mut bytes).unwrap();
    let mut r = Store::default();
    r.restore_snapshot(s.applied_index(), &mut bytes.as_slice())
        .unwrap();
    assert_eq!(r.hash_kv(0).unwrap(), s.hash_kv(0).unwrap());
    assert_eq!(
        (r.digest(), r.len(), r.size(), r.revision()),
        (s.digest(), s.len(), s.size(), s.revision())
    );
    assert_eq!(r.members().count(), 1);
    let before = r.hash_kv(0).unwrap();
    assert!(r
        .restore_snapshot(999, &mut &bytes[..bytes.len() - 3])
        .is_err());
    assert_eq!(r.hash_kv(0).unwrap(), before);
    // The format before the MVCC store is refused with a clear error.
    let old = [0u8; 16];
    let err = r.restore_snapshot(5, &mut &old[..]).unwrap_err();
    assert!(err.to_string().contains("before the MVCC store"), "{err}");
}

// ---- model test ----

/// A live key in the model: value, create revision, mod revision, version.
type ModelKv = (Vec<u8>, i64, i64, i64);

/// The model: the whole map at every revision.
#[derive(Clone, Default)]
struct Model {
    /// states[r] = live keys at revision r (index 0 unused, 1 = empty).
    states: Vec<BTreeMap<Vec<u8>, ModelKv>>,
    compacted: i64,
}

impl Model {
    fn new() -> Self {
        Model {
            states: vec![BTreeMap::new(), BTreeMap::new()],
            compacted: 0,
        }
    }
    fn rev(&self) -> i64 {
        self.states.len() as i64 - 1
    }
    fn put(&mut self, k: &[u8], v: &[u8]) {
        let mut next = self.states.last().unwrap().clone();
        let rev = self.rev() + 1;
        let (create, version) = match next.get(k) {
            Some(&(_, c, _, ver)) => (c, ver + 1),
            None => (rev, 1),
        };
        next.insert(k.to_vec(), (v.to_vec(), create, rev, version));
        self.states.push(next);
    }
    fn delete(&mut self, r: &KeyRange) -> usize {
        let mut next = self.states.last().unwrap().clone();
        let before = next.len();
        next.retain(|k, _| !r.contains(k));
        let n = before - next.len();
        if n > 0 {
            self.states.push(next);
        }
        n
    }
}

#[derive(Debug, Clone)]
enum ModelOp {
    Put(u8, u8),
    Delete(u8, Option<u8>),
    CasPut(u8, u8, u8),
    Compact(u8),
    Read(u8, Option<u8>, u8),
}

const KEYS: &[&str] = &["a", "ab", "abc", "b", "ba", "c", "d"];

fn key(i: u8) -> Vec<u8> {
    KEYS[i as usize % KEYS.len()].as_bytes().to_vec()
}

fn op_strategy() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| ModelOp::Put(k, v % 4)),
        2 => (any::<u8>(), proptest::option::of(any::<u8>())).prop_map(|(k, e)| ModelOp::Delete(k, e)),
        2 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(k, e, v)| ModelOp::CasPut(k, e % 4, v % 4)),
        1 => any::<u8>().prop_map(ModelOp::Compact),
        4 => (any::<u8>(), proptest::option::of(any::<u8>()), any::<u8>()).prop_map(|(k, e, r)| ModelOp::Read(k, e, r)),
    ]
}

fn end_of(e: Option<u8>) -> Vec<u8> {
    match e {
        None => Vec::new(),
        Some(0) => vec![0],
        Some(i) => key(i),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("MVCC_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
    ))]
    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op_strategy(), 1..80)) {
        let mut s = Store::default();
        let mut m = Model::new();
        for op in ops {
            match op {
                ModelOp::Put(k, v) => {
                    put(&mut s, std::str::from_utf8(&key(k)).unwrap(), &v.to_string());
                    m.put(&key(k), v.to_string().as_bytes());
                }
                ModelOp::Delete(k, e) => {
                    let end = end_of(e);
                    let req = DeleteRangeRequest { key: key(k), range_end: end.clone(), prev_kv: false };
                    let Response::DeleteRange(d) = apply(&mut s, Request::DeleteRange(req)).unwrap() else { panic!() };
                    let n = m.delete(&KeyRange::new(&key(k), &end));
                    prop_assert_eq!(d.deleted as usize, n);
                }
                ModelOp::CasPut(k, e, v) => {
                    let c = Command::cas(key(k), Some(e.to_string().into_bytes()), Some(v.to_string().into_bytes()));
                    let Response::Txn(t) = apply(&mut s, c.0).unwrap() else { panic!() };
                    let holds = m.states.last().unwrap().get(&key(k)).is_some_and(|x| x.0 == e.to_string().as_bytes());
                    prop_assert_eq!(t.succeeded, holds);
                    if holds { m.put(&key(k), v.to_string().as_bytes()); }
                }
                ModelOp::Compact(r) => {
                    let rev = 1 + i64::from(r) % m.rev();
                    let got = apply(&mut s, Request::Compaction(CompactionRequest { revision: rev, physical: false }));
                    if rev <= m.compacted {
                        prop_assert_eq!(got, Err(MvccError::Compacted));
                    } else {
                        prop_assert!(got.is_ok());
                        m.compacted = rev;
                    }
                }
                ModelOp::Read(k, e, r) => {
                    let rev = i64::from(r) % (m.rev() + 2);
                    let end = end_of(e);
                    let req = RangeRequest { key: key(k), range_end: end.clone(), revision: rev, ..Default::default() };
                    let got = s.range(&req);
                    let want_rev = if rev == 0 { m.rev() } else { rev };
                    if rev > m.rev() {
                        prop_assert_eq!(got, Err(MvccError::FutureRevision));
                    } else if rev != 0 && rev < m.compacted {
                        prop_assert_eq!(got, Err(MvccError::Compacted));
                    } else {
                        let got = got.unwrap();
                        let r = KeyRange::new(&key(k), &end);
                        let want: Vec<_> = m.states[want_rev as usize].iter()
                            .filter(|(key, _)| r.contains(key))
                            .map(|(key, &(ref v, c, md, ver))| (key.clone(), v.clone(), c, md, ver))
                            .collect();
                        let have: Vec<_> = got.kvs.iter()
                            .map(|kv| (kv.key.clone(), kv.value.clone(), kv.create_revision, kv.mod_revision, kv.version))
                            .collect();
                        prop_assert_eq!(have, want);
                        prop_assert_eq!(got.header.unwrap().revision, m.rev());
                    }
                }
            }
            prop_assert_eq!(s.revision(), m.rev());
            prop_assert_eq!(s.len(), m.states.last().unwrap().len());
        }
    }
}

#[test]
fn events_come_in_revision_order_from_the_index_and_from_a_scan_alike() {
    let mut s = Store::default();
    put(&mut s, "a", "1");
    put(&mut s, "b", "1");
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            op_put("c", "1"),
            op_put("a", "2"),
            RequestOp {
                request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                    key: b"b".to_vec(),
                    range_end: Vec::new(),
                    prev_kv: false,
                })),
            },
        ],
        failure: vec![],
    };
    apply(&mut s, Request::Txn(t)).unwrap();
    put(&mut s, "zz", "out of range");
    let all = KeyRange::new(b"a", b"d");
    let from_index = s.events(&all, 2, s.revision(), true).unwrap();
    let summary: Vec<(String, i64, i32)> = from_index
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            (
                String::from_utf8(kv.key.clone()).unwrap(),
                kv.mod_revision,
                e.r#type,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("a".into(), 2, 0),
            ("b".into(), 3, 0),
            ("c".into(), 4, 0),
            ("a".into(), 4, 0),
            ("b".into(), 4, 1)
        ]
    );
    assert_eq!(from_index[3].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(from_index[4].prev_kv.as_ref().unwrap().value, b"1");
    // A restored store has no recent-change index: the scan answers the same.
    let mut bytes = Vec::new();
    s.write_snapshot(&mut bytes).unwrap();
    let mut r = Store::default();
    r.restore_snapshot(s.applied_index(), &mut bytes.as_slice())
        .unwrap();
    assert_eq!(r.events(&all, 2, r.revision(), true).unwrap(), from_index);
    // Compacted history cannot be watched.
    let now = s.revision();
    apply(
        &mut s,
        Request::Compaction(CompactionRequest {
            revision: now,
            physical: false,
        }),
    )
    .unwrap();
    assert_eq!(s.events(&all, 2, now, false), Err(MvccError::Compacted));
    assert!(s.events(&all, now + 1, now, false).unwrap().is_empty());
}

#[test]
fn leases_attach_keys_and_a_revoke_deletes_them_in_one_revision() {
    use crate::api::pb::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
    let mut s = Store::default();
    let grant = |id| Request::LeaseGrant(LeaseGrantRequest { ttl: 10, id });
    apply(&mut s, grant(7)).unwrap();
    assert_eq!(apply(&mut s, grant(7)), Err(MvccError::LeaseExists));
    let leased = |k: &str, lease| {
        Request::Put(PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        })
    };
    assert_eq!(apply(&mut s, leased("x", 8)), Err(MvccError::LeaseNotFound));
    apply(&mut s, leased("a", 7)).unwrap();
    apply(&mut s, leased("b", 7)).unwrap();
    apply(&mut s, leased("c", 7)).unwrap();
    // Re-put without the lease detaches; a delete detaches.
    apply(&mut s, leased("c", 0)).unwrap();
    apply(&mut s, Command::delete("b").0).unwrap();
    let keys: Vec<_> = s.lease(7).unwrap().keys.iter().cloned().collect();
    assert_eq!(keys, [Bytes::from_static(b"a")]);
    apply(&mut s, leased("b", 7)).unwrap();
    // Snapshots carry leases and rebuild their keys.
    let mut bytes = Vec::new();
    s.write_snapshot(&mut bytes).unwrap();
    let mut r = Store::default();
    r.restore_snapshot(s.applied_index(), &mut bytes.as_slice())
        .unwrap();
    assert_eq!(r.lease(7), s.lease(7));
    let before = s.revision();
    apply(&mut s, Request::LeaseRevoke(LeaseRevokeRequest { id: 7 })).unwrap();
    assert_eq!(s.revision(), before + 1, "a revoke is one revision");
    assert_eq!(
        (s.get(b"a"), s.get(b"b"), s.get(b"c")),
        (Ok(None), Ok(None), Ok(Some(&b"v"[..])))
    );
    assert!(s.lease(7).is_none());
    assert_eq!(
        apply(&mut s, Request::LeaseRevoke(LeaseRevokeRequest { id: 7 })),
        Err(MvccError::LeaseNotFound)
    );
}

/// The index of compactable keys always matches a walk of every history,
/// through puts, deletes, compactions and a snapshot round trip, and a
/// compaction leaves no key with anything left to drop at its revision.
/// The compaction index as a full walk of the histories computes it.
fn walk(s: &Store) -> Vec<(i64, Bytes)> {
    let mut v: Vec<(i64, Bytes)> = s
        .keys
        .iter()
        .filter_map(|(k, h)| h.compactable_from().map(|r| (r, k.clone())))
        .collect();
    v.sort();
    v
}

#[test]
fn the_compaction_index_matches_the_histories() {
    let mut s = Store::default();
    let mut x: u64 = 7;
    let mut next = |m: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % m
    };
    for step in 0..3_000 {
        let key = format!("k{}", next(40));
        match next(10) {
            0..=5 => {
                put(&mut s, &key, &step.to_string());
            }
            6..=7 => {
                apply(&mut s, Command::delete(key.as_str()).0).unwrap();
            }
            _ if s.compact_revision < s.revision() => {
                let lo = s.compact_revision + 1;
                let rev = lo + next((s.revision() - lo + 1) as u64) as i64;
                if rev > s.compact_revision && rev <= s.revision() {
                    s.compact(rev).unwrap();
                    assert!(
                        s.keys.iter().all(|(_, h)| !h.compacts_at(rev)),
                        "step {step}: something left to compact at {rev}"
                    );
                }
            }
            _ => {}
        }
        assert_eq!(s.keys.indexed(), walk(&s), "step {step}");
    }
    let mut snap = Vec::new();
    s.write_snapshot(&mut snap).unwrap();
    let mut restored = Store::default();
    restored
        .restore_snapshot(s.applied_index(), &mut &snap[..])
        .unwrap();
    assert_eq!(restored.keys.indexed(), walk(&s));
}

/// A compaction larger than one step leaves work for the driver's steps,
/// and until they finish every read answers as after a finished one.
#[test]
fn a_compaction_in_steps_answers_like_a_finished_one() {
    let mut s = Store::default();
    let n = 3 * COMPACTION_STEP_KEYS;
    for round in 0..2 {
        for i in 0..n {
            put(&mut s, &format!("k{i:05}"), &format!("{round}"));
        }
    }
    // Every third key deleted: compacting at the delete drops the whole key.
    for i in (0..n).step_by(3) {
        apply(&mut s, Command::delete(format!("k{i:05}").as_str()).0).unwrap();
    }
    let size_before = s.size();
    let at = s.revision();
    s.compact(at).unwrap();
    assert!(s.keys.compaction_pending(), "one step cannot finish this");
    let mut done = s.clone();
    let mut steps = 1;
    while done.continue_compaction() {
        steps += 1;
    }
    assert_eq!(
        steps, 2,
        "two more steps for the other 2 x COMPACTION_STEP_KEYS keys"
    );
    assert!(done.size() < s.size() && s.size() < size_before);
    assert_eq!(done.keys.len(), n - n.div_ceil(3), "deleted keys are gone");
    assert!(s.keys.len() > done.keys.len(), "not all of them yet");
    // The same answers from both.
    let everything = KeyRange::new(b"\0", b"\0");
    assert_eq!(s.hash_kv(0).unwrap(), done.hash_kv(0).unwrap());
    assert_eq!(
        s.events(&everything, at, at, true).unwrap(),
        done.events(&everything, at, at, true).unwrap()
    );
    assert_eq!(
        s.range(&range("\0", "\0")).unwrap(),
        done.range(&range("\0", "\0")).unwrap()
    );
    assert_eq!(s.keys.indexed(), walk(&s));
    // A snapshot taken meanwhile restores compacted.
    let mut snap = Vec::new();
    s.write_snapshot(&mut snap).unwrap();
    let mut restored = Store::default();
    restored
        .restore_snapshot(s.applied_index(), &mut &snap[..])
        .unwrap();
    assert!(!restored.keys.compaction_pending());
    assert_eq!(restored.hash_kv(0).unwrap(), done.hash_kv(0).unwrap());
    assert_eq!(restored.size(), done.size());
}

/// Where a compaction of a large store spends its time (a measurement, not
/// a check): `cargo test -p raft-node --lib compaction_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn compaction_timing() {
    let mut s = Store::default();
    let n = 262_144;
    for i in 0..n {
        put(&mut s, &format!("key/{i:08}"), "v");
    }
    let mut i: u64 = 1;
    for _ in 0..20_000 {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        put(&mut s, &format!("key/{:08}", (i >> 33) % n), "w");
    }
    let view = s.clone();
    let t = std::time::Instant::now();
    let touched = s
        .keys
        .iter()
        .filter(|(_, h)| h.versions().len() > 1)
        .count();
    let scan = t.elapsed();
    let now = s.revision();
    let t = std::time::Instant::now();
    s.compact(now).unwrap();
    let compact = t.elapsed();
    let (mut steps, mut longest) = (0, std::time::Duration::ZERO);
    let t = std::time::Instant::now();
    loop {
        let step = std::time::Instant::now();
        let more = s.continue_compaction();
        longest = longest.max(step.elapsed());
        steps += 1;
        if !more {
            break;
        }
    }
    let rest = t.elapsed();
    let t = std::time::Instant::now();
    drop(view);
    let dropped = t.elapsed();
    eprintln!(
        "{touched} keys with history; scan {scan:?}, compact (first step) {compact:?}, \
         {steps} more steps {rest:?} (longest {longest:?}), drop view {dropped:?}"
    );
}

#[test]
fn a_stand_in_refuses_every_read_of_keys_and_keeps_the_rest() {
    let mut s = Store::default();
    put(&mut s, "a", "1");
    put(&mut s, "b", "2");
    let stand_in = s.stand_in();
    assert!(stand_in.is_restoring() && !s.is_restoring());
    let all = KeyRange::new(b"a", b"z");
    assert_eq!(stand_in.range(&range("a", "z")), Err(MvccError::Restoring));
    assert_eq!(stand_in.get(b"a"), Err(MvccError::Restoring));
    assert_eq!(stand_in.hash_kv(0), Err(MvccError::Restoring));
    assert_eq!(
        stand_in.events(&all, 1, 3, false),
        Err(MvccError::Restoring)
    );
    let read = TxnRequest {
        success: vec![RequestOp {
            request: Some(Op::RequestRange(range("a", ""))),
        }],
        ..Default::default()
    };
    assert_eq!(stand_in.read_only_txn(&read), Err(MvccError::Restoring));
    assert!(stand_in.write_snapshot(&mut Vec::new()).is_err());
    assert_eq!(
        (
            stand_in.revision(),
            stand_in.applied_index(),
            stand_in.len()
        ),
        (s.revision(), s.applied_index(), s.len())
    );
    // The real state still reads.
    assert_eq!(keys(&s.range(&range("a", "z")).unwrap()), ["a", "b"]);
}
