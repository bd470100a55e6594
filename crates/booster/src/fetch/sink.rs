//! Where fetched bytes go: a `.part` file written at offsets (then renamed), or an ordered
//! stream (stdout, or a client socket later) fed through a bounded reorder buffer. Also the
//! resume state saved next to a `.part` file.

use super::FetchError;
use sha2::{Digest, Sha256};
use std::{
    collections::BTreeMap,
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};
use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    sync::{mpsc, watch},
};

/// Bytes written at an offset. Writers of the same range may race (duplicated pieces): the
/// bytes are identical, and the ordered sink emits each offset once.
#[derive(Clone)]
pub enum Sink {
    File(Arc<FileSink>),
    Ordered(mpsc::Sender<(u64, Vec<u8>)>),
}

/// A file written at offsets from blocking tasks. Once [`FileSink::close`] returns, no write
/// lands any more: a write still running for an aborted worker of an earlier attempt must not
/// put old bytes into the restarted file.
pub struct FileSink {
    pub file: File,
    closed: std::sync::RwLock<bool>,
}

impl FileSink {
    pub fn new(file: File) -> FileSink {
        FileSink {
            file,
            closed: std::sync::RwLock::new(false),
        }
    }

    /// Waits for writes in progress, then refuses new ones.
    pub fn close(&self) {
        *self.closed.write().unwrap_or_else(|e| e.into_inner()) = true;
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let closed = self.closed.read().unwrap_or_else(|e| e.into_inner());
        if *closed {
            return Err(io::Error::other("output closed"));
        }
        self.file.write_all_at(data, offset)
    }
}

impl Sink {
    /// Writes `data` at `offset`, giving the buffer back for reuse when it can.
    pub async fn write(&self, offset: u64, data: Vec<u8>) -> io::Result<Vec<u8>> {
        match self {
            Sink::File(f) => {
                let f = f.clone();
                tokio::task::spawn_blocking(move || f.write_at(&data, offset).map(|()| data))
                    .await
                    .map_err(io::Error::other)?
            }
            Sink::Ordered(tx) => {
                let cap = data.capacity();
                tx.send((offset, data))
                    .await
                    .map_err(|_| io::Error::other("output closed"))?;
                Ok(Vec::with_capacity(cap))
            }
        }
    }
}

/// What the ordered writer did.
pub struct OrderedDone {
    pub written: u64,
    pub sha256: String,
}

/// Writes chunks to `out` in offset order, from `start`, each offset once; hashes what it
/// writes. Ends when every sender is dropped.
pub async fn ordered_writer<W: AsyncWrite + Unpin>(
    rx: mpsc::Receiver<(u64, Vec<u8>)>,
    out: W,
) -> Result<OrderedDone, io::Error> {
    ordered_writer_from(rx, out, 0).await
}

/// [`ordered_writer`] for a stream whose bytes before `start` went out another way: writes
/// from `start` on. `written` is then the offset reached (it includes `start`); the hash covers
/// only what this writer wrote.
pub async fn ordered_writer_from<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<(u64, Vec<u8>)>,
    mut out: W,
    start: u64,
) -> Result<OrderedDone, io::Error> {
    let mut next = start;
    let mut pending: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut hasher = Sha256::new();
    while let Some((offset, data)) = rx.recv().await {
        if offset + data.len() as u64 <= next {
            continue; // a duplicate of bytes already written
        }
        if offset > next {
            // Keep the longest chunk for an offset.
            match pending.get(&offset) {
                Some(have) if have.len() >= data.len() => {}
                _ => {
                    pending.insert(offset, data);
                }
            }
            continue;
        }
        let skip = (next - offset) as usize;
        out.write_all(&data[skip..]).await?;
        hasher.update(&data[skip..]);
        next = offset + data.len() as u64;
        while let Some(entry) = pending.first_entry() {
            if *entry.key() > next {
                break;
            }
            let (off, data) = entry.remove_entry();
            if off + data.len() as u64 <= next {
                continue;
            }
            let skip = (next - off) as usize;
            out.write_all(&data[skip..]).await?;
            hasher.update(&data[skip..]);
            next = off + data.len() as u64;
        }
    }
    out.flush().await?;
    Ok(OrderedDone {
        written: next,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// `FILE.part` and `FILE.part.state` for a final `FILE`.
pub fn part_paths(file: &Path) -> (PathBuf, PathBuf) {
    let mut part = file.as_os_str().to_owned();
    part.push(".part");
    let mut state = part.clone();
    state.push(".state");
    (PathBuf::from(part), PathBuf::from(state))
}

/// What a resumed download must find unchanged on the server, and what is already on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumeState {
    pub url: String,
    pub final_url: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Byte ranges `[start, end)` already written to the `.part` file.
    pub done: Vec<(u64, u64)>,
}

impl ResumeState {
    pub fn load(path: &Path) -> Option<ResumeState> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, serde_json::to_vec(self).map_err(io::Error::other)?)?;
        std::fs::rename(&tmp, path)
    }

    /// The validator for `If-Range`: a strong ETag, else Last-Modified.
    pub fn validator(&self) -> Option<String> {
        validator(self.etag.as_deref(), self.last_modified.as_deref())
    }
}

/// A strong ETag (weak ones cannot be used in `If-Range`), else Last-Modified.
pub fn validator(etag: Option<&str>, last_modified: Option<&str>) -> Option<String> {
    etag.filter(|e| !e.starts_with("W/"))
        .or(last_modified)
        .map(str::to_string)
}

/// Hashes a file while it is being written: follows the contiguous done prefix (`delivered`)
/// up to `size`, so the hash is ready when the download is. Done bytes never change.
pub async fn follow_hash(file: Arc<FileSink>, mut delivered: watch::Receiver<u64>, size: u64) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut at = 0u64;
    let mut open = true;
    loop {
        let target = (*delivered.borrow_and_update()).min(size);
        while at < target {
            let n = (target - at).min(4 << 20) as usize;
            let f = file.clone();
            let (h, r) = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n];
                let r = f.file.read_exact_at(&mut buf, at);
                hasher.update(&buf);
                (hasher, r)
            })
            .await
            .map_err(io::Error::other)?;
            hasher = h;
            r?;
            at += n as u64;
        }
        if at >= size {
            return Ok(hex::encode(hasher.finalize()));
        }
        if !open {
            return Err(io::Error::other("the download ended before the file was complete"));
        }
        open = delivered.changed().await.is_ok();
    }
}

/// SHA-256 (hex) of a whole file, off the runtime threads.
pub async fn hash_file(path: &Path) -> Result<String, FetchError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> io::Result<String> {
        let mut f = File::open(&path)?;
        let mut hasher = Sha256::new();
        io::copy(&mut f, &mut hasher)?;
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| FetchError::Io(io::Error::other(e)))?
    .map_err(FetchError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ordered_writer_reorders_and_drops_duplicates() {
        let (tx, rx) = mpsc::channel(16);
        let out = tokio::spawn(async move {
            let mut buf = Vec::new();
            let done = ordered_writer(rx, &mut buf).await.unwrap();
            (buf, done.written)
        });
        let data: Vec<u8> = (0..100u8).collect();
        for (a, b) in [(50, 70), (0, 10), (5, 30), (30, 50), (60, 100), (70, 100), (0, 100)] {
            tx.send((a as u64, data[a..b].to_vec())).await.unwrap();
        }
        drop(tx);
        let (buf, n) = out.await.unwrap();
        assert_eq!(n, 100);
        assert_eq!(buf, data);
    }
}
