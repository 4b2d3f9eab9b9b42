//! # The tablesafe backup engine
//!
//! This crate is the part of tablesafe that touches user data: it reads table stores
//! (SQLite, PostgreSQL and MySQL/MariaDB), writes snapshots into a repository on a target
//! (through Apache OpenDAL: a local directory, an S3-compatible bucket or an SFTP server,
//! see [`repo::storage`]),
//! and reads them back for restore and verification. It knows nothing of the web console
//! or the command line: `server/` (the `tablesafe` binary) and `app/` adapt its plain
//! `*Options` structs and functions. The test command fails if a web or CLI crate ever
//! appears in this crate's dependency tree.
//!
//! ## Repository format, version 2 (and 1)
//!
//! A repository is a set of immutable objects under one root:
//!
//! ```text
//! config                 plaintext JSON: format version, repository id, chunker
//!                        parameters, compression, and how the master key is protected
//! keys/<id>              the master key wrapped by a password (Argon2id → XChaCha20-
//!                        Poly1305); several passwords = several key files
//! data/<ab>/<pack id>    packs: concatenated encrypted blobs (one blob = one chunk)
//! index/<id>             encrypted JSON: for each pack it lists, every chunk id with
//!                        its offset and length in that pack
//! snapshots/<id>         encrypted JSON manifest of one snapshot; <id> is the BLAKE3
//!                        of its stored bytes, checked on every read (an older
//!                        manifest copied under a newer one's name is refused)
//! locks/<owner>-<n>      plaintext JSON: who is using the repository (see Concurrency)
//! gc/<id>                plaintext JSON: packs a prune marked, and whom it waits for
//! hints/<src>/<id>       encrypted JSON: the packs snapshot <id> of a source uses, left
//!                        by its backup so the next one finds its parent without
//!                        reading every manifest (`<src>`: keyed hash of the source URL;
//!                        checked on use, never trusted: `Repository::prepare_backup`)
//! ```
//!
//! Every operation opens the repository through `Repository::open_in`, which reads
//! `config`'s `format` before anything else and refuses any other number (a newer one
//! with "upgrade tablesafe"), before reading keys, taking a lock or writing anything. A
//! change a reader of this version would misread bumps `repo::FORMAT_VERSION`.
//!
//! Format 2 differs from format 1 in one thing: a keyed table's checksum is the root of
//! a list of block sums (**Checksums** below) instead of the BLAKE3 of its whole stream,
//! and delta segments may hold range deletes. A format 1 reader would take that root
//! for a stream hash and call every such table damaged, hence the new number. This
//! build creates format 2 repositories and reads both; it keeps writing format 1's form
//! into a format 1 repository (an older tablesafe sharing it still reads everything),
//! so old repositories need no migration and stay readable and verifiable as they are
//! (they simply do not get the cheaper incrementals).
//!
//! **Chunks.** Each table's rows become a *canonical stream* ([`model::encode_value`]):
//! rows in primary-key order, each value a type tag plus bytes, so equal data gives equal
//! bytes whatever the source's physical layout. The stream is cut by FastCDC (content-
//! defined, so an edit in the middle of a table moves only nearby cut points and the rest
//! deduplicates against earlier snapshots). A chunk's id is BLAKE3 keyed with a key
//! derived from the master key, so ids reveal nothing about content to someone without
//! the password. A blob is `nonce(24) ‖ XChaCha20-Poly1305(zstd(chunk))`; an unencrypted
//! repository (only with an explicit flag) stores `zstd(chunk)`. No chunk is larger than
//! the chunker's `max` (1 MiB by default; the config's sizes are checked against FastCDC's
//! limits, at most 16 MiB, on open), so reading one is capped there: a blob whose index
//! entry is longer than the sealed worst case, or that would inflate further (a zstd
//! bomb written by someone with the key, or by anyone who can write to the storage of an
//! unencrypted repository), is a damaged chunk, refused before more than `max` bytes are
//! allocated. Chunks are the only compressed objects: manifests, change segments and
//! index files are sealed JSON, so reading one takes no more memory than its stored size.
//!
//! **Packs** gather blobs into objects of ~16 MiB so a big table is not millions of tiny
//! files. A pack's name is the BLAKE3 of its bytes: a damaged pack is detectable
//! without the key.
//!
//! **Snapshots** record time, source (URL without password), selection, tags, the
//! objects skipped and, per table, the schema, row count, bytes, the ordered chunk list
//! and a checksum of the canonical stream, which is independent of chunking and
//! lets verify and restore check a table end to end. The schema objects around the
//! tables (views, functions, triggers, types, policies, grants… — [`objects`]) are a
//! list of statements in dependency order, each with the tables and objects it needs,
//! written by the source's own catalog functions; a manifest without the list (older
//! versions) restores tables only, as before.
//!
//! **Checksums** ([`checksum`]). Format 1, and unkeyed tables in format 2: the BLAKE3 of
//! the whole canonical stream. Keyed tables in format 2 (marked by the entry's `blocks`
//! field): the stream's rows, in key order, fall into blocks that end after a row whose
//! key hashes to a value with its low 4 bits zero (16 rows on average; where blocks end
//! depends on the keys alone, so an insert or delete moves only the boundaries next to
//! it). Each block is summed (rows, bytes, a fingerprint of its keys, BLAKE3 of its
//! rows, its last key); the list of sums is stored as chunks like a stream, and the
//! checksum is the BLAKE3 of that list. Restore checks the root, the row count and the
//! length; verify also compares block by block and names the first block that differs
//! (its number, rows and last key). A backup that knows which rows changed (a
//! PostgreSQL changes-only delta) reuses the parent's sums for blocks none of whose rows
//! changed and reads again only the others: it never decodes the parent's rows.
//!
//! **Segments** ([`segment`]). A table entry's own chunks are a segment: `full` (every
//! row) or `delta` (rows upserted and keys deleted since the previous snapshot of the
//! same source, in key order). A delta entry also lists, in `base`, the layers it applies
//! to (oldest, always `full`, first), copied from its parent: every manifest is
//! self-contained, so restore, verify and prune never need another manifest, and the
//! chunks a snapshot keeps alive are exactly those its manifest lists. Reading a table
//! merges its layers by key (newest wins, a delete or a range delete hides the key);
//! the result must match the entry's checksum, which is always that of the *full*
//! canonical stream (whole, or its blocks), so a delta snapshot and a full one of the
//! same data have the same checksum. A table gets
//! deltas only when its stream is proven strictly increasing under the key order the
//! engine reproduces (checked row by row, recorded in `key`); a chain is cut by a new
//! full segment after [`segment::MAX_LAYERS`] layers or when its deltas outgrow half the
//! full segment. Change-capture segments for point-in-time restore will be another
//! kind of layer in the same list.
//!
//! ## Invariants
//!
//! 1. Objects are written once and never modified; every write is atomic (temp file +
//!    rename in the local backend).
//! 2. Order of writes in a backup: packs, then the index that describes them, then the
//!    snapshot manifest. A snapshot therefore never references a chunk that no index
//!    maps to a written pack. A backup killed at any moment leaves at worst packs or
//!    indexes no snapshot references: harmless garbage that the next backup may even
//!    reuse, and that prune collects.
//! 3. A snapshot becomes visible exactly when `snapshots/<id>` exists.
//! 4. Readers take the union of all index files; duplicate entries for a chunk (two
//!    backups racing) are harmless, any of them is valid. A backup that follows its
//!    source's hint reads only the index files of its parent's packs (read from the
//!    target after its lock, so they exist and no prune sweeps them while it runs) and
//!    deduplicates against those alone: a chunk it misses is stored again, never
//!    referenced in a pack that may be gone.
//!
//! ## What makes a snapshot consistent
//!
//! **Rule: everything a backup reads from the source comes from one read transaction
//! snapshot, opened before the first read and held until after the last.** On SQLite
//! that is one transaction on one connection; on PostgreSQL and MySQL/MariaDB several
//! connections may share it (*Parallel readers* below). The snapshot is then the state
//! of the source at the instant that transaction's snapshot was taken, for every table
//! at once. Each place a backup touches the
//! source ([`backup`]), checked against this rule:
//!
//! * *Opening*: PostgreSQL `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY` plus a
//!   first statement (the snapshot is taken there, not at `BEGIN`); SQLite a deferred
//!   `BEGIN` plus a read of `sqlite_master` (in WAL mode a reader keeps its snapshot
//!   while writers commit; in rollback-journal mode writers wait for it).
//! * *Schema discovery* (tables, columns, keys, indexes, sequence values, enum types)
//!   runs on that connection inside that transaction, after the snapshot is taken.
//! * *The previous snapshot's layers* (the parent a delta is computed against) are
//!   read from the repository, never from the source; a delta is the difference
//!   between the parent's rows and rows read in this transaction, and the manifest's
//!   checksum is of the full stream read in this transaction, which restore and
//!   verify check after merging the layers. So a delta can never mix instants: a
//!   wrong merge fails the checksum. (A changes-only delta in format 2 takes the sums
//!   of unchanged blocks from the parent's list and hashes the other blocks from rows
//!   read again, by key, in this transaction: still one instant.)
//! * *Keyed and unkeyed tables* are read one after the other by `COPY (SELECT … ORDER
//!   BY key)` / `COPY table` (PostgreSQL) or `SELECT` (SQLite), all in that snapshot:
//!   on that connection, or on a parallel reader that joined it.
//! * *The row-order fallback*: a delta abandoned because the stream is not in key
//!   order (or the parent is unreadable) is re-read whole on the same connection, in
//!   the same transaction, so the re-read sees the same instant.
//! * *Parallel readers* (PostgreSQL, `backup --jobs N`, by default one per core, at
//!   most 8): after discovery, the main transaction runs `pg_export_snapshot()`; each
//!   helper connection runs `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY` and, as
//!   its first statement, `SET TRANSACTION SNAPSHOT '…'`, so it sees exactly what the
//!   main transaction sees (the server refuses the import if the exporting transaction
//!   has ended). The main transaction stays open until every helper has committed, so
//!   the export stays valid throughout. A server that cannot export (a standby before
//!   PostgreSQL 10, compatible engines) gets no helpers and reads on one connection.
//!   Readers take tables largest first; a keyed table stored whole (no parent) of
//!   64 MB or more by `pg_table_size`, in a format 2 repository, whose rows average at
//!   most 64 KiB (a part holds its rows before its first block boundary), is read as N parts
//!   in the one snapshot: ranges of its first key column (bounds from `pg_stats`, else
//!   `percentile_disc` on the snapshot), each part `ORDER BY` the whole key. The
//!   ranges cover every value, so the parts' streams concatenated in range order are
//!   the table's stream; each part's chunks are cut independently and the chunk lists
//!   concatenated, the key order is proven inside each part and across every seam
//!   (last key of a part before the first of the next) before the key is recorded,
//!   and each part's block hasher ([`checksum::TableHasher::part`]) is joined to the
//!   next in key order, so the checksum is that of one read. A table without a key is
//!   read by one reader (its checksum is the BLAKE3 of the whole stream, which does
//!   not combine).
//!   Deltas and changes-only deltas are read by one reader per table; the fallback
//!   re-read happens on the reader that read the delta. MySQL/MariaDB has no snapshot
//!   export: with `--jobs N` a control connection takes `FLUSH TABLES WITH READ LOCK`
//!   (waiting at most 2 s: a long statement running makes the backup read on one
//!   connection rather than stall the server's writers), the N readers each run
//!   `START TRANSACTION WITH CONSISTENT SNAPSHOT` while no commit can happen, and the
//!   lock is released: every reader's snapshot is of that one instant (mydumper's
//!   method). Without the RELOAD privilege, one reader. Tables are shared among the
//!   readers; none is split. SQLite reads on one connection.
//!
//! Tested by `engine/tests/it/consistency.rs`: twelve backups in a row of SQLite
//! and PostgreSQL databases while writers commit transactions that span tables
//! (integer-keyed tables in incremental layers, a table without a key stored whole,
//! a table whose deltas outgrow it so it switches between full and delta, the chain
//! cut after [`segment::MAX_LAYERS`], the fallback re-read), each restore checked
//! against invariants that hold at every committed instant and row for row against
//! an exact model of the state after the transaction the restore shows; and pgbench
//! (TPC-B, with `-n`: without it pgbench truncates `pgbench_history` before each run,
//! which breaks the TPC-B balance equation in the source itself). The PostgreSQL
//! workload and pgbench run again with four parallel readers and every table stored
//! whole read in parts, and a table read in key ranges must restore identical, verify
//! and take a delta; MariaDB backups with four readers under transfers that span four
//! tables restore one instant each.
//!
//! ## Concurrency
//!
//! Several backups may write to one repository at once: they only add objects and
//! never depend on each other's unfinished work. Prune ([`prune`]) removes snapshots
//! and deletes packs while they run, without making anyone wait, by this protocol:
//!
//! * **Locks.** Every backup, copy, restore and verify holds a *shared* lock: an object
//!   `locks/<owner>-<n>` it writes *before* it reads anything, rewrites under a new name
//!   every 2 minutes (new object first, then the old one deleted: never without one) and
//!   deletes at the end. A lock not refreshed for 30 minutes belongs to a dead process
//!   and counts for nothing. Prune holds a *prune* lock; a prune that finds another live
//!   prune lock after writing its own stops ("another prune is running"): two prunes
//!   that start together may both stop, never both run.
//! * **Mark.** Prune forgets the snapshots the retention rules drop, then lists the
//!   packs (data and index objects) and, *after* that, the snapshots, and writes a
//!   mark `gc/<id>` naming every pack no snapshot needs (a chunk stored twice keeps one
//!   pack, preferring an unmarked one). Then it lists the locks: the owners live now
//!   are those who may have read the repository before the mark existed.
//! * **Nobody could have missed it → sweep now.** If no other lock is live, prune
//!   re-lists the snapshots and deletes each marked pack that is still not needed
//!   (index object first, then the pack). Anyone who starts later takes its lock
//!   first, then reads the marks, and never deduplicates against a marked pack (it
//!   stores that data again), nor reads one when another copy exists.
//! * **Otherwise → defer.** The mark is rewritten with the live owners and left for the
//!   next prune, which sweeps it once none of those owners is live, re-checking
//!   against the snapshots as they are then (a backup that deduplicated against a
//!   marked pack before the mark made a snapshot that now needs it: the pack stays).
//!   The sweep of old marks happens before that prune forgets anything, and its new
//!   mark takes over every still-unneeded pack with the union of owners, so a
//!   snapshot forgotten while a backup uses it as its parent is protected by that
//!   backup's lock.
//!
//! Writes are write-then-check everywhere (a lock before reading, a mark before
//! listing locks), which needs only read-after-write consistency of listings, as local
//! disks, SFTP and S3 (since 2020) give. Tested with backups held open while their
//! parent is pruned, backups started after a mark, and many backups and prunes at once
//! (`engine/tests/it/prune.rs`), each followed by reading every snapshot back.
//!
//! Copies between repositories ([`copy`]) re-key every chunk for the destination and
//! tag the copy with its *origin*, so a snapshot is never copied twice.
//!
//! ## Layout of the crate
//!
//! [`repo`] (format, crypto, storage, locks), [`source`] (table stores), [`model`]
//! (values, schemas, manifests), [`segment`] (key order, deltas, merging layers),
//! [`checksum`] (table checksums over blocks),
//! [`backup`], [`restore`], [`verify`], [`retention`] (which snapshots rules keep),
//! [`prune`], [`copy`]. [`secret`] wraps every
//! secret so that `Debug` output and logs never show it.

pub mod backup;
pub mod browse;
pub mod capture;
pub mod checksum;
pub mod chunker;
pub mod copy;
mod dialect;
pub mod drill;
pub mod error;
pub mod export;
pub mod filter;
pub mod merge;
pub mod model;
pub mod objects;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod rowcut;
pub mod secret;
pub mod segment;
pub mod selection;
pub mod source;
pub mod verify;

pub use error::{Error, Result};
