//! Log lines on stdout in the tutorial's Python `logging` format:
//! `service-to-service [2023-04-29 21:52:09,208] [INFO] message`.
//!
//! env_logger reads `RUST_LOG` and writes each record whole; this module
//! gives it the format (with `time`'s timestamps: env_logger's own come with
//! a date crate), takes out what `secrets` hides, and refuses a `RUST_LOG`
//! that env_logger would quietly misread.

use std::io::Write;

use log::{Level, LevelFilter};

use crate::error::Error;
use crate::secrets;
use crate::time::Timestamp;

/// The logger name in every line, as the tutorial's `getLogger` names it.
const LOGGER_NAME: &str = "service-to-service";

/// Starts logging at the level `RUST_LOG` asks for (default `info`).
///
/// A bad `RUST_LOG` still leaves a working logger at `info`, so the caller can
/// report the error the same way as every other one.
pub fn init() -> Result<(), Error> {
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let checked = check_spec(&spec);
    let spec = if checked.is_ok() { spec.as_str() } else { "" };
    // Only fails if a logger is already set, which would be a bug in main.
    let _ = builder(spec).try_init();
    checked
}

/// The logger for a `RUST_LOG` that `check_spec` accepted.
fn builder(spec: &str) -> env_logger::Builder {
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(LevelFilter::Info)
        .parse_filters(spec)
        // At trace, ureq-proto hex-dumps every byte sent and received, the
        // Authorization header (the URL's password in base64) included.
        // Requests and replies are still logged at debug, by ureq. A later
        // directive for the same module replaces an earlier one, so this
        // holds whatever RUST_LOG says.
        .filter_module("ureq_proto::util", LevelFilter::Off)
        .target(env_logger::Target::Stdout)
        .format(|out, record| {
            let (time, level) = (Timestamp::now(), python_level_name(record.level()));
            match secrets::hidden_in_logs() {
                None => writeln!(out, "{LOGGER_NAME} [{time}] [{level}] {}", record.args()),
                Some(hidden) => {
                    let message = record.args().to_string();
                    let message = hidden.redact(message.as_bytes());
                    writeln!(
                        out,
                        "{LOGGER_NAME} [{time}] [{level}] {}",
                        String::from_utf8_lossy(&message)
                    )
                }
            }
        });
    builder
}

/// Accepts comma-separated `level` or `module=level` directives. env_logger
/// took a bare word as a module name, so `RUST_LOG=verbose` would
/// quietly log nothing; we refuse it, like every other bad setting.
fn check_spec(spec: &str) -> Result<(), Error> {
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = match directive.split_once('=') {
            Some((_, level)) => level,
            None if directive.parse::<LevelFilter>().is_ok() => continue,
            None => "",
        };
        if level.trim().parse::<LevelFilter>().is_err() {
            return Err(Error::config(
                "RUST_LOG",
                format!(
                    "{directive:?} is not a log level; use error, warn, info, debug, trace or off"
                ),
            ));
        }
    }
    Ok(())
}

fn python_level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "ERROR",
        Level::Warn => "WARNING",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_are_pythons() {
        assert_eq!(python_level_name(Level::Warn), "WARNING");
        assert_eq!(python_level_name(Level::Error), "ERROR");
    }

    /// The most verbose level `logger` logs for `target`.
    fn level_for(logger: &env_logger::Logger, target: &str) -> LevelFilter {
        use log::Log;
        let logs = |level: Level| {
            logger.enabled(&log::Metadata::builder().level(level).target(target).build())
        };
        [
            Level::Trace,
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error,
        ]
        .into_iter()
        .find(|level| logs(*level))
        .map_or(LevelFilter::Off, |level| level.to_level_filter())
    }

    #[test]
    fn the_most_specific_directive_decides() {
        let logger = builder("").build();
        assert_eq!(
            level_for(&logger, "service_to_service::job"),
            LevelFilter::Info
        );
        assert_eq!(level_for(&logger, "ureq_proto::util"), LevelFilter::Off);
        assert_eq!(logger.filter(), LevelFilter::Info);
        let logger = builder("debug, ureq=trace,ureq::pool=warn,ureq_proto=trace,DEBUG").build();
        assert_eq!(level_for(&logger, "service_to_service"), LevelFilter::Debug);
        assert_eq!(level_for(&logger, "ureq::run"), LevelFilter::Trace);
        assert_eq!(level_for(&logger, "ureq::pool"), LevelFilter::Warn);
        assert_eq!(level_for(&logger, "ureq_proto::client"), LevelFilter::Trace);
        assert_eq!(level_for(&logger, "ureq_proto::util"), LevelFilter::Off);
        assert_eq!(logger.filter(), LevelFilter::Trace);
        let logger = builder("ureq_proto::util=trace,off").build();
        assert_eq!(level_for(&logger, "ureq_proto::util"), LevelFilter::Off);
        let logger = builder("off,service_to_service=info,service_to_service=error").build();
        assert_eq!(level_for(&logger, "ureq::run"), LevelFilter::Off);
        assert_eq!(
            level_for(&logger, "service_to_service::job"),
            LevelFilter::Error
        );
        assert_eq!(logger.filter(), LevelFilter::Error);
    }

    #[test]
    fn log_specs() {
        for good in [
            "",
            "info",
            "DEBUG",
            "off",
            "service_to_service=debug",
            "ureq=trace,info",
        ] {
            assert!(check_spec(good).is_ok(), "{good:?}");
        }
        for bad in ["verbose", "ureq", "ureq=loud", "a b"] {
            let e = check_spec(bad).unwrap_err();
            assert_eq!(e.exit_code(), 64);
        }
    }
}
