//! Times as RFC 3339 text, for status output and files.
//!
//! `humantime` cannot format a time past the year 9999 (its `Display` fails, and `to_string`
//! then panics). Times here can come from hostile input — a token's `exp` is whatever the
//! sender wrote — so every formatting goes through [`rfc3339`], which clamps instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last second RFC 3339 (four-digit years) can name: 9999-12-31T23:59:59Z.
const LAST_SECOND: u64 = 253_402_300_799;

/// `t` as RFC 3339 in whole seconds (UTC); times past 9999-12-31T23:59:59Z are shown as that
/// second, times before 1970 as the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(LAST_SECOND);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn far_future_and_pre_epoch_times_are_clamped_not_a_panic() {
        let year_10000 = UNIX_EPOCH + Duration::from_secs(LAST_SECOND + 1);
        assert_eq!(rfc3339(year_10000), "9999-12-31T23:59:59Z");
        // Far beyond 9999 but within every platform's SystemTime (Windows' ends in 30828).
        let far = UNIX_EPOCH + Duration::from_secs(1 << 39);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59Z");
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(rfc3339(before), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
    }
}
