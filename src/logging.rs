//! Log lines on stdout in the tutorial's Python `logging` format:
//! `service-to-service [2023-04-29 21:52:09,208] [INFO] message`.
//!
//! Timestamps are UTC and computed here from the epoch; a date crate would
//! cost more bytes than the twenty lines of calendar arithmetic it replaces.

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
    let filter = Filter::new(if checked.is_ok() { &spec } else { "" });
    log::set_max_level(filter.max_level());
    // Only fails if a logger is already set, which would be a bug in main.
    let _ = log::set_logger(Box::leak(Box::new(Logger { filter })));
    checked
}

/// The `RUST_LOG` directives, as env_logger read them: the longest module
/// name that starts the record's target decides, and a bare level is the
/// default for every other target.
///
/// This module and `Logger` replace env_logger (with no default features,
/// all of it the job used: filter, format, stdout). Measured: 13,856 bytes
/// (gzip -9 of the binary: 7,891) off the stable release binary, 8,112
/// (4,517) off the tiny one. Most of that was its filter builder's stable sort and its formatter and
/// writer machinery, none of which the job's one format needs.
struct Filter {
    /// Most specific (longest name) first; `None` (every target) last.
    directives: Vec<(Option<String>, LevelFilter)>,
}

impl Filter {
    /// From a spec that `check_spec` accepted.
    fn new(spec: &str) -> Filter {
        let mut filter = Filter {
            directives: vec![(None, LevelFilter::Info)],
        };
        for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let (name, level) = match directive.split_once('=') {
                Some((name, level)) => (Some(name.to_owned()), level.trim()),
                None => (None, directive),
            };
            filter.set(name, level.parse().unwrap_or(LevelFilter::Info));
        }
        // At trace, ureq-proto hex-dumps every byte sent and received, the
        // Authorization header (the URL's password in base64) included. Its
        // requests and responses are still logged at debug, with that header
        // redacted. The most specific directive wins, so this holds whatever
        // RUST_LOG says.
        filter.set(Some("ureq_proto::util".to_owned()), LevelFilter::Off);
        filter
    }

    /// A later directive for the same name replaces the earlier one.
    fn set(&mut self, name: Option<String>, level: LevelFilter) {
        let length = |name: &Option<String>| name.as_ref().map_or(0, String::len);
        if let Some(same) = self.directives.iter_mut().find(|(n, _)| *n == name) {
            same.1 = level;
            return;
        }
        let at = self
            .directives
            .iter()
            .position(|(n, _)| n.is_none() || length(n) < length(&name))
            .unwrap_or(self.directives.len());
        self.directives.insert(at, (name, level));
    }

    fn level_for(&self, target: &str) -> LevelFilter {
        self.directives
            .iter()
            .find(|(name, _)| name.as_deref().is_none_or(|name| target.starts_with(name)))
            .map_or(LevelFilter::Off, |(_, level)| *level)
    }

    fn max_level(&self) -> LevelFilter {
        self.directives
            .iter()
            .map(|(_, level)| *level)
            .max()
            .unwrap_or(LevelFilter::Off)
    }
}

struct Logger {
    filter: Filter,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.filter.level_for(metadata.target())
    }

    /// One line, written whole, so lines from several threads never mix.
    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let (time, level) = (Timestamp::now(), python_level_name(record.level()));
        let mut line = Vec::with_capacity(128);
        let _ = match HIDDEN.get().filter(|secrets| !secrets.is_empty()) {
            None => writeln!(line, "{LOGGER_NAME} [{time}] [{level}] {}", record.args()),
            Some(secrets) => {
                let message = record.args().to_string();
                let message = redact(secrets, message.as_bytes());
                writeln!(
                    line,
                    "{LOGGER_NAME} [{time}] [{level}] {}",
                    String::from_utf8_lossy(&message)
                )
            }
        };
        let _ = std::io::stdout().lock().write_all(&line);
    }

    fn flush(&self) {
        let _ = std::io::stdout().lock().flush();
    }
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

    #[test]
    fn the_most_specific_directive_decides() {
        let filter = Filter::new("");
        assert_eq!(
            filter.level_for("service_to_service::job"),
            LevelFilter::Info
        );
        assert_eq!(filter.level_for("ureq_proto::util"), LevelFilter::Off);
        assert_eq!(filter.max_level(), LevelFilter::Info);
        let filter = Filter::new("debug, ureq=trace,ureq::pool=warn,ureq_proto=trace,DEBUG");
        assert_eq!(filter.level_for("service_to_service"), LevelFilter::Debug);
        assert_eq!(filter.level_for("ureq::run"), LevelFilter::Trace);
        assert_eq!(filter.level_for("ureq::pool"), LevelFilter::Warn);
        assert_eq!(filter.level_for("ureq_proto::client"), LevelFilter::Trace);
        assert_eq!(filter.level_for("ureq_proto::util"), LevelFilter::Off);
        assert_eq!(filter.max_level(), LevelFilter::Trace);
        let filter = Filter::new("off,service_to_service=info,service_to_service=error");
        assert_eq!(filter.level_for("ureq::run"), LevelFilter::Off);
        assert_eq!(
            filter.level_for("service_to_service::job"),
            LevelFilter::Error
        );
        assert_eq!(filter.max_level(), LevelFilter::Error);
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
