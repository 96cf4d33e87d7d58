//! scripts/build without a container engine, and its argument handling.
//! Needs no engine: a stand-in `docker` that never answers is put first on
//! PATH.

mod common;

use common::docker::*;
use common::*;
use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

fn build_script(path_prefix: &std::path::Path, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        path_prefix.display(),
        env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(repo_root().join("scripts/build"));
    cmd.env("PATH", path)
        .env_remove("CONTAINER_ENGINE")
        .args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    run_with_timeout(&mut cmd, Duration::from_secs(900))
}

fn silent_engine() -> TempDir {
    let dir = TempDir::new("no-engine");
    for engine in ["docker", "podman"] {
        let path = dir.join(engine);
        fs::write(
            &path,
            "#!/bin/sh\necho \"engine stand-in: $*\" >&2\nexit 1\n",
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

#[test]
fn without_an_engine_it_builds_the_binary_and_says_so_in_one_line() {
    let dir = silent_engine();
    for engine in ["docker", "podman"] {
        let out = build_script(&dir, &[("CONTAINER_ENGINE", engine)], &[]);
        assert_success("scripts/build without an engine", &out);
        let stdout = text(&out.stdout);
        let binary = repo_root().join(format!("target/{MUSL}/release/service-to-service"));
        let bytes = fs::metadata(&binary).unwrap().len();
        assert_eq!(
            stdout,
            format!("binary bytes:           {bytes}  target/{MUSL}/release/service-to-service\n"),
            "only the binary line, no image figures"
        );
        let stderr = text(&out.stderr);
        let ours: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("scripts/build:"))
            .collect();
        assert_eq!(ours.len(), 1, "{stderr}");
        assert!(ours[0].contains("needs a container engine"), "{}", ours[0]);
        assert!(ours[0].contains(&format!("'{engine} info'")), "{}", ours[0]);
        assert!(
            !stderr.contains("engine stand-in: build"),
            "it tried to build an image:\n{stderr}"
        );
    }
}

#[test]
fn bad_arguments_fail_in_one_line() {
    let dir = silent_engine();
    for (vars, args, expected) in [
        (vec![], vec!["--bogus"], "unknown argument '--bogus'"),
        (
            vec![("CONTAINER_ENGINE", "nerdctl")],
            vec![],
            "CONTAINER_ENGINE must be docker or podman",
        ),
        (vec![], vec!["--tag"], "--tag needs a name"),
        (
            vec![("SOURCE_DATE_EPOCH", "yesterday")],
            vec![],
            "SOURCE_DATE_EPOCH must be a whole number",
        ),
    ] {
        let out = build_script(&dir, &vars, &args);
        assert!(!out.status.success(), "{args:?} {vars:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn help_describes_the_tiny_build_and_the_engine_choice() {
    let dir = silent_engine();
    let out = build_script(&dir, &[], &["--help"]);
    assert_success("scripts/build --help", &out);
    let help = text(&out.stdout);
    for word in [
        "--tiny",
        "--unstripped",
        "--tag",
        "SOURCE_DATE_EPOCH",
        "CONTAINER_ENGINE",
        "Dockerfile.scratch",
        "service_to_service:tiny",
    ] {
        assert!(help.contains(word), "--help does not mention {word}");
    }
}
