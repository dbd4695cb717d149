//! Typed configuration from environment variables, read once at cold start.
//!
//! A missing or malformed variable is a [`ConfigError`] naming it, which stops start-up.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// A configuration problem, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    /// A variable is set to something unusable.
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] for `name`.
    pub fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            name,
            reason: reason.into(),
        }
    }
}

/// Where configuration comes from: the process environment, a map (tests, the local stack),
/// or a map over the process environment ([`Env::with`]).
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// Variables that win over the process environment.
    vars: HashMap<String, String>,
    /// Whether a name not in `vars` is looked up in the process environment.
    hermetic: bool,
    /// Every name looked up, so tests can compare a config with `template.yaml`.
    read: Arc<Mutex<BTreeSet<String>>>,
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self::default()
    }

    /// A fixed set of variables, nothing from the process.
    pub fn from_map<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            hermetic: true,
            ..Self::default()
        }
        .with(vars)
    }

    /// These variables over this environment's (they win; the rest is looked up as before),
    /// with a fresh record of the names read.
    pub fn with<K: Into<String>, V: Into<String>>(
        &self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut all = self.vars.clone();
        all.extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        Self {
            vars: all,
            hermetic: self.hermetic,
            read: Arc::default(),
        }
    }

    /// The variable's value; unset and empty are both `None`.
    pub fn optional(&self, name: &str) -> Option<String> {
        if let Ok(mut read) = self.read.lock() {
            read.insert(name.to_string());
        }
        let value = match self.vars.get(name) {
            Some(v) => Some(v.clone()),
            None if self.hermetic => None,
            None => std::env::var(name).ok(),
        };
        value.filter(|v| !v.trim().is_empty())
    }

    /// The variable's value, or [`ConfigError::Missing`].
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    /// The variable parsed as `T`, or `default` when unset.
    pub fn parsed_or<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::invalid(name, e.to_string())),
        }
    }
}

impl Env {
    /// The names looked up so far, set or not.
    pub fn names_read(&self) -> BTreeSet<String> {
        self.read.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// A secret string: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_malformed_variables_are_named() {
        let env = Env::from_map([("N", "abc"), ("EMPTY", " ")]);
        assert_eq!(env.required("NOPE"), Err(ConfigError::Missing("NOPE")));
        assert_eq!(env.required("EMPTY"), Err(ConfigError::Missing("EMPTY")));
        let err = env.parsed_or::<u32>("N", 1).unwrap_err();
        assert!(err.to_string().contains("N is invalid"), "{err}");
        assert_eq!(env.parsed_or::<u32>("UNSET", 7), Ok(7));
    }

    #[test]
    fn a_map_over_an_environment_wins_and_the_rest_falls_through() {
        let base = Env::from_map([("A", "base"), ("B", "base")]);
        let env = base.with([("B", "over")]);
        assert_eq!(env.optional("A").as_deref(), Some("base"));
        assert_eq!(env.optional("B").as_deref(), Some("over"));
        // A map is hermetic: nothing comes from the process (PATH is always set).
        assert_eq!(env.optional("PATH"), None);
        assert!(Env::process().with([("X", "1")]).optional("PATH").is_some());
        assert_eq!(env.names_read().len(), 3);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
