//! Plays API Gateway (HTTP API, payload 2.0) in front of the ingest and query handlers.
//!
//! Each HTTP request becomes the `ApiGatewayV2httpRequest` API Gateway would send: headers,
//! raw and parsed query string, route key, request context, and a body that is base64-encoded
//! when it is binary (compressed or not UTF-8), as API Gateway does.

use std::sync::Arc;

use aws_lambda_events::apigw::{
    ApiGatewayV2httpRequest, ApiGatewayV2httpRequestContext, ApiGatewayV2httpResponse,
};
use aws_lambda_events::encodings::Body as LambdaBody;
use aws_lambda_events::query_map::QueryMap;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{Request, Response, StatusCode};
use base64::Engine;

/// How long a client has to send a request's line and headers (a slow client holds a
/// connection for nothing: "slowloris"). API Gateway fronts production; locally this server is
/// the edge, and must not be the weak link.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a client has to send a request's body (API Gateway gives an integration 30 s).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `app` on `listener`, HTTP/1.1, with [`HEADER_TIMEOUT`] on every request's headers
/// (axum's own `serve` sets no timer, so hyper's header timeout never fires there).
pub async fn serve(listener: tokio::net::TcpListener, app: axum::Router) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone().layer(axum::Extension(ConnectInfo(peer))),
        );
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, %peer, "connection ended");
            }
        });
    }
}

/// API Gateway's payload limit.
const MAX_PAYLOAD: usize = 10 * 1024 * 1024;
/// API Gateway's limit on the request line and headers together (HTTP APIs: 10 KiB).
const MAX_HEADER_BYTES: usize = 10 * 1024;

/// Which function a route goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The ingest function.
    Ingest,
    /// The query function.
    Query,
}

/// The routes of `template.yaml`'s HTTP API, as its functions' `HttpApi` events declare them
/// (`tests/tests/template.rs` holds the two equal): method, path (`{id}` stands for one
/// non-empty path segment), function.
pub const ROUTES: [(&str, &str, Target); 12] = [
    ("POST", "/v1/events", Target::Ingest),
    ("GET", "/v1/events", Target::Query),
    ("GET", "/v1/counts", Target::Query),
    ("GET", "/v1/users", Target::Query),
    ("GET", "/v1/routes", Target::Query),
    ("PUT", "/v1/routes/{id}", Target::Query),
    ("DELETE", "/v1/routes/{id}", Target::Query),
    ("GET", "/v1/metrics", Target::Query),
    ("GET", "/v1/metrics/{id}", Target::Query),
    ("PUT", "/v1/metrics/{id}", Target::Query),
    ("DELETE", "/v1/metrics/{id}", Target::Query),
    ("GET", "/v1/metrics/{id}/values", Target::Query),
];

/// Whether `path` fits the route path `pattern`.
fn path_matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut q) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some(seg), Some(got)) if seg.starts_with('{') && seg.ends_with('}') => {
                if got.is_empty() {
                    return false;
                }
            }
            (Some(seg), Some(got)) if seg == got => {}
            _ => return false,
        }
    }
}

/// The function and route key (`PUT /v1/routes/{id}`) of a request, as API Gateway routes it.
pub fn route(method: &str, path: &str) -> Option<(Target, String)> {
    let path = path.trim_end_matches('/');
    ROUTES
        .iter()
        .find(|(m, pattern, _)| *m == method && path_matches(pattern, path))
        .map(|(m, pattern, target)| (*target, format!("{m} {pattern}")))
}

/// Something that answers API Gateway requests (the ingest and query handlers).
pub type ApiFunction = Arc<
    dyn Fn(ApiGatewayV2httpRequest) -> futures::future::BoxFuture<'static, ApiGatewayV2httpResponse>
        + Send
        + Sync,
>;

/// The functions behind the gateway.
#[derive(Clone)]
pub struct Gateway {
    /// ingest.
    pub ingest: ApiFunction,
    /// query.
    pub query: ApiFunction,
}

/// The axum router serving every path through [`handle`].
pub fn router(gateway: Gateway) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(gateway)
}

async fn handle(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    request: Request<Body>,
) -> Response<Body> {
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    let Some((target, route_key)) = route(&method, &path) else {
        return plain(StatusCode::NOT_FOUND, r#"{"message":"Not Found"}"#);
    };
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + request.uri().to_string().len();
    if header_bytes > MAX_HEADER_BYTES {
        return plain(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            r#"{"message":"Request Header Fields Too Large"}"#,
        );
    }
    let (parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, to_bytes(body, MAX_PAYLOAD)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                r#"{"message":"Request Entity Too Large"}"#,
            );
        }
        Err(_) => {
            return plain(
                StatusCode::REQUEST_TIMEOUT,
                r#"{"message":"Request Timeout"}"#,
            );
        }
    };

    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let encoded = parts.headers.contains_key("content-encoding");
    let (body, is_base64_encoded) = if bytes.is_empty() {
        (None, false)
    } else {
        match std::str::from_utf8(&bytes) {
            Ok(text) if !encoded => (Some(text.to_string()), false),
            _ => (
                Some(base64::engine::general_purpose::STANDARD.encode(&bytes)),
                true,
            ),
        }
    };
    let now = chrono::Utc::now();
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.route_key = Some(route_key.clone());
    context.stage = Some("$default".into());
    context.request_id = Some(uuid_like());
    context.time_epoch = now.timestamp_millis();
    context.time = Some(now.format("%d/%b/%Y:%H:%M:%S +0000").to_string());
    context.http.method = parts.method.clone();
    context.http.path = Some(path.clone());
    context.http.protocol = Some("HTTP/1.1".into());
    context.http.source_ip = Some(peer.ip().to_string());
    context.http.user_agent = parts
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".into());
    event.route_key = Some(route_key);
    event.raw_path = Some(path);
    event.query_string_parameters = raw_query.parse::<QueryMap>().unwrap_or_default();
    event.raw_query_string = Some(raw_query);
    event.headers = parts.headers;
    event.request_context = context;
    event.body = body;
    event.is_base64_encoded = is_base64_encoded;

    let function = match target {
        Target::Ingest => &gateway.ingest,
        Target::Query => &gateway.query,
    };
    into_http(function(event).await)
}

fn uuid_like() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

fn plain(status: StatusCode, json: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(json))
        .expect("static response")
}

/// Turns the function's answer into the HTTP response API Gateway would send.
pub fn into_http(r: ApiGatewayV2httpResponse) -> Response<Body> {
    let status = u16::try_from(r.status_code)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match r.body {
        None => Vec::new(),
        Some(LambdaBody::Text(t)) if r.is_base64_encoded => {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .unwrap_or_default()
        }
        Some(LambdaBody::Text(t)) => t.into_bytes(),
        Some(LambdaBody::Binary(b)) => b,
        Some(_) => Vec::new(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = r.headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_as_api_gateway_routes_them() {
        assert_eq!(route("POST", "/v1/events").unwrap().0, Target::Ingest);
        assert_eq!(route("GET", "/v1/events/").unwrap().0, Target::Query);
        assert_eq!(
            route("PUT", "/v1/routes/r1").unwrap().1,
            "PUT /v1/routes/{id}"
        );
        assert_eq!(route("PUT", "/v1/routes/"), None);
        assert_eq!(route("DELETE", "/v1/events"), None);
        assert_eq!(route("GET", "/v2/events"), None);
    }
}
