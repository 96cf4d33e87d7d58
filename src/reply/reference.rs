//! The reply decoder as it was before the scanner (miniserde's `Value`
//! trees), kept for the tests alone: the scanner must accept and refuse the
//! same replies, with the same messages, and write the same output bytes.

use miniserde::de::{Map, Seq, Visitor};
use miniserde::json::{self, Number, Value};
use miniserde::{Deserialize, make_place};

use super::preview;
use crate::json::nesting_exceeds;
use crate::rows::MAX_NESTING;

/// Appends one line of `OUTPUT_FILE`, `[index,value]` in compact JSON, and a
/// newline.
pub fn push_output_line(out: &mut String, index: u64, value: &Value) {
    push_index(out, index);
    match value {
        Value::String(text) => push_string(out, text),
        other => out.push_str(&json::to_string(other)),
    }
    out.push_str("]\n");
}

/// `[index,` without a temporary string.
fn push_index(out: &mut String, index: u64) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(out, "[{index},");
}

/// Appends `text` as a JSON string. Most rows need no escaping, and copying
/// them whole is several times cheaper than miniserde's escaper, which does
/// the rest.
fn push_string(out: &mut String, text: &str) {
    if text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(&json::to_string(text));
    } else {
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
}

/// Checks a reply to a request that sent rows with the indices `sent`
/// (ascending), and returns the values in the same order as `sent`.
pub fn decode_reply(body: &[u8], sent: &[u64]) -> Result<Vec<Value>, String> {
    decode_reply_showing(body, body, sent)
}

/// What the old job wrote for a reply: its OUTPUT_FILE lines, or its error.
pub fn output_lines(body: &[u8], sent: &[u64]) -> Result<String, String> {
    let values = decode_reply(body, sent)?;
    let mut lines = String::new();
    for (index, value) in sent.iter().zip(&values) {
        push_output_line(&mut lines, *index, value);
    }
    Ok(lines)
}

/// `decode_reply`, with error messages quoting `shown` instead of `body`:
/// the body with anything that must not reach a log line taken out.
pub fn decode_reply_showing(body: &[u8], shown: &[u8], sent: &[u64]) -> Result<Vec<Value>, String> {
    let text = std::str::from_utf8(body)
        .map_err(|e| format!("reply is not valid UTF-8 (at byte {})", e.valid_up_to()))?;
    if nesting_exceeds(text.as_bytes(), MAX_NESTING) {
        return Err(format!("reply nests JSON deeper than {MAX_NESTING} levels"));
    }
    let top: TopLevel =
        json::from_str(text).map_err(|_| format!("reply is not valid JSON: {}", preview(shown)))?;
    let data = match top {
        TopLevel::Other(kind) => {
            return Err(format!(
                "reply is {kind}, expected an object with a \"data\" key"
            ));
        }
        TopLevel::Object {
            duplicate: Some(key),
            ..
        } => return Err(format!("reply has the key {key:?} more than once")),
        TopLevel::Object { data: None, .. } => {
            return Err(format!("reply has no \"data\" key: {}", preview(shown)));
        }
        TopLevel::Object {
            data: Some(data), ..
        } => data,
    };
    let rows = match data {
        Value::Array(rows) => rows,
        other => {
            return Err(format!(
                "\"data\" is {}, expected an array of rows",
                kind_of(&other)
            ));
        }
    };

    let mut values: Vec<Option<Value>> = Vec::new();
    values.resize_with(sent.len(), || None);
    for (position, row) in rows.into_iter().enumerate() {
        let Value::Array(row) = row else {
            return Err(format!(
                "row {position} of the reply is {}, expected [index, value]",
                kind_of(&row)
            ));
        };
        if row.len() < 2 {
            return Err(format!(
                "row {position} of the reply has {} element(s), expected [index, value]",
                row.len()
            ));
        }
        let index = match &row[0] {
            Value::Number(Number::U64(index)) => *index,
            // Only a literal with a minus sign parses as I64, "-0" included.
            Value::Number(Number::I64(index)) => {
                return Err(format!(
                    "row {position} of the reply has negative index -{}",
                    index.unsigned_abs()
                ));
            }
            // Not shown: 0.0 and 1e0 would print as 0 and 1.
            Value::Number(Number::F64(_)) => {
                return Err(format!(
                    "row {position} of the reply has an index that is not a whole number \
                     from 0 to 18446744073709551615 (it has a fraction or an exponent, or \
                     is too large); expected the index as sent, e.g. 0"
                ));
            }
            other => {
                return Err(format!(
                    "row {position} of the reply has {} as its index, expected a number",
                    kind_of(other)
                ));
            }
        };
        let Ok(slot) = sent.binary_search(&index) else {
            return Err(format!(
                "reply has a row for index {index}, which this request did not send"
            ));
        };
        if values[slot].is_some() {
            return Err(format!("reply answers index {index} more than once"));
        }
        values[slot] = row.into_iter().nth(1);
    }
    let missing: Vec<String> = sent
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_none())
        .map(|(index, _)| index.to_string())
        .collect();
    if !missing.is_empty() {
        let shown = missing
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = if missing.len() > 5 { ", ..." } else { "" };
        return Err(format!(
            "reply has {} row(s) for {} sent; no reply for index {shown}{more}",
            sent.len() - missing.len(),
            sent.len()
        ));
    }
    Ok(values.into_iter().flatten().collect())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The top level of a reply. Parsed by hand rather than as a `Value` so that a
/// repeated key is seen instead of silently overwritten, and so that a reply
/// of the wrong type is told apart from one that is not JSON at all.
enum TopLevel {
    Object {
        data: Option<Value>,
        duplicate: Option<String>,
    },
    Other(&'static str),
}

make_place!(Place);

impl Deserialize for TopLevel {
    fn begin(out: &mut Option<Self>) -> &mut dyn Visitor {
        Place::new(out)
    }
}

impl Visitor for Place<TopLevel> {
    fn null(&mut self) -> miniserde::Result<()> {
        self.out = Some(TopLevel::Other("null"));
        Ok(())
    }
    fn boolean(&mut self, _: bool) -> miniserde::Result<()> {
        self.out = Some(TopLevel::Other("a boolean"));
        Ok(())
    }
    fn string(&mut self, _: &str) -> miniserde::Result<()> {
        self.out = Some(TopLevel::Other("a string"));
        Ok(())
    }
    fn negative(&mut self, _: i64) -> miniserde::Result<()> {
        self.nonnegative(0)
    }
    fn nonnegative(&mut self, _: u64) -> miniserde::Result<()> {
        self.out = Some(TopLevel::Other("a number"));
        Ok(())
    }
    fn float(&mut self, _: f64) -> miniserde::Result<()> {
        self.nonnegative(0)
    }
    fn seq(&mut self) -> miniserde::Result<Box<dyn Seq + '_>> {
        self.out = Some(TopLevel::Other("an array"));
        Ok(Box::new(IgnoredSeq))
    }
    fn map(&mut self) -> miniserde::Result<Box<dyn Map + '_>> {
        Ok(Box::new(ObjectBuilder {
            out: &mut self.out,
            data: None,
            keys: Vec::new(),
            duplicate: None,
        }))
    }
}

struct IgnoredSeq;

impl Seq for IgnoredSeq {
    fn element(&mut self) -> miniserde::Result<&mut dyn Visitor> {
        Ok(<dyn Visitor>::ignore())
    }
    fn finish(&mut self) -> miniserde::Result<()> {
        Ok(())
    }
}

struct ObjectBuilder<'a> {
    out: &'a mut Option<TopLevel>,
    data: Option<Value>,
    keys: Vec<String>,
    duplicate: Option<String>,
}

impl Map for ObjectBuilder<'_> {
    fn key(&mut self, key: &str) -> miniserde::Result<&mut dyn Visitor> {
        if self.keys.iter().any(|seen| seen == key) {
            self.duplicate.get_or_insert_with(|| key.to_owned());
        } else {
            self.keys.push(key.to_owned());
        }
        if key == "data" {
            Ok(Deserialize::begin(&mut self.data))
        } else {
            Ok(<dyn Visitor>::ignore())
        }
    }
    fn finish(&mut self) -> miniserde::Result<()> {
        *self.out = Some(TopLevel::Object {
            data: self.data.take(),
            duplicate: self.duplicate.take(),
        });
        Ok(())
    }
}
