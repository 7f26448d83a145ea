//! Record batches: how the durable store keeps messages (issue 17).
//!
//! Each commit's messages to one stream are kept as one database record,
//! keyed by the stream and the index of its first message (Kafka's record
//! batch and base offset), instead of one record per message: the
//! database's B-tree sees one insert per batch, not one per message. A
//! batch is the messages back to back, each a little-endian `u32` length
//! and its bytes; message `base + i` is the batch's `i`-th. A commit with
//! more than [`MAX_BATCH_BYTES`] for a stream splits them over several
//! batches, so that a read of one message never loads much more.
//!
//! Plain functions over bytes, without the database: the store's commit,
//! reads and trims use them.

use ockam_core::{Error, ErrorKind, Result};

/// Most bytes a batch holds (64 KiB) before a commit starts another; a
/// message bigger than that is a batch of its own.
pub(super) const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Bytes of a message's length in a batch.
const LEN_BYTES: usize = 4;

/// Whether `data` fits in `batch` (or starts it: a batch never stays
/// empty for want of room).
pub(super) fn fits(batch: &[u8], data: &[u8]) -> bool {
    batch.is_empty() || batch.len() + LEN_BYTES + data.len() <= MAX_BATCH_BYTES
}

/// Appends `data` to `batch`.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] when `data` is 4 GiB or more (its length
/// does not fit the format; the hub's frames are far smaller).
pub(super) fn append(batch: &mut Vec<u8>, data: &[u8]) -> Result<()> {
    let len = u32::try_from(data.len())
        .map_err(|_| Error::new(ErrorKind::InvalidInput, "a message of 4 GiB or more"))?;
    batch.reserve(LEN_BYTES + data.len());
    batch.extend_from_slice(&len.to_le_bytes());
    batch.extend_from_slice(data);
    Ok(())
}

/// The messages of a stored batch, in order: its `i`-th is message
/// `base + i`. An item is an error when the batch is cut short (a damaged
/// data file), and ends the iteration.
pub(super) fn messages(batch: &[u8]) -> Messages<'_> {
    Messages { rest: batch }
}

/// See [`messages`].
pub(super) struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((len, rest)) = self.rest.split_first_chunk::<LEN_BYTES>() else {
            self.rest = &[];
            return Some(Err(damaged()));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            self.rest = &[];
            return Some(Err(damaged()));
        }
        let (data, rest) = rest.split_at(len);
        self.rest = rest;
        Some(Ok(data))
    }
}

/// What a batch holds: its messages and their bytes (without lengths).
///
/// # Errors
/// [`ErrorKind::Io`] when the batch is cut short.
pub(super) fn count(batch: &[u8]) -> Result<(u64, u64)> {
    let (mut n, mut bytes) = (0u64, 0u64);
    for m in messages(batch) {
        n += 1;
        bytes += m?.len() as u64;
    }
    Ok((n, bytes))
}

/// Splits `batch` after its first `n` messages: the bytes of their data,
/// and the rest of the batch as stored (itself a batch, of the messages
/// from `base + n` on).
///
/// # Errors
/// [`ErrorKind::Io`] when the batch is cut short or holds fewer than `n`
/// messages.
pub(super) fn split(batch: &[u8], n: u64) -> Result<(u64, &[u8])> {
    let mut it = messages(batch);
    let mut bytes = 0u64;
    for _ in 0..n {
        bytes += it.next().ok_or_else(damaged)??.len() as u64;
    }
    Ok((bytes, it.rest))
}

fn damaged() -> Error {
    Error::new(
        ErrorKind::Io,
        "a record batch in the data file is cut short (the file is damaged)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch_of(items: &[Vec<u8>]) -> Vec<u8> {
        let mut b = Vec::new();
        for i in items {
            append(&mut b, i).unwrap();
        }
        b
    }

    proptest! {
        #[test]
        fn a_batch_reads_back_its_messages_and_splits_anywhere(
            items in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..20),
            at in 0usize..21,
        ) {
            let b = batch_of(&items);
            let read: Vec<&[u8]> = messages(&b).collect::<Result<_>>().unwrap();
            prop_assert_eq!(read.len(), items.len());
            for (r, i) in read.iter().zip(&items) {
                prop_assert_eq!(*r, i.as_slice());
            }
            let total: usize = items.iter().map(Vec::len).sum();
            prop_assert_eq!(count(&b).unwrap(), (items.len() as u64, total as u64));
            let at = at.min(items.len());
            let (bytes, rest) = split(&b, at as u64).unwrap();
            prop_assert_eq!(bytes, items[..at].iter().map(Vec::len).sum::<usize>() as u64);
            let tail = batch_of(&items[at..]);
            prop_assert_eq!(rest, tail.as_slice());
        }

        /// A batch cut anywhere (a damaged file) gives its whole messages,
        /// then an error, never a panic or a message cut short.
        #[test]
        fn a_batch_cut_short_is_an_error_not_a_panic(
            items in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..10),
            cut in any::<prop::sample::Index>(),
        ) {
            let b = batch_of(&items);
            let cut = cut.index(b.len());
            let read: Vec<Result<&[u8]>> = messages(&b[..cut]).collect();
            let whole = read.iter().take_while(|r| r.is_ok()).count();
            for (r, i) in read.iter().zip(&items).take(whole) {
                prop_assert_eq!(r.as_ref().unwrap(), &i.as_slice());
            }
            prop_assert!(read.len() - whole <= 1);
            if whole < items.len() && cut > 0 {
                prop_assert!(read.last().unwrap().is_err() || batch_of(&items[..whole]).len() == cut);
            }
            prop_assert!(split(&b[..cut], items.len() as u64).is_err());
        }
    }

    #[test]
    fn a_big_message_starts_and_fills_its_own_batch() {
        let big = vec![0u8; MAX_BATCH_BYTES];
        assert!(fits(&[], &big));
        let b = batch_of(&[vec![1]]);
        assert!(!fits(&b, &big));
        assert!(fits(&b, &vec![0u8; MAX_BATCH_BYTES - b.len() - LEN_BYTES]));
        assert!(!fits(
            &b,
            &vec![0u8; MAX_BATCH_BYTES - b.len() - LEN_BYTES + 1]
        ));
    }
}
