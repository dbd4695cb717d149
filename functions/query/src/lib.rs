//! query: the read side of the HTTP API.
//!
//! `GET /v1/events` (scope `events:read`): the caller's own events, newest first, paginated
//! with an opaque cursor; `admin` may name another `userId`.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::http::Method;
use serde::Serialize;
use serde_json::value::RawValue;
use telemetry_shared::auth::{AuthConfig, Principal, Scope, Verifier};
use telemetry_shared::aws::event_table::EventTable;
use telemetry_shared::config::{ConfigError, Env};
use telemetry_shared::event::{is_valid_type, is_valid_user_id};
use telemetry_shared::http::{self as api, ApiError};
use telemetry_shared::ports::{EventQuery, EventReader, ReadError, StoreError};

/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 100;

/// query's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `events` table (`EVENTS_TABLE`).
    pub events_table: String,
    /// Token verification.
    pub auth: AuthConfig,
}

impl Config {
    /// Reads the configuration; the error names the variable at fault.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            events_table: env.required("EVENTS_TABLE")?,
            auth: AuthConfig::from_env(env)?,
        })
    }
}

/// The query handler.
pub struct Query<R> {
    verifier: Verifier,
    events: R,
}

#[derive(Serialize)]
struct EventsPage<'a> {
    events: &'a [Box<RawValue>],
    cursor: Option<&'a str>,
}

impl<R: EventReader> Query<R> {
    /// A handler verifying tokens with `verifier` and reading from `events`.
    pub fn new(verifier: Verifier, events: R) -> Self {
        Self { verifier, events }
    }

    /// Handles one API Gateway request.
    pub async fn handle(&self, req: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        match self.route(req).await {
            Ok(response) => response,
            Err(e) => {
                tracing::info!(status = e.status, code = e.code, "request refused");
                e.into_response()
            }
        }
    }

    async fn route(
        &self,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let path = api::path(req).trim_end_matches('/');
        match path {
            "/v1/events" => {
                if api::method(req) != Method::GET {
                    return Err(ApiError::method_not_allowed());
                }
                let principal = self
                    .verifier
                    .authenticate(api::header(req, "authorization"))?;
                self.list_events(req, &principal).await
            }
            _ => Err(ApiError::not_found()),
        }
    }

    async fn list_events(
        &self,
        req: &ApiGatewayV2httpRequest,
        principal: &Principal,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        principal.require(Scope::EventsRead)?;
        let query = events_query(req, principal)?;
        let page = self.events.list_events(&query).await.map_err(|e| match e {
            ReadError::InvalidCursor => ApiError::bad_request("invalid_cursor", e.to_string()),
            ReadError::Store(StoreError::Unavailable(reason)) => {
                tracing::warn!(%reason, "events table unavailable");
                ApiError::unavailable("events could not be read, retry later", 1)
            }
            ReadError::Store(StoreError::Refused(reason)) => {
                tracing::error!(%reason, "events table refused the query");
                ApiError::internal()
            }
        })?;
        Ok(api::json_response(
            200,
            &EventsPage {
                events: &page.events,
                cursor: page.cursor.as_deref(),
            },
        ))
    }
}

/// Reads and checks the parameters of `GET /v1/events`.
pub fn events_query(
    req: &ApiGatewayV2httpRequest,
    principal: &Principal,
) -> Result<EventQuery, ApiError> {
    let user_id = match api::query(req, "userId") {
        None => principal.sub.clone(),
        Some(user) if user == principal.sub => user.to_string(),
        Some(user) => {
            principal.require(Scope::Admin)?;
            if !is_valid_user_id(user) {
                return Err(ApiError::bad_request(
                    "invalid_user_id",
                    "`userId` is not a valid user id",
                ));
            }
            user.to_string()
        }
    };
    let limit = match api::query(req, "limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request("invalid_limit", format!("`limit` must be 1..={MAX_LIMIT}"))
            })?,
    };
    let time = |name: &'static str, code: &'static str| {
        api::query(req, name)
            .map(|raw| {
                telemetry_shared::time::normalize(raw).ok_or_else(|| {
                    ApiError::bad_request(code, format!("`{name}` must be an RFC 3339 date-time"))
                })
            })
            .transpose()
    };
    let from = time("from", "invalid_from")?;
    let to = time("to", "invalid_to")?;
    if let (Some(f), Some(t)) = (&from, &to)
        && f > t
    {
        return Err(ApiError::bad_request(
            "invalid_range",
            "`from` is after `to`",
        ));
    }
    let kind = match api::query(req, "type") {
        None => None,
        Some(t) if is_valid_type(t) => Some(t.to_string()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_type",
                "`type` is not a valid event type",
            ));
        }
    };
    Ok(EventQuery {
        user_id,
        from,
        to,
        kind,
        limit,
        cursor: api::query(req, "cursor").map(str::to_string),
    })
}

/// Builds the production handler.
pub fn from_config(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> Result<Query<EventTable>, ConfigError> {
    let events = EventTable::new(
        aws_sdk_dynamodb::Client::new(sdk),
        config.events_table.clone(),
        None,
    );
    Ok(Query::new(Verifier::new(&config.auth)?, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> ApiGatewayV2httpRequest {
        serde_json::from_str(include_str!("../../../events/query-get-events.json")).unwrap()
    }

    fn with_query(q: &str) -> ApiGatewayV2httpRequest {
        let mut req = fixture();
        req.query_string_parameters = q.parse().unwrap();
        req.raw_query_string = Some(q.into());
        req
    }

    #[test]
    fn fixture_asks_for_ten_of_the_callers_events() {
        let p = Principal::new("fixture-user", &[Scope::EventsRead]);
        let q = events_query(&fixture(), &p).unwrap();
        assert_eq!(q.user_id, "fixture-user");
        assert_eq!(q.limit, 10);
        assert_eq!((q.from, q.to, q.kind, q.cursor), (None, None, None, None));
    }

    #[test]
    fn parameters_are_checked() {
        let p = Principal::new("u", &[Scope::EventsRead]);
        assert_eq!(
            events_query(&with_query(""), &p).unwrap().limit,
            DEFAULT_LIMIT
        );
        let q = events_query(
            &with_query("from=2026-01-01T01:00:00%2B01:00&type=game.x"),
            &p,
        )
        .unwrap();
        assert_eq!(q.from.as_deref(), Some("2026-01-01T00:00:00.000Z"));
        assert_eq!(q.kind.as_deref(), Some("game.x"));
        for (bad, code) in [
            ("limit=0", "invalid_limit"),
            ("limit=101", "invalid_limit"),
            ("limit=x", "invalid_limit"),
            ("from=now", "invalid_from"),
            ("to=now", "invalid_to"),
            ("type=a%20b", "invalid_type"),
        ] {
            assert_eq!(
                events_query(&with_query(bad), &p).unwrap_err().code,
                code,
                "{bad}"
            );
        }
    }

    #[test]
    fn only_admin_may_name_another_user() {
        let user = Principal::new("u", &[Scope::EventsRead]);
        assert_eq!(
            events_query(&with_query("userId=u"), &user)
                .unwrap()
                .user_id,
            "u"
        );
        assert_eq!(
            events_query(&with_query("userId=v"), &user)
                .unwrap_err()
                .status,
            403
        );
        let admin = Principal::new("ops", &[Scope::Admin]);
        assert_eq!(
            events_query(&with_query("userId=v"), &admin)
                .unwrap()
                .user_id,
            "v"
        );
    }
}
