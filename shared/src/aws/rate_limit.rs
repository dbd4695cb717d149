//! Per-user rate limit: events per user per minute, shared by every ingest function through one
//! conditional `UpdateItem` per request (not per event) on the `counts` table.
//!
//! **A sliding minute, estimated from two windows.** A fixed minute would let a user send the
//! limit at 12:00:59 and again at 12:01:00 (twice the limit within a second). So a request is
//! admitted when this minute's count, plus the previous minute's scaled by the part of it still
//! inside the last 60 s, plus the request, fits: `used + prev × (1 − elapsed) + n ≤ limit`
//! (the estimate the sliding-window rate limiters of Cloudflare and others use). The previous
//! minute's count no longer changes: each function reads it once per user and minute
//! (`GetItem`) and keeps it.
//!
//! **Items.** `pk = rate#<userId>#<slice>`, `sk = <minute start>`, `used` (N), `expiresAt` two
//! minutes later. The limit is split over [`slices`] items, each holding its share: one item takes
//! at most ~1,000 writes a second (a partition's capacity), and a refused request writes too (a
//! failed condition consumes a write unit), so a single item per user would itself be the hot
//! key — throttled, then failing open — exactly for the user the limit exists for. A request
//! takes a random slice; when that one is full it tries one other, so a user is refused early
//! only when two slices are full at once.
//!
//! **When the counter cannot be updated.** Throttled (the user is hot enough to throttle their
//! own counter): refused, 429 with `Retry-After: 1`. Unavailable (5xx, timeouts, connection
//! failures) or refused for good (a missing table or permission: a deployment mistake):
//! admitted and logged — the limit protects the pipeline and must not take ingest down with it.
//!
//! **A request larger than a slice's share** can never be admitted: [`RateDecision::TooLarge`].

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};

use crate::count::{Granularity, format_bucket};
use crate::ports::{RateDecision, RateLimiter, StoreError};

/// Most slices one user's limit is split over.
pub const MAX_SLICES: u64 = 8;
/// Fewest events one slice holds: a whole request (500 events) must fit in one slice.
pub const MIN_SLICE: u64 = crate::batch::MAX_EVENTS_PER_REQUEST as u64;
/// Previous-minute counts kept per function before the cache starts over.
const CACHED_COUNTS: usize = 10_000;

/// How many items a limit of `per_minute` is split over.
pub fn slices(per_minute: u64) -> u64 {
    (per_minute / MIN_SLICE).clamp(1, MAX_SLICES)
}

/// The room left for a request in a slice of `share` events a minute, given the previous
/// minute's count `previous` and how far into this minute `now` is: the sliding estimate
/// `share − previous × (1 − elapsed)`, the most this minute's count may reach before the
/// request's events are added.
pub fn room(share: u64, previous: u64, elapsed: f64) -> u64 {
    let carried = (previous as f64 * (1.0 - elapsed.clamp(0.0, 1.0))).ceil() as u64;
    share.saturating_sub(carried)
}

/// The limiter on the `counts` table.
#[derive(Debug)]
pub struct DynamoRateLimiter {
    client: Client,
    table: String,
    per_minute: u64,
    slices: u64,
    per_slice: u64,
    /// (user, slice, minute start) → that minute's final count, read once.
    previous: Mutex<HashMap<(String, u64, i64), u64>>,
}

impl DynamoRateLimiter {
    /// `per_minute` events per user per minute, counted in `table`.
    pub fn new(client: Client, table: impl Into<String>, per_minute: u64) -> Self {
        let slices = slices(per_minute);
        Self {
            client,
            table: table.into(),
            per_minute,
            slices,
            per_slice: per_minute.div_ceil(slices),
            previous: Mutex::new(HashMap::new()),
        }
    }

    fn key(user_id: &str, slice: u64, minute: DateTime<Utc>) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                "pk".to_string(),
                AttributeValue::S(format!("rate#{user_id}#{slice}")),
            ),
            ("sk".to_string(), AttributeValue::S(format_bucket(minute))),
        ])
    }

    /// The final count of a slice's previous minute (read once, then kept).
    async fn previous_count(
        &self,
        user_id: &str,
        slice: u64,
        minute: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let cache_key = (user_id.to_string(), slice, minute.timestamp());
        if let Some(used) = self.previous.lock().expect("cache lock").get(&cache_key) {
            return Ok(*used);
        }
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(user_id, slice, minute)))
            .projection_expression("#used")
            .expression_attribute_names("#used", "used")
            .send()
            .await
            .map_err(|e| super::store_error(&e))?;
        let used = match out.item().and_then(|i| i.get("used")) {
            Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
            _ => 0,
        };
        let mut cache = self.previous.lock().expect("cache lock");
        if cache.len() >= CACHED_COUNTS {
            cache.clear();
        }
        cache.insert(cache_key, used);
        Ok(used)
    }

    /// Adds `events` to one slice unless that would pass its room.
    async fn take(
        &self,
        user_id: &str,
        slice: u64,
        events: u64,
        now: DateTime<Utc>,
    ) -> Result<Take, StoreError> {
        let minute = Granularity::Minute.bucket_start(now);
        let previous = self
            .previous_count(user_id, slice, minute - chrono::Duration::minutes(1))
            .await?;
        let elapsed = (now - minute).num_milliseconds() as f64 / 60_000.0;
        let Some(room) = room(self.per_slice, previous, elapsed).checked_sub(events) else {
            return Ok(Take::Full);
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(user_id, slice, minute)))
            .update_expression("ADD #used :n SET expiresAt = :ttl")
            .condition_expression("attribute_not_exists(#used) OR #used <= :room")
            .expression_attribute_names("#used", "used")
            .expression_attribute_values(":n", AttributeValue::N(events.to_string()))
            .expression_attribute_values(":room", AttributeValue::N(room.to_string()))
            .expression_attribute_values(
                ":ttl",
                AttributeValue::N((minute.timestamp() + 120).to_string()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(Take::Taken),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(Take::Full)
            }
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(
                        UpdateItemError::ProvisionedThroughputExceededException(_)
                            | UpdateItemError::RequestLimitExceeded(_)
                            | UpdateItemError::ThrottlingException(_)
                    )
                ) || e.code().is_some_and(is_throttling) =>
            {
                Ok(Take::Throttled)
            }
            Err(e) => Err(super::store_error(&e)),
        }
    }
}

/// What one slice said.
enum Take {
    Taken,
    Full,
    /// The counter itself is throttled: the user is hot.
    Throttled,
}

/// Seconds from `now` to the next minute (at least 1).
pub fn seconds_to_next_minute(now: DateTime<Utc>) -> u32 {
    let start = Granularity::Minute.bucket_start(now);
    let left = (start + chrono::Duration::minutes(1) - now).num_seconds();
    left.clamp(1, 60) as u32
}

/// Whether an error code is DynamoDB throttling a request.
fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded"
    )
}

#[async_trait::async_trait]
impl RateLimiter for DynamoRateLimiter {
    async fn acquire(
        &self,
        user_id: &str,
        events: u64,
        now: DateTime<Utc>,
    ) -> Result<RateDecision, StoreError> {
        if let Some(most) = self.most_per_request()
            && events > most
        {
            return Ok(RateDecision::TooLarge { most });
        }
        let limited = RateDecision::Limited {
            retry_after_secs: seconds_to_next_minute(now),
        };
        let first = fastrand::u64(0..self.slices);
        let mut tries = vec![first];
        if self.slices > 1 {
            tries.push((first + fastrand::u64(1..self.slices)) % self.slices);
        }
        for slice in tries {
            match self.take(user_id, slice, events, now).await? {
                Take::Taken => return Ok(RateDecision::Allowed),
                Take::Full => {}
                Take::Throttled => {
                    return Ok(RateDecision::Limited {
                        retry_after_secs: 1,
                    });
                }
            }
        }
        Ok(limited)
    }

    fn most_per_request(&self) -> Option<u64> {
        Some(self.per_slice.min(self.per_minute))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(update: aws_smithy_mocks::Rule) -> (DynamoRateLimiter, aws_smithy_mocks::Rule) {
        use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
        use aws_smithy_mocks::{RuleMode, mock, mock_client};
        let get = mock!(Client::get_item).then_output(|| GetItemOutput::builder().build());
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&get, &update]);
        (DynamoRateLimiter::new(client, "counts", 100), update)
    }

    #[tokio::test]
    async fn a_throttled_counter_limits_and_an_unreachable_one_lets_through() {
        use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
        use aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException;
        use aws_smithy_mocks::mock;
        let now = crate::time::parse("2026-11-26T13:44:16Z").unwrap();
        // Throttled: the user is hot enough to throttle their own counter — refused.
        let (throttled, _) = limiter(mock!(Client::update_item).then_error(|| {
            UpdateItemError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder().build(),
            )
        }));
        assert_eq!(
            throttled.acquire("u", 1, now).await.unwrap(),
            RateDecision::Limited {
                retry_after_secs: 1
            }
        );
        // Unreachable (here: a 5xx): an error, which ingest answers by letting the request in.
        let (down, _) = limiter(mock!(Client::update_item).then_http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(500).unwrap(),
                aws_smithy_types::body::SdkBody::from("{}"),
            )
        }));
        assert!(down.acquire("u", 1, now).await.is_err());
        // Larger than any request may be: not a retryable refusal.
        assert_eq!(
            down.acquire("u", 101, now).await.unwrap(),
            RateDecision::TooLarge { most: 100 }
        );
    }

    #[test]
    fn retry_after_points_at_the_next_minute() {
        let t = |s: &str| crate::time::parse(s).unwrap();
        assert_eq!(seconds_to_next_minute(t("2026-11-26T13:44:16Z")), 44);
        assert_eq!(seconds_to_next_minute(t("2026-11-26T13:44:59.900Z")), 1);
        assert_eq!(seconds_to_next_minute(t("2026-11-26T13:44:00Z")), 60);
    }

    #[test]
    fn the_previous_minute_counts_for_the_part_of_it_still_in_the_last_60_seconds() {
        // Just after the minute turned, a full previous minute leaves no room.
        assert_eq!(room(100, 100, 0.0), 0);
        // Half-way through, half of it still counts.
        assert_eq!(room(100, 100, 0.5), 50);
        assert_eq!(room(100, 0, 0.0), 100);
        assert_eq!(room(100, 40, 1.0), 100);
        // Rounded against the user, never below zero.
        assert_eq!(room(100, 3, 0.5), 98);
        assert_eq!(room(10, 100, 0.01), 0);
    }

    #[test]
    fn a_limit_is_split_into_slices_that_each_hold_a_whole_request() {
        assert_eq!(slices(100), 1);
        assert_eq!(slices(999), 1);
        assert_eq!(slices(1000), 2);
        assert_eq!(slices(30_000), MAX_SLICES);
        for limit in [1, 499, 500, 1000, 1999, 30_000, 1_000_000] {
            let n = slices(limit);
            let share = limit.div_ceil(n);
            assert!(
                share * n >= limit,
                "{limit}: the slices hold the whole limit"
            );
            assert!(
                limit < MIN_SLICE || share >= MIN_SLICE,
                "{limit}: a full request fits"
            );
        }
    }
}
