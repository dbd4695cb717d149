//! The `Event`: what a client sends, the rules it must follow, and what the pipeline stores.
//!
//! [`IncomingEvent`] borrows from the request body (no copies of `data`, which stays raw JSON);
//! [`IncomingEvent::validate`] checks every rule of the HTTP API and returns a [`Rejection`]
//! naming the first one broken; [`StoredEvent`] is the enriched event that travels on the
//! Kinesis stream, sits in the `events` table and is returned by `GET /v1/events`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Version of the [`StoredEvent`] layout, stored with every event.
pub const SCHEMA_VERSION: u32 = 1;
/// Environment of an event that names none (the original service's default).
pub const DEFAULT_ENVIRONMENT: &str = "prod";
/// Largest event a client may send, measured as the JSON text of the event object.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Longest event `type`.
pub const MAX_TYPE_CHARS: usize = 128;
/// Longest client-chosen event `id`.
pub const MAX_ID_CHARS: usize = 64;
/// Longest `environment`.
pub const MAX_ENVIRONMENT_CHARS: usize = 32;
/// Longest `origin` and `sessionId`.
pub const MAX_LABEL_CHARS: usize = 128;
/// Longest user id (the token's `sub`).
pub const MAX_USER_ID_CHARS: usize = 128;
/// Deepest nesting of `data` (objects and arrays). JSON allows any depth, but the consumers of
/// the forwarded events (serde_json stops at 128, DynamoDB maps at 32) do not.
pub const MAX_DATA_DEPTH: usize = 64;

/// Whether the JSON text `raw` nests objects and arrays deeper than `limit`.
///
/// One pass over the bytes, skipping string contents; `raw` is already known to be JSON.
pub fn nests_deeper_than(raw: &str, limit: usize) -> bool {
    let bytes = raw.as_bytes();
    // Fast path (vectorised count): nesting deeper than `limit` needs more than `limit`
    // opening brackets, which typical event data never has.
    if bytes.iter().filter(|&&b| b == b'{' || b == b'[').count() <= limit {
        return false;
    }
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                // Skip the string: to the next quote not escaped.
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// An event as a client sent it, borrowed from the request body.
///
/// Unknown fields are ignored (clients may be newer than the server). Fields only the server
/// sets (`userId`, `receivedAt`, `schemaVersion`) are ignored too: they are never trusted.
#[derive(Debug, Deserialize)]
pub struct IncomingEvent<'a> {
    /// Event type, e.g. `game.level_completed`.
    #[serde(rename = "type", borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    /// Client idempotency key, unique per user.
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    /// Client time, RFC 3339.
    #[serde(borrow, default)]
    pub timestamp: Option<Cow<'a, str>>,
    /// Deployment environment of the client (`prod`, `staging`, ...).
    #[serde(borrow, default)]
    pub environment: Option<Cow<'a, str>>,
    /// The client or service that sent the event.
    #[serde(borrow, default)]
    pub origin: Option<Cow<'a, str>>,
    /// Client session.
    #[serde(rename = "sessionId", borrow, default)]
    pub session_id: Option<Cow<'a, str>>,
    /// Free-form payload: a JSON object, kept verbatim.
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
}

/// Why an event was rejected: a stable machine code plus a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Machine-readable reason.
    pub code: RejectCode,
    /// Human-readable detail (never echoes the payload).
    pub message: String,
}

impl Rejection {
    /// A rejection with `code` and `message`.
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Reasons an event is rejected. The snake_case names are part of the HTTP API and of the
/// `EventsRejected` metric's `Reason` dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// Not a JSON object, or a field has the wrong JSON type.
    InvalidEvent,
    /// `type` is absent.
    MissingType,
    /// `type` breaks its length or character rules.
    InvalidType,
    /// `id` breaks its length or character rules.
    InvalidId,
    /// Another event in the same request has this `id`.
    DuplicateId,
    /// `timestamp` is not RFC 3339.
    InvalidTimestamp,
    /// `environment` breaks its length or character rules.
    InvalidEnvironment,
    /// `origin` is too long.
    InvalidOrigin,
    /// `sessionId` is too long.
    InvalidSessionId,
    /// `data` is not a JSON object.
    InvalidData,
    /// The event's JSON text is larger than [`MAX_EVENT_BYTES`].
    EventTooLarge,
}

impl RejectCode {
    /// The code as it appears in responses and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidEvent => "invalid_event",
            Self::MissingType => "missing_type",
            Self::InvalidType => "invalid_type",
            Self::InvalidId => "invalid_id",
            Self::DuplicateId => "duplicate_id",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::InvalidEnvironment => "invalid_environment",
            Self::InvalidOrigin => "invalid_origin",
            Self::InvalidSessionId => "invalid_session_id",
            Self::InvalidData => "invalid_data",
            Self::EventTooLarge => "event_too_large",
        }
    }
}

/// `type`: 1..=128 chars of `[A-Za-z0-9_.:-]`.
pub fn is_valid_type(s: &str) -> bool {
    is_token(s, MAX_TYPE_CHARS, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
    })
}

/// `id`: 1..=64 chars of `[A-Za-z0-9_-]`.
pub fn is_valid_id(s: &str) -> bool {
    is_token(s, MAX_ID_CHARS, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
    })
}

/// `environment`: 1..=32 chars of `[a-z0-9_-]`.
pub fn is_valid_environment(s: &str) -> bool {
    is_token(s, MAX_ENVIRONMENT_CHARS, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-')
    })
}

/// A user id (the token's `sub`): 1..=128 chars of `[A-Za-z0-9_.:@|-]`.
pub fn is_valid_user_id(s: &str) -> bool {
    is_token(s, MAX_USER_ID_CHARS, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'|' | b'-')
    })
}

/// ASCII-only tokens: the byte length is the char length.
fn is_token(s: &str, max: usize, allowed: impl Fn(u8) -> bool) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(allowed)
}

fn is_valid_label(s: &str) -> bool {
    // Char count, not bytes: a 128-char label in any script is fine. Control characters would
    // only make logs and dashboards lie about what was sent.
    s.chars().count() <= MAX_LABEL_CHARS && !s.chars().any(char::is_control)
}

impl IncomingEvent<'_> {
    /// Checks every field rule; the first broken rule is the rejection.
    ///
    /// Does not check the size (the caller knows the raw length) nor duplicate ids (the
    /// caller sees the whole request).
    pub fn validate(&self) -> Result<(), Rejection> {
        let kind = self
            .kind
            .as_deref()
            .ok_or_else(|| Rejection::new(RejectCode::MissingType, "`type` is required"))?;
        if !is_valid_type(kind) {
            return Err(Rejection::new(
                RejectCode::InvalidType,
                "`type` must be 1..=128 characters of [A-Za-z0-9_.:-]",
            ));
        }
        if let Some(id) = self.id.as_deref()
            && !is_valid_id(id)
        {
            return Err(Rejection::new(
                RejectCode::InvalidId,
                "`id` must be 1..=64 characters of [A-Za-z0-9_-]",
            ));
        }
        if let Some(ts) = self.timestamp.as_deref()
            && crate::time::parse(ts).is_none()
        {
            return Err(Rejection::new(
                RejectCode::InvalidTimestamp,
                "`timestamp` must be an RFC 3339 date-time, e.g. 2026-11-26T13:44:16Z",
            ));
        }
        if let Some(env) = self.environment.as_deref()
            && !is_valid_environment(env)
        {
            return Err(Rejection::new(
                RejectCode::InvalidEnvironment,
                "`environment` must be 1..=32 characters of [a-z0-9_-]",
            ));
        }
        if let Some(origin) = self.origin.as_deref()
            && !is_valid_label(origin)
        {
            return Err(Rejection::new(
                RejectCode::InvalidOrigin,
                "`origin` must be at most 128 characters, without control characters",
            ));
        }
        if let Some(session) = self.session_id.as_deref()
            && !is_valid_label(session)
        {
            return Err(Rejection::new(
                RejectCode::InvalidSessionId,
                "`sessionId` must be at most 128 characters, without control characters",
            ));
        }
        if let Some(data) = self.data {
            // RawValue has no surrounding whitespace, so the first byte tells the JSON type.
            if !data.get().starts_with('{') {
                return Err(Rejection::new(
                    RejectCode::InvalidData,
                    "`data` must be a JSON object",
                ));
            }
            if nests_deeper_than(data.get(), MAX_DATA_DEPTH) {
                return Err(Rejection::new(
                    RejectCode::InvalidData,
                    format!("`data` nests more than {MAX_DATA_DEPTH} levels"),
                ));
            }
        }
        Ok(())
    }
}

/// The event as the pipeline keeps it: on the stream, in the `events` table, in API answers.
///
/// Borrows its strings so that encoding and decoding copy as little as possible.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent<'a> {
    /// Layout version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Event id, unique per user.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Event type.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// The token's `sub`.
    #[serde(borrow)]
    pub user_id: Cow<'a, str>,
    /// Client time (or receive time when the client gave none), canonical form.
    #[serde(borrow)]
    pub timestamp: Cow<'a, str>,
    /// Server receive time, canonical form.
    #[serde(borrow)]
    pub received_at: Cow<'a, str>,
    /// Environment, [`DEFAULT_ENVIRONMENT`] when the client named none.
    #[serde(borrow)]
    pub environment: Cow<'a, str>,
    /// The client or service that sent the event.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Cow<'a, str>>,
    /// Client session.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Cow<'a, str>>,
    /// The client's `data` object, verbatim.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawValue>,
}

impl PartialEq for StoredEvent<'_> {
    fn eq(&self, other: &Self) -> bool {
        // RawValue has no PartialEq: `data` is equal when its text is.
        self.schema_version == other.schema_version
            && self.id == other.id
            && self.kind == other.kind
            && self.user_id == other.user_id
            && self.timestamp == other.timestamp
            && self.received_at == other.received_at
            && self.environment == other.environment
            && self.origin == other.origin
            && self.session_id == other.session_id
            && self.data.map(RawValue::get) == other.data.map(RawValue::get)
    }
}

impl StoredEvent<'_> {
    /// Checks the invariants every stored event holds (they key the tables): a reader must not
    /// trust a record just because it decoded.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.schema_version != SCHEMA_VERSION {
            return Err("unsupported schemaVersion");
        }
        if !is_valid_id(&self.id) {
            return Err("invalid id");
        }
        if !is_valid_type(&self.kind) {
            return Err("invalid type");
        }
        if !is_valid_user_id(&self.user_id) {
            return Err("invalid userId");
        }
        if !is_valid_environment(&self.environment) {
            return Err("invalid environment");
        }
        if crate::time::parse(&self.timestamp).is_none()
            || crate::time::parse(&self.received_at).is_none()
        {
            return Err("invalid timestamp");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> IncomingEvent<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn minimal_event_is_valid() {
        assert_eq!(parse(r#"{"type":"game.start"}"#).validate(), Ok(()));
    }

    #[test]
    fn every_rule_names_its_reason() {
        let cases = [
            (r#"{}"#, RejectCode::MissingType),
            (r#"{"type":""}"#, RejectCode::InvalidType),
            (r#"{"type":"has space"}"#, RejectCode::InvalidType),
            (r#"{"type":"x","id":"a/b"}"#, RejectCode::InvalidId),
            (
                r#"{"type":"x","timestamp":"noon"}"#,
                RejectCode::InvalidTimestamp,
            ),
            (
                r#"{"type":"x","environment":"Prod"}"#,
                RejectCode::InvalidEnvironment,
            ),
            (
                r#"{"type":"x","origin":"a\u0000b"}"#,
                RejectCode::InvalidOrigin,
            ),
            (r#"{"type":"x","data":[1]}"#, RejectCode::InvalidData),
            (r#"{"type":"x","data":"s"}"#, RejectCode::InvalidData),
        ];
        for (json, code) in cases {
            assert_eq!(parse(json).validate().unwrap_err().code, code, "{json}");
        }
    }

    #[test]
    fn length_limits_are_inclusive() {
        let ok = format!(
            r#"{{"type":"{}","id":"{}"}}"#,
            "t".repeat(128),
            "i".repeat(64)
        );
        assert_eq!(parse(&ok).validate(), Ok(()));
        let long_type = format!(r#"{{"type":"{}"}}"#, "t".repeat(129));
        assert_eq!(
            parse(&long_type).validate().unwrap_err().code,
            RejectCode::InvalidType
        );
        let long_id = format!(r#"{{"type":"t","id":"{}"}}"#, "i".repeat(65));
        assert_eq!(
            parse(&long_id).validate().unwrap_err().code,
            RejectCode::InvalidId
        );
        let long_origin = format!(r#"{{"type":"t","origin":"{}"}}"#, "é".repeat(129));
        assert_eq!(
            parse(&long_origin).validate().unwrap_err().code,
            RejectCode::InvalidOrigin
        );
        let ok_origin = format!(r#"{{"type":"t","origin":"{}"}}"#, "é".repeat(128));
        assert_eq!(parse(&ok_origin).validate(), Ok(()));
    }

    #[test]
    fn nesting_depth_is_counted_outside_strings() {
        assert!(!nests_deeper_than(r#"{"a":[1,{"b":"[[[[[["}]}"#, 3));
        assert!(nests_deeper_than(r#"{"a":[1,{"b":[2]}]}"#, 3));
        assert!(!nests_deeper_than(r#"{"a":"\"[[[[\\","b":{}}"#, 2));
        let deep = format!("{}1{}", "[".repeat(65), "]".repeat(65));
        assert!(nests_deeper_than(&deep, MAX_DATA_DEPTH));
        let ok = format!("{}1{}", "[".repeat(64), "]".repeat(64));
        assert!(!nests_deeper_than(&ok, MAX_DATA_DEPTH));
    }

    #[test]
    fn server_fields_sent_by_a_client_are_ignored() {
        let e = parse(r#"{"type":"x","userId":"admin","receivedAt":"2020-01-01T00:00:00Z"}"#);
        assert_eq!(e.validate(), Ok(()));
    }

    #[test]
    fn user_ids_follow_the_sub_rule() {
        assert!(is_valid_user_id("auth0|5f7c8ec7c33c6c004bbafe82"));
        assert!(is_valid_user_id("player@example.com"));
        assert!(!is_valid_user_id(""));
        assert!(!is_valid_user_id("a b"));
        assert!(!is_valid_user_id(&"u".repeat(129)));
    }
}
