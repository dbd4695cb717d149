//! The `counts` DynamoDB table: partial counters, exactly once.
//!
//! Item: `pk = <environment>#<type or *>#<granularity>`, `sk = <bucket start>#<shard id>`,
//! `count` (N), `seq` (S, the last applied stream sequence number, zero-padded to 40 digits),
//! and for minute partials `expiresAt` (TTL). One conditional `UpdateItem` per counter per batch:
//! `attribute_not_exists(seq) OR seq < :first` adds the whole batch; when it fails (a replay or
//! an overlap), the item is re-read and only the records beyond its `seq` are added, conditioned
//! on that `seq` being unchanged.
//!
//! The same table keeps the first-seen markers of unique users ([`crate::users`]): `pk` the
//! marker's key (`seen#...`), `sk = seen`, `by`, and `expiresAt` for period markers. Their
//! counters are partial counters like the others (`<env>#<type or *>#users-<period>` and
//! `#new-day`), which never expire.
//!
//! And the admin-defined metrics' partials ([`crate::metric_def`]): `count`, `skipped`, `sum`,
//! `min`, `max` and `seq`, applied by a conditional `UpdateItem` from the partial's state —
//! remembered from this function's own last write (each shard has one writer), else assumed
//! new, else read strongly consistent after a refused condition. Each breakdown's registry is
//! the item `pk = metric#<id>#values`, `sk = values`, `vals` a string set.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use crate::count::{CounterUpdate, count_after};
use crate::metric_def::{self, Decimal, Figures, MetricUpdate, StoredPartial};
use crate::ports::{
    Admission, CountReader, CountStore, MarkerStore, MetricReader, MetricStore, StoreError,
};
use crate::users::Marker;

/// Attempts of the re-read-and-apply step before giving up (only concurrent writers to one
/// partial counter can make it fail twice, and each shard has one writer).
const MAX_CONFLICTS: usize = 5;

/// The `counts` table.
#[derive(Debug, Clone)]
pub struct CountTable {
    client: Client,
    table: String,
    minute_ttl_secs: i64,
    /// Metric partials' states as this function last wrote them: (pk, sk) → state.
    states: std::sync::Arc<std::sync::Mutex<HashMap<(String, String), PartialState>>>,
}

/// A metric partial's watermark and extremes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartialState {
    seq: String,
    min: Option<Decimal>,
    max: Option<Decimal>,
}

/// Metric partial states remembered at most (cleared when full).
const STATE_CACHE: usize = 100_000;

impl CountTable {
    /// The table `table`; minute partials expire `minute_ttl_days` after their bucket.
    pub fn new(client: Client, table: impl Into<String>, minute_ttl_days: u32) -> Self {
        Self {
            client,
            table: table.into(),
            minute_ttl_secs: i64::from(minute_ttl_days) * 86_400,
            states: Default::default(),
        }
    }

    fn key(update: &CounterUpdate, shard: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_string(), AttributeValue::S(update.id.pk.clone())),
            (
                "sk".to_string(),
                AttributeValue::S(format!("{}#{shard}", update.id.bucket)),
            ),
        ])
    }

    /// Adds `n` and moves the watermark to `last`, if the condition holds. `Ok(false)` when the
    /// condition failed.
    async fn add(
        &self,
        update: &CounterUpdate,
        shard: &str,
        n: u64,
        last: &str,
        condition: Condition<'_>,
    ) -> Result<bool, StoreError> {
        let mut expression = "ADD #count :n SET #seq = :last".to_string();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(update, shard)))
            .expression_attribute_names("#count", "count")
            .expression_attribute_names("#seq", "seq")
            .expression_attribute_values(":n", AttributeValue::N(n.to_string()))
            .expression_attribute_values(":last", AttributeValue::S(last.to_string()));
        if update.id.expires
            && let Some(start) = crate::time::parse(&update.id.bucket)
        {
            expression.push_str(", expiresAt = :ttl");
            request = request.expression_attribute_values(
                ":ttl",
                AttributeValue::N((start.timestamp() + self.minute_ttl_secs).to_string()),
            );
        }
        request = match condition {
            Condition::AllNew { first } => request
                .condition_expression("attribute_not_exists(#seq) OR #seq < :first")
                .expression_attribute_values(":first", AttributeValue::S(first.to_string())),
            Condition::Unchanged(Some(seen)) => request
                .condition_expression("#seq = :seen")
                .expression_attribute_values(":seen", AttributeValue::S(seen.to_string())),
            Condition::Unchanged(None) => {
                request.condition_expression("attribute_not_exists(#seq)")
            }
        };
        super::conditional(request.update_expression(expression).send().await)
    }

    async fn watermark(
        &self,
        update: &CounterUpdate,
        shard: &str,
    ) -> Result<Option<String>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(update, shard)))
            .consistent_read(true)
            .projection_expression("#seq")
            .expression_attribute_names("#seq", "seq")
            .send()
            .await
            .map_err(|e| super::store_error(&e))?;
        Ok(match out.item().and_then(|i| i.get("seq")) {
            Some(AttributeValue::S(s)) => Some(s.clone()),
            _ => None,
        })
    }
}

enum Condition<'a> {
    /// Every record of the update is beyond the watermark.
    AllNew { first: &'a str },
    /// The watermark is still what was read.
    Unchanged(Option<&'a str>),
}

#[async_trait::async_trait]
impl CountStore for CountTable {
    async fn apply(&self, shard: &str, update: &CounterUpdate) -> Result<u64, StoreError> {
        let all = update.seqs.len() as u64;
        if all == 0 {
            return Ok(0);
        }
        if self
            .add(
                update,
                shard,
                all,
                update.last(),
                Condition::AllNew {
                    first: update.first(),
                },
            )
            .await?
        {
            return Ok(all);
        }
        for _ in 0..MAX_CONFLICTS {
            let seen = self.watermark(update, shard).await?;
            let (n, last) = count_after(&update.seqs, seen.as_deref());
            let Some(last) = last else {
                return Ok(0); // everything was applied before: a replay
            };
            if self
                .add(
                    update,
                    shard,
                    n,
                    last,
                    Condition::Unchanged(seen.as_deref()),
                )
                .await?
            {
                return Ok(n);
            }
        }
        Err(StoreError::Transient(format!(
            "counter {} {} kept changing under us",
            update.id.pk, update.id.bucket
        )))
    }
}

/// The sort key of every first-seen marker (its partition key is the marker's own).
pub const MARKER_SORT_KEY: &str = "seen";

#[async_trait::async_trait]
impl MarkerStore for CountTable {
    /// One `PutItem` under `attribute_not_exists(pk)`; when the marker exists,
    /// `ReturnValuesOnConditionCheckFailure = ALL_OLD` returns its `by` with the refusal (a
    /// failed conditional write bills one write unit, like a successful one). Should an
    /// implementation not return the item, it is read strongly consistent.
    async fn first_seen(
        &self,
        marker: &Marker,
        by: &str,
        expires_at: Option<i64>,
    ) -> Result<String, StoreError> {
        let key = marker.key();
        let mut item = HashMap::from([
            ("pk".to_string(), AttributeValue::S(key.clone())),
            ("sk".to_string(), AttributeValue::S(MARKER_SORT_KEY.into())),
            ("by".to_string(), AttributeValue::S(by.to_string())),
        ]);
        if let Some(at) = expires_at {
            item.insert("expiresAt".into(), AttributeValue::N(at.to_string()));
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let held =
            |item: Option<&HashMap<String, AttributeValue>>| match item.and_then(|i| i.get("by")) {
                Some(AttributeValue::S(by)) => Some(by.clone()),
                _ => None,
            };
        match result {
            Ok(_) => Ok(by.to_string()),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(refusal)) => {
                    if let Some(by) = held(refusal.item()) {
                        return Ok(by);
                    }
                    let out = self
                        .client
                        .get_item()
                        .table_name(&self.table)
                        .key("pk", AttributeValue::S(key))
                        .key("sk", AttributeValue::S(MARKER_SORT_KEY.into()))
                        .consistent_read(true)
                        .send()
                        .await
                        .map_err(|e| super::store_error(&e))?;
                    held(out.item()).ok_or_else(|| {
                        StoreError::Transient(
                            "a marker refused its write but cannot be read".into(),
                        )
                    })
                }
                _ => Err(super::store_error(&e)),
            },
        }
    }
}

#[async_trait::async_trait]
impl CountReader for CountTable {
    async fn read_partials(
        &self,
        pk: &str,
        from_bucket: &str,
        to_bucket: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut partials = Vec::new();
        for item in self.items_in_buckets(pk, from_bucket, to_bucket).await? {
            let bucket = match item.get("sk") {
                Some(AttributeValue::S(sk)) => sk.split('#').next().unwrap_or_default().to_string(),
                _ => continue,
            };
            let count = match item.get("count") {
                Some(AttributeValue::N(n)) => n.parse::<u64>().unwrap_or(0),
                _ => 0,
            };
            partials.push((bucket, count));
        }
        Ok(partials)
    }
}

impl CountTable {
    /// Every item of `pk` whose sort key starts with a bucket in `from_bucket..=to_bucket`
    /// (`<bucket>#<shard>`, or `<bucket>#<value>#<shard>`), page by page.
    async fn items_in_buckets(
        &self,
        pk: &str,
        from_bucket: &str,
        to_bucket: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_string()))
                .expression_attribute_values(":from", AttributeValue::S(from_bucket.to_string()))
                // '$' follows '#': every sort key of `to_bucket`, whatever follows its '#'.
                .expression_attribute_values(":to", AttributeValue::S(format!("{to_bucket}$")))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| super::store_error(&e))?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }
}

/// The sort key of a metric's registry item.
pub const REGISTRY_SORT_KEY: &str = "values";

impl CountTable {
    /// A metric partial's state, read strongly consistent (`None`: no such partial).
    async fn metric_state(&self, pk: &str, sk: &str) -> Result<Option<PartialState>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.to_string()))
            .key("sk", AttributeValue::S(sk.to_string()))
            .consistent_read(true)
            .projection_expression("#seq, #min, #max")
            .expression_attribute_names("#seq", "seq")
            .expression_attribute_names("#min", "min")
            .expression_attribute_names("#max", "max")
            .send()
            .await
            .map_err(|e| super::store_error(&e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let number = |k: &str| match item.get(k) {
            Some(AttributeValue::N(n)) => Decimal::parse_value(n),
            _ => None,
        };
        Ok(match item.get("seq") {
            Some(AttributeValue::S(seq)) => Some(PartialState {
                seq: seq.clone(),
                min: number("min"),
                max: number("max"),
            }),
            _ => None,
        })
    }

    /// Writes what `fresh` adds to a partial in state `seen`, conditioned on that state.
    /// `Ok(false)` when the condition failed.
    async fn write_metric(
        &self,
        update: &MetricUpdate,
        sk: &str,
        seen: Option<&PartialState>,
        fresh: &Figures,
        next: &PartialState,
    ) -> Result<bool, StoreError> {
        let mut set = vec!["#seq = :last"];
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(update.id.pk.clone()))
            .key("sk", AttributeValue::S(sk.to_string()))
            .expression_attribute_names("#seq", "seq")
            .expression_attribute_names("#count", "count")
            .expression_attribute_names("#skipped", "skipped")
            .expression_attribute_names("#sum", "sum")
            .expression_attribute_values(":last", AttributeValue::S(next.seq.clone()))
            .expression_attribute_values(":n", AttributeValue::N(fresh.count.to_string()))
            .expression_attribute_values(":k", AttributeValue::N(fresh.skipped.to_string()))
            .expression_attribute_values(":s", AttributeValue::N(fresh.sum.to_string()));
        for (name, value) in [("min", next.min), ("max", next.max)] {
            if let Some(v) = value {
                request = request
                    .expression_attribute_names(format!("#{name}"), name)
                    .expression_attribute_values(
                        format!(":{name}"),
                        AttributeValue::N(v.to_string()),
                    );
                set.push(if name == "min" {
                    "#min = :min"
                } else {
                    "#max = :max"
                });
            }
        }
        if update.id.expires
            && let Some(start) = crate::time::parse(&update.id.bucket)
        {
            set.push("expiresAt = :ttl");
            request = request.expression_attribute_values(
                ":ttl",
                AttributeValue::N((start.timestamp() + self.minute_ttl_secs).to_string()),
            );
        }
        request = match seen {
            Some(s) => request
                .condition_expression("#seq = :seen")
                .expression_attribute_values(":seen", AttributeValue::S(s.seq.clone())),
            None => request.condition_expression("attribute_not_exists(#seq)"),
        };
        let expression = format!("SET {} ADD #count :n, #skipped :k, #sum :s", set.join(", "));
        super::conditional(request.update_expression(expression).send().await)
    }
}

#[async_trait::async_trait]
impl MetricStore for CountTable {
    async fn apply_metric(&self, shard: &str, update: &MetricUpdate) -> Result<u64, StoreError> {
        let sk = format!("{}#{shard}", update.id.prefix);
        let key = (update.id.pk.clone(), sk.clone());
        // This function's own last write, else assume a new partial (the condition checks it).
        let mut seen = self
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        for _ in 0..MAX_CONFLICTS {
            let (fresh, last) =
                Figures::after(&update.entries, seen.as_ref().map(|s| s.seq.as_str()));
            let Some(last) = last else {
                return Ok(0); // all applied before: a replay
            };
            let extremes = Figures {
                min: seen.as_ref().and_then(|s| s.min),
                max: seen.as_ref().and_then(|s| s.max),
                ..Figures::default()
            }
            .plus(fresh);
            let next = PartialState {
                seq: last.to_string(),
                min: extremes.min,
                max: extremes.max,
            };
            if self
                .write_metric(update, &sk, seen.as_ref(), &fresh, &next)
                .await?
            {
                let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
                if states.len() >= STATE_CACHE {
                    states.clear();
                }
                states.insert(key, next);
                return Ok(fresh.count + fresh.skipped);
            }
            seen = self.metric_state(&update.id.pk, &sk).await?;
        }
        Err(StoreError::Transient(format!(
            "metric partial {} {sk} kept changing under us",
            update.id.pk
        )))
    }

    /// One `UpdateItem` adding the value to the registry's string set under
    /// `attribute_not_exists(vals) OR size(vals) < :max OR contains(vals, :v)`; the answer (new
    /// item, or the old one with the refusal) lists every admitted value.
    async fn admit(&self, id: &str, value: &str, max: usize) -> Result<Admission, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(metric_def::registry_key(id)))
            .key("sk", AttributeValue::S(REGISTRY_SORT_KEY.into()))
            .update_expression("ADD vals :set")
            .condition_expression(
                "attribute_not_exists(vals) OR size(vals) < :max OR contains(vals, :v)",
            )
            .expression_attribute_values(":set", AttributeValue::Ss(vec![value.to_string()]))
            .expression_attribute_values(":v", AttributeValue::S(value.to_string()))
            .expression_attribute_values(":max", AttributeValue::N(max.to_string()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let values = |item: Option<&HashMap<String, AttributeValue>>| match item
            .and_then(|i| i.get("vals"))
        {
            Some(AttributeValue::Ss(v)) => v.clone(),
            _ => Vec::new(),
        };
        match result {
            Ok(out) => Ok(Admission {
                admitted: true,
                values: values(out.attributes.as_ref()),
            }),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(refusal)) => Ok(Admission {
                    admitted: false,
                    values: values(refusal.item()),
                }),
                _ => Err(super::store_error(&e)),
            },
        }
    }
}

#[async_trait::async_trait]
impl MetricReader for CountTable {
    async fn read_metric(
        &self,
        pk: &str,
        from_bucket: &str,
        to_bucket: &str,
        breakdown: bool,
    ) -> Result<Vec<StoredPartial>, StoreError> {
        let mut partials = Vec::new();
        for item in self.items_in_buckets(pk, from_bucket, to_bucket).await? {
            let Some(AttributeValue::S(sk)) = item.get("sk") else {
                continue;
            };
            // `<bucket>#<shard>` or `<bucket>#<value>#<shard>` (shard ids hold no '#').
            let Some((bucket, rest)) = sk.split_once('#') else {
                continue;
            };
            let value = match (breakdown, rest.rsplit_once('#')) {
                (true, Some((value, _))) => Some(value.to_string()),
                (true, None) => continue,
                (false, _) => None,
            };
            let n = |k: &str| match item.get(k) {
                Some(AttributeValue::N(n)) => Some(n.clone()),
                _ => None,
            };
            partials.push(StoredPartial {
                bucket: bucket.to_string(),
                value,
                count: n("count").and_then(|c| c.parse().ok()).unwrap_or(0),
                skipped: n("skipped").and_then(|c| c.parse().ok()).unwrap_or(0),
                sum: n("sum"),
                min: n("min"),
                max: n("max"),
            });
        }
        Ok(partials)
    }
}
