//! An append-only event store on `raft_wal::Log`, with no Raft in sight.
//!
//! Events are account deposits and withdrawals. The store keeps a projection
//! (the balance of every account) in memory. Every `CHECKPOINT_EVERY` events
//! it saves the projection and the index it covers in the log's metadata
//! slot, written with the same `fdatasync` as the events, and then compacts
//! the events the checkpoint covers. Reopening restores the checkpoint and
//! replays only the events after it.
//!
//! Run with `cargo run -p raft-wal --example event_store [DIR]`.

use std::collections::BTreeMap;
use std::path::Path;

use raft_wal::{Log, LogOptions};

/// Events between checkpoints.
const CHECKPOINT_EVERY: u64 = 100;

/// One event: `amount` cents into (or, if negative, out of) `account`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub account: String,
    pub amount: i64,
}

impl Event {
    fn encode(&self) -> Vec<u8> {
        format!("{} {}", self.account, self.amount).into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Event> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (account, amount) = text.rsplit_once(' ')?;
        Some(Event {
            account: account.to_string(),
            amount: amount.parse().ok()?,
        })
    }
}

/// The projection and how far into the log it goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Balances {
    /// Every event up to this index is included.
    pub applied: u64,
    pub by_account: BTreeMap<String, i64>,
}

impl Balances {
    fn apply(&mut self, index: u64, e: &Event) {
        *self.by_account.entry(e.account.clone()).or_default() += e.amount;
        self.applied = index;
    }

    /// Checkpoint encoding: `applied` on the first line, then `account amount`.
    fn encode(&self) -> Vec<u8> {
        let mut out = format!("{}\n", self.applied);
        for (a, v) in &self.by_account {
            out.push_str(&format!("{a} {v}\n"));
        }
        out.into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Balances> {
        if bytes.is_empty() {
            return Some(Balances::default());
        }
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        let applied = lines.next()?.parse().ok()?;
        let mut by_account = BTreeMap::new();
        for line in lines {
            let (a, v) = line.rsplit_once(' ')?;
            by_account.insert(a.to_string(), v.parse().ok()?);
        }
        Some(Balances {
            applied,
            by_account,
        })
    }
}

/// Why the store failed.
#[derive(Debug)]
pub enum StoreError {
    Log(raft_wal::Error),
    /// A stored event or checkpoint does not decode.
    Corrupt(String),
}

impl From<raft_wal::Error> for StoreError {
    fn from(e: raft_wal::Error) -> Self {
        StoreError::Log(e)
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Log(e) => write!(f, "{e}"),
            StoreError::Corrupt(what) => write!(f, "corrupt store: {what}"),
        }
    }
}

/// The event store.
pub struct EventStore {
    log: Log,
    balances: Balances,
}

impl EventStore {
    /// Opens the store in `dir`: restores the checkpoint, replays the rest.
    pub fn open(dir: &Path) -> Result<EventStore, StoreError> {
        let log = Log::open(dir, LogOptions::default())?;
        let mut balances = Balances::decode(&log.metadata())
            .ok_or_else(|| StoreError::Corrupt("checkpoint".into()))?;
        for entry in log.iter(balances.applied + 1..)? {
            let entry = entry?;
            let event = Event::decode(entry.data())
                .ok_or_else(|| StoreError::Corrupt(format!("event {}", entry.index())))?;
            balances.apply(entry.index(), &event);
        }
        Ok(EventStore { log, balances })
    }

    /// Records events durably (one `fdatasync` for all of them) and applies
    /// them; checkpoints and compacts when due.
    pub fn record(&mut self, events: &[Event]) -> Result<(), StoreError> {
        let indexes = self.log.append_batch(events.iter().map(Event::encode))?;
        for (index, e) in indexes.clone().zip(events) {
            self.balances.apply(index, e);
        }
        let due = indexes.end > self.checkpointed() + CHECKPOINT_EVERY;
        if due {
            // The checkpoint becomes durable with the events it covers.
            self.log.set_metadata(&self.balances.encode())?;
        }
        self.log.sync()?;
        if due {
            // Durable on return; the checkpoint now stands in for these events.
            self.log.compact_before(self.balances.applied + 1)?;
        }
        Ok(())
    }

    fn checkpointed(&self) -> u64 {
        self.log.first_index() - 1
    }

    /// The current balances.
    pub fn balances(&self) -> &Balances {
        &self.balances
    }

    /// Events still held in the log (after the last checkpoint).
    pub fn events_in_log(&self) -> u64 {
        self.log.last_index() + 1 - self.log.first_index()
    }
}

/// Records `n` events in batches of 7, reopening the store halfway; returns
/// the final balances.
pub fn run(dir: &Path, n: u64) -> Result<Balances, StoreError> {
    let accounts = ["alice", "bob", "carol"];
    let event = |i: u64| Event {
        account: accounts[(i % 3) as usize].to_string(),
        amount: if i.is_multiple_of(4) {
            -(i as i64)
        } else {
            2 * i as i64
        },
    };
    let mut store = EventStore::open(dir)?;
    let start = store.balances().applied + 1;
    let mut i = start;
    while i < start + n {
        let batch: Vec<Event> = (i..(i + 7).min(start + n)).map(event).collect();
        store.record(&batch)?;
        i += batch.len() as u64;
        if i - start >= n / 2 && i - start < n / 2 + 7 {
            drop(store);
            store = EventStore::open(dir)?;
        }
    }
    Ok(store.balances().clone())
}

fn main() {
    let arg = std::env::args().nth(1);
    let tmp;
    let dir = match &arg {
        Some(d) => Path::new(d),
        None => {
            tmp = tempfile::tempdir().expect("temporary directory");
            tmp.path()
        }
    };
    match run(dir, 1_000) {
        Ok(b) => {
            println!("applied through event {}", b.applied);
            for (account, cents) in &b.by_account {
                println!("{account:>8}: {cents}");
            }
        }
        Err(e) => {
            eprintln!("event store failed: {e}");
            std::process::exit(1);
        }
    }
}
