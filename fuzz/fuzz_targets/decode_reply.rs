//! The reply decoder on arbitrary bytes: it must never panic, never take
//! more than a moment, and accept only replies with exactly one value per
//! row sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use service_to_service::reply;

fuzz_target!(|data: &[u8]| {
    // The first byte says how many rows were sent (1 to 8), the rest is the reply.
    let (rows_sent, body) = match data.split_first() {
        Some((first, rest)) => (u64::from(*first % 8) + 1, rest),
        None => (1, data),
    };
    let sent: Vec<u64> = (0..rows_sent).collect();
    if let Ok(values) = reply::decode_reply(body, &sent) {
        assert_eq!(values.len(), sent.len());
    }
});
