//! [`Route`]: a subscription of an SQS queue to event types (the original service's `EventRoute`).
//!
//! A route `{id, match, queueUrl, enabled, description}` sends every event whose type matches
//! `match` — an exact type, or a glob where `*` stands for any run of characters (`game.*`,
//! `*.error`, `*`) — to `queueUrl`.

use serde::{Deserialize, Serialize};

/// Longest route id.
pub const MAX_ROUTE_ID_CHARS: usize = 64;
/// Longest `match` pattern.
pub const MAX_PATTERN_CHARS: usize = 128;
/// Longest `description`.
pub const MAX_DESCRIPTION_CHARS: usize = 256;

/// A route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Route id, 1..=64 chars of `[A-Za-z0-9_-]`.
    pub id: String,
    /// Exact event type or glob with `*`.
    #[serde(rename = "match")]
    pub pattern: String,
    /// SQS queue URL.
    pub queue_url: String,
    /// Disabled routes are kept but deliver nothing.
    pub enabled: bool,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What a client sends to `PUT /v1/routes/{id}` (the id comes from the path).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteInput {
    /// Exact event type or glob.
    #[serde(rename = "match")]
    pub pattern: String,
    /// SQS queue URL.
    pub queue_url: String,
    /// Default `true`.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Accepted when equal to the path's id (clients often echo the whole route back).
    #[serde(default)]
    pub id: Option<String>,
}

fn enabled_by_default() -> bool {
    true
}

/// Why a route is refused (HTTP 400), with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RouteError {
    /// Machine code: `invalid_route_id`, `invalid_match`, `invalid_queue_url`, ...
    pub code: &'static str,
    /// Human message.
    pub message: String,
}

fn route_error(code: &'static str, message: impl Into<String>) -> RouteError {
    RouteError {
        code,
        message: message.into(),
    }
}

/// Route ids: 1..=64 chars of `[A-Za-z0-9_-]`.
pub fn is_valid_route_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ROUTE_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Patterns: 1..=128 chars of event-type characters and `*`.
pub fn is_valid_pattern(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_PATTERN_CHARS
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-' | b'*'))
}

/// Checks an SQS queue URL: `http(s)://host/<account id>/<queue name>`, where the name is
/// 1..=80 chars of `[A-Za-z0-9_-]`, `.fifo` allowed at the end.
pub fn is_valid_queue_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let mut parts = rest.split('/');
    let (Some(host), Some(account), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    !host.is_empty()
        && !host.contains(['?', '#', '@', ' '])
        && !account.is_empty()
        && account.bytes().all(|b| b.is_ascii_digit())
        && !base.is_empty()
        && name.len() <= 80
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// The queue name of a (valid) queue URL: its last path segment.
pub fn queue_name(queue_url: &str) -> &str {
    queue_url.rsplit('/').next().unwrap_or(queue_url)
}

/// Whether a queue URL names a FIFO queue.
pub fn is_fifo(queue_url: &str) -> bool {
    queue_url.ends_with(".fifo")
}

impl RouteInput {
    /// Checks the input and makes the route `id`. With `queue_prefix` (the deployed stack's
    /// `ROUTE_QUEUE_PREFIX`), the queue's name must start with it: forward's role may send to
    /// no other queue, so any other route would only fill the dead-letter queue.
    pub fn into_route(self, id: &str, queue_prefix: Option<&str>) -> Result<Route, RouteError> {
        if !is_valid_route_id(id) {
            return Err(route_error(
                "invalid_route_id",
                "route id must be 1..=64 characters of [A-Za-z0-9_-]",
            ));
        }
        if self.id.as_deref().is_some_and(|body_id| body_id != id) {
            return Err(route_error(
                "invalid_route_id",
                "`id` in the body differs from the id in the path",
            ));
        }
        if !is_valid_pattern(&self.pattern) {
            return Err(route_error(
                "invalid_match",
                "`match` must be an event type or a glob with `*`: 1..=128 characters of [A-Za-z0-9_.:*-]",
            ));
        }
        if !is_valid_queue_url(&self.queue_url) {
            return Err(route_error(
                "invalid_queue_url",
                "`queueUrl` must be an SQS queue URL: https://sqs.<region>.amazonaws.com/<account id>/<queue name>",
            ));
        }
        if let Some(prefix) = queue_prefix
            && !queue_name(&self.queue_url).starts_with(prefix)
        {
            return Err(RouteError {
                code: "invalid_queue_url",
                message: format!(
                    "the queue's name must start with \"{prefix}\": this stack's forward function may send to no other queue"
                ),
            });
        }
        if let Some(d) = &self.description
            && (d.chars().count() > MAX_DESCRIPTION_CHARS || d.chars().any(char::is_control))
        {
            return Err(route_error(
                "invalid_description",
                "`description` must be at most 256 characters, without control characters",
            ));
        }
        Ok(Route {
            id: id.to_string(),
            pattern: self.pattern,
            queue_url: self.queue_url,
            enabled: self.enabled,
            description: self.description,
        })
    }
}

/// Whether `event_type` matches `pattern` (`*` matches any run of characters, even empty).
pub fn glob_matches(pattern: &str, event_type: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), event_type.as_bytes());
    // Greedy matching with backtracking to the last `*`: linear in practice, no recursion.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// The enabled routes, ready to match event types.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// A table of the enabled routes among `routes`.
    pub fn new(routes: Vec<Route>) -> Self {
        let mut routes: Vec<Route> = routes.into_iter().filter(|r| r.enabled).collect();
        routes.sort_by(|a, b| a.id.cmp(&b.id));
        Self { routes }
    }

    /// The routes matching `event_type`.
    pub fn matching<'a, 'b>(
        &'a self,
        event_type: &'b str,
    ) -> impl Iterator<Item = &'a Route> + use<'a, 'b> {
        self.routes
            .iter()
            .filter(move |r| glob_matches(&r.pattern, event_type))
    }

    /// Number of enabled routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there is no enabled route.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shell_patterns() {
        let cases = [
            ("game.*", "game.start", true),
            ("game.*", "game.", true),
            ("game.*", "gamer.start", false),
            ("*.error", "net.error", true),
            ("*.error", "net.error.x", false),
            ("*", "anything", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("**", "x", true),
        ];
        for (p, t, expected) in cases {
            assert_eq!(glob_matches(p, t), expected, "{p} vs {t}");
        }
    }

    #[test]
    fn queue_urls_are_checked() {
        assert!(is_valid_queue_url(
            "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"
        ));
        assert!(is_valid_queue_url(
            "http://127.0.0.1:4566/123456789012/telemetry-demo.fifo"
        ));
        for bad in [
            "sqs.eu-west-1.amazonaws.com/123/q",
            "https://sqs.amazonaws.com/q",
            "https://sqs.amazonaws.com/abc/q",
            "https://sqs.amazonaws.com/123/q/extra",
            "https://sqs.amazonaws.com/123/bad name",
            "https://sqs.amazonaws.com/123/.fifo",
        ] {
            assert!(!is_valid_queue_url(bad), "{bad}");
        }
    }

    #[test]
    fn a_route_to_a_queue_outside_the_stacks_prefix_is_refused() {
        let input = |url: &str| {
            serde_json::from_str::<RouteInput>(&format!(r#"{{"match":"*","queueUrl":"{url}"}}"#))
                .unwrap()
        };
        let ours = "https://sqs.eu-west-1.amazonaws.com/123456789012/telemetry_game-events";
        let dev = "https://sqs.eu-west-1.amazonaws.com/123456789012/telemetry-dev_game-events";
        assert!(input(ours).into_route("r", Some("telemetry_")).is_ok());
        let refused = input(dev).into_route("r", Some("telemetry_")).unwrap_err();
        assert_eq!(refused.code, "invalid_queue_url");
        assert!(
            refused.message.contains("\"telemetry_\""),
            "{}",
            refused.message
        );
        // Without a prefix (the local stack), any queue.
        assert!(input(dev).into_route("r", None).is_ok());
    }

    #[test]
    fn route_input_is_validated_field_by_field() {
        let input = |json: &str| serde_json::from_str::<RouteInput>(json).unwrap();
        let ok =
            input(r#"{"match":"game.*","queueUrl":"https://sqs.us-east-1.amazonaws.com/1/q"}"#)
                .into_route("r1", None)
                .unwrap();
        assert!(ok.enabled);
        let code = |json: &str, id: &str| input(json).into_route(id, None).unwrap_err().code;
        assert_eq!(
            code(r#"{"match":"a b","queueUrl":"https://h/1/q"}"#, "r"),
            "invalid_match"
        );
        assert_eq!(
            code(r#"{"match":"a","queueUrl":"ftp://h/1/q"}"#, "r"),
            "invalid_queue_url"
        );
        assert_eq!(
            code(r#"{"match":"a","queueUrl":"https://h/1/q"}"#, "bad id"),
            "invalid_route_id"
        );
        assert_eq!(
            code(
                r#"{"id":"other","match":"a","queueUrl":"https://h/1/q"}"#,
                "r"
            ),
            "invalid_route_id"
        );
        assert!(
            serde_json::from_str::<RouteInput>(r#"{"match":"a","queueUrl":"https://h/1/q","x":1}"#)
                .is_err()
        );
    }

    #[test]
    fn disabled_routes_match_nothing() {
        let route = |id: &str, p: &str, enabled| Route {
            id: id.into(),
            pattern: p.into(),
            queue_url: "https://h/1/q".into(),
            enabled,
            description: None,
        };
        let table = RouteTable::new(vec![route("a", "game.*", true), route("b", "*", false)]);
        let ids: Vec<_> = table.matching("game.x").map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a"]);
        assert_eq!(table.matching("other").count(), 0);
    }
}
