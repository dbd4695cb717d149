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
