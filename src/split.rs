//! A batch that fails for good, split down to the rows that fail: its two
//! halves are sent again, and a half that fails is split again, down to
//! single rows, so that every other row keeps its real reply and each row
//! that fails alone is known, with why. One bad row in a batch of B costs
//! about 2·log2(B) requests more.
//!
//! What splits: HTTP 413 (the request was too large for the service)
//! always; and when MAX_FAILED_ROWS allows rows to fail, any other answer
//! that is wrong for the batch (`Error::Rejected`: an error status that
//! does not pass, a reply with the wrong rows or shape, one too large).
//! Never a failure that passes, such as a 503 or a timeout after
//! RETRY_DEADLINE: an outage must fail the job, not turn rows into NULLs.
//! Nor an answer that no other set of rows would change: 401, 403 and 407
//! (credentials), 404 and 405 (the URL or the method), as with a redirect.
//! And a split that finds no row the service takes (every row of a batch
//! failed on its own) fails the job too: a service that refuses everything
//! is broken, whatever MAX_FAILED_ROWS allows.
//!
//! A split stops as soon as its batch alone has more failed rows than
//! MAX_FAILED_ROWS allows. Counting all the failed rows against it, and
//! writing them, is `job`'s, which sees them in index order.

use std::ops::Range;

use crate::client::{Attempts, Client};
use crate::error::Error;
use crate::reply::Reply;
use crate::request::encode_request;
use crate::rows::Batch;

/// The rows of a batch that was split: each one's reply value, or why it
/// failed.
#[derive(Debug, Default)]
pub struct Parts {
    /// The values, as compact JSON, one after another.
    values: Vec<u8>,
    /// One entry per row of the batch, in order: where its value is in
    /// `values`, or why the row failed.
    rows: Vec<Result<Range<usize>, String>>,
}

impl Parts {
    /// Row `i`'s reply value as compact JSON, or why the row failed.
    pub fn row(&self, i: usize) -> Result<&[u8], &str> {
        match &self.rows[i] {
            Ok(range) => Ok(&self.values[range.clone()]),
            Err(problem) => Err(problem),
        }
    }
}

/// Whether a batch that failed with `error` is split and sent again in
/// halves; a single row that fails so is a failed row.
pub fn splits(error: &Error, max_failed_rows: u64) -> bool {
    match error {
        Error::Rejected {
            status: Some(413), ..
        } => true,
        Error::Rejected {
            status: Some(401 | 403 | 404 | 405 | 407),
            ..
        } => false,
        Error::Rejected { .. } => max_failed_rows > 0,
        _ => false,
    }
}

/// Sends `batch` again in halves, down to the rows that fail, after it
/// failed whole with `error` (which `splits`). The parts, or what fails the
/// job: the first error that is not a row's (a failure that passes, that
/// the retry deadline ran out on), more failed rows than MAX_FAILED_ROWS
/// allows, or every row failed.
pub fn send_in_parts(
    client: &Client,
    batch: &Batch,
    body: &mut Vec<u8>,
    attempts: &dyn Attempts,
    max_failed_rows: u64,
    error: Error,
) -> Result<Parts, Error> {
    let whole = match &error {
        Error::Rejected { url, problem, .. } => (url.clone(), problem.clone()),
        _ => return Err(error),
    };
    let mut splitter = Splitter {
        client,
        batch,
        body,
        attempts,
        max_failed_rows,
        failed: 0,
        reply: Reply::default(),
        parts: Parts::default(),
    };
    splitter.halves(0..batch.len(), error)?;
    if splitter.failed == batch.len() as u64 && batch.len() > 1 {
        let (url, problem) = whole;
        return Err(Error::Rejected {
            url,
            status: None,
            problem: format!(
                "every row of a batch of {} failed on its own, so the service refuses \
                 more than some rows: {problem}",
                batch.len()
            ),
        });
    }
    Ok(splitter.parts)
}

struct Splitter<'a> {
    client: &'a Client,
    batch: &'a Batch,
    body: &'a mut Vec<u8>,
    attempts: &'a dyn Attempts,
    max_failed_rows: u64,
    /// The batch's rows that failed so far.
    failed: u64,
    reply: Reply,
    parts: Parts,
}

impl Splitter<'_> {
    /// Rows `rows` failed together with `error`: each half again, or the
    /// one row as failed.
    fn halves(&mut self, rows: Range<usize>, error: Error) -> Result<(), Error> {
        let problem = match error {
            Error::Rejected { problem, .. } => problem,
            other => return Err(other),
        };
        if rows.len() == 1 {
            self.failed += 1;
            if self.failed > self.max_failed_rows {
                return Err(Error::FailedRows {
                    failed: self.failed,
                    allowed: self.max_failed_rows,
                    row: self.batch.indices()[rows.start],
                    problem,
                });
            }
            self.parts.rows.push(Err(problem));
            return Ok(());
        }
        let indices = self.batch.indices();
        log::debug!(
            "Rows {} to {} failed together ({problem}); sending them again in two halves",
            indices[rows.start],
            indices[rows.end - 1]
        );
        let middle = rows.start + rows.len() / 2;
        self.part(rows.start..middle)?;
        self.part(middle..rows.end)
    }

    /// Sends rows `rows` of the batch, and splits them if they fail so.
    fn part(&mut self, rows: Range<usize>) -> Result<(), Error> {
        encode_request(self.batch, rows.clone(), self.body);
        let sent = &self.batch.indices()[rows.clone()];
        match self
            .client
            .send(self.body, sent, &mut self.reply, self.attempts)
        {
            Ok(()) => {
                let parts = &mut self.parts;
                for i in 0..rows.len() {
                    let start = parts.values.len();
                    parts.values.extend_from_slice(self.reply.value(i));
                    parts.rows.push(Ok(start..parts.values.len()));
                }
                Ok(())
            }
            Err(error) if splits(&error, self.max_failed_rows) => self.halves(rows, error),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: Option<u16>) -> Error {
        Error::Rejected {
            url: String::new(),
            status,
            problem: String::new(),
        }
    }

    #[test]
    fn what_splits() {
        // 413 whatever MAX_FAILED_ROWS says; any other rejection only when
        // rows may fail; never a failure that passes.
        assert!(splits(&rejected(Some(413)), 0));
        assert!(!splits(&rejected(Some(500)), 0));
        assert!(!splits(&rejected(None), 0));
        assert!(splits(&rejected(Some(500)), 1));
        for status in [401, 403, 404, 405, 407] {
            assert!(!splits(&rejected(Some(status)), u64::MAX), "{status}");
        }
        assert!(splits(&rejected(None), 1));
        let outage = Error::Unreachable {
            url: String::new(),
            attempts: 3,
            elapsed: std::time::Duration::ZERO,
            deadline: std::time::Duration::ZERO,
            cause: "HTTP 503".to_owned(),
        };
        assert!(!splits(&outage, u64::MAX));
        assert!(!splits(
            &Error::protocol("u", "HTTP 307 redirect"),
            u64::MAX
        ));
    }
}
