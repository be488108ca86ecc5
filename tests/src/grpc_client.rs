//! The fault suite's workload through etcd's v3 gRPC API, with the real
//! `etcd-client` crate: reads are linearizable `Range`s, writes `Put` and
//! `DeleteRange`, and a compare-and-swap is a `Txn` (compare the value, or
//! version 0 for "absent"; then put or delete and read back; else read).
//!
//! Outcome rules (the node's `api/grpc/status.rs`): etcd's "no leader",
//! "not leader", "too many requests" and "leader changed", and invalid
//! arguments, mean the request was never proposed (definitely failed); a
//! connection that could not be made means nothing was sent. Everything
//! else ("request timed out", "server stopped", a lost connection, a
//! client-side timeout) leaves the outcome unknown.

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, TlsOptions, Txn, TxnOp, TxnOpResponse,
};

use crate::client::{Outcome, Recording};
use crate::linearizability::{Input, Output, Value};

/// One logical client's connections, one per node URL.
#[derive(Default)]
pub struct GrpcClients {
    clients: HashMap<String, Client>,
    tls: Option<TlsOptions>,
}

/// What a failed call says about the outcome.
fn definitely_failed(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            use tonic::Code;
            let msg = s.message();
            match s.code() {
                // A retry whose first result the node no longer keeps: its
                // outcome is unknown (see raft-node's mvcc/dedupe.rs).
                Code::FailedPrecondition if msg.contains("request id too old") => false,
                Code::InvalidArgument
                | Code::OutOfRange
                | Code::NotFound
                | Code::FailedPrecondition => true,
                Code::Unavailable => [
                    "etcdserver: no leader",
                    "etcdserver: not leader",
                    "etcdserver: too many requests",
                    "etcdserver: leader changed",
                ]
                .iter()
                .any(|m| msg.starts_with(m)),
                _ => false,
            }
        }
        // Connecting failed: nothing was sent.
        etcd_client::Error::TransportError(_) | etcd_client::Error::InvalidUri(_) => true,
        _ => false,
    }
}

/// etcd-client's options for a cluster's client ports: connect within
/// `connect_timeout`, calls time out after `timeout`, and with `tls` (the
/// cluster's [`crate::cluster::ClientTls`], for `https://` endpoints) trust
/// the cluster CA and present the client certificate.
pub fn connect_options(
    connect_timeout: Duration,
    timeout: Duration,
    tls: Option<&TlsOptions>,
) -> ConnectOptions {
    let options = ConnectOptions::new()
        .with_connect_timeout(connect_timeout)
        .with_timeout(timeout);
    match tls {
        Some(tls) => options.with_tls(tls.clone()),
        None => options,
    }
}

impl GrpcClients {
    /// No connections yet; with `tls` every connection uses it (the URLs are
    /// then `https://`).
    pub fn new(tls: Option<TlsOptions>) -> Self {
        GrpcClients {
            clients: HashMap::new(),
            tls,
        }
    }

    async fn client(&mut self, url: &str, timeout: Duration) -> Result<Client, etcd_client::Error> {
        if let Some(c) = self.clients.get(url) {
            return Ok(c.clone());
        }
        let options = connect_options(Duration::from_millis(500), timeout, self.tls.as_ref());
        let c = Client::connect([url], Some(options)).await?;
        self.clients.insert(url.to_string(), c.clone());
        Ok(c)
    }

    /// Runs `input` on `key` against the node at `url` as logical client
    /// `client`, recording it in `rec`.
    pub async fn run(
        &mut self,
        rec: &Recording,
        url: &str,
        timeout: Duration,
        client: u64,
        key: &str,
        input: Input,
    ) -> (Outcome, Option<Output>) {
        let id = rec.begin(client, key, &input);
        let result = match self.client(url, timeout).await {
            Ok(mut c) => call(&mut c, key, &input).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(out) => (rec.finish(id, Some(out.clone()), false), Some(out)),
            Err(e) => {
                if !definitely_failed(&e) {
                    // Drop the connection: the next call starts afresh.
                    self.clients.remove(url);
                }
                (rec.finish(id, None, definitely_failed(&e)), None)
            }
        }
    }
}

async fn call(c: &mut Client, key: &str, input: &Input) -> Result<Output, etcd_client::Error> {
    match input {
        Input::Get => {
            let r = c.get(key, None).await?;
            Ok(Output::Get {
                value: r.kvs().first().map(|kv| Value(kv.value().to_vec())),
            })
        }
        Input::Put { value } => {
            c.put(key, value.0.clone(), None).await?;
            Ok(Output::Put)
        }
        Input::Delete => {
            let r = c.delete(key, None).await?;
            Ok(Output::Delete {
                deleted: Some(r.deleted() > 0),
            })
        }
        Input::Cas { expected, new } => {
            let compare = match expected {
                Some(v) => Compare::value(key, CompareOp::Equal, v.0.clone()),
                None => Compare::version(key, CompareOp::Equal, 0),
            };
            let write = match new {
                Some(v) => TxnOp::put(key, v.0.clone(), None),
                None => TxnOp::delete(key, None),
            };
            let txn = Txn::new()
                .when([compare])
                .and_then([write, TxnOp::get(key, None)])
                .or_else([TxnOp::get(key, None)]);
            let r = c.txn(txn).await?;
            let current = match r.op_responses().last() {
                Some(TxnOpResponse::Get(g)) => g.kvs().first().map(|kv| Value(kv.value().to_vec())),
                _ => {
                    return Err(etcd_client::Error::InvalidArgs(
                        "txn answer without its read".into(),
                    ))
                }
            };
            Ok(Output::Cas {
                succeeded: r.succeeded(),
                current: Some(current),
            })
        }
    }
}
