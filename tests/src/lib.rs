//! Support for the end-to-end tests: the emulator, a local stack per test, tokens, an HTTP
//! client, and a TCP proxy that can play an outage.
//!
//! Every test gets its own stream and tables (unique names), so tests run in parallel and never
//! see each other's data. The emulator is required: without `TELEMETRY_EMULATOR_URL` (set by
//! `make test`) or when nothing answers there, tests fail with a message saying so.

pub mod aws_proxy;
pub mod cfn;
pub mod runtime;
pub mod units;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::Region;
use aws_sdk_dynamodb::config::Credentials;
use serde_json::Value;
use telemetry_cli::local::{LocalConfig, LocalStack, ResourceNames};
use telemetry_shared::auth::{AuthConfig, IssuerConfig, VerificationKey};
use telemetry_shared::config::Secret;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Test-only HS256 secret of the test stacks.
pub const TEST_SECRET: &str = "test-only-secret-not-for-any-real-deployment";
/// Issuer of test tokens.
pub const ISSUER: &str = "telemetry-test";
/// Audience of test tokens.
pub const AUDIENCE: &str = "telemetry";

/// The emulator's URL, or a panic explaining how to get one.
pub fn emulator_url() -> String {
    let url = std::env::var("TELEMETRY_EMULATOR_URL").unwrap_or_else(|_| {
        panic!(
            "TELEMETRY_EMULATOR_URL is not set: the end-to-end tests need the moto emulator. \
             Run them with `make test`, which installs and starts it."
        )
    });
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    if std::net::TcpStream::connect_timeout(
        &addr
            .parse()
            .expect("TELEMETRY_EMULATOR_URL is http://HOST:PORT"),
        Duration::from_secs(2),
    )
    .is_err()
    {
        panic!("the emulator is not answering at {url}: start it with `make test` (or `make dev`)");
    }
    url
}

/// SDK configuration for `endpoint` with dummy credentials and the shared timeouts.
pub async fn sdk_config_for(endpoint: &str) -> aws_config::SdkConfig {
    telemetry_shared::aws::sdk_config_loader()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await
}

/// [`sdk_config_for`] with patient timeouts, for a test's own reads of the emulator: under a
/// large run the single-threaded emulator can take longer than the functions' 5 s attempt
/// timeout to scan a table, and a verification must wait, not fail.
pub async fn patient_sdk_config_for(endpoint: &str) -> aws_config::SdkConfig {
    sdk_config_for(endpoint)
        .await
        .into_builder()
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(120))
                .operation_timeout(Duration::from_secs(300))
                .build(),
        )
        .build()
}

/// A unique name prefix for one test's resources.
pub fn unique_prefix() -> String {
    format!("t{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff)
}

/// The test stacks' auth: HS256 with [`TEST_SECRET`].
pub fn hs256_auth() -> AuthConfig {
    AuthConfig::one(IssuerConfig::new(
        vec![jsonwebtoken::Algorithm::HS256],
        VerificationKey::Secret(Secret::new(TEST_SECRET.into())),
        ISSUER,
        AUDIENCE,
    ))
}

/// A token from the test issuer.
pub fn token(sub: &str, scope: &str) -> String {
    telemetry_shared::auth::mint_hs256(
        &Secret::new(TEST_SECRET.into()),
        ISSUER,
        AUDIENCE,
        sub,
        scope,
        600,
    )
    .expect("sign")
}

/// One test's pipeline: a local stack on a free port with its own stream and tables.
pub struct TestStack {
    /// The running stack.
    pub stack: LocalStack,
    /// Its resource names.
    pub names: ResourceNames,
    /// SDK configuration the stack uses.
    pub sdk: aws_config::SdkConfig,
    /// HTTP client.
    pub http: reqwest::Client,
}

/// Options of a [`TestStack`].
pub struct StackOptions {
    /// Auth configuration.
    pub auth: AuthConfig,
    /// Endpoint the stack talks to (default: the emulator).
    pub endpoint: Option<String>,
    /// Shards of the stream.
    pub shards: i32,
    /// ingest's retry budget.
    pub retry_budget: Duration,
    /// forward's route cache lifetime, whole seconds (short in tests; 60 s in the template).
    pub routes_refresh: Duration,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            auth: hs256_auth(),
            endpoint: None,
            shards: 2,
            retry_budget: Duration::from_secs(5),
            routes_refresh: Duration::from_secs(1),
        }
    }
}

impl TestStack {
    /// A stack with the default options.
    pub async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    /// A stack with `options`.
    pub async fn start_with(options: StackOptions) -> Self {
        let endpoint = options.endpoint.unwrap_or_else(emulator_url);
        let sdk = sdk_config_for(&endpoint).await;
        let names = ResourceNames::with_prefix(&unique_prefix());
        let mut config = LocalConfig::new(options.auth);
        config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        config.names = names.clone();
        config.shards = options.shards;
        config.poll_interval = Duration::from_millis(100);
        // As the template sets them, read by the functions themselves.
        config.settings = telemetry_shared::config::Env::from_map([
            (
                "INGEST_RETRY_BUDGET_MS",
                options.retry_budget.as_millis().to_string(),
            ),
            (
                "ROUTES_REFRESH_SECS",
                options.routes_refresh.as_secs().to_string(),
            ),
            // A new metric takes effect 60 s after it is defined (the least δ), not 120 s.
            ("METRICS_CACHE_SECONDS", "0".to_string()),
        ]);
        let stack = LocalStack::start(config, &sdk)
            .await
            .expect("local stack starts against the emulator");
        Self {
            stack,
            names,
            sdk,
            http: reqwest::Client::new(),
        }
    }

    /// Waits until everything sent so far has gone through every stream function (the mappings
    /// are caught up, nothing in flight): the deterministic point to assert "nothing else
    /// happened". Fails the test if they are still busy after 30 s.
    pub async fn settle(&self) {
        self.settle_within(Duration::from_secs(30)).await;
    }

    /// [`Self::settle`] with a longer patience, for tests that make the emulator work hard.
    pub async fn settle_within(&self, patience: Duration) {
        assert!(
            self.stack.until_idle(patience).await,
            "the stream mappings are still busy after {patience:?}"
        );
    }

    /// URL of `path` on the stack's API.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.stack.url())
    }

    /// POST /v1/events with a JSON body.
    pub async fn post_events(&self, token: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/v1/events"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("POST /v1/events");
        read(r).await
    }

    /// GET `path_and_query` with a token.
    pub async fn get(&self, token: &str, path_and_query: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path_and_query))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        read(r).await
    }

    /// Every event of `token`'s user, paging through `GET /v1/events`.
    pub async fn all_events(&self, token: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                None => "/v1/events?limit=100".to_string(),
                Some(c) => format!("/v1/events?limit=100&cursor={c}"),
            };
            let (status, body) = self.get(token, &path).await;
            assert_eq!(status, 200, "{body}");
            out.extend(body["events"].as_array().expect("events").iter().cloned());
            match body["cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    /// PUT a JSON body.
    pub async fn put(&self, token: &str, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .put(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("PUT");
        read(r).await
    }

    /// DELETE.
    pub async fn delete(&self, token: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("DELETE");
        read(r).await
    }

    /// Creates a queue for this test (`.fifo` names make FIFO queues); returns its URL.
    pub async fn queue(&self, name: &str) -> String {
        let full = format!("{}-{name}", self.names.stream.trim_end_matches("-events"));
        telemetry_cli::local::resources::ensure_queue(&aws_sdk_sqs::Client::new(&self.sdk), &full)
            .await
            .expect("create queue")
    }

    /// Receives (and deletes) messages from `queue_url` until `expected` arrived or `timeout`.
    pub async fn drain(&self, queue_url: &str, expected: usize, timeout: Duration) -> Vec<Value> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let start = Instant::now();
        let mut out = Vec::new();
        while out.len() < expected && start.elapsed() < timeout {
            let messages = take_messages(&sqs, queue_url).await.expect("receive");
            if messages.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            for m in messages {
                let body: Value =
                    serde_json::from_str(m.body().unwrap_or("null")).unwrap_or(Value::Null);
                let event_type = m
                    .message_attributes()
                    .and_then(|a| a.get("eventType"))
                    .and_then(|v| v.string_value())
                    .map(str::to_string);
                out.push(serde_json::json!({"body": body, "eventType": event_type}));
            }
        }
        out
    }

    /// Polls `GET /v1/events` until `expected` events are there (or `timeout`), returning them.
    pub async fn wait_for_events(
        &self,
        token: &str,
        expected: usize,
        timeout: Duration,
    ) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let events = self.all_events(token).await;
            if events.len() >= expected || start.elapsed() > timeout {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Status and JSON body (Null when not JSON).
pub async fn read(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let bytes = r.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// `{"events": [...]}` of `n` events `{"type": kind, "id": "<prefix><i>"}`.
pub fn batch_with_ids(n: usize, kind: &str, prefix: &str) -> Value {
    let events: Vec<Value> = (0..n)
        .map(|i| serde_json::json!({"type": kind, "id": format!("{prefix}{i}"), "data": {"i": i}}))
        .collect();
    serde_json::json!({ "events": events })
}

/// A TCP proxy in front of the emulator that can play an outage: while down, it closes the
/// connections it holds and stops listening, so new connections are refused, as with a stopped
/// server; when up again it listens on the same address.
pub struct OutageProxy {
    /// Where the proxy listens.
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl OutageProxy {
    /// A proxy forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let down = Arc::new(AtomicBool::new(false));
        let changed = Arc::new(Notify::new());
        let (d, c) = (Arc::clone(&down), Arc::clone(&changed));
        let task = tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                if d.load(Ordering::SeqCst) {
                    listener = None; // refuse connections
                    c.notified().await;
                    continue;
                }
                let l = match &listener {
                    Some(l) => l,
                    None => match TcpListener::bind(addr).await {
                        Ok(l) => listener.insert(l),
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    },
                };
                tokio::select! {
                    accepted = l.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        let upstream = upstream.clone();
                        let c = Arc::clone(&c);
                        tokio::spawn(async move {
                            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                _ = c.notified() => {}
                            }
                        });
                    }
                    _ = c.notified() => {}
                }
            }
        });
        Self {
            addr,
            down,
            changed,
            task,
        }
    }

    /// The proxy's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts (`true`) or ends (`false`) the outage.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

impl Drop for OutageProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every record of `stream`, shard by shard from the oldest (one page of up to 10,000 each),
/// read as the local stack's mappings read it.
pub async fn stream_records(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Vec<(String, Vec<aws_sdk_kinesis::types::Record>)> {
    use telemetry_cli::local::kinesis_source::KinesisSource;
    use telemetry_cli::local::mapping::{Position, ShardSource};
    let source = KinesisSource::new(kinesis.clone(), stream)
        .await
        .expect("stream");
    let mut out = Vec::new();
    for shard in source.shards().await.expect("shards") {
        let iterator = source
            .iterator(&shard, &Position::TrimHorizon)
            .await
            .expect("iterator");
        let (records, _) = source.read(&iterator, 10_000).await.expect("records");
        out.push((shard, records));
    }
    out
}

/// One page of a subscriber's work: receives up to 10 of `queue`'s messages (with their
/// attributes) and deletes them. An error leaves them in the queue, to come back.
pub async fn take_messages(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
) -> anyhow::Result<Vec<aws_sdk_sqs::types::Message>> {
    let page = sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .send()
        .await?;
    let messages = page.messages.unwrap_or_default();
    if messages.is_empty() {
        return Ok(messages);
    }
    let entries = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    sqs.delete_message_batch()
        .queue_url(queue)
        .set_entries(Some(entries))
        .send()
        .await?;
    Ok(messages)
}

/// Every item of a table (a scan; test tables are small).
pub async fn scan_all(
    sdk: &aws_config::SdkConfig,
    table: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let client = aws_sdk_dynamodb::Client::new(sdk);
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        items.extend(out.items().iter().cloned());
        start = out.last_evaluated_key;
        if start.is_none() {
            return items;
        }
    }
}

/// Polls `check` every 100 ms until it is true or `timeout` passes; returns the last result.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A subscriber consuming a queue while the pipeline runs, as a real one would. (It also keeps
/// the emulator fast: its `SendMessage` slows down with every message a queue holds.)
pub struct QueueSubscriber {
    seen: Arc<Mutex<HashMap<String, u32>>>,
    idle_polls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl QueueSubscriber {
    /// Starts receiving and deleting `queue`'s messages, counting each event (`userId/id`).
    pub fn start(sqs: aws_sdk_sqs::Client, queue: String) -> Self {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let idle_polls = Arc::new(AtomicUsize::new(0));
        let (counts, idle) = (Arc::clone(&seen), Arc::clone(&idle_polls));
        let task = tokio::spawn(async move {
            loop {
                let Ok(messages) = take_messages(&sqs, &queue).await else {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                };
                if messages.is_empty() {
                    idle.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
                idle.store(0, Ordering::SeqCst);
                for m in &messages {
                    let body: Value =
                        serde_json::from_str(m.body().unwrap_or("{}")).unwrap_or_default();
                    let key = format!(
                        "{}/{}",
                        body["userId"].as_str().unwrap_or(""),
                        body["id"].as_str().unwrap_or("")
                    );
                    *counts.lock().unwrap().entry(key).or_default() += 1;
                }
            }
        });
        Self {
            seen,
            idle_polls,
            task,
        }
    }

    /// Waits until every event of `want` arrived and the queue has been empty for a few polls
    /// (so late duplicates are counted too), or `deadline`; then stops and returns the counts.
    pub async fn finish(self, want: &BTreeSet<String>, deadline: Instant) -> HashMap<String, u32> {
        loop {
            let complete = {
                let seen = self.seen.lock().unwrap();
                want.iter().all(|k| seen.contains_key(k))
            };
            if (complete && self.idle_polls.load(Ordering::SeqCst) >= 3)
                || Instant::now() > deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.task.abort();
        self.seen.lock().unwrap().clone()
    }

    /// How many distinct events arrived so far.
    pub fn distinct(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}
