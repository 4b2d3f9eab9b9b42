//! Command-line interface. Secrets never come from flags (they would show in `ps` and
//! shell history): passwords are read from the environment or generated.

use anyhow::{Context, Result};
use app::ssr::db::{self, Bootstrap, Db};
use clap::{Args, Parser, Subcommand};
use engine::secret::{Secret, redact_url};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "tablesafe",
    // `tablesafe --version`: "tablesafe 0.1.0 (commit 1a2b3c4d5e6f, built 2026-12-07
    // 14:00:00 UTC)", from server/build.rs.
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (commit ",
        env!("TABLESAFE_COMMIT"),
        ", built ",
        env!("TABLESAFE_BUILD_DATE"),
        ")"
    ),
    about = "Backup and recovery for table stores."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repository.
    Init(crate::engine_cmd::InitArgs),
    /// Back up a database (creating the repository if needed); prints the snapshot id last.
    Backup(crate::engine_cmd::BackupArgs),
    /// List the snapshots in a repository.
    Snapshots(crate::engine_cmd::SnapshotsArgs),
    /// Restore tables from a snapshot into a database.
    Restore(crate::engine_cmd::RestoreArgs),
    /// Show rows of a table inside a snapshot without restoring it: a page at a time,
    /// filtered with --where or looked up by primary key with --key.
    Show(crate::engine_cmd::ShowArgs),
    /// Check a repository: everything exists, and with --read-data, everything reads back.
    Verify(crate::engine_cmd::VerifyArgs),
    /// Remove snapshots a retention policy does not keep, and the data only they used.
    /// Safe while other backups write to the repository.
    Prune(crate::engine_cmd::PruneArgs),
    /// Copy snapshots to another repository (another target), skipping those it has.
    Copy(crate::engine_cmd::CopyArgs),
    /// Rewrite a repository's damaged or missing data from a copy repository (one that
    /// `copy` or a policy's copy target filled), then verify it with --read-data.
    Repair(crate::engine_cmd::RepairArgs),
    /// Prove a snapshot restores: restore it into a scratch database, check every
    /// table's rows and checksum against the manifest and the given SQL assertions,
    /// drop the scratch copy and print the evidence.
    Drill(crate::engine_cmd::DrillArgs),
    /// Store a source's changes continuously for `restore --at`: PostgreSQL through
    /// logical replication, SQLite as frequent incremental snapshots; until stopped.
    Capture(crate::engine_cmd::CaptureArgs),
    /// Run the web console, the scheduler, the job runner and the notifier.
    ///
    /// Every setting can also come from a TOML file (--config FILE or
    /// TABLESAFE_CONFIG) whose keys are the flags' names in snake_case; a flag beats
    /// the environment, which beats the file.
    Serve(ServeArgs),
    /// Check a configuration file and show the settings it makes:
    /// `tablesafe config check --config FILE`.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a completion script for a shell to standard output, e.g.
    /// `tablesafe completions bash > /etc/bash_completion.d/tablesafe`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (tablesafe.1 and one per subcommand) into a directory.
    #[command(hide = true)]
    Man {
        /// The directory to write to (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Check the console's audit log: the keyed hash chain in the history database, and
    /// that it still holds every entry recorded by the signed heads written outside it
    /// (beside the server key and in every target). Exit status 1 when it does not.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Set a new password for a console account and print it once; ends every session
    /// of the account. Recorded in the audit log.
    ///
    /// The password comes from TABLESAFE_NEW_PASSWORD, or is generated.
    ResetPassword {
        #[command(flatten)]
        history: HistoryArgs,
        /// The account to change.
        #[arg(long, default_value = "admin")]
        user: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check the configuration and print the settings `serve` would run with.
    ///
    /// The file, the environment and the flags are taken together, exactly as `serve`
    /// takes them (it accepts every flag `serve` does). Every setting is printed with its
    /// value and where it came from (flag, env, file or default); a password in
    /// database_url is shown as ***. Exit status 1, with the reason, when the
    /// configuration is not valid.
    Check(ServeArgs),
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Walk the chain and compare it with every signed head; say what does not match.
    Verify {
        #[command(flatten)]
        history: HistoryArgs,
    },
}

/// Where the history database lives.
#[derive(Args, Debug, Clone)]
pub struct HistoryArgs {
    /// Read settings from this TOML file; its keys are the flags' names in snake_case
    /// (`data_dir = "/var/lib/tablesafe"`). Flags and environment variables beat it.
    #[arg(long, env = "TABLESAFE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite history database and the server key.
    #[arg(long, env = "TABLESAFE_DATA_DIR", default_value = "./tablesafe-data")]
    pub data_dir: PathBuf,
    /// Use this PostgreSQL database (postgres://USER:PASS@HOST:PORT/DB) instead of SQLite.
    /// Prefer the environment variable: a password on the command line is visible to
    /// every user of the machine.
    #[arg(long, env = "TABLESAFE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The server key file (signs sessions and the audit log, encrypts stored secrets).
    /// Default: DATA_DIR/server.key. Workers sharing a PostgreSQL history database must
    /// share it.
    #[arg(long, env = "TABLESAFE_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

impl HistoryArgs {
    /// The console's own files: the data directory, the key file's directory and a
    /// SQLite history database named by URL.
    pub fn protected(&self, key_file: &std::path::Path) -> app::ssr::protected::Protected {
        let key_dir = key_file.parent().unwrap_or(std::path::Path::new("."));
        let history = self
            .database_url
            .as_deref()
            .and_then(|u| u.strip_prefix("sqlite://"))
            .map(|p| PathBuf::from(p.split('?').next().unwrap_or(p)));
        app::ssr::protected::Protected::new(
            &[self.data_dir.as_path(), key_dir],
            &history.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        )
    }

    pub fn key_path(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("server.key"))
    }

    /// The history database with the server's existing key (a command run beside the
    /// server never makes a key of its own).
    pub async fn open_keyed(&self) -> Result<(Db, Secret<[u8; app::ssr::keys::KEY_LEN]>)> {
        let key = app::ssr::keys::load_existing(&self.key_path())?;
        let db = self.open().await?;
        // Warned, not refused: `audit verify` must still run (and report what it finds)
        // on a database whose recorded fingerprint was edited.
        match app::ssr::key_guard::matches(&db, &key).await {
            Ok(Some(false)) => eprintln!(
                "warning: the server key in {} is not the one this history database \
                 records: stored secrets, sessions and audit entries will not open with it; \
                 pass the server's --key-file (TABLESAFE_KEY_FILE)",
                self.key_path().display()
            ),
            Err(e) => eprintln!("warning: {e:#}"),
            Ok(_) => {}
        }
        let db = db.with_server_key(&key);
        Ok((db, key))
    }

    pub async fn open(&self) -> Result<Db> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create data directory {}", self.data_dir.display()))?;
        let url = match &self.database_url {
            Some(url) => url.clone(),
            None => db::sqlite_url(&self.data_dir)?,
        };
        let db = Db::open(&Secret::new(url.clone())).await?;
        tracing::info!(backend = db.backend.label(), url = %redact_url(&url), "history database ready");
        Ok(db)
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Address to listen on.
    #[arg(long, env = "TABLESAFE_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Directory with the built browser files (pkg/tablesafe.js, .wasm, .css).
    /// Default: `site` beside the binary's target directory, else ./target/site.
    #[arg(long, env = "TABLESAFE_SITE_ROOT")]
    pub site_root: Option<PathBuf>,
    /// Mark the session cookie Secure (sent over HTTPS only). Default: on when
    /// --public-url is https://, else off; `--secure-cookies=false` turns it off.
    #[arg(long, env = "TABLESAFE_SECURE_COOKIES", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_name = "BOOL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub secure_cookies: Option<bool>,
    /// How long a login lasts, in hours.
    #[arg(long, env = "TABLESAFE_SESSION_HOURS", default_value_t = 12,
          value_parser = clap::value_parser!(u64).range(1..=24 * 30))]
    pub session_hours: u64,
    /// This worker's name in the job queue (default: host:data-dir). Workers sharing a
    /// PostgreSQL history need distinct names.
    #[arg(long, env = "TABLESAFE_WORKER_NAME")]
    pub worker_name: Option<String>,
    /// Jobs this worker runs at once (backups, restores, verifies, drills); a policy
    /// never has two backups at once.
    #[arg(long, env = "TABLESAFE_JOBS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub jobs: u64,
    /// The console's address as users reach it (e.g. https://backup.example.com), for
    /// links in notifications; also accepted as a request's Origin (behind a proxy).
    /// A path (https://ops.example.com/tablesafe/) serves the console under that
    /// prefix, whether the proxy passes it through or strips it.
    /// An https:// URL turns on HSTS and the Secure cookie. Without it, notifications
    /// carry paths.
    #[arg(long, env = "TABLESAFE_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    /// Serve GET /metrics to anyone who can reach the console. Without this flag
    /// /metrics is closed: it answers only requests with `Authorization: Bearer TOKEN`
    /// where TOKEN is the TABLESAFE_METRICS_TOKEN environment variable, and nothing
    /// (404) while that variable is unset. Its output names policies and targets.
    #[arg(long, env = "TABLESAFE_METRICS_PUBLIC")]
    pub metrics_public: bool,
    /// Keep no local cache of the targets' snapshot manifests and index files (default:
    /// cached, checked on every read, in DATA_DIR/cache).
    #[arg(long, env = "TABLESAFE_NO_REPO_CACHE")]
    pub no_repo_cache: bool,
    /// Seconds before a failed notification is tried again; doubles per attempt (at
    /// most an hour), 8 attempts in all.
    #[arg(long, env = "TABLESAFE_NOTIFY_RETRY_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub notify_retry_secs: u64,
    /// Seconds between writes of the audit log's signed head outside the history
    /// database (beside the key file and into every target): entries newer than the
    /// last head could be deleted unseen.
    #[arg(long, env = "TABLESAFE_AUDIT_ANCHOR_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub audit_anchor_secs: u64,
    /// Directories SQLite sources and restore destinations must be in (comma-separated;
    /// symlinks are followed before the check). Default: anywhere except tablesafe's
    /// own data directory, key file directory and history database.
    #[arg(long, env = "TABLESAFE_SQLITE_DIRS", value_delimiter = ',')]
    pub sqlite_dirs: Vec<PathBuf>,
    /// Reverse proxies in front of the console (addresses or ranges, comma-separated,
    /// e.g. 127.0.0.1,10.1.2.3): from these peers the client address is read from
    /// X-Forwarded-For, for login throttling and the audit log. From any other peer
    /// the header is ignored (a client could write anything there). Name the proxies
    /// only, not a range clients are in too.
    #[arg(long, env = "TABLESAFE_TRUSTED_PROXIES", value_delimiter = ',',
          value_parser = parse_cidr)]
    pub trusted_proxies: Vec<app::ssr::client::Cidr>,
    /// Seconds without a further failure after which a burst of failed logins or
    /// wrong trigger tokens from one address is written to the audit log as one
    /// summary entry (its first failure is written at once).
    #[arg(long, env = "TABLESAFE_AUDIT_BURST_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub audit_burst_secs: u64,
    /// Private or loopback ranges (comma-separated, e.g. 10.0.0.0/8,127.0.0.1) that
    /// operators may point sources, targets and notifications at. Without it only an
    /// admin may use addresses on this server or a private network; link-local and
    /// cloud metadata addresses are refused for everyone.
    #[arg(long, env = "TABLESAFE_OUTBOUND_ALLOW", value_parser = parse_ranges)]
    pub outbound_allow: Option<Ranges>,
    /// Further ranges (comma-separated) nobody may point the server at.
    #[arg(long, env = "TABLESAFE_OUTBOUND_DENY", value_parser = parse_ranges)]
    pub outbound_deny: Option<Ranges>,
}

/// Address ranges written comma-separated (`10.0.0.0/8,127.0.0.1`); empty is none (so
/// `TABLESAFE_OUTBOUND_ALLOW=` in an environment file clears it).
#[derive(Debug, Clone, Default)]
pub struct Ranges(pub Vec<app::ssr::client::Cidr>);

fn parse_ranges(s: &str) -> Result<Ranges, String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(app::ssr::client::Cidr::parse)
        .collect::<Result<_, _>>()
        .map(Ranges)
}

impl ServeArgs {
    /// The outbound rules from `--outbound-allow` and `--outbound-deny`.
    /// (The ranges are checked when the flags are parsed; kept fallible for callers.)
    pub fn outbound(&self) -> Result<app::ssr::outbound::Outbound> {
        Ok(app::ssr::outbound::Outbound {
            allow: self.outbound_allow.clone().unwrap_or_default().0,
            deny: self.outbound_deny.clone().unwrap_or_default().0,
        })
    }
}

fn parse_cidr(s: &str) -> Result<app::ssr::client::Cidr, String> {
    app::ssr::client::Cidr::parse(s)
}

/// `--public-url` is checked when the flags (or the configuration file) are parsed, by
/// the same rules the server applies when it starts.
fn parse_public_url(s: &str) -> Result<String, String> {
    crate::hardening::HttpPolicy::new(Some(s))
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

pub async fn run(cli: Cli, layers: crate::config::Layers) -> Result<()> {
    match cli.command {
        Command::Serve(args) => crate::serve::serve(args).await,
        Command::Config {
            command: ConfigCommand::Check(args),
        } => {
            args.outbound()?;
            print!("{}", crate::config::check_report(&layers));
            Ok(())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "tablesafe",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man { out_dir } => {
            use clap::CommandFactory;
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("cannot create {}", out_dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &out_dir).with_context(|| {
                format!("cannot write the manual pages into {}", out_dir.display())
            })?;
            Ok(())
        }
        Command::Init(a) => crate::engine_cmd::init(a).await,
        Command::Backup(a) => crate::engine_cmd::run_backup(a).await,
        Command::Snapshots(a) => crate::engine_cmd::snapshots(a).await,
        Command::Restore(a) => crate::engine_cmd::restore(a).await,
        Command::Verify(a) => crate::engine_cmd::run_verify(a).await,
        Command::Prune(a) => crate::engine_cmd::run_prune(a).await,
        Command::Copy(a) => crate::engine_cmd::run_copy(a).await,
        Command::Capture(a) => crate::engine_cmd::run_capture(a).await,
        Command::Repair(a) => crate::engine_cmd::run_repair(a).await,
        Command::Drill(a) => crate::engine_cmd::run_drill(a).await,
        Command::Show(a) => crate::engine_cmd::show(a).await,
        Command::Audit {
            command: AuditCommand::Verify { history },
        } => {
            let (db, key) = history.open_keyed().await?;
            let secrets = app::ssr::secrets::SecretBox::new(&key);
            let local = app::ssr::anchor::local_file(&history.key_path());
            let report = app::ssr::anchor::check(&db, &secrets, &local).await?;
            for (place, status) in &report.heads {
                use app::ssr::anchor::Status;
                let line = match status {
                    Status::Missing => "no head written yet".to_string(),
                    Status::Matches(h) => format!(
                        "matches the head of {} ({} entries)",
                        engine::capture::rfc3339(h.at),
                        h.entries
                    ),
                    Status::Contradicted(h, why) => format!(
                        "DOES NOT MATCH the head of {}: {why}",
                        engine::capture::rfc3339(h.at)
                    ),
                    Status::Forged(why) => format!("ignored: {why}"),
                    Status::Unreadable(why) => format!("could not be read: {why}"),
                };
                println!("{place}: {line}");
            }
            println!("{}", report.summary());
            if !report.holds() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::ResetPassword { history, user } => {
            let (db, _) = history.open_keyed().await?;
            let (password, generated) = match env_secret("TABLESAFE_NEW_PASSWORD") {
                Some(p) => (p, false),
                None => (app::ssr::password::generate(), true),
            };
            let done = db::set_password(&db, &user, password.clone()).await?;
            // A token minted with a stolen session must not outlive the reset.
            let revoked = match db::user_by_name(&db, &user).await? {
                Some(row) if done => app::ssr::tokens::revoke_all(&db, row.id).await?,
                _ => 0,
            };
            // On the record either way: whoever can run this on the server can take over
            // any account, and the audit log is where an auditor looks for that.
            let event = app::ssr::audit::Event {
                user_id: None,
                username: format!("cli:{}", std::env::var("USER").unwrap_or_default()),
                address: "local".into(),
                action: "user.reset_password".into(),
                target: format!("user {user}"),
                outcome: if done {
                    app::api::history::Outcome::Ok
                } else {
                    app::api::history::Outcome::Failed
                },
                detail: if done {
                    format!("every session of the account ended, {revoked} API token(s) revoked")
                } else {
                    "no such account (or it was removed)".into()
                },
            };
            app::ssr::audit::append(&db, &event).await?;
            if !done {
                anyhow::bail!(
                    "no account named {user:?} (a removed account cannot be brought back: add a new user under another name)"
                );
            }
            if generated {
                println!("New password for {user}: {}", password.expose());
            } else {
                println!("Password for {user} set from TABLESAFE_NEW_PASSWORD.");
            }
            Ok(())
        }
    }
}

/// A secret from the environment; empty counts as unset.
pub fn env_secret(name: &str) -> Option<Secret<String>> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}

/// Creates the first account on a new history database and says how to log in.
pub async fn bootstrap_admin(db: &Db) -> Result<()> {
    match db::ensure_admin(db, env_secret("TABLESAFE_ADMIN_PASSWORD")).await? {
        Bootstrap::Existing => {}
        Bootstrap::Created {
            generated: false, ..
        } => {
            tracing::info!(
                "created the account `admin` with the password from TABLESAFE_ADMIN_PASSWORD"
            );
        }
        Bootstrap::Created {
            generated: true,
            password,
        } => {
            // The one place a password is logged, on purpose: a generated first
            // password has to reach the operator, and this is printed only once.
            tracing::warn!(
                "created the account `admin` with the generated password: {}  \
                 (shown once; `tablesafe reset-password` sets a new one)",
                password.expose()
            );
        }
    }
    Ok(())
}
