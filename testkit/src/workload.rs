//! A transactional workload for consistency tests: writers that keep invariants across
//! tables at every committed instant, and an exact model of every committed state.
//!
//! Every write transaction first increments the one row of `clock` (`UPDATE … RETURNING`).
//! That row lock is held until commit, so transactions commit in clock order, and a
//! database state that existed is exactly "the initial data plus the effects of
//! transactions 1..=n" for the `n` in its `clock` row. The writers record the effects of
//! each committed transaction in memory; [`Workload::check`] replays them up to the
//! restored `n` and compares every restored table row for row, and also checks the
//! invariants below, which hold at every committed instant:
//!
//! * `sum(accounts.balance) = INITIAL_TOTAL + sum(history.amount)` (transfers, opening
//!   and closing accounts move money; deposits add a `history` row),
//! * `count(history) = counters.deposits`,
//! * `sum(docs.gen) = counters.edits`,
//! * `count(tags) = INITIAL_TAGS + counters.tags`.
//!
//! The tables cover each way a table is stored: `accounts`, `docs`, `clock` and
//! `counters` have integer keys (incremental layers), `history` has no key (always
//! stored whole), `docs` has large rows that are rewritten often (its deltas outgrow the
//! full segment, so it switches between full and delta), and `tags` has a text key
//! (PostgreSQL: stored whole; SQLite: `COLLATE NOCASE`, so its key order breaks as soon
//! as a tag with a capital letter exists and a backup falls back to reading it whole).

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use sqlx::{Connection, Executor};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

pub const ACCOUNTS: i64 = 1500;
pub const OPENING_BALANCE: i64 = 1000;
pub const INITIAL_TOTAL: i64 = ACCOUNTS * OPENING_BALANCE;
pub const DOCS: i64 = 300;
pub const INITIAL_TAGS: i64 = 200;
/// Bytes of one document body.
pub const DOC_BYTES: usize = 16 * 1024;

/// The database a workload runs against.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(PathBuf),
    /// A `postgres://` URL.
    Postgres(String),
}

impl Db {
    /// The URL tablesafe takes for this database.
    pub fn url(&self) -> String {
        match self {
            Db::Sqlite(p) => format!("sqlite://{}", p.display()),
            Db::Postgres(u) => u.clone(),
        }
    }
}

enum Conn {
    Sqlite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

impl Conn {
    async fn open(db: &Db) -> Result<Conn> {
        Ok(match db {
            Db::Sqlite(p) => {
                let opts = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(p)
                    .create_if_missing(true)
                    .busy_timeout(std::time::Duration::from_secs(30));
                Conn::Sqlite(sqlx::SqliteConnection::connect_with(&opts).await?)
            }
            Db::Postgres(u) => Conn::Pg(sqlx::PgConnection::connect(u).await?),
        })
    }

    async fn exec(&mut self, sql: &str) -> Result<()> {
        match self {
            Conn::Sqlite(c) => c.execute(sqlx::raw_sql(sql)).await.map(|_| ()),
            Conn::Pg(c) => c.execute(sqlx::raw_sql(sql)).await.map(|_| ()),
        }
        .with_context(|| format!("{}…", &sql[..sql.len().min(120)]))
    }

    /// The first column of every row, on either engine.
    async fn scalars<T>(&mut self, sql: &str) -> Result<Vec<T>>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Sqlite>
            + sqlx::Type<sqlx::Sqlite>
            + for<'r> sqlx::Decode<'r, sqlx::Postgres>
            + sqlx::Type<sqlx::Postgres>
            + Send
            + Unpin,
    {
        match self {
            Conn::Sqlite(c) => sqlx::query_scalar(sql).persistent(false).fetch_all(c).await,
            Conn::Pg(c) => sqlx::query_scalar(sql).persistent(false).fetch_all(c).await,
        }
        .with_context(|| sql.to_string())
    }

    async fn ints(&mut self, sql: &str) -> Result<Vec<i64>> {
        self.scalars(sql).await
    }

    async fn int(&mut self, sql: &str) -> Result<i64> {
        self.ints(sql)
            .await?
            .first()
            .copied()
            .with_context(|| format!("no row: {sql}"))
    }

    async fn strings(&mut self, sql: &str) -> Result<Vec<String>> {
        self.scalars(sql).await
    }

    async fn begin_write(&mut self) -> Result<()> {
        // SQLite: take the write lock at once (a deferred transaction that reads first
        // could fail to upgrade in WAL mode).
        match self {
            Conn::Sqlite(_) => self.exec("BEGIN IMMEDIATE").await,
            Conn::Pg(_) => self.exec("BEGIN").await,
        }
    }
}

/// A document's body at a generation: large, and different for every edit.
pub fn body(id: i64, gen_: i64) -> String {
    let unit = format!("doc {id} generation {gen_}; ");
    unit.repeat(DOC_BYTES / unit.len() + 1)[..DOC_BYTES].to_string()
}

/// One database state: what every table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub clock: i64,
    /// deposits, edits, net tags added.
    pub counters: (i64, i64, i64),
    pub accounts: BTreeMap<i64, (i64, String)>,
    /// (n, account, amount, note)
    pub history: Vec<(i64, i64, i64, String)>,
    /// id → generation (the body follows from it).
    pub docs: BTreeMap<i64, i64>,
    pub tags: BTreeMap<String, i64>,
}

/// A change one transaction made.
#[derive(Debug, Clone)]
enum Effect {
    Account(i64, Option<(i64, String)>),
    History(i64, i64, i64, String),
    Doc(i64, i64),
    Tag(String, Option<i64>),
    Counters(i64, i64, i64),
}

impl State {
    fn initial() -> State {
        State {
            clock: 0,
            counters: (0, 0, 0),
            accounts: (1..=ACCOUNTS)
                .map(|i| (i, (OPENING_BALANCE, format!("acct-{i}"))))
                .collect(),
            history: Vec::new(),
            docs: (1..=DOCS).map(|i| (i, 0)).collect(),
            tags: (1..=INITIAL_TAGS)
                .map(|i| (format!("tag-{i:04}"), 0))
                .collect(),
        }
    }

    fn apply(&mut self, n: i64, effects: &[Effect]) {
        self.clock = n;
        for e in effects {
            match e.clone() {
                Effect::Account(id, Some(v)) => {
                    self.accounts.insert(id, v);
                }
                Effect::Account(id, None) => {
                    self.accounts.remove(&id);
                }
                Effect::History(n, a, amt, note) => self.history.push((n, a, amt, note)),
                Effect::Doc(id, g) => {
                    self.docs.insert(id, g);
                }
                Effect::Tag(name, Some(u)) => {
                    self.tags.insert(name, u);
                }
                Effect::Tag(name, None) => {
                    self.tags.remove(&name);
                }
                Effect::Counters(d, e, t) => self.counters = (d, e, t),
            }
        }
    }

    /// Every table as sorted text rows, the way [`read_tables`] renders a database.
    fn tables(&self) -> BTreeMap<&'static str, Vec<String>> {
        let mut t = BTreeMap::new();
        t.insert("clock", vec![format!("1|{}", self.clock)]);
        let (d, e, g) = self.counters;
        t.insert("counters", vec![format!("1|{d}|{e}|{g}")]);
        t.insert(
            "accounts",
            self.accounts
                .iter()
                .map(|(id, (b, note))| format!("{id}|{b}|{note}"))
                .collect(),
        );
        t.insert(
            "history",
            self.history
                .iter()
                .map(|(n, a, amt, note)| format!("{n}|{a}|{amt}|{note}"))
                .collect(),
        );
        t.insert(
            "docs",
            self.docs
                .iter()
                .map(|(id, g)| format!("{id}|{g}|{}", body(*id, *g)))
                .collect(),
        );
        t.insert(
            "tags",
            self.tags.iter().map(|(n, u)| format!("{n}|{u}")).collect(),
        );
        for rows in t.values_mut() {
            rows.sort();
        }
        t
    }
}

const TABLE_QUERIES: [(&str, &str); 6] = [
    ("clock", "SELECT id || '|' || n FROM clock"),
    (
        "counters",
        "SELECT id || '|' || deposits || '|' || edits || '|' || tags FROM counters",
    ),
    (
        "accounts",
        "SELECT id || '|' || balance || '|' || note FROM accounts",
    ),
    (
        "history",
        "SELECT n || '|' || account || '|' || amount || '|' || note FROM history",
    ),
    ("docs", "SELECT id || '|' || gen || '|' || body FROM docs"),
    ("tags", "SELECT name || '|' || uses FROM tags"),
];

async fn read_tables(c: &mut Conn) -> Result<BTreeMap<&'static str, Vec<String>>> {
    let mut out = BTreeMap::new();
    for (name, sql) in TABLE_QUERIES {
        let mut rows = c.strings(sql).await?;
        rows.sort();
        out.insert(name, rows);
    }
    Ok(out)
}

/// Checks the invariants on a database; returns what is violated.
async fn invariants(c: &mut Conn) -> Result<Vec<String>> {
    let mut bad = Vec::new();
    let balance = c
        .int("SELECT CAST(coalesce(sum(balance), 0) AS BIGINT) FROM accounts")
        .await?;
    let deposits = c
        .int("SELECT CAST(coalesce(sum(amount), 0) AS BIGINT) FROM history")
        .await?;
    if balance != INITIAL_TOTAL + deposits {
        bad.push(format!(
            "sum(accounts.balance) = {balance}, but the initial total plus sum(history.amount) = {}",
            INITIAL_TOTAL + deposits
        ));
    }
    let counters = read_counters(c).await?;
    let history_rows = c
        .int("SELECT CAST(count(*) AS BIGINT) FROM history")
        .await?;
    if history_rows != counters[0] {
        bad.push(format!(
            "history has {history_rows} rows, counters.deposits = {}",
            counters[0]
        ));
    }
    let gens = c
        .int("SELECT CAST(coalesce(sum(gen), 0) AS BIGINT) FROM docs")
        .await?;
    if gens != counters[1] {
        bad.push(format!(
            "sum(docs.gen) = {gens}, counters.edits = {}",
            counters[1]
        ));
    }
    let tags = c.int("SELECT CAST(count(*) AS BIGINT) FROM tags").await?;
    if tags != INITIAL_TAGS + counters[2] {
        bad.push(format!(
            "tags has {tags} rows, expected {} + counters.tags {}",
            INITIAL_TAGS, counters[2]
        ));
    }
    Ok(bad)
}

async fn read_counters(c: &mut Conn) -> Result<[i64; 3]> {
    Ok([
        c.int("SELECT deposits FROM counters").await?,
        c.int("SELECT edits FROM counters").await?,
        c.int("SELECT tags FROM counters").await?,
    ])
}

type Log = Arc<Mutex<BTreeMap<i64, Vec<Effect>>>>;

/// The workload on one database: create it, start writers, stop them, check a restore.
pub struct Workload {
    pub db: Db,
    log: Log,
    committed: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<Result<u64>>>,
}

impl Workload {
    /// Creates the tables and their initial rows (SQLite in WAL mode).
    pub async fn create(db: Db) -> Result<Workload> {
        let mut c = Conn::open(&db).await?;
        let nocase = match db {
            Db::Sqlite(_) => {
                c.exec("PRAGMA journal_mode = WAL").await?;
                " COLLATE NOCASE"
            }
            Db::Postgres(_) => "",
        };
        c.exec(&format!(
            "CREATE TABLE clock (id INTEGER PRIMARY KEY, n BIGINT NOT NULL);
             INSERT INTO clock VALUES (1, 0);
             CREATE TABLE counters (id INTEGER PRIMARY KEY, deposits BIGINT NOT NULL, edits BIGINT NOT NULL, tags BIGINT NOT NULL);
             INSERT INTO counters VALUES (1, 0, 0, 0);
             CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance BIGINT NOT NULL, note TEXT NOT NULL);
             CREATE TABLE history (n BIGINT NOT NULL, account INTEGER NOT NULL, amount BIGINT NOT NULL, note TEXT NOT NULL);
             CREATE TABLE docs (id INTEGER PRIMARY KEY, gen BIGINT NOT NULL, body TEXT NOT NULL);
             CREATE TABLE tags (name TEXT{nocase} PRIMARY KEY, uses BIGINT NOT NULL);"
        ))
        .await?;
        let s = State::initial();
        let rows: Vec<String> = s
            .accounts
            .iter()
            .map(|(id, (b, note))| format!("({id}, {b}, '{note}')"))
            .collect();
        for batch in rows.chunks(500) {
            c.exec(&format!("INSERT INTO accounts VALUES {}", batch.join(", ")))
                .await?;
        }
        let rows: Vec<String> = s
            .docs
            .keys()
            .map(|id| format!("({id}, 0, '{}')", body(*id, 0)))
            .collect();
        for batch in rows.chunks(20) {
            c.exec(&format!("INSERT INTO docs VALUES {}", batch.join(", ")))
                .await?;
        }
        let rows: Vec<String> = s.tags.keys().map(|n| format!("('{n}', 0)")).collect();
        c.exec(&format!("INSERT INTO tags VALUES {}", rows.join(", ")))
            .await?;
        Ok(Workload {
            db,
            log: Arc::default(),
            committed: Arc::default(),
            stop: Arc::default(),
            writers: Vec::new(),
        })
    }

    /// Starts `n` writers, each on its own connection, each with its own seed.
    pub async fn start(&mut self, n: usize) -> Result<()> {
        for w in 0..n {
            let conn = Conn::open(&self.db).await?;
            let (log, committed, stop) =
                (self.log.clone(), self.committed.clone(), self.stop.clone());
            self.writers.push(tokio::spawn(async move {
                writer(conn, w as u64, log, committed, stop).await
            }));
        }
        Ok(())
    }

    /// Adds (or removes) the tag `Tag-Capital`, in a transaction like the writers'. On
    /// SQLite its capital letter puts `tags` out of BINARY key order (it is `NOCASE`),
    /// so the next backup of a keyed `tags` abandons its delta and reads it whole.
    pub async fn capital_tag(&self, present: bool) -> Result<()> {
        let mut c = Conn::open(&self.db).await?;
        c.begin_write().await?;
        let mut tx = Tx::begin(&mut c).await?;
        let name = "Tag-Capital";
        if present {
            tx.c.exec(&format!("INSERT INTO tags VALUES ('{name}', 0)"))
                .await?;
            tx.effects.push(Effect::Tag(name.into(), Some(0)));
            tx.counters.2 += 1;
        } else {
            tx.remove_tag(name).await?;
        }
        let done = tx.finish().await?;
        commit(&mut c, done, &self.log, &self.committed).await
    }

    /// The clock of the newest committed transaction.
    pub fn committed(&self) -> i64 {
        self.committed.load(Ordering::SeqCst)
    }

    /// Waits until at least `more` transactions committed after `since`.
    pub async fn wait_for(&self, since: i64, more: i64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.committed() < since + more {
            assert!(
                std::time::Instant::now() < deadline,
                "the writers committed nothing for a minute"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Stops the writers; fails if one of them failed. Returns transactions committed.
    pub async fn stop(&mut self) -> Result<u64> {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = 0;
        for w in self.writers.drain(..) {
            total += w.await.context("writer panicked")??;
        }
        Ok(total)
    }

    /// The state after transaction `n`, replayed from the recorded effects.
    pub fn state_at(&self, n: i64) -> Result<State> {
        let log = self.log.lock().unwrap();
        let mut s = State::initial();
        for i in 1..=n {
            let effects = log
                .get(&i)
                .with_context(|| format!("transaction {i} was not recorded as committed"))?;
            s.apply(i, effects);
        }
        Ok(s)
    }

    /// Checks a database restored from a backup of this workload: every invariant
    /// holds, and every table equals, row for row, the state the source had after the
    /// transaction its `clock` names. Returns that clock.
    pub async fn check(&self, restored: &Db) -> Result<i64> {
        let mut c = Conn::open(restored).await?;
        let bad = invariants(&mut c).await?;
        if !bad.is_empty() {
            bail!(
                "the restored database breaks invariants that hold at every committed instant: {}",
                bad.join("; ")
            );
        }
        let got = read_tables(&mut c).await?;
        let clock = c.int("SELECT n FROM clock").await?;
        let want = self.state_at(clock)?.tables();
        for (table, rows) in &want {
            let have = &got[table];
            if have != rows {
                let missing: Vec<_> = rows.iter().filter(|r| !have.contains(r)).take(3).collect();
                let extra: Vec<_> = have.iter().filter(|r| !rows.contains(r)).take(3).collect();
                let cut = |v: Vec<&String>| {
                    v.iter()
                        .map(|r| r.chars().take(60).collect::<String>())
                        .collect::<Vec<_>>()
                };
                bail!(
                    "table {table} is not what the source held after transaction {clock}: {} rows, expected {}; missing {:?}, unexpected {:?}",
                    have.len(),
                    rows.len(),
                    cut(missing),
                    cut(extra)
                );
            }
        }
        Ok(clock)
    }

    /// Checks the live database the same way (the workload itself is right).
    pub async fn check_source(&self) -> Result<i64> {
        self.check(&self.db.clone()).await
    }
}

/// Commits a transaction and records its effects under its clock.
async fn commit(
    c: &mut Conn,
    (n, effects): (i64, Vec<Effect>),
    log: &Log,
    committed: &AtomicI64,
) -> Result<()> {
    c.exec("COMMIT").await?;
    log.lock().unwrap().insert(n, effects);
    committed.fetch_max(n, Ordering::SeqCst);
    Ok(())
}

/// One writer: transactions until told to stop. Returns how many committed.
async fn writer(
    mut c: Conn,
    seed: u64,
    log: Log,
    committed: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
) -> Result<u64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7ab1e5afe ^ seed);
    let mut count = 0;
    while !stop.load(Ordering::SeqCst) {
        c.begin_write().await?;
        match transaction(&mut c, &mut rng).await {
            Ok(done) => {
                commit(&mut c, done, &log, &committed).await?;
                count += 1;
            }
            Err(e) => {
                let _ = c.exec("ROLLBACK").await;
                return Err(e.context("a workload transaction failed"));
            }
        }
    }
    Ok(count)
}

struct Tx<'a> {
    c: &'a mut Conn,
    n: i64,
    effects: Vec<Effect>,
    counters: (i64, i64, i64),
    /// The counters when the transaction began.
    start: [i64; 3],
    /// The highest account id when the transaction began.
    max_id: i64,
}

impl Tx<'_> {
    async fn account(&mut self, id: i64) -> Result<Option<(i64, String)>> {
        let b = self
            .c
            .ints(&format!("SELECT balance FROM accounts WHERE id = {id}"))
            .await?;
        Ok(b.first().map(|b| (*b, format!("acct-{id}"))))
    }

    async fn set_account(&mut self, id: i64, balance: i64) -> Result<()> {
        self.c
            .exec(&format!(
                "UPDATE accounts SET balance = {balance} WHERE id = {id}"
            ))
            .await?;
        self.effects
            .push(Effect::Account(id, Some((balance, format!("acct-{id}")))));
        Ok(())
    }

    async fn transfer(&mut self, rng: &mut impl Rng) -> Result<()> {
        let max_id = self.max_id;
        let (a, b) = (rng.gen_range(1..=max_id), rng.gen_range(1..=max_id));
        if a == b {
            return Ok(());
        }
        if let (Some((ba, _)), Some((bb, _))) = (self.account(a).await?, self.account(b).await?) {
            let amount = rng.gen_range(1..=50);
            self.set_account(a, ba - amount).await?;
            self.set_account(b, bb + amount).await?;
        }
        Ok(())
    }

    async fn deposit(&mut self, rng: &mut impl Rng) -> Result<()> {
        let max_id = self.max_id;
        let a = rng.gen_range(1..=max_id);
        if let Some((ba, _)) = self.account(a).await? {
            let amount = rng.gen_range(-40..=60);
            let note = format!("deposit {} {}", self.n, self.effects.len());
            self.set_account(a, ba + amount).await?;
            self.c
                .exec(&format!(
                    "INSERT INTO history VALUES ({}, {a}, {amount}, '{note}')",
                    self.n
                ))
                .await?;
            self.effects.push(Effect::History(self.n, a, amount, note));
            self.counters.0 += 1;
        }
        Ok(())
    }

    async fn open(&mut self, rng: &mut impl Rng) -> Result<()> {
        let max_id = self.max_id;
        let from = rng.gen_range(1..=max_id);
        if let Some((bf, _)) = self.account(from).await? {
            let id = max_id + 1;
            self.set_account(from, bf - 100).await?;
            self.c
                .exec(&format!(
                    "INSERT INTO accounts VALUES ({id}, 100, 'acct-{id}')"
                ))
                .await?;
            self.effects
                .push(Effect::Account(id, Some((100, format!("acct-{id}")))));
        }
        Ok(())
    }

    async fn close(&mut self, rng: &mut impl Rng) -> Result<()> {
        let max_id = self.max_id;
        let (a, b) = (rng.gen_range(1..=max_id), rng.gen_range(1..=max_id));
        if a == b {
            return Ok(());
        }
        if let (Some((ba, _)), Some((bb, _))) = (self.account(a).await?, self.account(b).await?) {
            self.set_account(b, bb + ba).await?;
            self.c
                .exec(&format!("DELETE FROM accounts WHERE id = {a}"))
                .await?;
            self.effects.push(Effect::Account(a, None));
        }
        Ok(())
    }

    async fn edit(&mut self, rng: &mut impl Rng) -> Result<()> {
        let id = rng.gen_range(1..=DOCS);
        let g = self
            .c
            .int(&format!("SELECT gen FROM docs WHERE id = {id}"))
            .await?
            + 1;
        self.c
            .exec(&format!(
                "UPDATE docs SET gen = {g}, body = '{}' WHERE id = {id}",
                body(id, g)
            ))
            .await?;
        self.effects.push(Effect::Doc(id, g));
        self.counters.1 += 1;
        Ok(())
    }

    async fn remove_tag(&mut self, name: &str) -> Result<()> {
        let present = self
            .c
            .int(&format!(
                "SELECT CAST(count(*) AS BIGINT) FROM tags WHERE name = '{name}'"
            ))
            .await?;
        if present == 0 {
            return Ok(());
        }
        self.c
            .exec(&format!("DELETE FROM tags WHERE name = '{name}'"))
            .await?;
        self.effects.push(Effect::Tag(name.to_string(), None));
        self.counters.2 -= 1;
        Ok(())
    }

    async fn tag(&mut self, rng: &mut impl Rng) -> Result<()> {
        let existing = self
            .c
            .strings("SELECT name FROM tags ORDER BY name")
            .await?;
        match rng.gen_range(0..3) {
            0 => {
                let name = format!("tag-{}", self.n);
                self.c
                    .exec(&format!("INSERT INTO tags VALUES ('{name}', 0)"))
                    .await?;
                self.effects.push(Effect::Tag(name, Some(0)));
                self.counters.2 += 1;
            }
            // Writers remove only their own (lowercase) tags: `Tag-Capital` comes and goes
            // when the test says so.
            1 if existing.iter().any(|n| n.starts_with('t')) => {
                let own: Vec<&String> = existing.iter().filter(|n| n.starts_with('t')).collect();
                let name = own[rng.gen_range(0..own.len())].clone();
                self.remove_tag(&name).await?;
            }
            _ if !existing.is_empty() => {
                let name = existing[rng.gen_range(0..existing.len())].clone();
                let uses = self
                    .c
                    .int(&format!("SELECT uses FROM tags WHERE name = '{name}'"))
                    .await?
                    + 1;
                self.c
                    .exec(&format!(
                        "UPDATE tags SET uses = {uses} WHERE name = '{name}'"
                    ))
                    .await?;
                self.effects.push(Effect::Tag(name, Some(uses)));
            }
            _ => {}
        }
        Ok(())
    }
}

/// One transaction (inside BEGIN): takes the clock, then one kind of change, or a big
/// one touching every table. Returns its clock and effects.
async fn transaction(c: &mut Conn, rng: &mut impl Rng) -> Result<(i64, Vec<Effect>)> {
    let mut tx = Tx::begin(c).await?;
    match rng.gen_range(0..20) {
        0..=5 => tx.transfer(rng).await?,
        6..=9 => tx.deposit(rng).await?,
        10 => tx.open(rng).await?,
        11 => tx.close(rng).await?,
        12..=15 => tx.edit(rng).await?,
        16..=18 => tx.tag(rng).await?,
        _ => {
            // A large transaction across every table.
            for _ in 0..20 {
                tx.transfer(rng).await?;
            }
            for _ in 0..5 {
                tx.deposit(rng).await?;
            }
            tx.edit(rng).await?;
            tx.tag(rng).await?;
        }
    }
    tx.finish().await
}

impl<'a> Tx<'a> {
    /// Takes the clock (and with it the right to commit next) and reads the counters.
    async fn begin(c: &'a mut Conn) -> Result<Tx<'a>> {
        let n = c
            .int("UPDATE clock SET n = n + 1 WHERE id = 1 RETURNING n")
            .await?;
        let counters = read_counters(c).await?;
        let max_id = c
            .int("SELECT CAST(max(id) AS BIGINT) FROM accounts")
            .await?;
        Ok(Tx {
            c,
            n,
            effects: Vec::new(),
            counters: (counters[0], counters[1], counters[2]),
            start: counters,
            max_id,
        })
    }

    /// Writes the counters if they changed; returns the clock and the effects.
    async fn finish(mut self) -> Result<(i64, Vec<Effect>)> {
        let [d0, e0, t0] = self.start;
        if self.counters != (d0, e0, t0) {
            let (d, e, t) = self.counters;
            self.c
                .exec(&format!(
                    "UPDATE counters SET deposits = {d}, edits = {e}, tags = {t} WHERE id = 1"
                ))
                .await?;
            self.effects.push(Effect::Counters(d, e, t));
        }
        Ok((self.n, self.effects))
    }
}
