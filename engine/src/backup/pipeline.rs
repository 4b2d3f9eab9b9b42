//! The backup's second stage: a blocking worker that cuts each stream it is sent into
//! chunks (FastCDC), names them, skips the ones the repository already has, and packs
//! the rest (zstd, sealed), fed through a bounded channel.
//!
//! Naming, compressing and encrypting a chunk (most of a backup's CPU time) is done by
//! up to `threads` threads at once on batches of consecutive chunks; the chunks are
//! still packed in stream order, one pack writer per pipeline. A backup with several
//! readers runs one pipeline per reader ([`super::stream_tables`]).

use crate::chunker::Chunker;
use crate::model::ChunkId;
use crate::repo::{Location, PackWriter, Repository, Sealer};
use crate::{Error, Result};

pub(super) enum Msg {
    Start,
    Data(Vec<u8>),
    End,
    /// The reader failed: discard what was written.
    Abort,
}

pub(super) const WORKER_STOPPED: &str = "backup worker stopped";

pub(super) type Written = Vec<([u8; 32], Location)>;
/// Per stream ended (in the order they ended) its chunk list, the chunks written, bytes
/// stored.
pub(super) type WorkerOutput = (Vec<Vec<ChunkId>>, Written, u64);

/// Chunks are handed to the sealing threads in batches of about this many bytes per
/// thread: large enough that starting the threads costs nothing, small enough that a
/// pipeline holds a few MiB.
const BATCH_PER_THREAD: usize = 1 << 20;

/// The chunk/pack worker and the channel feeding it.
pub(super) struct Pipeline {
    tx: tokio::sync::mpsc::Sender<Msg>,
    worker: tokio::task::JoinHandle<Result<WorkerOutput>>,
}

/// The worker's state between messages.
struct Worker {
    writer: PackWriter,
    sealer: Sealer,
    index: std::sync::Arc<std::collections::HashMap<[u8; 32], Location>>,
    chunker: Chunker,
    params: crate::chunker::ChunkerParams,
    /// Cut chunks not yet named and packed.
    batch: Vec<Vec<u8>>,
    batch_bytes: usize,
    threads: usize,
    current: Vec<ChunkId>,
    tables: Vec<Vec<ChunkId>>,
    rt: tokio::runtime::Handle,
}

/// A chunk named and, unless the repository already had it, sealed.
type Named = ([u8; 32], Option<Vec<u8>>);

impl Worker {
    fn cut(&mut self, chunks: Vec<Vec<u8>>) -> Result<()> {
        for chunk in chunks {
            self.batch_bytes += chunk.len();
            self.batch.push(chunk);
        }
        if self.batch_bytes >= self.threads * BATCH_PER_THREAD {
            self.pack_batch()?;
        }
        Ok(())
    }

    /// Names and seals the batch (on up to `threads` threads), then packs it in order.
    fn pack_batch(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if batch.is_empty() {
            return Ok(());
        }
        let (sealer, index, writer) = (&self.sealer, &self.index, &self.writer);
        let name = |chunk: &Vec<u8>| -> Result<Named> {
            let id = writer.keys().chunk_id(chunk);
            if index.contains_key(&id) || writer.is_pending(&id) {
                return Ok((id, None));
            }
            Ok((id, Some(sealer.seal(&id, chunk)?)))
        };
        let threads = self.threads.min(batch.len());
        let named: Vec<Result<Named>> = if threads <= 1 {
            batch.iter().map(name).collect()
        } else {
            // Thread t takes chunks t, t + threads, …: chunks are of similar sizes.
            let mut parts: Vec<Vec<(usize, Result<Named>)>> = std::thread::scope(|s| {
                let name = &name;
                let batch = &batch;
                let handles: Vec<_> = (1..threads)
                    .map(|t| {
                        s.spawn(move || {
                            (t..batch.len())
                                .step_by(threads)
                                .map(|i| (i, name(&batch[i])))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                let mut parts = vec![
                    (0..batch.len())
                        .step_by(threads)
                        .map(|i| (i, name(&batch[i])))
                        .collect::<Vec<_>>(),
                ];
                for h in handles {
                    parts.push(h.join().unwrap_or_else(|_| {
                        vec![(0, Err(Error::Other("a sealing thread panicked".into())))]
                    }));
                }
                parts
            });
            let mut all: Vec<(usize, Result<Named>)> = parts.drain(..).flatten().collect();
            all.sort_by_key(|(i, _)| *i);
            all.into_iter().map(|(_, n)| n).collect()
        };
        for n in named {
            let (id, sealed) = n?;
            // Two equal chunks in one batch are both sealed; the second is not stored.
            if let Some(sealed) = sealed
                && !self.writer.is_pending(&id)
            {
                self.writer.add_sealed(id, sealed, &self.rt)?;
            }
            self.current.push(ChunkId(id));
        }
        Ok(())
    }

    fn handle(&mut self, msg: Msg) -> Result<()> {
        match msg {
            Msg::Start => {
                self.chunker = Chunker::new(self.params);
                self.batch.clear();
                self.batch_bytes = 0;
                self.current = Vec::new();
            }
            Msg::Data(bytes) => {
                let chunks = self.chunker.push(&bytes);
                self.cut(chunks)?;
            }
            Msg::End => {
                let chunks = self.chunker.finish();
                self.cut(chunks)?;
                self.pack_batch()?;
                self.tables.push(std::mem::take(&mut self.current));
            }
            Msg::Abort => return Err(Error::Cancelled),
        }
        Ok(())
    }
}

impl Pipeline {
    /// A worker that seals chunks on up to `threads` threads.
    pub(super) fn start(repo: &Repository, threads: usize) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(4);
        let params = repo.config.chunker;
        let writer = repo.pack_writer();
        let mut w = Worker {
            sealer: writer.sealer(),
            writer,
            index: repo.dedup_view(),
            chunker: Chunker::new(params),
            params,
            batch: Vec::new(),
            batch_bytes: 0,
            threads: threads.max(1),
            current: Vec::new(),
            tables: Vec::new(),
            rt: tokio::runtime::Handle::current(),
        };
        let worker = tokio::task::spawn_blocking(move || {
            while let Some(msg) = rx.blocking_recv() {
                if let Err(e) = w.handle(msg) {
                    // Nothing will reference what this backup stored: give the space back.
                    w.writer.discard(&w.rt);
                    return Err(e);
                }
            }
            let rt = w.rt.clone();
            match w.writer.flush(&rt) {
                Ok(()) => {
                    let (written, stored) = w.writer.finish(&rt)?;
                    Ok((w.tables, written, stored))
                }
                Err(e) => {
                    w.writer.discard(&rt);
                    Err(e)
                }
            }
        });
        Pipeline { tx, worker }
    }

    pub(super) async fn send(&self, msg: Msg) -> Result<()> {
        self.tx
            .send(msg)
            .await
            .map_err(|_| Error::Other(WORKER_STOPPED.into()))
    }

    /// Ends the input and waits for the worker. On a read error the worker discards what
    /// it wrote. A worker error explains a failed read (a closed channel) better than the
    /// read error itself, except when the reader asked the worker to abort.
    pub(super) async fn finish(self, read: Result<()>) -> Result<WorkerOutput> {
        if read.is_err() {
            let _ = self.tx.send(Msg::Abort).await;
        }
        drop(self.tx);
        let joined = self
            .worker
            .await
            .map_err(|e| Error::Other(format!("backup worker: {e}")))?;
        match (read, joined) {
            // The read stopped because the worker did: the worker's error is the cause.
            (Err(Error::Other(m)), Err(w)) if m == WORKER_STOPPED => Err(w),
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(v)) => Ok(v),
        }
    }
}
