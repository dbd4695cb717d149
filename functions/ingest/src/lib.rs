//! ingest: `POST /v1/events` → verify the JWT → parse and validate the batch → enrich →
//! one Kinesis `PutRecords` (split only past Kinesis's limits) → 202 once every accepted event
//! is durably on the stream.
//!
//! The rules live in `telemetry_shared` (`batch`, `event`, `auth`); this crate maps the API
//! Gateway request in and the outcome out.

use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::http::Method;
use serde::Serialize;
use telemetry_shared::auth::{AuthConfig, Scope, Verifier};
use telemetry_shared::batch::{self, Enrichment, RejectedEvent};
use telemetry_shared::config::{ConfigError, Env};
use telemetry_shared::http::{self as api, ApiError};
use telemetry_shared::metrics::Metrics;
use telemetry_shared::ports::{EventSink, SinkError};

/// Seconds a client is told to wait after a 503.
pub const RETRY_AFTER_SECS: u32 = 2;

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
}

impl Config {
    /// Reads the configuration; the error names the variable at fault.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            stream: env.required("EVENTS_STREAM")?,
            auth: AuthConfig::from_env(env)?,
            retry_budget: Duration::from_millis(env.parsed_or("INGEST_RETRY_BUDGET_MS", 5000)?),
        })
    }
}

/// The ingest handler: built once per execution environment.
pub struct Ingest<S> {
    verifier: Verifier,
    sink: S,
}

#[derive(Serialize)]
struct Accepted<'a> {
    accepted: usize,
    ids: &'a [String],
    rejected: &'a [RejectedEvent],
}

impl<S: EventSink> Ingest<S> {
    /// A handler verifying tokens with `verifier` and writing to `sink`.
    pub fn new(verifier: Verifier, sink: S) -> Self {
        Self { verifier, sink }
    }

    /// Handles one API Gateway request.
    pub async fn handle(&self, req: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let mut metrics = Metrics::new("ingest");
        let response = match self.accept(req, &mut metrics).await {
            Ok(response) => response,
            Err(e) => {
                metrics.add("RequestsFailed", 1);
                tracing::info!(status = e.status, code = e.code, "request refused");
                e.into_response()
            }
        };
        metrics.flush();
        response
    }

    async fn accept(
        &self,
        req: &ApiGatewayV2httpRequest,
        metrics: &mut Metrics,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        if api::method(req) != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        let principal = self
            .verifier
            .authenticate(api::header(req, "authorization"))?;
        principal.require(Scope::EventsWrite)?;
        api::require_json(req)?;
        let idempotency_key = match api::header(req, "idempotency-key") {
            None => None,
            Some(key) if batch::is_valid_idempotency_key(key) => Some(key),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1..=64 visible ASCII characters",
                ));
            }
        };
        let body = api::body(req)?;
        let body = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("invalid_json", "body is not UTF-8"))?;

        let who = Enrichment {
            user_id: &principal.sub,
            received_at: chrono::Utc::now(),
            idempotency_key,
        };
        let prepared = batch::prepare(body, &who)
            .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
        for r in &prepared.rejected {
            metrics.rejected(r.code.as_str());
        }
        metrics.add(
            "BatchSize",
            (prepared.records.len() + prepared.rejected.len()) as u64,
        );
        if prepared.records.is_empty() {
            return Err(ApiError::bad_request(
                "no_valid_events",
                "no event in the request is valid",
            )
            .with_details("rejected", serde_json::json!(prepared.rejected)));
        }

        let accepted = prepared.records.len();
        self.sink
            .put_records(prepared.records)
            .await
            .map_err(|e| match e {
                SinkError::Unavailable(reason) => {
                    tracing::warn!(%reason, "event stream unavailable");
                    ApiError::unavailable(
                        "events could not be stored, retry later",
                        RETRY_AFTER_SECS,
                    )
                }
                SinkError::Refused(reason) => {
                    tracing::error!(%reason, "event stream refused the records");
                    ApiError::internal()
                }
            })?;
        metrics.add("EventsAccepted", accepted as u64);
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
}

/// Builds the production handler from configuration and an SDK config.
pub fn from_config(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> Result<Ingest<telemetry_shared::aws::kinesis::KinesisSink>, ConfigError> {
    let sink = telemetry_shared::aws::kinesis::KinesisSink::new(
        aws_sdk_kinesis::Client::new(sdk),
        config.stream.clone(),
        config.retry_budget,
    );
    Ok(Ingest::new(Verifier::new(&config.auth)?, sink))
}
