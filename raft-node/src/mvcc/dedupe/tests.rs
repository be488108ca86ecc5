//! The request-id table: a retry gets the first result and changes nothing,
//! the bounds and the expiry hold and depend on the log alone, and the table
//! survives a snapshot.

use super::*;
use crate::api::pb::etcdserverpb::PutRequest;
use crate::mvcc::Command;

const T0: u64 = 1_700_000_000_000;

fn id(client: u64, seq: u64) -> RequestId {
    RequestId { client, seq }
}

/// Applies `cmd` with request id `rid` stamped `at_ms` at the next index;
/// returns the (index, term) the result belongs to and the result.
fn apply_once(
    s: &mut Store,
    cmd: &Command,
    rid: RequestId,
    at_ms: u64,
) -> ((u64, u64), Result<Response, MvccError>) {
    let index = s.applied_index() + 1;
    let once = Once {
        id: rid,
        proposed_at_ms: at_ms,
    };
    match s.apply_at(index, 3, &cmd.encode_once(Some(once))) {
        (at, Applied::Command(r)) => (at, r),
        (_, Applied::Nothing) => panic!("command not applied"),
    }
}

fn revision(r: &Result<Response, MvccError>) -> i64 {
    match r {
        Ok(Response::Put(p)) => p.header.as_ref().unwrap().revision,
        other => panic!("{other:?}"),
    }
}

fn small(max_clients: usize, results_per_client: usize, ttl_ms: u64) -> Store {
    Store {
        dedupe: Table::new(Limits {
            max_clients,
            results_per_client,
            max_bytes: 1 << 30,
            ttl_ms,
        }),
        ..Store::default()
    }
}

#[test]
fn request_ids_parse_and_print_as_client_slash_seq() {
    assert_eq!("12/3".parse::<RequestId>(), Ok(id(12, 3)));
    assert_eq!(
        id(18446744073709551615, 0).to_string(),
        "18446744073709551615/0"
    );
    for bad in [
        "",
        "12",
        "12/",
        "/3",
        "a/3",
        "1/2/3",
        "-1/2",
        "1/+2",
        "99999999999999999999/1",
    ] {
        assert!(bad.parse::<RequestId>().is_err(), "{bad:?}");
    }
}

#[test]
fn a_retried_request_returns_its_first_result_and_changes_nothing() {
    let mut s = Store::default();
    let put = Command::put("k", "v1");
    let (at1, first) = apply_once(&mut s, &put, id(1, 1), T0);
    assert_eq!(at1, (1, 3));
    assert_eq!(revision(&first), 2);
    // Someone else writes in between.
    s.apply(2, 3, &Command::put("k", "other").encode());
    let rev = s.revision();
    // The retry (a new entry, later) is not applied again.
    let (at2, again) = apply_once(&mut s, &put, id(1, 1), T0 + 5);
    assert_eq!(
        at2, at1,
        "the retry answers with the first entry's position"
    );
    assert_eq!(again, first, "the retry answers with the first result");
    assert_eq!(s.revision(), rev, "nothing applied");
    assert_eq!(s.get(b"k"), Ok(Some(&b"other"[..])));
    assert_eq!(
        s.applied_index(),
        3,
        "the retry's entry still counts as applied"
    );
    // The next id of the same client applies.
    let (_, next) = apply_once(&mut s, &put, id(1, 2), T0 + 6);
    assert_eq!(revision(&next), rev + 1);
    // Without an id a command applies every time.
    let before = s.revision();
    s.apply(5, 3, &put.encode());
    s.apply(6, 3, &put.encode());
    assert_eq!(s.revision(), before + 2);
}

#[test]
fn a_refusal_is_also_a_first_result() {
    let mut s = Store::default();
    let bad = Command(Request::Put(PutRequest {
        key: b"k".to_vec(),
        ignore_value: true,
        ..Default::default()
    }));
    let (_, first) = apply_once(&mut s, &bad, id(4, 1), T0);
    assert_eq!(first, Err(MvccError::KeyNotFound));
    s.apply(2, 3, &Command::put("k", "v").encode());
    // Now it would succeed, but it was answered already.
    let (at, again) = apply_once(&mut s, &bad, id(4, 1), T0);
    assert_eq!((at, again), ((1, 3), Err(MvccError::KeyNotFound)));
}

#[test]
fn an_id_reused_for_another_request_is_refused() {
    let mut s = Store::default();
    let _ = apply_once(&mut s, &Command::put("k", "a"), id(2, 1), T0);
    let rev = s.revision();
    let (at, r) = apply_once(&mut s, &Command::put("k", "b"), id(2, 1), T0);
    assert_eq!(r, Err(MvccError::RequestIdReused));
    assert_eq!(at, (2, 3));
    assert_eq!(s.revision(), rev);
}

#[test]
fn only_the_last_results_of_a_client_are_kept_and_older_ids_are_refused() {
    let mut s = small(100, 2, u64::MAX);
    for seq in 1..=3 {
        let _ = apply_once(
            &mut s,
            &Command::put("k", format!("v{seq}")),
            id(9, seq),
            T0,
        );
    }
    let rev = s.revision();
    // Seq 1 was evicted: its outcome is unknown to the store, so it is not
    // applied again.
    let (_, r) = apply_once(&mut s, &Command::put("k", "v1"), id(9, 1), T0);
    assert_eq!(r, Err(MvccError::RequestIdTooOld));
    assert_eq!(s.revision(), rev);
    // Seq 2 and 3 are still answered from the table.
    for seq in 2..=3 {
        let (at, r) = apply_once(
            &mut s,
            &Command::put("k", format!("v{seq}")),
            id(9, seq),
            T0,
        );
        assert_eq!(at.0, seq);
        assert_eq!(revision(&r), 1 + seq as i64);
    }
    assert_eq!(s.revision(), rev);
    assert_eq!(s.dedupe().clients(), 1);
}

#[test]
fn the_least_recently_used_client_goes_when_the_table_is_full() {
    let mut s = small(2, 4, u64::MAX);
    let _ = apply_once(&mut s, &Command::put("a", "1"), id(1, 1), T0);
    let _ = apply_once(&mut s, &Command::put("b", "1"), id(2, 1), T0 + 1);
    let _ = apply_once(&mut s, &Command::put("a", "2"), id(1, 2), T0 + 2);
    let _ = apply_once(&mut s, &Command::put("c", "1"), id(3, 1), T0 + 3);
    assert_eq!(s.dedupe().clients(), 2);
    // Client 2 was least recently used: its session is gone, and its retry
    // is indistinguishable from a new request.
    let rev = s.revision();
    let _ = apply_once(&mut s, &Command::put("b", "1"), id(2, 1), T0 + 4);
    assert_eq!(s.revision(), rev + 1);
    // Client 1 (used at T0 + 2) was evicted by that, client 3 is still known.
    let (_, r) = apply_once(&mut s, &Command::put("c", "1"), id(3, 1), T0 + 5);
    assert_eq!(revision(&r), rev);
}

#[test]
fn the_bytes_bound_evicts_whole_sessions_but_never_the_one_just_written() {
    let mut s = Store {
        dedupe: Table::new(Limits {
            max_clients: 100,
            results_per_client: 4,
            max_bytes: 3 * RECORD_OVERHEAD_BYTES + 150,
            ttl_ms: u64::MAX,
        }),
        ..Store::default()
    };
    for client in 1..=10 {
        let _ = apply_once(&mut s, &Command::put("k", "v"), id(client, 1), T0);
        assert!(s.dedupe().bytes() <= 3 * RECORD_OVERHEAD_BYTES + 150);
        assert!(s.dedupe().clients() >= 1);
    }
    assert!(s.dedupe().clients() < 10);
    let recount: u64 = s
        .dedupe()
        .sessions
        .values()
        .flat_map(|x| x.results.values())
        .map(Recorded::bytes)
        .sum();
    assert_eq!(recount, s.dedupe().bytes());
}

#[test]
fn sessions_expire_by_the_time_stamped_in_the_log() {
    let ttl = 60_000;
    let mut s = small(100, 4, ttl);
    let _ = apply_once(&mut s, &Command::put("a", "1"), id(1, 1), T0);
    let _ = apply_once(&mut s, &Command::put("b", "1"), id(2, 1), T0 + ttl / 2);
    // A stamp from a clock behind does not move the table's time back.
    let _ = apply_once(&mut s, &Command::put("c", "1"), id(3, 1), T0 - 10_000);
    assert_eq!(s.dedupe().now_ms(), T0 + ttl / 2);
    assert_eq!(s.dedupe().clients(), 3);
    // Exactly at the TTL the session is still there...
    let _ = apply_once(&mut s, &Command::put("d", "1"), id(4, 1), T0 + ttl);
    assert_eq!(s.dedupe().clients(), 4);
    // ...and past it gone, whichever member applies this log.
    let mut other = s.clone();
    let _ = apply_once(&mut s, &Command::put("e", "1"), id(5, 1), T0 + ttl + 1);
    let _ = apply_once(&mut other, &Command::put("e", "1"), id(5, 1), T0 + ttl + 1);
    assert_eq!(s.dedupe(), other.dedupe());
    assert_eq!(s.dedupe().clients(), 4);
    let rev = s.revision();
    let _ = apply_once(&mut s, &Command::put("a", "1"), id(1, 1), T0 + ttl + 2);
    assert_eq!(s.revision(), rev + 1, "an expired id is a new request");
    // Client 3's stamp was behind, but its session lives from the table's
    // time when it was applied (T0 + ttl / 2), not from its own stamp.
    let (_, r) = apply_once(&mut s, &Command::put("c", "1"), id(3, 1), T0 + ttl + 3);
    assert!(r.is_ok());
    assert_eq!(s.revision(), rev + 1);
}

#[test]
fn the_table_travels_in_snapshots() {
    let mut s = small(100, 2, u64::MAX);
    for seq in 1..=3 {
        let _ = apply_once(
            &mut s,
            &Command::put("k", format!("v{seq}")),
            id(7, seq),
            T0 + seq,
        );
    }
    let _ = apply_once(&mut s, &Command::delete("k"), id(8, 1), T0 + 9);
    let mut bytes = Vec::new();
    s.write_snapshot(&mut bytes).unwrap();
    let mut restored = small(100, 2, u64::MAX);
    restored
        .restore_snapshot(s.applied_index(), &mut &bytes[..])
        .unwrap();
    assert_eq!(restored.dedupe().now_ms(), s.dedupe().now_ms());
    assert_eq!(restored.dedupe().sessions, s.dedupe().sessions);
    assert_eq!(restored.dedupe().by_age, s.dedupe().by_age);
    assert_eq!(restored.dedupe().bytes(), s.dedupe().bytes());
    // The restored member answers retries as the original does.
    let rev = restored.revision();
    let (at, r) = apply_once(&mut restored, &Command::put("k", "v3"), id(7, 3), T0 + 10);
    assert_eq!((at, revision(&r)), ((3, 3), 4));
    let (_, r) = apply_once(&mut restored, &Command::put("k", "v1"), id(7, 1), T0 + 10);
    assert_eq!(r, Err(MvccError::RequestIdTooOld));
    assert_eq!(restored.revision(), rev);
}

#[test]
fn a_version_1_snapshot_loads_with_an_empty_table() {
    let mut s = Store::default();
    s.apply(1, 2, &Command::put("k", "v").encode());
    let mut v2 = Vec::new();
    s.write_snapshot(&mut v2).unwrap();
    // Version 1: the same sections without the request-id one (an empty
    // table writes its time and a zero count: 16 bytes).
    let mut v1 = v2[..v2.len() - 16].to_vec();
    v1[6..8].copy_from_slice(&1u16.to_le_bytes());
    let mut restored = Store::default();
    restored.restore_snapshot(1, &mut &v1[..]).unwrap();
    assert_eq!(restored.get(b"k"), Ok(Some(&b"v"[..])));
    assert_eq!(restored.dedupe().clients(), 0);
    // A version this build does not know is refused.
    let mut v3 = v2.clone();
    v3[6..8].copy_from_slice(&3u16.to_le_bytes());
    let err = Store::default()
        .restore_snapshot(1, &mut &v3[..])
        .unwrap_err();
    assert!(err.to_string().contains("version 3"), "{err}");
}
