//! Every file under spec/ is a valid SPCS job specification: it parses as
//! YAML, uses only fields of Snowflake's specification reference, follows the
//! name rules, fits the smallest instance family (CPU_X64_XS), and publishes
//! its logs to the event table.

mod common;

use common::repo_root;
use common::spcs::*;
use std::fs;
use std::path::PathBuf;

fn spec_dir() -> PathBuf {
    repo_root().join("spec")
}

fn load(name: &str) -> miniserde::json::Value {
    let text = fs::read_to_string(spec_dir().join(name)).unwrap();
    parse_yaml(&text).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"))
}

fn env_var<'a>(spec: &'a miniserde::json::Value, var: &str) -> Option<&'a str> {
    at(containers(spec)[0], &["env", var]).and_then(string)
}

#[test]
fn every_spec_file_is_a_valid_job_specification() {
    if !yaml_available() {
        return;
    }
    let mut names: Vec<String> = fs::read_dir(spec_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.contains(&"service_to_service_spec.yaml".to_string()));
    assert!(names.contains(&"batch_job_spec.yaml".to_string()));
    for name in &names {
        assert!(
            name.ends_with(".yaml") || name.ends_with(".yml"),
            "spec/{name} is not a .yaml file"
        );
        let problems = check_spec(&load(name));
        assert!(problems.is_empty(), "spec/{name}:\n{}", problems.join("\n"));
    }
}

#[test]
fn the_tutorial_job_spec_says_what_the_tutorial_needs() {
    if !yaml_available() {
        return;
    }
    let spec = load("service_to_service_spec.yaml");
    let list = containers(&spec);
    assert_eq!(list.len(), 1);
    assert_eq!(at(list[0], &["name"]).and_then(string), Some("main"));
    assert_eq!(
        at(list[0], &["image"]).and_then(string),
        Some("/tutorial_db/data_schema/tutorial_repository/service_to_service:latest")
    );
    assert_eq!(
        env_var(&spec, "SERVICE_URL"),
        Some("http://echo-service:8000/echo")
    );

    // Requests and limits, both set, and small: the binary needs ~1 MiB.
    for kind in ["requests", "limits"] {
        let memory = at(list[0], &["resources", kind, "memory"])
            .and_then(memory_bytes)
            .unwrap_or_else(|| panic!("resources.{kind}.memory missing"));
        let cpu = at(list[0], &["resources", kind, "cpu"])
            .and_then(milli_cpu)
            .unwrap_or_else(|| panic!("resources.{kind}.cpu missing"));
        assert!(
            (4.0 * 1024.0 * 1024.0..=256.0 * 1024.0 * 1024.0).contains(&memory),
            "{kind}.memory {memory} bytes"
        );
        assert!(cpu > 0.0 && cpu <= 1000.0, "{kind}.cpu {cpu}m");
    }
    let request = at(list[0], &["resources", "requests", "memory"]).and_then(memory_bytes);
    assert!(
        request.unwrap() <= 64.0 * 1024.0 * 1024.0,
        "ask for little memory"
    );
}

#[test]
fn the_batch_spec_reads_and_writes_the_mounted_stage() {
    if !yaml_available() {
        return;
    }
    let spec = load("batch_job_spec.yaml");
    assert_eq!(env_var(&spec, "INPUT_FILE"), Some("/data/input.txt"));
    assert_eq!(
        env_var(&spec, "OUTPUT_FILE"),
        Some("/data/output-{index}.jsonl")
    );
    assert_eq!(
        env_var(&spec, "SERVICE_URL"),
        Some("http://echo-service:8000/echo")
    );
    let mounts = at(containers(&spec)[0], &["volumeMounts"]).unwrap();
    let miniserde::json::Value::Array(mounts) = mounts else {
        panic!("volumeMounts is not a list")
    };
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        at(&mounts[0], &["mountPath"]).and_then(string),
        Some("/data")
    );
    let volume_name = at(&mounts[0], &["name"]).and_then(string).unwrap();
    let volumes = at(&spec, &["spec", "volumes"]).unwrap();
    let miniserde::json::Value::Array(volumes) = volumes else {
        panic!("volumes is not a list")
    };
    let volume = volumes
        .iter()
        .find(|v| at(v, &["name"]).and_then(string) == Some(volume_name))
        .expect("the mounted volume is declared");
    assert_eq!(at(volume, &["source"]).and_then(string), Some("stage"));
    // The image's user (65532:65532, nonroot) must be able to write there.
    for id in ["uid", "gid"] {
        assert!(
            matches!(
                at(volume, &[id]),
                Some(miniserde::json::Value::Number(
                    miniserde::json::Number::U64(65532)
                ))
            ),
            "the stage volume's {id} is not 65532"
        );
    }
    let stage = at(volume, &["stageConfig", "name"])
        .and_then(string)
        .unwrap();
    assert!(stage.starts_with('@'), "{stage}");
    // Batch numbers are strings, as SPCS env values are; CONCURRENCY may
    // also be auto.
    for var in ["BATCH_SIZE", "CONCURRENCY"] {
        if let Some(v) = at(containers(&spec)[0], &["env", var]) {
            assert!(
                string(v).is_some_and(
                    |s| s.parse::<u32>().is_ok() || var == "CONCURRENCY" && s == "auto"
                ),
                "{var}"
            );
        }
    }
}

/// Both specs copy the container's output to the event table, where it
/// outlives the compute-pool node, and say beside it what that costs and
/// how to turn it off.
#[test]
fn every_spec_publishes_its_logs_to_the_event_table() {
    if !yaml_available() {
        return;
    }
    for name in ["service_to_service_spec.yaml", "batch_job_spec.yaml"] {
        let spec = load(name);
        assert_eq!(
            at(
                &spec,
                &["spec", "logExporters", "eventTableConfig", "logLevel"]
            )
            .and_then(string),
            Some("INFO"),
            "{name}"
        );
        // spec.logExporters, not under a container, where Snowflake would
        // refuse it (check_spec also says so).
        assert!(
            at(containers(&spec)[0], &["logExporters"]).is_none(),
            "{name}"
        );
        let text = fs::read_to_string(spec_dir().join(name)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let at_field = lines
            .iter()
            .position(|l| *l == "  logExporters:")
            .unwrap_or_else(|| panic!("{name}: no top-level logExporters line"));
        let comment: Vec<&str> = lines[..at_field]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with('#'))
            .copied()
            .collect();
        let comment = comment.join(" ");
        assert!(
            comment.contains("Cost"),
            "{name}: the comment names no cost"
        );
        assert!(
            comment.contains("logLevel: NONE"),
            "{name}: the comment does not say how to turn it off"
        );
    }
}

#[test]
fn names_follow_the_spcs_rules() {
    for ok in [
        "main",
        "a",
        "echo-service",
        "job2",
        &format!("a{}", "b".repeat(62)),
    ] {
        assert!(valid_name(ok), "{ok} should be valid");
    }
    for bad in [
        "",
        "Main",
        "2main",
        "-main",
        "main-",
        "main_job",
        "main.job",
        "main job",
        "mäin",
        &format!("a{}", "b".repeat(63)),
    ] {
        assert!(!valid_name(bad), "{bad:?} should be invalid");
    }
}

#[test]
fn quantities_parse_as_snowflake_reads_them() {
    use miniserde::json::Value;
    let s = |v: &str| Value::String(v.to_string());
    assert_eq!(memory_bytes(&s("16Mi")), Some(16.0 * 1024.0 * 1024.0));
    assert_eq!(memory_bytes(&s("6Gi")), Some(XS_MEMORY_BYTES));
    assert_eq!(memory_bytes(&s("500M")), Some(500e6));
    assert_eq!(memory_bytes(&s("16mb")), None);
    assert_eq!(milli_cpu(&s("500m")), Some(500.0));
    assert_eq!(milli_cpu(&s("0.5")), Some(500.0));
    assert_eq!(milli_cpu(&s("half")), None);
}

/// The checker itself must catch what it claims to catch.
#[test]
fn the_checker_rejects_broken_specs() {
    if !yaml_available() {
        return;
    }
    let problems = |yaml: &str| match parse_yaml(yaml) {
        Ok(doc) => check_spec(&doc),
        Err(e) => vec![format!("YAML error: {e}")],
    };
    let good = "spec:\n  containers:\n  - name: main\n    image: /db/schema/repo/job:latest\n";
    assert!(problems(good).is_empty(), "{:?}", problems(good));

    let cases = [
        // The tutorial's printed spec, as printed: mis-indented.
        (
            "spec:\ncontainer:\n   - name: main\n      image: /tutorial_db/data_schema/tutorial_repository/service_to_service:latest\n      env:\n      SERVICE_URL: \"http://echo-service:8000/echo\"\n",
            "YAML error",
        ),
        // Its intent, indented but with `container:`.
        (
            "spec:\n  container:\n  - name: main\n    image: /db/schema/repo/job:latest\n",
            "unknown field 'container'",
        ),
        ("spec:\n  containers: []\n", "spec.containers is empty"),
        (
            "spec:\n  containers:\n  - name: Main\n    image: /db/schema/repo/job:latest\n",
            "invalid name 'Main'",
        ),
        (
            "spec:\n  containers:\n  - name: main\n    image: job:latest\n",
            "is not /<db>/<schema>",
        ),
        (
            "spec:\n  containers:\n  - name: main\n    image: /db/schema/repo/job:latest\n    env:\n      BATCH_SIZE: 100\n",
            "quote the value",
        ),
        (
            "spec:\n  containers:\n  - name: main\n    image: /db/schema/repo/job:latest\n    resources:\n      limits:\n        cpu: 2\n",
            "at most CPU_X64_XS",
        ),
        (
            "spec:\n  containers:\n  - name: main\n    image: /db/schema/repo/job:latest\n    resources:\n      requests:\n        memory: 128Mi\n      limits:\n        memory: 64Mi\n",
            "memory request above its limit",
        ),
        (
            "spec:\n  containers:\n  - name: main\n    image: /db/schema/repo/job:latest\n    volumeMounts:\n    - name: data\n      mountPath: /data\n",
            "no volume named 'data'",
        ),
        (
            "spec:\n  containers:\n  - name: main\n    image: /db/schema/repo/job:latest\n    volumeMounts:\n    - name: data\n      mountPath: /data\n  volumes:\n  - name: data\n    source: \"@stage\"\n",
            "deprecated stage mount v1",
        ),
        (
            "spec:\n  containers:\n  - name: main\n    image: /db/schema/repo/job:latest\n  volumes:\n  - name: data\n    source: stage\n    stageConfig:\n      name: \"@stage\"\n",
            "mounted by no container",
        ),
        (
            "spec:\n  containers:\n  - name: main\n    image: /db/schema/repo/job:latest\n    volumeMounts:\n    - name: data\n      mountPath: /data\n  volumes:\n  - name: data\n    source: stage\n    uid: \"65532\"\n    gid: -1\n    stageConfig:\n      name: \"@stage\"\n",
            ".uid must be a whole number",
        ),
        (
            "spec:\n  containers:\n  - name: main\n    image: /db/schema/repo/job:latest\n    volumeMounts:\n    - name: data\n      mountPath: /data\n  volumes:\n  - name: data\n    source: stage\n    gid: -1\n    stageConfig:\n      name: \"@stage\"\n",
            ".gid must be a whole number",
        ),
        (
            "spec:\n  containers:\n  - name: main\n    image: /db/schema/repo/job:latest\n  logExporters:\n    eventTableConfig:\n      logLevel: DEBUG\n",
            "logLevel must be INFO, ERROR or NONE",
        ),
        (
            "spec:\n  containers:\n  - name: main\n    image: /db/schema/repo/job:latest\n  logExporters:\n    eventTable:\n      logLevel: INFO\n",
            "spec.logExporters: unknown field 'eventTable'",
        ),
        (
            "spec:\n  containers:\n  - name: main\n    image: /db/schema/repo/job:latest\n  logExporters:\n    eventTableConfig:\n      level: INFO\n",
            "eventTableConfig: unknown field 'level'",
        ),
        (
            "spec:\n  containers:\n  - name: main\n    image: /db/schema/repo/job:latest\n    logExporters:\n      eventTableConfig:\n        logLevel: INFO\n",
            "spec.containers[0]: unknown field 'logExporters'",
        ),
    ];
    for (yaml, expected) in cases {
        let found = problems(yaml);
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "expected a problem containing {expected:?} for:\n{yaml}\ngot {found:?}"
        );
    }
}
