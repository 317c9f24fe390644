//! `runbook serve`: the HTTP API over the runner library, for the team's
//! browsers and tools. It owns the routes under `/api/v1/`, the mapping from
//! the runner's errors to HTTP statuses, and the execution of the runs it
//! starts, in this process; everything about a run itself (checks, locks,
//! the journal, resume, approvals) is runbook-runner's, exactly as for the
//! command line, so a run started here and one started at a terminal are
//! the same run.
//!
//! The one design decision to know: runs execute on one thread of their
//! own ([`executor`]: the engine's futures are not `Send`), fed by a channel
//! from the handlers, which only read the store and answer. A run's live
//! events are read back from the journal ([`runbook_runner::follow`]) and
//! streamed as Server-Sent Events whose ids are the follow cursor, so a
//! client that reconnects with `Last-Event-ID` misses nothing and sees
//! nothing twice.

mod api;
pub mod bodies;
mod error;
mod executor;
mod identity;
pub mod openapi;
mod tls;

pub use identity::Identity;
pub use tls::Tls;

pub use error::ApiError;

use executor::Job;
use runbook_core::kind::CancellationToken;
use runbook_core::library::Library;
use runbook_engine::exec::Signals;
use runbook_runner::Runner;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How the runs this server starts execute.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// At most this many step calls at once, per run.
    pub max_parallel: usize,
    /// The time to live of a run's `lock:` leases (renewed while it runs).
    pub lock_ttl: Duration,
    /// How often a followed run's journal is read for new events.
    pub poll: Duration,
    /// How long a stopping server waits for its runs to stop.
    pub grace: Duration,
    /// Who a request acts as when it carries no API token.
    pub identity: Identity,
    /// The roles file: who may do what on which playbooks (see
    /// [`runbook_runner::access`]).
    pub roles: Option<runbook_runner::access::Roles>,
    /// Hand the runs it starts to the workers' queue (PostgreSQL state)
    /// instead of executing them in this process.
    pub queue: bool,
    /// At most this many event streams open at once per caller (429 past it).
    pub streams_per_caller: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_parallel: 8,
            lock_ttl: Duration::from_secs(30),
            poll: Duration::from_millis(200),
            grace: Duration::from_secs(60),
            identity: Identity::Process,
            roles: None,
            queue: false,
            streams_per_caller: 64,
        }
    }
}

/// The server: cheap to clone (one shared state).
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

/// What the handlers and the executor share.
pub(crate) struct Shared {
    pub(crate) runner: Runner,
    pub(crate) library: Library,
    pub(crate) options: ServeOptions,
    /// The runs executing in this process, by id, and what stops each.
    pub(crate) running: Mutex<HashMap<String, Signals>>,
    jobs: mpsc::UnboundedSender<Job>,
    /// The executor's end of the channel, until `serve` takes it.
    inbox: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    /// Browsers signed in with a token.
    pub(crate) sessions: identity::Sessions,
    /// Served over TLS: cookies are `Secure`.
    pub(crate) secure: std::sync::atomic::AtomicBool,
    /// The event streams open, by caller.
    pub(crate) streams: Arc<Mutex<HashMap<String, usize>>>,
}

impl Shared {
    /// Hands a job to the executor; false if it has stopped.
    pub(crate) fn submit(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }

    /// The runner acting as `user`.
    pub(crate) fn runner_as(&self, user: &str) -> Runner {
        Runner {
            user: user.to_owned(),
            ..self.runner.clone()
        }
    }

    /// What stops the run `id` if it executes here.
    pub(crate) fn signals_of(&self, id: &str) -> Option<Signals> {
        self.running.lock().ok()?.get(id).cloned()
    }
}

impl Server {
    /// A server over `runner` (its store, kinds, user, environment and
    /// inventory) and the playbook library.
    pub fn new(runner: Runner, library: Library, options: ServeOptions) -> Server {
        let (jobs, inbox) = mpsc::unbounded_channel();
        Server {
            shared: Arc::new(Shared {
                runner,
                library,
                options,
                running: Mutex::new(HashMap::new()),
                jobs,
                inbox: Mutex::new(Some(inbox)),
                sessions: identity::Sessions::new(),
                secure: std::sync::atomic::AtomicBool::new(false),
                streams: Arc::default(),
            }),
        }
    }

    /// The routes (they need the connection's address: see `serve`).
    pub(crate) fn router(&self) -> axum::Router {
        api::router(self.shared.clone())
    }

    /// Serves `listener` (over TLS when given a certificate) until `stop` is cancelled, then stops the runs
    /// executing here gracefully (they stay resumable) and waits for them,
    /// at most [`ServeOptions::grace`]. Runs on the current thread (the
    /// executor is a `LocalSet`).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        tls: Option<Tls>,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        (self.shared.options.identity.check_listener(addr)).map_err(std::io::Error::other)?;
        let inbox = self.shared.inbox.lock().ok().and_then(|mut i| i.take());
        let Some(inbox) = inbox else {
            return Err(std::io::Error::other("this server is already serving"));
        };
        (self.shared.secure).store(tls.is_some(), std::sync::atomic::Ordering::Relaxed);
        let local = tokio::task::LocalSet::new();
        let executor = local.spawn_local(executor::run(self.shared.clone(), inbox, stop.clone()));
        let app = self.router().into_make_service_with_connect_info::<identity::Peer>();
        let quit = stop.clone();
        local
            .run_until(async move {
                let quit = async move { quit.cancelled().await };
                let served = match tls {
                    Some(tls) => {
                        let listener = tls::TlsListener { tcp: listener, tls };
                        axum::serve(listener, app).with_graceful_shutdown(quit).await
                    }
                    None => axum::serve(listener, app).with_graceful_shutdown(quit).await,
                };
                let _ = executor.await;
                served
            })
            .await
    }

    /// A stop signal arrived: the runs executing here that an operator asked
    /// to cancel (`runbook cancel` records the request, then signals the
    /// process executing the run: this one) are stopped, and how many were.
    /// None (a run already told to stop does not count, so a second signal
    /// after a cancel stops the server): the signal was meant for the server.
    pub async fn stop_cancelled(&self) -> usize {
        let running: Vec<(String, Signals)> = match self.shared.running.lock() {
            Ok(r) => r.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => return 0,
        };
        let mut stopped = 0;
        for (id, signals) in running {
            // Already stopping (an earlier signal): not a reason to stay up.
            if signals.stop.is_cancelled() {
                continue;
            }
            let Ok(events) = self.shared.runner.store.events(&id).await else {
                continue;
            };
            if runbook_engine::replay::Replay::new(&events).cancel_requested {
                signals.stop.cancel();
                stopped += 1;
            }
        }
        stopped
    }
}
