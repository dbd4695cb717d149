//! `telemetry load`: a load generator against any base URL (the local stack or a deployed API),
//! printing events/s and request latency percentiles. Requests answered 429 or 503 are retried
//! after their `Retry-After`, as a well-behaved client SDK would; the retries are counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

/// Settings of a load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the API.
    pub url: String,
    /// Bearer token with `events:write`.
    pub token: String,
    /// Events in all.
    pub events: usize,
    /// Events per request (1..=500).
    pub batch: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// Approximate size of each event in bytes.
    pub event_bytes: usize,
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Events acknowledged with 202.
    pub accepted: usize,
    /// Requests sent (without retries).
    pub requests: usize,
    /// Retries after 429/503 (or a transport error).
    pub retries: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Latency of each successful request (its last attempt).
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    /// The `p`-th percentile latency (0..=100).
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }

    /// Accepted events per second.
    pub fn events_per_second(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs the load.
pub async fn run(config: &LoadConfig) -> Result<LoadReport> {
    if !(1..=500).contains(&config.batch) {
        bail!("--batch must be 1..=500");
    }
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let requests = config.events.div_ceil(config.batch);
    let start = Instant::now();
    let workers = (0..config.concurrency.max(1)).map(|_| {
        let (client, next, config) = (client.clone(), Arc::clone(&next), config.clone());
        tokio::spawn(async move {
            let (mut accepted, mut retries, mut latencies) = (0usize, 0usize, Vec::new());
            loop {
                let r = next.fetch_add(1, Ordering::SeqCst);
                if r >= requests {
                    return Ok::<_, anyhow::Error>((accepted, retries, latencies));
                }
                let n = config.batch.min(config.events - r * config.batch);
                let events: Vec<_> = (0..n)
                    .map(|i| crate::sample_event(r * config.batch + i, config.event_bytes))
                    .collect();
                let body = json!({ "events": events }).to_string();
                loop {
                    let t0 = Instant::now();
                    let sent = client
                        .post(format!("{}/v1/events", config.url.trim_end_matches('/')))
                        .bearer_auth(&config.token)
                        .header("content-type", "application/json")
                        .header("idempotency-key", format!("load-{r}"))
                        .body(body.clone())
                        .send()
                        .await;
                    let wait = match sent {
                        Ok(resp) if resp.status().as_u16() == 202 => {
                            latencies.push(t0.elapsed());
                            accepted += n;
                            break;
                        }
                        Ok(resp) if matches!(resp.status().as_u16(), 429 | 503) => resp
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok())
                            .map(Duration::from_secs)
                            .unwrap_or(Duration::from_secs(1)),
                        Ok(resp) => {
                            let status = resp.status();
                            bail!(
                                "request {r} answered {status}: {}",
                                resp.text().await.unwrap_or_default()
                            )
                        }
                        Err(_) => Duration::from_millis(500),
                    };
                    retries += 1;
                    tokio::time::sleep(wait).await;
                }
            }
        })
    });
    let mut report = LoadReport {
        accepted: 0,
        requests,
        retries: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for worker in futures::future::join_all(workers).await {
        let (accepted, retries, latencies) = worker??;
        report.accepted += accepted;
        report.retries += retries;
        report.latencies.extend(latencies);
    }
    report.elapsed = start.elapsed();
    Ok(report)
}
