//! Telemetry Services common crate.
//!
//! Everything the Lambda functions share: the [`event`] model and its validation, the ingest
//! request [`batch`] parser, JWT [`auth`], the Kinesis [`record`] codec, the DynamoDB
//! item mapping (in [`aws`]), typed [`config`], the I/O [`ports`] with their [`aws`] adapters, [`retry`] policy,
//! exact unique [`users`], admin-defined metrics ([`metric_def`]), [`metrics`] in CloudWatch Embedded Metric Format and [`logging`].
//!
//! Domain modules are plain synchronous Rust over plain types; only [`aws`] knows the SDK.

pub mod auth;
pub mod aws;
pub mod batch;
pub mod config;
pub mod count;
pub mod delivery;
pub mod event;
pub mod http;
pub mod json;
pub mod jwks;
pub mod logging;
pub mod metric_def;
pub mod metrics;
pub mod ports;
pub mod record;
pub mod retry;
pub mod route;
pub mod sample;
pub mod sequence;
pub mod time;
pub mod users;
