//! A service's reply to one request: reading its body, checking it against
//! the indices sent, and writing its values as output lines, over buffers
//! reused from batch to batch. No I/O of its own: the body is read from
//! whatever reader the client hands over.
//!
//! What a reply must be: a JSON object with one `data` key, holding exactly
//! one row for each row sent, in any order. A row is an array of at least
//! two elements, a non-negative integer index and then the value; elements
//! past the second are ignored, as Snowflake ignores them. Left out on
//! purpose: duplicate keys are detected at the top level only, where they
//! would make the reply ambiguous; inside a value, the last one wins.
//!
//! The body is checked by the scanner in `json`, which builds no tree: each
//! value stays a byte range of the body. An output line copies those bytes
//! when they are already what miniserde prints for the value (compact, keys
//! sorted, its escapes), as miniserde, serde or Python's json.dumps with
//! ensure_ascii=False write it; any other value is re-encoded as miniserde
//! prints it (`json::compact`, which builds no tree either). So OUTPUT_FILE
//! is byte for byte what a decode-and-print through miniserde gives,
//! however the service spaces or escapes its JSON. Nothing here costs more
//! than n log n in the size of the reply, whatever its shape.

#[cfg(test)]
mod reference;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Read;
use std::ops::Range;

use crate::decimal;
use crate::json::compact::{Compactor, Member, sort_by_key};
use crate::json::{self, Kind, Number, ScanError, Scanned, Scanner};
use crate::logging;
use crate::rows::MAX_NESTING;

/// Where one reply value is: a range of the body, or of the re-encoded values.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    compact: bool,
}

/// Why a reply was refused. Messages that quote the body are built late,
/// from the body with any secrets taken out.
#[derive(Debug)]
pub enum BadReply {
    /// A reason that quotes nothing of the body, in words.
    Message(String),
    NotJson,
    NoData,
    /// The body stops before its JSON does: a cut-off reply.
    EndsEarly,
}

impl BadReply {
    /// The message for a body of `length` bytes, quoting `shown` (its
    /// start, at least `PREVIEW_BYTES` of it) where it quotes the body.
    pub fn describe(self, length: usize, shown: &[u8]) -> String {
        match self {
            BadReply::Message(message) => message,
            BadReply::NotJson => format!("reply is not valid JSON: {}", preview(shown)),
            BadReply::NoData => format!("reply has no \"data\" key: {}", preview(shown)),
            BadReply::EndsEarly if length == 0 => "reply is not valid JSON: it is empty".to_owned(),
            BadReply::EndsEarly => format!(
                "reply ends before its JSON is complete, after {length} bytes: {}",
                preview(shown)
            ),
        }
    }
}

/// A reply body and, once decoded, where each row's value is. Reused from
/// batch to batch, so that its buffers are allocated once.
#[derive(Debug, Default)]
pub struct Reply {
    body: Vec<u8>,
    recoded: Vec<u8>,
    values: Vec<Option<Span>>,
    /// The bytes of the body that already are the output lines, but for the
    /// commas between rows: the rows of `data`, when they are exactly
    /// `[index,value]` in the order sent, compact and one comma apart.
    lines_in_body: Option<Range<usize>>,
}

/// A reused buffer larger than this is let go rather than kept.
const KEPT_BYTES: usize = 1024 * 1024;

impl Reply {
    /// The body as read.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Reads a body of at most `limit` bytes (the reader enforces it). The
    /// buffer holds what has arrived, whatever length the reply declares:
    /// up to 64 KiB it grows as bytes come; past that it is reserved up to
    /// the limit at once, so that a large body is never copied into a larger
    /// buffer (which would need both at the same time), and the pages of
    /// the reservation cost memory only as bytes fill them. The buffer is
    /// kept for the next batch.
    pub fn read_body(&mut self, mut reader: impl Read, limit: u64) -> std::io::Result<()> {
        const GROWN: u64 = 64 * 1024;
        if self.body.capacity() > KEPT_BYTES {
            self.body = Vec::new();
        }
        self.body.clear();
        self.values.clear();
        // The first 64 KiB, then the rest: one `read_to_end` in the binary
        // for both, through `take`, the second time with no limit of its own.
        let mut take = GROWN;
        loop {
            let read = (&mut reader).take(take).read_to_end(&mut self.body)?;
            if take != GROWN || read as u64 != GROWN {
                return Ok(());
            }
            let rest = usize::try_from(limit.saturating_sub(GROWN)).unwrap_or(usize::MAX);
            // Where the reservation cannot be had, the buffer grows as
            // bytes come instead, and reading fails if even that runs out.
            let _ = self.body.try_reserve_exact(rest.saturating_add(1));
            take = u64::MAX;
        }
    }

    /// Checks the body as the reply to rows with the indices `sent`
    /// (ascending).
    pub fn decode(&mut self, sent: &[u64]) -> Result<(), BadReply> {
        let body = &self.body;
        if let Err(e) = std::str::from_utf8(body) {
            // A body that stops inside a character was cut there: no JSON
            // document ends with half a character.
            if e.error_len().is_none() {
                return Err(BadReply::EndsEarly);
            }
            return Err(BadReply::Message(format!(
                "reply is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            )));
        }
        self.values.clear();
        self.values.resize(sent.len(), None);
        self.lines_in_body = None;
        let mut scanner = Scanner::new(body, MAX_NESTING);
        let problem = match scan_reply(
            &mut scanner,
            sent,
            &mut self.values,
            &mut self.lines_in_body,
        ) {
            Ok(problem) => problem,
            Err(ScanError::TooDeep) => Some(BadReply::Message(too_deep())),
            // Which of the two a broken body is named by must not depend on
            // where the scan stopped.
            Err(ScanError::Syntax) if json::nesting_exceeds(body, MAX_NESTING) => {
                Some(BadReply::Message(too_deep()))
            }
            Err(ScanError::Syntax) if scanner.position() >= body.len() => Some(BadReply::EndsEarly),
            Err(ScanError::Syntax) => Some(BadReply::NotJson),
            Err(fault) => Some(BadReply::Message(beyond_miniserde(body, fault))),
        };
        if let Some(problem) = problem {
            return Err(problem);
        }
        // The first five indices without a reply, and how many there are.
        let (mut missing, mut shown) = (0, String::new());
        for (index, value) in sent.iter().zip(&self.values) {
            if value.is_none() {
                missing += 1;
                if missing <= 5 {
                    let comma = if missing > 1 { ", " } else { "" };
                    let _ = write!(shown, "{comma}{index}");
                }
            }
        }
        if missing > 0 {
            let more = if missing > 5 { ", ..." } else { "" };
            return Err(BadReply::Message(format!(
                "reply has {} row(s) for {} sent; no reply for index {shown}{more}",
                sent.len() - missing,
                sent.len(),
            )));
        }
        self.recode()
    }

    /// Re-encodes the values whose bytes are not what miniserde prints.
    fn recode(&mut self) -> Result<(), BadReply> {
        self.recoded.clear();
        let body = &self.body;
        let mut compactor = Compactor::default();
        for span in self.values.iter_mut().flatten() {
            if span.compact {
                continue;
            }
            let start = self.recoded.len();
            let value = &body[span.start..span.end];
            // Cannot fail on what the scanner accepted; refused all the same.
            if compactor
                .push(value, MAX_NESTING, &mut self.recoded)
                .is_err()
            {
                return Err(BadReply::NotJson);
            }
            *span = Span {
                start,
                end: self.recoded.len(),
                compact: false,
            };
        }
        Ok(())
    }

    /// Appends the OUTPUT_FILE lines of a decoded reply to rows with the
    /// indices `sent`.
    pub fn push_output_lines(&self, sent: &[u64], out: &mut Vec<u8>) {
        let Some(lines) = &self.lines_in_body else {
            for (i, &index) in sent.iter().enumerate() {
                push_output_line(out, index, self.value(i));
            }
            return;
        };
        let base = out.len();
        out.extend_from_slice(&self.body[lines.clone()]);
        for span in self
            .values
            .iter()
            .take(sent.len().saturating_sub(1))
            .flatten()
        {
            out[base + span.end + 1 - lines.start] = b'\n';
        }
        out.push(b'\n');
    }

    /// How many values a decoded reply holds: one per row sent.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value for the `i`th row sent, as compact JSON.
    pub fn value(&self, i: usize) -> &[u8] {
        match self.values.get(i).copied().flatten() {
            Some(span) if span.compact => &self.body[span.start..span.end],
            Some(span) => &self.recoded[span.start..span.end],
            None => b"null",
        }
    }
}

/// Why valid JSON that miniserde cannot hold is refused.
fn beyond_miniserde(json: &[u8], fault: ScanError) -> String {
    match fault {
        ScanError::OutOfRange { start, end } => format!(
            "reply holds the number {} (at byte {start}), too large for a 64-bit float",
            String::from_utf8_lossy(&json[start..end.min(start + 40)])
        ),
        ScanError::LoneSurrogate { at } => format!(
            "reply holds the escape {} (at byte {at}), half of a UTF-16 surrogate pair \
             without its other half, which no UTF-8 text can carry",
            String::from_utf8_lossy(&json[at..(at + 6).min(json.len())])
        ),
        ScanError::Syntax => "reply is not valid JSON".to_owned(),
        ScanError::TooDeep => too_deep(),
    }
}

fn too_deep() -> String {
    format!("reply nests JSON deeper than {MAX_NESTING} levels")
}

/// Checks a reply to a request that sent rows with the indices `sent`
/// (ascending), and returns the values in the same order, each as the
/// compact JSON that OUTPUT_FILE shows. For tests and fuzz/; the job uses
/// `Reply`.
pub fn decode_reply(body: &[u8], sent: &[u64]) -> Result<Vec<String>, String> {
    let reply = checked_reply(body, sent)?;
    Ok((0..reply.len())
        .map(|i| String::from_utf8_lossy(reply.value(i)).into_owned())
        .collect())
}

/// `body` read and checked as the reply to `sent`, or why it is refused.
fn checked_reply(body: &[u8], sent: &[u64]) -> Result<Reply, String> {
    let mut reply = Reply::default();
    reply
        .read_body(body, body.len() as u64)
        .map_err(|e| e.to_string())?;
    reply
        .decode(sent)
        .map_err(|problem| problem.describe(body.len(), body))?;
    Ok(reply)
}

/// Scans the whole reply; a problem with its shape is kept until the end,
/// because a reply that is not JSON at all is named so first.
fn scan_reply(
    scanner: &mut Scanner,
    sent: &[u64],
    values: &mut [Option<Span>],
    lines_in_body: &mut Option<Range<usize>>,
) -> Result<Option<BadReply>, ScanError> {
    scanner.skip_whitespace();
    if scanner.peek() != Some(b'{') {
        let top = scanner.value()?;
        scanner.finish()?;
        return Ok(Some(BadReply::Message(format!(
            "reply is {}, expected an object with a \"data\" key",
            top.kind.described()
        ))));
    }
    let mut data_seen = false;
    let mut data_problem = None;
    let mut others = OtherKeys::default();
    let mut more = scanner.begin()?;
    while more {
        let (key, escaped) = scanner.key()?;
        let key = key_text(key, escaped)?;
        if key == "data" && !data_seen {
            data_seen = true;
            data_problem = scan_data(scanner, sent, values, lines_in_body)?;
        } else {
            others.add(&key);
            scanner.value()?;
        }
        more = scanner.more(b'}')?;
    }
    scanner.finish()?;
    if let Some(key) = others.first_repeat() {
        return Ok(Some(BadReply::Message(format!(
            "reply has the key {} more than once",
            crate::logging::quoted(&key)
        ))));
    }
    if !data_seen {
        return Ok(Some(BadReply::NoData));
    }
    Ok(data_problem.map(BadReply::Message))
}

/// The keys of a reply's object but its first `data`, in the order they
/// come: checked for one that comes again once all are in, by sorting, as
/// comparing each key with every one before it would cost n² comparisons,
/// and a reply can hold a million keys.
#[derive(Default)]
struct OtherKeys {
    /// Their text, one after another.
    text: Vec<u8>,
    /// Each key's range of `text`, with its place among them.
    members: Vec<Member>,
    /// The place where `data` first comes again, if it does.
    data_again: Option<usize>,
    count: usize,
}

impl OtherKeys {
    fn add(&mut self, key: &str) {
        let place = self.count;
        self.count += 1;
        if key == "data" {
            self.data_again.get_or_insert(place);
            return;
        }
        let start = self.text.len();
        self.text.extend_from_slice(key.as_bytes());
        self.members.push(Member {
            key: start..self.text.len(),
            place: place..place + 1,
        });
    }

    /// The first key, in the order they came, that an earlier one had.
    fn first_repeat(mut self) -> Option<String> {
        let text = &self.text;
        // Equal keys end up side by side, each run in the order they came.
        sort_by_key(&mut self.members, text);
        let repeat = self
            .members
            .windows(2)
            .filter(|pair| text[pair[0].key.clone()] == text[pair[1].key.clone()])
            .map(|pair| &pair[1])
            .min_by_key(|member| member.place.start);
        match (repeat, self.data_again) {
            (Some(other), Some(data)) if data < other.place.start => Some("data".to_owned()),
            (Some(other), _) => {
                Some(String::from_utf8_lossy(&text[other.key.clone()]).into_owned())
            }
            (None, Some(_)) => Some("data".to_owned()),
            (None, None) => None,
        }
    }
}

/// A key's text, quotes off and escapes decoded.
fn key_text(key: &[u8], escaped: bool) -> Result<Cow<'_, str>, ScanError> {
    if escaped {
        json::compact::decode(key).map(Cow::Owned)
    } else {
        let text = std::str::from_utf8(key).map_err(|_| ScanError::Syntax)?;
        Ok(Cow::Borrowed(&text[1..text.len() - 1]))
    }
}

/// The value of `data`: rows, each placed in `values` by its index. The
/// first problem in row order is kept. Not inlined, so that the loop over
/// the rows has the registers to itself: inlined, it shares them with the
/// object around it and costs more instructions a row.
#[inline(never)]
fn scan_data(
    scanner: &mut Scanner,
    sent: &[u64],
    values: &mut [Option<Span>],
    lines_in_body: &mut Option<Range<usize>>,
) -> Result<Option<String>, ScanError> {
    if scanner.peek() != Some(b'[') {
        let data = scanner.value()?;
        return Ok(Some(format!(
            "\"data\" is {}, expected an array of rows",
            data.kind.described()
        )));
    }
    let mut problem = None;
    let mut position = 0usize;
    let first = scanner.position() + 1;
    let mut plain = true;
    let mut previous_end = first - 1;
    let mut more = scanner.begin()?;
    while more {
        if scanner.peek() == Some(b'[') {
            let start = scanner.position();
            let row = match scanner.plain_row() {
                // The common case, answered in the order sent: placed at once.
                Some((index, value))
                    if problem.is_none()
                        && sent.get(position) == Some(&index)
                        && values[position].is_none() =>
                {
                    values[position] = Some(Span {
                        start: value.start,
                        end: value.end,
                        compact: true,
                    });
                    plain &= start == previous_end + 1;
                    previous_end = scanner.position();
                    position += 1;
                    more = scanner.more(b']')?;
                    continue;
                }
                Some((index, value)) => Row {
                    start,
                    end: scanner.position(),
                    elements: 2,
                    index: Ok(Number::Whole(index)),
                    index_start: start + 1,
                    index_end: value.start - 1,
                    value: Some(value),
                    plain: true,
                },
                None => scan_row(scanner)?,
            };
            plain &= row.plain && row.start == previous_end + 1;
            previous_end = row.end;
            if problem.is_none() {
                match place_row(position, &row, sent, values, scanner.bytes()) {
                    Ok(slot) => plain &= slot == position,
                    Err(message) => problem = Some(message),
                }
            }
        } else {
            plain = false;
            let row = scanner.value()?;
            problem.get_or_insert_with(|| {
                format!(
                    "row {position} of the reply is {}, expected [index, value]",
                    row.kind.described()
                )
            });
        }
        position += 1;
        more = scanner.more(b']')?;
    }
    if plain && position > 0 && position == sent.len() {
        *lines_in_body = Some(first..previous_end);
    }
    Ok(problem)
}

/// What one row of a reply holds.
struct Row {
    start: usize,
    end: usize,
    elements: usize,
    index: Result<Number, Kind>,
    /// Where the index is, when it is a number.
    index_start: usize,
    index_end: usize,
    value: Option<Scanned>,
    /// Exactly `[index,value]`: two elements, no white space, a whole
    /// index, a compact value.
    plain: bool,
}

fn scan_row(scanner: &mut Scanner) -> Result<Row, ScanError> {
    let mut row = Row {
        start: scanner.position(),
        end: 0,
        elements: 0,
        index: Err(Kind::Null),
        index_start: 0,
        index_end: 0,
        value: None,
        plain: false,
    };
    let mut more = scanner.begin()?;
    while more {
        match row.elements {
            0 if matches!(scanner.peek(), Some(b'-' | b'0'..=b'9')) => {
                row.index_start = scanner.position();
                row.plain = row.index_start == row.start + 1;
                row.index = match scanner.number() {
                    Ok((number, _)) => Ok(number),
                    // Out of any range an index can have, like 2^64.
                    Err(ScanError::OutOfRange { .. }) => Ok(Number::Float),
                    Err(fault) => return Err(fault),
                };
                row.index_end = scanner.position();
            }
            0 => row.index = Err(scanner.value()?.kind),
            1 => row.value = Some(scanner.value()?),
            _ => {
                scanner.value()?;
            }
        }
        row.elements += 1;
        more = scanner.more(b']')?;
    }
    row.end = scanner.position();
    row.plain &= row.elements == 2
        && matches!(row.index, Ok(Number::Whole(_)))
        && row.value.is_some_and(|value| {
            value.compact && value.start == row.index_end + 1 && value.end + 1 == row.end
        });
    Ok(row)
}

/// Places a row's value in its slot; the slot.
fn place_row(
    position: usize,
    row: &Row,
    sent: &[u64],
    values: &mut [Option<Span>],
    body: &[u8],
) -> Result<usize, String> {
    let Some(value) = row.value else {
        return Err(format!(
            "row {position} of the reply has {} element(s), expected [index, value]",
            row.elements
        ));
    };
    let index = match row.index {
        Ok(Number::Whole(index)) => index,
        Ok(Number::Negative(magnitude)) => {
            return Err(format!(
                "row {position} of the reply has negative index -{magnitude}"
            ));
        }
        Ok(Number::Float) => {
            let text = &body[row.index_start..row.index_end.min(row.index_start + 40)];
            return Err(format!(
                "row {position} of the reply has index {}, out of range: an index is a whole \
                 number from 0 to 18446744073709551615, written without a fraction or an \
                 exponent, as it was sent",
                String::from_utf8_lossy(text)
            ));
        }
        Err(kind) => {
            return Err(format!(
                "row {position} of the reply has {} as its index, expected a number",
                kind.described()
            ));
        }
    };
    // Services answer in the order sent, as a rule.
    let slot = match sent.get(position) {
        Some(&at) if at == index => position,
        _ => sent.binary_search(&index).map_err(|_| {
            format!("reply has a row for index {index}, which this request did not send")
        })?,
    };
    if values[slot].is_some() {
        return Err(format!("reply answers index {index} more than once"));
    }
    values[slot] = Some(Span {
        start: value.start,
        end: value.end,
        compact: value.compact,
    });
    Ok(slot)
}

/// How much of a body an error message quotes.
pub const PREVIEW_BYTES: usize = 200;

/// The first 200 bytes of a body, for error messages: quoted and escaped as
/// a JSON string.
pub fn preview(body: &[u8]) -> String {
    const LIMIT: usize = PREVIEW_BYTES;
    let shown = String::from_utf8_lossy(&body[..body.len().min(LIMIT)]);
    let mut preview = logging::quoted(shown.trim_end());
    if body.len() > LIMIT {
        preview.push_str("...");
    }
    preview
}

/// Appends `[index,value]` and a newline: one line of `OUTPUT_FILE`, with
/// `value` as `Reply::value` gives it.
pub fn push_output_line(out: &mut Vec<u8>, index: u64, value: &[u8]) {
    out.push(b'[');
    decimal::push_u64(out, index);
    out.push(b',');
    out.extend_from_slice(value);
    out.extend_from_slice(b"]\n");
}

/// A reply value as a log line shows it, on one line: strings as their
/// text, escaped (`logging::escaped`), anything else as compact JSON.
/// Borrowed from the reply for a string without escapes, as the tutorial's
/// `Bob said Hello`.
pub fn display_value(value: &[u8]) -> Cow<'_, str> {
    let Ok(json) = std::str::from_utf8(value) else {
        // Not met: a reply is checked as UTF-8 before its values are taken.
        return Cow::Owned(logging::one_line(&String::from_utf8_lossy(value)).into_owned());
    };
    let Some(text) = json.strip_prefix('"').and_then(|j| j.strip_suffix('"')) else {
        return logging::one_line(json);
    };
    if !text.contains('\\') {
        return logging::escaped(text);
    }
    match miniserde::json::from_str::<String>(json) {
        Ok(decoded) => match logging::escaped(&decoded) {
            Cow::Borrowed(_) => Cow::Owned(decoded),
            Cow::Owned(escaped) => Cow::Owned(escaped),
        },
        Err(_) => logging::one_line(json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::testing::{Row, encode_request, rows};

    fn decode(body: &str, sent: &[u64]) -> Result<Vec<String>, String> {
        decode_reply(body.as_bytes(), sent).map(|values| {
            values
                .iter()
                .map(|value| display_value(value.as_bytes()).into_owned())
                .collect()
        })
    }

    #[test]
    fn indices_are_counted_up_across_digits_and_jumps() {
        let indices: Vec<u64> = (0..=1001)
            .chain([5000, 5001, 9_999_999, 10_000_000, u64::MAX - 1, u64::MAX])
            .collect();
        let rows: Vec<Row> = indices
            .iter()
            .map(|&index| Row {
                index,
                text: index.to_string(),
            })
            .collect();
        let body = encode_request(&rows);
        let expected: Vec<String> = indices.iter().map(|i| format!("\"{i}\"")).collect();
        assert_eq!(decode_reply(body.as_bytes(), &indices).unwrap(), expected);
        assert!(body.contains(",[1000,\"1000\"],"), "{body}");
    }

    #[test]
    fn escapes_round_trip() {
        let nasty = "quote \" backslash \\ tab \t nl \n nul \u{0} bell \u{7} é 日本 🦀 \u{2028}";
        let body = encode_request(&rows(&[nasty]));
        assert!(!body.contains('\n') && !body.contains('\t') && !body.contains('\u{0}'));
        // A reply in the same shape as the request carries the text back,
        // and a log line shows it escaped.
        let values = decode_reply(body.as_bytes(), &[0]).unwrap();
        assert_eq!(
            miniserde::json::from_str::<String>(&values[0]).unwrap(),
            nasty
        );
        assert_eq!(display_value(values[0].as_bytes()), logging::escaped(nasty));
    }

    #[test]
    fn decodes_the_tutorial_reply() {
        assert_eq!(
            decode(r#"{"data": [[0, "Bob said Hello"]]}"#, &[0]).unwrap(),
            vec!["Bob said Hello"]
        );
    }

    #[test]
    fn rows_may_come_in_any_order_and_carry_any_value() {
        let values = decode(
            r#"{"data":[[5,{"a":[1,2.5,null]}],[3,7,"extra"],[4,true]],"other":1}"#,
            &[3, 4, 5],
        )
        .unwrap();
        assert_eq!(values, vec!["7", "true", r#"{"a":[1,2.5,null]}"#]);
    }

    #[test]
    fn output_lines_are_compact_json() {
        let values = decode_reply(br#"{"data":[[0,"x \"y\""],[1,[1, 2]]]}"#, &[0, 1]).unwrap();
        let mut lines = Vec::new();
        push_output_line(&mut lines, 0, values[0].as_bytes());
        push_output_line(&mut lines, 1, values[1].as_bytes());
        let lines = String::from_utf8(lines).unwrap();
        assert_eq!(lines, "[0,\"x \\\"y\\\"\"]\n[1,[1,2]]\n");
    }

    #[test]
    fn wrong_replies_name_the_cause() {
        let cases: &[(&str, &[u64], &str)] = &[
            ("", &[0], "reply is not valid JSON: it is empty"),
            ("Bob said Hello", &[0], "not valid JSON"),
            ("{\"data\":[[0,\"x\"]]}x", &[0], "not valid JSON"),
            (
                r#"{"data":[[0,"x"]"#,
                &[0],
                "reply ends before its JSON is complete, after 16 bytes",
            ),
            (
                r#"{"data":[[0,"x\ud8"#,
                &[0],
                "reply ends before its JSON is complete",
            ),
            (
                r#"{"data":[[0,1e400]]}"#,
                &[0],
                "the number 1e400 (at byte 12), too large for a 64-bit float",
            ),
            (
                r#"{"data":[[0,"a\ud800b"]]}"#,
                &[0],
                "the escape \\ud800 (at byte 14), half of a UTF-16 surrogate pair",
            ),
            (
                r#"{"data":[[0,"\ud800\u0041"]]}"#,
                &[0],
                "the escape \\ud800 (at byte 13)",
            ),
            (
                r#"{"data":[[0,"\udc00"]]}"#,
                &[0],
                "the escape \\udc00 (at byte 13)",
            ),
            (
                r#"{"data":[[1e400,"x"]]}"#,
                &[0],
                "row 0 of the reply has index 1e400, out of range",
            ),
            ("null", &[0], "reply is null"),
            ("[]", &[0], "reply is an array"),
            ("{}", &[0], "no \"data\" key"),
            (r#"{"data":null}"#, &[0], "\"data\" is null"),
            (r#"{"data":{}}"#, &[0], "\"data\" is an object"),
            (
                r#"{"data":[]}"#,
                &[0],
                "0 row(s) for 1 sent; no reply for index 0",
            ),
            (r#"{"data":["x"]}"#, &[0], "row 0 of the reply is a string"),
            (r#"{"data":[[0]]}"#, &[0], "has 1 element(s)"),
            (r#"{"data":[["0","x"]]}"#, &[0], "a string as its index"),
            (r#"{"data":[[0.5,"x"]]}"#, &[0], "index 0.5, out of range"),
            (r#"{"data":[[-1,"x"]]}"#, &[0], "negative index -1"),
            (r#"{"data":[[-0,"x"]]}"#, &[0], "negative index -0"),
            (r#"{"data":[[0.0,"x"]]}"#, &[0], "a whole number from 0"),
            (
                r#"{"data":[[1e0,"x"]]}"#,
                &[1],
                "index 1e0, out of range: an index is a whole number from 0 to \
                 18446744073709551615, written without a fraction or an exponent",
            ),
            (
                r#"{"data":[[18446744073709551616,"x"]]}"#,
                &[0],
                "index 18446744073709551616, out of range",
            ),
            (
                r#"{"data":[[1,"x"]]}"#,
                &[0],
                "index 1, which this request did not send",
            ),
            (
                r#"{"data":[[0,"x"],[0,"y"]]}"#,
                &[0, 1],
                "index 0 more than once",
            ),
            (
                r#"{"data":[[0,"x"]],"data":[[0,"y"]]}"#,
                &[0],
                "key \"data\" more than once",
            ),
        ];
        for (body, sent, expected) in cases {
            let error = decode(body, sent).unwrap_err();
            assert!(
                error.contains(expected),
                "{body:?}: {error:?} lacks {expected:?}"
            );
        }
        let error = decode_reply(b"{\"data\":[[0,\"\xff\"]]}", &[0]).unwrap_err();
        assert!(error.contains("not valid UTF-8 (at byte 13)"), "{error}");
    }

    /// A body cut anywhere, inside a character, a string, an escape, a
    /// number or a literal, is a body that ends early: never "not JSON" or
    /// "not UTF-8", which would not be retried.
    #[test]
    fn a_reply_cut_anywhere_ends_early() {
        let whole = "{ \"data\" : [[0,\"é 🦀 \\u00e9 \\ud83e\\udd80 \\n\"],[1, -12.5e+3 ],\
                     [2,[true,false,null,{\"k\":\"v\"}]]], \"other\": [1] }";
        assert!(decode_reply(whole.as_bytes(), &[0, 1, 2]).is_ok());
        for cut in 0..whole.len() {
            let mut reply = Reply::default();
            reply
                .read_body(&whole.as_bytes()[..cut], cut as u64)
                .unwrap();
            let verdict = reply.decode(&[0, 1, 2]);
            assert!(
                matches!(verdict, Err(BadReply::EndsEarly)),
                "cut after {cut} bytes: {verdict:?}"
            );
        }
    }

    #[test]
    fn the_first_key_to_come_again_is_named() {
        let cases = [
            (r#"{"b":1,"a":1,"data":[[0,"x"]],"b":2,"a":2}"#, r#""b""#),
            (r#"{"b":1,"a":1,"data":[[0,"x"]],"a":2,"b":2}"#, r#""a""#),
            (r#"{"data":[[0,"x"]],"b":1,"b":2,"data":[]}"#, r#""b""#),
            (r#"{"b":1,"data":[[0,"x"]],"data":[],"b":2}"#, r#""data""#),
            (r#"{"data":[[0,"x"]],"\u0061":1,"a":2}"#, r#""a""#),
            (r#"{"\"":1,"data":[[0,"x"]],"\u0022":2}"#, r#""\"""#),
        ];
        for (body, key) in cases {
            let error = decode(body, &[0]).unwrap_err();
            let expected = format!("reply has the key {key} more than once");
            assert_eq!(error, expected, "{body}");
        }
        assert!(decode(r#"{"a":1,"data":[[0,"x"]],"b":1,"c":1}"#, &[0]).is_ok());
    }

    #[test]
    fn deep_nesting_is_refused_cheaply() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(decode(&deep, &[0]).unwrap_err().contains("deeper than 128"));
        let inside_string = format!(r#"{{"data":[[0,"{}"]]}}"#, "[".repeat(1000));
        assert_eq!(decode(&inside_string, &[0]).unwrap()[0].len(), 1000);
        let just_fits = format!(
            r#"{{"data":[[0,{}1{}]]}}"#,
            "[".repeat(MAX_NESTING - 3),
            "]".repeat(MAX_NESTING - 3)
        );
        assert!(decode(&just_fits, &[0]).is_ok());
    }

    #[test]
    fn previews_stop_at_200_bytes() {
        assert_eq!(preview(b"short"), "\"short\"");
        let long = preview(&[b'a'; 500]);
        assert!(long.ends_with("\"...") && long.len() == 200 + 5);
    }
}

/// Properties over generated inputs (proptest): what the examples above show
/// for a few rows holds for any rows, and no reply can make the decoder
/// panic. fuzz/ runs the decoder on far more inputs, outside `cargo test`.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::request::push_json_string;
    use crate::request::testing::{Row, encode_request};
    use proptest::collection::{btree_map, btree_set, vec};
    use proptest::prelude::*;

    /// What OUTPUT_FILE gets for a reply to rows with the indices `sent`, or
    /// why the reply is refused.
    pub fn output_of(body: &[u8], sent: &[u64]) -> Result<String, String> {
        let reply = checked_reply(body, sent)?;
        let mut lines = Vec::new();
        reply.push_output_lines(sent, &mut lines);
        String::from_utf8(lines).map_err(|e| e.to_string())
    }

    /// Any character, with the ones JSON must escape drawn often.
    fn any_text() -> impl Strategy<Value = String> {
        let character = prop_oneof![
            3 => any::<char>(),
            1 => (0u8..0x20).prop_map(char::from),
            1 => prop::sample::select(vec!['"', '\\', '/', '\u{7f}', '\u{2028}', '\u{fffd}', '🦀']),
        ];
        vec(character, 0..40).prop_map(|chars| chars.into_iter().collect())
    }

    /// Distinct indices, ascending as the client sends them, with the
    /// extremes drawn often.
    fn any_rows() -> impl Strategy<Value = Vec<Row>> {
        let index = prop_oneof![0u64..1000, any::<u64>(), Just(u64::MAX)];
        btree_map(index, any_text(), 0..16).prop_map(|rows| {
            rows.into_iter()
                .map(|(index, text)| Row { index, text })
                .collect()
        })
    }

    fn texts(values: &[String]) -> Vec<String> {
        values
            .iter()
            .map(|value| match miniserde::json::from_str(value) {
                Ok(miniserde::json::Value::String(text)) => text,
                _ => panic!("not a string: {value}"),
            })
            .collect()
    }

    /// Bytes that look like JSON often enough to get past the parser.
    fn json_soup() -> impl Strategy<Value = Vec<u8>> {
        let token = prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\"data\"",
            "\"data\":",
            "0",
            "1",
            "2",
            "-1",
            "-0",
            "0.5",
            "1e400",
            "18446744073709551616",
            "null",
            "true",
            "\"x\"",
            "\"\\u0000\"",
            "\"\\ud800\"",
            "\"\\\"",
            "\u{fffd}",
            "\u{ff}",
        ]);
        vec(token, 0..64).prop_map(|tokens| tokens.concat().into_bytes())
    }

    /// White space as JSON allows it, usually none.
    fn space() -> impl Strategy<Value = String> {
        prop_oneof![4 => Just(String::new()), 1 => "[ \t\r\n]{1,3}"]
    }

    /// A JSON string, written with any of the escapes a service might use.
    fn json_string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => any_text().prop_map(|text| {
                let mut out = Vec::new();
                push_json_string(&mut out, text.as_bytes());
                let out = String::from_utf8(out).unwrap_or_default();
                out[1..out.len() - 1].to_owned()
            }),
            1 => prop::sample::select(vec![
                "\\/", "\\u0041", "\\u00e9", "\\u00E9", "\\u001f", "\\u001F", "\\u000a",
                "\\u0008", "\\ud83e\\udd80", "\\uD83E\\uDD80", "\\u2028", "\\b", "\\f",
            ]).prop_map(str::to_owned),
        ];
        vec(piece, 0..4).prop_map(|pieces| format!("\"{}\"", pieces.concat()))
    }

    /// JSON values as services write them: spaced or not, keys sorted or
    /// not, repeated or not, numbers in every form miniserde reads.
    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            prop::sample::select(vec![
                "-0",
                "0",
                "1.0",
                "1.50",
                "-2.5e3",
                "1E+2",
                "1e-400",
                "0.1",
                "123456789.123",
                "18446744073709551616",
                "-9223372036854775809",
                "1e308",
                "5e-324",
            ])
            .prop_map(str::to_owned),
            json_string(),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                (vec((space(), inner.clone()), 0..4), space()).prop_map(|(items, end)| {
                    let items: Vec<String> =
                        items.into_iter().map(|(s, v)| format!("{s}{v}")).collect();
                    format!("[{}{end}]", items.join(","))
                }),
                (vec(
                    (
                        prop::sample::select(vec!["a", "b", "a ", "", "\\u0061", "é"]),
                        space(),
                        inner
                    ),
                    0..4
                ))
                .prop_map(|entries| {
                    let entries: Vec<String> = entries
                        .into_iter()
                        .map(|(key, s, value)| format!("\"{key}\"{s}:{s}{value}"))
                        .collect();
                    format!("{{{}}}", entries.join(","))
                }),
            ]
        })
    }

    /// Replies in the row format, mostly right, sometimes wrong in one way.
    fn json_reply() -> impl Strategy<Value = (String, Vec<u64>)> {
        (
            btree_set(0u64..6, 0..5),
            vec((json_value(), space()), 6),
            any::<prop::sample::Index>(),
            0..8u8,
            prop::sample::select(vec![",", ", "]),
        )
            .prop_map(|(sent, values, shuffle, fault, comma)| {
                let sent: Vec<u64> = sent.into_iter().collect();
                let mut rows: Vec<String> = sent
                    .iter()
                    .zip(&values)
                    .map(|(index, (value, space))| {
                        format!("[{space}{index},{space}{value}{space}]")
                    })
                    .collect();
                if !rows.is_empty() {
                    let at = shuffle.index(rows.len());
                    rows.swap(0, at);
                }
                match fault {
                    0 => {
                        rows.pop();
                    }
                    1 => rows.push(values[5].0.clone()),
                    2 => rows.push("[-0,1]".to_owned()),
                    3 => rows.push(format!("[{},2]", sent.first().copied().unwrap_or(9))),
                    _ => {}
                }
                let extra = if fault == 4 {
                    ",\"other\":1,\"other\":2"
                } else {
                    ""
                };
                (
                    format!("{{\"data\" : [{}]{extra}}}", rows.join(comma)),
                    sent,
                )
            })
    }

    /// The same output, or the same refusal. The old decoder called every
    /// reply that miniserde could not read "not valid JSON", and an index
    /// with a fraction, an exponent or too many digits "not a whole number";
    /// the scanner names these more exactly.
    fn judged_alike(new: &Result<String, String>, old: &Result<String, String>) -> bool {
        match (new, old) {
            (Err(new), Err(old)) if old.starts_with("reply is not valid JSON") => {
                new.starts_with("reply is not valid JSON")
                    || new.starts_with("reply ends before its JSON is complete")
                    || new.contains("too large for a 64-bit float")
                    || new.contains("half of a UTF-16 surrogate pair")
            }
            // The old decoder called a body cut inside a character not
            // UTF-8; it is a body cut short.
            (Err(new), Err(old)) if old.starts_with("reply is not valid UTF-8") => {
                new == old || new.starts_with("reply ends before its JSON is complete")
            }
            (Err(new), Err(old)) if old.contains("has an index that is not a whole number") => {
                let row = |message: &str| message.split(" of the reply").next().map(str::to_owned);
                row(new) == row(old) && new.contains(", out of range: an index is a whole number")
            }
            _ => new == old,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The scanner against the decoder it replaced (miniserde's Value
        /// trees): the same replies refused with the same message, and the
        /// same OUTPUT_FILE bytes for the rest, however the reply is spaced
        /// or escaped.
        #[test]
        fn output_is_what_the_old_decoder_wrote((body, sent) in json_reply()) {
            let old = reference::output_lines(body.as_bytes(), &sent);
            let new = output_of(body.as_bytes(), &sent);
            prop_assert!(judged_alike(&new, &old), "{}\n{:?}\n{:?}", body, new, old);
        }

        #[test]
        fn any_bytes_are_judged_as_the_old_decoder_did(
            body in prop_oneof![vec(any::<u8>(), 0..64), json_soup()],
            sent in btree_set(0u64..4, 0..4),
        ) {
            let sent: Vec<u64> = sent.into_iter().collect();
            let old = reference::output_lines(&body, &sent);
            let new = output_of(&body, &sent);
            prop_assert!(judged_alike(&new, &old), "{:?}\n{:?}\n{:?}", body, new, old);
        }

        /// A request body has the shape of a reply that echoes each row: so
        /// decoding what was encoded gives back every text, in order.
        #[test]
        fn encoding_then_decoding_gives_back_the_rows(rows in any_rows()) {
            let sent: Vec<u64> = rows.iter().map(|row| row.index).collect();
            let body = encode_request(&rows);
            let values = decode_reply(body.as_bytes(), &sent);
            prop_assert!(values.is_ok(), "{body}: {values:?}");
            let expected: Vec<String> = rows.iter().map(|row| row.text.clone()).collect();
            prop_assert_eq!(texts(&values.unwrap_or_default()), expected);
        }

        /// Rows may come back in any order; the values still line up with
        /// the indices sent.
        #[test]
        fn the_order_of_the_reply_does_not_matter(rows in any_rows(), seed in any::<u64>()) {
            let sent: Vec<u64> = rows.iter().map(|row| row.index).collect();
            let mut shuffled = rows.clone();
            let len = shuffled.len().max(1) as u64;
            for i in 0..shuffled.len() {
                let j = ((seed.wrapping_mul(i as u64 + 1)) % len) as usize;
                shuffled.swap(i, j);
            }
            let values = decode_reply(encode_request(&shuffled).as_bytes(), &sent);
            let expected: Vec<String> = rows.iter().map(|row| row.text.clone()).collect();
            prop_assert_eq!(texts(&values.unwrap_or_default()), expected);
        }

        /// A row missing from the reply is always an error that names it.
        #[test]
        fn a_missing_row_is_always_named(rows in any_rows(), drop in any::<prop::sample::Index>()) {
            prop_assume!(!rows.is_empty() && rows.len() <= 5);
            let sent: Vec<u64> = rows.iter().map(|row| row.index).collect();
            let gone = drop.index(rows.len());
            let mut partial = rows.clone();
            partial.remove(gone);
            let error = decode_reply(encode_request(&partial).as_bytes(), &sent);
            let error = error.err().unwrap_or_default();
            prop_assert!(error.contains(&format!("no reply for index {}", rows[gone].index)), "{}", error);
        }

        /// No bytes whatsoever make the decoder panic, and what it accepts
        /// has one value per row sent.
        #[test]
        fn arbitrary_bytes_never_panic(body in vec(any::<u8>(), 0..512), sent in btree_set(0u64..4, 0..4)) {
            let sent: Vec<u64> = sent.into_iter().collect();
            if let Ok(values) = decode_reply(&body, &sent) {
                prop_assert_eq!(values.len(), sent.len());
            }
        }

        #[test]
        fn json_like_bytes_never_panic(body in json_soup(), sent in btree_set(0u64..4, 0..4)) {
            let sent: Vec<u64> = sent.into_iter().collect();
            if let Ok(values) = decode_reply(&body, &sent) {
                prop_assert_eq!(values.len(), sent.len());
            }
        }
    }
}
