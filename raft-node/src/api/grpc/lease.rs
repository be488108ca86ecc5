//! etcd's `Lease` service.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::api::etcd::EtcdApi;
use crate::api::pb::etcdserverpb::lease_server::Lease;
use crate::api::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::api::pb::raftnodepb::internal_request::Request as Internal;
use crate::mvcc::{Command, MvccError, Response as Applied};

/// etcd's largest lease TTL, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// The `Lease` service.
pub struct LeaseService(pub Arc<EtcdApi>);

type KeepAlives = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

/// A lease id for a grant that names none: positive, random (the grant
/// entry carries it, so every member agrees on it).
fn fresh_id() -> i64 {
    use rand::RngCore;
    (rand::rngs::OsRng.next_u64() >> 1).max(1) as i64
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        r: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let caller = self.0.caller_of(&r)?;
        let r = r.into_inner();
        if r.ttl > MAX_LEASE_TTL {
            return Err(Status::out_of_range("etcdserver: too large lease TTL"));
        }
        let ttl = r.ttl.max(self.0.min_lease_ttl);
        // A server-chosen id that happens to exist is chosen again.
        for _ in 0..3 {
            let id = if r.id != 0 { r.id } else { fresh_id() };
            let grant = Command(Internal::LeaseGrant(LeaseGrantRequest { ttl, id }));
            match self.0.write_as(caller.as_ref(), grant, None).await {
                Ok(Applied::LeaseGrant(mut resp)) => {
                    resp.header = self.0.header(resp.header);
                    return Ok(Response::new(resp));
                }
                Ok(_) => {
                    return Err(Status::internal(
                        "etcdserver: applied entry was not a grant",
                    ))
                }
                Err(e) if r.id == 0 && e.message() == MvccError::LeaseExists.message() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Status::failed_precondition(
            MvccError::LeaseExists.message(),
        ))
    }

    async fn lease_revoke(
        &self,
        r: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let caller = self.0.caller_of(&r)?;
        let revoke = Command(Internal::LeaseRevoke(r.into_inner()));
        match self.0.write_as(caller.as_ref(), revoke, None).await? {
            Applied::LeaseRevoke(mut resp) => {
                resp.header = self.0.header(resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(Status::internal(
                "etcdserver: applied entry was not a revoke",
            )),
        }
    }

    type LeaseKeepAliveStream = KeepAlives;

    async fn lease_keep_alive(
        &self,
        r: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.0.check_user(self.0.caller_of(&r)?.as_ref())?;
        let api = self.0.clone();
        let answers = r.into_inner().then(move |req| {
            let api = api.clone();
            async move {
                let id = req?.id;
                let ttl = api.keep_alive(id).await?;
                Ok(LeaseKeepAliveResponse {
                    header: api.header(None),
                    id,
                    ttl,
                })
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn lease_time_to_live(
        &self,
        r: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.0.check_user(self.0.caller_of(&r)?.as_ref())?;
        let r = r.into_inner();
        let view = self.0.read_barrier().await?;
        let Some(lease) = view.lease(r.id) else {
            return Ok(Response::new(LeaseTimeToLiveResponse {
                header: self.0.header(None),
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }));
        };
        let remaining = self.0.remaining(r.id).await?;
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: self.0.header(None),
            id: r.id,
            ttl: if remaining < 0 { lease.ttl } else { remaining },
            granted_ttl: lease.ttl,
            keys: if r.keys {
                lease.keys.iter().map(|k| k.to_vec()).collect()
            } else {
                Vec::new()
            },
        }))
    }

    async fn lease_leases(
        &self,
        r: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.0.check_user(self.0.caller_of(&r)?.as_ref())?;
        let view = self.0.read_barrier().await?;
        Ok(Response::new(LeaseLeasesResponse {
            header: self.0.header(None),
            leases: view.leases().map(|(id, _)| LeaseStatus { id }).collect(),
        }))
    }
}
