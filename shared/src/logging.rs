//! Structured logs through `tracing`.
//!
//! In Lambda: one JSON object per line (CloudWatch Logs Insights can query the fields), level
//! from `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else `info`. Handlers log counts and ids,
//! never payloads or tokens.

use tracing_subscriber::EnvFilter;

fn filter() -> EnvFilter {
    let directive = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("AWS_LAMBDA_LOG_LEVEL").ok())
        .map(|level| level.to_ascii_lowercase())
        .unwrap_or_else(|| "info".into());
    EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// JSON logs for a Lambda function. Call once, in `main`.
pub fn init_lambda() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter())
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        // CloudWatch stamps every line itself.
        .without_time()
        .init();
}

/// Human-readable logs for the `telemetry` command.
pub fn init_cli() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}
