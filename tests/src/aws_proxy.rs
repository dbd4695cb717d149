//! An HTTP proxy in front of the emulator that sees every AWS request. It counts them by
//! operation (`X-Amz-Target`, e.g. `Kinesis_20131202.PutRecords`), so a run can be priced in
//! requests per event, and it can inject faults at a configured rate:
//!
//! * throttling errors (`ProvisionedThroughputExceededException`) and 500s, not forwarded;
//! * partial failures inside a 200: failed `PutRecords` records, `BatchWriteItem`
//!   `UnprocessedItems`, failed `SendMessageBatch` entries. The entries reported as failed are
//!   **removed** from what is forwarded, so the fault really happened;
//! * connection resets before forwarding (nothing applied) and after forwarding (applied, but the
//!   caller never hears so: it must retry idempotently);
//! * a delay on every request.
//!
//! Outages (refused connections) are played by [`crate::OutageProxy`] in front of this one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, Response, StatusCode};
use serde_json::{Value, json};

/// Requests seen, by operation.
pub type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// What to inject.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Probability that a request gets a fault (0.0..=1.0).
    pub rate: f64,
    /// Delay added to every request.
    pub delay: Option<Duration>,
    /// Only requests whose operation contains one of these (empty: all).
    pub only: Vec<String>,
}

/// The faults injected, by kind.
pub type FaultCounts = Arc<Mutex<BTreeMap<String, u64>>>;

/// The proxy's handle: change the plan while it runs, read what it did.
#[derive(Clone)]
pub struct AwsProxy {
    /// Its URL.
    pub url: String,
    /// Requests by operation.
    pub counts: Counts,
    /// Faults by kind.
    pub faults: FaultCounts,
    plan: Arc<Mutex<FaultPlan>>,
}

impl AwsProxy {
    /// Replaces the fault plan.
    pub fn set_plan(&self, plan: FaultPlan) {
        *self.plan.lock().expect("lock") = plan;
    }

    /// Requests given a fault (an outage is counted by the outage proxy, not here).
    pub fn faults_injected(&self) -> u64 {
        self.faults
            .lock()
            .expect("lock")
            .iter()
            // The entries failed inside a partial failure are one faulted request, not many.
            .filter(|(kind, _)| kind.as_str() != "partial_entries")
            .map(|(_, n)| n)
            .sum()
    }
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    counts: Counts,
    faults: FaultCounts,
    plan: Arc<Mutex<FaultPlan>>,
}

/// The operation of an AWS request: its `X-Amz-Target`, else method and path.
pub fn operation(req: &Request<Body>) -> String {
    match req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
    {
        Some(target) => target.to_string(),
        None => format!("{} {}", req.method(), req.uri().path()),
    }
}

enum Fault {
    Throttle,
    ServerError,
    Partial,
    ResetBefore,
    ResetAfter,
}

impl Proxy {
    fn pick(&self, op: &str) -> Option<Fault> {
        let plan = self.plan.lock().expect("lock").clone();
        if plan.rate <= 0.0
            || (!plan.only.is_empty() && !plan.only.iter().any(|o| op.contains(o.as_str())))
        {
            return None;
        }
        if fastrand::f64() >= plan.rate {
            return None;
        }
        let partial_capable = op.ends_with(".PutRecords")
            || op.ends_with(".BatchWriteItem")
            || op.ends_with(".SendMessageBatch");
        Some(match fastrand::u32(0..100) {
            0..=39 if partial_capable => Fault::Partial,
            0..=29 => Fault::Throttle,
            30..=59 => Fault::ServerError,
            60..=79 => Fault::ResetBefore,
            _ => Fault::ResetAfter,
        })
    }

    fn note(&self, kind: &str) {
        *self
            .faults
            .lock()
            .expect("lock")
            .entry(kind.to_string())
            .or_default() += 1;
    }

    async fn send(
        &self,
        method: axum::http::Method,
        uri: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Option<(StatusCode, HeaderMap, Bytes)> {
        let mut upstream = self
            .http
            .request(method, format!("{}{uri}", self.upstream))
            .body(body);
        for (name, value) in headers {
            if name != "host" && name != "content-length" {
                upstream = upstream.header(name, value);
            }
        }
        let r = upstream.send().await.ok()?;
        let status = r.status();
        let mut out = HeaderMap::new();
        for (name, value) in r.headers() {
            if name != "transfer-encoding" && name != "content-length" {
                out.insert(name.clone(), value.clone());
            }
        }
        Some((status, out, r.bytes().await.ok()?))
    }
}

fn error_response(status: u16, op: &str, code: &str) -> Response<Body> {
    // awsJson 1.0 (DynamoDB) qualifies the type; 1.1 (Kinesis) and SQS's JSON take it bare.
    let kind = if op.starts_with("DynamoDB_") {
        format!("com.amazonaws.dynamodb.v20120810#{code}")
    } else {
        code.to_string()
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amzn-errortype", code)
        .header("x-amzn-query-error", format!("{code};Receiver"))
        .body(Body::from(
            json!({"__type": kind, "message": "injected by the fault proxy"}).to_string(),
        ))
        .expect("response")
}

/// A response whose body breaks off: the caller sees the connection reset.
fn reset() -> Response<Body> {
    let broken = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("reset by the fault proxy"))
    });
    Response::builder()
        .status(200)
        .header("content-length", "1000")
        .body(Body::from_stream(broken))
        .expect("response")
}

fn json_response(status: StatusCode, headers: HeaderMap, body: Vec<u8>) -> Response<Body> {
    let mut out = Response::builder().status(status);
    for (k, v) in &headers {
        out = out.header(k, v);
    }
    out.body(Body::from(body)).expect("response")
}

/// Splits a batch request: some entries "fail" (kept out of what is forwarded). Returns the
/// forwarded request, the failed entries, and the kept entries' positions.
fn split_batch(op: &str, request: &mut Value) -> Vec<(usize, Value)> {
    let list: Option<&mut Vec<Value>> = if op.ends_with(".PutRecords") {
        request.get_mut("Records").and_then(Value::as_array_mut)
    } else if op.ends_with(".SendMessageBatch") {
        request.get_mut("Entries").and_then(Value::as_array_mut)
    } else {
        request
            .get_mut("RequestItems")
            .and_then(Value::as_object_mut)
            .and_then(|m| m.values_mut().next())
            .and_then(Value::as_array_mut)
    };
    let Some(list) = list else { return Vec::new() };
    let mut failed = Vec::new();
    let mut kept = Vec::new();
    for (i, entry) in std::mem::take(list).into_iter().enumerate() {
        // About a third of the entries fail, at least one.
        if fastrand::u32(0..3) == 0 || (i == 0 && fastrand::bool()) {
            failed.push((i, entry));
        } else {
            kept.push(entry);
        }
    }
    *list = kept;
    failed
}

/// Builds the answer to a partially failed batch from the emulator's answer to the rest.
fn merge(
    op: &str,
    total: usize,
    failed: &[(usize, Value)],
    request: &Value,
    upstream: Option<&Value>,
) -> Value {
    if op.ends_with(".PutRecords") {
        let mut ok = upstream
            .and_then(|u| u["Records"].as_array().cloned())
            .unwrap_or_default()
            .into_iter();
        let failed_at: Vec<usize> = failed.iter().map(|(i, _)| *i).collect();
        let records: Vec<Value> = (0..total)
            .map(|i| {
                if failed_at.contains(&i) {
                    json!({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard (injected)"})
                } else {
                    ok.next().unwrap_or(json!({"ErrorCode": "InternalFailure", "ErrorMessage": "missing"}))
                }
            })
            .collect();
        let failed_count = records
            .iter()
            .filter(|r| r.get("ErrorCode").is_some())
            .count();
        json!({"FailedRecordCount": failed_count, "Records": records, "EncryptionType": "NONE"})
    } else if op.ends_with(".SendMessageBatch") {
        let mut answer = upstream
            .cloned()
            .unwrap_or(json!({"Successful": [], "Failed": []}));
        let mut failed_list = answer["Failed"].as_array().cloned().unwrap_or_default();
        for (_, entry) in failed {
            failed_list.push(json!({"Id": entry["Id"], "SenderFault": false, "Code": "InternalError", "Message": "injected"}));
        }
        answer["Failed"] = Value::Array(failed_list);
        if answer.get("Successful").is_none() {
            answer["Successful"] = json!([]);
        }
        answer
    } else {
        let table = request["RequestItems"]
            .as_object()
            .and_then(|m| m.keys().next().cloned())
            .unwrap_or_default();
        let mut answer = upstream.cloned().unwrap_or(json!({}));
        let mut unprocessed = answer["UnprocessedItems"][&table]
            .as_array()
            .cloned()
            .unwrap_or_default();
        unprocessed.extend(failed.iter().map(|(_, e)| e.clone()));
        answer["UnprocessedItems"] = json!({ table: unprocessed });
        answer
    }
}

async fn forward(State(proxy): State<Proxy>, req: Request<Body>) -> Response<Body> {
    let op = operation(&req);
    *proxy
        .counts
        .lock()
        .expect("lock")
        .entry(op.clone())
        .or_default() += 1;
    let delay = proxy.plan.lock().expect("lock").delay;
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(body) = to_bytes(body, 64 * 1024 * 1024).await else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Body::empty())
            .expect("response");
    };
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let fault = proxy.pick(&op);
    match fault {
        Some(Fault::Throttle) => {
            proxy.note("throttle");
            let code = if op.starts_with("AmazonSQS") {
                "RequestThrottled"
            } else {
                "ProvisionedThroughputExceededException"
            };
            return error_response(400, &op, code);
        }
        Some(Fault::ServerError) => {
            proxy.note("server_error");
            return error_response(500, &op, "InternalFailure");
        }
        Some(Fault::ResetBefore) => {
            proxy.note("reset_before");
            return reset();
        }
        Some(Fault::Partial) => {
            if let Ok(mut request) = serde_json::from_slice::<Value>(&body) {
                let total = match () {
                    _ if op.ends_with(".PutRecords") => {
                        request["Records"].as_array().map_or(0, Vec::len)
                    }
                    _ if op.ends_with(".SendMessageBatch") => {
                        request["Entries"].as_array().map_or(0, Vec::len)
                    }
                    _ => request["RequestItems"]
                        .as_object()
                        .and_then(|m| m.values().next())
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len),
                };
                let failed = split_batch(&op, &mut request);
                if !failed.is_empty() {
                    proxy.note("partial");
                    *proxy
                        .faults
                        .lock()
                        .expect("lock")
                        .entry("partial_entries".into())
                        .or_default() += failed.len() as u64;
                    let forwarded_any = failed.len() < total;
                    let upstream = if forwarded_any {
                        match proxy
                            .send(
                                parts.method.clone(),
                                &uri,
                                &parts.headers,
                                Bytes::from(serde_json::to_vec(&request).expect("json")),
                            )
                            .await
                        {
                            Some((status, _, bytes)) if status.is_success() => {
                                serde_json::from_slice::<Value>(&bytes).ok()
                            }
                            Some((status, headers, bytes)) => {
                                return json_response(status, headers, bytes.to_vec());
                            }
                            None => return error_response(500, &op, "InternalFailure"),
                        }
                    } else {
                        None
                    };
                    let answer = merge(&op, total, &failed, &request, upstream.as_ref());
                    let mut headers = HeaderMap::new();
                    headers.insert(
                        "content-type",
                        "application/x-amz-json-1.0".parse().expect("header"),
                    );
                    return json_response(
                        StatusCode::OK,
                        headers,
                        serde_json::to_vec(&answer).expect("json"),
                    );
                }
            }
        }
        _ => {}
    }
    match proxy.send(parts.method, &uri, &parts.headers, body).await {
        Some(_) if matches!(fault, Some(Fault::ResetAfter)) => {
            proxy.note("reset_after");
            reset()
        }
        Some((status, headers, bytes)) => json_response(status, headers, bytes.to_vec()),
        None => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .expect("response"),
    }
}

/// A proxy to `upstream` (`http://host:port`) on a free port, injecting nothing until told.
pub async fn start_proxy(upstream: &str) -> AwsProxy {
    let counts = Counts::default();
    let faults = FaultCounts::default();
    let plan = Arc::new(Mutex::new(FaultPlan::default()));
    let proxy = Proxy {
        upstream: upstream.trim_end_matches('/').to_string(),
        http: reqwest::Client::new(),
        counts: Arc::clone(&counts),
        faults: Arc::clone(&faults),
        plan: Arc::clone(&plan),
    };
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    AwsProxy {
        url: format!("http://{addr}"),
        counts,
        faults,
        plan,
    }
}

/// A counting proxy to `upstream`; returns its URL and the counts.
pub async fn start(upstream: &str) -> (String, Counts) {
    let proxy = start_proxy(upstream).await;
    (proxy.url, proxy.counts)
}
