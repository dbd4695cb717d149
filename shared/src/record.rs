//! The Kinesis record codec: a [`StoredEvent`] as JSON bytes, plus its partition key.

use crate::event::{Data, StoredEvent};

/// One record for Kinesis `PutRecords`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Spreads records over shards; see [`partition_key`].
    pub partition_key: String,
    /// The [`StoredEvent`] as JSON.
    pub data: Vec<u8>,
}

impl EventRecord {
    /// Bytes this record counts against Kinesis's limits (data plus partition key, as Kinesis
    /// counts them for the 1 MiB record and 5 MiB request limits).
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Why a record could not be decoded. Such a record is poison: retrying it never helps.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a stored event in JSON.
    #[error("record is not a stored event: {0}")]
    Json(#[from] serde_json::Error),
    /// It decoded but breaks a stored-event invariant.
    #[error("record breaks a stored-event rule: {0}")]
    Invalid(&'static str),
}

/// Partition key of an event: derived from the user **and** the event id, so that one busy user
/// is spread over all shards (nothing downstream needs per-user order). Kinesis hashes it (MD5)
/// onto the shards; at most 128 + 1 + 64 chars, well inside Kinesis's 256.
pub fn partition_key(user_id: &str, id: &str) -> String {
    let mut key = String::with_capacity(user_id.len() + 1 + id.len());
    key.push_str(user_id);
    key.push('/');
    key.push_str(id);
    key
}

/// Encodes `event` as a Kinesis record.
pub fn encode(event: &StoredEvent<'_>) -> EventRecord {
    encode_with_data(event, event.data.as_ref().map(Data::get))
}

/// Encodes `event` with `data` (the raw JSON text of its data object, already validated) in
/// place of `event.data`: the same bytes as serializing the event with that data, without
/// turning the text into a `RawValue` (which would validate it once more).
///
/// A hand encoder for ingest's speed: it destructures [`StoredEvent`] without `..`, so a field
/// added to the stored event is a compile error here until it is written (and the property tests
/// compare these bytes with serde's).
pub fn encode_with_data<D>(event: &StoredEvent<'_, D>, data: Option<&str>) -> EventRecord {
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
        data: _,
    } = event;
    // Sized once: `data` plus the enriched fields, so the buffer never grows.
    let mut out = Vec::with_capacity(data.map_or(0, str::len) + 384);
    out.extend_from_slice(b"{\"schemaVersion\":");
    // Writing into a Vec cannot fail (here and below).
    let _ = serde_json::to_writer(&mut out, schema_version);
    // In the struct's order, with serde's names: serde's bytes.
    let fields = [
        ("id", Some(id)),
        ("type", Some(kind)),
        ("userId", Some(user_id)),
        ("timestamp", Some(timestamp)),
        ("receivedAt", Some(received_at)),
        ("environment", Some(environment)),
        ("origin", origin.as_ref()),
        ("sessionId", session_id.as_ref()),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            // serde_json escapes the string.
            let _ = serde_json::to_writer(&mut out, value.as_ref());
        }
    }
    if let Some(data) = data {
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(data.as_bytes());
    }
    out.push(b'}');
    EventRecord {
        partition_key: partition_key(user_id, id),
        data: out,
    }
}

/// Decodes and checks a record's data, borrowing from it.
pub fn decode(data: &[u8]) -> Result<StoredEvent<'_>, DecodeError> {
    let event: StoredEvent<'_> = serde_json::from_slice(data)?;
    event.check().map_err(DecodeError::Invalid)?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::value::RawValue;

    use super::*;
    use crate::event::SCHEMA_VERSION;

    fn sample(data: Option<&RawValue>) -> StoredEvent<'_> {
        StoredEvent {
            schema_version: SCHEMA_VERSION,
            id: Cow::Borrowed("e1"),
            kind: Cow::Borrowed("game.start"),
            user_id: Cow::Borrowed("u1"),
            timestamp: Cow::Borrowed("2026-11-26T13:00:00.000Z"),
            received_at: Cow::Borrowed("2026-11-26T13:00:01.000Z"),
            environment: Cow::Borrowed("prod"),
            origin: Some(Cow::Borrowed("ios")),
            session_id: None,
            data: data.map(Data),
        }
    }

    #[test]
    fn round_trip_keeps_every_field_and_data_verbatim() {
        let raw = RawValue::from_string(r#"{"n":1e400,"k":[1,{"a":null}]}"#.into()).unwrap();
        let event = sample(Some(&raw));
        let record = encode(&event);
        assert_eq!(record.partition_key, "u1/e1");
        let back = decode(&record.data).unwrap();
        assert_eq!(back, event);
        assert_eq!(
            back.data.unwrap().get(),
            r#"{"n":1e400,"k":[1,{"a":null}]}"#
        );
    }

    #[test]
    fn the_hand_encoder_writes_what_serde_writes() {
        let raw = RawValue::from_string(r#"{"q":"\"","u":"\u00e9"}"#.into()).unwrap();
        let mut event = sample(Some(&raw));
        event.id = Cow::Borrowed("quote\"and\\backslash\u{1}");
        event.session_id = Some(Cow::Borrowed("é\n"));
        for e in [event.clone(), sample(None)] {
            assert_eq!(encode(&e).data, serde_json::to_vec(&e).unwrap());
        }
    }

    #[test]
    fn garbage_and_rule_breakers_are_decode_errors() {
        assert!(matches!(decode(b"\xff\x00"), Err(DecodeError::Json(_))));
        assert!(matches!(decode(b"{}"), Err(DecodeError::Json(_))));
        let mut bad = sample(None);
        bad.user_id = Cow::Borrowed("has space");
        let record = encode(&bad);
        assert!(matches!(decode(&record.data), Err(DecodeError::Invalid(_))));
    }
}
