//! etcd's `Cluster` service, mapped onto raft-node's membership changes.
//!
//! Member ids are raft-node node ids. A member's peer URL is
//! `https://<peer_addr>` (QUIC with mutual TLS) and its client URL
//! `http://<client_addr>`. A member added through `MemberAdd` has no client
//! URL until it is known (as in etcd before the member starts).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use raft_core::{ConfChange, ConfChangeSingle};
use tonic::{Code, Request, Response, Status};

use crate::api::etcd::EtcdApi;
use crate::api::pb::etcdserverpb::cluster_server::Cluster;
use crate::api::pb::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use crate::config::Member as Addresses;

/// The `Cluster` service.
pub struct ClusterService(pub Arc<EtcdApi>);

/// The client address of a member added without one.
const UNKNOWN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

fn parse_peer_urls(urls: &[String]) -> Result<SocketAddr, Status> {
    let [url] = urls else {
        return Err(Status::invalid_argument(
            "etcdserver: raft-node members have exactly one peer URL",
        ));
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let hostport = rest.trim_end_matches('/');
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "etcdserver: bad peer URL {url:?} (want https://host:port)"
            ))
        })
}

impl ClusterService {
    /// Every member of the current configuration.
    pub fn members(&self) -> Vec<Member> {
        let status = self.0.driver.status();
        let book = self.0.members.read().unwrap_or_else(|e| e.into_inner());
        let voters = status.voters.iter().chain(&status.voters_outgoing);
        let mut ids: Vec<(u64, bool)> = voters.map(|&id| (id, false)).collect();
        ids.extend(status.learners.iter().map(|&id| (id, true)));
        ids.sort_unstable();
        ids.dedup_by_key(|(id, _)| *id);
        ids.into_iter()
            .map(|(id, is_learner)| {
                let addrs = book.get(&id);
                Member {
                    id,
                    // A member added through MemberAdd has no client address
                    // until it is known; like etcd, it has no name until then
                    // (etcdctl shows it "unstarted").
                    name: addrs
                        .filter(|m| m.client_addr != UNKNOWN_ADDR)
                        .map_or_else(String::new, |_| format!("node-{id}")),
                    peer_ur_ls: addrs
                        .map(|m| vec![format!("https://{}", m.peer_addr)])
                        .unwrap_or_default(),
                    client_ur_ls: addrs
                        .filter(|m| m.client_addr != UNKNOWN_ADDR)
                        .map(|m| vec![format!("{}://{}", self.0.client_scheme, m.client_addr)])
                        .unwrap_or_default(),
                    is_learner,
                }
            })
            .collect()
    }

    fn known(&self, id: u64) -> Result<Member, Status> {
        self.members()
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| Status::not_found("etcdserver: member not found"))
    }

    async fn change(&self, step: ConfChangeSingle, context: Vec<u8>) -> Result<(), Status> {
        let cc = ConfChange {
            changes: vec![step],
        };
        let index = self.0.change_members(cc, context).await?;
        // Answer with the member list after the change, also when the change
        // was forwarded and this member has not applied it yet.
        let deadline = tokio::time::Instant::now() + self.0.request_timeout;
        while self.0.driver.status().applied < index {
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable("etcdserver: request timed out"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        r: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.0.check_admin(self.0.caller_of(&r)?.as_ref())?;
        let r = r.into_inner();
        let peer_addr = parse_peer_urls(&r.peer_ur_ls)?;
        let members = self.members();
        let taken = self
            .0
            .members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|m| m.peer_addr == peer_addr && members.iter().any(|x| x.id == m.id));
        if taken {
            return Err(Status::failed_precondition(
                "etcdserver: Peer URLs already exists",
            ));
        }
        let book_max = self
            .0
            .members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .max()
            .unwrap_or(0);
        let id = members
            .iter()
            .map(|m| m.id)
            .max()
            .unwrap_or(0)
            .max(book_max)
            + 1;
        let addrs = Addresses {
            id,
            peer_addr,
            client_addr: UNKNOWN_ADDR,
        };
        let context = postcard::to_stdvec(&addrs).expect("encoding into a Vec cannot fail");
        // A new member starts empty: as a voter at once it would count
        // towards the quorum before it could vote or ack anything, lowering
        // availability. So it always joins as a learner; asked for a voter,
        // it is promoted once it has caught up (raft-node differs from etcd
        // here on purpose).
        self.change(ConfChangeSingle::AddLearner(id), context.clone())
            .await?;
        if !r.is_learner {
            tokio::spawn(promote_when_caught_up(self.0.clone(), id, context));
        }
        let member = Member {
            id,
            name: String::new(),
            peer_ur_ls: vec![format!("https://{peer_addr}")],
            client_ur_ls: Vec::new(),
            is_learner: true,
        };
        Ok(Response::new(MemberAddResponse {
            header: self.0.header(None),
            member: Some(member),
            members: self.members(),
        }))
    }

    async fn member_remove(
        &self,
        r: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.0.check_admin(self.0.caller_of(&r)?.as_ref())?;
        let id = r.into_inner().id;
        self.known(id)?;
        self.change(ConfChangeSingle::Remove(id), Vec::new())
            .await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.0.header(None),
            members: self.members(),
        }))
    }

    async fn member_update(
        &self,
        r: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.0.check_admin(self.0.caller_of(&r)?.as_ref())?;
        let r = r.into_inner();
        let current = self.known(r.id)?;
        let peer_addr = parse_peer_urls(&r.peer_ur_ls)?;
        let client_addr = self
            .0
            .members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&r.id)
            .map_or(UNKNOWN_ADDR, |m| m.client_addr);
        let context = postcard::to_stdvec(&Addresses {
            id: r.id,
            peer_addr,
            client_addr,
        })
        .expect("encoding into a Vec cannot fail");
        // Re-adding a member in its current role changes no configuration;
        // the entry carries its new addresses to every member.
        let step = if current.is_learner {
            ConfChangeSingle::AddLearner(r.id)
        } else {
            ConfChangeSingle::AddVoter(r.id)
        };
        self.change(step, context).await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.0.header(None),
            members: self.members(),
        }))
    }

    async fn member_list(
        &self,
        r: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if r.into_inner().linearizable {
            self.0.read_barrier().await?;
        }
        Ok(Response::new(MemberListResponse {
            header: self.0.header(None),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        r: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.0.check_admin(self.0.caller_of(&r)?.as_ref())?;
        let id = r.into_inner().id;
        if !self.known(id)?.is_learner {
            return Err(Status::failed_precondition(
                "etcdserver: can only promote a learner member",
            ));
        }
        self.change(ConfChangeSingle::AddVoter(id), Vec::new())
            .await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.0.header(None),
            members: self.members(),
        }))
    }
}

/// How long a member added as a voter may take to catch up as a learner.
const PROMOTE_WITHIN: std::time::Duration = std::time::Duration::from_secs(600);

/// Promotes learner `id` (added by `MemberAdd` as a voter) through the
/// leader once it has caught up; retries while it lags or the leader
/// changes, and stops if the member is removed or promoted meanwhile.
async fn promote_when_caught_up(api: Arc<EtcdApi>, id: u64, context: Vec<u8>) {
    let deadline = tokio::time::Instant::now() + PROMOTE_WITHIN;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if !api.driver.status().learners.contains(&id) {
            tracing::info!(member = id, "no longer a learner; automatic promotion ends");
            return;
        }
        let promote = ConfChange {
            changes: vec![ConfChangeSingle::AddVoter(id)],
        };
        match api.change_members(promote, context.clone()).await {
            Ok(index) => {
                tracing::info!(member = id, index, "learner caught up; promoted to voter");
                return;
            }
            // Still catching up, another change in progress, or no leader.
            Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::Unavailable) => {}
            Err(s) => {
                tracing::warn!(member = id, error = %s.message(), "automatic promotion abandoned; use MemberPromote");
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                member = id,
                "learner did not catch up in time; automatic promotion abandoned"
            );
            return;
        }
    }
}
