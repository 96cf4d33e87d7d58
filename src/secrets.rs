//! What no log line may show: the forms in which the service URL's password
//! can come back, and their removal from text.
//!
//! A password can reach a log line as written in `SERVICE_URL`,
//! percent-decoded, escaped as a log line or `{:?}` quotes it, or inside the
//! Basic authorization token the client sends (a service or proxy may echo
//! request headers in an error body). `main` installs the forms first of
//! all, from the URL as it is set, before anything can fail on it; from then
//! on the logger takes them out of every line, whichever crate logs it. Text
//! from the service that goes into an error message is redacted where it is
//! quoted.
//!
//! Left out: passwords shorter than four characters are not searched for on
//! their own, as a one-letter password would blank out that letter in every
//! message; their Basic token still is.

use std::borrow::Cow;
use std::sync::OnceLock;

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use percent_encoding::percent_decode_str;

use crate::logging;

const SHORTEST_REDACTED_PASSWORD: usize = 4;

/// The forms of one password, each replaced by `***` in text.
#[derive(Clone, Default, PartialEq)]
pub struct Secrets {
    forms: Vec<Vec<u8>>,
}

impl Secrets {
    /// The forms of every password `url` may hold, found before the URL is
    /// checked, so that no message about it can show one. Where the URL is
    /// ambiguous, every reading counts: the `user:password` before the
    /// authority's last `@`, and the text before each `@` that follows the
    /// authority (a password with a raw `/`, `?` or `#` ends the authority
    /// early). For a URL the job accepts, these are the forms of its one
    /// password.
    pub fn of_url(url: &str) -> Secrets {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let mut secrets = Secrets::default();
        if let Some((userinfo, _)) = rest[..authority_end].rsplit_once('@') {
            secrets.add_userinfo(userinfo);
        }
        let after = &rest[authority_end..];
        for (at, _) in after.match_indices('@') {
            secrets.add_userinfo(&rest[..authority_end + at]);
        }
        secrets
    }

    /// The forms of the password in a URL's `user:password` part; none when
    /// it has no password. The tests' way in: the job finds them with
    /// `of_url`.
    #[cfg(test)]
    pub fn of_userinfo(userinfo: &str) -> Secrets {
        let mut secrets = Secrets::default();
        secrets.add_userinfo(userinfo);
        secrets
    }

    fn add_userinfo(&mut self, userinfo: &str) {
        let Some((_, password)) = userinfo.split_once(':') else {
            return;
        };
        // The Basic token the client sends (`basic_token`), and the one a
        // client that does not percent-decode would send.
        self.add(basic_token(userinfo).into_bytes());
        self.add(BASE64_STANDARD.encode(userinfo).into_bytes());
        if password.len() < SHORTEST_REDACTED_PASSWORD {
            return;
        }
        let decoded: Vec<u8> = percent_decode_str(password).collect();
        let decoded = String::from_utf8_lossy(&decoded);
        // As log lines escape it (`logging`), and as `{:?}` quotes it; the
        // quoted forms without their quotes.
        let quoted = logging::quoted(&decoded);
        let debug = format!("{decoded:?}");
        for form in [
            password,
            &*decoded,
            &*logging::escaped(&decoded),
            &quoted[1..quoted.len() - 1],
            &debug[1..debug.len() - 1],
        ] {
            self.add(form.as_bytes().to_vec());
        }
    }

    fn add(&mut self, form: Vec<u8>) {
        if !form.is_empty() && !self.forms.contains(&form) {
            // Longest first, so that a form inside a longer one cannot
            // leave pieces of the longer behind.
            let at = self
                .forms
                .iter()
                .take_while(|f| f.len() >= form.len())
                .count();
            self.forms.insert(at, form);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// The first `head` bytes of `text`, and as many more as the longest
    /// form (one may start among them), with every form replaced: what a
    /// message quotes of a body, without copying a body that may be a
    /// gibibyte once per form.
    pub fn redact_head<'a>(&self, text: &'a [u8], head: usize) -> Cow<'a, [u8]> {
        let longest = self.forms.iter().map(Vec::len).max().unwrap_or(0);
        self.redact(&text[..text.len().min(head.saturating_add(longest))])
    }

    /// `text` with every form replaced by `***`; borrowed when there was
    /// nothing to replace.
    pub fn redact<'a>(&self, text: &'a [u8]) -> Cow<'a, [u8]> {
        let mut text = Cow::Borrowed(text);
        for secret in &self.forms {
            let Some(first) = find(&text, secret) else {
                continue;
            };
            let mut out = text[..first].to_vec();
            let mut rest = &text[first..];
            while let Some(at) = find(rest, secret) {
                out.extend_from_slice(&rest[..at]);
                out.extend_from_slice(b"***");
                rest = &rest[at + secret.len()..];
            }
            out.extend_from_slice(rest);
            text = Cow::Owned(out);
        }
        text
    }

    /// `redact` for a message.
    pub fn redact_str(&self, text: String) -> String {
        match self.redact(text.as_bytes()) {
            Cow::Borrowed(_) => text,
            Cow::Owned(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

/// Forms are never printed, not even by `{:?}`.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} forms)", self.forms.len())
    }
}

/// Where `needle` first occurs in `haystack`, in one pass over it
/// (Knuth-Morris-Pratt): a window-by-window comparison costs up to
/// `needle.len()` steps a byte, and the text searched can be a whole reply
/// made to nearly match the password everywhere.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    // For each prefix of the needle, how long a proper prefix of it is
    // also its suffix: where a match can go on after a mismatch.
    let mut fallback = vec![0; needle.len()];
    let mut matched = 0;
    for (i, &byte) in needle.iter().enumerate().skip(1) {
        while matched > 0 && byte != needle[matched] {
            matched = fallback[matched - 1];
        }
        if byte == needle[matched] {
            matched += 1;
        }
        fallback[i] = matched;
    }
    let mut matched = 0;
    for (i, &byte) in haystack.iter().enumerate() {
        while matched > 0 && byte != needle[matched] {
            matched = fallback[matched - 1];
        }
        if byte == needle[matched] {
            matched += 1;
            if matched == needle.len() {
                return Some(i + 1 - matched);
            }
        }
    }
    None
}

/// The token of `Authorization: Basic` for a URL's `user:password`, as
/// curl and browsers send it: percent-decoded, so that a password written
/// with `%2F` for a `/` arrives as the `/` it stands for.
pub fn basic_token(userinfo: &str) -> String {
    let decoded: Vec<u8> = percent_decode_str(userinfo).collect();
    BASE64_STANDARD.encode(decoded)
}

static HIDDEN_IN_LOGS: OnceLock<Secrets> = OnceLock::new();

/// From now on every log line has `secrets` taken out. Only the first call
/// counts.
pub fn hide_in_logs(secrets: &Secrets) {
    let _ = HIDDEN_IN_LOGS.set(secrets.clone());
}

/// What the logger must take out of each line, if anything.
pub fn hidden_in_logs() -> Option<&'static Secrets> {
    HIDDEN_IN_LOGS.get().filter(|secrets| !secrets.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_of_a_body_is_redacted_as_far_as_a_form_it_starts_reaches() {
        let secrets = Secrets::of_userinfo("bob:s3cret-pass");
        let body = [&b"x".repeat(198)[..], b"s3cret-pass and more"].concat();
        let head = secrets.redact_head(&body, 200);
        // The form that starts at 198 is taken out whole; the head goes as
        // far as the longest form past 200 (the Basic token), no further.
        assert!(head.starts_with(&[&b"x".repeat(198)[..], b"***"].concat()));
        assert!(!head.windows(6).any(|w| w == b"s3cret"));
        assert!(head.len() < body.len());
        assert_eq!(&*secrets.redact_head(b"short", 200), b"short");
    }

    #[test]
    fn every_form_of_the_password_is_redacted() {
        let secrets = Secrets::of_userinfo("bob:s3cr%22et");
        // base64("bob:s3cr%22et"), as the client sends it.
        assert_eq!(
            BASE64_STANDARD.encode("bob:s3cr%22et"),
            "Ym9iOnMzY3IlMjJldA=="
        );
        let echoed = br#"Basic Ym9iOnMzY3IlMjJldA== s3cr%22et s3cr"et s3cr\"et"#;
        assert_eq!(
            &*secrets.redact(echoed),
            b"Basic *** *** *** ***".as_slice()
        );
        assert!(matches!(secrets.redact(b"nothing here"), Cow::Borrowed(_)));
        assert_eq!(
            secrets.redact_str("HTTP 401: s3cr%22et".into()),
            "HTTP 401: ***"
        );
        assert!(!format!("{secrets:?}").contains("s3cr"));
    }

    #[test]
    fn every_reading_of_a_url_counts_before_it_is_checked() {
        let secrets = Secrets::of_url("http://alice:s3cr/et@host/echo?mail=a@b");
        let token = BASE64_STANDARD.encode("alice:s3cr/et");
        let line = format!("has port \"s3cr/et\" Basic {token}");
        assert_eq!(secrets.redact_str(line), "has port \"***\" Basic ***");
        // Escaped as a log line shows it, and sent decoded.
        let secrets = Secrets::of_url("http://bob:pa%5Css%0Aword@h/echo");
        let line = r"pa\\ss\nword Ym9iOnBhXHNzCndvcmQ=".to_owned();
        assert_eq!(basic_token("bob:pa%5Css%0Aword"), "Ym9iOnBhXHNzCndvcmQ=");
        assert_eq!(secrets.redact_str(line), "*** ***");
        for plain in [
            "http://echo:8000/echo",
            "http://alice/x@host/echo",
            "not a URL",
        ] {
            assert!(Secrets::of_url(plain).is_empty(), "{plain}");
        }
    }

    #[test]
    fn find_agrees_with_comparing_every_window() {
        let naive = |haystack: &[u8], needle: &[u8]| {
            haystack
                .windows(needle.len())
                .position(|window| window == needle)
        };
        // Needles that overlap themselves, where a search must fall back
        // to a shorter match rather than start again.
        let needles: [&[u8]; 7] = [b"a", b"aab", b"abab", b"abaab", b"aaaa", b"abcabd", b"ba"];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let haystack: Vec<u8> = (0..state % 24)
                .map(|i| b"abcd"[((state >> (2 * i + 8)) % 3) as usize])
                .collect();
            for needle in needles {
                assert_eq!(
                    find(&haystack, needle),
                    naive(&haystack, needle),
                    "{:?} in {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&haystack)
                );
            }
        }
        assert_eq!(find(b"aaaaaaab", b"aaab"), Some(4));
        assert_eq!(find(b"anything", b""), None);
    }

    #[test]
    fn no_password_nothing_to_hide_and_a_short_one_only_as_its_token() {
        let none = Secrets::of_userinfo("bob");
        assert!(none.is_empty());
        assert!(matches!(none.redact(b"x"), Cow::Borrowed(_)));
        let short = Secrets::of_userinfo("bob:pw");
        assert_eq!(&*short.redact(b"pw Ym9iOnB3"), b"pw ***".as_slice());
    }
}
