//! query: the read side of the HTTP API, and the routes admin API.
//!
//! * `GET /v1/events` (scope `events:read`): the caller's own events, newest first, paginated
//!   with an opaque cursor; `admin` may name another `userId`.
//! * `GET /v1/counts` (scope `counts:read`): counts per bucket, summing the partial counters.
//! * `GET /v1/users` (scope `counts:read`): exact active users per day, ISO week or month, and
//!   new users per day, summing their partial counters (see `telemetry_shared::users`).
//! * `GET /v1/routes`, `PUT /v1/routes/{id}`, `DELETE /v1/routes/{id}` (scope `admin`).
//! * `PUT /v1/metrics/{id}`, `DELETE /v1/metrics/{id}` (scope `admin`), `GET /v1/metrics`,
//!   `GET /v1/metrics/{id}` and `GET /v1/metrics/{id}/values` (scope `counts:read`): the
//!   admin-defined metrics (see `telemetry_shared::metric_def`).

use std::sync::Arc;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::http::Method;
use serde::Serialize;
use serde_json::value::RawValue;
use telemetry_shared::auth::{AuthConfig, Principal, Scope, Verifier};
use telemetry_shared::aws::count_table::CountTable;
use telemetry_shared::aws::event_table::EventTable;
use telemetry_shared::aws::metric_table::MetricTable;
use telemetry_shared::aws::route_table::RouteTableStore;
use telemetry_shared::config::{ConfigError, Env};
use telemetry_shared::count::{self, BucketCount, Granularity};
use telemetry_shared::event::{
    DEFAULT_ENVIRONMENT, is_valid_environment, is_valid_type, is_valid_user_id,
};
use telemetry_shared::http::{self as api, ApiError};
use telemetry_shared::metric_def::{self, MetricDefinition, MetricInput};
use telemetry_shared::ports::{
    CountReader, EventQuery, EventReader, MetricDefinitions, MetricReader, ReadError, RouteStore,
};
use telemetry_shared::route::{Route, RouteInput};
use telemetry_shared::users::{self, Period};

/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 100;
/// Most buckets one counts request may span (a day of minutes).
pub const MAX_BUCKETS: i64 = 1440;

/// query's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `events` table (`EVENTS_TABLE`).
    pub events_table: String,
    /// The `counts` table (`COUNTS_TABLE`).
    pub counts_table: String,
    /// The `routes` table (`ROUTES_TABLE`).
    pub routes_table: String,
    /// Token verification.
    pub auth: AuthConfig,
    /// What every route's queue name must start with (`ROUTE_QUEUE_PREFIX`, optional): the
    /// queues the stack's forward function may send to.
    pub route_queue_prefix: Option<String>,
    /// The admin-defined metrics' definitions (`METRICS_TABLE`).
    pub metrics_table: String,
    /// post-process's snapshot lifetime (`METRICS_CACHE_SECONDS`, default 60): a new
    /// definition takes effect that long + 60 s after it is made.
    pub metrics_cache_seconds: u32,
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
            events_table: env.required("EVENTS_TABLE")?,
            counts_table: env.required("COUNTS_TABLE")?,
            routes_table: env.required("ROUTES_TABLE")?,
            auth: auth()?,
            route_queue_prefix: env.optional("ROUTE_QUEUE_PREFIX"),
            metrics_table: env.required("METRICS_TABLE")?,
            metrics_cache_seconds: env
                .parsed_or("METRICS_CACHE_SECONDS", metric_def::DEFAULT_CACHE_SECONDS)?,
        })
    }
}

/// The query handler.
pub struct Query {
    verifier: Verifier,
    events: Arc<dyn EventReader>,
    counts: Arc<dyn CountReader>,
    routes: Arc<dyn RouteStore>,
    route_queue_prefix: Option<String>,
    metrics: Option<MetricsApi>,
}

/// What the metrics API needs: the definitions, the partials, and δ (see `metric_def`).
type MetricsApi = (
    Arc<dyn MetricDefinitions>,
    Arc<dyn MetricReader>,
    chrono::Duration,
);

#[derive(Serialize)]
struct MetricsAnswer<'a> {
    metrics: &'a [MetricDefinition],
}

#[derive(Serialize)]
struct MetricValuesAnswer<'a> {
    metric: &'a MetricDefinition,
    granularity: Granularity,
    from: String,
    to: String,
    buckets: Vec<metric_def::MetricBucket>,
}

#[derive(Serialize)]
struct EventsPage<'a> {
    events: &'a [Box<RawValue>],
    cursor: Option<&'a str>,
}

#[derive(Serialize)]
struct CountsAnswer<'a> {
    #[serde(rename = "type")]
    kind: Option<&'a str>,
    environment: &'a str,
    granularity: Granularity,
    from: String,
    to: String,
    buckets: Vec<BucketCount>,
}

#[derive(Serialize)]
struct UsersAnswer<'a> {
    #[serde(rename = "type")]
    kind: Option<&'a str>,
    environment: &'a str,
    granularity: Period,
    from: String,
    to: String,
    buckets: Vec<users::UsersBucket>,
}

#[derive(Serialize)]
struct RoutesAnswer<'a> {
    routes: &'a [Route],
    /// The id after which the next page starts; `null` on the last page.
    cursor: Option<&'a str>,
}

/// One page of routes, in id order after `after`, within the list answers' byte budget
/// ([`api::MAX_LIST_RESPONSE_BYTES`]): the routes and whether more follow.
fn routes_page(
    mut routes: Vec<Route>,
    after: Option<&str>,
    max_bytes: usize,
) -> (Vec<Route>, bool) {
    routes.sort_by(|a, b| a.id.cmp(&b.id));
    routes.retain(|r| after.is_none_or(|after| r.id.as_str() > after));
    let mut budget = api::ResponseBudget::new(max_bytes);
    let fits = routes
        .iter()
        .take_while(|r| budget.take(&serde_json::to_string(r).unwrap_or_default()))
        .count()
        .max(1.min(routes.len()));
    let more = fits < routes.len();
    routes.truncate(fits);
    (routes, more)
}

impl Query {
    /// A handler verifying tokens with `verifier`, reading `events` and `counts`, managing
    /// `routes`.
    pub fn new(
        verifier: Verifier,
        events: Arc<dyn EventReader>,
        counts: Arc<dyn CountReader>,
        routes: Arc<dyn RouteStore>,
    ) -> Self {
        Self {
            verifier,
            events,
            counts,
            routes,
            route_queue_prefix: None,
            metrics: None,
        }
    }

    /// Serves the admin-defined metrics: definitions in `definitions`, partials read from
    /// `partials`; a new definition takes effect `cache_seconds` + 60 s after it is made.
    pub fn with_metrics(
        mut self,
        definitions: Arc<dyn MetricDefinitions>,
        partials: Arc<dyn MetricReader>,
        cache_seconds: u32,
    ) -> Self {
        self.metrics = Some((definitions, partials, metric_def::delay(cache_seconds)));
        self
    }

    /// Refuses routes to queues whose names do not start with `prefix`.
    pub fn with_route_queue_prefix(mut self, prefix: Option<String>) -> Self {
        self.route_queue_prefix = prefix;
        self
    }

    /// Handles one API Gateway request.
    pub async fn handle(&self, req: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        match self.route(req).await {
            Ok(response) => response,
            Err(e) => {
                tracing::info!(status = e.status(), code = e.code, "request refused");
                e.into_response()
            }
        }
    }

    async fn route(
        &self,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let path = api::path(req).trim_end_matches('/');
        let method = api::method(req).clone();
        let route_id = path.strip_prefix("/v1/routes/");
        let metric_path = path.strip_prefix("/v1/metrics/");
        if !matches!(
            path,
            "/v1/events" | "/v1/counts" | "/v1/users" | "/v1/routes" | "/v1/metrics"
        ) && route_id.is_none()
            && metric_path.is_none()
        {
            return Err(ApiError::not_found());
        }
        let principal = self
            .verifier
            .authenticate(api::header(req, "authorization"))
            .await?;
        if path == "/v1/metrics" || metric_path.is_some() {
            return self
                .metrics_route(req, &method, metric_path, &principal)
                .await;
        }
        match (method, path, route_id) {
            (Method::GET, "/v1/events", _) => self.list_events(req, &principal).await,
            (Method::GET, "/v1/counts", _) => self.counts(req, &principal).await,
            (Method::GET, "/v1/users", _) => self.users(req, &principal).await,
            (Method::GET, "/v1/routes", _) => {
                principal.require(Scope::Admin)?;
                let routes = self
                    .routes
                    .list_routes()
                    .await
                    .map_err(|e| ApiError::dependency("the routes table", e))?;
                let (page, more) = routes_page(
                    routes,
                    api::query(req, "cursor"),
                    api::MAX_LIST_RESPONSE_BYTES,
                );
                let cursor = more.then(|| page.last().map(|r| r.id.as_str())).flatten();
                Ok(api::json_response(
                    200,
                    &RoutesAnswer {
                        routes: &page,
                        cursor,
                    },
                ))
            }
            (Method::PUT, _, Some(id)) => {
                principal.require(Scope::Admin)?;
                self.put_route(req, id).await
            }
            (Method::DELETE, _, Some(id)) => {
                principal.require(Scope::Admin)?;
                let deleted = self
                    .routes
                    .delete_route(id)
                    .await
                    .map_err(|e| ApiError::dependency("the routes table", e))?;
                if !deleted {
                    return Err(ApiError::not_found());
                }
                tracing::info!(route = id, by = %principal.sub, "route deleted");
                let mut response = api::text_response(204, String::new());
                response.body = None;
                Ok(response)
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    async fn metrics_route(
        &self,
        req: &ApiGatewayV2httpRequest,
        method: &Method,
        metric_path: Option<&str>,
        principal: &Principal,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let Some((definitions, partials, delay)) = &self.metrics else {
            return Err(ApiError::not_found());
        };
        let table = |e| ApiError::dependency("the metrics table", e);
        let (id, values) = match metric_path {
            None => (None, false),
            Some(rest) => match rest.strip_suffix("/values") {
                Some(id) => (Some(id), true),
                None => (Some(rest), false),
            },
        };
        if id.is_some_and(|id| !metric_def::is_valid_id(id)) {
            return Err(ApiError::not_found());
        }
        match (method, id, values) {
            (&Method::GET, None, _) => {
                principal.require(Scope::CountsRead)?;
                let mut metrics = definitions.list_metrics().await.map_err(table)?;
                metrics.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(api::json_response(
                    200,
                    &MetricsAnswer { metrics: &metrics },
                ))
            }
            (&Method::GET, Some(id), false) => {
                principal.require(Scope::CountsRead)?;
                definition_answer(definitions.get_metric(id).await.map_err(table)?)
            }
            (&Method::GET, Some(id), true) => {
                principal.require(Scope::CountsRead)?;
                let Some(def) = definitions.get_metric(id).await.map_err(table)? else {
                    return Err(ApiError::not_found());
                };
                let q = metric_values_query(req, chrono::Utc::now())?;
                let from = count::format_bucket(q.granularity.bucket_start(q.from));
                let to = count::format_bucket(q.granularity.bucket_start(q.to));
                let counts = |e| ApiError::dependency("the counts table", e);
                let mut read = partials
                    .read_metric(
                        &metric_def::partition_key(id, q.granularity, false),
                        &from,
                        &to,
                        false,
                    )
                    .await
                    .map_err(counts)?;
                if def.by.is_some() {
                    read.extend(
                        partials
                            .read_metric(
                                &metric_def::partition_key(id, q.granularity, true),
                                &from,
                                &to,
                                true,
                            )
                            .await
                            .map_err(counts)?,
                    );
                }
                let buckets = metric_def::sum_metric(&read, def.sum.is_some(), def.by.is_some());
                Ok(api::json_response(
                    200,
                    &MetricValuesAnswer {
                        metric: &def,
                        granularity: q.granularity,
                        from,
                        to,
                        buckets,
                    },
                ))
            }
            (&Method::PUT, Some(id), false) => {
                principal.require(Scope::Admin)?;
                api::require_json(req)?;
                let body = api::body(req)?;
                let input: MetricInput = serde_json::from_slice(&body).map_err(|e| {
                    ApiError::bad_request("invalid_metric", format!("body is not a metric: {e}"))
                })?;
                let def = input
                    .into_definition(id, chrono::Utc::now(), *delay)
                    .map_err(|e| ApiError::bad_request(e.code, e.message))?;
                if definitions.create_metric(&def).await.map_err(table)? {
                    tracing::info!(metric = id, by = %principal.sub, "metric defined");
                    return Ok(api::json_response(201, &def));
                }
                let Some(existing) = definitions.get_metric(id).await.map_err(table)? else {
                    return Err(ApiError::dependency(
                        "the metrics table",
                        telemetry_shared::ports::Failure::Transient(
                            "the metric changed under us".into(),
                        ),
                    ));
                };
                if existing.retired_at.is_some() {
                    return Err(retired_metric());
                }
                if !existing.same_measure(&def) {
                    return Err(ApiError::new(
                        api::Refusal::Conflict,
                        "metric_changed",
                        "a metric's type, sum, by and environment cannot change: define a new metric",
                    ));
                }
                if !definitions
                    .describe_metric(id, def.description.as_deref())
                    .await
                    .map_err(table)?
                {
                    return Err(retired_metric());
                }
                Ok(api::json_response(
                    200,
                    &MetricDefinition {
                        description: def.description,
                        ..existing
                    },
                ))
            }
            (&Method::DELETE, Some(id), false) => {
                principal.require(Scope::Admin)?;
                let at = telemetry_shared::time::format(chrono::Utc::now() + *delay);
                // `false`: missing, or retired before; either way the answer is what is stored.
                if definitions.retire_metric(id, &at).await.map_err(table)? {
                    tracing::info!(metric = id, by = %principal.sub, retired_at = %at, "metric retired");
                }
                definition_answer(definitions.get_metric(id).await.map_err(table)?)
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    async fn put_route(
        &self,
        req: &ApiGatewayV2httpRequest,
        id: &str,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        api::require_json(req)?;
        let body = api::body(req)?;
        let input: RouteInput = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("invalid_route", format!("body is not a route: {e}"))
        })?;
        let route = input
            .into_route(id, self.route_queue_prefix.as_deref())
            .map_err(|e| ApiError::bad_request(e.code, e.message))?;
        self.routes
            .put_route(&route)
            .await
            .map_err(|e| ApiError::dependency("the routes table", e))?;
        tracing::info!(route = %route.id, pattern = %route.pattern, queue = %route.queue_url, "route saved");
        Ok(api::json_response(200, &route))
    }

    async fn counts(
        &self,
        req: &ApiGatewayV2httpRequest,
        principal: &Principal,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        principal.require(Scope::CountsRead)?;
        let q = counts_query(req, chrono::Utc::now())?;
        let kind = q.kind.as_deref().unwrap_or(count::ALL_TYPES);
        let pk = count::partition_key(&q.environment, kind, q.granularity);
        let from_bucket = count::format_bucket(q.granularity.bucket_start(q.from));
        let to_bucket = count::format_bucket(q.granularity.bucket_start(q.to));
        let partials = self
            .counts
            .read_partials(&pk, &from_bucket, &to_bucket)
            .await
            .map_err(|e| ApiError::dependency("the counts table", e))?;
        Ok(api::json_response(
            200,
            &CountsAnswer {
                kind: q.kind.as_deref(),
                environment: &q.environment,
                granularity: q.granularity,
                from: from_bucket,
                to: to_bucket,
                buckets: count::sum_partials(partials),
            },
        ))
    }

    async fn users(
        &self,
        req: &ApiGatewayV2httpRequest,
        principal: &Principal,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        principal.require(Scope::CountsRead)?;
        let q = users_query(req, chrono::Utc::now())?;
        let kind = q.kind.as_deref().unwrap_or(count::ALL_TYPES);
        let from_bucket = count::format_bucket(q.period.start(q.from));
        let to_bucket = count::format_bucket(q.period.start(q.to));
        let read = |pk: String| {
            let (from, to) = (from_bucket.clone(), to_bucket.clone());
            async move {
                self.counts
                    .read_partials(&pk, &from, &to)
                    .await
                    .map_err(|e| ApiError::dependency("the counts table", e))
            }
        };
        let active = read(q.period.counter_key(&q.environment, kind)).await?;
        let new = match q.period {
            Period::Day => Some(read(users::new_users_key(&q.environment, kind)).await?),
            _ => None,
        };
        Ok(api::json_response(
            200,
            &UsersAnswer {
                kind: q.kind.as_deref(),
                environment: &q.environment,
                granularity: q.period,
                from: from_bucket,
                to: to_bucket,
                buckets: users::sum_users(active, new),
            },
        ))
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
            ReadError::Store(failure) => ApiError::dependency("the events table", failure),
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

/// The optional `type` parameter, checked.
fn type_param(req: &ApiGatewayV2httpRequest) -> Result<Option<String>, ApiError> {
    match api::query(req, "type") {
        None => Ok(None),
        Some(t) if is_valid_type(t) => Ok(Some(t.to_string())),
        Some(_) => Err(ApiError::bad_request(
            "invalid_type",
            "`type` is not a valid event type",
        )),
    }
}

/// An optional RFC 3339 query parameter; `code` names the 400 when it does not parse.
fn time_param(
    req: &ApiGatewayV2httpRequest,
    name: &'static str,
    code: &'static str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    api::query(req, name)
        .map(|raw| {
            telemetry_shared::time::parse(raw).ok_or_else(|| {
                ApiError::bad_request(code, format!("`{name}` must be an RFC 3339 date-time"))
            })
        })
        .transpose()
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
    let from = time_param(req, "from", "invalid_from")?.map(telemetry_shared::time::format);
    let to = time_param(req, "to", "invalid_to")?.map(telemetry_shared::time::format);
    if let (Some(f), Some(t)) = (&from, &to)
        && f > t
    {
        return Err(ApiError::bad_request(
            "invalid_range",
            "`from` is after `to`",
        ));
    }
    let kind = type_param(req)?;
    Ok(EventQuery {
        user_id,
        from,
        to,
        kind,
        limit,
        cursor: api::query(req, "cursor").map(str::to_string),
        max_bytes: api::MAX_LIST_RESPONSE_BYTES,
    })
}

/// Checked parameters of `GET /v1/counts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountsQuery {
    /// Event type; `None` is all types together.
    pub kind: Option<String>,
    /// Environment, default `prod`.
    pub environment: String,
    /// Bucket size, default `hour`.
    pub granularity: Granularity,
    /// Start of the range (inclusive).
    pub from: chrono::DateTime<chrono::Utc>,
    /// End of the range (inclusive).
    pub to: chrono::DateTime<chrono::Utc>,
}

/// Reads and checks the parameters of `GET /v1/counts`. Without `to`, the range ends `now`;
/// without `from`, it starts 60 minutes, 24 hours or 30 days before `to`.
pub fn counts_query(
    req: &ApiGatewayV2httpRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<CountsQuery, ApiError> {
    let granularity = match api::query(req, "granularity") {
        None => Granularity::Hour,
        Some(g) => Granularity::parse(g).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_granularity",
                "`granularity` must be minute, hour or day",
            )
        })?,
    };
    let default_span = match granularity {
        Granularity::Minute => chrono::Duration::minutes(59),
        Granularity::Hour => chrono::Duration::hours(23),
        Granularity::Day => chrono::Duration::days(29),
    };
    let Range {
        kind,
        environment,
        from,
        to,
    } = range_params(req, now, default_span)?;
    let span = count::bucket_span(granularity, from, to);
    if span > MAX_BUCKETS {
        return Err(ApiError::bad_request(
            "range_too_large",
            format!(
                "the range spans {span} {} buckets; at most {MAX_BUCKETS} per request",
                granularity.as_str()
            ),
        ));
    }
    Ok(CountsQuery {
        kind,
        environment,
        granularity,
        from,
        to,
    })
}

/// A metric definition's answer: 200 with it, or 404.
fn definition_answer(def: Option<MetricDefinition>) -> Result<ApiGatewayV2httpResponse, ApiError> {
    match def {
        Some(def) => Ok(api::json_response(200, &def)),
        None => Err(ApiError::not_found()),
    }
}

/// The refusal of a PUT to a retired metric id.
fn retired_metric() -> ApiError {
    ApiError::new(
        api::Refusal::Conflict,
        "metric_retired",
        "this metric id was deleted; ids are never reused: choose another",
    )
}

/// Checked parameters of `GET /v1/metrics/{id}/values`: `granularity` (default hour), `from`
/// and `to`, as `/v1/counts` (no `type` or `environment`: the metric decides them).
pub fn metric_values_query(
    req: &ApiGatewayV2httpRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<CountsQuery, ApiError> {
    for fixed in ["type", "environment"] {
        if api::query(req, fixed).is_some() {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("`{fixed}` is the metric's own: it is not a parameter of its values"),
            ));
        }
    }
    counts_query(req, now)
}

/// The parameters every range answer shares (`/v1/counts`, `/v1/users`), checked.
struct Range {
    kind: Option<String>,
    environment: String,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
}

/// `type`, `environment`, `to` (default `now`) and `from` (default `default_span` before `to`,
/// and not after it).
fn range_params(
    req: &ApiGatewayV2httpRequest,
    now: chrono::DateTime<chrono::Utc>,
    default_span: chrono::Duration,
) -> Result<Range, ApiError> {
    let kind = type_param(req)?;
    let environment = environment_param(req)?;
    let to = time_param(req, "to", "invalid_to")?.unwrap_or(now);
    let from = time_param(req, "from", "invalid_from")?.unwrap_or(to - default_span);
    if from > to {
        return Err(ApiError::bad_request(
            "invalid_range",
            "`from` is after `to`",
        ));
    }
    Ok(Range {
        kind,
        environment,
        from,
        to,
    })
}

/// The `environment` parameter, checked (default: the default environment).
fn environment_param(req: &ApiGatewayV2httpRequest) -> Result<String, ApiError> {
    match api::query(req, "environment") {
        None => Ok(DEFAULT_ENVIRONMENT.to_string()),
        Some(e) if is_valid_environment(e) => Ok(e.to_string()),
        Some(_) => Err(ApiError::bad_request(
            "invalid_environment",
            "`environment` must be 1..=32 characters of [a-z0-9_-]",
        )),
    }
}

/// Checked parameters of `GET /v1/users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsersQuery {
    /// One type, or all (`None`).
    pub kind: Option<String>,
    /// Environment.
    pub environment: String,
    /// Day, week or month.
    pub period: Period,
    /// Range start.
    pub from: chrono::DateTime<chrono::Utc>,
    /// Range end.
    pub to: chrono::DateTime<chrono::Utc>,
}

/// Reads and checks the parameters of `GET /v1/users`, as `/v1/counts`'s: without `to`, the
/// range ends now; without `from`, it holds 30 days, 12 weeks or 12 months.
pub fn users_query(
    req: &ApiGatewayV2httpRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<UsersQuery, ApiError> {
    let period = match api::query(req, "granularity") {
        None => Period::Day,
        Some(g) => Period::parse(g).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_granularity",
                "`granularity` must be day, week or month",
            )
        })?,
    };
    let default_span = match period {
        Period::Day => chrono::Duration::days(29),
        Period::Week => chrono::Duration::weeks(11),
        Period::Month => chrono::Duration::days(334),
    };
    let Range {
        kind,
        environment,
        from,
        to,
    } = range_params(req, now, default_span)?;
    let (mut start, mut span) = (period.start(from), 0i64);
    while start <= to && span <= MAX_BUCKETS {
        start = period.next(start);
        span += 1;
    }
    if span > MAX_BUCKETS {
        return Err(ApiError::bad_request(
            "range_too_large",
            format!(
                "the range spans more than {MAX_BUCKETS} {} buckets",
                period.as_str()
            ),
        ));
    }
    Ok(UsersQuery {
        kind,
        environment,
        period,
        from,
        to,
    })
}

/// Builds the production handler, reading the JWT secret from Secrets Manager when
/// `JWT_SECRET_ARN` names one.
pub async fn from_config(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> Result<Query, ConfigError> {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    // Reads only: the TTL setting is post-process's.
    let counts = Arc::new(CountTable::new(
        dynamodb.clone(),
        config.counts_table.clone(),
        1,
    ));
    Ok(Query::new(
        Verifier::connect(
            &telemetry_shared::aws::secrets::resolve(config.auth.clone(), sdk).await?,
        )
        .await?,
        Arc::new(EventTable::new(
            dynamodb.clone(),
            config.events_table.clone(),
            None,
        )),
        counts.clone(),
        Arc::new(RouteTableStore::new(
            dynamodb.clone(),
            config.routes_table.clone(),
        )),
    )
    .with_route_queue_prefix(config.route_queue_prefix.clone())
    .with_metrics(
        Arc::new(MetricTable::new(dynamodb, config.metrics_table.clone())),
        counts,
        config.metrics_cache_seconds,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_answered_in_pages_within_the_byte_budget() {
        let route = |id: &str| Route {
            id: id.into(),
            pattern: "*".into(),
            queue_url: "https://sqs.eu-west-1.amazonaws.com/1/telemetry_q".into(),
            enabled: true,
            description: Some("\"quoted\"".repeat(10)),
        };
        let all: Vec<Route> = ["c", "a", "b", "d"].into_iter().map(route).collect();
        let one = api::escaped_len(&serde_json::to_string(&route("a")).unwrap()) + 1;
        let (page, more) = routes_page(all.clone(), None, 2 * one);
        assert_eq!(
            page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(more);
        let (page, more) = routes_page(all.clone(), Some("b"), 2 * one);
        assert_eq!(
            page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["c", "d"]
        );
        assert!(!more);
        // Everything in one page when it fits; at least one route per page whatever the budget.
        assert_eq!(routes_page(all.clone(), None, usize::MAX).0.len(), 4);
        assert_eq!(routes_page(all, None, 1).0.len(), 1);
    }

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
    fn users_parameters_are_checked_like_counts() {
        let now = telemetry_shared::time::parse("2026-12-03T12:00:00Z").unwrap();
        let q = users_query(&with_query(""), now).unwrap();
        assert_eq!((q.period, q.environment.as_str()), (Period::Day, "prod"));
        assert_eq!(q.to - q.from, chrono::Duration::days(29));
        let q = users_query(&with_query("granularity=week&type=shop.buy"), now).unwrap();
        assert_eq!(
            (q.period, q.kind.as_deref()),
            (Period::Week, Some("shop.buy"))
        );
        let code = |query: &str| users_query(&with_query(query), now).unwrap_err().code;
        assert_eq!(code("granularity=hour"), "invalid_granularity");
        assert_eq!(code("environment=PROD"), "invalid_environment");
        assert_eq!(
            code("from=2026-12-04T00:00:00Z&to=2026-12-03T00:00:00Z"),
            "invalid_range"
        );
        assert_eq!(
            code("granularity=day&from=2020-01-01T00:00:00Z"),
            "range_too_large"
        );
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
                .status(),
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

    mod metrics_api {
        use aws_lambda_events::encodings::Body;
        use telemetry_shared::auth::{IssuerConfig, VerificationKey};
        use telemetry_shared::config::Secret;
        use telemetry_shared::ports::memory::{
            MemoryCounts, MemoryMetricDefinitions, MemoryMetrics, MemoryRoutes, MemoryStore,
        };

        use super::*;

        /// Test-only key: never deployed.
        const SECRET: &str = "test-only-secret-of-at-least-32-bytes!!";

        fn handler() -> Query {
            let verifier = Verifier::new(&AuthConfig::one(IssuerConfig::new(
                vec![jsonwebtoken::Algorithm::HS256],
                VerificationKey::Secret(Secret::new(SECRET.into())),
                "iss",
                "aud",
            )))
            .unwrap();
            Query::new(
                verifier,
                Arc::new(MemoryStore::default()),
                Arc::new(MemoryCounts::default()),
                Arc::new(MemoryRoutes::default()),
            )
            .with_metrics(
                Arc::new(MemoryMetricDefinitions::default()),
                Arc::new(MemoryMetrics::default()),
                60,
            )
        }

        fn request(
            method: &str,
            path: &str,
            scope: &str,
            body: Option<&str>,
        ) -> ApiGatewayV2httpRequest {
            let now = jsonwebtoken::get_current_timestamp();
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &serde_json::json!({"sub": "ops", "iss": "iss", "aud": "aud", "exp": now + 600, "iat": now, "scope": scope}),
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap();
            let mut req = super::fixture();
            req.request_context.http.method = method.parse().unwrap();
            req.raw_path = Some(path.into());
            req.query_string_parameters = Default::default();
            req.raw_query_string = None;
            req.headers
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            req.headers
                .insert("content-type", "application/json".parse().unwrap());
            req.body = body.map(str::to_string);
            req.is_base64_encoded = false;
            req
        }

        async fn call(
            h: &Query,
            method: &str,
            path: &str,
            scope: &str,
            body: Option<&str>,
        ) -> (i64, serde_json::Value) {
            let r = h.handle(&request(method, path, scope, body)).await;
            let json = match &r.body {
                Some(Body::Text(t)) if !t.is_empty() => serde_json::from_str(t).unwrap(),
                _ => serde_json::Value::Null,
            };
            (r.status_code, json)
        }

        const REVENUE: &str = r#"{"type":"game.purchase","sum":"data.amount","by":"data.currency","environment":"prod"}"#;

        #[tokio::test]
        async fn metrics_are_defined_by_admins_and_never_change_what_they_measure() {
            let h = handler();
            let put = |scope, body| call(&h, "PUT", "/v1/metrics/revenue", scope, Some(body));
            assert_eq!(put("counts:read events:write", REVENUE).await.0, 403);
            let (status, def) = put("admin", REVENUE).await;
            assert_eq!(status, 201, "{def}");
            let created =
                telemetry_shared::time::parse(def["createdAt"].as_str().unwrap()).unwrap();
            let effective =
                telemetry_shared::time::parse(def["effectiveAt"].as_str().unwrap()).unwrap();
            assert_eq!(
                effective - created,
                chrono::Duration::seconds(120),
                "cache lifetime + 60 s"
            );
            // The description may change; what it measures may not.
            let described = r#"{"type":"game.purchase","sum":"data.amount","by":"data.currency","environment":"prod","description":"Revenue"}"#;
            let (status, again) = put("admin", described).await;
            assert_eq!(
                (status, again["description"].as_str()),
                (200, Some("Revenue"))
            );
            assert_eq!(
                again["effectiveAt"], def["effectiveAt"],
                "a PUT never moves effectiveAt"
            );
            let (status, refused) =
                put("admin", r#"{"type":"game.purchase","sum":"data.price"}"#).await;
            assert_eq!(
                (status, refused["error"]["code"].as_str()),
                (409, Some("metric_changed")),
                "{refused}"
            );
            assert_eq!(
                put("admin", r#"{"type":"game.purchase","sum":"price"}"#)
                    .await
                    .0,
                400
            );
            let (status, list) = call(&h, "GET", "/v1/metrics", "counts:read", None).await;
            assert_eq!(
                (status, list["metrics"][0]["id"].as_str()),
                (200, Some("revenue"))
            );
            assert_eq!(
                call(&h, "DELETE", "/v1/metrics/revenue", "counts:read", None)
                    .await
                    .0,
                403
            );
            let (status, retired) = call(&h, "DELETE", "/v1/metrics/revenue", "admin", None).await;
            assert_eq!(status, 200);
            assert!(retired["retiredAt"].is_string(), "{retired}");
            let (status, reused) = put("admin", REVENUE).await;
            assert_eq!(
                (status, reused["error"]["code"].as_str()),
                (409, Some("metric_retired"))
            );
            assert_eq!(
                call(&h, "DELETE", "/v1/metrics/missing", "admin", None)
                    .await
                    .0,
                404
            );
        }

        #[tokio::test]
        async fn values_are_read_with_the_counts_parameters() {
            let h = handler();
            assert_eq!(
                call(&h, "PUT", "/v1/metrics/revenue", "admin", Some(REVENUE))
                    .await
                    .0,
                201
            );
            let (status, answer) =
                call(&h, "GET", "/v1/metrics/revenue/values", "counts:read", None).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["granularity"], "hour");
            assert_eq!(answer["buckets"], serde_json::json!([]));
            assert_eq!(
                call(&h, "GET", "/v1/metrics/nope/values", "counts:read", None)
                    .await
                    .0,
                404
            );
            let mut req = request("GET", "/v1/metrics/revenue/values", "counts:read", None);
            req.query_string_parameters = "granularity=week".parse().unwrap();
            assert_eq!(h.handle(&req).await.status_code, 400);
            assert_eq!(
                call(
                    &h,
                    "GET",
                    "/v1/metrics/revenue/values",
                    "events:write",
                    None
                )
                .await
                .0,
                403
            );
        }
    }
}
