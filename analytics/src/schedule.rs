//! Cron-like schedules in UTC: `minute hour day-of-month month day-of-week`, or six fields
//! with seconds first. Each field is `*`, a number, a range `a-b`, a list `a,b`, and any of
//! these with a step `/n`. Day of week: 0–6 from Sunday (7 is Sunday too). As in cron, when
//! both day fields are restricted, either may match.

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};

use crate::{Result, ScheduleSnafu};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    seconds: Vec<bool>,
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    days_restricted: bool,
    weekdays_restricted: bool,
}

fn field(text: &str, min: u32, max: u32, schedule: &str) -> Result<Vec<bool>> {
    let bad = || {
        ScheduleSnafu {
            schedule,
            field: text,
        }
        .build()
    };
    let mut set = vec![false; max as usize + 1];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(bad)?),
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?)
        } else {
            let v: u32 = range.parse().map_err(|_| bad())?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(bad());
        }
        for v in (lo..=hi).step_by(step as usize) {
            set[v as usize] = true;
        }
    }
    Ok(set)
}

impl Schedule {
    /// Parses a 5- or 6-field schedule.
    pub fn parse(text: &str) -> Result<Self> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            _ => {
                return ScheduleSnafu {
                    schedule: text,
                    field: "(expected 5 or 6 fields)",
                }
                .fail();
            }
        };
        let mut weekdays = field(rest[4], 0, 7, text)?;
        if weekdays[7] {
            weekdays[0] = true;
        }
        Ok(Self {
            seconds: field(seconds, 0, 59, text)?,
            minutes: field(rest[0], 0, 59, text)?,
            hours: field(rest[1], 0, 23, text)?,
            days: field(rest[2], 1, 31, text)?,
            months: field(rest[3], 1, 12, text)?,
            weekdays,
            days_restricted: rest[2] != "*",
            weekdays_restricted: rest[4] != "*",
        })
    }

    fn day_matches(&self, t: &DateTime<Utc>) -> bool {
        let day = self.days[t.day() as usize];
        let weekday = self.weekdays[t.weekday().num_days_from_sunday() as usize];
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            (true, false) => day,
            (false, true) => weekday,
            (false, false) => true,
        }
    }

    /// The first time strictly after `after_ns` that matches, within about four years.
    pub fn next_after(&self, after_ns: i64) -> Option<i64> {
        let start = Utc
            .timestamp_opt(after_ns.div_euclid(1_000_000_000) + 1, 0)
            .single()?;
        let mut t = start;
        let limit = start + chrono::Duration::days(4 * 366);
        while t < limit {
            if !self.months[t.month() as usize] || !self.day_matches(&t) {
                let next_day = (t + chrono::Duration::days(1))
                    .date_naive()
                    .and_hms_opt(0, 0, 0)?;
                t = Utc.from_utc_datetime(&next_day);
                continue;
            }
            if !self.hours[t.hour() as usize] {
                t = t.with_minute(0)?.with_second(0)? + chrono::Duration::hours(1);
                continue;
            }
            if !self.minutes[t.minute() as usize] {
                t = t.with_second(0)? + chrono::Duration::minutes(1);
                continue;
            }
            if !self.seconds[t.second() as usize] {
                t += chrono::Duration::seconds(1);
                continue;
            }
            return t.timestamp_nanos_opt();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    #[test]
    fn next_times() {
        let daily = Schedule::parse("0 6 * * *").unwrap();
        assert_eq!(
            daily.next_after(at("2025-01-31T05:59:59Z")),
            Some(at("2025-01-31T06:00:00Z"))
        );
        assert_eq!(
            daily.next_after(at("2025-01-31T06:00:00Z")),
            Some(at("2025-02-01T06:00:00Z"))
        );
        let every5s = Schedule::parse("*/5 * * * * *").unwrap();
        assert_eq!(
            every5s.next_after(at("2025-01-31T06:00:03Z")),
            Some(at("2025-01-31T06:00:05Z"))
        );
        let mondays = Schedule::parse("30 7 * * 1").unwrap();
        // 2025-02-01 is a Saturday.
        assert_eq!(
            mondays.next_after(at("2025-02-01T00:00:00Z")),
            Some(at("2025-02-03T07:30:00Z"))
        );
        let leap = Schedule::parse("0 0 29 2 *").unwrap();
        assert_eq!(
            leap.next_after(at("2025-01-01T00:00:00Z")),
            Some(at("2028-02-29T00:00:00Z"))
        );
        let list = Schedule::parse("0,30 9-10 * * 1-5").unwrap();
        assert_eq!(
            list.next_after(at("2025-02-03T09:10:00Z")),
            Some(at("2025-02-03T09:30:00Z"))
        );
    }

    #[test]
    fn bad_schedules() {
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "*/0 * * * *",
            "a * * * *",
            "5-1 * * * *",
            "* * 0 * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }
}
