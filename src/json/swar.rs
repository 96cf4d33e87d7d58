//! Eight bytes at a time (SWAR, SIMD within a register), for the scans
//! that every byte of a request, a reply or an input line goes through.
//! Each function returns a word with the high bit of every byte that
//! matches set, and no other bit. Exact per byte (no carry crosses bytes),
//! so the lowest set bit is the first match. Plain integer arithmetic: no
//! `unsafe`, and nothing asked of the CPU beyond 64-bit words.

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGH: u64 = 0x8080_8080_8080_8080;
const ONES: u64 = 0x0101_0101_0101_0101;

#[inline(always)]
pub fn word(bytes: &[u8], at: usize) -> Option<u64> {
    let eight = bytes.get(at..at + 8)?;
    <[u8; 8]>::try_from(eight).ok().map(u64::from_le_bytes)
}

/// How many bytes a mask marks.
#[inline(always)]
pub fn count(mask: u64) -> u64 {
    ((mask >> 7).wrapping_mul(ONES)) >> 56
}

/// Bytes equal to `byte`.
#[inline(always)]
pub fn equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// Bytes below `limit` (at most 0x80).
#[inline(always)]
pub fn below(word: u64, limit: u8) -> u64 {
    !(((word & LOW7) + ONES * u64::from(0x80 - limit)) | word) & HIGH
}

/// Bytes of 0x80 and above: not ASCII.
#[inline(always)]
pub fn high(word: u64) -> u64 {
    word & HIGH
}

/// Bytes a JSON string cannot hold as they are: controls, `"`, `\`.
/// Unlike the others, exact only up to the first of them: bytes after
/// it may be marked too. That is all its callers ask (is there one,
/// where is the first), and it costs half the instructions.
#[inline(always)]
pub fn string_stops(word: u64) -> u64 {
    // One test for two: flipping bit 1 keeps the controls below 0x20
    // and moves `"` (0x22) to 0x20, while no other byte lands below 0x21.
    // A subtraction borrows out of a byte only where that byte matches,
    // so no borrow reaches a byte before the first match.
    let flipped = word ^ (ONES * 0x02);
    let slashes = word ^ (ONES * u64::from(b'\\'));
    (flipped.wrapping_sub(ONES * 0x21) & !flipped | slashes.wrapping_sub(ONES) & !slashes) & HIGH
}

/// The decimal digits `word` starts with (in memory order): how many,
/// from 0 to 8, and their value when 1 to 7.
#[inline(always)]
pub fn digits(word: u64) -> (usize, u64) {
    let values = word ^ (ONES * u64::from(b'0'));
    let others = !below(values, 10) & HIGH;
    let count = match others {
        0 => 8,
        _ => first(others),
    };
    if count == 0 || count == 8 {
        return (count, 0);
    }
    // The digits moved up, the first one most significant, with zeros
    // before them; then pairs, fours and the eight are combined.
    let mut v = values << (8 * (8 - count));
    v = (v.wrapping_mul(10) + (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_ffff_0000_ffff;
    v = (v.wrapping_mul(10_000) + (v >> 32)) & 0x0000_0000_ffff_ffff;
    (count, v)
}

/// Which byte the lowest match is.
#[inline(always)]
pub fn first(mask: u64) -> usize {
    (mask.trailing_zeros() / 8) as usize
}

#[cfg(test)]
mod tests {
    use crate::json::swar;

    #[test]
    fn leading_digits_are_counted_and_read_eight_bytes_at_a_time() {
        let numbers = [0u64, 7, 10, 99, 12_345, 1_000_000, 9_999_999, 12_345_678];
        for n in numbers {
            for tail in ["", ",", "\"", "]", "x", "/", ":", "\u{80}"] {
                let text = format!("{n}{tail}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}");
                let word = swar::word(text.as_bytes(), 0).unwrap();
                let count = n.to_string().len().min(8);
                let value = if count < 8 { n } else { 0 };
                assert_eq!(swar::digits(word), (count, value), "{text:?}");
            }
        }
        let word = swar::word(b"x1234567", 0).unwrap();
        assert_eq!(swar::digits(word).0, 0);
    }

    #[test]
    fn string_stops_are_exactly_controls_quotes_and_backslashes() {
        for byte in 0..=255u8 {
            let word = u64::from_le_bytes([b'a', byte, b'a', b'a', b'a', b'a', b'a', byte]);
            let expected = byte < 0x20 || byte == b'"' || byte == b'\\';
            let stops = swar::string_stops(word);
            assert_eq!(stops != 0, expected, "{byte:#x}");
            if expected {
                assert_eq!(swar::first(stops), 1, "{byte:#x}");
            }
        }
    }

    #[test]
    fn string_stops_find_the_first_stop_of_any_word() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let interesting = [0x00, 0x01, 0x0a, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c];
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Mostly the bytes around the stops, so that stops meet.
            let bytes = state.to_le_bytes().map(|b| match b % 3 {
                0 => b,
                _ => interesting[usize::from(b >> 4) % interesting.len()],
            });
            let first = bytes
                .iter()
                .position(|&b| b < 0x20 || b == b'"' || b == b'\\');
            let stops = swar::string_stops(u64::from_le_bytes(bytes));
            assert_eq!((stops != 0).then(|| swar::first(stops)), first, "{bytes:?}");
        }
    }
}
