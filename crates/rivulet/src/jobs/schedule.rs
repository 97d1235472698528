//! When a scheduler fires (J-4): a cron expression in a time zone, or a fixed interval.
//! The tick arithmetic lives here, in Rust, for every backend; stores only keep the
//! times it computes.
//!
//! * **Cron** expressions have five fields (minute granularity: `m h dom mon dow`) or
//!   six (with seconds first: `s m h dom mon dow`), parsed by the `croner` crate
//!   (POSIX/Vixie rules, plus `L`, `W`, `#`, names and `@hourly`-style nicknames). They
//!   are read in an IANA time zone (`chrono-tz`'s built-in database; default `UTC`).
//! * **Intervals** tick at the multiples of the interval since the Unix epoch (in whole
//!   milliseconds), so every process computes the same ticks without talking to the
//!   others; they are real time and know nothing of time zones.
//!
//! Daylight saving time (tested below on Europe/Berlin's changes of 2025):
//!
//! * **A tick in a skipped hour** (the clock jumps from 02:00 to 03:00): a *fixed-time*
//!   expression (one that names its hour, such as `0 30 2 * * *`) fires once at the first
//!   instant after the gap (03:00 local), so a daily job is not lost that day; an
//!   expression that repeats within the hour (`0 */15 * * * *`, `* * * * *`) has no
//!   ticks in the gap and goes on after it (…, 01:45, 03:00, …): the ticks are 15 real
//!   minutes apart throughout.
//! * **A tick in a repeated hour** (the clock goes back from 03:00 to 02:00): a
//!   fixed-time expression fires **once**, at the first of the two instants (02:30
//!   summer time); an expression that repeats within the hour fires in both halves
//!   (every 15 real minutes right through).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// The longest interval of an [`every`](crate::jobs::SchedulerBuilder::every)
/// scheduler: about 30 years.
pub const MAX_INTERVAL: Duration = crate::deadline::FOREVER;

/// When a scheduler fires.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Schedule {
    /// A cron expression (five fields, or six with seconds first), read in an IANA time
    /// zone.
    Cron {
        /// The expression, as given (whitespace between fields normalised to one space).
        expr: String,
        /// The IANA time zone name, such as `Europe/Berlin` (default `UTC`).
        tz: String,
    },
    /// Every `interval`, at the multiples of the interval since the Unix epoch.
    Every(Duration),
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron { expr, tz } => write!(f, "cron {expr:?} in {tz}"),
            Schedule::Every(d) => write!(f, "every {d:?}"),
        }
    }
}

/// Why a schedule was refused (in [`Error::InvalidSchedule`](crate::Error::InvalidSchedule)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// Neither `cron` nor `every` was given.
    #[error("a scheduler needs a schedule: call .cron(…) or .every(…)")]
    Missing,
    /// Both `cron` and `every` were given.
    #[error("a scheduler has either a cron expression or an interval, not both")]
    Both,
    /// The cron expression does not parse.
    #[error("invalid cron expression {expr:?}: {reason}")]
    Cron {
        /// The expression.
        expr: String,
        /// What the parser said.
        reason: String,
    },
    /// The time zone is not an IANA time zone name.
    #[error("unknown time zone {0:?} (use an IANA name such as \"Europe/Berlin\")")]
    UnknownTimeZone(String),
    /// A time zone was given for an interval, which is real time.
    #[error("a time zone applies to cron expressions only; intervals are real time")]
    TimeZoneWithInterval,
    /// The interval is shorter than 1 ms.
    #[error("an interval must be at least 1 ms")]
    ZeroInterval,
    /// The interval is longer than [`MAX_INTERVAL`].
    #[error("an interval must be at most 30 years")]
    IntervalTooLong,
    /// The expression has no tick after now (for example `0 0 30 2 *`, February 30th).
    #[error("cron expression {0:?} never fires")]
    NeverFires(String),
}

/// A schedule, parsed: what computes ticks.
#[derive(Debug, Clone)]
pub(crate) enum Compiled {
    Cron { cron: Box<Cron>, tz: Tz },
    Every { ms: u64 },
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

impl Schedule {
    /// A cron schedule; the expression's whitespace is normalised.
    pub(crate) fn cron(expr: &str, tz: Option<&str>) -> Schedule {
        Schedule::Cron {
            expr: expr.split_whitespace().collect::<Vec<_>>().join(" "),
            tz: tz.unwrap_or("UTC").to_owned(),
        }
    }

    /// Parses and checks the schedule.
    pub(crate) fn compile(&self) -> Result<Compiled, ScheduleError> {
        match self {
            Schedule::Cron { expr, tz } => {
                let zone =
                    Tz::from_str(tz).map_err(|_| ScheduleError::UnknownTimeZone(tz.clone()))?;
                let cron = parser().parse(expr).map_err(|e| ScheduleError::Cron {
                    expr: expr.clone(),
                    reason: e.to_string(),
                })?;
                Ok(Compiled::Cron {
                    cron: Box::new(cron),
                    tz: zone,
                })
            }
            Schedule::Every(d) => {
                if *d > MAX_INTERVAL {
                    return Err(ScheduleError::IntervalTooLong);
                }
                let ms = crate::deadline::millis(*d);
                if ms == 0 {
                    return Err(ScheduleError::ZeroInterval);
                }
                Ok(Compiled::Every { ms })
            }
        }
    }

    /// The schedule as stored: `cron` with its expression and zone, or `every` with
    /// its milliseconds. Two schedulers with the same text have the same ticks.
    pub(crate) fn to_wire(&self) -> (String, String, String) {
        match self {
            Schedule::Cron { expr, tz } => ("cron".into(), expr.clone(), tz.clone()),
            Schedule::Every(d) => (
                "every".into(),
                crate::deadline::millis(*d).to_string(),
                String::new(),
            ),
        }
    }

    /// The schedule from its stored form (see [`to_wire`](Self::to_wire)).
    pub(crate) fn from_wire(kind: &str, value: &str, tz: &str) -> Option<Schedule> {
        match kind {
            "cron" => Some(Schedule::Cron {
                expr: value.to_owned(),
                tz: tz.to_owned(),
            }),
            "every" => value
                .parse::<u64>()
                .ok()
                .map(|ms| Schedule::Every(Duration::from_millis(ms))),
            _ => None,
        }
    }
}

fn at(tz: Tz, ms: u64) -> Option<DateTime<Tz>> {
    let ms = i64::try_from(ms).ok()?;
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.with_timezone(&tz))
}

fn ms_of(t: &DateTime<Tz>) -> Option<u64> {
    u64::try_from(t.timestamp_millis()).ok()
}

impl Compiled {
    /// The first tick strictly after `t_ms` (ms since the epoch); `None` when there is
    /// none (a cron expression that never matches again).
    pub(crate) fn next_after(&self, t_ms: u64) -> Option<u64> {
        match self {
            Compiled::Every { ms } => (t_ms / ms).checked_add(1)?.checked_mul(*ms),
            Compiled::Cron { cron, tz } => {
                // Cron ticks are whole seconds: the first tick after the second `t_ms`
                // is in is also the first after `t_ms`.
                let start = at(*tz, t_ms - t_ms % 1000)?;
                let next = cron.find_next_occurrence(&start, false).ok()?;
                ms_of(&next)
            }
        }
    }

    /// The latest tick at or before `t_ms`; `None` when there is none.
    pub(crate) fn latest_at_or_before(&self, t_ms: u64) -> Option<u64> {
        match self {
            Compiled::Every { ms } => Some(t_ms - t_ms % ms),
            Compiled::Cron { cron, tz } => {
                let start = at(*tz, t_ms - t_ms % 1000)?;
                let prev = cron.find_previous_occurrence(&start, true).ok()?;
                ms_of(&prev)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> u64 {
        let t = NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|d| d.and_hms_opt(h, mi, s))
            .expect("a valid date");
        u64::try_from(t.and_utc().timestamp_millis()).expect("after the epoch")
    }

    fn berlin(expr: &str) -> Compiled {
        Schedule::cron(expr, Some("Europe/Berlin"))
            .compile()
            .expect("compiles")
    }

    /// The ticks after `from`, `n` of them.
    fn ticks(c: &Compiled, from: u64, n: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut t = from;
        for _ in 0..n {
            t = c.next_after(t).expect("a next tick");
            out.push(t);
        }
        out
    }

    #[test]
    fn intervals_tick_at_multiples_of_the_interval_since_the_epoch() {
        let c = Schedule::Every(Duration::from_millis(250))
            .compile()
            .expect("compiles");
        assert_eq!(c.next_after(1_000), Some(1_250));
        assert_eq!(c.next_after(1_001), Some(1_250));
        assert_eq!(c.next_after(1_249), Some(1_250));
        assert_eq!(c.latest_at_or_before(1_250), Some(1_250));
        assert_eq!(c.latest_at_or_before(1_499), Some(1_250));
        assert_eq!(c.next_after(u64::MAX), None);
    }

    #[test]
    fn five_and_six_field_expressions() {
        let c = Schedule::cron("*/5 * * * *", None).compile().expect("five");
        let t0 = utc(2025, 1, 1, 10, 2, 30);
        assert_eq!(c.next_after(t0), Some(utc(2025, 1, 1, 10, 5, 0)));
        assert_eq!(c.latest_at_or_before(t0), Some(utc(2025, 1, 1, 10, 0, 0)));
        let c = Schedule::cron("0 */5  * * * *", None)
            .compile()
            .expect("six");
        assert_eq!(c.next_after(t0), Some(utc(2025, 1, 1, 10, 5, 0)));
        let c = Schedule::cron("*/10 * * * * *", None)
            .compile()
            .expect("six");
        assert_eq!(c.next_after(t0 + 500), Some(utc(2025, 1, 1, 10, 2, 40)));
        assert_eq!(
            c.latest_at_or_before(t0 + 999),
            Some(utc(2025, 1, 1, 10, 2, 30)),
            "a tick at the very second counts as at or before"
        );
        assert_eq!(
            Schedule::cron(" 0  */5 * * * * ", None),
            Schedule::cron("0 */5 * * * *", None),
            "whitespace is normalised, so re-upserting the same text changes nothing"
        );
    }

    #[test]
    fn time_zones_move_the_ticks() {
        // 09:00 in Berlin is 08:00 UTC in winter, 07:00 in summer.
        let c = berlin("0 9 * * *");
        assert_eq!(
            c.next_after(utc(2025, 1, 15, 0, 0, 0)),
            Some(utc(2025, 1, 15, 8, 0, 0))
        );
        assert_eq!(
            c.next_after(utc(2025, 7, 15, 0, 0, 0)),
            Some(utc(2025, 7, 15, 7, 0, 0))
        );
        let ny = Schedule::cron("0 9 * * *", Some("America/New_York"))
            .compile()
            .expect("compiles");
        assert_eq!(
            ny.next_after(utc(2025, 1, 15, 0, 0, 0)),
            Some(utc(2025, 1, 15, 14, 0, 0))
        );
    }

    // Europe/Berlin, 2025: summer time starts on Sunday 30 March (02:00 CET → 03:00
    // CEST, 01:00 UTC) and ends on Sunday 26 October (03:00 CEST → 02:00 CET, 01:00 UTC).

    #[test]
    fn dst_gap_a_fixed_time_tick_fires_at_the_end_of_the_gap() {
        let c = berlin("0 30 2 * * *");
        let days = ticks(&c, utc(2025, 3, 28, 12, 0, 0), 3);
        assert_eq!(
            days,
            vec![
                utc(2025, 3, 29, 1, 30, 0), // 02:30 CET
                utc(2025, 3, 30, 1, 0, 0),  // 02:30 does not exist: 03:00 CEST
                utc(2025, 3, 31, 0, 30, 0), // 02:30 CEST
            ]
        );
        // Catching up just after the gap finds that same tick.
        assert_eq!(
            c.latest_at_or_before(utc(2025, 3, 30, 1, 0, 30)),
            Some(utc(2025, 3, 30, 1, 0, 0))
        );
    }

    #[test]
    fn dst_gap_a_repeating_expression_skips_the_missing_hour() {
        let c = berlin("0 */30 * * * *");
        let t = ticks(&c, utc(2025, 3, 30, 0, 15, 0), 3);
        assert_eq!(
            t,
            vec![
                utc(2025, 3, 30, 0, 30, 0), // 01:30 CET
                utc(2025, 3, 30, 1, 0, 0),  // 03:00 CEST (02:00 and 02:30 do not exist)
                utc(2025, 3, 30, 1, 30, 0), // 03:30 CEST
            ],
            "30 real minutes apart across the gap"
        );
    }

    #[test]
    fn dst_overlap_a_fixed_time_tick_fires_once_at_the_first_instant() {
        let c = berlin("0 30 2 * * *");
        let days = ticks(&c, utc(2025, 10, 25, 12, 0, 0), 2);
        assert_eq!(
            days,
            vec![
                utc(2025, 10, 26, 0, 30, 0), // 02:30 CEST, the first of the two
                utc(2025, 10, 27, 1, 30, 0), // the next day, 02:30 CET
            ],
            "not again at 02:30 CET on the 26th"
        );
        // Catching up during the second 02:30 does not find a second tick of the day.
        assert_eq!(
            c.latest_at_or_before(utc(2025, 10, 26, 1, 45, 0)),
            Some(utc(2025, 10, 26, 0, 30, 0))
        );
    }

    #[test]
    fn dst_overlap_a_repeating_expression_fires_in_both_halves() {
        let c = berlin("0 */30 * * * *");
        let t = ticks(&c, utc(2025, 10, 25, 23, 45, 0), 5);
        assert_eq!(
            t,
            vec![
                utc(2025, 10, 26, 0, 0, 0),  // 02:00 CEST
                utc(2025, 10, 26, 0, 30, 0), // 02:30 CEST
                utc(2025, 10, 26, 1, 0, 0),  // 02:00 CET
                utc(2025, 10, 26, 1, 30, 0), // 02:30 CET
                utc(2025, 10, 26, 2, 0, 0),  // 03:00 CET
            ]
        );
    }

    #[test]
    fn intervals_ignore_dst() {
        let c = Schedule::Every(Duration::from_secs(3600))
            .compile()
            .expect("compiles");
        let t = ticks(&c, utc(2025, 3, 30, 0, 30, 0), 2);
        assert_eq!(
            t,
            vec![utc(2025, 3, 30, 1, 0, 0), utc(2025, 3, 30, 2, 0, 0)]
        );
    }

    #[test]
    fn bad_schedules_are_refused_with_their_reason() {
        assert!(matches!(
            Schedule::cron("not a cron", None).compile(),
            Err(ScheduleError::Cron { .. })
        ));
        assert!(matches!(
            Schedule::cron("61 * * * *", None).compile(),
            Err(ScheduleError::Cron { .. })
        ));
        assert!(matches!(
            Schedule::cron("* * * * * * * *", None).compile(),
            Err(ScheduleError::Cron { .. })
        ));
        assert_eq!(
            Schedule::cron("* * * * *", Some("Mars/Olympus"))
                .compile()
                .err(),
            Some(ScheduleError::UnknownTimeZone("Mars/Olympus".into()))
        );
        assert_eq!(
            Schedule::Every(Duration::ZERO).compile().err(),
            Some(ScheduleError::ZeroInterval)
        );
        assert_eq!(
            Schedule::Every(Duration::from_micros(999)).compile().err(),
            Some(ScheduleError::ZeroInterval)
        );
        assert_eq!(
            Schedule::Every(MAX_INTERVAL + Duration::from_secs(1))
                .compile()
                .err(),
            Some(ScheduleError::IntervalTooLong)
        );
        let feb30 = Schedule::cron("0 0 30 2 *", None)
            .compile()
            .expect("parses");
        assert_eq!(feb30.next_after(utc(2025, 1, 1, 0, 0, 0)), None);
    }

    #[test]
    fn the_wire_form_round_trips() {
        for s in [
            Schedule::cron("0 */5 * * * *", Some("Europe/Berlin")),
            Schedule::Every(Duration::from_millis(150)),
        ] {
            let (k, v, tz) = s.to_wire();
            assert_eq!(Schedule::from_wire(&k, &v, &tz), Some(s));
        }
        assert_eq!(Schedule::from_wire("weekly", "1", ""), None);
    }
}
