//! Days since the UNIX epoch as a civil date (proleptic Gregorian, UTC), after Howard
//! Hinnant's `civil_from_days`: std has no calendar, and a date is all the CLI and the
//! benchmark headers need. (Also included by `perf/src/provenance.rs`, which the FIB bench
//! in `forwarding` includes in turn and which cannot depend on this crate.)

/// (year, month 1-12, day 1-31) of the day `days` after 1970-01-01.
pub fn from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_days() {
        assert_eq!(super::from_days(0), (1970, 1, 1));
        assert_eq!(super::from_days(11_016), (2000, 2, 29));
        assert_eq!(super::from_days(20_788), (2026, 12, 1));
        assert_eq!(super::from_days(-1), (1969, 12, 31));
    }
}
