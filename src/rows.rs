//! The Snowflake service-function row format, `{"data": [[index, value], ...]}`:
//! encoding a request and checking a reply. Pure functions, no I/O.
//!
//! What a reply must be: a JSON object with one `data` key, holding exactly one
//! row for each row sent, in any order. A row is an array of at least two
//! elements, a non-negative integer index and then the value; elements past
//! the second are ignored, as Snowflake ignores them. Left out on purpose:
//! duplicate keys are detected at the top level only, where they would make
//! the reply ambiguous; inside a value, the last one wins.

use miniserde::de::{Map, Seq, Visitor};
use miniserde::json::{self, Number, Value};
use miniserde::{Deserialize, make_place};

/// Replies nested deeper than this are refused before parsing, so a small
/// hostile body cannot make the parser build millions of empty arrays.
pub const MAX_NESTING: usize = 128;

/// A row to send: its index (the input line number) and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub index: u64,
    pub text: String,
}

/// The request body for `rows`: `{"data":[[0,"Hello"],...]}`.
pub fn encode_request(rows: &[Row]) -> String {
    let mut body =
        String::with_capacity(16 + rows.iter().map(|r| r.text.len() + 24).sum::<usize>());
    body.push_str("{\"data\":[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        push_index(&mut body, row.index);
        push_string(&mut body, &row.text);
        body.push(']');
    }
    body.push_str("]}");
    body
}

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

/// A reply value as a log line shows it: strings as they are, anything else
/// as compact JSON.
pub fn display_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => json::to_string(other),
    }
}

/// Checks a reply to a request that sent rows with the indices `sent`
/// (ascending), and returns the values in the same order as `sent`.
#[cfg_attr(not(test), allow(dead_code))] // for tests and fuzz/; the client shows less
pub fn decode_reply(body: &[u8], sent: &[u64]) -> Result<Vec<Value>, String> {
    decode_reply_showing(body, body, sent)
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

/// The first 200 bytes of a body, for error messages.
pub fn preview(body: &[u8]) -> String {
    const LIMIT: usize = 200;
    let shown = String::from_utf8_lossy(&body[..body.len().min(LIMIT)]);
    let more = if body.len() > LIMIT { "..." } else { "" };
    format!("{:?}{more}", shown.trim_end())
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

/// Whether `[` and `{` nest deeper than `max` outside strings. Run before the
/// real parse; malformed input is left for the parser to reject.
fn nesting_exceeds(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn decode(body: &str, sent: &[u64]) -> Result<Vec<String>, String> {
        decode_reply(body.as_bytes(), sent).map(|values| values.iter().map(display_value).collect())
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

    #[test]
    fn escapes_round_trip() {
        let nasty = "quote \" backslash \\ tab \t nl \n nul \u{0} bell \u{7} é 日本 🦀 \u{2028}";
        let body = encode_request(&rows(&[nasty]));
        assert!(!body.contains('\n') && !body.contains('\t') && !body.contains('\u{0}'));
        // A reply in the same shape as the request carries the text back.
        assert_eq!(decode(&body, &[0]).unwrap(), vec![nasty.to_string()]);
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
        let mut lines = String::new();
        push_output_line(&mut lines, 0, &values[0]);
        push_output_line(&mut lines, 1, &values[1]);
        assert_eq!(lines, "[0,\"x \\\"y\\\"\"]\n[1,[1,2]]\n");
    }

    #[test]
    fn wrong_replies_name_the_cause() {
        let cases: &[(&str, &[u64], &str)] = &[
            ("", &[0], "not valid JSON"),
            ("Bob said Hello", &[0], "not valid JSON"),
            (r#"{"data":[[0,"x"]"#, &[0], "not valid JSON"),
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
            (r#"{"data":[[0.5,"x"]]}"#, &[0], "not a whole number"),
            (r#"{"data":[[-1,"x"]]}"#, &[0], "negative index -1"),
            (r#"{"data":[[-0,"x"]]}"#, &[0], "negative index -0"),
            (r#"{"data":[[0.0,"x"]]}"#, &[0], "not a whole number from 0"),
            (
                r#"{"data":[[1e0,"x"]]}"#,
                &[1],
                "has a fraction or an exponent",
            ),
            (
                r#"{"data":[[18446744073709551616,"x"]]}"#,
                &[0],
                "or is too large",
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
    use proptest::collection::{btree_map, btree_set, vec};
    use proptest::prelude::*;

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

    fn texts(values: &[Value]) -> Vec<String> {
        values
            .iter()
            .map(|value| match value {
                Value::String(text) => text.clone(),
                other => panic!("not a string: {}", json::to_string(other)),
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

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
