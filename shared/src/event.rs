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
    // Fast path (a vectorised search that stops at bracket `limit + 1`): nesting deeper than
    // `limit` needs more than `limit` opening brackets, which typical event data never has.
    if memchr::memchr2_iter(b'{', b'[', bytes).nth(limit).is_none() {
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
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IncomingEvent<'a> {
    /// Event type, e.g. `game.level_completed`.
    pub kind: Option<Cow<'a, str>>,
    /// Client idempotency key, unique per user.
    pub id: Option<Cow<'a, str>>,
    /// Client time, RFC 3339.
    pub timestamp: Option<Cow<'a, str>>,
    /// Deployment environment of the client (`prod`, `staging`, ...).
    pub environment: Option<Cow<'a, str>>,
    /// The client or service that sent the event.
    pub origin: Option<Cow<'a, str>>,
    /// Client session.
    pub session_id: Option<Cow<'a, str>>,
    /// Free-form payload: the raw JSON text of the value sent (a JSON object, which
    /// [`IncomingEvent::validate`] checks), kept verbatim.
    pub data: Option<&'a str>,
}

/// The fields a client may send.
#[derive(Debug, Clone, Copy)]
enum Field {
    Kind,
    Id,
    Timestamp,
    Environment,
    Origin,
    SessionId,
    Data,
}

/// Each field's JSON name: the stored event's name for the same field (a test holds them to
/// [`StoredEvent`]'s serde names).
const FIELDS: [(&str, Field); 7] = [
    ("type", Field::Kind),
    ("id", Field::Id),
    ("timestamp", Field::Timestamp),
    ("environment", Field::Environment),
    ("origin", Field::Origin),
    ("sessionId", Field::SessionId),
    ("data", Field::Data),
];

/// The JSON names of the fields a client may send.
pub fn incoming_field_names() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|(name, _)| *name)
}

impl<'a> IncomingEvent<'a> {
    /// Reads the event in `text`, the JSON text of one event **already known to be valid JSON**
    /// (ingest splits the request body with serde_json first, which validates it).
    ///
    /// One pass over the top-level members: values are located, not parsed again, and `data`
    /// stays raw text — the body is validated once, as a whole. The event must be an object;
    /// a known field must be a string (or `null`, meaning absent) and must not appear twice.
    /// Text that is not valid JSON gives an error, never a panic.
    pub fn from_json(text: &'a str) -> Result<Self, Rejection> {
        use crate::json::{skip_ws, string_contents, string_end, value_end};
        let b = text.as_bytes();
        let invalid = |message: &str| Rejection::new(RejectCode::InvalidEvent, message);
        let malformed = || invalid("the event is not valid JSON");
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return Err(invalid("an event must be a JSON object"));
        }
        let mut event = IncomingEvent::default();
        let mut seen = 0u8;
        i = skip_ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            return Ok(event);
        }
        loop {
            if b.get(i) != Some(&b'"') {
                return Err(malformed());
            }
            let (key_end, key_escaped) = string_end(b, i).ok_or_else(malformed)?;
            let key = string_contents(&text[i..key_end], key_escaped).ok_or_else(malformed)?;
            i = skip_ws(b, key_end);
            if b.get(i) != Some(&b':') {
                return Err(malformed());
            }
            let start = skip_ws(b, i + 1);
            let (end, escaped) = value_end(b, start).ok_or_else(malformed)?;
            let value = text.get(start..end).ok_or_else(malformed)?;
            if let Some(&(name, field)) = FIELDS.iter().find(|(name, _)| *name == key) {
                let bit = 1 << field as u8;
                if seen & bit != 0 {
                    return Err(invalid(&format!("`{name}` appears twice")));
                }
                seen |= bit;
                if value != "null" {
                    event.set(name, field, value, escaped)?;
                }
            }
            i = skip_ws(b, end);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => return Ok(event),
                _ => return Err(malformed()),
            }
        }
    }

    /// Sets `field` (JSON `name`) from its raw JSON `value` (not `null`; `escaped`: a string
    /// holding escapes).
    fn set(
        &mut self,
        name: &str,
        field: Field,
        value: &'a str,
        escaped: bool,
    ) -> Result<(), Rejection> {
        let slot = match field {
            Field::Data => {
                self.data = Some(value);
                return Ok(());
            }
            Field::Kind => &mut self.kind,
            Field::Id => &mut self.id,
            Field::Timestamp => &mut self.timestamp,
            Field::Environment => &mut self.environment,
            Field::Origin => &mut self.origin,
            Field::SessionId => &mut self.session_id,
        };
        // `value` is one whole JSON value: a string when it starts with a quote.
        let text = if value.starts_with('"') {
            crate::json::string_contents(value, escaped)
        } else {
            None
        }
        .ok_or_else(|| {
            Rejection::new(
                RejectCode::InvalidEvent,
                format!("`{name}` must be a string"),
            )
        })?;
        *slot = Some(text);
        Ok(())
    }
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
            // The raw text has no surrounding whitespace, so the first byte tells the JSON type.
            if !data.starts_with('{') {
                return Err(Rejection::new(
                    RejectCode::InvalidData,
                    "`data` must be a JSON object",
                ));
            }
            if nests_deeper_than(data, MAX_DATA_DEPTH) {
                return Err(Rejection::new(
                    RejectCode::InvalidData,
                    format!("`data` nests more than {MAX_DATA_DEPTH} levels"),
                ));
            }
            // Kept verbatim, so it must be text every consumer's parser reads (`GET /v1/events`
            // answers, queue messages).
            if let Some(problem) = crate::json::strict_problem(data) {
                return Err(Rejection::new(
                    RejectCode::InvalidData,
                    format!("`data` is refused by strict JSON parsers: {problem}"),
                ));
            }
        }
        Ok(())
    }
}

/// The client's `data` object as JSON text, verbatim. In JSON (Kinesis records, API answers) it
/// is the object itself; compared by its text.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Data<'a>(#[serde(borrow)] pub &'a RawValue);

impl<'a> Data<'a> {
    /// The JSON text.
    pub fn get(&self) -> &'a str {
        self.0.get()
    }
}

impl PartialEq for Data<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Data<'_> {}

/// The event as the pipeline keeps it: on the stream, in the `events` table, in API answers.
///
/// **The one definition of the stored layout**: its serde attributes are the field names and
/// rules of the Kinesis record (JSON), of the `events` item and of the table's stream image
/// (both through `serde_dynamo`, see `aws::event_table`). The Kinesis encoder that ingest uses
/// for speed (`record::encode_with_data`) destructures this struct without `..`, so a new field
/// is a compile error there until it is encoded, and property tests check every codec against
/// serde's output.
///
/// Borrows its strings so that encoding and decoding copy as little as possible. `D` is the form
/// of `data`: [`Data`] (raw JSON) on the stream and in answers, its text (`Cow<str>`, a string
/// attribute) in DynamoDB — [`StoredEvent::map_data`] turns one into the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent<'a, D = Data<'a>> {
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
    /// The client's `data` object, verbatim (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<D>,
}

impl<'a, D> StoredEvent<'a, D> {
    /// The same event with `data` in another form (the one place that lists every field to
    /// convert: a new field is a compile error here until it is carried over).
    pub fn map_data<E>(self, f: impl FnOnce(D) -> E) -> StoredEvent<'a, E> {
        let StoredEvent {
            schema_version,
            id,
            kind,
            user_id,
            timestamp,
            received_at,
            environment,
            origin,
            session_id,
            data,
        } = self;
        StoredEvent {
            schema_version,
            id,
            kind,
            user_id,
            timestamp,
            received_at,
            environment,
            origin,
            session_id,
            data: data.map(f),
        }
    }
}

impl<D> StoredEvent<'_, D> {
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
        IncomingEvent::from_json(json).unwrap()
    }

    #[test]
    fn fields_are_read_borrowed_and_data_kept_as_text() {
        let e = parse(
            r#" { "type" : "game.start", "x": {"type": 1}, "data" : {"a": [1, "}"]} , "id":null } "#,
        );
        assert!(matches!(e.kind, Some(Cow::Borrowed("game.start"))));
        assert_eq!(e.data, Some(r#"{"a": [1, "}"]}"#));
        assert_eq!(e.id, None);
        // Escapes are decoded, in keys too.
        let e = parse(r#"{"t\u0079pe":"a\u002eb","sessionId":"s\"1"}"#);
        assert_eq!(e.kind.as_deref(), Some("a.b"));
        assert_eq!(e.session_id.as_deref(), Some("s\"1"));
    }

    #[test]
    fn the_reader_refuses_what_is_not_an_event_object() {
        for (json, why) in [
            ("[\"game.start\"]", "must be a JSON object"),
            ("\"game.start\"", "must be a JSON object"),
            (r#"{"type":5}"#, "`type` must be a string"),
            (r#"{"type":"a","id":["b"]}"#, "`id` must be a string"),
            (r#"{"type":"a","type":"b"}"#, "`type` appears twice"),
            (r#"{"type":"a","type":null}"#, "`type` appears twice"),
            (r#"{"type":"a""#, "not valid JSON"),
            (r#"{"type" "a"}"#, "not valid JSON"),
        ] {
            let e = IncomingEvent::from_json(json).unwrap_err();
            assert_eq!(e.code, RejectCode::InvalidEvent, "{json}");
            assert!(e.message.contains(why), "{json}: {}", e.message);
        }
        // Unknown fields may repeat and hold anything.
        assert!(IncomingEvent::from_json(r#"{"type":"a","x":1,"x":[{}]}"#).is_ok());
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
            (r#"{"type":null}"#, RejectCode::MissingType),
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
