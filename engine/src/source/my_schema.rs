//! MySQL/MariaDB schema objects besides tables: stored procedures and functions, views,
//! triggers and events, each as the server prints it (`SHOW CREATE …`, `DEFINER`
//! included), with the `sql_mode` it was created under (a routine's or trigger's body
//! is parsed with it).
//!
//! MySQL keeps no dependency catalog: what a view or trigger uses is read from its
//! definition (every backquoted name of a table, view or routine of the database).
//! Views are ordered so that a view comes after the views it reads.

use super::mysql::{MyDb, quote};
use crate::Result;
use crate::error::Context;
use crate::model::{ObjectKind, Phase, SchemaObject};
use sqlx::Row;

/// An object's statement in the session it was created in, as mysqldump replays it:
/// its `sql_mode` (a routine's or trigger's body is parsed with it) and its client
/// character set and connection collation (recorded with the object); then back to
/// the restore's session.
fn in_session(row: &sqlx::mysql::MySqlRow, statement: String) -> Vec<String> {
    let mut sql = vec!["SET @tablesafe_sql_mode = @@SESSION.sql_mode".to_string()];
    if let Some(mode) = column(row, "sql_mode") {
        sql.push(format!(
            "SET SESSION sql_mode = {}",
            super::sql_string(&mode)
        ));
    }
    if let (Some(cs), Some(coll)) = (
        column(row, "character_set_client"),
        column(row, "collation_connection"),
    ) {
        sql.push(format!(
            "SET character_set_client = {0}, character_set_results = {0}, collation_connection = {1}",
            super::sql_string(&cs),
            super::sql_string(&coll)
        ));
    }
    sql.push(statement);
    sql.push("SET NAMES utf8mb4".into());
    sql.push("SET SESSION sql_mode = @tablesafe_sql_mode".into());
    sql
}

/// The backquoted identifiers in a statement (`` `a``b` `` read as ``a`b``).
fn quoted_names(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '`' {
            continue;
        }
        let mut name = String::new();
        while let Some(c) = chars.next() {
            if c == '`' {
                if chars.peek() == Some(&'`') {
                    chars.next();
                    name.push('`');
                } else {
                    break;
                }
            } else {
                name.push(c);
            }
        }
        out.push(name);
    }
    out
}

/// One column of a `SHOW CREATE …` row, by name (NULL when the user may not see it).
/// (Read as text-protocol results: MariaDB answers some of these as NULL to a prepared
/// statement; unchecked, as MariaDB types some as text in a binary collation.)
fn column(row: &sqlx::mysql::MySqlRow, name: &str) -> Option<String> {
    row.try_get_unchecked::<Option<Vec<u8>>, _>(name)
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A `SHOW CREATE …` row, or None when the account may not see the definition (MySQL
/// answers some with NULL columns, others with an access error).
async fn show_create(db: &mut MyDb, sql: &str) -> Result<Option<sqlx::mysql::MySqlRow>> {
    match sqlx::Executor::fetch_one(&mut db.conn, sql).await {
        Ok(row) => Ok(Some(row)),
        Err(e) => {
            // 1142 table/view access denied, 1227 needs a privilege, 1044 database
            // access denied, 1356 a view whose definer lacks rights.
            let denied = e
                .as_database_error()
                .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
                .is_some_and(|d| matches!(d.number(), 1142 | 1227 | 1044 | 1356));
            if denied {
                Ok(None)
            } else {
                Err(e).context(|| format!("{sql} on {}", db.display))
            }
        }
    }
}

/// Every procedure, function, view, trigger and event of the connection's database.
/// `tables` are the database's base tables; objects a user may not read the
/// definition of go to `skipped`.
pub(super) async fn discover(
    db: &mut MyDb,
    tables: &[String],
    skipped: &mut Vec<crate::model::Skipped>,
) -> Result<Vec<SchemaObject>> {
    let display = db.display.clone();
    let what = |w: &str| format!("listing the {w} of {display}");
    let mut objects = Vec::new();
    let routines: Vec<(String, String)> = sqlx::query_as(
        "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES \
         WHERE ROUTINE_SCHEMA = DATABASE() ORDER BY ROUTINE_TYPE, ROUTINE_NAME",
    )
    .fetch_all(&mut db.conn)
    .await
    .context(|| what("routines"))?;
    let views: Vec<String> = sqlx::query_scalar(
        "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME",
    )
    .fetch_all(&mut db.conn)
    .await
    .context(|| what("views"))?;
    let triggers: Vec<(String, String)> = sqlx::query_as(
        "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS \
         WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER",
    )
    .fetch_all(&mut db.conn)
    .await
    .context(|| what("triggers"))?;
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE() ORDER BY EVENT_NAME",
    )
    .fetch_all(&mut db.conn)
    .await
    .context(|| what("events"))?;

    let unreadable = |kind: ObjectKind, name: &str, skipped: &mut Vec<crate::model::Skipped>| {
        skipped.push(crate::model::Skipped {
            kind,
            name: name.to_string(),
            reason: "its definition is not visible to this account (it needs SHOW VIEW, TRIGGER or EVENT, or to be the definer)".into(),
        });
    };
    for (name, kind) in &routines {
        let (object_kind, word) = if kind == "PROCEDURE" {
            (ObjectKind::Procedure, "PROCEDURE")
        } else {
            (ObjectKind::Function, "FUNCTION")
        };
        let Some(row) = show_create(db, &format!("SHOW CREATE {word} {}", quote(name))).await?
        else {
            unreadable(object_kind, name, skipped);
            continue;
        };
        let create = column(
            &row,
            if kind == "PROCEDURE" {
                "Create Procedure"
            } else {
                "Create Function"
            },
        );
        let Some(create) = create else {
            unreadable(object_kind, name, skipped);
            continue;
        };
        let mut o = SchemaObject::new(object_kind, name, Phase::Before, in_session(&row, create));
        o.drop = Some(format!("DROP {word} IF EXISTS {}", quote(name)));
        objects.push(o);
    }
    let routine_names: Vec<&String> = routines.iter().map(|(n, _)| n).collect();
    let mut view_objects = Vec::new();
    for name in &views {
        let Some(row) = show_create(db, &format!("SHOW CREATE VIEW {}", quote(name))).await? else {
            unreadable(ObjectKind::View, name, skipped);
            continue;
        };
        let Some(create) = column(&row, "Create View") else {
            unreadable(ObjectKind::View, name, skipped);
            continue;
        };
        let mut o = SchemaObject::new(ObjectKind::View, name, Phase::After, Vec::new());
        for used in quoted_names(&create) {
            if &used == name {
                continue;
            }
            if tables.contains(&used) && !o.tables.contains(&used) {
                o.tables.push(used);
            } else if views.contains(&used) {
                let key = format!("{} {used}", ObjectKind::View);
                if !o.needs.contains(&key) {
                    o.needs.push(key);
                }
            } else if routine_names.contains(&&used) {
                for (r, kind) in &routines {
                    let key = format!(
                        "{} {r}",
                        if kind == "PROCEDURE" {
                            ObjectKind::Procedure
                        } else {
                            ObjectKind::Function
                        }
                    );
                    if r == &used && !o.needs.contains(&key) {
                        o.needs.push(key);
                    }
                }
            }
        }
        o.sql = in_session(&row, create);
        o.drop = Some(format!("DROP VIEW IF EXISTS {}", quote(name)));
        view_objects.push(o);
    }
    objects.extend(view_objects);
    for (name, table) in &triggers {
        let Some(row) = show_create(db, &format!("SHOW CREATE TRIGGER {}", quote(name))).await?
        else {
            unreadable(ObjectKind::Trigger, name, skipped);
            continue;
        };
        let Some(create) = column(&row, "SQL Original Statement") else {
            unreadable(ObjectKind::Trigger, name, skipped);
            continue;
        };
        let mut o = SchemaObject::new(
            ObjectKind::Trigger,
            format!("{name} on {table}"),
            Phase::After,
            in_session(&row, create),
        );
        o.tables.push(table.clone());
        o.drop = Some(format!("DROP TRIGGER IF EXISTS {}", quote(name)));
        objects.push(o);
    }
    for name in &events {
        let Some(row) = show_create(db, &format!("SHOW CREATE EVENT {}", quote(name))).await?
        else {
            unreadable(ObjectKind::Event, name, skipped);
            continue;
        };
        let Some(create) = column(&row, "Create Event") else {
            unreadable(ObjectKind::Event, name, skipped);
            continue;
        };
        let zone = column(&row, "time_zone").unwrap_or_else(|| "SYSTEM".into());
        let mut sql = in_session(&row, create);
        let at = sql.len() - 3;
        sql.insert(at, format!("SET time_zone = {}", super::sql_string(&zone)));
        sql.push("SET time_zone = '+00:00'".into());
        let mut o = SchemaObject::new(ObjectKind::Event, name, Phase::After, sql);
        o.drop = Some(format!("DROP EVENT IF EXISTS {}", quote(name)));
        objects.push(o);
    }
    Ok(crate::objects::order(objects))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_a_view_definition_are_read_with_doubled_backquotes() {
        assert_eq!(
            quoted_names("select `d`.`a``b`.`x` AS `x` from `d`.`t`"),
            ["d", "a`b", "x", "x", "d", "t"]
        );
    }
}
