//! ingest: `POST /v1/events` → verify the JWT → parse and validate the batch → enrich →
//! one Kinesis `PutRecords` (split only past Kinesis's limits) → 202 once every accepted event
//! is durably on the stream.
//!
//! The rules live in `telemetry_shared` (`batch`, `event`, `auth`); this crate maps the API
//! Gateway request in and the outcome out.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::http::Method;
use serde::Serialize;
use telemetry_shared::auth::{AuthConfig, Principal, Scope, Verifier};
use telemetry_shared::aws::rate_limit::DynamoRateLimiter;
use telemetry_shared::aws::sqs::SqsQueues;
use telemetry_shared::batch::{self, Enrichment, RejectedEvent};
use telemetry_shared::config::{ConfigError, Env};
use telemetry_shared::delivery::{MAX_ENTRIES_PER_BATCH, QueueMessage};
use telemetry_shared::http::{self as api, ApiError, Refusal};
use telemetry_shared::metrics::{Metric, Metrics};
use telemetry_shared::ports::{EventSink, QueueSink, RateDecision, RateLimiter};

/// Seconds a client is told to wait after a 503.
pub use telemetry_shared::http::RETRY_AFTER_SECS;

/// ingest's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Kinesis stream (`EVENTS_STREAM`).
    pub stream: String,
    /// Token verification.
    pub auth: AuthConfig,
    /// How long Kinesis failures are retried before answering 503 (`INGEST_RETRY_BUDGET_MS`,
    /// default 5000: well inside API Gateway's 30 s).
    pub retry_budget: Duration,
    /// Events per user per minute (`RATE_LIMIT_PER_USER`; unset or 0: no limit).
    pub rate_limit_per_user: Option<u64>,
    /// Where the rate limit's windows are kept (`COUNTS_TABLE`; needed with a limit).
    pub counts_table: Option<String>,
    /// Where rejected events go for inspection (`REJECTED_EVENTS_QUEUE_URL`; unset: nowhere).
    pub rejected_queue_url: Option<String>,
}

impl Config {
    /// Reads the configuration; the error names the variable at fault.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Self::read(env, || AuthConfig::from_env(env))
    }

    /// The same, with token verification decided elsewhere (the local stack's dev key).
    pub fn from_env_with_auth(env: &Env, auth: AuthConfig) -> Result<Self, ConfigError> {
        Self::read(env, || Ok(auth))
    }

    /// The variables in the order they are named when missing, `auth` among them.
    fn read(
        env: &Env,
        auth: impl FnOnce() -> Result<AuthConfig, ConfigError>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            stream: env.required("EVENTS_STREAM")?,
            auth: auth()?,
            retry_budget: Duration::from_millis(env.parsed_or("INGEST_RETRY_BUDGET_MS", 5000)?),
            rate_limit_per_user: Some(env.parsed_or::<u64>("RATE_LIMIT_PER_USER", 0)?)
                .filter(|n| *n > 0),
            counts_table: env.optional("COUNTS_TABLE"),
            rejected_queue_url: env.optional("REJECTED_EVENTS_QUEUE_URL"),
        })
        .and_then(|c: Self| {
            if c.rate_limit_per_user.is_some() && c.counts_table.is_none() {
                return Err(ConfigError::Missing("COUNTS_TABLE"));
            }
            Ok(c)
        })
    }
}

/// A request that can never fit the per-user limit: not a retryable 429.
fn too_large_for_the_limit(most: u64) -> ApiError {
    ApiError::new(
        Refusal::PayloadTooLarge,
        "batch_exceeds_rate_limit",
        format!(
            "a request may carry at most {most} events under this user's rate limit: send smaller batches"
        ),
    )
}

/// The ingest handler: built once per execution environment.
pub struct Ingest {
    verifier: Verifier,
    sink: Arc<dyn EventSink>,
    /// The per-user rate limit, when configured.
    limiter: Option<Arc<dyn RateLimiter>>,
    /// The rejected-events queue and its URL, when configured.
    rejected: Option<(Arc<dyn QueueSink>, String)>,
}

#[derive(Serialize)]
struct Accepted<'a> {
    accepted: usize,
    ids: &'a [String],
    rejected: &'a [RejectedEvent],
}

impl Ingest {
    /// A handler verifying tokens with `verifier` and writing to `sink`, without a rate limit.
    pub fn new(verifier: Verifier, sink: Arc<dyn EventSink>) -> Self {
        Self {
            verifier,
            sink,
            limiter: None,
            rejected: None,
        }
    }

    /// The same handler with a per-user rate limit.
    pub fn with_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// The same handler sending rejected events to `queue_url` through `queues`.
    pub fn with_rejected_queue(mut self, queues: Arc<dyn QueueSink>, queue_url: String) -> Self {
        self.rejected = Some((queues, queue_url));
        self
    }

    /// Sends the rejected events, with their reason and index, to the rejected-events queue.
    /// Best effort: inspection must not cost the client its answer.
    async fn keep_rejected(&self, user_id: &str, received_at: &str, rejected: &[RejectedEvent]) {
        let Some((queues, url)) = &self.rejected else {
            return;
        };
        let messages: Vec<QueueMessage> = rejected
            .iter()
            .map(|r| {
                let body = serde_json::json!({
                    "reason": r.code, "message": r.message, "index": r.index,
                    "userId": user_id, "receivedAt": received_at, "excerpt": r.excerpt,
                });
                QueueMessage {
                    body: body.to_string(),
                    event_type: r.code.as_str().to_string(),
                    group_id: None,
                    dedup_id: None,
                }
            })
            .collect();
        for chunk in messages.chunks(MAX_ENTRIES_PER_BATCH) {
            let refs: Vec<&QueueMessage> = chunk.iter().collect();
            let failed = queues
                .send_batch(url, &refs)
                .await
                .iter()
                .filter(|r| r.is_err())
                .count();
            if failed > 0 {
                tracing::warn!(failed, "rejected events not kept for inspection");
            }
        }
    }

    /// Handles one API Gateway request.
    pub async fn handle(&self, req: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let mut metrics = Metrics::new("ingest");
        let response = match self.accept(req, &mut metrics).await {
            Ok(response) => response,
            Err(e) => {
                metrics.add(Metric::RequestsFailed, 1);
                tracing::info!(status = e.status(), code = e.code, "request refused");
                e.into_response()
            }
        };
        metrics.flush();
        response
    }

    /// Takes `events` from the user's allowance: `Err` with the 429 (or 413) to answer when it
    /// does not fit. A counter that cannot be reached lets the request through (logged): the
    /// limit protects the pipeline, it must not take ingest down (see `aws::rate_limit`).
    async fn admit(
        &self,
        user_id: &str,
        events: u64,
        now: chrono::DateTime<chrono::Utc>,
        metrics: &mut Metrics,
    ) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        match limiter.acquire(user_id, events, now).await {
            Ok(RateDecision::Allowed) => Ok(()),
            Ok(RateDecision::Limited { retry_after_secs }) => {
                for _ in 0..events {
                    metrics.rejected("rate_limited");
                }
                Err(ApiError::new(
                    Refusal::RateLimited { retry_after_secs },
                    "rate_limited",
                    "too many events for this user; retry later",
                ))
            }
            Ok(RateDecision::TooLarge { most }) => Err(too_large_for_the_limit(most)),
            Err(e) => {
                tracing::warn!(error = %e, "rate limit unavailable; request let through");
                Ok(())
            }
        }
    }

    /// `POST /v1/events`, step by step: who is asking ([`Self::authorize`]), count the request
    /// against their limit and read it ([`Self::read_events`]), keep what was refused, put the
    /// rest on the stream ([`Self::put_on_stream`]), answer.
    async fn accept(
        &self,
        req: &ApiGatewayV2httpRequest,
        metrics: &mut Metrics,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let principal = self.authorize(req).await?;
        let idempotency_key = idempotency_key(req)?;
        let received_at = chrono::Utc::now();
        let body = self
            .read_body(req, &principal, received_at, metrics)
            .await?;
        let body = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("invalid_json", "body is not UTF-8"))?;
        let who = Enrichment {
            user_id: &principal.sub,
            received_at,
            idempotency_key,
        };
        let prepared = self.read_events(req, body, &who, metrics).await?;
        if !prepared.rejected.is_empty() {
            let received_at = telemetry_shared::time::format(received_at);
            self.keep_rejected(&principal.sub, &received_at, &prepared.rejected)
                .await;
        }
        if prepared.records.is_empty() {
            return Err(ApiError::bad_request(
                "no_valid_events",
                "no event in the request is valid",
            )
            .with_details("rejected", serde_json::json!(prepared.rejected)));
        }
        let accepted = prepared.records.len();
        self.put_on_stream(prepared.records, metrics).await?;
        tracing::info!(
            sub = %principal.sub,
            accepted,
            rejected = prepared.rejected.len(),
            "events accepted"
        );
        Ok(api::json_response(
            202,
            &Accepted {
                accepted,
                ids: &prepared.ids,
                rejected: &prepared.rejected,
            },
        ))
    }

    /// A POST with a valid token carrying `events:write`, and a JSON body.
    async fn authorize(&self, req: &ApiGatewayV2httpRequest) -> Result<Principal, ApiError> {
        if api::method(req) != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        let principal = self
            .verifier
            .authenticate(api::header(req, "authorization"))
            .await?;
        principal.require(Scope::EventsWrite)?;
        api::require_json(req)?;
        Ok(principal)
    }

    /// The body's bytes. A compressed body costs work to open, so the request is counted
    /// against the limit before that (one event now, the rest once they are counted).
    async fn read_body<'r>(
        &self,
        req: &'r ApiGatewayV2httpRequest,
        principal: &Principal,
        received_at: chrono::DateTime<chrono::Utc>,
        metrics: &mut Metrics,
    ) -> Result<std::borrow::Cow<'r, [u8]>, ApiError> {
        if api::is_compressed(req) {
            self.admit(&principal.sub, 1, received_at, metrics).await?;
        }
        api::body(req)
    }

    /// The request's events, valid and rejected, counted against the limit — every one of them:
    /// rejected events cost work too, and may be kept in the rejected-events queue.
    async fn read_events(
        &self,
        req: &ApiGatewayV2httpRequest,
        body: &str,
        who: &Enrichment<'_>,
        metrics: &mut Metrics,
    ) -> Result<batch::PreparedBatch, ApiError> {
        let prepared = batch::prepare(body, who)
            .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
        let carried = (prepared.records.len() + prepared.rejected.len()) as u64;
        if let Some(most) = self.limiter.as_ref().and_then(|l| l.most_per_request())
            && carried > most
        {
            return Err(too_large_for_the_limit(most));
        }
        let uncounted = carried - u64::from(api::is_compressed(req));
        if uncounted > 0 {
            self.admit(who.user_id, uncounted, who.received_at, metrics)
                .await?;
        }
        for r in &prepared.rejected {
            metrics.rejected(r.code.as_str());
        }
        metrics.add(Metric::BatchSize, carried);
        Ok(prepared)
    }

    /// Every record durably on the stream, or the 503/500 to answer.
    async fn put_on_stream(
        &self,
        records: Vec<telemetry_shared::record::EventRecord>,
        metrics: &mut Metrics,
    ) -> Result<(), ApiError> {
        let accepted = records.len() as u64;
        let retried = self
            .sink
            .put_records(records)
            .await
            .map_err(|e| ApiError::dependency("the event stream", e))?;
        metrics.add(Metric::EventsAccepted, accepted);
        if retried > 0 {
            metrics.add(Metric::Retries, retried as u64);
        }
        Ok(())
    }
}

/// The `Idempotency-Key` header, checked.
fn idempotency_key(req: &ApiGatewayV2httpRequest) -> Result<Option<&str>, ApiError> {
    match api::header(req, "idempotency-key") {
        None => Ok(None),
        Some(key) if batch::is_valid_idempotency_key(key) => Ok(Some(key)),
        Some(_) => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1..=64 visible ASCII characters",
        )),
    }
}

/// Builds the production handler from configuration and an SDK config, reading the JWT secret
/// from Secrets Manager when `JWT_SECRET_ARN` names one.
pub async fn from_config(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> Result<Ingest, ConfigError> {
    let sink = telemetry_shared::aws::kinesis::KinesisSink::new(
        aws_sdk_kinesis::Client::new(sdk),
        config.stream.clone(),
        config.retry_budget,
    );
    let verifier = Verifier::connect(
        &telemetry_shared::aws::secrets::resolve(config.auth.clone(), sdk).await?,
    )
    .await?;
    let mut ingest = Ingest::new(verifier, Arc::new(sink));
    if let (Some(limit), Some(table)) = (config.rate_limit_per_user, &config.counts_table) {
        ingest = ingest.with_limiter(Arc::new(DynamoRateLimiter::new(
            aws_sdk_dynamodb::Client::new(sdk),
            table.clone(),
            limit,
        )));
    }
    if let Some(url) = &config.rejected_queue_url {
        ingest = ingest.with_rejected_queue(
            Arc::new(SqsQueues::new(aws_sdk_sqs::Client::new(sdk))),
            url.clone(),
        );
    }
    Ok(ingest)
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::encodings::Body;
    use telemetry_shared::auth::{IssuerConfig, VerificationKey};
    use telemetry_shared::config::Secret;
    use telemetry_shared::ports::memory::MemorySink;

    use super::*;

    /// The dev-only secret the fixtures in `events/` are signed with.
    const FIXTURE_SECRET: &str = "dev-only-secret-for-sam-local-invoke-do-not-deploy";

    /// The handler and the sink it writes to.
    fn handler() -> (Ingest, Arc<MemorySink>) {
        let verifier = Verifier::new(&AuthConfig::one(IssuerConfig::new(
            vec![jsonwebtoken::Algorithm::HS256],
            VerificationKey::Secret(Secret::new(FIXTURE_SECRET.into())),
            "telemetry-local",
            "telemetry",
        )))
        .unwrap();
        let sink = Arc::new(MemorySink::default());
        (Ingest::new(verifier, sink.clone()), sink)
    }

    fn fixture() -> ApiGatewayV2httpRequest {
        serde_json::from_str(include_str!("../../../events/ingest-post-events.json")).unwrap()
    }

    fn body(r: &ApiGatewayV2httpResponse) -> serde_json::Value {
        match &r.body {
            Some(Body::Text(t)) => serde_json::from_str(t).unwrap(),
            other => panic!("unexpected body {other:?}"),
        }
    }

    #[tokio::test]
    async fn fixture_is_accepted_with_the_invalid_event_rejected_by_index() {
        let (h, sink) = handler();
        let r = h.handle(&fixture()).await;
        assert_eq!(r.status_code, 202, "{:?}", r.body);
        let b = body(&r);
        assert_eq!(b["accepted"], 2);
        assert_eq!(b["ids"], serde_json::json!(["fixture-1", "fixture-2"]));
        assert_eq!(b["rejected"][0]["index"], 2);
        let stored = sink.events();
        assert_eq!(stored.len(), 2);
        assert!(stored.iter().all(|e| e["userId"] == "fixture-user"));
        assert_eq!(stored[0]["origin"], "ios-app");
        assert_eq!(stored[0]["timestamp"], "2026-11-26T13:40:00.000Z");
    }

    #[tokio::test]
    async fn stream_outage_is_503_with_retry_after_and_refusal_is_500() {
        let (h, sink) = handler();
        *sink.fail_with.lock().unwrap() = Some(telemetry_shared::ports::Failure::Transient(
            "throttled".into(),
        ));
        let r = h.handle(&fixture()).await;
        assert_eq!(r.status_code, 503);
        assert_eq!(r.headers.get("retry-after").unwrap(), "2");
        *sink.fail_with.lock().unwrap() = Some(telemetry_shared::ports::Failure::Permanent(
            "no such stream".into(),
        ));
        let r = h.handle(&fixture()).await;
        assert_eq!(r.status_code, 500);
        // The reason stays in the log: the client learns nothing about our infrastructure.
        assert!(!body(&r).to_string().contains("no such stream"));
    }

    #[tokio::test]
    async fn nothing_is_put_when_no_event_is_valid() {
        let (h, sink) = handler();
        let mut req = fixture();
        req.body = Some(r#"{"events":[{"type":"bad type"}]}"#.into());
        let r = h.handle(&req).await;
        assert_eq!(r.status_code, 400);
        assert_eq!(body(&r)["error"]["code"], "no_valid_events");
        assert!(sink.records.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn rejected_events_go_to_the_inspection_queue_with_reason_and_index() {
        let queue = "https://sqs.us-east-1.amazonaws.com/123456789012/telemetry-rejected";
        let queues = Arc::new(telemetry_shared::ports::memory::MemoryQueues::default());
        let h = handler()
            .0
            .with_rejected_queue(queues.clone(), queue.to_string());
        let r = h.handle(&fixture()).await;
        assert_eq!(r.status_code, 202);
        let kept = queues.messages(queue);
        assert_eq!(kept.len(), 1);
        let body: serde_json::Value = serde_json::from_str(&kept[0].body).unwrap();
        assert_eq!(body["reason"], "invalid_type");
        assert_eq!(body["index"], 2);
        assert_eq!(body["userId"], "fixture-user");
        assert!(body["excerpt"].as_str().unwrap().contains("not valid!"));
    }

    #[tokio::test]
    async fn bad_idempotency_key_is_400() {
        let (h, _) = handler();
        let mut req = fixture();
        req.headers
            .insert("idempotency-key", "x".repeat(65).parse().unwrap());
        let r = h.handle(&req).await;
        assert_eq!(r.status_code, 400);
        assert_eq!(body(&r)["error"]["code"], "invalid_idempotency_key");
    }

    #[test]
    fn config_names_the_missing_variable() {
        let err = Config::from_env(&Env::from_map([("JWT_ALGORITHMS", "HS256")])).unwrap_err();
        assert_eq!(err, ConfigError::Missing("EVENTS_STREAM"));
    }
}
