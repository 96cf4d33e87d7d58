//! The job as a library user sees it: `job::run` returns with no thread of
//! its own left behind.

mod common;

use std::ffi::OsString;

use common::TempDir;
use common::http::EchoService;
use service_to_service::config::Config;
use service_to_service::job;

/// This process's threads, from /proc.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

#[test]
fn run_returns_with_every_request_thread_ended() {
    // The service in a process of its own, so that only the job's threads
    // come and go in this one.
    let service = EchoService::start(0, Some("Bob"));
    let dir = TempDir::new("library");
    let input = dir.join("input.txt");
    let lines: Vec<String> = (0..500).map(|i| format!("row {i}")).collect();
    std::fs::write(&input, format!("{}\n", lines.join("\n"))).unwrap();
    let before = threads();
    for concurrency in ["8", "64", "auto"] {
        let output = dir.join(format!("out-{concurrency}.jsonl"));
        let vars = [
            ("SERVICE_URL", format!("http://{}/echo", service.addr)),
            ("INPUT_FILE", input.display().to_string()),
            ("OUTPUT_FILE", output.display().to_string()),
            ("BATCH_SIZE", "5".to_owned()),
            ("CONCURRENCY", concurrency.to_owned()),
        ];
        let config = Config::from_lookup(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        })
        .unwrap();
        // The most threads seen while it runs: no more request threads
        // than the limit (and the sampler's own).
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let running = std::sync::Arc::clone(&running);
            std::thread::spawn(move || {
                let mut most = 0;
                while running.load(std::sync::atomic::Ordering::Relaxed) {
                    most = most.max(threads());
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                most
            })
        };
        job::run(&config).unwrap();
        running.store(false, std::sync::atomic::Ordering::Relaxed);
        let most = sampler.join().unwrap() - before - 1;
        let limit = concurrency.parse().unwrap_or(256);
        assert!(
            most <= limit,
            "CONCURRENCY={concurrency}: {most} request threads at once"
        );
        // Every request thread has finished its work when run returns (it
        // waits for them); the kernel may take a moment more to take the
        // threads' last traces out of /proc.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while threads() != before && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(threads(), before, "CONCURRENCY={concurrency}");
        let written = std::fs::read_to_string(&output).unwrap();
        assert_eq!(written.lines().count(), 500);
        assert_eq!(written.lines().nth(499), Some("[499,\"Bob said row 499\"]"));
    }
}
