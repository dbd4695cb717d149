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

use crate::config::{ConfigError, Env};

pub mod count_table;
pub mod event_table;
pub mod kinesis;
pub mod metric_table;
pub mod rate_limit;
pub mod route_table;
pub mod secrets;
pub mod sqs;

/// Loads the SDK configuration from the environment (region, credentials, `AWS_ENDPOINT_URL`,
/// [`TLS_TRUST_STORE`]), with timeouts: a dependency that hangs becomes a retryable error, not
/// a stuck function.
pub async fn sdk_config() -> Result<aws_config::SdkConfig, ConfigError> {
    let trust = TrustStore::from_env(&Env::process())?;
    Ok(loader(trust).load().await)
}

/// The loader behind [`sdk_config`] (trusting [`TrustStore::Amazon`]), for callers that set
/// more (tests name the endpoint).
pub fn sdk_config_loader() -> aws_config::ConfigLoader {
    loader(TrustStore::Amazon)
}

fn loader(trust: TrustStore) -> aws_config::ConfigLoader {
    let loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_attempt_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(20))
            .build(),
    );
    match trust {
        TrustStore::Amazon => loader.http_client(amazon_roots_https_client()),
        TrustStore::System => loader,
    }
}

/// The variable choosing the root certificates the AWS clients trust.
pub const TLS_TRUST_STORE: &str = "TLS_TRUST_STORE";

/// The root certificates the AWS clients trust (`TLS_TRUST_STORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustStore {
    /// `amazon` (the default): only Amazon Trust Services' roots, which every AWS service
    /// endpoint chains to. Compiled in: nothing to read at cold start, and no other CA can
    /// vouch for an AWS endpoint.
    Amazon,
    /// `system`: the operating system's store, as the SDK's default client loads it (on a
    /// cold start it reads and parses every certificate there: milliseconds). For endpoints
    /// outside AWS, e.g. through a TLS-inspecting proxy.
    System,
}

impl TrustStore {
    /// Reads [`TLS_TRUST_STORE`]: `amazon` (default) or `system`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.optional(TLS_TRUST_STORE).as_deref() {
            None | Some("amazon") => Ok(Self::Amazon),
            Some("system") => Ok(Self::System),
            Some(other) => Err(ConfigError::invalid(
                TLS_TRUST_STORE,
                format!("must be `amazon` or `system`, not `{other}`"),
            )),
        }
    }
}

/// Amazon Trust Services' root CAs (Amazon Root CA 1–4, and the Starfield Services Root
/// Certificate Authority – G2 that cross-signs them), as published at
/// <https://www.amazontrust.com/repository/>. SHA-256 fingerprints: 8ECDE688…98196E,
/// 1BA5B2AA…A46DB4, 18CE6CFE…6DB3A4, E35D2841…897092, 568D6905…3EDAB5.
const AMAZON_ROOT_CAS: &str = include_str!("amazon-root-cas.pem");

/// The SDK's default HTTPS client (rustls with aws-lc), trusting only [`AMAZON_ROOT_CAS`].
fn amazon_roots_https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls;
    let context = tls::TlsContext::builder()
        .with_trust_store(tls::TrustStore::empty().with_pem_certificate(AMAZON_ROOT_CAS))
        .build()
        .expect("a trust store of compiled-in certificates is valid");
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https()
}

/// The SDK retry setting of the calls that [`crate::retry::retry`] retries: one attempt each.
/// The SDK's standard mode would otherwise make up to 3 attempts per call of the loop (and keep
/// its own retry-quota bucket), so a throttled call could be sent several times over; with
/// this, the attempts made are the loop's alone (docs/RETRIES.md lists them).
pub fn attempt_once() -> aws_smithy_types::retry::RetryConfig {
    aws_smithy_types::retry::RetryConfig::disabled()
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

/// Every item of `table`, read strongly consistent, page by page (small tables only: routes,
/// metric definitions).
pub async fn scan_consistent(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<
    Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
    crate::ports::StoreError,
> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| store_error(&e))?;
        items.extend(out.items.unwrap_or_default());
        start = out.last_evaluated_key;
        if start.is_none() {
            return Ok(items);
        }
    }
}

/// A conditional write's outcome: `Ok(true)` written, `Ok(false)` refused by its condition
/// (`ConditionalCheckFailedException`), else the failure as a [`crate::ports::StoreError`].
pub fn conditional<T, E>(
    result: Result<T, SdkError<E, HttpResponse>>,
) -> Result<bool, crate::ports::StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error().and_then(|s| s.code())
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(e) => Err(store_error(&e)),
    }
}

/// An SDK error as a [`crate::ports::StoreError`]: `Unavailable` when retrying may help.
pub fn store_error<E>(err: &SdkError<E, HttpResponse>) -> crate::ports::StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let reason = describe(err);
    if is_retryable(err) {
        crate::ports::StoreError::Transient(reason)
    } else {
        crate::ports::StoreError::Permanent(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trust_store_is_amazon_unless_system_is_asked_for() {
        let read =
            |v: Option<&str>| TrustStore::from_env(&Env::from_map(v.map(|v| (TLS_TRUST_STORE, v))));
        assert_eq!(read(None), Ok(TrustStore::Amazon));
        assert_eq!(read(Some("amazon")), Ok(TrustStore::Amazon));
        assert_eq!(read(Some("system")), Ok(TrustStore::System));
        let e = read(Some("all")).unwrap_err();
        assert!(e.to_string().contains(TLS_TRUST_STORE), "{e}");
        // The five Amazon Trust Services roots are compiled in.
        assert_eq!(
            AMAZON_ROOT_CAS
                .matches("-----BEGIN CERTIFICATE-----")
                .count(),
            5
        );
    }
}
