//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: a container's output,
//! fetched from the pod's node over MQTT (the [`LogHub`](crate::gateway::logs::LogHub))
//! and served as plain text, streamed (chunked) so `follow=true` keeps
//! going. Errors before the first byte are `Status` objects; a stream that
//! breaks later is cut off (the client sees a truncated body).
//!
//! Query: `container`, `follow`, `tailLines`, `previous` (Kubernetes' names).
//! Bounds: the node must answer within [`FIRST_CHUNK_TIMEOUT`]; a non-follow
//! answer may pause at most that long between chunks; a follow stream ends
//! after [`LOG_FOLLOW_MAX`] (the node ends it too) or when the client goes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use shturman_api::Kind;
use shturman_api::core::Pod;
use shturman_api::status::Status;
use shturman_api::wire::{LOG_FOLLOW_MAX, LogChunk, LogFailure, LogFailureReason, LogRequest};

use super::State;
use super::error::ApiError;
use crate::gateway::logs::{LogStream, LogStreamError};

/// How long a node has to start answering (and, without `follow`, between
/// two chunks).
pub const FIRST_CHUNK_TIMEOUT: Duration = Duration::from_secs(10);

/// The query of a log request, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub container: Option<String>,
    pub follow: bool,
    pub tail_lines: Option<u64>,
    pub previous: bool,
}

fn bool_param(q: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None | Some("" | "false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name}={other:?} is not a boolean (use true or false)"
        ))),
    }
}

impl LogOptions {
    /// Parses Kubernetes' query parameters (a negative `tailLines` means all).
    pub fn from_query(q: &HashMap<String, String>) -> Result<LogOptions, ApiError> {
        let tail_lines = match q.get("tailLines").map(String::as_str) {
            None | Some("") => None,
            Some(s) => match s.parse::<i64>() {
                Ok(n) => u64::try_from(n).ok(),
                Err(_) => {
                    return Err(ApiError::bad_request(format!(
                        "tailLines={s:?} is not a whole number"
                    )));
                }
            },
        };
        Ok(LogOptions {
            container: q.get("container").filter(|c| !c.is_empty()).cloned(),
            follow: bool_param(q, "follow")?,
            tail_lines,
            previous: bool_param(q, "previous")?,
        })
    }
}

/// What to ask which node for `pod` (pure): the node it is bound to and the
/// request, with the container resolved as kubectl does.
pub fn request_for(pod: &Pod, opts: &LogOptions, id: String) -> Result<(String, LogRequest), ApiError> {
    let name = pod.metadata.name();
    let names: Vec<&str> = pod.spec.containers.iter().map(|c| c.name.as_str()).collect();
    let container = match &opts.container {
        Some(c) if names.contains(&c.as_str()) => c.clone(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}; choose one of: [{}]",
                names.join(" ")
            )));
        }
        None => match names.as_slice() {
            [one] => (*one).to_string(),
            [] => return Err(ApiError::bad_request(format!("pod {name} has no containers"))),
            many => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    many.join(" ")
                )));
            }
        },
    };
    let node = pod
        .spec
        .node_name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "pod {name} is not yet scheduled to a node; its logs appear once it runs there"
            ))
        })?;
    Ok((
        node,
        LogRequest {
            id,
            namespace: pod.metadata.namespace().to_string(),
            name: name.to_string(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            container,
            tail_lines: opts.tail_lines,
            previous: opts.previous,
            follow: opts.follow,
        },
    ))
}

fn status(code: u16, reason: &str, message: impl Into<String>) -> ApiError {
    ApiError(Box::new(Status::failure(code, reason, message)))
}

/// A node's refusal as an API error.
pub fn failure_error(f: &LogFailure) -> ApiError {
    match f.reason {
        LogFailureReason::NotFound => status(404, "NotFound", f.message.clone()),
        LogFailureReason::BadRequest => ApiError::bad_request(f.message.clone()),
        LogFailureReason::TooManyRequests => status(429, "TooManyRequests", f.message.clone()),
        LogFailureReason::Internal => ApiError::internal(f.message.clone()),
    }
}

fn stream_error(e: &LogStreamError) -> ApiError {
    match e {
        LogStreamError::TooMany { .. } => status(429, "TooManyRequests", e.to_string()),
        LogStreamError::NoGateway | LogStreamError::Publish { .. } | LogStreamError::Broken { .. } => {
            ApiError::unavailable(e.to_string())
        }
    }
}

fn timeout_error(node: &str) -> ApiError {
    status(
        504,
        "Timeout",
        format!(
            "node {node:?} did not answer the log request within {}s; is it online? \
             (`shturman get node {node}`)",
            FIRST_CHUNK_TIMEOUT.as_secs()
        ),
    )
}

/// Serves one log request.
pub async fn serve(
    state: &Arc<State>,
    namespace: &str,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let opts = LogOptions::from_query(q)?;
    let value = state.get(Kind::Pod, Some(namespace), name).await?;
    let pod: Pod = serde_json::from_value(value)
        .map_err(|e| ApiError::internal(format!("stored pod {namespace}/{name} is unreadable: {e}")))?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (node, req) = request_for(&pod, &opts, id)?;
    let follow = req.follow;
    let mut stream = state.logs.open(&node, req).map_err(|e| stream_error(&e))?;
    let first = match tokio::time::timeout(FIRST_CHUNK_TIMEOUT, stream.next()).await {
        Err(_) => return Err(timeout_error(&node)),
        Ok(None) => return Err(ApiError::internal("the log stream ended before it began")),
        Ok(Some(Err(e))) => return Err(stream_error(&e)),
        Ok(Some(Ok(c))) => c,
    };
    if let Some(f) = &first.error {
        return Err(failure_error(f));
    }
    let body = Body::from_stream(body_stream(stream, first, follow));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response())
}

/// The state of a response body: the stream, a chunk not yet written, and
/// when a follow stream must end.
struct BodyState {
    stream: LogStream,
    first: Option<LogChunk>,
    follow: bool,
    deadline: tokio::time::Instant,
    done: bool,
}

/// The chunks' text as body frames; the stream (and so the request on the
/// node) is dropped with the body when the client goes away.
fn body_stream(
    stream: LogStream,
    first: LogChunk,
    follow: bool,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    let deadline = tokio::time::Instant::now() + LOG_FOLLOW_MAX + Duration::from_secs(60);
    let state = BodyState {
        stream,
        first: Some(first),
        follow,
        deadline,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            let chunk = match s.first.take() {
                Some(c) => c,
                None => {
                    let wait = if s.follow {
                        s.deadline.saturating_duration_since(tokio::time::Instant::now())
                    } else {
                        FIRST_CHUNK_TIMEOUT
                    };
                    match tokio::time::timeout(wait, s.stream.next()).await {
                        Ok(Some(Ok(c))) => c,
                        Ok(None) => return None,
                        Ok(Some(Err(e))) => {
                            s.done = true;
                            return Some((Err(std::io::Error::other(e.to_string())), s));
                        }
                        Err(_) if s.follow => {
                            tracing::info!(
                                node = s.stream.node(),
                                "log follow stream reached its time limit"
                            );
                            return None;
                        }
                        Err(_) => {
                            s.done = true;
                            let e = timeout_error(s.stream.node());
                            return Some((Err(std::io::Error::other(e.to_string())), s));
                        }
                    }
                }
            };
            s.done = chunk.end;
            if let Some(f) = &chunk.error {
                s.done = true;
                return Some((Err(std::io::Error::other(f.message.clone())), s));
            }
            if !chunk.data.is_empty() {
                return Some((Ok(bytes::Bytes::from(chunk.data)), s));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::core::Container;

    fn pod(containers: &[&str], node: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web".into());
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some("u1".into());
        p.spec.containers = containers
            .iter()
            .map(|n| Container {
                name: (*n).into(),
                ..Container::default()
            })
            .collect();
        p.spec.node_name = node.map(Into::into);
        p
    }

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn query_parameters() {
        assert_eq!(LogOptions::from_query(&q(&[])).unwrap(), LogOptions::default());
        let o = LogOptions::from_query(&q(&[
            ("container", "app"),
            ("follow", "true"),
            ("tailLines", "2"),
            ("previous", "1"),
        ]))
        .unwrap();
        assert_eq!(
            o,
            LogOptions {
                container: Some("app".into()),
                follow: true,
                tail_lines: Some(2),
                previous: true
            }
        );
        assert_eq!(
            LogOptions::from_query(&q(&[("tailLines", "-1")]))
                .unwrap()
                .tail_lines,
            None
        );
        assert!(LogOptions::from_query(&q(&[("tailLines", "x")])).is_err());
        assert!(LogOptions::from_query(&q(&[("follow", "yes")])).is_err());
    }

    #[test]
    fn containers_resolve_as_kubectl_does() {
        let opts = LogOptions::default();
        let (node, req) = request_for(&pod(&["app"], Some("n1")), &opts, "r".into()).unwrap();
        assert_eq!(
            (node.as_str(), req.container.as_str(), req.uid.as_str()),
            ("n1", "app", "u1")
        );
        let e = request_for(&pod(&["a", "b"], Some("n1")), &opts, "r".into()).unwrap_err();
        assert_eq!(e.0.code, 400);
        assert!(e.0.message.contains("choose one of: [a b]"), "{}", e.0.message);
        let named = LogOptions {
            container: Some("b".into()),
            ..LogOptions::default()
        };
        assert_eq!(
            request_for(&pod(&["a", "b"], Some("n1")), &named, "r".into())
                .unwrap()
                .1
                .container,
            "b"
        );
        let wrong = LogOptions {
            container: Some("c".into()),
            ..LogOptions::default()
        };
        let e = request_for(&pod(&["a", "b"], Some("n1")), &wrong, "r".into()).unwrap_err();
        assert!(
            e.0.message.contains("container c is not valid for pod web"),
            "{}",
            e.0.message
        );
    }

    #[test]
    fn unscheduled_pods_and_node_failures() {
        let e = request_for(&pod(&["app"], None), &LogOptions::default(), "r".into()).unwrap_err();
        assert_eq!((e.0.code, e.0.reason.as_str()), (400, "BadRequest"));
        assert!(e.0.message.contains("not yet scheduled"), "{}", e.0.message);
        let f = LogFailure {
            reason: LogFailureReason::NotFound,
            message: "gone".into(),
        };
        assert_eq!(failure_error(&f).0.code, 404);
        assert_eq!(timeout_error("n1").0.code, 504);
        assert!(timeout_error("n1").0.message.contains("\"n1\""));
    }
}
