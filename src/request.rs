//! Encoding a request body, `{"data":[[index,"text"],...]}`, from a
//! batch's rows: each row's index, counted up digit by digit, and its text
//! as a JSON string, or with Jsonl its column values as written. The reader
//! checks a row only for what it must be (UTF-8, a Jsonl array), so the
//! encoder finds for itself what a JSON string must escape, as it copies
//! the text. No JSON is parsed here: Jsonl lines were checked as they were
//! read.

use std::ops::Range;

use crate::decimal::write_u64_backwards;
use crate::json::swar;
use crate::rows::{Batch, InputFormat};

/// Writes the request body for the rows `rows` of `batch` (positions in
/// it; all of them, but for a batch split after it failed) into `out`:
/// `{"data":[[0,"Hello"],...]}`, or `[0,v1,v2,...]` rows with `Jsonl`.
/// Each row is copied in two pieces: what comes before its text (the end of
/// the previous row, the index), and the text, escaped where it must be.
pub fn encode_request(batch: &Batch, rows: Range<usize>, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(16 + batch.text_len() + 24 * rows.len());
    out.extend_from_slice(b"{\"data\":[");
    let lines = batch.format() == InputFormat::Lines;
    let mut head = RowHead::new(lines);
    let empty = rows.is_empty();
    for (i, (index, text)) in batch.rows_in(rows).enumerate() {
        if lines {
            out.extend_from_slice(head.next(index, i == 0, true));
            push_escaped(out, text);
        } else {
            let columns = columns_of(text);
            out.extend_from_slice(head.next(index, i == 0, !columns.is_empty()));
            out.extend_from_slice(columns);
        }
    }
    match (empty, lines) {
        (true, _) => out.extend_from_slice(b"]}"),
        (false, true) => out.extend_from_slice(b"\"]]}"),
        (false, false) => out.extend_from_slice(b"]]}"),
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
                self.start =
                    DIGITS_END - write_u64_backwards(&mut self.buffer[..DIGITS_END], index);
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

    #[inline(always)]
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
/// miniserde escapes: runs that need no escape are copied whole, so that
/// text without any, the common row, is one copy after one scan. Inlined by
/// force: every row of a request goes through it, and with a second caller
/// the size-optimised build would make it a call.
#[inline(always)]
fn push_escaped(out: &mut Vec<u8>, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    loop {
        let at = next_escape(text, start);
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
        start = at + 1;
    }
    out.extend_from_slice(&text[start..]);
}

/// Where the first byte from `at` on is that a JSON string must escape (a
/// control, `"` or `\\`), or the length of `text` when none is: eight
/// bytes at a time, the last few too when the text has eight.
#[inline(always)]
fn next_escape(text: &[u8], mut at: usize) -> usize {
    while let Some(word) = swar::word(text, at) {
        let stops = swar::string_stops(word);
        if stops != 0 {
            return at + swar::first(stops);
        }
        at += 8;
    }
    let left = text.len() - at;
    match text.len().checked_sub(8).map(|last| swar::word(text, last)) {
        // The text's last eight bytes, read again, with the bytes before
        // `at` shifted out and spaces, which need no escape, shifted in.
        Some(Some(word)) if left > 0 => {
            const SPACES: u64 = u64::from_le_bytes([b' '; 8]);
            let shift = 8 * (8 - left as u32);
            let stops = swar::string_stops(word >> shift | SPACES << (64 - shift));
            match stops {
                0 => text.len(),
                _ => at + swar::first(stops),
            }
        }
        _ => {
            while at < text.len() && !matches!(text[at], 0..0x20 | b'"' | b'\\') {
                at += 1;
            }
            at
        }
    }
}

/// Appends UTF-8 `text` as a JSON string, escaped as miniserde escapes.
pub fn push_json_string(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    push_escaped(out, text);
    out.push(b'"');
}

/// Appends the values row `i` of `batch` was sent with, without its index,
/// as a JSON array: `["text"]`, or with Jsonl the line's columns as written.
pub fn push_row_values(batch: &Batch, i: usize, out: &mut Vec<u8>) {
    out.push(b'[');
    match batch.format() {
        InputFormat::Lines => push_json_string(out, batch.text(i)),
        InputFormat::Jsonl => out.extend_from_slice(columns_of(batch.text(i))),
    }
    out.push(b']');
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

    /// `texts` as rows numbered from 0.
    pub fn rows(texts: &[&str]) -> Vec<Row> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| Row {
                index: i as u64,
                text: t.to_string(),
            })
            .collect()
    }

    /// The request body for `rows`, as text.
    pub fn encode_request(rows: &[Row]) -> String {
        let mut batch = Batch::new(InputFormat::Lines);
        for row in rows {
            batch.push(row.index, &row.text);
        }
        let mut body = Vec::new();
        super::encode_request(&batch, 0..batch.len(), &mut body);
        String::from_utf8(body).expect("UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{encode_request, rows};

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

    /// Part of a batch, as a batch split after it failed sends it; and a
    /// row's values as REJECTS_FILE shows them.
    #[test]
    fn encodes_part_of_a_batch_and_a_row_s_values() {
        use crate::rows::{Batch, InputFormat};
        let mut batch = Batch::new(InputFormat::Lines);
        for (index, text) in [(3, "a"), (4, "b\"q"), (9, "c")] {
            batch.push(index, text);
        }
        let mut body = Vec::new();
        super::encode_request(&batch, 1..3, &mut body);
        assert_eq!(body, br#"{"data":[[4,"b\"q"],[9,"c"]]}"#);
        super::encode_request(&batch, 2..2, &mut body);
        assert_eq!(body, br#"{"data":[]}"#);
        let mut values = Vec::new();
        super::push_row_values(&batch, 1, &mut values);
        assert_eq!(values, br#"["b\"q"]"#);
        let mut jsonl = Batch::new(InputFormat::Jsonl);
        jsonl.push(0, " [ 1 , \"x\" ] ");
        values.clear();
        super::push_row_values(&jsonl, 0, &mut values);
        assert_eq!(values, br#"[1 , "x"]"#);
    }

    /// Escapes found wherever they fall: in a whole word, in the last few
    /// bytes, in a text too short for a word, one after another.
    #[test]
    fn escapes_as_miniserde_does_at_every_position() {
        let specials = [
            "\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1f}", "\u{7f}", "é", "🦀",
        ];
        for length in 0..24 {
            for at in 0..=length {
                for special in specials {
                    for twice in [false, true] {
                        let mut text = "x".repeat(length);
                        text.insert_str(at, special);
                        if twice {
                            text.push_str(special);
                        }
                        let mut out = Vec::new();
                        super::push_json_string(&mut out, text.as_bytes());
                        let expected = miniserde::json::to_string(&text);
                        assert_eq!(String::from_utf8(out).unwrap(), expected, "{text:?}");
                    }
                }
            }
        }
    }
}
