//! Log lines on stdout in the tutorial's Python `logging` format:
//! `service-to-service [2023-04-29 21:52:09,208] [INFO] message`.
//!
//! env_logger reads `RUST_LOG` and writes each record whole; this module
//! gives it the format. Timestamps are UTC and computed here from the epoch:
//! env_logger's own come with a date crate, which costs more bytes than the
//! twenty lines of calendar arithmetic below.

use std::borrow::Cow;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter};

use crate::error::Error;

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
            match HIDDEN.get().filter(|secrets| !secrets.is_empty()) {
                None => writeln!(out, "{LOGGER_NAME} [{time}] [{level}] {}", record.args()),
                Some(secrets) => {
                    let message = record.args().to_string();
                    let message = redact(secrets, message.as_bytes());
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

/// Text that no log line may carry: the forms of the service URL's password.
static HIDDEN: OnceLock<Vec<Vec<u8>>> = OnceLock::new();

/// From now on, every log line has each of `secrets` replaced by `***`,
/// whichever crate logs it (ureq-proto's, for one, which may quote what the
/// service sent). Only the first call counts.
pub fn hide(secrets: &[Vec<u8>]) {
    let _ = HIDDEN.set(secrets.to_vec());
}

/// `text` with every occurrence of each of `secrets` replaced by `***`;
/// borrowed when there was nothing to replace.
pub fn redact<'a>(secrets: &[Vec<u8>], text: &'a [u8]) -> Cow<'a, [u8]> {
    let mut text = Cow::Borrowed(text);
    for secret in secrets {
        let Some(first) = find(&text, secret) else {
            continue;
        };
        let mut out = text[..first].to_vec();
        let mut rest = &text[first..];
        while let Some(at) = find(rest, secret) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(b"***");
            rest = &rest[at + secret.len()..];
        }
        out.extend_from_slice(rest);
        text = Cow::Owned(out);
    }
    text
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
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

/// A duration in seconds with two decimals, `1.25s`, printed with integer
/// arithmetic so that no float formatting code is linked in.
pub struct Seconds(pub Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // u64 parts, not `as_millis()`: formatting a u128 linked its own
        // Display (with src/job.rs's rate, measured: see there).
        let centis = self.0.subsec_millis() / 10;
        write!(f, "{}.{centis:02}s", self.0.as_secs())
    }
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

/// A UTC instant printed as `YYYY-MM-DD HH:MM:SS,mmm`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Timestamp {
    unix_millis: u64,
}

impl Timestamp {
    fn now() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            unix_millis: since_epoch.as_millis() as u64,
        }
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.unix_millis / 1000;
        let (year, month, day) = civil_from_days(secs / 86_400);
        let time_of_day = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02},{:03}",
            time_of_day / 3600,
            time_of_day % 3600 / 60,
            time_of_day % 60,
            self.unix_millis % 1000
        )
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
///
/// Works in 400-year eras counted from 0000-03-01, so that the leap day falls
/// at the end of each shifted year and needs no special case.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    const DAYS_FROM_0000_03_01_TO_EPOCH: u64 = 719_468;
    const DAYS_PER_ERA: u64 = 146_097;
    let days = days + DAYS_FROM_0000_03_01_TO_EPOCH;
    let era = days / DAYS_PER_ERA;
    let day_of_era = days % DAYS_PER_ERA;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix_millis: u64) -> String {
        Timestamp { unix_millis }.to_string()
    }

    #[test]
    fn known_instants() {
        assert_eq!(at(0), "1970-01-01 00:00:00,000");
        // The tutorial's sample log line.
        assert_eq!(at(1_682_805_129_208), "2023-04-29 21:52:09,208");
        assert_eq!(at(951_782_400_000), "2000-02-29 00:00:00,000"); // leap day, 400-year rule
        assert_eq!(at(951_868_799_999), "2000-02-29 23:59:59,999");
        assert_eq!(at(951_868_800_000), "2000-03-01 00:00:00,000");
        assert_eq!(at(1_709_164_800_000), "2024-02-29 00:00:00,000");
        assert_eq!(at(1_704_067_199_999), "2023-12-31 23:59:59,999"); // year end
        assert_eq!(at(1_704_067_200_000), "2024-01-01 00:00:00,000");
        assert_eq!(at(1_735_603_200_000), "2024-12-31 00:00:00,000"); // day 366
        assert_eq!(at(4_107_542_400_000), "2100-03-01 00:00:00,000"); // 2100 is not leap
        assert_eq!(at(4_107_542_399_000), "2100-02-28 23:59:59,000");
        assert_eq!(at(2_147_483_647_000), "2038-01-19 03:14:07,000");
    }

    #[test]
    fn civil_dates_agree_with_a_day_by_day_count() {
        let month_lengths = |year: u64| {
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ]
        };
        let mut days = 0;
        for year in 1970..2500 {
            for (month, length) in month_lengths(year).into_iter().enumerate() {
                for day in 1..=length {
                    assert_eq!(civil_from_days(days), (year, month as u64 + 1, day));
                    days += 1;
                }
            }
        }
    }

    #[test]
    fn seconds() {
        assert_eq!(Seconds(Duration::from_millis(1234)).to_string(), "1.23s");
        assert_eq!(Seconds(Duration::from_millis(5)).to_string(), "0.00s");
        assert_eq!(Seconds(Duration::from_secs(90)).to_string(), "90.00s");
    }

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
