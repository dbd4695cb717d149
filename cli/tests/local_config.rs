//! `telemetry local` reads its settings as the functions do: a malformed one stops it, naming
//! the variable, before anything starts.

use std::process::Command;

#[test]
fn a_malformed_rate_limit_stops_the_local_stack_naming_the_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_telemetry"))
        .args(["local", "--port", "0"])
        .env("RATE_LIMIT_PER_USER", "lots")
        // Nothing listens here: the setting must be refused before any connection.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("the telemetry binary runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("RATE_LIMIT_PER_USER"), "{stderr}");
}

/// Each function reads its own settings with its own defaults; the stack only names resources.
#[test]
fn the_functions_read_their_settings_and_defaults_as_in_lambda() {
    use std::time::Duration;
    use telemetry_cli::local::{FunctionConfigs, LocalConfig};
    use telemetry_shared::auth::{AuthConfig, IssuerConfig, VerificationKey};
    use telemetry_shared::config::Env;
    let auth = AuthConfig::one(IssuerConfig::new(
        vec![jsonwebtoken::Algorithm::HS256],
        VerificationKey::Secret(telemetry_shared::config::Secret::new(
            "dev-only-test-secret".into(),
        )),
        "telemetry-local",
        "telemetry",
    ));
    let mut config = LocalConfig::new(auth);
    let defaults = FunctionConfigs::read(&config).unwrap();
    assert_eq!(defaults.forward.routes_refresh, Duration::from_secs(60));
    assert_eq!(defaults.ingest.retry_budget, Duration::from_secs(5));
    assert_eq!(defaults.ingest.rate_limit_per_user, None);
    assert_eq!(defaults.post_process.minute_ttl_days, 8);
    assert_eq!(defaults.ingest.stream, config.names.stream);
    assert_eq!(defaults.store.table, config.names.events_table);

    config.settings = Env::from_map([
        ("ROUTES_REFRESH_SECS", "7"),
        ("RATE_LIMIT_PER_USER", "100"),
        ("EVENT_TTL_DAYS", "30"),
        // A setting cannot rename the stack's resources.
        ("EVENTS_TABLE", "elsewhere"),
    ]);
    let set = FunctionConfigs::read(&config).unwrap();
    assert_eq!(set.forward.routes_refresh, Duration::from_secs(7));
    assert_eq!(set.ingest.rate_limit_per_user, Some(100));
    assert_eq!(set.store.ttl_days, Some(30));
    assert_eq!(set.store.table, config.names.events_table);

    config.settings = Env::from_map([("MINUTE_COUNTS_TTL_DAYS", "0")]);
    let err = FunctionConfigs::read(&config).unwrap_err();
    assert!(err.to_string().contains("MINUTE_COUNTS_TTL_DAYS"), "{err}");
}
