//! scripts/push, for real, against a local OCI registry: Debian's
//! docker-registry (the CNCF distribution registry) on 127.0.0.1, with the
//! project's config (tests/registry/config.yml) and storage in a fresh
//! temporary directory. A stand-in `snow` on PATH records the login call;
//! one test logs in with the real Snowflake CLI against a fake account
//! (tests/common/snowflake.rs). Every login goes to a temporary
//! DOCKER_CONFIG (REGISTRY_AUTH_FILE for podman): the machine's stays as it is.

mod common;

use common::docker::*;
use common::snowflake;
use common::*;
use miniserde::json::{self, Value};
use std::env;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const REPOSITORY: &str = "tutorial_db/data_schema/tutorial_repository";

struct Registry {
    process: ChildGuard,
    storage: TempDir,
    addr: String,
}

impl Registry {
    /// Starts docker-registry on 127.0.0.1:5000, or on a free loopback port
    /// when 5000 is taken. None (test skipped) when it is not installed.
    fn start() -> Option<Registry> {
        if !succeeds("docker-registry", &["--version"]) {
            skip_unless_ci("Debian's docker-registry (apt-get install docker-registry)");
            return None;
        }
        // Held until the registry answers: two tests starting at once would
        // both find 5000 free, and one registry would fail to bind it.
        static STARTING: Mutex<()> = Mutex::new(());
        let _starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let port = match TcpListener::bind("127.0.0.1:5000") {
            Ok(_) => 5000,
            Err(_) => TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port(),
        };
        let addr = format!("127.0.0.1:{port}");
        let storage = TempDir::new("registry");
        let log = fs::File::create(storage.join("registry.log")).unwrap();
        let process = Command::new("docker-registry")
            .arg("serve")
            .arg(repo_root().join("tests/registry/config.yml"))
            .env(
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
                storage.join("data"),
            )
            .env("REGISTRY_HTTP_ADDR", &addr)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut registry = Registry {
            process: ChildGuard(process),
            storage,
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((status, _, _)) = registry.get("/v2/", "") {
                if status == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on {}",
                registry.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Answered by this registry, not another one on the same port.
        assert!(
            matches!(registry.process.0.try_wait(), Ok(None)),
            "docker-registry exited: {}",
            fs::read_to_string(registry.storage.join("registry.log")).unwrap_or_default()
        );
        Some(registry)
    }

    /// A plain HTTP GET: (status, headers, body).
    fn get(&self, path: &str, accept: &str) -> std::io::Result<(u16, String, Vec<u8>)> {
        let mut stream = TcpStream::connect(&self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let accept = if accept.is_empty() {
            String::new()
        } else {
            format!("Accept: {accept}\r\n")
        };
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{accept}Connection: close\r\n\r\n",
            self.addr
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no end of headers"))?;
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        let body = response[split + 4..].to_vec();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status"))?;
        Ok((status, head, body))
    }

    /// GET of service_to_service:latest's manifest, in either format an
    /// engine may have pushed.
    fn latest_manifest(&self) -> std::io::Result<(u16, String, Vec<u8>)> {
        self.get(
            &format!("/v2/{REPOSITORY}/service_to_service/manifests/latest"),
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        )
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// A directory holding a stand-in `snow` that records its arguments (one per
/// line) in `calls.log` and exits with $SNOW_STANDIN_EXIT (default 0).
fn stand_in_snow() -> TempDir {
    let dir = TempDir::new("snow");
    write_executable(
        &dir.join("snow"),
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{}'\necho '---' >> '{}'\necho 'Login Succeeded'\nexit \"${{SNOW_STANDIN_EXIT:-0}}\"\n",
            dir.join("calls.log").display(),
            dir.join("calls.log").display()
        ),
    );
    dir
}

fn snow_calls(dir: &Path) -> Vec<Vec<String>> {
    let log = fs::read_to_string(dir.join("calls.log")).unwrap_or_default();
    log.split("---\n")
        .filter(|c| !c.is_empty())
        .map(|c| c.lines().map(str::to_string).collect())
        .collect()
}

fn push(snow_dir: &Path, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        snow_dir.display(),
        env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(repo_root().join("scripts/push"));
    cmd.env("PATH", path)
        .env("DOCKER_CONFIG", snow_dir.join("docker-config"))
        .env("REGISTRY_AUTH_FILE", snow_dir.join("auth.json"))
        .env_remove("REPOSITORY_URL")
        .env_remove("SNOW_CONNECTION")
        .env_remove("SNOW_STANDIN_EXIT")
        .args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    run_with_timeout(&mut cmd, Duration::from_secs(120))
}

/// The value after `label` on the line that starts with it.
fn field<'a>(stdout: &'a str, label: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no '{label}' line in:\n{stdout}"))
        .trim()
}

/// The bytes pushed, or None where the engine cannot tell (podman).
fn bytes_pushed(stdout: &str) -> Option<u64> {
    let value = field(stdout, "bytes pushed:")
        .split_whitespace()
        .next()
        .unwrap();
    if value == "unknown" {
        None
    } else {
        Some(value.parse().unwrap())
    }
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    format!(
        "sha256:{}",
        text(&out.stdout).split_whitespace().next().unwrap()
    )
}

fn object_field<'a>(value: &'a Value, key: &str) -> &'a Value {
    match value {
        Value::Object(o) => o.get(key).unwrap_or_else(|| panic!("no {key}")),
        _ => panic!("not an object looking for {key}"),
    }
}

fn as_str(value: &Value) -> &str {
    match value {
        Value::String(s) => s,
        _ => panic!("not a string"),
    }
}

fn as_u64(value: &Value) -> u64 {
    match value {
        Value::Number(n) => n.to_string().parse().unwrap(),
        _ => panic!("not a number"),
    }
}

#[test]
fn push_round_trips_through_a_local_registry() {
    let Some(engine) = require_engine() else {
        return;
    };
    let build = stable_build();
    let Some(registry) = Registry::start() else {
        return;
    };
    let snow = stand_in_snow();
    let repository_url = format!("{}/{REPOSITORY}", registry.addr);
    let remote = format!("{repository_url}/service_to_service:latest");

    // No repository: one clear line, nothing pushed.
    let out = push(&snow, &[], &["--no-login"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("REPOSITORY_URL"), "{err}");

    // A failed login stops the push before anything moves.
    let out = push(
        &snow,
        &[
            ("REPOSITORY_URL", &repository_url),
            ("SNOW_STANDIN_EXIT", "1"),
        ],
        &[],
    );
    assert!(!out.status.success(), "push went on after a failed login");
    assert!(text(&out.stderr).contains(&format!("login to {} failed", registry.addr)));
    assert_eq!(
        snow_calls(&snow),
        [["spcs", "image-registry", "token", "--format", "json"]]
    );
    let (_, _, catalog) = registry.get("/v2/_catalog", "").unwrap();
    assert_eq!(text(&catalog).trim(), r#"{"repositories":[]}"#);

    // First push: logs in through snow (with the chosen connection) and
    // uploads the layer.
    let out = push(
        &snow,
        &[
            ("REPOSITORY_URL", &repository_url),
            ("SNOW_CONNECTION", "tutorial"),
        ],
        &[],
    );
    assert_success("first push", &out);
    let first = text(&out.stdout);
    assert_eq!(
        snow_calls(&snow)[1],
        [
            "spcs",
            "image-registry",
            "token",
            "--format",
            "json",
            "--connection",
            "tutorial"
        ]
    );
    assert_eq!(field(&first, "pushed:"), remote);
    let digest = field(&first, "digest:").to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    let seconds: f64 = field(&first, "seconds:").parse().unwrap();
    assert!(seconds > 0.0 && seconds < 120.0);
    // Docker says which layers it uploaded; podman does not.
    let docker = engine == "docker";
    let first_bytes = bytes_pushed(&first);
    if docker {
        assert!(
            first_bytes > Some(0),
            "the first push moved no bytes:\n{first}"
        );
    } else {
        assert_eq!(first_bytes, None, "{first}");
    }

    // The registry holds exactly what was reported: the manifest under that
    // digest, one layer of that size, and the layer is the built binary.
    let (status, head, body) = registry.latest_manifest().unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("docker-content-digest: {digest}")),
        "{head}"
    );
    let manifest: Value = json::from_str(&text(&body)).unwrap();
    let Value::Array(layers) = object_field(&manifest, "layers") else {
        panic!("layers is not an array")
    };
    assert_eq!(layers.len(), 1);
    let layer_digest = as_str(object_field(&layers[0], "digest")).to_string();
    let layer_size = as_u64(object_field(&layers[0], "size"));
    if docker {
        assert_eq!(Some(layer_size), first_bytes);
    }
    let blob = registry.blob_path(&layer_digest);
    assert_eq!(fs::metadata(&blob).unwrap().len(), layer_size);
    assert_eq!(sha256_of(&blob), layer_digest);
    let dir = TempDir::new("layer");
    let layer_tar = dir.join("layer.tar");
    let gunzip = Command::new("gzip")
        .arg("-dc")
        .arg(&blob)
        .stdout(fs::File::create(&layer_tar).unwrap())
        .status()
        .unwrap();
    assert!(gunzip.success());
    let diff_id = engine_ok(
        &engine,
        &[
            "image",
            "inspect",
            "--format",
            "{{index .RootFS.Layers 0}}",
            IMAGE,
        ],
    );
    assert_eq!(
        sha256_of(&layer_tar),
        diff_id.trim(),
        "uncompressed layer digest"
    );
    let list = Command::new("tar")
        .arg("-tf")
        .arg(&layer_tar)
        .output()
        .unwrap();
    assert_eq!(text(&list.stdout).trim(), "service-to-service");
    let content = Command::new("tar")
        .arg("-xOf")
        .arg(&layer_tar)
        .arg("service-to-service")
        .output()
        .unwrap();
    assert!(
        content.stdout == fs::read(&build.binary).unwrap(),
        "the pushed file is not the binary"
    );

    // Second push of the unchanged image: same digest, no layer bytes, and
    // --no-login keeps snow out of it.
    let out = push(
        &snow,
        &[("REPOSITORY_URL", &repository_url)],
        &["--no-login"],
    );
    assert_success("second push", &out);
    let second = text(&out.stdout);
    assert_eq!(field(&second, "digest:"), digest);
    assert_eq!(
        bytes_pushed(&second),
        if docker { Some(0) } else { None },
        "the second push moved layer bytes:\n{second}"
    );
    assert_eq!(snow_calls(&snow).len(), 2, "--no-login called snow");

    // A rebuild of the same sources: cargo relinks (the binary gets a new
    // time) and scripts/build makes a new image, but its layer is the same
    // blob, so the push uploads no layer bytes.
    let binary = fs::File::options().write(true).open(&build.binary).unwrap();
    binary.set_modified(std::time::SystemTime::now()).unwrap();
    run_build(&mut build_command(&[]), Duration::from_secs(900));
    let out = push(
        &snow,
        &[("REPOSITORY_URL", &repository_url)],
        &["--no-login"],
    );
    assert_success("push after a rebuild", &out);
    let third = text(&out.stdout);
    assert_eq!(
        bytes_pushed(&third),
        if docker { Some(0) } else { None },
        "the push after a rebuild moved layer bytes:\n{third}"
    );
    let (status, head, body) = registry.latest_manifest().unwrap();
    assert_eq!(status, 200, "{head}");
    let manifest: Value = json::from_str(&text(&body)).unwrap();
    let Value::Array(layers) = object_field(&manifest, "layers") else {
        panic!("layers is not an array")
    };
    assert_eq!(
        as_str(object_field(&layers[0], "digest")),
        layer_digest,
        "the rebuilt image has another layer"
    );
    let digest = field(&third, "digest:").to_string();

    // Pull it back under the remote name: same manifest digest, same image.
    engine_ok(&engine, &["rmi", &remote]);
    if docker {
        let pulled = engine_ok(&engine, &["pull", &remote]);
        assert!(pulled.contains(&format!("Digest: {digest}")), "{pulled}");
    } else {
        engine_ok(&engine, &["pull", "--tls-verify=false", &remote]);
    }
    let id = |image: &str| engine_ok(&engine, &["image", "inspect", "--format", "{{.Id}}", image]);
    assert_eq!(
        id(&remote),
        id(IMAGE),
        "the pulled image differs from the pushed one"
    );
    let repo_digests = engine_ok(
        &engine,
        &[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &remote,
        ],
    );
    assert!(
        repo_digests.contains(&format!("{repository_url}/service_to_service@{digest}")),
        "{repo_digests}"
    );
    engine_ok(&engine, &["rmi", &remote]);
}

#[test]
fn push_fails_in_one_line_without_the_image() {
    let Some(_engine) = require_engine() else {
        return;
    };
    let snow = stand_in_snow();
    let out = push(
        &snow,
        &[("REPOSITORY_URL", "127.0.0.1:5000/a/b/c")],
        &["--no-login", "--image", "service_to_service:no-such-tag"],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("scripts/build"), "{err}");
    assert!(snow_calls(&snow).is_empty());
}

#[test]
fn push_rejects_a_url_with_a_scheme() {
    let snow = stand_in_snow();
    let out = push(
        &snow,
        &[
            ("CONTAINER_ENGINE", "docker"),
            (
                "REPOSITORY_URL",
                "https://myorg-myacct.registry.snowflakecomputing.com/tutorial_db/data_schema/tutorial_repository",
            ),
        ],
        &["--no-login"],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("takes no scheme"), "{err}");
}

#[test]
fn push_help_names_the_variables() {
    let snow = stand_in_snow();
    let out = push(&snow, &[], &["--help"]);
    assert_success("scripts/push --help", &out);
    let help = text(&out.stdout);
    assert_help_mentions(
        &help,
        &[
            "REPOSITORY_URL",
            "--no-login",
            "snow spcs image-registry token",
            "CONTAINER_ENGINE",
        ],
    );
}

/// The real Snowflake CLI, against a fake account whose SHOW IMAGE
/// REPOSITORIES names another host: the engine logs in to REPOSITORY_URL's
/// own host with the token, which is printed nowhere, and the push lands.
#[test]
fn push_with_the_real_snow_logs_in_to_the_repository_host() {
    let Some(engine) = require_engine() else {
        return;
    };
    let _build = stable_build();
    let Some(snow_bin) = snowflake::real_snow_bin() else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let other_host = "other-org-other-acct.registry.snowflakecomputing.com";
    let fake = snowflake::FakeSnowflake::start(snow_bin.clone(), other_host);
    let credentials = TempDir::new("credentials");
    let repository_url = format!("{}/{REPOSITORY}", registry.addr);
    let push = |args: &[&str]| {
        let mut cmd = fake.command(repo_root().join("scripts/push"));
        cmd.env("REPOSITORY_URL", &repository_url)
            .env("CONTAINER_ENGINE", &engine)
            .env("DOCKER_CONFIG", &credentials)
            .env("REGISTRY_AUTH_FILE", credentials.join("auth.json"))
            .args(args);
        run_with_timeout(&mut cmd, Duration::from_secs(180))
    };

    // What `snow spcs image-registry login` would have logged in to.
    let url = fake
        .command(snow_bin.join("snow"))
        .args(["spcs", "image-registry", "url"])
        .output()
        .unwrap();
    assert!(
        text(&url.stdout).contains(other_host),
        "{}",
        text(&url.stdout)
    );
    fake.clear();

    // A connection that does not exist: one line, no login, nothing pushed.
    let out = push(&["--connection", "no_such_connection"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("login to {} failed", registry.addr)),
        "{}",
        text(&out.stderr)
    );
    let (_, _, catalog) = registry.get("/v2/_catalog", "").unwrap();
    assert_eq!(text(&catalog).trim(), r#"{"repositories":[]}"#);

    let out = push(&[]);
    assert_success("push with the real snow", &out);
    let remote = format!("{repository_url}/service_to_service:latest");
    assert_eq!(field(&text(&out.stdout), "pushed:"), remote);
    let tokens = fake.tokens();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let token = &tokens[0];
    for output in [&out.stdout, &out.stderr] {
        assert!(
            !text(output).contains(token.as_str()),
            "the token was printed"
        );
    }
    assert!(
        fake.sql()
            .iter()
            .all(|q| !q.to_ascii_uppercase().contains("IMAGE REPOSITORIES")),
        "{:?}",
        fake.sql()
    );
    // The engine's credential store holds it, for the repository's host:
    // user 0sessiontoken, password what snow printed ({"token": ...}).
    assert_eq!(stored_token(&credentials, &registry.addr), *token);

    let (status, _, _) = registry.latest_manifest().unwrap();
    assert_eq!(status, 200);
    engine_ok(&engine, &["rmi", &remote]);
}

#[test]
fn push_names_the_fix_for_underscore_and_uppercase_hosts() {
    let snow = stand_in_snow();
    for (url, expected) in [
        (
            "myorg-my_acct.registry.snowflakecomputing.com/db/schema/repo",
            "has an underscore; registry hosts use a dash instead: 'myorg-my-acct.registry.snowflakecomputing.com'",
        ),
        (
            "MyOrg-MyAcct.registry.snowflakecomputing.com/db/schema/repo",
            "has uppercase letters; registry hosts are lowercase: 'myorg-myacct.registry.snowflakecomputing.com'",
        ),
    ] {
        let out = push(
            &snow,
            &[("CONTAINER_ENGINE", "docker"), ("REPOSITORY_URL", url)],
            &[],
        );
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(expected), "{err}");
        assert!(snow_calls(&snow).is_empty());
    }
}

/// The registry token an engine stored for `host` in `dir` (docker's
/// config.json or podman's auth.json): checks the user is 0sessiontoken and
/// the password snow's JSON, and returns its "token".
fn stored_token(dir: &Path, host: &str) -> String {
    let store = [dir.join("config.json"), dir.join("auth.json")]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .expect("no credentials stored");
    let auths: Value = json::from_str(&store).unwrap();
    let entry = object_field(object_field(&auths, "auths"), host);
    let decoded = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(as_str(object_field(entry, "auth")).as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let login = text(&decoded.stdout);
    let password = login
        .strip_prefix("0sessiontoken:")
        .unwrap_or_else(|| panic!("stored user is not 0sessiontoken"));
    let password: Value = json::from_str(password).expect("the password is snow's JSON");
    as_str(object_field(&password, "token")).to_string()
}

/// Podman, with a `docker` on PATH that fails if called: the login and the
/// push go through podman alone (snow's own login would have run docker).
/// Needs podman (apt-get install podman; .ci/run installs it).
#[test]
fn push_with_podman_and_the_real_snow_never_calls_docker() {
    if !succeeds("podman", &["info"]) {
        skip_unless_ci("podman (apt-get install podman)");
        return;
    }
    let Some(snow_bin) = snowflake::real_snow_bin() else {
        return;
    };
    run_build(
        build_command(&[]).env("CONTAINER_ENGINE", "podman"),
        Duration::from_secs(600),
    );
    let Some(registry) = Registry::start() else {
        return;
    };
    let fake = snowflake::FakeSnowflake::start(
        snow_bin,
        "other-org-other-acct.registry.snowflakecomputing.com",
    );
    let no_docker = TempDir::new("no-docker");
    write_executable(
        &no_docker.join("docker"),
        "#!/bin/sh\necho \"docker was called: $*\" >&2\nexit 99\n",
    );
    let credentials = TempDir::new("podman-credentials");
    let repository_url = format!("{}/{REPOSITORY}", registry.addr);
    let mut cmd = fake.command(repo_root().join("scripts/push"));
    let path = format!(
        "{}:{}",
        no_docker.display(),
        env::var("PATH").unwrap_or_default()
    );
    cmd.env("PATH", format!("{}:{path}", fake.snow_bin.display()))
        .env("REPOSITORY_URL", &repository_url)
        .env("CONTAINER_ENGINE", "podman")
        .env("REGISTRY_AUTH_FILE", credentials.join("auth.json"));
    let out = run_with_timeout(&mut cmd, Duration::from_secs(180));
    assert_success("push with podman", &out);
    assert!(
        !text(&out.stderr).contains("docker was called"),
        "{}",
        text(&out.stderr)
    );
    let remote = format!("{repository_url}/service_to_service:latest");
    assert_eq!(field(&text(&out.stdout), "pushed:"), remote);
    let tokens = fake.tokens();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(stored_token(&credentials, &registry.addr), tokens[0]);
    for output in [&out.stdout, &out.stderr] {
        assert!(
            !text(output).contains(tokens[0].as_str()),
            "the token was printed"
        );
    }
    let (status, _, _) = registry.latest_manifest().unwrap();
    assert_eq!(status, 200);
    engine_ok("podman", &["rmi", &remote]);
}
