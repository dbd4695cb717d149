//! Secrets read at cold start: the HS* JWT secret lives in Secrets Manager, never in an
//! environment variable (where it would be plaintext in the function's configuration).

use crate::auth::{AuthConfig, VerificationKey};
use crate::config::{ConfigError, Secret};

/// Replaces a [`VerificationKey::SecretArn`] by the secret it names; other keys pass through.
pub async fn resolve(
    mut auth: AuthConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<AuthConfig, ConfigError> {
    for issuer in &mut auth.issuers {
        let VerificationKey::SecretArn(arn) = &issuer.key else {
            continue;
        };
        let out = aws_sdk_secretsmanager::Client::new(sdk)
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| {
                ConfigError::invalid(
                    "JWT_SECRET_ARN",
                    format!("reading the secret failed: {}", super::describe(&e)),
                )
            })?;
        let secret = out
            .secret_string()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ConfigError::invalid("JWT_SECRET_ARN", "the secret has no string value")
            })?;
        issuer.key = VerificationKey::Secret(Secret::new(secret.to_string()));
    }
    Ok(auth)
}
