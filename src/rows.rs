//! The rows of one request, as the job hands them from the reader to the
//! encoder: their indices, and their text in one buffer. What a row's bytes
//! mean is left to the modules on either side: `input` checks them as it
//! reads them, `request` escapes them as it writes them.

use std::ops::Range;

/// Replies nested deeper than this are refused, so a small hostile body
/// cannot make the decoder recurse without end. Jsonl input lines are held
/// to the same limit, so that what is sent could also come back.
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
/// (input appended in runs of lines, newlines and all), each row a range of
/// it, so that a row costs no allocation of its own. Reused from batch to
/// batch.
#[derive(Debug)]
pub struct Batch {
    format: InputFormat,
    indices: Vec<u64>,
    text: Vec<u8>,
    rows: Vec<Range<usize>>,
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

    pub fn format(&self) -> InputFormat {
        self.format
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
        &self.text[self.rows[i].clone()]
    }

    /// Row `i`'s index and text.
    pub fn row(&self, i: usize) -> (u64, &[u8]) {
        (self.indices[i], self.text(i))
    }

    /// The index and text of the rows `range` (positions in the batch), in
    /// order.
    pub fn rows_in(&self, range: Range<usize>) -> impl Iterator<Item = (u64, &[u8])> {
        let text = &self.text;
        let rows = self.rows[range.clone()]
            .iter()
            .map(|row| &text[row.clone()]);
        self.indices[range].iter().copied().zip(rows)
    }

    /// How many bytes of text the batch holds, rows and what lies between
    /// them: where the next `append_text` puts its bytes.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Appends a run of text, which `add_row` then names rows in; where in
    /// the batch's text it starts.
    pub fn append_text(&mut self, text: &[u8]) -> usize {
        let start = self.text.len();
        self.text.extend_from_slice(text);
        start
    }

    /// Makes the appended text `range` the row with `index`, after the rows
    /// already added. The caller has checked it as `text` promises.
    pub fn add_row(&mut self, index: u64, range: Range<usize>) {
        debug_assert!(range.start <= range.end && range.end <= self.text.len());
        self.indices.push(index);
        self.rows.push(range);
    }

    /// Appends a whole row.
    pub fn push(&mut self, index: u64, text: &str) {
        let start = self.append_text(text.as_bytes());
        self.add_row(index, start..self.text.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_ranges_of_the_text_appended() {
        let mut batch = Batch::new(InputFormat::Lines);
        let start = batch.append_text(b"one\r\ntwo\n");
        batch.add_row(0, start..start + 3);
        batch.push(7, "seven\n");
        let start = batch.append_text(b"skipped\nnine\n");
        batch.add_row(9, start + 8..start + 12);
        assert_eq!(batch.indices(), [0, 7, 9]);
        let rows: Vec<(u64, &[u8])> = batch.rows_in(0..batch.len()).collect();
        assert_eq!(rows, [(0, &b"one"[..]), (7, b"seven\n"), (9, b"nine")]);
        assert_eq!(batch.row(1), (7, &b"seven\n"[..]));
        assert_eq!(batch.text_len(), 9 + 6 + 13);
        batch.clear();
        assert!(batch.is_empty() && batch.text_len() == 0);
    }
}
