//! The output fallback on a filesystem like a Snowflake stage volume: one
//! that refuses both rename and chmod. Made with bindfs over FUSE
//! (`--rename-deny --chmod-deny`) in a temporary directory. Where bindfs or
//! /dev/fuse is missing the test skips with one loud line (and fails under
//! CI=true): no other stand-in here refuses chmod while allowing writes.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::*;
use common::job::*;
use common::*;

/// A bindfs mount, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    /// A temporary directory holding `backing`, mounted at `stage`.
    fn in_temp_dir(tag: &str) -> Option<(TempDir, PathBuf, PathBuf, Mount)> {
        let dir = TempDir::new(tag);
        let (backing, stage) = (dir.join("backing"), dir.join("stage"));
        let mount = Mount::new(&backing, &stage)?;
        Some((dir, backing, stage, mount))
    }

    /// Makes both directories, and mounts `backing` at `mount_point`.
    fn new(backing: &Path, mount_point: &Path) -> Option<Mount> {
        fs::create_dir(backing).unwrap();
        fs::create_dir(mount_point).unwrap();
        if !succeeds("bindfs", &["--version"]) {
            skip_unless_ci("bindfs (apt-get install bindfs)");
            return None;
        }
        if !Path::new("/dev/fuse").exists() {
            skip_unless_ci("/dev/fuse");
            return None;
        }
        let status = Command::new("bindfs")
            .args(["--rename-deny", "--chmod-deny"])
            .arg(backing)
            .arg(mount_point)
            .status()
            .expect("run bindfs");
        if !status.success() {
            skip_unless_ci("a FUSE mount (bindfs failed; root and /dev/fuse needed)");
            return None;
        }
        Some(Mount(mount_point.to_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn output_lands_where_rename_and_chmod_are_refused() {
    let Some((dir, backing, stage, _mount)) = Mount::in_temp_dir("fuse-output") else {
        return;
    };
    // The premise: this filesystem takes writes but refuses chmod and rename.
    let probe = stage.join("probe");
    fs::write(&probe, "x").unwrap();
    assert!(fs::set_permissions(&probe, fs::Permissions::from_mode(0o600)).is_err());
    assert!(fs::rename(&probe, stage.join("probe2")).is_err());
    // Through the backing directory: the mount hears of the close above only
    // after it returned, and refuses to remove a file it counts as open.
    fs::remove_file(backing.join("probe")).unwrap();

    let server = serve_echo("Bob");
    let input = dir.join("input.txt");
    fs::write(&input, "a\nb\nc\n").unwrap();
    let output = stage.join("out.jsonl");
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("RUST_LOG", "debug")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert!(
        outcome.logged("DEBUG", "Cannot rename into place"),
        "{outcome}"
    );
    assert_eq!(
        fs::read_to_string(&output).unwrap(),
        "[0,\"Bob said a\"]\n[1,\"Bob said b\"]\n[2,\"Bob said c\"]\n"
    );
    assert_eq!(files_in(&stage), ["out.jsonl"], "the temporary is removed");

    // A second run replaces the output the same way.
    fs::write(&input, "d\n").unwrap();
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(fs::read_to_string(&output).unwrap(), "[0,\"Bob said d\"]\n");
    assert_eq!(files_in(&stage), ["out.jsonl"]);
}

/// A job that fails leaves nothing on such a filesystem: not its temporary
/// file either, which it closes before removing it.
#[test]
fn a_failed_job_leaves_no_temporary_file() {
    let Some((dir, backing, stage, _mount)) = Mount::in_temp_dir("fuse-failed") else {
        return;
    };
    let server = serve(|_, _| Reply::json(400, "no"));
    let input = dir.join("input.txt");
    fs::write(&input, "a\nb\n").unwrap();
    let outcome = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", stage.join("out.jsonl"))
        .run();
    outcome.assert_fails(76, "HTTP 400");
    assert_eq!(files_in(&backing), Vec::<String>::new(), "{outcome}");
}

/// Such a filesystem hears of a close only after `close` returned, and
/// refuses to remove a file it still counts as open. Here the temporary file
/// is held open 50 ms past the copy into place, as a late close would:
/// the job removes it all the same once it is let go.
#[test]
fn the_temporary_file_is_removed_once_the_filesystem_lets_it_go() {
    let Some((dir, backing, stage, _mount)) = Mount::in_temp_dir("fuse-late-close") else {
        return;
    };
    // The service answers once the test holds the temporary file.
    let (held, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let server = serve(move |request, _| {
        let _ = gate.lock().map(|gate| gate.recv());
        echo("Bob", request)
    });
    let input = dir.join("input.txt");
    fs::write(&input, "a\nb\n").unwrap();
    let mut child = job(&server.url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", stage.join("out.jsonl"))
        .env("RUST_LOG", "service_to_service=debug")
        .spawn();
    let temp = loop {
        if let Some(name) = files_in(&backing).into_iter().find(|n| n.ends_with(".tmp")) {
            break stage.join(name);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut holder = Some(fs::File::open(&temp).expect("open the temporary file"));
    held.send(()).unwrap();
    let stdout = child.stdout.take().expect("stdout");
    let mut log = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read the job's log");
        if line.contains("Cannot rename into place; copying") {
            std::thread::sleep(Duration::from_millis(50));
            holder = None;
        }
        log.push_str(&line);
        log.push('\n');
    }
    assert!(holder.is_none(), "the job never copied into place:\n{log}");
    assert_eq!(
        child.wait().expect("wait for the job").code(),
        Some(0),
        "{log}"
    );
    assert!(!log.contains("Cannot remove"), "{log}");
    assert_eq!(files_in(&backing), ["out.jsonl"], "{log}");
}

/// A stop while the output is being written: the temporary file is open
/// then, and such a filesystem refuses to remove it, so it is left, and the
/// job still exits at once; the next run removes it.
#[test]
fn a_stop_while_writing_leaves_a_temporary_file_that_the_rerun_removes() {
    let Some((dir, backing, stage, _mount)) = Mount::in_temp_dir("fuse-stop-writing") else {
        return;
    };
    let stalling = serve_three_then_stall();
    let input = dir.join("input.txt");
    fs::write(&input, "x\n".repeat(100)).unwrap();
    let output = stage.join("out.jsonl");
    let child = spawn_stalled(job(&stalling.url()), &stalling, &input, &output);
    let sent = Instant::now();
    send_signal(&child, libc::SIGTERM);
    let outcome = finish(child, sent);
    assert_eq!(outcome.code, Some(143), "{outcome}");
    assert!(outcome.elapsed < Duration::from_secs(5), "{outcome}");
    let left = files_in(&backing);
    eprintln!(
        "observed: {left:?} left by the stop, in {:?}",
        outcome.elapsed
    );
    assert!(
        left.iter()
            .all(|f| f.starts_with(".out.jsonl.") && f.ends_with(".tmp")),
        "{left:?}"
    );

    let outcome = job(&serve_echo("Bob").url())
        .env("INPUT_FILE", &input)
        .env("OUTPUT_FILE", &output)
        .env("BATCH_SIZE", "10")
        .run();
    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert_eq!(
        outcome
            .lines("INFO")
            .iter()
            .filter(|l| l.starts_with("Removed "))
            .count(),
        left.len(),
        "{outcome}"
    );
    assert_eq!(fs::read_to_string(&output).unwrap().lines().count(), 100);
    assert_eq!(files_in(&backing), ["out.jsonl"]);
}

/// A stop while the finished output is being copied into place, on a
/// filesystem that refuses rename (and, as FUSE does there, removing a file
/// that is open): neither the half-copied output nor the temporary file is
/// left. The copy must still be running when the signal lands, so the output
/// is large, and the run is repeated larger if the copy won the race.
#[test]
fn a_stop_during_the_copy_into_place_leaves_no_half_written_output() {
    let Some((dir, backing, stage, _mount)) = Mount::in_temp_dir("fuse-stop") else {
        return;
    };
    let server = serve_echo("Bob");
    let line = "y".repeat(3000);
    for rows in [20_000, 40_000, 80_000] {
        let input = dir.join("input.txt");
        fs::write(&input, format!("{line}\n").repeat(rows)).unwrap();
        let mut child = job(&server.url())
            .env("INPUT_FILE", &input)
            .env("OUTPUT_FILE", stage.join("out.jsonl"))
            .env("RUST_LOG", "service_to_service=debug")
            .spawn();
        let stdout = child.stdout.take().expect("stdout");
        let mut log = String::new();
        let mut signalled = false;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read the job's log");
            if !signalled && line.contains("Cannot rename into place; copying") {
                send_signal(&child, libc::SIGTERM);
                signalled = true;
            }
            log.push_str(&line);
            log.push('\n');
        }
        let status = child.wait().expect("wait for the job");
        assert!(signalled, "the job never copied into place:\n{log}");
        if status.code() == Some(0) {
            // The copy ended before the signal landed: again, larger.
            eprintln!("observed: {rows} rows copied before the signal; again with more");
            fs::remove_file(stage.join("out.jsonl")).unwrap();
            continue;
        }
        assert_eq!(status.code(), Some(143), "{log}");
        // The stop waited for the copy: it was deferred, not taken at once.
        assert!(
            log.contains("[WARNING] Received SIGTERM; stopping the job once the files being put in place can be removed"),
            "{log}"
        );
        assert_eq!(files_in(&backing), Vec::<String>::new(), "{log}");
        eprintln!("observed: stopped during the copy of {rows} rows, nothing left");
        return;
    }
    panic!("the copy into place always ended before the signal landed");
}
