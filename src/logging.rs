//! Log lines on stdout in the tutorial's Python `logging` format:
//! `service-to-service [2023-04-29 21:52:09,208] [INFO] message`.
//!
//! env_logger reads `RUST_LOG` and writes each record whole; this module
//! gives it the format (with `time`'s timestamps: env_logger's own come with
//! a date crate), takes out what `secrets` hides, and refuses a `RUST_LOG`
//! that env_logger would quietly misread.
//!
//! One record is one line. Text from outside (reply values, input rows,
//! reply bodies, header values) goes into a message through `escaped`,
//! `quoted` or `one_line`, which write what would break or disguise a line
//! as JSON's escapes; and the logger passes every finished message through
//! `one_line` once more, whichever crate logged it. What is escaped: the C0
//! controls and DEL, the C1 controls (U+0085 ends a line for some viewers),
//! U+2028 and U+2029, and the bidirectional embeddings, overrides and
//! isolates (U+202A to U+202E, U+2066 to U+2069), which can make a line read
//! in another order than it is written. Other text, non-ASCII included,
//! stays as it is.

use std::borrow::Cow;
use std::fmt;
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
    let directives = directives(&spec);
    // Only fails if a logger is already set, which would be a bug in main.
    let _ = builder(directives.as_deref().unwrap_or_default()).try_init();
    directives.map(drop)
}

/// The logger for `RUST_LOG`'s directives.
fn builder(directives: &[Directive]) -> env_logger::Builder {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(LevelFilter::Info);
    // In order, as env_logger's own parser would add them: a later
    // directive for the same module replaces an earlier one.
    for &(module, level) in directives {
        match module {
            Some(module) => builder.filter_module(module, level),
            None => builder.filter_level(level),
        };
    }
    builder
        // At trace, ureq-proto hex-dumps every byte sent and received, the
        // Authorization header (the URL's password in base64) included.
        // Requests and replies are still logged at debug, by ureq. A later
        // directive for the same module replaces an earlier one, so this
        // holds whatever RUST_LOG says.
        .filter_module("ureq_proto::util", LevelFilter::Off)
        .target(env_logger::Target::Stdout)
        .format(|out, record| {
            let (time, level) = (Timestamp::now(), python_level_name(record.level()));
            write!(out, "{LOGGER_NAME} [{time}] [{level}] ")?;
            let mut line = OneLine(out);
            let written = match secrets::hidden_in_logs() {
                None => fmt::Write::write_fmt(&mut line, *record.args()),
                Some(hidden) => {
                    // Whole, as a password may span the pieces of a message.
                    let message = record.args().to_string();
                    let message = hidden.redact(message.as_bytes());
                    fmt::Write::write_str(&mut line, &String::from_utf8_lossy(&message))
                }
            };
            written.map_err(|_| std::io::Error::other("cannot format a log record"))?;
            writeln!(out)
        });
    builder
}

/// Writes a message on, with whatever would end its line escaped: the last
/// line of defence, for text that reached a message unescaped.
struct OneLine<'a>(&'a mut env_logger::fmt::Formatter);

impl fmt::Write for OneLine<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0
            .write_all(one_line(text).as_bytes())
            .map_err(|_| fmt::Error)
    }
}

/// Text from outside as a log line shows it: on one line, with a backslash
/// written `\\` so that every escape reads one way. Borrowed when nothing
/// needed escaping, as for the tutorial's `Hello`.
pub fn escaped(text: &str) -> Cow<'_, str> {
    escape(text, b"\\")
}

/// Text from outside in quotes, as a JSON string literal writes it: like
/// `escaped`, and a quote written `\"`.
pub fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    out.push_str(&escape(text, b"\\\""));
    out.push('"');
    out
}

/// JSON text, or a finished message, on one line: only what would break or
/// disguise the line is escaped, so JSON's own escapes keep their meaning.
pub fn one_line(text: &str) -> Cow<'_, str> {
    escape(text, b"")
}

/// `text` with JSON's escapes for what `escapes` names and for the ASCII
/// characters in `also`; borrowed when there are none.
fn escape<'a>(text: &'a str, also: &[u8]) -> Cow<'a, str> {
    // Everything escaped is ASCII, or a character whose UTF-8 starts with
    // 0xC2 (the C1 controls) or 0xE2 (the rest): a byte scan finds where to
    // look closer, and most text has no such byte at all.
    let suspect = |b: u8| b < 0x20 || b == 0x7f || b == 0xc2 || b == 0xe2 || also.contains(&b);
    let needs = |c: char| escapes(c) || c.is_ascii() && also.contains(&(c as u8));
    let Some(first) = text.bytes().position(suspect) else {
        return Cow::Borrowed(text);
    };
    // 0xC2 and 0xE2 begin characters, so `first` is on a boundary.
    let Some(first) = text[first..]
        .char_indices()
        .find(|&(_, c)| needs(c))
        .map(|(at, _)| first + at)
    else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            _ if escapes(c) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u");
                for shift in [12, 8, 4, 0] {
                    out.push(char::from(HEX[(c as usize >> shift) & 0xf]));
                }
            }
            _ if needs(c) => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether a log line must show `c` as an escape: it would end the line
/// for some reader, or change how the rest of it reads. All are below
/// U+10000, so `\uXXXX` writes each.
fn escapes(c: char) -> bool {
    matches!(c,
        '\0'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One directive of `RUST_LOG`: the level of one module (and those under
/// it), or of all.
type Directive<'a> = (Option<&'a str>, LevelFilter);

/// The comma-separated `level` or `module=level` directives of `RUST_LOG`.
/// env_logger's own parser would take a bare word as a module name, so
/// `RUST_LOG=verbose` would quietly log nothing, and a `/` as the start of
/// a message filter: both are refused, like every other bad setting.
fn directives(spec: &str) -> Result<Vec<Directive<'_>>, Error> {
    let mut directives = Vec::new();
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (module, level) = match directive.split_once('=') {
            Some((module, level)) => (Some(module.trim()), level.trim()),
            None => (None, directive),
        };
        match level.parse() {
            Ok(level) if !directive.contains('/') => directives.push((module, level)),
            _ => {
                return Err(Error::config(
                    "RUST_LOG",
                    format!(
                        "{} is not a log level; use error, warn, info, debug, trace or off",
                        quoted(directive)
                    ),
                ));
            }
        }
    }
    Ok(directives)
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

    fn logger_for(spec: &str) -> env_logger::Logger {
        builder(&directives(spec).unwrap()).build()
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
        let logger = builder(&[]).build();
        assert_eq!(
            level_for(&logger, "service_to_service::job"),
            LevelFilter::Info
        );
        assert_eq!(level_for(&logger, "ureq_proto::util"), LevelFilter::Off);
        assert_eq!(logger.filter(), LevelFilter::Info);
        let logger = logger_for("debug, ureq=trace,ureq::pool=warn,ureq_proto=trace,DEBUG");
        assert_eq!(level_for(&logger, "service_to_service"), LevelFilter::Debug);
        assert_eq!(level_for(&logger, "ureq::run"), LevelFilter::Trace);
        assert_eq!(level_for(&logger, "ureq::pool"), LevelFilter::Warn);
        assert_eq!(level_for(&logger, "ureq_proto::client"), LevelFilter::Trace);
        assert_eq!(level_for(&logger, "ureq_proto::util"), LevelFilter::Off);
        assert_eq!(logger.filter(), LevelFilter::Trace);
        let logger = logger_for("ureq_proto::util=trace,off");
        assert_eq!(level_for(&logger, "ureq_proto::util"), LevelFilter::Off);
        let logger = logger_for("off,service_to_service=info,service_to_service=error");
        assert_eq!(level_for(&logger, "ureq::run"), LevelFilter::Off);
        assert_eq!(
            level_for(&logger, "service_to_service::job"),
            LevelFilter::Error
        );
        assert_eq!(logger.filter(), LevelFilter::Error);
    }

    #[test]
    fn text_from_outside_is_escaped_onto_one_line() {
        assert!(matches!(escaped("Bob said Hello"), Cow::Borrowed(_)));
        assert!(matches!(
            escaped("say \"hi\" é 日本 € 🦀"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escaped("a\nb\rc\td\\e\u{1b}[31m\u{0}\u{7f}"),
            "a\\nb\\rc\\td\\\\e\\u001b[31m\\u0000\\u007f"
        );
        // Line and paragraph separators, C1 controls (U+0085 is NEL) and
        // the bidirectional overrides; not their neighbours.
        assert_eq!(
            escaped("\u{2028}\u{2029}\u{85}\u{9f}\u{202e}\u{2066}\u{a0}\u{2027}\u{202f}"),
            "\\u2028\\u2029\\u0085\\u009f\\u202e\\u2066\u{a0}\u{2027}\u{202f}"
        );
        assert_eq!(quoted("say \"hi\"\n"), r#""say \"hi\"\n""#);
        // JSON text keeps its own escapes.
        assert_eq!(one_line("[\"a\\\"b\",\r1]"), r#"["a\"b",\r1]"#);
        assert!(matches!(one_line("a\\b"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_record_is_one_line_whatever_its_message_holds() {
        use log::Log;
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Shared {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let written = Shared::default();
        let logger = builder(&[])
            .target(env_logger::Target::Pipe(Box::new(written.clone())))
            .build();
        let forged = "x\nservice-to-service [2026-01-01 00:00:00,000] [ERROR] forged\u{2028}\\";
        logger.log(
            &log::Record::builder()
                .level(Level::Warn)
                .target("some_crate")
                .args(format_args!("raw {forged} {}", 1))
                .build(),
        );
        let text = String::from_utf8(written.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.ends_with(
                "[WARNING] raw x\\nservice-to-service [2026-01-01 00:00:00,000] \
                 [ERROR] forged\\u2028\\ 1\n"
            ),
            "{text}"
        );
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
            "info, ureq = debug",
        ] {
            assert!(directives(good).is_ok(), "{good:?}");
        }
        for bad in [
            "verbose",
            "ureq",
            "ureq=loud",
            "a b",
            "ureq=",
            "a=b=info",
            "info/Hello",
            "ureq/x=info",
        ] {
            let e = directives(bad).unwrap_err();
            assert_eq!(e.exit_code(), 64);
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Any text, with the characters a log line escapes drawn often.
    fn any_text() -> impl Strategy<Value = String> {
        let character = prop_oneof![
            2 => any::<char>(),
            1 => (0u32..0xa0).prop_map(|c| char::from_u32(c).unwrap_or('?')),
            1 => prop::sample::select(vec!['"', '\\', 'u', '\u{2028}', '\u{2029}', '\u{202e}', '\u{2069}']),
        ];
        proptest::collection::vec(character, 0..40).prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// One line, and one way back: a quoted text is the JSON string of
        /// the text, and an escaped one is the same but for its quotes.
        #[test]
        fn escapes_read_one_way(text in any_text()) {
            let quoted = quoted(&text);
            prop_assert_eq!(miniserde::json::from_str::<String>(&quoted).ok(), Some(text.clone()));
            let escaped = escaped(&text);
            prop_assert!(!escaped.chars().any(escapes), "{:?}", escaped);
            prop_assert_eq!(escaped.replace('"', "\\\""), &quoted[1..quoted.len() - 1]);
            prop_assert!(!one_line(&text).chars().any(escapes));
        }
    }
}
