//! Form validation shared by the browser (checked before sending) and the server
//! functions (checked again, since only the server's check counts). Each function
//! returns the cleaned value or an [`AppError::Field`] naming the field.

use crate::auth::Role;
use crate::error::AppError;
use std::collections::BTreeMap;

fn field(name: &str, message: impl Into<String>) -> AppError {
    AppError::Field(name.into(), message.into())
}

/// A display name (sources, targets, policies): 1–64 characters, letters, digits,
/// spaces and `-_.`, no leading or trailing space.
pub fn name(field_name: &str, value: &str) -> Result<String, AppError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(field(field_name, "A name is required."));
    }
    if v.chars().count() > 64 {
        return Err(field(field_name, "At most 64 characters."));
    }
    if !v
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'))
    {
        return Err(field(
            field_name,
            "Use letters, digits, spaces and - _ . only.",
        ));
    }
    Ok(v.to_string())
}

pub fn username(value: &str) -> Result<String, AppError> {
    let v = value.trim();
    if v.is_empty() || v.len() > 64 {
        return Err(field("username", "1 to 64 characters."));
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(field("username", "Use letters, digits and . _ - only."));
    }
    Ok(v.to_string())
}

/// Account passwords: 12 to 1024 characters.
pub fn password(field_name: &str, value: &str) -> Result<(), AppError> {
    let n = value.chars().count();
    if n < 12 {
        return Err(field(field_name, "At least 12 characters."));
    }
    if n > 1024 {
        return Err(field(field_name, "At most 1024 characters."));
    }
    Ok(())
}

pub fn role(value: &str) -> Result<Role, AppError> {
    Role::parse(value).ok_or_else(|| field("role", "Choose admin, operator, requester or auditor."))
}

/// A source connection URL: `sqlite:///absolute/path.db` or `postgres://…`.
pub fn source_url(value: &str) -> Result<String, AppError> {
    let v = value.trim();
    if v.len() > 2048 {
        return Err(field("url", "At most 2048 characters."));
    }
    if let Some(path) = v.strip_prefix("sqlite://") {
        if !path.starts_with('/') || path.len() < 2 {
            return Err(field(
                "url",
                "Use an absolute path: sqlite:///var/lib/app.db",
            ));
        }
        return Ok(v.to_string());
    }
    if let Some(rest) = v
        .strip_prefix("postgres://")
        .or_else(|| v.strip_prefix("postgresql://"))
    {
        let host = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
        if host.is_empty() || host.starts_with('/') {
            return Err(field(
                "url",
                "Name the host: postgres://user:password@host:5432/database",
            ));
        }
        return Ok(v.to_string());
    }
    if let Some(rest) = v
        .strip_prefix("mysql://")
        .or_else(|| v.strip_prefix("mariadb://"))
    {
        let host = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
        if host.is_empty() || host.starts_with('/') || !host.contains('/') {
            return Err(field(
                "url",
                "Name the host and database: mysql://user:password@host:3306/database",
            ));
        }
        return Ok(v.to_string());
    }
    Err(field(
        "url",
        "Use sqlite:///absolute/path.db, postgres://user:password@host:5432/database or mysql://user:password@host:3306/database",
    ))
}

/// A repository location: an absolute directory path, `s3://BUCKET/PREFIX?…` or
/// `sftp://USER@HOST:PORT/PATH?…` (the server checks the details when it opens it).
pub fn target_location(value: &str) -> Result<String, AppError> {
    let v = value.trim();
    if v.len() > 1024 || v.contains('\0') {
        return Err(field("location", "At most 1024 characters."));
    }
    if let Some(rest) = v.strip_prefix("s3://") {
        if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
            return Err(field(
                "location",
                "Name the bucket: s3://bucket/prefix?endpoint=https://…&region=…",
            ));
        }
        return Ok(v.into());
    }
    if let Some(rest) = v.strip_prefix("sftp://") {
        let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
        if rest.starts_with('/') || path.trim_matches('/').is_empty() {
            return Err(field("location", "Use sftp://user@host:port/absolute/path"));
        }
        return Ok(v.into());
    }
    if !v.starts_with('/') {
        return Err(field(
            "location",
            "Use an absolute directory path (/var/backups/shop), s3://bucket/prefix?endpoint=… or sftp://user@host:port/path.",
        ));
    }
    let trimmed = v.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    })
}

/// Repository passwords: at least 8 characters (they protect every backup).
pub fn repository_password(value: &str) -> Result<(), AppError> {
    let n = value.chars().count();
    if n < 8 {
        return Err(field("password", "At least 8 characters."));
    }
    if n > 1024 {
        return Err(field("password", "At most 1024 characters."));
    }
    Ok(())
}

/// A repository password typed twice: `repeat` (None when not sent, as from a script)
/// must be the same, since the password is never shown again.
pub fn same_password(password: &str, repeat: Option<&str>) -> Result<(), AppError> {
    match repeat {
        Some(r) if r != password => Err(field(
            "password_repeat",
            "The two passwords differ: type the same repository password twice.",
        )),
        _ => Ok(()),
    }
}

/// Table globs, one per line or comma-separated.
pub fn globs(field_name: &str, value: &str) -> Result<Vec<String>, AppError> {
    let list: Vec<String> = value
        .split([',', '\n'])
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if list.len() > 200 || list.iter().any(|g| g.len() > 200) {
        return Err(field(field_name, "At most 200 patterns of 200 characters."));
    }
    Ok(list)
}

/// `table=col1,col2` lines.
pub fn columns(value: &str) -> Result<BTreeMap<String, Vec<String>>, AppError> {
    let mut out = BTreeMap::new();
    for line in value.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((table, cols)) = line.split_once('=') else {
            return Err(field(
                "columns",
                format!("{line:?}: use table=column1,column2"),
            ));
        };
        let cols: Vec<String> = cols
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        if table.trim().is_empty() || cols.is_empty() {
            return Err(field(
                "columns",
                format!("{line:?}: use table=column1,column2"),
            ));
        }
        out.insert(table.trim().to_string(), cols);
    }
    Ok(out)
}

/// A schedule as typed: empty (run only on demand), a cron expression, or a shorthand
/// (`every 15 minutes`, `hourly`, `daily at 02:30`). Checked for shape here; the
/// scheduler issue executes it.
pub fn schedule(value: &str) -> Result<String, AppError> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(String::new());
    }
    let lower = v.to_ascii_lowercase();
    let shorthand = lower == "hourly"
        || lower
            .strip_prefix("every ")
            .and_then(|r| r.strip_suffix(" minutes"))
            .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| (1..=1440).contains(&n)))
        || lower.strip_prefix("daily at ").is_some_and(|t| {
            t.split_once(':').is_some_and(|(h, m)| {
                h.parse::<u32>().is_ok_and(|h| h < 24)
                    && m.len() == 2
                    && m.parse::<u32>().is_ok_and(|m| m < 60)
            })
        });
    let cron = v.split_whitespace().count() == 5
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || " */,-".contains(c));
    if shorthand || cron {
        Ok(v.to_string())
    } else {
        Err(field(
            "schedule",
            "Use a cron expression (m h dom mon dow), \"every N minutes\", \"hourly\" or \"daily at HH:MM\".",
        ))
    }
}

pub fn timezone(value: &str) -> Result<String, AppError> {
    let v = value.trim();
    let v = if v.is_empty() { "UTC" } else { v };
    if v.len() > 64
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c))
    {
        return Err(field(
            "timezone",
            "Use an IANA time zone such as Europe/Berlin or UTC.",
        ));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_and_malformed_input_is_refused_with_the_field_named() {
        assert!(
            matches!(name("name", "x'; DROP TABLE users; --"), Err(AppError::Field(f, _)) if f == "name")
        );
        assert!(name("name", &"a".repeat(65)).is_err());
        assert_eq!(name("name", "  Shop db  ").unwrap(), "Shop db");
        assert!(source_url("sqlite://relative.db").is_err());
        assert!(source_url("mysql://x").is_err());
        assert!(source_url("postgres://").is_err());
        assert!(source_url("postgres://u:p@h:5432/db").is_ok());
        assert!(target_location("relative/dir").is_err());
        assert_eq!(target_location("/var/b/").unwrap(), "/var/b");
        assert!(target_location("s3://").is_err());
        assert!(target_location("s3://bkt/p?endpoint=http://127.0.0.1:9000").is_ok());
        assert!(target_location("sftp://u@h:22").is_err());
        assert!(target_location("sftp://u@h:22/srv/b").is_ok());
        assert!(password("password", "short").is_err());
        assert!(schedule("daily at 25:00").is_err());
        assert!(schedule("0 2 * * *").is_ok());
        assert!(schedule("every 15 minutes").is_ok());
        assert!(schedule("0 2 * * *; rm -rf /").is_err());
        assert!(columns("t=a,b\nu=c").unwrap().len() == 2);
        assert!(columns("t=").is_err());
        assert!(username("ann smith").is_err());
        assert!(role("root").is_err());
        assert!(
            matches!(same_password("correct horse", Some("correct hose")), Err(AppError::Field(f, _)) if f == "password_repeat")
        );
        assert!(same_password("correct horse", Some("correct horse")).is_ok());
        assert!(same_password("correct horse", None).is_ok());
    }
}
