//! The `events` DynamoDB table: [`EventStore`] on `BatchWriteItem`, [`EventReader`] on `Query`.
//!
//! Layout: `pk = USER#<userId>`, `sk = EVT#<id>` — never a timestamp, so a
//! re-sent or redelivered event overwrites itself. The global secondary index [`TIME_INDEX`]
//! (`pk`, `timestamp`) serves time-ordered reads. `data` is a JSON string attribute.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use base64::Engine;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::event::StoredEvent;
use crate::ports::{
    EventPage, EventQuery, EventReader, EventStore, ReadError, StoreError, WriteOutcome,
};
use crate::retry::{Attempt, Deadline, RetryPolicy, retry};

/// Most items in one `BatchWriteItem` call.
pub const MAX_ITEMS_PER_CALL: usize = 25;
/// `BatchWriteItem` calls in flight at once per invocation.
pub const CONCURRENT_CALLS: usize = 4;
/// The longest pause between two attempts of a call.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Name of the global secondary index for time-ordered reads.
pub const TIME_INDEX: &str = "byTime";

/// Partition key of a user's events.
pub fn partition_key(user_id: &str) -> String {
    format!("USER#{user_id}")
}

/// Sort key of an event.
pub fn sort_key(id: &str) -> String {
    format!("EVT#{id}")
}

/// An `events` item: the stored event's own fields — [`StoredEvent`]'s serde attributes are
/// their one definition, here as in Kinesis records — with `data` as a string attribute holding
/// its JSON text (DynamoDB maps refuse nesting beyond 32 levels and numbers beyond 38 digits,
/// which JSON allows), plus the keys and the TTL. The table's stream images are these items too.
/// (Read back straight into a [`StoredEvent`], which ignores the keys and the TTL.)
#[derive(Serialize)]
struct Item<'a> {
    pk: String,
    sk: String,
    #[serde(flatten)]
    event: StoredEvent<'a, Cow<'a, str>>,
    #[serde(rename = "expiresAt", skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// A stored event read back from DynamoDB (an item or a stream image): owned, `data` as text.
pub type StoredItem = StoredEvent<'static, Cow<'static, str>>;

fn item_of<'a>(e: &StoredEvent<'a>, ttl_secs: Option<i64>) -> Item<'a> {
    Item {
        pk: partition_key(&e.user_id),
        sk: sort_key(&e.id),
        event: e.clone().map_data(|d| Cow::Borrowed(d.get())),
        expires_at: expires_at(&e.received_at, ttl_secs),
    }
}

/// DynamoDB's limit on one item, as it measures items ([`item_size`]).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// An upper bound of how much larger an event's item is than its Kinesis record (the keys, the
/// TTL; every other attribute is shorter than its JSON member): records shorter than
/// `MAX_ITEM_BYTES - ITEM_OVER_RECORD_BYTES` need no measuring.
pub const ITEM_OVER_RECORD_BYTES: usize = 256;

/// The size DynamoDB counts for an item: each attribute's name (UTF-8 bytes) plus its value
/// (strings their UTF-8 bytes, numbers about one byte per two significant digits plus one,
/// lists and maps 3 bytes plus their elements).
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => {
            let digits = n
                .trim_start_matches('-')
                .split(['e', 'E'])
                .next()
                .unwrap_or("")
                .replace('.', "");
            digits.trim_matches('0').len().div_ceil(2) + 1
        }
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v
            .iter()
            .map(|n| value_size(&AttributeValue::N(n.clone())))
            .sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, e)| k.len() + 1 + value_size(e))
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// The `events` table item of an event (TTL `expiresAt` = receive time + `ttl_secs`).
///
/// Written by hand for store's speed (serde_dynamo builds its own values, then converts them:
/// twice the allocations): it destructures [`StoredEvent`] without `..`, so a new field is a
/// compile error here until it is written, and a property test holds it equal to
/// [`to_item_by_serde`], the definition.
pub fn to_item(e: &StoredEvent<'_>, ttl_secs: Option<i64>) -> HashMap<String, AttributeValue> {
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
    } = e;
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let mut item = HashMap::with_capacity(13);
    item.insert("pk".into(), AttributeValue::S(partition_key(user_id)));
    item.insert("sk".into(), AttributeValue::S(sort_key(id)));
    item.insert(
        "schemaVersion".into(),
        AttributeValue::N(schema_version.to_string()),
    );
    item.insert("id".into(), s(id));
    item.insert("type".into(), s(kind));
    item.insert("userId".into(), s(user_id));
    item.insert("timestamp".into(), s(timestamp));
    item.insert("receivedAt".into(), s(received_at));
    item.insert("environment".into(), s(environment));
    if let Some(v) = origin {
        item.insert("origin".into(), s(v));
    }
    if let Some(v) = session_id {
        item.insert("sessionId".into(), s(v));
    }
    if let Some(d) = data {
        item.insert("data".into(), s(d.get()));
    }
    if let Some(expires_at) = expires_at(received_at, ttl_secs) {
        item.insert(
            "expiresAt".into(),
            AttributeValue::N(expires_at.to_string()),
        );
    }
    item
}

/// The `events` item as serde (through serde_dynamo) writes it: the definition [`to_item`]
/// is tested against.
pub fn to_item_by_serde(
    e: &StoredEvent<'_>,
    ttl_secs: Option<i64>,
) -> HashMap<String, AttributeValue> {
    // Strings and integers only: serde_dynamo cannot fail on them.
    serde_dynamo::aws_sdk_dynamodb_1::to_item(item_of(e, ttl_secs))
        .expect("a stored event is a DynamoDB item")
}

/// The TTL attribute: from the receive time, never the store time — a redelivered record must
/// produce an identical item, or DynamoDB would emit a MODIFY for it.
fn expires_at(received_at: &str, ttl_secs: Option<i64>) -> Option<i64> {
    let ttl = ttl_secs?;
    crate::time::parse(received_at).map(|received| received.timestamp() + ttl)
}

/// The same item as the table's stream shows it (`NewImage` of a Lambda stream record).
pub fn to_image(e: &StoredEvent<'_>, ttl_secs: Option<i64>) -> serde_dynamo::Item {
    serde_dynamo::to_item(item_of(e, ttl_secs)).expect("a stored event is a DynamoDB item")
}

/// Reads an `events` item back (keys and TTL dropped); the error says what does not fit.
/// Takes the item: its strings move into the event, uncopied.
pub fn from_item(item: HashMap<String, AttributeValue>) -> Result<StoredItem, String> {
    serde_dynamo::aws_sdk_dynamodb_1::from_item(item)
        .map_err(|e| format!("not a stored event: {e}"))
}

/// Reads a stream image of the `events` table (the same item, in Lambda's event JSON), with
/// `data` as `D`: its text, or `serde::de::IgnoredAny` where it is not needed.
pub fn from_image<D: serde::de::DeserializeOwned>(
    image: serde_dynamo::Item,
) -> Result<StoredEvent<'static, D>, String> {
    serde_dynamo::from_item(image).map_err(|e| format!("not a stored event: {e}"))
}

/// An event read from DynamoDB as the JSON the API answers: the Kinesis encoding, `data` raw.
pub fn to_json(event: &StoredItem) -> Result<Box<RawValue>, String> {
    let bytes = crate::record::encode_with_data(event, event.data.as_deref()).data;
    let text = String::from_utf8(bytes).map_err(|e| e.to_string())?;
    // Validates `data`, which came from storage: it must be JSON to be answered raw.
    RawValue::from_string(text).map_err(|e| format!("stored data is not JSON: {e}"))
}

/// The `events` table.
#[derive(Debug, Clone)]
pub struct EventTable {
    client: Client,
    table: String,
    ttl_secs: Option<i64>,
}

impl EventTable {
    /// The table `table`; items expire `ttl_days` after receipt when set.
    pub fn new(client: Client, table: impl Into<String>, ttl_days: Option<u32>) -> Self {
        Self {
            client,
            table: table.into(),
            ttl_secs: ttl_days.map(|d| i64::from(d) * 86_400),
        }
    }

    /// Writes one call's worth of requests, retrying `UnprocessedItems` and retryable errors
    /// (throttling above all: one busy user's items share one partition) with backoff until
    /// `deadline`. Returns the keys still unwritten, with the error that explains them.
    async fn write_call(
        &self,
        requests: Vec<WriteRequest>,
        deadline: Deadline,
    ) -> (usize, Result<(), (Vec<WriteRequest>, StoreError)>) {
        let done = retry(
            BATCH_WRITE_RETRIES,
            deadline,
            requests,
            Vec::len,
            || StoreError::Transient("invocation deadline reached".into()),
            |requests: Vec<WriteRequest>| async move {
                let result = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests.clone())
                    .customize()
                    .config_override(
                        aws_sdk_dynamodb::config::Builder::default()
                            .retry_config(super::attempt_once()),
                    )
                    .send()
                    .await;
                match result {
                    Ok(output) => {
                        let unprocessed = output
                            .unprocessed_items
                            .and_then(|mut m| m.remove(&self.table))
                            .unwrap_or_default();
                        if unprocessed.is_empty() {
                            return Attempt::Done;
                        }
                        tracing::debug!(
                            unprocessed = unprocessed.len(),
                            "retrying UnprocessedItems"
                        );
                        let why = format!("{} items stayed unprocessed", unprocessed.len());
                        Attempt::Retry(unprocessed, StoreError::Transient(why))
                    }
                    Err(e) if super::is_retryable(&e) => {
                        Attempt::Retry(requests, StoreError::Transient(super::describe(&e)))
                    }
                    Err(e) => Attempt::Stop(requests, StoreError::Permanent(super::describe(&e))),
                }
            },
        )
        .await;
        (done.retried, done.left.map_or(Ok(()), Err))
    }
}

/// BatchWriteItem: unprocessed items again, 25 ms doubling to 2 s, until the invocation's
/// deadline (less the 2 s kept to answer).
pub const BATCH_WRITE_RETRIES: RetryPolicy = RetryPolicy {
    base: Duration::from_millis(25),
    cap: MAX_BACKOFF,
    max_attempts: None,
};

/// Groups the inputs into calls: each key once (its **last** occurrence), at most
/// [`MAX_ITEMS_PER_CALL`] per call. Returns the calls as input indices, and for every input
/// the index that represents it.
pub fn plan_calls(keys: &[(&str, &str)]) -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut last: HashMap<(&str, &str), usize> = HashMap::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        last.insert(*key, i);
    }
    let representative: Vec<usize> = keys.iter().map(|k| last[k]).collect();
    let survivors: Vec<usize> = (0..keys.len())
        .filter(|&i| representative[i] == i)
        .collect();
    let calls = survivors
        .chunks(MAX_ITEMS_PER_CALL)
        .map(<[usize]>::to_vec)
        .collect();
    (calls, representative)
}

fn key_of(request: &WriteRequest) -> Option<(String, String)> {
    let item = &request.put_request.as_ref()?.item;
    match (item.get("pk"), item.get("sk")) {
        (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => {
            Some((pk.clone(), sk.clone()))
        }
        _ => None,
    }
}

#[async_trait::async_trait]
impl EventStore for EventTable {
    async fn write_events(&self, events: &[StoredEvent<'_>], deadline: Deadline) -> WriteOutcome {
        let keys: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.user_id.as_ref(), e.id.as_ref()))
            .collect();
        let (calls, representative) = plan_calls(&keys);
        let calls = calls.into_iter().map(|indices| {
            let requests: Vec<WriteRequest> = indices
                .iter()
                .map(|&i| {
                    let put = PutRequest::builder()
                        .set_item(Some(to_item(&events[i], self.ttl_secs)))
                        .build()
                        .expect("item is set");
                    WriteRequest::builder().put_request(put).build()
                })
                .collect();
            async move {
                match self.write_call(requests, deadline).await {
                    (retried, Ok(())) => (indices, Vec::new(), None, retried),
                    (retried, Err((left, error))) => {
                        let left: Vec<(String, String)> = left.iter().filter_map(key_of).collect();
                        (indices, left, Some(error), retried)
                    }
                }
            }
        });
        let results: Vec<_> = futures::stream::iter(calls)
            .buffer_unordered(CONCURRENT_CALLS)
            .collect()
            .await;

        let mut failed_representatives = Vec::new();
        let mut outcome = WriteOutcome::default();
        for (indices, left, error, retried) in results {
            outcome.retried += retried;
            if error.is_none() {
                continue;
            }
            for i in indices {
                let key = (partition_key(keys[i].0), sort_key(keys[i].1));
                if left.contains(&key) {
                    failed_representatives.push(i);
                }
            }
            outcome.error = error;
        }
        outcome.failed = (0..events.len())
            .filter(|i| failed_representatives.contains(&representative[*i]))
            .collect();
        outcome
    }
}

/// What the opaque cursor holds: the last evaluated key minus the partition, which always comes
/// from the authenticated caller (a cursor cannot be pointed at another user's events).
#[derive(Serialize, Deserialize)]
struct Cursor {
    sk: String,
    ts: String,
}

fn encode_cursor(key: &HashMap<String, AttributeValue>) -> Option<String> {
    let get = |k: &str| match key.get(k) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    };
    let cursor = Cursor {
        sk: get("sk")?,
        ts: get("timestamp")?,
    };
    let json = serde_json::to_vec(&cursor).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
}

fn decode_cursor(cursor: &str, pk: &str) -> Result<HashMap<String, AttributeValue>, ReadError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| ReadError::InvalidCursor)?;
    let c: Cursor = serde_json::from_slice(&bytes).map_err(|_| ReadError::InvalidCursor)?;
    if !c.sk.starts_with("EVT#") || crate::time::parse(&c.ts).is_none() {
        return Err(ReadError::InvalidCursor);
    }
    Ok(HashMap::from([
        ("pk".to_string(), AttributeValue::S(pk.to_string())),
        ("sk".to_string(), AttributeValue::S(c.sk)),
        ("timestamp".to_string(), AttributeValue::S(c.ts)),
    ]))
}

/// Queries a page at most this many times to fill it when a type filter skips items.
const MAX_QUERY_ROUNDS: usize = 5;

/// The index keys of an item: where a page that ends at it goes on.
fn page_key(item: &HashMap<String, AttributeValue>) -> HashMap<String, AttributeValue> {
    ["pk", "sk", "timestamp"]
        .into_iter()
        .filter_map(|k| item.get(k).map(|v| (k.to_string(), v.clone())))
        .collect()
}

#[async_trait::async_trait]
impl EventReader for EventTable {
    async fn list_events(&self, q: &EventQuery) -> Result<EventPage, ReadError> {
        let pk = partition_key(&q.user_id);
        let mut start = q
            .cursor
            .as_deref()
            .map(|c| decode_cursor(c, &pk))
            .transpose()?;
        let mut page = EventPage::default();
        let mut budget = crate::http::ResponseBudget::new(q.max_bytes);
        // Where the page ends when it stops before the query did (limit or bytes reached).
        let mut stopped_after: Option<HashMap<String, AttributeValue>> = None;
        let mut ended = false;
        // Bounds that include every canonical timestamp ("~" sorts after every digit).
        let from = q.from.clone().unwrap_or_else(|| "0000".into());
        let to = q.to.clone().unwrap_or_else(|| "~".into());
        for _ in 0..MAX_QUERY_ROUNDS {
            let wanted = q.limit - page.events.len();
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(TIME_INDEX)
                .key_condition_expression("pk = :pk AND #ts BETWEEN :from AND :to")
                .expression_attribute_names("#ts", "timestamp")
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                .expression_attribute_values(":from", AttributeValue::S(from.clone()))
                .expression_attribute_values(":to", AttributeValue::S(to.clone()))
                .scan_index_forward(false)
                // One more than wanted: whether anything follows is then seen, not guessed from
                // a LastEvaluatedKey (DynamoDB returns one whenever a query stops at its Limit,
                // even when nothing is left).
                .limit(i32::try_from(wanted + 1).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            if let Some(kind) = &q.kind {
                request = request
                    .filter_expression("#type = :type")
                    .expression_attribute_names("#type", "type")
                    .expression_attribute_values(":type", AttributeValue::S(kind.clone()));
            }
            let output = request.send().await.map_err(|e| super::store_error(&e))?;
            start = output.last_evaluated_key;
            for item in output.items.unwrap_or_default() {
                let key = page_key(&item);
                let json = from_item(item)
                    .and_then(|event| to_json(&event))
                    .map_err(StoreError::Permanent)?;
                let full = page.events.len() == q.limit;
                // A page holds at least one event, however large (one is far below the budget).
                if full || (!budget.take(json.get()) && !page.events.is_empty()) {
                    ended = true;
                    break;
                }
                page.events.push(json);
                stopped_after = Some(key);
            }
            if ended || start.is_none() {
                break;
            }
        }
        page.cursor = if ended {
            stopped_after.as_ref().and_then(encode_cursor)
        } else {
            start.as_ref().and_then(encode_cursor)
        };
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;
    use crate::event::SCHEMA_VERSION;

    fn event<'a>(user: &'a str, id: &'a str, data: Option<&'a RawValue>) -> StoredEvent<'a> {
        StoredEvent {
            schema_version: SCHEMA_VERSION,
            id: Cow::Borrowed(id),
            kind: Cow::Borrowed("t"),
            user_id: Cow::Borrowed(user),
            timestamp: Cow::Borrowed("2026-11-26T13:00:00.000Z"),
            received_at: Cow::Borrowed("2026-11-26T13:00:00.000Z"),
            environment: Cow::Borrowed("prod"),
            origin: None,
            session_id: Some(Cow::Borrowed("s")),
            data: data.map(crate::event::Data),
        }
    }

    #[test]
    fn duplicate_keys_never_share_a_call_and_the_last_wins() {
        let keys = [("u", "a"), ("u", "b"), ("u", "a"), ("v", "a")];
        let (calls, rep) = plan_calls(&keys);
        assert_eq!(calls, vec![vec![1, 2, 3]]);
        assert_eq!(rep, vec![2, 1, 2, 3]);

        let many: Vec<(String, String)> = (0..60)
            .map(|i| ("u".into(), format!("{}", i % 30)))
            .collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let (calls, _) = plan_calls(&refs);
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [25, 5]);
        for call in &calls {
            let mut ks: Vec<_> = call.iter().map(|&i| refs[i]).collect();
            ks.sort();
            ks.dedup();
            assert_eq!(ks.len(), call.len());
        }
    }

    #[test]
    fn item_size_counts_as_dynamodb_does() {
        let item = HashMap::from([
            ("s".to_string(), AttributeValue::S("héllo".into())),
            ("n".to_string(), AttributeValue::N("-1234.500".into())),
            ("b".to_string(), AttributeValue::Bool(true)),
            (
                "l".to_string(),
                AttributeValue::L(vec![AttributeValue::S("ab".into())]),
            ),
        ]);
        // 1+6, 1+(5 significant digits, 12345: 3+1), 1+1, 1+(3+1+2)
        assert_eq!(item_size(&item), 7 + 5 + 2 + 7);
        // An event's item is never much larger than its record (the bound store relies on).
        let raw = RawValue::from_string(format!(r#"{{"p":"{}"}}"#, "\\\"".repeat(100))).unwrap();
        let (user, id) = ("u".repeat(128), "i".repeat(64));
        let e = event(&user, &id, Some(&raw));
        let record = crate::record::encode(&e).data.len();
        assert!(item_size(&to_item(&e, Some(i64::MAX / 2))) <= record + ITEM_OVER_RECORD_BYTES);
    }

    #[test]
    fn item_round_trip_keeps_data_verbatim() {
        let raw = RawValue::from_string(r#"{"a":[1,2,{"b":1e999}]}"#.into()).unwrap();
        let e = event("u1", "e1", Some(&raw));
        let item = to_item(&e, Some(86_400));
        assert_eq!(item["pk"], AttributeValue::S("USER#u1".into()));
        assert_eq!(item["sk"], AttributeValue::S("EVT#e1".into()));
        assert!(item.contains_key("expiresAt"));
        // `data` is a string attribute holding the JSON text, not a map.
        assert_eq!(item["data"], AttributeValue::S(raw.get().into()));
        let back = from_item(item).unwrap();
        assert_eq!(back, e.clone().map_data(|d| Cow::Borrowed(d.get())));
        // And answered as the same JSON the stream carries.
        assert_eq!(
            to_json(&back).unwrap().get().as_bytes(),
            crate::record::encode(&e).data
        );
    }

    fn put(e: &StoredEvent<'_>) -> WriteRequest {
        WriteRequest::builder()
            .put_request(
                PutRequest::builder()
                    .set_item(Some(to_item(e, None)))
                    .build()
                    .unwrap(),
            )
            .build()
    }

    #[tokio::test]
    async fn unprocessed_items_are_retried_until_written() {
        let events = [event("u", "a", None), event("u", "b", None)];
        let leftover = put(&events[1]);
        let rule = mock!(Client::batch_write_item)
            .sequence()
            .output(move || {
                BatchWriteItemOutput::builder()
                    .unprocessed_items("events", vec![leftover.clone()])
                    .build()
            })
            .output(|| BatchWriteItemOutput::builder().build())
            .build();
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
        let outcome = EventTable::new(client, "events", None)
            .write_events(&events, Deadline::after(Duration::from_secs(30)))
            .await;
        assert!(outcome.is_complete(), "{outcome:?}");
        assert_eq!(rule.num_calls(), 2);
    }

    // Paused time: the retries until the deadline take no real time.
    #[tokio::test(start_paused = true)]
    async fn items_that_stay_unprocessed_are_retried_until_the_deadline_then_reported() {
        let events = [
            event("u", "a", None),
            event("u", "b", None),
            event("u", "a", None),
        ];
        let leftover = put(&events[2]);
        let rule = mock!(Client::batch_write_item)
            .sequence()
            .output(move || {
                BatchWriteItemOutput::builder()
                    .unprocessed_items("events", vec![leftover.clone()])
                    .build()
            })
            .repeatedly()
            .build();
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
        let started = tokio::time::Instant::now();
        let outcome = EventTable::new(client, "events", None)
            .write_events(&events, Deadline::after(Duration::from_secs(28)))
            .await;
        assert_eq!(outcome.failed, vec![0, 2]);
        assert!(matches!(outcome.error, Some(StoreError::Transient(_))));
        // Retried for the whole budget (pauses of up to 2 s), not for a fixed count.
        let spent = started.elapsed();
        assert!(spent >= Duration::from_secs(28), "{spent:?}");
        assert!(rule.num_calls() > 14, "{}", rule.num_calls());
    }

    #[test]
    fn cursor_round_trips_and_rejects_tampering() {
        let key = HashMap::from([
            ("pk".to_string(), AttributeValue::S("USER#u".into())),
            ("sk".to_string(), AttributeValue::S("EVT#e".into())),
            (
                "timestamp".to_string(),
                AttributeValue::S("2026-11-26T13:00:00.000Z".into()),
            ),
        ]);
        let c = encode_cursor(&key).unwrap();
        // The partition always comes from the caller, whatever the cursor held.
        let back = decode_cursor(&c, "USER#me").unwrap();
        assert_eq!(back["pk"], AttributeValue::S("USER#me".into()));
        assert_eq!(back["sk"], key["sk"]);
        assert!(matches!(
            decode_cursor("!!", "USER#me"),
            Err(ReadError::InvalidCursor)
        ));
        assert!(matches!(
            decode_cursor("e30", "USER#me"),
            Err(ReadError::InvalidCursor)
        ));
    }
}
