//! Session tokens and cookies. See `crate::auth` for the shape of a session.

use super::OrInternal;
use super::{AppState, db, internal, keys};
use crate::auth::{Role, SessionUser};
use crate::error::AppError;
use engine::secret::Secret;
use http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

pub const COOKIE_NAME: &str = "tablesafe_session";

/// Signing keys and cookie settings, derived once at start.
pub struct SessionKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// How long a session lasts.
    pub ttl_secs: u64,
    /// Add `Secure` to the cookie (set when the console is served over HTTPS).
    pub secure_cookie: bool,
    /// The cookie's `Path`: `/`, or the path prefix the console is served under
    /// (`--public-url https://ops.example.com/tablesafe/` → `/tablesafe`), so the session
    /// goes to the console only, not to the other applications on the same host.
    pub cookie_path: String,
}

impl SessionKeys {
    pub fn new(
        server_key: &Secret<[u8; keys::KEY_LEN]>,
        ttl_secs: u64,
        secure_cookie: bool,
    ) -> Self {
        let key = keys::derive(server_key, "tablesafe 2026-11 session token HS256 key");
        Self {
            encoding: EncodingKey::from_secret(key.expose()),
            decoding: DecodingKey::from_secret(key.expose()),
            ttl_secs,
            secure_cookie,
            cookie_path: "/".into(),
        }
    }

    /// The same keys with the cookie scoped to the path prefix `base` (`""`: the root).
    pub fn under(mut self, base: &str) -> Self {
        self.cookie_path = if base.is_empty() {
            "/".into()
        } else {
            base.into()
        };
        self
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id, as a string per RFC 7519.
    sub: String,
    iat: u64,
    exp: u64,
    /// The user's session epoch when this was issued: the token is good only while the
    /// user's row still has it (see `db::bump_session_epoch`).
    ep: i64,
    /// This session's id: logout ends it alone (`ended_sessions`).
    sid: String,
}

/// What a valid session token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub user_id: i64,
    pub epoch: i64,
    pub sid: String,
    /// When the token expires (unix seconds).
    pub exp: u64,
}

fn now_secs() -> u64 {
    (db::now_ms() / 1000) as u64
}

/// A user who just proved who they are, and the session epoch their cookie is for.
pub struct LoggedIn {
    pub user: SessionUser,
    pub epoch: i64,
}

/// Checks a user name and password. Unknown user, wrong password and disabled account
/// all give [`AppError::InvalidCredentials`] after the same amount of work.
pub async fn authenticate(
    state: &AppState,
    username: &str,
    password: String,
) -> Result<LoggedIn, AppError> {
    let password = Secret::new(password);
    let row = db::user_by_name(&state.db, username)
        .await
        .or_internal("loading user for login")?;
    let (phc, row) = match row {
        Some(row) => (row.password_hash.clone(), Some(row)),
        None => (dummy_hash().to_string(), None),
    };
    let ok = super::password::verify(password, phc).await;
    match row {
        Some(row) if ok && row.disabled_at.is_none() => Ok(LoggedIn {
            epoch: row.session_epoch,
            user: to_session_user(row)?,
        }),
        _ => {
            tracing::info!(username, "failed login");
            Err(AppError::InvalidCredentials)
        }
    }
}

/// A hash of a random password, so a login for an unknown user costs one Argon2 run too.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        super::password::hash_blocking(&super::password::generate()).unwrap_or_default()
    })
}

fn to_session_user(row: db::UserRow) -> Result<SessionUser, AppError> {
    let role = Role::parse(&row.role)
        .ok_or_else(|| internal("user has an unknown role", format!("{:?}", row.role)))?;
    Ok(SessionUser {
        id: row.id,
        username: row.username,
        role,
        via_token: false,
    })
}

/// A signed token for `user` in session epoch `epoch`, valid for the configured time.
pub fn issue_token(keys: &SessionKeys, user: &SessionUser, epoch: i64) -> Result<String, AppError> {
    let iat = now_secs();
    let claims = Claims {
        sub: user.id.to_string(),
        iat,
        exp: iat + keys.ttl_secs,
        ep: epoch,
        sid: engine::repo::crypto::hex(&rand::random::<[u8; 16]>()),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
        .or_internal("signing session token")
}

/// The `Set-Cookie` value that stores `token` (or, with `None`, deletes the cookie).
pub fn cookie_header(keys: &SessionKeys, token: Option<&str>) -> String {
    let secure = if keys.secure_cookie { "; Secure" } else { "" };
    let path = &keys.cookie_path;
    match token {
        Some(t) => format!(
            "{COOKIE_NAME}={t}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            keys.ttl_secs
        ),
        None => {
            format!("{COOKIE_NAME}=; Path={path}; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
        }
    }
}

fn set_cookie_header(value: String) -> Result<(), AppError> {
    let response = leptos::prelude::expect_context::<leptos_axum::ResponseOptions>();
    let value = HeaderValue::from_str(&value).or_internal("cookie header")?;
    response.append_header(header::SET_COOKIE, value);
    Ok(())
}

pub fn set_cookie(state: &AppState, user: &SessionUser, epoch: i64) -> Result<(), AppError> {
    let token = issue_token(&state.sessions, user, epoch)?;
    set_cookie_header(cookie_header(&state.sessions, Some(&token)))
}

pub fn clear_cookie(state: &AppState) -> Result<(), AppError> {
    set_cookie_header(cookie_header(&state.sessions, None))
}

/// The session token from a request's `Cookie` headers.
pub fn token_from_headers(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

/// What a token names, if it is authentic and unexpired. (Whether the epoch is still
/// the user's and the session not ended is for the caller, who loads the user.)
pub fn verify_token(keys: &SessionKeys, token: &str) -> Option<Claimed> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(token, &keys.decoding, &validation).ok()?;
    Some(Claimed {
        user_id: data.claims.sub.parse().ok()?,
        epoch: data.claims.ep,
        sid: data.claims.sid,
        exp: data.claims.exp,
    })
}

/// Ends the session `claimed` names, and only it (logout): its id is kept until the
/// token would have expired anyway. Expired ids are swept on the way.
pub async fn end_session(state: &AppState, claimed: &Claimed) -> Result<(), AppError> {
    let now = db::now_ms();
    sqlx::query("DELETE FROM ended_sessions WHERE expires_at < $1")
        .bind(now)
        .execute(&state.db.pool)
        .await
        .or_internal("sweeping ended sessions")?;
    sqlx::query(
        "INSERT INTO ended_sessions (sid, user_id, expires_at) VALUES ($1, $2, $3) ON CONFLICT (sid) DO NOTHING",
    )
    .bind(&claimed.sid)
    .bind(claimed.user_id)
    .bind(claimed.exp as i64 * 1000)
    .execute(&state.db.pool)
    .await
    .or_internal("ending a session")?;
    Ok(())
}

/// The claims of the request's session cookie, if it has a valid one.
pub fn claimed_from_headers(state: &AppState, headers: &HeaderMap) -> Option<Claimed> {
    token_from_headers(headers).and_then(|t| verify_token(&state.sessions, t))
}

/// An API token from `Authorization: Bearer tsk_…`, if the request carries one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| t.starts_with(super::tokens::PREFIX))
}

/// The caller of a request that carries an API token: `Err(Unauthenticated)` for a
/// token that is unknown, revoked or expired, or whose user is disabled (a wrong token
/// is never treated as no token).
async fn from_api_token(state: &AppState, token: &str) -> Result<SessionUser, AppError> {
    let row = super::tokens::lookup(&state.db, token)
        .await
        .or_internal("checking an API token")?
        .ok_or(AppError::Unauthenticated)?;
    let user = db::user_by_id(&state.db, row.user_id)
        .await
        .or_internal("loading a token's user")?
        .filter(|u| u.disabled_at.is_none())
        .ok_or(AppError::Unauthenticated)?;
    let mut user = to_session_user(user)?;
    // The token's role, as long as the user still has one at least as wide.
    let role = Role::parse(&row.role).ok_or(AppError::Unauthenticated)?;
    if !user.role.narrower().contains(&role) {
        return Err(AppError::Unauthenticated);
    }
    user.role = role;
    user.via_token = true;
    Ok(user)
}

/// The logged-in user of a request: an API token (see [`bearer_token`]), or a valid
/// session cookie naming an account that still exists, is not disabled and has not
/// moved to a new session epoch since the cookie was issued.
pub async fn from_headers(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<SessionUser>, AppError> {
    if let Some(token) = bearer_token(headers) {
        return match from_api_token(state, token).await {
            Ok(user) => Ok(Some(user)),
            Err(AppError::Unauthenticated) => Ok(None),
            Err(e) => Err(e),
        };
    }
    let Some(claimed) = claimed_from_headers(state, headers) else {
        return Ok(None);
    };
    let row = db::user_by_id(&state.db, claimed.user_id)
        .await
        .or_internal("loading session user")?;
    let Some(row) = row.filter(|r| r.disabled_at.is_none() && r.session_epoch == claimed.epoch)
    else {
        return Ok(None);
    };
    let ended: Option<i64> = sqlx::query_scalar("SELECT 1 FROM ended_sessions WHERE sid = $1")
        .bind(&claimed.sid)
        .fetch_optional(&state.db.pool)
        .await
        .or_internal("checking a session")?;
    if ended.is_some() {
        return Ok(None);
    }
    Ok(Some(to_session_user(row)?))
}

/// The logged-in user of the request a server function or page render is serving.
pub async fn from_context(state: &AppState) -> Result<Option<SessionUser>, AppError> {
    let Some(parts) = leptos::prelude::use_context::<http::request::Parts>() else {
        return Ok(None);
    };
    from_headers(state, &parts.headers).await
}

/// Like [`from_context`], but an error when nobody is logged in.
pub async fn require_user(state: &AppState) -> Result<SessionUser, AppError> {
    from_context(state).await?.ok_or(AppError::Unauthenticated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SessionKeys {
        SessionKeys::new(&Secret::new([7u8; keys::KEY_LEN]), 3600, false)
    }

    fn user() -> SessionUser {
        SessionUser {
            id: 42,
            username: "admin".into(),
            role: Role::Admin,
            via_token: false,
        }
    }

    #[test]
    fn a_token_round_trips_and_a_tampered_one_is_rejected() {
        let k = keys();
        let token = issue_token(&k, &user(), 3).unwrap();
        let claimed = verify_token(&k, &token).unwrap();
        assert_eq!(
            (claimed.user_id, claimed.epoch, claimed.sid.len()),
            (42, 3, 32)
        );
        let again = verify_token(&k, &issue_token(&k, &user(), 3).unwrap()).unwrap();
        assert_ne!(claimed.sid, again.sid, "every login is its own session");
        let mut tampered = token.clone().into_bytes();
        let mid = tampered.len() / 2;
        tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            verify_token(&k, &String::from_utf8(tampered).unwrap()),
            None
        );
        let other = SessionKeys::new(&Secret::new([8u8; keys::KEY_LEN]), 3600, false);
        assert_eq!(
            verify_token(&other, &token),
            None,
            "a token from another server key"
        );
    }

    #[test]
    fn an_expired_token_is_rejected() {
        let k = keys();
        let claims = Claims {
            sub: "42".into(),
            iat: 1,
            exp: now_secs() - 1,
            ep: 0,
            sid: "s".into(),
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &k.encoding).unwrap();
        assert_eq!(verify_token(&k, &token), None);
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict() {
        let k = keys();
        let set = cookie_header(&k, Some("abc"));
        assert!(set.starts_with("tablesafe_session=abc;"), "{set}");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"] {
            assert!(set.contains(attr), "{set} lacks {attr}");
        }
        assert!(!set.contains("Secure"));
        assert!(
            cookie_header(
                &SessionKeys::new(&Secret::new([7; 32]), 60, true),
                Some("x")
            )
            .contains("; Secure")
        );
        assert!(cookie_header(&k, None).contains("Max-Age=0"));
        // Under a path prefix the cookie goes to the console's paths only, and logging
        // out deletes that same cookie.
        let under = keys().under("/tablesafe");
        assert!(cookie_header(&under, Some("abc")).contains("; Path=/tablesafe;"));
        assert!(cookie_header(&under, None).contains("; Path=/tablesafe;"));
        assert!(cookie_header(&keys().under(""), Some("abc")).contains("; Path=/;"));
    }

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; tablesafe_session=tok; b=2"),
        );
        assert_eq!(token_from_headers(&h), Some("tok"));
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("tablesafe_session="),
        );
        assert_eq!(token_from_headers(&h), None);
    }
}
