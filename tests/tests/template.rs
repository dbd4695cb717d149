//! `template.yaml` agrees with the code and with what CloudFormation accepts and does.
//!
//! Read with [`telemetry_e2e::cfn`], which keeps the intrinsic functions (a plain YAML loader
//! drops `!Ref`, `!If`, ...), so each test checks a class of mistake across the whole
//! template: every function's binary and build target, every environment variable against its
//! config, rule functions only in `Rules` (evaluated against the functions' own key rules),
//! every reference resolving, IAM statements that grant what they mean, an alarm for every index
//! and every stream mapping, missing data chosen per alarm, FILL in every sum, a runbook entry
//! per alarm, and the dashboard and alarms naming only metrics the code emits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use telemetry_e2e::cfn;
use telemetry_shared::auth::AuthConfig;
use telemetry_shared::config::Env;
use telemetry_shared::metrics::Metric;

/// Read by the logging set-up (`RUST_LOG`), not by a config struct.
const READ_OUTSIDE_CONFIG: &[&str] = &["RUST_LOG"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn resources(t: &Value) -> impl Iterator<Item = (&String, &Value)> {
    t["Resources"].as_object().unwrap().iter()
}

fn of_type<'a>(t: &'a Value, kind: &'a str) -> impl Iterator<Item = (&'a String, &'a Value)> {
    resources(t).filter(move |(_, r)| r["Type"] == kind)
}

fn functions(t: &Value) -> BTreeMap<String, &Value> {
    of_type(t, "AWS::Serverless::Function")
        .map(|(k, r)| (k.clone(), r))
        .collect()
}

fn alarms(t: &Value) -> BTreeMap<String, &Value> {
    of_type(t, "AWS::CloudWatch::Alarm")
        .map(|(k, r)| (k.clone(), &r["Properties"]))
        .collect()
}

/// Every JSON node under `v` (itself included), depth first.
fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(v);
    match v {
        Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
        Value::Object(map) => map.values().for_each(|i| walk(i, out)),
        _ => {}
    }
}

fn nodes(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

/// `IngestFunction` → `ingest`, `PostProcessFunction` → `post-process` (as in the Makefile).
fn crate_of(logical_id: &str) -> String {
    let base = logical_id.trim_end_matches("Function");
    let mut out = String::new();
    for (i, c) in base.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The stream event source mappings SAM generates: (logical id `<Function><Event>`, function,
/// event properties).
fn stream_mappings(t: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (id, f) in functions(t) {
        for (name, event) in f["Properties"]["Events"].as_object().into_iter().flatten() {
            if matches!(event["Type"].as_str(), Some("Kinesis" | "DynamoDB")) {
                out.push((format!("{id}{name}"), id.clone(), &event["Properties"]));
            }
        }
    }
    out
}

#[test]
fn every_function_has_a_binary_and_a_build_target() {
    let t = cfn::template();
    let makefile = read("Makefile");
    let fs = functions(&t);
    assert_eq!(fs.len(), 5);
    for (id, f) in fs {
        let krate = crate_of(&id);
        let manifest = read(&format!("functions/{krate}/Cargo.toml"));
        assert!(
            manifest.contains(&format!("name = \"{krate}\"")),
            "{id}: binary {krate}"
        );
        assert!(
            root()
                .join(format!("functions/{krate}/src/main.rs"))
                .exists()
        );
        assert!(
            makefile.contains(&format!("build-{id}")),
            "{id}: no build-{id} target in the Makefile"
        );
        assert_eq!(f["Metadata"]["BuildMethod"], "makefile", "{id}");
        // The CodeUri holds only what the binaries are made of (SAM's build cache hashes it).
        let code_uri = f["Properties"]["CodeUri"].as_str().unwrap();
        assert_eq!(code_uri.trim_end_matches('/'), "sam-build", "{id}");
    }
}

#[test]
fn the_sam_build_folder_links_what_the_binaries_are_made_of_and_nothing_else() {
    let dir = root().join("sam-build");
    let mut linked = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        if name == "Makefile" {
            assert!(meta.is_file());
            continue;
        }
        assert!(
            meta.file_type().is_symlink(),
            "sam-build/{name} must be a link"
        );
        let target = std::fs::read_link(entry.path()).unwrap();
        assert!(
            root().join("sam-build").join(&target).exists(),
            "sam-build/{name} → {target:?} is dangling"
        );
        linked.insert(name);
    }
    // target/ and .venv/ must never be hashed: only sources.
    let expected: BTreeSet<String> = [
        "Cargo.toml",
        "Cargo.lock",
        "shared",
        "functions",
        "scripts",
        "build.mk",
    ]
    .map(String::from)
    .into();
    assert_eq!(linked, expected);
}

/// A parameter's default as a string (a CommaDelimitedList's as its text).
fn parameter_defaults(t: &Value) -> BTreeMap<String, String> {
    t["Parameters"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, p)| {
            let default = match &p["Default"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            (k.clone(), default)
        })
        .collect()
}

/// A deployment's choices, for the environment tests: the conditions that hold, and parameter
/// values beside the defaults.
struct Choice {
    name: &'static str,
    holds: &'static [&'static str],
    parameters: &'static [(&'static str, &'static str)],
}

/// Conditions of optional features, held in every choice (their variables are then set).
const OPTIONAL_FEATURES: &[&str] = &["KeepsRejectedEvents"];

/// The ways to configure identity: discovery, each key parameter, several issuers.
const IDENTITY_CHOICES: &[Choice] = &[
    Choice {
        name: "discovery from JwtIssuer",
        holds: &[],
        parameters: &[("JwtIssuer", "https://idp.example.com")],
    },
    Choice {
        name: "JwtPublicKey",
        holds: &["HasPublicKey"],
        parameters: &[("JwtIssuer", "issuer"), ("JwtPublicKey", "pem")],
    },
    Choice {
        name: "JwtJwksUrl",
        holds: &["HasJwksUrl"],
        parameters: &[
            ("JwtIssuer", "issuer"),
            ("JwtJwksUrl", "https://idp.example.com/jwks.json"),
        ],
    },
    Choice {
        name: "JwtSecretArn",
        holds: &["HasSecretArn"],
        parameters: &[
            ("JwtIssuer", "issuer"),
            (
                "JwtSecretArn",
                "arn:aws:secretsmanager:eu-west-1:1:secret:jwt",
            ),
            // A shared secret goes with HS* (the template's Rules enforce the pairing).
            ("JwtAlgorithms", "HS256"),
            ("JwtScopePrefix", "telemetry/"),
            ("JwtDefaultScopes", "events:write"),
            ("JwtTokenUse", "access"),
        ],
    },
    Choice {
        name: "JwtIssuers",
        holds: &["HasIssuers"],
        parameters: &[(
            "JwtIssuers",
            r#"[{"issuer":"https://a.example.com","audience":"telemetry"},{"issuer":"https://b.example.com","audience":["x","y"],"scopePrefix":"telemetry/","tokenUse":"access"}]"#,
        )],
    },
];

/// A variable's value under `choice`: `Ref`s to parameters become the choice's values or the
/// defaults, `Fn::If` follows the branch the choice's conditions pick (`None`: unset), other
/// functions a placeholder.
fn env_value(
    v: &Value,
    params: &BTreeMap<String, String>,
    holds: &dyn Fn(&str) -> bool,
) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(m) if m.contains_key("Fn::If") => {
            let args = m["Fn::If"].as_array().unwrap();
            let branch = if holds(args[0].as_str().unwrap()) {
                &args[1]
            } else {
                &args[2]
            };
            if branch["Ref"] == "AWS::NoValue" {
                None
            } else {
                env_value(branch, params, holds)
            }
        }
        Value::Object(m) if m.contains_key("Ref") => {
            let name = m["Ref"].as_str().unwrap();
            Some(
                // An empty parameter is an empty variable, which the configs read as unset.
                params
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| format!("value-of-{name}")),
            )
        }
        Value::Object(m) if m.contains_key("Fn::Join") => {
            env_value(&m["Fn::Join"][1], params, holds)
        }
        Value::Object(_) => Some("value".into()),
        other => panic!("unexpected environment value {other}"),
    }
}

/// The variable definitions of a function (the globals' and its own).
fn variables(t: &Value, function: &Value) -> Vec<(String, Value)> {
    let mut vars = Vec::new();
    for source in [&t["Globals"]["Function"], &function["Properties"]] {
        if let Some(map) = source["Environment"]["Variables"].as_object() {
            vars.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    vars
}

/// Every variable a function may get, under any choice.
fn variable_names(t: &Value, function: &Value) -> BTreeSet<String> {
    variables(t, function).into_iter().map(|v| v.0).collect()
}

/// The environment a function gets under `choice`.
fn environment(t: &Value, function: &Value, choice: &Choice) -> Vec<(String, String)> {
    let mut params = parameter_defaults(t);
    for (k, v) in choice.parameters {
        params.insert(k.to_string(), v.to_string());
    }
    let holds = |c: &str| choice.holds.contains(&c) || OPTIONAL_FEATURES.contains(&c);
    variables(t, function)
        .into_iter()
        .filter_map(|(name, v)| env_value(&v, &params, &holds).map(|value| (name, value)))
        .collect()
}

/// Runs a function's config reader over `env`; returns whether it accepted it.
fn read_config(krate: &str, env: &Env) -> Result<(), String> {
    let e = |r: Result<(), telemetry_shared::config::ConfigError>| r.map_err(|e| e.to_string());
    match krate {
        "ingest" => e(ingest::Config::from_env(env).map(drop)),
        "store" => e(store::Config::from_env(env).map(drop)),
        "forward" => e(forward::Config::from_env(env).map(drop)),
        "post-process" => e(post_process::Config::from_env(env).map(drop)),
        "query" => e(query::Config::from_env(env).map(drop)),
        other => Err(format!("no config reader known for {other}")),
    }
}

#[test]
fn template_environment_matches_each_config() {
    let t = cfn::template();
    for (id, f) in functions(&t) {
        let krate = crate_of(&id);
        // Every identity choice the Rules accept gives an environment the config accepts...
        let mut read = BTreeSet::new();
        for choice in IDENTITY_CHOICES {
            let env = Env::from_map(environment(&t, f, choice));
            read_config(&krate, &env).unwrap_or_else(|e| panic!("{id} with {}: {e}", choice.name));
            read.extend(env.names_read());
        }
        // ... and everything the template can set is read.
        for name in variable_names(&t, f) {
            assert!(
                read.contains(&name) || READ_OUTSIDE_CONFIG.contains(&name.as_str()),
                "{id} sets {name}, which its config never reads"
            );
        }
    }
}

#[test]
fn the_identity_choices_are_what_the_rules_accept() {
    let t = cfn::template();
    for choice in IDENTITY_CHOICES {
        let mut parameters: BTreeMap<&str, Value> = BTreeMap::from([
            ("JwtIssuer", json!("")),
            ("JwtIssuers", json!("")),
            ("JwtPublicKey", json!("")),
            ("JwtJwksUrl", json!("")),
            ("JwtSecretArn", json!("")),
            ("JwtSecretKmsKeyArn", json!("")),
            ("JwtAlgorithms", json!(["RS256"])),
        ]);
        for (k, v) in choice.parameters {
            if parameters.contains_key(k) {
                parameters.insert(
                    k,
                    if *k == "JwtAlgorithms" {
                        json!([v])
                    } else {
                        json!(v)
                    },
                );
            }
        }
        assert_eq!(rules_accept(&t, &parameters), Ok(()), "{}", choice.name);
    }
}

/// The functions CloudFormation allows in `Rules` (anything else fails change-set creation).
const RULE_FUNCTIONS: &[&str] = &[
    "Fn::And",
    "Fn::Contains",
    "Fn::EachMemberEquals",
    "Fn::EachMemberIn",
    "Fn::Equals",
    "Fn::Not",
    "Fn::Or",
    "Fn::RefAll",
    "Fn::ValueOf",
    "Fn::ValueOfAll",
    "Ref",
];

#[test]
fn rules_use_only_rule_functions() {
    let t = cfn::template();
    let rules = t["Rules"].as_object().expect("Rules");
    assert!(!rules.is_empty());
    for (name, rule) in rules {
        for node in nodes(rule) {
            for key in node.as_object().into_iter().flat_map(|m| m.keys()) {
                let is_function = key.starts_with("Fn::") || key == "Ref" || key == "Condition";
                assert!(
                    !is_function || RULE_FUNCTIONS.contains(&key.as_str()),
                    "rule {name} uses {key}, which CloudFormation refuses in Rules"
                );
            }
        }
    }
}

/// Evaluates a rule expression with `parameters` (strings; lists for CommaDelimitedList).
fn evaluate(v: &Value, parameters: &BTreeMap<&str, Value>) -> Value {
    let args = |name: &str| v[name].as_array().unwrap().clone();
    let strings = |v: Value| -> Vec<String> {
        match v {
            Value::Array(items) => items
                .into_iter()
                .map(|i| i.as_str().unwrap().to_string())
                .collect(),
            other => panic!("not a list: {other}"),
        }
    };
    let Some((function, _)) = v.as_object().and_then(|m| m.iter().next()) else {
        return v.clone();
    };
    match function.as_str() {
        "Ref" => parameters[v["Ref"].as_str().unwrap()].clone(),
        "Fn::Equals" => {
            let a = args("Fn::Equals");
            json!(evaluate(&a[0], parameters) == evaluate(&a[1], parameters))
        }
        "Fn::Not" => json!(!evaluate(&args("Fn::Not")[0], parameters).as_bool().unwrap()),
        "Fn::And" => json!(
            args("Fn::And")
                .iter()
                .all(|a| evaluate(a, parameters).as_bool().unwrap())
        ),
        "Fn::Or" => json!(
            args("Fn::Or")
                .iter()
                .any(|a| evaluate(a, parameters).as_bool().unwrap())
        ),
        "Fn::Contains" => {
            let a = args("Fn::Contains");
            let list = strings(evaluate(&a[0], parameters));
            json!(list.contains(&evaluate(&a[1], parameters).as_str().unwrap().to_string()))
        }
        "Fn::EachMemberIn" => {
            let a = args("Fn::EachMemberIn");
            let members = strings(evaluate(&a[0], parameters));
            let allowed = strings(evaluate(&a[1], parameters));
            json!(members.iter().all(|m| allowed.contains(m)))
        }
        other => panic!("no evaluator for {other}"),
    }
}

/// Whether the template's `Rules` accept these parameters; the failed descriptions otherwise.
fn rules_accept(t: &Value, parameters: &BTreeMap<&str, Value>) -> Result<(), Vec<String>> {
    let mut failed = Vec::new();
    for rule in t["Rules"].as_object().unwrap().values() {
        if let Some(condition) = rule.get("RuleCondition")
            && !evaluate(condition, parameters).as_bool().unwrap()
        {
            continue;
        }
        for assertion in rule["Assertions"].as_array().unwrap() {
            if !evaluate(&assertion["Assert"], parameters)
                .as_bool()
                .unwrap()
            {
                failed.push(assertion["AssertDescription"].as_str().unwrap().to_string());
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed)
    }
}

#[test]
fn rules_accept_exactly_the_key_settings_the_functions_accept() {
    let t = cfn::template();
    let algorithm_choices: &[&[&str]] = &[
        &["RS256"],
        &["RS256", "ES256"],
        &["HS256"],
        &["HS256", "HS512"],
        &["RS256", "HS256"],
    ];
    let mut seen = (0, 0);
    for key_bits in 0u8..8 {
        for algorithms in algorithm_choices {
            let set = |bit: u8, value: &str| {
                if key_bits & bit != 0 {
                    value.to_string()
                } else {
                    String::new()
                }
            };
            let public_key = set(1, "-----BEGIN PUBLIC KEY-----");
            let jwks = set(2, "https://idp.example.com/.well-known/jwks.json");
            let secret = set(
                4,
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:jwt",
            );
            let parameters: BTreeMap<&str, Value> = BTreeMap::from([
                ("JwtIssuer", json!("issuer")),
                ("JwtIssuers", json!("")),
                ("JwtPublicKey", json!(public_key)),
                ("JwtJwksUrl", json!(jwks)),
                ("JwtSecretArn", json!(secret)),
                ("JwtSecretKmsKeyArn", json!("")),
                ("JwtAlgorithms", json!(algorithms)),
            ]);
            // What the functions' config accepts for the same settings (the environment the
            // template would give them).
            let mut env = vec![
                ("JWT_ALGORITHMS", algorithms.join(",")),
                ("JWT_ISSUER", "issuer".into()),
                ("JWT_AUDIENCE", "telemetry".into()),
            ];
            for (name, value) in [
                ("JWT_PUBLIC_KEY", &public_key),
                ("JWT_JWKS_URL", &jwks),
                ("JWT_SECRET_ARN", &secret),
            ] {
                if !value.is_empty() {
                    env.push((name, value.clone()));
                }
            }
            let functions = AuthConfig::from_env(&Env::from_map(env));
            let rules = rules_accept(&t, &parameters);
            assert_eq!(
                rules.is_ok(),
                functions.is_ok(),
                "keys {key_bits:03b}, {algorithms:?}: rules {rules:?}, functions {:?}",
                functions.err().map(|e| e.to_string())
            );
            if rules.is_ok() {
                seen.0 += 1;
            } else {
                seen.1 += 1;
            }
        }
    }
    assert!(seen.0 >= 4 && seen.1 >= 20, "{seen:?}");
    // A customer key without a secret to decrypt is refused too.
    let base = BTreeMap::from([
        ("JwtIssuer", json!("issuer")),
        ("JwtIssuers", json!("")),
        ("JwtPublicKey", json!("pem")),
        ("JwtJwksUrl", json!("")),
        ("JwtSecretArn", json!("")),
        ("JwtSecretKmsKeyArn", json!("")),
        ("JwtAlgorithms", json!(["RS256"])),
    ]);
    assert_eq!(rules_accept(&t, &base), Ok(()));
    let with = |changes: &[(&'static str, Value)]| {
        let mut p = base.clone();
        p.extend(changes.iter().cloned());
        rules_accept(&t, &p)
    };
    assert!(with(&[("JwtSecretKmsKeyArn", json!("arn:aws:kms:eu-west-1:1:key/k"))]).is_err());
    // One issuer or several, never both or neither; several carry their own keys.
    let issuers = json!(r#"[{"issuer":"https://a","audience":"x"}]"#);
    assert!(with(&[("JwtIssuer", json!(""))]).is_err());
    assert!(with(&[("JwtIssuers", issuers.clone())]).is_err());
    assert!(with(&[("JwtIssuer", json!("")), ("JwtIssuers", issuers.clone())]).is_err());
    assert_eq!(
        with(&[
            ("JwtIssuer", json!("")),
            ("JwtIssuers", issuers),
            ("JwtPublicKey", json!(""))
        ]),
        Ok(())
    );
}

/// Attributes SAM adds to a function and pseudo parameters.
const PSEUDO: &[&str] = &[
    "AWS::AccountId",
    "AWS::NoValue",
    "AWS::Partition",
    "AWS::Region",
    "AWS::StackName",
    "AWS::StackId",
    "AWS::URLSuffix",
];

/// Names `${...}` refers to in a `Fn::Sub` string.
fn sub_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}').expect("unclosed ${");
        let name = &after[..end];
        if !name.starts_with('!') {
            out.push(name.split('.').next().unwrap().to_string());
        }
        rest = &after[end + 1..];
    }
    out
}

#[test]
fn every_reference_names_a_parameter_a_resource_or_a_pseudo_parameter() {
    let t = cfn::template();
    let mut known: BTreeSet<String> = t["Parameters"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    known.extend(resources(&t).map(|(k, _)| k.clone()));
    // What SAM generates and lets templates refer to.
    known.extend(stream_mappings(&t).into_iter().map(|m| m.0));
    for (id, _) in functions(&t) {
        known.insert(format!("{id}Role"));
    }
    known.extend(PSEUDO.iter().map(|s| s.to_string()));
    let conditions: BTreeSet<&String> = t["Conditions"].as_object().unwrap().keys().collect();

    for (section, body) in [("Resources", &t["Resources"]), ("Outputs", &t["Outputs"])] {
        for node in nodes(body) {
            let Some(m) = node.as_object() else { continue };
            if let Some(Value::String(name)) = m.get("Ref") {
                assert!(known.contains(name), "{section}: !Ref {name} names nothing");
            }
            if let Some(Value::Array(parts)) = m.get("Fn::GetAtt") {
                let name = parts[0].as_str().unwrap();
                assert!(
                    known.contains(name),
                    "{section}: !GetAtt {name} names nothing"
                );
            }
            if let Some(sub) = m.get("Fn::Sub") {
                let (text, vars) = match sub {
                    Value::String(s) => (s.as_str(), None),
                    Value::Array(a) => (a[0].as_str().unwrap(), a[1].as_object()),
                    other => panic!("Fn::Sub {other}"),
                };
                for name in sub_names(text) {
                    assert!(
                        known.contains(&name) || vars.is_some_and(|v| v.contains_key(&name)),
                        "{section}: ${{{name}}} in a !Sub names nothing"
                    );
                }
            }
            if let Some(Value::Array(parts)) = m.get("Fn::If") {
                let name = parts[0].as_str().unwrap().to_string();
                assert!(
                    conditions.contains(&name),
                    "!If on unknown condition {name}"
                );
            }
        }
    }
}

/// Every IAM policy statement of the template: (role, statement), `!If` branches included.
fn statements(t: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (id, role) in of_type(t, "AWS::IAM::Role") {
        for policy in role["Properties"]["Policies"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for s in policy["PolicyDocument"]["Statement"].as_array().unwrap() {
                match s.get("Fn::If") {
                    Some(branches) => {
                        for b in &branches.as_array().unwrap()[1..] {
                            if b.get("Ref") != Some(&json!("AWS::NoValue")) {
                                out.push((id.clone(), b.clone()));
                            }
                        }
                    }
                    None => out.push((id.clone(), s.clone())),
                }
            }
        }
    }
    out
}

fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

#[test]
fn no_kms_statement_names_an_alias() {
    // An alias ARN in a policy grants nothing (policies match key ARNs); the AWS-managed keys
    // of Kinesis and Secrets Manager need no statement at all.
    let t = cfn::template();
    let all = statements(&t);
    assert!(all.len() > 10);
    for (role, s) in all {
        let actions = list(&s["Action"]);
        if !actions
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("kms:"))
        {
            continue;
        }
        for node in nodes(&s["Resource"]) {
            if let Some(text) = node.as_str() {
                assert!(
                    !text.contains(":alias/"),
                    "{role}: KMS statement on an alias: {text}"
                );
            }
        }
        // The one KMS grant: the secret's customer key, only through Secrets Manager.
        assert_eq!(
            s["Resource"],
            json!({"Ref": "JwtSecretKmsKeyArn"}),
            "{role}"
        );
        assert!(
            s["Condition"]["StringEquals"]["kms:ViaService"].is_object(),
            "{role}"
        );
    }
}

#[test]
fn secret_statements_grant_the_arn_with_and_without_its_suffix() {
    let t = cfn::template();
    let mut roles = BTreeSet::new();
    for (role, s) in statements(&t) {
        if !list(&s["Action"]).contains(&json!("secretsmanager:GetSecretValue")) {
            continue;
        }
        assert_eq!(
            list(&s["Resource"]),
            [
                json!({"Ref": "JwtSecretArn"}),
                json!({"Fn::Sub": "${JwtSecretArn}-??????"})
            ],
            "{role}"
        );
        roles.insert(role);
    }
    assert_eq!(
        roles,
        BTreeSet::from(["IngestRole".into(), "QueryRole".into()])
    );
}

/// The queue names of the stack's own queues, as `!Sub` texts.
fn queue_names(t: &Value) -> Vec<String> {
    of_type(t, "AWS::SQS::Queue")
        .map(|(id, q)| {
            q["Properties"]["QueueName"]["Fn::Sub"]
                .as_str()
                .unwrap_or_else(|| panic!("{id}: QueueName is a !Sub on the stack name"))
                .to_string()
        })
        .collect()
}

#[test]
fn forward_sends_only_to_this_stacks_route_queues_and_its_dead_letter_queue() {
    let t = cfn::template();
    const PREFIX: &str = "${AWS::StackName}_";
    let sends: Vec<Value> = statements(&t)
        .into_iter()
        .filter(|(_, s)| list(&s["Action"]).contains(&json!("sqs:SendMessage")))
        .filter(|(role, _)| role == "ForwardRole")
        .flat_map(|(_, s)| list(&s["Resource"]))
        .collect();
    assert_eq!(
        sends,
        [
            json!({"Fn::Sub": format!("arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{PREFIX}*")}),
            json!({"Fn::GetAtt": ["ForwardDeadLetterQueue", "Arn"]}),
        ]
    );
    // Stack names are [A-Za-z][A-Za-z0-9-]*: no "_", so "<stack>_" belongs to one stack only,
    // and none of this stack's own queues may look like a route queue.
    for name in queue_names(&t) {
        assert!(name.starts_with("${AWS::StackName}-"), "{name}");
        assert!(!name.starts_with(PREFIX), "{name} would be a route queue");
    }
    // query refuses routes to any other queue, with the same prefix.
    let query = &functions(&t)["QueryFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(query["ROUTE_QUEUE_PREFIX"], json!({"Fn::Sub": PREFIX}));
    // And the README's route example names a queue forward may send to (stack `telemetry`).
    let readme = read("README.md");
    let example = readme
        .split("\"queueUrl\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("README has a route example");
    let queue = example.rsplit('/').next().unwrap();
    assert!(
        queue.starts_with("telemetry_"),
        "README example queue {queue}"
    );
}

#[test]
fn post_process_lag_alarms_at_an_hour() {
    let t = cfn::template();
    let alarm = alarms(&t)["PostProcessIteratorAgeAlarm"];
    assert_eq!(alarm["MetricName"], "IteratorAge");
    assert_eq!(
        alarm["Dimensions"][0]["Value"],
        json!({"Ref": "PostProcessFunction"})
    );
    let threshold = alarm["Threshold"].as_f64().unwrap();
    let window = alarm["Period"].as_f64().unwrap() * alarm["EvaluationPeriods"].as_f64().unwrap();
    // An hour: well inside the stream's 24 h, past the ordinary backlog of a burst.
    assert_eq!(threshold, 3_600_000.0);
    assert!(window <= 600.0, "the alarm waits {window} s more");
}

#[test]
fn post_process_waits_longer_for_its_batches_than_a_window_but_within_one() {
    let t = cfn::template();
    let defaults = parameter_defaults(&t);
    let mapping = stream_mappings(&t)
        .into_iter()
        .find(|(_, f, _)| f == "PostProcessFunction")
        .map(|(_, _, m)| m)
        .expect("post-process has a stream mapping");
    assert_eq!(
        mapping["MaximumBatchingWindowInSeconds"],
        json!({"Ref": "CountsBatchingWindowSeconds"})
    );
    let wait: u32 = defaults["CountsBatchingWindowSeconds"].parse().unwrap();
    let window: u32 = defaults["CountsWindowSeconds"].parse().unwrap();
    // The simulation behind the units per event in `make bench` batches the same way.
    assert_eq!(wait, telemetry_e2e::units::scenarios()[0].batching_seconds);
    assert!(wait > 1 && wait < window, "{wait} s in a {window} s window");
}

/// The (namespace, metric, dimensions) of every metric an alarm reads.
fn alarm_metrics(alarm: &Value) -> Vec<(String, String, BTreeMap<String, Value>)> {
    let dims = |d: &Value| -> BTreeMap<String, Value> {
        d.as_array()
            .into_iter()
            .flatten()
            .map(|d| (d["Name"].as_str().unwrap().to_string(), d["Value"].clone()))
            .collect()
    };
    if let Some(ns) = alarm["Namespace"].as_str() {
        return vec![(
            ns.into(),
            alarm["MetricName"].as_str().unwrap().into(),
            dims(&alarm["Dimensions"]),
        )];
    }
    alarm["Metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let metric = &m["MetricStat"]["Metric"];
            Some((
                metric["Namespace"].as_str()?.into(),
                metric["MetricName"].as_str()?.into(),
                dims(&metric["Dimensions"]),
            ))
        })
        .collect()
}

#[test]
fn every_index_has_a_throttle_alarm() {
    let t = cfn::template();
    let all: Vec<_> = alarms(&t).values().flat_map(|a| alarm_metrics(a)).collect();
    let mut indexes = 0;
    for (table, r) in of_type(&t, "AWS::DynamoDB::Table") {
        for index in r["Properties"]["GlobalSecondaryIndexes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            indexes += 1;
            let name = index["IndexName"].as_str().unwrap();
            let watched = all.iter().any(|(ns, metric, d)| {
                ns == "AWS/DynamoDB"
                    && metric == "WriteThrottleEvents"
                    && d.get("TableName") == Some(&json!({"Ref": table}))
                    && d.get("GlobalSecondaryIndexName") == Some(&json!(name))
            });
            assert!(
                watched,
                "{table} index {name}: no alarm on its write throttles"
            );
        }
    }
    assert!(indexes >= 1);
}

#[test]
fn every_stream_mapping_reports_event_counts_and_has_drop_and_stall_alarms() {
    let t = cfn::template();
    let all: Vec<_> = alarms(&t)
        .into_iter()
        .flat_map(|(id, a)| alarm_metrics(a).into_iter().map(move |m| (id.clone(), m)))
        .collect();
    let mappings = stream_mappings(&t);
    assert_eq!(mappings.len(), 3);
    for (mapping, function, props) in mappings {
        assert_eq!(
            props["MetricsConfig"],
            json!({"Metrics": ["EventCount"]}),
            "{mapping}"
        );
        let on = |metric: &str| -> Vec<String> {
            all.iter()
                .filter(|(_, (ns, m, d))| {
                    ns == "AWS/Lambda"
                        && m == metric
                        && d.get("EventSourceMappingUUID") == Some(&json!({"Ref": mapping}))
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        assert!(
            !on("DroppedEventCount").is_empty(),
            "{function}: no dropped-records alarm"
        );
        let stall = on("PolledEventCount");
        assert_eq!(stall.len(), 1, "{function}: one stall alarm");
        assert_eq!(alarms(&t)[&stall[0]]["TreatMissingData"], "breaching");
    }
}

/// How each alarm treats missing data, and why: failure counts are quiet when nothing failed
/// (`notBreaching`), a stalled pipeline shows as no data (`breaching`).
const MISSING_DATA: &[(&str, &str)] = &[
    ("DeadLettersAlarm", "notBreaching"),
    ("FailedRecordsAlarm", "notBreaching"),
    ("ForwardDeadLetteredAlarm", "notBreaching"),
    ("RecordsFailedAlarm", "notBreaching"),
    ("StoreIteratorAgeAlarm", "notBreaching"),
    ("ForwardIteratorAgeAlarm", "notBreaching"),
    ("PostProcessIteratorAgeAlarm", "notBreaching"),
    ("StreamRecordsDroppedAlarm", "notBreaching"),
    ("StoreStalledAlarm", "breaching"),
    ("ForwardStalledAlarm", "breaching"),
    ("PostProcessStalledAlarm", "breaching"),
    ("FunctionErrorsAlarm", "notBreaching"),
    ("FunctionThrottlesAlarm", "notBreaching"),
    ("AccountConcurrencyAlarm", "notBreaching"),
    ("DynamoDbThrottlesAlarm", "notBreaching"),
    ("EventsIndexThrottlesAlarm", "notBreaching"),
    ("Api5xxRateAlarm", "notBreaching"),
    ("KinesisWriteThrottlesAlarm", "notBreaching"),
];

#[test]
fn every_alarm_treats_missing_data_as_chosen_for_it() {
    let t = cfn::template();
    let chosen: BTreeMap<&str, &str> = MISSING_DATA.iter().copied().collect();
    let found = alarms(&t);
    for (id, alarm) in &found {
        let expected = chosen
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{id}: choose its TreatMissingData in MISSING_DATA"));
        assert_eq!(alarm["TreatMissingData"], *expected, "{id}");
    }
    assert_eq!(
        found.len(),
        chosen.len(),
        "MISSING_DATA lists alarms the template lacks"
    );
}

#[test]
fn sums_in_alarm_expressions_fill_every_metric() {
    let t = cfn::template();
    let mut sums = 0;
    for (id, alarm) in alarms(&t) {
        let metrics = alarm["Metrics"].as_array().into_iter().flatten();
        let ids: Vec<&str> = metrics
            .clone()
            .filter(|m| m.get("MetricStat").is_some())
            .map(|m| m["Id"].as_str().unwrap())
            .collect();
        for m in metrics {
            let Some(expr) = m["Expression"].as_str() else {
                continue;
            };
            if !expr.contains('+') {
                continue;
            }
            sums += 1;
            for metric in &ids {
                let bare = expr.replace(&format!("FILL({metric}, 0)"), "");
                let used_bare = bare
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|word| word == *metric);
                assert!(
                    !used_bare,
                    "{id}: {metric} is summed without FILL({metric}, 0): {expr}"
                );
            }
        }
    }
    assert!(sums >= 5);
}

#[test]
fn every_alarm_has_a_runbook_entry() {
    let t = cfn::template();
    let runbook = read("docs/RUNBOOK.md");
    for id in alarms(&t).keys() {
        assert!(
            runbook.contains(&format!("## {id}")),
            "docs/RUNBOOK.md has no `## {id}` section"
        );
    }
}

/// Names of `Telemetry` metrics used by the dashboard and the alarms.
fn telemetry_metrics(t: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for alarm in alarms(t).values() {
        for (ns, metric, d) in alarm_metrics(alarm) {
            if ns == "Telemetry" {
                names.insert(metric);
                let function = d["Function"].as_str().unwrap();
                assert!(
                    ["ingest", "store", "forward", "post-process", "query"].contains(&function),
                    "unknown Function dimension {function}"
                );
            }
        }
    }
    for (_, dashboard) in of_type(t, "AWS::CloudWatch::Dashboard") {
        // `!Sub [body, vars]`: the body is JSON with ${...} only inside strings.
        let body = match &dashboard["Properties"]["DashboardBody"]["Fn::Sub"] {
            Value::Array(parts) => parts[0].as_str().unwrap().to_string(),
            Value::String(s) => s.clone(),
            other => panic!("dashboard body {other}"),
        };
        let dashboard: Value = serde_json::from_str(&body).expect("dashboard body is JSON");
        for widget in dashboard["widgets"].as_array().unwrap() {
            for m in widget["properties"]["metrics"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let m = m.as_array().unwrap();
                if m[0] == "Telemetry" {
                    names.insert(m[1].as_str().unwrap().to_string());
                    assert_eq!(m[2], "Function");
                    let function = m[3].as_str().unwrap();
                    assert!(
                        ["ingest", "store", "forward", "post-process", "query"].contains(&function),
                        "unknown Function dimension {function}"
                    );
                }
                if let Some(expr) = m[0]["expression"].as_str() {
                    for part in expr
                        .split("MetricName=\\\"")
                        .skip(1)
                        .chain(expr.split("MetricName=\"").skip(1))
                    {
                        names.insert(part.split(['\\', '"']).next().unwrap().to_string());
                    }
                }
            }
        }
    }
    names
}

#[test]
fn dashboard_and_alarms_use_only_metrics_the_code_emits() {
    let emitted: BTreeSet<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
    let used = telemetry_metrics(&cfn::template());
    assert!(used.len() >= 10, "{used:?}");
    for name in &used {
        assert!(
            emitted.contains(name.as_str()),
            "{name} is on the dashboard but no code emits it"
        );
    }
    // And each metric of the vocabulary really is emitted somewhere.
    // Production code only: a metric named in a unit test is not emitted.
    let production = |path: &str| {
        let text = read(path);
        match text.find("#[cfg(test)]") {
            Some(tests) => text[..tests].to_string(),
            None => text,
        }
    };
    let mut sources = String::new();
    for dir in [
        "functions/ingest",
        "functions/store",
        "functions/forward",
        "functions/post-process",
        "functions/query",
    ] {
        sources += &production(&format!("{dir}/src/lib.rs"));
    }
    sources += &production("shared/src/metrics.rs");
    for m in Metric::ALL {
        let used_in_code = match m {
            // `Metrics::rejected` emits it.
            Metric::EventsRejected => sources.contains("metrics.rejected("),
            _ => sources.contains(&format!("Metric::{}", m.name())),
        };
        assert!(used_in_code, "{} is declared but never emitted", m.name());
    }
}

#[test]
fn the_local_gateway_routes_exactly_the_templates_http_api() {
    use telemetry_cli::local::gateway::{ROUTES, Target};
    let t = cfn::template();
    let mut declared = BTreeSet::new();
    for (id, f) in functions(&t) {
        for event in f["Properties"]["Events"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, e)| e)
        {
            if event["Type"] == "HttpApi" {
                let p = &event["Properties"];
                declared.insert((
                    p["Method"].as_str().unwrap().to_uppercase(),
                    p["Path"].as_str().unwrap().to_string(),
                    id.clone(),
                ));
            }
        }
    }
    let local: BTreeSet<(String, String, String)> = ROUTES
        .iter()
        .map(|(method, path, target)| {
            let function = match target {
                Target::Ingest => "IngestFunction",
                Target::Query => "QueryFunction",
            };
            (method.to_string(), path.to_string(), function.to_string())
        })
        .collect();
    assert_eq!(local, declared);
}

#[test]
fn the_local_stack_configures_every_function_with_variables_the_template_gives_it() {
    use telemetry_cli::local::FunctionConfigs;
    use telemetry_cli::local::resources::ResourceNames;
    let t = cfn::template();
    let declared = functions(&t);
    let local = FunctionConfigs::variables(&ResourceNames::with_prefix("x"));
    assert_eq!(
        local
            .keys()
            .map(|id| id.to_string())
            .collect::<BTreeSet<_>>(),
        declared.keys().cloned().collect::<BTreeSet<_>>(),
        "the local stack configures exactly the template's functions"
    );
    for (id, vars) in &local {
        let names = variable_names(&t, declared[*id]);
        for (name, _) in vars {
            assert!(
                names.contains(*name),
                "the local stack sets {name} for {id}, which the template does not"
            );
        }
    }
}

#[test]
fn the_local_tables_have_the_templates_keys_indexes_streams_and_ttl() {
    use telemetry_cli::local::resources::{ResourceNames, table_specs};
    let t = cfn::template();
    let specs = table_specs(&ResourceNames::with_prefix("x"));
    let declared: BTreeSet<&String> = of_type(&t, "AWS::DynamoDB::Table")
        .map(|(id, _)| id)
        .collect();
    let local: BTreeSet<String> = specs.iter().map(|s| s.logical_id.to_string()).collect();
    assert_eq!(local, declared.into_iter().cloned().collect());
    let keys = |schema: &Value| -> (String, Option<String>) {
        let of = |kind: &str| {
            schema
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["KeyType"] == kind)
                .map(|k| k["AttributeName"].as_str().unwrap().to_string())
        };
        (of("HASH").unwrap(), of("RANGE"))
    };
    for spec in specs {
        let p = &t["Resources"][spec.logical_id]["Properties"];
        assert_eq!(
            keys(&p["KeySchema"]),
            (spec.hash.to_string(), spec.range.map(str::to_string)),
            "{}",
            spec.logical_id
        );
        let indexes: Vec<(String, String, String)> = p["GlobalSecondaryIndexes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                assert_eq!(i["Projection"]["ProjectionType"], "ALL");
                let (hash, range) = keys(&i["KeySchema"]);
                (
                    i["IndexName"].as_str().unwrap().into(),
                    hash,
                    range.unwrap(),
                )
            })
            .collect();
        let local: Vec<(String, String, String)> = spec
            .indexes
            .iter()
            .map(|(n, h, r)| (n.to_string(), h.to_string(), r.to_string()))
            .collect();
        assert_eq!(local, indexes, "{} indexes", spec.logical_id);
        assert_eq!(
            spec.stream.as_ref().map(|v| v.as_str().to_string()),
            p["StreamSpecification"]["StreamViewType"]
                .as_str()
                .map(str::to_string),
            "{} stream",
            spec.logical_id
        );
        assert_eq!(
            spec.ttl,
            p["TimeToLiveSpecification"]["AttributeName"].as_str(),
            "{} TTL",
            spec.logical_id
        );
    }
}

#[test]
fn security_md_lists_every_action_each_role_may_take() {
    // The data actions (DynamoDB, SQS, Secrets Manager, KMS, Kinesis writes): each must be named
    // in its function's row of SECURITY.md's IAM table. (Stream reads, logs and the failures
    // bucket are described there in words.)
    let t = cfn::template();
    let security = read("SECURITY.md");
    let row = |function: &str| -> String {
        security
            .lines()
            .find(|l| l.starts_with(&format!("| {function} |")))
            .unwrap_or_else(|| panic!("SECURITY.md has no IAM row for {function}"))
            .split(" | ")
            .nth(1)
            .unwrap()
            .to_string()
    };
    for (role, statement) in statements(&t) {
        let function = crate_of(role.trim_end_matches("Role"));
        let may = row(&function);
        for action in list(&statement["Action"]) {
            let action = action.as_str().unwrap();
            let (service, name) = action.split_once(':').unwrap();
            let described_in_words = matches!(service, "logs" | "s3")
                || (service == "kinesis" && name != "PutRecords")
                || (service == "dynamodb" && name.ends_with("Streams"))
                || (service == "dynamodb"
                    && ["DescribeStream", "GetRecords", "GetShardIterator"].contains(&name));
            assert!(
                described_in_words || may.contains(name),
                "SECURITY.md: {function} may {action}, which its row does not say"
            );
        }
    }
}
