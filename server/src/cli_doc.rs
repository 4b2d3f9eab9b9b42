//! The guide's command-line reference (`docs/src/reference/cli.md`) is rendered from the
//! clap definitions, so it cannot drift from `tablesafe --help`: the test below renders
//! it and compares it with the committed page. After changing the command line, run
//! `UPDATE_DOCS=1 cargo test -p server --bin tablesafe cli_doc` and commit the page.

use clap::{Arg, Command, CommandFactory};
use std::fmt::Write as _;

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/src/reference/cli.md");

/// The whole reference page: every subcommand (depth first, as `--help` lists them),
/// its description, usage and a table of its arguments.
fn render() -> String {
    let mut cli = crate::cli::Cli::command();
    cli.build();
    let mut out = String::from(
        "# Command-line reference\n\n\
         <!-- Generated from the clap definitions in server/src/ by the test cli_doc\n\
         (server/src/cli_doc.rs): do not edit by hand; run\n\
         UPDATE_DOCS=1 cargo test -p server --bin tablesafe cli_doc -->\n\n\
         Every subcommand of `tablesafe`, with every argument, the environment variable it\n\
         can come from and its default. `tablesafe help COMMAND` prints the same. Examples\n\
         are in [The command line](../cli.md).\n\n",
    );
    // The program itself (its global options), then each subcommand at the same level;
    // a group's subcommands (`audit verify`) one level down.
    section(&mut out, &cli, 2);
    for s in subcommands(&cli) {
        command(&mut out, s, 2);
    }
    out
}

fn command(out: &mut String, cmd: &Command, level: usize) {
    section(out, cmd, level);
    for s in subcommands(cmd) {
        command(out, s, level + 1);
    }
}

fn section(out: &mut String, cmd: &Command, level: usize) {
    let name = cmd.get_bin_name().unwrap_or(cmd.get_name());
    let _ = writeln!(out, "{} `{name}`\n", "#".repeat(level.min(6)));
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        let _ = writeln!(out, "{}\n", about.to_string().trim());
    }
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.trim().trim_start_matches("Usage:").trim();
    let _ = writeln!(out, "```text\n{usage}\n```\n");
    let args: Vec<&Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
        .collect();
    if !args.is_empty() {
        out.push_str("| argument | environment | default | meaning |\n|---|---|---|---|\n");
        for a in args {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                code(&spelling(a)),
                a.get_env()
                    .map(|e| code(&e.to_string_lossy()))
                    .unwrap_or_default(),
                default(a),
                meaning(a),
            );
        }
        out.push('\n');
    }
}

fn subcommands(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// How the argument is written: `-s, --long <VALUE>`, or `<VALUE>` for a positional.
fn spelling(a: &Arg) -> String {
    let value = a
        .get_value_names()
        .map(|v| {
            v.iter()
                .map(|n| format!("<{n}>"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| format!("<{}>", a.get_id().as_str().to_uppercase()));
    let takes_value = a.get_num_args().is_some_and(|n| n.takes_values());
    if a.is_positional() {
        return value;
    }
    let mut s = String::new();
    if let Some(c) = a.get_short() {
        s.push_str(&format!("-{c}"));
    }
    if let Some(l) = a.get_long() {
        if !s.is_empty() {
            s.push_str(", ");
        }
        s.push_str(&format!("--{l}"));
    }
    if takes_value {
        s.push(' ');
        s.push_str(&value);
    }
    s
}

/// The help text, and the values the argument accepts when clap knows them.
fn meaning(a: &Arg) -> String {
    let help = a
        .get_long_help()
        .or(a.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let mut text = cell(&help);
    let values: Vec<String> = a
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    let is_flag = !a.get_num_args().is_some_and(|n| n.takes_values());
    if !values.is_empty() && !is_flag {
        if !text.is_empty() {
            text.push_str(if text.ends_with('.') { " " } else { ". " });
        }
        text.push_str(&format!("One of: {}", values.join(", ")));
    }
    text
}

fn default(a: &Arg) -> String {
    let values: Vec<String> = a
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    // A flag's implicit "false" says nothing.
    if values.is_empty()
        || (values == ["false"] && !a.get_num_args().is_some_and(|n| n.takes_values()))
    {
        String::new()
    } else {
        code(&values.join(","))
    }
}

fn code(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    format!("`{}`", s.replace('|', "\\|"))
}

/// Help text in one table cell: one line, `|` escaped, and outside `code` spans the
/// characters Markdown would read as markup (`<VALUE>` as HTML, `*` as emphasis).
fn cell(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                part.to_string()
            } else {
                part.replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('*', "\\*")
            }
        })
        .collect::<Vec<_>>()
        .join("`")
        .replace('|', "\\|")
}

#[test]
fn cli_doc() {
    let page = render();
    if std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1") {
        if let Some(dir) = std::path::Path::new(PAGE).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(PAGE, &page).unwrap_or_else(|e| panic!("cannot write {PAGE}: {e}"));
        return;
    }
    let committed = std::fs::read_to_string(PAGE).unwrap_or_default();
    if committed != page {
        let first = committed
            .lines()
            .zip(page.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(page.lines().count()));
        panic!(
            "docs/src/reference/cli.md is not what the command line says (first difference at line {}: {:?} should be {:?}); run UPDATE_DOCS=1 cargo test -p server --bin tablesafe cli_doc and commit the page",
            first + 1,
            committed.lines().nth(first).unwrap_or(""),
            page.lines().nth(first).unwrap_or(""),
        );
    }
}
