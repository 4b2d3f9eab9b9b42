//! Server functions, grouped by what they manage, with the types they exchange (shared
//! by the server and the browser). Each one starts with `ctx::authorize` (session +
//! role, refusals audited), validates with `crate::forms`, calls plain functions in
//! `crate::ssr`, and audits what it changed or ran.

pub mod browse;
pub mod drills;
pub mod history;
pub mod jobs;
pub mod notify;
pub mod requests;
pub mod selection;
pub mod sources;
pub mod users;

/// How many rows a list page returns.
pub const PAGE: i64 = 50;
