//! End-to-end tests of the job image: built by scripts/build, run by the
//! container engine against the project's Tutorial 1 echo service, on the
//! host network with `echo-service` mapped to 127.0.0.1 inside the container
//! (so the name is resolved inside the scratch image, as in SPCS).
//!
//! They run against service_to_service:latest, and also against
//! service_to_service:tiny when TINY_IMAGE is set or that image exists.
//! Without an engine they skip with one loud line, except with CI=true,
//! where they fail.

mod common;

use common::dns;
use common::docker::*;
use common::http::{EchoService, SilentServer};
use common::job::{log_records, parse_log_line};
use common::*;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

/// `docker run --rm --network host --add-host echo-service:127.0.0.1
/// [extra...] -e SERVICE_URL=... image`.
fn run_job(engine: &str, image: &str, service_url: &str, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(engine);
    cmd.args(["run", "--rm", "--network", "host"])
        .args(["--add-host", "echo-service:127.0.0.1"])
        .args(extra)
        .args(["-e", &format!("SERVICE_URL={service_url}"), image]);
    run_with_timeout(&mut cmd, Duration::from_secs(90))
}

/// The success contract: exit 0 and exactly the tutorial's two INFO lines,
/// after the one that names the run's query id.
fn assert_says_bob_said_hello(what: &str, out: &std::process::Output) {
    assert_success(what, out);
    let stdout = text(&out.stdout);
    let mut lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "{what}: expected exactly three log lines, got:\n{stdout}"
    );
    assert!(
        parse_log_line(lines[0])
            .is_some_and(|(level, message)| level == "INFO" && message.starts_with("Query id ")),
        "{what}: {stdout}"
    );
    lines.remove(0);
    let url = "http://echo-service:8000/echo";
    assert_eq!(
        parse_log_line(lines[0]),
        Some(("INFO", format!("Calling {url} with input Hello").as_str())),
        "{what}"
    );
    assert_eq!(
        parse_log_line(lines[1]),
        Some((
            "INFO",
            format!("Received response from {url}: Bob said Hello").as_str()
        )),
        "{what}"
    );
    assert!(lines[1].ends_with("Bob said Hello"));
}

#[test]
fn job_container_says_bob_said_hello_then_fails_without_the_service() {
    let Some(engine) = require_engine() else {
        return;
    };
    let builds = builds(&engine);
    let _port = port_8000();
    let mut echo = EchoService::start(8000, Some("Bob"));
    let url = "http://echo-service:8000/echo";

    for build in &builds {
        let out = run_job(&engine, build.tag, url, &[]);
        assert_says_bob_said_hello(build.tag, &out);

        // Locked down the way a careful operator would run it, and inside the
        // spec's memory limit: no writable root, no capabilities, 64 MiB.
        let out = run_job(
            &engine,
            build.tag,
            url,
            &[
                "--read-only",
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges",
                "--memory",
                "64m",
                "--memory-swap",
                "64m",
            ],
        );
        assert_says_bob_said_hello(&format!("{} --read-only --cap-drop ALL", build.tag), &out);
    }

    echo.stop();
    for build in &builds {
        let started = Instant::now();
        let out = run_job(&engine, build.tag, url, &["-e", "RETRY_DEADLINE=1s"]);
        let took = started.elapsed();
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(69),
            "{}: the service is down, so the job must fail with EX_UNAVAILABLE\n{stdout}{}",
            build.tag,
            text(&out.stderr)
        );
        let levels: Vec<&str> = log_records(&stdout).iter().map(|r| r.0).collect();
        assert!(
            levels.contains(&"WARNING"),
            "{}: no retry WARNING line:\n{stdout}",
            build.tag
        );
        assert_eq!(
            levels.iter().filter(|l| **l == "ERROR").count(),
            1,
            "{}: exactly one ERROR line expected:\n{stdout}",
            build.tag
        );
        assert!(
            took < Duration::from_secs(15),
            "{}: RETRY_DEADLINE=1s but the container took {took:?}",
            build.tag
        );
    }
}

/// The image resolves `echo-service` as in SPCS: no --add-host, but a
/// resolv.conf with SPCS's search domains and `ndots:5`, naming dnsmasq on
/// loopback, which answers A and NXDOMAIN for AAAA (the quirk musl's own
/// lookup fails on).
#[test]
fn job_container_finds_the_service_through_spcs_search_domains() {
    let Some(engine) = require_engine() else {
        return;
    };
    if !dns::available() {
        return;
    }
    let name = "echo-service.abc123.svc.spcs.internal";
    let dns = dns::Dnsmasq::start(&[format!("--address=/{name}/127.0.0.1")]);
    let echo = EchoService::start(0, Some("Bob"));
    let url = format!("http://echo-service:{}/echo", echo.addr.port());
    // Docker writes --dns as given, even a loopback address, with the host
    // network; other engines get the file itself.
    let mut resolv = vec![];
    if engine == "docker" {
        resolv.extend(["--dns".to_owned(), dns.address.to_string()]);
        for domain in dns::SEARCH {
            resolv.extend(["--dns-search".to_owned(), domain.to_owned()]);
        }
        for option in ["ndots:5", "timeout:1", "attempts:2"] {
            resolv.extend(["--dns-option".to_owned(), option.to_owned()]);
        }
    } else {
        let file = dns.resolv_conf();
        resolv.extend([
            "-v".to_owned(),
            format!("{}:/etc/resolv.conf:ro", file.display()),
        ]);
    }
    for build in builds(&engine) {
        let out = run_with_timeout(
            Command::new(&engine)
                .args(["run", "--rm", "--network", "host"])
                .args(&resolv)
                .args([
                    "-e",
                    &format!("SERVICE_URL={url}"),
                    "-e",
                    "RETRY_DEADLINE=0",
                ])
                .arg(build.tag),
            Duration::from_secs(60),
        );
        assert_success(build.tag, &out);
        assert!(
            text(&out.stdout).ends_with("Bob said Hello\n"),
            "{}: {}",
            build.tag,
            text(&out.stdout)
        );
    }
    assert!(
        dns.names_asked("A").iter().any(|asked| asked == name),
        "the container did not ask dnsmasq:\n{}",
        dns.log()
    );
    assert!(dns.names_asked("AAAA").is_empty(), "{}", dns.log());
}

/// Stopped at once by its SIGTERM, not killed when `stop`'s grace runs out:
/// the grace is 30 s here, so a job that ignored the signal would take 30 s
/// and exit 137. The bound leaves the engine's own round trips room on a
/// busy machine.
#[test]
fn docker_stop_ends_a_waiting_job_at_its_sigterm() {
    let Some(engine) = require_engine() else {
        return;
    };
    for build in builds(&engine) {
        let server = SilentServer::start();
        let name = unique_name("stop");
        let _guard = ContainerGuard {
            engine: engine.clone(),
            name: name.clone(),
        };
        engine_ok(
            &engine,
            &[
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                "host",
                "--add-host",
                "echo-service:127.0.0.1",
                "-e",
                &format!(
                    "SERVICE_URL=http://echo-service:{}/echo",
                    server.addr.port()
                ),
                "-e",
                "REQUEST_TIMEOUT=60s",
                "-e",
                "RETRY_DEADLINE=120s",
                build.tag,
            ],
        );
        // Once the job has connected it is blocked waiting for a reply.
        server
            .accepted
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{}: the job never connected", build.tag));
        thread_sleep_ms(200);

        let started = Instant::now();
        engine_ok(&engine, &["stop", "--time", "30", &name]);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "{}: docker stop took {took:?}; the binary must handle SIGTERM as PID 1",
            build.tag
        );
        let code = engine_ok(
            &engine,
            &["inspect", "--format", "{{.State.ExitCode}}", &name],
        );
        assert_eq!(
            code.trim(),
            "143",
            "{}: exit status after SIGTERM",
            build.tag
        );
        let logs = run_with_timeout(
            Command::new(&engine).args(["logs", &name]),
            Duration::from_secs(30),
        );
        let logs = text(&logs.stdout);
        assert!(
            log_records(&logs).iter().any(|r| r.0 == "WARNING"),
            "{}: no WARNING line about the signal:\n{logs}",
            build.tag
        );
    }
}

fn thread_sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn image_is_one_layer_one_file_non_root_amd64() {
    let Some(engine) = require_engine() else {
        return;
    };
    for build in builds(&engine) {
        let tag = build.tag;
        let inspect =
            |format: &str| engine_ok(&engine, &["image", "inspect", "--format", format, tag]);
        assert_eq!(inspect("{{.Config.User}}").trim(), "65532:65532", "{tag}");
        assert_eq!(
            inspect("{{len .RootFS.Layers}}").trim(),
            "1",
            "{tag}: layers"
        );
        assert_eq!(
            inspect("{{.Os}}/{{.Architecture}}").trim(),
            "linux/amd64",
            "{tag}"
        );
        assert_eq!(
            inspect("{{json .Config.Entrypoint}}").trim(),
            r#"["/service-to-service"]"#,
            "{tag}: exec-form entrypoint"
        );
        for label in ["title", "description", "version", "source", "licenses"] {
            let value = inspect(&format!(
                "{{{{index .Config.Labels \"org.opencontainers.image.{label}\"}}}}"
            ));
            assert!(!value.trim().is_empty(), "{tag}: label {label} is empty");
        }
        assert_eq!(
            inspect("{{index .Config.Labels \"org.opencontainers.image.version\"}}").trim(),
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(
            inspect("{{index .Config.Labels \"org.opencontainers.image.licenses\"}}").trim(),
            "Apache-2.0"
        );

        // The image is the binary: same bytes as scripts/build reported.
        let binary = fs::read(&build.binary).unwrap();
        assert_eq!(binary.len() as u64, build.binary_bytes);
        // Docker counts the file's bytes; Podman the layer tar's (headers and
        // padding included). Either way the image is the binary and no more.
        let image_bytes = build
            .image_bytes
            .expect("scripts/build printed the image bytes");
        assert!(
            image_bytes >= build.binary_bytes && image_bytes - build.binary_bytes <= 16 * 1024,
            "{tag}: image {image_bytes} bytes, binary {} bytes",
            build.binary_bytes
        );
        let gzip = build
            .layer_gzip_bytes
            .expect("scripts/build printed the compressed layer bytes");
        assert!(
            gzip > 0 && gzip < build.binary_bytes,
            "{tag}: {gzip} compressed bytes"
        );

        // Its one layer holds exactly one file, the binary itself, 0755.
        let dir = TempDir::new("save");
        let archive = dir.join("image.tar");
        engine_ok(&engine, &["save", "-o", archive.to_str().unwrap(), tag]);
        let untar = Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(untar.success());
        let manifest = fs::read_to_string(dir.join("manifest.json")).unwrap();
        let layers = manifest_layers(&manifest);
        assert_eq!(layers.len(), 1, "{tag}: {manifest}");
        let layer = dir.join(&layers[0]);
        let list = Command::new("tar")
            .arg("-tvf")
            .arg(&layer)
            .output()
            .unwrap();
        let list = text(&list.stdout);
        let entries: Vec<&str> = list.lines().collect();
        assert_eq!(entries.len(), 1, "{tag}: layer entries:\n{list}");
        assert!(entries[0].starts_with("-rwxr-xr-x"), "{}", entries[0]);
        assert!(
            entries[0].ends_with(" service-to-service"),
            "{}",
            entries[0]
        );
        let content = Command::new("tar")
            .arg("-xOf")
            .arg(&layer)
            .arg("service-to-service")
            .output()
            .unwrap();
        assert!(
            content.stdout == binary,
            "{tag}: the file in the layer is not the built binary"
        );

        // A container's filesystem is that file plus what the engine itself
        // mounts in (empty placeholders for /etc/hosts, /dev, /proc, ...).
        let name = unique_name("export");
        let _guard = ContainerGuard {
            engine: engine.clone(),
            name: name.clone(),
        };
        engine_ok(
            &engine,
            &["create", "--network", "host", "--name", &name, tag],
        );
        let exported = dir.join("export.tar");
        engine_ok(
            &engine,
            &["export", "-o", exported.to_str().unwrap(), &name],
        );
        let list = Command::new("tar")
            .arg("-tvf")
            .arg(&exported)
            .output()
            .unwrap();
        let list = text(&list.stdout);
        let engine_made = [
            ".dockerenv",
            "dev/",
            "dev/console",
            "dev/pts/",
            "dev/shm/",
            "etc/",
            "etc/hostname",
            "etc/hosts",
            "etc/mtab",
            "etc/resolv.conf",
            "proc/",
            "run/",
            "run/.containerenv",
            "sys/",
        ];
        let mut files = Vec::new();
        for line in list.lines() {
            let path = line.split_whitespace().nth(5).unwrap_or("");
            if engine_made.contains(&path) {
                assert!(
                    line.split_whitespace().nth(2) == Some("0"),
                    "{tag}: {path} is not empty: {line}"
                );
            } else {
                files.push(path.to_string());
            }
        }
        assert_eq!(
            files,
            ["service-to-service"],
            "{tag}: exported files:\n{list}"
        );
    }
}

/// The "Layers" paths of a `docker save` manifest.json.
fn manifest_layers(manifest: &str) -> Vec<String> {
    use miniserde::json::{self, Value};
    let value: Value = json::from_str(manifest).expect("manifest.json is JSON");
    let Value::Array(images) = value else {
        panic!("manifest.json is not an array")
    };
    let Some(Value::Object(image)) = images.first() else {
        panic!("manifest.json is empty")
    };
    let Some(Value::Array(layers)) = image.get("Layers") else {
        panic!("no Layers in manifest.json")
    };
    layers
        .iter()
        .map(|l| match l {
            Value::String(s) => s.clone(),
            _ => panic!("layer path is not a string"),
        })
        .collect()
}

#[test]
fn container_help_and_version_need_no_environment() {
    let Some(engine) = require_engine() else {
        return;
    };
    for build in builds(&engine) {
        let out = run_with_timeout(
            Command::new(&engine).args([
                "run",
                "--rm",
                "--network",
                "host",
                build.tag,
                "--version",
            ]),
            Duration::from_secs(30),
        );
        assert_success(&format!("{} --version", build.tag), &out);
        assert!(
            text(&out.stdout).contains(env!("CARGO_PKG_VERSION")),
            "{}: --version printed {:?}",
            build.tag,
            text(&out.stdout)
        );
        let out = run_with_timeout(
            Command::new(&engine).args(["run", "--rm", "--network", "host", build.tag, "--help"]),
            Duration::from_secs(30),
        );
        assert_success(&format!("{} --help", build.tag), &out);
        let help = text(&out.stdout);
        for var in ["SERVICE_URL", "ECHO_TEXT", "RETRY_DEADLINE"] {
            assert!(
                help.contains(var),
                "{}: --help does not mention {var}",
                build.tag
            );
        }
    }
}
