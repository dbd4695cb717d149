//! The HS* secret of a deployed stack is read from Secrets Manager at cold start.

use telemetry_e2e::{emulator_url, sdk_config_for, unique_prefix};
use telemetry_shared::auth::{AuthConfig, VerificationKey, Verifier};
use telemetry_shared::config::Env;

#[tokio::test]
async fn jwt_secret_arn_is_resolved_through_secrets_manager() {
    let sdk = sdk_config_for(&emulator_url()).await;
    let secret = "a-secret-that-lives-in-secrets-manager-only";
    let created = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(format!("{}-jwt", unique_prefix()))
        .secret_string(secret)
        .send()
        .await
        .unwrap();
    let arn = created.arn().unwrap().to_string();

    let env = Env::from_map([
        ("JWT_ALGORITHMS", "HS256"),
        ("JWT_SECRET_ARN", arn.as_str()),
        ("JWT_ISSUER", "iss"),
        ("JWT_AUDIENCE", "aud"),
    ]);
    let config = AuthConfig::from_env(&env).unwrap();
    assert!(matches!(
        config.issuers[0].key,
        VerificationKey::SecretArn(_)
    ));
    // Unresolved, it cannot verify anything.
    assert!(Verifier::new(&config).is_err());

    let resolved = telemetry_shared::aws::secrets::resolve(config, &sdk)
        .await
        .unwrap();
    let verifier = Verifier::new(&resolved).unwrap();
    let token = telemetry_shared::auth::mint_hs256(
        &telemetry_shared::config::Secret::new(secret.into()),
        "iss",
        "aud",
        "u1",
        "events:write",
        60,
    )
    .unwrap();
    assert_eq!(verifier.verify(&token).unwrap().sub, "u1");
    assert!(
        !format!("{resolved:?}").contains(secret),
        "Debug must not show the secret"
    );

    let mut missing = resolved;
    missing.issuers[0].key = VerificationKey::SecretArn(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope".into(),
    );
    let err = telemetry_shared::aws::secrets::resolve(missing, &sdk)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("JWT_SECRET_ARN"), "{err}");
}
