//! The two-person rule belongs to the database, not to a source row: a second source
//! for the same database (another user name, `localhost` for `127.0.0.1`, a symlink to
//! the SQLite file) has the strictest rule of them all
//! (`engine::source::identity`). Without this, an operator could add the production
//! database again under a new name, with no rule, and restore or browse through that.

use super::AppState;
use super::secrets::Kind;
use super::store::{self, SourceRow};
use anyhow::Result;

/// `row` with the strictest approval rule among every source that names the same
/// database (the most approvals; with it, that source's request lifetime).
pub async fn effective(state: &AppState, mut row: SourceRow) -> Result<SourceRow> {
    // Only sources with a stricter rule matter; names are resolved only for those.
    let mut mine = None;
    for other in store::sources(&state.db, None).await? {
        if other.id == row.id
            || other.engine != row.engine
            || other.approvals_required <= row.approvals_required
        {
            continue;
        }
        if mine.is_none() {
            mine = Some(identity(state, &row).await?);
        }
        let Some(mine) = &mine else { continue };
        if identity(state, &other).await?.same_database(mine) {
            row.approvals_required = other.approvals_required;
            row.request_ttl_minutes = other.request_ttl_minutes;
        }
    }
    Ok(row)
}

async fn identity(state: &AppState, row: &SourceRow) -> Result<engine::source::identity::Identity> {
    let url = state.secrets.open(Kind::SourceUrl, &row.sealed_url)?;
    let parsed = engine::source::SourceUrl::parse(&url)?;
    Ok(engine::source::identity::identity(&parsed).await)
}

/// Refuses a change to how `source_id`'s data is kept (a policy, its copies, its
/// retention, a drill) unless the caller is an admin, where the source's restores need
/// approvals: a new target or copy target the caller controls, a drill's scratch server
/// or a shorter retention would get around the two people.
pub async fn require_admin_if_guarded(
    c: &super::ctx::Ctx,
    source_id: i64,
) -> Result<(), crate::error::AppError> {
    use super::OrInternal;
    use crate::auth::Perm;
    if c.can(Perm::ManageUsers) {
        return Ok(());
    }
    let Some(row) = store::source(&c.state.db, source_id)
        .await
        .or_internal("loading a source")?
    else {
        return Ok(());
    };
    let row = effective(&c.state, row)
        .await
        .or_internal("checking a source's approval rule")?;
    if row.approvals_required > 0 {
        return Err(crate::error::AppError::Refused(format!(
            "Restores of {} need {} approval(s), so only an admin may change how it is backed up (policies, targets, copies, retention, drills). Ask an admin.",
            row.name, row.approvals_required
        )));
    }
    Ok(())
}
