//! The store's snapshot format.
//!
//! `RNMVCC` + format version (2 bytes), then sections, each a count
//! (u64 LE) followed by that many records (u32 LE length + postcard):
//! the store's scalars (one record), the member contexts, and the keys with
//! every retained version. Version 2 adds two sections: the auth state (a
//! count of 1 and one record), then the request-id table's time (u64 LE)
//! and its sessions (count + records, see `dedupe.rs`). A version 1
//! snapshot loads with auth disabled and empty and an empty request-id
//! table. Snapshots of raft-node before the MVCC store
//! (which begin with a member count) are refused with an error naming the
//! format; see the README's restore procedure.

use std::io::{self, Read, Write};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::key_history::{KeyHistory, Version};
use super::{pair_hash, Store};

const MAGIC: &[u8; 6] = b"RNMVCC";
const VERSION: u16 = 2;

/// The first version with the auth and request-id sections.
const VERSION_AUTH_DEDUPE: u16 = 2;

/// Upper bound of one record (keys and values are bounded far below this).
const MAX_RECORD_BYTES: usize = 64 << 20;

#[derive(Serialize, Deserialize)]
struct Scalars {
    revision: i64,
    compact_revision: i64,
    applied_term: u64,
    alarms: Vec<(u64, i32)>,
    /// Every lease: (id, granted TTL). Attached keys follow from the keys'
    /// own lease fields.
    leases: Vec<(i64, i64)>,
}

#[derive(Serialize, Deserialize)]
struct VersionRecord<'a> {
    mod_rev: i64,
    sub: u32,
    create_rev: i64,
    version: i64,
    lease: i64,
    #[serde(borrow, with = "serde_bytes")]
    value: Option<&'a [u8]>,
}

fn write_record<W: Write + ?Sized, T: Serialize>(out: &mut W, r: &T) -> io::Result<()> {
    let rec = postcard::to_stdvec(r).map_err(|e| io::Error::other(e.to_string()))?;
    out.write_all(&(rec.len() as u32).to_le_bytes())?;
    out.write_all(&rec)
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

fn read_count<R: Read + ?Sized>(input: &mut R) -> io::Result<u64> {
    let mut n = [0u8; 8];
    input.read_exact(&mut n)?;
    Ok(u64::from_le_bytes(n))
}

fn read_record<R: Read + ?Sized>(input: &mut R, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_RECORD_BYTES {
        return Err(bad("snapshot record too large"));
    }
    buf.resize(len, 0);
    input.read_exact(buf)
}

fn decode<'a, T: Deserialize<'a>>(buf: &'a [u8]) -> io::Result<T> {
    postcard::from_bytes(buf).map_err(|_| bad("undecodable snapshot record"))
}

/// An etcd API snapshot file (`Maintenance.Snapshot`, `etcdctl snapshot
/// save`) rounds the store's snapshot up to a multiple of 512 bytes with
/// zeros and appends the SHA-256 of everything before it, as etcd's files
/// do (etcdctl refuses a file without it).
const BACKUP_ALIGN: usize = 512;

impl Store {
    /// The store as an etcd API snapshot file.
    pub fn to_backup(&self) -> io::Result<Vec<u8>> {
        use sha2::Digest;
        let mut out = Vec::new();
        self.write_snapshot(&mut out)?;
        out.resize(out.len().next_multiple_of(BACKUP_ALIGN), 0);
        let sum = sha2::Sha256::digest(&out);
        out.extend_from_slice(&sum);
        Ok(out)
    }

    /// Reads an etcd API snapshot file written by [`Store::to_backup`]
    /// (checksum verified), as a store at applied index `index`.
    pub fn from_backup(bytes: &[u8], index: u64) -> io::Result<Store> {
        use sha2::Digest;
        if bytes.len() < 32 || !(bytes.len() - 32).is_multiple_of(BACKUP_ALIGN) {
            return Err(bad("not a raft-node snapshot file (no SHA-256 trailer)"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if sha2::Sha256::digest(body).as_slice() != sum {
            return Err(bad("snapshot file checksum mismatch: the file is damaged"));
        }
        let mut store = Store::default();
        store.restore_snapshot(index, &mut &body[..])?;
        Ok(store)
    }

    /// Writes the whole store (history included) to `out`.
    pub fn write_snapshot<W: Write + ?Sized>(&self, out: &mut W) -> io::Result<()> {
        self.check_keys_readable()
            .map_err(|e| io::Error::new(io::ErrorKind::WouldBlock, e.message()))?;
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&1u64.to_le_bytes())?;
        write_record(
            out,
            &Scalars {
                revision: self.revision,
                compact_revision: self.compact_revision,
                applied_term: self.applied_term,
                alarms: self.alarms.iter().copied().collect(),
                leases: self.leases.iter().map(|(&id, l)| (id, l.ttl)).collect(),
            },
        )?;
        out.write_all(&(self.members.len() as u64).to_le_bytes())?;
        for (id, c) in &self.members {
            write_record(out, &(*id, serde_bytes::Bytes::new(c)))?;
        }
        out.write_all(&(self.keys.len() as u64).to_le_bytes())?;
        for (k, h) in self.keys.iter() {
            let versions: Vec<VersionRecord<'_>> = h
                .versions()
                .iter()
                .map(|v| VersionRecord {
                    mod_rev: v.mod_rev,
                    sub: v.sub,
                    create_rev: v.create_rev,
                    version: v.version,
                    lease: v.lease,
                    value: v.value.as_deref(),
                })
                .collect();
            write_record(out, &(serde_bytes::Bytes::new(k), versions))?;
        }
        out.write_all(&1u64.to_le_bytes())?;
        write_record(out, self.auth.data())?;
        out.write_all(&self.dedupe.now_ms().to_le_bytes())?;
        out.write_all(&(self.dedupe.clients() as u64).to_le_bytes())?;
        for session in self.dedupe.records() {
            write_record(out, &session)?;
        }
        Ok(())
    }

    /// Replaces the store with one read from `input` (written by
    /// [`Store::write_snapshot`]) and sets the applied index to `index`.
    /// On error the store is unchanged.
    pub fn restore_snapshot<R: Read + ?Sized>(
        &mut self,
        index: u64,
        input: &mut R,
    ) -> io::Result<()> {
        let mut head = [0u8; 8];
        input.read_exact(&mut head)?;
        if &head[..6] != MAGIC {
            return Err(bad(
                "snapshot written by raft-node before the MVCC store (etcd v3 API); \
                 this version cannot load it: start the cluster from a snapshot \
                 taken by this version (see the README's restore procedure)",
            ));
        }
        let version = u16::from_le_bytes([head[6], head[7]]);
        if !(1..=VERSION).contains(&version) {
            return Err(bad(format!(
                "snapshot format version {version} is not supported (this raft-node reads 1 to {VERSION})"
            )));
        }
        let mut buf = Vec::new();
        if read_count(input)? != 1 {
            return Err(bad("snapshot must hold one scalars record"));
        }
        read_record(input, &mut buf)?;
        let scalars: Scalars = decode(&buf)?;
        let mut restored = Store {
            recent_from: scalars.revision + 1,
            revision: scalars.revision,
            compact_revision: scalars.compact_revision,
            applied_index: index,
            applied_term: scalars.applied_term,
            alarms: scalars.alarms.into_iter().collect(),
            ..Store::default()
        };
        for (id, ttl) in scalars.leases {
            restored.leases.insert(
                id,
                super::Lease {
                    ttl,
                    keys: imbl::OrdSet::new(),
                },
            );
        }
        for _ in 0..read_count(input)? {
            read_record(input, &mut buf)?;
            let (id, c): (u64, serde_bytes::ByteBuf) = decode(&buf)?;
            restored.members.insert(id, c.into_vec());
        }
        for _ in 0..read_count(input)? {
            read_record(input, &mut buf)?;
            let (key, versions): (&[u8], Vec<VersionRecord<'_>>) = {
                let (k, v): (&serde_bytes::Bytes, Vec<VersionRecord<'_>>) = decode(&buf)?;
                (k.as_ref(), v)
            };
            let key = Bytes::copy_from_slice(key);
            let mut history = Vec::with_capacity(versions.len());
            for v in versions {
                if history
                    .last()
                    .is_some_and(|p: &Version| (p.mod_rev, p.sub) >= (v.mod_rev, v.sub))
                {
                    return Err(bad("snapshot key history out of order"));
                }
                history.push(Version {
                    mod_rev: v.mod_rev,
                    sub: v.sub,
                    create_rev: v.create_rev,
                    version: v.version,
                    lease: v.lease,
                    value: v.value.map(Bytes::copy_from_slice),
                });
            }
            let history = KeyHistory::from_versions(history);
            restored.size += history
                .versions()
                .iter()
                .map(|v| v.footprint(&key))
                .sum::<u64>();
            if let Some(live) = history.latest() {
                if let Some(l) = restored.leases.get_mut(&live.lease) {
                    l.keys.insert(key.clone());
                }
                restored.live_keys += 1;
                let value = live.value.as_deref().unwrap_or_default();
                restored.digest = restored.digest.wrapping_add(pair_hash(&key, value));
            }
            restored.keys.insert(key, history);
        }
        if version >= VERSION_AUTH_DEDUPE {
            if read_count(input)? != 1 {
                return Err(bad("snapshot must hold one auth record"));
            }
            read_record(input, &mut buf)?;
            let auth: crate::auth::AuthData = decode(&buf)?;
            restored.set_auth(crate::auth::AuthState::from_data(auth));
            restored.dedupe.set_now(read_count(input)?);
            for _ in 0..read_count(input)? {
                read_record(input, &mut buf)?;
                let session: super::dedupe::SessionRecord = decode(&buf)?;
                restored.dedupe.restore(session).map_err(bad)?;
            }
        }
        // A snapshot taken while a compaction was under way holds versions
        // it had not dropped yet. Restoring runs off the driver (or before
        // it starts), so it finishes the compaction at once.
        restored.keys.start_compaction(restored.compact_revision);
        while restored.continue_compaction() {}
        *self = restored;
        Ok(())
    }
}
