//! Following a run another process executes (a worker, another terminal):
//! its journal events and log lines, read from the store in the order they
//! happened, from a cursor, until it stops for good or for a person. What a
//! `run --submit --wait` shows, and what a server streams (the cursor is what
//! a client that reconnects says it has already seen).

use runbook_core::kind::CancellationToken;
use runbook_state::{LogLine, Recorded, RunStatus, Store, StoreError};
use std::time::Duration;

/// Is told what a followed run records, in order.
pub trait Follower {
    /// A journal event, with when it was recorded.
    fn recorded(&self, run: &str, rec: &Recorded);
    /// A step's log line, with its sequence number (the cursor's `log`).
    fn log(&self, seq: i64, line: &LogLine);
    /// The store did not answer (told once per outage); following goes on
    /// trying for [`OUTAGE`].
    fn unreachable(&self, _error: &StoreError) {}
}

/// How long following outlasts a store that does not answer (a state
/// database failing over to its standby) before it gives up.
pub const OUTAGE: Duration = Duration::from_secs(90);

/// What has been seen of a run: the last journal sequence number and the
/// last log line's (0: nothing yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The last event seen.
    pub event: i64,
    /// The last log line seen.
    pub log: i64,
}

/// How following ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// The run stopped for good or for a person (not queued, running or
    /// interrupted: a worker's shutdown leaves a run for the next worker).
    Stopped(RunStatus),
    /// The follower was asked to stop; the run goes on.
    Left(Cursor),
}

/// Tells `follower` everything after `from`, polling every `poll`, until the
/// run stops or `stop` is cancelled. A store that stops answering is tried
/// again until it has been down for [`OUTAGE`].
pub async fn follow(
    store: &dyn Store,
    run: &str,
    from: Cursor,
    follower: &dyn Follower,
    stop: &CancellationToken,
    poll: Duration,
) -> Result<Followed, StoreError> {
    let mut at = from;
    let mut down_since: Option<std::time::Instant> = None;
    loop {
        // Read after the status, so the last ones are never missed; told in
        // the order they happened.
        let read = async {
            let status = store.run(run).await?.status;
            let lines = store.logs(run, None, at.log).await?;
            let events = store.events_after(run, at.event).await?;
            Ok::<_, StoreError>((status, lines, events))
        };
        let (status, lines, events) = match read.await {
            Ok(read) => {
                down_since = None;
                read
            }
            Err(e @ (StoreError::NoRun(_) | StoreError::Ambiguous(_))) => return Err(e),
            Err(e) => {
                let since = *down_since.get_or_insert_with(|| {
                    follower.unreachable(&e);
                    std::time::Instant::now()
                });
                if since.elapsed() >= OUTAGE {
                    return Err(e);
                }
                tokio::select! {
                    () = tokio::time::sleep(poll.max(Duration::from_millis(500))) => continue,
                    () = stop.cancelled() => return Ok(Followed::Left(at)),
                }
            }
        };
        let mut events = events.iter().peekable();
        let mut lines = lines.iter().peekable();
        loop {
            let event_first = match (events.peek(), lines.peek()) {
                (Some(e), Some((_, l))) => e.at <= l.at,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if event_first {
                if let Some(rec) = events.next() {
                    follower.recorded(run, rec);
                    at.event = rec.seq;
                }
            } else if let Some((seq, line)) = lines.next() {
                follower.log(*seq, line);
                at.log = *seq;
            }
        }
        if !matches!(status, RunStatus::Queued | RunStatus::Running | RunStatus::Interrupted) {
            return Ok(Followed::Stopped(status));
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = stop.cancelled() => return Ok(Followed::Left(at)),
        }
    }
}
