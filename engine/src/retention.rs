//! Which snapshots a retention policy keeps, and why.
//!
//! Rules, as in restic and Proxmox Backup Server: `last N` keeps the N newest snapshots;
//! `hourly`/`daily`/`weekly`/`monthly`/`yearly N` keep the newest snapshot of each of the
//! N most recent hours/days/ISO weeks/months/years *that have a snapshot* (periods are
//! counted, not looked back from today, so days without a backup never make older
//! snapshots expire); `floor N` keeps the N newest snapshots whatever the other rules
//! say, so a policy with only, say, `monthly 12` still keeps what its last backups made.
//! A snapshot is kept if any rule keeps it; the reasons list every rule that did.
//! Periods are civil time in the given zone.
//!
//! Rules apply to each group separately ([`group_of`]): snapshots of one source and
//! selection, made by one policy (or by hand), so pruning one policy's history never
//! touches another's. The same function drives the console's preview and `prune`, so
//! the preview is exactly what pruning does.

use crate::model::Snapshot;
use chrono::{Datelike, TimeZone, Timelike};
use serde::Serialize;

pub use tablesafe_types::KeepRules;

/// The period rules of `k` (`floor` is not one).
fn periods(k: &KeepRules) -> [(Period, u32); 6] {
    [
        (Period::Last, k.last),
        (Period::Hourly, k.hourly),
        (Period::Daily, k.daily),
        (Period::Weekly, k.weekly),
        (Period::Monthly, k.monthly),
        (Period::Yearly, k.yearly),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Last => "last",
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The period a time falls in, and how to show it.
    fn bucket(self, time_ms: i64, index: usize, tz: chrono_tz::Tz) -> String {
        let t = tz
            .timestamp_millis_opt(time_ms)
            .single()
            .unwrap_or_else(|| tz.timestamp_millis_opt(0).unwrap());
        match self {
            Period::Last => format!("#{index}"),
            Period::Hourly => format!(
                "{:04}-{:02}-{:02} {:02}h",
                t.year(),
                t.month(),
                t.day(),
                t.hour()
            ),
            Period::Daily => format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day()),
            Period::Weekly => {
                let w = t.iso_week();
                format!("{:04}-W{:02}", w.year(), w.week())
            }
            Period::Monthly => format!("{:04}-{:02}", t.year(), t.month()),
            Period::Yearly => format!("{:04}", t.year()),
        }
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub time_ms: i64,
    pub group: String,
    pub keep: bool,
    /// Every rule that keeps it ("daily 2025-11-24", "last #1", "floor"); empty when
    /// it goes.
    pub reasons: Vec<String>,
}

/// The group a snapshot's retention is decided in: source, selection, and the policy or
/// purpose recorded in its tags.
pub fn group_of(s: &Snapshot) -> String {
    let sel = serde_json::to_string(&s.selection).unwrap_or_default();
    let by = match (
        s.tags.get("policy-id"),
        s.tags.get("policy"),
        s.tags.get("reason"),
    ) {
        (Some(id), _, _) => format!("policy #{id}"),
        (None, Some(name), _) => format!("policy {name}"),
        (None, None, Some(reason)) => reason.clone(),
        (None, None, None) => "by hand".into(),
    };
    format!("{} {sel} ({by})", s.source.url)
}

/// Decides every snapshot (`(id, time_ms, group)`), newest first in the result.
pub fn decide(
    snapshots: &[(String, i64, String)],
    rules: &KeepRules,
    tz: chrono_tz::Tz,
) -> Vec<Decision> {
    let mut sorted: Vec<&(String, i64, String)> = snapshots.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let mut out: Vec<Decision> = sorted
        .iter()
        .map(|(id, t, g)| Decision {
            id: id.clone(),
            time_ms: *t,
            group: g.clone(),
            keep: false,
            reasons: Vec::new(),
        })
        .collect();
    let mut groups: Vec<&String> = out.iter().map(|d| &d.group).collect();
    groups.sort();
    groups.dedup();
    let groups: Vec<String> = groups.into_iter().cloned().collect();
    for group in &groups {
        let members: Vec<usize> = (0..out.len()).filter(|&i| &out[i].group == group).collect();
        for (period, n) in periods(rules) {
            let mut left = n;
            let mut last_bucket: Option<String> = None;
            for (index, &i) in members.iter().enumerate() {
                if left == 0 {
                    break;
                }
                let b = period.bucket(out[i].time_ms, index + 1, tz);
                if last_bucket.as_ref() != Some(&b) {
                    out[i].keep = true;
                    out[i].reasons.push(format!("{} {b}", period.name()));
                    left -= 1;
                    last_bucket = Some(b);
                }
            }
        }
        for &i in members.iter().take(rules.floor as usize) {
            out[i].keep = true;
            out[i].reasons.push("floor".into());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    // 2026-01-01T00:00:00Z, a Thursday.
    const T0: i64 = 1_767_225_600_000;

    fn snaps(times: &[i64]) -> Vec<(String, i64, String)> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("s{i:02}"), *t, "g".to_string()))
            .collect()
    }

    fn kept(d: &[Decision]) -> Vec<String> {
        let mut k: Vec<String> = d.iter().filter(|d| d.keep).map(|d| d.id.clone()).collect();
        k.sort();
        k
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_with_a_backup() {
        // Four backups a day (00, 06, 12, 18h) for 10 days.
        let times: Vec<i64> = (0..40).map(|i| T0 + i * 6 * HOUR).collect();
        let rules = KeepRules {
            daily: 3,
            ..Default::default()
        };
        let d = decide(&snaps(&times), &rules, chrono_tz::UTC);
        // The 18h backups of the last three days: s39, s35, s31.
        assert_eq!(kept(&d), vec!["s31", "s35", "s39"]);
        let s35 = d.iter().find(|d| d.id == "s35").unwrap();
        assert_eq!(s35.reasons, vec!["daily 2026-01-09"]);
    }

    #[test]
    fn days_without_backups_do_not_expire_older_ones() {
        // Backups on Jan 1, 2 and 3, then nothing for a month.
        let times = vec![T0, T0 + DAY, T0 + 2 * DAY];
        let rules = KeepRules {
            daily: 3,
            ..Default::default()
        };
        let d = decide(&snaps(&times), &rules, chrono_tz::UTC);
        assert_eq!(kept(&d).len(), 3);
    }

    #[test]
    fn rules_combine_and_every_reason_is_listed() {
        let times: Vec<i64> = (0..60).map(|i| T0 + i * DAY).collect(); // Jan 1 .. Mar 1
        let rules = KeepRules {
            last: 2,
            weekly: 2,
            monthly: 3,
            yearly: 1,
            ..Default::default()
        };
        let d = decide(&snaps(&times), &rules, chrono_tz::UTC);
        let newest = &d[0];
        assert_eq!(newest.id, "s59");
        assert_eq!(
            newest.reasons,
            vec![
                "last #1",
                "weekly 2026-W09",
                "monthly 2026-03",
                "yearly 2026"
            ]
        );
        // last: s59, s58. Weekly: W09 runs Mon Feb 23 .. Sun Mar 1, so s59 and the
        // newest of W08, Sun Feb 22 (s52). Monthly: s59 (Mar), s58 (Feb 28), s30 (Jan 31).
        assert_eq!(kept(&d), vec!["s30", "s52", "s58", "s59"]);
        assert!(d.iter().filter(|d| !d.keep).all(|d| d.reasons.is_empty()));
    }

    #[test]
    fn floor_keeps_the_newest_whatever_the_rules() {
        let times: Vec<i64> = (0..5).map(|i| T0 + i * HOUR).collect();
        let rules = KeepRules {
            yearly: 1,
            floor: 3,
            ..Default::default()
        };
        let d = decide(&snaps(&times), &rules, chrono_tz::UTC);
        assert_eq!(kept(&d), vec!["s02", "s03", "s04"]);
        assert_eq!(d[0].reasons, vec!["yearly 2026", "floor"]);
        assert_eq!(d[2].reasons, vec!["floor"]);
    }

    #[test]
    fn days_are_civil_days_in_the_zone() {
        // 23:30 UTC on Jan 1 is already Jan 2 in Berlin: the two snapshots share a day.
        let times = vec![T0 + 23 * HOUR + HOUR / 2, T0 + DAY + 10 * HOUR];
        let rules = KeepRules {
            daily: 5,
            ..Default::default()
        };
        assert_eq!(
            kept(&decide(&snaps(&times), &rules, chrono_tz::UTC)).len(),
            2
        );
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(kept(&decide(&snaps(&times), &rules, berlin)), vec!["s01"]);
    }

    #[test]
    fn groups_are_decided_separately() {
        let mut s = snaps(&[T0, T0 + HOUR]);
        s.push(("other".into(), T0 - DAY, "h".into()));
        let rules = KeepRules {
            last: 1,
            ..Default::default()
        };
        assert_eq!(
            kept(&decide(&s, &rules, chrono_tz::UTC)),
            vec!["other", "s01"]
        );
    }

    #[test]
    fn empty_rules_are_recognised() {
        assert!(KeepRules::default().is_empty());
        assert!(
            !KeepRules {
                floor: 1,
                ..Default::default()
            }
            .is_empty()
        );
        assert_eq!(
            KeepRules {
                last: 3,
                daily: 7,
                floor: 2,
                ..Default::default()
            }
            .describe(),
            "last 3, daily 7, floor 2"
        );
    }
}
