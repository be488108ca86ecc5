//! The simulated network: per-link loss, delay, duplication (and so reordering), and
//! partitions expressed as blocked directed links.

use std::collections::{BTreeMap, BTreeSet};

use crate::rng::SimRng;

/// Behaviour of one directed link.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub loss_pct: u64,
    pub dup_pct: u64,
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Link {
    pub fn healthy() -> Self {
        Link {
            loss_pct: 0,
            dup_pct: 0,
            min_delay_ms: 1,
            max_delay_ms: 5,
        }
    }
}

/// Shapes of partition the chaos can impose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partition {
    Halves,
    IsolateLeader,
    MajoritiesRing,
    Bridge,
    OneWay,
}

pub struct Network {
    pub links: BTreeMap<(u64, u64), Link>,
    pub blocked: BTreeSet<(u64, u64)>,
}

impl Network {
    pub fn new(ids: &[u64]) -> Self {
        let mut links = BTreeMap::new();
        for &a in ids {
            for &b in ids {
                if a != b {
                    links.insert((a, b), Link::healthy());
                }
            }
        }
        Network {
            links,
            blocked: BTreeSet::new(),
        }
    }

    /// Delivery delays for one message from `from` to `to`: empty if lost, two if duplicated.
    pub fn deliveries(&self, rng: &mut SimRng, from: u64, to: u64) -> Vec<u64> {
        if self.blocked.contains(&(from, to)) {
            return Vec::new();
        }
        let link = self
            .links
            .get(&(from, to))
            .copied()
            .unwrap_or_else(Link::healthy);
        if rng.chance(link.loss_pct) {
            return Vec::new();
        }
        let mut out = vec![rng.range(link.min_delay_ms, link.max_delay_ms + 1)];
        if rng.chance(link.dup_pct) {
            out.push(rng.range(link.min_delay_ms, 4 * link.max_delay_ms + 1));
        }
        out
    }

    /// Random per-link faults.
    pub fn randomize_links(&mut self, rng: &mut SimRng) {
        let loss_cap = rng.pick(&[0, 5, 15, 30]).unwrap_or(0);
        let dup_cap = rng.pick(&[0, 5, 20]).unwrap_or(0);
        for link in self.links.values_mut() {
            let slow = rng.chance(15);
            *link = Link {
                loss_pct: rng.range(0, loss_cap + 1),
                dup_pct: rng.range(0, dup_cap + 1),
                min_delay_ms: rng.range(1, 5),
                max_delay_ms: if slow {
                    rng.range(40, 200)
                } else {
                    rng.range(5, 30)
                },
            };
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
        for link in self.links.values_mut() {
            *link = Link::healthy();
        }
    }

    fn cut_between(&mut self, a: &[u64], b: &[u64]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
    }

    /// Imposes a partition over `ids` (shuffled by the caller); `leader` if known.
    pub fn partition(
        &mut self,
        rng: &mut SimRng,
        kind: Partition,
        ids: &[u64],
        leader: Option<u64>,
    ) {
        self.blocked.clear();
        let n = ids.len();
        match kind {
            Partition::Halves => {
                let k = rng.range(1, n as u64) as usize;
                self.cut_between(&ids[..k], &ids[k..]);
            }
            Partition::IsolateLeader => {
                let victim = leader.unwrap_or(ids[0]);
                let rest: Vec<u64> = ids.iter().copied().filter(|i| *i != victim).collect();
                self.cut_between(&[victim], &rest);
            }
            Partition::MajoritiesRing => {
                // Each node hears only its two ring neighbours.
                for i in 0..n {
                    for j in 0..n {
                        let d = (i + n - j) % n;
                        if i != j && d != 1 && d != n - 1 {
                            self.blocked.insert((ids[i], ids[j]));
                        }
                    }
                }
            }
            Partition::Bridge => {
                // ids[0] bridges two halves that cannot talk to each other.
                let rest = &ids[1..];
                let k = rest.len() / 2;
                self.cut_between(&rest[..k], &rest[k..]);
            }
            Partition::OneWay => {
                let victim = leader.unwrap_or(ids[0]);
                let outgoing = rng.chance(50);
                for &o in ids {
                    if o != victim {
                        if outgoing {
                            self.blocked.insert((victim, o));
                        } else {
                            self.blocked.insert((o, victim));
                        }
                    }
                }
                for _ in 0..rng.range(0, n as u64) {
                    let a = ids[rng.range(0, n as u64) as usize];
                    let b = ids[rng.range(0, n as u64) as usize];
                    if a != b {
                        self.blocked.insert((a, b));
                    }
                }
            }
        }
    }
}
