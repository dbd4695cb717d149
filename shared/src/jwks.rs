//! The JWKS client: a JSON Web Key Set fetched from an identity provider at cold start, kept by
//! key id, fetched again when a token names a key it does not hold (a rotation), at most once
//! per interval. [`crate::auth::Verifier`] verifies with it.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};

/// A JWKS key and the algorithm it declares (`alg`; a token must then use that one).
pub(crate) struct JwkKey {
    pub(crate) key: DecodingKey,
    pub(crate) alg: Option<Algorithm>,
}

/// The keys of a JWKS URL, by key id.
pub(crate) struct Jwks {
    pub(crate) url: String,
    pub(crate) refetch_interval: Duration,
    pub(crate) http: reqwest::Client,
    pub(crate) keys: RwLock<HashMap<String, JwkKey>>,
    /// When the keys were last fetched; also serialises fetches.
    pub(crate) fetched: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Jwks {
    /// Fetches the signing keys of `url`, by key id (keys for encryption and keys without an
    /// id are left out).
    pub(crate) async fn fetch(
        url: &str,
        http: &reqwest::Client,
    ) -> Result<HashMap<String, JwkKey>, String> {
        let set: jsonwebtoken::jwk::JwkSet = http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("fetching {url}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("{url} is not a JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let signing = !matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            );
            if let (Some(kid), true) = (&jwk.common.key_id, signing)
                && let Ok(key) = DecodingKey::from_jwk(jwk)
            {
                let alg = jwk
                    .common
                    .key_algorithm
                    .and_then(|a| a.to_string().parse::<Algorithm>().ok());
                keys.insert(kid.clone(), JwkKey { key, alg });
            }
        }
        if keys.is_empty() {
            return Err(format!("{url} holds no usable signing key with a `kid`"));
        }
        Ok(keys)
    }

    /// Fetches the keys again unless that happened less than a minute ago.
    /// Fetches the keys again, unless that happened within the refetch interval; keeps the
    /// keys it has when the fetch fails.
    pub(crate) async fn refresh(&self) {
        let mut fetched = self.fetched.lock().await;
        if fetched.elapsed() < self.refetch_interval {
            return;
        }
        *fetched = tokio::time::Instant::now();
        match Self::fetch(&self.url, &self.http).await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "JWKS refreshed");
                if let Ok(mut current) = self.keys.write() {
                    *current = keys;
                }
            }
            Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; keeping the cached keys"),
        }
    }
}
