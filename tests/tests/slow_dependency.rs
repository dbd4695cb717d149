//! A slow dependency makes stream handlers report their records as failed before the
//! invocation deadline (instead of being killed mid-write), and the retry stores everything.

use std::time::{Duration, Instant};

use telemetry_cli::local::resources::{ResourceNames, ensure_tables};
use telemetry_e2e::aws_proxy::{FaultPlan, start_proxy};
use telemetry_e2e::{emulator_url, scan_all, sdk_config_for, unique_prefix};
use telemetry_shared::retry::Deadline;

#[tokio::test]
async fn a_slow_table_leads_to_reported_failures_then_a_clean_retry() {
    let emulator = emulator_url();
    let direct = sdk_config_for(&emulator).await;
    let names = ResourceNames::with_prefix(&unique_prefix());
    ensure_tables(&aws_sdk_dynamodb::Client::new(&direct), &names)
        .await
        .unwrap();
    let proxy = start_proxy(&emulator).await;
    let store = store::from_config(
        &store::Config {
            table: names.events_table.clone(),
            ttl_days: None,
        },
        &sdk_config_for(&proxy.url).await,
    );
    let batch = telemetry_shared::sample::kinesis_event(60, 512);

    // Every DynamoDB call takes 3 s; the invocation has 1 s left.
    proxy.set_plan(FaultPlan {
        delay: Some(Duration::from_secs(3)),
        ..FaultPlan::default()
    });
    let started = Instant::now();
    let response = store
        .handle(&batch, Deadline::after(Duration::from_secs(1)))
        .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1800),
        "the handler overran its deadline: {took:?}"
    );
    // Nothing was written: the lowest record is reported, and Lambda re-delivers from it.
    let reported: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_deref().unwrap())
        .collect();
    assert_eq!(
        reported,
        [batch.records[0].kinesis.sequence_number.as_str()],
        "the lowest unwritten record is reported"
    );

    // Lambda retries the batch; the dependency is fast again.
    proxy.set_plan(FaultPlan::default());
    tokio::time::sleep(Duration::from_secs(3)).await; // the slow calls may still land: harmless
    let response = store
        .handle(&batch, Deadline::after(Duration::from_secs(28)))
        .await;
    assert!(response.batch_item_failures.is_empty());
    let items = scan_all(&direct, &names.events_table).await;
    assert_eq!(items.len(), 60, "nothing lost, nothing doubled");
}

#[tokio::test]
async fn forward_and_post_process_also_stop_at_the_deadline() {
    let emulator = emulator_url();
    let direct = sdk_config_for(&emulator).await;
    let names = ResourceNames::with_prefix(&unique_prefix());
    ensure_tables(&aws_sdk_dynamodb::Client::new(&direct), &names)
        .await
        .unwrap();
    let queue = telemetry_cli::local::resources::ensure_queue(
        &aws_sdk_sqs::Client::new(&direct),
        &names.demo_queue,
    )
    .await
    .unwrap();
    let dlq = telemetry_cli::local::resources::ensure_queue(
        &aws_sdk_sqs::Client::new(&direct),
        &names.forward_dlq,
    )
    .await
    .unwrap();
    telemetry_shared::ports::RouteStore::put_route(
        &telemetry_shared::aws::route_table::RouteTableStore::new(
            aws_sdk_dynamodb::Client::new(&direct),
            names.routes_table.clone(),
        ),
        &telemetry_shared::route::Route {
            id: "all".into(),
            pattern: "*".into(),
            queue_url: queue,
            enabled: true,
            description: None,
        },
    )
    .await
    .unwrap();
    let proxy = start_proxy(&emulator).await;
    let slow = sdk_config_for(&proxy.url).await;
    let forward = forward::from_config(
        &forward::Config {
            routes_table: names.routes_table.clone(),
            dlq_url: dlq,
            routes_refresh: Duration::from_secs(60),
        },
        &slow,
    );
    let counts = post_process::from_config(
        &post_process::Config::from_env(&telemetry_shared::config::Env::from_map([
            ("COUNTS_TABLE", names.counts_table.as_str()),
            ("METRICS_TABLE", names.metrics_table.as_str()),
        ]))
        .unwrap(),
        &slow,
    );
    let batch = telemetry_shared::sample::kinesis_event(20, 512);
    let window: aws_lambda_events::dynamodb::TimeWindowEvent =
        serde_json::from_str(&telemetry_shared::sample::window_event_json(20)).unwrap();

    // Warm the route cache while the table is fast, then slow every call down.
    assert!(
        forward
            .handle(&batch, Deadline::after(Duration::from_secs(28)))
            .await
            .batch_item_failures
            .is_empty()
    );
    proxy.set_plan(FaultPlan {
        delay: Some(Duration::from_secs(3)),
        ..FaultPlan::default()
    });
    let started = Instant::now();
    let f = forward
        .handle(&batch, Deadline::after(Duration::from_secs(1)))
        .await;
    let p = counts
        .handle(window.clone(), Deadline::after(Duration::from_secs(1)))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
    assert!(!f.batch_item_failures.is_empty());
    assert_eq!(
        p.batch_item_failures.len(),
        1,
        "post-process reports its first unapplied record"
    );
    proxy.set_plan(FaultPlan::default());
    assert!(
        counts
            .handle(window.clone(), Deadline::after(Duration::from_secs(28)))
            .await
            .batch_item_failures
            .is_empty()
    );
}
