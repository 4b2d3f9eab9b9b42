//! The configuration file: `--config FILE` or `TABLESAFE_CONFIG`.
//!
//! A TOML file whose keys are the names of `serve`'s flags in snake_case (`data_dir`,
//! `public_url`; a list is a TOML array). It sits under the environment and the command
//! line: a flag beats a `TABLESAFE_*` variable, which beats the file, which beats the
//! built-in default. `serve` and `config check` read every key; `reset-password` and
//! `audit verify` read the keys that say where the history database is (`data_dir`,
//! `database_url`, `key_file`), so they find the same data as the server.
//!
//! Why the file goes through clap: a file value must pass exactly the checks a flag
//! passes (ranges, address ranges, URLs), and a second set of rules would drift. So the
//! command line is parsed once; every setting that still has its default (neither flag
//! nor environment gave it) and that the file sets is handed to clap again as if it
//! had been written `--flag=VALUE`, and the command line is parsed a second time. A
//! value clap refuses is reported with the file's key and path. Nothing leaves the
//! process: the values are added to the argument list in memory, never to a command
//! line another user could see.
//!
//! The file itself is read with figment into [`FileConfig`], which refuses unknown keys
//! and values of the wrong type before clap sees anything.

use anyhow::{Context, Result, anyhow};
use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};
use figment::Figment;
use figment::error::Kind;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::cli::Cli;

/// Every setting of `tablesafe serve` as the configuration file spells it. A new
/// `serve` flag needs its field here (a test compares this with the flags); the value's
/// checks stay in the flag's clap definition.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// May hold a password: allowed (the package installs the file 0640
    /// root:tablesafe), with a warning when every user can read the file.
    pub database_url: Option<String>,
    pub key_file: Option<PathBuf>,
    pub site_root: Option<PathBuf>,
    pub secure_cookies: Option<bool>,
    pub session_hours: Option<i64>,
    pub worker_name: Option<String>,
    pub jobs: Option<i64>,
    pub public_url: Option<String>,
    pub metrics_public: Option<bool>,
    pub no_repo_cache: Option<bool>,
    pub notify_retry_secs: Option<i64>,
    pub audit_anchor_secs: Option<i64>,
    pub sqlite_dirs: Option<Vec<PathBuf>>,
    pub trusted_proxies: Option<Vec<String>>,
    pub audit_burst_secs: Option<i64>,
    pub outbound_allow: Option<Vec<String>>,
    pub outbound_deny: Option<Vec<String>>,
}

/// Arguments of a command that are not settings a file could give.
const NOT_SETTINGS: &[&str] = &["config", "help", "version"];

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--flag` on the command line.
    Flag(String),
    /// The environment variable named.
    Env(String),
    /// The configuration file.
    File,
    /// The built-in default (or not set at all).
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "flag --{flag}"),
            Source::Env(var) => write!(f, "env {var}"),
            Source::File => f.write_str("file"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One setting of the command that ran, as `config check` shows it.
#[derive(Debug, Clone)]
pub struct Setting {
    pub key: String,
    /// The values clap received (several for a list; none when unset).
    pub raw: Vec<String>,
    pub list: bool,
    pub source: Source,
}

/// How the flags, the environment and the configuration file made up the settings.
#[derive(Debug, Default)]
pub struct Layers {
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
    /// The command's settings in the order of its flags.
    pub settings: Vec<Setting>,
}

/// Parses the command line with the configuration file under it. Exits as clap does for
/// `--help`, `--version` and usage errors; a bad configuration file is an error naming
/// the file and the key.
pub fn parse(argv: Vec<OsString>) -> Result<(Cli, Layers)> {
    let mut cmd = Cli::command();
    cmd.build();
    let first = cmd.clone().get_matches_from(argv.clone());
    let (leaf_cmd, leaf_first) = leaf(&cmd, &first);
    let settings: Vec<&Arg> = leaf_cmd
        .get_arguments()
        .filter(|a| !NOT_SETTINGS.contains(&a.get_id().as_str()) && a.get_long().is_some())
        .collect();

    let file = leaf_first
        .try_get_one::<PathBuf>("config")
        .ok()
        .flatten()
        .cloned();
    let mut from_file: Vec<String> = Vec::new();
    let mut extra: Vec<OsString> = Vec::new();
    if let Some(path) = &file {
        let config = load(path)?;
        warn_if_exposed(path, &config);
        let table = toml::Table::try_from(&config)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for (key, value) in &table {
            // A key of `serve` that this command does not use (e.g. `listen` for
            // reset-password) is not an error: it is the same file.
            let Some(arg) = settings.iter().find(|a| a.get_id() == key) else {
                continue;
            };
            if matches!(
                leaf_first.value_source(key),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            extra.extend(as_flags(path, key, arg, value)?);
            from_file.push(key.clone());
        }
    }

    let matches = if extra.is_empty() {
        first.clone()
    } else {
        let mut argv = argv;
        argv.extend(extra);
        cmd.clone().try_get_matches_from(argv).map_err(|e| {
            file_error(
                &e,
                file.as_deref()
                    .unwrap_or(Path::new("the configuration file")),
            )
        })?
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| anyhow!("{}", one_line(&e)))?;

    let (_, leaf_final) = leaf(&cmd, &matches);
    let settings = settings
        .iter()
        .map(|arg| {
            let key = arg.get_id().as_str().to_string();
            let source = if from_file.contains(&key) {
                Source::File
            } else {
                match leaf_first.value_source(&key) {
                    Some(ValueSource::CommandLine) => {
                        Source::Flag(arg.get_long().unwrap_or_default().to_string())
                    }
                    Some(ValueSource::EnvVariable) => Source::Env(
                        arg.get_env()
                            .map(|v| v.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    ),
                    _ => Source::Default,
                }
            };
            let raw = leaf_final
                .get_raw(&key)
                .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            Setting {
                list: is_array_key(&key),
                key,
                raw,
                source,
            }
        })
        .collect();
    Ok((cli, Layers { file, settings }))
}

/// The subcommand that runs, and its matches.
fn leaf<'a>(cmd: &'a Command, m: &'a ArgMatches) -> (&'a Command, &'a ArgMatches) {
    match m.subcommand() {
        Some((name, sub)) => match cmd.find_subcommand(name) {
            Some(c) => leaf(c, sub),
            None => (cmd, m),
        },
        None => (cmd, m),
    }
}

/// Whether clap takes the setting as several values (its flag may repeat, or it splits
/// at a delimiter).
fn is_list(arg: &Arg) -> bool {
    arg.get_value_delimiter().is_some() || matches!(arg.get_action(), ArgAction::Append)
}

/// Whether the file writes the key as an array: what [`FileConfig`] says when handed
/// a string for it.
fn is_array_key(key: &str) -> bool {
    let probe = BTreeMap::from([(key.to_string(), "x".to_string())]);
    match Figment::from(Serialized::defaults(probe)).extract::<FileConfig>() {
        Err(e) => {
            matches!(&e.kind, Kind::InvalidType(_, expected) if expected.contains("sequence"))
        }
        Ok(_) => false,
    }
}

/// Reads and type-checks the file.
pub fn load(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the configuration file {} (named by --config or TABLESAFE_CONFIG)",
            path.display()
        )
    })?;
    Figment::from(Toml::string(&text))
        .extract::<FileConfig>()
        .map_err(|e| describe(e, path))
}

/// A figment error as one line naming the file and the key.
fn describe(e: figment::Error, path: &Path) -> anyhow::Error {
    let file = path.display();
    let key = e.path.join(".");
    match &e.kind {
        Kind::UnknownField(field, known) => anyhow!(
            "unknown key `{field}` in {file}; known keys: {}",
            known.join(", ")
        ),
        Kind::InvalidType(actual, expected) => {
            anyhow!(
                "key `{key}` in {file}: expected {}, found {actual}",
                expected_name(expected)
            )
        }
        Kind::Message(msg) if key.is_empty() => {
            // A TOML syntax error: where and what, without the excerpt of the file
            // (the lines with a `|` gutter).
            let what: Vec<&str> = msg
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l
                            .trim_start_matches(|c: char| c.is_ascii_digit())
                            .trim_start()
                            .starts_with('|')
                })
                .collect();
            anyhow!("{file} is not valid TOML: {}", what.join(": "))
        }
        other => anyhow!("key `{key}` in {file}: {other}"),
    }
}

/// serde's names for the types the file uses, as a reader would say them.
fn expected_name(expected: &str) -> String {
    if expected.contains("i64") {
        "an integer".into()
    } else if expected.contains("sequence") {
        "an array".into()
    } else {
        expected.to_string()
    }
}

/// The file's value for `arg` as the flags clap would have received for it.
fn as_flags(path: &Path, key: &str, arg: &Arg, value: &toml::Value) -> Result<Vec<OsString>> {
    let long = arg.get_long().unwrap_or(key);
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return Ok(match value.as_bool() {
            Some(true) => vec![format!("--{long}").into()],
            _ => vec![],
        });
    }
    let items: Vec<&toml::Value> = match value {
        toml::Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    // A flag that takes one comma-separated value gets the array joined.
    let delimiter = arg.get_value_delimiter().or(match value {
        toml::Value::Array(_) if !is_list(arg) => Some(','),
        _ => None,
    });
    let texts = items
        .into_iter()
        .map(|item| {
            let text = match item {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let Some(d) = delimiter
                && text.contains(d)
            {
                anyhow::bail!(
                    "key `{key}` in {}: {text:?} contains {d:?}, which separates the values \
                     of --{long}: write each value as its own array element (a value \
                     cannot contain {d:?})",
                    path.display()
                );
            }
            Ok(text)
        })
        .collect::<Result<Vec<String>>>()?;
    if is_list(arg) {
        Ok(texts
            .into_iter()
            .map(|text| format!("--{long}={text}").into())
            .collect())
    } else {
        Ok(vec![format!("--{long}={}", texts.join(",")).into()])
    }
}

/// A value clap refused on the second parse came from the file (the first parse took
/// everything else): name the key.
fn file_error(e: &clap::Error, path: &Path) -> anyhow::Error {
    let file = path.display();
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let key = flag
        .trim_start_matches("--")
        .split([' ', '='])
        .next()
        .unwrap_or_default()
        .replace('-', "_");
    if key.is_empty() {
        return anyhow!("{file}: {}", one_line(e));
    }
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => format!(" {v:?}"),
        _ => String::new(),
    };
    let why = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_else(|| one_line(e));
    anyhow!("key `{key}` in {file}: invalid value{value}: {why}")
}

/// A clap error's message without its "error: " prefix, usage and tips.
fn one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// A password in a file every user can read is as good as published.
fn warn_if_exposed(path: &Path, config: &FileConfig) {
    use std::os::unix::fs::PermissionsExt;
    let Some(url) = &config.database_url else {
        return;
    };
    let has_password = engine::secret::redact_url(url) != *url;
    let world_readable = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o004 != 0)
        .unwrap_or(false);
    if has_password && world_readable {
        tracing::warn!(
            "{} holds the history database's password (database_url) and every user of \
             this machine can read it: `chmod o-r {}` (the package installs it 0640 \
             root:tablesafe), or give the password in TABLESAFE_DATABASE_URL instead",
            path.display(),
            path.display()
        );
    }
}

/// The keys the file accepts (the fields of [`FileConfig`]).
#[cfg(test)]
pub fn known_keys() -> &'static [&'static str] {
    match Figment::from(Toml::string("tablesafe_probe = 0")).extract::<FileConfig>() {
        Err(e) => match e.kind {
            Kind::UnknownField(_, known) => known,
            _ => &[],
        },
        Ok(_) => &[],
    }
}

/// `tablesafe config check`: the effective settings, where each came from, secrets
/// redacted. The output is itself a valid configuration file (less the password).
pub fn check_report(layers: &Layers) -> String {
    let mut out = String::new();
    out.push_str("# The settings `tablesafe serve` would run with, and where each comes from\n");
    out.push_str(
        "# (a flag beats the environment, which beats the file, which beats the default).\n",
    );
    match &layers.file {
        Some(path) => out.push_str(&format!("# configuration file: {}\n", path.display())),
        None => out.push_str("# no configuration file (--config FILE or TABLESAFE_CONFIG)\n"),
    }
    let typed = typed_values(&layers.settings);
    for s in &layers.settings {
        let source = &s.source;
        if s.raw.is_empty() {
            out.push_str(&format!("# {} is not set  # {source}\n", s.key));
            continue;
        }
        let value = match typed.get(&s.key) {
            Some(v) => v.to_string(),
            None => toml_strings(&s.raw, s.list),
        };
        let value = if s.key == "database_url" {
            toml_strings(
                &s.raw
                    .iter()
                    .map(|u| engine::secret::redact_url(u))
                    .collect::<Vec<_>>(),
                false,
            )
        } else {
            value
        };
        out.push_str(&format!("{} = {value}  # {source}\n", s.key));
    }
    out.push_str("# The configuration is valid.\n");
    out
}

/// The raw values typed as the file would write them (integers, booleans, arrays), read
/// back through [`FileConfig`]; empty when they do not fit (then strings are shown).
fn typed_values(settings: &[Setting]) -> toml::Table {
    let mut raw: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for s in settings.iter().filter(|s| !s.raw.is_empty()) {
        let value = if s.list {
            // A comma-separated flag or variable is an array in the file.
            serde_json::Value::from(
                s.raw
                    .iter()
                    .flat_map(|v| v.split(','))
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .collect::<Vec<_>>(),
            )
        } else {
            serde_json::Value::from(s.raw[0].clone())
        };
        raw.insert(s.key.clone(), value);
    }
    Figment::from(Serialized::defaults(raw))
        .extract_lossy::<FileConfig>()
        .ok()
        .and_then(|c| toml::Table::try_from(&c).ok())
        .unwrap_or_default()
}

fn toml_strings(values: &[String], list: bool) -> String {
    let quoted: Vec<String> = values
        .iter()
        .map(|v| toml::Value::String(v.clone()).to_string())
        .collect();
    if list {
        format!("[{}]", quoted.join(", "))
    } else {
        quoted.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn settings_of(cmd: &Command) -> BTreeSet<String> {
        cmd.get_arguments()
            .map(|a| a.get_id().as_str().to_string())
            .filter(|id| !NOT_SETTINGS.contains(&id.as_str()))
            .collect()
    }

    /// A `serve` flag without a configuration key (or a key without a flag) fails here:
    /// add the field to `FileConfig` and the key to docs/src/configuration.md.
    #[test]
    fn every_serve_flag_has_a_configuration_key_and_back() {
        let cmd = Cli::command();
        let serve = settings_of(cmd.find_subcommand("serve").unwrap());
        let keys: BTreeSet<String> = known_keys().iter().map(|k| k.to_string()).collect();
        assert!(!keys.is_empty());
        assert_eq!(
            serve, keys,
            "serve's flags and FileConfig's fields differ (left: flags, right: keys)"
        );
        let check = cmd.find_subcommand("config").unwrap();
        let check = settings_of(check.find_subcommand("check").unwrap());
        assert_eq!(check, serve, "`config check` must take every serve flag");
    }

    /// The user guide lists every key.
    #[test]
    fn the_user_guide_documents_every_key() {
        let guide = include_str!("../../docs/src/configuration.md");
        for key in known_keys() {
            assert!(
                guide.contains(&format!("`{key}`")),
                "docs/src/configuration.md does not document `{key}`"
            );
        }
    }

    fn parse_with(file: &str, args: &[&str]) -> Result<(Cli, Layers)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tablesafe.toml");
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = vec!["tablesafe".into()];
        argv.extend(args.iter().map(OsString::from));
        argv.push(format!("--config={}", path.display()).into());
        parse(argv)
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let (cli, layers) = parse_with(
            "listen = \"127.0.0.1:4000\"\nsession_hours = 3\ntrusted_proxies = [\"10.0.0.1\", \"10.0.0.2\"]\nmetrics_public = true\n",
            &["serve", "--session-hours=5"],
        )
        .unwrap();
        let crate::cli::Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen.to_string(), "127.0.0.1:4000");
        assert_eq!(args.session_hours, 5);
        assert_eq!(args.trusted_proxies.len(), 2);
        assert!(args.metrics_public);
        let source = |k: &str| {
            layers
                .settings
                .iter()
                .find(|s| s.key == k)
                .unwrap()
                .source
                .clone()
        };
        assert_eq!(source("listen"), Source::File);
        assert_eq!(
            source("session_hours"),
            Source::Flag("session-hours".into())
        );
        assert_eq!(source("jobs"), Source::Default);
    }

    #[test]
    fn file_values_pass_the_flags_own_checks() {
        let err = parse_with("jobs = 0\n", &["serve"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key `jobs`") && err.contains("tablesafe.toml"),
            "{err}"
        );
        let err = parse_with("outbound_deny = [\"nowhere\"]\n", &["serve"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `outbound_deny`"), "{err}");
        let err = parse_with("jobs = \"two\"\n", &["serve"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key `jobs`") && err.contains("integer"),
            "{err}"
        );
    }

    #[test]
    fn other_commands_take_only_the_history_keys() {
        let (cli, _) = parse_with(
            "listen = \"127.0.0.1:4000\"\ndata_dir = \"/srv/tablesafe\"\n",
            &["audit", "verify"],
        )
        .unwrap();
        let crate::cli::Command::Audit {
            command: crate::cli::AuditCommand::Verify { history },
        } = cli.command
        else {
            panic!("not audit verify")
        };
        assert_eq!(history.data_dir, PathBuf::from("/srv/tablesafe"));
    }
}
