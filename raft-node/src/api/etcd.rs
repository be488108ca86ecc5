//! What every etcd v3 API call shares: the node's identity, its driver, the
//! forwarder to the leader, and the paths a write and a linearizable read
//! take (local on the leader, forwarded from a follower).

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use super::grpc::status::{from_client, from_mvcc};
use super::pb::etcdserverpb::alarm_request::AlarmAction;
use super::pb::etcdserverpb::{AlarmRequest, AlarmType, ResponseHeader};
use super::pb::raftnodepb::internal_request::Request as Internal;
use crate::auth::{AuthInfo, Credentials};
use crate::client_port::ClientIdentity;
use crate::driver::{ClientError, DriverHandle, Request, WriteOutcome};
use crate::forward::Forwarder;
use crate::http::AddressBook;
use crate::mvcc::{Applied, Command, RequestId, Response, Store};

/// etcd's default limit on one request (`--max-request-bytes`).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// etcd's default backend quota (`--quota-backend-bytes`): 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// How often a lease call or a write waiting for a leader looks again.
const LEADER_POLL: Duration = Duration::from_millis(50);

/// How many times a write refused with "not leader" follows the refusing
/// node's hint to the node that leads now before the refusal reaches the client.
const MAX_LEADER_HOPS: usize = 3;

/// The state the etcd API services share.
pub struct EtcdApi {
    /// This member's id.
    pub member_id: u64,
    /// The cluster's id.
    pub cluster_id: u64,
    /// The node's driver.
    pub driver: DriverHandle,
    /// Forwards writes and reads to the leader when this node follows.
    pub forwarder: Arc<Forwarder>,
    /// Where the members are.
    pub members: AddressBook,
    /// Largest request accepted, encoded.
    pub max_request_bytes: usize,
    /// Store size above which writes raise the NOSPACE alarm.
    pub quota_bytes: u64,
    /// How long a client waits for an answer.
    pub request_timeout: Duration,
    /// How often an idle watch with `progress_notify` hears the revision.
    pub watch_progress_interval: Duration,
    /// Decides lease expiry while this node leads.
    pub lessor: Arc<crate::lease::Lessor>,
    /// Shortest lease TTL granted, in seconds (etcd: 1.5 election timeouts).
    pub min_lease_ttl: i64,
    /// Watch and lease counters for `/metrics`.
    pub watch_metrics: Arc<crate::watch::WatchMetrics>,
    /// `https` when the client port speaks TLS, else `http` (members' client URLs).
    pub client_scheme: &'static str,
    /// How long a token from `Authenticate` is valid, in seconds.
    pub token_ttl_secs: u64,
}

impl EtcdApi {
    /// A response header: the store's revision and term from `inner` (or
    /// the current ones), with this cluster's and member's ids.
    pub fn header(&self, inner: Option<ResponseHeader>) -> Option<ResponseHeader> {
        let mut h = inner.unwrap_or_else(|| {
            let view = self.driver.store();
            ResponseHeader {
                revision: view.revision(),
                ..Default::default()
            }
        });
        if h.raft_term == 0 {
            h.raft_term = self.driver.status().term;
        }
        h.cluster_id = self.cluster_id;
        h.member_id = self.member_id;
        Some(h)
    }

    /// Proposes `cmd` (through the leader if this node follows) and returns
    /// what applying it produced.
    pub async fn write(&self, cmd: Command) -> Result<Response, Status> {
        self.write_once(cmd, None).await
    }

    /// [`EtcdApi::write`] applied at most once per request id `id` (from
    /// the `request-id` metadata): a retry gets the first result.
    pub async fn write_once(
        &self,
        cmd: Command,
        id: Option<RequestId>,
    ) -> Result<Response, Status> {
        if cmd.encoded_len() > self.max_request_bytes {
            return Err(Status::invalid_argument("etcdserver: request is too large"));
        }
        if adds_data(&cmd) {
            self.check_quota().await?;
        }
        let outcome = self.propose(&cmd, id).await.map_err(from_client)?;
        match outcome.applied {
            Applied::Command(Ok(resp)) => Ok(resp),
            Applied::Command(Err(e)) => Err(from_mvcc(&e)),
            Applied::Nothing => Err(Status::internal("etcdserver: the entry held no command")),
        }
    }

    /// What request `r` presents to name its user (see [`crate::auth`]):
    /// its token (metadata `token`, or `authorization` as etcd's gateway
    /// sends it) and its client certificate's common name.
    pub fn credentials_of<T>(&self, r: &tonic::Request<T>) -> Credentials {
        let md = r.metadata();
        let token = md
            .get("token")
            .or_else(|| md.get("authorization"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let common_name = r
            .extensions()
            .get::<ClientIdentity>()
            .map(|i| i.common_name.clone());
        Credentials { token, common_name }
    }

    /// Who makes request `r`, by this member's latest auth state.
    pub fn caller_of<T>(&self, r: &tonic::Request<T>) -> Result<Option<AuthInfo>, Status> {
        self.credentials_of(r)
            .resolve(self.driver.store().auth())
            .map_err(|e| e.status())
    }

    /// Who makes a request with `token` and/or a certificate naming `cn`.
    pub fn caller(
        &self,
        token: Option<&str>,
        cn: Option<&str>,
    ) -> Result<Option<AuthInfo>, Status> {
        self.driver
            .store()
            .auth()
            .caller(token, cn, crate::auth::tokens::unix_now())
            .map_err(|e| e.status())
    }

    /// Refuses unless auth is off or `caller` has the `root` role.
    pub fn check_admin(&self, caller: Option<&AuthInfo>) -> Result<(), Status> {
        let view = self.driver.store();
        view.auth().check_admin(caller).map_err(|e| e.status())
    }

    /// Refuses unless auth is off or `caller` names a user.
    pub fn check_user(&self, caller: Option<&AuthInfo>) -> Result<(), Status> {
        let view = self.driver.store();
        view.auth().check_user(caller).map_err(|e| e.status())
    }

    /// [`EtcdApi::write_once`] on behalf of `caller`: refused here unless the
    /// caller may make it; with auth on, proposed naming the caller, so
    /// that apply checks again (see [`crate::auth`]).
    pub async fn write_as(
        &self,
        caller: Option<&AuthInfo>,
        cmd: Command,
        id: Option<RequestId>,
    ) -> Result<Response, Status> {
        let cmd = self
            .driver
            .store()
            .authorize(caller, cmd)
            .map_err(|e| e.status())?;
        self.write_once(cmd, id).await
    }

    /// Proposes `cmd` here, or through the node that leads. A `NotLeader`
    /// refusal means nothing was proposed, so a write is not failed for a
    /// leader change the client could not see: when leadership has just
    /// moved (the node asked names another leader) it follows the hint, a
    /// few hops at most; during an election (no leader known) it waits for
    /// the next one, up to the request timeout, as etcd does.
    async fn propose(
        &self,
        cmd: &Command,
        id: Option<RequestId>,
    ) -> Result<WriteOutcome, ClientError> {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let mut hops = 0;
        let mut outcome = self.propose_here(cmd, id).await;
        loop {
            outcome = match outcome {
                Err(ClientError::NotLeader {
                    leader: Some(leader),
                }) if hops < MAX_LEADER_HOPS => {
                    hops += 1;
                    if leader == self.member_id {
                        // Another node says this one leads now.
                        self.propose_here(cmd, id).await
                    } else {
                        self.forwarder.write(leader, cmd, id).await
                    }
                }
                Err(ClientError::NotLeader { leader: None })
                    if tokio::time::Instant::now() + LEADER_POLL < deadline =>
                {
                    tokio::time::sleep(LEADER_POLL).await;
                    self.propose_here(cmd, id).await
                }
                other => return other,
            };
        }
    }

    async fn propose_here(
        &self,
        cmd: &Command,
        id: Option<RequestId>,
    ) -> Result<WriteOutcome, ClientError> {
        let (req, rx) = Request::write_once(cmd.clone(), id);
        self.driver.submit(req);
        rx.await.map_err(ClientError::from).and_then(|r| r)
    }

    /// A write that would grow the store past the quota raises the NOSPACE
    /// alarm (through the log, so every member refuses writes alike) and is
    /// refused, as etcd does.
    async fn check_quota(&self) -> Result<(), Status> {
        let view = self.driver.store();
        if view.size() <= self.quota_bytes {
            return Ok(());
        }
        if !view.alarmed_nospace() {
            tracing::warn!(
                size = view.size(),
                quota = self.quota_bytes,
                "store exceeds its quota: raising the NOSPACE alarm"
            );
            let alarm = Command(Internal::Alarm(AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: self.member_id,
                alarm: AlarmType::Nospace as i32,
            }));
            let _ = self.propose(&alarm, None).await;
        }
        Err(from_mvcc(&crate::mvcc::MvccError::NoSpace))
    }

    /// Proposes a membership change (through the leader if this node
    /// follows); returns its log index once applied.
    pub async fn change_members(
        &self,
        change: raft_core::ConfChange,
        context: Vec<u8>,
    ) -> Result<u64, Status> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.driver.submit(Request::ChangeMembers {
            change: change.clone(),
            context: context.clone(),
            reply,
        });
        match rx.await.map_err(ClientError::from).and_then(|r| r) {
            Err(ClientError::NotLeader {
                leader: Some(leader),
            }) if leader != self.member_id => self
                .forwarder
                .change_members(leader, change, context)
                .await
                .map_err(from_client),
            other => other.map_err(from_client),
        }
    }

    /// Renews lease `id` through the leader; returns its TTL (0: no such lease).
    pub async fn keep_alive(&self, id: i64) -> Result<i64, Status> {
        self.lease_call(crate::forward::ForwardBody::KeepAlive(id), || {
            self.lessor.keep_alive(id)
        })
        .await
    }

    /// Seconds lease `id` has left, as the leader counts (-1: no such lease).
    pub async fn remaining(&self, id: i64) -> Result<i64, Status> {
        self.lease_call(crate::forward::ForwardBody::TimeToLive(id), || {
            self.lessor.remaining(id)
        })
        .await
    }

    async fn lease_call(
        &self,
        body: crate::forward::ForwardBody,
        local: impl Fn() -> Option<i64>,
    ) -> Result<i64, Status> {
        // As etcd: during an election, wait for the next leader (up to the
        // request timeout) rather than fail, so a keep-alive stream outlives
        // a leader change.
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        loop {
            if let Some(ttl) = local() {
                return Ok(ttl);
            }
            let failed = match self.driver.status().leader {
                Some(leader) if leader != self.member_id => {
                    // A slice of the time per try: a leader that just died
                    // must not use it all before the new one is known.
                    let call = self.forwarder.lease(leader, body.clone());
                    let slice =
                        (tokio::time::Instant::now() + self.request_timeout / 4).min(deadline);
                    match tokio::time::timeout_at(slice, call).await {
                        Ok(Ok(ttl)) => return Ok(ttl),
                        Ok(Err(e)) => from_client(e),
                        Err(_) => Status::unavailable("etcdserver: request timed out"),
                    }
                }
                _ => Status::unavailable("etcdserver: no leader"),
            };
            if tokio::time::Instant::now() + LEADER_POLL >= deadline {
                return Err(failed);
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// Waits until this node may serve a linearizable read, and returns the
    /// view to serve it from.
    pub async fn read_barrier(&self) -> Result<Arc<Store>, Status> {
        let (req, rx) = Request::read_index();
        self.driver.submit(req);
        let index = match rx.await.map_err(ClientError::from).and_then(|r| r) {
            Ok(index) => index,
            Err(ClientError::NotLeader {
                leader: Some(leader),
            }) if leader != self.member_id => self
                .forwarder
                .read_index(leader)
                .await
                .map_err(from_client)?,
            Err(e) => return Err(from_client(e)),
        };
        let store = self.driver.shared_store().clone();
        tokio::time::timeout(self.request_timeout, store.applied(index))
            .await
            .map_err(|_| Status::unavailable("etcdserver: request timed out"))
    }
}

/// Whether a command can add data (the quota applies to it).
fn adds_data(cmd: &Command) -> bool {
    match &cmd.0 {
        Internal::Authorized(a) => a
            .request
            .as_ref()
            .and_then(|r| r.request.as_ref())
            .is_some_and(|r| matches!(r, Internal::Put(_) | Internal::Txn(_))),
        r => matches!(r, Internal::Put(_) | Internal::Txn(_)),
    }
}
