//! Faults to inject into a running [`Cluster`]: network partitions and packet
//! loss with iptables ([`firewall`]), process crashes and pauses with signals,
//! leadership transfers and membership changes through the admin API.
//!
//! Each [`Nemesis`] is applied by [`Nemesis::apply`]: inject the fault, hold it
//! (acting during the hold where the fault is a series of actions), heal it.
//! Choices (which nodes, which direction, which loss rate) come from the
//! caller's seeded RNG, so a run is reproducible in structure.

pub mod firewall;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;
use reqwest::Method;

use crate::client::{Answer, Api, NodeStatus};
use crate::cluster::{Cluster, LIVE_PIDS};
pub use firewall::Firewall;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Nemesis {
    /// Cut the nodes into a random minority and majority (UDP both ways).
    PartitionHalves,
    /// Cut the current leader off from every other node.
    IsolateLeader,
    /// 5 nodes on a shuffled ring, each talking only to its two neighbours:
    /// every node sees a majority (itself and its neighbours), no two the same.
    MajoritiesRing,
    /// 5 nodes as two pairs that cannot talk to each other and one bridge
    /// node that talks to both.
    Bridge,
    /// One node's packets to every other node are lost, or every other node's
    /// packets to it (random direction; the leader half of the time).
    OneWayLoss,
    /// Every peer link (each direction) loses packets at random with a
    /// probability drawn from 10–40%.
    PacketLoss,
    /// `SIGKILL` a random node; restart it on its data directory at heal.
    KillOne,
    /// `SIGKILL` every node; restart them all on their data directories.
    KillAll,
    /// `SIGSTOP` the leader for longer than two maximal election timeouts,
    /// then `SIGCONT` it.
    StopLeader,
    /// Transfer leadership to a random voter about every second.
    TransferLeader,
    /// Remove a random member (possibly the leader), then add it back.
    Membership,
}

impl Nemesis {
    /// Every nemesis.
    pub const ALL: [Nemesis; 11] = [
        Nemesis::PartitionHalves,
        Nemesis::IsolateLeader,
        Nemesis::MajoritiesRing,
        Nemesis::Bridge,
        Nemesis::OneWayLoss,
        Nemesis::PacketLoss,
        Nemesis::KillOne,
        Nemesis::KillAll,
        Nemesis::StopLeader,
        Nemesis::TransferLeader,
        Nemesis::Membership,
    ];

    /// Its name (as accepted by [`Nemesis::parse`]).
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::PartitionHalves => "partition-halves",
            Nemesis::IsolateLeader => "isolate-leader",
            Nemesis::MajoritiesRing => "majorities-ring",
            Nemesis::Bridge => "bridge",
            Nemesis::OneWayLoss => "one-way-loss",
            Nemesis::PacketLoss => "packet-loss",
            Nemesis::KillOne => "kill-one",
            Nemesis::KillAll => "kill-all",
            Nemesis::StopLeader => "stop-leader",
            Nemesis::TransferLeader => "transfer-leader",
            Nemesis::Membership => "membership",
        }
    }

    /// The nemesis named `name`.
    pub fn parse(name: &str) -> Option<Nemesis> {
        Nemesis::ALL.into_iter().find(|n| n.name() == name.trim())
    }

    /// Whether it needs iptables.
    pub fn needs_iptables(self) -> bool {
        matches!(
            self,
            Nemesis::PartitionHalves
                | Nemesis::IsolateLeader
                | Nemesis::MajoritiesRing
                | Nemesis::Bridge
                | Nemesis::OneWayLoss
                | Nemesis::PacketLoss
        )
    }

    /// Whether it works on a cluster of `n` nodes.
    pub fn supports(self, n: usize) -> bool {
        match self {
            Nemesis::MajoritiesRing | Nemesis::Bridge => n == 5,
            Nemesis::PartitionHalves
            | Nemesis::IsolateLeader
            | Nemesis::OneWayLoss
            | Nemesis::PacketLoss
            | Nemesis::StopLeader
            | Nemesis::TransferLeader
            | Nemesis::Membership => n >= 3,
            Nemesis::KillOne | Nemesis::KillAll => n >= 1,
        }
    }
}

/// What a nemesis acts on.
pub struct Ctx<'a> {
    /// The cluster.
    pub cluster: &'a Cluster,
    /// An API client for admin requests and status.
    pub api: &'a Api,
    /// The firewall, if iptables is usable.
    pub firewall: Option<&'a Firewall>,
    /// The seeded source of every choice.
    pub rng: &'a mut SmallRng,
}

impl Ctx<'_> {
    fn ip(&self, id: u64) -> Ipv4Addr {
        self.cluster.node(id).ip
    }

    fn ips(&self, ids: &[u64]) -> Vec<Ipv4Addr> {
        ids.iter().map(|id| self.ip(*id)).collect()
    }

    fn fw(&self) -> Result<&Firewall, String> {
        self.firewall
            .ok_or_else(|| "this nemesis needs iptables, which is not available".to_string())
    }
}

/// The status of every node that answers.
pub async fn statuses(api: &Api, cluster: &Cluster) -> Vec<NodeStatus> {
    let mut tasks = Vec::new();
    for n in cluster.nodes() {
        let (api, url) = (api.clone(), n.url());
        tasks.push(tokio::spawn(async move { api.status(&url).await }));
    }
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(Some(s)) = t.await {
            out.push(s);
        }
    }
    out
}

/// The node claiming leadership in the highest term, waiting up to `timeout`.
pub async fn find_leader(api: &Api, cluster: &Cluster, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let leader = statuses(api, cluster)
            .await
            .into_iter()
            .filter(|s| s.role == "leader")
            .max_by_key(|s| s.term)
            .map(|s| s.id);
        if leader.is_some() || Instant::now() >= deadline {
            return leader;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends an admin request to the leader (any node if none is known; the
/// node redirects), returning the answer.
async fn to_leader(
    api: &Api,
    cluster: &Cluster,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Answer {
    let id = find_leader(api, cluster, Duration::from_secs(3))
        .await
        .unwrap_or(1);
    let url = format!("{}{path}", cluster.node(id).url());
    api.request(method, &url, body.map(|b| b.to_string().into_bytes()))
        .await
}

/// Waits until the leader's configuration satisfies `done`, sending `method
/// path body` whenever it does not (a request answered with an error or
/// timeout may or may not have taken effect, so the configuration decides).
async fn change_membership(
    ctx: &Ctx<'_>,
    what: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    done: impl Fn(&NodeStatus) -> bool,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no attempt");
    loop {
        if let Some(l) = find_leader(ctx.api, ctx.cluster, Duration::from_secs(2)).await {
            if let Some(s) = ctx.api.status(&ctx.cluster.node(l).url()).await {
                if s.role == "leader" && s.voters_outgoing.is_empty() && done(&s) {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what} did not complete within {timeout:?}; last answer: {last}"
            ));
        }
        let answer = to_leader(ctx.api, ctx.cluster, method.clone(), path, body.clone()).await;
        last = answer.describe();
        ctx.cluster.note(&format!("  {what}: {last}"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

impl Nemesis {
    /// Injects the fault, holds it for about `hold`, heals it. Returns a
    /// description of what was done; an error means the nemesis could not act
    /// or heal (a membership change that never completes is an error).
    pub async fn apply(self, ctx: &mut Ctx<'_>, hold: Duration) -> Result<String, String> {
        let ids = ctx.cluster.ids();
        let n = ids.len();
        match self {
            Nemesis::PartitionHalves => {
                let mut shuffled = ids.clone();
                shuffled.shuffle(ctx.rng);
                let k = ctx.rng.gen_range(1..=(n - 1) / 2);
                let (minority, majority) = shuffled.split_at(k);
                ctx.fw()?.cut(&ctx.ips(minority), &ctx.ips(majority))?;
                let desc = format!("partition {minority:?} | {majority:?}");
                self.hold_then_heal_net(ctx, hold, desc).await
            }
            Nemesis::IsolateLeader => {
                let leader = self.leader_or_random(ctx).await;
                let others: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
                ctx.fw()?.cut(&ctx.ips(&[leader]), &ctx.ips(&others))?;
                let desc = format!("isolate leader {leader} from {others:?}");
                self.hold_then_heal_net(ctx, hold, desc).await
            }
            Nemesis::MajoritiesRing => {
                let mut ring = ids.clone();
                ring.shuffle(ctx.rng);
                let fw = ctx.fw()?;
                for i in 0..n {
                    for j in (i + 1)..n {
                        let d = j - i;
                        if d != 1 && d != n - 1 {
                            fw.cut(&ctx.ips(&[ring[i]]), &ctx.ips(&[ring[j]]))?;
                        }
                    }
                }
                let desc = format!("majorities ring {ring:?}");
                self.hold_then_heal_net(ctx, hold, desc).await
            }
            Nemesis::Bridge => {
                let mut s = ids.clone();
                s.shuffle(ctx.rng);
                let (left, bridge, right) = (&s[..2], s[2], &s[3..]);
                ctx.fw()?.cut(&ctx.ips(left), &ctx.ips(right))?;
                let desc = format!("bridge {left:?} - {bridge} - {right:?}");
                self.hold_then_heal_net(ctx, hold, desc).await
            }
            Nemesis::OneWayLoss => {
                let x = if ctx.rng.gen_bool(0.5) {
                    self.leader_or_random(ctx).await
                } else {
                    ids[ctx.rng.gen_range(0..n)]
                };
                let outbound = ctx.rng.gen_bool(0.5);
                let fw = ctx.fw()?;
                for other in ids.iter().copied().filter(|i| *i != x) {
                    let (from, to) = if outbound { (x, other) } else { (other, x) };
                    fw.drop_udp(ctx.ip(from), ctx.ip(to), None)?;
                }
                let desc = if outbound {
                    format!("one-way: node {x} cannot send to the others")
                } else {
                    format!("one-way: node {x} cannot receive from the others")
                };
                self.hold_then_heal_net(ctx, hold, desc).await
            }
            Nemesis::PacketLoss => {
                let p = ctx.rng.gen_range(0.10..0.40);
                let fw = ctx.fw()?;
                for a in &ids {
                    for b in ids.iter().filter(|b| *b != a) {
                        fw.drop_udp(ctx.ip(*a), ctx.ip(*b), Some(p))?;
                    }
                }
                let desc = format!("packet loss {:.0}% on every link", p * 100.0);
                self.hold_then_heal_net(ctx, hold, desc).await
            }
            Nemesis::KillOne => {
                let victim = ids[ctx.rng.gen_range(0..n)];
                ctx.cluster
                    .kill(victim)
                    .map_err(|e| format!("kill {victim}: {e}"))?;
                ctx.cluster.note(&format!("  SIGKILL node {victim}"));
                tokio::time::sleep(hold).await;
                ctx.cluster
                    .spawn(victim)
                    .map_err(|e| format!("restart {victim}: {e}"))?;
                Ok(format!("SIGKILL node {victim}, restarted after {hold:?}"))
            }
            Nemesis::KillAll => {
                for id in &ids {
                    ctx.cluster
                        .kill(*id)
                        .map_err(|e| format!("kill {id}: {e}"))?;
                }
                ctx.cluster.note("  SIGKILL every node");
                let down = hold.min(Duration::from_secs(2));
                tokio::time::sleep(down).await;
                for id in &ids {
                    ctx.cluster
                        .spawn(*id)
                        .map_err(|e| format!("restart {id}: {e}"))?;
                }
                Ok(format!("SIGKILL every node, restarted after {down:?}"))
            }
            Nemesis::StopLeader => {
                let leader = self.leader_or_random(ctx).await;
                // Randomized election timeout is up to twice the base.
                let two_timeouts =
                    Duration::from_millis(4 * ctx.cluster.options().election_timeout_ms);
                let hold = hold.max(two_timeouts + Duration::from_millis(500));
                ctx.cluster.pause(leader);
                ctx.cluster.note(&format!("  SIGSTOP node {leader}"));
                tokio::time::sleep(hold).await;
                ctx.cluster.resume(leader);
                Ok(format!(
                    "SIGSTOP leader {leader} for {hold:?}, then SIGCONT"
                ))
            }
            Nemesis::TransferLeader => {
                let end = Instant::now() + hold;
                let mut done = Vec::new();
                while Instant::now() < end {
                    let Some(leader) =
                        find_leader(ctx.api, ctx.cluster, Duration::from_secs(2)).await
                    else {
                        done.push("no leader".to_string());
                        continue;
                    };
                    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
                    let to = others[ctx.rng.gen_range(0..others.len())];
                    let url = format!("{}/v1/leader/transfer", ctx.cluster.node(leader).url());
                    let body = serde_json::json!({ "to": to }).to_string().into_bytes();
                    let answer = ctx.api.request(Method::POST, &url, Some(body)).await;
                    let line = format!("{leader}->{to}: {}", answer.describe());
                    ctx.cluster.note(&format!("  transfer {line}"));
                    done.push(line);
                    tokio::time::sleep(Duration::from_millis(ctx.rng.gen_range(500..1500))).await;
                }
                Ok(format!("leadership transfers [{}]", done.join("; ")))
            }
            Nemesis::Membership => {
                let victim = ids[ctx.rng.gen_range(0..n)];
                let spec = ctx.cluster.node(victim).clone();
                let timeout = Duration::from_secs(30);
                change_membership(
                    ctx,
                    &format!("remove node {victim}"),
                    Method::DELETE,
                    &format!("/v1/members/{victim}"),
                    None,
                    |s| !s.voters.contains(&victim) && !s.learners.contains(&victim),
                    timeout,
                )
                .await?;
                ctx.cluster.note(&format!("  node {victim} removed"));
                tokio::time::sleep(hold).await;
                change_membership(
                    ctx,
                    &format!("add node {victim} back"),
                    Method::POST,
                    "/v1/members",
                    Some(serde_json::json!({
                        "id": victim,
                        "peer_addr": spec.peer_addr.to_string(),
                        "client_addr": spec.client_addr.to_string(),
                        "learner": false,
                    })),
                    |s| s.voters.contains(&victim),
                    timeout,
                )
                .await?;
                Ok(format!(
                    "removed node {victim}, added it back after {hold:?}"
                ))
            }
        }
    }

    async fn leader_or_random(self, ctx: &mut Ctx<'_>) -> u64 {
        match find_leader(ctx.api, ctx.cluster, Duration::from_secs(5)).await {
            Some(l) => l,
            None => {
                let ids = ctx.cluster.ids();
                let pick = ids[ctx.rng.gen_range(0..ids.len())];
                ctx.cluster.note(&format!(
                    "  no leader found; {} targets node {pick}",
                    self.name()
                ));
                pick
            }
        }
    }

    async fn hold_then_heal_net(
        self,
        ctx: &mut Ctx<'_>,
        hold: Duration,
        desc: String,
    ) -> Result<String, String> {
        let fw = ctx.fw()?;
        ctx.cluster
            .note(&format!("  {desc}; rules:\n{}", fw.rules().trim_end()));
        tokio::time::sleep(hold).await;
        fw.heal()?;
        Ok(format!("{desc} for {hold:?}, healed"))
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Set while a [`Firewall`] may have rules installed.
pub(crate) static FIREWALL_ACTIVE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs (once) a `SIGINT`/`SIGTERM` handler whose watcher thread removes
/// the iptables chain, kills every node process the suite started (after
/// `SIGCONT`, so stopped ones die too) and exits with status 130.
pub fn install_interrupt_cleanup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; the sigaction struct is fully initialized.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_interrupt as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
            libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        }
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_millis(50));
            if INTERRUPTED.load(Ordering::SeqCst) {
                if FIREWALL_ACTIVE.load(Ordering::SeqCst) {
                    firewall::remove_chain();
                }
                let pids: Vec<i32> = LIVE_PIDS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .copied()
                    .collect();
                for pid in pids {
                    // SAFETY: kill(2) on pids of children we started.
                    unsafe {
                        libc::kill(pid, libc::SIGCONT);
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                eprintln!("fault suite: interrupted; iptables chain removed, nodes killed");
                std::process::exit(130);
            }
        });
    });
}
