//! Logging in and out, and who is logged in.
//!
//! A session is a JWT (HS256) in the `tablesafe_session` cookie: HttpOnly (scripts cannot
//! read it), SameSite=Strict (the browser does not send it on cross-site requests), with
//! an expiry. Every request that uses it also reloads the account, so a disabled account
//! is locked out at once rather than when its token expires.

use crate::error::AppError;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// The roles of DEVELOPERS.md. What each may do is [`Role::can`]: one table, used by the
/// server to enforce and by the pages only to hide what a role cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Requester,
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Requester => "requester",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Requester, Role::Auditor];

    /// The roles an API token of a user with this role may act with: their own, or one
    /// that can do only a part of what they can.
    pub fn narrower(self) -> &'static [Role] {
        match self {
            Role::Admin => &Role::ALL,
            Role::Operator => &[Role::Operator, Role::Requester],
            Role::Requester => &[Role::Requester],
            Role::Auditor => &[Role::Auditor],
        }
    }

    pub fn can(self, p: Perm) -> bool {
        use Perm::*;
        match self {
            Role::Admin => true,
            Role::Operator => matches!(p, SeeAll | Configure | RunJobs | RestoreNew | SeeRequests),
            Role::Requester => matches!(p, RestoreNew | SeeRequests),
            Role::Auditor => matches!(p, SeeAll | SeeAudit | SeeRequests),
        }
    }
}

/// What a server function may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Perm {
    /// Create users, disable them, grant sources.
    ManageUsers,
    /// See every source, target, policy, job and snapshot (requesters see only the
    /// sources granted to them and their snapshots).
    SeeAll,
    /// Read the audit log.
    SeeAudit,
    /// Add and change sources, targets and policies.
    Configure,
    /// Run backups and verifies; restore in any mode; cancel and retry jobs.
    RunJobs,
    /// Restore into a new table (never replace or append); file restore requests.
    RestoreNew,
    /// See restore requests (all of them, or for requesters their own and those they
    /// may approve; auditors read-only).
    SeeRequests,
}

/// The logged-in user as the pages see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUser {
    pub id: i64,
    pub username: String,
    /// The user's role, or for a call with an API token the token's (narrower) role.
    pub role: Role,
    /// The call carries an API token rather than a session cookie.
    #[serde(default)]
    pub via_token: bool,
}

/// Checks the password and sets the session cookie; redirects to the dashboard.
#[server(endpoint = "login")]
pub async fn login(username: String, password: String) -> Result<(), AppError> {
    use crate::ssr::{AppState, audit, ctx, session};
    let state = expect_context::<AppState>();
    let username = username.trim().chars().take(128).collect::<String>();
    let address = ctx::address();
    // A user name *from an address*: guessing a colleague's password delays only the
    // guesser, never the colleague at their own desk.
    let group = crate::ssr::client::group(&address);
    let keys = [
        format!("user:{}|ip:{group}", username.to_lowercase()),
        format!("ip:{group}"),
    ];
    use crate::api::history::Outcome;
    let event = |outcome: Outcome, detail: String, user_id: Option<i64>| audit::Event {
        user_id,
        username: username.clone(),
        address: address.clone(),
        action: "login".into(),
        target: format!("user {username}"),
        outcome,
        detail,
    };
    // Failures by someone not logged in go to the audit log one entry per burst.
    let anonymous = async |e: audit::Event| {
        if state.bursts.record(&e)
            && let Err(err) = audit::append(&state.db, &e).await
        {
            tracing::error!(error = %err, "could not write the audit log");
        }
    };
    if let Some(wait) = state.throttle.check(&keys) {
        metrics::counter!("tablesafe_login_failures_total").increment(1);
        anonymous(event(
            Outcome::Denied,
            "too many failed logins".into(),
            None,
        ))
        .await;
        return Err(AppError::Invalid(format!(
            "Too many failed logins. Try again in {} seconds.",
            wait.as_secs().max(1)
        )));
    }
    match session::authenticate(&state, &username, password).await {
        Ok(session::LoggedIn { user, epoch }) => {
            state.throttle.succeeded(&keys[0]);
            // The failures before it from this address, summed up before the success.
            if let Some(summary) = state.bursts.close("login", &address)
                && let Err(e) = audit::append(&state.db, &summary).await
            {
                tracing::error!(error = %e, "could not write the audit log");
            }
            session::set_cookie(&state, &user, epoch)?;
            if let Err(e) =
                audit::append(&state.db, &event(Outcome::Ok, String::new(), Some(user.id))).await
            {
                tracing::error!(error = %e, "could not write the audit log");
            }
            leptos_axum::redirect(&crate::base::url("/"));
            Ok(())
        }
        Err(e) => {
            metrics::counter!("tablesafe_login_failures_total").increment(1);
            state.throttle.failed(&keys);
            anonymous(event(Outcome::Failed, e.to_string(), None)).await;
            Err(e)
        }
    }
}

/// Ends this session (a copy of its cookie kept elsewhere stops working too; the
/// user's other browsers stay logged in — "Sign out everywhere" ends those), clears
/// the cookie and redirects to the login page.
#[server(endpoint = "logout")]
pub async fn logout() -> Result<(), AppError> {
    use crate::ssr::{AppState, ctx, session};
    let state = expect_context::<AppState>();
    if let Some(user) = session::from_context(&state).await? {
        let parts = use_context::<http::request::Parts>();
        if let Some(claimed) = parts
            .as_ref()
            .and_then(|p| session::claimed_from_headers(&state, &p.headers))
        {
            session::end_session(&state, &claimed).await?;
        }
        let c = ctx::Ctx {
            state: state.clone(),
            user,
            address: ctx::address(),
        };
        c.audit(
            "logout",
            &format!("user {}", c.user.username),
            crate::api::history::Outcome::Ok,
            "",
        )
        .await;
    }
    session::clear_cookie(&state)?;
    leptos_axum::redirect(&crate::base::url("/login"));
    Ok(())
}

/// The logged-in user, or `None`.
#[server(endpoint = "current_user")]
pub async fn current_user() -> Result<Option<SessionUser>, AppError> {
    use crate::ssr::{AppState, session};
    let state = expect_context::<AppState>();
    session::from_context(&state).await
}
