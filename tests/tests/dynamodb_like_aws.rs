//! What real DynamoDB does and moto by itself does not, and how the product copes. The emulator
//! (`scripts/emulator.py`, `dynamodb_like_aws`) behaves like DynamoDB here: new tables are
//! CREATING for a second, TTL is enabled asynchronously, a query stopping at its `Limit` returns
//! a `LastEvaluatedKey` even when nothing follows, and one item over 400 KB fails the whole
//! `BatchWriteItem`. The first test checks the emulator itself, so that stock moto fails loudly.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveStatus,
};
use serde_json::value::RawValue;
use telemetry_cli::local::resources::{ResourceNames, ensure_tables, wait_for_table};
use telemetry_e2e::{emulator_url, hs256_auth, scan_all, sdk_config_for, token, unique_prefix};
use telemetry_shared::aws::event_table::EventTable;
use telemetry_shared::event::{Data, SCHEMA_VERSION, StoredEvent};
use telemetry_shared::ports::EventStore;
use telemetry_shared::retry::Deadline;

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(28))
}

async fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config_for(&emulator_url()).await)
}

async fn create_plain_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |n: &str, t| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn the_emulator_creates_tables_and_enables_ttl_the_way_dynamodb_does() {
    let client = dynamodb().await;
    let name = format!("{}-plain", unique_prefix());
    create_plain_table(&client, &name).await;
    let status = client
        .describe_table()
        .table_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        status.table().unwrap().table_status().unwrap().as_str(),
        "CREATING",
        "the emulator must make new tables CREATING (scripts/emulator.py); stock moto does not"
    );
    let early = client
        .put_item()
        .table_name(&name)
        .item("pk", AttributeValue::S("a".into()))
        .item("sk", AttributeValue::S("b".into()))
        .send()
        .await;
    assert!(
        early
            .as_ref()
            .err()
            .and_then(|e| e.as_service_error())
            .is_some_and(|e| e.is_resource_not_found_exception()),
        "a write to a CREATING table is refused: {early:?}"
    );
    wait_for_table(&client, &name).await.unwrap();
    client
        .update_time_to_live()
        .table_name(&name)
        .time_to_live_specification(
            aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expiresAt")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let ttl = client
        .describe_time_to_live()
        .table_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description()
            .unwrap()
            .time_to_live_status(),
        Some(&TimeToLiveStatus::Enabling)
    );
}

async fn ttl_status(client: &aws_sdk_dynamodb::Client, table: &str) -> Option<TimeToLiveStatus> {
    client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .time_to_live_description()
        .and_then(|d| d.time_to_live_status().cloned())
}

#[tokio::test]
async fn new_tables_are_ready_when_ensure_tables_returns() {
    let client = dynamodb().await;
    let names = ResourceNames::with_prefix(&unique_prefix());
    ensure_tables(&client, &names).await.unwrap();
    for table in [
        &names.events_table,
        &names.counts_table,
        &names.routes_table,
    ] {
        let t = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .unwrap();
        assert_eq!(
            t.table().unwrap().table_status().unwrap().as_str(),
            "ACTIVE"
        );
    }
    for table in [&names.events_table, &names.counts_table] {
        assert_eq!(
            ttl_status(&client, table).await,
            Some(TimeToLiveStatus::Enabled)
        );
    }
    // And usable at once.
    client
        .put_item()
        .table_name(&names.counts_table)
        .item("pk", AttributeValue::S("a".into()))
        .item("sk", AttributeValue::S("b".into()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn ttl_is_enabled_even_when_an_earlier_start_created_the_table_and_stopped() {
    let client = dynamodb().await;
    let names = ResourceNames::with_prefix(&unique_prefix());
    // A start that failed right after creating the counts table: no TTL on it.
    create_plain_table(&client, &names.counts_table).await;
    wait_for_table(&client, &names.counts_table).await.unwrap();
    assert_ne!(
        ttl_status(&client, &names.counts_table).await,
        Some(TimeToLiveStatus::Enabled)
    );
    ensure_tables(&client, &names).await.unwrap();
    assert_eq!(
        ttl_status(&client, &names.counts_table).await,
        Some(TimeToLiveStatus::Enabled)
    );
}

/// Owned parts of a test event.
struct Owned {
    id: String,
    timestamp: String,
    data: Option<Box<RawValue>>,
}

impl Owned {
    fn new(i: usize, data: Option<String>) -> Self {
        Self {
            id: format!("e{i:04}"),
            timestamp: format!("2026-11-26T13:{:02}:{:02}.000Z", i / 60 % 60, i % 60),
            data: data.map(|d| RawValue::from_string(d).unwrap()),
        }
    }

    fn event<'a>(&'a self, user: &'a str) -> StoredEvent<'a> {
        StoredEvent {
            schema_version: SCHEMA_VERSION,
            id: Cow::Borrowed(&self.id),
            kind: Cow::Borrowed("t"),
            user_id: Cow::Borrowed(user),
            timestamp: Cow::Borrowed(&self.timestamp),
            received_at: Cow::Borrowed(&self.timestamp),
            environment: Cow::Borrowed("prod"),
            origin: None,
            session_id: None,
            data: self.data.as_deref().map(Data),
        }
    }
}

/// A stack's tables and a query handler reading them.
async fn tables_and_query() -> (ResourceNames, EventTable, query::Query) {
    let sdk = sdk_config_for(&emulator_url()).await;
    let names = ResourceNames::with_prefix(&unique_prefix());
    ensure_tables(&aws_sdk_dynamodb::Client::new(&sdk), &names)
        .await
        .unwrap();
    let table = EventTable::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        names.events_table.clone(),
        None,
    );
    let query = query::from_config(
        &query::Config {
            events_table: names.events_table.clone(),
            counts_table: names.counts_table.clone(),
            routes_table: names.routes_table.clone(),
            auth: hs256_auth(),
            route_queue_prefix: None,
            metrics_table: names.metrics_table.clone(),
            metrics_cache_seconds: telemetry_shared::metric_def::DEFAULT_CACHE_SECONDS,
        },
        &sdk,
    )
    .await
    .unwrap();
    (names, table, query)
}

/// `GET /v1/events?<query>` as API Gateway hands it to the function.
fn get_events(user: &str, query: &str) -> ApiGatewayV2httpRequest {
    let mut req: ApiGatewayV2httpRequest =
        serde_json::from_str(include_str!("../../events/query-get-events.json")).unwrap();
    req.headers.insert(
        "authorization",
        format!("Bearer {}", token(user, "events:read"))
            .parse()
            .unwrap(),
    );
    req.raw_query_string = Some(query.to_string());
    req.query_string_parameters = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<std::collections::HashMap<_, _>>()
        .into();
    req
}

/// The JSON body of an answer.
fn page_of(answer: &aws_lambda_events::apigw::ApiGatewayV2httpResponse) -> serde_json::Value {
    assert_eq!(answer.status_code, 200);
    let outer = serde_json::to_value(answer).unwrap();
    serde_json::from_str(outer["body"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_page_holding_the_last_events_has_no_cursor() {
    let (_, table, query) = tables_and_query().await;
    let owned: Vec<Owned> = (0..5).map(|i| Owned::new(i, None)).collect();
    let events: Vec<_> = owned.iter().map(|o| o.event("exact-user")).collect();
    assert!(table.write_events(&events, deadline()).await.is_complete());
    // Exactly `limit` events: DynamoDB stops at the Limit and returns a LastEvaluatedKey, yet
    // nothing follows — the answer must say so.
    let page = page_of(&query.handle(&get_events("exact-user", "limit=5")).await);
    assert_eq!(page["events"].as_array().unwrap().len(), 5);
    assert!(page["cursor"].is_null(), "cursor {}", page["cursor"]);
    // One fewer than there are: a cursor, and its page holds the last one.
    let page = page_of(&query.handle(&get_events("exact-user", "limit=4")).await);
    let cursor = page["cursor"].as_str().expect("more follow");
    let next = format!("limit=4&cursor={cursor}");
    let page = page_of(&query.handle(&get_events("exact-user", &next)).await);
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert!(page["cursor"].is_null());
}

#[tokio::test]
async fn pages_of_large_quote_heavy_events_stay_under_lambdas_response_limit() {
    let (_, table, query) = tables_and_query().await;
    // 100 events of ~60 KiB whose data is mostly quotes: ~6 MB as stored, ~12 MB escaped.
    let quotes = "\\\"".repeat(30_000);
    let owned: Vec<Owned> = (0..100)
        .map(|i| Owned::new(i, Some(format!(r#"{{"q":"{quotes}","i":{i}}}"#))))
        .collect();
    let events: Vec<_> = owned.iter().map(|o| o.event("big-user")).collect();
    let outcome = table.write_events(&events, deadline()).await;
    assert!(outcome.is_complete(), "{outcome:?}");

    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            None => "limit=100".to_string(),
            Some(c) => format!("limit=100&cursor={c}"),
        };
        let answer = query.handle(&get_events("big-user", &q)).await;
        // What Lambda would return to API Gateway: the serialized invoke response.
        let invoke_response = serde_json::to_vec(&answer).unwrap();
        assert_eq!(answer.status_code, 200);
        assert!(
            invoke_response.len() <= 6_000_000,
            "page {pages}: {} bytes, over Lambda's 6 MB",
            invoke_response.len()
        );
        pages += 1;
        let outer: serde_json::Value = serde_json::from_slice(&invoke_response).unwrap();
        let page: serde_json::Value =
            serde_json::from_str(outer["body"].as_str().unwrap()).unwrap();
        for e in page["events"].as_array().unwrap() {
            assert!(
                seen.insert(e["id"].as_str().unwrap().to_string()),
                "twice: {}",
                e["id"]
            );
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 20, "paging does not end");
    }
    assert_eq!(seen.len(), 100, "every event, once, over {pages} pages");
    assert!(pages >= 3, "the limit must have cut pages: {pages}");
}

fn kinesis_batch(records: &[Vec<u8>]) -> KinesisEvent {
    let mut event = KinesisEvent::default();
    for (i, bytes) in records.iter().enumerate() {
        let mut record = KinesisEventRecord::default();
        let mut data = Base64Data::default();
        *data = bytes.clone();
        record.kinesis.data = data;
        record.kinesis.sequence_number =
            format!("4959033827149025660855969253836157109592157598913{i:07}");
        record.kinesis.partition_key = format!("p{i}");
        event.records.push(record);
    }
    event
}

#[tokio::test]
async fn a_record_too_large_for_dynamodb_is_skipped_and_its_neighbours_stored() {
    let sdk = sdk_config_for(&emulator_url()).await;
    let names = ResourceNames::with_prefix(&unique_prefix());
    ensure_tables(&aws_sdk_dynamodb::Client::new(&sdk), &names)
        .await
        .unwrap();
    let store = store::from_config(
        &store::Config {
            table: names.events_table.clone(),
            ttl_days: Some(7),
        },
        &sdk,
    );
    let small = Owned::new(1, Some(r#"{"a":1}"#.into()));
    // 450 KB of data: a valid Kinesis record (1 MiB), not a valid DynamoDB item (400 KB).
    let large = Owned::new(2, Some(format!(r#"{{"pad":"{}"}}"#, "x".repeat(450_000))));
    let other = Owned::new(3, None);
    let records: Vec<Vec<u8>> = [&small, &large, &other]
        .iter()
        .map(|o| telemetry_shared::record::encode(&o.event("u")).data)
        .collect();
    let response = store.handle(&kinesis_batch(&records), deadline()).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "the large record blocked its batch: {:?}",
        response.batch_item_failures
    );
    let ids: BTreeSet<String> = scan_all(&sdk, &names.events_table)
        .await
        .iter()
        .map(|i| i["id"].as_s().unwrap().clone())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from(["e0001".to_string(), "e0003".to_string()])
    );
}
