//! A strict JSON scanner over bytes: it accepts exactly what miniserde's
//! parser accepts, builds no tree and allocates nothing, and reports where
//! each value lies, how deep it nests, and whether its bytes are already what
//! miniserde prints for it (so that they can be copied instead of re-encoded).
//!
//! What miniserde prints, compared with what it reads: no white space;
//! strings with only `\"`, `\\`, `\b`, `\t`, `\n`, `\f`, `\r` and lowercase
//! `\u00xx` escapes (for the other control characters), everything else
//! literal; integers as written, except `-0`, which prints as `0`; floats in
//! its own shortest form; object keys in byte order, the last of repeated
//! keys winning.
//!
//! Left out on purpose: decoding. A string keeps its escapes and a number
//! its digits, since callers either copy the bytes or re-encode them
//! (`compact`, for the values that are not compact), and neither needs a
//! decoded copy. Nor is UTF-8 checked here: callers check a whole body or
//! line once, before scanning it.

pub mod compact;
pub mod swar;

use miniserde::json;

/// The kind of a JSON value, as error messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    pub fn described(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

/// Why scanning stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// Not JSON. The scanner's position says where it stopped: at the end
    /// of the input when the input ends before its value does.
    Syntax,
    /// Arrays and objects nest deeper than the scanner's limit.
    TooDeep,
    /// `bytes[start..end]` is a number too large for a 64-bit float, which
    /// JSON allows and miniserde cannot hold (`1e400`).
    OutOfRange { start: usize, end: usize },
    /// The `\uXXXX` escape at `at` is half of a UTF-16 surrogate pair,
    /// without its other half: JSON allows it, and no UTF-8 text can carry it.
    LoneSurrogate { at: usize },
}

/// One scanned value: `bytes[start..end]`, no white space around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
    /// The bytes are exactly what miniserde prints for the value they hold.
    pub compact: bool,
}

/// A number as miniserde's parser classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Number {
    /// An integer without a minus sign that fits in a u64.
    Whole(u64),
    /// An integer with a minus sign (`-0` included) whose magnitude fits in
    /// an i64: the magnitude.
    Negative(u64),
    /// A fraction, an exponent, or an integer too large for the above.
    Float,
}

/// Bytes that end a run of literal string characters.
static STRING_STOP: [bool; 256] = {
    let mut stop = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        stop[byte] = true;
        byte += 1;
    }
    stop[b'"' as usize] = true;
    stop[b'\\' as usize] = true;
    stop
};

/// The position of the first byte at or after `at` that ends a run of
/// literal string characters, or the end of `bytes`: eight bytes at a time
/// while a whole word is left, then byte by byte.
#[inline]
fn skip_literal_run(bytes: &[u8], mut at: usize) -> usize {
    while let Some(word) = swar::word(bytes, at) {
        let stops = swar::string_stops(word);
        if stops != 0 {
            return at + swar::first(stops);
        }
        at += 8;
    }
    while at < bytes.len() && !STRING_STOP[usize::from(bytes[at])] {
        at += 1;
    }
    at
}

pub struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
    max_depth: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(bytes: &'a [u8], max_depth: usize) -> Scanner<'a> {
        Scanner {
            bytes,
            pos: 0,
            depth: 0,
            max_depth,
        }
    }

    // The few helpers every byte goes through are inlined by force: the
    // release build optimises for size, and calls cost more than they do.
    #[inline(always)]
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The whole input.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    #[inline(always)]
    pub fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline(always)]
    fn bump(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    #[inline(always)]
    fn eat(&mut self, byte: u8) -> bool {
        let matched = self.peek() == Some(byte);
        self.pos += usize::from(matched);
        matched
    }

    /// Skips JSON white space; whether there was any.
    #[inline(always)]
    pub fn skip_whitespace(&mut self) -> bool {
        let start = self.pos;
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
        self.pos != start
    }

    /// White space, then the end of the input.
    pub fn finish(&mut self) -> Result<(), ScanError> {
        self.skip_whitespace();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(ScanError::Syntax),
        }
    }

    /// Enters the array or object whose opening bracket is next; whether it
    /// has any element (when not, its closing bracket is consumed too).
    pub fn begin(&mut self) -> Result<bool, ScanError> {
        let close = match self.bump() {
            Some(b'[') => b']',
            Some(b'{') => b'}',
            _ => return Err(ScanError::Syntax),
        };
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(ScanError::TooDeep);
        }
        self.skip_whitespace();
        if self.eat(close) {
            self.depth -= 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// After an element of the array or object closed by `close`: whether
    /// another element follows (the comma is consumed) or the end (the
    /// bracket is consumed).
    pub fn more(&mut self, close: u8) -> Result<bool, ScanError> {
        self.skip_whitespace();
        match self.bump() {
            Some(b',') => {
                self.skip_whitespace();
                Ok(true)
            }
            Some(byte) if byte == close => {
                self.depth -= 1;
                Ok(false)
            }
            _ => Err(ScanError::Syntax),
        }
    }

    /// At `[`, the common row of a reply, `[index,"text"]` exactly: no white
    /// space, a whole index of at most 19 digits, a string with no escape
    /// but the short ones. Its index and value, scanned in one tight pass;
    /// None (and nothing consumed) for any other row, left to `value`.
    pub fn plain_row(&mut self) -> Option<(u64, Scanned)> {
        let bytes = self.bytes;
        if self.depth >= self.max_depth {
            return None;
        }
        let mut at = self.pos + 1;
        let index = match bytes.get(at) {
            Some(b'0') => {
                at += 1;
                0
            }
            Some(b'1'..=b'9') => match swar::word(bytes, at).map(swar::digits) {
                // Up to seven digits, all at once.
                Some((count @ 1..=7, value)) => {
                    at += count;
                    value
                }
                _ => {
                    let last = at + 19;
                    let mut index = 0;
                    while let Some(&digit @ b'0'..=b'9') = bytes.get(at) {
                        if at == last {
                            return None;
                        }
                        index = index * 10 + u64::from(digit - b'0');
                        at += 1;
                    }
                    index
                }
            },
            _ => return None,
        };
        if bytes.get(at) != Some(&b',') || bytes.get(at + 1) != Some(&b'"') {
            return None;
        }
        let start = at + 1;
        at += 2;
        loop {
            at = skip_literal_run(bytes, at);
            match bytes.get(at) {
                Some(b'"') => break,
                Some(b'\\') => match bytes.get(at + 1) {
                    Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't') => at += 2,
                    _ => return None,
                },
                _ => return None,
            }
        }
        let end = at + 1;
        if bytes.get(end) != Some(&b']') {
            return None;
        }
        self.pos = end + 1;
        let value = Scanned {
            kind: Kind::String,
            start,
            end,
            compact: true,
        };
        Some((index, value))
    }

    /// An object key and its colon; the key's bytes, quotes included, and
    /// whether it has escapes.
    pub fn key(&mut self) -> Result<(&'a [u8], bool), ScanError> {
        if self.peek() != Some(b'"') {
            return Err(ScanError::Syntax);
        }
        let start = self.pos;
        let (escaped, _) = self.string()?;
        let key = &self.bytes[start..self.pos];
        self.skip_whitespace();
        if !self.eat(b':') {
            return Err(ScanError::Syntax);
        }
        self.skip_whitespace();
        Ok((key, escaped))
    }

    /// The next value, after any white space.
    pub fn value(&mut self) -> Result<Scanned, ScanError> {
        self.skip_whitespace();
        let start = self.pos;
        let (kind, compact) = match self.peek() {
            Some(b'"') => (Kind::String, self.string()?.1),
            Some(b'-' | b'0'..=b'9') => (Kind::Number, self.number()?.1),
            Some(b'[') => (Kind::Array, self.array()?),
            Some(b'{') => (Kind::Object, self.object()?),
            Some(b'n') => (Kind::Null, self.word(b"null")?),
            Some(b't') => (Kind::Bool, self.word(b"true")?),
            Some(b'f') => (Kind::Bool, self.word(b"false")?),
            _ => return Err(ScanError::Syntax),
        };
        Ok(Scanned {
            kind,
            start,
            end: self.pos,
            compact,
        })
    }

    fn word(&mut self, word: &[u8]) -> Result<bool, ScanError> {
        let rest = &self.bytes[self.pos..];
        if rest.starts_with(word) {
            self.pos += word.len();
            Ok(true)
        } else {
            // Input that ends inside the word ends early, like any other
            // value cut short: the position says so.
            if word.starts_with(rest) {
                self.pos = self.bytes.len();
            }
            Err(ScanError::Syntax)
        }
    }

    fn array(&mut self) -> Result<bool, ScanError> {
        let opened_at = self.pos;
        if !self.begin()? {
            return Ok(self.pos == opened_at + 2);
        }
        let mut compact = self.bytes[self.pos - 1] == b'[';
        loop {
            compact &= self.value()?.compact;
            let before = self.pos;
            let more = self.more(b']')?;
            compact &= self.pos == before + 1;
            if !more {
                return Ok(compact);
            }
        }
    }

    fn object(&mut self) -> Result<bool, ScanError> {
        let opened_at = self.pos;
        if !self.begin()? {
            return Ok(self.pos == opened_at + 2);
        }
        let mut compact = self.bytes[self.pos - 1] == b'{';
        // miniserde prints keys sorted and once each; keys with escapes are
        // not compared, and the object is simply re-encoded.
        let mut previous: Option<&[u8]> = None;
        loop {
            let before = self.pos;
            let (key, escaped) = self.key()?;
            let name = &key[1..key.len() - 1];
            compact &= !escaped
                && self.pos == before + key.len() + 1
                && previous.is_none_or(|previous| previous < name);
            previous = Some(name);
            compact &= self.value()?.compact;
            let before = self.pos;
            let more = self.more(b'}')?;
            compact &= self.pos == before + 1;
            if !more {
                return Ok(compact);
            }
        }
    }

    /// A string, at its opening quote: whether it has escapes, and whether it
    /// is compact.
    fn string(&mut self) -> Result<(bool, bool), ScanError> {
        let bytes = self.bytes;
        let mut escaped = false;
        let mut compact = true;
        let mut pos = self.pos + 1;
        loop {
            pos = skip_literal_run(bytes, pos);
            self.pos = pos;
            match self.bump() {
                Some(b'"') => return Ok((escaped, compact)),
                Some(b'\\') => {
                    escaped = true;
                    compact &= self.escape()?;
                    pos = self.pos;
                }
                // A control character, or the end of the input.
                _ => return Err(ScanError::Syntax),
            }
        }
    }

    /// An escape after its backslash; whether miniserde writes the same.
    fn escape(&mut self) -> Result<bool, ScanError> {
        match self.bump() {
            Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(true),
            Some(b'/') => Ok(false),
            Some(b'u') => {
                let digits = self.pos;
                let lone = Err(ScanError::LoneSurrogate { at: digits - 2 });
                match self.hex4()? {
                    0xDC00..=0xDFFF => lone,
                    // Outside the basic plane: a surrogate pair, which
                    // miniserde writes as the character itself.
                    0xD800..=0xDBFF => {
                        match (self.peek(), self.bytes.get(self.pos + 1)) {
                            (Some(b'\\'), Some(b'u')) => self.pos += 2,
                            // The input ends here: not yet lone, but cut.
                            (None, _) | (Some(b'\\'), None) => {
                                self.pos = self.bytes.len();
                                return Err(ScanError::Syntax);
                            }
                            _ => return lone,
                        }
                        match self.hex4()? {
                            0xDC00..=0xDFFF => Ok(false),
                            _ => lone,
                        }
                    }
                    code => Ok(code < 0x20
                        && !matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)
                        && self.bytes[digits..digits + 4]
                            .iter()
                            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))),
                }
            }
            _ => Err(ScanError::Syntax),
        }
    }

    fn hex4(&mut self) -> Result<u16, ScanError> {
        let mut code = 0u16;
        for _ in 0..4 {
            let digit = match self.bump() {
                Some(byte @ b'0'..=b'9') => byte - b'0',
                Some(byte @ b'a'..=b'f') => byte - b'a' + 10,
                Some(byte @ b'A'..=b'F') => byte - b'A' + 10,
                _ => return Err(ScanError::Syntax),
            };
            code = code * 16 + u16::from(digit);
        }
        Ok(code)
    }

    /// A number, at its first character: its class, and whether it is
    /// compact.
    pub fn number(&mut self) -> Result<(Number, bool), ScanError> {
        let (number, compact, _) = self.number_and_value()?;
        Ok((number, compact))
    }

    /// `number`, and for a float its value, as miniserde reads it.
    fn number_and_value(&mut self) -> Result<(Number, bool, f64), ScanError> {
        let start = self.pos;
        let negative = self.eat(b'-');
        let mut magnitude = 0u64;
        let mut too_large = false;
        match self.bump() {
            // One leading zero at most.
            Some(b'0') if matches!(self.peek(), Some(b'0'..=b'9')) => {
                return Err(ScanError::Syntax);
            }
            Some(b'0') => {}
            Some(b'1'..=b'9') => {
                let digits_start = self.pos - 1;
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
                // 19 digits always fit in a u64; 20 may, more never do.
                let digits = &self.bytes[digits_start..self.pos];
                for (i, digit) in digits.iter().enumerate() {
                    let digit = u64::from(digit - b'0');
                    if i < 19 {
                        magnitude = magnitude * 10 + digit;
                    } else {
                        match magnitude.checked_mul(10).and_then(|m| m.checked_add(digit)) {
                            Some(larger) if !too_large => magnitude = larger,
                            _ => too_large = true,
                        }
                    }
                }
            }
            _ => return Err(ScanError::Syntax),
        }
        let mut float = too_large;
        if self.eat(b'.') {
            float = true;
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            float = true;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            self.digits()?;
        }
        // Below i64::MIN an integer is a float to miniserde.
        if float || negative && magnitude > 1 << 63 {
            // The grammar is checked above; what miniserde refuses of such a
            // rare number is a float that overflows to infinity (1e400).
            let token = std::str::from_utf8(&self.bytes[start..self.pos]);
            return match token.map(json::from_str::<f64>) {
                Ok(Ok(value)) => Ok((Number::Float, false, value)),
                _ => Err(ScanError::OutOfRange {
                    start,
                    end: self.pos,
                }),
            };
        }
        Ok(match negative {
            false => (Number::Whole(magnitude), true, 0.0),
            true => (Number::Negative(magnitude), magnitude != 0, 0.0),
        })
    }

    /// One or more digits.
    fn digits(&mut self) -> Result<(), ScanError> {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(ScanError::Syntax);
        }
        Ok(())
    }
}

/// Whether `[` and `{` nest deeper than `max` outside strings, in any bytes,
/// JSON or not: which of two faults a broken reply gets named by.
pub fn nesting_exceeds(json: &[u8], max: usize) -> bool {
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

/// The whole of `bytes` as one JSON value.
pub fn scan_document(bytes: &[u8], max_depth: usize) -> Result<Scanned, ScanError> {
    let mut scanner = Scanner::new(bytes, max_depth);
    let value = scanner.value()?;
    scanner.finish()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use miniserde::json::Value;

    fn scan(text: &str) -> Result<Scanned, ScanError> {
        scan_document(text.as_bytes(), 128)
    }

    /// What miniserde makes of `text`: rejected, or printed back.
    fn miniserde(text: &str) -> Option<String> {
        json::from_str::<Value>(text)
            .ok()
            .map(|value| json::to_string(&value))
    }

    #[test]
    fn accepts_and_refuses_what_miniserde_does() {
        let cases = [
            "0",
            "-0",
            "12",
            "-12",
            "1.5",
            "1e3",
            "1E+3",
            "1e-3",
            "0.0",
            "01",
            "-",
            "-a",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "1e400",
            "-1e400",
            "1e-400",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "null",
            "nul",
            "nulls",
            "true",
            "false",
            "tru",
            "\"\"",
            "\"a\"",
            "\"\\u0041\"",
            "\"\\u00e9\"",
            "\"\\ud83e\\udd80\"",
            "\"\\ud83e\"",
            "\"\\udd80\"",
            "\"\\ud83e\\u0041\"",
            "\"\\x\"",
            "\"\\/\"",
            "\"\t\"",
            "\"a",
            "[]",
            "[ ]",
            "[1,]",
            "[,1]",
            "[1 2]",
            "[1}",
            "{}",
            "{ }",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "{\"a\":1",
            " 1 ",
            "1 2",
            "",
            " ",
            "[[[]]]",
            "{\"b\":1,\"a\":2}",
            "{\"a\":1,\"a\":2}",
            "\"\\u001F\"",
            "\"\\u001f\"",
        ];
        for text in cases {
            assert_eq!(
                scan(text).is_ok(),
                miniserde(text).is_some(),
                "{text:?}: {:?}",
                scan(text)
            );
        }
    }

    #[test]
    fn compact_means_miniserde_prints_the_same_bytes() {
        let compact = [
            "0",
            "-12",
            "18446744073709551615",
            "-9223372036854775808",
            "\"plain é 🦀\"",
            "\"\\\" \\\\ \\n \\t \\b \\f \\r \\u0000 \\u001f\"",
            "[1,\"a\",[null,true,false],{}]",
            "{\"a\":1,\"b\":{\"c\":[]}}",
            "{\"a\":1,\"a \":2}",
        ];
        for text in compact {
            assert!(scan(text).unwrap().compact, "{text}");
            assert_eq!(miniserde(text).as_deref(), Some(text));
        }
        // Floats are always re-encoded, though "1.0" prints as itself.
        for text in ["1.0", "1e2", "[[1.5]]", "{\"a\":0.5}"] {
            assert!(!scan(text).unwrap().compact, "{text}");
        }
        let not_compact = [
            "-0",
            "1e2",
            "18446744073709551616",
            "-9223372036854775809",
            "\"\\/\"",
            "\"\\u0041\"",
            "\"\\u001F\"",
            "\"\\u000a\"",
            "\"\\ud83e\\udd80\"",
            "[1, 2]",
            "[ 1]",
            "[1 ]",
            "[ ]",
            "{ }",
            "{\"a\": 1}",
            "{\"b\":1,\"a\":2}",
            "{\"a\":1,\"a\":2}",
            "{\"\\u0061\":1}",
            "{\"a \":1,\"a\":2}",
        ];
        for text in not_compact {
            assert!(!scan(text).unwrap().compact, "{text}");
            assert_ne!(miniserde(text).as_deref(), Some(text));
        }
    }

    #[test]
    fn nesting_is_limited() {
        let at_limit = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(scan(&at_limit).is_ok());
        let over = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert_eq!(scan(&over), Err(ScanError::TooDeep));
        assert!(nesting_exceeds(over.as_bytes(), 128));
        assert!(!nesting_exceeds(at_limit.as_bytes(), 128));
    }

    #[test]
    fn numbers_are_classified_as_miniserde_does() {
        let class = |text: &str| Scanner::new(text.as_bytes(), 1).number().map(|n| n.0);
        assert_eq!(class("7"), Ok(Number::Whole(7)));
        assert_eq!(class("-0"), Ok(Number::Negative(0)));
        assert_eq!(class("-9223372036854775808"), Ok(Number::Negative(1 << 63)));
        assert_eq!(class("-9223372036854775809"), Ok(Number::Float));
        assert_eq!(class("18446744073709551616"), Ok(Number::Float));
        assert_eq!(class("1e0"), Ok(Number::Float));
        assert_eq!(
            class("1e400"),
            Err(ScanError::OutOfRange { start: 0, end: 5 })
        );
        assert_eq!(
            class("-1e400"),
            Err(ScanError::OutOfRange { start: 0, end: 6 })
        );
    }
}
