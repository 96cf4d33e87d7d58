//! Whole numbers in decimal, for the row indices of requests and output
//! lines. Not through `fmt`: its machinery costs more than the row a number
//! heads. Nothing else: text for people goes through `fmt`, which is fine
//! off a row's path.

/// The most digits a u64 has.
pub const U64_DIGITS: usize = 20;

/// Writes `n` in decimal at the end of `out` (`U64_DIGITS` bytes always
/// suffice); how many bytes.
pub fn write_u64_backwards(out: &mut [u8], mut n: u64) -> usize {
    let mut at = out.len();
    loop {
        at -= 1;
        out[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return out.len() - at;
        }
    }
}

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; U64_DIGITS];
    let len = write_u64_backwards(&mut digits, n);
    out.extend_from_slice(&digits[U64_DIGITS - len..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_of_number_is_written_as_fmt_writes_it() {
        let mut numbers = vec![0, u64::MAX - 1, u64::MAX];
        let mut power = 1u64;
        while let Some(next) = power.checked_mul(10) {
            numbers.extend([power, next - 1]);
            power = next;
        }
        for n in numbers {
            let mut out = b"x".to_vec();
            push_u64(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
}
