//! The first lines of every server function: who is calling, from where, and may they.

use super::{AppState, audit, session};
use crate::auth::{Perm, SessionUser};
use crate::error::AppError;
use crate::model::Outcome;
use leptos::prelude::{expect_context, use_context};

/// A server function call by a logged-in user whose role allows it.
pub struct Ctx {
    pub state: AppState,
    pub user: SessionUser,
    pub address: String,
}

/// The client's address as the server saw it.
pub fn address() -> String {
    let trusted = use_context::<AppState>()
        .map(|s| s.trusted_proxies.clone())
        .unwrap_or_default();
    use_context::<http::request::Parts>()
        .and_then(|p| {
            p.extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| super::client::address(c.0.ip(), &p.headers, &trusted).to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Checks the session and that the user's role has `perm`. A refusal is audited under
/// `action`.
pub async fn authorize(perm: Perm, action: &str) -> Result<Ctx, AppError> {
    authorize_any(&[perm], action).await
}

/// A call by any logged-in user (what every role may do, like changing one's password).
pub async fn authenticate() -> Result<Ctx, AppError> {
    let state = expect_context::<AppState>();
    let user = session::require_user(&state).await?;
    Ok(Ctx {
        state,
        user,
        address: address(),
    })
}

/// Like [`authorize`], for calls that any one of `perms` allows.
pub async fn authorize_any(perms: &[Perm], action: &str) -> Result<Ctx, AppError> {
    let ctx = authenticate().await?;
    if !perms.iter().any(|p| ctx.user.role.can(*p)) {
        let detail = format!("the {} role lacks {perms:?}", ctx.user.role.as_str());
        ctx.audit(action, "", Outcome::Denied, &detail).await;
        return Err(AppError::Forbidden);
    }
    Ok(ctx)
}

impl Ctx {
    pub fn can(&self, perm: Perm) -> bool {
        self.user.role.can(perm)
    }

    /// Appends to the audit log; a failure to do so is logged, not shown.
    pub async fn audit(&self, action: &str, target: &str, outcome: Outcome, detail: &str) {
        let event = audit::Event {
            user_id: Some(self.user.id),
            username: self.user.username.clone(),
            address: self.address.clone(),
            action: action.into(),
            target: target.into(),
            outcome,
            detail: detail.into(),
        };
        if let Err(e) = audit::append(&self.state.db, &event).await {
            tracing::error!(error = %e, action, "could not write the audit log");
        }
    }

    /// Audits the outcome of `result` and passes it on.
    pub async fn audited<T>(
        &self,
        action: &str,
        target: &str,
        result: Result<T, AppError>,
    ) -> Result<T, AppError> {
        match &result {
            Ok(_) => self.audit(action, target, Outcome::Ok, "").await,
            Err(e @ (AppError::Forbidden | AppError::Refused(_))) => {
                self.audit(action, target, Outcome::Denied, &e.to_string())
                    .await
            }
            Err(e) => {
                self.audit(action, target, Outcome::Failed, &e.to_string())
                    .await
            }
        }
        result
    }
}
