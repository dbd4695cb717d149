//! A fake Lambda Runtime API on 127.0.0.1, to run the real function binaries as Lambda would:
//! it hands out queued events on `GET /invocation/next` (and blocks when there are none, as
//! Lambda does between invocations) and records what the function posts back.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use tokio::sync::Notify;

/// What a function answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The invocation's request id.
    pub request_id: String,
    /// `true` for `/response`, `false` for `/error`.
    pub ok: bool,
    /// The body posted.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    events: Mutex<VecDeque<(String, Vec<u8>)>>,
    answers: Mutex<Vec<Answer>>,
    first_next: Mutex<Option<Instant>>,
    changed: Notify,
}

/// The fake Runtime API.
#[derive(Clone)]
pub struct FakeRuntime {
    /// `host:port` for `AWS_LAMBDA_RUNTIME_API`.
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

async fn next(State(inner): State<Arc<Inner>>) -> (StatusCode, HeaderMap, Vec<u8>) {
    {
        let mut first = inner.first_next.lock().expect("lock");
        first.get_or_insert_with(Instant::now);
    }
    loop {
        let notified = inner.changed.notified();
        if let Some((id, body)) = inner.events.lock().expect("lock").pop_front() {
            let mut headers = HeaderMap::new();
            let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
            let header = |v: &str| HeaderValue::from_str(v).expect("header value");
            headers.insert("lambda-runtime-aws-request-id", header(&id));
            headers.insert("lambda-runtime-deadline-ms", header(&deadline.to_string()));
            headers.insert(
                "lambda-runtime-invoked-function-arn",
                header("arn:aws:lambda:us-east-1:123456789012:function:test"),
            );
            headers.insert(
                "lambda-runtime-trace-id",
                header("Root=1-00000000-000000000000000000000000"),
            );
            return (StatusCode::OK, headers, body);
        }
        notified.await;
    }
}

async fn respond(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    record(&inner, id, true, body);
    StatusCode::ACCEPTED
}

async fn error(State(inner): State<Arc<Inner>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    record(&inner, id, false, body);
    StatusCode::ACCEPTED
}

async fn init_error(State(inner): State<Arc<Inner>>, body: Bytes) -> StatusCode {
    record(&inner, "init".into(), false, body);
    StatusCode::ACCEPTED
}

fn record(inner: &Inner, request_id: String, ok: bool, body: Bytes) {
    inner.answers.lock().expect("lock").push(Answer {
        request_id,
        ok,
        body: body.to_vec(),
        at: Instant::now(),
    });
    inner.changed.notify_waiters();
}

impl FakeRuntime {
    /// Starts the fake Runtime API on a free port.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner }
    }

    /// Queues an invocation.
    pub fn invoke(&self, request_id: &str, event: Vec<u8>) {
        self.inner
            .events
            .lock()
            .expect("lock")
            .push_back((request_id.to_string(), event));
        self.inner.changed.notify_waiters();
    }

    /// When the function first asked for work (its init was over).
    pub fn first_next(&self) -> Option<Instant> {
        *self.inner.first_next.lock().expect("lock")
    }

    /// Waits for the answer to `request_id`.
    pub async fn answer(&self, request_id: &str, timeout: Duration) -> Option<Answer> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            if let Some(a) = self
                .inner
                .answers
                .lock()
                .expect("lock")
                .iter()
                .find(|a| a.request_id == request_id || a.request_id == "init")
            {
                return Some(a.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), notified).await;
        }
    }
}

/// Builds a workspace binary (debug) and returns its path.
pub fn build_binary(package: &str) -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "-p", package, "--bin", package])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    root.join("target/debug").join(package)
}

/// The environment Lambda gives every function.
pub fn lambda_env(runtime: &FakeRuntime, function: &str) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime.addr.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", function.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_string()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/11/26/[$LATEST]0123456789abcdef".to_string(),
        ),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
