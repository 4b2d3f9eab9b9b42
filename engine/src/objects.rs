//! Which schema objects (views, functions, triggers, types, policies, grants… — see
//! [`SchemaObject`]) a backup carries and a restore makes, for any engine.
//!
//! A backup carries the objects whose tables it takes (all of them, counting the
//! tables of the objects they need); the others are listed as skipped, with the table
//! they miss. A restore of the whole snapshot makes every object. A restore of some
//! tables makes what those tables need (their types, functions used in defaults and
//! checks, extensions…) and, unless told not to, the objects that use only restored
//! tables (their triggers, policies, views over them alone); an object that also uses
//! a table left out, or one restored under another name, is reported by name.

use crate::model::{SchemaObject, Skipped};
use std::collections::{BTreeSet, HashMap};

/// What a restore makes besides the tables' rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectOptions {
    /// Objects that use only restored tables (triggers, policies, views, grants)
    /// come along (`--no-dependents` leaves them out).
    pub dependents: bool,
    /// `GRANT`s are restored (`--no-acl` leaves them out); a grant to a role the
    /// destination lacks is reported and left out either way.
    pub acl: bool,
    /// Materialized views are refreshed after the load (`--no-refresh`: left empty,
    /// to be refreshed later).
    pub refresh: bool,
    /// MySQL's scheduled events are made too (`--events`; off by default, as with
    /// mysqldump: a restored copy should not start running the source's jobs).
    pub events: bool,
}

impl Default for ObjectOptions {
    fn default() -> Self {
        ObjectOptions {
            dependents: true,
            acl: true,
            refresh: true,
            events: false,
        }
    }
}

/// "3 views, 2 triggers, 1 function" from object keys (`kind name`), in first-seen
/// order of kinds.
pub fn summary<'a>(keys: impl IntoIterator<Item = &'a String>) -> String {
    let kinds = crate::model::ObjectKind::WORDS;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for key in keys {
        // The kind is the longest known word the key starts with ("materialized view").
        let kind = kinds
            .iter()
            .filter(|k| key.starts_with(&format!("{k} ")))
            .max_by_key(|k| k.len())
            .map(|k| k.to_string())
            .unwrap_or_else(|| key.split(' ').next().unwrap_or("").to_string());
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((kind, 1)),
        }
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n} {k}{}", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tables each object uses, its own and those of everything it needs.
fn all_tables(objects: &[SchemaObject]) -> Vec<BTreeSet<String>> {
    let index: HashMap<String, usize> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| (o.key(), i))
        .collect();
    let mut memo: Vec<Option<BTreeSet<String>>> = vec![None; objects.len()];
    fn walk(
        i: usize,
        objects: &[SchemaObject],
        index: &HashMap<String, usize>,
        memo: &mut Vec<Option<BTreeSet<String>>>,
        path: &mut Vec<usize>,
    ) -> BTreeSet<String> {
        if let Some(t) = &memo[i] {
            return t.clone();
        }
        let mut out: BTreeSet<String> = objects[i].tables.iter().cloned().collect();
        if path.contains(&i) {
            return out;
        }
        path.push(i);
        for n in &objects[i].needs {
            if let Some(&j) = index.get(n) {
                out.extend(walk(j, objects, index, memo, path));
            }
        }
        path.pop();
        memo[i] = Some(out.clone());
        out
    }
    (0..objects.len())
        .map(|i| walk(i, objects, &index, &mut memo, &mut Vec::new()))
        .collect()
}

/// The objects a backup of `tables` carries; the others go to `skipped`.
pub fn carried(
    objects: Vec<SchemaObject>,
    tables: &[&str],
    skipped: &mut Vec<Skipped>,
) -> Vec<SchemaObject> {
    let uses = all_tables(&objects);
    let mut out = Vec::with_capacity(objects.len());
    for (o, used) in objects.into_iter().zip(uses) {
        match used.iter().find(|t| !tables.contains(&t.as_str())) {
            None => out.push(o),
            Some(missing) => skipped.push(Skipped {
                kind: o.kind.clone(),
                name: o.name,
                reason: format!("uses table {missing}, which this backup does not take"),
            }),
        }
    }
    out
}

/// What a restore makes of a snapshot's objects.
#[derive(Debug, Clone, Default)]
pub struct Chosen {
    /// In the snapshot's order.
    pub objects: Vec<SchemaObject>,
    /// Objects that use restored tables and are not made, with why.
    pub left: Vec<String>,
}

/// A table a restore writes, as [`chosen`] sees it.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The snapshot's name of the table.
    pub name: String,
    /// Restored under its own name.
    pub same_name: bool,
    /// The restore creates it (or drops and creates it). Rows merged or appended into
    /// a table the destination has leave that table's own triggers, policies, grants
    /// and comments as they are: the snapshot's are not added to it.
    pub creates: bool,
    /// The objects its definition needs (types, functions, extensions…).
    pub needs: Vec<String>,
}

/// The objects a restore makes. `snapshot_tables` are all the snapshot's tables;
/// `restored` the ones restored.
pub fn chosen(
    objects: &[SchemaObject],
    snapshot_tables: &[String],
    restored: &[Restored],
    opts: ObjectOptions,
) -> Chosen {
    let whole = restored.len() == snapshot_tables.len()
        && restored.iter().all(|r| r.same_name && r.creates);
    let index: HashMap<String, usize> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| (o.key(), i))
        .collect();
    let uses = all_tables(objects);
    let kept: BTreeSet<&str> = restored
        .iter()
        .filter(|r| r.same_name && r.creates)
        .map(|r| r.name.as_str())
        .collect();
    let renamed: BTreeSet<&str> = restored
        .iter()
        .filter(|r| !r.same_name)
        .map(|r| r.name.as_str())
        .collect();
    let existing: BTreeSet<&str> = restored
        .iter()
        .filter(|r| r.same_name && !r.creates)
        .map(|r| r.name.as_str())
        .collect();
    let mut take = vec![false; objects.len()];
    let mut stack: Vec<usize> = Vec::new();
    if whole && opts.dependents {
        stack.extend(0..objects.len());
    } else {
        for (i, used) in uses.iter().enumerate() {
            if opts.dependents && !used.is_empty() && used.iter().all(|t| kept.contains(t.as_str()))
            {
                stack.push(i);
            }
        }
        for r in restored {
            stack.extend(r.needs.iter().filter_map(|n| index.get(n)));
        }
    }
    while let Some(i) = stack.pop() {
        if take[i] {
            continue;
        }
        take[i] = true;
        stack.extend(objects[i].needs.iter().filter_map(|n| index.get(n)));
    }
    let mut out = Chosen::default();
    for (i, o) in objects.iter().enumerate() {
        if take[i] && o.kind == crate::model::ObjectKind::Event && !opts.events {
            out.left.push(format!(
                "event {} not restored: events are restored only when asked (--events)",
                o.name
            ));
            continue;
        }
        if take[i] {
            out.objects.push(o.clone());
            continue;
        }
        let used = &uses[i];
        if !used.iter().any(|t| {
            kept.contains(t.as_str())
                || renamed.contains(t.as_str())
                || existing.contains(t.as_str())
        }) {
            continue;
        }
        let why = if let Some(t) = used.iter().find(|t| renamed.contains(t.as_str())) {
            format!("{t} is restored under another name")
        } else if let Some(t) = used.iter().find(|t| existing.contains(t.as_str())) {
            format!("{t} exists in the destination and keeps its own")
        } else if let Some(t) = used.iter().find(|t| !kept.contains(t.as_str())) {
            format!("it also uses {t}, which is not restored")
        } else {
            "dependent objects were left out (--no-dependents)".to_string()
        };
        out.left
            .push(format!("{} {} not restored: {why}", o.kind, o.name));
    }
    out
}

/// The objects in an order where each comes after what it needs (discovery order
/// otherwise); a cycle keeps discovery order.
pub fn order(objects: Vec<SchemaObject>) -> Vec<SchemaObject> {
    let index: HashMap<String, usize> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| (o.key(), i))
        .collect();
    let mut placed = vec![false; objects.len()];
    let mut out = Vec::with_capacity(objects.len());
    fn visit(
        i: usize,
        objects: &[SchemaObject],
        index: &HashMap<String, usize>,
        placed: &mut [bool],
        visiting: &mut Vec<usize>,
        out: &mut Vec<usize>,
    ) {
        if placed[i] || visiting.contains(&i) {
            return;
        }
        visiting.push(i);
        for n in &objects[i].needs {
            if let Some(&j) = index.get(n) {
                visit(j, objects, index, placed, visiting, out);
            }
        }
        visiting.pop();
        if !placed[i] {
            placed[i] = true;
            out.push(i);
        }
    }
    for i in 0..objects.len() {
        visit(i, &objects, &index, &mut placed, &mut Vec::new(), &mut out);
    }
    let mut slots: Vec<Option<SchemaObject>> = objects.into_iter().map(Some).collect();
    out.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ObjectKind, Phase};

    fn obj(kind: ObjectKind, name: &str, tables: &[&str], needs: &[&str]) -> SchemaObject {
        SchemaObject {
            kind,
            name: name.into(),
            phase: Phase::After,
            sql: vec![],
            drop: None,
            tables: tables.iter().map(|s| s.to_string()).collect(),
            needs: needs.iter().map(|s| s.to_string()).collect(),
            version: None,
        }
    }

    fn names(c: &Chosen) -> Vec<String> {
        c.objects.iter().map(|o| o.name.clone()).collect()
    }

    #[test]
    fn some_tables_bring_what_they_need_and_what_uses_only_them() {
        let objects = vec![
            obj(ObjectKind::Extension, "citext", &[], &[]),
            obj(ObjectKind::Domain, "public.posint", &[], &[]),
            obj(ObjectKind::Function, "public.touch()", &[], &[]),
            obj(
                ObjectKind::Trigger,
                "touch on public.a",
                &["public.a"],
                &["function public.touch()"],
            ),
            obj(
                ObjectKind::View,
                "public.ab",
                &["public.a", "public.b"],
                &[],
            ),
            obj(ObjectKind::View, "public.over_ab", &[], &["view public.ab"]),
            obj(ObjectKind::View, "public.only_b", &["public.b"], &[]),
        ];
        let all = vec!["public.a".to_string(), "public.b".to_string()];
        let a_needs = vec!["extension citext".to_string()];
        let table = |name: &str, same_name: bool, creates: bool, needs: &[String]| Restored {
            name: name.into(),
            same_name,
            creates,
            needs: needs.to_vec(),
        };
        let c = chosen(
            &objects,
            &all,
            &[table("public.a", true, true, &a_needs)],
            ObjectOptions::default(),
        );
        assert_eq!(names(&c), ["citext", "public.touch()", "touch on public.a"]);
        assert_eq!(
            c.left,
            [
                "view public.ab not restored: it also uses public.b, which is not restored",
                "view public.over_ab not restored: it also uses public.b, which is not restored"
            ]
        );
        // Without dependents: what the table needs, nothing else.
        let c = chosen(
            &objects,
            &all,
            &[table("public.a", true, true, &a_needs)],
            ObjectOptions {
                dependents: false,
                ..Default::default()
            },
        );
        assert_eq!(names(&c), ["citext"]);
        // Rows merged into the destination's own public.a: its triggers, policies and
        // grants are not touched (nothing is added to an existing table).
        let c = chosen(
            &objects,
            &all,
            &[table("public.a", true, false, &a_needs)],
            ObjectOptions::default(),
        );
        assert_eq!(names(&c), ["citext"]);
        assert!(
            c.left[0].contains("public.a exists in the destination and keeps its own"),
            "{:?}",
            c.left
        );
        // The whole snapshot: everything, standalone objects included.
        let c = chosen(
            &objects,
            &all,
            &[
                table("public.a", true, true, &[]),
                table("public.b", true, true, &[]),
            ],
            ObjectOptions::default(),
        );
        assert_eq!(c.objects.len(), objects.len());
        // A renamed table keeps what it needs but not its dependents.
        let c = chosen(
            &objects,
            &all,
            &[table("public.a", false, true, &[])],
            ObjectOptions::default(),
        );
        assert!(names(&c).is_empty());
        assert!(
            c.left[0].contains("public.a is restored under another name"),
            "{:?}",
            c.left
        );
    }

    #[test]
    fn a_backup_of_some_tables_skips_objects_that_use_others() {
        let objects = vec![
            obj(
                ObjectKind::View,
                "public.ab",
                &["public.a", "public.b"],
                &[],
            ),
            obj(ObjectKind::View, "public.over_ab", &[], &["view public.ab"]),
            obj(ObjectKind::Function, "public.f()", &[], &[]),
        ];
        let mut skipped = Vec::new();
        let kept = carried(objects, &["public.a"], &mut skipped);
        assert_eq!(kept.len(), 1);
        assert_eq!(skipped.len(), 2);
        assert_eq!(
            skipped[1].reason,
            "uses table public.b, which this backup does not take"
        );
    }
}
