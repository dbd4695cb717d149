//! An HTTP proxy in front of the emulator that sees every AWS request: it counts them by
//! operation (`X-Amz-Target`, e.g. `Kinesis_20131202.PutRecords`), so a run can be priced in
//! requests per event.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{Request, Response, StatusCode};

/// Requests seen, by operation.
pub type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    counts: Counts,
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

async fn forward(State(proxy): State<Proxy>, req: Request<Body>) -> Response<Body> {
    let op = operation(&req);
    *proxy.counts.lock().expect("lock").entry(op).or_default() += 1;
    let (parts, body) = req.into_parts();
    let Ok(body) = to_bytes(body, 64 * 1024 * 1024).await else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Body::empty())
            .expect("response");
    };
    let url = format!(
        "{}{}",
        proxy.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut upstream = proxy.http.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    match upstream.send().await {
        Ok(r) => {
            let mut out = Response::builder().status(r.status());
            for (name, value) in r.headers() {
                if name != "transfer-encoding" && name != "content-length" {
                    out = out.header(name, value);
                }
            }
            out.body(Body::from(r.bytes().await.unwrap_or_default()))
                .expect("response")
        }
        Err(_) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .expect("response"),
    }
}

/// A counting proxy to `upstream` (`http://host:port`) on a free port; returns its URL and the
/// counts.
pub async fn start(upstream: &str) -> (String, Counts) {
    let counts = Counts::default();
    let proxy = Proxy {
        upstream: upstream.trim_end_matches('/').to_string(),
        http: reqwest::Client::new(),
        counts: Arc::clone(&counts),
    };
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), counts)
}
