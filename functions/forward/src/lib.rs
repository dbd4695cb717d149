//! forward: Kinesis event source → match each event's type against the routes → one
//! `SendMessageBatch` per ≤ 10 messages per queue.
//!
//! Delivery is at least once: retryable failures are retried a few times in the invocation,
//! then reported in `batchItemFailures` so Lambda re-delivers from there (matching queues that
//! already got the event get it again; FIFO queues drop the copy within SQS's 5-minute
//! deduplication window). Permanent failures — queue gone, access denied, message too large —
//! must neither block the shard nor lose the event: the event and the reason go to the forward
//! dead-letter queue.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::kinesis::KinesisEvent;
use aws_lambda_events::streams::KinesisEventResponse;
use futures::StreamExt;
use serde_json::value::RawValue;
use telemetry_shared::aws::route_table::RouteTableStore;
use telemetry_shared::aws::sqs::SqsQueues;
use telemetry_shared::config::{ConfigError, Env};
use telemetry_shared::delivery::{DeadLetter, Delivery, MAX_SQS_BYTES, QueueMessage, plan_batches};
pub use telemetry_shared::delivery::{Plan, plan};
use telemetry_shared::metrics::{Metric, Metrics};
use telemetry_shared::ports::{QueueSink, RouteSource, SendError, StoreError};
use telemetry_shared::retry::{Attempt, Deadline, RetryPolicy, retry};
use telemetry_shared::route::RouteTable;
use tokio::time::Instant;

/// Attempts per batch before retryable failures are reported to Lambda.
pub const SEND_ATTEMPTS: u32 = 3;
/// SendMessageBatch: failed entries again, 50 ms doubling to 500 ms, [`SEND_ATTEMPTS`] attempts
/// (then Lambda re-delivers the batch).
pub const SEND_RETRIES: RetryPolicy = RetryPolicy {
    base: Duration::from_millis(50),
    cap: Duration::from_millis(500),
    max_attempts: Some(SEND_ATTEMPTS),
};
/// Queues sent to at once.
pub const CONCURRENT_QUEUES: usize = 8;

/// forward's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `routes` table (`ROUTES_TABLE`).
    pub routes_table: String,
    /// The forward dead-letter queue (`FORWARD_DLQ_URL`).
    pub dlq_url: String,
    /// How long the routes are cached (`ROUTES_REFRESH_SECS`, default 60).
    pub routes_refresh: Duration,
}

impl Config {
    /// Reads the configuration; the error names the variable at fault.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            routes_table: env.required("ROUTES_TABLE")?,
            dlq_url: env.required("FORWARD_DLQ_URL")?,
            routes_refresh: Duration::from_secs(env.parsed_or("ROUTES_REFRESH_SECS", 60)?),
        })
    }
}

/// The enabled routes, read at most once per `ttl` (a route change takes effect within it,
/// without a redeploy). When a refresh fails, the stale table keeps serving.
pub struct RouteCache {
    source: Arc<dyn RouteSource>,
    ttl: Duration,
    cached: tokio::sync::Mutex<Option<(Instant, Arc<RouteTable>)>>,
}

impl RouteCache {
    /// A cache over `source`.
    pub fn new(source: Arc<dyn RouteSource>, ttl: Duration) -> Self {
        Self {
            source,
            ttl,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The current route table.
    pub async fn table(&self) -> Result<Arc<RouteTable>, StoreError> {
        let mut cached = self.cached.lock().await;
        if let Some((at, table)) = cached.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(Arc::clone(table));
        }
        match self.source.list_routes().await {
            Ok(routes) => {
                let table = Arc::new(RouteTable::new(routes));
                *cached = Some((Instant::now(), Arc::clone(&table)));
                Ok(table)
            }
            Err(e) => match cached.as_ref() {
                Some((_, stale)) => {
                    tracing::warn!(error = %e, "route refresh failed; using the cached routes");
                    Ok(Arc::clone(stale))
                }
                None => Err(e),
            },
        }
    }
}

/// What became of a delivery.
#[derive(Debug)]
enum Outcome {
    Delivered,
    Retry(String),
    Dead(String),
}

/// The forward handler.
pub struct Forward {
    queues: Arc<dyn QueueSink>,
    routes: RouteCache,
    dlq_url: String,
}

impl Forward {
    /// A handler sending through `queues`, with routes from `routes`, dead letters to `dlq_url`.
    pub fn new(queues: Arc<dyn QueueSink>, routes: RouteCache, dlq_url: impl Into<String>) -> Self {
        Self {
            queues,
            routes,
            dlq_url: dlq_url.into(),
        }
    }

    /// Handles one batch of Kinesis records; deliveries not done by `deadline` are reported as
    /// failed (Lambda retries them) rather than left to a killed invocation.
    pub async fn handle(&self, event: &KinesisEvent, deadline: Deadline) -> KinesisEventResponse {
        let mut metrics = Metrics::new("forward");
        metrics.add(Metric::BatchSize, event.records.len() as u64);
        let mut response = KinesisEventResponse::default();
        let table = match self.routes.table().await {
            Ok(table) => table,
            Err(e) => {
                // Without routes nothing can be matched: retry the whole batch.
                tracing::error!(error = %e, "routes unavailable");
                if let Some(first) = event.records.first() {
                    response.add_failure(first.kinesis.sequence_number.clone());
                }
                metrics.flush();
                return response;
            }
        };

        let Plan {
            bodies,
            deliveries,
            by_queue,
            undecodable,
        } = plan(event, &table);
        for seq in undecodable {
            tracing::error!(sequence_number = %seq, "undecodable record skipped");
            metrics.rejected("undecodable");
        }
        let sends: Vec<_> = by_queue
            .into_iter()
            .map(|(queue, indices)| {
                let messages: Vec<&QueueMessage> =
                    indices.iter().map(|&d| &deliveries[d].message).collect();
                async move {
                    let (outcomes, retried) = self.deliver(queue, &messages, deadline).await;
                    (
                        indices.into_iter().zip(outcomes).collect::<Vec<_>>(),
                        retried,
                    )
                }
            })
            .collect();
        // Built up front: a closure inside the stream would trip rustc's Send inference.
        let results: Vec<(Vec<(usize, Outcome)>, usize)> = futures::stream::iter(sends)
            .buffer_unordered(CONCURRENT_QUEUES)
            .collect()
            .await;
        let retried: usize = results.iter().map(|(_, r)| r).sum();
        if retried > 0 {
            metrics.add(Metric::Retries, retried as u64);
        }
        let outcomes = results.into_iter().flat_map(|(o, _)| o);

        let mut failed_records: BTreeSet<usize> = BTreeSet::new();
        let mut dead: Vec<(usize, String)> = Vec::new();
        for (d, outcome) in outcomes {
            match outcome {
                Outcome::Delivered => metrics.add(Metric::RecordsForwarded, 1),
                Outcome::Retry(reason) => {
                    tracing::warn!(queue = deliveries[d].queue_url, %reason, "delivery failed, Lambda will retry");
                    failed_records.insert(deliveries[d].record);
                }
                Outcome::Dead(reason) => dead.push((d, reason)),
            }
        }
        if !dead.is_empty() {
            failed_records.extend(
                self.dead_letter(&deliveries, &bodies, dead, deadline, &mut metrics)
                    .await,
            );
        }
        for i in &failed_records {
            response.add_failure(event.records[*i].kinesis.sequence_number.clone());
        }
        metrics.add(Metric::RecordsFailed, failed_records.len() as u64);
        tracing::info!(
            records = event.records.len(),
            routes = table.len(),
            deliveries = deliveries.len(),
            failed = failed_records.len(),
            "batch forwarded"
        );
        metrics.flush();
        response
    }

    /// Sends `messages` to one queue; one outcome per message, and how many entries were
    /// re-sent.
    async fn deliver(
        &self,
        queue: &str,
        messages: &[&QueueMessage],
        deadline: Deadline,
    ) -> (Vec<Outcome>, usize) {
        let late = || SendError::Transient("invocation deadline reached".into());
        let size = tokio::time::timeout(deadline.remaining(), self.queues.max_message_size(queue))
            .await
            .unwrap_or_else(|_| Err(late()));
        let limit = match size {
            Ok(size) => size.min(MAX_SQS_BYTES),
            Err(e) => {
                let outcome = |reason: &String| match &e {
                    SendError::Permanent(_) => Outcome::Dead(reason.clone()),
                    SendError::Transient(_) => Outcome::Retry(reason.clone()),
                };
                let reason = e.to_string();
                return (messages.iter().map(|_| outcome(&reason)).collect(), 0);
            }
        };
        let mut retried = 0;
        let mut outcomes: Vec<Outcome> = messages.iter().map(|_| Outcome::Delivered).collect();
        let sizes: Vec<usize> = messages.iter().map(|m| m.size()).collect();
        let (batches, too_large) = plan_batches(&sizes, limit);
        for i in too_large {
            outcomes[i] = Outcome::Dead(format!(
                "message of {} bytes exceeds the queue's MaximumMessageSize of {limit}",
                sizes[i]
            ));
        }
        // Batches of one queue go in order (FIFO groups keep their order).
        let outcomes = std::sync::Mutex::new(outcomes);
        for batch in batches {
            let done = retry(
                SEND_RETRIES,
                deadline,
                batch,
                Vec::len,
                || "invocation deadline reached".to_string(),
                |pending: Vec<usize>| {
                    let outcomes = &outcomes;
                    async move {
                        let sending: Vec<&QueueMessage> =
                            pending.iter().map(|&i| messages[i]).collect();
                        let results = self.queues.send_batch(queue, &sending).await;
                        let mut outcomes = outcomes.lock().expect("outcomes lock");
                        let mut again = Vec::new();
                        let mut why = String::new();
                        for (&i, result) in pending.iter().zip(results) {
                            outcomes[i] = match result {
                                Ok(()) => Outcome::Delivered,
                                Err(SendError::Permanent(reason)) => Outcome::Dead(reason),
                                Err(SendError::Transient(reason)) => {
                                    again.push(i);
                                    why.clone_from(&reason);
                                    Outcome::Retry(reason)
                                }
                            };
                        }
                        if again.is_empty() {
                            Attempt::Done
                        } else {
                            Attempt::Retry(again, why)
                        }
                    }
                },
            )
            .await;
            retried += done.retried;
            // What is left (retries used up, or an attempt cut by the deadline) stays retryable.
            if let Some((left, reason)) = done.left {
                let mut outcomes = outcomes.lock().expect("outcomes lock");
                for i in left {
                    outcomes[i] = Outcome::Retry(reason.clone());
                }
            }
        }
        let outcomes = outcomes.into_inner().expect("outcomes lock");
        (outcomes, retried)
    }

    /// Sends permanently failed deliveries, with their reason, to the dead-letter queue.
    /// Returns the records whose dead letter could not be sent (they must be retried).
    async fn dead_letter(
        &self,
        deliveries: &[Delivery<'_>],
        bodies: &[&str],
        dead: Vec<(usize, String)>,
        deadline: Deadline,
        metrics: &mut Metrics,
    ) -> Vec<usize> {
        let failed_at = telemetry_shared::time::format(chrono::Utc::now());
        let letters: Vec<QueueMessage> = dead
            .iter()
            .map(|(d, reason)| {
                let delivery = &deliveries[*d];
                tracing::warn!(route = delivery.route_id, queue = delivery.queue_url, %reason, "delivery failed for good; dead-lettered");
                let event: &RawValue = serde_json::from_str(bodies[delivery.record])
                    .unwrap_or(RawValue::NULL);
                let body = serde_json::to_string(&DeadLetter {
                    reason,
                    route_id: delivery.route_id,
                    queue_url: delivery.queue_url,
                    failed_at: failed_at.clone(),
                    event,
                })
                .unwrap_or_default();
                let (user_id, event_id) = &delivery.event_key;
                // One dead letter per (route, event), should the dead-letter queue be FIFO.
                let letter_id = format!("{}-{event_id}", delivery.route_id);
                let kind = delivery.message.event_type.as_str();
                QueueMessage::new(&self.dlq_url, &body, kind, user_id, &letter_id)
            })
            .collect();
        let refs: Vec<&QueueMessage> = letters.iter().collect();
        let (outcomes, _) = self.deliver(&self.dlq_url, &refs, deadline).await;
        let mut failed = Vec::new();
        for ((d, _), outcome) in dead.iter().zip(outcomes) {
            match outcome {
                Outcome::Delivered => metrics.add(Metric::ForwardDeadLettered, 1),
                Outcome::Retry(reason) | Outcome::Dead(reason) => {
                    tracing::error!(%reason, "dead-letter queue refused the event; Lambda will retry");
                    failed.push(deliveries[*d].record);
                }
            }
        }
        failed
    }
}

/// Builds the production handler.
pub fn from_config(config: &Config, sdk: &aws_config::SdkConfig) -> Forward {
    Forward::new(
        Arc::new(SqsQueues::new(aws_sdk_sqs::Client::new(sdk))),
        RouteCache::new(
            Arc::new(RouteTableStore::new(
                aws_sdk_dynamodb::Client::new(sdk),
                config.routes_table.clone(),
            )),
            config.routes_refresh,
        ),
        config.dlq_url.clone(),
    )
}

#[cfg(test)]
mod tests {
    use telemetry_shared::ports::memory::{MemoryQueues, MemoryRoutes};
    use telemetry_shared::route::Route;

    use super::*;

    const GAME_Q: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/game";
    const ALL_Q: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/all.fifo";
    const GONE_Q: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/gone";
    const DLQ: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/forward-dlq";

    fn route(id: &str, pattern: &str, queue: &str) -> Route {
        Route {
            id: id.into(),
            pattern: pattern.into(),
            queue_url: queue.into(),
            enabled: true,
            description: None,
        }
    }

    /// A handler and the in-memory queues and routes it works with.
    struct Fixture {
        forward: Forward,
        queues: Arc<MemoryQueues>,
        source: Arc<MemoryRoutes>,
    }

    impl Fixture {
        async fn handle(&self, event: &KinesisEvent, deadline: Deadline) -> KinesisEventResponse {
            self.forward.handle(event, deadline).await
        }
    }

    fn handler(routes: Vec<Route>) -> Fixture {
        let source = Arc::new(MemoryRoutes::default());
        for r in routes {
            source.routes.lock().unwrap().insert(r.id.clone(), r);
        }
        let queues = Arc::new(MemoryQueues::default());
        Fixture {
            forward: Forward::new(
                queues.clone(),
                RouteCache::new(source.clone(), Duration::from_secs(60)),
                DLQ,
            ),
            queues,
            source,
        }
    }

    fn fixture() -> KinesisEvent {
        serde_json::from_str(include_str!("../../../events/kinesis-batch.json")).unwrap()
    }

    fn failures(r: &KinesisEventResponse) -> Vec<String> {
        r.batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn every_matching_route_gets_the_event() {
        let h = handler(vec![
            route("game", "game.level*", GAME_Q),
            route("all", "*", ALL_Q),
        ]);
        let r = h
            .handle(&fixture(), Deadline::after(Duration::from_secs(30)))
            .await;
        assert!(failures(&r).is_empty());
        let game = h.queues.messages(GAME_Q);
        assert_eq!(game.len(), 1);
        assert_eq!(game[0].event_type, "game.level_completed");
        assert_eq!(game[0].group_id, None);
        let all = h.queues.messages(ALL_Q);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].group_id.as_deref(), Some("fixture-user"));
        assert_eq!(
            all[0].dedup_id.as_deref(),
            Some(telemetry_shared::delivery::dedup_id("fixture-user", "fixture-1").as_str())
        );
        let body: serde_json::Value = serde_json::from_str(&all[1].body).unwrap();
        assert_eq!(body["id"], "fixture-2");
    }

    #[tokio::test]
    async fn a_missing_queue_dead_letters_while_other_routes_deliver() {
        let h = handler(vec![
            route("gone", "game.*", GONE_Q),
            route("game", "game.*", GAME_Q),
        ]);
        h.queues.missing.lock().unwrap().push(GONE_Q.into());
        let r = h
            .handle(&fixture(), Deadline::after(Duration::from_secs(30)))
            .await;
        assert!(
            failures(&r).is_empty(),
            "dead letters do not block the shard"
        );
        assert_eq!(h.queues.messages(GAME_Q).len(), 2);
        let letters = h.queues.messages(DLQ);
        assert_eq!(letters.len(), 2);
        let letter: serde_json::Value = serde_json::from_str(&letters[0].body).unwrap();
        assert_eq!(letter["routeId"], "gone");
        assert_eq!(letter["queueUrl"], GONE_Q);
        assert!(
            letter["reason"]
                .as_str()
                .unwrap()
                .contains("QueueDoesNotExist")
        );
        assert_eq!(letter["event"]["id"], "fixture-1");
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_entry_failures_are_retried_then_reported() {
        let h = handler(vec![route("game", "game.*", GAME_Q)]);
        *h.queues.flaky_entries.lock().unwrap() = 1;
        let r = h
            .handle(&fixture(), Deadline::after(Duration::from_secs(30)))
            .await;
        assert!(failures(&r).is_empty());
        assert_eq!(h.queues.messages(GAME_Q).len(), 2);

        *h.queues.flaky_entries.lock().unwrap() = 1000;
        let r = h
            .handle(&fixture(), Deadline::after(Duration::from_secs(30)))
            .await;
        assert_eq!(
            failures(&r),
            [
                "49590338271490256608559692538361571095921575989136588880",
                "49590338271490256608559692538361571095921575989136588881"
            ]
        );
    }

    #[tokio::test]
    async fn a_missing_dead_letter_queue_fails_the_record_rather_than_lose_it() {
        let h = handler(vec![route("gone", "game.purchase", GONE_Q)]);
        h.queues
            .missing
            .lock()
            .unwrap()
            .extend([GONE_Q.to_string(), DLQ.to_string()]);
        let r = h
            .handle(&fixture(), Deadline::after(Duration::from_secs(30)))
            .await;
        assert_eq!(
            failures(&r),
            ["49590338271490256608559692538361571095921575989136588881"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn routes_are_reread_at_most_once_per_ttl() {
        let h = handler(vec![route("game", "game.*", GAME_Q)]);
        h.handle(&fixture(), Deadline::after(Duration::from_secs(30)))
            .await;
        h.handle(&fixture(), Deadline::after(Duration::from_secs(30)))
            .await;
        assert_eq!(*h.source.reads.lock().unwrap(), 1);
        h.source
            .routes
            .lock()
            .unwrap()
            .insert("all".into(), route("all", "*", ALL_Q));
        tokio::time::advance(Duration::from_secs(59)).await;
        h.handle(&fixture(), Deadline::after(Duration::from_secs(30)))
            .await;
        assert!(
            h.queues.messages(ALL_Q).is_empty(),
            "still the cached routes"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        h.handle(&fixture(), Deadline::after(Duration::from_secs(30)))
            .await;
        assert_eq!(
            h.queues.messages(ALL_Q).len(),
            2,
            "the new route took effect within a minute"
        );
        assert_eq!(*h.source.reads.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn messages_go_in_batches_of_ten() {
        let h = handler(vec![route("all", "*", GAME_Q)]);
        let mut event = fixture();
        let template = event.records[0].clone();
        event.records = (0..25)
            .map(|i| {
                let mut r = template.clone();
                let mut stored: serde_json::Value =
                    serde_json::from_slice(&r.kinesis.data).unwrap();
                stored["id"] = format!("e{i}").into();
                *r.kinesis.data = serde_json::to_vec(&stored).unwrap();
                r.kinesis.sequence_number = format!("{}", 100 + i);
                r
            })
            .collect();
        let r = h
            .handle(&event, Deadline::after(Duration::from_secs(30)))
            .await;
        assert!(failures(&r).is_empty());
        assert_eq!(h.queues.messages(GAME_Q).len(), 25);
        assert_eq!(*h.queues.calls.lock().unwrap(), 3);
    }
}
