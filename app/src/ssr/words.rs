//! The engine's messages name command-line flags (`--mode replace`, `--rename T=NEW`);
//! shown in the console they name what the console has instead (issue 26, point 6), and
//! answered through `/api/v1` the request body's fields (`"mode": "replace"`): errors
//! say what to do in the interface that was used (issue 27). Only phrases the users can
//! meet are rewritten; anything else passes as it is, and no rewritten message keeps a
//! `--flag`.
//!
//! [`without_paths`] keeps the server's file paths (a SQLite source's file, the data
//! directory) out of what users who may not see them are told.

/// Which interface a server function was called through: the REST API puts
/// `Interface::Api` in the call's context (`server::rest`); the console puts nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    Console,
    Api,
}

impl Interface {
    /// The interface of the server function running now.
    pub fn current() -> Interface {
        leptos::prelude::use_context::<Interface>().unwrap_or(Interface::Console)
    }
}

/// `engine_message` in the words of the interface the caller used ([`Interface::current`]).
pub fn in_callers_words(engine_message: &str) -> String {
    match Interface::current() {
        Interface::Console => in_console_words(engine_message),
        Interface::Api => in_api_words(engine_message),
    }
}

/// `engine_message` in the API's words: the fields of `POST /api/v1/requests`'s `req`
/// (`mode`, `rename`, `tables`, `columns`, `conditions`) instead of flags.
pub fn in_api_words(engine_message: &str) -> String {
    let mut m = engine_message
        .trim()
        .trim_start_matches("invalid input: ")
        .to_string();
    // `--rename T=NEW` (up to the end, or to the `;` or `)` that closes it) becomes the
    // JSON that asks for it.
    const PHRASES: &[(&str, &str)] = &[
        (
            ": choose --mode replace or append, or --rename ",
            ": send \"mode\": \"replace\" or \"append\" (or another mode that changes existing tables), or restore into a new table with ",
        ),
        (
            "(restore it with --mode create)",
            "(restore it with \"mode\": \"create\")",
        ),
        (
            "(--mode create with --rename ",
            "(\"mode\": \"create\" with ",
        ),
        (
            "cannot also filter rows (--where)",
            "cannot also filter rows (\"conditions\")",
        ),
        ("--columns names table", "\"columns\" names table"),
        ("--rename names table", "\"rename\" names table"),
        (
            "unknown table",
            "\"tables\" names a table the source does not have:",
        ),
    ];
    for (engine, api) in PHRASES {
        if let Some(at) = m.find(engine) {
            let rest = &m[at + engine.len()..];
            let tail = if engine.ends_with("--rename ") {
                // `T=NEW` up to `;`, `)` or the end; `; in the console, …)` is dropped.
                let end = rest.find([';', ')']).unwrap_or(rest.len());
                let (table, new) = rest[..end].split_once('=').unwrap_or((&rest[..end], "NEW"));
                let close = match rest[end..].find(')') {
                    Some(i) if engine.starts_with('(') => &rest[end + i..],
                    _ => "",
                };
                format!("\"rename\": {{\"{table}\": \"{new}\"}}{close}")
            } else {
                rest.to_string()
            };
            m = format!("{}{api}{tail}", &m[..at]);
        }
    }
    if let Some(first) = m.get(..1) {
        m = first.to_uppercase() + &m[1..];
    }
    if !m.ends_with('.') {
        m.push('.');
    }
    m
}

/// `message` with each `known` text (a source's URL or file path) replaced by what users
/// call it (`source "shop"`), and, unless `show_paths` (admins), any other absolute path
/// on the server replaced by "a file on the server".
pub fn without_paths(message: &str, known: &[(String, String)], show_paths: bool) -> String {
    let mut m = message.to_string();
    let mut known: Vec<&(String, String)> = known.iter().filter(|(k, _)| !k.is_empty()).collect();
    // Longest first: a URL before the path inside it.
    known.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    for (k, label) in known {
        m = m.replace(k.as_str(), label);
    }
    if show_paths {
        return m;
    }
    let mut out = String::with_capacity(m.len());
    for (i, word) in m.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let start = word
            .find(|c: char| !matches!(c, '"' | '\'' | '(' | '`' | '['))
            .unwrap_or(word.len());
        let body = &word[start..];
        let is_path = ["/", "sqlite:/", "file:/"]
            .iter()
            .any(|p| body.starts_with(p))
            && body.len() > 1;
        if is_path {
            let end = body
                .rfind(|c: char| !matches!(c, '"' | '\'' | ')' | '`' | ']' | ':' | ',' | '.' | ';'))
                .map_or(0, |i| i + 1);
            out.push_str(&word[..start]);
            out.push_str("a file on the server");
            out.push_str(&body[end..]);
        } else {
            out.push_str(word);
        }
    }
    out
}

/// `engine_message` in the console's words, starting with a capital and ending with a
/// full stop.
pub fn in_console_words(engine_message: &str) -> String {
    let mut m = engine_message
        .trim()
        .trim_start_matches("invalid input: ")
        .to_string();
    // (engine phrase, the console's phrase), most specific first. Patterns with a
    // table name cut at the name: `TABLE=NEW` is rewritten by `rename_hint` below.
    const PHRASES: &[(&str, &str)] = &[
        (
            ": choose --mode replace or append, or --rename ",
            ": choose Replace (or another mode that changes existing tables) in the wizard, or restore into new tables with a suffix",
        ),
        (
            "(restore it with --mode create)",
            "(restore it as a new table instead)",
        ),
        ("(--mode create with --rename ", "(restore into new tables"),
        (
            "cannot also filter rows (--where)",
            "cannot also restore only some rows",
        ),
        ("--columns names table", "Only some columns names table"),
        ("--rename names table", "A new name is given for table"),
        (
            "unknown table",
            "Include names a table the source does not have:",
        ),
    ];
    for (engine, console) in PHRASES {
        if let Some(at) = m.find(engine) {
            let rest = &m[at + engine.len()..];
            // What followed a cut phrase up to its end (`T=NEW`, `T=T_restored; in the
            // console, restore into new tables)`) is the CLI's; the console's phrase
            // says it all.
            let tail = match *engine {
                e if e.ends_with("--rename ") => match rest.find(')') {
                    Some(close) if e.starts_with('(') => rest[close..].to_string(),
                    _ => String::new(),
                },
                _ => rest.to_string(),
            };
            m = format!("{}{console}{tail}", &m[..at]);
        }
    }
    if let Some(first) = m.get(..1) {
        m = first.to_uppercase() + &m[1..];
    }
    if !m.ends_with('.') {
        m.push('.');
    }
    m
}

#[cfg(test)]
mod tests {
    use super::in_console_words;

    #[test]
    fn restore_refusals_name_the_wizard_not_flags() {
        for (engine, console) in [
            (
                "invalid input: table \"customers\" already exists in shop.db: choose --mode replace or append, or --rename customers=NEW",
                "Table \"customers\" already exists in shop.db: choose Replace (or another mode that changes existing tables) in the wizard, or restore into new tables with a suffix.",
            ),
            (
                "table \"t\" does not exist in shop.db: nothing to merge into (restore it with --mode create)",
                "Table \"t\" does not exist in shop.db: nothing to merge into (restore it as a new table instead).",
            ),
            (
                "table \"t\" in db uses the MyISAM storage engine, which cannot roll back: … (--mode create with --rename t=t_restored; in the console, restore into new tables) and copy the rows you need",
                "Table \"t\" in db uses the MyISAM storage engine, which cannot roll back: … (restore into new tables) and copy the rows you need.",
            ),
            (
                "a restore to a point in time cannot also filter rows (--where): restore the instant into new tables, then copy the rows you need",
                "A restore to a point in time cannot also restore only some rows: restore the instant into new tables, then copy the rows you need.",
            ),
            (
                "--columns names table \"orders\", which is not selected or does not exist",
                "Only some columns names table \"orders\", which is not selected or does not exist.",
            ),
        ] {
            let got = in_console_words(engine);
            assert_eq!(got, console);
            assert!(!got.contains("--"), "{got}");
        }
        // Anything else passes unchanged but for its capital and full stop.
        assert_eq!(in_console_words("disk full"), "Disk full.");
    }

    #[test]
    fn restore_refusals_through_the_api_name_its_fields() {
        use super::in_api_words;
        for (engine, api) in [
            (
                "invalid input: table \"customers\" already exists in source \"shop\": choose --mode replace or append, or --rename customers=NEW",
                "Table \"customers\" already exists in source \"shop\": send \"mode\": \"replace\" or \"append\" (or another mode that changes existing tables), or restore into a new table with \"rename\": {\"customers\": \"NEW\"}.",
            ),
            (
                "table \"t\" does not exist in db: nothing to merge into (restore it with --mode create)",
                "Table \"t\" does not exist in db: nothing to merge into (restore it with \"mode\": \"create\").",
            ),
            (
                "table \"t\" in db uses the MyISAM storage engine, which cannot roll back: … (--mode create with --rename t=t_restored; in the console, restore into new tables) and copy the rows you need",
                "Table \"t\" in db uses the MyISAM storage engine, which cannot roll back: … (\"mode\": \"create\" with \"rename\": {\"t\": \"t_restored\"}) and copy the rows you need.",
            ),
            (
                "a restore to a point in time cannot also filter rows (--where): restore the instant into new tables, then copy the rows you need",
                "A restore to a point in time cannot also filter rows (\"conditions\"): restore the instant into new tables, then copy the rows you need.",
            ),
            (
                "--rename names table \"orders\", which is not in snapshot abc",
                "\"rename\" names table \"orders\", which is not in snapshot abc.",
            ),
        ] {
            let got = in_api_words(engine);
            assert_eq!(got, api);
            assert!(!got.contains("--"), "{got}");
            assert!(!got.contains("wizard"), "{got}");
        }
    }

    #[test]
    fn paths_are_named_as_users_know_them_and_hidden_from_non_admins() {
        use super::without_paths;
        let known = [(
            "/var/lib/tablesafe/shop.db".to_string(),
            "source \"shop\"".to_string(),
        )];
        let m = "table \"t\" already exists in /var/lib/tablesafe/shop.db: choose";
        assert_eq!(
            without_paths(m, &known, false),
            "table \"t\" already exists in source \"shop\": choose"
        );
        let other = "/srv/data/other.db cannot be restored into: ask an admin";
        assert_eq!(
            without_paths(other, &known, false),
            "a file on the server cannot be restored into: ask an admin"
        );
        assert_eq!(
            without_paths("key file \"/etc/ts/key\" is protected.", &[], false),
            "key file \"a file on the server\" is protected."
        );
        assert_eq!(without_paths(other, &known, true), other);
        assert_eq!(without_paths("a and/or b", &[], false), "a and/or b");
    }
}
