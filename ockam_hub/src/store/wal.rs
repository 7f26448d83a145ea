//! The durable store's write-ahead log, for `--fsync interval` (issue 17):
//! the record batches of each group of pushes (see `batch`) and read
//! positions are appended to `wal.log` in the data directory (written to
//! the operating system, not fsynced), and then confirmed; the commit
//! thread moves them into the database afterwards, without fsync (see
//! `tail`); every interval, once the database has everything logged, a
//! durable commit makes it safe and the log starts over. After a crash of
//! the process (`kill -9`) the operating system still has the log: opening
//! the store replays what the database lost. After a power cut, up to one
//! interval is lost.
//!
//! A record is a little-endian `u32` length and a BARE [`Record`]; a record
//! cut short (the process died while writing it, so it was never
//! confirmed) ends the log.

use super::*;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write as _};
use std::path::Path;
use tracing::warn;

/// The log's file name in the data directory.
pub const WAL_FILE: &str = "wal.log";

/// One logged write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Record {
    /// Message `index` of `stream`: logs of hubs from before record
    /// batches (still replayed).
    Push {
        stream: String,
        index: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The read position of `(client, stream)`.
    Save {
        client: String,
        stream: String,
        index: u64,
    },
    /// A record batch of `stream`: its messages from `base` on.
    Batch {
        stream: String,
        base: u64,
        #[serde(with = "serde_bytes")]
        batch: Vec<u8>,
    },
}

/// A [`Record`] as appended: borrowed from the commit, so that logging
/// copies a batch only into its encoding. The same wire form.
#[derive(Debug, Serialize)]
pub(super) enum RecordRef<'a> {
    /// See [`Record::Push`]; not written any more (a hub logs batches),
    /// here so that the variants keep their places in the wire form.
    #[allow(dead_code)]
    Push {
        stream: &'a str,
        index: u64,
        #[serde(with = "serde_bytes")]
        data: &'a [u8],
    },
    /// See [`Record::Save`].
    Save {
        client: &'a str,
        stream: &'a str,
        index: u64,
    },
    /// See [`Record::Batch`].
    Batch {
        stream: &'a str,
        base: u64,
        #[serde(with = "serde_bytes")]
        batch: &'a [u8],
    },
}

/// The open log.
pub(super) struct Wal {
    file: std::fs::File,
    buf: Vec<u8>,
    /// The log's length after its last whole append.
    len: u64,
}

impl Wal {
    /// Opens (or creates) the log in `dir` for appending.
    pub(super) fn open(dir: &Path) -> Result<Wal> {
        let path = dir.join(WAL_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| storage_error(&format!("cannot open {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| storage_error(&format!("cannot read {}", path.display()), e))?
            .len();
        Ok(Wal {
            file,
            buf: Vec::new(),
            len,
        })
    }

    /// Appends `records` in one write (to the operating system; no fsync).
    /// An append that fails is cut off again, so that the records after it
    /// do not follow a record cut short (which would end the log there).
    pub(super) fn append(&mut self, records: &[RecordRef<'_>]) -> Result<()> {
        self.buf.clear();
        for r in records {
            let at = self.buf.len();
            self.buf.extend_from_slice(&[0; 4]);
            ockam_core::encode_into(r, &mut self.buf)?;
            let len = u32::try_from(self.buf.len() - at - 4)
                .map_err(|_| storage_error("log", "a record over 4 GiB"))?;
            self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
        match self.file.write_all(&self.buf) {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(storage_error("write the log", e))
            }
        }
    }

    /// Empties the log (what it held is durable in the database).
    pub(super) fn clear(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.rewind())
            .map_err(|e| storage_error("empty the log", e))?;
        self.len = 0;
        Ok(())
    }
}

/// The records of the log in `dir`, in order, up to the first one cut
/// short or unreadable (its writer died writing it); empty without a log.
pub(super) fn read(dir: &Path) -> Result<Vec<Record>> {
    let path = dir.join(WAL_FILE);
    let mut bytes = Vec::new();
    match std::fs::File::open(&path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)
                .map_err(|e| storage_error(&format!("cannot read {}", path.display()), e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(storage_error(&format!("cannot read {}", path.display()), e)),
    }
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 4 <= bytes.len() {
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[at..at + 4]);
        let len = u32::from_le_bytes(len) as usize;
        let Some(body) = bytes.get(at + 4..at + 4 + len) else {
            break;
        };
        match ockam_core::decode::<Record>(body) {
            Ok(r) => out.push(r),
            Err(_) => break,
        }
        at += 4 + len;
    }
    if at < bytes.len() {
        warn!(path = %path.display(), left = bytes.len() - at, "the write-ahead log ends in a record cut short (never confirmed); ignored");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_in_order_up_to_a_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path()).unwrap();
        let records = vec![
            Record::Push {
                stream: "s".into(),
                index: 0,
                data: vec![1, 2, 3],
            },
            Record::Save {
                client: "c".into(),
                stream: "s".into(),
                index: 1,
            },
        ];
        let appended = [
            RecordRef::Push {
                stream: "s",
                index: 0,
                data: &[1, 2, 3],
            },
            RecordRef::Save {
                client: "c",
                stream: "s",
                index: 1,
            },
        ];
        wal.append(&appended).unwrap();
        assert_eq!(read(dir.path()).unwrap(), records);
        // A record cut short ends the log.
        wal.append(&appended[..1]).unwrap();
        let path = dir.path().join(WAL_FILE);
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 2)
            .unwrap();
        assert_eq!(read(dir.path()).unwrap(), records);
        wal.clear().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        wal.append(&appended[1..]).unwrap();
        assert_eq!(read(dir.path()).unwrap(), records[1..]);
    }
}
