//! Logging in and out, and who is logged in.
//!
//! A session is a JWT (HS256) in the `tablesafe_session` cookie: HttpOnly (scripts cannot
//! read it), SameSite=Strict (the browser does not send it on cross-site requests), with
//! an expiry. Every request that uses it also reloads the account, so a disabled account
//! is locked out at once rather than when its token expires.

use crate::error::AppError;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// The roles of DEVELOPERS.md. Only `admin` exists until the console issue adds users.
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
        [Role::Admin, Role::Operator, Role::Requester, Role::Auditor]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// The logged-in user as the pages see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUser {
    pub id: i64,
    pub username: String,
    pub role: Role,
}

/// Checks the password and sets the session cookie; redirects to the dashboard.
#[server(endpoint = "login")]
pub async fn login(username: String, password: String) -> Result<(), AppError> {
    use crate::ssr::{AppState, session};
    let state = expect_context::<AppState>();
    let user = session::authenticate(&state, username.trim(), password).await?;
    session::set_cookie(&state, &user)?;
    leptos_axum::redirect("/");
    Ok(())
}

/// Clears the session cookie; redirects to the login page.
#[server(endpoint = "logout")]
pub async fn logout() -> Result<(), AppError> {
    use crate::ssr::{AppState, session};
    let state = expect_context::<AppState>();
    session::clear_cookie(&state)?;
    leptos_axum::redirect("/login");
    Ok(())
}

/// The logged-in user, or `None`.
#[server(endpoint = "current_user")]
pub async fn current_user() -> Result<Option<SessionUser>, AppError> {
    use crate::ssr::{AppState, session};
    let state = expect_context::<AppState>();
    session::from_context(&state).await
}
