//! `template.yaml` agrees with the code: every function's binary exists, every environment
//! variable the template sets is read by that function's config and every one it requires is
//! set, and the dashboard and alarms use only metric names the code emits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use telemetry_shared::config::Env;
use telemetry_shared::metrics::Metric;
use yaml_rust2::{Yaml, YamlLoader};

/// Read by the logging set-up (`RUST_LOG`), not by a config struct.
const READ_OUTSIDE_CONFIG: &[&str] = &["RUST_LOG"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn template() -> Yaml {
    let text = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    // Tags such as !Ref are dropped by the loader; their operands remain.
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

fn functions(t: &Yaml) -> BTreeMap<String, &Yaml> {
    t["Resources"]
        .as_hash()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .map(|(k, r)| (k.as_str().unwrap().to_string(), r))
        .collect()
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

/// Environment variables a function gets: (name, value for the test, conditional?).
fn environment(t: &Yaml, function: &Yaml) -> Vec<(String, String, bool)> {
    let defaults: BTreeMap<&str, String> = t["Parameters"]
        .as_hash()
        .unwrap()
        .iter()
        .map(|(k, p)| {
            let default = match &p["Default"] {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(i) => i.to_string(),
                _ => String::new(),
            };
            (k.as_str().unwrap(), default)
        })
        .collect();
    let mut vars = Vec::new();
    for source in [&t["Globals"]["Function"], &function["Properties"]] {
        let Some(map) = source["Environment"]["Variables"].as_hash() else {
            continue;
        };
        for (k, v) in map {
            let name = k.as_str().unwrap().to_string();
            let (value, conditional) = match v {
                // `!If [cond, value, !Ref AWS::NoValue]`: set only under a condition.
                Yaml::Array(_) => ("value".to_string(), true),
                Yaml::String(s) => (
                    defaults
                        .get(s.as_str())
                        .cloned()
                        .filter(|d| !d.is_empty())
                        .unwrap_or_else(|| s.clone()),
                    false,
                ),
                Yaml::Integer(i) => (i.to_string(), false),
                other => panic!("{name}: unexpected value {other:?}"),
            };
            vars.push((name, value, conditional));
        }
    }
    vars
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
fn every_function_has_a_binary_and_a_build_target() {
    let t = template();
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    let fs = functions(&t);
    assert_eq!(fs.len(), 5);
    for (id, f) in fs {
        let krate = crate_of(&id);
        let manifest =
            std::fs::read_to_string(root().join("functions").join(&krate).join("Cargo.toml"))
                .unwrap_or_else(|_| panic!("{id}: no crate functions/{krate}"));
        assert!(
            manifest.contains(&format!("name = \"{krate}\"")),
            "{id}: binary {krate}"
        );
        assert!(
            root()
                .join("functions")
                .join(&krate)
                .join("src/main.rs")
                .exists()
        );
        assert!(
            makefile.contains(&format!("build-{id}")),
            "{id}: no build-{id} target in the Makefile"
        );
        assert_eq!(
            f["Metadata"]["BuildMethod"].as_str(),
            Some("makefile"),
            "{id}"
        );
    }
}

#[test]
fn template_environment_matches_each_config() {
    let t = template();
    for (id, f) in functions(&t) {
        let krate = crate_of(&id);
        let vars = environment(&t, f);

        // Everything required is set: the unconditional variables, plus one of the
        // conditional key settings (JWT_PUBLIC_KEY or JWT_SECRET_ARN), suffice.
        // The JWT key variables are alternatives; other conditional ones are simply optional.
        let conditional: Vec<&String> = vars
            .iter()
            .filter(|v| v.2 && v.0.starts_with("JWT_"))
            .map(|v| &v.0)
            .collect();
        let base: Vec<(String, String)> = vars
            .iter()
            .filter(|v| !(v.2 && v.0.starts_with("JWT_")))
            .map(|v| (v.0.clone(), v.1.clone()))
            .collect();
        let choices: Vec<Option<&String>> = if conditional.is_empty() {
            vec![None]
        } else {
            conditional.iter().map(|c| Some(*c)).collect()
        };
        let mut read = BTreeSet::new();
        for choice in choices {
            let mut set = base.clone();
            set.extend(choice.map(|c| (c.clone(), "value".to_string())));
            let env = Env::from_map(set);
            read_config(&krate, &env).unwrap_or_else(|e| panic!("{id} with {choice:?}: {e}"));
            read.extend(env.names_read());
        }

        // Everything set is read.
        for (name, _, _) in &vars {
            assert!(
                read.contains(name) || READ_OUTSIDE_CONFIG.contains(&name.as_str()),
                "{id} sets {name}, which its config never reads"
            );
        }
    }
}

/// Names of `Telemetry` metrics used by the dashboard and the alarms.
fn telemetry_metrics(t: &Yaml) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, r) in t["Resources"].as_hash().unwrap() {
        match r["Type"].as_str() {
            Some("AWS::CloudWatch::Alarm") => {
                let p = &r["Properties"];
                if p["Namespace"].as_str() == Some("Telemetry") {
                    names.insert(p["MetricName"].as_str().unwrap().to_string());
                }
                for m in p["Metrics"].as_vec().into_iter().flatten() {
                    let metric = &m["MetricStat"]["Metric"];
                    if metric["Namespace"].as_str() == Some("Telemetry") {
                        names.insert(metric["MetricName"].as_str().unwrap().to_string());
                    }
                }
            }
            Some("AWS::CloudWatch::Dashboard") => {
                // `!Sub [body, vars]`: the body is JSON with ${...} only inside strings.
                let body = match &r["Properties"]["DashboardBody"] {
                    Yaml::Array(parts) => parts[0].as_str().unwrap().to_string(),
                    Yaml::String(s) => s.clone(),
                    other => panic!("dashboard body {other:?}"),
                };
                let dashboard: serde_json::Value =
                    serde_json::from_str(&body).expect("dashboard body is JSON");
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
                                ["ingest", "store", "forward", "post-process", "query"]
                                    .contains(&function),
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
            _ => {}
        }
    }
    names
}

#[test]
fn dashboard_and_alarms_use_only_metrics_the_code_emits() {
    let emitted: BTreeSet<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
    let used = telemetry_metrics(&template());
    assert!(used.len() >= 10, "{used:?}");
    for name in &used {
        assert!(
            emitted.contains(name.as_str()),
            "{name} is on the dashboard but no code emits it"
        );
    }
    // And each metric of the vocabulary really is emitted somewhere.
    let mut sources = String::new();
    for dir in [
        "functions/ingest",
        "functions/store",
        "functions/forward",
        "functions/post-process",
        "functions/query",
    ] {
        sources += &std::fs::read_to_string(root().join(dir).join("src/lib.rs")).unwrap();
    }
    sources += &std::fs::read_to_string(root().join("shared/src/metrics.rs")).unwrap();
    for m in Metric::ALL {
        let used_in_code = match m {
            // `Metrics::rejected` emits it.
            Metric::EventsRejected => sources.contains("metrics.rejected("),
            _ => sources.contains(&format!("Metric::{}", m.name())),
        };
        assert!(used_in_code, "{} is declared but never emitted", m.name());
    }
}
