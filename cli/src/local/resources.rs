//! Creates the stack's stream and tables on the emulator, idempotently.
//!
//! The shapes match `template.yaml`: the `events` table keyed (pk, sk) with the `byTime` global
//! index and a `NEW_IMAGE` stream; `counts` keyed (pk, sk); `routes` keyed by `id`.
//!
//! As on AWS, a table is usable only once it is ACTIVE (a new one is CREATING for a while, and
//! answers ResourceNotFoundException until then), and TTL is enabled asynchronously: every step
//! waits for what it needs and says, by name, what did not become ready. Each step stands on its
//! own (TTL is enabled whenever it is not, not only right after creating the table), so a start
//! that failed halfway is completed by the next.

use anyhow::{Context, Result};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use telemetry_shared::aws::event_table::TIME_INDEX;

/// How long a resource may take to become ready before `telemetry local` gives up on it.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How often readiness is asked.
const READY_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Polls `status` until it answers `None` (ready); `Some(state)` is the state it is still in.
/// Fails after [`READY_TIMEOUT`], naming `what` and its last state.
pub async fn wait_until_ready<F, Fut>(what: &str, mut status: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>>>,
{
    let started = tokio::time::Instant::now();
    loop {
        let state = match status().await? {
            None => return Ok(()),
            Some(state) => state,
        };
        if started.elapsed() >= READY_TIMEOUT {
            anyhow::bail!(
                "{what} is not ready after {} s (still {state})",
                READY_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Names of everything the stack uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    /// Kinesis stream.
    pub stream: String,
    /// `events` table.
    pub events_table: String,
    /// `counts` table.
    pub counts_table: String,
    /// `routes` table.
    pub routes_table: String,
    /// `metrics` table (admin-defined metrics' definitions).
    pub metrics_table: String,
    /// The demo queue the demo route `demo.*` sends to.
    pub demo_queue: String,
    /// The forward dead-letter queue.
    pub forward_dlq: String,
}

impl ResourceNames {
    /// The names `telemetry local` uses: `<prefix>-events`, `<prefix>-counts`, ...
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            stream: format!("{prefix}-events"),
            events_table: format!("{prefix}-events"),
            counts_table: format!("{prefix}-counts"),
            routes_table: format!("{prefix}-routes"),
            metrics_table: format!("{prefix}-metrics"),
            demo_queue: format!("{prefix}-demo"),
            forward_dlq: format!("{prefix}-forward-dlq"),
        }
    }
}

/// Creates the Kinesis stream with `shards` shards unless it exists; waits until it is active.
pub async fn ensure_stream(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    shards: i32,
) -> Result<()> {
    let created = client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await;
    if let Err(e) = created
        && !e
            .as_service_error()
            .is_some_and(|se| se.is_resource_in_use_exception())
    {
        return Err(e).with_context(|| format!("creating stream {name}"));
    }
    wait_until_ready(&format!("stream {name}"), || async {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .with_context(|| format!("describing stream {name}"))?;
        let status = summary
            .stream_description_summary()
            .map(|s| s.stream_status().as_str().to_string())
            .unwrap_or_default();
        Ok((status != "ACTIVE").then_some(status))
    })
    .await
}

fn attr(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("name and type set")
}

fn key(name: &str, key_type: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .expect("name and type set")
}

async fn create_table(
    request: aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder,
    name: &str,
) -> Result<()> {
    match request
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // It exists (or is being created): the steps after this one complete it.
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_resource_in_use_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("creating table {name}")),
    }
}

/// Waits until `table` and every index of it are ACTIVE.
pub async fn wait_for_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<()> {
    wait_until_ready(&format!("table {table}"), || async {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .with_context(|| format!("describing table {table}"))?;
        let Some(t) = out.table() else {
            return Ok(Some("not described".into()));
        };
        let status = t.table_status().map(|s| s.as_str()).unwrap_or("unknown");
        if status != "ACTIVE" {
            return Ok(Some(status.to_string()));
        }
        for index in t.global_secondary_indexes() {
            let status = index
                .index_status()
                .map(|s| s.as_str())
                .unwrap_or("unknown");
            if status != "ACTIVE" {
                let name = index.index_name().unwrap_or("?");
                return Ok(Some(format!("ACTIVE, its index {name} {status}")));
            }
        }
        Ok(None)
    })
    .await
}

/// Enables TTL on `attribute` unless it is enabled (or being enabled), then waits for ENABLED.
async fn ensure_ttl(client: &aws_sdk_dynamodb::Client, table: &str, attribute: &str) -> Result<()> {
    let ttl_status = || async {
        let out = client
            .describe_time_to_live()
            .table_name(table)
            .send()
            .await
            .with_context(|| format!("describing TTL of {table}"))?;
        Ok::<_, anyhow::Error>(
            out.time_to_live_description()
                .and_then(|d| d.time_to_live_status())
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "DISABLED".into()),
        )
    };
    if !matches!(ttl_status().await?.as_str(), "ENABLED" | "ENABLING") {
        enable_ttl(client, table, attribute).await?;
    }
    wait_until_ready(&format!("TTL of table {table}"), || async {
        let status = ttl_status().await?;
        Ok((status != "ENABLED").then_some(status))
    })
    .await
}

async fn enable_ttl(client: &aws_sdk_dynamodb::Client, table: &str, attribute: &str) -> Result<()> {
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(attribute)
                .build()
                .expect("fields set"),
        )
        .send()
        .await
        .with_context(|| format!("enabling TTL on {table}"))?;
    Ok(())
}

/// A table as `template.yaml` declares it: the one description `ensure_tables` creates from
/// (`tests/tests/template.rs` compares it with the template). Keys and index keys are strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// The template's logical id.
    pub logical_id: &'static str,
    /// The table's name here.
    pub name: String,
    /// Partition key.
    pub hash: &'static str,
    /// Sort key.
    pub range: Option<&'static str>,
    /// Global secondary indexes: (name, partition key, sort key), projecting everything.
    pub indexes: Vec<(&'static str, &'static str, &'static str)>,
    /// The stream's view type.
    pub stream: Option<StreamViewType>,
    /// The TTL attribute.
    pub ttl: Option<&'static str>,
}

/// The stack's four tables.
pub fn table_specs(names: &ResourceNames) -> Vec<TableSpec> {
    vec![
        TableSpec {
            logical_id: "EventsTable",
            name: names.events_table.clone(),
            hash: "pk",
            range: Some("sk"),
            indexes: vec![(TIME_INDEX, "pk", "timestamp")],
            stream: Some(StreamViewType::NewImage),
            ttl: Some("expiresAt"),
        },
        TableSpec {
            logical_id: "CountsTable",
            name: names.counts_table.clone(),
            hash: "pk",
            range: Some("sk"),
            indexes: Vec::new(),
            stream: None,
            ttl: Some("expiresAt"),
        },
        TableSpec {
            logical_id: "RoutesTable",
            name: names.routes_table.clone(),
            hash: "id",
            range: None,
            indexes: Vec::new(),
            stream: None,
            ttl: None,
        },
        TableSpec {
            logical_id: "MetricsTable",
            name: names.metrics_table.clone(),
            hash: "id",
            range: None,
            indexes: Vec::new(),
            stream: None,
            ttl: None,
        },
    ]
}

/// Creates the four tables unless they exist, and waits until they are ACTIVE with TTL enabled.
pub async fn ensure_tables(client: &aws_sdk_dynamodb::Client, names: &ResourceNames) -> Result<()> {
    let specs = table_specs(names);
    for spec in &specs {
        let mut attributes: Vec<&str> = vec![spec.hash];
        attributes.extend(spec.range);
        let mut request = client
            .create_table()
            .key_schema(key(spec.hash, KeyType::Hash));
        if let Some(range) = spec.range {
            request = request.key_schema(key(range, KeyType::Range));
        }
        for (index, hash, range) in &spec.indexes {
            attributes.extend([*hash, *range]);
            request = request.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(*index)
                    .key_schema(key(hash, KeyType::Hash))
                    .key_schema(key(range, KeyType::Range))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .expect("fields set"),
            );
        }
        attributes.sort_unstable();
        attributes.dedup();
        for attribute in attributes {
            request = request.attribute_definitions(attr(attribute));
        }
        if let Some(view) = &spec.stream {
            request = request.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(view.clone())
                    .build()
                    .expect("fields set"),
            );
        }
        create_table(request, &spec.name).await?;
    }
    // Created together, then waited for: the tables become ACTIVE in parallel.
    for spec in &specs {
        wait_for_table(client, &spec.name).await?;
    }
    for spec in &specs {
        if let Some(attribute) = spec.ttl {
            ensure_ttl(client, &spec.name, attribute).await?;
        }
    }
    Ok(())
}

/// Creates a queue unless it exists (a `.fifo` name makes a FIFO queue); returns its URL.
pub async fn ensure_queue(client: &aws_sdk_sqs::Client, name: &str) -> Result<String> {
    let mut request = client.create_queue().queue_name(name);
    if name.ends_with(".fifo") {
        request = request.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
    }
    let out = request
        .send()
        .await
        .with_context(|| format!("creating queue {name}"))?;
    out.queue_url()
        .map(str::to_string)
        .with_context(|| format!("no URL for queue {name}"))
}

/// Saves the demo route `demo.*` → `queue_url` unless a route `demo` exists.
pub async fn ensure_demo_route(
    routes: &telemetry_shared::aws::route_table::RouteTableStore,
    queue_url: &str,
) -> Result<()> {
    use telemetry_shared::ports::{RouteSource, RouteStore};
    let existing = routes.list_routes().await.context("reading routes")?;
    if existing.iter().any(|r| r.id == "demo") {
        return Ok(());
    }
    let route = telemetry_shared::route::Route {
        id: "demo".into(),
        pattern: "demo.*".into(),
        queue_url: queue_url.to_string(),
        enabled: true,
        description: Some("created by `telemetry local`".into()),
    };
    routes
        .put_route(&route)
        .await
        .context("saving the demo route")?;
    Ok(())
}
