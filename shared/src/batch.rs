//! The ingest request body: one event or `{"events": [...]}`, turned into Kinesis records.
//!
//! [`prepare`] is the whole ingest core short of I/O: split the body into events, validate each,
//! reject duplicates by index, enrich (user, receive time, id) and encode. The body is parsed
//! once into borrowed slices; `data` is never turned into a tree.

use std::borrow::Cow;
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::event::{
    DEFAULT_ENVIRONMENT, IncomingEvent, MAX_EVENT_BYTES, RejectCode, Rejection, SCHEMA_VERSION,
    StoredEvent,
};
use crate::record::{self, EventRecord};

/// Most events in one request.
pub const MAX_EVENTS_PER_REQUEST: usize = 500;
/// Largest request body after decompression.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest `Idempotency-Key` header.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 64;

/// Why a whole request body is refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON at all.
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    /// JSON, but neither an event object nor `{"events": [...]}`.
    #[error("body must be an event object or {{\"events\": [...]}}")]
    WrongShape,
    /// `{"events": []}`.
    #[error("`events` must hold at least one event")]
    EmptyBatch,
    /// More than [`MAX_EVENTS_PER_REQUEST`] events.
    #[error("a request holds at most {MAX_EVENTS_PER_REQUEST} events, this one has {0}")]
    TooManyEvents(usize),
}

impl BodyError {
    /// Machine code for the HTTP error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::WrongShape => "invalid_body",
            Self::EmptyBatch => "empty_batch",
            Self::TooManyEvents(_) => "too_many_events",
        }
    }
}

/// An event refused inside an otherwise accepted request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedEvent {
    /// Position of the event in the request (0 for a single-event body).
    pub index: usize,
    /// Machine-readable reason.
    pub code: RejectCode,
    /// Human-readable detail.
    pub message: String,
    /// The start of the event's JSON text, at most [`REJECTED_EXCERPT_BYTES`] (for the
    /// rejected-events queue; not part of the HTTP answer).
    #[serde(skip)]
    pub excerpt: String,
}

/// Longest excerpt of a rejected event kept for inspection.
pub const REJECTED_EXCERPT_BYTES: usize = 4096;

fn excerpt(text: &str) -> String {
    let mut end = text.len().min(REJECTED_EXCERPT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Who sent the request and when: what the server adds to each event.
#[derive(Debug, Clone, Copy)]
pub struct Enrichment<'a> {
    /// The verified token's `sub`.
    pub user_id: &'a str,
    /// When the request arrived.
    pub received_at: DateTime<Utc>,
    /// The request's `Idempotency-Key` header, if any.
    pub idempotency_key: Option<&'a str>,
}

/// A request body turned into records ready for Kinesis.
#[derive(Debug, Default)]
pub struct PreparedBatch {
    /// One record per accepted event, in request order.
    pub records: Vec<EventRecord>,
    /// The ids of the accepted events, in the same order.
    pub ids: Vec<String>,
    /// The refused events, by index.
    pub rejected: Vec<RejectedEvent>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    events: Option<Vec<&'a RawValue>>,
}

/// Splits a body into the raw JSON text of each event.
///
/// One pass over the body: the envelope is parsed with each event kept as borrowed raw text.
/// Only a body that is not a batch is looked at again (it is one event, or an error).
pub fn split(body: &str) -> Result<Vec<&RawValue>, BodyError> {
    // Only an object is an envelope (serde would also read a struct from an array).
    if !body.trim_start().starts_with('{') {
        return match serde_json::from_str::<&RawValue>(body) {
            Err(e) => Err(BodyError::InvalidJson(e.to_string())),
            Ok(_) => Err(BodyError::WrongShape),
        };
    }
    match serde_json::from_str::<Envelope<'_>>(body) {
        Ok(Envelope {
            events: Some(events),
        }) => match events.len() {
            0 => Err(BodyError::EmptyBatch),
            n if n > MAX_EVENTS_PER_REQUEST => Err(BodyError::TooManyEvents(n)),
            _ => Ok(events),
        },
        // An object without `events` is a single event.
        Ok(Envelope { events: None }) => {
            let whole: &RawValue =
                serde_json::from_str(body).map_err(|e| BodyError::InvalidJson(e.to_string()))?;
            Ok(vec![whole])
        }
        // Not an envelope: tell bad JSON from a wrong shape.
        Err(_) => match serde_json::from_str::<&RawValue>(body) {
            Err(e) => Err(BodyError::InvalidJson(e.to_string())),
            Ok(_) => Err(BodyError::WrongShape),
        },
    }
}

/// Parses, validates, enriches and encodes a request body.
pub fn prepare(body: &str, who: &Enrichment<'_>) -> Result<PreparedBatch, BodyError> {
    let events = split(body)?;
    let received_at = crate::time::format(who.received_at);
    let mut batch = PreparedBatch {
        records: Vec::with_capacity(events.len()),
        ids: Vec::with_capacity(events.len()),
        rejected: Vec::new(),
    };
    let mut seen_ids: HashSet<Cow<'_, str>> = HashSet::with_capacity(events.len());
    for (index, raw) in events.into_iter().enumerate() {
        match enrich(raw, index, who, &received_at, &mut seen_ids) {
            Ok(record_and_id) => {
                batch.records.push(record_and_id.0);
                batch.ids.push(record_and_id.1);
            }
            Err(r) => batch.rejected.push(RejectedEvent {
                index,
                code: r.code,
                message: r.message,
                excerpt: excerpt(raw.get()),
            }),
        }
    }
    Ok(batch)
}

fn enrich<'a>(
    raw: &'a RawValue,
    index: usize,
    who: &Enrichment<'_>,
    received_at: &str,
    seen_ids: &mut HashSet<Cow<'a, str>>,
) -> Result<(EventRecord, String), Rejection> {
    let text = raw.get();
    if text.len() > MAX_EVENT_BYTES {
        return Err(Rejection::new(
            RejectCode::EventTooLarge,
            format!("an event is at most {MAX_EVENT_BYTES} bytes of JSON"),
        ));
    }
    // `split` validated the whole body: the event's text is valid JSON, read without a re-parse.
    let incoming = IncomingEvent::from_json(text)?;
    incoming.validate()?;

    let id: Cow<'a, str> = match (incoming.id, who.idempotency_key) {
        (Some(id), _) => id,
        (None, Some(key)) => Cow::Owned(derived_id(who.user_id, key, index)),
        (None, None) => Cow::Owned(uuid::Uuid::now_v7().simple().to_string()),
    };
    if !seen_ids.insert(id.clone()) {
        return Err(Rejection::new(
            RejectCode::DuplicateId,
            "another event in this request has the same `id`",
        ));
    }
    let timestamp = match incoming.timestamp {
        // validate() already proved it parses: one of canonical shape is kept as it is.
        Some(ts) if crate::time::has_canonical_shape(&ts) => ts,
        Some(ts) => Cow::Owned(crate::time::normalize(&ts).unwrap_or_default()),
        None => Cow::Borrowed(received_at),
    };
    let stored: StoredEvent<'_> = StoredEvent {
        schema_version: SCHEMA_VERSION,
        id: Cow::Borrowed(&id),
        kind: incoming.kind.unwrap_or_default(),
        user_id: Cow::Borrowed(who.user_id),
        timestamp,
        received_at: Cow::Borrowed(received_at),
        environment: incoming
            .environment
            .unwrap_or(Cow::Borrowed(DEFAULT_ENVIRONMENT)),
        origin: incoming.origin,
        session_id: incoming.session_id,
        data: None,
    };
    Ok((
        record::encode_with_data(&stored, incoming.data),
        id.into_owned(),
    ))
}

/// The id of the `index`-th event of a request that carried `Idempotency-Key: key` and no id:
/// the same on every retry of that request, different for every user, key and index.
pub fn derived_id(user_id: &str, key: &str, index: usize) -> String {
    let mut h = Sha256::new();
    h.update(user_id.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    h.update([0u8]);
    h.update((index as u64).to_be_bytes());
    // 128 bits are plenty against accidental collisions and keep ids short.
    hex::encode(&h.finalize()[..16])
}

/// `Idempotency-Key`: 1..=64 visible ASCII characters.
pub fn is_valid_idempotency_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_CHARS
        && key.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record;

    fn who(key: Option<&str>) -> Enrichment<'_> {
        Enrichment {
            user_id: "user-1",
            received_at: "2026-11-26T13:00:00Z".parse().unwrap(),
            idempotency_key: key,
        }
    }

    #[test]
    fn single_event_body_is_one_event() {
        let b = prepare(r#"{"type":"game.start","data":{"level":3}}"#, &who(None)).unwrap();
        assert_eq!(b.records.len(), 1);
        assert!(b.rejected.is_empty());
        let e = record::decode(&b.records[0].data).unwrap();
        assert_eq!(e.kind, "game.start");
        assert_eq!(e.user_id, "user-1");
        assert_eq!(e.environment, "prod");
        assert_eq!(e.timestamp, "2026-11-26T13:00:00.000Z");
        assert_eq!(e.received_at, "2026-11-26T13:00:00.000Z");
        assert_eq!(e.data.unwrap().get(), r#"{"level":3}"#);
        assert_eq!(e.id, b.ids[0]);
    }

    #[test]
    fn invalid_event_is_rejected_by_index_and_neighbours_kept() {
        let body =
            r#"{"events":[{"type":"a"},{"type":7},{"type":"c","id":"x"},{"type":"d","id":"x"}]}"#;
        let b = prepare(body, &who(None)).unwrap();
        assert_eq!(b.records.len(), 2);
        let rejected: Vec<_> = b.rejected.iter().map(|r| (r.index, r.code)).collect();
        assert_eq!(
            rejected,
            [(1, RejectCode::InvalidEvent), (3, RejectCode::DuplicateId)]
        );
        assert_eq!(b.ids[1], "x");
    }

    #[test]
    fn body_shapes_are_checked() {
        assert!(matches!(
            prepare("not json", &who(None)),
            Err(BodyError::InvalidJson(_))
        ));
        assert_eq!(
            prepare("[1]", &who(None)).unwrap_err(),
            BodyError::WrongShape
        );
        assert_eq!(
            prepare(r#"{"events":{}}"#, &who(None)).unwrap_err(),
            BodyError::WrongShape
        );
        assert_eq!(
            prepare(r#"{"events":[]}"#, &who(None)).unwrap_err(),
            BodyError::EmptyBatch
        );
        let many = format!(
            r#"{{"events":[{}]}}"#,
            vec![r#"{"type":"a"}"#; 501].join(",")
        );
        assert_eq!(
            prepare(&many, &who(None)).unwrap_err(),
            BodyError::TooManyEvents(501)
        );
        let max = format!(
            r#"{{"events":[{}]}}"#,
            vec![r#"{"type":"a"}"#; 500].join(",")
        );
        assert_eq!(prepare(&max, &who(None)).unwrap().records.len(), 500);
    }

    #[test]
    fn idempotency_key_gives_the_same_ids_on_retry() {
        let body = r#"{"events":[{"type":"a"},{"type":"b"},{"type":"c","id":"mine"}]}"#;
        let first = prepare(body, &who(Some("req-42"))).unwrap();
        let again = prepare(body, &who(Some("req-42"))).unwrap();
        assert_eq!(first.ids, again.ids);
        assert_eq!(first.ids[2], "mine");
        assert_ne!(first.ids[0], first.ids[1]);
        let other_key = prepare(body, &who(Some("req-43"))).unwrap();
        assert_ne!(first.ids[0], other_key.ids[0]);
        assert!(first.ids.iter().all(|id| crate::event::is_valid_id(id)));
    }

    #[test]
    fn without_key_or_id_every_event_gets_a_fresh_id() {
        let body = r#"{"events":[{"type":"a"},{"type":"a"}]}"#;
        let a = prepare(body, &who(None)).unwrap();
        let b = prepare(body, &who(None)).unwrap();
        assert_ne!(a.ids[0], a.ids[1]);
        assert_ne!(a.ids[0], b.ids[0]);
        assert!(a.ids.iter().all(|id| crate::event::is_valid_id(id)));
    }

    #[test]
    fn oversized_event_is_rejected_alone() {
        let big = format!(
            r#"{{"type":"a","data":{{"s":"{}"}}}}"#,
            "x".repeat(MAX_EVENT_BYTES)
        );
        let body = format!(r#"{{"events":[{big},{{"type":"b"}}]}}"#);
        let b = prepare(&body, &who(None)).unwrap();
        assert_eq!(b.records.len(), 1);
        assert_eq!(b.rejected[0].code, RejectCode::EventTooLarge);
    }

    #[test]
    fn client_timestamp_is_normalized_and_user_fields_are_not_trusted() {
        let body =
            r#"{"type":"a","timestamp":"2026-01-01T01:00:00+01:00","userId":"someone-else"}"#;
        let b = prepare(body, &who(None)).unwrap();
        let e = record::decode(&b.records[0].data).unwrap();
        assert_eq!(e.timestamp, "2026-01-01T00:00:00.000Z");
        assert_eq!(e.user_id, "user-1");
    }
}
