//! Per-user rate limit: events per user per minute, shared by every ingest function through one
//! conditional `UpdateItem` per request (not per event) on the `counts` table.
//!
//! Items: `pk = rate#<userId>#<slice>`, `sk = <minute start>`, `used` (N), `expiresAt` two
//! minutes later. The limit is split over [`slices`] items, each holding its share: one item
//! takes at most ~1,000 writes a second (a partition's capacity), and a refused request writes
//! too (a failed condition consumes a write unit), so a single item per user would itself be
//! the hot key — throttled, then failing open — exactly for the user the limit exists for.
//! A request takes a random slice; when that one is full it tries one other, so a user is
//! refused early only when two slices are full at once.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use crate::count::{Granularity, format_bucket};
use crate::ports::{RateDecision, RateLimiter, StoreError};

/// Most slices one user's limit is split over.
pub const MAX_SLICES: u64 = 8;
/// Fewest events one slice holds: a whole request (500 events) must fit in one slice.
pub const MIN_SLICE: u64 = crate::batch::MAX_EVENTS_PER_REQUEST as u64;

/// How many items a limit of `per_minute` is split over.
pub fn slices(per_minute: u64) -> u64 {
    (per_minute / MIN_SLICE).clamp(1, MAX_SLICES)
}

/// The limiter on the `counts` table.
#[derive(Debug, Clone)]
pub struct DynamoRateLimiter {
    client: Client,
    table: String,
    per_minute: u64,
    slices: u64,
    per_slice: u64,
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
        }
    }

    /// Adds `events` to one slice unless that would pass its share: `Ok(false)` when full.
    async fn take(
        &self,
        user_id: &str,
        slice: u64,
        events: u64,
        minute: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let key = HashMap::from([
            (
                "pk".to_string(),
                AttributeValue::S(format!("rate#{user_id}#{slice}")),
            ),
            ("sk".to_string(), AttributeValue::S(format_bucket(minute))),
        ]);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("ADD #used :n SET expiresAt = :ttl")
            .condition_expression("attribute_not_exists(#used) OR #used <= :room")
            .expression_attribute_names("#used", "used")
            .expression_attribute_values(":n", AttributeValue::N(events.to_string()))
            .expression_attribute_values(
                ":room",
                AttributeValue::N((self.per_slice - events).to_string()),
            )
            .expression_attribute_values(
                ":ttl",
                AttributeValue::N((minute.timestamp() + 120).to_string()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(super::store_error(&e)),
        }
    }
}

/// Seconds from `now` to the next minute (at least 1).
pub fn seconds_to_next_minute(now: DateTime<Utc>) -> u32 {
    let start = Granularity::Minute.bucket_start(now);
    let left = (start + chrono::Duration::minutes(1) - now).num_seconds();
    left.clamp(1, 60) as u32
}

impl RateLimiter for DynamoRateLimiter {
    async fn acquire(
        &self,
        user_id: &str,
        events: u64,
        now: DateTime<Utc>,
    ) -> Result<RateDecision, StoreError> {
        let limited = RateDecision::Limited {
            retry_after_secs: seconds_to_next_minute(now),
        };
        if events > self.per_slice.min(self.per_minute) {
            return Ok(limited);
        }
        let minute = Granularity::Minute.bucket_start(now);
        let first = fastrand::u64(0..self.slices);
        if self.take(user_id, first, events, minute).await? {
            return Ok(RateDecision::Allowed);
        }
        if self.slices > 1 {
            let second = (first + fastrand::u64(1..self.slices)) % self.slices;
            if self.take(user_id, second, events, minute).await? {
                return Ok(RateDecision::Allowed);
            }
        }
        Ok(limited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_points_at_the_next_minute() {
        let t = |s: &str| crate::time::parse(s).unwrap();
        assert_eq!(seconds_to_next_minute(t("2026-11-26T13:44:16Z")), 44);
        assert_eq!(seconds_to_next_minute(t("2026-11-26T13:44:59.900Z")), 1);
        assert_eq!(seconds_to_next_minute(t("2026-11-26T13:44:00Z")), 60);
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
