//! `raft-core` alone: committed entries per second in an in-memory 3-node
//! cluster (no I/O, no network). Each iteration proposes a batch of entries
//! on the leader and delivers messages, persisting every Ready to
//! `MemStorage`, until every node has applied the batch.
//!
//! `cargo bench -p raft-benches --bench core`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft_core::{Config, MemStorage, Message, RawNode, Role};

struct Cluster {
    nodes: Vec<RawNode<MemStorage>>,
    applied: Vec<u64>,
    inflight: Vec<Message>,
}

impl Cluster {
    fn new() -> Cluster {
        let nodes = (1..=3)
            .map(|id| RawNode::new(Config::new(id), MemStorage::new_bootstrap([1, 2, 3])).unwrap())
            .collect();
        let mut c = Cluster {
            nodes,
            applied: vec![0; 3],
            inflight: Vec::new(),
        };
        c.nodes[0].campaign();
        c.pump();
        assert_eq!(c.nodes[0].role(), Role::Leader);
        c
    }

    /// Handles every Ready and delivers every message until nothing moves.
    fn pump(&mut self) {
        loop {
            for (i, node) in self.nodes.iter_mut().enumerate() {
                while node.has_ready() {
                    let rd = node.ready().unwrap();
                    self.inflight.extend(rd.messages);
                    if let Some(s) = &rd.snapshot {
                        node.storage_mut().apply_snapshot(s.clone());
                    }
                    node.storage_mut().append(&rd.entries);
                    if let Some(hs) = rd.hard_state {
                        node.storage_mut().set_hard_state(hs);
                    }
                    self.inflight.extend(rd.persisted_messages);
                    if let Some(last) = rd.committed_entries.last() {
                        self.applied[i] = last.index;
                    }
                    node.advance();
                }
            }
            if self.inflight.is_empty() {
                return;
            }
            for m in std::mem::take(&mut self.inflight) {
                let to = (m.to - 1) as usize;
                self.nodes[to].step(m).unwrap();
            }
        }
    }

    /// Proposes `n` entries of `size` bytes and runs until all nodes applied them.
    fn commit_batch(&mut self, n: usize, size: usize) {
        let mut last = 0;
        for _ in 0..n {
            last = self.nodes[0].propose(vec![7u8; size]).unwrap().index;
        }
        while self.applied.iter().any(|&a| a < last) {
            self.pump();
            if self.applied.iter().any(|&a| a < last) {
                // Followers learn the commit index with the next heartbeat.
                self.nodes[0].tick();
            }
        }
    }
}

fn bench_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit_3_nodes_in_memory");
    for &(n, size) in &[(1usize, 256usize), (100, 256), (1000, 256)] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new(format!("batch_{n}"), format!("{size}B")),
            &(n, size),
            |b, &(n, size)| {
                let mut cluster = Cluster::new();
                b.iter(|| cluster.commit_batch(n, size));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_commit);
criterion_main!(benches);
