//! Working-time arithmetic: when is something due that was started at a
//! given instant with a delay such as `3d`, `4h`, `4 working hours`,
//! `2 working days` or `today`?
//!
//! Plain delays are fixed durations. Working delays are counted in the
//! company's [`WorkingCalendar`]: its working days, working hours,
//! holidays and worked weekends, in its own time zone. Working hours are
//! local wall-clock times, so the arithmetic goes through chrono-tz and stays
//! correct across daylight-saving changes.
//!
//! Calendars are validated when the mapping files are loaded; this module
//! still refuses a calendar it cannot use with a [`CalendarError`] instead of
//! panicking, and never searches further than [`MAX_SCAN_DAYS`] days ahead.

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use crate::flow::plan::{Delay, DelayUnit, WorkingCalendar};

/// How many local days a working delay may look ahead (about ten years).
/// A calendar with no working time would otherwise be searched forever.
pub const MAX_SCAN_DAYS: u32 = 3660;

const MINUTES_PER_DAY: u16 = 24 * 60;

/// Why a due time could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("unknown time zone `{0}` in the working calendar; expected an IANA name such as Europe/Moscow")]
    UnknownTimeZone(String),
    #[error(
        "working hours {:02}:{:02}-{:02}:{:02} are not a non-empty range within one day",
        .start / 60, .start % 60, .end / 60, .end % 60
    )]
    InvalidWorkingHours { start: u16, end: u16 },
    #[error("the working calendar has no working time in the {MAX_SCAN_DAYS} days after {from}")]
    NoWorkingTime { from: DateTime<Utc> },
    #[error("the delay does not end within {MAX_SCAN_DAYS} days of {from} in the working calendar")]
    BeyondHorizon { from: DateTime<Utc> },
    #[error("the due time is outside the supported date range")]
    OutOfRange,
}

/// Adds `delay` to `start` (a UTC instant) and returns the due instant.
///
/// Calendar-less delays (`working: false`) are plain durations: a day is
/// always 24 hours, whatever the calendar or daylight saving says.
///
/// Working delays are counted in `calendar`:
/// - `N working hours/minutes` is the instant at which N hours (minutes) of
///   working time have elapsed, counting from `start`, or from the next
///   working period if `start` is outside working time. A delay that ends
///   exactly at the close of a working period is due at that close.
/// - `N working days` (N >= 1) is the end of working hours on the N-th
///   working day after the local date of `start` (that date itself does not
///   count).
/// - `0 working days` (`today`) is the end of working hours today if today is
///   a working day and `start` is before that end, otherwise the end of the
///   next working day.
///
/// With no calendar (`None`) a working delay is treated as the plain
/// duration: the mapping may use `working` wording without declaring a
/// calendar, and a due date is more useful than an error there.
pub fn due_at(
    calendar: Option<&WorkingCalendar>,
    start: DateTime<Utc>,
    delay: Delay,
) -> Result<DateTime<Utc>, CalendarError> {
    match calendar {
        Some(calendar) if delay.working => {
            let calendar = ResolvedCalendar::new(calendar)?;
            match delay.unit {
                DelayUnit::Minutes => calendar.add_working_time(start, minutes(i64::from(delay.amount))?),
                DelayUnit::Hours => calendar.add_working_time(start, minutes(i64::from(delay.amount) * 60)?),
                DelayUnit::Days => calendar.add_working_days(start, delay.amount),
            }
        }
        _ => add_plain_duration(start, delay),
    }
}

/// Adds a delay as a fixed duration.
fn add_plain_duration(start: DateTime<Utc>, delay: Delay) -> Result<DateTime<Utc>, CalendarError> {
    let amount = i64::from(delay.amount);
    let duration = match delay.unit {
        DelayUnit::Minutes => TimeDelta::try_minutes(amount),
        DelayUnit::Hours => TimeDelta::try_hours(amount),
        DelayUnit::Days => TimeDelta::try_days(amount),
    }
    .ok_or(CalendarError::OutOfRange)?;
    start.checked_add_signed(duration).ok_or(CalendarError::OutOfRange)
}

fn minutes(amount: i64) -> Result<TimeDelta, CalendarError> {
    TimeDelta::try_minutes(amount).ok_or(CalendarError::OutOfRange)
}

/// A calendar whose time zone has been looked up and whose working hours
/// have been checked, so the arithmetic below cannot fail on them.
struct ResolvedCalendar<'a> {
    calendar: &'a WorkingCalendar,
    tz: Tz,
}

impl<'a> ResolvedCalendar<'a> {
    fn new(calendar: &'a WorkingCalendar) -> Result<Self, CalendarError> {
        let tz: Tz =
            calendar.timezone.parse().map_err(|_| CalendarError::UnknownTimeZone(calendar.timezone.clone()))?;
        let (start, end) = (calendar.day_start_minute, calendar.day_end_minute);
        // Working hours ending after midnight would overlap the next day's
        // and be counted twice; empty ones would make every day look idle.
        if start >= end || end > MINUTES_PER_DAY {
            return Err(CalendarError::InvalidWorkingHours { start, end });
        }
        Ok(Self { calendar, tz })
    }

    /// Worked weekends win over everything, as in production calendars
    /// where a Saturday is made a working day in exchange for a holiday.
    fn is_working_day(&self, date: NaiveDate) -> bool {
        let calendar = self.calendar;
        if calendar.extra_working_days.contains(&date) {
            return true;
        }
        let weekday = date.weekday().number_from_monday();
        calendar.working_days.iter().any(|&day| u32::from(day) == weekday) && !calendar.holidays.contains(&date)
    }

    /// The working period of `date` as UTC instants `[open, close]`. On a
    /// daylight-saving day it is an hour longer or shorter in real time.
    fn working_period(&self, date: NaiveDate) -> Result<(DateTime<Utc>, DateTime<Utc>), CalendarError> {
        let open = self.local_instant(date, self.calendar.day_start_minute)?;
        let close = self.local_instant(date, self.calendar.day_end_minute)?;
        Ok((open, close))
    }

    /// `minute` minutes after local midnight of `date` (1440 is the next
    /// midnight, for working hours that run to 24:00).
    fn local_instant(&self, date: NaiveDate, minute: u16) -> Result<DateTime<Utc>, CalendarError> {
        let local = date
            .and_time(NaiveTime::MIN)
            .checked_add_signed(TimeDelta::minutes(i64::from(minute)))
            .ok_or(CalendarError::OutOfRange)?;
        local_to_utc(&self.tz, local)
    }

    fn local_date(&self, instant: DateTime<Utc>) -> NaiveDate {
        instant.with_timezone(&self.tz).date_naive()
    }

    /// Walks the working periods from `start` on, spending `amount` of
    /// working time, and returns the instant at which it runs out.
    fn add_working_time(&self, start: DateTime<Utc>, amount: TimeDelta) -> Result<DateTime<Utc>, CalendarError> {
        let mut remaining = amount;
        // Counting never goes back before `cursor`, so a period that overlaps
        // the previous one (odd DST rules) is not counted twice.
        let mut cursor = start;
        let mut found_working_time = false;
        let mut date = self.local_date(start);
        for _ in 0..MAX_SCAN_DAYS {
            if self.is_working_day(date) {
                let (open, close) = self.working_period(date)?;
                let from = open.max(cursor);
                if from < close {
                    found_working_time = true;
                    let available = close - from;
                    // `<=`: a delay that ends exactly at the close is due at
                    // the close, not at the next morning's opening.
                    if remaining <= available {
                        return Ok(from + remaining);
                    }
                    remaining -= available;
                }
                cursor = cursor.max(close);
            }
            date = date.succ_opt().ok_or(CalendarError::OutOfRange)?;
        }
        Err(search_exhausted(start, found_working_time))
    }

    /// The close of the `count`-th working day after the local date of
    /// `start`; `0` is today's close while today is still working, else the
    /// next working day's.
    fn add_working_days(&self, start: DateTime<Utc>, count: u32) -> Result<DateTime<Utc>, CalendarError> {
        let today = self.local_date(start);
        if count == 0 && self.is_working_day(today) {
            let (_, close) = self.working_period(today)?;
            if start < close {
                return Ok(close);
            }
        }
        // `today` past the close behaves like one working day ahead.
        let wanted = count.max(1);
        let mut seen = 0;
        let mut date = today;
        for _ in 0..MAX_SCAN_DAYS {
            date = date.succ_opt().ok_or(CalendarError::OutOfRange)?;
            if self.is_working_day(date) {
                seen += 1;
                if seen == wanted {
                    return self.working_period(date).map(|(_, close)| close);
                }
            }
        }
        Err(search_exhausted(start, seen > 0))
    }
}

/// The error for a search that ran out of days: no working time at all, or
/// not enough of it for the delay.
fn search_exhausted(from: DateTime<Utc>, found_working_time: bool) -> CalendarError {
    if found_working_time { CalendarError::BeyondHorizon { from } } else { CalendarError::NoWorkingTime { from } }
}

/// The UTC instant of a local wall-clock time. Ambiguous times (clocks
/// turned back) take the earlier instant; times skipped by clocks turned
/// forward take the first instant after the gap, i.e. the moment the clocks
/// jumped, which is the earliest instant not before that wall-clock time.
fn local_to_utc(tz: &Tz, local: NaiveDateTime) -> Result<DateTime<Utc>, CalendarError> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(instant) | LocalResult::Ambiguous(instant, _) => Ok(instant.with_timezone(&Utc)),
        LocalResult::None => end_of_gap(tz, local),
    }
}

/// The first instant whose local time is at or after `local`, found by
/// bisection. chrono-tz does not expose its transitions, and a gap may be
/// of any length (Pacific/Apia skipped a whole day in 2011).
fn end_of_gap(tz: &Tz, local: NaiveDateTime) -> Result<DateTime<Utc>, CalendarError> {
    // UTC offsets stay within ±16 hours, so local time is before `local`
    // at `low` and after it at `high`.
    let reach = TimeDelta::hours(25);
    let naive_utc = local.and_utc();
    let mut low = naive_utc.checked_sub_signed(reach).ok_or(CalendarError::OutOfRange)?.timestamp();
    let mut high = naive_utc.checked_add_signed(reach).ok_or(CalendarError::OutOfRange)?.timestamp();
    let is_at_or_after = |seconds: i64| {
        DateTime::from_timestamp(seconds, 0).is_some_and(|instant| instant.with_timezone(tz).naive_local() >= local)
    };
    // Invariant: local time at `low` is before `local`, at `high` not.
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if is_at_or_after(middle) {
            high = middle;
        } else {
            low = middle;
        }
    }
    DateTime::from_timestamp(high, 0).ok_or(CalendarError::OutOfRange)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MON_FRI: [u8; 5] = [1, 2, 3, 4, 5];

    fn calendar(timezone: &str, working_days: &[u8], hours: (u16, u16)) -> WorkingCalendar {
        WorkingCalendar {
            timezone: timezone.to_string(),
            working_days: working_days.to_vec(),
            day_start_minute: hours.0,
            day_end_minute: hours.1,
            holidays: Vec::new(),
            extra_working_days: Vec::new(),
        }
    }

    /// Mon-Fri 09:00-18:00 in Moscow.
    fn moscow() -> WorkingCalendar {
        calendar("Europe/Moscow", &MON_FRI, (9 * 60, 18 * 60))
    }

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    /// A local `YYYY-MM-DD HH:MM` in `timezone` as a UTC instant.
    fn at(timezone: &str, text: &str) -> DateTime<Utc> {
        let tz: Tz = timezone.parse().unwrap();
        let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap();
        tz.from_local_datetime(&local).earliest().unwrap().with_timezone(&Utc)
    }

    fn msk(text: &str) -> DateTime<Utc> {
        at("Europe/Moscow", text)
    }

    fn utc(text: &str) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap().and_utc()
    }

    fn working(amount: u32, unit: DelayUnit) -> Delay {
        Delay { amount, unit, working: true }
    }

    fn plain(amount: u32, unit: DelayUnit) -> Delay {
        Delay { amount, unit, working: false }
    }

    const TODAY: Delay = Delay { amount: 0, unit: DelayUnit::Days, working: true };

    #[test]
    fn working_hours_over_a_weekend() {
        // Friday 16:00 + 4 working hours: 2 on Friday, 2 on Monday.
        let due = due_at(Some(&moscow()), msk("2025-03-07 16:00"), working(4, DelayUnit::Hours)).unwrap();
        assert_eq!(due, msk("2025-03-10 11:00"));
    }

    #[test]
    fn working_hours_ending_at_close_stay_on_that_day() {
        let due = due_at(Some(&moscow()), msk("2025-03-05 14:00"), working(4, DelayUnit::Hours)).unwrap();
        assert_eq!(due, msk("2025-03-05 18:00"));
    }

    #[test]
    fn working_time_counts_from_the_next_opening() {
        let cal = moscow();
        let before_opening = due_at(Some(&cal), msk("2025-03-05 07:00"), working(1, DelayUnit::Hours)).unwrap();
        assert_eq!(before_opening, msk("2025-03-05 10:00"));
        let after_close = due_at(Some(&cal), msk("2025-03-05 18:00"), working(30, DelayUnit::Minutes)).unwrap();
        assert_eq!(after_close, msk("2025-03-06 09:30"));
        let saturday = due_at(Some(&cal), msk("2025-03-08 12:00"), working(90, DelayUnit::Minutes)).unwrap();
        assert_eq!(saturday, msk("2025-03-10 10:30"));
    }

    #[test]
    fn working_hours_use_a_worked_weekend_and_skip_holidays() {
        // Russia 2025: Saturday 1 November was worked, 3 and 4 November were off.
        let mut cal = moscow();
        cal.extra_working_days = vec![date("2025-11-01")];
        cal.holidays = vec![date("2025-11-03"), date("2025-11-04")];
        let friday = due_at(Some(&cal), msk("2025-10-31 16:00"), working(4, DelayUnit::Hours)).unwrap();
        assert_eq!(friday, msk("2025-11-01 11:00"));
        let saturday = due_at(Some(&cal), msk("2025-11-01 16:00"), working(4, DelayUnit::Hours)).unwrap();
        assert_eq!(saturday, msk("2025-11-05 11:00"));
    }

    #[test]
    fn today_before_and_after_working_hours() {
        let cal = moscow();
        assert_eq!(due_at(Some(&cal), msk("2025-03-05 07:00"), TODAY).unwrap(), msk("2025-03-05 18:00"));
        assert_eq!(due_at(Some(&cal), msk("2025-03-05 10:00"), TODAY).unwrap(), msk("2025-03-05 18:00"));
        assert_eq!(due_at(Some(&cal), msk("2025-03-05 18:00"), TODAY).unwrap(), msk("2025-03-06 18:00"));
        assert_eq!(due_at(Some(&cal), msk("2025-03-05 19:00"), TODAY).unwrap(), msk("2025-03-06 18:00"));
        assert_eq!(due_at(Some(&cal), msk("2025-03-07 19:00"), TODAY).unwrap(), msk("2025-03-10 18:00"));
        assert_eq!(due_at(Some(&cal), msk("2025-03-08 10:00"), TODAY).unwrap(), msk("2025-03-10 18:00"));
    }

    #[test]
    fn today_on_a_holiday_is_the_next_working_day() {
        let mut cal = moscow();
        cal.holidays = vec![date("2025-03-05")];
        assert_eq!(due_at(Some(&cal), msk("2025-03-05 10:00"), TODAY).unwrap(), msk("2025-03-06 18:00"));
    }

    #[test]
    fn two_working_days() {
        let cal = moscow();
        let two = working(2, DelayUnit::Days);
        // Thursday: Friday is the first, Monday the second.
        assert_eq!(due_at(Some(&cal), msk("2025-03-06 10:00"), two).unwrap(), msk("2025-03-10 18:00"));
        // The start's day never counts, even when it is not over.
        assert_eq!(due_at(Some(&cal), msk("2025-03-04 07:00"), two).unwrap(), msk("2025-03-06 18:00"));
        // From a weekend: Monday and Tuesday.
        assert_eq!(due_at(Some(&cal), msk("2025-03-08 10:00"), two).unwrap(), msk("2025-03-11 18:00"));
    }

    #[test]
    fn working_days_skip_holidays_and_use_worked_weekends() {
        let mut cal = moscow();
        cal.extra_working_days = vec![date("2025-11-01")];
        cal.holidays = vec![date("2025-11-03"), date("2025-11-04")];
        let two = working(2, DelayUnit::Days);
        assert_eq!(due_at(Some(&cal), msk("2025-10-31 10:00"), two).unwrap(), msk("2025-11-05 18:00"));
    }

    #[test]
    fn plain_delays_are_fixed_durations() {
        let cal = moscow();
        let start = utc("2025-03-07 13:00");
        assert_eq!(due_at(Some(&cal), start, plain(3, DelayUnit::Days)).unwrap(), utc("2025-03-10 13:00"));
        assert_eq!(due_at(Some(&cal), start, plain(4, DelayUnit::Hours)).unwrap(), utc("2025-03-07 17:00"));
        assert_eq!(due_at(None, start, plain(30, DelayUnit::Minutes)).unwrap(), utc("2025-03-07 13:30"));
    }

    #[test]
    fn plain_days_are_24_hours_across_a_dst_change() {
        let cal = calendar("Europe/Berlin", &MON_FRI, (9 * 60, 18 * 60));
        let due = due_at(Some(&cal), at("Europe/Berlin", "2025-03-29 12:00"), plain(1, DelayUnit::Days)).unwrap();
        assert_eq!(due, at("Europe/Berlin", "2025-03-30 13:00"));
    }

    #[test]
    fn working_delay_without_a_calendar_is_a_plain_duration() {
        let start = utc("2025-03-07 16:00");
        assert_eq!(due_at(None, start, working(4, DelayUnit::Hours)).unwrap(), utc("2025-03-07 20:00"));
        assert_eq!(due_at(None, start, working(2, DelayUnit::Days)).unwrap(), utc("2025-03-09 16:00"));
        assert_eq!(due_at(None, start, TODAY).unwrap(), start);
    }

    #[test]
    fn calendar_without_working_days_is_an_error() {
        let cal = calendar("Europe/Moscow", &[], (9 * 60, 18 * 60));
        let start = msk("2025-03-07 16:00");
        for delay in [working(4, DelayUnit::Hours), working(2, DelayUnit::Days), TODAY] {
            assert_eq!(due_at(Some(&cal), start, delay), Err(CalendarError::NoWorkingTime { from: start }));
        }
    }

    #[test]
    fn delays_beyond_the_horizon_are_an_error() {
        let start = msk("2025-03-07 16:00");
        let result = due_at(Some(&moscow()), start, working(u32::MAX, DelayUnit::Hours));
        assert_eq!(result, Err(CalendarError::BeyondHorizon { from: start }));
        let result = due_at(Some(&moscow()), start, working(u32::MAX, DelayUnit::Days));
        assert_eq!(result, Err(CalendarError::BeyondHorizon { from: start }));
        assert_eq!(due_at(None, start, plain(u32::MAX, DelayUnit::Days)), Err(CalendarError::OutOfRange));
    }

    #[test]
    fn unknown_time_zone_and_bad_hours_are_errors() {
        let start = utc("2025-03-07 16:00");
        let cal = calendar("Mars/Olympus", &MON_FRI, (9 * 60, 18 * 60));
        assert_eq!(due_at(Some(&cal), start, TODAY), Err(CalendarError::UnknownTimeZone("Mars/Olympus".to_string())));
        let cal = calendar("Europe/Moscow", &MON_FRI, (18 * 60, 9 * 60));
        assert_eq!(
            due_at(Some(&cal), start, TODAY),
            Err(CalendarError::InvalidWorkingHours { start: 18 * 60, end: 9 * 60 })
        );
        let cal = calendar("Europe/Moscow", &MON_FRI, (0, 1441));
        assert!(matches!(due_at(Some(&cal), start, TODAY), Err(CalendarError::InvalidWorkingHours { .. })));
        // Plain delays do not need the calendar, so a broken one is ignored.
        assert!(due_at(Some(&cal), start, plain(1, DelayUnit::Hours)).is_ok());
    }

    #[test]
    fn working_hours_to_midnight() {
        let cal = calendar("Europe/Moscow", &MON_FRI, (0, MINUTES_PER_DAY));
        assert_eq!(due_at(Some(&cal), msk("2025-03-05 10:00"), TODAY).unwrap(), msk("2025-03-06 00:00"));
        let due = due_at(Some(&cal), msk("2025-03-07 22:00"), working(4, DelayUnit::Hours)).unwrap();
        assert_eq!(due, msk("2025-03-10 02:00"));
    }

    #[test]
    fn berlin_working_hours_across_spring_forward() {
        const BERLIN: &str = "Europe/Berlin";
        let office = calendar(BERLIN, &MON_FRI, (9 * 60, 18 * 60));
        // Friday in CET (UTC+1), Monday in CEST (UTC+2): wall clock 11:00.
        let due = due_at(Some(&office), at(BERLIN, "2025-03-28 16:00"), working(4, DelayUnit::Hours)).unwrap();
        assert_eq!(due, utc("2025-03-31 09:00"));
        assert_eq!(due, at(BERLIN, "2025-03-31 11:00"));

        // Round the clock: the skipped hour 02:00-03:00 is not working time,
        // so four hours of work from Saturday 23:00 end at 04:00 CEST.
        let always = calendar(BERLIN, &[1, 2, 3, 4, 5, 6, 7], (0, MINUTES_PER_DAY));
        let due = due_at(Some(&always), at(BERLIN, "2025-03-29 23:00"), working(4, DelayUnit::Hours)).unwrap();
        assert_eq!(due, utc("2025-03-30 02:00"));
        assert_eq!(due, at(BERLIN, "2025-03-30 04:00"));
    }

    #[test]
    fn berlin_working_hours_across_fall_back() {
        const BERLIN: &str = "Europe/Berlin";
        // 26 October 2025 02:00-03:00 happens twice; the working period
        // 00:00-06:00 is seven real hours long that day.
        let night = calendar(BERLIN, &[7], (0, 6 * 60));
        let due = due_at(Some(&night), at(BERLIN, "2025-10-26 00:00"), working(7, DelayUnit::Hours)).unwrap();
        assert_eq!(due, at(BERLIN, "2025-10-26 06:00"));
        assert_eq!(due, utc("2025-10-26 05:00"));
    }

    #[test]
    fn local_times_in_dst_gap_and_overlap() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let local = |text| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap();
        // 02:30 does not exist on 30 March 2025: clocks jumped 02:00 CET -> 03:00 CEST at 01:00 UTC.
        assert_eq!(local_to_utc(&tz, local("2025-03-30 02:30")).unwrap(), utc("2025-03-30 01:00"));
        // 02:30 happens twice on 26 October 2025: the earlier is in CEST.
        assert_eq!(local_to_utc(&tz, local("2025-10-26 02:30")).unwrap(), utc("2025-10-26 00:30"));
        assert_eq!(local_to_utc(&tz, local("2025-06-01 12:00")).unwrap(), utc("2025-06-01 10:00"));
    }

    #[test]
    fn working_period_closing_inside_the_gap_closes_when_clocks_jump() {
        const BERLIN: &str = "Europe/Berlin";
        // Sunday 01:00-02:30: 02:30 is skipped, so the period ends at the
        // jump (03:00 CEST) after one real hour.
        let cal = calendar(BERLIN, &[7], (60, 150));
        let start = at(BERLIN, "2025-03-30 00:00");
        assert_eq!(due_at(Some(&cal), start, TODAY).unwrap(), utc("2025-03-30 01:00"));
        let due = due_at(Some(&cal), start, working(60, DelayUnit::Minutes)).unwrap();
        assert_eq!(due, utc("2025-03-30 01:00"));
        // The 61st minute falls into the next Sunday's period.
        let due = due_at(Some(&cal), start, working(61, DelayUnit::Minutes)).unwrap();
        assert_eq!(due, at(BERLIN, "2025-04-06 01:01"));
    }
}
