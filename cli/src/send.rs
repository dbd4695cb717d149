//! `telemetry send`: sample events to any base URL.

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// `n` sample events of type `kind` (ids left to the server).
pub fn sample_events(n: usize, kind: &str) -> Value {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "type": kind,
                "origin": "telemetry-cli",
                "sessionId": "cli-session",
                "data": {"index": i, "level": i % 10, "score": i * 7}
            })
        })
        .collect();
    json!({ "events": events })
}

/// POSTs `body` to `<url>/v1/events` with `token`; returns the status and the JSON answer.
pub async fn post_events(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> Result<(u16, Value)> {
    let response = client
        .post(format!("{}/v1/events", url.trim_end_matches('/')))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}/v1/events"))?;
    let status = response.status().as_u16();
    let answer = response.json().await.unwrap_or(Value::Null);
    Ok((status, answer))
}
