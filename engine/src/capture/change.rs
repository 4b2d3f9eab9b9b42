//! What a captured change is: the transactions, operations and values that the
//! `pgoutput` decoder produces, a segment stores and a replay applies, and the WAL
//! positions they are ordered by.

use std::sync::Arc;

/// `16/B374D848` → its 64-bit position.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// A value as `pgoutput` sends it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cell {
    Null,
    /// A TOASTed value the change did not touch: keep what the row has.
    Unchanged,
    /// The value's text form.
    Text(Vec<u8>),
}

/// A table as the change stream names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    /// `schema.table`, as snapshots name tables.
    pub name: String,
    /// (column, part of the replica identity / primary key).
    pub columns: Vec<(String, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Insert {
        rel: Arc<Relation>,
        new: Vec<Cell>,
    },
    Update {
        rel: Arc<Relation>,
        /// The old key (or whole old row) when the key changed or the identity is FULL.
        old: Option<Vec<Cell>>,
        new: Vec<Cell>,
    },
    Delete {
        rel: Arc<Relation>,
        old: Vec<Cell>,
    },
    Truncate {
        rel: Arc<Relation>,
    },
}

/// One committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub xid: u32,
    pub commit_lsn: u64,
    pub end_lsn: u64,
    pub commit_ms: i64,
    pub ops: Vec<Op>,
}

impl Op {
    pub(super) fn rel(&self) -> &Arc<Relation> {
        match self {
            Op::Insert { rel, .. }
            | Op::Update { rel, .. }
            | Op::Delete { rel, .. }
            | Op::Truncate { rel } => rel,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A keyed test table `public.t (id, v)`.
    pub(in crate::capture) fn rel() -> Arc<Relation> {
        Arc::new(Relation {
            oid: 7,
            name: "public.t".into(),
            columns: vec![("id".into(), true), ("v".into(), false)],
        })
    }

    #[test]
    fn lsns_parse_and_print() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nonsense"), None);
    }
}
