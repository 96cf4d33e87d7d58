//! Re-encoding a JSON value as the compact JSON that miniserde prints for
//! it (see `json`), for the reply values whose bytes are not compact
//! already. One pass over the value as the scanner reads it, building no
//! tree, so that time and memory follow the value's bytes however it nests
//! or however many members its objects have: a tree of miniserde values
//! costs an allocation for each array, object and key in it.
//!
//! What is not copied goes through miniserde itself, so that it comes out
//! as miniserde prints it: strings with escapes are decoded by its parser
//! (and escaped again as it escapes them, by `request`'s encoder), and
//! numbers with a fraction or an exponent are read and printed by it.
//! Object members are put in miniserde's order, by key, the last of equal
//! keys alone, only when they do not come in that order already: they are
//! written as they come and then moved, so an object out of order inside
//! others out of order is moved once for each of them, as many times at
//! most as the nesting limit allows.
//!
//! Left out: checking. The value was scanned whole before, so a fault here
//! means that the caller passed something else; it is reported, not
//! repaired.

use std::io::Write;
use std::ops::Range;

use miniserde::json;

use super::{Number, ScanError, Scanner};
use crate::request::push_json_string;

/// An object member, kept until its object is whole: its key, decoded, as
/// a range of a buffer of keys, and where the member is.
#[derive(Debug, Clone)]
pub struct Member {
    pub key: Range<usize>,
    pub place: Range<usize>,
}

/// Sorts `members` by key, byte by byte as miniserde's maps order keys,
/// and members with equal keys by place: in the order they came, as their
/// places rise in that order.
pub fn sort_by_key(members: &mut [Member], keys: &[u8]) {
    members.sort_unstable_by(|a, b| {
        keys[a.key.clone()]
            .cmp(&keys[b.key.clone()])
            .then(a.place.start.cmp(&b.place.start))
    });
}

/// The buffers of a re-encoding, reused from value to value.
#[derive(Debug, Default)]
pub struct Compactor {
    /// The decoded keys of the objects open, outermost first.
    keys: Vec<u8>,
    /// The members of the objects open, so far.
    members: Vec<Member>,
    /// An object's members while they are put in order.
    moved: Vec<u8>,
}

impl Compactor {
    /// Appends to `out` the compact form of `value`, one JSON value that the
    /// scanner accepted with at most `max_depth` levels.
    pub fn push(
        &mut self,
        value: &[u8],
        max_depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ScanError> {
        self.keys.clear();
        self.members.clear();
        let mut scanner = Scanner::new(value, max_depth);
        self.value(&mut scanner, out)?;
        scanner.finish()
    }

    fn value(&mut self, scanner: &mut Scanner, out: &mut Vec<u8>) -> Result<(), ScanError> {
        scanner.skip_whitespace();
        let start = scanner.position();
        match scanner.peek() {
            Some(b'[') => self.array(scanner, out),
            Some(b'{') => self.object(scanner, out),
            Some(b'"') => {
                let (escaped, _) = scanner.string()?;
                push_string(&scanner.bytes()[start..scanner.position()], escaped, out)
            }
            Some(b'-' | b'0'..=b'9') => {
                let (number, compact, value) = scanner.number_and_value()?;
                match number {
                    _ if compact => {
                        out.extend_from_slice(&scanner.bytes()[start..scanner.position()]);
                    }
                    // miniserde's numbers display as it prints them; through
                    // `write!`, a float costs no string of its own.
                    Number::Float => {
                        let _ = write!(out, "{}", json::Number::F64(value));
                    }
                    // `-0`, the one integer that miniserde prints otherwise.
                    Number::Whole(_) | Number::Negative(_) => out.push(b'0'),
                }
                Ok(())
            }
            _ => {
                // null, true or false: as written.
                let word = scanner.value()?;
                out.extend_from_slice(&scanner.bytes()[word.start..word.end]);
                Ok(())
            }
        }
    }

    fn array(&mut self, scanner: &mut Scanner, out: &mut Vec<u8>) -> Result<(), ScanError> {
        out.push(b'[');
        let mut more = scanner.begin()?;
        while more {
            self.value(scanner, out)?;
            more = scanner.more(b']')?;
            if more {
                out.push(b',');
            }
        }
        out.push(b']');
        Ok(())
    }

    /// An object: each member written as it comes, its key kept; then, only
    /// if the keys did not come in order, the members put in order.
    fn object(&mut self, scanner: &mut Scanner, out: &mut Vec<u8>) -> Result<(), ScanError> {
        out.push(b'{');
        let start = out.len();
        let first = self.members.len();
        let keys_start = self.keys.len();
        let mut in_order = true;
        let mut more = scanner.begin()?;
        while more {
            let (key, escaped) = scanner.key()?;
            let place = out.len();
            let key_start = self.keys.len();
            if escaped {
                let decoded = decode(key)?;
                self.keys.extend_from_slice(decoded.as_bytes());
                push_json_string(out, decoded.as_bytes());
            } else {
                self.keys.extend_from_slice(&key[1..key.len() - 1]);
                out.extend_from_slice(key);
            }
            out.push(b':');
            let key = key_start..self.keys.len();
            if let Some(previous) = self.members[first..].last() {
                in_order &= self.keys[previous.key.clone()] < self.keys[key.clone()];
            }
            // An object inside takes its keys and members back off the
            // buffers before it returns, so this object's stay together.
            self.value(scanner, out)?;
            self.members.push(Member {
                key,
                place: place..out.len(),
            });
            more = scanner.more(b'}')?;
            if more {
                out.push(b',');
            }
        }
        if !in_order {
            self.put_in_order(first, start, out);
        }
        self.members.truncate(first);
        self.keys.truncate(keys_start);
        out.push(b'}');
        Ok(())
    }

    /// Rewrites `out[start..]`, the members `self.members[first..]`, in
    /// miniserde's order: by key, and of equal keys the last alone.
    fn put_in_order(&mut self, first: usize, start: usize, out: &mut Vec<u8>) {
        let members = &mut self.members[first..];
        sort_by_key(members, &self.keys);
        self.moved.clear();
        self.moved.extend_from_slice(&out[start..]);
        out.truncate(start);
        for (i, member) in members.iter().enumerate() {
            let key = &self.keys[member.key.clone()];
            let replaced = members
                .get(i + 1)
                .is_some_and(|next| self.keys[next.key.clone()] == *key);
            if replaced {
                continue;
            }
            if out.len() > start {
                out.push(b',');
            }
            out.extend_from_slice(
                &self.moved[member.place.start - start..member.place.end - start],
            );
        }
    }
}

/// A string, quotes included, as miniserde prints it: as written when it
/// has no escape (then it holds nothing that miniserde escapes), else
/// decoded and escaped again.
fn push_string(token: &[u8], escaped: bool, out: &mut Vec<u8>) -> Result<(), ScanError> {
    if escaped {
        push_json_string(out, decode(token)?.as_bytes());
    } else {
        out.extend_from_slice(token);
    }
    Ok(())
}

/// The text of a string with escapes, quotes included, as miniserde
/// decodes it.
pub fn decode(token: &[u8]) -> Result<String, ScanError> {
    let token = std::str::from_utf8(token).map_err(|_| ScanError::Syntax)?;
    json::from_str::<String>(token).map_err(|_| ScanError::Syntax)
}

#[cfg(test)]
mod tests {
    use super::*;
    use miniserde::json::Value;

    /// What miniserde prints for `text`, and what the compactor does.
    fn both(text: &str) -> (String, String) {
        let value: Value = json::from_str(text).unwrap_or_else(|_| panic!("{text:?}"));
        let mut out = Vec::new();
        let result = Compactor::default().push(text.as_bytes(), 128, &mut out);
        assert_eq!(result, Ok(()), "{text:?}");
        (json::to_string(&value), String::from_utf8(out).unwrap())
    }

    #[test]
    fn prints_what_miniserde_prints() {
        let cases = [
            "0",
            "-0",
            "-0.0",
            " 12 ",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551616",
            "1.50",
            "1E+2",
            "2e3",
            "1e-400",
            "123456789.123",
            "true",
            "null",
            r#""plain é 🦀""#,
            r#""\u00e9 \u00E9 \/ \b \f \n \r \t \" \\ \u0000 \u001F \u007f \ud83e\udd80 \u2028""#,
            "[ 1 , [ ] , { } , [[ -0 ]] ]",
            r#"{"b": 1, "a": 2}"#,
            r#"{"a": 1, "a": 2, "b": 3, "a": 4}"#,
            r#"{"a \"": 1, "a": 2, "\u0061": 3, "a ": 4, "é": 5, "\u00e9": 6, "": 7}"#,
            r#"{"z": {"y": [1, {"b": 0, "a": 0}], "x": 2}, "a": {"c": 3, "c": {"e": 1, "d": 2}}}"#,
            r#"[{"b": 1, "a": 2}, {"b": 1, "a": 2}, {"a": 1}]"#,
            r#"{"\"": 0, "\\": 1, "\u0001": 2, "!": 3}"#,
        ];
        for text in cases {
            let (expected, compacted) = both(text);
            assert_eq!(compacted, expected, "{text:?}");
        }
    }

    #[test]
    fn buffers_are_reused_from_value_to_value() {
        let mut compactor = Compactor::default();
        let mut out = Vec::new();
        for text in [
            r#"{"b": {"d": 1, "c": 2}, "a": 0}"#,
            "[1 ]",
            r#"{"b": 1, "a": 2}"#,
        ] {
            compactor.push(text.as_bytes(), 128, &mut out).unwrap();
            out.push(b'\n');
        }
        let expected = "{\"a\":0,\"b\":{\"c\":2,\"d\":1}}\n[1]\n{\"a\":2,\"b\":1}\n";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert!(compactor.members.is_empty() && compactor.keys.is_empty());
    }

    #[test]
    fn what_the_scanner_would_refuse_is_reported() {
        for text in ["[1,]", "{\"a\" 1}", "1 2", "\"\\x\"", "1e400", "[[1]]"] {
            let mut out = Vec::new();
            let result = Compactor::default().push(text.as_bytes(), 1, &mut out);
            assert!(result.is_err(), "{text:?}");
        }
    }
}
