//! Which tables and columns a backup or restore takes: `--include`/`--exclude` globs on
//! table names and `--columns TABLE=c1,c2`.

use crate::{Error, Result};
use globset::{Glob, GlobMatcher};
use std::collections::BTreeMap;

/// A glob that matches exactly `name` (its wildcard characters bracketed), for
/// selecting a table by its name whatever characters it holds.
pub fn glob_literal(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '*' | '?' | '[' | ']' | '{' | '}' | '\\' => format!("[{c}]"),
            c => c.to_string(),
        })
        .collect()
}

pub use tablesafe_types::Selection;

/// What the engine does with a [`Selection`].
/// Checks a `--columns` list against a table's columns (`available`, in table order)
/// and returns the columns to take, in table order: all of them without a list, else
/// the listed ones and `keep` (the key, which backups and restores always carry). A
/// listed column the table lacks is an error, not silently dropped.
pub fn chosen_columns(
    table: &str,
    available: &[String],
    keep: &[String],
    wanted: Option<&Vec<String>>,
) -> Result<Vec<String>> {
    let Some(wanted) = wanted else {
        return Ok(available.to_vec());
    };
    if let Some(c) = wanted.iter().find(|c| !available.contains(c)) {
        return Err(Error::invalid(format!(
            "table {table:?} has no column {c:?}"
        )));
    }
    Ok(available
        .iter()
        .filter(|c| wanted.contains(c) || keep.contains(c))
        .cloned()
        .collect())
}

pub trait SelectionExt {
    /// Parses `TABLE=c1,c2` arguments.
    fn parse_columns(args: &[String]) -> Result<BTreeMap<String, Vec<String>>>;

    /// Checks that every pattern is a valid glob (without a table list to match).
    fn check(&self) -> Result<()>;

    /// The names among `tables` that this selection takes, in their given order. A
    /// pattern without wildcards that names no table, or a `--columns` table that is not
    /// selected, is an error: a typo must not silently back up less.
    fn apply<'a>(&self, tables: impl IntoIterator<Item = &'a str> + Clone) -> Result<Vec<String>>;
}

impl SelectionExt for Selection {
    fn parse_columns(args: &[String]) -> Result<BTreeMap<String, Vec<String>>> {
        let mut out = BTreeMap::new();
        for arg in args {
            let (table, cols) = arg.rsplit_once('=').ok_or_else(|| {
                Error::invalid(format!("--columns {arg:?}: expected TABLE=COLUMN,COLUMN"))
            })?;
            let cols: Vec<String> = cols
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
            if table.is_empty() || cols.is_empty() {
                return Err(Error::invalid(format!(
                    "--columns {arg:?}: expected TABLE=COLUMN,COLUMN"
                )));
            }
            out.insert(table.to_string(), cols);
        }
        Ok(out)
    }

    fn check(&self) -> Result<()> {
        for p in self.include.iter().chain(&self.exclude) {
            Glob::new(p).map_err(|e| Error::invalid(format!("bad pattern {p:?}: {e}")))?;
        }
        Ok(())
    }

    fn apply<'a>(&self, tables: impl IntoIterator<Item = &'a str> + Clone) -> Result<Vec<String>> {
        let compile = |p: &String| -> Result<GlobMatcher> {
            Glob::new(p)
                .map(|g| g.compile_matcher())
                .map_err(|e| Error::invalid(format!("bad pattern {p:?}: {e}")))
        };
        let include: Vec<GlobMatcher> = self.include.iter().map(compile).collect::<Result<_>>()?;
        let exclude: Vec<GlobMatcher> = self.exclude.iter().map(compile).collect::<Result<_>>()?;
        for (pattern, m) in self.include.iter().zip(&include) {
            let literal = !pattern.contains(['*', '?', '[', '{']);
            if literal && !tables.clone().into_iter().any(|t| m.is_match(t)) {
                return Err(Error::invalid(format!("unknown table {pattern:?}")));
            }
        }
        let chosen: Vec<String> = tables
            .into_iter()
            .filter(|t| include.is_empty() || include.iter().any(|m| m.is_match(t)))
            .filter(|t| !exclude.iter().any(|m| m.is_match(t)))
            .map(String::from)
            .collect();
        for table in self.columns.keys() {
            if !chosen.contains(table) {
                return Err(Error::invalid(format!(
                    "--columns names table {table:?}, which is not selected or does not exist"
                )));
            }
        }
        Ok(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names_literally() {
        let g = globset::Glob::new(&glob_literal("a*b[1]?"))
            .unwrap()
            .compile_matcher();
        assert!(g.is_match("a*b[1]?"));
        assert!(!g.is_match("axxb1z"));
    }

    #[test]
    fn include_exclude_and_typos() {
        let tables = ["users", "orders", "order_items", "audit_log"];
        let s = Selection {
            include: vec!["order*".into()],
            exclude: vec!["*_items".into()],
            ..Default::default()
        };
        assert_eq!(s.apply(tables).unwrap(), vec!["orders"]);
        let all = Selection::default();
        assert_eq!(all.apply(tables).unwrap().len(), 4);
        let typo = Selection {
            include: vec!["userz".into()],
            ..Default::default()
        };
        assert!(
            typo.apply(tables)
                .unwrap_err()
                .to_string()
                .contains("unknown table \"userz\"")
        );
        let cols = Selection {
            columns: Selection::parse_columns(&["ghost=a".into()]).unwrap(),
            ..Default::default()
        };
        assert!(cols.apply(tables).is_err());
        assert!(Selection::parse_columns(&["nocolumns".into()]).is_err());
        assert_eq!(
            Selection::parse_columns(&["t=a, b".into()]).unwrap()["t"],
            vec!["a", "b"]
        );
    }
}
