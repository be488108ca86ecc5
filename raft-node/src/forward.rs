//! Forwarding client requests from a follower to the leader.
//!
//! gRPC clients do not follow redirects, so a follower that receives a write
//! or a linearizable read forwards it to the leader it knows. Forwarding
//! rides the peer transport's bulk lane (QUIC with mutual TLS, beside
//! snapshot chunks), so a partition cuts it exactly as it cuts Raft traffic.
//! A forwarded write comes back with what applying it did; a forwarded read
//! comes back with the leader's applied index, and the follower serves the
//! read from its own state once it has applied that far (etcd's follower
//! ReadIndex).
//!
//! Both sides are bounded: a follower keeps at most
//! [`MAX_FORWARDS_IN_FLIGHT`] requests outstanding and each waits at most the
//! request timeout; a leader serves at most as many forwarded requests at
//! once and refuses more as busy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Semaphore};

use crate::api::pb::raftnodepb::internal_response::Response as Resp;
use crate::api::pb::raftnodepb::InternalResponse;
use crate::driver::{ClientError, DriverHandle, Request, WriteOutcome};
use crate::lease::Lessor;
use crate::mvcc::{Applied, Command, MvccError, Response};
use crate::snapshot_transfer::{PeerNet, SnapshotPiece};

/// Most forwarded requests a node has outstanding (as a follower) or serves
/// at once (as a leader).
pub const MAX_FORWARDS_IN_FLIGHT: usize = 4096;

/// What travels on the bulk lane.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum PeerBulk {
    /// A chunk of a snapshot transfer.
    Snapshot(SnapshotPiece),
    /// A forwarded client request or its answer.
    Forward(Forward),
}

impl raft_net::Envelope for PeerBulk {
    fn claimed_sender(&self) -> Option<u64> {
        match self {
            PeerBulk::Snapshot(p) => Some(p.from),
            PeerBulk::Forward(f) => Some(f.from),
        }
    }
}

/// A forwarded request or answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forward {
    /// Sending node (checked against its certificate by the transport).
    pub from: u64,
    /// Chosen by the follower; the answer carries it back.
    pub id: u64,
    /// The request or answer.
    pub body: ForwardBody,
}

/// The requests a follower forwards and the leader's answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardBody {
    /// Propose this command ([`Command::encode`]d) and answer when applied.
    Write(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Confirm a linearizable read.
    ReadIndex,
    /// Propose a membership change with its context.
    ChangeMembers(
        raft_core::ConfChange,
        #[serde(with = "serde_bytes")] Vec<u8>,
    ),
    /// The membership change was applied at this index.
    Changed(u64),
    /// Renew a lease.
    KeepAlive(i64),
    /// How long a lease has left.
    TimeToLive(i64),
    /// A lease's TTL: renewed (0: no such lease) or remaining (-1: none).
    Ttl(i64),
    /// The write was applied: its entry, and the encoded `InternalResponse`.
    Written {
        /// Log index of the entry.
        index: u64,
        /// Term of the entry.
        term: u64,
        /// What applying it produced.
        #[serde(with = "serde_bytes")]
        response: Vec<u8>,
    },
    /// The write was applied and refused by the store (nothing changed).
    Refused(MvccError),
    /// The read may be served once this index is applied.
    ReadFrom(u64),
    /// The leader could not serve the request.
    Failed(ClientError),
}

/// A follower's outstanding forwards.
pub struct Forwarder {
    me: u64,
    net: PeerNet,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, (u64, oneshot::Sender<ForwardBody>)>>,
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl Forwarder {
    /// A forwarder for node `me`; each request waits at most `timeout`.
    pub fn new(me: u64, net: PeerNet, timeout: Duration) -> Self {
        Forwarder {
            me,
            net,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(MAX_FORWARDS_IN_FLIGHT)),
            timeout,
        }
    }

    fn pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, (u64, oneshot::Sender<ForwardBody>)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn call(&self, leader: u64, body: ForwardBody) -> Result<ForwardBody, ClientError> {
        let _slot =
            self.slots.clone().try_acquire_owned().map_err(|_| {
                ClientError::Busy("too many requests forwarded to the leader".into())
            })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending().insert(id, (leader, tx));
        let msg = PeerBulk::Forward(Forward {
            from: self.me,
            id,
            body,
        });
        if let Err(e) = self.net.send_bulk(leader, msg) {
            self.pending().remove(&id);
            tracing::debug!(leader, error = %e, "cannot forward to the leader");
            return Err(ClientError::Busy(format!("cannot reach the leader: {e}")));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) | Err(_) => {
                self.pending().remove(&id);
                Err(ClientError::Timeout)
            }
        }
    }

    /// Has `leader` propose `cmd`; returns what applying it did.
    pub async fn write(&self, leader: u64, cmd: &Command) -> Result<WriteOutcome, ClientError> {
        match self.call(leader, ForwardBody::Write(cmd.encode())).await? {
            ForwardBody::Written {
                index,
                term,
                response,
            } => {
                let resp = decode_response(&response).map_err(|e| {
                    tracing::warn!(leader, error = %e, "undecodable forwarded answer");
                    ClientError::Timeout
                })?;
                Ok(WriteOutcome {
                    index,
                    term,
                    applied: Applied::Command(Ok(resp)),
                })
            }
            ForwardBody::Refused(e) => Ok(WriteOutcome {
                index: 0,
                term: 0,
                applied: Applied::Command(Err(e)),
            }),
            ForwardBody::Failed(e) => Err(e),
            other => {
                tracing::warn!(leader, answer = ?other, "unexpected forwarded answer");
                Err(ClientError::Timeout)
            }
        }
    }

    /// Has `leader` confirm a read; returns the index to serve it at.
    pub async fn read_index(&self, leader: u64) -> Result<u64, ClientError> {
        match self.call(leader, ForwardBody::ReadIndex).await? {
            ForwardBody::ReadFrom(index) => Ok(index),
            ForwardBody::Failed(e) => Err(e),
            other => {
                tracing::warn!(leader, answer = ?other, "unexpected forwarded answer");
                Err(ClientError::Timeout)
            }
        }
    }

    /// Has `leader` propose a membership change; returns its log index.
    pub async fn change_members(
        &self,
        leader: u64,
        change: raft_core::ConfChange,
        context: Vec<u8>,
    ) -> Result<u64, ClientError> {
        match self
            .call(leader, ForwardBody::ChangeMembers(change, context))
            .await?
        {
            ForwardBody::Changed(index) => Ok(index),
            ForwardBody::Failed(e) => Err(e),
            other => {
                tracing::warn!(leader, answer = ?other, "unexpected forwarded answer");
                Err(ClientError::Timeout)
            }
        }
    }

    /// Has `leader` renew lease `id` (or tell its remaining time); returns the TTL.
    pub async fn lease(&self, leader: u64, body: ForwardBody) -> Result<i64, ClientError> {
        match self.call(leader, body).await? {
            ForwardBody::Ttl(ttl) => Ok(ttl),
            ForwardBody::Failed(e) => Err(e),
            other => {
                tracing::warn!(leader, answer = ?other, "unexpected forwarded answer");
                Err(ClientError::Timeout)
            }
        }
    }

    /// Hands an answer from `from` to the request waiting for it.
    fn answer(&self, from: u64, id: u64, body: ForwardBody) {
        let mut pending = self.pending();
        if pending.get(&id).is_some_and(|(leader, _)| *leader == from) {
            if let Some((_, tx)) = pending.remove(&id) {
                let _ = tx.send(body);
            }
        }
    }
}

/// The leader's side: serves forwarded requests through the local driver.
pub struct ForwardServer {
    me: u64,
    net: PeerNet,
    driver: DriverHandle,
    lessor: Arc<Lessor>,
    slots: Arc<Semaphore>,
}

impl ForwardServer {
    /// Serves forwarded requests for node `me`.
    pub fn new(me: u64, net: PeerNet, driver: DriverHandle, lessor: Arc<Lessor>) -> Self {
        ForwardServer {
            me,
            net,
            driver,
            lessor,
            slots: Arc::new(Semaphore::new(MAX_FORWARDS_IN_FLIGHT)),
        }
    }

    /// Handles a forward from a peer: answers go to `forwarder`, requests are
    /// served on a task of their own.
    pub fn handle(&self, forwarder: &Forwarder, f: Forward) {
        let Forward { from, id, body } = f;
        let request = matches!(
            body,
            ForwardBody::Write(_)
                | ForwardBody::ReadIndex
                | ForwardBody::ChangeMembers(..)
                | ForwardBody::KeepAlive(_)
                | ForwardBody::TimeToLive(_)
        );
        if !request {
            forwarder.answer(from, id, body);
            return;
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            let busy = ClientError::Busy("too many forwarded requests".into());
            self.reply(from, id, ForwardBody::Failed(busy));
            return;
        };
        let driver = self.driver.clone();
        let net = self.net.clone();
        let me = self.me;
        let lessor = self.lessor.clone();
        tokio::spawn(async move {
            let answer = serve(&driver, &lessor, body).await;
            let reply = PeerBulk::Forward(Forward {
                from: me,
                id,
                body: answer,
            });
            if let Err(e) = net.send_bulk(from, reply) {
                tracing::debug!(to = from, error = %e, "cannot answer a forwarded request");
            }
            drop(slot);
        });
    }

    fn reply(&self, to: u64, id: u64, body: ForwardBody) {
        let msg = PeerBulk::Forward(Forward {
            from: self.me,
            id,
            body,
        });
        let _ = self.net.send_bulk(to, msg);
    }
}

async fn serve(driver: &DriverHandle, lessor: &Lessor, body: ForwardBody) -> ForwardBody {
    let not_leader = || {
        ForwardBody::Failed(ClientError::NotLeader {
            leader: driver.status().leader,
        })
    };
    match body {
        ForwardBody::KeepAlive(id) => lessor
            .keep_alive(id)
            .map_or_else(not_leader, ForwardBody::Ttl),
        ForwardBody::TimeToLive(id) => lessor
            .remaining(id)
            .map_or_else(not_leader, ForwardBody::Ttl),
        ForwardBody::Write(data) => {
            let cmd = match Command::decode(&data) {
                Ok(c) => c,
                Err(e) => return ForwardBody::Failed(ClientError::Invalid(e)),
            };
            let (req, rx) = Request::write(cmd);
            driver.submit(req);
            match rx.await.map_err(ClientError::from).and_then(|r| r) {
                Ok(WriteOutcome {
                    index,
                    term,
                    applied,
                }) => match applied {
                    Applied::Command(Ok(resp)) => ForwardBody::Written {
                        index,
                        term,
                        response: encode_response(resp),
                    },
                    Applied::Command(Err(e)) => ForwardBody::Refused(e),
                    Applied::Nothing => ForwardBody::Failed(ClientError::Invalid(
                        "the entry held no command".into(),
                    )),
                },
                Err(e) => ForwardBody::Failed(e),
            }
        }
        ForwardBody::ReadIndex => {
            let (req, rx) = Request::read_index();
            driver.submit(req);
            match rx.await.map_err(ClientError::from).and_then(|r| r) {
                Ok(index) => ForwardBody::ReadFrom(index),
                Err(e) => ForwardBody::Failed(e),
            }
        }
        ForwardBody::ChangeMembers(change, context) => {
            let (reply, rx) = oneshot::channel();
            driver.submit(Request::ChangeMembers {
                change,
                context,
                reply,
            });
            match rx.await.map_err(ClientError::from).and_then(|r| r) {
                Ok(index) => ForwardBody::Changed(index),
                Err(e) => ForwardBody::Failed(e),
            }
        }
        other => ForwardBody::Failed(ClientError::Invalid(format!(
            "not a forwardable request: {other:?}"
        ))),
    }
}

fn encode_response(resp: Response) -> Vec<u8> {
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

fn decode_response(bytes: &[u8]) -> Result<Response, String> {
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
