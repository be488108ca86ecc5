//! etcd's `Maintenance` service.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::status::{from_client, from_mvcc};
use crate::api::etcd::EtcdApi;
use crate::api::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::api::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::api::pb::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use crate::api::pb::raftnodepb::internal_request::Request as Internal;
use crate::driver::Request as DriverRequest;
use crate::mvcc::{Command, Response as Applied};

/// The etcd API version raft-node reports (the API level it serves).
pub const ETCD_VERSION: &str = "3.4.0";

/// Bytes per message of a `Snapshot` stream.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// The `Maintenance` service.
pub struct MaintenanceService(pub Arc<EtcdApi>);

impl MaintenanceService {
    /// This member's status (also used by the JSON gateway).
    pub fn status(&self) -> StatusResponse {
        let s = self.0.driver.status();
        let view = self.0.driver.store();
        let mut errors: Vec<String> = view
            .alarms()
            .map(|(m, a)| format!("memberID:{m} alarm:{}", alarm_name(a)))
            .collect();
        if let Some(why) = &s.failed {
            errors.push(why.clone());
        }
        StatusResponse {
            header: self.0.header(None),
            version: ETCD_VERSION.into(),
            db_size: view.size() as i64,
            leader: s.leader.unwrap_or(0),
            raft_index: s.commit,
            raft_term: s.term,
            raft_applied_index: s.applied,
            errors,
            db_size_in_use: view.size() as i64,
            is_learner: s.learners.contains(&self.0.member_id),
        }
    }
}

fn alarm_name(a: i32) -> &'static str {
    AlarmType::try_from(a).map_or("UNKNOWN", |t| t.as_str_name())
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, r: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let caller = self.0.caller_of(&r)?;
        let r = r.into_inner();
        match AlarmAction::try_from(r.action) {
            Ok(AlarmAction::Get) => {
                let view = self.0.driver.store();
                let alarms = view
                    .alarms()
                    .filter(|&(m, a)| {
                        (r.member_id == 0 || m == r.member_id)
                            && (r.alarm == AlarmType::None as i32 || a == r.alarm)
                    })
                    .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
                    .collect();
                Ok(Response::new(AlarmResponse {
                    header: self.0.header(None),
                    alarms,
                }))
            }
            Ok(_) => match self
                .0
                .write_as(caller.as_ref(), Command(Internal::Alarm(r)), None)
                .await?
            {
                Applied::Alarm(mut resp) => {
                    resp.header = self.0.header(resp.header);
                    Ok(Response::new(resp))
                }
                _ => Err(Status::internal(
                    "etcdserver: applied entry was not an alarm",
                )),
            },
            Err(_) => Err(Status::invalid_argument("etcdserver: unknown alarm action")),
        }
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(MaintenanceService::status(self)))
    }

    async fn defragment(
        &self,
        r: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.0.check_admin(self.0.caller_of(&r)?.as_ref())?;
        // The store is in memory and compaction frees what it drops at once:
        // there is nothing to defragment.
        Ok(Response::new(DefragmentResponse {
            header: self.0.header(None),
        }))
    }

    async fn hash(&self, r: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.0.check_admin(self.0.caller_of(&r)?.as_ref())?;
        let (hash, _) = self
            .0
            .driver
            .store()
            .hash_kv(0)
            .map_err(|e| from_mvcc(&e))?;
        Ok(Response::new(HashResponse {
            header: self.0.header(None),
            hash,
        }))
    }

    async fn hash_kv(&self, r: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        self.0.check_admin(self.0.caller_of(&r)?.as_ref())?;
        let view = self.0.driver.store();
        let (hash, hash_revision) = view
            .hash_kv(r.into_inner().revision)
            .map_err(|e| from_mvcc(&e))?;
        Ok(Response::new(HashKvResponse {
            header: self.0.header(None),
            hash,
            compact_revision: view.compact_revision(),
            hash_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        r: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.0.check_admin(self.0.caller_of(&r)?.as_ref())?;
        // A consistent view: O(1) to take; serialized off the async threads.
        let view = self.0.driver.store();
        if view.is_restoring() {
            return Err(from_mvcc(&crate::mvcc::MvccError::Restoring));
        }
        let header = self.0.header(Some(view.header(0)));
        let bytes = tokio::task::spawn_blocking(move || view.to_backup())
            .await
            .map_err(|e| Status::internal(format!("etcdserver: snapshot task failed: {e}")))?
            .map_err(|e| Status::internal(format!("etcdserver: snapshot failed: {e}")))?;
        let total = bytes.len();
        let chunks: Vec<Result<SnapshotResponse, Status>> = bytes
            .chunks(SNAPSHOT_CHUNK)
            .scan(total, |remaining, chunk| {
                *remaining -= chunk.len();
                Some(Ok(SnapshotResponse {
                    header,
                    remaining_bytes: *remaining as u64,
                    blob: chunk.to_vec(),
                    version: ETCD_VERSION.into(),
                }))
            })
            .collect();
        Ok(Response::new(Box::pin(futures_util::stream::iter(chunks))))
    }

    async fn move_leader(
        &self,
        r: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.0.check_admin(self.0.caller_of(&r)?.as_ref())?;
        let to = r.into_inner().target_id;
        let status = self.0.driver.status();
        if status.leader != Some(self.0.member_id) {
            return Err(Status::failed_precondition("etcdserver: not leader"));
        }
        if !status.voters.contains(&to) {
            return Err(Status::failed_precondition(
                "etcdserver: bad leader transferee",
            ));
        }
        if to != self.0.member_id {
            let (reply, rx) = tokio::sync::oneshot::channel();
            self.0
                .driver
                .submit(DriverRequest::TransferLeader { to, reply });
            rx.await
                .map_err(|e| from_client(e.into()))?
                .map_err(from_client)?;
            // etcd answers once the transfer is done.
            let deadline = Instant::now() + self.0.request_timeout;
            while self.0.driver.status().leader != Some(to) {
                if Instant::now() >= deadline {
                    return Err(Status::unavailable(
                        "etcdserver: request timed out, leader transfer took too long",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(Response::new(MoveLeaderResponse {
            header: self.0.header(None),
        }))
    }
}
