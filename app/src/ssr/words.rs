//! The engine's messages name command-line flags (`--mode replace`, `--rename T=NEW`);
//! shown in the console they name what the console has instead (issue 26, point 6).
//! Only phrases the console's users can meet are rewritten; anything else passes as it
//! is, and no rewritten message keeps a `--flag`.

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
}
