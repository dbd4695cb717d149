//! Delivery of events to subscribed queues: message shape, FIFO ids, batch planning.

use std::borrow::Cow;
use std::collections::BTreeMap;

use aws_lambda_events::kinesis::KinesisEvent;
use serde::Serialize;
use serde_json::value::RawValue;

use sha2::{Digest, Sha256};

use crate::record;
use crate::route::{RouteTable, is_fifo};

/// Most entries in one `SendMessageBatch`.
pub const MAX_ENTRIES_PER_BATCH: usize = 10;
/// Most bytes in one message and in one batch (SQS's limit since 2025).
pub const MAX_SQS_BYTES: usize = 1024 * 1024;
/// Name of the message attribute carrying the event type.
pub const EVENT_TYPE_ATTRIBUTE: &str = "eventType";

/// One message for a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// The stored event as JSON.
    pub body: String,
    /// The event type, sent as the `eventType` message attribute.
    pub event_type: String,
    /// FIFO only: the user id, so one user's events stay in order.
    pub group_id: Option<String>,
    /// FIFO only: [`dedup_id`] of (user id, event id).
    pub dedup_id: Option<String>,
}

impl QueueMessage {
    /// A message for `queue_url` carrying `body` (the stored event of `user_id`/`event_id`).
    pub fn new(
        queue_url: &str,
        body: &str,
        event_type: &str,
        user_id: &str,
        event_id: &str,
    ) -> Self {
        let fifo = is_fifo(queue_url);
        Self {
            body: sqs_safe_json(body).into_owned(),
            event_type: event_type.to_string(),
            group_id: fifo.then(|| user_id.to_string()),
            dedup_id: fifo.then(|| dedup_id(user_id, event_id)),
        }
    }

    /// Size as SQS counts it: body plus each attribute's name, type and value.
    pub fn size(&self) -> usize {
        self.body.len() + EVENT_TYPE_ATTRIBUTE.len() + "String".len() + self.event_type.len()
    }
}

/// Whether SQS accepts `c` in a message body: `#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD |
/// #x10000-#x10FFFF` (the SQS API reference); it refuses any other with InvalidMessageContents.
fn sqs_accepts(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `json` with every character SQS refuses written as a JSON `\uXXXX` escape: the same JSON
/// value, in a body SQS accepts. In JSON text such a character can only stand inside a string
/// (U+FFFE and U+FFFF are the ones UTF-8 text can hold; control characters are escaped there
/// already), where the escape means the same character. Without this, one event holding one of
/// them fails its delivery, and its dead letter, on every retry.
pub fn sqs_safe_json(json: &str) -> Cow<'_, str> {
    // Fast check, for every message of every route: in JSON text the only characters SQS
    // refuses are U+FFFE and U+FFFF (control characters must be escaped in JSON, and UTF-8
    // holds no surrogates), both encoded as EF BF BE / EF BF BF.
    let b = json.as_bytes();
    let refused = memchr::memchr_iter(0xEF, b)
        .any(|i| b.get(i + 1) == Some(&0xBF) && matches!(b.get(i + 2), Some(0xBE | 0xBF)));
    if !refused {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 12);
    for c in json.chars() {
        if sqs_accepts(c) {
            out.push(c);
        } else {
            out.push_str(&format!("\\u{:04X}", u32::from(c)));
        }
    }
    Cow::Owned(out)
}

/// FIFO deduplication id: hex SHA-256 of (user id, 0x00, event id). Event ids are unique per
/// user only, so the user is part of it; the separator keeps ("ab","c") apart from ("a","bc").
pub fn dedup_id(user_id: &str, event_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(user_id.as_bytes());
    h.update([0u8]);
    h.update(event_id.as_bytes());
    hex::encode(h.finalize())
}

/// Plans `SendMessageBatch` calls for messages of the given sizes: at most
/// [`MAX_ENTRIES_PER_BATCH`] entries and `limit` bytes per call, order kept. Messages larger
/// than `limit` can never be sent and are returned apart.
pub fn plan_batches(sizes: &[usize], limit: usize) -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut too_large = Vec::new();
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        if size > limit {
            too_large.push(i);
            continue;
        }
        let fits = batches
            .last()
            .is_some_and(|b| b.len() < MAX_ENTRIES_PER_BATCH && bytes + size <= limit);
        if !fits {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        batches.last_mut().expect("pushed above").push(i);
    }
    (batches, too_large)
}

/// One message owed to one queue for one record.
pub struct Delivery<'a> {
    /// Index of the record in the batch.
    pub record: usize,
    /// (user id, event id): identifies the event, for a FIFO dead-letter queue's dedup id.
    pub event_key: (String, String),
    /// The route that matched.
    pub route_id: &'a str,
    /// Its queue.
    pub queue_url: &'a str,
    /// The message to send.
    pub message: QueueMessage,
}

/// What the forward dead-letter queue receives for a delivery refused for good.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter<'a> {
    /// Why the queue refused it.
    pub reason: &'a str,
    /// The route.
    pub route_id: &'a str,
    /// The route's queue.
    pub queue_url: &'a str,
    /// When (canonical form).
    pub failed_at: String,
    /// The stored event.
    pub event: &'a RawValue,
}

/// What a batch owes to which queue: the pure part of forwarding.
pub struct Plan<'a> {
    /// Each record's JSON text ("" when undecodable), by record index.
    pub bodies: Vec<&'a str>,
    /// Every (record, matching route) pair.
    pub deliveries: Vec<Delivery<'a>>,
    /// Delivery indices per queue URL.
    pub by_queue: BTreeMap<&'a str, Vec<usize>>,
    /// Sequence numbers of records that could not be decoded.
    pub undecodable: Vec<&'a str>,
}

impl Plan<'_> {
    /// Number of messages owed.
    pub fn delivery_count(&self) -> usize {
        self.deliveries.len()
    }

    /// The `SendMessageBatch` calls needed (per queue, entries and bytes bounded by `limit`).
    pub fn batch_calls(&self, limit: usize) -> usize {
        self.by_queue
            .values()
            .map(|indices| {
                let sizes: Vec<usize> = indices
                    .iter()
                    .map(|&d| self.deliveries[d].message.size())
                    .collect();
                plan_batches(&sizes, limit).0.len()
            })
            .sum()
    }
}

/// Decodes a batch and matches each event against the routes.
pub fn plan<'a>(event: &'a KinesisEvent, table: &'a RouteTable) -> Plan<'a> {
    let mut bodies: Vec<&str> = Vec::with_capacity(event.records.len());
    let mut deliveries: Vec<Delivery<'_>> = Vec::new();
    let mut undecodable = Vec::new();
    for (i, r) in event.records.iter().enumerate() {
        let decoded = std::str::from_utf8(&r.kinesis.data)
            .ok()
            .zip(record::decode(&r.kinesis.data).ok());
        let Some((body, stored)) = decoded else {
            undecodable.push(r.kinesis.sequence_number.as_str());
            bodies.push("");
            continue;
        };
        bodies.push(body);
        for route in table.matching(&stored.kind) {
            deliveries.push(Delivery {
                record: i,
                event_key: (stored.user_id.to_string(), stored.id.to_string()),
                route_id: &route.id,
                queue_url: &route.queue_url,
                message: QueueMessage::new(
                    &route.queue_url,
                    body,
                    &stored.kind,
                    &stored.user_id,
                    &stored.id,
                ),
            });
        }
    }
    let mut by_queue: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (d, delivery) in deliveries.iter().enumerate() {
        by_queue.entry(delivery.queue_url).or_default().push(d);
    }
    Plan {
        bodies,
        deliveries,
        by_queue,
        undecodable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_written_with_only_characters_sqs_accepts_and_mean_the_same() {
        let json = "{\"origin\":\"a\u{FFFF}b\",\"data\":{\"k\u{FFFE}\":\"\u{10FFFF}\"}}";
        let safe = sqs_safe_json(json);
        assert!(safe.chars().all(sqs_accepts), "{safe}");
        assert!(safe.contains("\\uFFFF") && safe.contains("\\uFFFE"));
        let parsed = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
        assert_eq!(parsed(&safe), parsed(json));
        // Nothing to do: the same text, not a copy.
        assert!(matches!(sqs_safe_json("{\"a\":\"é\"}"), Cow::Borrowed(_)));
        let m = QueueMessage::new("https://q/1/q", json, "t", "u", "e");
        assert!(m.body.chars().all(sqs_accepts));
    }

    proptest::proptest! {
        /// The fast check agrees with the character rule on any JSON text serde writes.
        #[test]
        fn every_json_text_becomes_one_sqs_accepts(s in "\\PC*|[\u{FFF0}-\u{FFFF}\u{0}-\u{1F}a]*") {
            let json = serde_json::to_string(&serde_json::json!({ "v": s })).unwrap();
            let safe = sqs_safe_json(&json);
            proptest::prop_assert!(safe.chars().all(sqs_accepts), "{}", safe);
            proptest::prop_assert_eq!(matches!(safe, Cow::Borrowed(_)), json.chars().all(sqs_accepts));
            let parsed: serde_json::Value = serde_json::from_str(&safe).unwrap();
            proptest::prop_assert_eq!(parsed["v"].as_str(), Some(s.as_str()));
        }
    }

    #[test]
    fn fifo_messages_carry_group_and_dedup_ids() {
        let m = QueueMessage::new("https://h/1/q.fifo", "{}", "t", "u1", "e1");
        assert_eq!(m.group_id.as_deref(), Some("u1"));
        assert_eq!(m.dedup_id.as_deref().map(str::len), Some(64));
        let plain = QueueMessage::new("https://h/1/q", "{}", "t", "u1", "e1");
        assert_eq!((plain.group_id, plain.dedup_id), (None, None));
    }

    #[test]
    fn dedup_ids_differ_per_user_and_resist_concatenation() {
        assert_ne!(dedup_id("u1", "e1"), dedup_id("u2", "e1"));
        assert_ne!(dedup_id("ab", "c"), dedup_id("a", "bc"));
        assert_eq!(dedup_id("u1", "e1"), dedup_id("u1", "e1"));
    }

    #[test]
    fn batches_respect_entries_and_bytes() {
        let (b, big) = plan_batches(&[1; 25], 1000);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
        assert!(big.is_empty());
        let (b, big) = plan_batches(&[400, 400, 400, 1001, 100], 1000);
        assert_eq!(b, vec![vec![0, 1], vec![2, 4]]);
        assert_eq!(big, vec![3]);
    }
}
