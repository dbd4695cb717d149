//! `telemetry`: run the pipeline locally, mint dev tokens, send events.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use telemetry_cli::dev::{self, DevState};
use telemetry_cli::local::{LocalConfig, LocalStack, ResourceNames};

#[derive(Parser)]
#[command(
    name = "telemetry",
    version,
    about = "Telemetry Services: local stack and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline against the local emulator (AWS_ENDPOINT_URL, default
    /// http://127.0.0.1:4566) and serve the HTTP API.
    Local {
        /// Port of the HTTP API on 127.0.0.1.
        #[arg(long, default_value_t = 3000)]
        port: u16,
        /// Prefix of the stream and table names.
        #[arg(long, default_value = "telemetry")]
        prefix: String,
    },
    /// Print a DEV-ONLY token signed with the local stack's secret.
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// Space-separated scopes.
        #[arg(long, default_value = "events:write events:read counts:read")]
        scope: String,
        /// Lifetime: 90s, 15m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = dev::parse_ttl)]
        ttl: u64,
    },
    /// Print counts from `GET /v1/counts`.
    Counts(#[command(flatten)] RangeArgs),
    /// Exact active users per day, week or month (and new users per day) as a table.
    Users(#[command(flatten)] RangeArgs),
    /// Define, list, read and delete admin-defined metrics (`/v1/metrics`).
    Metrics {
        #[command(subcommand)]
        action: MetricsAction,
    },
    /// Generate load against an API and print events/s and latency percentiles.
    Load {
        /// Events in all.
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        /// Events per request (1..=500).
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Approximate bytes per event.
        #[arg(long, default_value_t = 1024)]
        event_bytes: usize,
        /// Base URL of the API (default: the local stack's).
        #[arg(long)]
        url: Option<String>,
        /// Bearer token with `events:write` (default: a dev token for `--sub`).
        #[arg(long, env = "TELEMETRY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// User id of the dev token.
        #[arg(long, default_value = "load-user")]
        sub: String,
    },
    /// Re-drive stream records that store or forward gave up on, through that function's
    /// handler (configured from the same environment variables as the function).
    Replay {
        /// The function to re-drive: store or forward.
        #[arg(long, value_parser = ["store", "forward"])]
        function: String,
        /// The Kinesis stream.
        #[arg(long, env = "EVENTS_STREAM")]
        stream: String,
        /// A folder of on-failure records (from the S3 destination: `aws s3 sync s3://BUCKET dir`).
        #[arg(long)]
        failures: Option<std::path::PathBuf>,
        /// Shard of a sequence range.
        #[arg(long)]
        shard: Option<String>,
        /// First sequence number of the range.
        #[arg(long)]
        from_sequence: Option<String>,
        /// Last sequence number of the range (default: the end of the shard).
        #[arg(long)]
        to_sequence: Option<String>,
        /// Re-drive records that arrived from this time (RFC 3339), on every shard.
        #[arg(long)]
        from_time: Option<String>,
        /// ... until this time (default: now).
        #[arg(long)]
        to_time: Option<String>,
    },
    /// Send sample events and print the answer.
    Send {
        /// How many events (split into requests of at most 500).
        #[arg(long, default_value_t = 10)]
        events: usize,
        /// Base URL of the API (default: the local stack's).
        #[arg(long)]
        url: Option<String>,
        /// Bearer token (default: a dev token for `--sub`).
        #[arg(long, env = "TELEMETRY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// User id of the dev token.
        #[arg(long, default_value = "demo-user")]
        sub: String,
        /// Event type.
        #[arg(long = "type", default_value = "demo.cli_event")]
        kind: String,
    },
}

/// The API a client command talks to.
#[derive(clap::Args)]
struct ApiArgs {
    /// Base URL of the API (default: the local stack's).
    #[arg(long)]
    url: Option<String>,
    /// Bearer token (default: a dev token with the scope the command needs).
    #[arg(long, env = "TELEMETRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum MetricsAction {
    /// List the metrics (deleted ones included).
    List(#[command(flatten)] ApiArgs),
    /// Define a metric (`PUT /v1/metrics/{id}`, scope admin); an existing one only changes its
    /// description.
    Define {
        /// The metric's id.
        id: String,
        /// The event type it measures.
        #[arg(long = "type")]
        kind: String,
        /// The numeric path inside data to sum (`data.amount`).
        #[arg(long)]
        sum: Option<String>,
        /// Breakdown: `origin`, `environment` or `data.<path>`.
        #[arg(long)]
        by: Option<String>,
        /// The only environment it measures (default: all).
        #[arg(long)]
        environment: Option<String>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print a metric's values per bucket, with its breakdown.
    Values {
        /// The metric's id.
        id: String,
        /// minute, hour (default) or day.
        #[arg(long)]
        granularity: Option<String>,
        /// Start (RFC 3339; default: the API's).
        #[arg(long)]
        from: Option<String>,
        /// End (RFC 3339; default: now).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete a metric: it stops applying; what it measured stays readable (scope admin).
    Delete {
        /// The metric's id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Points the SDK at the emulator with dummy credentials, unless the caller chose otherwise.
/// Runs before the runtime starts any thread (setting variables is only sound then).
fn default_to_emulator() {
    let defaults = [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    for (name, value) in defaults {
        if std::env::var_os(name).is_none() {
            // SAFETY: single-threaded here: called from `main` before the Tokio runtime exists.
            unsafe { std::env::set_var(name, value) };
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Local { .. }) {
        default_to_emulator();
    }
    telemetry_shared::logging::init_cli();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli.command))
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Local { port, prefix } => local(port, &prefix).await,
        Command::Token { sub, scope, ttl } => {
            println!("{}", DevState::load()?.token(&sub, &scope, ttl)?);
            Ok(())
        }
        Command::Counts(range) => counts(range).await,
        Command::Users(range) => users(range).await,
        Command::Metrics { action } => metrics(action).await,
        Command::Load {
            events,
            batch,
            concurrency,
            event_bytes,
            url,
            token,
            sub,
        } => load(events, batch, concurrency, event_bytes, url, token, sub).await,
        Command::Replay {
            function,
            stream,
            failures,
            shard,
            from_sequence,
            to_sequence,
            from_time,
            to_time,
        } => {
            replay_records(
                function,
                stream,
                failures,
                shard,
                from_sequence,
                to_sequence,
                from_time,
                to_time,
            )
            .await
        }
        Command::Send {
            events,
            url,
            token,
            sub,
            kind,
        } => send(events, url, token, sub, kind).await,
    }
}

/// The range options of `telemetry counts` and `telemetry users`.
#[derive(clap::Args)]
struct RangeArgs {
    /// Event type (default: all types together).
    #[arg(long = "type")]
    kind: Option<String>,
    /// Bucket size: minute, hour or day for counts (default hour); day, week or month for
    /// users (default day).
    #[arg(long)]
    granularity: Option<String>,
    /// Environment.
    #[arg(long, default_value = "prod")]
    environment: String,
    /// Start (RFC 3339; default: the API's — 24 hours, 60 minutes or 30 days of counts, 30
    /// days, 12 weeks or 12 months of users — before `to`).
    #[arg(long)]
    from: Option<String>,
    /// End (RFC 3339; default: now).
    #[arg(long)]
    to: Option<String>,
    /// Base URL of the API (default: the local stack's).
    #[arg(long)]
    url: Option<String>,
    /// Bearer token with `counts:read` (default: a dev token).
    #[arg(long, env = "TELEMETRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// `GET <path>` with a range query (`/v1/counts`, `/v1/users`), the answer's body, after a
/// heading; a refusal is an error with its status and body. What is not given is the API's
/// default.
async fn range_answer(path: &str, range: RangeArgs) -> Result<serde_json::Value> {
    let mut query = vec![("environment", range.environment)];
    query.extend(range.granularity.map(|g| ("granularity", g)));
    query.extend(range.kind.map(|k| ("type", k)));
    query.extend(range.from.map(|f| ("from", f)));
    query.extend(range.to.map(|t| ("to", t)));
    let api = ApiArgs {
        url: range.url,
        token: range.token,
    };
    let text = api_call(
        api,
        "counts-reader",
        "counts:read",
        reqwest::Method::GET,
        path,
        &query,
        None,
    )
    .await?;
    let body: serde_json::Value = serde_json::from_str(&text)?;
    println!(
        "{} {} {}, environment {}, {} .. {}",
        body["type"].as_str().unwrap_or("all types"),
        body["granularity"].as_str().unwrap_or(""),
        path.trim_start_matches("/v1/"),
        body["environment"].as_str().unwrap_or(""),
        body["from"].as_str().unwrap_or(""),
        body["to"].as_str().unwrap_or("")
    );
    Ok(body)
}

/// `telemetry counts`: counts per bucket as a table.
async fn counts(range: RangeArgs) -> Result<()> {
    let body = range_answer("/v1/counts", range).await?;
    let buckets = body["buckets"].as_array().cloned().unwrap_or_default();
    if buckets.is_empty() {
        println!("  (no events in this range)");
    }
    for b in buckets {
        println!(
            "  {}  {:>10}",
            b["start"].as_str().unwrap_or(""),
            b["count"]
        );
    }
    Ok(())
}

/// `telemetry users`: active (and, per day, new) users as a table.
async fn users(range: RangeArgs) -> Result<()> {
    let body = range_answer("/v1/users", range).await?;
    let buckets = body["buckets"].as_array().cloned().unwrap_or_default();
    if buckets.is_empty() {
        println!("  (no users in this range)");
    } else {
        println!("  {:<20}  {:>10}  {:>10}", "start", "active", "new");
    }
    for b in buckets {
        println!(
            "  {:<20}  {:>10}  {:>10}",
            b["start"].as_str().unwrap_or(""),
            b["active"],
            b["new"].as_u64().map_or(String::new(), |n| n.to_string())
        );
    }
    Ok(())
}

/// One call of the API, as the dev user `dev_user` with `scope` unless a token is given: the
/// answer's text, or an error with its status and body.
async fn api_call(
    api: ApiArgs,
    dev_user: &str,
    scope: &str,
    method: reqwest::Method,
    path: &str,
    query: &[(&str, String)],
    body: Option<serde_json::Value>,
) -> Result<String> {
    let (url, token) = target(api.url, api.token, dev_user, scope)?;
    let mut request = reqwest::Client::new()
        .request(
            method.clone(),
            format!("{}{path}", url.trim_end_matches('/')),
        )
        .query(query)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {path}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{method} {path}: {status}: {text}");
    }
    Ok(text)
}

/// `telemetry metrics ...`.
async fn metrics(action: MetricsAction) -> Result<()> {
    use telemetry_cli::metrics as m;
    match action {
        MetricsAction::List(api) => {
            let text = api_call(
                api,
                "metrics-admin",
                "counts:read",
                reqwest::Method::GET,
                "/v1/metrics",
                &[],
                None,
            )
            .await?;
            print!("{}", m::definitions_table(&serde_json::from_str(&text)?));
        }
        MetricsAction::Define {
            id,
            kind,
            sum,
            by,
            environment,
            description,
            api,
        } => {
            let body = m::definition_body(
                &kind,
                sum.as_deref(),
                by.as_deref(),
                environment.as_deref(),
                description.as_deref(),
            );
            let path = format!("/v1/metrics/{id}");
            let text = api_call(
                api,
                "metrics-admin",
                "admin",
                reqwest::Method::PUT,
                &path,
                &[],
                Some(body),
            )
            .await?;
            let def: serde_json::Value = serde_json::from_str(&text)?;
            println!(
                "metric {id}: applies to events stored from {}",
                def["effectiveAt"].as_str().unwrap_or("?")
            );
        }
        MetricsAction::Values {
            id,
            granularity,
            from,
            to,
            api,
        } => {
            let mut query = Vec::new();
            query.extend(granularity.map(|g| ("granularity", g)));
            query.extend(from.map(|f| ("from", f)));
            query.extend(to.map(|t| ("to", t)));
            let path = format!("/v1/metrics/{id}/values");
            let text = api_call(
                api,
                "metrics-admin",
                "counts:read",
                reqwest::Method::GET,
                &path,
                &query,
                None,
            )
            .await?;
            let head: serde_json::Value = serde_json::from_str(&text)?;
            println!(
                "{id} ({}) per {}, {} .. {}",
                head["metric"]["type"].as_str().unwrap_or(""),
                head["granularity"].as_str().unwrap_or(""),
                head["from"].as_str().unwrap_or(""),
                head["to"].as_str().unwrap_or("")
            );
            print!("{}", m::values_table(&serde_json::from_str(&text)?));
        }
        MetricsAction::Delete { id, api } => {
            let path = format!("/v1/metrics/{id}");
            let text = api_call(
                api,
                "metrics-admin",
                "admin",
                reqwest::Method::DELETE,
                &path,
                &[],
                None,
            )
            .await?;
            let def: serde_json::Value = serde_json::from_str(&text)?;
            println!(
                "metric {id}: stops applying at {}",
                def["retiredAt"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

/// `telemetry load`: the load generator and its report.
async fn load(
    events: usize,
    batch: usize,
    concurrency: usize,
    event_bytes: usize,
    url: Option<String>,
    token: Option<String>,
    sub: String,
) -> Result<()> {
    let (url, token) = target(url, token, &sub, "events:write")?;
    let report = telemetry_cli::load::run(&telemetry_cli::load::LoadConfig {
        url: url.clone(),
        token,
        events,
        batch,
        concurrency,
        event_bytes,
    })
    .await?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!(
        "{} events in {} requests of {batch} to {url}, {concurrency} in flight: {:.1} s",
        report.accepted,
        report.requests,
        report.elapsed.as_secs_f64()
    );
    println!(
        "  {:.0} events/s, {} retries after 429/503",
        report.events_per_second(),
        report.retries
    );
    println!(
        "  request latency p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        ms(report.percentile(50.0)),
        ms(report.percentile(90.0)),
        ms(report.percentile(99.0)),
        ms(report.percentile(100.0))
    );
    Ok(())
}

/// `telemetry replay`: re-drives records through store or forward.
#[allow(clippy::too_many_arguments)]
async fn replay_records(
    function: String,
    stream: String,
    failures: Option<std::path::PathBuf>,
    shard: Option<String>,
    from_sequence: Option<String>,
    to_sequence: Option<String>,
    from_time: Option<String>,
    to_time: Option<String>,
) -> Result<()> {
    use telemetry_cli::replay::{Range, replay};
    let time = |s: Option<String>| -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        s.map(|s| {
            telemetry_shared::time::parse(&s).with_context(|| format!("`{s}` is not RFC 3339"))
        })
        .transpose()
    };
    let ranges = match (failures, shard, from_sequence, time(from_time)?) {
        (Some(dir), None, None, None) => telemetry_cli::replay::ranges_from_failure_records(&dir)?,
        (None, Some(shard), Some(from), None) => vec![Range::Sequence {
            shard,
            from,
            to: to_sequence,
        }],
        (None, None, None, Some(from)) => vec![Range::Time {
            from,
            to: time(to_time)?,
        }],
        _ => anyhow::bail!(
            "name what to replay: --failures DIR, or --shard with --from-sequence, or --from-time"
        ),
    };
    let sdk = telemetry_shared::aws::sdk_config().await?;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let env = telemetry_shared::config::Env::process();
    let mut total = telemetry_cli::replay::ReplayReport::default();
    for range in &ranges {
        let report = if function == "store" {
            let handler = store::from_config(&store::Config::from_env(&env)?, &sdk);
            replay(&kinesis, &stream, range, |e, d| {
                let h = &handler;
                async move { h.handle(&e, d).await }
            })
            .await?
        } else {
            let handler = forward::from_config(&forward::Config::from_env(&env)?, &sdk);
            replay(&kinesis, &stream, range, |e, d| {
                let h = &handler;
                async move { h.handle(&e, d).await }
            })
            .await?
        };
        println!(
            "{range:?}: {} records in {} batches, {} still failing",
            report.records, report.batches, report.failed
        );
        total.records += report.records;
        total.batches += report.batches;
        total.failed += report.failed;
    }
    println!(
        "replayed {} records to {function}; {} still failing",
        total.records, total.failed
    );
    if total.failed > 0 {
        anyhow::bail!(
            "{} records still fail; see the function's logs",
            total.failed
        );
    }
    Ok(())
}

/// `telemetry send`: sample events, in requests of at most 500.
async fn send(
    events: usize,
    url: Option<String>,
    token: Option<String>,
    sub: String,
    kind: String,
) -> Result<()> {
    let (url, token) = target(url, token, &sub, "events:write")?;
    let client = reqwest::Client::new();
    let mut left = events.max(1);
    while left > 0 {
        let n = left.min(500);
        let body = telemetry_cli::send::sample_events(n, &kind);
        let (status, answer) =
            telemetry_cli::send::post_events(&client, &url, &token, &body).await?;
        println!("{status} {answer}");
        left -= n;
    }
    Ok(())
}

/// The API base URL and token: given ones, else the local stack's URL and a dev token.
fn target(
    url: Option<String>,
    token: Option<String>,
    sub: &str,
    scope: &str,
) -> Result<(String, String)> {
    let state = DevState::load();
    let url = match (url, &state) {
        (Some(u), _) => u,
        (None, Ok(s)) => s.url.clone(),
        (None, Err(_)) => "http://127.0.0.1:3000".into(),
    };
    let token = match token {
        Some(t) => t,
        None => state?.token(sub, scope, 3600)?,
    };
    Ok((url, token))
}

async fn local(port: u16, prefix: &str) -> Result<()> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let url = format!("http://127.0.0.1:{port}");
    let (state, generated) = DevState::from_env(url.clone());
    let mut config = LocalConfig::new(state.auth_config());
    config.bind = SocketAddr::from(([127, 0, 0, 1], port));
    config.names = ResourceNames::with_prefix(prefix);
    // The functions' settings as in Lambda: read by each function (a malformed value stops
    // start-up, naming the variable).
    config.settings = telemetry_shared::config::Env::process();

    let sdk = telemetry_shared::aws::sdk_config().await?;
    let mut stack = LocalStack::start(config.clone(), &sdk)
        .await
        .with_context(|| format!("starting the local stack against {endpoint} (is the emulator running? `make dev` starts it)"))?;
    let state_path = state.save()?;
    let token = state.token("demo-user", "events:write events:read counts:read", 3600)?;

    println!("Telemetry Services, local stack");
    println!("  HTTP API   {}", stack.url());
    println!("  emulator   {endpoint}");
    println!(
        "  stream     {} ({} shards)",
        config.names.stream, config.shards
    );
    println!(
        "  tables     {}, {}, {}, {}",
        config.names.events_table,
        config.names.counts_table,
        config.names.routes_table,
        config.names.metrics_table
    );
    println!("  demo route demo.* -> {}", stack.demo_queue_url);
    println!("  dead letters       {}", stack.dlq_url);
    if generated {
        println!(
            "  JWT secret {}  (DEV ONLY, generated; set JWT_SECRET to choose one)",
            state.secret
        );
    }
    println!(
        "  issuer     {}   audience {}",
        state.issuer, state.audience
    );
    println!("  state      {}", state_path.display());
    println!();
    println!("DEV-ONLY token for sub=demo-user (1 h; `telemetry token --sub NAME` makes others):");
    println!("{token}");
    println!();
    println!("Try:");
    println!("  TOKEN=$(target/debug/telemetry token --sub demo-user)");
    println!(
        "  curl -s -X POST {url}/v1/events -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{{\"type\":\"demo.hello\",\"data\":{{\"n\":1}}}}'"
    );
    println!("  curl -s \"{url}/v1/events?limit=10\" -H \"Authorization: Bearer $TOKEN\"");
    println!("  target/debug/telemetry counts --type demo.hello --granularity minute");
    println!();
    println!("Ctrl-C stops.");

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = stack.wait() => anyhow::bail!("the local stack stopped unexpectedly"),
    }
    Ok(())
}
