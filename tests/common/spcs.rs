//! Reading and checking Snowpark Container Services job specifications.
//!
//! YAML is parsed by Python's PyYAML (`yaml.safe_load`) and handed over as
//! JSON, so the crate needs no YAML dependency. The checks follow Snowflake's
//! service specification reference.

use miniserde::json::{self, Number, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::{skip_unless_ci, succeeds};

/// The instance family the specs must fit: CPU_X64_XS, 1 vCPU and 6 GiB.
pub const XS_MILLI_CPU: f64 = 1000.0;
pub const XS_MEMORY_BYTES: f64 = 6.0 * 1024.0 * 1024.0 * 1024.0;

/// Whether python3 with PyYAML is there; when not, after `skip_unless_ci`.
/// Asked once per test binary.
pub fn yaml_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    let available = *AVAILABLE.get_or_init(|| succeeds("python3", &["-c", "import yaml"]));
    if !available {
        skip_unless_ci("python3 with PyYAML (pip install pyyaml)");
    }
    available
}

/// Parses YAML text into a JSON value, or returns PyYAML's complaint.
pub fn parse_yaml(yaml: &str) -> Result<Value, String> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             try:\n    doc = yaml.safe_load(sys.stdin)\n\
             except yaml.YAMLError as e:\n    sys.stderr.write(str(e)); sys.exit(3)\n\
             json.dump(doc, sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    json::from_str(&String::from_utf8_lossy(&out.stdout))
        .map_err(|_| "PyYAML's JSON did not parse".to_string())
}

/// SPCS names (containers, volumes, endpoints): at most 63 characters of
/// lowercase letters, digits and '-', starting with a letter and ending with
/// a letter or digit.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn number(n: &Number) -> f64 {
    match n {
        Number::U64(u) => *u as f64,
        Number::I64(i) => *i as f64,
        Number::F64(f) => *f,
    }
}

/// A memory quantity (`16Mi`, `1Gi`, `500M`, `1048576`) in bytes.
pub fn memory_bytes(value: &Value) -> Option<f64> {
    let text = match value {
        Value::Number(n) => return Some(number(n)),
        Value::String(s) => s.as_str(),
        _ => return None,
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let amount: f64 = digits.parse().ok()?;
    let factor = match unit {
        "" => 1.0,
        "K" | "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(amount * factor)
}

/// A CPU quantity (`0.5`, `1`, `500m`) in thousandths of a vCPU.
pub fn milli_cpu(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => Some(number(n) * 1000.0),
        Value::String(s) => match s.strip_suffix('m') {
            Some(milli) => milli.parse().ok(),
            None => s.parse::<f64>().ok().map(|v| v * 1000.0),
        },
        _ => None,
    }
}

fn object(value: &Value) -> Option<&json::Object> {
    match value {
        Value::Object(o) => Some(o),
        _ => None,
    }
}

fn array(value: &Value) -> Option<&json::Array> {
    match value {
        Value::Array(a) => Some(a),
        _ => None,
    }
}

pub fn string(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// Follows a path of object keys.
pub fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| object(v)?.get(*key))
}

/// The containers of a spec (empty when there are none).
pub fn containers(spec: &Value) -> Vec<&Value> {
    at(spec, &["spec", "containers"])
        .and_then(array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn unknown_keys(problems: &mut Vec<String>, what: &str, value: &json::Object, allowed: &[&str]) {
    for key in value.keys() {
        if !allowed.contains(&key.as_str()) {
            problems.push(format!("{what}: unknown field '{key}'"));
        }
    }
}

/// Every problem found in a job specification; empty when it is valid.
pub fn check_spec(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(top) = object(doc) else {
        return vec!["the document is not a mapping".into()];
    };
    unknown_keys(
        &mut problems,
        "top level",
        top,
        &["spec", "serviceRoles", "capabilities"],
    );
    let Some(spec) = top.get("spec").and_then(object) else {
        problems.push("no 'spec' mapping".into());
        return problems;
    };
    unknown_keys(
        &mut problems,
        "spec",
        spec,
        &[
            "containers",
            "endpoints",
            "volumes",
            "logExporters",
            "platformMonitor",
        ],
    );

    // Which container output Snowflake copies to the account's event table.
    if let Some(exporters) = spec.get("logExporters") {
        check_log_exporters(&mut problems, exporters);
    }

    // Volumes first, so that mounts can be checked against them.
    let mut volume_names = Vec::new();
    let mut stage_volumes = Vec::new();
    if let Some(volumes) = spec.get("volumes") {
        let Some(volumes) = array(volumes) else {
            problems.push("spec.volumes is not a list".into());
            return problems;
        };
        for (i, volume) in volumes.iter().enumerate() {
            let what = format!("spec.volumes[{i}]");
            let Some(v) = object(volume) else {
                problems.push(format!("{what} is not a mapping"));
                continue;
            };
            unknown_keys(
                &mut problems,
                &what,
                v,
                &[
                    "name",
                    "source",
                    "size",
                    "stageConfig",
                    "blockConfig",
                    "uid",
                    "gid",
                ],
            );
            let name = v.get("name").and_then(string).unwrap_or("");
            check_new_name(&mut problems, &what, "volume", name, &mut volume_names);
            for id in ["uid", "gid"] {
                if let Some(value) = v.get(id) {
                    if !matches!(value, Value::Number(Number::U64(_))) {
                        problems.push(format!("{what}.{id} must be a whole number, like 65532"));
                    }
                }
            }
            match v.get("source").and_then(string) {
                Some("stage") => {
                    let stage = at(volume, &["stageConfig", "name"]).and_then(string).unwrap_or("");
                    if !stage.starts_with('@') || stage.len() < 2 {
                        problems.push(format!("{what}: stageConfig.name must be \"@<stage>\", got '{stage}'"));
                    }
                    stage_volumes.push(name.to_string());
                }
                Some("local") => {}
                Some("memory") | Some("block") => {
                    if v.get("size").is_none() {
                        problems.push(format!("{what}: a memory or block volume needs a size"));
                    }
                }
                Some(s) if s.starts_with('@') => problems.push(format!(
                    "{what}: source \"{s}\" is the deprecated stage mount v1; use source: stage with stageConfig.name"
                )),
                other => problems.push(format!("{what}: unknown source {other:?}")),
            }
        }
    }

    let Some(list) = spec.get("containers").and_then(array) else {
        problems.push("spec.containers is missing or not a list".into());
        return problems;
    };
    if list.is_empty() {
        problems.push("spec.containers is empty".into());
    }
    let mut container_names = Vec::new();
    let mut mounted = Vec::new();
    for (i, container) in list.iter().enumerate() {
        let what = format!("spec.containers[{i}]");
        let Some(c) = object(container) else {
            problems.push(format!("{what} is not a mapping"));
            continue;
        };
        unknown_keys(
            &mut problems,
            &what,
            c,
            &[
                "name",
                "image",
                "command",
                "args",
                "env",
                "readinessProbe",
                "volumeMounts",
                "resources",
                "secrets",
            ],
        );
        let name = c.get("name").and_then(string).unwrap_or("");
        check_new_name(
            &mut problems,
            &what,
            "container",
            name,
            &mut container_names,
        );

        // /<db>/<schema>/<repository>/<image>[:<tag>], as the tutorial uses.
        let image = c.get("image").and_then(string).unwrap_or("");
        let parts: Vec<&str> = image.split('/').collect();
        let ident = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
        };
        let image_ok = parts.len() == 5
            && parts[0].is_empty()
            && parts[1..4].iter().all(|p| ident(p))
            && !parts[4].is_empty()
            && parts[4]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-:".contains(&b));
        if !image_ok {
            problems.push(format!(
                "{what}: image '{image}' is not /<db>/<schema>/<repository>/<name>[:<tag>]"
            ));
        }

        if let Some(env) = c.get("env") {
            match object(env) {
                None => problems.push(format!("{what}.env is not a mapping")),
                Some(env) => {
                    for (key, value) in env.iter() {
                        let key_ok = key
                            .bytes()
                            .next()
                            .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
                            && key
                                .bytes()
                                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                        if !key_ok {
                            problems.push(format!(
                                "{what}.env: '{key}' is not an environment variable name"
                            ));
                        }
                        if string(value).is_none() {
                            problems.push(format!(
                                "{what}.env.{key}: quote the value, so it stays a string"
                            ));
                        }
                    }
                }
            }
        }

        if let Some(mounts) = c.get("volumeMounts") {
            for (j, mount) in array(mounts)
                .map(|a| a.iter().collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                let mwhat = format!("{what}.volumeMounts[{j}]");
                let Some(m) = object(mount) else {
                    problems.push(format!("{mwhat} is not a mapping"));
                    continue;
                };
                unknown_keys(&mut problems, &mwhat, m, &["name", "mountPath"]);
                let vname = m.get("name").and_then(string).unwrap_or("");
                if !volume_names.contains(&vname.to_string()) {
                    problems.push(format!("{mwhat}: no volume named '{vname}'"));
                }
                mounted.push(vname.to_string());
                let path = m.get("mountPath").and_then(string).unwrap_or("");
                if !path.starts_with('/') || path == "/" {
                    problems.push(format!(
                        "{mwhat}: mountPath '{path}' must be an absolute directory"
                    ));
                }
            }
        }

        if let Some(resources) = c.get("resources") {
            let rwhat = format!("{what}.resources");
            match object(resources) {
                None => problems.push(format!("{rwhat} is not a mapping")),
                Some(r) => {
                    unknown_keys(&mut problems, &rwhat, r, &["requests", "limits"]);
                    for kind in ["requests", "limits"] {
                        if let Some(amounts) = r.get(kind).and_then(object) {
                            unknown_keys(
                                &mut problems,
                                &format!("{rwhat}.{kind}"),
                                amounts,
                                &["memory", "cpu", "nvidia.com/gpu"],
                            );
                        }
                    }
                    let mem = |kind: &str| at(resources, &[kind, "memory"]).map(memory_bytes);
                    let cpu = |kind: &str| at(resources, &[kind, "cpu"]).map(milli_cpu);
                    for kind in ["requests", "limits"] {
                        if let Some(None) = mem(kind) {
                            problems
                                .push(format!("{rwhat}.{kind}.memory is not a quantity like 16Mi"));
                        }
                        if let Some(None) = cpu(kind) {
                            problems.push(format!(
                                "{rwhat}.{kind}.cpu is not a quantity like 0.5 or 500m"
                            ));
                        }
                    }
                    if let (Some(Some(req)), Some(Some(lim))) = (mem("requests"), mem("limits")) {
                        if req > lim {
                            problems.push(format!("{rwhat}: memory request above its limit"));
                        }
                    }
                    if let (Some(Some(req)), Some(Some(lim))) = (cpu("requests"), cpu("limits")) {
                        if req > lim {
                            problems.push(format!("{rwhat}: cpu request above its limit"));
                        }
                    }
                    for kind in ["requests", "limits"] {
                        if let Some(Some(bytes)) = mem(kind) {
                            if bytes > XS_MEMORY_BYTES {
                                problems.push(format!(
                                    "{rwhat}.{kind}.memory exceeds CPU_X64_XS's 6 GiB"
                                ));
                            }
                        }
                        if let Some(Some(milli)) = cpu(kind) {
                            if milli > XS_MILLI_CPU || milli <= 0.0 {
                                problems.push(format!("{rwhat}.{kind}.cpu must be above 0 and at most CPU_X64_XS's 1 vCPU"));
                            }
                        }
                    }
                }
            }
        }
    }
    for volume in &volume_names {
        if !mounted.contains(volume) {
            problems.push(format!("volume '{volume}' is mounted by no container"));
        }
    }
    problems
}

/// `spec.logExporters`: only `eventTableConfig`, holding only `logLevel`,
/// one of the reference's INFO, ERROR and NONE.
fn check_log_exporters(problems: &mut Vec<String>, exporters: &Value) {
    let what = "spec.logExporters";
    let Some(e) = object(exporters) else {
        problems.push(format!("{what} is not a mapping"));
        return;
    };
    unknown_keys(problems, what, e, &["eventTableConfig"]);
    let Some(config) = e.get("eventTableConfig") else {
        return;
    };
    let what = "spec.logExporters.eventTableConfig";
    let Some(c) = object(config) else {
        problems.push(format!("{what} is not a mapping"));
        return;
    };
    unknown_keys(problems, what, c, &["logLevel"]);
    match c.get("logLevel") {
        Some(level) if matches!(string(level), Some("INFO" | "ERROR" | "NONE")) => {}
        other => problems.push(format!(
            "{what}.logLevel must be INFO, ERROR or NONE, got {other:?}"
        )),
    }
}

/// A volume's or container's name must follow the SPCS name rules and be
/// unique among its kind; records it in `seen`.
fn check_new_name(
    problems: &mut Vec<String>,
    what: &str,
    kind: &str,
    name: &str,
    seen: &mut Vec<String>,
) {
    if !valid_name(name) {
        problems.push(format!("{what}: invalid name '{name}'"));
    }
    if seen.iter().any(|s| s == name) {
        problems.push(format!("{what}: duplicate {kind} name '{name}'"));
    }
    seen.push(name.to_owned());
}
