//! Turns raw output pieces into numbered chunks: sent at once when idle, batched under
//! load, and bounded by a window of unacknowledged bytes.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::process::OutputPiece;
use crate::logs::{OutputChunk, OutputStream};

/// Most bytes in one batch message.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Most bytes merged into one chunk from consecutive reads of one stream.
const MAX_MERGED_CHUNK_BYTES: usize = 128 * 1024;

/// Numbers output and tracks what the server has acknowledged.
#[derive(Debug)]
pub(crate) struct OutputSequencer {
    next_seq: u64,
    /// (seq, bytes) of chunks sent and not yet acknowledged.
    unacked: VecDeque<(u64, usize)>,
    unacked_bytes: usize,
    window_bytes: usize,
}

impl OutputSequencer {
    pub fn new(window_bytes: usize) -> Self {
        Self {
            next_seq: 1,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            window_bytes,
        }
    }

    /// True while more output may be sent before acknowledgements arrive.
    pub fn window_open(&self) -> bool {
        self.unacked_bytes < self.window_bytes
    }

    /// Sequence number of the last chunk sent (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Records that the server stored everything up to `seq`.
    pub fn acked(&mut self, seq: u64) {
        while let Some(&(s, len)) = self.unacked.front() {
            if s > seq {
                break;
            }
            self.unacked.pop_front();
            self.unacked_bytes -= len;
        }
    }

    /// Builds one batch from `first` plus whatever else is already waiting in `pieces`.
    pub fn batch(
        &mut self,
        first: OutputPiece,
        pieces: &mut mpsc::Receiver<OutputPiece>,
    ) -> Vec<OutputChunk> {
        let mut merged: Vec<(OutputStream, BytesMut)> = Vec::new();
        let mut total = 0;
        let mut next = Some(first);
        while let Some((stream, data)) = next.take() {
            total += data.len();
            match merged.last_mut() {
                Some((last_stream, buf))
                    if *last_stream == stream
                        && buf.len() + data.len() <= MAX_MERGED_CHUNK_BYTES =>
                {
                    buf.extend_from_slice(&data);
                }
                _ => merged.push((stream, BytesMut::from(data.as_ref()))),
            }
            if total < MAX_BATCH_BYTES {
                next = pieces.try_recv().ok();
            }
        }
        let now = now_us();
        merged
            .into_iter()
            .map(|(stream, data)| self.number(stream, data.freeze(), now))
            .collect()
    }

    fn number(&mut self, stream: OutputStream, data: Bytes, emitted_at_us: i64) -> OutputChunk {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unacked.push_back((seq, data.len()));
        self.unacked_bytes += data.len();
        OutputChunk {
            seq,
            stream,
            data,
            emitted_at_us,
        }
    }
}

fn now_us() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_pieces_are_batched_and_merged_per_stream() {
        let (tx, mut rx) = mpsc::channel(16);
        tx.send((OutputStream::Stdout, Bytes::from_static(b"b\n")))
            .await
            .unwrap();
        tx.send((OutputStream::Stderr, Bytes::from_static(b"err\n")))
            .await
            .unwrap();
        tx.send((OutputStream::Stderr, Bytes::from_static(b"err2\n")))
            .await
            .unwrap();
        let mut seq = OutputSequencer::new(1 << 20);
        let batch = seq.batch((OutputStream::Stdout, Bytes::from_static(b"a\n")), &mut rx);
        assert_eq!(batch.len(), 2);
        assert_eq!((batch[0].seq, &batch[0].data[..]), (1, &b"a\nb\n"[..]));
        assert_eq!(
            (batch[1].seq, batch[1].stream, &batch[1].data[..]),
            (2, OutputStream::Stderr, &b"err\nerr2\n"[..])
        );
        assert_eq!(seq.last_seq(), 2);
    }

    #[tokio::test]
    async fn the_window_closes_until_acknowledged() {
        let (_tx, mut rx) = mpsc::channel(1);
        let mut seq = OutputSequencer::new(10);
        seq.batch(
            (OutputStream::Stdout, Bytes::from_static(b"0123456789")),
            &mut rx,
        );
        assert!(!seq.window_open());
        seq.acked(0);
        assert!(!seq.window_open(), "acknowledging nothing frees nothing");
        seq.acked(1);
        assert!(seq.window_open());
    }
}
