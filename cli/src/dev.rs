//! Dev-only credentials of the local stack: the HS256 secret `telemetry local` uses, saved so
//! that `telemetry token` and `telemetry send` in another terminal sign with the same one.
//!
//! Everything here is for local development. A deployed stack verifies asymmetric keys or reads
//! its secret from Secrets Manager; it never reads this file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use telemetry_shared::auth::{AuthConfig, IssuerConfig, VerificationKey};
use telemetry_shared::config::Secret;

/// Default `iss` of local tokens.
pub const DEFAULT_ISSUER: &str = "telemetry-local";
/// Default `aud` of local tokens.
pub const DEFAULT_AUDIENCE: &str = "telemetry";

/// What `telemetry local` shares with the other commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevState {
    /// DEV-ONLY HS256 secret.
    pub secret: String,
    /// Token issuer.
    pub issuer: String,
    /// Token audience.
    pub audience: String,
    /// Base URL of the local HTTP API.
    pub url: String,
}

impl DevState {
    /// Settings from `JWT_SECRET` / `JWT_ISSUER` / `JWT_AUDIENCE`, a fresh random secret
    /// when `JWT_SECRET` is unset (`generated` tells).
    pub fn from_env(url: String) -> (Self, bool) {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (secret, generated) = match var("JWT_SECRET") {
            Some(s) => (s, false),
            None => (
                format!(
                    "dev-only-{:016x}{:016x}",
                    fastrand::u64(..),
                    fastrand::u64(..)
                ),
                true,
            ),
        };
        let state = Self {
            secret,
            issuer: var("JWT_ISSUER").unwrap_or_else(|| DEFAULT_ISSUER.into()),
            audience: var("JWT_AUDIENCE").unwrap_or_else(|| DEFAULT_AUDIENCE.into()),
            url,
        };
        (state, generated)
    }

    /// The auth configuration that verifies these tokens.
    pub fn auth_config(&self) -> AuthConfig {
        AuthConfig::one(IssuerConfig::new(
            vec![jsonwebtoken::Algorithm::HS256],
            VerificationKey::Secret(Secret::new(self.secret.clone())),
            self.issuer.clone(),
            self.audience.clone(),
        ))
    }

    /// Where the state is kept: `$TELEMETRY_STATE_DIR`, else `$XDG_STATE_HOME/telemetry`, else
    /// `~/.local/state/telemetry`.
    pub fn path() -> PathBuf {
        let dir = std::env::var_os("TELEMETRY_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("telemetry"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/telemetry"))
            })
            .unwrap_or_else(|| PathBuf::from(".telemetry"));
        dir.join("local.json")
    }

    /// Saves the state (readable by the owner only).
    pub fn save(&self) -> Result<PathBuf> {
        let path = Self::path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(path)
    }

    /// The saved state, with `JWT_SECRET` / `JWT_ISSUER` / `JWT_AUDIENCE` taking precedence.
    pub fn load() -> Result<Self> {
        let path = Self::path();
        let saved: Option<Self> = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var("JWT_SECRET"), saved) {
            (Some(secret), saved) => Ok(Self {
                secret,
                issuer: var("JWT_ISSUER")
                    .or_else(|| saved.as_ref().map(|s| s.issuer.clone()))
                    .unwrap_or_else(|| DEFAULT_ISSUER.into()),
                audience: var("JWT_AUDIENCE")
                    .or_else(|| saved.as_ref().map(|s| s.audience.clone()))
                    .unwrap_or_else(|| DEFAULT_AUDIENCE.into()),
                url: saved
                    .map(|s| s.url)
                    .unwrap_or_else(|| "http://127.0.0.1:3000".into()),
            }),
            (None, Some(saved)) => Ok(saved),
            (None, None) => anyhow::bail!(
                "no dev secret: start `telemetry local` (make dev) first, or set JWT_SECRET ({} not found)",
                path.display()
            ),
        }
    }

    /// A token for `sub` with `scope`, valid `ttl_secs`.
    pub fn token(&self, sub: &str, scope: &str, ttl_secs: u64) -> Result<String> {
        telemetry_shared::auth::mint_hs256(
            &Secret::new(self.secret.clone()),
            &self.issuer,
            &self.audience,
            sub,
            scope,
            ttl_secs,
        )
        .context("signing token")
    }
}

/// Parses a duration such as `90`, `90s`, `15m`, `1h`, `7d` into seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number.parse().map_err(|_| format!("bad duration `{s}`"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("bad duration unit in `{s}` (use s, m, h or d)")),
    };
    Ok(n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_units() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
