//! Where rows come from: the single `ECHO_TEXT` row, or a UTF-8 file (or
//! stdin) with one row per line, numbered from 0 and filtered to the rows this
//! replica owns. Read lazily, straight into the batch's one buffer, so memory
//! stays flat however long the input.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;

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
    Lines(Reader),
}

/// One concrete reader, stdin's included (a `File` on a copy of fd 0), not a
/// `Box<dyn BufRead>` over a file or `StdinLock`: a trait object links every
/// method of both readers and std's stdin buffer besides. Measured:
/// 10,944 bytes (gzip -9 of the binary: 5,736) off the stable release
/// binary, 7,024 (3,175) off the tiny one. The unit tests feed bytes from
/// memory.
#[cfg(not(test))]
type Reader = BufReader<File>;
#[cfg(test)]
type Reader = Box<dyn BufRead>;

/// The first bytes of every gzip stream (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

impl Rows {
    pub fn open(input: &Input, format: InputFormat, shard: Shard) -> Result<Rows, Error> {
        let mut source = match input {
            Input::Single(text) => Source::Single(Some(text.clone())),
            Input::Stdin => {
                let fd = std::io::stdin().as_fd().try_clone_to_owned();
                let file = File::from(fd.map_err(|cause| Error::NoInput {
                    path: "-".to_owned(),
                    cause,
                })?);
                Source::Lines(lines(file))
            }
            Input::File(path) => {
                let file = File::open(path).map_err(|cause| Error::NoInput {
                    path: path.display().to_string(),
                    cause,
                })?;
                Source::Lines(lines(file))
            }
        };
        if let Source::Lines(reader) = &mut source {
            refuse_gzip(reader)?;
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
        // Whole runs of lines are copied from the reader's buffer at once;
        // each row is then a range of the batch's buffer.
        let mut line_start = batch.buffer().len();
        let mut classes = 0;
        while batch.len() < size {
            let available = match reader.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(cause) => {
                    return Err(Error::Io {
                        what: format!("reading input line {}", self.next_index + 1),
                        cause,
                    });
                }
            };
            let base = batch.buffer().len();
            if available.is_empty() {
                // The last line, without a newline.
                let first_new = batch.len();
                if base > line_start {
                    let index = self.next_index;
                    self.next_index += 1;
                    if self.shard.owns(index) {
                        batch.add_row(index, line_start, base, classes);
                    }
                }
                check_rows(batch, first_new, self.format)?;
                break;
            }
            let first_new = batch.len();
            let mut seen = 0;
            let mut used = 0;
            while batch.len() < size && used < available.len() {
                let (length, found) = rows::scan_line(&available[used..]);
                used += length;
                classes |= found;
                seen |= classes;
                if found & rows::NEWLINE == 0 {
                    break;
                }
                let index = self.next_index;
                self.next_index += 1;
                if self.shard.owns(index) {
                    let mut end = base + used - 1;
                    // A \r before the newline, in this chunk or the last.
                    let before = match used {
                        2.. => available.get(used - 2),
                        _ => batch.buffer().get(end.wrapping_sub(1)),
                    };
                    if end > line_start && before == Some(&b'\r') {
                        end -= 1;
                    }
                    batch.add_row(index, line_start, end, classes);
                }
                line_start = base + used;
                classes = 0;
            }
            batch.buffer().extend_from_slice(&available[..used]);
            reader.consume(used);
            // Lines of plain ASCII need no check at all.
            if seen & rows::NON_ASCII != 0 || self.format == InputFormat::Jsonl {
                check_rows(batch, first_new, self.format)?;
            }
        }
        // The loop stops only at the end of a line or of the input, so no
        // row is split between batches.
        Ok(())
    }
}

/// Checks the rows from `first` on: UTF-8, and with Jsonl, JSON arrays.
fn check_rows(batch: &Batch, first: usize, format: InputFormat) -> Result<(), Error> {
    for i in first..batch.len() {
        if format == InputFormat::Lines && !batch.non_ascii(i) {
            continue;
        }
        let (index, text) = batch.row(i);
        if batch.non_ascii(i) {
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
        if format == InputFormat::Jsonl {
            rows::check_columns(text).map_err(|problem| Error::InputData {
                line: index + 1,
                problem: format!("the line {problem}"),
            })?;
        }
    }
    Ok(())
}

fn lines(file: File) -> Reader {
    let reader = BufReader::with_capacity(64 * 1024, file);
    #[cfg(test)]
    let reader = Box::new(reader);
    reader
}

/// Stage unloads and PUT compress with gzip unless told not to, and this
/// job reads plain text: say so, rather than "not valid UTF-8".
fn refuse_gzip(reader: &mut impl BufRead) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows read from `bytes` through a reader buffer of `capacity`
    /// bytes, in batches of `size`: lines and their `\r\n` ends straddle
    /// the buffer's refills at every offset.
    fn read(bytes: &[u8], capacity: usize, size: usize, shard: Shard) -> Vec<(u64, String)> {
        let reader = BufReader::with_capacity(capacity, std::io::Cursor::new(bytes.to_vec()));
        let mut rows = Rows {
            source: Source::Lines(Box::new(reader)),
            format: InputFormat::Lines,
            shard,
            next_index: 0,
        };
        let mut batch = Batch::new(InputFormat::Lines);
        let mut all = Vec::new();
        loop {
            rows.next_batch(&mut batch, size).unwrap();
            if batch.is_empty() {
                return all;
            }
            assert!(batch.len() <= size);
            for i in 0..batch.len() {
                let (index, text) = batch.row(i);
                all.push((index, String::from_utf8(text.to_vec()).unwrap()));
            }
        }
    }

    #[test]
    fn lines_are_rows_whatever_the_buffer_size() {
        let input = b"a\r\n\nb\r\r\n\"q\"\n\xc3\xa9t\xc3\xa9\r\nlast\r";
        let expected = ["a", "", "b\r", "\"q\"", "\u{e9}t\u{e9}", "last\r"];
        let all = Shard { index: 0, count: 1 };
        for capacity in 1..12 {
            for size in [1, 2, 100] {
                let rows = read(input, capacity, size, all);
                let texts: Vec<&str> = rows.iter().map(|(_, t)| t.as_str()).collect();
                assert_eq!(texts, expected, "capacity {capacity}, size {size}");
                let indices: Vec<u64> = rows.iter().map(|(i, _)| *i).collect();
                assert_eq!(indices, [0, 1, 2, 3, 4, 5]);
            }
            let second = read(input, capacity, 2, Shard { index: 1, count: 2 });
            assert_eq!(
                second,
                [
                    (1, String::new()),
                    (3, "\"q\"".to_owned()),
                    (5, "last\r".to_owned())
                ]
            );
        }
    }

    #[test]
    fn invalid_utf8_is_found_wherever_the_buffer_splits_the_line() {
        let input = b"fine\nstill fine here\nbad \xff byte after a while\nok\n";
        for capacity in 1..40 {
            let reader = BufReader::with_capacity(capacity, std::io::Cursor::new(input.to_vec()));
            let mut rows = Rows {
                source: Source::Lines(Box::new(reader)),
                format: InputFormat::Lines,
                shard: Shard { index: 0, count: 1 },
                next_index: 0,
            };
            let mut batch = Batch::new(InputFormat::Lines);
            let error = loop {
                match rows.next_batch(&mut batch, 100) {
                    Ok(()) if batch.is_empty() => panic!("capacity {capacity}: no error"),
                    Ok(()) => {}
                    Err(error) => break error.to_string(),
                }
            };
            assert!(
                error.contains("line 3: not valid UTF-8 (at byte 4"),
                "capacity {capacity}: {error}"
            );
        }
    }

    #[test]
    fn newlines_are_counted_eight_bytes_at_a_time() {
        for length in 0..40 {
            let text: Vec<u8> = (0..length)
                .map(|i| if i % 3 == 0 { b'\n' } else { b'x' })
                .collect();
            let expected = text.iter().filter(|&&b| b == b'\n').count() as u64;
            assert_eq!(rows::count_newlines(&text), expected);
        }
    }
}
