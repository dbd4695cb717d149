//! `telemetry replay`: re-drives stream records that store or forward gave up on.
//!
//! What to re-drive is named by shard and sequence range — taken from the on-failure records
//! Lambda wrote to the S3 destination (`KinesisBatchInfo`: shard, first and last sequence
//! number; sync the bucket to a folder first, e.g. `aws s3 sync s3://BUCKET/PREFIX dir`), or
//! given directly — or by a time range. The records are read again from Kinesis (within its
//! retention) and handed to the same handler code the function runs, in batches of 100, so the
//! replay is exactly as idempotent as the function: store overwrites, forward delivers at least
//! once. Only the function that failed sees the records again (nothing is put back on the
//! stream, which would also re-feed the other consumers).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_lambda_events::kinesis::KinesisEvent;
use aws_lambda_events::streams::KinesisEventResponse;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::DateTime as AwsDateTime;
use aws_sdk_kinesis::types::{Record, ShardIteratorType};
use serde_json::Value;
use telemetry_shared::retry::Deadline;
use telemetry_shared::sequence;

use crate::local::kinesis_source::kinesis_event;

/// A stretch of one shard to re-drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Range {
    /// Sequence numbers `from..=to` (to the end of the shard when `to` is `None`).
    Sequence {
        /// Shard id.
        shard: String,
        /// First sequence number.
        from: String,
        /// Last sequence number.
        to: Option<String>,
    },
    /// Records that arrived in `from..=to` (to now when `to` is `None`), on every shard.
    Time {
        /// Start.
        from: chrono::DateTime<chrono::Utc>,
        /// End.
        to: Option<chrono::DateTime<chrono::Utc>>,
    },
}

/// Reads the ranges out of on-failure records (JSON files, as Lambda writes them to S3).
pub fn ranges_from_failure_records(dir: &Path) -> Result<Vec<Range>> {
    let mut ranges = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let record: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let info = &record["KinesisBatchInfo"];
        let (Some(shard), Some(from)) = (
            info["shardId"].as_str(),
            info["startSequenceNumber"].as_str(),
        ) else {
            bail!(
                "{} is not a Kinesis on-failure record (no KinesisBatchInfo)",
                path.display()
            );
        };
        ranges.push(Range::Sequence {
            shard: shard.to_string(),
            from: from.to_string(),
            to: info["endSequenceNumber"].as_str().map(str::to_string),
        });
    }
    Ok(ranges)
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records handed to the function.
    pub records: usize,
    /// Invocations of the function.
    pub batches: usize,
    /// Records the function still reported as failed after the retries.
    pub failed: usize,
}

/// Reads one range and feeds it to `function` in batches of up to 100 records. Failed records
/// are retried (the batch from the first failure) up to 5 times.
pub async fn replay<F, Fut>(
    client: &Client,
    stream: &str,
    range: &Range,
    function: F,
) -> Result<ReplayReport>
where
    F: Fn(KinesisEvent, Deadline) -> Fut,
    Fut: std::future::Future<Output = KinesisEventResponse>,
{
    let arn = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .with_context(|| format!("describing stream {stream}"))?
        .stream_description_summary()
        .map(|s| s.stream_arn().to_string())
        .unwrap_or_default();
    let shards: Vec<String> = match range {
        Range::Sequence { shard, .. } => vec![shard.clone()],
        Range::Time { .. } => client
            .list_shards()
            .stream_name(stream)
            .send()
            .await
            .context("listing shards")?
            .shards()
            .iter()
            .map(|s| s.shard_id().to_string())
            .collect(),
    };
    let mut report = ReplayReport::default();
    for shard in shards {
        let request = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(&shard);
        let request = match range {
            Range::Sequence { from, .. } => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(from),
            Range::Time { from, .. } => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(AwsDateTime::from_millis(from.timestamp_millis())),
        };
        let mut iterator = request
            .send()
            .await
            .context("getting a shard iterator")?
            .shard_iterator()
            .map(str::to_string);
        while let Some(current) = iterator.take() {
            let page = client
                .get_records()
                .shard_iterator(&current)
                .limit(100)
                .send()
                .await
                .context("reading records")?;
            let in_range: Vec<Record> = page
                .records()
                .iter()
                .filter(|r| inside(range, r))
                .cloned()
                .collect();
            let past_end = page.records().iter().any(|r| beyond(range, r));
            if !in_range.is_empty() {
                report.records += in_range.len();
                report.failed += feed(&function, in_range, &shard, &arn, &mut report.batches).await;
            }
            if past_end
                || page.records().is_empty() && page.millis_behind_latest().unwrap_or(0) == 0
            {
                break;
            }
            iterator = page.next_shard_iterator().map(str::to_string);
        }
    }
    Ok(report)
}

fn inside(range: &Range, r: &Record) -> bool {
    match range {
        Range::Sequence { to: Some(to), .. } => sequence::cmp(r.sequence_number(), to).is_le(),
        Range::Sequence { to: None, .. } => true,
        Range::Time { to, .. } => to.is_none_or(|to| arrival_ms(r) <= to.timestamp_millis()),
    }
}

fn beyond(range: &Range, r: &Record) -> bool {
    !inside(range, r)
}

fn arrival_ms(r: &Record) -> i64 {
    r.approximate_arrival_timestamp()
        .and_then(|t| t.to_millis().ok())
        .unwrap_or(i64::MAX)
}

/// Hands records to the function, retrying from the first failure; returns the records still
/// failing.
async fn feed<F, Fut>(
    function: &F,
    mut records: Vec<Record>,
    shard: &str,
    arn: &str,
    batches: &mut usize,
) -> usize
where
    F: Fn(KinesisEvent, Deadline) -> Fut,
    Fut: std::future::Future<Output = KinesisEventResponse>,
{
    for attempt in 0..5u32 {
        *batches += 1;
        let response = function(
            kinesis_event(&records, shard, arn),
            Deadline::after(Duration::from_secs(28)),
        )
        .await;
        let failed: Vec<String> = response
            .batch_item_failures
            .into_iter()
            .filter_map(|f| f.item_identifier)
            .collect();
        let Some(first) = failed.iter().min_by(|a, b| sequence::cmp(a, b)) else {
            return 0;
        };
        records.retain(|r| sequence::cmp(r.sequence_number(), first).is_ge());
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
    }
    records.len()
}
