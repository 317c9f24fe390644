//! The worker loop: executes the runs of the shared queue (`run --submit`).
//!
//! A worker claims a run with a lease (`Store::claim`, `FOR UPDATE SKIP
//! LOCKED` in PostgreSQL), renews it with a heartbeat while the run executes in
//! this process, and writes to the run only through [`Fenced`], which checks
//! the lease in every write's transaction. A worker that dies stops renewing;
//! once its lease expires another worker claims the run and continues it
//! through the resume path, with the usual policy for the step that was in
//! flight (rerun if idempotent, otherwise the run stops as uncertain). A worker
//! that stalled past its lease can never write to the run again: its next write
//! is refused, and its heartbeat kills the steps it still had running.

use crate::RunnerError;
use crate::decide::{load_stored, stored_inputs};
use crate::leases::{self, LeaseOptions};
use crate::lifecycle::{RunOptions, Runner};
use crate::notice::{Notice, Watcher};
use runbook_engine::exec::Signals;
use runbook_state::{Event, Fenced, Lease, RunStatus, Store, StoreError, WorkerInfo};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a worker works.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Its name in the store (`HOST:PID` by convention).
    pub name: String,
    /// This machine's name, for `runbook workers`.
    pub host: String,
    /// Runs at once.
    pub concurrency: usize,
    /// How long a claim lasts unless renewed.
    pub lease_ttl: Duration,
    /// How often to look for work when the store cannot say.
    pub poll: Duration,
    /// Stop when the queue is empty and nothing runs.
    pub exit_when_idle: bool,
}

/// Makes the watcher of one claimed run (its lines carry the run's id).
pub type WatcherFor = dyn Fn(&str) -> Arc<dyn Watcher>;

/// What every run of this worker shares.
struct Worker<'a> {
    runner: &'a Runner,
    opts: &'a WorkerOptions,
    watcher_for: &'a WatcherFor,
}

/// Serves the queue until `signals.stop` (or idle, with `exit_when_idle`):
/// registers the worker, claims and executes runs, and on a graceful stop lets
/// each run stop its steps and give its lease back, so another worker
/// continues it at once. Runs execute on this thread (the engine's futures
/// are not `Send`).
pub async fn work(
    runner: &Runner,
    opts: &WorkerOptions,
    signals: &Signals,
    watcher_for: &WatcherFor,
) -> Result<(), RunnerError> {
    if opts.lease_ttl < Duration::from_secs(1) {
        return Err(RunnerError::Options(format!(
            "--lease-ttl must be at least 1s, got {}",
            runbook_report::short(opts.lease_ttl)
        )));
    }
    let store = &runner.store;
    let me = WorkerInfo {
        name: opts.name.clone(),
        host: opts.host.clone(),
        pid: std::process::id(),
        concurrency: u32::try_from(opts.concurrency.max(1)).unwrap_or(u32::MAX),
        ttl_ms: i64::try_from(opts.lease_ttl.as_millis()).unwrap_or(i64::MAX),
    };
    store.worker_seen(&me, false).await?;
    let local = tokio::task::LocalSet::new();
    let served = local
        .run_until(async {
            // Heard of every third of the lease time, for `runbook workers`.
            let presence = {
                let (store, me, every) = (store.clone(), me.clone(), opts.lease_ttl / 3);
                tokio::task::spawn_local(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        let _ = store.worker_seen(&me, false).await;
                    }
                })
            };
            let w = Worker {
                runner,
                opts,
                watcher_for,
            };
            let served = w.serve(signals).await;
            presence.abort();
            served
        })
        .await;
    // Tasks left in the set (aborted heartbeats) hold the store: drop them
    // here, where its connections can still hand themselves back.
    drop(local);
    let _ = store.worker_seen(&me, true).await;
    served
}

impl Worker<'_> {
    /// Claims and executes runs until stopped (or idle).
    async fn serve(&self, signals: &Signals) -> Result<(), RunnerError> {
        let (name, concurrency) = (&self.opts.name, self.opts.concurrency.max(1));
        self.runner.watcher.notice(&Notice::WorkerStarted {
            name: name.clone(),
            concurrency,
            ttl: self.opts.lease_ttl,
        });
        let mut running = tokio::task::JoinSet::new();
        // The database refused the last claim: not idle, whatever `exit_when_idle`.
        let mut failing = false;
        while !signals.stop.is_cancelled() {
            let mut claimed = false;
            while running.len() < concurrency && !signals.stop.is_cancelled() {
                match self.runner.store.claim(name, self.opts.lease_ttl).await {
                    Ok(Some(lease)) => {
                        claimed = true;
                        failing = false;
                        let run = Signals {
                            stop: signals.stop.child_token(),
                            kill: signals.kill.child_token(),
                        };
                        let take = self.take(lease, run);
                        running.spawn_local(take);
                    }
                    Ok(None) => {
                        failing = false;
                        break;
                    }
                    Err(e @ StoreError::Unsupported(_)) => return Err(e.into()),
                    Err(error) => {
                        // The database may come back; the runs in hand go on.
                        self.runner.watcher.notice(&Notice::ClaimFailed {
                            name: name.clone(),
                            error,
                        });
                        failing = true;
                        break;
                    }
                }
            }
            if self.opts.exit_when_idle && !claimed && running.is_empty() && !failing {
                break;
            }
            tokio::select! {
                Some(_) = running.join_next(), if !running.is_empty() => {}
                () = self.runner.store.wait_for_work(self.opts.poll), if running.len() < concurrency => {}
                () = signals.stop.cancelled() => {}
            }
        }
        while running.join_next().await.is_some() {}
        self.runner
            .watcher
            .notice(&Notice::WorkerStopped { name: name.clone() });
        Ok(())
    }

    /// One claimed run, executed while its heartbeat renews the lease; a
    /// future that owns what it needs.
    fn take(&self, lease: Lease, signals: Signals) -> impl std::future::Future<Output = ()> + 'static {
        let watcher = (self.watcher_for)(&lease.run_id);
        let fenced: Arc<dyn Store> = Arc::new(Fenced::new(self.runner.store.clone(), lease.clone()));
        let runner = Runner {
            watcher: watcher.clone(),
            ..self.runner.with_store(fenced)
        };
        let (store, name, ttl) = (self.runner.store.clone(), self.opts.name.clone(), self.opts.lease_ttl);
        async move {
            let beat = Heartbeat {
                store: store.clone(),
                watcher: watcher.clone(),
                worker: name.clone(),
                ttl,
            };
            let heartbeat = tokio::task::spawn_local(beat.run(lease.clone(), signals.clone()));
            if let Err(why) = continue_claimed(&runner, &name, &lease, signals).await {
                watcher.notice(&Notice::NotExecuted {
                    run: lease.run_id.clone(),
                    why,
                });
            }
            heartbeat.abort();
            if let Err(error) = store.release_lease(&lease).await {
                watcher.notice(&Notice::LeaseNotReturned {
                    run: lease.run_id.clone(),
                    error,
                });
            }
        }
    }
}

/// Renews one run's lease.
struct Heartbeat {
    store: Arc<dyn Store>,
    watcher: Arc<dyn Watcher>,
    worker: String,
    ttl: Duration,
}

impl Heartbeat {
    /// Renews the lease every third of its time to live. A lost lease
    /// (expired, or taken over) kills the run's steps at once: the run is
    /// someone else's. An operator's `cancel` stops the run gracefully.
    async fn run(self, lease: Lease, signals: Signals) {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.ttl / 3).await;
            // An unreachable database must not hold the heartbeat past the lease.
            let renewal = tokio::time::timeout(self.ttl / 3, self.store.renew_lease(&lease, self.ttl)).await;
            let renewal = renewal.unwrap_or_else(|_| {
                Err(StoreError::Unsupported(
                    "the state database did not answer in time".into(),
                ))
            });
            match renewal {
                Ok(Some(cancel)) => {
                    renewed = Instant::now();
                    if cancel {
                        signals.stop.cancel();
                    }
                }
                Ok(None) => break,
                Err(error) if renewed.elapsed() < self.ttl => {
                    self.watcher.notice(&Notice::RenewFailed {
                        run: lease.run_id.clone(),
                        error,
                    });
                }
                Err(_) => break,
            }
        }
        self.watcher.notice(&Notice::LeaseLost {
            run: lease.run_id.clone(),
            worker: self.worker.clone(),
            epoch: lease.epoch,
        });
        signals.kill.cancel();
    }
}

/// Ends a run that cannot execute here, saying why in its journal.
async fn fail(store: &Arc<dyn Store>, run: &str, first: &Event, error: String) -> Result<(), String> {
    let done = Event::RunFinished {
        status: RunStatus::Failed,
        error: Some(error.clone()),
    };
    store
        .append_all(run, &[first.clone(), done])
        .await
        .map_err(|e| e.to_string())?;
    Err(error)
}

/// Starts or continues a claimed run through the resume path. A run that
/// cannot execute here (it no longer validates, a secret is missing on this
/// worker) fails with the reason in its journal.
async fn continue_claimed(runner: &Runner, worker: &str, lease: &Lease, signals: Signals) -> Result<(), String> {
    let store = &runner.store;
    let record = store.run(&lease.run_id).await.map_err(|e| e.to_string())?;
    if !matches!(
        record.status,
        RunStatus::Queued | RunStatus::Running | RunStatus::Interrupted
    ) {
        // It ended (cancelled) between the claim and now.
        return Ok(());
    }
    let events = store.events(&record.id).await.map_err(|e| e.to_string())?;
    let started = events.iter().any(|r| matches!(r.event, Event::RunStarted { .. }));
    let (user, runner_name) = (runner.user.clone(), Some(worker.to_owned()));
    let first = if started {
        Event::RunResumed {
            user,
            runner: runner_name,
        }
    } else {
        Event::RunStarted {
            user,
            runner: runner_name,
        }
    };
    let fail = |error: String| fail(store, &record.id, &first, error);
    let loaded = match load_stored(&record, &runner.registry) {
        Ok(l) => l,
        Err(e) => return fail(format!("{e} (worker {worker})")).await,
    };
    let pb = &loaded.playbook;
    let secrets = match runner.secrets(pb) {
        Ok(s) => s,
        Err(RunnerError::MissingSecrets { messages, .. }) => {
            return fail(format!("on worker {worker}: {}", messages.join("; "))).await;
        }
        Err(e) => return fail(e.to_string()).await,
    };
    let inputs = stored_inputs(&record);
    let keys = match leases::keys(&loaded, &inputs, &runner.env) {
        Ok(k) => k,
        Err(e) => return fail(e.to_string()).await,
    };
    // The run's lock, waited for as long as it takes: the waiting ends when
    // the worker stops or loses the lease, and the run stays as it was, for
    // the next claim.
    let opts = RunOptions {
        lease: LeaseOptions {
            ttl: Duration::from_secs(30),
            wait: Duration::from_secs(365 * 24 * 3600),
        },
        signals: signals.clone(),
        ..RunOptions::default()
    };
    let taken = tokio::select! {
        r = runner.acquire(&keys, &record.id, opts.lease) => r.is_ok(),
        () = signals.stop.cancelled() => false,
        () = signals.kill.cancelled() => false,
    };
    if !taken {
        let _ = store.release_locks(&record.id).await;
        return Err(format!(
            "run {} did not get its lock; the next claim tries again",
            record.id
        ));
    }
    store.append(&record.id, &first).await.map_err(|e| e.to_string())?;
    let x = runner
        .continued(&record, &loaded, inputs, secrets, &keys)
        .await
        .map_err(|e| e.to_string())?;
    runner.watching(x.notifier.as_ref()).event(&record.id, &first);
    match runner.execute(x, &opts).await {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}
