//! The backup's second stage: a blocking worker that cuts each table's stream into
//! chunks (FastCDC), names them, skips the ones the repository already has, and packs
//! the rest (zstd, sealed), fed through a bounded channel.

use crate::chunker::Chunker;
use crate::model::ChunkId;
use crate::repo::{Location, PackWriter, Repository};
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
/// Per table chunk lists, the chunks written, bytes stored.
pub(super) type WorkerOutput = (Vec<Vec<ChunkId>>, Written, u64);

/// The chunk/pack worker and the channel feeding it.
pub(super) struct Pipeline {
    tx: tokio::sync::mpsc::Sender<Msg>,
    worker: tokio::task::JoinHandle<Result<WorkerOutput>>,
}

/// The worker's state between messages.
struct Worker {
    writer: PackWriter,
    index: std::sync::Arc<std::collections::HashMap<[u8; 32], Location>>,
    chunker: Chunker,
    params: crate::chunker::ChunkerParams,
    current: Vec<ChunkId>,
    tables: Vec<Vec<ChunkId>>,
    rt: tokio::runtime::Handle,
}

impl Worker {
    fn chunk(&mut self, chunk: Vec<u8>) -> Result<()> {
        let id = self.writer.keys().chunk_id(&chunk);
        if !self.index.contains_key(&id) && !self.writer.is_pending(&id) {
            self.writer.add(id, &chunk, &self.rt)?;
        }
        self.current.push(ChunkId(id));
        Ok(())
    }

    fn handle(&mut self, msg: Msg) -> Result<()> {
        match msg {
            Msg::Start => {
                self.chunker = Chunker::new(self.params);
                self.current = Vec::new();
            }
            Msg::Data(bytes) => {
                for chunk in self.chunker.push(&bytes) {
                    self.chunk(chunk)?;
                }
            }
            Msg::End => {
                for chunk in self.chunker.finish() {
                    self.chunk(chunk)?;
                }
                self.tables.push(std::mem::take(&mut self.current));
            }
            Msg::Abort => return Err(Error::Cancelled),
        }
        Ok(())
    }
}

impl Pipeline {
    pub(super) fn start(repo: &Repository) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(4);
        let params = repo.config.chunker;
        let mut w = Worker {
            writer: repo.pack_writer(),
            index: repo.dedup_view(),
            chunker: Chunker::new(params),
            params,
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
