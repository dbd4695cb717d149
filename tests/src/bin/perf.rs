//! Performance figures that criterion cannot take (run by `make bench`, against the emulator):
//!
//! * `perf cold-start [--runs 20]`: every function's release binary, and a hello-world
//!   `lambda_runtime` binary built the same way (the floor), under a fake Lambda Runtime API:
//!   exec → first `/invocation/next` (init), exec → first response to a real event (cold), the
//!   same event's warm response, and peak RSS on the function's largest input.
//! * `perf requests [--events 10000]`: the local stack behind a counting proxy; every AWS
//!   request by operation beside the minimum for the batches as they were delivered, and what
//!   that costs per million events at list prices.
//!
//! * `perf units`: DynamoDB units per event and post-process's ceiling per shard, by simulation
//!   (no emulator: see `telemetry_e2e::units`).
//!
//! Each writes its figures as JSON to `target/bench/` for the summary table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use telemetry_cli::local::{LocalConfig, LocalStack, ResourceNames, resources};
use telemetry_e2e::runtime::{FakeRuntime, lambda_env};
use telemetry_e2e::{emulator_url, sdk_config_for, unique_prefix};

const FIXTURE_SECRET: &str = "dev-only-secret-for-sam-local-invoke-do-not-deploy";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(root().join("events").join(name)).expect("fixture")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

/// One function under test: binary, environment, a typical event and its largest input.
struct Subject {
    name: &'static str,
    env: Vec<(String, String)>,
    event: Vec<u8>,
    largest: Vec<u8>,
    /// A queue the function sends to, emptied after each run, so every run sends into the same
    /// empty queue.
    queue: Option<String>,
}

/// A `POST /v1/events` API Gateway event with a ~1 MiB body (500 events of ~2 KiB).
fn largest_ingest_event() -> Vec<u8> {
    let mut event: Value = serde_json::from_str(&fixture("ingest-post-events.json")).unwrap();
    event["body"] = telemetry_shared::sample::request_body(500, 2040).into();
    serde_json::to_vec(&event).unwrap()
}

async fn subjects(endpoint: &str) -> Result<Vec<Subject>> {
    let sdk = sdk_config_for(endpoint).await;
    let names = ResourceNames::with_prefix(&unique_prefix());
    resources::ensure_stream(&aws_sdk_kinesis::Client::new(&sdk), &names.stream, 1).await?;
    resources::ensure_tables(&aws_sdk_dynamodb::Client::new(&sdk), &names).await?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = resources::ensure_queue(&sqs, &names.demo_queue).await?;
    let dlq = resources::ensure_queue(&sqs, &names.forward_dlq).await?;
    let routes = telemetry_shared::aws::route_table::RouteTableStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        names.routes_table.clone(),
    );
    telemetry_shared::ports::RouteStore::put_route(
        &routes,
        &telemetry_shared::route::Route {
            id: "all".into(),
            pattern: "*".into(),
            queue_url: queue.clone(),
            enabled: true,
            description: None,
        },
    )
    .await?;

    let common = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("AWS_ENDPOINT_URL".into(), endpoint.to_string()));
        env.push(("RUST_LOG".into(), "warn".into()));
        env
    };
    let jwt = [
        ("JWT_ALGORITHMS", "HS256"),
        ("JWT_SECRET", FIXTURE_SECRET),
        ("JWT_ISSUER", "telemetry-local"),
        ("JWT_AUDIENCE", "telemetry"),
    ];
    let kinesis =
        |n| serde_json::to_vec(&telemetry_shared::sample::kinesis_event(n, 1024)).unwrap();
    let mut ingest_env = vec![("EVENTS_STREAM", names.stream.as_str())];
    ingest_env.extend(jwt);
    let mut query_env = vec![
        ("EVENTS_TABLE", names.events_table.as_str()),
        ("COUNTS_TABLE", names.counts_table.as_str()),
        ("ROUTES_TABLE", names.routes_table.as_str()),
        ("METRICS_TABLE", names.metrics_table.as_str()),
    ];
    query_env.extend(jwt);
    Ok(vec![
        Subject {
            name: "hello-lambda",
            env: common(&[]),
            event: b"{\"hello\":\"world\"}".to_vec(),
            largest: b"{\"hello\":\"world\"}".to_vec(),
            queue: None,
        },
        Subject {
            name: "ingest",
            env: common(&ingest_env),
            event: fixture("ingest-post-events.json").into_bytes(),
            largest: largest_ingest_event(),
            queue: None,
        },
        Subject {
            name: "store",
            env: common(&[("EVENTS_TABLE", &names.events_table)]),
            event: kinesis(100),
            largest: kinesis(1000),
            queue: None,
        },
        Subject {
            name: "forward",
            env: common(&[
                ("ROUTES_TABLE", &names.routes_table),
                ("FORWARD_DLQ_URL", &dlq),
            ]),
            event: kinesis(100),
            largest: kinesis(1000),
            queue: Some(queue.clone()),
        },
        Subject {
            name: "post-process",
            env: common(&[
                ("COUNTS_TABLE", &names.counts_table),
                ("METRICS_TABLE", &names.metrics_table),
            ]),
            event: telemetry_shared::sample::window_event_json(100).into_bytes(),
            largest: telemetry_shared::sample::window_event_json(1000).into_bytes(),
            queue: None,
        },
        Subject {
            name: "query",
            env: common(&query_env),
            event: fixture("query-get-events.json").into_bytes(),
            largest: fixture("query-get-events.json").into_bytes(),
            queue: None,
        },
    ])
}

struct Run {
    init_ms: f64,
    cold_ms: f64,
    warm_ms: f64,
    peak_rss_kb: Option<u64>,
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Starts `binary` under a fresh fake runtime with `first` queued; measures init and the first
/// answer; then, if `second` is given, the warm answer to it.
async fn run_once(
    binary: &Path,
    subject: &Subject,
    first: &[u8],
    second: Option<&[u8]>,
) -> Result<Run> {
    let runtime = FakeRuntime::start().await;
    runtime.invoke("cold", first.to_vec());
    let start = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .envs(lambda_env(&runtime, subject.name))
        .envs(subject.env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let cold = runtime
        .answer("cold", Duration::from_secs(60))
        .await
        .with_context(|| format!("{}: no answer", subject.name))?;
    if !cold.ok {
        bail!(
            "{} failed: {}",
            subject.name,
            String::from_utf8_lossy(&cold.body)
        );
    }
    let init = runtime.first_next().context("never asked for work")? - start;
    let mut warm_ms = f64::NAN;
    if let Some(event) = second {
        let t0 = Instant::now();
        runtime.invoke("warm", event.to_vec());
        let warm = runtime
            .answer("warm", Duration::from_secs(60))
            .await
            .context("no warm answer")?;
        warm_ms = (warm.at - t0).as_secs_f64() * 1e3;
    }
    let peak = child.id().and_then(peak_rss_kb);
    child.start_kill()?;
    let _ = child.wait().await;
    Ok(Run {
        init_ms: init.as_secs_f64() * 1e3,
        cold_ms: (cold.at - start).as_secs_f64() * 1e3,
        warm_ms,
        peak_rss_kb: peak,
    })
}

async fn cold_start(runs: usize) -> Result<Value> {
    let endpoint = emulator_url();
    let release = root().join("target/release");
    let mut rows = Vec::new();
    let sqs = aws_sdk_sqs::Client::new(&sdk_config_for(&endpoint).await);
    for subject in subjects(&endpoint).await? {
        let binary = release.join(subject.name);
        if !binary.exists() {
            bail!(
                "{} is missing: build with `cargo build --release -p {}`",
                binary.display(),
                subject.name
            );
        }
        let (mut init, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let r = run_once(&binary, &subject, &subject.event, Some(&subject.event)).await?;
            init.push(r.init_ms);
            cold.push(r.cold_ms);
            warm.push(r.warm_ms);
            if let Some(queue) = &subject.queue {
                // Emptied by receiving: PurgeQueue is allowed once a minute.
                while !telemetry_e2e::take_messages(&sqs, queue).await?.is_empty() {}
            }
        }
        let largest = run_once(&binary, &subject, &subject.largest, None).await?;
        let size = std::fs::metadata(&binary)?.len();
        let (init, cold, warm) = (median(&mut init), median(&mut cold), median(&mut warm));
        println!(
            "{:<13} init {:>7.2} ms  first response {:>7.2} ms  warm {:>7.2} ms  cold overhead {:>7.2} ms  peak RSS {:>6} KiB  binary {:>9} bytes",
            subject.name,
            init,
            cold,
            warm,
            cold - warm,
            largest.peak_rss_kb.unwrap_or(0),
            size
        );
        rows.push(json!({
            "function": subject.name, "runs": runs, "init_ms": init, "first_response_ms": cold,
            "warm_ms": warm, "cold_overhead_ms": cold - warm,
            "peak_rss_kib_largest_input": largest.peak_rss_kb, "largest_input_bytes": subject.largest.len(),
            "binary_bytes": size,
        }));
    }
    Ok(json!({ "cold_start": rows }))
}

/// Waits until `check` holds, or fails after `timeout`.
async fn until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > timeout {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

async fn requests(events: usize) -> Result<Value> {
    let endpoint = emulator_url();
    // A clean emulator: earlier runs' streams would slow it down.
    reqwest::Client::new()
        .post(format!("{endpoint}/moto-api/reset"))
        .send()
        .await
        .context("resetting the emulator")?;
    let (proxy, counts) = telemetry_e2e::aws_proxy::start(&endpoint).await;
    // The emulator slows down as the stream grows: patient timeouts, so that what is counted
    // is the code's requests, not retries of calls the emulator was too slow to answer.
    let sdk = telemetry_e2e::patient_sdk_config_for(&proxy).await;
    let direct = telemetry_e2e::patient_sdk_config_for(&endpoint).await;
    let mut config = LocalConfig::new(telemetry_e2e::hs256_auth());
    config.bind = ([127, 0, 0, 1], 0).into();
    config.names = ResourceNames::with_prefix(&unique_prefix());
    config.record_batches = true;
    config.poll_interval = Duration::from_millis(200);
    // Larger batches than the template's 100: the emulator re-scans a shard on every
    // GetRecords, so fewer polls keep a 10,000-event run to minutes. The minimum is computed
    // for the batches as delivered, whatever their size.
    config.batch_size = 500;
    // Lambda's longest timeout (900 s) instead of the template's 30 s: on AWS a 500-record
    // forward invocation takes well under a second, but the single-threaded emulator, busy
    // re-scanning the stream, can take longer than 28 s, and a handler that stops at its
    // deadline gets its batch again — requests the emulator caused, not the code.
    config.invocation_timeout = Duration::from_secs(900);
    let stack = LocalStack::start(config.clone(), &sdk).await?;
    // Routes: game events to one queue, errors to another (FIFO), as a deployment might.
    let sqs = aws_sdk_sqs::Client::new(&direct);
    let game = resources::ensure_queue(&sqs, &format!("{}-game", config.names.stream)).await?;
    let errors =
        resources::ensure_queue(&sqs, &format!("{}-errors.fifo", config.names.stream)).await?;
    let admin = telemetry_e2e::token("ops", "admin");
    let http = reqwest::Client::new();
    for (id, pattern, queue) in [("game", "game.*", &game), ("errors", "*.error", &errors)] {
        let r = http
            .put(format!("{}/v1/routes/{id}", stack.url()))
            .bearer_auth(&admin)
            .json(&json!({"match": pattern, "queueUrl": queue}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "route {id}: {}", r.status());
    }
    counts.lock().expect("lock").clear();
    // Subscribers consume the queues as the events arrive (straight from the emulator, so
    // their requests are not counted): the emulator's SendMessage slows down with every
    // message a queue holds.
    let game_subscriber = telemetry_e2e::QueueSubscriber::start(sqs.clone(), game.clone());
    let errors_subscriber = telemetry_e2e::QueueSubscriber::start(sqs.clone(), errors.clone());

    let writer = telemetry_e2e::token("load-user", "events:write");
    let per_request = 500;
    let started = Instant::now();
    let bodies: Vec<Value> = (0..events.div_ceil(per_request))
        .map(|r| {
            let n = per_request.min(events - r * per_request);
            let list: Vec<Value> = (0..n)
                .map(|i| {
                    let mut e = telemetry_shared::sample::client_event(r * per_request + i, 1024);
                    e["timestamp"] = chrono::Utc::now().to_rfc3339().into();
                    e
                })
                .collect();
            json!({ "events": list })
        })
        .collect();
    let requests = bodies.len();
    let sends = bodies.into_iter().map(|body| {
        let (http, url, writer) = (&http, stack.url(), &writer);
        async move {
            let r = http
                .post(format!("{url}/v1/events"))
                .bearer_auth(writer)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(r.status().as_u16() == 202, "POST answered {}", r.status());
            Ok::<_, anyhow::Error>(())
        }
    });
    for result in futures_join(sends, 4).await {
        result?;
    }

    // Wait for the whole pipeline, reading the emulator directly (not through the proxy).
    let ddb = aws_sdk_dynamodb::Client::new(&direct);
    let counts_table = config.names.counts_table.clone();
    until("every event counted", Duration::from_secs(1800), || {
        let (ddb, table) = (&ddb, &counts_table);
        async move {
            let day = telemetry_shared::count::format_bucket(
                telemetry_shared::count::Granularity::Day.bucket_start(chrono::Utc::now()),
            );
            let store =
                telemetry_shared::aws::count_table::CountTable::new(ddb.clone(), table.clone(), 8);
            let pk = telemetry_shared::count::partition_key(
                "prod",
                "*",
                telemetry_shared::count::Granularity::Day,
            );
            let partials =
                telemetry_shared::ports::CountReader::read_partials(&store, &pk, &day, &day)
                    .await
                    .unwrap_or_default();
            partials.iter().map(|(_, c)| c).sum::<u64>() >= events as u64
        }
    })
    .await?;
    let expected_forwarded = (0..events)
        .filter(|i| {
            let kind = telemetry_shared::sample::TYPES[i % telemetry_shared::sample::TYPES.len()];
            kind.starts_with("game.") || kind.ends_with(".error")
        })
        .count();
    until(
        "every routed event forwarded",
        Duration::from_secs(1800),
        || {
            let forwarded = game_subscriber.distinct() + errors_subscriber.distinct();
            async move { forwarded >= expected_forwarded }
        },
    )
    .await?;
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = counts.lock().expect("lock").clone();
    let recorded = stack.recorded.lock().expect("lock");

    // Minimum requests for the batches as delivered.
    let min_put = events.div_ceil(per_request) as u64;
    let min_batch_write: u64 = recorded
        .store
        .iter()
        .map(|e| {
            let decoded: Vec<_> = e
                .records
                .iter()
                .filter_map(|r| telemetry_shared::record::decode(&r.kinesis.data).ok())
                .collect();
            let keys: Vec<(&str, &str)> = decoded
                .iter()
                .map(|d| (d.user_id.as_ref(), d.id.as_ref()))
                .collect();
            telemetry_shared::aws::event_table::plan_calls(&keys)
                .0
                .len() as u64
        })
        .sum();
    let routes = telemetry_shared::route::RouteTable::new(vec![
        route("game", "game.*", &game),
        route("errors", "*.error", &errors),
        route("demo", "demo.*", &stack.demo_queue_url),
    ]);
    let min_send: u64 = recorded
        .forward
        .iter()
        .map(|e| {
            forward::plan(e, &routes).batch_calls(telemetry_shared::delivery::MAX_SQS_BYTES) as u64
        })
        .sum();
    // One update per partial counter of each batch, and one per users counter a marker first
    // created by that batch adds to (markers made by an earlier batch count nothing).
    let mut markers_made: BTreeMap<telemetry_shared::users::Marker, String> = BTreeMap::new();
    let min_update: u64 = recorded
        .post_process
        .iter()
        .map(|e| {
            let shard = e
                .time_window_properties
                .shard_id
                .as_deref()
                .unwrap_or_default();
            let batch = post_process::aggregate(&mut e.dynamo_db_event.records.clone());
            let resolved: BTreeMap<_, _> = batch
                .markers
                .iter()
                .map(|(marker, seq)| {
                    let by = markers_made
                        .entry(marker.clone())
                        .or_insert_with(|| telemetry_shared::users::by(shard, seq));
                    (marker.clone(), by.clone())
                })
                .collect();
            let users =
                telemetry_shared::users::user_updates(shard, &batch.received, &resolved, None);
            (batch.updates.len() + users.len()) as u64
        })
        .sum();
    let get = |op: &str| seen.get(op).copied().unwrap_or(0);
    let rows = [
        (
            "ingest",
            "Kinesis PutRecords",
            get("Kinesis_20131202.PutRecords"),
            min_put,
        ),
        (
            "store",
            "DynamoDB BatchWriteItem",
            get("DynamoDB_20120810.BatchWriteItem"),
            min_batch_write,
        ),
        (
            "forward",
            "SQS SendMessageBatch",
            get("AmazonSQS.SendMessageBatch"),
            min_send,
        ),
        (
            "post-process",
            "DynamoDB UpdateItem",
            get("DynamoDB_20120810.UpdateItem"),
            min_update,
        ),
    ];
    println!(
        "{events} events in {requests} requests, through the local stack in {:.1} s",
        elapsed.as_secs_f64()
    );
    let delivered = |batches: &[aws_lambda_events::kinesis::KinesisEvent]| {
        batches.iter().map(|e| e.records.len()).sum::<usize>()
    };
    println!(
        "records delivered: store {} in {} batches, forward {} in {} batches, post-process {} in {} batches",
        delivered(&recorded.store),
        recorded.store.len(),
        delivered(&recorded.forward),
        recorded.forward.len(),
        recorded
            .post_process
            .iter()
            .map(|e| e.dynamo_db_event.records.len())
            .sum::<usize>(),
        recorded.post_process.len()
    );
    println!(
        "{:<13} {:<26} {:>8} {:>8} {:>6}",
        "function", "operation", "actual", "minimum", "ratio"
    );
    let mut table = Vec::new();
    for (function, op, actual, minimum) in rows {
        let ratio = actual as f64 / minimum.max(1) as f64;
        println!("{function:<13} {op:<26} {actual:>8} {minimum:>8} {ratio:>6.2}");
        table.push(json!({"function": function, "operation": op, "actual": actual, "minimum": minimum, "ratio": ratio}));
    }
    println!("every request seen by the proxy (event source mapping polling included):");
    for (op, n) in &seen {
        println!("  {op:<45} {n:>7}");
    }
    let per_million = |n: u64| n as f64 * 1_000_000.0 / events as f64;
    Ok(json!({
        "requests": {
            "events": events, "http_requests": requests, "seconds": elapsed.as_secs_f64(),
            "batches": {"store": recorded.store.len(), "forward": recorded.forward.len(), "post_process": recorded.post_process.len()},
            "rows": table,
            "all_operations": seen,
            "per_million_events": {
                "PutRecords": per_million(get("Kinesis_20131202.PutRecords")),
                "BatchWriteItem": per_million(get("DynamoDB_20120810.BatchWriteItem")),
                "SendMessageBatch": per_million(get("AmazonSQS.SendMessageBatch")),
                "UpdateItem": per_million(get("DynamoDB_20120810.UpdateItem")),
                "GetItem": per_million(get("DynamoDB_20120810.GetItem")),
                "store_invocations": per_million(recorded.store.len() as u64),
                "forward_invocations": per_million(recorded.forward.len() as u64),
                "post_process_invocations": per_million(recorded.post_process.len() as u64),
                "ingest_invocations": per_million(requests as u64),
            }
        }
    }))
}

fn route(id: &str, pattern: &str, queue: &str) -> telemetry_shared::route::Route {
    telemetry_shared::route::Route {
        id: id.into(),
        pattern: pattern.into(),
        queue_url: queue.into(),
        enabled: true,
        description: None,
    }
}

/// Runs futures with at most `limit` in flight, keeping their results.
async fn futures_join<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
    limit: usize,
) -> Vec<F::Output> {
    use futures::StreamExt;
    futures::stream::iter(futures)
        .buffer_unordered(limit)
        .collect()
        .await
}

/// `perf units`: the simulation, printed.
fn units() -> Result<Value> {
    use telemetry_e2e::units;
    // Its own runtime on a paused clock (the round trips are virtual), off this one.
    let figures = std::thread::spawn(units::run_all)
        .join()
        .map_err(|_| anyhow::anyhow!("the simulation panicked"))?;
    println!(
        "DynamoDB units per event (1 KB writes, refused conditional writes billed) and post-process per shard, {} ms per call",
        units::RTT.as_millis()
    );
    for f in &figures {
        println!(
            "{}: {} events, {} batches of {:.1}: store {:.2} + counters {:.2} + markers {:.2} + metrics {:.2} = {:.2} WRU/event; {:.1} ms round trips + {:.2} ms CPU per batch -> {:.0} records/s per shard",
            f.name,
            f.events,
            f.batches,
            f.records_per_batch,
            f.store_wru,
            f.counter_wru,
            f.marker_wru,
            f.metric_wru,
            f.total_wru(),
            f.round_trip_ms_per_batch,
            f.cpu_ms_per_batch,
            f.ceiling_per_shard
        );
        println!(
            "  markers refused (written again after the cache dropped them): {}; warm cache: {} users, {} markers, ~{:.0} bytes per user",
            f.markers_refused, f.cache_users, f.cache_markers, f.cache_bytes_per_user
        );
    }
    Ok(json!({ "units": units::report(&figures) }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let out_dir = root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let (name, figures) = match args.first().map(String::as_str) {
        Some("cold-start") => ("lambda.json", cold_start(flag("--runs", 20)).await?),
        Some("requests") => ("requests.json", requests(flag("--events", 10_000)).await?),
        Some("units") => ("units.json", units()?),
        _ => bail!(
            "usage: perf cold-start [--runs 20] | perf requests [--events 10000] | perf units"
        ),
    };
    let mut all: BTreeMap<String, Value> = BTreeMap::new();
    if let Value::Object(map) = figures {
        all.extend(map);
    }
    std::fs::write(out_dir.join(name), serde_json::to_vec_pretty(&all)?)?;
    Ok(())
}
