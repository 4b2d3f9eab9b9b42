//! Integration tests of the `tablesafe` binary: each test starts the real binary on a free
//! loopback port with a temporary data directory (and, where it says so, a real
//! PostgreSQL started by `testkit`) and talks HTTP to it like a browser would.

mod cli;
mod config;
mod consistency;
mod console;
mod copies;
mod drills;
mod export;
mod guide;
mod hardening;
mod harness;
mod history_db;
mod insider;
mod jobs;
mod lifecycle_policies;
mod lifecycle_sources;
mod lifecycle_users;
mod load;
mod mysql;
mod notify;
mod observability;
mod openapi;
mod pitr;
mod preview;
mod proxy;
mod requests;
mod restore;
mod retention;
mod roles;
mod schedule;
mod signals;
mod sqlite_source;
mod targets;
mod tokens;
mod trigger;
mod upgrade;
