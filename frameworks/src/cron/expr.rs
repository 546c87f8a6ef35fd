//! Cron expressions: the standard 5 fields (`minute hour day-of-month month day-of-week`), an
//! optional leading seconds field (6 fields), lists, ranges, steps, month and weekday names,
//! `@hourly`-style macros, and the next fire time in an IANA time zone.
//!
//! Time is a parameter ([`Schedule::next_after`]), so every rule is testable without a clock.
//! Day-of-month and day-of-week follow Vixie cron: when both are restricted (neither starts
//! with `*`), a day matches if *either* matches. Local times skipped by a DST jump fire right
//! after the jump; repeated local times (DST fall-back) fire once, at the first occurrence.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// Why an expression or time zone was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds \
         first, got {0}"
    )]
    FieldCount(usize),
    #[error("{field} field `{text}`: {why}")]
    Field {
        field: &'static str,
        text: String,
        why: String,
    },
    #[error("unknown macro `{0}`: use @yearly, @monthly, @weekly, @daily, @hourly (or @annually, @midnight)")]
    Macro(String),
    #[error("unknown time zone `{0}`: use an IANA name such as UTC or Europe/Paris")]
    TimeZone(String),
    #[error("`{0}` never fires (no date matches it, e.g. 30 February)")]
    Never(String),
}

/// One field's kind: its name (for messages) and bounds.
#[derive(Clone, Copy)]
struct Kind {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: Kind = Kind {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: Kind = Kind {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Kind = Kind {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: Kind = Kind {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Kind = Kind {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
/// 0..=7, both 0 and 7 are Sunday.
const WEEKDAY: Kind = Kind {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// A parsed expression (bit sets per field), without a time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
    with_seconds: bool,
}

impl CronExpr {
    /// Parses 5 or 6 fields, or a macro.
    pub fn parse(text: &str) -> Result<Self, CronError> {
        let text = text.trim();
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            m if m.starts_with('@') => return Err(CronError::Macro(text.to_string())),
            _ => text.to_string(),
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (seconds, rest, with_seconds) = match fields.len() {
            5 => (1u64, &fields[..], false),
            6 => (parse_field(fields[0], SECOND)?, &fields[1..], true),
            n => return Err(CronError::FieldCount(n)),
        };
        let mut weekdays = parse_field(rest[4], WEEKDAY)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        let expr = CronExpr {
            seconds,
            minutes: parse_field(rest[0], MINUTE)?,
            hours: parse_field(rest[1], HOUR)?,
            days: parse_field(rest[2], DAY)?,
            months: parse_field(rest[3], MONTH)?,
            weekdays,
            days_restricted: !restricted_star(rest[2]),
            weekdays_restricted: !restricted_star(rest[4]),
            with_seconds,
        };
        if !expr.any_day_possible() {
            return Err(CronError::Never(text.to_string()));
        }
        Ok(expr)
    }

    /// True when the expression has a seconds field.
    pub fn has_seconds(&self) -> bool {
        self.with_seconds
    }

    /// Rules out day/month combinations no calendar has (`0 0 30 2 *`).
    fn any_day_possible(&self) -> bool {
        if self.weekdays_restricted && self.days_restricted {
            return true; // either matching is enough; weekdays always occur
        }
        if !self.days_restricted {
            return true;
        }
        const LONGEST: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (1..=12).any(|m| {
            self.months & (1 << m) != 0
                && (1..=LONGEST[m as usize - 1]).any(|d| self.days & (1 << d) != 0)
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.days_restricted && self.weekdays_restricted {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first local date-time strictly after `after` (to the second) that matches, within
    /// `horizon_years`.
    fn next_local(&self, after: DateTime, horizon_years: i16) -> Option<DateTime> {
        let step = if self.with_seconds {
            1.second()
        } else {
            1.minute()
        };
        let base = after.with().subsec_nanosecond(0).build().ok()?;
        let base = if self.with_seconds {
            base
        } else {
            base.with().second(0).build().ok()?
        };
        let mut t = base.checked_add(step).ok()?;
        let limit = after.year().saturating_add(horizon_years);
        // Each iteration advances at least one unit of the first mismatching field, so a few
        // thousand iterations cover years.
        for _ in 0..200_000 {
            if t.year() > limit {
                return None;
            }
            let date = t.date();
            if self.months & (1 << date.month()) == 0 {
                let first = date.first_of_month().checked_add(1.month()).ok()?;
                t = first.to_datetime(Time::midnight());
                continue;
            }
            if !self.day_matches(date) {
                t = date.tomorrow().ok()?.to_datetime(Time::midnight());
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t
                    .with()
                    .minute(0)
                    .second(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t
                    .with()
                    .second(0)
                    .build()
                    .ok()?
                    .checked_add(1.minute())
                    .ok()?;
                continue;
            }
            if self.seconds & (1 << t.second()) == 0 {
                t = t.checked_add(1.second()).ok()?;
                continue;
            }
            return Some(t);
        }
        None
    }
}

/// `*`, `?` or `*/n`: the field does not restrict the day (Vixie cron's rule).
fn restricted_star(field: &str) -> bool {
    field.starts_with('*') || field == "?"
}

fn parse_value(s: &str, kind: Kind, field: &str) -> Result<u32, CronError> {
    let err = |why: String| CronError::Field {
        field: kind.name,
        text: field.to_string(),
        why,
    };
    let lower = s.to_ascii_lowercase();
    if let Some(i) = kind.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + if kind.name == "month" { 1 } else { 0 });
    }
    let v: u32 = s.parse().map_err(|_| {
        if kind.names.is_empty() {
            err(format!("`{s}` is not a number"))
        } else {
            err(format!(
                "`{s}` is not a number or a name ({})",
                kind.names.join(", ")
            ))
        }
    })?;
    if v < kind.min || v > kind.max {
        return Err(err(format!(
            "{v} is out of range {}-{}",
            kind.min, kind.max
        )));
    }
    Ok(v)
}

/// One field to a bit set: `*`, `?`, `a`, `a-b`, `*/n`, `a/n`, `a-b/n`, comma lists.
fn parse_field(field: &str, kind: Kind) -> Result<u64, CronError> {
    let err = |why: String| CronError::Field {
        field: kind.name,
        text: field.to_string(),
        why,
    };
    let mut bits = 0u64;
    for item in field.split(',') {
        if item.is_empty() {
            return Err(err("empty list item".into()));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| err(format!("step `{s}` is not a number")))?;
                if step == 0 {
                    return Err(err("step must be at least 1".into()));
                }
                (r, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi) = if range == "*"
            || (range == "?" && (kind.name == "day-of-month" || kind.name == "day-of-week"))
        {
            (
                kind.min,
                if kind.name == "day-of-week" {
                    6
                } else {
                    kind.max
                },
            )
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (parse_value(a, kind, field)?, parse_value(b, kind, field)?);
            if a > b {
                return Err(err(format!("range {a}-{b} is backwards; write {b}-{a}")));
            }
            (a, b)
        } else {
            let v = parse_value(range, kind, field)?;
            // `a/n` means a, a+n, ... up to the field's maximum.
            (v, if step.is_some() { kind.max } else { v })
        };
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

/// An expression in a time zone: what a cron job runs on.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: CronExpr,
    tz: TimeZone,
    tz_name: String,
}

impl Schedule {
    /// `tz` is an IANA name (`UTC`, `Europe/Paris`).
    pub fn parse(expr: &str, tz: &str) -> Result<Self, CronError> {
        let expr = CronExpr::parse(expr)?;
        let zone = TimeZone::get(tz).map_err(|_| CronError::TimeZone(tz.to_string()))?;
        Ok(Schedule {
            expr,
            tz: zone,
            tz_name: tz.to_string(),
        })
    }

    pub fn expr(&self) -> &CronExpr {
        &self.expr
    }

    pub fn tz_name(&self) -> &str {
        &self.tz_name
    }

    /// The first fire time strictly after `after` (within 5 years), or `None`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let mut local = self.tz.to_datetime(after);
        for _ in 0..8 {
            let candidate = self.expr.next_local(local, 5)?;
            // Gaps (spring forward) resolve to the instant after the gap; folds to the first.
            let zoned = self
                .tz
                .to_ambiguous_zoned_datetime(candidate)
                .compatible()
                .ok()?;
            if zoned.timestamp() > after {
                return Some(zoned.timestamp());
            }
            local = candidate;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse()
            .unwrap_or_else(|e| panic!("`{s}` is a timestamp: {e}"))
    }

    /// The next `n` fire times after `from`, as RFC 3339 UTC strings.
    fn fires(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(expr, tz).unwrap_or_else(|e| panic!("`{expr}` parses: {e}"));
        let mut t = ts(from);
        let mut out = Vec::new();
        for _ in 0..n {
            match s.next_after(t) {
                Some(next) => {
                    out.push(next.to_string());
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    #[test]
    fn common_schedules() {
        let check = |expr: &str, from: &str, want: &[&str]| {
            assert_eq!(
                fires(expr, "UTC", from, want.len()),
                want,
                "`{expr}` from {from}"
            );
        };
        check(
            "*/5 * * * *",
            "2024-01-01T00:03:10Z",
            &["2024-01-01T00:05:00Z", "2024-01-01T00:10:00Z"],
        );
        check(
            "0 9 * * mon-fri",
            "2024-01-05T10:00:00Z", // a Friday
            &["2024-01-08T09:00:00Z", "2024-01-09T09:00:00Z"],
        );
        check(
            "@monthly",
            "2024-01-15T00:00:00Z",
            &["2024-02-01T00:00:00Z"],
        );
        check(
            "0 0 29 feb *",
            "2024-03-01T00:00:00Z",
            &["2028-02-29T00:00:00Z"],
        );
        check(
            "*/2 * * * * *",
            "2024-01-01T00:00:00.500Z",
            &["2024-01-01T00:00:02Z", "2024-01-01T00:00:04Z"],
        );
        check(
            "30 1,2 * * *",
            "2024-01-01T01:30:00Z",
            &["2024-01-01T02:30:00Z", "2024-01-02T01:30:00Z"],
        );
        // Both day fields restricted: either matches (the 13th, or any Friday).
        check(
            "0 0 13 * fri",
            "2024-09-01T00:00:00Z",
            &[
                "2024-09-06T00:00:00Z",
                "2024-09-13T00:00:00Z",
                "2024-09-20T00:00:00Z",
            ],
        );
        // 7 is Sunday too; names are case-insensitive.
        check(
            "0 12 * JAN 7",
            "2024-01-01T00:00:00Z",
            &["2024-01-07T12:00:00Z"],
        );
        check(
            "0 0 1-10/3 * *",
            "2024-01-01T00:00:00Z",
            &[
                "2024-01-04T00:00:00Z",
                "2024-01-07T00:00:00Z",
                "2024-01-10T00:00:00Z",
                "2024-02-01T00:00:00Z",
            ],
        );
    }

    #[test]
    fn time_zones_and_dst() {
        // 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer.
        assert_eq!(
            fires("0 9 * * *", "Europe/Paris", "2024-03-30T12:00:00Z", 2),
            ["2024-03-31T07:00:00Z", "2024-04-01T07:00:00Z"]
        );
        // 02:30 does not exist on 2024-03-31 in Paris: it fires right after the jump (03:30 CEST).
        assert_eq!(
            fires("30 2 * * *", "Europe/Paris", "2024-03-30T12:00:00Z", 2),
            ["2024-03-31T01:30:00Z", "2024-04-01T00:30:00Z"]
        );
        // 02:30 happens twice on 2024-10-27: it fires once, at the first.
        assert_eq!(
            fires("30 2 * * *", "Europe/Paris", "2024-10-26T12:00:00Z", 2),
            ["2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"]
        );
    }

    #[test]
    fn bad_expressions_name_the_field_and_the_problem() {
        let check = |expr: &str, tz: &str, want: &str| match Schedule::parse(expr, tz) {
            Ok(_) => panic!("`{expr}` should be rejected"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(want),
                    "`{expr}`: `{msg}` should mention `{want}`"
                );
            }
        };
        check("* * * *", "UTC", "expected 5 fields");
        check("* * * * * * *", "UTC", "got 7");
        check(
            "60 * * * *",
            "UTC",
            "minute field `60`: 60 is out of range 0-59",
        );
        check("* 24 * * *", "UTC", "hour field");
        check(
            "* * 0 * *",
            "UTC",
            "day-of-month field `0`: 0 is out of range 1-31",
        );
        check("* * * 13 *", "UTC", "month field");
        check(
            "* * * foo *",
            "UTC",
            "`foo` is not a number or a name (jan, feb",
        );
        check("* * * * 8", "UTC", "day-of-week field");
        check("*/0 * * * *", "UTC", "step must be at least 1");
        check("5-1 * * * *", "UTC", "range 5-1 is backwards");
        check("1,,2 * * * *", "UTC", "empty list item");
        check("@sometimes", "UTC", "unknown macro");
        check("0 0 30 2 *", "UTC", "never fires");
        check(
            "* * * * *",
            "Mars/Olympus",
            "unknown time zone `Mars/Olympus`",
        );
    }

    proptest::proptest! {
        /// The next fire is strictly later, matches the expression, and nothing in between
        /// does (checked minute by minute).
        #[test]
        fn next_is_the_first_match_after(
            minute in proptest::sample::select(vec!["*", "0", "*/7", "5-20/5", "59", "1,31"]),
            hour in proptest::sample::select(vec!["*", "0", "*/3", "9-17", "23"]),
            dom in proptest::sample::select(vec!["*", "1", "15", "31", "*/10"]),
            dow in proptest::sample::select(vec!["*", "0", "1-5", "sat"]),
            start in 1_600_000_000i64..1_800_000_000,
        ) {
            let expr = format!("{minute} {hour} {dom} * {dow}");
            let s = Schedule::parse(&expr, "UTC").unwrap_or_else(|e| panic!("{expr}: {e}"));
            let after = Timestamp::from_second(start).unwrap_or_else(|e| panic!("{e}"));
            let next = s.next_after(after).unwrap_or_else(|| panic!("{expr} fires"));
            proptest::prop_assert!(next > after);
            let local = |t: Timestamp| TimeZone::UTC.to_datetime(t);
            let matches = |dt: DateTime| {
                s.expr.months & (1 << dt.month()) != 0
                    && s.expr.day_matches(dt.date())
                    && s.expr.hours & (1 << dt.hour()) != 0
                    && s.expr.minutes & (1 << dt.minute()) != 0
                    && dt.second() == 0
            };
            proptest::prop_assert!(matches(local(next)), "{expr}: {next} does not match");
            // Nothing matches in between (bounded scan: 3 days of minutes).
            let mut t = after.checked_add(1.second()).unwrap_or(after);
            let scan_end = next.min(after.checked_add(72.hours()).unwrap_or(next));
            while t < scan_end {
                let dt = local(t);
                if dt.second() == 0 {
                    proptest::prop_assert!(!matches(dt), "{expr}: {t} matched before {next}");
                }
                let to_next_minute = 60 - i64::from(dt.second());
                t = t.checked_add(to_next_minute.seconds()).unwrap_or(scan_end);
            }
        }
    }
}
