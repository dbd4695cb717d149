//! JWT verification and scopes ([`AuthConfig`], [`Verifier`], [`Principal`]: what the original
//! service called its `AuthToken`).
//!
//! Tokens are verified with `jsonwebtoken` (aws-lc-rs backend) against the configured keys:
//! an RSA/EC public key in PEM, the keys of a JWKS URL (fetched at cold start, cached, fetched
//! again on an unknown `kid` at most once a minute), or an HS* shared secret (local and dev, or
//! from Secrets Manager). `exp`, `iss`, `aud` and `sub` are required, `nbf` is checked, with
//! 60 s of leeway; `alg: none` cannot even be named. A failed check is one
//! [`AuthError::Unauthorized`]: callers learn nothing about which check failed. The token itself
//! is never logged; the key id may be.

use std::fmt;
use std::sync::RwLock;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Secret};
use crate::event::is_valid_user_id;
use crate::jwks::Jwks;

/// Leeway for `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;
/// Least time between two fetches of a JWKS (an unknown `kid` cannot make us fetch more often).
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `events:write`: send events.
    EventsWrite,
    /// `events:read`: read one's own events back.
    EventsRead,
    /// `counts:read`: read counts.
    CountsRead,
    /// `admin`: manage routes, read any user's events; implies the read scopes.
    Admin,
}

impl Scope {
    /// The scope as written in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventsWrite => "events:write",
            Self::EventsRead => "events:read",
            Self::CountsRead => "counts:read",
            Self::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::EventsWrite,
            Self::EventsRead,
            Self::CountsRead,
            Self::Admin,
        ]
        .into_iter()
        .find(|scope| scope.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The verified caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`: the user id events are stored under.
    pub sub: String,
    scopes: u8,
}

impl Principal {
    /// A principal with the given scopes (for tests and the local stack).
    pub fn new(sub: impl Into<String>, scopes: &[Scope]) -> Self {
        Self {
            sub: sub.into(),
            scopes: scopes.iter().fold(0, |acc, s| acc | s.bit()),
        }
    }

    /// Whether the token grants `scope` (`admin` grants the read scopes too, not `events:write`,
    /// so an admin token is never mistaken for a client's).
    pub fn has(&self, scope: Scope) -> bool {
        let admin_implies = matches!(scope, Scope::EventsRead | Scope::CountsRead)
            && self.scopes & Scope::Admin.bit() != 0;
        self.scopes & scope.bit() != 0 || admin_implies
    }

    /// `Ok` when the token grants `scope`, else [`AuthError::Forbidden`].
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(scope))
        }
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("sub", &self.sub)
            .field("scopes", &format_args!("{:04b}", self.scopes))
            .finish()
    }
}

/// Why a request is not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable bearer token: missing, malformed, bad signature, expired, wrong issuer or
    /// audience, algorithm not allowed, unusable `sub` (HTTP 401, deliberately vague).
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A valid token without the scope the operation needs (HTTP 403).
    #[error("token lacks scope `{}`", .0.as_str())]
    Forbidden(Scope),
}

/// The key tokens are verified with.
#[derive(Clone)]
pub enum VerificationKey {
    /// HS256/384/512 shared secret.
    Secret(Secret),
    /// RSA or EC public key, PEM.
    PublicKeyPem(String),
    /// A Secrets Manager secret holding the HS* secret: resolved at cold start by
    /// [`crate::aws::secrets::resolve`] before a [`Verifier`] is built.
    SecretArn(String),
    /// A JWKS document's URL (e.g. an identity provider's `/.well-known/jwks.json`).
    JwksUrl(String),
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(s) => f.debug_tuple("Secret").field(s).finish(),
            Self::PublicKeyPem(_) => f.write_str("PublicKeyPem(..)"),
            Self::SecretArn(arn) => f.debug_tuple("SecretArn").field(arn).finish(),
            Self::JwksUrl(url) => f.debug_tuple("JwksUrl").field(url).finish(),
        }
    }
}

/// Auth settings, read from `JWT_ALGORITHMS`, one of `JWT_PUBLIC_KEY` / `JWT_JWKS_URL` /
/// `JWT_SECRET_ARN` / `JWT_SECRET` (local and dev only), `JWT_ISSUER`, `JWT_AUDIENCE`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Accepted `alg` values.
    pub algorithms: Vec<Algorithm>,
    /// The verification key.
    pub key: VerificationKey,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Longest lifetime a token may have, `exp` − `iat` (`JWT_MAX_TTL`, seconds; unset: any).
    pub max_ttl_secs: Option<u64>,
}

impl AuthConfig {
    /// Reads the auth settings through `env` (see [`crate::config::Env`]).
    pub fn from_env(env: &crate::config::Env) -> Result<Self, ConfigError> {
        let algorithms_raw = env.required("JWT_ALGORITHMS")?;
        let algorithms = parse_algorithms(&algorithms_raw)
            .map_err(|reason| ConfigError::invalid("JWT_ALGORITHMS", reason))?;
        let keys = [
            env.optional("JWT_PUBLIC_KEY")
                .map(VerificationKey::PublicKeyPem),
            env.optional("JWT_JWKS_URL").map(VerificationKey::JwksUrl),
            env.optional("JWT_SECRET_ARN")
                .map(VerificationKey::SecretArn),
            env.optional("JWT_SECRET")
                .map(|s| VerificationKey::Secret(Secret::new(s))),
        ];
        let mut keys = keys.into_iter().flatten();
        let key = match (keys.next(), keys.next()) {
            (Some(key), None) => key,
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "JWT_PUBLIC_KEY",
                    "set only one of JWT_PUBLIC_KEY, JWT_JWKS_URL, JWT_SECRET_ARN and JWT_SECRET",
                ));
            }
            (None, _) => {
                return Err(ConfigError::invalid(
                    "JWT_PUBLIC_KEY",
                    "no verification key: set one of JWT_PUBLIC_KEY, JWT_JWKS_URL, JWT_SECRET_ARN, JWT_SECRET",
                ));
            }
        };
        let config = Self {
            algorithms,
            key,
            issuer: env.required("JWT_ISSUER")?,
            audience: env.required("JWT_AUDIENCE")?,
            max_ttl_secs: match env.parsed_or::<u64>("JWT_MAX_TTL", 0)? {
                0 => None,
                secs => Some(secs),
            },
        };
        config.check_key_fits_algorithms()?;
        Ok(config)
    }

    /// The one rule tying keys to algorithms: a shared secret verifies HS* only, and a public
    /// key or a JWKS never verifies HS* (anyone holding the public key could sign). The
    /// template's `Rules` say the same (tests/tests/template.rs compares them).
    pub fn check_key_fits_algorithms(&self) -> Result<(), ConfigError> {
        let secret = matches!(
            self.key,
            VerificationKey::Secret(_) | VerificationKey::SecretArn(_)
        );
        if secret && !self.algorithms.iter().all(is_hmac) {
            return Err(ConfigError::invalid(
                "JWT_ALGORITHMS",
                "a shared secret (JWT_SECRET, JWT_SECRET_ARN) only goes with HS256/HS384/HS512",
            ));
        }
        if !secret && self.algorithms.iter().any(is_hmac) {
            return Err(ConfigError::invalid(
                "JWT_ALGORITHMS",
                "HS* algorithms need a shared secret (JWT_SECRET_ARN), not a public key or a JWKS",
            ));
        }
        Ok(())
    }
}

fn parse_algorithms(raw: &str) -> Result<Vec<Algorithm>, String> {
    let mut out = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let alg = match name {
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            other => return Err(format!("unsupported algorithm `{other}`")),
        };
        out.push(alg);
    }
    if out.is_empty() {
        return Err("name at least one algorithm, e.g. RS256".into());
    }
    Ok(out)
}

/// Verifies bearer tokens. Built once at cold start.
pub struct Verifier {
    keys: Keys,
    /// One per algorithm family configured.
    validations: Vec<Validation>,
    max_ttl_secs: Option<u64>,
}

enum Keys {
    Static(DecodingKey),
    Jwks(Jwks),
}

/// Why verification failed, inside this module.
enum Refusal {
    /// The token names a key we do not hold (yet).
    UnknownKey,
    Invalid,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "algorithms",
                &self
                    .validations
                    .iter()
                    .flat_map(|v| v.algorithms.iter())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// A string: an array `iss` (which jsonwebtoken would match element-wise) is refused.
    #[allow(dead_code)]
    iss: String,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<ScpClaim>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScpClaim {
    Spaced(String),
    List(Vec<String>),
}

impl Verifier {
    /// Builds a verifier for any key; a JWKS is fetched here, once (cold start).
    pub async fn connect(config: &AuthConfig) -> Result<Self, ConfigError> {
        let VerificationKey::JwksUrl(url) = &config.key else {
            return Self::new(config);
        };
        if !(url.starts_with("https://")
            || url.starts_with("http://127.0.0.1")
            || url.starts_with("http://localhost"))
        {
            return Err(ConfigError::invalid(
                "JWT_JWKS_URL",
                "must be an https:// URL",
            ));
        }
        config.check_key_fits_algorithms()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| ConfigError::invalid("JWT_JWKS_URL", e.to_string()))?;
        let keys = Jwks::fetch(url, &http)
            .await
            .map_err(|e| ConfigError::invalid("JWT_JWKS_URL", e))?;
        Ok(Self {
            keys: Keys::Jwks(Jwks {
                url: url.clone(),
                refetch_interval: JWKS_REFETCH_INTERVAL,
                http,
                keys: RwLock::new(keys),
                fetched: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            }),
            validations: validations(config),
            max_ttl_secs: config.max_ttl_secs,
        })
    }

    /// Builds a verifier for a static key; fails when the key does not fit the algorithms.
    pub fn new(config: &AuthConfig) -> Result<Self, ConfigError> {
        config.check_key_fits_algorithms()?;
        let key = match &config.key {
            VerificationKey::Secret(secret) => {
                if secret.expose().len() < 32 {
                    return Err(ConfigError::invalid(
                        "JWT_SECRET",
                        "must be at least 32 bytes",
                    ));
                }
                DecodingKey::from_secret(secret.expose().as_bytes())
            }
            VerificationKey::SecretArn(_) => {
                return Err(ConfigError::invalid(
                    "JWT_SECRET_ARN",
                    "the secret must be read from Secrets Manager before verifying tokens",
                ));
            }
            VerificationKey::JwksUrl(_) => {
                return Err(ConfigError::invalid(
                    "JWT_JWKS_URL",
                    "a JWKS is fetched by Verifier::connect",
                ));
            }
            VerificationKey::PublicKeyPem(pem) => {
                let pem = pem.as_bytes();
                let (key, kind, fits) = match DecodingKey::from_rsa_pem(pem) {
                    Ok(key) => (key, "an RSA key verifies RS*/PS*", 1),
                    Err(_) => (
                        DecodingKey::from_ec_pem(pem).map_err(|_| {
                            ConfigError::invalid(
                                "JWT_PUBLIC_KEY",
                                "not an RSA or EC public key in PEM",
                            )
                        })?,
                        "an EC key verifies ES*",
                        2,
                    ),
                };
                // Every token of another family would be refused: say so now, not at the
                // first request.
                if let Some(other) = config.algorithms.iter().find(|a| family(**a) != fits) {
                    return Err(ConfigError::invalid(
                        "JWT_ALGORITHMS",
                        format!("{other:?} cannot be verified with JWT_PUBLIC_KEY: {kind} only"),
                    ));
                }
                key
            }
        };
        Ok(Self {
            keys: Keys::Static(key),
            validations: validations(config),
            max_ttl_secs: config.max_ttl_secs,
        })
    }

    /// Changes how often an unknown `kid` may trigger a JWKS fetch (tests; the default is
    /// [`JWKS_REFETCH_INTERVAL`]).
    pub fn set_jwks_refetch_interval(&mut self, interval: Duration) {
        if let Keys::Jwks(jwks) = &mut self.keys {
            jwks.refetch_interval = interval;
        }
    }

    /// Verifies a compact JWT against the keys at hand and returns the caller.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.check(token).map_err(|_| AuthError::Unauthorized)
    }

    fn check(&self, token: &str) -> Result<Principal, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Invalid)?;
        // RFC 7515 §4.1.11: a `crit` header names extensions the verifier must understand, or
        // refuse the token; this one understands none.
        if header.crit.is_some() {
            return Err(Refusal::Invalid);
        }
        // The validation of the token's algorithm family (jsonwebtoken checks one family at a
        // time); an algorithm not configured has none.
        let validation = self
            .validations
            .iter()
            .find(|v| v.algorithms.contains(&header.alg))
            .ok_or(Refusal::Invalid)?;
        let decoded = match &self.keys {
            Keys::Static(key) => jsonwebtoken::decode::<Claims>(token, key, validation),
            Keys::Jwks(jwks) => {
                let kid = header.kid.ok_or(Refusal::Invalid)?;
                let keys = jwks.keys.read().map_err(|_| Refusal::Invalid)?;
                let entry = keys.get(&kid).ok_or(Refusal::UnknownKey)?;
                // A key that declares its algorithm verifies only tokens of that algorithm.
                if entry.alg.is_some_and(|alg| alg != header.alg) {
                    return Err(Refusal::Invalid);
                }
                tracing::debug!(kid = %kid, "verifying with a JWKS key");
                jsonwebtoken::decode::<Claims>(token, &entry.key, validation)
            }
        };
        let data = decoded.map_err(|e| {
            tracing::debug!(reason = ?e.kind(), "token refused");
            Refusal::Invalid
        })?;
        let claims = data.claims;
        if !is_valid_user_id(&claims.sub) {
            return Err(Refusal::Invalid);
        }
        if let Some(max) = self.max_ttl_secs {
            let issued = claims
                .iat
                .unwrap_or_else(jsonwebtoken::get_current_timestamp);
            if claims.exp.saturating_sub(issued) > max + LEEWAY_SECS {
                return Err(Refusal::Invalid);
            }
        }
        let mut scopes = 0u8;
        let mut grant = |s: &str| {
            if let Some(scope) = Scope::parse(s) {
                scopes |= scope.bit();
            }
        };
        claims
            .scope
            .iter()
            .flat_map(|s| s.split(' '))
            .for_each(&mut grant);
        match &claims.scp {
            Some(ScpClaim::Spaced(s)) => s.split(' ').for_each(&mut grant),
            Some(ScpClaim::List(list)) => list.iter().for_each(|s| grant(s)),
            None => {}
        }
        Ok(Principal {
            sub: claims.sub,
            scopes,
        })
    }

    /// Verifies the `Authorization: Bearer <token>` header value. A token signed by a key the
    /// JWKS did not hold (a rotation) makes it fetch the JWKS again, at most once a minute.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let token = authorization
            .and_then(|h| {
                let (scheme, token) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Unauthorized)?;
        match self.check(token) {
            Ok(p) => Ok(p),
            Err(Refusal::UnknownKey) => {
                if let Keys::Jwks(jwks) = &self.keys {
                    jwks.refresh().await;
                }
                self.verify(token)
            }
            Err(Refusal::Invalid) => Err(AuthError::Unauthorized),
        }
    }
}

fn is_hmac(a: &Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The family of an algorithm: jsonwebtoken validates one family at a time.
fn family(a: Algorithm) -> u8 {
    match a {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => 0,
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => 1,
        Algorithm::ES256 | Algorithm::ES384 => 2,
        // EdDSA, and whatever jsonwebtoken adds: a family of its own each.
        _ => 3,
    }
}

/// One validation per algorithm family of the configuration (`RS256,ES256` needs two).
fn validations(config: &AuthConfig) -> Vec<Validation> {
    let mut out: Vec<Validation> = Vec::new();
    for &alg in &config.algorithms {
        match out
            .iter_mut()
            .find(|v| family(v.algorithms[0]) == family(alg))
        {
            Some(v) => v.algorithms.push(alg),
            None => out.push(validation(config, alg)),
        }
    }
    out
}

fn validation(config: &AuthConfig, alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&[&config.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation
}

/// Claims of a token minted by [`mint_hs256`].
#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    scope: &'a str,
}

/// Mints an HS256 token (the local stack's dev tokens and tests).
pub fn mint_hs256(
    secret: &Secret,
    issuer: &str,
    audience: &str,
    sub: &str,
    scope: &str,
    ttl_secs: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = MintClaims {
        sub,
        iss: issuer,
        aud: audience,
        iat: now,
        exp: now + ttl_secs,
        scope,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-only-secret-of-at-least-32-bytes!!";

    fn verifier() -> Verifier {
        Verifier::new(&AuthConfig {
            algorithms: vec![Algorithm::HS256],
            key: VerificationKey::Secret(Secret::new(SECRET.into())),
            issuer: "iss".into(),
            audience: "aud".into(),
            max_ttl_secs: None,
        })
        .unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[tokio::test]
    async fn minted_token_verifies_with_its_scopes() {
        let t = mint_hs256(
            &Secret::new(SECRET.into()),
            "iss",
            "aud",
            "u1",
            "events:write counts:read",
            60,
        )
        .unwrap();
        let p = verifier()
            .authenticate(Some(&format!("Bearer {t}")))
            .await
            .unwrap();
        assert_eq!(p.sub, "u1");
        assert!(p.has(Scope::EventsWrite));
        assert!(p.has(Scope::CountsRead));
        assert!(!p.has(Scope::EventsRead));
        assert_eq!(
            p.require(Scope::Admin),
            Err(AuthError::Forbidden(Scope::Admin))
        );
    }

    #[test]
    fn tokens_the_rfcs_say_to_refuse_are_refused() {
        let base = serde_json::json!({"sub": "u1", "iss": "iss", "aud": "aud", "exp": now() + 600});
        assert!(verifier().verify(&token(base.clone())).is_ok());
        // An array `iss`, even one holding the issuer.
        let mut array_iss = base.clone();
        array_iss["iss"] = serde_json::json!(["iss", "other"]);
        assert_eq!(
            verifier().verify(&token(array_iss)),
            Err(AuthError::Unauthorized)
        );
        // A `crit` header naming an extension nobody here understands (RFC 7515 §4.1.11).
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp-ext".into()]);
        let critical =
            jsonwebtoken::encode(&header, &base, &EncodingKey::from_secret(SECRET.as_bytes()))
                .unwrap();
        assert_eq!(verifier().verify(&critical), Err(AuthError::Unauthorized));
    }

    #[test]
    fn jwt_max_ttl_bounds_a_tokens_lifetime() {
        let env = |ttl: &str| {
            crate::config::Env::from_map([
                ("JWT_ALGORITHMS", "HS256"),
                ("JWT_SECRET", SECRET),
                ("JWT_ISSUER", "iss"),
                ("JWT_AUDIENCE", "aud"),
                ("JWT_MAX_TTL", ttl),
            ])
        };
        let bounded = Verifier::new(&AuthConfig::from_env(&env("3600")).unwrap()).unwrap();
        let lived = |secs: u64| {
            token(
                serde_json::json!({"sub": "u1", "iss": "iss", "aud": "aud", "iat": now(), "exp": now() + secs}),
            )
        };
        assert!(bounded.verify(&lived(3600)).is_ok());
        assert_eq!(
            bounded.verify(&lived(86_400 * 365)),
            Err(AuthError::Unauthorized)
        );
        // Off (0, the default): any lifetime.
        let unbounded = Verifier::new(&AuthConfig::from_env(&env("0")).unwrap()).unwrap();
        assert!(unbounded.verify(&lived(86_400 * 365)).is_ok());
    }

    #[test]
    fn a_public_key_refuses_algorithms_of_another_family_at_start() {
        let rsa_public = include_str!("../../tests/fixtures/test-only-rsa-public.pem");
        let err = Verifier::new(&AuthConfig {
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            key: VerificationKey::PublicKeyPem(rsa_public.into()),
            issuer: "iss".into(),
            audience: "aud".into(),
            max_ttl_secs: None,
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("JWT_ALGORITHMS") && err.contains("ES256"),
            "{err}"
        );
    }

    #[test]
    fn scp_claim_as_list_is_read() {
        let t = token(serde_json::json!({
            "sub": "u1", "iss": "iss", "aud": "aud", "exp": now() + 60, "scp": ["events:read"]
        }));
        assert!(verifier().verify(&t).unwrap().has(Scope::EventsRead));
    }

    #[test]
    fn required_claims_and_windows_are_enforced() {
        let base = serde_json::json!({"sub": "u1", "iss": "iss", "aud": "aud", "exp": now() + 600});
        let cases = [
            (
                "expired past leeway",
                serde_json::json!({"exp": now() - 120}),
            ),
            ("not yet valid", serde_json::json!({"nbf": now() + 600})),
            ("wrong issuer", serde_json::json!({"iss": "other"})),
            ("wrong audience", serde_json::json!({"aud": "other"})),
            ("unusable sub", serde_json::json!({"sub": "has space"})),
        ];
        for (what, patch) in cases {
            let mut claims = base.clone();
            for (k, v) in patch.as_object().unwrap() {
                claims[k] = v.clone();
            }
            assert_eq!(
                verifier().verify(&token(claims)),
                Err(AuthError::Unauthorized),
                "{what}"
            );
        }
        for missing in ["sub", "exp", "iss", "aud"] {
            let mut claims = base.clone();
            claims.as_object_mut().unwrap().remove(missing);
            assert_eq!(
                verifier().verify(&token(claims)),
                Err(AuthError::Unauthorized),
                "missing {missing}"
            );
        }
        // Inside the leeway is still fine.
        let mut claims = base.clone();
        claims["exp"] = (now() - 30).into();
        assert!(verifier().verify(&token(claims)).is_ok());
    }

    #[tokio::test]
    async fn header_must_be_bearer_with_a_token() {
        let v = verifier();
        for h in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Basic abc"),
        ] {
            assert_eq!(
                v.authenticate(h).await,
                Err(AuthError::Unauthorized),
                "{h:?}"
            );
        }
    }

    #[test]
    fn admin_implies_reads_but_not_writes() {
        let p = Principal::new("a", &[Scope::Admin]);
        assert!(p.has(Scope::EventsRead) && p.has(Scope::CountsRead));
        assert!(!p.has(Scope::EventsWrite));
    }

    #[test]
    fn secret_with_asymmetric_algorithms_is_a_config_error() {
        let err = Verifier::new(&AuthConfig {
            algorithms: vec![Algorithm::RS256],
            key: VerificationKey::Secret(Secret::new(SECRET.into())),
            issuer: "i".into(),
            audience: "a".into(),
            max_ttl_secs: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("JWT_ALGORITHMS"));
    }
}
