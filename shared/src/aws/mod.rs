//! AWS adapters of the [`crate::ports`], and the SDK set-up they share.
//!
//! Every client is built from one [`sdk_config`], which honours the standard
//! `AWS_ENDPOINT_URL` (the local emulator) and sets timeouts so no call hangs.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

pub mod count_table;
pub mod event_table;
pub mod kinesis;
pub mod rate_limit;
pub mod route_table;
pub mod secrets;
pub mod sqs;

/// Loads the SDK configuration from the environment (region, credentials, `AWS_ENDPOINT_URL`),
/// with timeouts: a dependency that hangs becomes a retryable error, not a stuck function.
pub async fn sdk_config() -> aws_config::SdkConfig {
    sdk_config_loader().load().await
}

/// The loader behind [`sdk_config`], for callers that set more (tests name the endpoint).
pub fn sdk_config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_attempt_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(20))
            .build(),
    )
}

/// Error codes that mean "slow down or try again", across Kinesis, DynamoDB and SQS.
const RETRYABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "LimitExceededException",
    "KMSThrottlingException",
    "InternalFailure",
    "InternalServerError",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestThrottled",
    "TransactionInProgressException",
    "KmsThrottled",
];

/// Whether an error code names a transient condition.
pub fn is_retryable_code(code: &str) -> bool {
    RETRYABLE_CODES.contains(&code)
}

/// Whether an SDK error may go away on retry: transport failures, timeouts, throttling, 5xx.
pub fn is_retryable<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::ConstructionFailure(_) => false,
        SdkError::ServiceError(se) => {
            se.raw().status().is_server_error() || se.err().code().is_some_and(is_retryable_code)
        }
        // Timeouts, dispatch (connection) failures, unparseable responses.
        _ => true,
    }
}

/// A one-line description of an SDK error with its causes, for logs and error values.
pub fn describe<E: std::error::Error + 'static>(err: &SdkError<E, HttpResponse>) -> String {
    DisplayErrorContext(err).to_string()
}

/// An SDK error as a [`crate::ports::StoreError`]: `Unavailable` when retrying may help.
pub fn store_error<E>(err: &SdkError<E, HttpResponse>) -> crate::ports::StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let reason = describe(err);
    if is_retryable(err) {
        crate::ports::StoreError::Unavailable(reason)
    } else {
        crate::ports::StoreError::Refused(reason)
    }
}
