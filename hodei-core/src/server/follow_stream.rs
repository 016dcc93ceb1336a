//! The stream of one `FollowJob` call: a small buffer of events, and a final status that
//! reaches the client after every buffered event, never waiting for room in the buffer.
//! A client that leaves the buffer full for the stall timeout loses the follow.

use std::{pin::Pin, time::Duration};

use futures::{Stream, StreamExt, future, stream};
use hodei_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::warn;

use crate::{client::JobEvent, observe};

/// Events buffered for one follower; with the log read from disk, this is all the memory
/// a follower holds, however far behind it is.
const BUFFERED_EVENTS: usize = 16;

/// What a `FollowJob` call answers.
pub(super) type EventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

/// The sending end of one follow.
#[derive(Debug)]
pub(super) struct EventSink {
    events: mpsc::Sender<Result<pb::JobEvent, Status>>,
    last: Option<oneshot::Sender<Status>>,
    stall_timeout: Duration,
    /// The output sequence number the client gets next.
    next_seq: u64,
}

/// A sink and the stream its client reads, for a follow that starts at output `from_seq`
/// (0 is the first chunk).
pub(super) fn event_stream(stall_timeout: Duration, from_seq: u64) -> (EventSink, EventStream) {
    let (events, rx) = mpsc::channel(BUFFERED_EVENTS);
    let (last, last_rx) = oneshot::channel();
    let sink = EventSink {
        events,
        last: Some(last),
        stall_timeout,
        next_seq: from_seq.max(1),
    };
    // The final status, if any, is polled only once the buffer has ended, that is once
    // the sink is gone and the client has taken every buffered event.
    let last = stream::once(last_rx).filter_map(|status| future::ready(status.ok().map(Err)));
    (sink, Box::pin(ReceiverStream::new(rx).chain(last)))
}

impl EventSink {
    /// Sends `event`; fails when the client went away, or when it left the buffer full
    /// for the stall timeout (the follow then ends with a status saying where to resume).
    pub(super) async fn send(&mut self, event: JobEvent) -> Result<(), &'static str> {
        let seq = match &event {
            JobEvent::Output(chunk) => Some(chunk.seq),
            JobEvent::State { .. } => None,
        };
        match tokio::time::timeout(self.stall_timeout, self.events.send(Ok(event.into()))).await {
            Ok(Ok(())) => {
                if let Some(seq) = seq {
                    self.next_seq = seq + 1;
                }
                Ok(())
            }
            Ok(Err(_)) => Err("client went away"),
            Err(_) => {
                let stalled = humantime::format_duration(self.stall_timeout);
                warn!(stalled = %stalled, next_seq = self.next_seq, "dropping a follower that fell behind");
                observe::job_api_refusal("follower_stalled");
                self.finish(Status::resource_exhausted(format!(
                    "the follower fell behind: it took no event for {stalled} \
                     (HODEI_FOLLOW_STALL_TIMEOUT); follow again with --from-seq {}",
                    self.next_seq
                )));
                Err("the client fell behind")
            }
        }
    }

    /// Ends the follow with `status`, after the events already buffered.
    pub(super) fn finish(&mut self, status: Status) {
        if let Some(last) = self.last.take() {
            let _ = last.send(status);
        }
    }

    /// Completes when the client has gone away.
    pub(super) fn client_gone(&self) -> impl Future<Output = ()> + use<> {
        let events = self.events.clone();
        async move { events.closed().await }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::time::Instant;

    use super::*;
    use crate::{
        job::JobState,
        logs::{OutputChunk, OutputStream},
    };

    const STALL: Duration = Duration::from_secs(60);

    fn chunk(seq: u64) -> JobEvent {
        JobEvent::Output(OutputChunk {
            seq,
            stream: OutputStream::Stdout,
            data: Bytes::from_static(b"x"),
            emitted_at_us: 0,
        })
    }

    fn seq_of(event: &Result<pb::JobEvent, Status>) -> u64 {
        match JobEvent::try_from(event.clone().unwrap()).unwrap() {
            JobEvent::Output(chunk) => chunk.seq,
            JobEvent::State { .. } => 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_that_takes_nothing_is_dropped_after_the_stall_timeout_and_told_where_to_resume()
     {
        let (mut sink, mut stream) = event_stream(STALL, 5);
        let started = Instant::now();
        let mut seq = 5;
        let error = loop {
            match sink.send(chunk(seq)).await {
                Ok(()) => seq += 1,
                Err(error) => break error,
            }
        };
        assert_eq!(error, "the client fell behind");
        assert_eq!(started.elapsed(), STALL);
        let stalled_at = seq;
        assert_eq!(stalled_at, 5 + BUFFERED_EVENTS as u64);
        drop(sink);
        let mut got = Vec::new();
        while let Some(event) = stream.next().await {
            got.push(event);
        }
        assert_eq!(got.len(), BUFFERED_EVENTS + 1, "{got:?}");
        let delivered: Vec<u64> = got[..BUFFERED_EVENTS].iter().map(seq_of).collect();
        assert_eq!(delivered, (5..stalled_at).collect::<Vec<_>>());
        let status = got[BUFFERED_EVENTS].as_ref().unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            format!(
                "the follower fell behind: it took no event for 1m \
                 (HODEI_FOLLOW_STALL_TIMEOUT); follow again with --from-seq {stalled_at}"
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_follower_that_keeps_taking_events_is_kept() {
        let (mut sink, mut stream) = event_stream(STALL, 0);
        let reader = tokio::spawn(async move {
            let mut seqs = Vec::new();
            while let Some(event) = stream.next().await {
                seqs.push(seq_of(&event));
                tokio::time::sleep(STALL / 2).await;
            }
            seqs
        });
        for seq in 1..=40 {
            sink.send(chunk(seq)).await.unwrap();
        }
        drop(sink);
        assert_eq!(reader.await.unwrap(), (1..=40).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_status_follows_the_buffered_events_and_a_clean_end_adds_none() {
        let (mut sink, stream) = event_stream(STALL, 0);
        let state = JobEvent::State {
            state: JobState::Running,
            detail: None,
        };
        sink.send(state.clone()).await.unwrap();
        sink.finish(Status::unavailable("gone"));
        drop(sink);
        let got: Vec<_> = stream.collect().await;
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert_eq!(
            got[1].as_ref().unwrap_err().code(),
            tonic::Code::Unavailable
        );

        let (mut sink, stream) = event_stream(STALL, 0);
        sink.send(state).await.unwrap();
        drop(sink);
        let got: Vec<_> = stream.collect().await;
        assert_eq!(got.len(), 1);
    }

    #[tokio::test]
    async fn a_sender_notices_when_the_client_is_gone() {
        let (mut sink, stream) = event_stream(STALL, 0);
        let gone = sink.client_gone();
        drop(stream);
        gone.await;
        assert_eq!(sink.send(chunk(1)).await, Err("client went away"));
    }
}
