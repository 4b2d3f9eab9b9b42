//! Definitions that the engine, the `tablesafe` command line and the browser console
//! share, so each is written once: serde only (the browser links it), with clap's
//! derive behind the `clap` feature for the command line.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which snapshots a retention policy keeps (`engine::retention` applies them): the
/// newest `last`, the newest of each of the most recent `hourly`/`daily`/`weekly`/
/// `monthly`/`yearly` periods that have one, and never fewer than the `floor` newest.
/// All zero keeps everything. Stored as JSON with these field names (policies in the
/// history database); on the command line `--keep-last N` and so on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct KeepRules {
    /// Keep the N newest snapshots.
    #[cfg_attr(
        feature = "clap",
        arg(long = "keep-last", value_name = "N", default_value_t = 0)
    )]
    pub last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[cfg_attr(
        feature = "clap",
        arg(long = "keep-hourly", value_name = "N", default_value_t = 0)
    )]
    pub hourly: u32,
    /// … of each of the last N days that have one.
    #[cfg_attr(
        feature = "clap",
        arg(long = "keep-daily", value_name = "N", default_value_t = 0)
    )]
    pub daily: u32,
    /// … of each of the last N ISO weeks that have one.
    #[cfg_attr(
        feature = "clap",
        arg(long = "keep-weekly", value_name = "N", default_value_t = 0)
    )]
    pub weekly: u32,
    /// … of each of the last N months that have one.
    #[cfg_attr(
        feature = "clap",
        arg(long = "keep-monthly", value_name = "N", default_value_t = 0)
    )]
    pub monthly: u32,
    /// … of each of the last N years that have one.
    #[cfg_attr(
        feature = "clap",
        arg(long = "keep-yearly", value_name = "N", default_value_t = 0)
    )]
    pub yearly: u32,
    /// Never prune the N newest snapshots, whatever the other rules say.
    #[cfg_attr(
        feature = "clap",
        arg(long = "keep-floor", value_name = "N", default_value_t = 0)
    )]
    pub floor: u32,
}

impl KeepRules {
    /// No rule at all: pruning would delete everything, so callers refuse.
    pub fn is_empty(&self) -> bool {
        *self == KeepRules::default()
    }

    /// The period rules by name, newest-first kinds first (`floor` is not one).
    pub fn periods(&self) -> [(&'static str, u32); 6] {
        [
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ]
    }

    /// "last 3, daily 7, floor 2".
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .periods()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        if self.floor > 0 {
            parts.push(format!("floor {}", self.floor));
        }
        if parts.is_empty() {
            "keep everything".into()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Policies stored by earlier versions read the same; a word it does not know is
    /// refused rather than ignored.
    #[test]
    fn stored_rules_read_back() {
        let r: KeepRules = serde_json::from_str(r#"{"last":3,"daily":7,"floor":2}"#).unwrap();
        assert_eq!(r.describe(), "last 3, daily 7, floor 2");
        assert!(!r.is_empty());
        assert!(KeepRules::default().is_empty());
        assert_eq!(KeepRules::default().describe(), "keep everything");
        assert!(serde_json::from_str::<KeepRules>(r#"{"lastt":3}"#).is_err());
    }
}

/// Which tables and columns a backup or restore takes: `include` / `exclude` globs on
/// table names (`schema.table` on PostgreSQL; empty `include` takes every table), and for
/// the tables in `columns` only those columns (their key columns are always kept).
/// `engine::selection` applies it. Stored as JSON with these field names (console
/// policies, snapshot manifests); on the command line `--include`, `--exclude` and
/// `--columns TABLE=c1,c2`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub columns: BTreeMap<String, Vec<String>>,
}
