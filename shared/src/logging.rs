//! Structured logs through `tracing`.
//!
//! In Lambda: one JSON object per line (CloudWatch Logs Insights can query the fields). The
//! level comes from `AWS_LAMBDA_LOG_LEVEL` first (the function's log-level setting, as the
//! Lambda runtime reads it), else `RUST_LOG`, else `info`. Handlers log counts and ids, never
//! payloads or tokens.
//!
//! Other crates are capped at `info` whatever the level asked for: at `debug` and `trace`,
//! `lambda_runtime` logs each raw invocation (the `Authorization` header included) and the AWS
//! SDK logs request and response bodies (stored events). Only this workspace's own crates log
//! below `info`.

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// Crates of this workspace: the only ones allowed to log at `debug` and `trace`.
const OWN_CRATES: &[&str] = &[
    "telemetry_shared",
    "telemetry_cli",
    "telemetry",
    "telemetry_e2e",
    "ingest",
    "store",
    "forward",
    "post_process",
    "query",
];

/// The level directive the environment asks for.
fn directive(lambda_level: Option<String>, rust_log: Option<String>) -> String {
    lambda_level
        .or(rust_log)
        .map(|level| level.to_ascii_lowercase())
        .unwrap_or_else(|| "info".into())
}

fn env_filter() -> EnvFilter {
    let directive = directive(
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok(),
        std::env::var("RUST_LOG").ok(),
    );
    EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Whether `target` is one of this workspace's crates (or a module of one).
fn is_own(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    OWN_CRATES.contains(&krate)
}

/// The environment's level, with every other crate capped at `info` (see the module doc).
fn filter<S>() -> impl tracing_subscriber::layer::Filter<S> {
    let cap = filter_fn(|meta| is_own(meta.target()) || *meta.level() <= Level::INFO);
    env_filter().and(cap)
}

/// JSON logs for a Lambda function. Call once, in `main`.
pub fn init_lambda() {
    let layer = fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        // CloudWatch stamps every line itself.
        .without_time()
        .with_filter(filter());
    tracing_subscriber::registry().with(layer).init();
}

/// Human-readable logs for the `telemetry` command.
pub fn init_cli() {
    let layer = fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_filter(filter());
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_functions_log_level_setting_comes_first() {
        assert_eq!(
            directive(Some("DEBUG".into()), Some("trace".into())),
            "debug"
        );
        assert_eq!(directive(None, Some("warn".into())), "warn");
        assert_eq!(directive(None, None), "info");
    }

    #[test]
    fn only_this_workspaces_crates_count_as_its_own() {
        assert!(is_own("ingest"));
        assert!(is_own("telemetry_shared::aws::kinesis"));
        assert!(!is_own("lambda_runtime::layers"));
        assert!(!is_own("aws_smithy_runtime::client::orchestrator"));
        assert!(!is_own("ingestion_lib"));
    }
}
