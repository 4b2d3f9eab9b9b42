#![allow(clippy::too_many_arguments)] // server functions take one argument per form field
//! Sources (the databases tablesafe backs up) and targets (where repositories live).

#[cfg(feature = "ssr")]
use crate::api::history::Outcome;
use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::ssr::OrInternal;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceView {
    pub id: i64,
    pub name: String,
    pub engine: Engine,
    /// The connection URL without its password (never sent to the browser).
    pub url: String,
    pub created_at: i64,
    /// Approvals a restore from or into it needs (0, 1, 2).
    pub approvals_required: i64,
    /// How long a restore request on it waits for approval, in minutes.
    pub request_ttl_minutes: i64,
    /// Paused: not backed up until resumed.
    pub paused: bool,
}

pub use tablesafe_types::{Engine, TableSummary};

#[cfg(feature = "ssr")]
fn view(r: crate::ssr::store::SourceRow) -> SourceView {
    SourceView {
        id: r.id,
        name: r.name,
        engine: r.engine,
        url: r.display_url,
        created_at: r.created_at,
        approvals_required: r.approvals_required,
        request_ttl_minutes: r.request_ttl_minutes,
        paused: r.paused_at.is_some(),
    }
}

/// A source the caller may see: every source for roles that see everything, granted
/// ones for requesters.
#[cfg(feature = "ssr")]
pub(crate) async fn visible_source(
    c: &crate::ssr::ctx::Ctx,
    id: i64,
) -> Result<crate::ssr::store::SourceRow, AppError> {
    use crate::auth::Perm;
    use crate::ssr::store;
    let row = store::source(&c.state.db, id)
        .await
        .or_internal("loading a source")?
        .ok_or_else(|| AppError::NotFound("Source".into()))?;
    if c.can(Perm::SeeAll)
        || store::is_granted(&c.state.db, id, c.user.id)
            .await
            .or_internal("checking a grant")?
    {
        Ok(row)
    } else {
        Err(AppError::NotFound("Source".into()))
    }
}

/// Opens a stored source's URL for connecting, refusing one that the server's rules
/// (tablesafe's own files, `--sqlite-dirs`) no longer allow.
#[cfg(feature = "ssr")]
pub(crate) fn source_url(
    c: &crate::ssr::ctx::Ctx,
    row: &crate::ssr::store::SourceRow,
) -> Result<engine::secret::Secret<String>, AppError> {
    use crate::ssr::secrets;
    let url = c
        .state
        .secrets
        .open(secrets::Kind::SourceUrl, &row.sealed_url)
        .or_internal("opening a source URL")?;
    let parsed =
        engine::source::SourceUrl::parse(&url).map_err(|e| AppError::Invalid(e.to_string()))?;
    crate::ssr::check_not_protected(&c.state, &parsed).map_err(AppError::Invalid)?;
    Ok(url)
}

/// Why a source could not be opened, as this user may see it. For a SQLite file only
/// admins get the engine's words: "does not exist" versus "not a database" would let
/// anyone who may add a source probe which files exist on the server.
#[cfg(feature = "ssr")]
pub(crate) fn open_error(
    c: &crate::ssr::ctx::Ctx,
    row: &crate::ssr::store::SourceRow,
    e: impl std::fmt::Display,
) -> AppError {
    use crate::auth::Perm;
    if row.engine == tablesafe_types::Engine::Sqlite && !c.can(Perm::ManageUsers) {
        tracing::info!(source = %row.name, error = %e, "a SQLite source could not be opened");
        AppError::Invalid(format!(
            "Could not open {} as a SQLite database: it is missing, not readable by the tablesafe server, or not a SQLite database. An admin can see which in the server log.",
            row.display_url
        ))
    } else {
        AppError::Invalid(e.to_string())
    }
}

#[server(endpoint = "sources/list")]
pub async fn list_sources() -> Result<Vec<SourceView>, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize_any(&[Perm::SeeAll, Perm::RestoreNew], "source.list").await?;
    let only = (!c.can(Perm::SeeAll)).then_some(c.user.id);
    let rows = store::sources(&c.state.db, only)
        .await
        .or_internal("listing sources")?;
    Ok(rows.into_iter().map(view).collect())
}

#[server(endpoint = "sources/add")]
pub async fn add_source(name: String, url: String) -> Result<i64, AppError> {
    use crate::auth::Perm;
    use crate::forms;
    use crate::ssr::{ctx, secrets, store};
    use engine::secret::Secret;
    let c = ctx::authorize(Perm::Configure, "source.add").await?;
    let name_for_audit = name.trim().to_string();
    let result = async {
        let name = forms::name("name", &name)?;
        let url = Secret::new(forms::source_url(&url)?);
        let parsed = checked_source_url(&c, &url).await?;
        let engine_name = parsed.engine().as_str();
        let sealed = c
            .state
            .secrets
            .seal(secrets::Kind::SourceUrl, &url)
            .or_internal("sealing a source URL")?;
        store::insert_source(
            &c.state.db,
            &name,
            engine_name,
            &parsed.display(),
            &sealed,
            c.user.id,
        )
        .await
        .or_internal("adding a source")?
        .ok_or_else(|| AppError::name_taken("source"))
    }
    .await;
    c.audited("source.add", &format!("source {name_for_audit}"), result)
        .await
}

/// The checks a source's connection URL passes before it is stored, on creation and on
/// every change: it parses, it is not tablesafe's own data (`check_not_protected`),
/// certificate or key files only from an admin, and the server is one the console may
/// reach (`ssr::outbound`).
#[cfg(feature = "ssr")]
async fn checked_source_url(
    c: &crate::ssr::ctx::Ctx,
    url: &engine::secret::Secret<String>,
) -> Result<engine::source::SourceUrl, AppError> {
    use crate::auth::Perm;
    let parsed = engine::source::SourceUrl::parse(url)
        .map_err(|e| AppError::Field("url".into(), e.to_string()))?;
    crate::ssr::check_not_protected(&c.state, &parsed)
        .map_err(|e| AppError::Field("url".into(), e))?;
    // Certificate and key files are read on this server: naming one would let an
    // operator log in elsewhere with a client key stored here (the history
    // database's, say), or probe which files exist.
    if let Some(param) = engine::source::link::file_params(url.expose()).first()
        && !c.can(Perm::ManageUsers)
    {
        return Err(AppError::Field(
            "url".into(),
            format!(
                "{param} names a file on the tablesafe server: only an admin may add a source that uses certificate or key files. Ask an admin to add it."
            ),
        ));
    }
    if let Some((host, port)) = engine::source::identity::server_address(&parsed) {
        c.state
            .outbound
            .check("The database server", &host, port, c.can(Perm::ManageUsers))
            .await
            .map_err(|e| AppError::Field("url".into(), e))?;
    }
    Ok(parsed)
}

/// A server URL cut at its user-info.
#[cfg(feature = "ssr")]
struct UrlParts<'a> {
    scheme: &'a str,
    user: &'a str,
    password: Option<&'a str>,
    host: &'a str,
    path: &'a str,
    query: &'a str,
}

#[cfg(feature = "ssr")]
fn url_parts(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = match before_query.find('/') {
        Some(i) => before_query.split_at(i),
        None => (before_query, ""),
    };
    let (userinfo, host) = authority.rsplit_once('@').unwrap_or(("", authority));
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    Some(UrlParts {
        scheme,
        user,
        password,
        host,
        path,
        query,
    })
}

/// A changed source URL given without its password: the stored password goes with it
/// only if the URL still names the same server, port, database and user (a password
/// typed for one server is never sent to another, issue 25). Otherwise `new` as given.
#[cfg(feature = "ssr")]
fn keep_password(
    old: &engine::secret::Secret<String>,
    new: engine::secret::Secret<String>,
) -> engine::secret::Secret<String> {
    use engine::source::{SourceUrl, identity::server_address};
    let (Some(o), Some(n)) = (url_parts(old.expose()), url_parts(new.expose())) else {
        return new;
    };
    let (Some(password), None | Some("") | Some("***")) = (o.password, n.password) else {
        return new;
    };
    let address = |u: &engine::secret::Secret<String>| {
        SourceUrl::parse(u).ok().as_ref().and_then(server_address)
    };
    let same = o.scheme == n.scheme
        && o.user == n.user
        && o.host == n.host
        && o.path == n.path
        && address(old).is_some()
        && address(old) == address(&new);
    if !same {
        return new;
    }
    let query = if n.query.is_empty() {
        String::new()
    } else {
        format!("?{}", n.query)
    };
    engine::secret::Secret::new(format!(
        "{}://{}:{password}@{}{}{query}",
        n.scheme, n.user, n.host, n.path
    ))
}

/// Refuses a change to a source whose restores need approvals unless the caller is an
/// admin: editing its URL or deleting it would get around the two people.
#[cfg(feature = "ssr")]
async fn require_admin_if_approvals(
    c: &crate::ssr::ctx::Ctx,
    row: &crate::ssr::store::SourceRow,
    what: &str,
) -> Result<(), AppError> {
    use crate::auth::Perm;
    if c.can(Perm::ManageUsers) {
        return Ok(());
    }
    let rule = crate::ssr::rules::effective(&c.state, row.clone())
        .await
        .or_internal("checking a source's approval rule")?;
    if rule.approvals_required > 0 {
        return Err(AppError::Refused(format!(
            "Restores of {} need {} approval(s), so only an admin may {what} it. Ask an admin.",
            row.name, rule.approvals_required
        )));
    }
    Ok(())
}

/// Changes a source's name and connection URL, checked as when it was added. A URL
/// given without a password keeps the stored one only while it names the same server,
/// port, database and user; a new host needs the password again.
#[server(endpoint = "sources/edit")]
pub async fn edit_source(id: i64, name: String, url: String) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::forms;
    use crate::ssr::{ctx, secrets, store};
    use engine::secret::Secret;
    let c = ctx::authorize(Perm::Configure, "source.edit").await?;
    let row = visible_source(&c, id).await?;
    let result = async {
        require_admin_if_approvals(&c, &row, "change").await?;
        let name = forms::name("name", &name)?;
        let old = c
            .state
            .secrets
            .open(secrets::Kind::SourceUrl, &row.sealed_url)
            .or_internal("opening a source URL")?;
        let url = keep_password(&old, Secret::new(forms::source_url(&url)?));
        let parsed = checked_source_url(&c, &url).await?;
        let sealed = c
            .state
            .secrets
            .seal(secrets::Kind::SourceUrl, &url)
            .or_internal("sealing a source URL")?;
        // Pointed at a database whose restores need approvals, the source's policies
        // would back that database up where they write: an admin's call, as for a new
        // policy on it (issue 25).
        let moved = store::SourceRow {
            sealed_url: sealed.clone(),
            engine: parsed.engine(),
            ..row.clone()
        };
        require_admin_if_approvals(&c, &moved, "point a source at the database of").await?;
        match store::update_source(
            &c.state.db,
            id,
            &name,
            parsed.engine().as_str(),
            &parsed.display(),
            &sealed,
        )
        .await
        .or_internal("changing a source")?
        {
            None => Err(AppError::name_taken("source")),
            Some(false) => Err(AppError::NotFound("Source".into())),
            Some(true) => Ok(()),
        }
    }
    .await;
    let detail = match &result {
        Ok(()) if row.name != name.trim() => {
            format!("source {} (renamed {})", name.trim(), row.name)
        }
        _ => format!("source {}", row.name),
    };
    c.audited("source.edit", &detail, result).await
}

/// Deletes a source with its grants and approvers. Refused while policies back it up
/// (they are named) or restore requests on it wait for approval; its snapshots stay in
/// the history and in the repositories.
#[server(endpoint = "sources/delete")]
pub async fn delete_source(id: i64) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "source.delete").await?;
    let row = visible_source(&c, id).await?;
    let result = async {
        require_admin_if_approvals(&c, &row, "delete").await?;
        let policies = store::policies_of_source(&c.state.db, id)
            .await
            .or_internal("listing a source's policies")?;
        if !policies.is_empty() {
            return Err(AppError::Invalid(format!(
                "{} is backed up by {} {}: delete {} first.",
                row.name,
                if policies.len() == 1 { "policy" } else { "policies" },
                policies.join(", "),
                if policies.len() == 1 { "it" } else { "them" },
            )));
        }
        let waiting = store::open_requests_on_source(&c.state.db, id)
            .await
            .or_internal("counting restore requests")?;
        if waiting > 0 {
            return Err(AppError::Invalid(format!(
                "{waiting} restore request(s) on {} wait for approval: decide or cancel them first.",
                row.name
            )));
        }
        if !store::delete_source(&c.state.db, id)
            .await
            .or_internal("deleting a source")?
        {
            return Err(AppError::NotFound("Source".into()));
        }
        Ok(())
    }
    .await;
    c.audited("source.delete", &format!("source {}", row.name), result)
        .await
}

/// Sets how many approvals a restore from or into the source needs (0, 1, or 2 different
/// people: the two-person rule) and how long a request waits for them. Admins only: it
/// is a control over everyone else.
#[server(endpoint = "sources/approval_rule")]
pub async fn set_approval_rule(
    id: i64,
    approvals_required: i64,
    request_ttl_minutes: i64,
) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::ManageUsers, "source.approval_rule").await?;
    let result = async {
        if !(0..=2).contains(&approvals_required) {
            return Err(AppError::Field(
                "approvals_required".into(),
                "Choose none, one or two approvals.".into(),
            ));
        }
        if !(1..=60 * 24 * 90).contains(&request_ttl_minutes) {
            return Err(AppError::Field(
                "request_ttl_minutes".into(),
                "Between 1 minute and 90 days.".into(),
            ));
        }
        if !store::set_approval_rule(&c.state.db, id, approvals_required, request_ttl_minutes)
            .await
            .or_internal("setting an approval rule")?
        {
            return Err(AppError::NotFound("Source".into()));
        }
        Ok(())
    }
    .await;
    let detail = format!(
        "{approvals_required} approval(s), requests expire after {request_ttl_minutes} min"
    );
    let outcome = if result.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Failed
    };
    c.audit(
        "source.approval_rule",
        &format!("source #{id}"),
        outcome,
        &detail,
    )
    .await;
    result
}

/// Connects with the stored URL, counts tables and says how the connection is protected
/// (encrypted or not, what was verified of the server); the error says what went wrong
/// (unreachable host, wrong password, missing file, a certificate) without the password.
#[server(endpoint = "sources/test")]
pub async fn test_source(id: i64) -> Result<String, AppError> {
    use crate::auth::Perm;
    use crate::ssr::ctx;
    let c = ctx::authorize(Perm::Configure, "source.test").await?;
    let row = visible_source(&c, id).await?;
    let url = match source_url(&c, &row) {
        Ok(url) => url,
        Err(e) => {
            return c
                .audited("source.test", &format!("source {}", row.name), Err(e))
                .await;
        }
    };
    let result = match tokio::time::timeout(
        std::time::Duration::from_secs(20),
        engine::source::inspect(&url),
    )
    .await
    {
        Err(_) => Err(AppError::Invalid(format!(
            "{}: no answer within 20 seconds.",
            row.display_url
        ))),
        Ok(Err(e)) => Err(open_error(&c, &row, e)),
        Ok(Ok(found)) => {
            // A SQLite file not in WAL mode: its writers wait while a backup copies it.
            let note = match engine::source::SourceUrl::parse(&url) {
                Ok(engine::source::SourceUrl::Sqlite(path)) => {
                    use engine::source::sqlite::{SqliteDb, journal_note};
                    let mode = SqliteDb::journal_mode(&path).await.ok();
                    mode.and_then(|m| journal_note(&path, &m))
                }
                _ => None,
            };
            Ok(format!(
                "Connected: {} tables. Connection: {}.{}",
                found.tables.len(),
                found.link,
                note.map(|n| format!(" {n}")).unwrap_or_default()
            ))
        }
    };
    c.audited("source.test", &format!("source {}", row.name), result)
        .await
}

#[server(endpoint = "sources/tables")]
pub async fn source_tables(id: i64) -> Result<Vec<TableSummary>, AppError> {
    use crate::auth::Perm;
    use crate::ssr::ctx;
    let c = ctx::authorize_any(&[Perm::SeeAll, Perm::RestoreNew], "source.browse").await?;
    let row = visible_source(&c, id).await?;
    let url = source_url(&c, &row)?;
    let found = engine::source::inspect(&url)
        .await
        .map_err(|e| open_error(&c, &row, e))?;
    Ok(found.tables)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetView {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub location: String,
    pub snapshots: i64,
    /// Bytes the repository occupies, when it could be measured.
    pub used_bytes: Option<u64>,
    pub created_at: i64,
    /// Paused: receives no backups or copies until resumed.
    pub paused: bool,
}

#[server(endpoint = "targets/list")]
pub async fn list_targets() -> Result<Vec<TargetView>, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::SeeAll, "target.list").await?;
    let rows = store::targets(&c.state.db)
        .await
        .or_internal("listing targets")?;
    let mut out = Vec::new();
    for r in rows {
        let snapshots = r.snapshot_count;
        let location = r.location.clone();
        let used_bytes =
            tokio::task::spawn_blocking(move || dir_size(std::path::Path::new(&location)))
                .await
                .ok()
                .flatten();
        out.push(TargetView {
            id: r.id,
            name: r.name,
            kind: r.kind,
            location: r.location,
            snapshots,
            used_bytes,
            created_at: r.created_at,
            paused: r.paused_at.is_some(),
        });
    }
    Ok(out)
}

#[cfg(feature = "ssr")]
fn dir_size(dir: &std::path::Path) -> Option<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()? {
            let e = e.ok()?;
            let meta = e.metadata().ok()?;
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.len();
            }
        }
    }
    Some(total)
}

/// Adds a target (a directory, an S3 bucket or an SFTP path): creates the repository
/// there (or, if one exists, checks that the password opens it). S3 keys come from the
/// server's environment, SFTP logs in with the server user's SSH keys or `key=`.
#[server(endpoint = "targets/add")]
pub async fn add_target(
    name: String,
    location: String,
    password: String,
    #[server(default)] s3_access_key_id: String,
    #[server(default)] s3_secret_access_key: String,
    #[server(default)] ssh_private_key: String,
    #[server(default)] server_identity: Option<String>,
    // The console's "Repeat password" (a script may leave it out): the password is
    // never shown again, so a typo would lock every backup away.
    #[server(default)] password_repeat: Option<String>,
) -> Result<i64, AppError> {
    use crate::auth::Perm;
    use crate::forms;
    use crate::ssr::{ctx, secrets, store};
    use engine::repo::{InitOptions, Repository};
    use engine::secret::Secret;
    let c = ctx::authorize(Perm::Configure, "target.add").await?;
    let name_for_audit = name.trim().to_string();
    let result = async {
        let name = forms::name("name", &name)?;
        let location = forms::target_location(&location)?;
        forms::repository_password(&password)?;
        forms::same_password(&password, password_repeat.as_deref())?;
        let password = Secret::new(password);
        let creds = crate::ssr::StoredCredentials {
            s3_access_key_id: s3_access_key_id.trim().to_string(),
            s3_secret_access_key: s3_secret_access_key.trim().to_string(),
            ssh_private_key: ssh_private_key.trim().to_string(),
            server_identity: server_identity.is_some_and(|v| !v.is_empty() && v != "false"),
        };
        // The server's AWS keys and SSH identity reach whatever they reach: whether a
        // target may borrow them is an admin's call.
        if creds.server_identity && !c.can(Perm::ManageUsers) {
            return Err(AppError::Refused(
                "Only an admin may let a target use the server's own AWS or SSH identity: store the target's own keys, or ask an admin.".into(),
            ));
        }
        if creds.s3_access_key_id.is_empty() != creds.s3_secret_access_key.is_empty() {
            return Err(AppError::Field(
                "s3_secret_access_key".into(),
                "Give both the access key id and the secret access key, or neither.".into(),
            ));
        }
        if !creds.ssh_private_key.is_empty() && !creds.ssh_private_key.starts_with("-----BEGIN ") {
            return Err(AppError::Field(
                "ssh_private_key".into(),
                "Paste the private key file (it starts with -----BEGIN).".into(),
            ));
        }
        let remote = engine::repo::storage::remote_server(&location)
            .map_err(|e| AppError::Field("location".into(), e.to_string()))?;
        if let Some((what, host, port)) = remote {
            c.state
                .outbound
                .check(what, &host, port, c.can(Perm::ManageUsers))
                .await
                .map_err(|e| AppError::Field("location".into(), e))?;
        }
        let storage = engine::repo::Storage::open_with(&location, &creds.for_engine())
            .map_err(|e| AppError::Field("location".into(), e.to_string()))?;
        let exists = Repository::exists_in(&storage)
            .await
            .map_err(|e| AppError::Field("location".into(), e.to_string()))?;
        if exists {
            Repository::open_in(storage, Some(&password))
                .await
                .map_err(|e| AppError::Field("password".into(), e.to_string()))?;
        } else {
            Repository::init_in(storage, InitOptions::encrypted(password.clone()))
                .await
                .map_err(|e| AppError::Field("location".into(), e.to_string()))?;
        }
        // Always sealed, even with no keys: an empty value means a target from before
        // the server-identity setting (which kept using the server's identity).
        let sealed_credentials = {
            let json = serde_json::to_string(&creds).or_internal("credentials json")?;
            c.state
                .secrets
                .seal(secrets::Kind::TargetCredentials, &Secret::new(json))
                .or_internal("sealing credentials")?
        };
        let sealed = c
            .state
            .secrets
            .seal(secrets::Kind::RepositoryPassword, &password)
            .or_internal("sealing a password")?;
        store::insert_target(
            &c.state.db,
            &name,
            &location,
            &sealed,
            &sealed_credentials,
            c.user.id,
        )
        .await
        .or_internal("adding a target")?
        .ok_or_else(|| AppError::name_taken("target"))
    }
    .await;
    c.audited("target.add", &format!("target {name_for_audit}"), result)
        .await
}

/// Refuses a change to a target that policies of sources whose restores need approvals
/// write into, unless the caller is an admin (issue 25: a target those policies back up
/// into is part of how the data is kept).
#[cfg(feature = "ssr")]
async fn require_admin_if_target_guarded(
    c: &crate::ssr::ctx::Ctx,
    users: &[(String, i64)],
) -> Result<(), AppError> {
    for (_, source) in users {
        crate::ssr::rules::require_admin_if_guarded(c, *source).await?;
    }
    Ok(())
}

/// Renames a target and, when given, replaces its S3 keys or SSH key (both S3 fields
/// together; blank keeps what is stored). New credentials must open the repository.
/// Its location and repository password do not change: a repository elsewhere is
/// another target.
#[server(endpoint = "targets/edit")]
pub async fn edit_target(
    id: i64,
    name: String,
    #[server(default)] s3_access_key_id: String,
    #[server(default)] s3_secret_access_key: String,
    #[server(default)] ssh_private_key: String,
) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::forms;
    use crate::ssr::{ctx, secrets, store};
    use engine::repo::Repository;
    use engine::secret::Secret;
    let c = ctx::authorize(Perm::Configure, "target.edit").await?;
    let row = store::target(&c.state.db, id)
        .await
        .or_internal("loading a target")?
        .ok_or_else(|| AppError::NotFound("Target".into()))?;
    let result = async {
        let users = store::policies_using_target(&c.state.db, id)
            .await
            .or_internal("listing a target's policies")?;
        require_admin_if_target_guarded(&c, &users).await?;
        let name = forms::name("name", &name)?;
        let (key_id, secret, ssh) = (
            s3_access_key_id.trim(),
            s3_secret_access_key.trim(),
            ssh_private_key.trim(),
        );
        if key_id.is_empty() != secret.is_empty() {
            return Err(AppError::Field(
                "s3_secret_access_key".into(),
                "Give both the access key id and the secret access key, or neither.".into(),
            ));
        }
        if !ssh.is_empty() && !ssh.starts_with("-----BEGIN ") {
            return Err(AppError::Field(
                "ssh_private_key".into(),
                "Paste the private key file (it starts with -----BEGIN).".into(),
            ));
        }
        let sealed_credentials = if key_id.is_empty() && ssh.is_empty() {
            None
        } else {
            let mut creds: crate::ssr::StoredCredentials = if row.sealed_credentials.is_empty() {
                // From before the server-identity setting: it used the server's identity.
                crate::ssr::StoredCredentials {
                    server_identity: true,
                    ..Default::default()
                }
            } else {
                let json = c
                    .state
                    .secrets
                    .open(secrets::Kind::TargetCredentials, &row.sealed_credentials)
                    .or_internal("opening a target's credentials")?;
                serde_json::from_str(json.expose()).or_internal("reading a target's credentials")?
            };
            if !key_id.is_empty() {
                creds.s3_access_key_id = key_id.to_string();
                creds.s3_secret_access_key = secret.to_string();
            }
            if !ssh.is_empty() {
                creds.ssh_private_key = ssh.to_string();
            }
            // The new credentials must open the repository.
            let password = c
                .state
                .secrets
                .open(secrets::Kind::RepositoryPassword, &row.sealed_password)
                .or_internal("opening a repository password")?;
            let storage = engine::repo::Storage::open_with(&row.location, &creds.for_engine())
                .map_err(|e| AppError::Invalid(e.to_string()))?;
            Repository::open_in(storage, Some(&password))
                .await
                .map_err(|e| {
                    AppError::Invalid(format!(
                        "The new credentials do not open the repository: {e}"
                    ))
                })?;
            let json = serde_json::to_string(&creds).or_internal("credentials json")?;
            Some(
                c.state
                    .secrets
                    .seal(secrets::Kind::TargetCredentials, &Secret::new(json))
                    .or_internal("sealing credentials")?,
            )
        };
        match store::update_target(&c.state.db, id, &name, sealed_credentials.as_deref())
            .await
            .or_internal("changing a target")?
        {
            None => Err(AppError::name_taken("target")),
            Some(false) => Err(AppError::NotFound("Target".into())),
            Some(true) => Ok(()),
        }
    }
    .await;
    c.audited("target.edit", &format!("target {}", row.name), result)
        .await
}

/// Deletes a target from the console: refused while policies write into it (as their
/// target or a copy target), jobs run on it or restore requests wait on its snapshots.
/// The repository's files are never deleted (remove them yourself if you mean to); the
/// history stops listing the snapshots in it. Returns how many were unlisted.
#[server(endpoint = "targets/delete")]
pub async fn delete_target(id: i64) -> Result<i64, AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "target.delete").await?;
    let row = store::target(&c.state.db, id)
        .await
        .or_internal("loading a target")?
        .ok_or_else(|| AppError::NotFound("Target".into()))?;
    let result = async {
        let users = store::policies_using_target(&c.state.db, id)
            .await
            .or_internal("listing a target's policies")?;
        if !users.is_empty() {
            let names: Vec<&str> = users.iter().map(|(n, _)| n.as_str()).collect();
            return Err(AppError::Invalid(format!(
                "{} is used by {} {} (as target or copy target): change or delete {} first.",
                row.name,
                if names.len() == 1 { "policy" } else { "policies" },
                names.join(", "),
                if names.len() == 1 { "it" } else { "them" },
            )));
        }
        let busy = store::target_busy(&c.state.db, id)
            .await
            .or_internal("checking a target's jobs")?;
        if busy > 0 {
            return Err(AppError::Invalid(format!(
                "{} has jobs running or restore requests waiting on its snapshots: let them finish first.",
                row.name
            )));
        }
        store::delete_target(&c.state.db, id)
            .await
            .or_internal("deleting a target")?
            .ok_or_else(|| AppError::NotFound("Target".into()))
    }
    .await;
    c.audited("target.delete", &format!("target {}", row.name), result)
        .await
}

/// Pauses or resumes a source (maintenance): while paused its policies are not backed
/// up (no scheduled run, no *Run now*, no trigger) and are never late; restores,
/// browsing and downloads of its snapshots keep working. Refused while continuous
/// capture is on for one of its policies (a paused capture would keep the source's
/// WAL growing). Resumed, its policies run at their schedule's next slot from now, not
/// for the slots they missed.
#[server(endpoint = "sources/set_paused")]
pub async fn set_source_paused(id: i64, paused: bool) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "source.pause").await?;
    let action = if paused {
        "source.pause"
    } else {
        "source.resume"
    };
    let mut what = format!("source #{id}");
    let result = async {
        let row = store::source(&c.state.db, id)
            .await
            .or_internal("loading a source")?
            .ok_or_else(|| AppError::NotFound("Source".into()))?;
        what = format!("source {}", row.name);
        crate::ssr::rules::require_admin_if_guarded(&c, id).await?;
        let policies: Vec<_> = store::policies(&c.state.db)
            .await
            .or_internal("listing policies")?
            .into_iter()
            .filter(|p| p.source_id == id)
            .collect();
        if paused
            && let Some(p) = policies.iter().find(|p| p.capture_secs.is_some())
        {
            return Err(AppError::Invalid(format!(
                "Continuous capture is on for policy {}: turn it off first (a paused capture would keep the source's WAL growing), then pause the source.",
                p.name
            )));
        }
        store::set_paused(&c.state.db, store::Paused::Source, id, paused)
            .await
            .or_internal("pausing a source")?;
        if !paused {
            restart_schedules(&c.state.db, &policies).await?;
        }
        Ok(())
    }
    .await;
    c.audited(action, &what, result).await
}

/// Pauses or resumes a target: while paused no backup or copy writes into it (its
/// policies are not backed up, copies to it are skipped and say so in the job log);
/// restores, browsing and verification of its snapshots keep working.
#[server(endpoint = "targets/set_paused")]
pub async fn set_target_paused(id: i64, paused: bool) -> Result<(), AppError> {
    use crate::auth::Perm;
    use crate::ssr::{ctx, store};
    let c = ctx::authorize(Perm::Configure, "target.pause").await?;
    let action = if paused {
        "target.pause"
    } else {
        "target.resume"
    };
    let mut what = format!("target #{id}");
    let result = async {
        let row = store::target(&c.state.db, id)
            .await
            .or_internal("loading a target")?
            .ok_or_else(|| AppError::NotFound("Target".into()))?;
        what = format!("target {}", row.name);
        let users = store::policies_using_target(&c.state.db, id)
            .await
            .or_internal("listing a target's policies")?;
        require_admin_if_target_guarded(&c, &users).await?;
        if paused
            && let Some(p) = store::policies(&c.state.db)
                .await
                .or_internal("listing policies")?
                .into_iter()
                .find(|p| p.target_id == id && p.capture_secs.is_some())
        {
            return Err(AppError::Invalid(format!(
                "Continuous capture into this target is on for policy {}: turn it off first (a paused capture would keep the source's WAL growing), then pause the target.",
                p.name
            )));
        }
        store::set_paused(&c.state.db, store::Paused::Target, id, paused)
            .await
            .or_internal("pausing a target")?;
        if !paused {
            let policies: Vec<_> = store::policies(&c.state.db)
                .await
                .or_internal("listing policies")?
                .into_iter()
                .filter(|p| p.target_id == id)
                .collect();
            restart_schedules(&c.state.db, &policies).await?;
        }
        Ok(())
    }
    .await;
    c.audited(action, &what, result).await
}

/// After a pause: each enabled policy's next run is its schedule's next slot from now
/// (the slots missed while paused are not made up).
#[cfg(feature = "ssr")]
async fn restart_schedules(
    db: &crate::ssr::db::Db,
    policies: &[crate::ssr::store::PolicyRow],
) -> Result<(), AppError> {
    for p in policies.iter().filter(|p| p.enabled != 0) {
        let next = crate::ssr::schedule::parse(&p.schedule, &p.timezone)
            .ok()
            .flatten()
            .and_then(|s| s.next_after(crate::ssr::db::now_ms()));
        crate::ssr::store::set_policy_enabled(db, p.id, true, next)
            .await
            .or_internal("restarting a schedule")?;
    }
    Ok(())
}
