//! Where rows come from: the single `ECHO_TEXT` row, or a UTF-8 file (or
//! stdin) with one row per line, numbered from 0 and filtered to the rows this
//! replica owns. Read lazily, in runs of lines copied into the batch's one
//! buffer, so memory stays flat however long the input.
//!
//! The byte scanning of input lines is here too: where each line ends,
//! which lines hold bytes that are not ASCII (those alone need a UTF-8
//! check), how many lines a file has, and that it is not gzip. Escaping a
//! row for JSON is left to the request encoder, which copies the text
//! anyway; Jsonl lines are checked here, by the JSON scanner, so that a bad
//! line is named by its number before anything is sent.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;

use crate::config::{Input, Shard};
use crate::error::Error;
use crate::json::{self, Kind, ScanError, Scanned, swar};
use crate::reply::preview;
use crate::rows::{Batch, InputFormat, MAX_NESTING};

pub struct Rows {
    source: Source,
    format: InputFormat,
    shard: Shard,
    next_index: u64,
    /// The rows found in the run of lines being read, added to the batch
    /// once their text is in it: as many slots as a batch has rows, written
    /// in place rather than pushed, since this is paid for every row.
    found: Box<[Found]>,
}

/// A row found by scanning, before its text is in the batch.
#[derive(Debug, Clone, Copy, Default)]
struct Found {
    index: u64,
    /// Where its text will be in the batch.
    start: usize,
    end: usize,
    /// Whether the text has a byte that is not ASCII.
    non_ascii: bool,
}

enum Source {
    Single(Option<String>),
    Lines(Reader),
}

/// One concrete reader, stdin's included (a `File` on a copy of fd 0), not a
/// `Box<dyn BufRead>` over a file or `StdinLock`: a trait object links every
/// method of both readers and std's stdin buffer besides, code the binary
/// would carry for nothing. The unit tests feed bytes from memory.
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
            found: Box::default(),
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
                        check_columns(text.as_bytes()).map_err(|problem| Error::InputData {
                            line: 1,
                            problem: format!("ECHO_TEXT {problem}"),
                        })?;
                    }
                    batch.push(0, &text);
                }
                return Ok(());
            }
            Source::Lines(reader) => reader,
        };
        if self.found.len() < size {
            self.found = vec![Found::default(); size].into_boxed_slice();
        }
        // Whole runs of lines are copied from the reader's buffer at once;
        // each row is then a range of the batch's buffer. A line may span
        // runs, never batches: a batch ends at the end of a line.
        let mut line_start = batch.text_len();
        let mut classes = 0;
        // The last byte of the previous run, for a \r that ends one run
        // while its newline starts the next.
        let mut last_byte = None;
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
            let base = batch.text_len();
            if available.is_empty() {
                // The last line, without a newline.
                if base > line_start {
                    let index = self.next_index;
                    self.next_index += 1;
                    if self.shard.owns(index) {
                        let row = Found {
                            index,
                            start: line_start,
                            end: base,
                            non_ascii: classes & NON_ASCII != 0,
                        };
                        add_found(batch, &[row], self.format)?;
                    }
                }
                break;
            }
            let mut used = 0;
            let mut found = 0;
            let wanted = size - batch.len();
            while found < wanted && used < available.len() {
                let (length, line_classes) = scan_line(&available[used..]);
                used += length;
                classes |= line_classes;
                if line_classes & NEWLINE == 0 {
                    break;
                }
                let index = self.next_index;
                self.next_index += 1;
                if self.shard.owns(index) {
                    let mut end = base + used - 1;
                    // A \r before the newline, in this run or the last.
                    let before = match used {
                        2.. => available.get(used - 2).copied(),
                        _ => last_byte,
                    };
                    if end > line_start && before == Some(b'\r') {
                        end -= 1;
                    }
                    self.found[found] = Found {
                        index,
                        start: line_start,
                        end,
                        non_ascii: classes & NON_ASCII != 0,
                    };
                    found += 1;
                }
                line_start = base + used;
                classes = 0;
            }
            last_byte = available[..used].last().copied();
            batch.append_text(&available[..used]);
            reader.consume(used);
            add_found(batch, &self.found[..found], self.format)?;
        }
        Ok(())
    }
}

/// Adds the rows `found` to the batch, whose text now holds them, and
/// checks them: UTF-8 where a byte is not ASCII (plain ASCII needs no
/// check), and with Jsonl, one JSON array each.
fn add_found(batch: &mut Batch, found: &[Found], format: InputFormat) -> Result<(), Error> {
    for row in found {
        batch.add_row(row.index, row.start..row.end);
        if !row.non_ascii && format == InputFormat::Lines {
            continue;
        }
        let (index, text) = batch.row(batch.len() - 1);
        if row.non_ascii {
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
            check_columns(text).map_err(|problem| Error::InputData {
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

/// How many rows this replica will send, when that can be known up front:
/// a regular file, counted in one streaming pass of its own. `None` for
/// anything else, stdin, a pipe, a FIFO or a device, which can be read only
/// once: a second reader would take rows from the job's own.
pub fn count_rows(input: &Input, shard: Shard) -> Option<u64> {
    let lines = match input {
        Input::Single(_) => 1,
        Input::Stdin => return None,
        Input::File(path) => {
            if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
                return None;
            }
            let mut reader = BufReader::with_capacity(64 * 1024, File::open(path).ok()?);
            let mut lines = 0u64;
            let mut ends_with_newline = true;
            loop {
                let chunk = reader.fill_buf().ok()?;
                if chunk.is_empty() {
                    break;
                }
                lines += count_newlines(chunk);
                ends_with_newline = chunk.last() == Some(&b'\n');
                let used = chunk.len();
                reader.consume(used);
            }
            lines + u64::from(!ends_with_newline)
        }
    };
    Some((lines + shard.count - 1 - shard.index) / shard.count)
}

/// Checks a `Jsonl` line: one JSON array, nested no deeper than replies may.
fn check_columns(line: &[u8]) -> Result<(), String> {
    let expected = "INPUT_FORMAT=jsonl expects one JSON array of column values per line";
    match json::scan_document(line, MAX_NESTING) {
        Ok(Scanned {
            kind: Kind::Array, ..
        }) => Ok(()),
        Ok(other) => Err(format!(
            "is {}, not an array; {expected}",
            other.kind.described()
        )),
        Err(ScanError::TooDeep) => Err(format!("nests JSON deeper than {MAX_NESTING} levels")),
        Err(ScanError::Syntax) => Err(format!("is not valid JSON: {}; {expected}", preview(line))),
        Err(ScanError::OutOfRange { start, end }) => Err(format!(
            "holds the number {}, too large for a 64-bit float",
            String::from_utf8_lossy(&line[start..end.min(start + 40)])
        )),
        Err(ScanError::LoneSurrogate { at }) => Err(format!(
            "holds the escape {}, half of a UTF-16 surrogate pair without its other half",
            String::from_utf8_lossy(&line[at..(at + 6).min(line.len())])
        )),
    }
}

/// Byte classes, for one pass over an input line: its end, and whether
/// it needs a UTF-8 check.
const NEWLINE: u8 = 1;
const NON_ASCII: u8 = 2;

static CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    let mut byte = 0;
    while byte < 256 {
        class[byte] = if byte == b'\n' as usize {
            NEWLINE
        } else if byte >= 0x80 {
            NON_ASCII
        } else {
            0
        };
        byte += 1;
    }
    class
};

/// Scans `bytes` up to and including the first newline: how many bytes
/// that is (all of them when there is none), and the classes (`CLASS`) of
/// the bytes before it. Eight bytes at a time while it can.
fn scan_line(bytes: &[u8]) -> (usize, u8) {
    let mut classes = 0;
    let mut at = 0;
    while let Some(word) = swar::word(bytes, at) {
        let newline = swar::equal(word, b'\n');
        let high = swar::high(word);
        // Plain ASCII text, the common word, costs one test.
        if newline | high == 0 {
            at += 8;
            continue;
        }
        // Only the bytes before a newline count; 0x80 marks each byte.
        let before = match newline {
            0 => u64::MAX,
            _ => (newline & newline.wrapping_neg()) - 1,
        };
        if high & before != 0 {
            classes |= NON_ASCII;
        }
        if newline != 0 {
            return (at + swar::first(newline) + 1, classes | NEWLINE);
        }
        at += 8;
    }
    while at < bytes.len() {
        let class = CLASS[usize::from(bytes[at])];
        at += 1;
        classes |= class;
        if class == NEWLINE {
            break;
        }
    }
    (at, classes)
}

/// How many newlines `bytes` holds, eight bytes at a time.
fn count_newlines(bytes: &[u8]) -> u64 {
    let mut count = 0;
    let mut at = 0;
    while let Some(word) = swar::word(bytes, at) {
        count += swar::count(swar::equal(word, b'\n'));
        at += 8;
    }
    count + bytes[at..].iter().filter(|&&b| b == b'\n').count() as u64
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
            found: Box::default(),
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
                found: Box::default(),
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
            assert_eq!(count_newlines(&text), expected);
        }
    }
}
