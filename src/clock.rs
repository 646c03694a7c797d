//! Time: the [`Timestamp`] newtype every rule is checked against, and the [`Clock`] trait.
//!
//! The core of the crate never reads a clock (STYLE.md, sans-IO): operations and views take a
//! `now: Timestamp` argument. Only the service layer asks a [`Clock`], so tests drive virtual
//! time with a [`ManualClock`] and production uses [`SystemClock`].

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// A point in time, always held in UTC, with whole-second precision.
///
/// Whole seconds because X.509 validity has whole-second precision: a value that round-trips
/// through a certificate compares equal to the one it was made from.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

/// A time string that is not RFC 3339, or a time X.509 cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {input:?}: {reason} (expected RFC 3339, e.g. 2027-03-01T12:00:00Z)")]
pub struct TimeError {
    input: String,
    reason: String,
}

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp(OffsetDateTime::UNIX_EPOCH);

    /// From seconds since the Unix epoch; the year must be 0000 to 9999 (RFC 3339's range).
    pub fn from_unix(secs: i64) -> Result<Self, TimeError> {
        OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|e| e.to_string())
            .and_then(Timestamp::in_range)
            .map_err(|reason| TimeError {
                input: secs.to_string(),
                reason,
            })
    }

    /// `t` (in UTC) if its year is one RFC 3339 can write: 0000 to 9999. Anything read from a
    /// string or a record goes through here, so that formatting a `Timestamp` never fails
    /// (issue 9 item 8: `9999-12-31T23:30:00-01:00` or `0000-01-01T00:00:00+01:00` in a
    /// damaged record used to panic).
    fn in_range(t: OffsetDateTime) -> Result<Self, String> {
        match t.checked_to_offset(UtcOffset::UTC) {
            Some(utc) if (0..=9999).contains(&utc.year()) => Ok(Timestamp::from_offset(utc)),
            _ => Err("the time in UTC is outside the years 0000 to 9999".into()),
        }
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> i64 {
        self.0.unix_timestamp()
    }

    /// From a `time` value in any offset; sub-second precision is dropped.
    pub fn from_offset(t: OffsetDateTime) -> Self {
        let t = t.to_offset(UtcOffset::UTC);
        Timestamp(t.replace_nanosecond(0).expect("0 is a valid nanosecond"))
    }

    /// The `time` value in UTC.
    pub fn to_offset(self) -> OffsetDateTime {
        self.0
    }

    /// This time plus `d` (saturating at the far future X.509 can express).
    pub fn plus(self, d: Duration) -> Self {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Timestamp::from_unix(self.unix().saturating_add(secs))
            .unwrap_or(Timestamp::from_unix(253_402_300_799).expect("9999-12-31T23:59:59Z"))
    }

    /// This time minus `d` (saturating at the epoch).
    pub fn minus(self, d: Duration) -> Self {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Timestamp::from_unix(self.unix().saturating_sub(secs).max(0)).unwrap_or(Self::UNIX_EPOCH)
    }

    /// The same calendar day and time `years` years later (29 February becomes 28 February).
    pub fn plus_years(self, years: u32) -> Self {
        let t = self.0;
        let year = t.year() + i32::try_from(years).unwrap_or(i32::MAX / 2);
        let date = t
            .date()
            .replace_year(year)
            .or_else(|_| t.date().replace_day(28).and_then(|d| d.replace_year(year)))
            .unwrap_or(t.date());
        Timestamp(t.replace_date(date))
    }

    /// RFC 3339 in UTC, e.g. `2027-03-01T12:00:00Z`.
    pub fn to_rfc3339(self) -> String {
        self.0
            .format(&Rfc3339)
            .expect("a UTC time with a 4-digit year formats as RFC 3339")
    }

    /// RFC 3339 shifted into the given UTC offset (V2: "expires on", in the caller's offset).
    pub fn to_rfc3339_in(self, offset: UtcOffset) -> String {
        self.0
            .to_offset(offset)
            .format(&Rfc3339)
            .expect("a time with a 4-digit year formats as RFC 3339")
    }

    /// The current system time (only the service layer and frontends should call this).
    pub fn now_utc() -> Self {
        Self::from_offset(OffsetDateTime::now_utc())
    }

    pub(crate) fn to_x509(self) -> Result<x509_cert::time::Time, TimeError> {
        let secs = u64::try_from(self.unix()).map_err(|_| TimeError {
            input: self.to_rfc3339(),
            reason: "before 1970 cannot be written into a certificate".into(),
        })?;
        let dt = der::DateTime::from_unix_duration(Duration::from_secs(secs)).map_err(|e| {
            TimeError {
                input: self.to_rfc3339(),
                reason: e.to_string(),
            }
        })?;
        // RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050 on.
        if dt.year() < 2050 {
            Ok(x509_cert::time::Time::UtcTime(
                der::asn1::UtcTime::from_date_time(dt).map_err(|e| TimeError {
                    input: self.to_rfc3339(),
                    reason: e.to_string(),
                })?,
            ))
        } else {
            Ok(x509_cert::time::Time::GeneralTime(
                der::asn1::GeneralizedTime::from_date_time(dt),
            ))
        }
    }

    pub(crate) fn from_x509(t: &x509_cert::time::Time) -> Self {
        let secs = t.to_unix_duration().as_secs();
        Timestamp::from_unix(i64::try_from(secs).unwrap_or(i64::MAX))
            .expect("an X.509 time (years 1950-9999) is a valid timestamp")
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_rfc3339())
    }
}

impl FromStr for Timestamp {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, TimeError> {
        OffsetDateTime::parse(s.trim(), &Rfc3339)
            .map_err(|e| e.to_string())
            .and_then(Timestamp::in_range)
            .map_err(|reason| TimeError {
                input: s.to_string(),
                reason,
            })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where the service layer gets "now" from.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now_utc()
    }
}

/// A clock that only moves when told to: for tests, simulations and `zonectl --now`.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    /// A clock reading `t`.
    pub fn new(t: Timestamp) -> Self {
        ManualClock(Mutex::new(t))
    }

    /// Set the time (it may go backwards: tests of clock skew need that).
    pub fn set(&self, t: Timestamp) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// Move the time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *g = g.plus(d);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Clock + ?Sized> Clock for &T {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

impl<T: Clock + ?Sized> Clock for std::sync::Arc<T> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_and_errors() {
        let t: Timestamp = "2027-03-01T12:00:00Z".parse().unwrap();
        assert_eq!(t.to_string(), "2027-03-01T12:00:00Z");
        let t2: Timestamp = "2027-03-01T13:00:00+01:00".parse().unwrap();
        assert_eq!(t, t2);
        let err = "yesterday".parse::<Timestamp>().unwrap_err().to_string();
        assert!(err.contains("RFC 3339"), "{err}");
        assert!("".parse::<Timestamp>().is_err());
    }

    /// Issue 9 item 8: a time whose UTC year leaves 0000..=9999 is refused when read, so a
    /// damaged record is an error and formatting never fails (both used to panic).
    #[test]
    fn times_beyond_rfc3339_years_are_refused() {
        for s in ["9999-12-31T23:30:00-01:00", "0000-01-01T00:00:00+01:00"] {
            let err = s.parse::<Timestamp>().unwrap_err().to_string();
            assert!(err.contains("0000 to 9999"), "{s}: {err}");
        }
        for s in ["9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z"] {
            assert_eq!(s.parse::<Timestamp>().unwrap().to_string(), s);
        }
        assert!(Timestamp::from_unix(-62_167_219_201).is_err());
        assert!(Timestamp::from_unix(253_402_300_800).is_err());
        assert_eq!(
            Timestamp::from_unix(-62_167_219_200).unwrap().to_string(),
            "0000-01-01T00:00:00Z"
        );
    }

    #[test]
    fn x509_round_trip_both_encodings() {
        for s in ["2027-03-01T12:00:00Z", "2051-01-01T00:00:00Z"] {
            let t: Timestamp = s.parse().unwrap();
            let x = t.to_x509().unwrap();
            assert_eq!(Timestamp::from_x509(&x), t);
        }
        let t: Timestamp = "2051-01-01T00:00:00Z".parse().unwrap();
        assert!(matches!(
            t.to_x509().unwrap(),
            x509_cert::time::Time::GeneralTime(_)
        ));
    }

    #[test]
    fn plus_years_handles_leap_day() {
        let t: Timestamp = "2028-02-29T00:00:00Z".parse().unwrap();
        assert_eq!(t.plus_years(1).to_string(), "2029-02-28T00:00:00Z");
        assert_eq!(t.plus_years(4).to_string(), "2032-02-29T00:00:00Z");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp::from_unix(1_800_000_000).unwrap());
        assert_eq!(c.now().unix(), 1_800_000_000);
        c.advance(Duration::from_secs(600));
        assert_eq!(c.now().unix(), 1_800_000_600);
    }
}
