//! The HTTP edge: API Gateway HTTP API (payload 2.0) requests in, JSON responses out.
//!
//! [`ApiError`] is the one place where failures become status codes and the
//! `{"error": {"code", "message"}}` body.

use std::borrow::Cow;
use std::io::Read;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue, Method, header};
use base64::Engine;
use serde::Serialize;

use crate::auth::AuthError;
use crate::batch::MAX_BODY_BYTES;
use crate::ports::Failure;

/// Most bytes a list answer's items may take in the Lambda invoke response. Lambda refuses a
/// response over 6 MB (API Gateway then answers 5xx), and the body travels escaped inside the
/// response's JSON (`"` becomes `\"`, a control character `\u00XX`), so a page of quote-heavy
/// events is up to twice its own size there: pages stop at 5 MiB of that, leaving room for the
/// envelope, and their cursor goes on from there. Every list API pages under it.
pub const MAX_LIST_RESPONSE_BYTES: usize = 5 * 1024 * 1024;

/// The bytes `text` takes once escaped into a JSON string (the invoke response's `body`).
pub fn escaped_len(text: &str) -> usize {
    text.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// What is left of a list answer's [`MAX_LIST_RESPONSE_BYTES`].
#[derive(Debug, Clone, Copy)]
pub struct ResponseBudget {
    left: usize,
}

impl ResponseBudget {
    /// A budget of `bytes` (as counted by [`escaped_len`]).
    pub fn new(bytes: usize) -> Self {
        Self { left: bytes }
    }

    /// Takes room for one more list item (its JSON and a separator) if it fits.
    pub fn take(&mut self, item_json: &str) -> bool {
        let needed = escaped_len(item_json) + 1;
        if needed > self.left {
            return false;
        }
        self.left -= needed;
        true
    }
}

/// Most gzip members a compressed body may hold (clients send one).
pub const MAX_GZIP_MEMBERS: usize = 4;

/// `Retry-After` of a 503: a dependency that failed for the retry budget is worth another try
/// a moment later, not at once.
pub const RETRY_AFTER_SECS: u32 = 2;

/// What kind of refusal an answer is: the one place an HTTP status (and `Retry-After`) is
/// chosen, for every function behind the API ([`Refusal::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request is malformed or invalid: fix it before sending it again.
    BadRequest,
    /// No valid token.
    Unauthorized,
    /// A valid token without the scope.
    Forbidden,
    /// No such resource.
    NotFound,
    /// The resource exists but not with this method.
    MethodNotAllowed,
    /// The request contradicts the resource's state (e.g. changing what a metric measures).
    Conflict,
    /// The body (or what a request asks for at once) can never be accepted.
    PayloadTooLarge,
    /// The body is not JSON (or not gzip when it says so).
    UnsupportedMediaType,
    /// Over the user's rate limit: retry after this many seconds.
    RateLimited {
        /// `Retry-After`.
        retry_after_secs: u32,
    },
    /// A dependency is unavailable: retry after this many seconds.
    Unavailable {
        /// `Retry-After`.
        retry_after_secs: u32,
    },
    /// Our fault, or a dependency that refused: retrying will not help.
    Internal,
}

impl Refusal {
    /// The HTTP status and the `Retry-After` seconds of the answer.
    pub fn status(self) -> (u16, Option<u32>) {
        match self {
            Self::BadRequest => (400, None),
            Self::Unauthorized => (401, None),
            Self::Forbidden => (403, None),
            Self::NotFound => (404, None),
            Self::MethodNotAllowed => (405, None),
            Self::Conflict => (409, None),
            Self::PayloadTooLarge => (413, None),
            Self::UnsupportedMediaType => (415, None),
            Self::RateLimited { retry_after_secs } => (429, Some(retry_after_secs)),
            Self::Internal => (500, None),
            Self::Unavailable { retry_after_secs } => (503, Some(retry_after_secs)),
        }
    }
}

/// An HTTP error answer: a [`Refusal`], a machine code and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// What kind of refusal (its status and headers).
    pub kind: Refusal,
    /// Machine code.
    pub code: &'static str,
    /// Human message.
    pub message: String,
    /// Extra top-level fields of the body (e.g. `rejected` beside `error`).
    pub details: Option<Box<(&'static str, serde_json::Value)>>,
}

impl ApiError {
    /// An error of `kind` with `code` and `message`.
    pub fn new(kind: Refusal, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.kind.status().0
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Refusal::BadRequest, code, message)
    }

    /// 404.
    pub fn not_found() -> Self {
        Self::new(Refusal::NotFound, "not_found", "no such resource")
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            Refusal::MethodNotAllowed,
            "method_not_allowed",
            "method not allowed on this resource",
        )
    }

    /// 413.
    pub fn payload_too_large() -> Self {
        Self::new(
            Refusal::PayloadTooLarge,
            "payload_too_large",
            format!("request body is limited to {MAX_BODY_BYTES} bytes after decompression"),
        )
    }

    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            Refusal::UnsupportedMediaType,
            "unsupported_media_type",
            message,
        )
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u32) -> Self {
        Self::new(
            Refusal::Unavailable { retry_after_secs },
            "service_unavailable",
            message,
        )
    }

    /// The one answer to a dependency's failure, for every API: transient → 503 with
    /// `Retry-After: `[`RETRY_AFTER_SECS`] (the client retries), permanent → 500 (it would not
    /// help). The reason is logged, never sent; `what` names the dependency in both.
    pub fn dependency(what: &str, failure: Failure) -> Self {
        match failure {
            Failure::Transient(reason) => {
                tracing::warn!(%reason, "{what} unavailable");
                Self::unavailable(
                    format!("{what} could not be reached, retry later"),
                    RETRY_AFTER_SECS,
                )
            }
            Failure::Permanent(reason) => {
                tracing::error!(%reason, "{what} refused the request");
                Self::internal()
            }
        }
    }

    /// 500; the detail goes to the log, not to the client.
    pub fn internal() -> Self {
        Self::new(Refusal::Internal, "internal_error", "internal error")
    }

    /// Adds a top-level field to the error body.
    pub fn with_details(mut self, key: &'static str, value: serde_json::Value) -> Self {
        self.details = Some(Box::new((key, value)));
        self
    }

    /// The API Gateway response.
    pub fn into_response(self) -> ApiGatewayV2httpResponse {
        let mut body = serde_json::json!({
            "error": {"code": self.code, "message": self.message}
        });
        if let Some(details) = self.details {
            let (key, value) = *details;
            body[key] = value;
        }
        let (status, retry_after) = self.kind.status();
        let mut response = json_response(status, &body);
        if let Some(secs) = retry_after {
            response
                .headers
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized => {
                Self::new(Refusal::Unauthorized, "unauthorized", e.to_string())
            }
            AuthError::Forbidden(_) => Self::new(Refusal::Forbidden, "forbidden", e.to_string()),
        }
    }
}

/// A JSON response.
pub fn json_response<T: Serialize + ?Sized>(status: u16, body: &T) -> ApiGatewayV2httpResponse {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    text_response(status, text)
}

/// A response whose body is already JSON text.
pub fn text_response(status: u16, json_text: String) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(status);
    response.headers = headers;
    response.body = Some(Body::Text(json_text));
    response
}

/// The request's method.
pub fn method(req: &ApiGatewayV2httpRequest) -> &Method {
    &req.request_context.http.method
}

/// The request's path (without stage).
pub fn path(req: &ApiGatewayV2httpRequest) -> &str {
    req.raw_path
        .as_deref()
        .or(req.request_context.http.path.as_deref())
        .unwrap_or("/")
}

/// A header's value, when present and visible ASCII.
pub fn header<'a>(req: &'a ApiGatewayV2httpRequest, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// A query parameter's (first) value.
pub fn query<'a>(req: &'a ApiGatewayV2httpRequest, name: &str) -> Option<&'a str> {
    req.query_string_parameters.first(name)
}

/// Checks `Content-Type: application/json` (parameters such as `charset` allowed).
pub fn require_json(req: &ApiGatewayV2httpRequest) -> Result<(), ApiError> {
    let content_type = header(req, "content-type").unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(
            "Content-Type must be application/json",
        ))
    }
}

/// Whether the request's body is gzip-compressed (`Content-Encoding`).
pub fn is_compressed(req: &ApiGatewayV2httpRequest) -> bool {
    header(req, "content-encoding")
        .is_some_and(|e| matches!(e.trim().to_ascii_lowercase().as_str(), "gzip" | "x-gzip"))
}

/// The request body as bytes: base64-decoded when API Gateway encoded it, gunzipped when
/// `Content-Encoding: gzip`, never larger than [`MAX_BODY_BYTES`] (checked while decompressing,
/// so a gzip bomb costs at most that much memory).
pub fn body(req: &ApiGatewayV2httpRequest) -> Result<Cow<'_, [u8]>, ApiError> {
    let raw = req.body.as_deref().unwrap_or("");
    let bytes: Cow<'_, [u8]> = if req.is_base64_encoded {
        // Base64 is 4/3 of the bytes: anything longer cannot decode to an acceptable body.
        if raw.len() > MAX_BODY_BYTES.div_ceil(3) * 4 + 4 {
            return Err(ApiError::payload_too_large());
        }
        Cow::Owned(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .map_err(|_| ApiError::bad_request("invalid_body", "body is not valid base64"))?,
        )
    } else {
        Cow::Borrowed(raw.as_bytes())
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::payload_too_large());
    }
    let encoding = header(req, "content-encoding")
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(bytes),
        "gzip" | "x-gzip" => gunzip_bounded(&bytes, MAX_BODY_BYTES).map(Cow::Owned),
        _ => Err(ApiError::unsupported_media_type(
            "Content-Encoding must be gzip or absent",
        )),
    }
}

/// Decompresses gzip, refusing output beyond `limit` bytes.
pub fn gunzip_bounded(compressed: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let invalid = |why: &str| ApiError::bad_request("invalid_body", why.to_string());
    let mut out = Vec::with_capacity((compressed.len() * 4).min(limit + 1));
    let mut input: &[u8] = compressed;
    let mut members = 0;
    // Member by member: a body of thousands of empty members costs CPU for nothing.
    while !input.is_empty() {
        members += 1;
        if members > MAX_GZIP_MEMBERS {
            return Err(invalid("body has more gzip members than a client sends"));
        }
        let budget = (limit + 1 - out.len()) as u64;
        flate2::bufread::GzDecoder::new(&mut input)
            .take(budget)
            .read_to_end(&mut out)
            .map_err(|_| invalid("body is not valid gzip"))?;
        if out.len() > limit {
            return Err(ApiError::payload_too_large());
        }
    }
    // gzip adds ~20 bytes a member and deflate ~0.1% to incompressible text: a body that
    // shrinks by more than that was made to cost work, not to carry events.
    if compressed.len() > out.len() + out.len() / 100 + 64 * members {
        return Err(invalid("body shrinks when decompressed"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn only_retryable_refusals_carry_retry_after_and_a_dependency_is_answered_once() {
        let answer = |e: ApiError| {
            let r = e.into_response();
            let retry = r
                .headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status_code, retry)
        };
        let throttled = ApiError::dependency("x", Failure::Transient("throttled".into()));
        assert_eq!(answer(throttled), (503, Some(RETRY_AFTER_SECS.to_string())));
        let refused = ApiError::dependency("x", Failure::Permanent("gone".into()));
        assert_eq!(answer(refused), (500, None));
        let limited = ApiError::new(
            Refusal::RateLimited {
                retry_after_secs: 7,
            },
            "r",
            "m",
        );
        assert_eq!(answer(limited), (429, Some("7".into())));
        for kind in [
            Refusal::BadRequest,
            Refusal::Unauthorized,
            Refusal::Forbidden,
            Refusal::NotFound,
            Refusal::MethodNotAllowed,
            Refusal::PayloadTooLarge,
            Refusal::UnsupportedMediaType,
            Refusal::Internal,
        ] {
            let (status, retry) = answer(ApiError::new(kind, "c", "m"));
            assert!((400..=500).contains(&status) && retry.is_none(), "{kind:?}");
        }
    }

    #[test]
    fn the_response_budget_counts_escaped_bytes() {
        assert_eq!(escaped_len(r#"{"a":"\""}"#), 10 + 6);
        assert_eq!(escaped_len("é\u{1}"), 2 + 6);
        let mut budget = ResponseBudget::new(10);
        assert!(budget.take("\"\"")); // 4 escaped + 1
        assert!(!budget.take("abcdef")); // 7 > 5 left
        assert!(budget.take("abc")); // 4: one byte left
        assert!(budget.take(""));
        assert!(!budget.take(""));
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_within_the_limit_decompresses() {
        assert_eq!(gunzip_bounded(&gzip(b"hello"), 10).unwrap(), b"hello");
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024);
        assert_eq!(
            gunzip_bounded(&bomb, MAX_BODY_BYTES).unwrap_err().status(),
            413
        );
    }

    #[test]
    fn a_body_of_many_gzip_members_is_refused_at_once() {
        // 52,428 empty members: 1 MiB that decompresses to nothing, ~0.5 s of CPU unbounded.
        let empty = gzip(b"");
        let bomb: Vec<u8> = empty
            .iter()
            .copied()
            .cycle()
            .take(empty.len() * 52_428)
            .collect();
        let started = std::time::Instant::now();
        let err = gunzip_bounded(&bomb, MAX_BODY_BYTES).unwrap_err();
        assert_eq!((err.status(), err.code), (400, "invalid_body"));
        assert!(err.message.contains("members"), "{}", err.message);
        // Refused after MAX_GZIP_MEMBERS members: no time to speak of, even in a debug build.
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
        // A few members, as a client concatenating them would send, are fine.
        let two = [gzip(b"{\"events\":["), gzip(b"{\"type\":\"a\"}]}")].concat();
        assert_eq!(
            gunzip_bounded(&two, 1000).unwrap(),
            b"{\"events\":[{\"type\":\"a\"}]}"
        );
    }

    #[test]
    fn a_body_that_shrinks_when_decompressed_is_refused_but_small_ones_pass() {
        // Small JSON grows a little when gzipped: accepted.
        assert!(gunzip_bounded(&gzip(b"{\"type\":\"a\"}"), 1000).is_ok());
        // Four empty members (the most allowed) padding nothing: refused.
        let empty = gzip(b"");
        let padded = [empty.clone(), empty.clone(), empty.clone(), gzip(b"{}")].concat();
        assert!(
            gunzip_bounded(&padded, 1000).is_ok(),
            "within the overhead allowed"
        );
        // A member whose header carries a large extra field, decompressing to 2 bytes.
        let mut enc = flate2::GzBuilder::new()
            .extra(vec![b'x'; 60_000])
            .write(Vec::new(), flate2::Compression::best());
        enc.write_all(b"{}").unwrap();
        let heavy = enc.finish().unwrap();
        let err = gunzip_bounded(&heavy, 1000).unwrap_err();
        assert!(err.message.contains("shrinks"), "{}", err.message);
    }

    #[test]
    fn truncated_gzip_is_a_400() {
        let g = gzip(b"some body that is long enough to truncate");
        let err = gunzip_bounded(&g[..g.len() / 2], 1000).unwrap_err();
        assert_eq!((err.status(), err.code), (400, "invalid_body"));
    }

    #[test]
    fn error_body_has_code_message_and_retry_after() {
        let r = ApiError::unavailable("later", 2).into_response();
        assert_eq!(r.status_code, 503);
        assert_eq!(r.headers.get("retry-after").unwrap(), "2");
        let Some(Body::Text(text)) = r.body else {
            panic!("text body")
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], "service_unavailable");
    }
}
