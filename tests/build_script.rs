//! scripts/build without a container engine, and its argument handling.
//! Needs no engine: a stand-in `docker` that never answers is put first on
//! PATH.

mod common;

use common::docker::*;
use common::*;
use std::fs;
use std::process::Output;
use std::time::Duration;

fn build_script(vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = build_command(args);
    let _engines = without_engine(&mut cmd);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    run_with_timeout(&mut cmd, Duration::from_secs(900))
}

#[test]
fn without_an_engine_it_builds_the_binary_and_says_so_in_one_line() {
    for engine in ["docker", "podman"] {
        let out = build_script(&[("CONTAINER_ENGINE", engine)], &[]);
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
        let out = build_script(&vars, &args);
        assert!(!out.status.success(), "{args:?} {vars:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn help_describes_the_tiny_build_and_the_engine_choice() {
    let out = build_script(&[], &["--help"]);
    assert_success("scripts/build --help", &out);
    let help = text(&out.stdout);
    assert_help_mentions(
        &help,
        &[
            "--tiny",
            "--unstripped",
            "--tag",
            "SOURCE_DATE_EPOCH",
            "CONTAINER_ENGINE",
            "Dockerfile.scratch",
            "service_to_service:tiny",
        ],
    );
}
