//! Where rows come from: the single `ECHO_TEXT` row, or a UTF-8 file (or
//! stdin) with one row per line, numbered from 0 and filtered to the rows this
//! replica owns. Read lazily, straight into the batch's one buffer, so memory
//! stays flat however long the input.

use std::fs::File;
use std::io::{BufRead, BufReader};

use crate::config::{Input, Shard};
use crate::error::Error;
use crate::rows::{self, Batch, InputFormat};

pub struct Rows {
    source: Source,
    format: InputFormat,
    shard: Shard,
    next_index: u64,
}

enum Source {
    Single(Option<String>),
    Lines(Box<dyn BufRead>),
}

/// The first bytes of every gzip stream (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

impl Rows {
    pub fn open(input: &Input, format: InputFormat, shard: Shard) -> Result<Rows, Error> {
        let mut source = match input {
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
        if let Source::Lines(reader) = &mut source {
            refuse_gzip(reader.as_mut())?;
        }
        Ok(Rows {
            source,
            format,
            shard,
            next_index: 0,
        })
    }

    /// Refills `batch` with the next rows this replica owns, at most `size`;
    /// empty at the end.
    pub fn next_batch(&mut self, batch: &mut Batch, size: usize) -> Result<(), Error> {
        batch.clear();
        let reader = match &mut self.source {
            Source::Single(text) => {
                if let Some(text) = text.take().filter(|_| self.shard.owns(0)) {
                    if self.format == InputFormat::Jsonl {
                        rows::check_columns(text.as_bytes()).map_err(|problem| {
                            Error::InputData {
                                line: 1,
                                problem: format!("ECHO_TEXT {problem}"),
                            }
                        })?;
                    }
                    batch.push(0, &text);
                }
                return Ok(());
            }
            Source::Lines(reader) => reader,
        };
        while batch.len() < size {
            let index = self.next_index;
            let (read, classes) =
                read_line(reader.as_mut(), batch.unfinished_row()).map_err(|cause| Error::Io {
                    what: format!("reading input line {}", index + 1),
                    cause,
                })?;
            if read == 0 {
                break;
            }
            self.next_index += 1;
            if !self.shard.owns(index) {
                batch.discard_unfinished();
                continue;
            }
            let line = batch.unfinished_row();
            // `read` bytes of the buffer are this line's.
            if line.ends_with(b"\n") {
                line.pop();
                if read >= 2 && line.ends_with(b"\r") {
                    line.pop();
                }
            }
            let text = batch.unfinished_text();
            if classes & rows::NON_ASCII != 0 {
                if let Err(e) = std::str::from_utf8(text) {
                    return Err(Error::InputData {
                        line: index + 1,
                        problem: format!(
                            "not valid UTF-8 (at byte {} of the line, row index {index})",
                            e.valid_up_to()
                        ),
                    });
                }
            }
            if self.format == InputFormat::Jsonl {
                rows::check_columns(text).map_err(|problem| Error::InputData {
                    line: index + 1,
                    problem: format!("the line {problem}"),
                })?;
            }
            batch.end_row(index, classes & rows::ESCAPE != 0);
        }
        Ok(())
    }
}

/// Appends the next line to `out`, newline included; how many bytes, and
/// the classes (`rows::CLASS`) of its bytes, found in the same one pass.
fn read_line(reader: &mut dyn BufRead, out: &mut Vec<u8>) -> std::io::Result<(usize, u8)> {
    let mut read = 0;
    let mut classes = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((read, classes));
        }
        let (used, found) = rows::scan_line(available);
        classes |= found;
        let ended = found & rows::NEWLINE != 0;
        out.extend_from_slice(&available[..used]);
        reader.consume(used);
        read += used;
        if ended {
            return Ok((read, classes));
        }
    }
}

/// Stage unloads and PUT compress with gzip unless told not to, and this
/// job reads plain text: say so, rather than "not valid UTF-8".
fn refuse_gzip(reader: &mut dyn BufRead) -> Result<(), Error> {
    let start = reader.fill_buf().map_err(|cause| Error::Io {
        what: "reading input line 1".to_owned(),
        cause,
    })?;
    if start.starts_with(&GZIP_MAGIC) {
        return Err(Error::InputData {
            line: 1,
            problem: "the input is gzip-compressed (it starts with the bytes 1f 8b), and rows \
                      must be plain text: unload with FILE_FORMAT = (... COMPRESSION = NONE), \
                      or upload with PUT ... AUTO_COMPRESS = FALSE (or gunzip it first)"
                .to_owned(),
        });
    }
    Ok(())
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
                lines += rows::count_newlines(chunk);
                ends_with_newline = chunk.last() == Some(&b'\n');
                let used = chunk.len();
                reader.consume(used);
            }
            lines + u64::from(!ends_with_newline)
        }
    };
    Some((lines + shard.count - 1 - shard.index) / shard.count)
}
