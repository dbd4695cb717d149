//! `telemetry local`: the whole pipeline on a laptop, against the emulator.
//!
//! Creates the stream, tables and queues, serves the HTTP API by playing API Gateway in front
//! of the ingest and query handlers, and plays Lambda's event source mappings for the stream
//! functions: store and forward on the Kinesis stream (each with its own checkpoints), and
//! post-process on the `events` table's stream (INSERT filter, tumbling-window events). The
//! handlers are the very ones the Lambda binaries run, called in-process.

pub mod dynamodb_source;
pub mod gateway;
pub mod kinesis_source;
pub mod mapping;
pub mod resources;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use telemetry_shared::auth::AuthConfig;
use telemetry_shared::aws::route_table::RouteTableStore;
use telemetry_shared::config::{ConfigError, Env};
use tokio::task::JoinHandle;

use self::dynamodb_source::DynamoStreamSource;
use self::gateway::Gateway;
use self::kinesis_source::KinesisSource;
use self::mapping::Mapping;
pub use self::resources::ResourceNames;

/// Everything `telemetry local` needs to know.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Where the HTTP API listens (port 0: any free port).
    pub bind: SocketAddr,
    /// Stream, table and queue names.
    pub names: ResourceNames,
    /// Shards of a newly created stream.
    pub shards: i32,
    /// Token verification (the dev secret).
    pub auth: AuthConfig,
    /// Records per stream-function invocation (Lambda's `BatchSize`).
    pub batch_size: i32,
    /// Wait between polls of an idle shard.
    pub poll_interval: Duration,
    /// The functions' own settings, by the variables they read in Lambda
    /// (`INGEST_RETRY_BUDGET_MS`, `RATE_LIMIT_PER_USER`, `ROUTES_REFRESH_SECS`,
    /// `EVENT_TTL_DAYS`, ...): each function's `Config::from_env` reads them, with its own
    /// defaults, under the resource names the stack sets ([`FunctionConfigs::read`]).
    /// `telemetry local` passes the process environment; tests a map.
    pub settings: Env,
    /// post-process's tumbling window.
    pub window: Duration,
    /// Keep a copy of every batch handed to the stream functions (benchmarks count the
    /// minimum AWS requests from them).
    pub record_batches: bool,
    /// A stream function's timeout (the template's 30 s); the handler gets a deadline 2 s
    /// before it, as in the Lambda binaries.
    pub invocation_timeout: Duration,
}

/// Copies of the batches the stream functions were given.
#[derive(Debug, Default)]
pub struct RecordedBatches {
    /// store's invocations.
    pub store: Vec<aws_lambda_events::kinesis::KinesisEvent>,
    /// forward's invocations.
    pub forward: Vec<aws_lambda_events::kinesis::KinesisEvent>,
    /// post-process's invocations.
    pub post_process: Vec<aws_lambda_events::dynamodb::TimeWindowEvent>,
}

impl LocalConfig {
    /// The defaults of `telemetry local`: port 3000, `telemetry-*` resources, 2 shards, the
    /// batch sizes and route refresh of `template.yaml`.
    pub fn new(auth: AuthConfig) -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 3000)),
            names: ResourceNames::with_prefix("telemetry"),
            shards: 2,
            auth,
            batch_size: 100,
            poll_interval: Duration::from_millis(250),
            window: Duration::from_secs(60),
            record_batches: false,
            settings: Env::from_map::<&str, &str>([]),
            invocation_timeout: Duration::from_secs(30),
        }
    }
}

/// The deadline a stream function gets: its timeout less the 2 s the Lambda binaries keep to
/// answer.
fn invocation_deadline(timeout: Duration) -> telemetry_shared::retry::Deadline {
    telemetry_shared::retry::Deadline::after(timeout.saturating_sub(Duration::from_secs(2)))
}

/// A running local stack; stops when dropped.
pub struct LocalStack {
    /// Address of the HTTP API.
    pub addr: SocketAddr,
    /// URL of the demo queue.
    pub demo_queue_url: String,
    /// URL of the forward dead-letter queue.
    pub dlq_url: String,
    /// The batches given to the stream functions, when `record_batches` is set.
    pub recorded: Arc<std::sync::Mutex<RecordedBatches>>,
    /// What the stream mappings have done ([`LocalStack::until_idle`]).
    pub progress: Arc<mapping::Progress>,
    tasks: Vec<JoinHandle<()>>,
}

/// The five functions' configurations, each read by its own `Config::from_env` from the
/// variables `template.yaml` gives it — here the local resources' names — over
/// [`LocalConfig::settings`]: one parser and one set of defaults for both stacks.
#[derive(Debug, Clone)]
pub struct FunctionConfigs {
    /// ingest's.
    pub ingest: ingest::Config,
    /// query's.
    pub query: query::Config,
    /// store's.
    pub store: store::Config,
    /// forward's.
    pub forward: forward::Config,
    /// post-process's.
    pub post_process: post_process::Config,
}

/// A function's variables: (name, value).
pub type Variables = Vec<(&'static str, String)>;

impl FunctionConfigs {
    /// The variables the local stack sets for each function (by its logical id in
    /// `template.yaml`): the resources the template would `!Ref`. Everything else a function
    /// reads is a setting.
    pub fn variables(names: &ResourceNames) -> BTreeMap<&'static str, Variables> {
        let v = |pairs: &[(&'static str, &String)]| -> Variables {
            pairs.iter().map(|(k, v)| (*k, (*v).clone())).collect()
        };
        BTreeMap::from([
            (
                "IngestFunction",
                v(&[
                    ("EVENTS_STREAM", &names.stream),
                    ("COUNTS_TABLE", &names.counts_table),
                ]),
            ),
            // Locally no IAM stands between forward and the queues: no ROUTE_QUEUE_PREFIX
            // unless the settings give one.
            (
                "QueryFunction",
                v(&[
                    ("EVENTS_TABLE", &names.events_table),
                    ("COUNTS_TABLE", &names.counts_table),
                    ("ROUTES_TABLE", &names.routes_table),
                    ("METRICS_TABLE", &names.metrics_table),
                ]),
            ),
            ("StoreFunction", v(&[("EVENTS_TABLE", &names.events_table)])),
            (
                "ForwardFunction",
                v(&[
                    ("ROUTES_TABLE", &names.routes_table),
                    ("FORWARD_DLQ_URL", &names.forward_dlq),
                ]),
            ),
            (
                "PostProcessFunction",
                v(&[
                    ("COUNTS_TABLE", &names.counts_table),
                    ("METRICS_TABLE", &names.metrics_table),
                ]),
            ),
        ])
    }

    /// Reads them all, before anything is created: a malformed setting stops the stack,
    /// naming the variable. forward's dead-letter queue URL is the emulator's to decide: it is
    /// the queue's name until [`LocalStack::start`] has created it.
    pub fn read(config: &LocalConfig) -> Result<Self, ConfigError> {
        let mut vars = Self::variables(&config.names);
        let mut env = |id: &str| config.settings.with(vars.remove(id).unwrap_or_default());
        Ok(Self {
            ingest: ingest::Config::from_env_with_auth(
                &env("IngestFunction"),
                config.auth.clone(),
            )?,
            query: query::Config::from_env_with_auth(&env("QueryFunction"), config.auth.clone())?,
            store: store::Config::from_env(&env("StoreFunction"))?,
            forward: forward::Config::from_env(&env("ForwardFunction"))?,
            post_process: post_process::Config::from_env(&env("PostProcessFunction"))?,
        })
    }
}

/// The five handlers, built as the Lambda binaries build them.
struct Functions {
    ingest: Arc<ingest::Ingest>,
    query: Arc<query::Query>,
    store: Arc<store::Store>,
    forward: Arc<forward::Forward>,
    post_process: Arc<post_process::PostProcess>,
}

impl Functions {
    async fn build(configs: &FunctionConfigs, sdk: &aws_config::SdkConfig) -> Result<Self> {
        Ok(Self {
            ingest: Arc::new(
                ingest::from_config(&configs.ingest, sdk)
                    .await
                    .context("building ingest")?,
            ),
            query: Arc::new(
                query::from_config(&configs.query, sdk)
                    .await
                    .context("building query")?,
            ),
            store: Arc::new(store::from_config(&configs.store, sdk)),
            forward: Arc::new(forward::from_config(&configs.forward, sdk)),
            post_process: Arc::new(post_process::from_config(&configs.post_process, sdk)),
        })
    }
}

impl LocalStack {
    /// Creates the resources (idempotently) and starts the API and the stream mappings.
    pub async fn start(config: LocalConfig, sdk: &aws_config::SdkConfig) -> Result<Self> {
        let mut configs = FunctionConfigs::read(&config)?;
        let (demo_queue_url, dlq_url) = Self::create_resources(&config, sdk).await?;
        configs.forward.dlq_url = dlq_url.clone();
        let functions = Functions::build(&configs, sdk).await?;
        let recorded = Arc::new(std::sync::Mutex::new(RecordedBatches::default()));
        let progress = Arc::new(mapping::Progress::default());
        let mut tasks =
            Self::start_mappings(&config, sdk, &functions, &recorded, &progress).await?;
        let (addr, server) = Self::start_gateway(&config, &functions).await?;
        tasks.push(server);
        Ok(Self {
            addr,
            demo_queue_url,
            dlq_url,
            recorded,
            progress,
            tasks,
        })
    }

    /// The stream, tables, queues and demo route, each ready; the demo queue's and the
    /// dead-letter queue's URLs.
    async fn create_resources(
        config: &LocalConfig,
        sdk: &aws_config::SdkConfig,
    ) -> Result<(String, String)> {
        let names = &config.names;
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        let sqs = aws_sdk_sqs::Client::new(sdk);
        resources::ensure_stream(
            &aws_sdk_kinesis::Client::new(sdk),
            &names.stream,
            config.shards,
        )
        .await?;
        resources::ensure_tables(&dynamodb, names).await?;
        let demo_queue_url = resources::ensure_queue(&sqs, &names.demo_queue).await?;
        let dlq_url = resources::ensure_queue(&sqs, &names.forward_dlq).await?;
        let routes = RouteTableStore::new(dynamodb, names.routes_table.clone());
        resources::ensure_demo_route(&routes, &demo_queue_url).await?;
        Ok((demo_queue_url, dlq_url))
    }

    /// Plays Lambda's three stream mappings: store and forward on the Kinesis stream (each
    /// with its own checkpoints), post-process on the `events` table's stream.
    async fn start_mappings(
        config: &LocalConfig,
        sdk: &aws_config::SdkConfig,
        functions: &Functions,
        recorded: &Arc<std::sync::Mutex<RecordedBatches>>,
        progress: &Arc<mapping::Progress>,
    ) -> Result<Vec<JoinHandle<()>>> {
        let names = &config.names;
        let kinesis = aws_sdk_kinesis::Client::new(sdk);
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        let (store, forward, post_process) = (
            Arc::clone(&functions.store),
            Arc::clone(&functions.forward),
            Arc::clone(&functions.post_process),
        );
        let mut tasks = Vec::new();
        let record = config.record_batches;
        let timeout = config.invocation_timeout;
        let deadline = move || invocation_deadline(timeout);
        let (r_store, r_forward, r_counts) = (
            Arc::clone(recorded),
            Arc::clone(recorded),
            Arc::clone(recorded),
        );
        // store and forward each get their own mapping, hence their own checkpoints.
        let store_source = KinesisSource::new(kinesis.clone(), &names.stream).await?;
        let arn = store_source.arn.clone();
        tasks.extend(
            Mapping {
                name: "store",
                source: store_source,
                batch_size: config.batch_size,
                poll_interval: config.poll_interval,
                progress: Arc::clone(progress),
                function: kinesis_source::function(arn, move |event| {
                    if record {
                        r_store.lock().expect("lock").store.push(event.clone());
                    }
                    let store = Arc::clone(&store);
                    Box::pin(async move { store.handle(&event, deadline()).await })
                }),
            }
            .start()
            .await?,
        );
        let forward_source = KinesisSource::new(kinesis.clone(), &names.stream).await?;
        let arn = forward_source.arn.clone();
        tasks.extend(
            Mapping {
                name: "forward",
                source: forward_source,
                batch_size: config.batch_size,
                poll_interval: config.poll_interval,
                progress: Arc::clone(progress),
                function: kinesis_source::function(arn, move |event| {
                    if record {
                        r_forward.lock().expect("lock").forward.push(event.clone());
                    }
                    let forward = Arc::clone(&forward);
                    Box::pin(async move { forward.handle(&event, deadline()).await })
                }),
            }
            .start()
            .await?,
        );
        let counts_source = DynamoStreamSource::new(
            &dynamodb,
            aws_sdk_dynamodbstreams::Client::new(sdk),
            &names.events_table,
        )
        .await?;
        let arn = counts_source.arn.clone();
        tasks.extend(
            Mapping {
                name: "post-process",
                source: counts_source,
                batch_size: config.batch_size,
                poll_interval: config.poll_interval,
                progress: Arc::clone(progress),
                function: dynamodb_source::function(arn, config.window, move |event| {
                    if record {
                        r_counts
                            .lock()
                            .expect("lock")
                            .post_process
                            .push(event.clone());
                    }
                    let post_process = Arc::clone(&post_process);
                    Box::pin(async move { post_process.handle(event, deadline()).await })
                }),
            }
            .start()
            .await?,
        );

        Ok(tasks)
    }

    /// The HTTP API in front of ingest and query: its address and its task.
    async fn start_gateway(
        config: &LocalConfig,
        functions: &Functions,
    ) -> Result<(SocketAddr, JoinHandle<()>)> {
        let (ingest, query) = (Arc::clone(&functions.ingest), Arc::clone(&functions.query));
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("listening on {}", config.bind))?;
        let addr = listener.local_addr()?;
        let app = gateway::router(Gateway {
            ingest: Arc::new(move |e| {
                let h = Arc::clone(&ingest);
                Box::pin(async move { h.handle(&e).await })
            }),
            query: Arc::new(move |e| {
                let h = Arc::clone(&query);
                Box::pin(async move { h.handle(&e).await })
            }),
        });
        let server = tokio::spawn(async move {
            gateway::serve(listener, app).await;
        });
        Ok((addr, server))
    }

    /// Waits until every stream mapping is caught up with nothing in flight (see
    /// [`mapping::Progress`]); `false` after `timeout`.
    pub async fn until_idle(&self, timeout: std::time::Duration) -> bool {
        self.progress.until_idle(timeout).await
    }

    /// Base URL of the HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until a task ends (the server or a mapping), which only happens on a fatal error.
    pub async fn wait(&mut self) {
        if self.tasks.is_empty() {
            return;
        }
        let (_, _, rest) = futures::future::select_all(self.tasks.drain(..)).await;
        self.tasks = rest;
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
