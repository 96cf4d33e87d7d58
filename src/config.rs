//! The job's configuration: every environment variable it reads, its default,
//! and the checks that turn a bad value into a clear `Error::Config`.
//!
//! Everything is read and checked once, before any request is sent, so a typo
//! in a specification fails the job at once with exit 64 instead of after the
//! retry deadline.

use std::borrow::Cow;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use ureq::http::{HeaderValue, Uri};

use crate::error::Error;
use crate::logging;
use crate::random;
use crate::rows::InputFormat;
use crate::secrets::{self, Secrets};

/// An environment variable the job reads.
pub struct Variable {
    pub name: &'static str,
    /// What an unset variable means, written as a user would set it: parsed
    /// exactly like a value from the environment. None: unset means absent.
    pub default: Option<&'static str>,
    pub meaning: &'static str,
}

/// Every variable, in `--help`'s order. The defaults here are the only ones:
/// `--help` prints them and `Config::from_lookup` parses them.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "SERVICE_URL",
        default: Some("http://localhost:8080/echo"),
        meaning: "endpoint that speaks the service-function row format (http only)",
    },
    Variable {
        name: "ECHO_TEXT",
        default: Some("Hello"),
        meaning: "the single row sent when INPUT_FILE is unset",
    },
    Variable {
        name: "INPUT_FILE",
        default: None,
        meaning: "UTF-8 file with one row per line; - reads stdin",
    },
    Variable {
        name: "INPUT_FORMAT",
        default: Some("lines"),
        meaning: "lines: each line is one string column; jsonl: each line is a JSON array of columns",
    },
    Variable {
        name: "OUTPUT_FILE",
        default: None,
        meaning: "JSON lines [index, reply], written atomically; {index} becomes SNOWFLAKE_JOB_INDEX",
    },
    Variable {
        name: "MAX_FAILED_ROWS",
        default: Some("0"),
        meaning: "rows that may fail for good, found by splitting failed batches, before the job fails",
    },
    Variable {
        name: "REJECTS_FILE",
        default: None,
        meaning: "JSON lines {index, row, error}, one per failed row, written as OUTPUT_FILE is",
    },
    Variable {
        name: "BATCH_SIZE",
        default: Some("100"),
        meaning: "rows per request",
    },
    Variable {
        name: "CONCURRENCY",
        default: Some("1"),
        meaning: "requests in flight at once (1 to 256), or auto: found from the service's answers",
    },
    Variable {
        name: "CONNECT_TIMEOUT",
        default: Some("5s"),
        meaning: "per connection attempt",
    },
    Variable {
        name: "REQUEST_TIMEOUT",
        default: Some("30s"),
        meaning: "per attempt, from connect to the last byte of the reply",
    },
    Variable {
        name: "RETRY_DEADLINE",
        default: Some("60s"),
        meaning: "how long transient failures are retried (0 = never)",
    },
    Variable {
        name: "ASYNC_TIMEOUT",
        default: Some("10m"),
        meaning: "how long a batch may stay accepted (HTTP 202) and unfinished, polled",
    },
    Variable {
        name: "MAX_RESPONSE_BYTES",
        default: Some("10485760"),
        meaning: "largest reply body accepted, in bytes (at most 1073741824, 1 GiB)",
    },
    Variable {
        name: "QUERY_ID",
        default: None,
        meaning: "sent with every batch as sf-external-function-current-query-id; unset: a random UUID",
    },
    Variable {
        name: "SNOWFLAKE_JOBS_COUNT",
        default: Some("1"),
        meaning: "replicas in the job (set by SPCS); rows are split by index modulo this",
    },
    Variable {
        name: "SNOWFLAKE_JOB_INDEX",
        default: Some("0"),
        meaning: "this replica's 0-based index (set by SPCS)",
    },
    // Read by `logging::init`, before the rest, so that a bad setting
    // elsewhere is still logged; its default there is the same.
    Variable {
        name: "RUST_LOG",
        default: Some("info"),
        meaning: "log level: error, warn, info, debug, trace or off",
    },
];

/// The `--help` text: what the job does, every variable with its default,
/// and the exit codes.
pub fn help() -> String {
    let mut text = String::from(
        "service-to-service: POST rows to a Snowpark Container Services service and check\n\
         every reply. Settings come from the environment:\n\n",
    );
    for variable in VARIABLES {
        let (name, meaning) = (variable.name, variable.meaning);
        let default = variable.default.unwrap_or("(unset)");
        text.push_str(&format!("  {name:<21} {default:<27} {meaning}\n"));
    }
    text.push_str(
        "\nExit status: 0 every row answered (or failed within MAX_FAILED_ROWS);\n\
         64 bad configuration; 65 bad input data; 66 input file missing; 69 service\n\
         unreachable until RETRY_DEADLINE, or a batch unfinished at ASYNC_TIMEOUT;\n\
         73 output file cannot be created; 74 I/O error; 76 the service answered\n\
         wrongly, or more rows failed than MAX_FAILED_ROWS; 130 SIGINT; 143 SIGTERM.\n\
         With several replicas, OUTPUT_FILE and REJECTS_FILE must hold {index}.\n",
    );
    text
}

/// The default of the variable called `name`, from `VARIABLES`.
fn default_of(name: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .find(|variable| variable.name == name)
        .and_then(|variable| variable.default)
}

/// Durations above this are almost certainly a unit mistake (`60000` meant as ms).
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
const MAX_BATCH_SIZE: usize = 100_000;
const MAX_CONCURRENCY: usize = crate::limit::MOST;
/// A reply is held whole in memory, and a buffer for it is reserved at
/// once: a gibibyte is far above any batch's reply, and still an amount
/// that can be had.
const MAX_RESPONSE_BYTES: usize = 1 << 30;
/// A URL's path goes into the request line and its host and credentials into
/// headers; with this cap every request head fits the client's write buffer.
pub const MAX_URL_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceUrl,
    pub input: Input,
    pub input_format: InputFormat,
    pub output: Option<PathBuf>,
    /// Where the rows that failed for good are written, with why.
    pub rejects: Option<PathBuf>,
    /// How many rows may fail for good before the job does.
    pub max_failed_rows: u64,
    pub batch_size: usize,
    pub concurrency: Concurrency,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub retry_deadline: Duration,
    pub async_timeout: Duration,
    pub max_response_bytes: u64,
    /// Names this run of the job in every request, for the service's logs.
    pub query_id: String,
    pub shard: Shard,
}

/// How many requests may be in flight at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Concurrency {
    Fixed(usize),
    /// Learnt from the service's answers, between 1 and the most allowed.
    Auto,
}

impl Concurrency {
    /// The most requests in flight at once.
    pub fn most(self) -> usize {
        match self {
            Concurrency::Fixed(n) => n,
            Concurrency::Auto => MAX_CONCURRENCY,
        }
    }
}

/// Where the rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The tutorial's single row, `ECHO_TEXT`.
    Single(String),
    File(PathBuf),
    Stdin,
}

/// Which rows this replica owns: those whose index modulo `count` is `index`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub fn owns(&self, row: u64) -> bool {
        row % self.count == self.index
    }
}

/// A checked `http://` URL. `Display` and `Debug` hide any password, so no
/// log line can carry it by accident.
#[derive(Clone, PartialEq)]
pub struct ServiceUrl {
    /// Parsed once, here, so that a URL the client cannot use is refused
    /// before anything is sent.
    uri: Uri,
    /// `Basic` and the URL's `user:password`, percent-decoded, marked
    /// sensitive. Given, it stands in for the one ureq would make from the
    /// URL as written.
    authorization: Option<HeaderValue>,
    redacted: String,
    /// The forms of the password, for keeping it out of log lines.
    secrets: Secrets,
}

impl ServiceUrl {
    /// The URL as the HTTP client takes it, credentials included.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The Authorization header for the URL's credentials, if it has any.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// The forms of the URL's password, which no log line may show.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }
}

impl std::fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceUrl({:?})", self.redacted)
    }
}

impl std::fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, Error> {
        Config::from_lookup(|name| std::env::var_os(name))
    }

    /// Reads settings through `lookup`, so tests need not touch the process
    /// environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Config, Error> {
        // A variable's value, or its default when unset; None when unset
        // with no default.
        let get = |name: &'static str| -> Result<Option<String>, Error> {
            match lookup(name) {
                None => Ok(default_of(name).map(str::to_owned)),
                Some(value) => value
                    .into_string()
                    .map(Some)
                    .map_err(|_| Error::config(name, "is not valid UTF-8")),
            }
        };
        // Every variable but the two files has a default.
        let text = |name: &'static str| get(name).map(Option::unwrap_or_default);

        let service = parse_service_url(&text("SERVICE_URL")?)?;
        let input = match lookup("INPUT_FILE") {
            Some(path) if path == "-" => Input::Stdin,
            Some(path) if path.is_empty() => {
                return Err(Error::config(
                    "INPUT_FILE",
                    "is empty; give a path, or - for stdin",
                ));
            }
            Some(path) => Input::File(PathBuf::from(path)),
            None => Input::Single(text("ECHO_TEXT")?),
        };
        let shard = parse_shard(
            &text("SNOWFLAKE_JOB_INDEX")?,
            &text("SNOWFLAKE_JOBS_COUNT")?,
        )?;
        let file = |name: &'static str| match get(name)? {
            None => Ok(None),
            Some(path) => replica_path(name, &path, shard).map(Some),
        };

        let duration = |name: &'static str, zero_ok: bool| {
            parse_duration(&text(name)?, zero_ok).map_err(|p| Error::config(name, p))
        };
        let count = |name: &'static str, least: usize, max: usize| {
            parse_count(&text(name)?, least, max).map_err(|p| Error::config(name, p))
        };

        let (output, rejects) = (file("OUTPUT_FILE")?, file("REJECTS_FILE")?);
        if output.is_some() && output == rejects {
            return Err(Error::config(
                "REJECTS_FILE",
                "is OUTPUT_FILE; the rows that fail need a file of their own",
            ));
        }

        let input_format = match text("INPUT_FORMAT")?.trim() {
            "lines" => InputFormat::Lines,
            "jsonl" => InputFormat::Jsonl,
            other => {
                return Err(Error::config(
                    "INPUT_FORMAT",
                    format!(
                        "is {}; expected lines (one string column per line) or jsonl \
                         (one JSON array of column values per line)",
                        logging::quoted(other)
                    ),
                ));
            }
        };

        Ok(Config {
            service,
            input,
            input_format,
            output,
            rejects,
            max_failed_rows: count("MAX_FAILED_ROWS", 0, usize::MAX)? as u64,
            batch_size: count("BATCH_SIZE", 1, MAX_BATCH_SIZE)?,
            concurrency: concurrency(&text("CONCURRENCY")?)?,
            connect_timeout: duration("CONNECT_TIMEOUT", false)?,
            request_timeout: duration("REQUEST_TIMEOUT", false)?,
            retry_deadline: duration("RETRY_DEADLINE", true)?,
            async_timeout: duration("ASYNC_TIMEOUT", false)?,
            max_response_bytes: count("MAX_RESPONSE_BYTES", 1, MAX_RESPONSE_BYTES)? as u64,
            query_id: match get("QUERY_ID")? {
                Some(id) => parse_query_id(&id)?,
                None => random::uuid(),
            },
            shard,
        })
    }
}

/// Accepts `250ms`, `5s`, `2m`, `1h`, or a bare number of seconds (`1.5`).
pub fn parse_duration(text: &str, zero_ok: bool) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("is empty; {EXPECTED_DURATION}"));
    }
    duration_of(text, zero_ok).map_err(|problem| format!("{} {problem}", logging::quoted(text)))
}

/// What a message about a bad duration says would be right.
const EXPECTED_DURATION: &str = "expected a duration such as 250ms, 5s, 2m or a number of seconds";

/// The duration `text` (not empty) gives, or what is wrong with it, to
/// follow it in a message.
fn duration_of(text: &str, zero_ok: bool) -> Result<Duration, Cow<'static, str>> {
    if text.starts_with('-') {
        return Err(format!("is negative; {EXPECTED_DURATION}").into());
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let nanos_per_unit: u128 = match unit {
        "ms" => 1_000_000,
        "" | "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => {
            let unit = logging::quoted(unit);
            return Err(format!("has unknown unit {unit}; use ms, s, m or h").into());
        }
    };
    let too_large = "is too large; the most allowed is 24h";
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits_only(whole) || !digits_only(fraction) {
        return Err(format!("is not a number; {EXPECTED_DURATION}").into());
    }
    if whole.trim_start_matches('0').len() > 12 {
        return Err(too_large.into());
    }
    let whole = &whole[whole.len().saturating_sub(12)..];
    let fraction = &fraction[..fraction.len().min(12)];
    // Whole and fractional digits by hand: exact, and no float parser in
    // the binary; at most twelve of each, so no overflow.
    let value = |digits: &str| {
        digits
            .bytes()
            .fold(0u128, |value, digit| value * 10 + u128::from(digit - b'0'))
    };
    let nanos = value(whole) * nanos_per_unit
        + value(fraction) * nanos_per_unit / 10u128.pow(fraction.len() as u32);
    if nanos > MAX_DURATION.as_nanos() {
        return Err(too_large.into());
    }
    let duration = Duration::from_nanos(nanos as u64);
    if duration.is_zero() && !zero_ok {
        return Err("is zero; it must be greater than zero".into());
    }
    Ok(duration)
}

fn parse_count(text: &str, least: usize, max: usize) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n < least => Err(format!("is {n}; it must be at least {least}")),
        Ok(n) if n > max => Err(format!("is {n}; the most allowed is {max}")),
        Ok(n) => Ok(n),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
            Err(format!("is {}; the most allowed is {max}", text.trim()))
        }
        Err(_) => Err(format!("{} is not a whole number", logging::quoted(text))),
    }
}

/// A query id given in the environment: sent as a header, so visible ASCII
/// alone, and short enough to read in a log line.
fn parse_query_id(id: &str) -> Result<String, Error> {
    let visible = id.bytes().all(|b| b.is_ascii_graphic());
    if id.is_empty() || id.len() > 128 || !visible {
        return Err(Error::config(
            "QUERY_ID",
            format!(
                "is {}; a query id is 1 to 128 visible ASCII characters, without spaces \
                 (or leave it unset for a random one)",
                logging::quoted(id)
            ),
        ));
    }
    Ok(id.to_owned())
}

/// The file a per-replica setting names for this replica: `{index}`
/// becomes its index. With several replicas a name without `{index}` is
/// refused, since they would all write the one file and all but the last
/// replica's rows would be lost without a word.
fn replica_path(name: &'static str, path: &str, shard: Shard) -> Result<PathBuf, Error> {
    if path.is_empty() {
        return Err(Error::config(
            name,
            "is empty; give a path or leave it unset",
        ));
    }
    // `find`, not `contains`: for a short needle `str::contains` inlines a
    // vectorised search of its own, where `find` calls the one linked anyway.
    if shard.count > 1 && path.find("{index}").is_none() {
        return Err(Error::config(
            name,
            format!(
                "is {}, without {{index}}, and all {} replicas (SNOWFLAKE_JOBS_COUNT) \
                 would write that one file; put {{index}} in the name, as in \
                 /data/output-{{index}}.jsonl, to give each replica its own",
                logging::quoted(path),
                shard.count
            ),
        ));
    }
    Ok(PathBuf::from(
        path.replace("{index}", &shard.index.to_string()),
    ))
}

fn concurrency(text: &str) -> Result<Concurrency, Error> {
    if text.trim().eq_ignore_ascii_case("auto") {
        return Ok(Concurrency::Auto);
    }
    match parse_count(text, 1, MAX_CONCURRENCY) {
        Ok(n) => Ok(Concurrency::Fixed(n)),
        Err(problem) => Err(Error::config("CONCURRENCY", problem + " (or auto)")),
    }
}

fn parse_shard(index: &str, count: &str) -> Result<Shard, Error> {
    let number = |name: &'static str, text: &str| {
        text.trim().parse::<u64>().map_err(|_| {
            Error::config(
                name,
                format!("{} is not a whole number", logging::quoted(text)),
            )
        })
    };
    let count = number("SNOWFLAKE_JOBS_COUNT", count)?;
    if count == 0 {
        return Err(Error::config(
            "SNOWFLAKE_JOBS_COUNT",
            "is 0; a job has at least 1 replica",
        ));
    }
    let index = number("SNOWFLAKE_JOB_INDEX", index)?;
    if index >= count {
        return Err(Error::config(
            "SNOWFLAKE_JOB_INDEX",
            format!(
                "is {index}, but with SNOWFLAKE_JOBS_COUNT={count} it must be 0 to {}",
                count - 1
            ),
        ));
    }
    Ok(Shard { index, count })
}

/// Checks the URL up front, with messages that say what would be right; the
/// HTTP client's own parser is the final word on the rest.
///
/// The password is found first, by `Secrets::of_url`, before anything can
/// fail on it. No message shows the user name or password, and each is
/// redacted with every form the URL may hold one in, in case.
pub fn parse_service_url(url: &str) -> Result<ServiceUrl, Error> {
    let secrets = Secrets::of_url(url);
    checked_service_url(url, secrets.clone())
        .map_err(|problem| Error::config("SERVICE_URL", secrets.redact_str(problem)))
}

fn checked_service_url(url: &str, secrets: Secrets) -> Result<ServiceUrl, String> {
    let example = "expected something like http://echo-service:8000/echo";
    if url.trim().is_empty() {
        return Err(format!("is empty; {example}"));
    }
    if url.chars().any(char::is_whitespace) {
        return Err(format!(
            "contains white space; percent-encode spaces as %20 ({example})"
        ));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("has no scheme; {example}"));
    };
    // Shown only when it is a scheme (RFC 3986): a user name or password
    // written before a misplaced `://` is not.
    let mut scheme_chars = scheme.bytes();
    let is_scheme = scheme_chars.next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme_chars.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !is_scheme {
        return Err(format!("has no scheme; {example}"));
    }
    if scheme.eq_ignore_ascii_case("https") {
        return Err(
            "https:// is not supported: this build has no TLS. Service-to-service \
             traffic inside SPCS is plain http://, e.g. http://echo-service:8000/echo"
                .to_owned(),
        );
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!(
            "has scheme {}; only http is supported",
            logging::quoted(scheme)
        ));
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    // An `@` past the authority with a `:` before it: a password holding a
    // raw `/`, `?` or `#` (which ends the authority early), or an `@` in the
    // path or query after a port. No parser can tell which, so the URL is
    // refused, and none of it is shown, as it may be the password.
    if path
        .rfind('@')
        .is_some_and(|at| rest[..authority_end + at].contains(':'))
    {
        return Err(
            "has an @ after a /, ? or # with a : before it, which could be a password \
             holding a raw /, ? or #, or an @ in the path or query: percent-encode /, ? \
             and # in a password as %2F, %3F and %23, and an @ in a path or query as %40 \
             (the URL is not shown, as it may hold a password)"
                .to_owned(),
        );
    }
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let (host, port) = split_host_port(host_port)?;
    if host.is_empty() {
        return Err(format!("has no host; {example}"));
    }
    if let Some(port) = port {
        match port.parse::<u32>() {
            Ok(1..=65535) => {}
            _ => {
                return Err(format!(
                    "has port {}; a port is 1 to 65535",
                    logging::quoted(port)
                ));
            }
        }
    }
    if url.len() > MAX_URL_BYTES {
        return Err(format!(
            "no valid HTTP/1.1 request can be made for it: it is {} bytes long, and a \
             request head carries at most {MAX_URL_BYTES}",
            url.len()
        ));
    }
    let Ok(uri) = Uri::try_from(url) else {
        return Err(format!("is not a valid URL; {example}"));
    };
    let (redacted, authorization) = match userinfo {
        Some(userinfo) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            let Ok(mut value) =
                HeaderValue::try_from(format!("Basic {}", secrets::basic_token(userinfo)))
            else {
                return Err(format!("is not a valid URL; {example}"));
            };
            value.set_sensitive(true);
            (
                format!("{scheme}://{user}{hidden}@{host_port}{path}"),
                Some(value),
            )
        }
        None => (url.to_owned(), None),
    };
    Ok(ServiceUrl {
        uri,
        authorization,
        redacted,
        secrets,
    })
}

fn split_host_port(host_port: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((_, after)) = bracketed.split_once(']') else {
            return Err("has an IPv6 address without its closing ]".to_owned());
        };
        let host = &host_port[..host_port.len() - after.len()];
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err("has text after the IPv6 address; expected :port".to_owned()),
            },
        };
    }
    Ok(match host_port.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (host_port, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, Error> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    fn config_error(vars: &[(&str, &str)]) -> String {
        match config(vars) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => {
                assert_eq!(e.exit_code(), 64);
                e.to_string()
            }
        }
    }

    #[test]
    fn defaults_follow_the_tutorial() {
        let c = config(&[]).unwrap();
        assert_eq!(c.service.to_string(), "http://localhost:8080/echo");
        assert_eq!(c.input, Input::Single("Hello".into()));
        assert_eq!(c.input_format, InputFormat::Lines);
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.retry_deadline, Duration::from_secs(60));
        assert_eq!(c.max_response_bytes, 10 * 1024 * 1024);
        assert_eq!(c.batch_size, 100);
        assert_eq!(c.concurrency, Concurrency::Fixed(1));
        assert_eq!(c.shard, Shard { index: 0, count: 1 });
        assert_eq!(c.async_timeout, Duration::from_secs(600));
        assert_eq!(c.query_id.len(), 36, "a random UUID: {}", c.query_id);
        assert_ne!(c.query_id, config(&[]).unwrap().query_id);
    }

    #[test]
    fn a_query_id_is_a_header_value() {
        let id = config(&[("QUERY_ID", "01b2c3d4-0000-0001-run:7")]).unwrap();
        assert_eq!(id.query_id, "01b2c3d4-0000-0001-run:7");
        for bad in ["", "has space", "tab\there", "é", &"x".repeat(129)] {
            let error = config_error(&[("QUERY_ID", bad)]);
            assert!(error.contains("1 to 128 visible ASCII"), "{error}");
        }
    }

    #[test]
    fn every_variable_read_is_in_the_table_and_in_help() {
        let asked = std::cell::RefCell::new(Vec::new());
        Config::from_lookup(|name| {
            asked.borrow_mut().push(name.to_owned());
            None
        })
        .unwrap();
        let help = help();
        for name in asked.into_inner() {
            let variable = VARIABLES.iter().find(|v| v.name == name);
            assert!(variable.is_some(), "{name} is read but not in VARIABLES");
            assert!(help.contains(&name), "{name} is not in --help");
        }
        for variable in VARIABLES {
            let default = variable.default.unwrap_or("(unset)");
            let line = help
                .lines()
                .find(|line| line.split_whitespace().next() == Some(variable.name));
            assert!(
                line.is_some_and(|line| line.contains(default)),
                "--help shows {} without its default {default}",
                variable.name
            );
        }
    }

    #[test]
    fn durations() {
        let d = |t| parse_duration(t, false);
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(d("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(d("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(d("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(d("7"), Ok(Duration::from_secs(7)));
        assert_eq!(d("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0", true), Ok(Duration::ZERO));
        for bad in ["", "-5s", "5x", "5 sec", "s", "1..2s", "25h", "0", "0ms"] {
            assert!(d(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(d("5d").unwrap_err().contains("unknown unit \"d\""));
        assert!(d("-1s").unwrap_err().contains("negative"));
        assert!(d("100000s").unwrap_err().contains("too large"));
        assert!(
            d("99999999999999999999s")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(d("0000000000000005s"), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let e = |url| config_error(&[("SERVICE_URL", url)]);
        assert!(e("").contains("is empty"));
        assert!(e("http://").contains("no host"));
        assert!(e("http:///echo").contains("no host"));
        assert!(e("http://h:0/echo").contains("port \"0\""));
        assert!(e("http://h:65536/echo").contains("1 to 65535"));
        assert!(e("http://h:x/echo").contains("port \"x\""));
        assert!(e("http://my host/echo").contains("white space"));
        assert!(e("https://h/echo").contains("no TLS"));
        assert!(e("ftp://h/echo").contains("only http"));
        assert!(e("echo-service:8000").contains("no scheme"));
        assert!(e("http://[::1/echo").contains("closing ]"));
    }

    #[test]
    fn good_urls_are_kept_and_passwords_hidden() {
        let url = |u| parse_service_url(u).unwrap();
        assert_eq!(
            url("http://[::1]:8000/echo").to_string(),
            "http://[::1]:8000/echo"
        );
        assert_eq!(
            url("http://h/echo?x=1&y=2").uri().to_string(),
            "http://h/echo?x=1&y=2"
        );
        let secret = url("http://bob:s3cret@h:8000/echo?q=1");
        assert_eq!(secret.to_string(), "http://bob:***@h:8000/echo?q=1");
        assert!(!format!("{secret:?}").contains("s3cret"));
        assert_eq!(
            secret.uri().to_string(),
            "http://bob:s3cret@h:8000/echo?q=1"
        );
        let header = secret.authorization().unwrap();
        assert_eq!(header, "Basic Ym9iOnMzY3JldA==");
        assert!(header.is_sensitive());
        assert_eq!(url("http://h/echo").authorization(), None);
    }

    #[test]
    fn a_raw_reserved_character_in_a_password_is_refused_showing_none_of_it() {
        let refusal = |url: &str| parse_service_url(url).unwrap_err().to_string();
        let expected = refusal("http://alice:s3cr/et@host/echo");
        assert!(
            expected.starts_with("bad configuration: SERVICE_URL: has an @ after a /, ? or #")
                && expected.contains("as %2F, %3F and %23")
                && expected.contains("as %40"),
            "{expected}"
        );
        // Each reading is refused alike, with nothing of the URL shown: a
        // port-like password, `?` and `#`, and an `@` in a query after a
        // port, or after a password that is percent-encoded as it should be.
        for url in [
            "http://alice:1234/et@host/echo",
            "http://alice:pa?ss@host:8000/echo",
            "http://alice:pa#ss@host/echo",
            "http://alice:p@ss/w@host/echo?mail=a@b",
            "http://echo:8000/echo?user=a@b",
            "http://alice:s3cret@echo:8000/echo?mail=a@b",
            "http://us/er:s3cret@host/echo",
        ] {
            assert_eq!(refusal(url), expected, "{url}");
        }
        // The password before a misplaced `://` is not taken for a scheme.
        assert_eq!(
            refusal("alice:s3cret@host://echo"),
            "bad configuration: SERVICE_URL: has no scheme; \
             expected something like http://echo-service:8000/echo"
        );
        assert_eq!(
            refusal("http://alice:s3\"cret@host/echo"),
            "bad configuration: SERVICE_URL: is not a valid URL; \
             expected something like http://echo-service:8000/echo"
        );
    }

    #[test]
    fn an_at_sign_without_a_password_before_it_is_the_path_s() {
        let url = |u| parse_service_url(u).unwrap();
        for plain in ["http://echo/echo?user=a@b", "http://alice/x@host/echo"] {
            let parsed = url(plain);
            assert_eq!(parsed.uri().to_string(), plain);
            assert_eq!(parsed.to_string(), plain);
            assert!(parsed.authorization().is_none() && parsed.secrets().is_empty());
        }
    }

    #[test]
    fn passwords_are_sent_percent_decoded() {
        let url = |u| parse_service_url(u).unwrap();
        let encoded = url("http://alice:s3cr%2Fet@host/echo");
        assert_eq!(encoded.to_string(), "http://alice:***@host/echo");
        assert_eq!(
            encoded.authorization().unwrap(),
            "Basic YWxpY2U6czNjci9ldA=="
        );
        // A raw `@` in the password: the authority's last `@` ends it, as
        // for the client.
        let at = url("http://alice:p@ss@host:8000/echo");
        assert_eq!(at.to_string(), "http://alice:***@host:8000/echo");
        assert_eq!(at.authorization().unwrap(), "Basic YWxpY2U6cEBzcw==");
    }

    #[test]
    fn replicas() {
        let c = config(&[
            ("SNOWFLAKE_JOBS_COUNT", "4"),
            ("SNOWFLAKE_JOB_INDEX", "3"),
            ("OUTPUT_FILE", "/data/out-{index}.jsonl"),
        ])
        .unwrap();
        assert_eq!(c.shard, Shard { index: 3, count: 4 });
        assert_eq!(c.output, Some(PathBuf::from("/data/out-3.jsonl")));
        assert!(c.shard.owns(7) && !c.shard.owns(8));
        assert!(config_error(&[("SNOWFLAKE_JOBS_COUNT", "0")]).contains("at least 1"));
        assert!(
            config_error(&[("SNOWFLAKE_JOBS_COUNT", "2"), ("SNOWFLAKE_JOB_INDEX", "2")])
                .contains("must be 0 to 1")
        );
        assert!(config_error(&[("SNOWFLAKE_JOB_INDEX", "x")]).contains("not a whole number"));
        let shared = config_error(&[
            ("SNOWFLAKE_JOBS_COUNT", "4"),
            ("OUTPUT_FILE", "/data/out.jsonl"),
        ]);
        assert!(
            shared.contains(
                "OUTPUT_FILE: is \"/data/out.jsonl\", without {index}, and all 4 replicas"
            ),
            "{shared}"
        );
        let same = config_error(&[
            ("OUTPUT_FILE", "/d/o.jsonl"),
            ("REJECTS_FILE", "/d/o.jsonl"),
        ]);
        assert!(same.contains("REJECTS_FILE: is OUTPUT_FILE"), "{same}");
        let one = config(&[
            ("SNOWFLAKE_JOBS_COUNT", "1"),
            ("OUTPUT_FILE", "/d/out.jsonl"),
        ]);
        assert_eq!(one.unwrap().output, Some(PathBuf::from("/d/out.jsonl")));
    }

    #[test]
    fn input_formats() {
        let format = |value| config(&[("INPUT_FORMAT", value)]).map(|c| c.input_format);
        assert_eq!(format("lines").unwrap(), InputFormat::Lines);
        assert_eq!(format("jsonl").unwrap(), InputFormat::Jsonl);
        assert_eq!(format(" jsonl ").unwrap(), InputFormat::Jsonl);
        let error = config_error(&[("INPUT_FORMAT", "csv")]);
        assert!(
            error.contains("INPUT_FORMAT: is \"csv\"; expected lines"),
            "{error}"
        );
    }

    #[test]
    fn counts() {
        assert!(config_error(&[("BATCH_SIZE", "0")]).contains("at least 1"));
        assert!(config_error(&[("CONCURRENCY", "1000")]).contains("most allowed is 256 (or auto)"));
        assert!(config_error(&[("CONCURRENCY", "automatic")]).contains("not a whole number"));
        let concurrency = |value| config(&[("CONCURRENCY", value)]).unwrap().concurrency;
        assert_eq!(concurrency("auto"), Concurrency::Auto);
        assert_eq!(concurrency(" Auto "), Concurrency::Auto);
        assert_eq!(concurrency("256"), Concurrency::Fixed(256));
        assert_eq!(Concurrency::Auto.most(), 256);
        assert!(config_error(&[("MAX_RESPONSE_BYTES", "ten")]).contains("not a whole number"));
        let gib = config(&[("MAX_RESPONSE_BYTES", "1073741824")]).unwrap();
        assert_eq!(gib.max_response_bytes, 1 << 30);
        for absurd in ["1073741825", "100000000000000", "99999999999999999999999"] {
            let error = config_error(&[("MAX_RESPONSE_BYTES", absurd)]);
            assert!(
                error.contains(&format!("is {absurd}; the most allowed is 1073741824")),
                "{error}"
            );
        }
    }
}

/// The password in SERVICE_URL, whatever characters it holds: no message
/// and no display of the URL shows any of it.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Letters no message of this module writes in capitals, so that a
    /// password's text found in one can only have come from the URL.
    const ORDINARY: [char; 5] = ['Q', 'X', 'Z', 'J', 'K'];

    /// A password of ordinary letters, the characters a URL treats
    /// specially, and spaces. One ordinary letter is among its first three
    /// characters, so that every prefix checked holds one: a run of
    /// punctuation alone, such as `://`, is in the messages by right.
    fn password() -> impl Strategy<Value = String> {
        let mut alphabet = ORDINARY.to_vec();
        alphabet.extend(['/', '?', '#', '@', '%', ':', ' ']);
        let character = prop::sample::select(alphabet);
        let ordinary = prop::sample::select(ORDINARY.to_vec());
        (vec(character, 0..16), ordinary, 0usize..3).prop_map(|(mut chars, ordinary, at)| {
            chars.insert(at.min(chars.len()), ordinary);
            chars.into_iter().collect()
        })
    }

    const URLS: [&str; 5] = [
        "http://alice:{}@host:8000/echo",
        "http://alice:{}@host/echo",
        "http://alice:{}@host:8000/a/b?x=1&y=a%20b",
        "http://alice:{}@host/echo?mail=a@b#top",
        "http://alice:{}@[::1]:8000/echo",
    ];

    /// Whether `shown` holds a prefix of three characters or more of
    /// `password` (all ASCII).
    fn shows(shown: &str, password: &str) -> bool {
        (3..=password.len()).any(|end| shown.contains(&password[..end]))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn no_message_and_no_display_shows_the_password(
            password in password(),
            template in prop::sample::select(URLS.to_vec()),
        ) {
            let url = template.replace("{}", &password);
            let shown = match parse_service_url(&url) {
                Ok(parsed) => format!("{parsed} {parsed:?}"),
                Err(error) => error.to_string(),
            };
            prop_assert!(!shows(&shown, &password), "{url} -> {shown}");
            // The same through the whole configuration.
            let config = Config::from_lookup(|name| {
                (name == "SERVICE_URL").then(|| OsString::from(&url))
            });
            let shown = match config {
                Ok(config) => format!("{} {config:?}", config.service),
                Err(error) => error.to_string(),
            };
            prop_assert!(!shows(&shown, &password), "{url} -> {shown}");
        }

        #[test]
        fn the_forms_found_first_hide_the_password_in_any_line(
            password in password(),
            template in prop::sample::select(URLS.to_vec()),
        ) {
            // What main installs in the logger before the URL is checked.
            let secrets = Secrets::of_url(&template.replace("{}", &password));
            let line = format!(
                "at {password} or {} or \"{}\"",
                logging::escaped(&password),
                logging::quoted(&password)
            );
            let redacted = secrets.redact_str(line);
            prop_assert!(
                password.len() < 4 || !redacted.contains(&password),
                "{password} -> {redacted}"
            );
        }
    }
}
