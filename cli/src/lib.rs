//! The `telemetry` command's library: the local stack (also used by the end-to-end tests),
//! dev credentials, and the HTTP client commands.

pub mod dev;
pub mod load;
pub mod local;
pub mod metrics;
pub mod replay;
pub mod send;

/// A sample client event of about `bytes` bytes with a unique id.
pub fn sample_event(i: usize, bytes: usize) -> serde_json::Value {
    let mut e = telemetry_shared::sample::client_event(i, bytes);
    e["id"] = format!("load-{}-{i}", std::process::id()).into();
    e["timestamp"] = chrono::Utc::now().to_rfc3339().into();
    e
}
