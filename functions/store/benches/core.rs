//! store core on 100 and 1,000 Kinesis records: decode → items → calls of 25 unique keys,
//! beside the floor of parsing each record's data into a `serde_json::Value`.

// store links its allocator (see `store`'s docs): the one the Lambda binary ships with.
use store as _;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use telemetry_shared::aws::event_table::{plan_calls, to_item};
use telemetry_shared::record;

fn store(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    for n in [100, 1000] {
        let event = telemetry_shared::sample::kinesis_event(n, 1024);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("floor_value_parse", n), &event, |b, e| {
            b.iter(|| {
                for r in &e.records {
                    black_box(
                        serde_json::from_slice::<serde_json::Value>(&r.kinesis.data).unwrap(),
                    );
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("core", n), &event, |b, e| {
            b.iter(|| {
                let events: Vec<_> = e
                    .records
                    .iter()
                    .filter_map(|r| record::decode(&r.kinesis.data).ok())
                    .collect();
                let items: Vec<_> = events.iter().map(|ev| to_item(ev, Some(86_400))).collect();
                let keys: Vec<(&str, &str)> = events
                    .iter()
                    .map(|ev| (ev.user_id.as_ref(), ev.id.as_ref()))
                    .collect();
                black_box((items, plan_calls(&keys)))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
