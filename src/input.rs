//! Where rows come from: the single `ECHO_TEXT` row, or a UTF-8 file (or
//! stdin) with one row per line, numbered from 0 and filtered to the rows this
//! replica owns. Read lazily, so memory stays flat however long the input.

use std::fs::File;
use std::io::{BufRead, BufReader};

use crate::config::{Input, Shard};
use crate::error::Error;
use crate::rows::Row;

pub struct Rows {
    source: Source,
    shard: Shard,
    next_index: u64,
    line: Vec<u8>,
}

enum Source {
    Single(Option<String>),
    Lines(Box<dyn BufRead>),
}

impl Rows {
    pub fn open(input: &Input, shard: Shard) -> Result<Rows, Error> {
        let source = match input {
            Input::Single(text) => Source::Single(Some(text.clone())),
            Input::Stdin => Source::Lines(Box::new(std::io::stdin().lock())),
            Input::File(path) => {
                let file = File::open(path).map_err(|cause| Error::NoInput {
                    path: path.display().to_string(),
                    cause,
                })?;
                Source::Lines(Box::new(BufReader::with_capacity(64 * 1024, file)))
            }
        };
        Ok(Rows {
            source,
            shard,
            next_index: 0,
            line: Vec::new(),
        })
    }

    /// The next rows this replica owns, at most `size`; empty at the end.
    pub fn next_batch(&mut self, size: usize) -> Result<Vec<Row>, Error> {
        let mut batch = Vec::with_capacity(size.min(1024));
        while batch.len() < size {
            match self.next_row()? {
                Some(row) => batch.push(row),
                None => break,
            }
        }
        Ok(batch)
    }

    fn next_row(&mut self) -> Result<Option<Row>, Error> {
        let reader = match &mut self.source {
            Source::Single(text) => {
                let owned = self.shard.owns(0);
                return Ok(text
                    .take()
                    .filter(|_| owned)
                    .map(|text| Row { index: 0, text }));
            }
            Source::Lines(reader) => reader,
        };
        loop {
            let index = self.next_index;
            self.line.clear();
            let read = reader
                .read_until(b'\n', &mut self.line)
                .map_err(|cause| Error::Io {
                    what: format!("reading input line {}", index + 1),
                    cause,
                })?;
            if read == 0 {
                return Ok(None);
            }
            self.next_index += 1;
            if !self.shard.owns(index) {
                continue;
            }
            if self.line.ends_with(b"\n") {
                self.line.pop();
                if self.line.ends_with(b"\r") {
                    self.line.pop();
                }
            }
            return match std::str::from_utf8(&self.line) {
                Ok(text) => Ok(Some(Row {
                    index,
                    text: text.to_owned(),
                })),
                Err(e) => Err(Error::InputData {
                    line: index + 1,
                    problem: format!(
                        "not valid UTF-8 (at byte {} of the line, row index {index})",
                        e.valid_up_to()
                    ),
                }),
            };
        }
    }
}

/// How many rows this replica will send, when that can be known up front
/// (a regular file, counted in one streaming pass); `None` for stdin.
pub fn count_rows(input: &Input, shard: Shard) -> Option<u64> {
    let lines = match input {
        Input::Single(_) => 1,
        Input::Stdin => return None,
        Input::File(path) => {
            let mut reader = BufReader::with_capacity(64 * 1024, File::open(path).ok()?);
            let mut lines = 0u64;
            let mut ends_with_newline = true;
            loop {
                let chunk = reader.fill_buf().ok()?;
                if chunk.is_empty() {
                    break;
                }
                lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
                ends_with_newline = chunk.last() == Some(&b'\n');
                let used = chunk.len();
                reader.consume(used);
            }
            lines + u64::from(!ends_with_newline)
        }
    };
    Some((lines + shard.count - 1 - shard.index) / shard.count)
}
