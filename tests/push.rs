//! scripts/push, for real, against a local OCI registry: Debian's
//! docker-registry (the CNCF distribution registry) on 127.0.0.1, with the
//! project's config (tests/registry/config.yml) and storage in a fresh
//! temporary directory. A stand-in `snow` on PATH records the login call.

#[path = "common/docker.rs"]
mod docker;

use docker::*;
use miniserde::json::{self, Value};
use std::env;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const REPOSITORY: &str = "tutorial_db/data_schema/tutorial_repository";

struct Registry {
    _process: ChildGuard,
    storage: TempDir,
    addr: String,
}

impl Registry {
    /// Starts docker-registry on 127.0.0.1:5000, or on a free loopback port
    /// when 5000 is taken. None (test skipped) when it is not installed.
    fn start() -> Option<Registry> {
        let available = Command::new("docker-registry")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !available {
            if in_ci() {
                panic!(
                    "CI=true but docker-registry is not installed (apt-get install docker-registry)"
                );
            }
            loud(
                "!!!!! SKIPPED: the push test needs Debian's docker-registry (apt-get install docker-registry) !!!!!",
            );
            return None;
        }
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
        let log = fs::File::create(storage.path().join("registry.log")).unwrap();
        let process = Command::new("docker-registry")
            .arg("serve")
            .arg(repo_root().join("tests/registry/config.yml"))
            .env(
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
                storage.path().join("data"),
            )
            .env("REGISTRY_HTTP_ADDR", &addr)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            _process: ChildGuard(process),
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

    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .path()
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
    let script = dir.path().join("snow");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{}'\necho '---' >> '{}'\necho 'Login Succeeded'\nexit \"${{SNOW_STANDIN_EXIT:-0}}\"\n",
            dir.path().join("calls.log").display(),
            dir.path().join("calls.log").display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
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
    let out = push(snow.path(), &[], &["--no-login"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("REPOSITORY_URL"), "{err}");

    // A failed login stops the push before anything moves.
    let out = push(
        snow.path(),
        &[
            ("REPOSITORY_URL", &repository_url),
            ("SNOW_STANDIN_EXIT", "1"),
        ],
        &[],
    );
    assert!(!out.status.success(), "push went on after a failed login");
    assert!(text(&out.stderr).contains("snow spcs image-registry login failed"));
    assert_eq!(
        snow_calls(snow.path()),
        [["spcs", "image-registry", "login"]]
    );
    let (_, _, catalog) = registry.get("/v2/_catalog", "").unwrap();
    assert_eq!(text(&catalog).trim(), r#"{"repositories":[]}"#);

    // First push: logs in through snow (with the chosen connection) and
    // uploads the layer.
    let out = push(
        snow.path(),
        &[
            ("REPOSITORY_URL", &repository_url),
            ("SNOW_CONNECTION", "tutorial"),
        ],
        &[],
    );
    assert_success("first push", &out);
    let first = text(&out.stdout);
    assert_eq!(
        snow_calls(snow.path())[1],
        [
            "spcs",
            "image-registry",
            "login",
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
    let (status, head, body) = registry
        .get(
            &format!("/v2/{REPOSITORY}/service_to_service/manifests/latest"),
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        )
        .unwrap();
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
    let layer_tar = dir.path().join("layer.tar");
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
        snow.path(),
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
    assert_eq!(snow_calls(snow.path()).len(), 2, "--no-login called snow");

    // A rebuild of the same sources: cargo relinks (the binary gets a new
    // time) and scripts/build makes a new image, but its layer is the same
    // blob, so the push uploads no layer bytes.
    let binary = fs::File::options().write(true).open(&build.binary).unwrap();
    binary.set_modified(std::time::SystemTime::now()).unwrap();
    let rebuilt = run_with_timeout(
        &mut Command::new(repo_root().join("scripts/build")),
        Duration::from_secs(900),
    );
    assert_success("scripts/build again", &rebuilt);
    let out = push(
        snow.path(),
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
    let (status, head, body) = registry
        .get(
            &format!("/v2/{REPOSITORY}/service_to_service/manifests/latest"),
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        )
        .unwrap();
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
        snow.path(),
        &[("REPOSITORY_URL", "127.0.0.1:5000/a/b/c")],
        &["--no-login", "--image", "service_to_service:no-such-tag"],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("scripts/build"), "{err}");
    assert!(snow_calls(snow.path()).is_empty());
}

#[test]
fn push_rejects_a_url_with_a_scheme() {
    let snow = stand_in_snow();
    let out = push(
        snow.path(),
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
    let out = push(snow.path(), &[], &["--help"]);
    assert_success("scripts/push --help", &out);
    let help = text(&out.stdout);
    for word in [
        "REPOSITORY_URL",
        "--no-login",
        "snow spcs image-registry login",
        "CONTAINER_ENGINE",
    ] {
        assert!(help.contains(word), "--help does not mention {word}");
    }
}
