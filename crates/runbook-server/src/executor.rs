//! Where the runs this server starts execute: one task per run on a
//! `LocalSet` (the engine's futures are not `Send`), fed by the handlers
//! through a channel. Each run gets `Signals` of its own, registered under
//! its id while it executes, so that a cancel stops that run and nothing
//! else. Following a run for an event stream happens here too, for the same
//! reason.

use crate::Shared;
use runbook_core::validate::Loaded;
use runbook_engine::exec::Signals;
use runbook_runner::follow::{Cursor, Followed, Follower};
use runbook_runner::leases::LeaseOptions;
use runbook_runner::{Answer, Cancelled, Checked, Decisions, Resumed, RunOptions, RunnerError};
use runbook_state::{LogLine, Recorded, RunStatus};
use serde_json::{Value as Json, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What a continued run did (the answer to approve, reject, resume, cancel).
pub(crate) type Continued = Result<crate::bodies::Continued, RunnerError>;

/// Work for the executor.
pub(crate) enum Job {
    /// Start a checked run; the reply is its id, once it is recorded.
    Start {
        loaded: Box<Loaded>,
        checked: Checked,
        yes: bool,
        /// Who starts it.
        user: String,
        reply: oneshot::Sender<Result<String, RunnerError>>,
    },
    /// Queue a run for the workers; the reply is its id, once it is queued.
    Submit {
        loaded: Box<Loaded>,
        inputs: indexmap::IndexMap<String, Json>,
        /// Who submits it.
        user: String,
        reply: oneshot::Sender<Result<String, RunnerError>>,
    },
    /// Continue a run; the reply comes when it stops (or is refused).
    Continue {
        id: String,
        how: How,
        /// Who continues it.
        user: String,
        reply: oneshot::Sender<Continued>,
    },
    /// Stream a run's journal and logs from a cursor.
    Follow {
        id: String,
        from: Cursor,
        to: mpsc::UnboundedSender<Streamed>,
    },
}

/// How a run continues.
pub(crate) enum How {
    Answer(Answer),
    Resume { rerun: Vec<String>, mark_done: Vec<String> },
    Cancel,
}

/// One item of a run's event stream.
pub(crate) struct Streamed {
    /// The cursor after it (the SSE id).
    pub(crate) cursor: Cursor,
    /// `journal`, `log` or `end`.
    pub(crate) kind: &'static str,
    pub(crate) data: Json,
}

/// Runs jobs until `stop`, then stops every run executing here and waits
/// for them (at most the grace period).
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut inbox: mpsc::UnboundedReceiver<Job>,
    stop: runbook_core::kind::CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    // The event streams it feeds: they end as the server stops (a client
    // reconnects with its cursor), rather than hold it up for the grace
    // period while the runs they follow stop.
    let mut follows = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            job = inbox.recv() => match job {
                Some(job @ Job::Follow { .. }) => { follows.spawn_local(one(shared.clone(), job)); }
                Some(job) => { tasks.spawn_local(one(shared.clone(), job)); }
                None => break,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            Some(_) = follows.join_next(), if !follows.is_empty() => {}
        }
    }
    inbox.close();
    follows.abort_all();
    if let Ok(running) = shared.running.lock() {
        for signals in running.values() {
            signals.stop.cancel();
        }
    }
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(shared.options.grace, all).await.is_err() {
        tasks.abort_all();
    }
}

impl Shared {
    fn options(&self, yes: bool) -> RunOptions {
        RunOptions {
            max_parallel: self.options.max_parallel,
            auto_approve: yes,
            lease: LeaseOptions {
                ttl: self.options.lock_ttl,
                wait: Duration::ZERO,
            },
            signals: Signals::default(),
        }
    }

    /// Registers a run as executing here; false if it already is.
    fn track(&self, id: &str, signals: &Signals) -> bool {
        match self.running.lock() {
            Ok(mut r) if !r.contains_key(id) => {
                r.insert(id.to_owned(), signals.clone());
                true
            }
            _ => false,
        }
    }

    fn untrack(&self, id: &str) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(id);
        }
    }
}

async fn one(shared: Arc<Shared>, job: Job) {
    match job {
        Job::Start {
            loaded,
            checked,
            yes,
            user,
            reply,
        } => {
            let opts = shared.options(yes);
            let runner = shared.runner_as(&user);
            match runner.begin_checked(&loaded, checked, &opts).await {
                Ok(started) => {
                    let id = started.run_id().to_owned();
                    shared.track(&id, &opts.signals);
                    let _ = reply.send(Ok(id.clone()));
                    let _ = started.execute(&opts).await;
                    shared.untrack(&id);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        Job::Submit {
            loaded,
            inputs,
            user,
            reply,
        } => {
            let _ = reply.send(shared.runner_as(&user).submit(&loaded, inputs).await);
        }
        Job::Continue { id, how, user, reply } => {
            let opts = shared.options(false);
            // A run that stopped for a person a moment ago may still be
            // finishing here (giving back its lock, its runner): wait for it.
            for _ in 0..50 {
                if shared.signals_of(&id).is_none() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !shared.track(&id, &opts.signals) {
                let holder = runbook_runner::Holder::Process(std::process::id());
                let _ = reply.send(Err(RunnerError::Busy { id, holder }));
                return;
            }
            let r = continue_run(&shared, &user, &id, how, &opts).await;
            shared.untrack(&id);
            let _ = reply.send(r);
        }
        Job::Follow { id, from, to } => follow(&shared, &id, from, to).await,
    }
}

async fn continue_run(shared: &Shared, user: &str, id: &str, how: How, opts: &RunOptions) -> Continued {
    let runner = &shared.runner_as(user);
    let resumed = match how {
        How::Answer(answer) => runner.answer(id, &answer, opts).await?,
        How::Resume { rerun, mark_done } => {
            let d = Decisions {
                rerun: &rerun,
                mark_done: &mark_done,
                library: Some(&shared.library),
                ..Decisions::default()
            };
            runner.resume(id, &d, opts).await?
        }
        How::Cancel => {
            return Ok(match runner.cancel(id, opts).await? {
                Cancelled::AfterHandlers(o) => stopped(o.run_id, o.status),
                done => crate::bodies::Continued {
                    run: id.to_owned(),
                    status: None,
                    message: Some(done.to_string()),
                },
            });
        }
    };
    Ok(match resumed {
        Resumed::Executed(o) => stopped(o.run_id, o.status),
        Resumed::Requeued(run) => stopped(run, RunStatus::Queued),
    })
}

fn stopped(run: String, status: RunStatus) -> crate::bodies::Continued {
    crate::bodies::Continued {
        run,
        status: Some(status.as_str().to_owned()),
        message: None,
    }
}

/// Sends what a followed run records into the stream, until it stops or
/// the client goes away.
struct Stream {
    to: mpsc::UnboundedSender<Streamed>,
    at: Mutex<Cursor>,
}

impl Stream {
    fn send(&self, kind: &'static str, data: Json, moved: impl FnOnce(&mut Cursor)) {
        let Ok(mut at) = self.at.lock() else { return };
        moved(&mut at);
        let _ = self.to.send(Streamed {
            cursor: *at,
            kind,
            data,
        });
    }
}

impl Follower for Stream {
    fn recorded(&self, _: &str, rec: &Recorded) {
        let data = serde_json::to_value(rec).unwrap_or_default();
        self.send("journal", data, |c| c.event = rec.seq);
    }

    fn log(&self, seq: i64, line: &LogLine) {
        let mut data = serde_json::to_value(line).unwrap_or_default();
        if let Some(m) = data.as_object_mut() {
            m.insert("seq".into(), seq.into());
        }
        self.send("log", data, |c| c.log = seq);
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn follow(shared: &Shared, id: &str, from: Cursor, to: mpsc::UnboundedSender<Streamed>) {
    let stop = runbook_core::kind::CancellationToken::new();
    let gone = stop.clone();
    let closed = to.clone();
    let watch = tokio::task::spawn_local(async move {
        closed.closed().await;
        gone.cancel();
    });
    // It holds a sender of the stream: aborted with this follow (a stopping
    // server aborts it), else the stream would never end.
    let _watch = AbortOnDrop(watch.abort_handle());
    let stream = Stream {
        to,
        at: Mutex::new(from),
    };
    let store = shared.runner.store.as_ref();
    let end = match runbook_runner::follow::follow(store, id, from, &stream, &stop, shared.options.poll).await {
        Ok(Followed::Stopped(status)) => json!({ "status": status.as_str() }),
        Ok(Followed::Left(_)) => Json::Null,
        Err(e) => json!({ "error": e.to_string() }),
    };
    if !end.is_null() {
        stream.send("end", end, |_| {});
    }
}
