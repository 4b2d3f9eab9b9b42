//! Row filters: the `--where` conditions of a partial restore, an export and a browse
//! (`id >= 1000`, `region = 'EU'`, `name contains smith`, `deleted_at is null`). All
//! conditions must hold (AND). They are evaluated by tablesafe on the rows it reads from
//! the repository, not by a database:
//!
//! - NULL matches only `is null` (as in SQL, `x != 5` is false for a NULL `x`).
//! - When the value is a number (or the column holds numbers: SQLite INTEGER/REAL
//!   values, PostgreSQL integer, float and numeric columns) and the literal is one too,
//!   they compare as numbers; integers exactly, others as 64-bit floats.
//! - Otherwise they compare as text, byte by byte (binary order, not the database's
//!   collation); dates and times in ISO form order correctly this way. BLOB and
//!   `bytea` values compare as their `\x…` hex form.
//! - `contains` looks for the literal inside the value's text, case-sensitively.

use crate::dialect::{self, Kind};
use crate::model::{Engine, TableEntry, Value};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    IsNull,
    NotNull,
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Contains => "contains",
            Op::IsNull => "is null",
            Op::NotNull => "is not null",
        }
    }
}

/// `column op value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    pub column: String,
    pub op: Op,
    /// Empty for `is null` / `is not null`.
    #[serde(default)]
    pub value: String,
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let col = if self
            .column
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
        {
            self.column.clone()
        } else {
            format!("\"{}\"", self.column.replace('"', "\"\""))
        };
        match self.op {
            Op::IsNull | Op::NotNull => write!(f, "{col} {}", self.op.symbol()),
            op => write!(
                f,
                "{col} {} '{}'",
                op.symbol(),
                self.value.replace('\'', "''")
            ),
        }
    }
}

impl Condition {
    /// Parses `COLUMN OP VALUE`: OP is one of `= != <> < <= > >=`, `contains`, or the
    /// whole tail `is null` / `is not null`. A column name with spaces or operator
    /// characters is written in double quotes; a value may be in single quotes (`''` for
    /// a quote inside), which keeps its spaces.
    pub fn parse(s: &str) -> Result<Condition> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "--where {s:?}: {why} (expected e.g. \"id >= 100\", \"name contains x\", \"note is null\")"
            ))
        };
        let s_trim = s.trim();
        let (column, rest) = if let Some(quoted) = s_trim.strip_prefix('"') {
            let mut name = String::new();
            let mut chars = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if chars.peek().map(|(_, c)| *c) == Some('"') {
                        name.push('"');
                        chars.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    name.push(c);
                }
            }
            let end = end.ok_or_else(|| bad("unclosed quote in the column name"))?;
            (name, quoted[end..].trim_start())
        } else {
            let end = s_trim
                .find(|c: char| c.is_whitespace() || "=!<>".contains(c))
                .unwrap_or(s_trim.len());
            (s_trim[..end].to_string(), s_trim[end..].trim_start())
        };
        if column.is_empty() {
            return Err(bad("no column name"));
        }
        let lower = rest.to_ascii_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        if words == ["is", "null"] {
            return Ok(Condition {
                column,
                op: Op::IsNull,
                value: String::new(),
            });
        }
        if words == ["is", "not", "null"] {
            return Ok(Condition {
                column,
                op: Op::NotNull,
                value: String::new(),
            });
        }
        let ops: [(&str, Op); 8] = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("!=", Op::Ne),
            ("<>", Op::Ne),
            ("=", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
            ("contains ", Op::Contains),
        ];
        let (op, value) = ops
            .iter()
            .find_map(|(sym, op)| {
                lower
                    .starts_with(sym)
                    .then(|| (*op, rest[sym.len()..].trim()))
            })
            .ok_or_else(|| bad("no operator"))?;
        if op != Op::Contains && value.starts_with(['=', '<', '>', '!']) {
            return Err(bad("unclear operator"));
        }
        let value = match value.strip_prefix('\'') {
            Some(q) => q
                .strip_suffix('\'')
                .ok_or_else(|| bad("unclosed quote in the value"))?
                .replace("''", "'"),
            None => value.to_string(),
        };
        Ok(Condition { column, op, value })
    }
}

/// Conditions that must all hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowFilter {
    pub conditions: Vec<Condition>,
}

impl RowFilter {
    pub fn parse(args: &[String]) -> Result<RowFilter> {
        Ok(RowFilter {
            conditions: args
                .iter()
                .map(|a| Condition::parse(a))
                .collect::<Result<_>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// The filter for one table's stream: an error names a column the table lacks.
    pub fn bind(&self, e: &TableEntry, engine: Engine) -> Result<BoundFilter> {
        let mut conds = Vec::new();
        for c in &self.conditions {
            let pos = e
                .stream_columns
                .iter()
                .position(|s| s == &c.column)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "table {:?} has no column {:?} to filter on (it has {})",
                        e.name,
                        c.column,
                        e.stream_columns.join(", ")
                    ))
                })?;
            let kind = dialect::of(engine).column_kind(e, &c.column);
            conds.push(BoundCondition {
                pos,
                op: c.op,
                numeric: parse_number(c.value.as_bytes()),
                text: c.value.clone().into_bytes(),
                numeric_column: matches!(kind, Kind::PgInteger | Kind::PgFloat | Kind::PgNumeric),
            });
        }
        // Equality on every key column: at most one row can match.
        let unique = !e.key.is_empty()
            && e.key.iter().all(|k| {
                self.conditions
                    .iter()
                    .any(|c| &c.column == k && c.op == Op::Eq)
            });
        Ok(BoundFilter { conds, unique })
    }
}

#[derive(Debug, Clone)]
struct BoundCondition {
    pos: usize,
    op: Op,
    numeric: Option<Number>,
    text: Vec<u8>,
    numeric_column: bool,
}

/// A filter bound to one table's stream columns.
#[derive(Debug, Clone)]
pub struct BoundFilter {
    conds: Vec<BoundCondition>,
    unique: bool,
}

impl BoundFilter {
    pub fn is_empty(&self) -> bool {
        self.conds.is_empty()
    }

    /// Whether equality on the whole (unique) key is asked: one match is all there is.
    pub fn finds_one(&self) -> bool {
        self.unique
    }

    /// Whether a row (all stream columns) passes.
    pub fn matches(&self, row: &[Value]) -> bool {
        self.conds.iter().all(|c| c.matches(&row[c.pos]))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Number {
    Int(i64),
    Float(f64),
}

fn parse_number(s: &[u8]) -> Option<Number> {
    let s = std::str::from_utf8(s).ok()?.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(i) = s.parse::<i64>() {
        return Some(Number::Int(i));
    }
    // Only plain decimal notation: "inf" or "nan" as text stay text.
    if s.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return s.parse::<f64>().ok().map(Number::Float);
    }
    match s {
        "NaN" => Some(Number::Float(f64::NAN)),
        "Infinity" => Some(Number::Float(f64::INFINITY)),
        "-Infinity" => Some(Number::Float(f64::NEG_INFINITY)),
        _ => None,
    }
}

fn cmp_numbers(a: Number, b: Number) -> Option<Ordering> {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => Some(x.cmp(&y)),
        (Number::Int(x), Number::Float(y)) => (x as f64).partial_cmp(&y),
        (Number::Float(x), Number::Int(y)) => x.partial_cmp(&(y as f64)),
        // PostgreSQL orders NaN above every number and equal to itself.
        (Number::Float(x), Number::Float(y)) => match (x.is_nan(), y.is_nan()) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            _ => x.partial_cmp(&y),
        },
    }
}

impl BoundCondition {
    fn matches(&self, v: &Value) -> bool {
        match (self.op, v) {
            (Op::IsNull, v) => matches!(v, Value::Null),
            (Op::NotNull, v) => !matches!(v, Value::Null),
            (_, Value::Null) => false,
            (Op::Contains, v) => {
                let text = display_bytes(v);
                self.text.is_empty() || memchr::memmem::find(&text, &self.text).is_some()
            }
            (op, v) => {
                let value_number = match v {
                    Value::Integer(i) => Some(Number::Int(*i)),
                    Value::Real(f) => Some(Number::Float(*f)),
                    Value::Text(t) if self.numeric_column => parse_number(t),
                    _ => None,
                };
                let ord = match (value_number, self.numeric) {
                    (Some(a), Some(b)) => cmp_numbers(a, b),
                    _ => Some(display_bytes(v).as_slice().cmp(self.text.as_slice())),
                };
                let Some(ord) = ord else { return false };
                match op {
                    Op::Eq => ord == Ordering::Equal,
                    Op::Ne => ord != Ordering::Equal,
                    Op::Lt => ord == Ordering::Less,
                    Op::Le => ord != Ordering::Greater,
                    Op::Gt => ord == Ordering::Greater,
                    Op::Ge => ord != Ordering::Less,
                    Op::Contains | Op::IsNull | Op::NotNull => unreachable!("handled above"),
                }
            }
        }
    }
}

/// A value's text form (NULL as nothing): numbers as SQL prints them, BLOBs as `\x…`.
pub fn display_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Null => Vec::new(),
        Value::Integer(i) => i.to_string().into_bytes(),
        Value::Real(f) => crate::export::real_text(*f).into_bytes(),
        Value::Text(t) => t.clone(),
        Value::Blob(b) => crate::export::hex_text(b).into_bytes(),
    }
}

/// A value for display: `None` for NULL; text that is not UTF-8 is shown with
/// replacement characters.
pub fn display(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        v => Some(String::from_utf8_lossy(&display_bytes(v)).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(s: &str) -> Condition {
        Condition::parse(s).unwrap()
    }

    #[test]
    fn conditions_parse() {
        assert_eq!(
            cond("id>=100"),
            Condition {
                column: "id".into(),
                op: Op::Ge,
                value: "100".into()
            }
        );
        assert_eq!(cond("name = 'O''Brien, Pat'").value, "O'Brien, Pat");
        assert_eq!(cond("\"odd \"\"col\"\"\" <> x").column, "odd \"col\"");
        assert_eq!(cond("note IS NOT NULL").op, Op::NotNull);
        assert_eq!(cond("note is null").op, Op::IsNull);
        assert_eq!(cond("title contains  big deal ").value, "big deal");
        for bad in [
            "",
            "id",
            "id ~ 3",
            "\"id >= 3",
            "name = 'x",
            "id <=> 5",
            "id == 5",
        ] {
            assert!(Condition::parse(bad).is_err(), "{bad:?}");
        }
        // Display parses back to the same condition.
        for c in [
            "name = 'O''Brien'",
            "\"a b\" < 3",
            "x is null",
            "t contains 'a b'",
        ] {
            assert_eq!(cond(&cond(c).to_string()), cond(c));
        }
    }

    fn bound(s: &str, numeric_column: bool) -> BoundCondition {
        let c = cond(s);
        BoundCondition {
            pos: 0,
            op: c.op,
            numeric: parse_number(c.value.as_bytes()),
            text: c.value.into_bytes(),
            numeric_column,
        }
    }

    #[test]
    fn numbers_compare_as_numbers_and_text_as_bytes() {
        assert!(bound("x > 9", false).matches(&Value::Integer(10)));
        assert!(!bound("x > 9", false).matches(&Value::Text(b"10".to_vec())));
        assert!(bound("x > 9", true).matches(&Value::Text(b"10".to_vec())));
        assert!(bound("x >= 2.5", true).matches(&Value::Text(b"2.50".to_vec())));
        assert!(bound("x < 1", false).matches(&Value::Real(0.5)));
        assert!(bound("d >= 2026-01-01", false).matches(&Value::Text(b"2026-03-04".to_vec())));
        assert!(!bound("x != 5", false).matches(&Value::Null));
        assert!(bound("x is null", false).matches(&Value::Null));
        assert!(bound("b contains 00ff", false).matches(&Value::Blob(vec![1, 0, 255])));
        assert!(bound("x = NaN", true).matches(&Value::Text(b"NaN".to_vec())));
        assert!(bound("x > 1e300", true).matches(&Value::Text(b"Infinity".to_vec())));
    }
}
