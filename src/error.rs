//! The job's one error type, and the one place that maps errors to exit codes.
//!
//! Every failure a user can meet is a variant here, with a `Display` that says
//! what went wrong and, where there is one, what would be right. Exit codes
//! follow `sysexits.h`, because SPCS marks a job FAILED on any non-zero status
//! and the code is then the quickest clue to the cause.

use std::fmt;
use std::time::Duration;

use crate::time::Seconds;

/// Everything that can end a job early.
#[derive(Debug)]
pub enum Error {
    /// A setting in the environment is unusable (EX_USAGE).
    Config { name: &'static str, problem: String },
    /// A line of the input is not what the row format can carry (EX_DATAERR).
    InputData { line: u64, problem: String },
    /// The input file cannot be opened (EX_NOINPUT).
    NoInput { path: String, cause: std::io::Error },
    /// The service could not be reached before the retry deadline (EX_UNAVAILABLE).
    Unreachable {
        url: String,
        attempts: u32,
        elapsed: Duration,
        /// RETRY_DEADLINE, which ran out.
        deadline: Duration,
        cause: String,
    },
    /// The service accepted a batch (HTTP 202) and had not finished it when
    /// ASYNC_TIMEOUT ran out (EX_UNAVAILABLE).
    Unfinished {
        url: String,
        batch: String,
        polls: u32,
        limit: Duration,
    },
    /// The exchange with the service broke: malformed HTTP, a redirect
    /// (EX_PROTOCOL).
    Protocol { url: String, problem: String },
    /// The service answered a batch, but not with its rows: an error status
    /// that is not one of those that pass (`status`), or a reply that is
    /// wrong for the batch (EX_PROTOCOL). A batch that fails so may be split
    /// down to the rows that fail (MAX_FAILED_ROWS).
    Rejected {
        url: String,
        status: Option<u16>,
        problem: String,
    },
    /// More rows failed for good than MAX_FAILED_ROWS allows (EX_PROTOCOL):
    /// `row` is the one that made them too many, and `problem` why it failed.
    FailedRows {
        failed: u64,
        allowed: u64,
        row: u64,
        problem: String,
    },
    /// An output file cannot be created (EX_CANTCREAT); `path` says which
    /// file, and for which setting.
    CantCreate { path: String, cause: std::io::Error },
    /// Reading input or writing output failed midway (EX_IOERR).
    Io { what: String, cause: std::io::Error },
}

impl Error {
    pub fn config(name: &'static str, problem: impl Into<String>) -> Self {
        Error::Config {
            name,
            problem: problem.into(),
        }
    }

    pub fn protocol(url: &str, problem: impl Into<String>) -> Self {
        Error::Protocol {
            url: url.to_owned(),
            problem: problem.into(),
        }
    }

    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } => 64,
            Error::InputData { .. } => 65,
            Error::NoInput { .. } => 66,
            Error::Unreachable { .. } | Error::Unfinished { .. } => 69,
            Error::CantCreate { .. } => 73,
            Error::Io { .. } => 74,
            Error::Protocol { .. } | Error::Rejected { .. } | Error::FailedRows { .. } => 76,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { name, problem } => write!(f, "bad configuration: {name}: {problem}"),
            Error::InputData { line, problem } => write!(f, "bad input at line {line}: {problem}"),
            Error::NoInput { path, cause } => write!(f, "cannot open input file {path}: {cause}"),
            Error::Unreachable {
                url,
                attempts,
                elapsed,
                deadline,
                cause,
            } => write!(
                f,
                "service {url} unreachable after {attempts} attempt(s) over {} \
                 (RETRY_DEADLINE={}): {cause}",
                Seconds(*elapsed),
                Seconds(*deadline)
            ),
            Error::Unfinished {
                url,
                batch,
                polls,
                limit,
            } => write!(
                f,
                "service {url} accepted batch {batch} (HTTP 202) and had not finished it \
                 when ASYNC_TIMEOUT={} ran out, after {polls} poll(s)",
                Seconds(*limit)
            ),
            Error::Protocol { url, problem } | Error::Rejected { url, problem, .. } => {
                write!(f, "service {url} answered wrongly: {problem}")
            }
            Error::FailedRows {
                failed,
                allowed,
                row,
                problem,
            } => write!(
                f,
                "{failed} row(s) failed, more than MAX_FAILED_ROWS={allowed} allows; \
                 row {row} failed with {problem}"
            ),
            Error::CantCreate { path, cause } => write!(f, "cannot create {path}: {cause}"),
            Error::Io { what, cause } => write!(f, "{what}: {cause}"),
        }
    }
}
