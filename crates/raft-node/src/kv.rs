//! The replicated key-value state machine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A state-machine command, carried in the data of a normal log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Set `key` to `value`.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// Key.
        key: String,
    },
}

impl Command {
    /// Encodes the command for a proposal.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("encoding into a Vec cannot fail")
    }
}

/// A key-value map built by applying committed commands in log order.
#[derive(Debug, Default, Clone)]
pub struct KvStore {
    map: BTreeMap<String, Vec<u8>>,
    applied_index: u64,
}

impl KvStore {
    /// Applies the data of the committed entry at `index`. Data that does not
    /// decode as a command is skipped (and logged): it was proposed by someone
    /// else's client, and must not stop the node.
    pub fn apply(&mut self, index: u64, data: &[u8]) {
        debug_assert!(index > self.applied_index, "entries apply in order");
        self.applied_index = index;
        match postcard::from_bytes::<Command>(data) {
            Ok(Command::Put { key, value }) => {
                self.map.insert(key, value);
            }
            Ok(Command::Delete { key }) => {
                self.map.remove(&key);
            }
            Err(e) => tracing::warn!(index, error = %e, "skipping undecodable entry"),
        }
    }

    /// Marks `index` applied without a command (no-ops, membership changes).
    pub fn skip(&mut self, index: u64) {
        self.applied_index = self.applied_index.max(index);
    }

    /// Value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if there are no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// CRC32 over every key and value in order: equal on two nodes iff
    /// (with overwhelming probability) their maps are equal.
    pub fn digest(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        for (k, v) in &self.map {
            h.update(&(k.len() as u64).to_le_bytes());
            h.update(k.as_bytes());
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v);
        }
        h.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_puts_and_deletes_and_skips_garbage() {
        let mut kv = KvStore::default();
        let put = |k: &str, v: &str| {
            Command::Put {
                key: k.into(),
                value: v.as_bytes().to_vec(),
            }
            .encode()
        };
        kv.apply(2, &put("a", "1"));
        kv.apply(3, &put("b", "2"));
        kv.apply(4, &[0xff, 0xff, 0xff]);
        kv.apply(5, &Command::Delete { key: "a".into() }.encode());
        assert_eq!(kv.get("a"), None);
        assert_eq!(kv.get("b"), Some(&b"2"[..]));
        assert_eq!(kv.applied_index(), 5);
        let mut other = KvStore::default();
        other.apply(2, &put("b", "2"));
        assert_eq!(kv.digest(), other.digest());
    }
}
