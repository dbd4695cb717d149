//! Per-user rate limit: events per user per minute, shared by every ingest function through one
//! conditional `UpdateItem` per request (not per event) on the `counts` table.
//!
//! Item: `pk = rate#<userId>`, `sk = <minute start>`, `used` (N), `expiresAt` two minutes later.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use crate::count::{Granularity, format_bucket};
use crate::ports::{RateDecision, RateLimiter, StoreError};

/// The limiter on the `counts` table.
#[derive(Debug, Clone)]
pub struct DynamoRateLimiter {
    client: Client,
    table: String,
    per_minute: u64,
}

impl DynamoRateLimiter {
    /// `per_minute` events per user per minute, counted in `table`.
    pub fn new(client: Client, table: impl Into<String>, per_minute: u64) -> Self {
        Self {
            client,
            table: table.into(),
            per_minute,
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
        if events > self.per_minute {
            return Ok(RateDecision::Limited {
                retry_after_secs: seconds_to_next_minute(now),
            });
        }
        let minute = Granularity::Minute.bucket_start(now);
        let key = HashMap::from([
            (
                "pk".to_string(),
                AttributeValue::S(format!("rate#{user_id}")),
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
                AttributeValue::N((self.per_minute - events).to_string()),
            )
            .expression_attribute_values(
                ":ttl",
                AttributeValue::N((minute.timestamp() + 120).to_string()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(RateDecision::Allowed),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(RateDecision::Limited {
                    retry_after_secs: seconds_to_next_minute(now),
                })
            }
            Err(e) => Err(super::store_error(&e)),
        }
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
}
