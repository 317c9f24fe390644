//! The journal writer: one task commits queued events in order, a batch per
//! transaction (group commit), tells the observer, and answers the appenders
//! that wait for durability; the executor's side of it (journal, sync,
//! journal_soon, durable).
//!
//! It is also the run's one masking choke point: every event and every log
//! line leaves the engine through it (to the journal, the log store, the
//! observer's terminal, events and reports), and each is masked here with
//! every value known to be secret at that moment.

use super::*;
use crate::secrets::MaskKey;

/// Tells an awaiting appender whether its batch was committed.
pub(super) type Ack = tokio::sync::oneshot::Sender<bool>;

/// What the writer task is given, in order.
pub(super) enum Msg {
    /// A journal event, and who waits for it to be durable.
    Event(Event, Option<Ack>),
    /// A log line, shown to the observer in order with the events.
    Log(LogLine),
    /// Answered once everything before it is committed.
    Sync(Ack),
}

/// A message of a batch once its event (if any) has moved to the batch's
/// events: the order to answer in.
enum Slot {
    Event(Option<Ack>),
    Log(LogLine),
    Sync(Ack),
}

/// Where masked lines go, besides the observer: the buffer the log flusher
/// stores.
pub(super) type LogBuffer = Arc<Mutex<Vec<LogLine>>>;

/// Commits queued events in order, a batch per transaction, then tells the
/// observer (events and log lines in order) and the awaiting appenders. A
/// failure stops the run. Events and lines are masked first.
pub(super) fn spawn_writer(
    store: Arc<dyn Store>,
    observer: Arc<dyn Observer>,
    run: String,
    (error, abort): (Arc<Mutex<Option<StoreError>>>, CancellationToken),
    durable: Arc<std::sync::atomic::AtomicU64>,
    (masker, logs, key): (Arc<Masker>, LogBuffer, Option<Arc<MaskKey>>),
) -> (tokio::sync::mpsc::UnboundedSender<Msg>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Msg>();
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(next) = rx.try_recv() {
                batch.push(next);
            }
            // The events move out of the batch (no copy: an event can carry a
            // large fan-out's outputs); the rest keeps its order.
            let mut events: Vec<Event> = Vec::new();
            let batch: Vec<Slot> = batch
                .into_iter()
                .map(|m| match m {
                    Msg::Event(e, ack) => {
                        events.push(masker.event(e));
                        Slot::Event(ack)
                    }
                    Msg::Log(mut line) => {
                        line.line = masker.text(&line.line);
                        line.step = masker.text(&line.step);
                        if let Ok(mut b) = logs.lock() {
                            b.push(line.clone());
                        }
                        Slot::Log(line)
                    }
                    Msg::Sync(ack) => Slot::Sync(ack),
                })
                .collect();
            // Values registered since the last batch are journalled with it,
            // sealed: resume masks them again. Without a key, that there was
            // one (empty): resume knows it cannot mask it and refuses.
            let sent = events.len();
            events.extend(masker.take_fresh().iter().map(|v| Event::MaskRegistered {
                sealed: key.as_ref().and_then(|k| k.seal(v)).unwrap_or_default(),
            }));
            let failed = error.lock().map(|e| e.is_some()).unwrap_or(true);
            let ok = events.is_empty()
                || (!failed
                    && match store.append_all(&run, &events).await {
                        Ok(_) => {
                            // What the executor sent: it counts those alone.
                            let n = u64::try_from(sent).unwrap_or(u64::MAX);
                            durable.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                            true
                        }
                        Err(e) => {
                            if let Ok(mut slot) = error.lock() {
                                slot.get_or_insert(e);
                            }
                            abort.cancel();
                            false
                        }
                    });
            let mut written = events.iter();
            for msg in batch {
                match msg {
                    Slot::Log(line) => observer.log(&line),
                    Slot::Sync(ack) => {
                        let _ = ack.send(ok);
                    }
                    Slot::Event(ack) => {
                        if let (true, Some(e)) = (ok, written.next()) {
                            observer.event(&run, e);
                        }
                        if let Some(ack) = ack {
                            let _ = ack.send(ok);
                        }
                    }
                }
            }
        }
    });
    (tx, task)
}

pub(super) async fn flush(store: &dyn Store, run: &str, logs: &Mutex<Vec<LogLine>>) {
    let batch = match logs.lock() {
        Ok(mut b) => std::mem::take(&mut *b),
        Err(_) => return,
    };
    // Logs are best effort; the journal is what must never be lost.
    let _ = store.append_logs(run, &batch).await;
}

impl<'a> Exec<'a> {
    pub(super) fn take_store_error(&self) -> Option<StoreError> {
        self.store_error.lock().ok().and_then(|mut e| e.take())
    }

    /// Appends to the journal and waits until it (and everything queued
    /// before it) is durable. False if the journal failed: the run stops.
    pub(super) async fn journal(&self, event: Event) -> bool {
        let (ack, done) = tokio::sync::oneshot::channel();
        if self.writer.send(Msg::Event(event, Some(ack))).is_err() {
            return false;
        }
        self.sent.set(self.sent.get() + 1);
        done.await.unwrap_or(false)
    }

    /// Waits until everything queued is durable.
    pub(super) async fn sync(&self) {
        let (ack, done) = tokio::sync::oneshot::channel();
        if self.writer.send(Msg::Sync(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// Queues an event; it is committed with the next awaited one, or as soon
    /// as the executor waits for anything.
    pub(super) fn journal_soon(&self, event: Event) {
        if self.writer.send(Msg::Event(event, None)).is_ok() {
            self.sent.set(self.sent.get() + 1);
        }
    }

    /// Events sent but not yet durable.
    pub(super) fn backlog(&self) -> u64 {
        self.sent
            .get()
            .saturating_sub(self.durable.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Waits until the first `n` events sent are durable; false if the
    /// journal failed first (then nothing that depends on them may start).
    pub(super) async fn durable(&self, n: u64) -> bool {
        let committed = || self.durable.load(std::sync::atomic::Ordering::SeqCst);
        if committed() >= n {
            return true;
        }
        self.sync().await;
        committed() >= n
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use runbook_state::{NewRun, SqliteStore};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Sees events and lines in the order the writer tells them.
    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    impl Observer for Seen {
        fn event(&self, _: &str, event: &Event) {
            if let Event::StepStarted { step, .. } = event {
                self.0.lock().unwrap().push(format!("event {step}"));
            }
        }
        fn log(&self, line: &LogLine) {
            self.0.lock().unwrap().push(format!("log {}", line.line));
        }
    }

    fn started(step: &str) -> Event {
        Event::StepStarted {
            step: step.into(),
            attempt: 1,
        }
    }

    fn line(text: &str) -> LogLine {
        LogLine {
            step: "a".into(),
            at: runbook_state::now(),
            stream: Stream::Stdout,
            line: text.into(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn queued_events_commit_with_the_next_awaited_one_and_are_told_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).await.unwrap());
        let new = NewRun {
            id: "r".into(),
            playbook: "p".into(),
            version: 1,
            text: String::new(),
            hash: String::new(),
            calls: Default::default(),
            inputs: Json::Null,
            user: "u".into(),
        };
        let first = Event::RunStarted {
            user: "u".into(),
            runner: None,
        };
        store.create_run(&new, &first).await.unwrap();
        let seen = Arc::new(Seen::default());
        let durable = Arc::new(AtomicU64::new(0));
        let failed = (Arc::new(Mutex::new(None)), CancellationToken::new());
        let (tx, task) = spawn_writer(
            store.clone(),
            seen.clone(),
            "r".into(),
            failed,
            durable.clone(),
            (Arc::new(Masker::new([])), Default::default(), None),
        );
        // Two queued events and a line, then one that is awaited.
        tx.send(Msg::Event(started("a"), None)).unwrap();
        tx.send(Msg::Log(line("hello"))).unwrap();
        tx.send(Msg::Event(started("b"), None)).unwrap();
        let (ack, done) = tokio::sync::oneshot::channel();
        tx.send(Msg::Event(started("c"), Some(ack))).unwrap();
        assert!(done.await.unwrap(), "committed");
        assert_eq!(
            durable.load(Ordering::SeqCst),
            3,
            "all three are durable once the awaited one is"
        );
        let steps: Vec<String> = store
            .events("r")
            .await
            .unwrap()
            .into_iter()
            .filter_map(|r| match r.event {
                Event::StepStarted { step, .. } => Some(step),
                _ => None,
            })
            .collect();
        assert_eq!(steps, ["a", "b", "c"]);
        assert_eq!(
            *seen.0.lock().unwrap(),
            ["event a", "log hello", "event b", "event c"],
            "the observer sees lines where they happened among the events"
        );
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_journal_that_cannot_be_written_stops_the_run_and_acks_false() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).await.unwrap());
        // No run `ghost`: the journal refuses its events (foreign key).
        let seen = Arc::new(Seen::default());
        let error = Arc::new(Mutex::new(None));
        let abort = CancellationToken::new();
        let durable = Arc::new(AtomicU64::new(0));
        let (tx, task) = spawn_writer(
            store,
            seen.clone(),
            "ghost".into(),
            (error.clone(), abort.clone()),
            durable,
            (Arc::new(Masker::new([])), Default::default(), None),
        );
        let (ack, done) = tokio::sync::oneshot::channel();
        tx.send(Msg::Event(started("a"), Some(ack))).unwrap();
        assert!(!done.await.unwrap(), "not committed");
        assert!(abort.is_cancelled(), "the run is told to stop");
        assert!(error.lock().unwrap().is_some(), "and why");
        assert!(
            seen.0.lock().unwrap().is_empty(),
            "nobody is told of an event that is not durable"
        );
        drop(tx);
        task.await.unwrap();
    }
}
