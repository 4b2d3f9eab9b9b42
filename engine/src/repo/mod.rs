//! The repository: config, keys, packs, indexes and snapshots (format: see the crate
//! docs).

pub mod cache;
pub mod crypto;
pub mod lock;
pub mod storage;

use crate::chunker::ChunkerParams;
use crate::model::{Snapshot, SnapshotId};
use crate::secret::Secret;
use crate::{Error, Result};
use crypto::{KdfParams, KeyFile, Keys, hex};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
pub use storage::Storage;

/// The repository format this build creates. Format 1 repositories (every table's
/// checksum the BLAKE3 of its whole stream) are still read and written, in format 1's
/// form, so that an older tablesafe sharing one keeps reading it (crate docs).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest repository format this build reads.
pub const OLDEST_FORMAT: u32 = 1;

/// A pack id and its (chunk id, offset, length) entries.
pub type IndexEntries = ([u8; 32], Vec<([u8; 32], u64, u32)>);

/// Chunks a writer stored, with where they went.
pub type Written = Vec<([u8; 32], Location)>;
const PACK_TARGET: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub format: u32,
    pub id: String,
    pub created_ms: i64,
    pub encryption: Encryption,
    pub compression: Compression,
    pub zstd_level: i32,
    pub chunker: ChunkerParams,
}

/// How a repository's objects are sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encryption {
    /// Not encrypted (chunk ids still keyed, objects still authenticated by hash).
    #[serde(rename = "none")]
    None,
    /// XChaCha20-Poly1305 under keys unwrapped by the password (Argon2id).
    #[serde(rename = "xchacha20poly1305")]
    XChaCha20Poly1305,
    /// Written by a newer version: refused with its name.
    #[serde(untagged)]
    Unknown(String),
}

/// How chunks are compressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    #[serde(rename = "zstd")]
    Zstd,
    #[serde(untagged)]
    Unknown(String),
}

/// How to create a repository.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// `None` creates an unencrypted repository; callers must have asked the user.
    pub password: Option<Secret<String>>,
    pub kdf: KdfParams,
    pub chunker: ChunkerParams,
    pub zstd_level: i32,
}

impl InitOptions {
    pub fn encrypted(password: Secret<String>) -> Self {
        Self {
            password: Some(password),
            kdf: KdfParams::default(),
            chunker: ChunkerParams::default(),
            zstd_level: 3,
        }
    }
    pub fn unencrypted() -> Self {
        Self {
            password: None,
            kdf: KdfParams::default(),
            chunker: ChunkerParams::default(),
            zstd_level: 3,
        }
    }
}

/// Where a chunk lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: [u8; 32],
    pub offset: u64,
    pub length: u32,
}

/// `hints/<source>/<snapshot id>`: the packs a source's latest snapshot uses
/// ([`Repository::prepare_backup`]).
#[derive(Debug, Serialize, Deserialize)]
struct Hint {
    snapshot: String,
    packs: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexFile {
    pack: String,
    /// (chunk id hex, offset, length)
    chunks: Vec<(String, u64, u32)>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn pack_path(id: &[u8; 32]) -> String {
    let h = hex(id);
    format!("data/{}/{h}", &h[..2])
}

pub fn parse_id(s: &str) -> Option<[u8; 32]> {
    crypto::unhex(s).and_then(|v| v.try_into().ok())
}

/// An open repository with its chunk index in memory.
pub struct Repository {
    pub storage: Storage,
    pub config: Config,
    keys: Keys,
    index: Arc<HashMap<[u8; 32], Location>>,
    /// Packs a prune has marked for deletion: new data must not be deduplicated against
    /// them (crate docs, "Concurrency").
    condemned: Arc<std::collections::HashSet<[u8; 32]>>,
    /// The local cache of manifests and index files ([`cache`]), if any.
    cache: Option<Arc<cache::ObjectCache>>,
    /// Set by [`Repository::prepare_backup`] when it found the source's latest snapshot
    /// through its hint: the only chunks new data may be deduplicated against (those of
    /// packs known to exist since the backup's lock, and what the backup writes).
    trusted: Option<Arc<HashMap<[u8; 32], Location>>>,
    /// What [`Repository::prepare_backup`] found: the source and its latest snapshot.
    prepared: Option<(String, Option<(SnapshotId, Snapshot)>)>,
}

/// A prune's list of packs no snapshot referenced (`gc/<id>`), and the lock owners that
/// were live when it was written (`None`: the prune stopped before it knew).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcRecord {
    pub time_ms: i64,
    pub packs: Vec<String>,
    pub owners: Option<Vec<String>>,
}

impl Repository {
    /// Creates a repository at `location`; fails if one exists there.
    pub async fn init(location: &str, opts: InitOptions) -> Result<Repository> {
        Self::init_in(Storage::open(location)?, opts).await
    }

    /// Creates a repository in an opened storage (a target with stored credentials).
    pub async fn init_in(storage: Storage, opts: InitOptions) -> Result<Repository> {
        if storage.exists("config").await? {
            return Err(Error::RepositoryExists(storage.display.clone()));
        }
        opts.chunker.check().map_err(Error::invalid)?;
        let master = crypto::random_master();
        let encrypted = opts.password.is_some();
        if let Some(password) = &opts.password {
            let kf = KeyFile::wrap(&master, password, opts.kdf, now_ms())?;
            let bytes = serde_json::to_vec_pretty(&kf).map_err(|e| Error::Other(e.to_string()))?;
            let id = hex(blake3::hash(&bytes).as_bytes());
            storage.put(&format!("keys/{id}"), bytes).await?;
        } else {
            // Unencrypted: the master secret only derives chunk ids, so it may be public.
            storage
                .put("keys/plaintext", hex(master.expose()).into_bytes())
                .await?;
        }
        let config = Config {
            format: FORMAT_VERSION,
            id: hex(&crypto::random_master().expose()[..16]),
            created_ms: now_ms(),
            encryption: if encrypted {
                Encryption::XChaCha20Poly1305
            } else {
                Encryption::None
            },
            compression: Compression::Zstd,
            zstd_level: opts.zstd_level,
            chunker: opts.chunker,
        };
        // config last: a repository exists once its config does.
        let bytes = serde_json::to_vec_pretty(&config).map_err(|e| Error::Other(e.to_string()))?;
        storage.put("config", bytes).await?;
        let keys = Keys::from_master(&master, encrypted);
        let cache = cache::ObjectCache::default_for(&config.id, &keys).map(Arc::new);
        Ok(Repository {
            storage,
            config,
            keys,
            index: Arc::default(),
            condemned: Arc::default(),
            cache,
            trusted: None,
            prepared: None,
        })
    }

    pub async fn exists(location: &str) -> Result<bool> {
        Storage::open(location)?.exists("config").await
    }

    /// Whether an opened storage holds a repository.
    pub async fn exists_in(storage: &Storage) -> Result<bool> {
        storage.exists("config").await
    }

    /// Opens a repository and loads its index. `password` is required when the
    /// repository is encrypted.
    pub async fn open(location: &str, password: Option<&Secret<String>>) -> Result<Repository> {
        Self::open_in(Storage::open(location)?, password).await
    }

    /// Opens the repository in an opened storage (a target with stored credentials).
    pub async fn open_in(
        storage: Storage,
        password: Option<&Secret<String>>,
    ) -> Result<Repository> {
        let mut repo = Self::open_in_lazy(storage, password).await?;
        repo.load_index().await?;
        Ok(repo)
    }

    /// Opens a repository without loading its index: for a backup, which loads what it
    /// needs after taking its lock ([`crate::backup::backup`]). Anything else needs
    /// [`Repository::open`] (or [`Repository::load_index`] first).
    pub async fn open_lazy(
        location: &str,
        password: Option<&Secret<String>>,
    ) -> Result<Repository> {
        Self::open_in_lazy(Storage::open(location)?, password).await
    }

    /// [`Repository::open_lazy`] in an opened storage.
    pub async fn open_in_lazy(
        storage: Storage,
        password: Option<&Secret<String>>,
    ) -> Result<Repository> {
        if !storage.exists("config").await? {
            return Err(Error::NoRepository(storage.display.clone()));
        }
        let bytes = storage.get("config").await?;
        // The format number is read alone first: a newer format may add fields that
        // this build's `Config` (deny_unknown_fields) would call damage, and the user
        // must hear "upgrade tablesafe", not "damaged repository".
        #[derive(Deserialize)]
        struct FormatOnly {
            format: u32,
        }
        let FormatOnly { format } = serde_json::from_slice(&bytes)
            .map_err(|e| Error::damaged(format!("config of {}: {e}", storage.display)))?;
        if !(OLDEST_FORMAT..=FORMAT_VERSION).contains(&format) {
            return Err(Error::UnsupportedFormat {
                repo: storage.display.clone(),
                found: format,
                supported: FORMAT_VERSION,
            });
        }
        let config: Config = serde_json::from_slice(&bytes)
            .map_err(|e| Error::damaged(format!("config of {}: {e}", storage.display)))?;
        if let Compression::Unknown(other) = &config.compression {
            return Err(Error::damaged(format!(
                "unknown compression {other:?} in config"
            )));
        }
        config
            .chunker
            .check()
            .map_err(|e| Error::damaged(format!("config of {}: {e}", storage.display)))?;
        let keys = match &config.encryption {
            Encryption::None => {
                let text = storage.get("keys/plaintext").await?;
                let master = std::str::from_utf8(&text)
                    .ok()
                    .and_then(parse_id)
                    .ok_or_else(|| Error::damaged("keys/plaintext"))?;
                Keys::from_master(&Secret::new(master), false)
            }
            Encryption::XChaCha20Poly1305 => {
                let password = password.ok_or_else(|| {
                    Error::invalid(format!(
                        "repository {} is encrypted: give its password in TABLESAFE_PASSWORD or --password-file",
                        storage.display
                    ))
                })?;
                let mut found = None;
                for path in storage.list("keys").await? {
                    let kf: KeyFile = match serde_json::from_slice(&storage.get(&path).await?) {
                        Ok(kf) => kf,
                        Err(_) => continue,
                    };
                    let password = password.clone();
                    let master = tokio::task::spawn_blocking(move || kf.unwrap_with(&password))
                        .await
                        .map_err(|e| Error::Other(e.to_string()))??;
                    if let Some(m) = master {
                        found = Some(m);
                        break;
                    }
                }
                let master = found.ok_or_else(|| Error::WrongPassword {
                    repo: storage.display.clone(),
                })?;
                Keys::from_master(&master, true)
            }
            Encryption::Unknown(other) => {
                return Err(Error::damaged(format!(
                    "unknown encryption {other:?} in config"
                )));
            }
        };
        let cache = cache::ObjectCache::default_for(&config.id, &keys).map(Arc::new);
        Ok(Repository {
            storage,
            config,
            keys,
            index: Arc::default(),
            condemned: Arc::default(),
            cache,
            trusted: None,
            prepared: None,
        })
    }

    /// Uses the local cache under `root` ([`cache`]), or none.
    pub fn set_cache_dir(&mut self, root: Option<&std::path::Path>) -> Result<()> {
        self.cache = match root {
            Some(root) => Some(Arc::new(
                cache::ObjectCache::open(root, &self.config.id, &self.keys)
                    .map_err(Error::invalid)?,
            )),
            None => None,
        };
        Ok(())
    }

    /// The local cache's directory for this repository, if it has one.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache.as_deref().map(|c| c.dir())
    }

    /// Reads every index file. A damaged index file is reported, not skipped silently:
    /// the chunks it maps would otherwise look missing.
    pub async fn load_index(&mut self) -> Result<()> {
        // Marks first: where a chunk is in two packs, the one no prune marked is used,
        // so that a sweep of the marked copy cannot pull it from under a reader.
        let mut condemned = std::collections::HashSet::new();
        for (_, record) in self.gc_records().await? {
            condemned.extend(record.packs.iter().filter_map(|p| parse_id(p)));
        }
        let mut index: HashMap<[u8; 32], Location> = HashMap::new();
        let listed = self.storage.list("index").await?;
        if let Some(c) = &self.cache {
            c.retain("index", &listed.iter().map(|p| object_name(p)).collect());
        }
        for path in listed {
            let (pack, chunks) = match self.read_index_file(&path).await? {
                Some(v) => v,
                // Deleted by a prune between the listing and the read.
                None => continue,
            };
            for (id, offset, length) in chunks {
                let loc = Location {
                    pack,
                    offset,
                    length,
                };
                match index.entry(id) {
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(loc);
                    }
                    std::collections::hash_map::Entry::Occupied(mut e) => {
                        if condemned.contains(&e.get().pack) && !condemned.contains(&pack) {
                            e.insert(loc);
                        }
                    }
                }
            }
        }
        self.index = Arc::new(index);
        self.condemned = Arc::new(condemned);
        self.trusted = None;
        self.prepared = None;
        Ok(())
    }

    /// One index file: its pack and (chunk, offset, length) entries; `None` if it is gone.
    /// Read through the local cache: call it for a path the target listed.
    pub async fn read_index_file(&self, path: &str) -> Result<Option<IndexEntries>> {
        if let Some(c) = &self.cache
            && let Some(sealed) = c.get(path)
            && let Ok(entries) = self.parse_index_file(path, &sealed)
        {
            return Ok(Some(entries));
        }
        let entries = self.read_index_file_fresh(path).await?;
        Ok(entries.map(|(entries, sealed)| {
            if let Some(c) = &self.cache {
                c.put(path, &sealed);
            }
            entries
        }))
    }

    /// One index file read from the target (never the cache), with its sealed bytes.
    async fn read_index_file_fresh(&self, path: &str) -> Result<Option<(IndexEntries, Vec<u8>)>> {
        let sealed = match self.storage.get(path).await {
            Ok(b) => b,
            Err(Error::Damaged(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some((self.parse_index_file(path, &sealed)?, sealed)))
    }

    fn parse_index_file(&self, path: &str, sealed: &[u8]) -> Result<IndexEntries> {
        let plain = self.keys.open(sealed, &path.to_string())?;
        let file: IndexFile =
            serde_json::from_slice(&plain).map_err(|e| Error::damaged(format!("{path}: {e}")))?;
        let pack =
            parse_id(&file.pack).ok_or_else(|| Error::damaged(format!("{path}: bad pack id")))?;
        let mut chunks = Vec::with_capacity(file.chunks.len());
        for (id, offset, length) in file.chunks {
            let id =
                parse_id(&id).ok_or_else(|| Error::damaged(format!("{path}: bad chunk id")))?;
            chunks.push((id, offset, length));
        }
        Ok((pack, chunks))
    }

    /// The pending garbage-collection records, with their object paths.
    pub async fn gc_records(&self) -> Result<Vec<(String, GcRecord)>> {
        let mut out = Vec::new();
        for path in self.storage.list("gc").await? {
            match self.storage.get(&path).await {
                Ok(bytes) => {
                    let record: GcRecord = serde_json::from_slice(&bytes)
                        .map_err(|e| Error::damaged(format!("{path}: {e}")))?;
                    out.push((path, record));
                }
                Err(Error::Damaged(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Prepares a backup of `source` (its URL as manifests record it) under the backup's
    /// lock: reads prune's marks, finds the source's latest snapshot (the parent, see
    /// [`Repository::prepared_latest`]) and loads the index entries the backup needs.
    ///
    /// The quick way does the same few reads whatever the number of snapshots: the
    /// source's *hint* `hints/<keyed hash of the source>/<snapshot id>`, left by its
    /// previous backup, names that snapshot and the packs its chunks are in. A hint is
    /// checked, never trusted: it is authenticated like every sealed object; its
    /// manifest is read from the target (so it exists, is genuine and matches its name)
    /// and must be of this source; each pack's index file is read from the target, not
    /// the cache, and together they must locate every chunk the manifest references.
    /// Those packs exist after this backup's lock and are not in a mark it read, so no
    /// prune sweeps them while it runs (crate docs, "Concurrency"): new data is then
    /// deduplicated against them only (and what this backup writes), never against an
    /// index entry that could be stale. A hint cannot make a wrong backup either: any
    /// snapshot of the source is a correct parent (a delta is computed against the
    /// parent's own rows, and the checksum of the full stream is checked on restore), so
    /// a stale or replayed hint only makes a larger delta.
    ///
    /// Without a usable hint (first backup, hint of a pruned snapshot, a backup by an
    /// older tablesafe), the slow way: every index file, every snapshot, as before.
    pub async fn prepare_backup(&mut self, source: &str) -> Result<()> {
        let mut condemned = std::collections::HashSet::new();
        for (_, record) in self.gc_records().await? {
            condemned.extend(record.packs.iter().filter_map(|p| parse_id(p)));
        }
        match self.hinted_latest(source).await? {
            Some((id, snapshot, entries)) => {
                let index = Arc::make_mut(&mut self.index);
                let mut trusted = HashMap::new();
                for (pack, chunks) in entries {
                    for (chunk, offset, length) in chunks {
                        let loc = Location {
                            pack,
                            offset,
                            length,
                        };
                        if !condemned.contains(&pack) {
                            trusted.insert(chunk, loc);
                        }
                        match index.entry(chunk) {
                            std::collections::hash_map::Entry::Vacant(e) => {
                                e.insert(loc);
                            }
                            std::collections::hash_map::Entry::Occupied(mut e) => {
                                if !condemned.contains(&pack) {
                                    e.insert(loc);
                                }
                            }
                        }
                    }
                }
                self.condemned = Arc::new(condemned);
                self.trusted = Some(Arc::new(trusted));
                self.prepared = Some((source.to_string(), Some((id, snapshot))));
            }
            None => {
                self.load_index().await?;
                let latest = self
                    .snapshots()
                    .await?
                    .into_iter()
                    .filter(|(_, s)| s.source.url == source)
                    .max_by_key(|(_, s)| s.time_ms);
                self.prepared = Some((source.to_string(), latest));
            }
        }
        Ok(())
    }

    /// The latest snapshot of `source` that [`Repository::prepare_backup`] found;
    /// `None` if it was not prepared for that source.
    pub fn prepared_latest(&self, source: &str) -> Option<Option<&(SnapshotId, Snapshot)>> {
        match &self.prepared {
            Some((s, latest)) if s == source => Some(latest.as_ref()),
            _ => None,
        }
    }

    /// Whether the last [`Repository::prepare_backup`] went the quick way (its hint held).
    pub fn prepared_from_hint(&self) -> bool {
        self.trusted.is_some()
    }

    fn hint_dir(&self, source: &str) -> String {
        format!("hints/{}", cache::hint_name(&self.keys, source))
    }

    /// The newest snapshot of `source` a valid hint names, with the index files of the
    /// packs it uses (read from the target); `None` when no hint holds.
    async fn hinted_latest(
        &self,
        source: &str,
    ) -> Result<Option<(SnapshotId, Snapshot, Vec<IndexEntries>)>> {
        // Damage of any kind in a hint (or what it names) sends the backup the slow
        // way, which reports real damage where it is.
        fn soft<T>(r: Result<T>) -> Result<Option<T>> {
            match r {
                Ok(v) => Ok(Some(v)),
                Err(Error::Damaged(_) | Error::SnapshotNotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        }
        let mut best: Option<(String, Snapshot, Vec<String>)> = None;
        for path in self.storage.list(&self.hint_dir(source)).await? {
            let name = object_name(&path);
            let Some(sealed) = soft(self.storage.get(&path).await)? else {
                continue;
            };
            let Some(plain) = soft(self.keys.open(&sealed, &path))? else {
                continue;
            };
            let Ok(hint) = serde_json::from_slice::<Hint>(&plain) else {
                continue;
            };
            if hint.snapshot != name {
                continue;
            }
            let Some(snapshot) = soft(self.load_snapshot_by_id(&name).await)? else {
                continue;
            };
            if snapshot.source.url != source {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|(id, b, _)| (snapshot.time_ms, &name) > (b.time_ms, id))
            {
                best = Some((name, snapshot, hint.packs));
            }
        }
        let Some((id, snapshot, packs)) = best else {
            return Ok(None);
        };
        let mut entries = Vec::new();
        let mut located = std::collections::HashSet::new();
        for pack in &packs {
            let Some(pack_id) = parse_id(pack) else {
                return Ok(None);
            };
            let path = format!("index/{pack}");
            let Some(Some(((p, chunks), sealed))) = soft(self.read_index_file_fresh(&path).await)?
            else {
                return Ok(None);
            };
            if p != pack_id {
                return Ok(None);
            }
            if let Some(c) = &self.cache {
                c.put(&path, &sealed);
            }
            located.extend(chunks.iter().map(|(c, _, _)| *c));
            entries.push((p, chunks));
        }
        let complete = snapshot
            .tables
            .iter()
            .flat_map(|t| t.all_chunks())
            .all(|c| located.contains(&c.0));
        Ok(complete.then(|| (SnapshotId::new(id), snapshot, entries)))
    }

    /// Leaves the hint [`Repository::prepare_backup`] follows to snapshot `id` of
    /// `source` (just saved: [`Repository::save_snapshot`] removed the earlier hints).
    /// Best effort: without a hint the next backup goes the slow way.
    pub async fn save_hint(&self, source: &str, id: &SnapshotId, snapshot: &Snapshot) {
        let dir = self.hint_dir(source);
        let mut packs = std::collections::BTreeSet::new();
        for c in snapshot.tables.iter().flat_map(|t| t.all_chunks()) {
            match self.location(&c.0) {
                Some(l) => packs.insert(hex(&l.pack)),
                None => return,
            };
        }
        let hint = Hint {
            snapshot: id.to_string(),
            packs: packs.into_iter().collect(),
        };
        let Ok(plain) = serde_json::to_vec(&hint) else {
            return;
        };
        let Ok(sealed) = self.keys.seal(&plain) else {
            return;
        };
        let _ = self.storage.put(&format!("{dir}/{id}"), sealed).await;
    }

    /// Takes a lock on the repository (crate docs, "Concurrency").
    pub async fn lock(&self, kind: lock::LockKind, operation: &str) -> Result<lock::Lock> {
        lock::Lock::acquire(&self.storage, kind, operation).await
    }

    /// Whether new data may be deduplicated against this existing chunk.
    pub fn can_reuse(&self, id: &[u8; 32]) -> bool {
        self.trusted
            .as_deref()
            .unwrap_or(&self.index)
            .get(id)
            .is_some_and(|l| !self.condemned.contains(&l.pack))
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn location(&self, id: &[u8; 32]) -> Option<Location> {
        self.index.get(id).copied()
    }

    pub fn chunk_count(&self) -> usize {
        self.index.len()
    }

    /// Reads, decrypts, decompresses and checks one chunk. Neither what is read nor what
    /// it decompresses to may exceed what the largest chunk of this repository takes
    /// ([`decode_blob`]).
    pub async fn read_chunk(&self, id: &[u8; 32]) -> Result<Vec<u8>> {
        let loc = self
            .location(id)
            .ok_or_else(|| Error::damaged(format!("chunk {} is in no index", short(id))))?;
        let max_chunk = self.config.chunker.max_chunk();
        let max_sealed = sealed_bound(max_chunk);
        if u64::from(loc.length) > max_sealed {
            return Err(Error::damaged(format!(
                "damaged chunk {}: its index entry gives it {} bytes, more than any chunk of \
                 this repository takes (at most {max_sealed}); it was not read",
                short(id),
                loc.length
            )));
        }
        let path = pack_path(&loc.pack);
        let sealed = self
            .storage
            .get_range(&path, loc.offset, u64::from(loc.length))
            .await?;
        let keys = self.keys.clone();
        let id = *id;
        tokio::task::spawn_blocking(move || decode_blob(&keys, &id, &sealed, max_chunk))
            .await
            .map_err(|e| Error::Other(e.to_string()))?
    }

    /// Reads a whole pack and checks that its bytes match its name.
    pub async fn check_pack(&self, pack: &[u8; 32]) -> Result<()> {
        let path = pack_path(pack);
        let bytes = self.storage.get(&path).await?;
        if blake3::hash(&bytes).as_bytes() != pack {
            return Err(Error::damaged(format!(
                "pack {} does not match its checksum",
                short(pack)
            )));
        }
        Ok(())
    }

    pub async fn pack_size(&self, pack: &[u8; 32]) -> Result<u64> {
        self.storage.size(&pack_path(pack)).await
    }

    pub fn pack_writer(&self) -> PackWriter {
        PackWriter {
            storage: self.storage.clone(),
            keys: self.keys.clone(),
            zstd_level: self.config.zstd_level,
            max_chunk: self.config.chunker.max_chunk(),
            buf: Vec::new(),
            entries: Vec::new(),
            pending: Default::default(),
            written: Vec::new(),
            bytes_stored: 0,
        }
    }

    /// Adds the chunks a finished [`PackWriter`] wrote to the in-memory index.
    pub fn absorb(&mut self, written: Vec<([u8; 32], Location)>) {
        if let Some(trusted) = &mut self.trusted {
            Arc::make_mut(trusted).extend(written.iter().copied());
        }
        Arc::make_mut(&mut self.index).extend(written);
    }

    /// A read-only view of the index for a worker thread.
    pub fn index_view(&self) -> Arc<HashMap<[u8; 32], Location>> {
        self.index.clone()
    }

    /// The chunks new data may be deduplicated against: the index without condemned
    /// packs.
    pub fn dedup_view(&self) -> Arc<HashMap<[u8; 32], Location>> {
        let index = self.trusted.as_ref().unwrap_or(&self.index);
        if self.condemned.is_empty() {
            return index.clone();
        }
        Arc::new(
            index
                .iter()
                .filter(|(_, l)| !self.condemned.contains(&l.pack))
                .map(|(k, v)| (*k, *v))
                .collect(),
        )
    }

    /// Deletes packs (and their index files first) that a failed backup wrote and no
    /// snapshot references. Best effort; prune collects anything left.
    pub async fn discard_packs(&mut self, packs: &[[u8; 32]]) {
        let packs: std::collections::BTreeSet<[u8; 32]> = packs.iter().copied().collect();
        delete_packs(&self.storage, &packs).await;
        Arc::make_mut(&mut self.index).retain(|_, loc| !packs.contains(&loc.pack));
    }

    /// Stores a snapshot manifest (the last write of a backup) and returns its id: the
    /// BLAKE3 of its stored bytes, checked again whenever it is read.
    pub async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<SnapshotId> {
        let plain = serde_json::to_vec(snapshot).map_err(|e| Error::Other(e.to_string()))?;
        let sealed = self.keys.seal(&plain)?;
        let id = hex(blake3::hash(&sealed).as_bytes());
        let path = format!("snapshots/{id}");
        self.storage.put(&path, sealed.clone()).await?;
        if let Some(c) = &self.cache {
            c.put(&path, &sealed);
        }
        // A snapshot written other than by a backup of its source (a copy, a repair) may
        // be newer than what the source's hint names: the hints go, so the next backup
        // looks at every snapshot (a backup writes its own hint next, `save_hint`).
        // Best effort: a hint left behind only names an older parent.
        if let Ok(hints) = self
            .storage
            .list(&self.hint_dir(&snapshot.source.url))
            .await
        {
            for h in hints {
                self.storage.delete_best_effort(&h).await;
            }
        }
        Ok(SnapshotId::new(id))
    }

    /// Stores a change segment manifest (the last write of a capture round).
    pub async fn save_change_segment(&self, seg: &crate::model::ChangeSegment) -> Result<String> {
        let plain = serde_json::to_vec(seg).map_err(|e| Error::Other(e.to_string()))?;
        let sealed = self.keys.seal(&plain)?;
        let id = hex(blake3::hash(&sealed).as_bytes());
        self.storage.put(&format!("changes/{id}"), sealed).await?;
        Ok(id)
    }

    /// Every change segment, in no particular order.
    pub async fn change_segments(&self) -> Result<Vec<(String, crate::model::ChangeSegment)>> {
        let mut out = Vec::new();
        for path in self.storage.list("changes").await? {
            let id = path.rsplit('/').next().unwrap_or(&path).to_string();
            let sealed = match self.storage.get(&format!("changes/{id}")).await {
                Ok(s) => s,
                // Removed by a prune since it was listed.
                Err(Error::Damaged(_)) => continue,
                Err(e) => return Err(e),
            };
            check_name(&sealed, &id, "change segment")?;
            let plain = self.keys.open(&sealed, &format!("change segment {id}"))?;
            let seg = serde_json::from_slice(&plain)
                .map_err(|e| Error::damaged(format!("change segment {id}: {e}")))?;
            out.push((id, seg));
        }
        Ok(out)
    }

    /// A manifest the target has just listed, read through the local cache: a cached
    /// manifest is checked like one read from the target (name, then authentication).
    async fn load_listed_snapshot(&self, id: &str) -> Result<Snapshot> {
        let path = format!("snapshots/{id}");
        if let Some(c) = &self.cache
            && let Some(sealed) = c.get(&path)
        {
            match self.parse_snapshot(id, &sealed) {
                Ok(s) => return Ok(s),
                Err(_) => c.remove(&path),
            }
        }
        self.load_snapshot_by_id(id).await
    }

    /// A manifest read from the target (never from the cache: the snapshot exists now).
    pub async fn load_snapshot_by_id(&self, id: &str) -> Result<Snapshot> {
        let path = format!("snapshots/{id}");
        let sealed = self.storage.get(&path).await.map_err(|e| match e {
            Error::Damaged(_) => Error::SnapshotNotFound(id.to_string()),
            e => e,
        })?;
        let snapshot = self.parse_snapshot(id, &sealed)?;
        if let Some(c) = &self.cache {
            c.put(&path, &sealed);
        }
        Ok(snapshot)
    }

    fn parse_snapshot(&self, id: &str, sealed: &[u8]) -> Result<Snapshot> {
        // A manifest's name is the hash of its bytes: an older manifest copied over
        // a newer one's name (to bring back what was pruned, or hide a newer snapshot)
        // is refused, not read as that snapshot.
        check_name(sealed, id, "snapshot")?;
        let plain = self.keys.open(sealed, &format!("snapshot {id}"))?;
        serde_json::from_slice(&plain).map_err(|e| Error::damaged(format!("snapshot {id}: {e}")))
    }

    /// All snapshots, oldest first.
    pub async fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let mut out = Vec::new();
        let listed = self.storage.list("snapshots").await?;
        if let Some(c) = &self.cache {
            c.retain(
                "snapshots",
                &listed.iter().map(|p| object_name(p)).collect(),
            );
        }
        for path in listed {
            let id = path.rsplit('/').next().unwrap_or(&path).to_string();
            match self.load_listed_snapshot(&id).await {
                Ok(snap) => out.push((SnapshotId::new(id), snap)),
                // Listed, then forgotten by a prune running meanwhile (crate docs,
                // "Concurrency"): it is simply not there any more. Failing here made a
                // backup that lists snapshots to choose its parent fail whenever a
                // prune forgot one at that moment (seen in the many-backups-and-prunes
                // test).
                Err(Error::SnapshotNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.1.time_ms.cmp(&b.1.time_ms).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Resolves `latest`, a full id, or a unique prefix of at least 6 characters.
    pub async fn find_snapshot(&self, wanted: &str) -> Result<(SnapshotId, Snapshot)> {
        let all = self.snapshots().await?;
        if wanted == "latest" {
            return all.into_iter().last().ok_or_else(|| {
                Error::SnapshotNotFound("latest (the repository has no snapshot)".into())
            });
        }
        if wanted.len() < 6 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "{wanted:?} is not a snapshot id (use `latest` or at least 6 hex digits)"
            )));
        }
        let mut matches: Vec<_> = all
            .into_iter()
            .filter(|(id, _)| id.starts_with(&wanted.to_ascii_lowercase()))
            .collect();
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => Err(Error::SnapshotNotFound(wanted.to_string())),
            _ => Err(Error::invalid(format!(
                "snapshot id {wanted} is ambiguous; give more digits"
            ))),
        }
    }
}

/// Deletes packs and their index files, the index files first so that no index ever
/// names a missing pack. Best effort: what fails to go, prune collects later.
pub async fn delete_packs(storage: &Storage, packs: &std::collections::BTreeSet<[u8; 32]>) {
    for pack in packs {
        storage
            .delete_best_effort(&format!("index/{}", hex(pack)))
            .await;
    }
    for pack in packs {
        storage.delete_best_effort(&pack_path(pack)).await;
    }
}

/// The last part of an object path.
fn object_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

pub fn short(id: &[u8; 32]) -> String {
    hex(&id[..6])
}

/// The most a sealed chunk of at most `max_chunk` bytes can take: zstd's worst case for
/// incompressible data, plus nonce and tag.
pub fn sealed_bound(max_chunk: usize) -> u64 {
    (zstd::zstd_safe::compress_bound(max_chunk) + crypto::NONCE_LEN + crypto::TAG_LEN) as u64
}

/// sealed blob → checked plaintext chunk, which may not decompress to more than
/// `max_chunk` bytes (the chunker's maximum: no chunk this repository wrote is larger).
pub fn decode_blob(keys: &Keys, id: &[u8; 32], sealed: &[u8], max_chunk: usize) -> Result<Vec<u8>> {
    let what = format!("chunk {}", short(id));
    let compressed = keys.open(sealed, &what)?;
    let plain = decompress_capped(&compressed, max_chunk)
        .map_err(|e| Error::damaged(format!("damaged {what}: {e}")))?;
    if &keys.chunk_id(&plain) != id {
        return Err(Error::damaged(format!("{what} has the wrong content")));
    }
    Ok(plain)
}

/// Decompresses a zstd blob (one frame or several) into at most `max` bytes, allocating
/// no more than that: a blob that would inflate further (a zstd bomb, planted by someone
/// holding the key or, in an unencrypted repository, by anyone who can write to the
/// storage; or damage) is refused, not decompressed. One-shot decompression writes
/// straight into the output buffer, so no separate window is allocated either.
///
/// Only chunks are compressed. Manifests, change segments and index files are sealed JSON
/// without compression, so reading one never takes more memory than its stored size.
pub fn decompress_capped(compressed: &[u8], max: usize) -> std::result::Result<Vec<u8>, String> {
    // What the first frame declares (a chunk this engine wrote is one frame that does):
    // a bomb that admits its size is refused before anything is allocated.
    let declared = zstd::zstd_safe::get_frame_content_size(compressed)
        .ok()
        .flatten();
    if let Some(n) = declared
        && n > max as u64
    {
        return Err(format!(
            "it declares {n} bytes, more than the {max} of the largest chunk this \
             repository's chunker makes; it was not decompressed"
        ));
    }
    let too_small = |e: &std::io::Error| e.to_string().contains("Destination buffer is too small");
    let decompress = |capacity: usize| {
        let mut out = Vec::with_capacity(capacity);
        zstd::bulk::Decompressor::new()
            .and_then(|mut d| d.decompress_to_buffer(compressed, &mut out))
            .map(|_| out)
    };
    let mut result = decompress(declared.map_or(max, |n| n as usize));
    if declared.is_some_and(|n| n < max as u64)
        && let Err(e) = &result
        && too_small(e)
    {
        // More frames after the first (never written by this engine, but valid zstd).
        result = decompress(max);
    }
    result.map_err(|e| {
        // zstd's name for "the output would not fit" (ZSTD_getErrorName).
        if too_small(&e) {
            format!(
                "it inflates to more than {max} bytes, the largest chunk this repository's \
                 chunker makes; decompression was stopped there"
            )
        } else {
            format!("it does not decompress: {e}")
        }
    })
}

/// Collects new chunks into packs and writes each pack, then its index file.
/// Used from a blocking worker thread; storage calls go through the runtime handle.
pub struct PackWriter {
    storage: Storage,
    keys: Keys,
    zstd_level: i32,
    /// The repository's largest chunk: a larger one would be refused when read back.
    max_chunk: usize,
    buf: Vec<u8>,
    entries: Vec<([u8; 32], u64, u32)>,
    /// Chunks added in this backup but not yet in the repository's index.
    pending: std::collections::HashSet<[u8; 32]>,
    written: Vec<([u8; 32], Location)>,
    pub bytes_stored: u64,
}

impl PackWriter {
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn is_pending(&self, id: &[u8; 32]) -> bool {
        self.pending.contains(id)
    }

    /// Compresses, encrypts and queues a chunk the repository does not have yet.
    pub fn add(&mut self, id: [u8; 32], plain: &[u8], rt: &tokio::runtime::Handle) -> Result<()> {
        let sealed = self.sealer().seal(&id, plain)?;
        self.add_sealed(id, sealed, rt)
    }

    /// What [`PackWriter::add`] does to a chunk before queueing it, detached from the
    /// writer so that several threads can compress and encrypt chunks at once.
    pub fn sealer(&self) -> Sealer {
        Sealer {
            keys: self.keys.clone(),
            zstd_level: self.zstd_level,
            max_chunk: self.max_chunk,
        }
    }

    /// Queues a blob made by [`Sealer::seal`].
    pub fn add_sealed(
        &mut self,
        id: [u8; 32],
        sealed: Vec<u8>,
        rt: &tokio::runtime::Handle,
    ) -> Result<()> {
        let offset = self.buf.len() as u64;
        self.buf.extend_from_slice(&sealed);
        self.entries.push((id, offset, sealed.len() as u32));
        self.pending.insert(id);
        if self.buf.len() >= PACK_TARGET {
            self.flush(rt)?;
        }
        Ok(())
    }
}

/// Compresses and encrypts chunks for a [`PackWriter`] (see [`PackWriter::sealer`]).
#[derive(Clone)]
pub struct Sealer {
    keys: Keys,
    zstd_level: i32,
    max_chunk: usize,
}

impl Sealer {
    /// The blob stored for chunk `id` (`plain`): zstd, then sealed.
    pub fn seal(&self, id: &[u8; 32], plain: &[u8]) -> Result<Vec<u8>> {
        if plain.len() > self.max_chunk {
            // Only a copy from a repository made with a larger chunker maximum can get
            // here; storing it would make a chunk every later read refuses.
            return Err(Error::invalid(format!(
                "chunk {} has {} bytes, more than this repository's largest chunk ({} bytes): \
                 it cannot be stored here (copy into a repository created with the same \
                 chunk sizes)",
                short(id),
                plain.len(),
                self.max_chunk
            )));
        }
        let compressed = zstd::bulk::compress(plain, self.zstd_level)
            .map_err(|e| Error::Other(format!("zstd: {e}")))?;
        self.keys.seal(&compressed)
    }
}

impl PackWriter {
    /// Writes the current pack and its index (in that order).
    pub fn flush(&mut self, rt: &tokio::runtime::Handle) -> Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.buf);
        let pack = *blake3::hash(&bytes).as_bytes();
        let size = bytes.len() as u64;
        rt.block_on(self.storage.put(&pack_path(&pack), bytes))?;
        let entries = std::mem::take(&mut self.entries);
        let file = IndexFile {
            pack: hex(&pack),
            chunks: entries.iter().map(|(id, o, l)| (hex(id), *o, *l)).collect(),
        };
        let plain = serde_json::to_vec(&file).map_err(|e| Error::Other(e.to_string()))?;
        let sealed = self.keys.seal(&plain)?;
        let index_size = sealed.len() as u64;
        if let Err(e) = rt.block_on(self.storage.put(&format!("index/{}", hex(&pack)), sealed)) {
            // The pack is useless without its index.
            let _ = rt.block_on(self.storage.delete(&pack_path(&pack)));
            return Err(e);
        }
        self.bytes_stored += size + index_size;
        self.written
            .extend(entries.into_iter().map(|(id, offset, length)| {
                (
                    id,
                    Location {
                        pack,
                        offset,
                        length,
                    },
                )
            }));
        Ok(())
    }

    /// Deletes what this writer stored (index files first, so no index ever names a
    /// missing pack): used when a backup fails, so that a full disk does not stay full
    /// of data no snapshot will reference. Best effort; prune collects anything left.
    pub fn discard(&mut self, rt: &tokio::runtime::Handle) {
        self.buf.clear();
        self.entries.clear();
        let packs: std::collections::BTreeSet<[u8; 32]> =
            self.written.iter().map(|(_, l)| l.pack).collect();
        rt.block_on(delete_packs(&self.storage, &packs));
        self.written.clear();
    }

    /// Flushes and returns the chunks written, for [`Repository::absorb`].
    pub fn finish(mut self, rt: &tokio::runtime::Handle) -> Result<(Written, u64)> {
        self.flush(rt)?;
        Ok((self.written, self.bytes_stored))
    }
}

/// Fails unless `sealed` is what an object named `id` holds (its name is the BLAKE3 of
/// its bytes).
fn check_name(sealed: &[u8], id: &str, what: &str) -> Result<()> {
    if hex(blake3::hash(sealed).as_bytes()) == id {
        Ok(())
    } else {
        Err(Error::damaged(format!(
            "{what} {id}: its content does not match its name (damaged, or another manifest copied under this name); restore from another snapshot or repair from a copy"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024 * 1024;

    #[test]
    fn a_chunk_up_to_the_maximum_decompresses() {
        for len in [0, 1, 300_000, MAX] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let z = zstd::bulk::compress(&plain, 3).unwrap();
            assert_eq!(decompress_capped(&z, MAX).unwrap(), plain);
        }
        // Two frames within the maximum together (valid zstd; this engine writes one).
        let mut two = zstd::bulk::compress(&[1u8; 1000], 3).unwrap();
        two.extend(zstd::bulk::compress(&[2u8; 1000], 3).unwrap());
        assert_eq!(decompress_capped(&two, MAX).unwrap().len(), 2000);
    }

    #[test]
    fn a_frame_declaring_more_than_the_maximum_is_refused_before_decompressing() {
        let z = zstd::bulk::compress(&vec![0u8; MAX + 1], 3).unwrap();
        let e = decompress_capped(&z, MAX).unwrap_err();
        assert!(e.contains("declares 1048577 bytes"), "{e}");
    }

    #[test]
    fn a_bomb_that_hides_its_size_is_stopped_at_the_maximum() {
        // No content size in the frame header, 64 MiB of zeros.
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_contentsize(false).unwrap();
        let zeros = vec![0u8; MAX];
        for _ in 0..64 {
            std::io::Write::write_all(&mut enc, &zeros).unwrap();
        }
        let z = enc.finish().unwrap();
        assert_eq!(zstd::zstd_safe::get_frame_content_size(&z).unwrap(), None);
        let e = decompress_capped(&z, MAX).unwrap_err();
        assert!(e.contains("inflates to more than 1048576 bytes"), "{e}");
        // Many small frames that each declare a size within the maximum.
        let frame = zstd::bulk::compress(&[0u8; 64 * 1024], 3).unwrap();
        let e = decompress_capped(&frame.repeat(1024), MAX).unwrap_err();
        assert!(e.contains("inflates to more than 1048576 bytes"), "{e}");
    }

    #[test]
    fn garbage_does_not_decompress() {
        let e = decompress_capped(b"not zstd at all", MAX).unwrap_err();
        assert!(e.contains("does not decompress"), "{e}");
    }

    #[test]
    fn chunker_sizes_outside_fastcdc_are_refused() {
        assert!(ChunkerParams::default().check().is_ok());
        let huge = ChunkerParams {
            max: 1 << 30,
            ..Default::default()
        };
        assert!(huge.check().unwrap_err().contains("max 1073741824"));
        let inverted = ChunkerParams {
            min: 512 * 1024, // more than avg
            ..Default::default()
        };
        assert!(inverted.check().is_err());
    }

    #[test]
    fn a_blob_larger_than_the_maximum_is_never_stored() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let loc = dir.path().join("r").to_str().unwrap().to_string();
        let repo = rt
            .block_on(Repository::init(&loc, InitOptions::unencrypted()))
            .unwrap();
        let mut w = repo.pack_writer();
        let big = vec![5u8; MAX + 1];
        let id = repo.keys().chunk_id(&big);
        let e = w.add(id, &big, rt.handle()).unwrap_err().to_string();
        assert!(
            e.contains("more than this repository's largest chunk"),
            "{e}"
        );
        assert!(w.add(id, &big[..MAX], rt.handle()).is_ok());
    }
}
