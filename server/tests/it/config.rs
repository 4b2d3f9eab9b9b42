//! The configuration file (`--config` / `TABLESAFE_CONFIG`), `config check`, shell
//! completions and manual pages, through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every variable that could set a `serve` setting, removed so the test's own
/// environment cannot leak into what it checks.
const SETTINGS_ENV: &[&str] = &[
    "TABLESAFE_CONFIG",
    "TABLESAFE_LISTEN",
    "TABLESAFE_DATA_DIR",
    "TABLESAFE_DATABASE_URL",
    "TABLESAFE_KEY_FILE",
    "TABLESAFE_SITE_ROOT",
    "TABLESAFE_SECURE_COOKIES",
    "TABLESAFE_SESSION_HOURS",
    "TABLESAFE_WORKER_NAME",
    "TABLESAFE_JOBS",
    "TABLESAFE_PUBLIC_URL",
    "TABLESAFE_METRICS_PUBLIC",
    "TABLESAFE_NOTIFY_RETRY_SECS",
    "TABLESAFE_AUDIT_ANCHOR_SECS",
    "TABLESAFE_SQLITE_DIRS",
    "TABLESAFE_TRUSTED_PROXIES",
    "TABLESAFE_AUDIT_BURST_SECS",
    "TABLESAFE_OUTBOUND_ALLOW",
    "TABLESAFE_OUTBOUND_DENY",
    "TABLESAFE_ADMIN_PASSWORD",
];

fn tablesafe() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tablesafe"));
    for var in SETTINGS_ENV {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1").stdin(Stdio::null());
    cmd
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    tablesafe()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("tablesafe.toml");
    std::fs::write(&path, text).unwrap();
    set_mode(&path, 0o640);
    path
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A refusal: exit status 1 and one line on stderr, which is returned.
fn refused(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "should have been refused with status 1: {}{}",
        stdout(out),
        stderr(out)
    );
    let err = stderr(out);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one clear line, got: {err}"
    );
    err
}

/// `tablesafe serve`, killed by PID when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(args: &[&str], env: &[(&str, &str)], log: &Path) -> Serve {
    let log = std::fs::File::create(log).unwrap();
    Serve(
        tablesafe()
            .arg("serve")
            .args(args)
            .envs(env.iter().copied())
            .env("TABLESAFE_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn wait_listening(port: u16, server: &mut Serve, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!(
                "tablesafe exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "tablesafe did not listen on {port}:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

async fn health(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_server_listens_and_keeps_its_data_where_the_file_says() {
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    let data = dir.path().join("from-file");
    let config = write_config(
        dir.path(),
        &format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nsession_hours = 2\n",
            data.display()
        ),
    );
    let log = dir.path().join("serve.log");
    // Named by the environment variable, the way a container would.
    let mut server = serve(&[], &[("TABLESAFE_CONFIG", config.to_str().unwrap())], &log);
    wait_listening(port, &mut server, &log);
    assert_eq!(health(port).await, "ok");
    assert!(
        data.join("server.key").exists(),
        "the server key is not in the file's data_dir"
    );

    // reset-password and audit verify, given the same file, work on the server's data:
    // the new password logs in to the running server.
    let new_password = "a new password from the file test";
    let out = run(
        &["reset-password", "--config", config.to_str().unwrap()],
        &[("TABLESAFE_NEW_PASSWORD", new_password)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let base = format!("http://127.0.0.1:{port}");
    let resp = crate::harness::client()
        .post(format!("{base}/api/login"))
        .header("Origin", &base)
        .form(&[("username", "admin"), ("password", new_password)])
        .send()
        .await
        .unwrap();
    assert!(
        crate::harness::session_cookie(&resp).is_some(),
        "the reset password does not log in: {}",
        resp.status()
    );
    let out = run(
        &["audit", "verify", "--config", config.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let report = stdout(&out);
    assert!(
        report.contains("The chain is intact")
            && report.contains(&data.join("audit-head.json").display().to_string()),
        "audit verify did not check the server's data: {report}"
    );
}

#[tokio::test]
async fn the_environment_beats_the_file_and_a_flag_beats_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (file_port, env_port) = (testkit::free_port(), testkit::free_port());
    let (file_data, env_data, flag_data) = (
        dir.path().join("file-data"),
        dir.path().join("env-data"),
        dir.path().join("flag-data"),
    );
    let config = write_config(
        dir.path(),
        &format!(
            "listen = \"127.0.0.1:{file_port}\"\ndata_dir = \"{}\"\n",
            file_data.display()
        ),
    );
    let log = dir.path().join("serve.log");
    let env_listen = format!("127.0.0.1:{env_port}");
    let mut server = serve(
        &[
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            flag_data.to_str().unwrap(),
        ],
        &[
            ("TABLESAFE_LISTEN", env_listen.as_str()),
            ("TABLESAFE_DATA_DIR", env_data.to_str().unwrap()),
        ],
        &log,
    );
    wait_listening(env_port, &mut server, &log);
    assert_eq!(health(env_port).await, "ok");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", file_port)).is_err(),
        "the file's listen address was used although TABLESAFE_LISTEN was set"
    );
    assert!(
        flag_data.join("server.key").exists(),
        "--data-dir was not used"
    );
    assert!(!env_data.exists() && !file_data.exists());
    drop(server);

    // The same order, as `config check` reports it.
    let config_text = "jobs = 2\nsession_hours = 3\nnotify_retry_secs = 40\n";
    let config = write_config(dir.path(), config_text);
    let out = run(
        &[
            "config",
            "check",
            "--config",
            config.to_str().unwrap(),
            "--jobs",
            "4",
        ],
        &[("TABLESAFE_JOBS", "3"), ("TABLESAFE_SESSION_HOURS", "5")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    for line in [
        "jobs = 4  # flag --jobs",
        "session_hours = 5  # env TABLESAFE_SESSION_HOURS",
        "notify_retry_secs = 40  # file",
        "audit_burst_secs = 60  # default",
    ] {
        assert!(
            report.lines().any(|l| l == line),
            "no `{line}` in:\n{report}"
        );
    }
}

#[test]
fn an_unknown_key_is_refused_with_its_name_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "listn = \"127.0.0.1:3000\"\n");
    let config = config.to_str().unwrap();
    for args in [
        vec!["serve", "--config", config],
        vec!["config", "check", "--config", config],
        vec!["reset-password", "--config", config],
    ] {
        let err = refused(&run(&args, &[]));
        assert!(
            err.contains("unknown key `listn`") && err.contains(config),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("known keys:") && err.contains("listen"),
            "{err}"
        );
    }
    // A file that is not there is not silently skipped.
    let err = refused(&run(
        &["serve", "--config", "/nonexistent/tablesafe.toml"],
        &[],
    ));
    assert!(err.contains("/nonexistent/tablesafe.toml"), "{err}");
}

#[test]
fn a_bad_value_is_refused_by_the_flags_own_rules_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key, why) in [
        ("session_hours = 0\n", "session_hours", "1..=720"),
        ("session_hours = \"twelve\"\n", "session_hours", "integer"),
        (
            "trusted_proxies = [\"x\"]\n",
            "trusted_proxies",
            "not an address",
        ),
        (
            "trusted_proxies = \"127.0.0.1\"\n",
            "trusted_proxies",
            "array",
        ),
        (
            "outbound_allow = [\"10.0.0.0/99\"]\n",
            "outbound_allow",
            "prefix length",
        ),
        (
            "public_url = \"ftp://ops.example.com\"\n",
            "public_url",
            "http",
        ),
        ("listen = \"everywhere\"\n", "listen", "everywhere"),
        ("metrics_public = \"yes\"\n", "metrics_public", "bool"),
    ] {
        let config = write_config(dir.path(), text);
        let err = refused(&run(
            &["config", "check", "--config", config.to_str().unwrap()],
            &[],
        ));
        assert!(
            err.contains(&format!("key `{key}`")) && err.contains("tablesafe.toml"),
            "{text}: {err}"
        );
        assert!(err.contains(why), "{text}: {err}");
        // The server refuses it the same way, before doing anything.
        let err2 = refused(&run(&["serve", "--config", config.to_str().unwrap()], &[]));
        assert_eq!(err, err2);
    }
    let config = write_config(dir.path(), "listen = \n");
    let err = refused(&run(&["serve", "--config", config.to_str().unwrap()], &[]));
    assert!(
        err.contains("not valid TOML") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn config_check_redacts_the_password_and_names_every_source() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cret-Pa55word";
    let config = write_config(
        dir.path(),
        &format!(
            "database_url = \"postgres://tablesafe:{secret}@127.0.0.1:5432/tablesafe\"\n\
             trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\nmetrics_public = true\n\
             outbound_allow = [\"10.0.0.0/8\", \"127.0.0.1\"]\n"
        ),
    );
    let out = run(
        &["config", "check", "--config", config.to_str().unwrap()],
        &[
            ("TABLESAFE_LISTEN", "127.0.0.1:3999"),
            // Empty clears a list (an environment file's `TABLESAFE_OUTBOUND_DENY=`).
            ("TABLESAFE_OUTBOUND_DENY", ""),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    assert!(
        !report.contains(secret) && !stderr(&out).contains(secret),
        "the password was shown: {report}"
    );
    for line in [
        "database_url = \"postgres://tablesafe:***@127.0.0.1:5432/tablesafe\"  # file",
        "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]  # file",
        "metrics_public = true  # file",
        "outbound_allow = [\"10.0.0.0/8\", \"127.0.0.1\"]  # file",
        "outbound_deny = []  # env TABLESAFE_OUTBOUND_DENY",
        "listen = \"127.0.0.1:3999\"  # env TABLESAFE_LISTEN",
        "session_hours = 12  # default",
        "# key_file is not set  # default",
    ] {
        assert!(
            report.lines().any(|l| l == line),
            "no `{line}` in:\n{report}"
        );
    }
    assert!(report.contains(config.to_str().unwrap()));
    // 0640: no warning. Readable by everyone with a password in it: a warning that says
    // what to do, without the password.
    assert!(!stderr(&out).contains("every user"), "{}", stderr(&out));
    set_mode(&config, 0o644);
    let out = run(
        &["config", "check", "--config", config.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("every user") && err.contains("chmod o-r"),
        "{err}"
    );
    assert!(!err.contains(secret));

    // What `config check` prints is itself a configuration file (less the password).
    let reprinted: String = report
        .lines()
        .filter(|l| !l.starts_with("database_url"))
        .map(|l| format!("{l}\n"))
        .collect();
    let again = write_config(dir.path(), &reprinted);
    let out = run(
        &["config", "check", "--config", again.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}\n{reprinted}", stderr(&out));
    let report = stdout(&out);
    for line in [
        "listen = \"127.0.0.1:3999\"  # file",
        "outbound_allow = [\"10.0.0.0/8\", \"127.0.0.1\"]  # file",
        "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]  # file",
    ] {
        assert!(
            report.lines().any(|l| l == line),
            "no `{line}` in:\n{report}"
        );
    }
}

/// The file the packages install, and the example in the user guide.
#[test]
fn the_example_configurations_pass_config_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let guide = std::fs::read_to_string(root.join("docs/src/configuration.md")).unwrap();
    let block = guide
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("docs/src/configuration.md has a ```toml example");
    let from_guide = write_config(dir.path(), block);
    for example in [root.join("packaging/tablesafe.toml"), from_guide] {
        let out = run(
            &["config", "check", "--config", example.to_str().unwrap()],
            &[],
        );
        assert!(
            out.status.success(),
            "{}: {}",
            example.display(),
            stderr(&out)
        );
        assert!(
            stdout(&out).contains("data_dir = \"/var/lib/tablesafe\"  # file"),
            "{} does not set data_dir:\n{}",
            example.display(),
            stdout(&out)
        );
    }
}

/// The subcommands `tablesafe --help` lists.
fn subcommands() -> Vec<String> {
    let help = stdout(&run(&["--help"], &[]));
    help.split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_the_subcommands_and_their_flags() {
    let out = run(&["completions", "bash"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = stdout(&out);
    let subcommands = subcommands();
    assert!(subcommands.len() > 10 && subcommands.contains(&"serve".to_string()));
    // Load the script into a real bash and ask it to complete, as a user pressing Tab.
    let complete = |words: &str, cword: usize| -> String {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "{script}\nCOMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; \
                 COMP_POINT=${{#COMP_LINE}}; \
                 _tablesafe tablesafe \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\""
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let all = complete("tablesafe ''", 1);
    for sub in &subcommands {
        assert!(
            all.lines().any(|l| l == sub),
            "`{sub}` not completed:\n{all}"
        );
    }
    assert_eq!(
        complete("tablesafe res", 1)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["restore", "reset-password"]
    );
    let flags = complete("tablesafe serve --con", 2);
    assert_eq!(flags.trim(), "--config");

    for shell in ["zsh", "fish"] {
        let out = run(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains("reset-password"), "{shell}");
    }
    let err = stderr(&run(&["completions", "tcsh"], &[]));
    assert!(
        err.contains("possible values") && err.contains("bash"),
        "{err}"
    );
}

#[test]
fn man_writes_a_page_groff_reads_for_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let out = run(&["man", "--out-dir", out_dir.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut pages = vec!["tablesafe.1".to_string()];
    pages.extend(subcommands().iter().map(|s| format!("tablesafe-{s}.1")));
    pages.extend([
        "tablesafe-audit-verify.1".into(),
        "tablesafe-config-check.1".into(),
    ]);
    for page in &pages {
        let path = out_dir.join(page);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{page} was not written: {e}"));
        let title = page.trim_end_matches(".1");
        assert!(
            text.lines().any(|l| l.starts_with(".TH ")
                && l.to_lowercase().contains(title)
                && l.contains(" 1 ")),
            "{page} has no .TH header for section 1:\n{}",
            &text[..text.len().min(300)]
        );
    }
    // The serve page documents the configuration file and a setting's variable.
    let rendered = groff(&out_dir.join("tablesafe-serve.1"));
    assert!(rendered.contains("--config") && rendered.contains("TABLESAFE_CONFIG"));
    assert!(rendered.contains("--session-hours") && rendered.contains("TABLESAFE_SESSION_HOURS"));
    let rendered = groff(&out_dir.join("tablesafe.1"));
    assert!(rendered.contains("reset-password"), "{rendered}");
}

/// A manual page as `man` shows it (groff's man macros, plain text), with groff's
/// warnings turned into failures.
fn groff(page: &Path) -> String {
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-P", "-cbou"])
        .arg(page)
        .output()
        .expect("groff is needed to read the manual pages: apt-get install groff-base (scripts/lib.sh ensure_man_tools)");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).trim().is_empty(),
        "groff warns about {}: {}",
        page.display(),
        stderr(&out)
    );
    // Hyphens come out as U+2010 in UTF-8 output; compare with ASCII.
    stdout(&out).replace(['\u{2010}', '\u{2212}'], "-")
}
