//! Engine integration tests against real SQLite files. Restored data is compared with
//! the source by an independent reader (`dump_sqlite.py`, CPython's sqlite3), not only
//! by the engine's own checksums.

mod consistency;
mod damage;
mod drill;
mod export;
mod fidelity;
mod format;
mod incremental;
mod many_tables;
mod merge;
mod mysql;
mod pitr;
mod postgres;
mod preview;
mod prune;
mod remote;
mod repair;
mod repo_scale;
mod roundtrip_prop;
mod schema;
mod sqlite_capture;
mod sqlite_writers;
mod support;
mod tls;
