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
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// Key.
        key: String,
    },
    /// Compare-and-swap: if the value of `key` equals `expected` (`None` =
    /// absent), set it to `value` (`None` = delete it).
    Cas {
        /// Key.
        key: String,
        /// The value the key must hold now; `None` means "must be absent".
        expected: Option<Vec<u8>>,
        /// The new value; `None` deletes the key.
        value: Option<Vec<u8>>,
    },
}

/// What applying one command did; handed to the client that proposed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A put took effect.
    Put,
    /// A delete ran; `deleted` says whether the key existed.
    Delete {
        /// Whether the key existed.
        deleted: bool,
    },
    /// A compare-and-swap ran.
    Cas {
        /// Whether the comparison held (and the swap happened).
        succeeded: bool,
        /// The value after the operation.
        current: Option<Vec<u8>>,
    },
    /// The entry held no command (no-op, membership change, undecodable data).
    Nothing,
}

impl Command {
    /// Encodes the command for a proposal.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("encoding into a Vec cannot fail")
    }
}

/// Upper bound of one key/value record in a snapshot (keys and values are
/// bounded far below this by the API).
const MAX_SNAPSHOT_RECORD_BYTES: usize = 64 << 20;

fn write_section<W: std::io::Write + ?Sized, T: serde::Serialize>(
    out: &mut W,
    count: usize,
    records: impl Iterator<Item = T>,
) -> std::io::Result<()> {
    out.write_all(&(count as u64).to_le_bytes())?;
    for r in records {
        let rec = postcard::to_stdvec(&r).map_err(|e| std::io::Error::other(e.to_string()))?;
        out.write_all(&(rec.len() as u32).to_le_bytes())?;
        out.write_all(&rec)?;
    }
    Ok(())
}

fn read_section<T: serde::de::DeserializeOwned, R: std::io::Read + ?Sized>(
    input: &mut R,
) -> std::io::Result<Vec<T>> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let mut n = [0u8; 8];
    input.read_exact(&mut n)?;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for _ in 0..u64::from_le_bytes(n) {
        let mut len = [0u8; 4];
        input.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_SNAPSHOT_RECORD_BYTES {
            return Err(bad("snapshot record too large"));
        }
        buf.resize(len, 0);
        input.read_exact(&mut buf)?;
        out.push(postcard::from_bytes(&buf).map_err(|_| bad("undecodable snapshot record"))?);
    }
    Ok(out)
}

/// A key-value map built by applying committed commands in log order.
#[derive(Debug, Default, Clone)]
pub struct KvStore {
    map: BTreeMap<String, Vec<u8>>,
    /// What the proposer of each applied membership change attached about the
    /// member it added (its addresses), by node id. Replicated state: it
    /// travels in snapshots, so a restarted or new node still knows where
    /// members added at run time live after their log entries are compacted.
    members: BTreeMap<u64, Vec<u8>>,
    applied_index: u64,
    /// Wrapping sum of [`pair_hash`] over every pair, kept up to date.
    digest: u32,
}

/// CRC32 of one key/value pair, length-delimited.
fn pair_hash(k: &str, v: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&(k.len() as u64).to_le_bytes());
    h.update(k.as_bytes());
    h.update(&(v.len() as u64).to_le_bytes());
    h.update(v);
    h.finalize()
}

impl KvStore {
    /// Applies the data of the committed entry at `index`. Data that does not
    /// decode as a command is skipped (and logged): it was proposed by someone
    /// else's client, and must not stop the node.
    pub fn apply(&mut self, index: u64, data: &[u8]) -> Applied {
        debug_assert!(index > self.applied_index, "entries apply in order");
        self.applied_index = index;
        match postcard::from_bytes::<Command>(data) {
            Ok(Command::Put { key, value }) => {
                self.set(key, Some(value));
                Applied::Put
            }
            Ok(Command::Delete { key }) => Applied::Delete {
                deleted: self.set(key, None),
            },
            Ok(Command::Cas {
                key,
                expected,
                value,
            }) => {
                let current = self.map.get(&key);
                if current.map(Vec::as_slice) != expected.as_deref() {
                    return Applied::Cas {
                        succeeded: false,
                        current: current.cloned(),
                    };
                }
                self.set(key, value.clone());
                Applied::Cas {
                    succeeded: true,
                    current: value,
                }
            }
            Err(e) => {
                tracing::warn!(index, error = %e, "skipping undecodable entry");
                Applied::Nothing
            }
        }
    }

    /// Sets (`Some`) or removes (`None`) `key`, keeping the digest current;
    /// returns whether the key existed before.
    fn set(&mut self, key: String, value: Option<Vec<u8>>) -> bool {
        if let Some(v) = &value {
            self.digest = self.digest.wrapping_add(pair_hash(&key, v));
        }
        let old = match value {
            Some(v) => self.map.insert(key.clone(), v),
            None => self.map.remove(&key),
        };
        if let Some(old) = &old {
            self.digest = self.digest.wrapping_sub(pair_hash(&key, old));
        }
        old.is_some()
    }

    /// Records (`Some`) or forgets (`None`) what is known about member `id`.
    pub fn set_member(&mut self, id: u64, context: Option<Vec<u8>>) {
        match context {
            Some(c) => self.members.insert(id, c),
            None => self.members.remove(&id),
        };
    }

    /// Every recorded member context, by id.
    pub fn members(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.members.iter().map(|(&id, c)| (id, c.as_slice()))
    }

    /// Writes the members and every key and value (postcard-framed records,
    /// each section prefixed by its count) to `out`, for a snapshot.
    pub fn write_snapshot<W: std::io::Write + ?Sized>(&self, out: &mut W) -> std::io::Result<()> {
        let members = self
            .members
            .iter()
            .map(|(id, c)| (*id, serde_bytes::Bytes::new(c)));
        write_section(out, self.members.len(), members)?;
        let pairs = self
            .map
            .iter()
            .map(|(k, v)| (k.as_str(), serde_bytes::Bytes::new(v)));
        write_section(out, self.map.len(), pairs)
    }

    /// Replaces the state with one read from `input` (written by
    /// [`KvStore::write_snapshot`]) and sets the applied index to `index`.
    /// On error the store is unchanged.
    pub fn restore_snapshot<R: std::io::Read + ?Sized>(
        &mut self,
        index: u64,
        input: &mut R,
    ) -> std::io::Result<()> {
        let members: BTreeMap<u64, Vec<u8>> =
            read_section::<(u64, serde_bytes::ByteBuf), _>(input)?
                .into_iter()
                .map(|(id, c)| (id, c.into_vec()))
                .collect();
        let map: BTreeMap<String, Vec<u8>> =
            read_section::<(String, serde_bytes::ByteBuf), _>(input)?
                .into_iter()
                .map(|(k, v)| (k, v.into_vec()))
                .collect();
        self.members = members;
        self.digest = map
            .iter()
            .fold(0u32, |d, (k, v)| d.wrapping_add(pair_hash(k, v)));
        self.map = map;
        self.applied_index = index;
        Ok(())
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

    /// Order-independent digest of every key and value: equal on two nodes
    /// iff (with overwhelming probability) their maps are equal. Kept up to
    /// date on every change, so reading it is free.
    pub fn digest(&self) -> u32 {
        self.digest
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

    #[test]
    fn cas_compares_absent_and_present_values() {
        let mut kv = KvStore::default();
        let cas = |e: Option<&str>, v: Option<&str>| {
            Command::Cas {
                key: "k".into(),
                expected: e.map(|s| s.as_bytes().to_vec()),
                value: v.map(|s| s.as_bytes().to_vec()),
            }
            .encode()
        };
        let ok = |v: Option<&str>| Applied::Cas {
            succeeded: true,
            current: v.map(|s| s.as_bytes().to_vec()),
        };
        assert_eq!(kv.apply(1, &cas(None, Some("a"))), ok(Some("a")));
        assert_eq!(
            kv.apply(2, &cas(None, Some("b"))),
            Applied::Cas {
                succeeded: false,
                current: Some(b"a".to_vec())
            }
        );
        assert_eq!(kv.apply(3, &cas(Some("a"), None)), ok(None));
        assert_eq!(kv.get("k"), None);
        assert_eq!(
            kv.apply(4, &Command::Delete { key: "k".into() }.encode()),
            Applied::Delete { deleted: false }
        );
    }

    #[test]
    fn snapshot_round_trip_and_damage_leaves_store_unchanged() {
        let mut kv = KvStore::default();
        for i in 0..100u64 {
            let cmd = Command::Put {
                key: format!("k{i}"),
                value: vec![i as u8; i as usize],
            };
            kv.apply(i + 1, &cmd.encode());
        }
        let mut bytes = Vec::new();
        kv.write_snapshot(&mut bytes).unwrap();
        let mut restored = KvStore::default();
        restored
            .restore_snapshot(100, &mut bytes.as_slice())
            .unwrap();
        assert_eq!(restored.digest(), kv.digest());
        assert_eq!(restored.applied_index(), 100);
        let before = restored.digest();
        let cut = &bytes[..bytes.len() - 3];
        assert!(restored.restore_snapshot(200, &mut &cut[..]).is_err());
        assert_eq!((restored.digest(), restored.applied_index()), (before, 100));
    }
}
