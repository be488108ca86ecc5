//! The client port: one TCP listener serving gRPC (etcd's v3 API), the JSON
//! gateway and the `/v1` API, optionally over TLS, with limits that keep one
//! bad or hostile client from starving the others.
//!
//! Per connection, in its own task (the accept loop never waits on a client):
//! 1. a permit from the connection limit (`max_client_connections`; at the
//!    limit a new connection is closed at once);
//! 2. with TLS, the handshake within `client_handshake_timeout_ms` (a client
//!    speaking plain HTTP gets a `400` saying so); with client-certificate
//!    authentication only certificates from `client_trusted_ca` pass, and
//!    the certificate's common name is the connection's [`ClientIdentity`];
//! 3. [`AuthorityFix`] over the (decrypted) byte stream, then hyper's HTTP/1
//!    or HTTP/2 server with bounded streams, header sizes, header read time
//!    and HTTP/2 keep-alive pings; a connection that sends no request within
//!    `client_header_timeout_ms` is closed;
//! 4. every request passes a per-connection rate limit
//!    (`client_request_rate`; beyond it: HTTP 429, or gRPC
//!    `RESOURCE_EXHAUSTED`) and carries the [`ClientIdentity`] as a request
//!    extension.
//!
//! Refused connections are logged with one line each, at `warn` at most.

mod cert_name;
mod rate;
mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

pub use cert_name::common_name;
pub use rate::TokenBucket;
pub use tls::TlsFiles;

use crate::api::authority::AuthorityFix;

/// Who is at the other end of a client connection, as its TLS client
/// certificate (verified against `client_trusted_ca`) names it. Every request
/// on such a connection carries it as an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate subject's common name: the user, as etcd takes it.
    pub common_name: String,
}

/// The client port's limits (see the config keys of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (`max_client_connections`).
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection (`max_client_streams`).
    pub max_streams: u32,
    /// Largest request header block, bytes (`max_header_bytes`, at least 8192).
    pub max_header_bytes: usize,
    /// Requests per second per connection, in bursts of as many (`client_request_rate`; 0: no limit).
    pub request_rate: u32,
    /// Time for the TLS handshake (`client_handshake_timeout_ms`).
    pub handshake_timeout: Duration,
    /// Time for the first request, and for each HTTP/1 request's headers (`client_header_timeout_ms`).
    pub header_timeout: Duration,
    /// HTTP/2 ping interval; a connection whose ping is not answered within it is closed (`client_keepalive_ms`).
    pub keepalive: Duration,
}

/// A configured client port, ready to serve a listener.
pub struct ClientPort {
    tls: Option<TlsAcceptor>,
    limits: Limits,
}

/// How long [`ClientPort::serve`] waits, once stopped, for open connections
/// to finish their requests.
const DRAIN: Duration = Duration::from_secs(4);
/// At most one "connection limit reached" line per this period.
const LIMIT_LOG_PERIOD: Duration = Duration::from_secs(10);

impl ClientPort {
    /// Loads the TLS files (if any) and checks the limits; errors are one line.
    pub fn new(tls: Option<&TlsFiles>, limits: Limits) -> Result<ClientPort, String> {
        if limits.max_connections == 0 || limits.max_connections > Semaphore::MAX_PERMITS {
            return Err("max_client_connections must be positive".into());
        }
        if limits.max_header_bytes < 8192 {
            return Err("max_header_bytes must be at least 8192".into());
        }
        let tls = match tls {
            Some(files) => Some(TlsAcceptor::from(files.server_config()?)),
            None => None,
        };
        Ok(ClientPort { tls, limits })
    }

    /// Whether connections must speak TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn http(&self) -> auto::Builder<TokioExecutor> {
        let l = &self.limits;
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(l.header_timeout)
            .max_buf_size(l.max_header_bytes);
        b.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(l.max_streams)
            .max_header_list_size(u32::try_from(l.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(l.keepalive)
            .keep_alive_timeout(l.keepalive);
        b
    }

    /// Serves `app` on `listener` until `stop` resolves (or its sender is
    /// dropped), then lets open connections finish for a few seconds.
    pub async fn serve(self, listener: TcpListener, app: Router, mut stop: oneshot::Receiver<()>) {
        let max = self.limits.max_connections;
        let permits = Arc::new(Semaphore::new(max));
        let (close_tx, close_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            http: self.http(),
            tls: self.tls,
            limits: self.limits,
            app,
        });
        let mut limit_log = LimitLog::default();
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little
                        // rather than spin.
                        if limit_log.due(Instant::now()) {
                            tracing::warn!(error = %e, "cannot accept client connections");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                limit_log.refused(peer, max);
                drop(tcp);
                continue;
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            tokio::spawn(connection(
                shared.clone(),
                tcp,
                peer,
                close_rx.clone(),
                permit,
            ));
        }
        drop(listener);
        let _ = close_tx.send(true);
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        if tokio::time::timeout(DRAIN, permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::info!(
                open = max - permits.available_permits(),
                "client connections still open after the drain period; closing them"
            );
        }
    }
}

/// What every connection task needs.
struct Shared {
    http: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    app: Router,
}

/// Rate-limits the log line about refused connections.
#[derive(Default)]
struct LimitLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl LimitLog {
    fn due(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < LIMIT_LOG_PERIOD)
        {
            return false;
        }
        self.last = Some(now);
        true
    }

    fn refused(&mut self, peer: SocketAddr, max: usize) {
        if self.due(Instant::now()) {
            tracing::warn!(
                %peer,
                max_client_connections = max,
                refused_since_last_line = self.suppressed,
                "refused a client connection: too many open"
            );
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;

async fn connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    close: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let Some(acceptor) = &shared.tls else {
        return serve_http(&shared, AuthorityFix::new(tcp), peer, None, close).await;
    };
    let deadline = tokio::time::Instant::now() + shared.limits.handshake_timeout;
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
        Err(_) => {
            tracing::info!(%peer, "refused a client connection: no TLS handshake within client_handshake_timeout_ms");
            return;
        }
        Ok(Ok(0)) | Ok(Err(_)) => return, // closed (a port probe)
        Ok(Ok(_)) if first[0] != TLS_HANDSHAKE => {
            tracing::warn!(%peer, "refused a client connection: plain HTTP on the TLS client port");
            return answer_plain_http(tcp).await;
        }
        Ok(Ok(_)) => {}
    }
    let stream = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Err(_) => {
            tracing::info!(%peer, "refused a client connection: TLS handshake not done within client_handshake_timeout_ms");
            return;
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            // rustls' own verdict: no certificate, unknown CA, expired, ...
            tracing::warn!(%peer, error = %e, "refused a client connection: TLS handshake failed");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "client connection lost during the TLS handshake");
            return;
        }
        Ok(Ok(s)) => s,
    };
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| common_name(cert))
        .map(|common_name| ClientIdentity { common_name });
    tracing::debug!(%peer, user = identity.as_ref().map(|i| i.common_name.as_str()), "client connection: TLS established");
    serve_http(&shared, AuthorityFix::new(stream), peer, identity, close).await;
}

/// Tells a client that spoke plain HTTP to the TLS port what went wrong.
async fn answer_plain_http(mut tcp: TcpStream) {
    const BODY: &str = "Client sent an HTTP request to an HTTPS server.\n";
    let mut buf = [0u8; 4096];
    let brief = Duration::from_secs(1);
    // Read what was sent, so closing does not reset the connection before
    // the answer arrives.
    let _ = tokio::time::timeout(brief, tcp.read(&mut buf)).await;
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(brief, async {
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await?;
        while tcp.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

async fn serve_http<I>(
    shared: &Shared,
    io: I,
    peer: SocketAddr,
    identity: Option<ClientIdentity>,
    mut close: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Arc::new(AtomicBool::new(false));
    let bucket = (shared.limits.request_rate > 0).then(|| {
        Arc::new(Mutex::new(TokenBucket::new(
            shared.limits.request_rate,
            Instant::now(),
        )))
    });
    let app = shared.app.clone();
    let seen = started.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        if let Some(id) = &identity {
            req.extensions_mut().insert(id.clone());
        }
        let allowed = bucket.as_ref().is_none_or(|b| {
            b.lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(Instant::now())
        });
        let app = app.clone();
        async move {
            if !allowed {
                return Ok::<_, Infallible>(too_many_requests(&req));
            }
            app.oneshot(req).await
        }
    });
    let conn = shared
        .http
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let first_request = tokio::time::sleep(shared.limits.header_timeout);
    tokio::pin!(first_request);
    let mut awaiting_first = true;
    let mut closing = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            () = &mut first_request, if awaiting_first => {
                awaiting_first = false;
                if !started.load(Ordering::Relaxed) {
                    tracing::info!(%peer, "closed a client connection that sent no request within client_header_timeout_ms");
                    return;
                }
            }
            _ = close.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The answer to a request beyond the connection's rate: gRPC's
/// `RESOURCE_EXHAUSTED` for gRPC, else HTTP 429.
fn too_many_requests<B>(req: &Request<B>) -> Response<Body> {
    const WHY: &str = "too many requests on this connection (client_request_rate)";
    let grpc = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::resource_exhausted(WHY).into_http::<Body>();
    }
    let body = serde_json::json!({ "error": WHY, "code": "rate_limited" }).to_string();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = hyper::StatusCode::TOO_MANY_REQUESTS;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}
