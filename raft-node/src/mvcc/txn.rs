//! Transactions: compares, etcd's checks on their operations, and running
//! a branch atomically at one revision.

use std::collections::HashSet;

use super::range::KeyRange;
use super::writer::Writer;
use super::{MvccError, Store};
use crate::api::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::api::pb::etcdserverpb::request_op::Request as Op;
use crate::api::pb::etcdserverpb::response_op::Response as OpResponse;
use crate::api::pb::etcdserverpb::{Compare, RequestOp, ResponseOp, TxnRequest, TxnResponse};

/// etcd's default limit on the operations of one branch (and compares).
pub const MAX_TXN_OPS: usize = 128;

/// etcd's checks on a transaction before it is proposed: at most
/// [`MAX_TXN_OPS`] compares and operations per branch, non-empty keys, and no
/// key written twice on one path through the transaction (a put twice, or a
/// put inside a deleted range).
pub fn check_txn(txn: &TxnRequest) -> Result<(), MvccError> {
    if txn.compare.len() > MAX_TXN_OPS
        || txn.success.len() > MAX_TXN_OPS
        || txn.failure.len() > MAX_TXN_OPS
    {
        return Err(MvccError::TooManyOps);
    }
    if txn.compare.iter().any(|c| c.key.is_empty()) {
        return Err(MvccError::EmptyKey);
    }
    for branch in [&txn.success, &txn.failure] {
        let (dels, puts) = branch_writes(branch)?;
        if puts
            .iter()
            .any(|p| dels.iter().any(|d| d.contains(p.as_slice())))
        {
            return Err(MvccError::DuplicateKey);
        }
    }
    Ok(())
}

type Writes = (Vec<KeyRange>, HashSet<Vec<u8>>);

/// The deleted ranges and put keys of one branch, nested transactions included.
fn branch_writes(ops: &[RequestOp]) -> Result<Writes, MvccError> {
    let mut dels = Vec::new();
    let mut puts = HashSet::new();
    for op in ops {
        match &op.request {
            Some(Op::RequestPut(p)) => {
                if p.key.is_empty() {
                    return Err(MvccError::EmptyKey);
                }
                if !puts.insert(p.key.clone()) {
                    return Err(MvccError::DuplicateKey);
                }
            }
            Some(Op::RequestDeleteRange(d)) => {
                if d.key.is_empty() {
                    return Err(MvccError::EmptyKey);
                }
                dels.push(KeyRange::new(&d.key, &d.range_end));
            }
            Some(Op::RequestRange(r)) => {
                if r.key.is_empty() {
                    return Err(MvccError::EmptyKey);
                }
            }
            Some(Op::RequestTxn(t)) => {
                check_txn(t)?;
                for branch in [&t.success, &t.failure] {
                    let (d, p) = branch_writes(branch)?;
                    if p.iter().any(|k| puts.contains(k)) {
                        return Err(MvccError::DuplicateKey);
                    }
                    dels.extend(d);
                    puts.extend(p);
                }
            }
            None => return Err(MvccError::Malformed("empty operation in txn".into())),
        }
    }
    Ok((dels, puts))
}

impl Store {
    /// Whether every compare holds at revision `rev`.
    pub(super) fn compares_hold(&self, compares: &[Compare], rev: i64) -> bool {
        compares.iter().all(|c| self.compare_holds(c, rev))
    }

    fn compare_holds(&self, c: &Compare, rev: i64) -> bool {
        let range = KeyRange::new(&c.key, &c.range_end);
        let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
        let mut any = false;
        for (_, v) in self.live_at(&range, rev) {
            any = true;
            if !compare_version(c, target, Some(v)) {
                return false;
            }
        }
        // A missing key compares as zero everywhere, and fails any value compare.
        any || (target != CompareTarget::Value && compare_version(c, target, None))
    }
}

fn compare_version(
    c: &Compare,
    target: CompareTarget,
    v: Option<&super::key_history::Version>,
) -> bool {
    use std::cmp::Ordering;
    let field = |f: fn(&super::key_history::Version) -> i64| v.map_or(0, f);
    let ord: Ordering = match target {
        CompareTarget::Value => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(b)) => b,
                _ => &[],
            };
            let have = v.and_then(|v| v.value.as_deref()).unwrap_or(&[]);
            have.cmp(want)
        }
        t => {
            let want = match (&c.target_union, t) {
                (Some(TargetUnion::Version(x)), CompareTarget::Version)
                | (Some(TargetUnion::CreateRevision(x)), CompareTarget::Create)
                | (Some(TargetUnion::ModRevision(x)), CompareTarget::Mod)
                | (Some(TargetUnion::Lease(x)), CompareTarget::Lease) => *x,
                _ => 0,
            };
            let have = match t {
                CompareTarget::Version => field(|v| v.version),
                CompareTarget::Create => field(|v| v.create_rev),
                CompareTarget::Mod => field(|v| v.mod_rev),
                _ => field(|v| v.lease),
            };
            have.cmp(&want)
        }
    };
    match CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

impl Writer<'_> {
    /// Runs a transaction: compares at the revision the transaction sees,
    /// then the chosen branch in order. Errors leave partial writes behind;
    /// the caller rolls the whole request back.
    pub(super) fn txn(&mut self, txn: &TxnRequest) -> Result<TxnResponse, MvccError> {
        let succeeded = self.store.compares_hold(&txn.compare, self.read_revision());
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            let response = match &op.request {
                Some(Op::RequestRange(r)) => {
                    let mut resp = self.store.range_at(r, self.read_revision())?;
                    resp.header = Some(self.header());
                    OpResponse::ResponseRange(resp)
                }
                Some(Op::RequestPut(p)) => {
                    let mut resp = self.put(p)?;
                    resp.header = Some(self.header());
                    OpResponse::ResponsePut(resp)
                }
                Some(Op::RequestDeleteRange(d)) => {
                    let mut resp = self.delete_range(d)?;
                    resp.header = Some(self.header());
                    OpResponse::ResponseDeleteRange(resp)
                }
                Some(Op::RequestTxn(t)) => {
                    let mut resp = self.txn(t)?;
                    resp.header = Some(self.header());
                    OpResponse::ResponseTxn(resp)
                }
                None => return Err(MvccError::Malformed("empty operation in txn".into())),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }
}
