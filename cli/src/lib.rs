//! The `telemetry` command's library: the local stack (also used by the end-to-end tests),
//! dev credentials, and the HTTP client commands.

pub mod dev;
pub mod local;
pub mod send;
