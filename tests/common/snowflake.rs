//! The real Snowflake CLI (`snow`, installed by scripts/test into
//! target/snow-venv at the versions in tests/snowflake-cli-requirements.txt)
//! against a fake Snowflake account on 127.0.0.1 (tests/peers/fake_snowflake.py),
//! which records every SQL text it receives.

use miniserde::json::{self, Value};
use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::job::binary;
use super::{TempDir, repo_root, skip_unless_ci, succeeds};

/// The variables scripts/push and scripts/execute-job read: a test sets
/// the ones it means, and none come from whoever runs the tests.
pub const SCRIPT_SETTINGS: [&str; 9] = [
    "COMPUTE_POOL",
    "JOB_NAME",
    "IMAGE",
    "SERVICE_URL",
    "QUERY_ID",
    "STAGE",
    "SNOW_CONNECTION",
    "REPOSITORY_URL",
    "CONTAINER_ENGINE",
];

/// The directory holding the real `snow`: $S2S_SNOW_BIN, else
/// target/snow-venv/bin. None, after `skip_unless_ci`, when it is missing.
pub fn real_snow_bin() -> Option<PathBuf> {
    let dir = env::var_os("S2S_SNOW_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/snow-venv/bin"));
    if succeeds(dir.join("snow"), &["--version"]) {
        return Some(dir);
    }
    skip_unless_ci(&format!(
        "the real Snowflake CLI at {} (scripts/test installs it)",
        dir.display()
    ));
    None
}

/// The fake account, with a SNOWFLAKE_HOME whose config.toml points the
/// real CLI at it. Connections: `fake` (the default) has no database or
/// schema, so nothing unqualified resolves; `tutorial` has
/// tutorial_db.data_schema.
pub struct FakeSnowflake {
    child: Child,
    pub port: u16,
    pub state: TempDir,
    pub home: TempDir,
    pub snow_bin: PathBuf,
}

impl FakeSnowflake {
    /// Starts the fake on an ephemeral loopback port. `registry` is the host
    /// its SHOW IMAGE REPOSITORIES names.
    pub fn start(snow_bin: PathBuf, registry: &str) -> FakeSnowflake {
        let state = TempDir::new("state");
        let home = TempDir::new("home");
        let log_path = state.join("fake_snowflake.log");
        let log = fs::File::create(&log_path).unwrap();
        let child = Command::new("python3")
            .arg(repo_root().join("tests/peers/fake_snowflake.py"))
            .env("FAKE_SNOWFLAKE_DIR", &*state)
            // The jobs it runs are the binary under test, as S2S_BINARY
            // picks it for the passes over the shipped builds.
            .env("FAKE_SNOWFLAKE_JOB_BINARY", binary())
            .env("FAKE_SNOWFLAKE_REGISTRY", registry)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tests/peers/fake_snowflake.py");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port: u16 = loop {
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(port) = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("fake_snowflake listening on 127.0.0.1:"))
                .and_then(|p| p.trim().parse().ok())
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "fake_snowflake did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let config = home.join("config.toml");
        // No version check: snow would ask pypi.org for its latest release.
        let mut connections = String::from(
            "default_connection_name = \"fake\"\n\n[cli]\nignore_new_version_warning = true\n",
        );
        for (name, extra) in [
            ("fake", ""),
            (
                "tutorial",
                "database = \"tutorial_db\"\nschema = \"data_schema\"\n",
            ),
        ] {
            connections.push_str(&format!(
                "\n[connections.{name}]\naccount = \"fakeorg-fakeacct\"\nuser = \"tester\"\n\
                 password = \"not-a-secret\"\nhost = \"127.0.0.1\"\nport = {port}\n\
                 protocol = \"http\"\n{extra}"
            ));
        }
        fs::write(&config, connections).unwrap();
        // snow refuses a config file that others can read.
        fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
        FakeSnowflake {
            child,
            port,
            state,
            home,
            snow_bin,
        }
    }

    /// A command with the real `snow` first on PATH and SNOWFLAKE_HOME set,
    /// and none of the scripts' settings inherited from the test's caller.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env(
            "PATH",
            format!(
                "{}:{}",
                self.snow_bin.display(),
                env::var("PATH").unwrap_or_default()
            ),
        )
        .env("SNOWFLAKE_HOME", &self.home)
        // The connector would otherwise probe cloud metadata endpoints
        // (169.254.169.254 and others) to report its platform.
        .env("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")
        .stdin(Stdio::null());
        for var in SCRIPT_SETTINGS {
            cmd.env_remove(var);
        }
        cmd
    }

    fn requests(&self) -> Vec<Value> {
        let text = fs::read_to_string(self.state.join("requests.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| json::from_str(l).expect("requests.jsonl line"))
            .collect()
    }

    /// Every SQL text received, in order.
    pub fn sql(&self) -> Vec<String> {
        self.received("sql")
    }

    /// The request paths received, in order.
    pub fn paths(&self) -> Vec<String> {
        self.received("path")
    }

    /// The string `key` of each request recorded that has one, in order.
    fn received(&self, key: &str) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| match r {
                Value::Object(o) => match o.get(key) {
                    Some(Value::String(s)) => Some(s.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// The registry tokens issued so far.
    pub fn tokens(&self) -> Vec<String> {
        fs::read_to_string(self.state.join("tokens.txt"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The local directory standing for stage `db.schema.stage`.
    pub fn stage(&self, name: &str) -> PathBuf {
        self.state.join("stages").join(name.to_ascii_uppercase())
    }

    /// Gives the account the tables COPY INTO unloads: a JSON object
    /// `{"NAME": {"columns": [...], "rows": [[...], ...]}}`.
    pub fn set_tables(&self, tables: &str) {
        fs::write(self.state.join("tables.json"), tables).unwrap();
    }

    /// Reclaims the compute-pool node of an instance once it has ended, as
    /// Snowflake may do with an idle node: `{"<instance>": "empty" |
    /// "error"}`, what SYSTEM$GET_SERVICE_LOGS then gives for that instance
    /// of any job.
    pub fn set_reclaimed_nodes(&self, nodes: &str) {
        fs::write(self.state.join("reclaimed_nodes.json"), nodes).unwrap();
    }

    /// Forgets the SQL received so far.
    pub fn clear(&self) {
        let _ = fs::remove_file(self.state.join("requests.jsonl"));
    }
}

impl Drop for FakeSnowflake {
    fn drop(&mut self) {
        // SIGINT lets the fake stop the jobs it still runs.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
