//! The state-machine commands raft-node puts in log entries.
//!
//! An entry's data is one format byte, [`FORMAT_V1`], followed by a
//! protobuf-encoded `raftnodepb.InternalRequest` (etcd's own request
//! messages). Entries written by raft-node before the MVCC store (a
//! postcard-encoded put/delete/cas, whose first byte is 0, 1 or 2) are still
//! applied, as the equivalent MVCC requests.

use prost::Message as _;
use serde::Deserialize;

use crate::api::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::api::pb::etcdserverpb::request_op::Request as Op;
use crate::api::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::api::pb::raftnodepb::internal_request::Request;
use crate::api::pb::raftnodepb::InternalRequest;

use super::dedupe::Once;

/// First byte of every entry this version of raft-node proposes.
pub const FORMAT_V1: u8 = 0xE7;

/// A state-machine command: one etcd request that changes state.
#[derive(Debug, Clone, PartialEq)]
pub struct Command(pub Request);

impl Command {
    /// Encodes the command for a proposal.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_once(None)
    }

    /// Encodes the command for a proposal, with the client's request id and
    /// the proposer's clock if it has one (see [`super::dedupe`]).
    pub fn encode_once(&self, once: Option<Once>) -> Vec<u8> {
        let msg = InternalRequest {
            request: Some(self.0.clone()),
            request_id: once.map(|o| o.id.into()),
            proposed_at_ms: once.map_or(0, |o| o.proposed_at_ms),
        };
        let mut out = Vec::with_capacity(1 + msg.encoded_len());
        out.push(FORMAT_V1);
        msg.encode(&mut out)
            .expect("encoding into a Vec has room for everything");
        out
    }

    /// Bytes [`Command::encode`] produces, computed without encoding.
    pub fn encoded_len(&self) -> usize {
        1 + self.0.encoded_len()
    }

    /// Decodes an entry's data.
    pub fn decode(data: &[u8]) -> Result<Command, String> {
        Command::decode_once(data).map(|(c, _)| c)
    }

    /// Decodes an entry's data with its request id, if it carries one.
    pub fn decode_once(data: &[u8]) -> Result<(Command, Option<Once>), String> {
        match data.first() {
            Some(&FORMAT_V1) => {
                let msg = InternalRequest::decode(&data[1..]).map_err(|e| e.to_string())?;
                let once = msg.request_id.map(|id| Once {
                    id: id.into(),
                    proposed_at_ms: msg.proposed_at_ms,
                });
                let cmd = msg
                    .request
                    .map(Command)
                    .ok_or_else(|| "entry holds no request".to_string())?;
                Ok((cmd, once))
            }
            Some(_) => postcard::from_bytes::<Legacy>(data)
                .map(|l| (l.into_command(), None))
                .map_err(|e| format!("neither a current nor a legacy command: {e}")),
            None => Err("empty entry".into()),
        }
    }

    /// A put of `value` at `key`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Command {
        Command(Request::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }))
    }

    /// A delete of `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Command {
        Command(Request::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        }))
    }

    /// Compare-and-swap as the `/v1` API defines it: if `key` holds
    /// `expected` (`None`: is absent), set it to `value` (`None`: delete);
    /// either way the response carries the key's value afterwards.
    pub fn cas(key: Vec<u8>, expected: Option<Vec<u8>>, value: Option<Vec<u8>>) -> Command {
        let compare = match expected {
            Some(v) => Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Value as i32,
                key: key.clone(),
                target_union: Some(TargetUnion::Value(v)),
                range_end: Vec::new(),
            },
            None => Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Version as i32,
                key: key.clone(),
                target_union: Some(TargetUnion::Version(0)),
                range_end: Vec::new(),
            },
        };
        let write = match value {
            Some(v) => Op::RequestPut(PutRequest {
                key: key.clone(),
                value: v,
                ..Default::default()
            }),
            None => Op::RequestDeleteRange(DeleteRangeRequest {
                key: key.clone(),
                ..Default::default()
            }),
        };
        let read = Op::RequestRange(RangeRequest {
            key,
            ..Default::default()
        });
        Command(Request::Txn(TxnRequest {
            compare: vec![compare],
            success: vec![
                RequestOp {
                    request: Some(write),
                },
                RequestOp {
                    request: Some(read.clone()),
                },
            ],
            failure: vec![RequestOp {
                request: Some(read),
            }],
        }))
    }
}

/// The command format before the MVCC store (postcard), for old log entries.
#[derive(Deserialize)]
enum Legacy {
    Put {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    Cas {
        key: String,
        expected: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    },
}

impl Legacy {
    fn into_command(self) -> Command {
        match self {
            Legacy::Put { key, value } => Command::put(key, value),
            Legacy::Delete { key } => Command::delete(key),
            Legacy::Cas {
                key,
                expected,
                value,
            } => Command::cas(key.into_bytes(), expected, value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_legacy_entries() {
        let c = Command::put("k", "v");
        assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        assert_eq!(c.encoded_len(), c.encode().len());
        #[derive(serde::Serialize)]
        enum Old {
            Put {
                key: String,
                #[serde(with = "serde_bytes")]
                value: Vec<u8>,
            },
        }
        let old = postcard::to_stdvec(&Old::Put {
            key: "k".into(),
            value: b"v".to_vec(),
        })
        .unwrap();
        assert_eq!(Command::decode(&old).unwrap(), c);
        assert!(Command::decode(&[]).is_err());
        assert!(Command::decode(&[FORMAT_V1, 0xff, 0xff]).is_err());
        assert!(Command::decode(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn a_request_id_and_its_stamp_round_trip() {
        let c = Command::delete("k");
        let once = Once {
            id: super::super::RequestId { client: 7, seq: 9 },
            proposed_at_ms: 1_700_000_000_000,
        };
        let data = c.encode_once(Some(once));
        assert_eq!(
            Command::decode_once(&data).unwrap(),
            (c.clone(), Some(once))
        );
        assert_eq!(Command::decode(&data).unwrap(), c);
        assert_eq!(Command::decode_once(&c.encode()).unwrap(), (c, None));
    }
}
