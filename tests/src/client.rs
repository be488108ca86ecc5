//! HTTP clients of the node's API: one request with manual 307 following and
//! an exact classification of what the answer says about the outcome, and
//! the recording key-value client of the fault suite.
//!
//! Outcome rules (see the node's `http/error.rs`):
//!
//! - 200 (and 404 for a read): the operation took effect, with that result.
//! - 503 `no_leader` / `not_leader` / `busy` / `not_applied`, 400, 413, or a
//!   connection that could not be established (nothing was sent): the
//!   operation **definitely did not** take effect. The checker has no way to
//!   record "failed", so such operations are dropped from the history (a
//!   definite failure has no effect on the register).
//! - 504 (`timeout`, `stopped`), any other status, a timeout, or a connection
//!   lost after the request may have been sent: **unknown** outcome
//!   (`complete_unknown`).
//!
//! A write may carry a request id (`Request-Id: CLIENT/SEQ`): the node then
//! applies it at most once however often it is sent. [`Recording::run_once`]
//! retries such a write whose outcome is unknown, through other nodes, with
//! the same id, and records all its attempts as **one** operation: invoked
//! when the first attempt was, completed by the first definite answer (the
//! node answers a retry with the first result). It failed definitely only if
//! every attempt did; otherwise, without a definite answer, it is unknown.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::cluster::ClientTls;
use crate::linearizability::{History, HistoryRecorder, Input, OpId, Output, Value};

/// `GET /v1/status` of a node.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node id.
    pub id: u64,
    /// `leader`, `follower`, `candidate`, `pre_candidate` or `starting`.
    pub role: String,
    /// Current term.
    pub term: u64,
    /// Known leader.
    pub leader: Option<u64>,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Last log index.
    pub last_index: u64,
    /// Latest snapshot's index.
    pub snapshot_index: u64,
    /// Voters.
    pub voters: Vec<u64>,
    /// Outgoing voters (joint consensus).
    pub voters_outgoing: Vec<u64>,
    /// Learners.
    pub learners: Vec<u64>,
    /// Keys in the state machine.
    pub keys: u64,
    /// State machine digest.
    pub digest: u64,
    /// Set when the node stopped on an error.
    pub failed: Option<String>,
}

/// What one request (with redirects followed) came back with.
#[derive(Debug, Clone)]
pub enum Answer {
    /// An HTTP answer other than a redirect.
    Http {
        /// Status code.
        status: StatusCode,
        /// Body.
        body: Vec<u8>,
    },
    /// Nothing was sent: the connection could not be established.
    NotSent(String),
    /// The request may have been sent and no answer came (timeout, reset).
    Lost(String),
}

impl Answer {
    /// The `code` field of a JSON error body.
    pub fn code(&self) -> Option<String> {
        match self {
            Answer::Http { body, .. } => serde_json::from_slice::<serde_json::Value>(body)
                .ok()?
                .get("code")?
                .as_str()
                .map(str::to_owned),
            _ => None,
        }
    }

    /// Whether the answer says the operation definitely did not take effect.
    pub fn definitely_failed(&self) -> bool {
        match self {
            Answer::NotSent(_) => true,
            Answer::Lost(_) => false,
            Answer::Http { status, .. } => match status.as_u16() {
                400 | 413 => true,
                503 => matches!(
                    self.code().as_deref(),
                    Some("no_leader" | "not_leader" | "busy" | "not_applied")
                ),
                _ => false,
            },
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            Answer::Http { status, body } => {
                format!("{status} {}", String::from_utf8_lossy(body))
            }
            Answer::NotSent(e) => format!("not sent: {e}"),
            Answer::Lost(e) => format!("lost: {e}"),
        }
    }
}

/// An HTTP client for the node API.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    timeout: Duration,
}

impl Api {
    /// A plain-HTTP client whose requests (each hop) time out after
    /// `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self::with_tls(timeout, None)
    }

    /// Like [`Api::new`]; with `tls`, the client speaks HTTPS only (a plain
    /// `http://` URL, e.g. in a redirect, is an error rather than a silent
    /// downgrade), trusts only the cluster CA and presents the client
    /// certificate.
    pub fn with_tls(timeout: Duration, tls: Option<&ClientTls>) -> Self {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(500))
            .pool_max_idle_per_host(4);
        if let Some(tls) = tls {
            builder = builder
                .use_rustls_tls()
                .https_only(true)
                .tls_built_in_root_certs(false)
                .add_root_certificate(tls.reqwest_root().expect("the cluster CA"))
                .identity(tls.reqwest_identity().expect("the client certificate"));
        }
        let http = builder.build().expect("building a reqwest client");
        Api { http, timeout }
    }

    /// Sends `method url` with `body`, following up to 4 redirects (307 with
    /// `Location`) itself.
    pub async fn request(&self, method: Method, url: &str, body: Option<Vec<u8>>) -> Answer {
        self.request_with_id(method, url, body, None).await
    }

    /// [`Api::request`] with a `Request-Id` header if `id` is given.
    pub async fn request_with_id(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        id: Option<&str>,
    ) -> Answer {
        let mut url = url.to_string();
        for _ in 0..5 {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(self.timeout);
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            if let Some(id) = id {
                req = req.header("request-id", id);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() => return Answer::NotSent(e.to_string()),
                Err(e) => return Answer::Lost(e.to_string()),
            };
            let status = resp.status();
            if status == StatusCode::TEMPORARY_REDIRECT {
                let loc = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match loc {
                    Some(l) => {
                        url = l;
                        continue;
                    }
                    None => {
                        return Answer::Http {
                            status,
                            body: Vec::new(),
                        }
                    }
                }
            }
            return match resp.bytes().await {
                Ok(b) => Answer::Http {
                    status,
                    body: b.to_vec(),
                },
                Err(e) => Answer::Lost(e.to_string()),
            };
        }
        // A redirect loop: the last hop answered a redirect, which applies nothing.
        Answer::NotSent("too many redirects".into())
    }

    /// `GET /v1/status` of the node at `base` (`http://addr` or `https://addr`).
    pub async fn status(&self, base: &str) -> Option<NodeStatus> {
        let resp = self
            .http
            .get(format!("{base}/v1/status"))
            .timeout(self.timeout)
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }
}

/// A key-value operation with its recorded result; see the module doc for
/// how answers map to outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Took effect with a recorded output.
    Ok,
    /// Definitely did not take effect (dropped from the history).
    Failed,
    /// Unknown.
    Unknown,
}

/// Counts of outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Completed with a result.
    pub ok: u64,
    /// Definitely failed.
    pub failed: u64,
    /// Unknown outcome.
    pub unknown: u64,
}

/// A shared recorder plus the set of operations that definitely failed.
#[derive(Debug, Default)]
pub struct Recording {
    recorder: HistoryRecorder,
    failed: Mutex<HashSet<OpId>>,
    keys: Mutex<BTreeSet<String>>,
    counts: Mutex<Counts>,
}

impl Recording {
    /// An empty recording whose clock starts now.
    pub fn new() -> Self {
        Self::default()
    }

    /// The history to check: every operation except definite failures.
    pub fn history(&self) -> History {
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let mut h = self.recorder.history();
        h.ops.retain(|op| !failed.contains(&op.id));
        h
    }

    /// Every key an operation was invoked on.
    pub fn keys(&self) -> Vec<String> {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Outcome counts so far.
    pub fn counts(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn count(&self, o: Outcome) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match o {
            Outcome::Ok => c.ok += 1,
            Outcome::Failed => c.failed += 1,
            Outcome::Unknown => c.unknown += 1,
        }
    }

    /// Runs `input` on `key` against the node at `base` as logical client
    /// `client`, recording it. Returns the outcome and the output if any.
    pub async fn run(
        &self,
        api: &Api,
        base: &str,
        client: u64,
        key: &str,
        input: Input,
    ) -> (Outcome, Option<Output>, Answer) {
        let (method, url, body) = http_request(base, key, &input);
        let id = self.begin(client, key, &input);
        let answer = api.request(method, &url, body).await;
        let output = parse_output(&input, &answer);
        let outcome = self.finish(id, output.clone(), answer.definitely_failed());
        (outcome, output, answer)
    }

    /// Runs the write `input` with request id `request_id` (`CLIENT/SEQ`),
    /// trying `bases` in turn (at most `attempts` tries) while the outcome
    /// is unknown, every try with the same id; records it as one operation
    /// (see the module doc). Returns the outcome, the output if any, and how
    /// many tries it took.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_once(
        &self,
        api: &Api,
        bases: &[&str],
        attempts: usize,
        client: u64,
        key: &str,
        input: Input,
        request_id: &str,
    ) -> (Outcome, Option<Output>, usize) {
        let op = self.begin(client, key, &input);
        let mut tries = Attempts::default();
        for n in 0..attempts.max(1) {
            if n > 0 {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            let Some(base) = bases.get(n % bases.len().max(1)) else {
                break;
            };
            let (method, url, body) = http_request(base, key, &input);
            let answer = api
                .request_with_id(method, &url, body, Some(request_id))
                .await;
            if let Some(out) = tries.answered(&answer, parse_output(&input, &answer)) {
                return (self.finish(op, Some(out.clone()), false), Some(out), n + 1);
            }
            if !tries.worth_retrying(&answer) {
                break;
            }
        }
        (
            self.finish(op, None, tries.all_definitely_failed()),
            None,
            tries.count,
        )
    }

    /// Records the invocation of `input` on `key` by logical client `client`.
    pub(crate) fn begin(&self, client: u64, key: &str, input: &Input) -> OpId {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string());
        self.recorder.invoke(client, key, input.clone())
    }

    /// Records the end of operation `id`: its output if it took effect, else
    /// whether it definitely did not.
    pub(crate) fn finish(
        &self,
        id: OpId,
        output: Option<Output>,
        definitely_failed: bool,
    ) -> Outcome {
        let outcome = match output {
            Some(out) => {
                self.recorder
                    .complete(id, out)
                    .expect("completing a fresh operation");
                Outcome::Ok
            }
            None => {
                self.recorder
                    .complete_unknown(id)
                    .expect("completing a fresh operation");
                if definitely_failed {
                    self.failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id);
                    Outcome::Failed
                } else {
                    Outcome::Unknown
                }
            }
        };
        self.count(outcome);
        outcome
    }
}

/// Pause between the tries of a write with a request id.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The tries of one write with a request id.
#[derive(Debug, Default)]
struct Attempts {
    count: usize,
    definitely_failed: usize,
}

impl Attempts {
    /// Records one try's answer; returns the operation's output if the
    /// answer is definite.
    fn answered(&mut self, answer: &Answer, output: Option<Output>) -> Option<Output> {
        self.count += 1;
        if answer.definitely_failed() {
            self.definitely_failed += 1;
        }
        output
    }

    /// Whether another try (same id) may still learn the outcome: not after
    /// a refusal of the request itself (400, 413: the retry would be refused
    /// alike) nor after the node no longer knows the id's result (409).
    fn worth_retrying(&self, answer: &Answer) -> bool {
        !matches!(answer, Answer::Http { status, .. } if matches!(status.as_u16(), 400 | 409 | 413))
    }

    /// The operation failed definitely only if every try did.
    fn all_definitely_failed(&self) -> bool {
        self.count > 0 && self.definitely_failed == self.count
    }
}

/// The `/v1` request that runs `input` on `key` at the node at `base`.
fn http_request(base: &str, key: &str, input: &Input) -> (Method, String, Option<Vec<u8>>) {
    let url_key = format!("{base}/v1/kv/{key}");
    match input {
        Input::Get => (Method::GET, url_key, None),
        Input::Put { value } => (Method::PUT, url_key, Some(value.0.clone())),
        Input::Delete => (Method::DELETE, url_key, None),
        Input::Cas { expected, new } => {
            let text = |v: &Option<Value>| {
                v.as_ref()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            };
            let body = serde_json::json!({"expected": text(expected), "value": text(new)});
            (
                Method::POST,
                format!("{base}/v1/cas/{key}"),
                Some(body.to_string().into_bytes()),
            )
        }
    }
}

/// The output a successful answer reports, or `None` if it is not a success.
fn parse_output(input: &Input, answer: &Answer) -> Option<Output> {
    let Answer::Http { status, body } = answer else {
        return None;
    };
    let json = || serde_json::from_slice::<serde_json::Value>(body).ok();
    match (input, status.as_u16()) {
        (Input::Get, 200) => Some(Output::Get {
            value: Some(Value(body.clone())),
        }),
        (Input::Get, 404) if answer.code().as_deref() == Some("not_found") => {
            Some(Output::Get { value: None })
        }
        (Input::Put { .. }, 200) => Some(Output::Put),
        (Input::Delete, 200) => Some(Output::Delete {
            deleted: json()?.get("deleted")?.as_bool(),
        }),
        (Input::Cas { .. }, 200) => {
            let j = json()?;
            let succeeded = j.get("succeeded")?.as_bool()?;
            let current = match j.get("current")? {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(Value::from(s.as_str())),
                _ => return None,
            };
            Some(Output::Cas {
                succeeded,
                current: Some(current),
            })
        }
        _ => None,
    }
}

/// Shared client handle type.
pub type SharedRecording = Arc<Recording>;

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, body: &str) -> Answer {
        Answer::Http {
            status: StatusCode::from_u16(status).unwrap(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn definite_failures_are_only_the_documented_answers() {
        for code in ["no_leader", "not_leader", "busy", "not_applied"] {
            let a = http(503, &format!(r#"{{"error":"x","code":"{code}"}}"#));
            assert!(a.definitely_failed(), "{code}");
        }
        assert!(http(400, "{}").definitely_failed());
        assert!(http(413, "{}").definitely_failed());
        assert!(Answer::NotSent("refused".into()).definitely_failed());
        for unknown in [
            http(504, r#"{"code":"timeout"}"#),
            http(504, r#"{"code":"stopped"}"#),
            http(503, r#"{"code":"something_else"}"#),
            http(500, "oops"),
            http(507, r#"{"code":"disk_full"}"#),
            Answer::Lost("timed out".into()),
        ] {
            assert!(!unknown.definitely_failed(), "{unknown:?}");
        }
    }

    #[test]
    fn a_retried_write_failed_only_if_every_try_did() {
        let mut t = Attempts::default();
        let lost = Answer::Lost("timed out".into());
        let refused = http(503, r#"{"code":"not_leader"}"#);
        assert_eq!(t.answered(&refused, None), None);
        assert!(t.all_definitely_failed());
        // An unknown try may have applied it: a later refusal does not undo that.
        assert_eq!(t.answered(&lost, None), None);
        assert!(t.worth_retrying(&lost));
        assert_eq!(t.answered(&refused, None), None);
        assert!(!t.all_definitely_failed());
        assert_eq!(t.count, 3);
        // The node no longer knows the id, or refuses the request: stop.
        assert!(!t.worth_retrying(&http(409, r#"{"code":"request_id_too_old"}"#)));
        assert!(!t.worth_retrying(&http(400, "{}")));
        assert!(t.worth_retrying(&http(504, r#"{"code":"timeout"}"#)));
    }

    #[test]
    fn outputs_are_parsed_exactly() {
        let put = Input::Put { value: "v".into() };
        assert_eq!(
            parse_output(&put, &http(200, r#"{"index":3}"#)),
            Some(Output::Put)
        );
        assert_eq!(parse_output(&put, &http(504, "{}")), None);
        assert_eq!(
            parse_output(&Input::Get, &http(200, "")),
            Some(Output::Get {
                value: Some(Value(Vec::new()))
            }),
            "an empty value is not an absent key"
        );
        assert_eq!(
            parse_output(&Input::Get, &http(404, r#"{"code":"not_found"}"#)),
            Some(Output::Get { value: None })
        );
        assert_eq!(
            parse_output(&Input::Get, &http(404, "no route")),
            None,
            "a 404 without not_found is not a read of an absent key"
        );
        assert_eq!(
            parse_output(&Input::Delete, &http(200, r#"{"index":4,"deleted":false}"#)),
            Some(Output::Delete {
                deleted: Some(false)
            })
        );
        let cas = Input::Cas {
            expected: None,
            new: Some("n".into()),
        };
        assert_eq!(
            parse_output(
                &cas,
                &http(200, r#"{"succeeded":false,"current":"o","index":5}"#)
            ),
            Some(Output::Cas {
                succeeded: false,
                current: Some(Some("o".into()))
            })
        );
        assert_eq!(
            parse_output(
                &cas,
                &http(200, r#"{"succeeded":true,"current":null,"index":5}"#)
            ),
            Some(Output::Cas {
                succeeded: true,
                current: Some(None)
            })
        );
    }
}
