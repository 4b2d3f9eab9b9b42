//! Schedules: a cron expression (`m h dom mon dow`, croner) in an IANA time zone, or a
//! shorthand — `hourly`, `daily at HH:MM` (in the time zone), `every N minutes`
//! (aligned to multiples of N minutes since the Unix epoch, so every worker agrees).

use chrono::TimeZone;
use std::str::FromStr;

#[derive(Debug, Clone)]
pub enum Schedule {
    Cron(Box<croner::Cron>, chrono_tz::Tz),
    EveryMinutes(i64),
}

/// `Ok(None)`: no schedule (run on demand only). Errors name the field at fault.
pub fn parse(schedule: &str, timezone: &str) -> Result<Option<Schedule>, (&'static str, String)> {
    let s = schedule.trim().to_ascii_lowercase();
    if s.is_empty() {
        return Ok(None);
    }
    let tz: chrono_tz::Tz = timezone.trim().parse().map_err(|_| {
        (
            "timezone",
            format!("Unknown time zone {:?}.", timezone.trim()),
        )
    })?;
    if let Some(n) = s
        .strip_prefix("every ")
        .and_then(|r| r.strip_suffix(" minutes").or(r.strip_suffix(" minute")))
    {
        let n: i64 = n
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=1440).contains(n))
            .ok_or(("schedule", "every N minutes: N from 1 to 1440.".to_string()))?;
        return Ok(Some(Schedule::EveryMinutes(n)));
    }
    let pattern = if s == "hourly" {
        "0 * * * *".to_string()
    } else if let Some(t) = s.strip_prefix("daily at ") {
        let (h, m) = t
            .split_once(':')
            .and_then(|(h, m)| Some((h.parse::<u32>().ok()?, m.parse::<u32>().ok()?)))
            .filter(|(h, m)| *h < 24 && *m < 60)
            .ok_or((
                "schedule",
                "daily at HH:MM, for example daily at 02:30.".to_string(),
            ))?;
        format!("{m} {h} * * *")
    } else {
        schedule.trim().to_string()
    };
    if pattern.split_whitespace().count() != 5 {
        return Err((
            "schedule",
            "A cron expression has five fields: minute hour day-of-month month day-of-week.".into(),
        ));
    }
    let cron = croner::Cron::from_str(&pattern)
        .map_err(|e| ("schedule", format!("Not a valid cron expression: {e}")))?;
    Ok(Some(Schedule::Cron(Box::new(cron), tz)))
}

impl Schedule {
    /// The first run strictly after `after_ms` (unix ms).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Schedule::EveryMinutes(n) => {
                let step = n * 60_000;
                Some((after_ms.div_euclid(step) + 1) * step)
            }
            Schedule::Cron(cron, tz) => {
                let start = chrono::Utc
                    .timestamp_millis_opt(after_ms)
                    .single()?
                    .with_timezone(tz);
                cron.find_next_occurrence(&start, false)
                    .ok()
                    .map(|t| t.timestamp_millis())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV_25_2025: i64 = 1_764_028_800_000; // 2025-11-25 00:00:00 UTC

    #[test]
    fn cron_runs_in_its_time_zone() {
        let s = parse("0 2 * * *", "Europe/Berlin").unwrap().unwrap();
        // 02:00 in Berlin (CET, UTC+1) is 01:00 UTC.
        assert_eq!(s.next_after(NOV_25_2025), Some(NOV_25_2025 + 3_600_000));
        let utc = parse("0 2 * * *", "UTC").unwrap().unwrap();
        assert_eq!(
            utc.next_after(NOV_25_2025),
            Some(NOV_25_2025 + 2 * 3_600_000)
        );
    }

    #[test]
    fn shorthands_mean_what_they_say() {
        let daily = parse("daily at 02:30", "UTC").unwrap().unwrap();
        assert_eq!(daily.next_after(NOV_25_2025), Some(NOV_25_2025 + 9_000_000));
        let hourly = parse("hourly", "UTC").unwrap().unwrap();
        assert_eq!(
            hourly.next_after(NOV_25_2025 + 1),
            Some(NOV_25_2025 + 3_600_000)
        );
        let every = parse("every 15 minutes", "UTC").unwrap().unwrap();
        assert_eq!(
            every.next_after(NOV_25_2025 + 60_000),
            Some(NOV_25_2025 + 900_000)
        );
        assert_eq!(
            every.next_after(NOV_25_2025),
            Some(NOV_25_2025 + 900_000),
            "strictly after"
        );
    }

    #[test]
    fn a_spring_forward_gap_still_runs_once() {
        // 2026-03-29: Berlin skips 02:00–03:00. A 02:30 schedule still runs that day.
        let s = parse("30 2 * * *", "Europe/Berlin").unwrap().unwrap();
        let mar_29_2026_utc_midnight = 1_774_742_400_000;
        let next = s.next_after(mar_29_2026_utc_midnight).unwrap();
        assert!(
            next > mar_29_2026_utc_midnight && next < mar_29_2026_utc_midnight + 24 * 3_600_000,
            "{next}"
        );
    }

    #[test]
    fn bad_schedules_name_the_field() {
        assert_eq!(parse("0 2 * *", "UTC").unwrap_err().0, "schedule");
        assert_eq!(parse("61 * * * *", "UTC").unwrap_err().0, "schedule");
        assert_eq!(
            parse("0 2 * * *", "Mars/Olympus").unwrap_err().0,
            "timezone"
        );
        assert_eq!(parse("every 0 minutes", "UTC").unwrap_err().0, "schedule");
        assert!(parse("", "UTC").unwrap().is_none());
    }
}
