//! `telemetry replay` re-drives what store gave up on — from on-failure records (a local folder
//! standing in for the S3 destination) or by time — idempotently.

use std::time::Duration;

use serde_json::json;
use telemetry_cli::local::resources::{ResourceNames, ensure_stream, ensure_tables};
use telemetry_cli::replay::{Range, ranges_from_failure_records, replay};
use telemetry_e2e::{emulator_url, scan_all, sdk_config_for, stream_records, unique_prefix};
use telemetry_shared::ports::EventSink;

#[tokio::test]
async fn failed_ranges_are_replayed_once_and_again_without_duplicates() {
    let sdk = sdk_config_for(&emulator_url()).await;
    let names = ResourceNames::with_prefix(&unique_prefix());
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    ensure_stream(&kinesis, &names.stream, 1).await.unwrap();
    ensure_tables(&aws_sdk_dynamodb::Client::new(&sdk), &names)
        .await
        .unwrap();

    // 30 events on the stream that store never wrote (it "gave up" on them).
    let event = telemetry_shared::sample::kinesis_event(30, 300);
    let records: Vec<_> = event
        .records
        .iter()
        .map(|r| telemetry_shared::record::EventRecord {
            partition_key: r.kinesis.partition_key.clone(),
            data: r.kinesis.data.to_vec(),
        })
        .collect();
    let sink = telemetry_shared::aws::kinesis::KinesisSink::new(
        kinesis.clone(),
        names.stream.clone(),
        Duration::from_secs(5),
    );
    sink.put_records(records).await.unwrap();
    let (shard, records) = stream_records(&kinesis, &names.stream).await.swap_remove(0);
    let seqs: Vec<String> = records
        .iter()
        .map(|r| r.sequence_number().to_string())
        .collect();
    assert_eq!(seqs.len(), 30);

    // The on-failure record Lambda writes for a batch it gave up on: records 10..=19.
    let dir = std::env::temp_dir().join(unique_prefix());
    std::fs::create_dir_all(&dir).unwrap();
    let failure = json!({
        "requestContext": {"requestId": "r-1", "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:telemetry-store", "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 11},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0", "timestamp": "2026-11-26T13:44:16.123Z",
        "KinesisBatchInfo": {"shardId": shard, "startSequenceNumber": seqs[10], "endSequenceNumber": seqs[19],
            "approximateArrivalOfFirstRecord": "2026-11-26T13:44:16Z", "approximateArrivalOfLastRecord": "2026-11-26T13:44:16Z",
            "batchSize": 10, "streamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/x"}
    });
    std::fs::write(dir.join("2026-11-26-failure.json"), failure.to_string()).unwrap();
    let ranges = ranges_from_failure_records(&dir).unwrap();
    assert_eq!(ranges.len(), 1);

    let store = store::from_config(
        &store::Config {
            table: names.events_table.clone(),
            ttl_days: None,
        },
        &sdk,
    );
    for _ in 0..2 {
        let report = replay(&kinesis, &names.stream, &ranges[0], |e, d| {
            let s = &store;
            async move { s.handle(&e, d).await }
        })
        .await
        .unwrap();
        assert_eq!((report.records, report.failed), (10, 0));
        let items = scan_all(&sdk, &names.events_table).await;
        assert_eq!(items.len(), 10, "exactly the failed range, once");
    }

    // By time: everything since a minute ago (all 30), still no duplicate.
    let by_time = Range::Time {
        from: chrono::Utc::now() - chrono::Duration::minutes(5),
        to: None,
    };
    let report = replay(&kinesis, &names.stream, &by_time, |e, d| {
        let s = &store;
        async move { s.handle(&e, d).await }
    })
    .await
    .unwrap();
    assert_eq!(report.records, 30);
    assert_eq!(scan_all(&sdk, &names.events_table).await.len(), 30);
    std::fs::remove_dir_all(&dir).ok();
}
