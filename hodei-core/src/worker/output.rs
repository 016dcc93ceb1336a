//! Turns raw output pieces into numbered chunks: sent at once when idle, batched under
//! load, bounded by a window of unacknowledged bytes, and kept until acknowledged so they
//! can be sent again after the stream to the server broke.

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
    /// Chunks numbered and not yet acknowledged, in order.
    unacked: VecDeque<OutputChunk>,
    unacked_bytes: usize,
    window_bytes: usize,
    buffer_bytes: usize,
}

impl OutputSequencer {
    /// `window_bytes` bounds what is in flight on an open stream, `buffer_bytes` what is
    /// kept while the stream is broken.
    pub fn new(window_bytes: usize, buffer_bytes: usize) -> Self {
        Self {
            next_seq: 1,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            window_bytes,
            buffer_bytes: buffer_bytes.max(window_bytes),
        }
    }

    /// Numbers the first chunk `first` (1 or more): a job run again goes on after the
    /// output of its earlier attempts.
    pub fn starting_at(mut self, first: u64) -> Self {
        self.next_seq = first.max(1);
        self
    }

    /// True while more output may be numbered before acknowledgements arrive: up to the
    /// window on an open stream, up to the buffer while it is broken. Beyond it the job's
    /// pipes are not read, so the job waits on its writes.
    pub fn window_open(&self, connected: bool) -> bool {
        let limit = if connected {
            self.window_bytes
        } else {
            self.buffer_bytes
        };
        self.unacked_bytes < limit
    }

    /// Sequence number of the last chunk sent (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Records that the server stored everything up to `seq`.
    pub fn acked(&mut self, seq: u64) {
        while let Some(chunk) = self.unacked.front() {
            if chunk.seq > seq {
                break;
            }
            self.unacked_bytes -= chunk.data.len();
            self.unacked.pop_front();
        }
    }

    /// After a resume: forgets what the server stored (up to `stored`) and returns the
    /// rest, in order, as batches to send again.
    pub fn resend_after(&mut self, stored: u64) -> Vec<Vec<OutputChunk>> {
        self.acked(stored);
        let mut batches: Vec<Vec<OutputChunk>> = Vec::new();
        let mut batch_bytes = 0;
        for chunk in &self.unacked {
            match batches.last_mut() {
                Some(batch) if batch_bytes + chunk.data.len() <= MAX_BATCH_BYTES => {
                    batch_bytes += chunk.data.len();
                    batch.push(chunk.clone());
                }
                _ => {
                    batch_bytes = chunk.data.len();
                    batches.push(vec![chunk.clone()]);
                }
            }
        }
        batches
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
        let now = crate::logs::now_us();
        merged
            .into_iter()
            .map(|(stream, data)| self.number(stream, data.freeze(), now))
            .collect()
    }

    fn number(&mut self, stream: OutputStream, data: Bytes, emitted_at_us: i64) -> OutputChunk {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unacked_bytes += data.len();
        let chunk = OutputChunk {
            seq,
            stream,
            data,
            emitted_at_us,
        };
        self.unacked.push_back(chunk.clone());
        chunk
    }
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
        let mut seq = OutputSequencer::new(1 << 20, 1 << 20);
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
        let mut seq = OutputSequencer::new(10, 10);
        seq.batch(
            (OutputStream::Stdout, Bytes::from_static(b"0123456789")),
            &mut rx,
        );
        assert!(!seq.window_open(true));
        seq.acked(0);
        assert!(
            !seq.window_open(true),
            "acknowledging nothing frees nothing"
        );
        seq.acked(1);
        assert!(seq.window_open(true));
    }

    #[tokio::test]
    async fn a_broken_stream_buffers_up_to_the_buffer_then_holds_the_job() {
        let (_tx, mut rx) = mpsc::channel(1);
        let mut seq = OutputSequencer::new(4, 8);
        seq.batch((OutputStream::Stdout, Bytes::from_static(b"0123")), &mut rx);
        assert!(!seq.window_open(true));
        assert!(
            seq.window_open(false),
            "a broken stream buffers past the window"
        );
        seq.batch((OutputStream::Stdout, Bytes::from_static(b"4567")), &mut rx);
        assert!(!seq.window_open(false), "the buffer is full: the job waits");
    }

    #[tokio::test]
    async fn a_resume_resends_what_the_server_did_not_store_in_order() {
        let (_tx, mut rx) = mpsc::channel(1);
        let mut seq = OutputSequencer::new(1 << 20, 1 << 20);
        for text in [&b"a"[..], b"b", b"c"] {
            seq.batch((OutputStream::Stdout, Bytes::from(text)), &mut rx);
        }
        let batches = seq.resend_after(1);
        let resent: Vec<_> = batches
            .iter()
            .flatten()
            .map(|c| (c.seq, c.data.clone()))
            .collect();
        assert_eq!(
            resent,
            [(2, Bytes::from_static(b"b")), (3, Bytes::from_static(b"c"))]
        );
        assert!(seq.resend_after(3).is_empty());
    }

    #[tokio::test]
    async fn resent_batches_stay_under_the_batch_limit() {
        let (_tx, mut rx) = mpsc::channel(1);
        let mut seq = OutputSequencer::new(usize::MAX, usize::MAX);
        let big = Bytes::from(vec![b'x'; MAX_MERGED_CHUNK_BYTES]);
        for _ in 0..5 {
            seq.batch((OutputStream::Stdout, big.clone()), &mut rx);
        }
        let batches = seq.resend_after(0);
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 5);
        assert!(batches.len() > 1);
        for batch in &batches {
            assert!(batch.iter().map(|c| c.data.len()).sum::<usize>() <= MAX_BATCH_BYTES);
        }
    }
}
