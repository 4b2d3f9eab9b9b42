//! Definitions that the engine, the `tablesafe` command line and the browser console
//! share, so each is written once: serde only (the browser links it), with clap's
//! derive behind the `clap` feature for the command line.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[doc(hidden)]
pub use serde as __serde;

/// An enum stored and shown as fixed words, each written once: `as_str`, `parse`,
/// `ALL`, `Display`, serde as the word, and `TryFrom<String>` (for database rows).
///
/// ```
/// tablesafe_types::words! {
///     /// Where a job is.
///     pub enum Status { Queued = "queued", Running = "running" }
/// }
/// assert_eq!(Status::parse("running"), Some(Status::Running));
/// assert_eq!(Status::Queued.to_string(), "queued");
/// ```
///
/// With `_ => Name` last, the enum also has `Name(String)` for words this build does
/// not know (a newer version's), kept as written; without it such a word is an error.
#[macro_export]
macro_rules! words {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $word:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }

            pub fn parse(word: &str) -> Option<$name> {
                match word {
                    $($word => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(word: String) -> Result<Self, String> {
                $name::parse(&word).ok_or_else(|| {
                    format!(concat!("unknown ", stringify!($name), " {:?}"), word)
                })
            }
        }

        $crate::words!(@common $name);
        $crate::__words_schema!($name [$($word),+]);
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $word:literal,)+
            _ => $other:ident $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A word this build does not know, kept as written.
            $other(String),
        }

        impl $name {
            /// The words this build knows.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $word,)+
                    $name::$other(word) => word,
                }
            }

            /// Always `Some`: an unknown word is kept.
            pub fn parse(word: &str) -> Option<$name> {
                Some($name::from(word))
            }
        }

        impl From<&str> for $name {
            fn from(word: &str) -> Self {
                match word {
                    $($word => $name::$variant,)+
                    other => $name::$other(other.to_string()),
                }
            }
        }

        $crate::words!(@common $name);
        $crate::__words_schema!($name [$($word),+] open);
    };
    (@common $name:ident) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::__serde::Serialize for $name {
            fn serialize<S: $crate::__serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> $crate::__serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let word = <std::borrow::Cow<'de, str> as $crate::__serde::Deserialize>::deserialize(d)?;
                $name::parse(&word).ok_or_else(|| {
                    <D::Error as $crate::__serde::de::Error>::custom(format!(
                        concat!("unknown ", stringify!($name), " {:?}"),
                        word
                    ))
                })
            }
        }
    };
}

/// With the `openapi` feature (the server's): `utoipa::ToSchema` for a [`words!`] enum,
/// a string of its words (`open`: or a word a newer version added). Decided here, in
/// this crate, so the crates that use `words!` need no feature of their own.
#[cfg(feature = "openapi")]
#[doc(hidden)]
#[macro_export]
macro_rules! __words_schema {
    ($name:ident [$($word:literal),+] $($open:ident)?) => {
        impl $crate::__utoipa::PartialSchema for $name {
            fn schema() -> $crate::__utoipa::openapi::RefOr<$crate::__utoipa::openapi::schema::Schema> {
                use $crate::__utoipa::openapi::schema::{ObjectBuilder, Type};
                let words = [$($word),+];
                let b = ObjectBuilder::new().schema_type(Type::String);
                let b = if $crate::__words_schema!(@open $($open)?) {
                    b.description(Some(format!("One of {words:?}, or a word a newer version added.")))
                } else {
                    b.enum_values(Some(words))
                };
                b.into()
            }
        }
        impl $crate::__utoipa::ToSchema for $name {}
    };
    (@open open) => { true };
    (@open) => { false };
}

#[cfg(not(feature = "openapi"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __words_schema {
    ($($any:tt)*) => {};
}

#[cfg(feature = "openapi")]
#[doc(hidden)]
pub use utoipa as __utoipa;

/// Which snapshots a retention policy keeps (`engine::retention` applies them): the
/// newest `last`, the newest of each of the most recent `hourly`/`daily`/`weekly`/
/// `monthly`/`yearly` periods that have one, and never fewer than the `floor` newest.
/// All zero keeps everything. Stored as JSON with these field names (policies in the
/// history database); on the command line `--keep-last N` and so on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

words! {
    /// A table store's engine: of a source, a destination, a snapshot.
    pub enum Engine {
        Sqlite = "sqlite",
        Postgres = "postgres",
        /// MySQL or MariaDB.
        Mysql = "mysql",
    }
}

/// A table of a source as the console lists it (`engine::source::inspect`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableSummary {
    /// `table` (SQLite, MySQL) or `schema.table` (PostgreSQL).
    pub name: String,
    pub rows: u64,
    /// False when `rows` is PostgreSQL's estimate (big tables: counting would scan them).
    pub rows_exact: bool,
    /// (name, declared type) in table order.
    pub columns: Vec<(String, String)>,
    /// Primary-key columns.
    pub key: Vec<String>,
}

words! {
    /// How a restore's rows meet the destination's rows with the same key
    /// (`engine::merge`).
    pub enum MergeMode {
        /// Backup rows replace the rows with their key; missing ones are inserted.
        Upsert = "upsert",
        /// Only rows whose key is missing are inserted.
        SkipExisting = "skip-existing",
        /// The rows in the restore's scope become exactly the backup's.
        ReplaceRows = "replace-rows",
    }
}

/// What a merge does (or, in a dry run, would do) to one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeCounts {
    /// Backup rows whose key the table lacks.
    pub inserted: u64,
    /// Rows whose key both have and whose values differ (left as they are by
    /// `skip-existing`).
    pub updated: u64,
    /// Rows whose key both have with equal values.
    pub unchanged: u64,
    /// `replace-rows`: rows in the restore's scope that the backup lacks.
    pub deleted: u64,
}

impl MergeCounts {
    /// The counts in words, as `mode` treats them: "3 inserted, 2 updated, 5 unchanged".
    pub fn describe(&self, mode: MergeMode) -> String {
        let mut parts = vec![format!("{} inserted", self.inserted)];
        if mode == MergeMode::SkipExisting {
            parts.push(format!(
                "{} existing left as they are",
                self.updated + self.unchanged
            ));
        } else {
            parts.push(format!("{} updated", self.updated));
            parts.push(format!("{} unchanged", self.unchanged));
        }
        if mode == MergeMode::ReplaceRows {
            parts.push(format!("{} deleted", self.deleted));
        }
        parts.join(", ")
    }
}

/// The longest part of a new table name: PostgreSQL's identifier limit (63 bytes;
/// MySQL allows 64, SQLite more).
pub const MAX_TABLE_NAME: usize = 63;

/// The one rule every *new* table name follows — a restore's renamed table, a name
/// made with the wizard's suffix — in the browser, the server, the API and the CLI
/// alike: the table starts with a letter or `_` and goes on with letters, digits or
/// `_`, at most [`MAX_TABLE_NAME`] characters; a schema may go before a dot (any
/// printable name without dots, quotes or markup: an existing "Sales Dept" works). (Tables restored under their own names keep them,
/// whatever they are.) The message says what to do, in words any interface can show.
pub fn check_new_table_name(name: &str) -> Result<(), String> {
    // The table is the part after the last dot; before it, a schema — one that may
    // already exist under any printable name ("Sales Dept"), so only dots, markup,
    // quotes and control characters are refused there.
    let (schema, table) = match name.rsplit_once('.') {
        Some((s, t)) => (Some(s), t),
        None => (None, name),
    };
    let mut chars = table.chars();
    let table_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && table.len() <= MAX_TABLE_NAME;
    let schema_ok = schema.is_none_or(|s| {
        !s.is_empty()
            && s.len() <= MAX_TABLE_NAME
            && !s
                .chars()
                .any(|c| c.is_control() || matches!(c, '<' | '>' | '&' | '"' | '\'' | '`' | '.'))
    });
    if table_ok && schema_ok {
        return Ok(());
    }
    let shown: String = name.chars().take(80).collect();
    Err(format!(
        "{shown:?} cannot be a new table's name: use letters, digits and _, starting with a letter or _, at most {MAX_TABLE_NAME} characters (a schema may go before a dot)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_table_names_follow_one_rule() {
        for ok in [
            "orders_restored",
            "_t",
            "sales.orders_2026",
            "Sales Dept.customers_restored",
            &"x".repeat(63),
        ] {
            assert!(check_new_table_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "orders<img src=x onerror=alert(1)>",
            "1orders",
            "a.b.c",
            "orders restored",
            "naïve",
            "a;drop",
            ".orders",
            "<img src=x>.orders",
            "sales.",
            &"x".repeat(64),
        ] {
            assert!(check_new_table_name(bad).is_err(), "{bad}");
        }
    }

    words! {
        enum Closed { One = "one", TwoWords = "two words" }
    }

    words! {
        enum Open { Known = "known", _ => Other }
    }

    /// Each word reads back as its variant and is written as itself; an unknown word is
    /// an error for a closed list and kept as written for an open one.
    #[test]
    fn words_read_and_write_as_themselves() {
        assert_eq!(Closed::ALL, &[Closed::One, Closed::TwoWords]);
        let c: Closed = serde_json::from_str(r#""two words""#).unwrap();
        assert_eq!(c, Closed::TwoWords);
        assert_eq!(serde_json::to_string(&c).unwrap(), r#""two words""#);
        assert_eq!(c.to_string(), "two words");
        assert!(serde_json::from_str::<Closed>(r#""three""#).is_err());
        assert!(Closed::try_from("three".to_string()).is_err());
        assert_eq!(Closed::try_from("one".to_string()), Ok(Closed::One));
        let o: Open = serde_json::from_str(r#""later kind""#).unwrap();
        assert_eq!(o, Open::Other("later kind".into()));
        assert_eq!(serde_json::to_string(&o).unwrap(), r#""later kind""#);
        assert_eq!(Open::parse("known"), Some(Open::Known));
        assert_eq!(
            Open::WORDS,
            ["known"],
            "an open list names the words it knows"
        );
    }

    /// Each mode says what it does with the rows that differ.
    #[test]
    fn merge_counts_read_as_their_mode_treats_them() {
        let c = MergeCounts {
            inserted: 3,
            updated: 2,
            unchanged: 5,
            deleted: 1,
        };
        assert_eq!(
            c.describe(MergeMode::Upsert),
            "3 inserted, 2 updated, 5 unchanged"
        );
        assert_eq!(
            c.describe(MergeMode::SkipExisting),
            "3 inserted, 7 existing left as they are"
        );
        assert_eq!(
            c.describe(MergeMode::ReplaceRows),
            "3 inserted, 2 updated, 5 unchanged, 1 deleted"
        );
        let mode: MergeMode = serde_json::from_str(r#""skip-existing""#).unwrap();
        assert_eq!(mode, MergeMode::SkipExisting);
    }

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
