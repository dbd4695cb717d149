//! forward core on 100 and 1,000 Kinesis records with 50 routes: decode → match → messages →
//! batches per queue, beside the floor of parsing each record's data into a `serde_json::Value`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use telemetry_shared::delivery::MAX_SQS_BYTES;
use telemetry_shared::route::{Route, RouteTable};

/// 50 routes: exact types, prefixes, suffixes, a catch-all; some FIFO.
fn routes() -> RouteTable {
    let patterns = [
        "game.*",
        "app.*",
        "*.error",
        "net.latency",
        "*",
        "game.purchase",
        "app.screen_*",
        "*.level_*",
        "other.*",
        "x.*",
    ];
    RouteTable::new(
        (0..50)
            .map(|i| Route {
                id: format!("route-{i}"),
                pattern: patterns[i % patterns.len()].to_string(),
                queue_url: format!(
                    "https://sqs.us-east-1.amazonaws.com/123456789012/telemetry-q{}{}",
                    i % 20,
                    if i % 3 == 0 { ".fifo" } else { "" }
                ),
                enabled: true,
                description: None,
            })
            .collect(),
    )
}

fn forward(c: &mut Criterion) {
    let table = routes();
    let mut group = c.benchmark_group("forward");
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
                let plan = forward::plan(black_box(e), &table);
                black_box(plan.batch_calls(MAX_SQS_BYTES))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
