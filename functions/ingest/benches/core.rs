//! ingest core on a 100-event batch of ~1 KiB events — body → verified token → parsed and
//! validated → enriched → Kinesis records — beside its floor: parsing the same body into a
//! `serde_json::Value`. Target: the core costs no more than the floor.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::hint::black_box;
use telemetry_shared::auth::{AuthConfig, IssuerConfig, VerificationKey, Verifier};
use telemetry_shared::batch::{self, Enrichment};

const RSA_PRIVATE: &str = include_str!("../../../tests/fixtures/test-only-rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../../../tests/fixtures/test-only-rsa-public.pem");

fn ingest(c: &mut Criterion) {
    let body = telemetry_shared::sample::request_body(100, 1024);
    let verifier = Verifier::new(&AuthConfig::one(IssuerConfig::new(
        vec![Algorithm::RS256],
        VerificationKey::PublicKeyPem(RSA_PUBLIC.into()),
        "bench",
        "telemetry",
    )))
    .unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({"sub": "bench-user", "iss": "bench", "aud": "telemetry", "exp": now + 86_400, "scope": "events:write"});
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();

    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("floor_value_parse", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(body.as_bytes())).unwrap())
    });
    group.bench_function("core", |b| {
        b.iter(|| {
            let principal = verifier.verify(black_box(&token)).unwrap();
            let text = std::str::from_utf8(black_box(body.as_bytes())).unwrap();
            let who = Enrichment {
                user_id: &principal.sub,
                received_at: chrono::Utc::now(),
                idempotency_key: None,
            };
            let prepared = batch::prepare(text, &who).unwrap();
            assert_eq!(prepared.records.len(), 100);
            prepared
        })
    });
    // The parts, to see where the time goes.
    group.bench_function("part_verify_token", |b| {
        b.iter(|| verifier.verify(black_box(&token)).unwrap())
    });
    group.bench_function("part_split_body", |b| {
        b.iter(|| batch::split(black_box(&body)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
