//! The request side of the Snowflake service-function row format,
//! `{"data": [[index, value], ...]}`: a batch's rows, the byte scanning of
//! input lines, and encoding a request. Replies are `reply`'s.

use crate::decimal;
use crate::json::{self, Kind, ScanError, Scanned};
use crate::reply::preview;

/// Replies nested deeper than this are refused, so a small hostile body
/// cannot make the decoder recurse without end.
pub const MAX_NESTING: usize = 128;

/// What an input line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// One string column: the line's text.
    Lines,
    /// A JSON array of column values, passed through as they are.
    Jsonl,
}

/// The rows of one request: their indices, and their text in one buffer
/// (input read in bulk, newlines and all), so that a row costs no
/// allocation of its own.
#[derive(Debug)]
pub struct Batch {
    format: InputFormat,
    indices: Vec<u64>,
    text: Vec<u8>,
    rows: Vec<RowText>,
}

#[derive(Debug, Clone, Copy)]
struct RowText {
    start: usize,
    end: usize,
    /// Whether the text has a byte a JSON string must escape.
    escapes: bool,
    /// Whether the text has a byte that is not ASCII.
    non_ascii: bool,
}

impl Batch {
    pub fn new(format: InputFormat) -> Batch {
        Batch {
            format,
            indices: Vec::new(),
            text: Vec::new(),
            rows: Vec::new(),
        }
    }

    pub fn clear(&mut self) {
        self.indices.clear();
        self.text.clear();
        self.rows.clear();
    }

    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The row indices, ascending.
    pub fn indices(&self) -> &[u64] {
        &self.indices
    }

    /// Row `i`'s text: checked UTF-8, and with `Jsonl` a checked array.
    pub fn text(&self, i: usize) -> &[u8] {
        let row = self.rows[i];
        &self.text[row.start..row.end]
    }

    /// The buffer rows' text is read into.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.text
    }

    /// Makes `buffer()[start..end]` the row with `index`, its bytes of the
    /// `classes` (`CLASS`) given: without ESCAPE no byte needs a JSON
    /// escape (a line's own ending newline is not part of it), without
    /// NON_ASCII all are ASCII.
    pub fn add_row(&mut self, index: u64, start: usize, end: usize, classes: u8) {
        self.indices.push(index);
        self.rows.push(RowText {
            start,
            end,
            escapes: classes & ESCAPE != 0,
            non_ascii: classes & NON_ASCII != 0,
        });
    }

    /// Whether row `i` may hold bytes that are not ASCII.
    pub fn non_ascii(&self, i: usize) -> bool {
        self.rows[i].non_ascii
    }

    /// Row `i`'s index and text.
    pub fn row(&self, i: usize) -> (u64, &[u8]) {
        (self.indices[i], self.text(i))
    }

    /// Appends a whole row.
    pub fn push(&mut self, index: u64, text: &str) {
        let start = self.text.len();
        self.text.extend_from_slice(text.as_bytes());
        let classes = text.bytes().fold(0, |all, b| all | CLASS[usize::from(b)]);
        // Here a newline is text, and a JSON string escapes it.
        let classes = match classes & NEWLINE {
            0 => classes,
            _ => classes | ESCAPE,
        };
        self.add_row(index, start, self.text.len(), classes);
    }
}

/// Byte classes, for one pass over an input line.
pub const NEWLINE: u8 = 1;
/// A byte a JSON string must escape (the newline ending a line aside).
pub const ESCAPE: u8 = 2;
pub const NON_ASCII: u8 = 4;

pub static CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    let mut byte = 0;
    while byte < 256 {
        class[byte] = if byte == b'\n' as usize {
            NEWLINE
        } else if byte < 0x20 || byte == b'"' as usize || byte == b'\\' as usize {
            ESCAPE
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
pub fn scan_line(bytes: &[u8]) -> (usize, u8) {
    use json::swar;
    let mut classes = 0;
    let mut at = 0;
    while let Some(word) = swar::word(bytes, at) {
        // Plain ASCII text, the common word, costs one test (a newline is a
        // control byte, so it stops here too).
        let special = swar::string_stops(word) | swar::high(word);
        if special == 0 {
            at += 8;
            continue;
        }
        let newline = swar::equal(word, b'\n');
        // Only the bytes before a newline count; 0x80 marks each byte.
        let before = match newline {
            0 => u64::MAX,
            _ => (newline & newline.wrapping_neg()) - 1,
        };
        if swar::string_stops(word) & !newline & before != 0 {
            classes |= ESCAPE;
        }
        if swar::high(word) & before != 0 {
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
pub fn count_newlines(bytes: &[u8]) -> u64 {
    use json::swar;
    let mut count = 0;
    let mut at = 0;
    while let Some(word) = swar::word(bytes, at) {
        count += swar::count(swar::equal(word, b'\n'));
        at += 8;
    }
    count + bytes[at..].iter().filter(|&&b| b == b'\n').count() as u64
}

/// Writes the request body for `batch` into `out`:
/// `{"data":[[0,"Hello"],...]}`, or `[0,v1,v2,...]` rows with `Jsonl`.
/// Each row is copied in two pieces: what comes before its text (the end of
/// the previous row, the index), and the text.
pub fn encode_request(batch: &Batch, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(16 + batch.text.len() + 24 * batch.len());
    out.extend_from_slice(b"{\"data\":[");
    let lines = batch.format == InputFormat::Lines;
    let mut head = RowHead::new(lines);
    for (i, (&index, row)) in batch.indices.iter().zip(&batch.rows).enumerate() {
        let text = &batch.text[row.start..row.end];
        if lines {
            out.extend_from_slice(head.next(index, i == 0, true));
            if row.escapes {
                push_escaped(out, text);
            } else {
                out.extend_from_slice(text);
            }
        } else {
            let columns = columns_of(text);
            out.extend_from_slice(head.next(index, i == 0, !columns.is_empty()));
            out.extend_from_slice(columns);
        }
    }
    match (batch.is_empty(), lines) {
        (true, _) => out.extend_from_slice(b"]}"),
        (false, true) => out.extend_from_slice(b"\"]]}"),
        (false, false) => out.extend_from_slice(b"]]}"),
    }
}

/// Checks a `Jsonl` line: one JSON array, nested no deeper than replies may.
pub fn check_columns(line: &[u8]) -> Result<(), String> {
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

/// The values of a checked `Jsonl` line, as written: what is between its
/// brackets, without the white space around them.
fn columns_of(line: &[u8]) -> &[u8] {
    let is_space = |b: &u8| matches!(b, b' ' | b'\n' | b'\t' | b'\r');
    let start = line.iter().position(|b| *b == b'[').map_or(0, |at| at + 1);
    let end = line.iter().rposition(|b| *b == b']').unwrap_or(line.len());
    let inner = &line[start..end.max(start)];
    let first = inner
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(inner.len());
    let last = inner
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(first, |at| at + 1);
    &inner[first..last]
}

/// What comes before a row's text in a request: the end of the previous
/// row, `[`, the index and `,"` (`,` for Jsonl), kept in one buffer whose
/// index is counted up digit by digit, as consecutive rows need.
struct RowHead {
    buffer: [u8; 32],
    /// Where the index digits start; they end at `DIGITS_END`.
    start: usize,
    index: u64,
    lines: bool,
}

const DIGITS_END: usize = 26;

impl RowHead {
    fn new(lines: bool) -> RowHead {
        let mut head = RowHead {
            buffer: [0; 32],
            start: DIGITS_END - 1,
            index: 0,
            lines,
        };
        head.buffer[DIGITS_END - 1] = b'0';
        head.buffer[DIGITS_END] = b',';
        head.buffer[DIGITS_END + 1] = b'"';
        head.put_prefix();
        head
    }

    fn put_prefix(&mut self) {
        self.buffer[self.start - 4..self.start].copy_from_slice(b"\"],[");
    }

    /// The bytes before row `index`'s text: `first` leaves out the end of a
    /// previous row, `comma` false leaves out what follows the index.
    #[inline(always)]
    fn next(&mut self, index: u64, first: bool, comma: bool) -> &[u8] {
        if index != self.index {
            if self.index.checked_add(1) == Some(index) {
                self.count_up();
            } else {
                self.start = DIGITS_END
                    - decimal::write_u64_backwards(&mut self.buffer[..DIGITS_END], index);
                self.put_prefix();
            }
            self.index = index;
        }
        let from = match (first, self.lines) {
            (true, _) => self.start - 1,
            (false, true) => self.start - 4,
            (false, false) => self.start - 3,
        };
        let to = match (comma, self.lines) {
            (false, _) => DIGITS_END,
            (true, true) => DIGITS_END + 2,
            (true, false) => DIGITS_END + 1,
        };
        &self.buffer[from..to]
    }

    fn count_up(&mut self) {
        let mut at = DIGITS_END - 1;
        loop {
            if self.buffer[at] != b'9' {
                self.buffer[at] += 1;
                return;
            }
            self.buffer[at] = b'0';
            if at == self.start {
                self.start -= 1;
                self.buffer[self.start] = b'1';
                self.put_prefix();
                return;
            }
            at -= 1;
        }
    }
}

/// Appends the inside of a JSON string holding UTF-8 `text`, escaped as
/// miniserde escapes: runs that need no escape are copied whole.
fn push_escaped(out: &mut Vec<u8>, text: &[u8]) {
    use json::swar;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    let mut at = 0;
    loop {
        // The next byte to escape, eight bytes at a time while it can.
        while let Some(word) = swar::word(text, at) {
            let stops = swar::string_stops(word);
            if stops != 0 {
                at += swar::first(stops);
                break;
            }
            at += 8;
        }
        while at < text.len() && !matches!(text[at], 0..0x20 | b'"' | b'\\') {
            at += 1;
        }
        let Some(&byte) = text.get(at) else {
            break;
        };
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\t' => b"\\t",
            b'\r' => b"\\r",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ],
        };
        out.extend_from_slice(&text[start..at]);
        out.extend_from_slice(escape);
        at += 1;
        start = at;
    }
    out.extend_from_slice(&text[start..]);
}

/// Appends UTF-8 `text` as a JSON string, escaped as miniserde escapes.
#[cfg(test)]
pub(crate) fn push_json_string(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    push_escaped(out, text);
    out.push(b'"');
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A row to send, as the tests write them.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Row {
        pub index: u64,
        pub text: String,
    }

    /// The request body for `rows`, as text.
    pub fn encode_request(rows: &[Row]) -> String {
        let mut batch = Batch::new(InputFormat::Lines);
        for row in rows {
            batch.push(row.index, &row.text);
        }
        let mut body = Vec::new();
        super::encode_request(&batch, &mut body);
        String::from_utf8(body).expect("UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Row, encode_request};

    fn rows(texts: &[&str]) -> Vec<Row> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| Row {
                index: i as u64,
                text: t.to_string(),
            })
            .collect()
    }

    #[test]
    fn encodes_the_tutorial_request() {
        assert_eq!(
            encode_request(&rows(&["Hello"])),
            r#"{"data":[[0,"Hello"]]}"#
        );
        assert_eq!(
            encode_request(&rows(&["a", ""])),
            r#"{"data":[[0,"a"],[1,""]]}"#
        );
    }
}
