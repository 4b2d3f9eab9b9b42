//! What a policy's selection takes from its source *now*: shown after a policy is saved,
//! and the check that refuses a selection that cannot work (a glob that matches no
//! table, a column the table lacks) when it is saved rather than at 2 a.m.

use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::ssr::OrInternal;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// One table a selection takes, with the columns it takes of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchedTable {
    pub name: String,
    pub rows: u64,
    /// False when `rows` is the database's estimate.
    pub rows_exact: bool,
    /// The columns taken, in table order.
    pub columns: Vec<String>,
    /// How many columns the table has.
    pub of_columns: usize,
}

/// The tables a selection takes from its source now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectionMatch {
    pub tables: Vec<MatchedTable>,
    /// How many tables the source has.
    pub of_tables: usize,
}

impl SelectionMatch {
    /// "takes 2 of 5 tables now: customers (id, name), orders (all 6 columns)".
    pub fn describe(&self) -> String {
        let list: Vec<String> = self
            .tables
            .iter()
            .map(|t| {
                let s = if t.rows == 1 { "" } else { "s" };
                let rows = if t.rows_exact {
                    format!("{} row{s}", t.rows)
                } else {
                    format!("about {} row{s}", t.rows)
                };
                if t.columns.len() == t.of_columns {
                    format!("{} (all {} columns, {rows})", t.name, t.of_columns)
                } else {
                    format!("{} ({}; {rows})", t.name, t.columns.join(", "))
                }
            })
            .collect();
        format!(
            "Takes {} of the source's {} tables now: {}.",
            self.tables.len(),
            self.of_tables,
            list.join(", ")
        )
    }
}

/// Applies `selection` to the source's tables: which tables and columns it takes, or a
/// field error ("include" or "columns") saying why it cannot work.
#[cfg(feature = "ssr")]
pub(crate) fn apply(
    selection: &tablesafe_types::Selection,
    tables: &[tablesafe_types::TableSummary],
) -> Result<SelectionMatch, AppError> {
    use engine::selection::{SelectionExt, chosen_columns};
    let listing = || {
        let mut names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        let more = names.len().saturating_sub(10);
        names.truncate(10);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!("{}{more}", names.join(", "))
    };
    let chosen = selection
        .apply(tables.iter().map(|t| t.name.as_str()))
        .map_err(|e| {
            let field = if e.to_string().contains("--columns") {
                "columns"
            } else {
                "include"
            };
            AppError::Field(
                field.into(),
                format!(
                    "{} The source's tables: {}.",
                    crate::ssr::words::in_callers_words(&e.to_string()),
                    listing()
                ),
            )
        })?;
    if chosen.is_empty() && !tables.is_empty() {
        return Err(AppError::Field(
            "include".into(),
            format!(
                "These patterns take none of the source's tables ({}): change Include or Exclude.",
                listing()
            ),
        ));
    }
    let mut out = Vec::new();
    for t in tables.iter().filter(|t| chosen.contains(&t.name)) {
        let available: Vec<String> = t.columns.iter().map(|(c, _)| c.clone()).collect();
        let columns = chosen_columns(&t.name, &available, &t.key, selection.columns.get(&t.name))
            .map_err(|e| {
            AppError::Field(
                "columns".into(),
                format!(
                    "{} Its columns: {}.",
                    crate::ssr::words::in_callers_words(&e.to_string()),
                    available.join(", ")
                ),
            )
        })?;
        out.push(MatchedTable {
            name: t.name.clone(),
            rows: t.rows,
            rows_exact: t.rows_exact,
            of_columns: available.len(),
            columns,
        });
    }
    Ok(SelectionMatch {
        tables: out,
        of_tables: tables.len(),
    })
}

/// The source's tables, or why they could not be read now (within 15 seconds).
#[cfg(feature = "ssr")]
pub(crate) async fn source_tables_now(
    c: &crate::ssr::ctx::Ctx,
    source_id: i64,
) -> Result<Vec<tablesafe_types::TableSummary>, AppError> {
    use crate::ssr::store;
    let row = store::source(&c.state.db, source_id)
        .await
        .or_internal("loading a source")?
        .ok_or_else(|| AppError::Field("source_id".into(), "Choose a source.".into()))?;
    let url = super::sources::source_url(c, &row)?;
    match tokio::time::timeout(
        std::time::Duration::from_secs(15),
        engine::source::inspect_counting(&url, engine::source::Count::Estimate),
    )
    .await
    {
        Ok(Ok(found)) => Ok(found.tables),
        Ok(Err(e)) => Err(super::sources::open_error(c, &row, e)),
        Err(_) => Err(AppError::Invalid(format!(
            "{} did not answer within 15 seconds.",
            row.display_url
        ))),
    }
}

/// The check on save: a selection that cannot work on the source as it is now is
/// refused with a field error. A source that cannot be read now does not block the
/// save (it may be down for maintenance); the backup checks again when it runs.
#[cfg(feature = "ssr")]
pub(crate) async fn refuse_impossible(
    c: &crate::ssr::ctx::Ctx,
    source_id: i64,
    selection: &tablesafe_types::Selection,
) -> Result<(), AppError> {
    match source_tables_now(c, source_id).await {
        Ok(tables) => apply(selection, &tables).map(|_| ()),
        Err(AppError::Field(f, m)) => Err(AppError::Field(f, m)),
        Err(e) => {
            tracing::info!(source_id, error = %e, "a policy's selection was saved unchecked: its source could not be read");
            Ok(())
        }
    }
}

/// What policy `id`'s selection takes from its source now.
#[server(endpoint = "policies/matches")]
pub async fn policy_matches(id: i64) -> Result<SelectionMatch, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::SeeAll, "policy.matches").await?;
    let p = store::policy(&c.state.db, id)
        .await
        .or_internal("loading a policy")?
        .ok_or_else(|| AppError::NotFound("Policy".into()))?;
    let selection: tablesafe_types::Selection =
        serde_json::from_str(&p.selection).or_internal("reading a selection")?;
    let tables = source_tables_now(&c, p.source_id).await?;
    apply(&selection, &tables).map_err(|e| match e {
        AppError::Field(_, m) => AppError::Invalid(m),
        e => e,
    })
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    use tablesafe_types::{Selection, TableSummary};

    fn table(name: &str, cols: &[&str]) -> TableSummary {
        TableSummary {
            name: name.into(),
            rows: 3,
            rows_exact: true,
            columns: cols
                .iter()
                .map(|c| (c.to_string(), "text".into()))
                .collect(),
            key: vec![cols[0].to_string()],
        }
    }

    fn field(r: Result<SelectionMatch, AppError>) -> (String, String) {
        match r {
            Err(AppError::Field(f, m)) => (f, m),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn impossible_selections_name_the_field_and_what_exists() {
        let tables = [
            table("customers", &["id", "name", "email"]),
            table("orders", &["id", "total"]),
        ];
        let none = Selection {
            include: vec!["nosuchtable*".into()],
            ..Default::default()
        };
        let (f, m) = field(apply(&none, &tables));
        assert_eq!(f, "include");
        assert!(m.contains("customers, orders"), "{m}");

        let mut cols = Selection::default();
        cols.columns
            .insert("customers".into(), vec!["id".into(), "nope".into()]);
        let (f, m) = field(apply(&cols, &tables));
        assert_eq!(f, "columns");
        assert!(
            m.contains("\"nope\"") && m.contains("id, name, email"),
            "{m}"
        );
        assert!(!m.contains("--"), "no CLI flags in console words: {m}");

        let mut other = Selection {
            include: vec!["orders".into()],
            ..Default::default()
        };
        other.columns.insert("customers".into(), vec!["id".into()]);
        let (f, m) = field(apply(&other, &tables));
        assert_eq!(f, "columns");
        assert!(!m.contains("--"), "{m}");
    }

    #[test]
    fn a_working_selection_says_what_it_takes() {
        let tables = [
            table("customers", &["id", "name", "email"]),
            table("orders", &["id", "total"]),
            table("audit", &["id"]),
        ];
        let mut s = Selection {
            exclude: vec!["audit".into()],
            ..Default::default()
        };
        s.columns.insert("customers".into(), vec!["name".into()]);
        let m = apply(&s, &tables).unwrap();
        assert_eq!(
            m.describe(),
            "Takes 2 of the source's 3 tables now: customers (id, name; 3 rows), orders (all 2 columns, 3 rows)."
        );
    }
}
