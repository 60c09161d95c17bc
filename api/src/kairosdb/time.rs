//! Time units, relative times, sampling ranges and their alignment, computed as KairosDB
//! computes them with Joda-Time (`RangeAggregator`, `RelativeTime`, `Util.getSamplingDuration`):
//!
//! - milliseconds to hours are fixed lengths of UTC time;
//! - days and weeks are counted in local time of the query's `time_zone` (a DST day is 23 or
//!   25 hours long), months and years on the local calendar (adding one month to 31 January
//!   gives the last day of February);
//! - `align_sampling` moves the start of the ranges back to the start of the sampling unit in
//!   local time: the second, minute, hour or day, the Monday of the week, the first of the
//!   month, the first of January.

use chrono::{Datelike, Months, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike};
use chrono_tz::Tz;

/// One day in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// A KairosDB time unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
    Months,
    Years,
}

impl Unit {
    /// The names KairosDB accepts, in any case.
    pub(crate) const NAMES: &'static str =
        "MILLISECONDS,SECONDS,MINUTES,HOURS,DAYS,WEEKS,MONTHS,YEARS";

    /// Parses `milliseconds`, `SECONDS`, … (case-insensitive, as KairosDB).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "milliseconds" => Self::Milliseconds,
            "seconds" => Self::Seconds,
            "minutes" => Self::Minutes,
            "hours" => Self::Hours,
            "days" => Self::Days,
            "weeks" => Self::Weeks,
            "months" => Self::Months,
            "years" => Self::Years,
            _ => return None,
        })
    }

    /// The length of one unit when it does not depend on the calendar.
    fn fixed_ms(self) -> Option<i64> {
        match self {
            Self::Milliseconds => Some(1),
            Self::Seconds => Some(1_000),
            Self::Minutes => Some(60_000),
            Self::Hours => Some(3_600_000),
            _ => None,
        }
    }
}

/// `value` × `unit`: a KairosDB `sampling` or relative time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) value: i64,
    pub(crate) unit: Unit,
}

impl Span {
    /// The length in milliseconds if it is the same wherever it starts in `tz`: always for
    /// milliseconds to hours, for days and weeks only in UTC.
    pub(crate) fn fixed_ms(&self, tz: Tz) -> Option<i64> {
        let unit = match (self.unit, is_utc(tz)) {
            (Unit::Days, true) => DAY_MS,
            (Unit::Weeks, true) => 7 * DAY_MS,
            (unit, _) => unit.fixed_ms()?,
        };
        self.value.checked_mul(unit)
    }

    /// `ms` plus `times` × this span, on the calendar of `tz`; `None` out of range.
    pub(crate) fn add(&self, ms: i64, times: i64, tz: Tz) -> Option<i64> {
        let n = self.value.checked_mul(times)?;
        match self.unit {
            Unit::Days | Unit::Weeks => {
                let days = if self.unit == Unit::Weeks {
                    n.checked_mul(7)?
                } else {
                    n
                };
                let local = local(tz, ms)?.checked_add_signed(TimeDelta::try_days(days)?)?;
                Some(from_local(tz, local))
            }
            Unit::Months | Unit::Years => {
                let months = if self.unit == Unit::Years {
                    n.checked_mul(12)?
                } else {
                    n
                };
                Some(from_local(tz, add_months(local(tz, ms)?, months)?))
            }
            unit => ms.checked_add(n.checked_mul(unit.fixed_ms()?)?),
        }
    }

    /// `now` minus this span (KairosDB's `RelativeTime`, on the UTC calendar).
    pub(crate) fn before(&self, now_ms: i64) -> Option<i64> {
        self.add(now_ms, -1, Tz::UTC)
    }
}

fn is_utc(tz: Tz) -> bool {
    matches!(
        tz,
        Tz::UTC | Tz::Etc__UTC | Tz::Etc__GMT | Tz::GMT | Tz::Etc__Universal
    )
}

/// Local wall-clock time of `ms` in `tz`.
fn local(tz: Tz, ms: i64) -> Option<NaiveDateTime> {
    tz.timestamp_millis_opt(ms)
        .single()
        .map(|dt| dt.naive_local())
}

/// The instant of a wall-clock time: the earlier one when it happens twice (autumn), and in a
/// spring-forward gap the offset in force before the gap, as Joda-Time does.
fn from_local(tz: Tz, local: NaiveDateTime) -> i64 {
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(dt) | chrono::LocalResult::Ambiguous(dt, _) => {
            dt.timestamp_millis()
        }
        chrono::LocalResult::None => {
            let before = local - TimeDelta::hours(6);
            let offset = tz.offset_from_utc_datetime(&before).fix().local_minus_utc();
            local.and_utc().timestamp_millis() - i64::from(offset) * 1_000
        }
    }
}

/// Adds months, clamping the day to the end of a shorter month (Joda-Time's rule).
fn add_months(local: NaiveDateTime, months: i64) -> Option<NaiveDateTime> {
    let magnitude = Months::new(u32::try_from(months.unsigned_abs()).ok()?);
    if months >= 0 {
        local.checked_add_months(magnitude)
    } else {
        local.checked_sub_months(magnitude)
    }
}

/// Whole months from `from` to `to` (Joda-Time's `getDifferenceAsLong` for months).
fn whole_months(from: NaiveDateTime, to: NaiveDateTime) -> i64 {
    let mut months =
        i64::from(to.year() - from.year()) * 12 + i64::from(to.month()) - i64::from(from.month());
    while months > 0 && add_months(from, months).is_none_or(|m| m > to) {
        months -= 1;
    }
    while months < 0 && add_months(from, months).is_none_or(|m| m < to) {
        months += 1;
    }
    months
}

/// The start of the sampling unit holding `ms`, in local time of `tz` (`align_sampling`).
pub(crate) fn align(ms: i64, unit: Unit, tz: Tz) -> i64 {
    let Some(t) = local(tz, ms) else { return ms };
    let date = t.date();
    let midnight = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0);
    let aligned = match unit {
        Unit::Years => date.with_ordinal(1).and_then(midnight),
        Unit::Months => date.with_day(1).and_then(midnight),
        Unit::Weeks => date
            .checked_sub_days(chrono::Days::new(u64::from(
                date.weekday().num_days_from_monday(),
            )))
            .and_then(midnight),
        Unit::Days => midnight(date),
        Unit::Hours => date.and_hms_opt(t.hour(), 0, 0),
        Unit::Minutes => date.and_hms_opt(t.hour(), t.minute(), 0),
        Unit::Seconds => date.and_hms_opt(t.hour(), t.minute(), t.second()),
        Unit::Milliseconds => return ms,
    };
    aligned.map_or(ms, |local| from_local(tz, local))
}

/// The sampling ranges of a range aggregator: `[start + k·span, start + (k+1)·span)`.
#[derive(Debug, Clone)]
pub(crate) struct Ranges {
    start: i64,
    start_local: Option<NaiveDateTime>,
    span: Span,
    tz: Tz,
    fixed: Option<i64>,
}

impl Ranges {
    /// Ranges from `start` (the query's start), moved back to the unit's start if `aligned`.
    pub(crate) fn new(start: i64, span: Span, tz: Tz, aligned: bool) -> Self {
        let start = if aligned {
            align(start, span.unit, tz)
        } else {
            start
        };
        Self {
            start,
            start_local: local(tz, start),
            span,
            tz,
            fixed: span.fixed_ms(tz),
        }
    }

    /// Where the first range starts.
    pub(crate) fn start(&self) -> i64 {
        self.start
    }

    /// The length of every range, when they are all alike.
    pub(crate) fn fixed_ms(&self) -> Option<i64> {
        self.fixed
    }

    /// The index of the range holding `t` (`t` ≥ the start, as every queried point is).
    pub(crate) fn index(&self, t: i64) -> i64 {
        if let Some(len) = self.fixed {
            return (t - self.start).div_euclid(len);
        }
        let (Some(start), Some(t)) = (self.start_local, local(self.tz, t)) else {
            return 0;
        };
        // Java's integer division truncates toward zero; so does Rust's `/`.
        match self.span.unit {
            Unit::Days | Unit::Weeks => {
                let unit = if self.span.unit == Unit::Weeks {
                    7 * DAY_MS
                } else {
                    DAY_MS
                };
                (t - start).num_milliseconds() / unit.saturating_mul(self.span.value)
            }
            Unit::Months => whole_months(start, t) / self.span.value,
            Unit::Years => whole_months(start, t) / 12 / self.span.value,
            unit => {
                // Fixed units have `self.fixed` unless their length overflows.
                let len = unit.fixed_ms().unwrap_or(1).saturating_mul(self.span.value);
                (t - start).num_milliseconds().div_euclid(len)
            }
        }
    }

    /// Start and end (exclusive) of range `k`.
    pub(crate) fn bounds(&self, k: i64) -> (i64, i64) {
        if let Some(len) = self.fixed {
            let begin = self.start.saturating_add(k.saturating_mul(len));
            return (begin, begin.saturating_add(len));
        }
        let at = |k: i64| match self.span.unit {
            Unit::Years => {
                let years = Span {
                    value: self.span.value.saturating_mul(12),
                    unit: Unit::Months,
                };
                years.add(self.start, k, self.tz)
            }
            _ => self.span.add(self.start, k, self.tz),
        };
        (
            at(k).unwrap_or(i64::MAX),
            at(k.saturating_add(1)).unwrap_or(i64::MAX),
        )
    }
}

/// Milliseconds in `span` starting at `ms` in `tz` (KairosDB's `Util.getSamplingDuration`,
/// the unit of `rate`).
pub(crate) fn span_ms(span: Span, ms: i64, tz: Tz) -> f64 {
    match span.add(ms, 1, tz) {
        Some(end) => (end - ms) as f64,
        None => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds of a UTC date-time.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        chrono::NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    }

    fn paris(y: i32, mo: u32, d: u32, h: u32) -> i64 {
        let local = chrono::NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, 0, 0)
            .unwrap();
        from_local(Tz::Europe__Paris, local)
    }

    fn span(value: i64, unit: Unit) -> Span {
        Span { value, unit }
    }

    #[test]
    fn units_parse_in_any_case() {
        assert_eq!(Unit::parse("minutes"), Some(Unit::Minutes));
        assert_eq!(Unit::parse("HOURS"), Some(Unit::Hours));
        assert_eq!(Unit::parse("Days"), Some(Unit::Days));
        assert_eq!(Unit::parse("day"), None);
        assert_eq!(Unit::parse(""), None);
    }

    #[test]
    fn relative_times() {
        let now = utc(2024, 3, 31, 12, 0);
        assert_eq!(span(5, Unit::Minutes).before(now), Some(now - 300_000));
        assert_eq!(span(2, Unit::Days).before(now), Some(now - 2 * DAY_MS));
        // 31 March minus one month is 29 February (a leap year).
        assert_eq!(
            span(1, Unit::Months).before(now),
            Some(utc(2024, 2, 29, 12, 0))
        );
        assert_eq!(
            span(1, Unit::Years).before(now),
            Some(utc(2023, 3, 31, 12, 0))
        );
        assert_eq!(span(i64::MAX, Unit::Hours).before(now), None);
    }

    #[test]
    fn alignment_to_the_sampling_unit() {
        let t = utc(2015, 1, 2, 1, 11) + 17_345; // a Friday, 01:11:17.345
        let tz = Tz::UTC;
        assert_eq!(align(t, Unit::Milliseconds, tz), t);
        assert_eq!(align(t, Unit::Seconds, tz), t - 345);
        assert_eq!(align(t, Unit::Minutes, tz), utc(2015, 1, 2, 1, 11));
        assert_eq!(align(t, Unit::Hours, tz), utc(2015, 1, 2, 1, 0));
        assert_eq!(align(t, Unit::Days, tz), utc(2015, 1, 2, 0, 0));
        // KairosDB's RangeAggregatorTest.test_aggregationByWeekAlign: Monday 29 December.
        assert_eq!(align(t, Unit::Weeks, tz), utc(2014, 12, 29, 0, 0));
        assert_eq!(align(t, Unit::Months, tz), utc(2015, 1, 1, 0, 0));
        assert_eq!(align(t, Unit::Years, tz), utc(2015, 1, 1, 0, 0));
        // In Rome (UTC+1 in winter) the day starts at 23:00 UTC the day before.
        assert_eq!(
            align(t, Unit::Days, Tz::Europe__Rome),
            utc(2015, 1, 1, 23, 0)
        );
        // In Kolkata (UTC+5:30) the local hour starts at half past the UTC hour.
        assert_eq!(
            align(t, Unit::Hours, Tz::Asia__Kolkata),
            utc(2015, 1, 2, 0, 30)
        );
    }

    #[test]
    fn fixed_ranges() {
        let start = utc(2014, 1, 1, 0, 0);
        let ranges = Ranges::new(start + 7, span(1, Unit::Minutes), Tz::Europe__Rome, true);
        assert_eq!(ranges.start(), start);
        assert_eq!(ranges.fixed_ms(), Some(60_000));
        assert_eq!(ranges.index(start + 59_999), 0);
        assert_eq!(ranges.index(start + 60_000), 1);
        assert_eq!(ranges.bounds(2), (start + 120_000, start + 180_000));
        // Days are fixed in UTC only.
        assert_eq!(span(1, Unit::Days).fixed_ms(Tz::UTC), Some(DAY_MS));
        assert_eq!(span(1, Unit::Days).fixed_ms(Tz::Europe__Rome), None);
    }

    /// KairosDB's RangeAggregatorTest.test_multipleMonthAggregationWithUTC: 3-month ranges
    /// from 1 January 01:01 hold 90, 91 and 9 daily points.
    #[test]
    fn month_ranges() {
        let start = utc(2014, 1, 1, 1, 1);
        let ranges = Ranges::new(start, span(3, Unit::Months), Tz::UTC, false);
        let mut counts = std::collections::BTreeMap::new();
        let mut day = start;
        while day < utc(2014, 7, 10, 1, 1) {
            *counts.entry(ranges.index(day)).or_insert(0) += 1;
            day += DAY_MS;
        }
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            [(0, 90), (1, 91), (2, 9)]
        );
        assert_eq!(
            ranges.bounds(1),
            (utc(2014, 4, 1, 1, 1), utc(2014, 7, 1, 1, 1))
        );
    }

    /// Month and year differences clamp like Joda-Time: 31 January + 1 month = 28 February.
    #[test]
    fn whole_months_clamp() {
        let jan31 = utc(2014, 1, 31, 10, 0);
        let ranges = Ranges::new(jan31, span(1, Unit::Months), Tz::UTC, false);
        assert_eq!(ranges.index(utc(2014, 2, 28, 9, 0)), 0);
        assert_eq!(ranges.index(utc(2014, 2, 28, 10, 0)), 1);
        assert_eq!(ranges.index(utc(2014, 3, 1, 0, 0)), 1);
        assert_eq!(ranges.index(utc(2014, 3, 31, 10, 0)), 2);
        let years = Ranges::new(utc(2012, 2, 29, 0, 0), span(1, Unit::Years), Tz::UTC, false);
        assert_eq!(years.index(utc(2013, 2, 27, 0, 0)), 0);
        assert_eq!(years.index(utc(2013, 2, 28, 0, 0)), 1);
        assert_eq!(years.bounds(1).0, utc(2013, 2, 28, 0, 0));
    }

    /// KairosDB's RangeAggregatorTest.test_aggregationByHourOverMarch_dst and …October_dst:
    /// one month in Paris holds 743 hours in March and 745 in October.
    #[test]
    fn months_across_daylight_saving_time() {
        for (month, hours) in [(3, 743), (10, 745)] {
            let first = paris(2014, month, 1, 0);
            let ranges = Ranges::new(
                first + 3_600_000 * 5,
                span(1, Unit::Months),
                Tz::Europe__Paris,
                true,
            );
            assert_eq!(ranges.start(), first);
            let end = ranges.bounds(0).1;
            assert_eq!(end, paris(2014, month + 1, 1, 0));
            assert_eq!((end - first) / 3_600_000, hours);
        }
    }

    /// A day in local time is 23 hours long on the spring-forward day.
    #[test]
    fn days_in_local_time() {
        let tz = Tz::Europe__Paris;
        let ranges = Ranges::new(paris(2014, 3, 29, 0), span(1, Unit::Days), tz, false);
        assert_eq!(
            ranges.bounds(1),
            (paris(2014, 3, 30, 0), paris(2014, 3, 31, 0))
        );
        assert_eq!(ranges.bounds(1).1 - ranges.bounds(1).0, 23 * 3_600_000);
        assert_eq!(ranges.index(paris(2014, 3, 30, 23)), 1);
        assert_eq!(ranges.index(paris(2014, 3, 31, 0)), 2);
        // A wall-clock time inside the gap takes the offset from before it (as Joda-Time).
        let gap = chrono::NaiveDate::from_ymd_opt(2014, 3, 30)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(from_local(tz, gap), utc(2014, 3, 30, 1, 30));
    }

    #[test]
    fn rate_units() {
        let t = utc(2014, 2, 1, 0, 0);
        assert_eq!(span_ms(span(1, Unit::Seconds), t, Tz::UTC), 1_000.0);
        assert_eq!(span_ms(span(2, Unit::Minutes), t, Tz::UTC), 120_000.0);
        assert_eq!(
            span_ms(span(1, Unit::Months), t, Tz::UTC),
            28.0 * DAY_MS as f64
        );
    }
}
