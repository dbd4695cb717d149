//! post-process core on 1,000 stream records: the window event decoded as Lambda hands it over,
//! then aggregated into counter updates — beside the floor of decoding the event alone.

use aws_lambda_events::dynamodb::TimeWindowEvent;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn post_process(c: &mut Criterion) {
    let json = telemetry_shared::sample::window_event_json(1000);
    let mut group = c.benchmark_group("post-process");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("floor_decode_event/1000", |b| {
        b.iter(|| serde_json::from_str::<TimeWindowEvent>(black_box(&json)).unwrap())
    });
    group.bench_function("core/1000", |b| {
        b.iter(|| {
            let mut event = serde_json::from_str::<TimeWindowEvent>(black_box(&json)).unwrap();
            let aggregated = post_process::aggregate(&mut event.dynamo_db_event.records);
            assert_eq!(aggregated.counted, 1000);
            aggregated.updates.len()
        })
    });
    group.finish();
}

criterion_group!(benches, post_process);
criterion_main!(benches);
