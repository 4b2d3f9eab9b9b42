//! # The tablesafe backup engine
//!
//! This crate is the part of tablesafe that touches user data: it reads table stores
//! (SQLite, PostgreSQL), writes snapshots into a repository on a target (local disk, S3,
//! SFTP through OpenDAL), and reads them back for restore and verification. It knows
//! nothing of the web console or the command line: `server/` (the `tablesafe` binary) and
//! `app/` (the console's server functions) adapt its plain `*Options` structs and
//! functions. A CI check (`scripts/test.sh`) fails if a web or CLI crate ever appears in
//! this crate's dependency tree.
//!
//! ## What is here today
//!
//! * [`secret`]: the wrapper every secret (database passwords, repository passwords,
//!   object-store keys) travels in, so that `Debug` output and logs never show it, and
//!   [`secret::redact_url`] for showing a connection URL without its password.
//!
//! ## What comes next, and the rules it will follow
//!
//! The repository format arrives with the engine issue and will be written down here, at
//! the crate root, before any code depends on it: what is written first, what makes a
//! snapshot visible (a manifest written last and atomically), what may run concurrently
//! with what, and how garbage collection stays safe while another backup writes. Long
//! operations will take a small context for progress and cancellation so the console's
//! job runner can drive them.

pub mod secret;
