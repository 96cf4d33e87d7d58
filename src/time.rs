//! How the job writes times: durations as `1.25s`, and instants as the
//! tutorial's Python log lines do, `2023-04-29 21:52:09,208`, in UTC.
//!
//! Both with integer arithmetic: no float formatting is linked in, and no
//! date crate, whose size would dwarf the twenty lines of calendar below.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A duration in seconds with two decimals, `1.25s`, printed with integer
/// arithmetic so that no float formatting code is linked in.
pub struct Seconds(pub Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // u64 parts, not `as_millis()`: formatting a u128 would link its own
        // Display.
        let centis = self.0.subsec_millis() / 10;
        write!(f, "{}.{centis:02}s", self.0.as_secs())
    }
}

/// A UTC instant printed as `YYYY-MM-DD HH:MM:SS,mmm`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timestamp {
    unix_millis: u64,
}

impl Timestamp {
    pub fn now() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            unix_millis: since_epoch.as_millis() as u64,
        }
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.unix_millis / 1000;
        let (year, month, day) = civil_from_days(secs / 86_400);
        let time_of_day = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02},{:03}",
            time_of_day / 3600,
            time_of_day % 3600 / 60,
            time_of_day % 60,
            self.unix_millis % 1000
        )
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
///
/// Works in 400-year eras counted from 0000-03-01, so that the leap day falls
/// at the end of each shifted year and needs no special case.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    const DAYS_FROM_0000_03_01_TO_EPOCH: u64 = 719_468;
    const DAYS_PER_ERA: u64 = 146_097;
    let days = days + DAYS_FROM_0000_03_01_TO_EPOCH;
    let era = days / DAYS_PER_ERA;
    let day_of_era = days % DAYS_PER_ERA;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix_millis: u64) -> String {
        Timestamp { unix_millis }.to_string()
    }

    #[test]
    fn known_instants() {
        assert_eq!(at(0), "1970-01-01 00:00:00,000");
        // The tutorial's sample log line.
        assert_eq!(at(1_682_805_129_208), "2023-04-29 21:52:09,208");
        assert_eq!(at(951_782_400_000), "2000-02-29 00:00:00,000"); // leap day, 400-year rule
        assert_eq!(at(951_868_799_999), "2000-02-29 23:59:59,999");
        assert_eq!(at(951_868_800_000), "2000-03-01 00:00:00,000");
        assert_eq!(at(1_709_164_800_000), "2024-02-29 00:00:00,000");
        assert_eq!(at(1_704_067_199_999), "2023-12-31 23:59:59,999"); // year end
        assert_eq!(at(1_704_067_200_000), "2024-01-01 00:00:00,000");
        assert_eq!(at(1_735_603_200_000), "2024-12-31 00:00:00,000"); // day 366
        assert_eq!(at(4_107_542_400_000), "2100-03-01 00:00:00,000"); // 2100 is not leap
        assert_eq!(at(4_107_542_399_000), "2100-02-28 23:59:59,000");
        assert_eq!(at(2_147_483_647_000), "2038-01-19 03:14:07,000");
    }

    #[test]
    fn civil_dates_agree_with_a_day_by_day_count() {
        let month_lengths = |year: u64| {
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ]
        };
        let mut days = 0;
        for year in 1970..2500 {
            for (month, length) in month_lengths(year).into_iter().enumerate() {
                for day in 1..=length {
                    assert_eq!(civil_from_days(days), (year, month as u64 + 1, day));
                    days += 1;
                }
            }
        }
    }

    #[test]
    fn seconds() {
        assert_eq!(Seconds(Duration::from_millis(1234)).to_string(), "1.23s");
        assert_eq!(Seconds(Duration::from_millis(5)).to_string(), "0.00s");
        assert_eq!(Seconds(Duration::from_secs(90)).to_string(), "90.00s");
    }
}
