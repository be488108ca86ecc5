//! Writes applied at most once per request.
//!
//! A client may give a write a request id ([`RequestId`]: its own client id
//! and a sequence number) and retry it with the same id, through any member,
//! as often as it likes. The store keeps, per client, the ids it has applied
//! with the result of each ([`Table`]); an entry whose id is already there is
//! not applied again, and its proposer hears the first result (with the
//! index and term of the entry that produced it).
//!
//! The table is replicated state: it changes only by applying entries and
//! travels in snapshots, so every member holds the same one. Its bounds are
//! constants ([`Limits::DEFAULT`]), and its only clock is the log: the
//! leader stamps every entry with an id with its wall clock
//! (`proposed_at_ms`), and the table's time is the highest stamp applied so
//! far. A client's session (its ids and results) expires once that time has
//! gone [`Limits::ttl_ms`] past the client's last new request; a leader
//! whose clock runs ahead can only make sessions expire early (or, once the
//! other clocks catch up, late), never make two members differ.
//!
//! Within a session, only the last [`Limits::results_per_client`] results
//! are kept; the highest evicted sequence number becomes the session's
//! floor, and a request at or below the floor whose result is gone is
//! refused ([`MvccError::RequestIdTooOld`]) rather than applied twice. When
//! the table holds too many clients or bytes, the least recently used
//! sessions go whole. A retry that arrives after its session expired or was
//! evicted is indistinguishable from a new request and is applied again:
//! the guarantee holds for retries within the expiry window.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use super::{Applied, MvccError, Response, Store};
use crate::api::pb::raftnodepb::internal_request::Request;
use crate::api::pb::raftnodepb::internal_response::Response as Resp;
use crate::api::pb::raftnodepb::{self, InternalResponse};

/// The HTTP header (`/v1` API, JSON gateway) and the gRPC metadata key (etcd
/// API) that carry a request id, as `CLIENT/SEQ` in decimal.
pub const REQUEST_ID_HEADER: &str = "request-id";

/// A client's id for one write: retries of the write carry the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId {
    /// Chosen by the client, unique among clients (e.g. random).
    pub client: u64,
    /// The client's number for this request; a client numbers its requests
    /// in increasing order.
    pub seq: u64,
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.client, self.seq)
    }
}

impl FromStr for RequestId {
    type Err = String;

    /// Parses `CLIENT/SEQ` (two decimal u64).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("request id must be CLIENT/SEQ (two decimal u64), not {s:?}");
        let (client, seq) = s.trim().split_once('/').ok_or_else(bad)?;
        let num = |p: &str| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse::<u64>().map_err(|_| bad())
        };
        Ok(RequestId {
            client: num(client)?,
            seq: num(seq)?,
        })
    }
}

impl From<RequestId> for raftnodepb::RequestId {
    fn from(id: RequestId) -> Self {
        raftnodepb::RequestId {
            client: id.client,
            seq: id.seq,
        }
    }
}

impl From<raftnodepb::RequestId> for RequestId {
    fn from(id: raftnodepb::RequestId) -> Self {
        RequestId {
            client: id.client,
            seq: id.seq,
        }
    }
}

/// What an entry carries for at-most-once apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Once {
    /// The request's id.
    pub id: RequestId,
    /// The proposer's wall clock when it proposed the entry (ms since the
    /// Unix epoch); the table's clock.
    pub proposed_at_ms: u64,
}

/// The table's bounds. Part of the replicated state machine's definition:
/// every member must use the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most clients with a session.
    pub max_clients: usize,
    /// Most results kept per client (its latest sequence numbers).
    pub results_per_client: usize,
    /// Most bytes of kept results, all clients together.
    pub max_bytes: u64,
    /// A session expires this long (log time) after its last new request.
    pub ttl_ms: u64,
}

impl Limits {
    /// 10,000 clients, 16 results each, 64 MiB, 10 minutes.
    pub const DEFAULT: Limits = Limits {
        max_clients: 10_000,
        results_per_client: 16,
        max_bytes: 64 << 20,
        ttl_ms: 10 * 60 * 1000,
    };
}

/// Bytes a kept result counts for beyond its encoding.
const RECORD_OVERHEAD_BYTES: u64 = 64;

/// The first result of one applied request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Recorded {
    /// Index of the entry that applied it.
    pub(super) index: u64,
    /// Term of that entry.
    pub(super) term: u64,
    /// CRC32 of the request, to refuse an id reused for another request.
    pub(super) digest: u32,
    /// The result, encoded (see [`encode_result`]).
    pub(super) result: Bytes,
}

impl Recorded {
    fn bytes(&self) -> u64 {
        self.result.len() as u64 + RECORD_OVERHEAD_BYTES
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Session {
    /// Table time of the client's last new request.
    last_ms: u64,
    /// Sequence numbers at or below this without a result are too old.
    floor: u64,
    results: BTreeMap<u64, Recorded>,
}

/// What the table knows about a request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Lookup {
    /// Not applied yet (as far as the table can tell).
    New,
    /// Applied before, with this result.
    Repeat(Recorded),
    /// Its result was evicted: it may or may not have been applied.
    TooOld,
    /// The id was applied with a different request.
    Reused,
}

/// Per client, the request ids applied and their first results.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    limits: Limits,
    /// Highest `proposed_at_ms` applied.
    now_ms: u64,
    sessions: imbl::OrdMap<u64, Session>,
    /// (last_ms, client) of every session: the expiry and eviction order.
    by_age: imbl::OrdSet<(u64, u64)>,
    bytes: u64,
}

impl Default for Table {
    fn default() -> Self {
        Table::new(Limits::DEFAULT)
    }
}

impl Table {
    /// An empty table with these bounds.
    pub fn new(limits: Limits) -> Self {
        Table {
            limits,
            now_ms: 0,
            sessions: imbl::OrdMap::new(),
            by_age: imbl::OrdSet::new(),
            bytes: 0,
        }
    }

    /// Clients with a session.
    pub fn clients(&self) -> usize {
        self.sessions.len()
    }

    /// Bytes of kept results (as counted against [`Limits::max_bytes`]).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The table's time: the highest stamp applied.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Moves the table's time to `stamp_ms` if later, and expires sessions
    /// idle for longer than the TTL.
    pub(super) fn advance(&mut self, stamp_ms: u64) {
        self.now_ms = self.now_ms.max(stamp_ms);
        while let Some(&(last, client)) = self.by_age.get_min() {
            if self.now_ms.saturating_sub(last) <= self.limits.ttl_ms {
                break;
            }
            tracing::debug!(
                client,
                idle_ms = self.now_ms - last,
                "request-id session expired"
            );
            self.drop_session(client);
        }
    }

    /// What is known about `id`, for a request whose CRC32 is `digest`.
    pub(super) fn lookup(&self, id: RequestId, digest: u32) -> Lookup {
        let Some(s) = self.sessions.get(&id.client) else {
            return Lookup::New;
        };
        match s.results.get(&id.seq) {
            Some(r) if r.digest == digest => Lookup::Repeat(r.clone()),
            Some(_) => Lookup::Reused,
            None if id.seq <= s.floor => Lookup::TooOld,
            None => Lookup::New,
        }
    }

    /// Keeps the first result of `id`, then enforces the bounds.
    pub(super) fn record(&mut self, id: RequestId, rec: Recorded) {
        let mut s = match self.sessions.remove(&id.client) {
            Some(s) => {
                self.by_age.remove(&(s.last_ms, id.client));
                s
            }
            None => Session::default(),
        };
        s.last_ms = self.now_ms;
        self.bytes += rec.bytes();
        if let Some(old) = s.results.insert(id.seq, rec) {
            self.bytes -= old.bytes();
        }
        while s.results.len() > self.limits.results_per_client.max(1) {
            if let Some((seq, old)) = s.results.pop_first() {
                s.floor = s.floor.max(seq);
                self.bytes -= old.bytes();
            }
        }
        self.by_age.insert((s.last_ms, id.client));
        self.sessions.insert(id.client, s);
        // Least recently used first; never the session just written.
        while self.sessions.len() > self.limits.max_clients.max(1)
            || self.bytes > self.limits.max_bytes
        {
            let victim = self
                .by_age
                .iter()
                .map(|&(_, c)| c)
                .find(|&c| c != id.client);
            let Some(victim) = victim else { break };
            tracing::debug!(client = victim, "request-id session evicted (table full)");
            self.drop_session(victim);
        }
    }

    fn drop_session(&mut self, client: u64) {
        if let Some(s) = self.sessions.remove(&client) {
            self.by_age.remove(&(s.last_ms, client));
            self.bytes -= s.results.values().map(Recorded::bytes).sum::<u64>();
        }
    }
}

/// One session as a snapshot holds it.
#[derive(Serialize, Deserialize)]
pub(super) struct SessionRecord {
    client: u64,
    last_ms: u64,
    floor: u64,
    /// (seq, index, term, digest, result).
    results: Vec<(u64, u64, u64, u32, serde_bytes::ByteBuf)>,
}

impl Table {
    /// The sessions in client order, as snapshot records.
    pub(super) fn records(&self) -> impl Iterator<Item = SessionRecord> + '_ {
        self.sessions.iter().map(|(&client, s)| SessionRecord {
            client,
            last_ms: s.last_ms,
            floor: s.floor,
            results: s
                .results
                .iter()
                .map(|(&seq, r)| {
                    (
                        seq,
                        r.index,
                        r.term,
                        r.digest,
                        serde_bytes::ByteBuf::from(r.result.to_vec()),
                    )
                })
                .collect(),
        })
    }

    /// Sets the time read from a snapshot.
    pub(super) fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// Adds a session read from a snapshot.
    pub(super) fn restore(&mut self, r: SessionRecord) -> Result<(), String> {
        if self.sessions.contains_key(&r.client) {
            return Err(format!("request-id session of client {} twice", r.client));
        }
        let mut s = Session {
            last_ms: r.last_ms,
            floor: r.floor,
            results: BTreeMap::new(),
        };
        for (seq, index, term, digest, result) in r.results {
            let rec = Recorded {
                index,
                term,
                digest,
                result: Bytes::from(result.into_vec()),
            };
            self.bytes += rec.bytes();
            s.results.insert(seq, rec);
        }
        self.by_age.insert((s.last_ms, r.client));
        self.sessions.insert(r.client, s);
        Ok(())
    }
}

/// CRC32 of a request's protobuf encoding.
fn request_digest(req: &Request) -> u32 {
    let mut buf = Vec::with_capacity(req.encoded_len());
    req.encode(&mut buf);
    crc32fast::hash(&buf)
}

/// A result as the table keeps it: 0 + `InternalResponse`, or 1 + the
/// store's error (postcard).
fn encode_result(r: &Result<Response, MvccError>) -> Bytes {
    let mut out = Vec::new();
    match r {
        Ok(resp) => {
            out.push(0);
            out.extend(encode_response(resp.clone()));
        }
        Err(e) => {
            out.push(1);
            out.extend(postcard::to_stdvec(e).unwrap_or_default());
        }
    }
    Bytes::from(out)
}

fn decode_result(b: &[u8]) -> Result<Response, MvccError> {
    let malformed = |why: String| MvccError::Malformed(format!("kept request result: {why}"));
    match b.split_first() {
        Some((0, resp)) => decode_response(resp).map_err(malformed),
        Some((1, err)) => {
            Err(postcard::from_bytes::<MvccError>(err).unwrap_or_else(|e| malformed(e.to_string())))
        }
        _ => Err(malformed("unknown kind".into())),
    }
}

/// A write's response as an encoded `raftnodepb.InternalResponse`.
pub fn encode_response(resp: Response) -> Vec<u8> {
    let r = match resp {
        Response::Put(r) => Resp::Put(r),
        Response::DeleteRange(r) => Resp::DeleteRange(r),
        Response::Txn(r) => Resp::Txn(r),
        Response::Compaction(r) => Resp::Compaction(r),
        Response::Alarm(r) => Resp::Alarm(r),
        Response::LeaseGrant(r) => Resp::LeaseGrant(r),
        Response::LeaseRevoke(r) => Resp::LeaseRevoke(r),
        Response::Auth(h) => Resp::Auth(h),
    };
    InternalResponse { response: Some(r) }.encode_to_vec()
}

/// Decodes what [`encode_response`] produced.
pub fn decode_response(bytes: &[u8]) -> Result<Response, String> {
    let r = InternalResponse::decode(bytes).map_err(|e| e.to_string())?;
    Ok(match r.response.ok_or("empty response")? {
        Resp::Put(r) => Response::Put(r),
        Resp::DeleteRange(r) => Response::DeleteRange(r),
        Resp::Txn(r) => Response::Txn(r),
        Resp::Compaction(r) => Response::Compaction(r),
        Resp::Alarm(r) => Response::Alarm(r),
        Resp::LeaseGrant(r) => Response::LeaseGrant(r),
        Resp::LeaseRevoke(r) => Response::LeaseRevoke(r),
        Resp::Auth(h) => Response::Auth(h),
    })
}

impl Store {
    /// Applies `req` carrying a request id at most once: returns the
    /// (index, term) of the entry whose result it is, and the result.
    pub(super) fn run_once(
        &mut self,
        index: u64,
        term: u64,
        req: Request,
        once: Once,
    ) -> ((u64, u64), Applied) {
        self.dedupe.advance(once.proposed_at_ms);
        let digest = request_digest(&req);
        match self.dedupe.lookup(once.id, digest) {
            Lookup::Repeat(first) => {
                tracing::debug!(id = %once.id, index, first = first.index, "retried request: not applied again");
                (
                    (first.index, first.term),
                    Applied::Command(decode_result(&first.result)),
                )
            }
            Lookup::TooOld => (
                (index, term),
                Applied::Command(Err(MvccError::RequestIdTooOld)),
            ),
            Lookup::Reused => (
                (index, term),
                Applied::Command(Err(MvccError::RequestIdReused)),
            ),
            Lookup::New => {
                let result = self.run(req, term);
                let rec = Recorded {
                    index,
                    term,
                    digest,
                    result: encode_result(&result),
                };
                self.dedupe.record(once.id, rec);
                ((index, term), Applied::Command(result))
            }
        }
    }

    /// The request-id table (replicated state).
    pub fn dedupe(&self) -> &Table {
        &self.dedupe
    }
}

#[cfg(test)]
mod tests;
