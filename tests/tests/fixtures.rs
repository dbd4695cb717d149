//! Every file in `events/` is a real Lambda payload that its handler accepts: each is fed to
//! its handler in-process (on in-memory ports) and the answer is checked. A new fixture without
//! a case here fails the test, so `sam local invoke` inputs stay known good.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use serde_json::Value;
use telemetry_shared::auth::{AuthConfig, IssuerConfig, VerificationKey, Verifier};
use telemetry_shared::config::Secret;
use telemetry_shared::ports::MetricDefinitions;
use telemetry_shared::ports::memory::{
    MemoryCounts, MemoryMetricDefinitions, MemoryMetrics, MemoryQueues, MemoryRoutes, MemorySink,
    MemoryStore,
};
use telemetry_shared::route::Route;

/// The dev-only secret the fixtures' tokens are signed with (see events/README.md).
const FIXTURE_SECRET: &str = "dev-only-secret-for-sam-local-invoke-do-not-deploy";

fn verifier() -> Verifier {
    Verifier::new(&AuthConfig::one(IssuerConfig::new(
        vec![jsonwebtoken::Algorithm::HS256],
        VerificationKey::Secret(Secret::new(FIXTURE_SECRET.into())),
        "telemetry-local",
        "telemetry",
    )))
    .unwrap()
}

fn body(r: &ApiGatewayV2httpResponse) -> Value {
    match &r.body {
        Some(Body::Text(t)) => serde_json::from_str(t).unwrap(),
        other => panic!("unexpected body {other:?}"),
    }
}

fn query_handler() -> query::Query {
    query_with(Arc::new(MemoryMetricDefinitions::default()))
}

/// The query handler with the metrics defined in `definitions`.
fn query_with(definitions: Arc<MemoryMetricDefinitions>) -> query::Query {
    query::Query::new(
        verifier(),
        Arc::new(MemoryStore::default()),
        Arc::new(MemoryCounts::default()),
        Arc::new(MemoryRoutes::default()),
    )
    .with_metrics(definitions, Arc::new(MemoryMetrics::default()), 60)
}

async fn check(name: &str, text: &str) {
    match name {
        "ingest-post-events.json" => {
            let h = ingest::Ingest::new(verifier(), Arc::new(MemorySink::default()));
            let r = h.handle(&serde_json::from_str(text).unwrap()).await;
            assert_eq!(r.status_code, 202);
            assert_eq!(body(&r)["accepted"], 2);
        }
        "query-get-events.json" => {
            let r = query_handler()
                .handle(&serde_json::from_str::<ApiGatewayV2httpRequest>(text).unwrap())
                .await;
            assert_eq!(r.status_code, 200, "{:?}", r.body);
            assert_eq!(body(&r)["events"], serde_json::json!([]));
        }
        "query-get-counts.json" => {
            let r = query_handler()
                .handle(&serde_json::from_str(text).unwrap())
                .await;
            assert_eq!(r.status_code, 200, "{:?}", r.body);
            let b = body(&r);
            assert_eq!(b["type"], "game.level_completed");
            assert_eq!(b["granularity"], "hour");
        }
        "query-get-users.json" => {
            let r = query_handler()
                .handle(&serde_json::from_str(text).unwrap())
                .await;
            assert_eq!(r.status_code, 200, "{:?}", r.body);
            let b = body(&r);
            assert_eq!(b["granularity"], "day");
            assert_eq!(b["buckets"], serde_json::json!([]));
        }
        "query-put-metric.json" => {
            let r = query_handler()
                .handle(&serde_json::from_str(text).unwrap())
                .await;
            assert_eq!(r.status_code, 201, "{:?}", r.body);
            assert_eq!(body(&r)["id"], "revenue");
            assert_eq!(body(&r)["by"], "data.currency");
        }
        "query-get-metric-values.json" => {
            // The metric the PUT fixture defines.
            let definitions = Arc::new(MemoryMetricDefinitions::default());
            let input: telemetry_shared::metric_def::MetricInput = serde_json::from_value(
                serde_json::json!({"type": "game.purchase", "sum": "data.amount", "by": "data.currency"}),
            )
            .unwrap();
            let def = input
                .into_definition(
                    "revenue",
                    chrono::Utc::now(),
                    chrono::Duration::seconds(120),
                )
                .unwrap();
            assert!(definitions.create_metric(&def).await.unwrap());
            let r = query_with(definitions)
                .handle(&serde_json::from_str(text).unwrap())
                .await;
            assert_eq!(r.status_code, 200, "{:?}", r.body);
            let b = body(&r);
            assert_eq!(b["metric"]["id"], "revenue");
            assert_eq!(b["buckets"], serde_json::json!([]));
        }
        "query-put-route.json" => {
            let h = query_handler();
            let r = h.handle(&serde_json::from_str(text).unwrap()).await;
            assert_eq!(r.status_code, 200, "{:?}", r.body);
            assert_eq!(body(&r)["id"], "game-events");
            assert_eq!(body(&r)["match"], "game.*");
        }
        "kinesis-batch.json" => {
            let event = serde_json::from_str(text).unwrap();
            let store = store::Store::new(Arc::new(MemoryStore::default()));
            assert!(
                store
                    .handle(&event, deadline())
                    .await
                    .batch_item_failures
                    .is_empty()
            );

            let routes = MemoryRoutes::default();
            let queue = "https://sqs.us-east-1.amazonaws.com/123456789012/telemetry-game";
            routes.routes.lock().unwrap().insert(
                "game".into(),
                Route {
                    id: "game".into(),
                    pattern: "game.*".into(),
                    queue_url: queue.into(),
                    enabled: true,
                    description: None,
                },
            );
            let forward = forward::Forward::new(
                Arc::new(MemoryQueues::default()),
                forward::RouteCache::new(Arc::new(routes), Duration::from_secs(60)),
                "https://sqs.us-east-1.amazonaws.com/123456789012/telemetry-dlq",
            );
            assert!(
                forward
                    .handle(&event, deadline())
                    .await
                    .batch_item_failures
                    .is_empty()
            );
        }
        "dynamodb-window-batch.json" => {
            let h = post_process::PostProcess::new(
                Arc::new(MemoryCounts::default()),
                Arc::new(telemetry_shared::ports::memory::MemoryMarkers::default()),
            );
            // As the Lambda binary reads it: the payload, record by record.
            let r = h
                .handle_payload(serde_json::from_str(text).unwrap(), deadline())
                .await
                .unwrap();
            assert!(r.batch_item_failures.is_empty());
            let answer = serde_json::to_value(&r).unwrap();
            assert_eq!(
                answer["state"],
                serde_json::json!({}),
                "a window answer always carries state"
            );
        }
        other => panic!("events/{other} has no handler case in tests/tests/fixtures.rs"),
    }
}

fn deadline() -> telemetry_shared::retry::Deadline {
    telemetry_shared::retry::Deadline::after(std::time::Duration::from_secs(30))
}

#[tokio::test]
async fn every_fixture_is_accepted_by_its_handler() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        check(&name, &std::fs::read_to_string(&path).unwrap()).await;
        checked += 1;
    }
    assert_eq!(checked, 9);
}
