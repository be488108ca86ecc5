//! The gateway's streaming calls (`/v3/watch`, `/v3/lease/keepalive`), as
//! etcd's grpc-gateway serves them: the request body is a sequence of JSON
//! requests (one is enough; a client may keep the body open and send more),
//! and the response is a stream of `{"result": ...}` objects, one per line.
//! A watch goes on after the request body ends, until the client hangs up.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::Status;

use crate::api::etcd::EtcdApi;
use crate::api::pb::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse, WatchRequest};

/// Responses a gateway watch buffers before its task waits for the client.
const STREAM_BUFFER: usize = 64;

/// The JSON requests in a (possibly still arriving) request body. A body
/// larger than `max_bytes` without a complete request in it, or one that is
/// not JSON, ends the stream with an error.
fn json_requests<T: DeserializeOwned + Send + 'static>(
    body: Body,
    max_bytes: usize,
) -> impl Stream<Item = Result<T, Status>> + Send + Unpin {
    struct Parse {
        chunks: axum::body::BodyDataStream,
        buf: Vec<u8>,
        done: bool,
    }
    let state = Parse {
        chunks: body.into_data_stream(),
        buf: Vec::new(),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        move |mut st| async move {
            loop {
                if st.done {
                    return None;
                }
                // A complete value at the front of the buffer?
                let mut values = serde_json::Deserializer::from_slice(&st.buf).into_iter::<T>();
                match values.next() {
                    Some(Ok(v)) => {
                        let used = values.byte_offset();
                        st.buf.drain(..used);
                        return Some((Ok(v), st));
                    }
                    Some(Err(e)) if !e.is_eof() => {
                        st.done = true;
                        let err = Status::invalid_argument(format!("bad JSON body: {e}"));
                        return Some((Err(err), st));
                    }
                    // Incomplete (or only whitespace): read more.
                    _ => {}
                }
                if st.buf.len() > max_bytes {
                    st.done = true;
                    let err = Status::invalid_argument("etcdserver: request is too large");
                    return Some((Err(err), st));
                }
                match st.chunks.next().await {
                    Some(Ok(chunk)) => st.buf.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "gateway request body failed");
                        return None;
                    }
                    None => {
                        st.done = true;
                        let rest = st.buf.iter().all(u8::is_ascii_whitespace);
                        if !rest {
                            let err = Status::invalid_argument("bad JSON body: incomplete request");
                            return Some((Err(err), st));
                        }
                        return None;
                    }
                }
            }
        },
    ))
}

/// One line of a streamed answer: `{"result": r}` or etcd's error object.
fn line<T: Serialize>(r: Result<T, Status>) -> Bytes {
    let v = match r.map(|r| serde_json::to_value(r)) {
        Ok(Ok(v)) => serde_json::json!({ "result": v }),
        Ok(Err(e)) => error_value(&Status::internal(e.to_string())),
        Err(s) => error_value(&s),
    };
    let mut out = v.to_string().into_bytes();
    out.push(b'\n');
    Bytes::from(out)
}

fn error_value(s: &Status) -> serde_json::Value {
    serde_json::json!({
        "error": {
            "grpc_code": s.code() as i32,
            "http_code": super::http_status(s.code()).as_u16(),
            "message": s.message(),
            "http_status": super::http_status(s.code()).canonical_reason().unwrap_or(""),
        }
    })
}

fn streamed(lines: impl Stream<Item = Bytes> + Send + 'static) -> Response {
    let body = Body::from_stream(lines.map(Ok::<_, std::convert::Infallible>));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `POST /v3/watch`.
pub async fn watch(State(api): State<Arc<EtcdApi>>, caller: super::Caller, body: Body) -> Response {
    let caller = match caller.resolve(&api) {
        Ok(c) => c,
        Err(s) => return super::error(&s),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
    let stream = crate::api::grpc::watch::watch_stream(&api, caller, tx);
    let requests = json_requests::<WatchRequest>(body, api.max_request_bytes);
    tokio::spawn(stream.run(requests));
    streamed(tokio_stream::wrappers::ReceiverStream::new(rx).map(line))
}

/// `POST /v3/lease/keepalive`: one answer per request in the body.
pub async fn lease_keep_alive(
    State(api): State<Arc<EtcdApi>>,
    caller: super::Caller,
    body: Body,
) -> Response {
    if let Err(s) = caller
        .resolve(&api)
        .and_then(|c| api.check_user(c.as_ref()))
    {
        return super::error(&s);
    }
    let requests = json_requests::<LeaseKeepAliveRequest>(body, api.max_request_bytes);
    let answers = requests.then(move |req| {
        let api = api.clone();
        async move {
            let id = req?.id;
            let ttl = api.keep_alive(id).await?;
            Ok::<_, Status>(LeaseKeepAliveResponse {
                header: api.header(None),
                id,
                ttl,
            })
        }
    });
    streamed(answers.map(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(chunks: Vec<&'static str>) -> Vec<Result<WatchRequest, Status>> {
        let stream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c.as_bytes()))),
        );
        json_requests::<WatchRequest>(Body::from_stream(stream), 1 << 10)
            .collect()
            .await
    }

    #[tokio::test]
    async fn requests_split_across_chunks_and_several_per_chunk() {
        let got = parse(vec![
            r#"{"create_request":{"key":"#,
            r#""Zm9v"}} {"progress_request":{}}"#,
            "\n",
        ])
        .await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn garbage_and_truncated_bodies_are_errors() {
        let bad = parse(vec!["{nope"]).await;
        assert_eq!(bad.len(), 1);
        assert!(bad[0].is_err());
        let cut = parse(vec![r#"{"create_request":"#]).await;
        assert_eq!(cut.len(), 1);
        assert!(cut[0].is_err());
        assert!(parse(vec!["  \n"]).await.is_empty());
    }
}
