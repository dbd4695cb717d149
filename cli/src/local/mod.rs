//! `telemetry local`: the whole pipeline on a laptop, against the emulator.
//!
//! Creates the stream and tables, serves the HTTP API by playing API Gateway in front of the
//! ingest and query handlers, and plays Lambda's event source mappings for the stream
//! functions. The handlers are the very ones the Lambda binaries run, called in-process.

pub mod gateway;
pub mod kinesis_mapping;
pub mod resources;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use telemetry_shared::auth::AuthConfig;
use tokio::task::JoinHandle;

use self::gateway::{ApiFunction, Gateway};
use self::kinesis_mapping::{KinesisFunction, KinesisMapping};
pub use self::resources::ResourceNames;

/// Everything `telemetry local` needs to know.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Where the HTTP API listens (port 0: any free port).
    pub bind: SocketAddr,
    /// Stream and table names.
    pub names: ResourceNames,
    /// Shards of a newly created stream.
    pub shards: i32,
    /// Token verification (the dev secret).
    pub auth: AuthConfig,
    /// Records per stream-function invocation (Lambda's `BatchSize`).
    pub batch_size: i32,
    /// Wait between polls of an idle shard.
    pub poll_interval: Duration,
    /// ingest's retry budget for Kinesis.
    pub ingest_retry_budget: Duration,
}

impl LocalConfig {
    /// The defaults of `telemetry local`: port 3000, `telemetry-*` resources, 2 shards.
    pub fn new(auth: AuthConfig) -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 3000)),
            names: ResourceNames::with_prefix("telemetry"),
            shards: 2,
            auth,
            batch_size: 100,
            poll_interval: Duration::from_millis(250),
            ingest_retry_budget: Duration::from_secs(5),
        }
    }
}

/// A running local stack; stops when dropped.
pub struct LocalStack {
    /// Address of the HTTP API.
    pub addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl LocalStack {
    /// Creates the resources (idempotently) and starts the API and the stream mappings.
    pub async fn start(config: LocalConfig, sdk: &aws_config::SdkConfig) -> Result<Self> {
        let kinesis = aws_sdk_kinesis::Client::new(sdk);
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        resources::ensure_stream(&kinesis, &config.names.stream, config.shards).await?;
        resources::ensure_tables(&dynamodb, &config.names).await?;

        let ingest = Arc::new(
            ingest::from_config(
                &ingest::Config {
                    stream: config.names.stream.clone(),
                    auth: config.auth.clone(),
                    retry_budget: config.ingest_retry_budget,
                },
                sdk,
            )
            .context("building ingest")?,
        );
        let query = Arc::new(
            query::from_config(
                &query::Config {
                    events_table: config.names.events_table.clone(),
                    auth: config.auth.clone(),
                },
                sdk,
            )
            .context("building query")?,
        );
        let store = Arc::new(store::from_config(
            &store::Config {
                table: config.names.events_table.clone(),
                ttl_days: None,
            },
            sdk,
        ));

        let mut tasks = Vec::new();
        let store_fn: KinesisFunction = Arc::new(move |event| {
            let store = Arc::clone(&store);
            Box::pin(async move { store.handle(&event).await })
        });
        tasks.extend(
            KinesisMapping {
                name: "store",
                client: kinesis.clone(),
                stream: config.names.stream.clone(),
                batch_size: config.batch_size,
                poll_interval: config.poll_interval,
                function: store_fn,
            }
            .start()
            .await?,
        );

        let ingest_fn: ApiFunction = Arc::new(move |event| {
            let ingest = Arc::clone(&ingest);
            Box::pin(async move { ingest.handle(&event).await })
        });
        let query_fn: ApiFunction = Arc::new(move |event| {
            let query = Arc::clone(&query);
            Box::pin(async move { query.handle(&event).await })
        });
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("listening on {}", config.bind))?;
        let addr = listener.local_addr()?;
        let app = gateway::router(Gateway {
            ingest: ingest_fn,
            query: query_fn,
        });
        tasks.push(tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, service).await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        }));
        Ok(Self { addr, tasks })
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
