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
    /// `events:write-as`: a service (a game server, client credentials) sends events on behalf
    /// of the users each event names in its `userId`; implies `events:write`.
    EventsWriteAs,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Self; 5] = [
        Self::EventsWrite,
        Self::EventsRead,
        Self::CountsRead,
        Self::Admin,
        Self::EventsWriteAs,
    ];

    /// The scope as written in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventsWrite => "events:write",
            Self::EventsRead => "events:read",
            Self::CountsRead => "counts:read",
            Self::Admin => "admin",
            Self::EventsWriteAs => "events:write-as",
        }
    }

    /// The scope named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The prefix of the user ids of events sent with a write key (`anon:<anonymousId>`): no token
/// may map to one, or any issuer's `sub=anon:X` could read X's history.
pub const ANONYMOUS_PREFIX: &str = "anon:";

/// The verified caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user events are stored under: the token's user claim (`sub` unless
    /// `JWT_USER_CLAIM` names another).
    pub sub: String,
    scopes: u8,
}

impl Principal {
    /// A principal with the given scopes (for tests and the local stack).
    pub fn new(sub: impl Into<String>, scopes: &[Scope]) -> Self {
        Self {
            sub: sub.into(),
            scopes: bits(scopes),
        }
    }

    /// Whether the token grants `scope` (`admin` grants the read scopes too, not `events:write`,
    /// so an admin token is never mistaken for a client's; `events:write-as` grants
    /// `events:write`).
    pub fn has(&self, scope: Scope) -> bool {
        let implied = match scope {
            Scope::EventsRead | Scope::CountsRead => Scope::Admin.bit(),
            Scope::EventsWrite => Scope::EventsWriteAs.bit(),
            _ => 0,
        };
        self.scopes & (scope.bit() | implied) != 0
    }

    /// `Ok` when the token grants `scope`, else [`AuthError::Forbidden`].
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(scope))
        }
    }

    /// The scopes granted, as written in tokens (implied ones not repeated).
    pub fn scopes(&self) -> Vec<Scope> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.scopes & s.bit() != 0)
            .collect()
    }
}

fn bits(scopes: &[Scope]) -> u8 {
    scopes.iter().fold(0, |acc, s| acc | s.bit())
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("sub", &self.sub)
            .field("scopes", &format_args!("{:05b}", self.scopes))
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
    /// OpenID Connect discovery: the JWKS named by
    /// `<issuer>/.well-known/openid-configuration` (when no key variable is set).
    Discovery,
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(s) => f.debug_tuple("Secret").field(s).finish(),
            Self::PublicKeyPem(_) => f.write_str("PublicKeyPem(..)"),
            Self::SecretArn(arn) => f.debug_tuple("SecretArn").field(arn).finish(),
            Self::JwksUrl(url) => f.debug_tuple("JwksUrl").field(url).finish(),
            Self::Discovery => f.write_str("Discovery"),
        }
    }
}

/// The trusted issuers and what applies to all of them. Read from the single-issuer variables
/// (`JWT_ISSUER`, `JWT_AUDIENCE`, one key variable or none for discovery, the claim mapping)
/// or from `JWT_ISSUERS`, a JSON list of the same settings per issuer; `JWT_MAX_TTL` and
/// `JWT_JWKS_MIN_REFRESH_SECS` apply to every issuer.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Who may sign tokens; a token is checked only against the issuer its `iss` names.
    pub issuers: Vec<IssuerConfig>,
    /// Longest lifetime a token may have, `exp` − `iat` (`JWT_MAX_TTL`, seconds; unset: any).
    pub max_ttl_secs: Option<u64>,
    /// Least time between two fetches of a JWKS (`JWT_JWKS_MIN_REFRESH_SECS`, default 60): an
    /// unknown `kid` cannot make the function fetch more often.
    pub jwks_min_refresh: Duration,
}

/// One trusted issuer: its keys and how its claims map to a user and scopes.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Required `iss`, exactly.
    pub issuer: String,
    /// Accepted `alg` values.
    pub algorithms: Vec<Algorithm>,
    /// The verification key.
    pub key: VerificationKey,
    /// Accepted audiences: a token's `aud` (string or array) must hold one; only a token
    /// without `aud` is matched by its `client_id` (API Gateway's JWT authorizer rule).
    pub audiences: Vec<String>,
    /// Scopes are read with this prefix stripped, and a scope without it is ignored
    /// (`JWT_SCOPE_PREFIX`, e.g. Cognito's `telemetry/`).
    pub scope_prefix: Option<String>,
    /// Granted to tokens that carry no scope claim at all — ID tokens (`JWT_DEFAULT_SCOPES`);
    /// never added to a token that carries `scope`, `scp` or `permissions`.
    pub default_scopes: Vec<Scope>,
    /// The claim that becomes the user id (`JWT_USER_CLAIM`, default `sub`).
    pub user_claim: String,
    /// When set, a token's `token_use` must equal it (`JWT_TOKEN_USE`, Cognito's `access` or
    /// `id`); a token without `token_use` is then refused.
    pub token_use: Option<String>,
}

impl IssuerConfig {
    /// An issuer with one audience and the default claim mapping (scopes from `scope`, `scp`,
    /// `permissions`, no prefix, no default scopes, the user from `sub`).
    pub fn new(
        algorithms: Vec<Algorithm>,
        key: VerificationKey,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            algorithms,
            key,
            audiences: vec![audience.into()],
            scope_prefix: None,
            default_scopes: Vec::new(),
            user_claim: DEFAULT_USER_CLAIM.into(),
            token_use: None,
        }
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
                "HS* algorithms need a shared secret (JWT_SECRET_ARN), not a public key, a JWKS or discovery",
            ));
        }
        Ok(())
    }
}

/// The user claim when `JWT_USER_CLAIM` is unset.
pub const DEFAULT_USER_CLAIM: &str = "sub";
/// Algorithms when `JWT_ALGORITHMS` is unset: what OpenID providers sign with by default.
pub const DEFAULT_ALGORITHMS: &str = "RS256";

/// One issuer of `JWT_ISSUERS`: the single-issuer variables' settings, camel-cased. Shared
/// secrets are not accepted here (they belong in Secrets Manager, through `JWT_SECRET_ARN`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IssuerEntry {
    issuer: String,
    audience: OneOrMany,
    #[serde(default)]
    algorithms: Option<String>,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default)]
    public_key: Option<String>,
    #[serde(default)]
    scope_prefix: Option<String>,
    #[serde(default)]
    default_scopes: Option<String>,
    #[serde(default)]
    user_claim: Option<String>,
    #[serde(default)]
    token_use: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The variables of one issuer, read either from the environment or from a `JWT_ISSUERS` entry.
struct IssuerVars {
    issuer: Option<String>,
    audience: Vec<String>,
    algorithms: Option<String>,
    keys: [Option<VerificationKey>; 4],
    scope_prefix: Option<String>,
    default_scopes: Option<String>,
    user_claim: Option<String>,
    token_use: Option<String>,
}

/// The single-issuer variables (all but `JWT_ISSUERS` and the shared ones).
const SINGLE_ISSUER_VARS: &[&str] = &[
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_ALGORITHMS",
    "JWT_PUBLIC_KEY",
    "JWT_JWKS_URL",
    "JWT_SECRET_ARN",
    "JWT_SECRET",
    "JWT_SCOPE_PREFIX",
    "JWT_DEFAULT_SCOPES",
    "JWT_USER_CLAIM",
    "JWT_TOKEN_USE",
];

fn list(raw: &str) -> Vec<String> {
    raw.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl IssuerVars {
    fn from_env(env: &crate::config::Env) -> Self {
        Self {
            issuer: env.optional("JWT_ISSUER"),
            audience: env
                .optional("JWT_AUDIENCE")
                .map(|a| list(&a))
                .unwrap_or_default(),
            algorithms: env.optional("JWT_ALGORITHMS"),
            keys: [
                env.optional("JWT_PUBLIC_KEY")
                    .map(VerificationKey::PublicKeyPem),
                env.optional("JWT_JWKS_URL").map(VerificationKey::JwksUrl),
                env.optional("JWT_SECRET_ARN")
                    .map(VerificationKey::SecretArn),
                env.optional("JWT_SECRET")
                    .map(|s| VerificationKey::Secret(Secret::new(s))),
            ],
            scope_prefix: env.optional("JWT_SCOPE_PREFIX"),
            default_scopes: env.optional("JWT_DEFAULT_SCOPES"),
            user_claim: env.optional("JWT_USER_CLAIM"),
            token_use: env.optional("JWT_TOKEN_USE"),
        }
    }

    fn from_entry(e: IssuerEntry) -> Self {
        let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        Self {
            issuer: nonempty(Some(e.issuer)),
            audience: match e.audience {
                OneOrMany::One(a) => list(&a),
                OneOrMany::Many(all) => all.iter().flat_map(|a| list(a)).collect(),
            },
            algorithms: nonempty(e.algorithms),
            keys: [
                nonempty(e.public_key).map(VerificationKey::PublicKeyPem),
                nonempty(e.jwks_url).map(VerificationKey::JwksUrl),
                None,
                None,
            ],
            scope_prefix: nonempty(e.scope_prefix),
            default_scopes: nonempty(e.default_scopes),
            user_claim: nonempty(e.user_claim),
            token_use: nonempty(e.token_use),
        }
    }

    /// The issuer's settings; `var` names the variable errors are reported against.
    fn build(self, var: fn(&'static str) -> &'static str) -> Result<IssuerConfig, ConfigError> {
        let issuer = self.issuer.ok_or(ConfigError::Missing(var("JWT_ISSUER")))?;
        if self.audience.is_empty() {
            return Err(ConfigError::Missing(var("JWT_AUDIENCE")));
        }
        let algorithms_raw = self.algorithms.as_deref().unwrap_or(DEFAULT_ALGORITHMS);
        let algorithms = parse_algorithms(algorithms_raw)
            .map_err(|reason| ConfigError::invalid(var("JWT_ALGORITHMS"), reason))?;
        let mut keys = self.keys.into_iter().flatten();
        let key = match (keys.next(), keys.next()) {
            (Some(key), None) => key,
            (None, _) => VerificationKey::Discovery,
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    var("JWT_PUBLIC_KEY"),
                    "set at most one of JWT_PUBLIC_KEY, JWT_JWKS_URL, JWT_SECRET_ARN and JWT_SECRET (none: OpenID discovery from JWT_ISSUER)",
                ));
            }
        };
        let default_scopes = match &self.default_scopes {
            None => Vec::new(),
            Some(raw) => list(raw)
                .iter()
                .map(|name| {
                    Scope::parse(name).ok_or_else(|| {
                        ConfigError::invalid(
                            var("JWT_DEFAULT_SCOPES"),
                            format!("`{name}` is not a scope"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        if default_scopes
            .iter()
            .any(|s| matches!(s, Scope::Admin | Scope::EventsWriteAs))
        {
            return Err(ConfigError::invalid(
                var("JWT_DEFAULT_SCOPES"),
                "admin and events:write-as are never granted by default",
            ));
        }
        let config = IssuerConfig {
            issuer,
            algorithms,
            key,
            audiences: self.audience,
            scope_prefix: self.scope_prefix,
            default_scopes,
            user_claim: self.user_claim.unwrap_or_else(|| DEFAULT_USER_CLAIM.into()),
            token_use: self.token_use,
        };
        config.check_key_fits_algorithms().map_err(|e| match e {
            ConfigError::Invalid { name, reason } => ConfigError::invalid(var(name), reason),
            missing => missing,
        })?;
        Ok(config)
    }
}

impl AuthConfig {
    /// One issuer, defaults for the rest.
    pub fn one(issuer: IssuerConfig) -> Self {
        Self {
            issuers: vec![issuer],
            max_ttl_secs: None,
            jwks_min_refresh: JWKS_REFETCH_INTERVAL,
        }
    }

    /// Reads the auth settings through `env` (see [`crate::config::Env`]).
    pub fn from_env(env: &crate::config::Env) -> Result<Self, ConfigError> {
        let issuers = match env.optional("JWT_ISSUERS") {
            None => vec![IssuerVars::from_env(env).build(|name| name)?],
            Some(raw) => {
                if let Some(single) = SINGLE_ISSUER_VARS
                    .iter()
                    .find(|name| env.optional(name).is_some())
                {
                    return Err(ConfigError::invalid(
                        "JWT_ISSUERS",
                        format!(
                            "set JWT_ISSUERS or {single} and the other single-issuer variables, not both"
                        ),
                    ));
                }
                let entries: Vec<IssuerEntry> = serde_json::from_str(&raw).map_err(|e| {
                    ConfigError::invalid("JWT_ISSUERS", format!("not a JSON list of issuers: {e}"))
                })?;
                if entries.is_empty() {
                    return Err(ConfigError::invalid(
                        "JWT_ISSUERS",
                        "name at least one issuer",
                    ));
                }
                let issuers = entries
                    .into_iter()
                    .map(|e| IssuerVars::from_entry(e).build(|_| "JWT_ISSUERS"))
                    .collect::<Result<Vec<_>, _>>()?;
                for (i, a) in issuers.iter().enumerate() {
                    if issuers[..i].iter().any(|b| b.issuer == a.issuer) {
                        return Err(ConfigError::invalid(
                            "JWT_ISSUERS",
                            format!("issuer `{}` is listed twice", a.issuer),
                        ));
                    }
                }
                issuers
            }
        };
        Ok(Self {
            issuers,
            max_ttl_secs: match env.parsed_or::<u64>("JWT_MAX_TTL", 0)? {
                0 => None,
                secs => Some(secs),
            },
            jwks_min_refresh: Duration::from_secs(
                env.parsed_or::<u64>("JWT_JWKS_MIN_REFRESH_SECS", 60)?,
            ),
        })
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

/// Whether a key or discovery URL may be fetched: `https://`, or plain `http://` to a loopback
/// host only (`localhost`, `127.0.0.0/8`, `::1`), decided on the parsed host — so neither
/// `http://localhost.example.org` nor `http://127.0.0.1@example.org` passes.
pub fn fetchable_url(raw: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(format!(
            "`{raw}` must be an https:// URL (plain http only to localhost, 127.0.0.0/8 or [::1])"
        )),
    }
}

/// Verifies bearer tokens. Built once at cold start.
pub struct Verifier {
    issuers: Vec<IssuerVerifier>,
    max_ttl_secs: Option<u64>,
}

/// One trusted issuer's keys and claim rules.
struct IssuerVerifier {
    issuer: String,
    keys: Keys,
    /// One per algorithm family configured.
    validations: Vec<Validation>,
    audiences: Vec<String>,
    scope_prefix: Option<String>,
    default_scopes: u8,
    user_claim: String,
    token_use: Option<String>,
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
        let mut list = f.debug_list();
        for issuer in &self.issuers {
            list.entry(&format_args!(
                "{} {:?}",
                issuer.issuer,
                issuer
                    .validations
                    .iter()
                    .flat_map(|v| v.algorithms.iter())
                    .collect::<Vec<_>>()
            ));
        }
        list.finish()
    }
}

/// The part of an unverified payload that picks the issuer to verify it against.
#[derive(Deserialize)]
struct NamedIssuer {
    iss: String,
}

/// An OpenID provider's configuration document: only what is used.
#[derive(Deserialize)]
struct Discovered {
    issuer: String,
    jwks_uri: String,
}

impl Verifier {
    /// Builds a verifier; JWKS (and discovery documents) are fetched here, once (cold start).
    pub async fn connect(config: &AuthConfig) -> Result<Self, ConfigError> {
        let mut issuers = Vec::with_capacity(config.issuers.len());
        for issuer in &config.issuers {
            issuers.push(IssuerVerifier::connect(issuer, config.jwks_min_refresh).await?);
        }
        Self::of(issuers, config)
    }

    /// Builds a verifier for static keys only (no JWKS, no discovery).
    pub fn new(config: &AuthConfig) -> Result<Self, ConfigError> {
        let issuers = config
            .issuers
            .iter()
            .map(|issuer| IssuerVerifier::new(issuer, static_key(issuer)?))
            .collect::<Result<Vec<_>, _>>()?;
        Self::of(issuers, config)
    }

    fn of(issuers: Vec<IssuerVerifier>, config: &AuthConfig) -> Result<Self, ConfigError> {
        if issuers.is_empty() {
            return Err(ConfigError::Missing("JWT_ISSUER"));
        }
        Ok(Self {
            issuers,
            max_ttl_secs: config.max_ttl_secs,
        })
    }

    /// Changes how often an unknown `kid` may trigger a JWKS fetch (tests; the default is
    /// [`JWKS_REFETCH_INTERVAL`]).
    pub fn set_jwks_refetch_interval(&mut self, interval: Duration) {
        for issuer in &mut self.issuers {
            if let Keys::Jwks(jwks) = &mut issuer.keys {
                jwks.refetch_interval = interval;
            }
        }
    }

    /// Verifies a compact JWT against the keys at hand and returns the caller.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.check(token)
            .map(|(p, _)| p)
            .map_err(|_| AuthError::Unauthorized)
    }

    /// The issuer a token names (read before its signature is checked, to pick the keys; the
    /// chosen issuer's validation then requires that very `iss`).
    fn issuer_of(&self, token: &str) -> Option<&IssuerVerifier> {
        if let [only] = self.issuers.as_slice() {
            return Some(only);
        }
        use base64::Engine as _;
        let payload = token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        let named: NamedIssuer = serde_json::from_slice(&bytes).ok()?;
        self.issuers.iter().find(|i| i.issuer == named.iss)
    }

    fn check(&self, token: &str) -> Result<(Principal, &IssuerVerifier), Refusal> {
        let issuer = self.issuer_of(token).ok_or(Refusal::Invalid)?;
        issuer
            .check(token, self.max_ttl_secs)
            .map(|principal| (principal, issuer))
    }

    /// Verifies the `Authorization: Bearer <token>` header value. A token signed by a key the
    /// JWKS did not hold (a rotation) makes it fetch the JWKS again, at most once per interval.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let token = authorization
            .and_then(|h| {
                let (scheme, token) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Unauthorized)?;
        match self.check(token) {
            Ok((p, _)) => Ok(p),
            Err(Refusal::UnknownKey) => {
                if let Some(IssuerVerifier {
                    keys: Keys::Jwks(jwks),
                    ..
                }) = self.issuer_of(token)
                {
                    jwks.refresh().await;
                }
                self.verify(token)
            }
            Err(Refusal::Invalid) => Err(AuthError::Unauthorized),
        }
    }
}

/// The decoding key of a static key setting.
fn static_key(config: &IssuerConfig) -> Result<DecodingKey, ConfigError> {
    config.check_key_fits_algorithms()?;
    match &config.key {
        VerificationKey::Secret(secret) => {
            if secret.expose().len() < 32 {
                return Err(ConfigError::invalid(
                    "JWT_SECRET",
                    "must be at least 32 bytes",
                ));
            }
            Ok(DecodingKey::from_secret(secret.expose().as_bytes()))
        }
        VerificationKey::SecretArn(_) => Err(ConfigError::invalid(
            "JWT_SECRET_ARN",
            "the secret must be read from Secrets Manager before verifying tokens",
        )),
        VerificationKey::JwksUrl(_) | VerificationKey::Discovery => Err(ConfigError::invalid(
            "JWT_JWKS_URL",
            "a JWKS is fetched by Verifier::connect",
        )),
        VerificationKey::PublicKeyPem(pem) => {
            let pem = pem.as_bytes();
            let (key, kind, fits) = match DecodingKey::from_rsa_pem(pem) {
                Ok(key) => (key, "an RSA key verifies RS*/PS*", 1),
                Err(_) => (
                    DecodingKey::from_ec_pem(pem).map_err(|_| {
                        ConfigError::invalid("JWT_PUBLIC_KEY", "not an RSA or EC public key in PEM")
                    })?,
                    "an EC key verifies ES*",
                    2,
                ),
            };
            // Every token of another family would be refused: say so now, not at the first
            // request.
            if let Some(other) = config.algorithms.iter().find(|a| family(**a) != fits) {
                return Err(ConfigError::invalid(
                    "JWT_ALGORITHMS",
                    format!("{other:?} cannot be verified with JWT_PUBLIC_KEY: {kind} only"),
                ));
            }
            Ok(key)
        }
    }
}

impl IssuerVerifier {
    fn new(config: &IssuerConfig, key: DecodingKey) -> Result<Self, ConfigError> {
        Ok(Self::with_keys(config, Keys::Static(key)))
    }

    fn with_keys(config: &IssuerConfig, keys: Keys) -> Self {
        Self {
            issuer: config.issuer.clone(),
            keys,
            validations: validations(config),
            audiences: config.audiences.clone(),
            scope_prefix: config.scope_prefix.clone(),
            default_scopes: bits(&config.default_scopes),
            user_claim: config.user_claim.clone(),
            token_use: config.token_use.clone(),
        }
    }

    async fn connect(config: &IssuerConfig, refresh: Duration) -> Result<Self, ConfigError> {
        let (url, var) = match &config.key {
            VerificationKey::JwksUrl(url) => (url.clone(), "JWT_JWKS_URL"),
            VerificationKey::Discovery => (String::new(), "JWT_ISSUER"),
            _ => return Self::new(config, static_key(config)?),
        };
        config.check_key_fits_algorithms()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| ConfigError::invalid(var, e.to_string()))?;
        let url = if url.is_empty() {
            discover(&config.issuer, &http)
                .await
                .map_err(|e| ConfigError::invalid(var, e))?
        } else {
            url
        };
        fetchable_url(&url).map_err(|e| ConfigError::invalid(var, e))?;
        let keys = Jwks::fetch(&url, &http)
            .await
            .map_err(|e| ConfigError::invalid(var, e))?;
        Ok(Self::with_keys(
            config,
            Keys::Jwks(Jwks {
                url,
                refetch_interval: refresh,
                http,
                keys: RwLock::new(keys),
                fetched: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            }),
        ))
    }

    fn check(&self, token: &str, max_ttl_secs: Option<u64>) -> Result<Principal, Refusal> {
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
        type Claims = serde_json::Map<String, serde_json::Value>;
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
        let claims = decoded
            .map_err(|e| {
                tracing::debug!(reason = ?e.kind(), "token refused");
                Refusal::Invalid
            })?
            .claims;
        self.principal(&claims, max_ttl_secs)
            .ok_or(Refusal::Invalid)
    }

    /// The caller a token's verified claims name, or `None` when a claim rule refuses them.
    fn principal(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
        max_ttl_secs: Option<u64>,
    ) -> Option<Principal> {
        use serde_json::Value;
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        // A string: an array `iss` (which jsonwebtoken would match element-wise) is refused.
        text("iss")?;
        // Audience: `aud` when present (string or array of strings); only without `aud` the
        // `client_id` (API Gateway's JWT authorizer rule: an OR would accept tokens minted for
        // another API that share a client).
        let accepted = |a: &str| self.audiences.iter().any(|x| x == a);
        let audience_ok = match claims.get("aud") {
            Some(Value::String(a)) => accepted(a),
            Some(Value::Array(all)) => all.iter().any(|a| a.as_str().is_some_and(accepted)),
            Some(_) => false,
            None => text("client_id").is_some_and(accepted),
        };
        if !audience_ok {
            return None;
        }
        if let Some(expected) = &self.token_use
            && text("token_use") != Some(expected.as_str())
        {
            return None;
        }
        let user = text(&self.user_claim)?;
        if !is_valid_user_id(user) || user.starts_with(ANONYMOUS_PREFIX) {
            return None;
        }
        if let Some(max) = max_ttl_secs {
            let exp = claims.get("exp").and_then(Value::as_u64)?;
            let issued = claims
                .get("iat")
                .and_then(Value::as_u64)
                .unwrap_or_else(jsonwebtoken::get_current_timestamp);
            if exp.saturating_sub(issued) > max + LEEWAY_SECS {
                return None;
            }
        }
        let mut scopes = 0u8;
        let mut carried = false;
        let mut grant = |s: &str| {
            let s = match &self.scope_prefix {
                Some(prefix) => match s.strip_prefix(prefix.as_str()) {
                    Some(rest) => rest,
                    None => return,
                },
                None => s,
            };
            if let Some(scope) = Scope::parse(s) {
                scopes |= scope.bit();
            }
        };
        for name in ["scope", "scp", "permissions"] {
            match claims.get(name) {
                None => continue,
                Some(Value::String(spaced)) => spaced.split(' ').for_each(&mut grant),
                Some(Value::Array(list)) => {
                    list.iter().filter_map(Value::as_str).for_each(&mut grant)
                }
                // A scope claim of another shape is still a scope claim: no defaults.
                Some(_) => {}
            }
            carried = true;
        }
        if !carried {
            scopes = self.default_scopes;
        }
        Some(Principal {
            sub: user.to_owned(),
            scopes,
        })
    }
}

/// The JWKS URL an OpenID provider publishes (OpenID Connect Discovery 1.0 §4): the document at
/// `<issuer without a trailing />/.well-known/openid-configuration`, whose `issuer` must be the
/// configured one exactly.
async fn discover(issuer: &str, http: &reqwest::Client) -> Result<String, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    fetchable_url(&url)?;
    let doc: Discovered = http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("fetching {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{url} is not an OpenID configuration: {e}"))?;
    if doc.issuer != issuer {
        return Err(format!(
            "{url} names issuer `{}`, not `{issuer}` (OpenID discovery requires them identical)",
            doc.issuer
        ));
    }
    Ok(doc.jwks_uri)
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
fn validations(config: &IssuerConfig) -> Vec<Validation> {
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

fn validation(config: &IssuerConfig, alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_issuer(&[&config.issuer]);
    // The audience (`aud`, else `client_id`) and the user claim are checked by
    // `IssuerVerifier::principal`.
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss"]);
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
        Verifier::new(&AuthConfig::one(IssuerConfig::new(
            vec![Algorithm::HS256],
            VerificationKey::Secret(Secret::new(SECRET.into())),
            "iss",
            "aud",
        )))
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
        let err = Verifier::new(&AuthConfig::one(IssuerConfig::new(
            vec![Algorithm::RS256, Algorithm::ES256],
            VerificationKey::PublicKeyPem(rsa_public.into()),
            "iss",
            "aud",
        )))
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

    /// An HS256 issuer with this claim mapping (the key type does not matter to the mapping).
    fn mapped(issuer: &str, secret: &str, map: impl FnOnce(&mut IssuerConfig)) -> IssuerConfig {
        let mut c = IssuerConfig::new(
            vec![Algorithm::HS256],
            VerificationKey::Secret(Secret::new(secret.into())),
            issuer,
            "aud",
        );
        map(&mut c);
        c
    }

    fn signed(secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn with(base: &serde_json::Value, patch: serde_json::Value) -> serde_json::Value {
        let mut claims = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    }

    #[test]
    fn only_https_or_loopback_http_is_fetched() {
        for ok in [
            "https://idp.example.com/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://localhost:9000/",
            "http://[::1]/jwks",
            "http://127.9.9.9/x",
        ] {
            assert!(fetchable_url(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://localhost.example.org/jwks",
            "http://127.0.0.1@example.org/jwks",
            "http://127.0.0.1.nip.io/jwks",
            "http://example.org/?127.0.0.1",
            "http://idp.example.com/jwks",
            "ftp://127.0.0.1/jwks",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(fetchable_url(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_cognito_access_token_is_matched_by_client_id_with_prefixed_scopes() {
        let iss = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Abc";
        let v = Verifier::new(&AuthConfig::one(mapped(iss, SECRET, |c| {
            c.audiences = vec!["client-1".into(), "client-2".into()];
            c.scope_prefix = Some("https://api.example.com/".into());
            c.token_use = Some("access".into());
        })))
        .unwrap();
        let access = serde_json::json!({
            "sub": "5f1c-uuid", "iss": iss, "client_id": "client-2", "token_use": "access",
            "scope": "https://api.example.com/events:write aws.cognito.signin.user.admin events:read",
            "exp": now() + 600,
        });
        let p = v.verify(&signed(SECRET, access.clone())).unwrap();
        assert_eq!(p.sub, "5f1c-uuid");
        assert!(p.has(Scope::EventsWrite));
        // A scope without the prefix is ignored, even one named like ours.
        assert!(!p.has(Scope::EventsRead));
        for (what, patch) in [
            (
                "another client",
                serde_json::json!({"client_id": "client-3"}),
            ),
            ("an ID token", serde_json::json!({"token_use": "id"})),
            ("no token_use", serde_json::json!({"token_use": null})),
            // With an `aud`, only the `aud` counts: client_id does not rescue a token minted
            // for another API.
            (
                "aud of another API",
                serde_json::json!({"aud": "other-api"}),
            ),
        ] {
            assert_eq!(
                v.verify(&signed(SECRET, with(&access, patch))),
                Err(AuthError::Unauthorized),
                "{what}"
            );
        }
    }

    #[test]
    fn id_tokens_get_the_default_scopes_and_tokens_with_scopes_do_not() {
        let iss = "https://securetoken.google.com/my-game";
        let v = Verifier::new(&AuthConfig::one(mapped(iss, SECRET, |c| {
            c.audiences = vec!["my-game".into()];
            c.default_scopes = vec![Scope::EventsWrite];
        })))
        .unwrap();
        // A Firebase ID token (anonymous sign-in looks the same): aud = project, no scope.
        let id = serde_json::json!({
            "sub": "Xq3firebaseUid", "user_id": "Xq3firebaseUid", "iss": iss, "aud": "my-game",
            "firebase": {"sign_in_provider": "anonymous"}, "iat": now(), "exp": now() + 3600,
        });
        let p = v.verify(&signed(SECRET, id.clone())).unwrap();
        assert!(p.has(Scope::EventsWrite) && !p.has(Scope::EventsRead));
        // A token that carries scopes keeps exactly those, even when they grant nothing here.
        for claim in [
            serde_json::json!({"scope": "counts:read"}),
            serde_json::json!({"scp": []}),
            serde_json::json!({"permissions": ["something:else"]}),
        ] {
            let p = v.verify(&signed(SECRET, with(&id, claim.clone()))).unwrap();
            assert!(!p.has(Scope::EventsWrite), "{claim}");
        }
    }

    #[test]
    fn auth0_permissions_and_another_user_claim_are_read() {
        let iss = "https://tenant.eu.auth0.com/";
        let v = Verifier::new(&AuthConfig::one(mapped(iss, SECRET, |c| {
            c.audiences = vec!["https://telemetry.example.com".into()];
            c.user_claim = "https://example.com/player_id".into();
        })))
        .unwrap();
        let t = serde_json::json!({
            "sub": "auth0|abc", "https://example.com/player_id": "player-7", "iss": iss,
            "aud": ["https://telemetry.example.com", "https://tenant.eu.auth0.com/userinfo"],
            "permissions": ["events:write", "counts:read"], "scope": "openid profile",
            "exp": now() + 600,
        });
        let p = v.verify(&signed(SECRET, t.clone())).unwrap();
        assert_eq!(p.sub, "player-7");
        assert!(p.has(Scope::EventsWrite) && p.has(Scope::CountsRead));
        for (what, patch) in [
            (
                "no user claim",
                serde_json::json!({"https://example.com/player_id": null}),
            ),
            (
                "user claim not a string",
                serde_json::json!({"https://example.com/player_id": 7}),
            ),
            (
                "anonymous-looking user",
                serde_json::json!({"https://example.com/player_id": "anon:x"}),
            ),
        ] {
            assert_eq!(
                v.verify(&signed(SECRET, with(&t, patch))),
                Err(AuthError::Unauthorized),
                "{what}"
            );
        }
    }

    #[test]
    fn a_token_is_checked_only_against_the_issuer_it_names() {
        let players = "https://players.example.com";
        let servers = "https://servers.example.com";
        let other_secret = "another-test-only-secret-of-32-bytes!!!";
        let v = Verifier::new(&AuthConfig {
            issuers: vec![
                mapped(players, SECRET, |c| {
                    c.default_scopes = vec![Scope::EventsWrite]
                }),
                mapped(servers, other_secret, |_| {}),
            ],
            max_ttl_secs: None,
            jwks_min_refresh: Duration::from_secs(60),
        })
        .unwrap();
        let claims = |iss: &str| serde_json::json!({"sub": "u1", "iss": iss, "aud": "aud", "exp": now() + 600});
        assert!(
            v.verify(&signed(SECRET, claims(players)))
                .unwrap()
                .has(Scope::EventsWrite)
        );
        let server = v.verify(&signed(other_secret, claims(servers))).unwrap();
        assert!(!server.has(Scope::EventsWrite), "each issuer's own mapping");
        // Signed by one issuer's key, naming the other: refused.
        assert!(v.verify(&signed(SECRET, claims(servers))).is_err());
        assert!(v.verify(&signed(other_secret, claims(players))).is_err());
        assert!(
            v.verify(&signed(SECRET, claims("https://unknown.example.com")))
                .is_err()
        );
    }

    #[test]
    fn write_as_implies_write_and_is_never_a_default() {
        let p = Principal::new("server", &[Scope::EventsWriteAs]);
        assert!(p.has(Scope::EventsWrite) && p.has(Scope::EventsWriteAs));
        assert!(!Principal::new("u", &[Scope::EventsWrite]).has(Scope::EventsWriteAs));
        let env = |defaults: &str| {
            crate::config::Env::from_map([
                ("JWT_ISSUER", "https://idp.example.com"),
                ("JWT_AUDIENCE", "aud"),
                ("JWT_DEFAULT_SCOPES", defaults),
            ])
        };
        assert!(AuthConfig::from_env(&env("events:write")).is_ok());
        for refused in ["admin", "events:write-as", "events:write nonsense"] {
            let err = AuthConfig::from_env(&env(refused)).unwrap_err().to_string();
            assert!(err.contains("JWT_DEFAULT_SCOPES"), "{refused}: {err}");
        }
    }

    #[test]
    fn jwt_issuers_is_read_strictly() {
        let env =
            |vars: &[(&'static str, &'static str)]| crate::config::Env::from_map(vars.to_vec());
        let good = r#"[{"issuer":"https://a.example.com","audience":["x","y"],"scopePrefix":"telemetry/"},
                       {"issuer":"https://b.example.com","audience":"z","jwksUrl":"https://b.example.com/keys","tokenUse":"access"}]"#;
        let c = AuthConfig::from_env(&env(&[("JWT_ISSUERS", good)])).unwrap();
        assert_eq!(c.issuers.len(), 2);
        assert_eq!(c.issuers[0].audiences, ["x", "y"]);
        assert!(matches!(c.issuers[0].key, VerificationKey::Discovery));
        assert_eq!(c.issuers[1].token_use.as_deref(), Some("access"));
        for (what, vars) in [
            ("not JSON", vec![("JWT_ISSUERS", "[{")]),
            ("empty", vec![("JWT_ISSUERS", "[]")]),
            (
                "unknown field",
                vec![(
                    "JWT_ISSUERS",
                    r#"[{"issuer":"i","audience":"a","secret":"s"}]"#,
                )],
            ),
            ("no audience", vec![("JWT_ISSUERS", r#"[{"issuer":"i"}]"#)]),
            (
                "twice the same issuer",
                vec![(
                    "JWT_ISSUERS",
                    r#"[{"issuer":"i","audience":"a"},{"issuer":"i","audience":"b"}]"#,
                )],
            ),
            (
                "HS* without a secret",
                vec![(
                    "JWT_ISSUERS",
                    r#"[{"issuer":"i","audience":"a","algorithms":"HS256"}]"#,
                )],
            ),
            (
                "beside JWT_ISSUER",
                vec![
                    ("JWT_ISSUERS", r#"[{"issuer":"i","audience":"a"}]"#),
                    ("JWT_ISSUER", "j"),
                ],
            ),
        ] {
            let err = AuthConfig::from_env(&env(&vars));
            assert!(err.is_err(), "{what}");
            assert!(
                err.unwrap_err().to_string().contains("JWT_ISSUER"),
                "{what}"
            );
        }
    }

    #[test]
    fn secret_with_asymmetric_algorithms_is_a_config_error() {
        let err = Verifier::new(&AuthConfig::one(IssuerConfig::new(
            vec![Algorithm::RS256],
            VerificationKey::Secret(Secret::new(SECRET.into())),
            "i",
            "a",
        )))
        .unwrap_err();
        assert!(err.to_string().contains("JWT_ALGORITHMS"));
    }
}
