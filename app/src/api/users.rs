//! Accounts: admins create and disable them; everyone changes their own password.

use crate::auth::Role;
use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::ssr::OrInternal;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: i64,
    /// Sources granted to this user (requesters).
    pub sources: Vec<i64>,
    /// Sources on which this user may approve restore requests.
    pub approves: Vec<i64>,
}

#[server(endpoint = "users/list")]
pub async fn list_users() -> Result<Vec<UserView>, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::ManageUsers, "user.list").await?;
    let grants = store::grants(&c.state.db)
        .await
        .or_internal("listing grants")?;
    let approvers = store::approvers(&c.state.db)
        .await
        .or_internal("listing approvers")?;
    let rows = store::users(&c.state.db)
        .await
        .or_internal("listing users")?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(UserView {
                id: r.id,
                role: Role::parse(&r.role)?,
                username: r.username,
                disabled: r.disabled_at.is_some(),
                created_at: r.created_at,
                sources: grants.iter().filter(|g| g.1 == r.id).map(|g| g.0).collect(),
                approves: approvers
                    .iter()
                    .filter(|g| g.1 == r.id)
                    .map(|g| g.0)
                    .collect(),
            })
        })
        .collect())
}

#[server(endpoint = "users/create")]
pub async fn create_user(
    username: String,
    role: String,
    password: String,
) -> Result<i64, AppError> {
    use crate::auth::Perm;
    use crate::forms;
    use crate::ssr::{ctx, password as pw, store};
    let c = ctx::authorize(Perm::ManageUsers, "user.create").await?;
    let result = async {
        let username = forms::username(&username)?;
        let role = forms::role(&role)?;
        forms::password("password", &password)?;
        let phc = pw::hash(engine::secret::Secret::new(password))
            .await
            .or_internal("hashing a password")?;
        store::insert_user(&c.state.db, &username, &phc, role.as_str())
            .await
            .or_internal("creating a user")?
            .ok_or_else(|| AppError::Conflict {
                field: Some("username".into()),
                message: "This user name is taken.".into(),
            })
    }
    .await;
    c.audited("user.create", &format!("user {}", username.trim()), result)
        .await
}

#[server(endpoint = "users/set_disabled")]
pub async fn set_user_disabled(id: i64, disabled: bool) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::ManageUsers, "user.disable").await?;
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    let result = async {
        if id == c.user.id && disabled {
            return Err(AppError::Invalid(
                "You cannot disable your own account.".into(),
            ));
        }
        match store::set_disabled(&c.state.db, id, disabled)
            .await
            .or_internal("disabling a user")?
        {
            store::Disabling::Done => Ok(()),
            store::Disabling::NotFound => Err(AppError::NotFound("User".into())),
            store::Disabling::LastAdmin => Err(AppError::Invalid(
                "This is the last active admin: make another account admin first.".into(),
            )),
        }
    }
    .await;
    c.audited(action, &format!("user #{id}"), result).await
}

/// Removes a user (admins only): their sessions end at once, their API tokens, grants
/// and approver rights go; their name stays in the history (jobs, requests, the audit
/// log) and is not given to anyone else. Not oneself, not the last active admin.
#[server(endpoint = "users/remove")]
pub async fn remove_user(id: i64) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, db, password as pw, store};
    let c = ctx::authorize(Perm::ManageUsers, "user.remove").await?;
    let mut what = format!("user #{id}");
    let result = async {
        if id == c.user.id {
            return Err(AppError::Invalid(
                "You cannot remove your own account: another admin can.".into(),
            ));
        }
        if let Some(u) = db::user_by_id(&c.state.db, id)
            .await
            .or_internal("loading a user")?
        {
            what = format!("user {}", u.username);
        }
        let phc = pw::hash(pw::generate())
            .await
            .or_internal("hashing a password")?;
        match store::remove_user(&c.state.db, id, &phc, c.user.id)
            .await
            .or_internal("removing a user")?
        {
            store::Removal::Removed {
                requests,
                approvals,
            } => {
                if requests + approvals > 0 {
                    what = format!(
                        "{what} ({requests} waiting restore request(s) cancelled, {approvals} approval(s) of waiting requests withdrawn)"
                    );
                }
                Ok(())
            }
            store::Removal::NotFound => Err(AppError::NotFound("User".into())),
            store::Removal::LastAdmin => Err(AppError::Invalid(
                "This is the last active admin: make another account admin first.".into(),
            )),
        }
    }
    .await;
    c.audited("user.remove", &what, result).await
}

/// Gives a user another role (admins only). Their sessions end, so the new role applies
/// from their next request (they log in again); their API tokens wider than the new
/// role stop working (`session::from_api_token`), narrower ones keep working. The last
/// active admin cannot stop being one.
#[server(endpoint = "users/set_role")]
pub async fn set_user_role(id: i64, role: String) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::forms;
    use crate::ssr::{ctx, db, store};
    let c = ctx::authorize(Perm::ManageUsers, "user.role").await?;
    let mut what = format!("user #{id}: {}", role.trim());
    let result = async {
        let role = forms::role(&role)?;
        let user = db::user_by_id(&c.state.db, id)
            .await
            .or_internal("loading a user")?
            .ok_or_else(|| AppError::NotFound("User".into()))?;
        what = format!("user {}: {} → {}", user.username, user.role, role.as_str());
        match store::set_role(&c.state.db, id, role.as_str())
            .await
            .or_internal("changing a role")?
        {
            store::RoleChanged::Changed => Ok(()),
            store::RoleChanged::NotFound => Err(AppError::NotFound("User".into())),
            store::RoleChanged::LastAdmin => Err(AppError::Field(
                "role".into(),
                "This is the last active admin: make another account admin first.".into(),
            )),
        }
    }
    .await;
    c.audited("user.role", &what, result).await
}

/// Ends every console session of a user at once (a lost laptop, a shared screen),
/// and revokes their API tokens (one could have been made with a stolen session):
/// their cookies and tokens stop working on the next request. Admins for anyone;
/// everyone for themselves.
#[server(endpoint = "users/sign_out")]
pub async fn sign_out_everywhere(id: i64) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, db};
    let me = ctx::authenticate().await?;
    let c = if id == me.user.id {
        me
    } else {
        ctx::authorize(Perm::ManageUsers, "user.sign_out").await?
    };
    let result = async {
        db::bump_session_epoch(&c.state.db, id)
            .await
            .or_internal("ending a user's sessions")?
            .ok_or_else(|| AppError::NotFound("User".into()))?;
        crate::ssr::tokens::revoke_all(&c.state.db, id)
            .await
            .or_internal("revoking a user's tokens")?;
        if id == c.user.id && !c.user.via_token {
            crate::ssr::session::clear_cookie(&c.state)?;
        }
        Ok(())
    }
    .await;
    c.audited("user.sign_out", &format!("user #{id}"), result)
        .await
}

#[server(endpoint = "users/grant")]
pub async fn grant_source(user_id: i64, source_id: i64, granted: bool) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::ManageUsers, "user.grant").await?;
    let result = async {
        store::source(&c.state.db, source_id)
            .await
            .or_internal("loading a source")?
            .ok_or_else(|| AppError::NotFound("Source".into()))?;
        if !store::set_grant(&c.state.db, source_id, user_id, granted)
            .await
            .or_internal("granting a source")?
        {
            return Err(AppError::NotFound("User".into()));
        }
        Ok(())
    }
    .await;
    let action = if granted { "user.grant" } else { "user.revoke" };
    c.audited(
        action,
        &format!("user #{user_id} source #{source_id}"),
        result,
    )
    .await
}

/// Lets a user approve (and reject) restore requests on a source, or no longer. Admins
/// and operators may always; this is for the others (requesters).
#[server(endpoint = "users/approver")]
pub async fn set_approver(user_id: i64, source_id: i64, on: bool) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, db, store};
    let c = ctx::authorize(Perm::ManageUsers, "user.approver").await?;
    let result = async {
        store::source(&c.state.db, source_id)
            .await
            .or_internal("loading a source")?
            .ok_or_else(|| AppError::NotFound("Source".into()))?;
        db::user_by_id(&c.state.db, user_id)
            .await
            .or_internal("loading a user")?
            .ok_or_else(|| AppError::NotFound("User".into()))?;
        if !store::set_approver(&c.state.db, source_id, user_id, on)
            .await
            .or_internal("setting an approver")?
        {
            return Err(AppError::NotFound("User".into()));
        }
        Ok(())
    }
    .await;
    let action = if on {
        "user.approver"
    } else {
        "user.approver_revoke"
    };
    c.audited(
        action,
        &format!("user #{user_id} source #{source_id}"),
        result,
    )
    .await
}

/// Any logged-in user: a new password for their own account, given the current one.
#[server(endpoint = "users/change_password")]
pub async fn change_password(current: String, new: String) -> Result<(), AppError> {
    use crate::forms;
    use crate::ssr::{ctx, db, password as pw, store};
    let c = ctx::authenticate().await?;
    let result = async {
        forms::password("new", &new)?;
        let row = db::user_by_id(&c.state.db, c.user.id)
            .await
            .or_internal("loading a user")?
            .ok_or(AppError::Unauthenticated)?;
        if !pw::verify(engine::secret::Secret::new(current), row.password_hash).await {
            return Err(AppError::Field(
                "current".into(),
                "The current password is wrong.".into(),
            ));
        }
        let phc = pw::hash(engine::secret::Secret::new(new))
            .await
            .or_internal("hashing a password")?;
        // Every other session of this user ends; this browser gets a cookie for the
        // new epoch so the person who changed it stays logged in.
        let epoch = store::set_password_hash(&c.state.db, c.user.id, &phc)
            .await
            .or_internal("storing a password")?;
        if !c.user.via_token {
            crate::ssr::session::set_cookie(&c.state, &c.user, epoch)?;
        }
        Ok(())
    }
    .await;
    c.audited(
        "user.change_password",
        &format!("user {}", c.user.username),
        result,
    )
    .await
}

/// One of the caller's API tokens (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked: bool,
    pub last_used_at: Option<i64>,
}

/// The caller's API tokens, newest first.
#[server(endpoint = "tokens/list")]
pub async fn list_tokens() -> Result<Vec<TokenView>, AppError> {
    use crate::ssr::{ctx, tokens};
    let c = ctx::authenticate().await?;
    let rows = tokens::of_user(&c.state.db, c.user.id)
        .await
        .or_internal("listing tokens")?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(TokenView {
                id: r.id,
                role: Role::parse(&r.role)?,
                name: r.name,
                created_at: r.created_at,
                expires_at: r.expires_at,
                revoked: r.revoked_at.is_some(),
                last_used_at: r.last_used_at,
            })
        })
        .collect())
}

/// Creates an API token for the caller, acting with `role` (their own or narrower) for
/// `days` days; returns the token, which is shown this once. Only from a logged-in
/// session: a token cannot make more tokens.
#[server(endpoint = "tokens/create")]
pub async fn create_token(name: String, role: String, days: i64) -> Result<String, AppError> {
    use crate::forms;
    use crate::ssr::{ctx, db, tokens};
    let c = ctx::authenticate().await?;
    let result = async {
        if c.user.via_token {
            return Err(AppError::Forbidden);
        }
        let name = forms::name("name", &name)?;
        let role = if role.trim().is_empty() {
            Some(c.user.role)
        } else {
            Role::parse(role.trim())
        };
        let role = role
            .filter(|r| c.user.role.narrower().contains(r))
            .ok_or_else(|| {
                AppError::Field(
                    "role".into(),
                    "Choose your own role or a narrower one.".into(),
                )
            })?;
        if !(1..=366).contains(&days) {
            return Err(AppError::Field(
                "days".into(),
                "Between 1 and 366 days.".into(),
            ));
        }
        let token = tokens::generate();
        tokens::insert(
            &c.state.db,
            c.user.id,
            &name,
            role,
            &tokens::hash(token.expose()),
            db::now_ms() + days * 86_400_000,
        )
        .await
        .or_internal("storing a token")?;
        Ok(token.expose().to_string())
    }
    .await;
    c.audited(
        "token.create",
        &format!("user {} token {}", c.user.username, name.trim()),
        result,
    )
    .await
}

/// Revokes one of the caller's tokens.
#[server(endpoint = "tokens/revoke")]
pub async fn revoke_token(id: i64) -> Result<(), AppError> {
    use crate::ssr::{ctx, tokens};
    let c = ctx::authenticate().await?;
    let result = async {
        if !tokens::revoke(&c.state.db, id, c.user.id)
            .await
            .or_internal("revoking a token")?
        {
            return Err(AppError::NotFound("Token".into()));
        }
        Ok(())
    }
    .await;
    c.audited("token.revoke", &format!("token #{id}"), result)
        .await
}
