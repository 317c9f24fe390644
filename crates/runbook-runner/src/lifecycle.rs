//! Starting, submitting, resuming, answering and cancelling runs: every path
//! ends in one [`Runner::execute`], which renews the run's lock while the
//! engine runs it and keeps or gives the lock back when it stops.
//!
//! A run is taken before anything is recorded: `start` creates it holding its
//! lock; `resume` claims it atomically (`claim_runner`), so of two resumes
//! started together one runs it and the other is told who does.

use crate::decide::{self, Answer, Decisions, load_stored};
use crate::leases::{self, LeaseOptions, WAITING_TTL};
use crate::notice::{Notice, Watcher};
use crate::notify::Notifier;
use crate::{Holder, RunnerError};
use indexmap::IndexMap;
use runbook_core::kind::Registry;
use runbook_core::model::Playbook;
use runbook_core::validate::Loaded;
use runbook_engine::exec::{self, Engine, EngineError, RunInput, Signals};
use runbook_engine::lease::LeaseClock;
use runbook_engine::replay::Replay;
use runbook_engine::secrets::{MaskKey, Masker};
use runbook_report::plan_hash;
use runbook_state::{Event, LockHolder, NewRun, RunRecord, RunStatus, Store, StoreError};
use serde_json::Value as Json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every run of this front end shares.
#[derive(Clone)]
pub struct Runner {
    /// The journal, leases and queue.
    pub store: Arc<dyn Store>,
    /// The step kinds.
    pub registry: Registry,
    /// Who is told what happens.
    pub watcher: Arc<dyn Watcher>,
    /// Who runs it (journalled, and the default approver).
    pub user: String,
    /// The environment: what templates read as `env.*`, and where secrets
    /// come from.
    pub env: IndexMap<String, String>,
    /// What templates see as `inventory` (null without one).
    pub inventory: Json,
}

/// How one run executes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// At most this many step calls at once.
    pub max_parallel: usize,
    /// `--yes`: approvals are answered "approve" by the runner's user.
    pub auto_approve: bool,
    /// The run's `lock:` leases.
    pub lease: LeaseOptions,
    /// What stops the run.
    pub signals: Signals,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_parallel: 8,
            auto_approve: false,
            lease: LeaseOptions {
                ttl: Duration::from_secs(30),
                wait: Duration::ZERO,
            },
            signals: Signals::default(),
        }
    }
}

/// How a run this process executed stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The run.
    pub run_id: String,
    /// How it stopped (waiting, interrupted and uncertain runs continue with
    /// a resume).
    pub status: RunStatus,
}

/// What a resume did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// This process executed the run until it stopped.
    Executed(Outcome),
    /// The run belongs to the queue: it went back there, for a worker.
    Requeued(String),
}

/// What a cancel did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// The process executing it was asked to stop.
    Signalled {
        /// The run.
        run: String,
        /// The process.
        pid: u32,
    },
    /// The worker holding it stops it at its next heartbeat.
    Requested {
        /// The run.
        run: String,
        /// The worker.
        worker: String,
    },
    /// Nobody executed it: it ended at once.
    Ended(String),
    /// It waited (an approval, a decision): its handlers ran, then it ended.
    AfterHandlers(Outcome),
}

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cancelled::Signalled { run, pid } => write!(f, "cancel requested: run {run} is stopping (process {pid})"),
            Cancelled::Requested { run, worker } => {
                write!(f, "cancel requested: worker {worker} is stopping run {run}")
            }
            Cancelled::Ended(run) => write!(f, "run {run} cancelled"),
            Cancelled::AfterHandlers(o) => write!(f, "run {} {}", o.run_id, o.status.as_str()),
        }
    }
}

/// A run recorded and holding its lock, not executed yet ([`Runner::begin`]).
pub struct Started<'a> {
    runner: &'a Runner,
    x: Execute<'a>,
}

impl Started<'_> {
    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.x.run_id
    }

    /// Executes it here until it stops.
    pub async fn execute(self, opts: &RunOptions) -> Result<Outcome, RunnerError> {
        self.runner.execute(self.x, opts).await
    }
}

/// One run to hand to the engine.
pub(crate) struct Execute<'a> {
    /// The playbook, with those it calls.
    pub(crate) loaded: &'a Loaded,
    pub(crate) run_id: String,
    pub(crate) inputs: IndexMap<String, Json>,
    pub(crate) secrets: IndexMap<String, String>,
    pub(crate) started_at: String,
    pub(crate) replay: Replay,
    /// The lock keys the run holds: renewed while it runs, then kept
    /// (waiting for a person) or given back.
    pub(crate) keys: Vec<String>,
    /// The playbook's `notify:` hooks, if it has any.
    pub(crate) notifier: Option<Arc<Notifier>>,
}

/// True if `pid` is a live runbook process.
pub fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("runbook"))
        .unwrap_or(false)
}

/// The worker that holds the run's lease now (by this machine's clock).
pub fn held_by_worker(record: &RunRecord) -> Option<&str> {
    let until = humantime::parse_rfc3339(record.lease_until.as_deref()?).ok()?;
    (until > std::time::SystemTime::now()).then_some(record.worker.as_deref().unwrap_or("?"))
}

/// A cancel by an operator.
fn cancel_event(who: &str) -> Event {
    Event::OperatorAction {
        action: "cancel".into(),
        step: None,
        who: who.to_owned(),
        comment: None,
        plan_hash: None,
        covers: None,
    }
}

fn cancelled() -> Event {
    Event::RunFinished {
        status: RunStatus::Cancelled,
        error: Some("cancelled by an operator".into()),
    }
}

/// What [`check_start`] found: the run's inputs (checked, defaults filled
/// in), its secrets and its lock keys.
pub struct Checked {
    /// The inputs.
    pub inputs: IndexMap<String, Json>,
    /// The secrets (never stored).
    pub secrets: IndexMap<String, String>,
    /// The lock keys, sorted.
    pub keys: Vec<String>,
}

/// Checks what [`Runner::start`] checks before it records anything: the
/// inputs against the playbook's declarations, every secret is set (in
/// `env`), every template known at start renders, every lock key renders.
/// Needs no store, so a front end can refuse before opening one.
pub fn check_start(
    registry: &Registry,
    env: &IndexMap<String, String>,
    inventory: &Json,
    user: &str,
    loaded: &Loaded,
    given: &IndexMap<String, Json>,
) -> Result<Checked, RunnerError> {
    let pb = &loaded.playbook;
    let inputs = runbook_core::inputs::resolve(pb, given)
        .map_err(|errors| RunnerError::Inputs(errors.iter().map(ToString::to_string).collect()))?;
    let secrets = resolve_secrets(pb, env)?;
    let masker = Masker::new(secrets.values().map(String::as_str));
    let data = runbook_engine::precheck::start_data(pb, &inputs, env, &secrets, inventory, user);
    let refused = runbook_engine::precheck::check(loaded, registry, &data);
    if !refused.is_empty() {
        return Err(RunnerError::Refused {
            refused: refused.iter().map(|r| masker.text(&r.to_string())).collect(),
        });
    }
    let keys = leases::keys(loaded, &inputs, env)?;
    no_secret_in(&keys, &masker)?;
    Ok(Checked { inputs, secrets, keys })
}

/// Every secret the playbook declares, from `env`.
pub fn resolve_secrets(pb: &Playbook, env: &IndexMap<String, String>) -> Result<IndexMap<String, String>, RunnerError> {
    runbook_secrets::resolve(pb, env).map_err(|missing| RunnerError::MissingSecrets {
        playbook: pb.name.clone(),
        messages: missing.into_iter().map(|m| m.message).collect(),
    })
}

impl Runner {
    /// What to tell a person about continuing run `id`, which stopped
    /// resumable: the questions a resume asks again, if it does, else that
    /// `resume` continues it.
    pub async fn resume_hint(&self, id: &str) -> String {
        let replay = match self.store.events(id).await {
            Ok(events) => Replay::new(&events),
            Err(_) => Replay::default(),
        };
        crate::text::asks_again(id, &replay, std::time::SystemTime::now())
            .unwrap_or_else(|| format!("`runbook resume {id}` continues this run"))
    }

    /// A copy that writes through `store` (a worker's fenced store).
    pub fn with_store(&self, store: Arc<dyn Store>) -> Runner {
        Runner { store, ..self.clone() }
    }

    /// The playbook's `notify:` hooks and those of the configuration file
    /// that applies here (`runbook.toml`'s `[[notify]]`: every run this
    /// runner executes), around this runner's watcher; none without hooks.
    pub(crate) fn notifier(&self, pb: &Playbook, secrets: &IndexMap<String, String>) -> Option<Arc<Notifier>> {
        // A broken file was refused when the front end started; read again
        // here so that a long-lived worker or server follows it.
        let configured = crate::config::Found::here().map(|f| f.file.notify).unwrap_or_default();
        let hooks = pb
            .notify
            .iter()
            .map(|n| (n.clone(), n.secret.as_ref().and_then(|s| secrets.get(s)).cloned()))
            .chain(configured.into_iter().map(|n| {
                let key = n.secret.as_ref().and_then(|s| self.env.get(s)).cloned();
                (n, key)
            }))
            .collect();
        Notifier::new(
            self.watcher.clone(),
            &pb.name,
            hooks,
            self.env.get("RUNBOOK_SMTP_URL").map(String::as_str),
        )
    }

    /// Who hears of a run's events: its notifier, else the watcher.
    pub(crate) fn watching(&self, notifier: Option<&Arc<Notifier>>) -> Arc<dyn Watcher> {
        match notifier {
            Some(n) => n.clone(),
            None => self.watcher.clone(),
        }
    }

    /// Every secret the playbook declares, from the runner's environment.
    pub fn secrets(&self, pb: &Playbook) -> Result<IndexMap<String, String>, RunnerError> {
        resolve_secrets(pb, &self.env)
    }

    fn holder(&self, run_id: &str) -> LockHolder {
        LockHolder {
            run_id: run_id.to_owned(),
            user: self.user.clone(),
            pid: Some(std::process::id()),
        }
    }

    pub(crate) async fn acquire(&self, keys: &[String], run_id: &str, lease: LeaseOptions) -> Result<(), RunnerError> {
        let waiting = |key: &str, holder: &runbook_state::Lock| {
            self.watcher.notice(&Notice::WaitingForLock {
                key: key.to_owned(),
                holder: holder.clone(),
            });
        };
        leases::acquire_all(&self.store, keys, &self.holder(run_id), lease, &waiting).await
    }

    /// A new run of the exact text loaded, with its inputs (secrets masked).
    fn new_run(&self, loaded: &Loaded, id: &str, inputs: Json) -> NewRun {
        let text = loaded.source.text.to_string();
        let calls = runbook_core::calls::texts(loaded);
        NewRun {
            id: id.to_owned(),
            playbook: loaded.playbook.name.clone(),
            version: loaded.playbook.version,
            hash: decide::text_hash(&text, &calls),
            text,
            calls,
            inputs,
            user: self.user.clone(),
        }
    }

    /// Starts a run of a checked playbook with checked inputs and executes it
    /// here: [`Runner::begin`], then [`Started::execute`].
    pub async fn start(
        &self,
        loaded: &Loaded,
        inputs: IndexMap<String, Json>,
        opts: &RunOptions,
    ) -> Result<Outcome, RunnerError> {
        self.begin(loaded, inputs, opts).await?.execute(opts).await
    }

    /// Records a new run holding its lock, ready to execute: a front end
    /// learns its id before it runs (a server answers the request, then
    /// executes it). Refused before anything is recorded: see
    /// [`check_start`]; a lock key that is held (after waiting, if asked). A
    /// `Started` dropped without executing leaves a run that `resume`
    /// continues (its lock expires by its time to live).
    pub async fn begin<'a>(
        &'a self,
        loaded: &'a Loaded,
        inputs: IndexMap<String, Json>,
        opts: &RunOptions,
    ) -> Result<Started<'a>, RunnerError> {
        let checked = check_start(&self.registry, &self.env, &self.inventory, &self.user, loaded, &inputs)?;
        self.begin_checked(loaded, checked, opts).await
    }

    /// [`Runner::begin`] with what [`check_start`] already found (a front end
    /// that checked before it opened the store: a secret's command runs once).
    pub async fn begin_checked<'a>(
        &'a self,
        loaded: &'a Loaded,
        checked: Checked,
        opts: &RunOptions,
    ) -> Result<Started<'a>, RunnerError> {
        let pb = &loaded.playbook;
        let Checked { inputs, secrets, keys } = checked;
        let masker = Masker::new(secrets.values().map(String::as_str));
        let run_id = runbook_state::new_run_id();
        self.acquire(&keys, &run_id, opts.lease).await?;
        let new = self.new_run(loaded, &run_id, masker.json(&serde_json::json!(inputs)));
        let first = Event::RunStarted {
            user: self.user.clone(),
            runner: None,
        };
        if let Err(e) = self.store.create_run(&new, &first).await {
            let _ = self.store.release_locks(&run_id).await;
            return Err(e.into());
        }
        // The stored inputs are masked; where they hold a secret, resume
        // needs its place (the secret's name, never its value).
        if let Some(value) = runbook_engine::secrets::seal(&serde_json::json!(inputs), &secrets) {
            let sealed = [Event::Sealed { step: None, value }];
            if let Err(e) = self.store.append_all(&run_id, &sealed).await {
                let _ = self.store.release_locks(&run_id).await;
                return Err(e.into());
            }
        }
        let notifier = self.notifier(pb, &secrets);
        self.watching(notifier.as_ref()).event(&run_id, &first);
        let x = Execute {
            loaded,
            run_id,
            inputs,
            secrets,
            started_at: runbook_state::now(),
            replay: Replay::default(),
            keys: keys.to_vec(),
            notifier,
        };
        Ok(Started { runner: self, x })
    }

    /// Queues a run for the workers; its id. The secrets are the worker's, so
    /// only the inputs and the lock keys are checked here.
    pub async fn submit(&self, loaded: &Loaded, given: IndexMap<String, Json>) -> Result<String, RunnerError> {
        let inputs = runbook_core::inputs::resolve(&loaded.playbook, &given)
            .map_err(|errors| RunnerError::Inputs(errors.iter().map(ToString::to_string).collect()))?;
        leases::keys(loaded, &inputs, &self.env)?;
        let run_id = runbook_state::new_run_id();
        let new = self.new_run(loaded, &run_id, serde_json::json!(inputs));
        let first = Event::RunQueued {
            user: self.user.clone(),
        };
        self.store.create_run(&new, &first).await?;
        self.watcher.event(&run_id, &first);
        Ok(run_id)
    }

    /// Records an answer to the approval the run waits at and continues it.
    pub async fn answer(&self, id: &str, answer: &Answer, opts: &RunOptions) -> Result<Resumed, RunnerError> {
        let decisions = Decisions {
            answer: Some(answer),
            ..Decisions::default()
        };
        self.resume(id, &decisions, opts).await
    }

    /// Continues a run that stopped (or goes back to the queue, for a
    /// submitted one), after recording the operator's decisions.
    pub async fn resume(&self, id: &str, d: &Decisions<'_>, opts: &RunOptions) -> Result<Resumed, RunnerError> {
        let record = self.store.run(id).await?;
        if !record.status.resumable() {
            return Err(RunnerError::Finished {
                id: record.id,
                status: record.status,
                playbook: record.playbook,
            });
        }
        let me = std::process::id();
        if let Some(pid) = record.pid.filter(|p| alive(*p) && *p != me) {
            return Err(RunnerError::Busy {
                id: record.id,
                holder: Holder::Process(pid),
            });
        }
        if let Some(worker) = held_by_worker(&record) {
            return Err(RunnerError::Busy {
                holder: Holder::Worker(worker.to_owned()),
                id: record.id,
            });
        }
        if record.submitted {
            return self.continue_claimed(record, d, opts).await;
        }
        // Take the run atomically: of two resumes started together, one runs it
        // and the other is told who does, before either records anything.
        let claimed = self.store.claim_runner(&record.id, me, record.pid).await;
        let record = match (claimed, self.store.run(&record.id).await) {
            (Ok(true), Ok(now)) if now.status.resumable() => now,
            (Ok(true), Ok(now)) => {
                let _ = self.store.set_runner(&now.id, None).await;
                return Err(RunnerError::Finished {
                    id: now.id,
                    status: now.status,
                    playbook: now.playbook,
                });
            }
            (Ok(false), now) => {
                let holder = now.ok().and_then(|r| r.pid).map_or(Holder::Unknown, Holder::Process);
                return Err(RunnerError::Busy { id: record.id, holder });
            }
            (Err(e), _) | (Ok(true), Err(e)) => {
                let _ = self.store.set_runner(&record.id, None).await;
                return Err(e.into());
            }
        };
        let id = record.id.clone();
        let resumed = self.continue_claimed(record, d, opts).await;
        // Whatever happened, this process no longer runs it.
        let _ = self.store.set_runner(&id, None).await;
        resumed
    }

    /// Continues a run this process has claimed (or a submitted run, which
    /// goes back to the queue).
    async fn continue_claimed(
        &self,
        record: RunRecord,
        d: &Decisions<'_>,
        opts: &RunOptions,
    ) -> Result<Resumed, RunnerError> {
        // The run continues against the exact text it started with.
        let loaded = load_stored(&record, &self.registry)?;
        let replay = Replay::new(&self.store.events(&record.id).await?);
        // The playbook file may have changed since the run started: say so, and
        // with `--to-current` continue on the new text if it agrees with what ran.
        let mut upgraded: Option<(String, String)> = None;
        // Questions asked anew: those whose approval does not cover the new
        // text, then those rejected or expired.
        let mut ask_again = Vec::new();
        let current = d
            .library
            .and_then(|lib| decide::current_text(lib, &record).map(|c| (lib, c)));
        let loaded = match current {
            Some((lib, (path, text, hash))) if hash != record.hash => {
                if d.to_current {
                    let (new, uncovered) =
                        decide::upgrade(lib, &loaded, &path, &text, &replay, &self.registry, &record)?;
                    ask_again = uncovered;
                    upgraded = Some((record.hash.clone(), hash));
                    self.watcher.notice(&Notice::OnCurrentText {
                        run: record.id.clone(),
                        path,
                    });
                    new
                } else {
                    self.watcher.notice(&Notice::TextChanged {
                        run: record.id.clone(),
                        path,
                    });
                    loaded
                }
            }
            _ => loaded,
        };
        let given = decide::check_steps(d, &replay, &loaded)?;
        let answering = match d.answer {
            Some(a) => self.answering(&record, &replay, a)?,
            None => Vec::new(),
        };
        // A cancelled run asks nothing; an answer given now is judged by the
        // step (an approval after its question expired fails it).
        if !d.cancel {
            for q in decide::to_ask_again(&replay, std::time::SystemTime::now()) {
                if !answering.contains(&q.step) && !ask_again.iter().any(|a: &decide::AskAgain| a.step == q.step) {
                    ask_again.push(q);
                }
            }
        }
        // A worker resolves a submitted run's secrets in its own environment.
        let secrets = if record.submitted {
            IndexMap::new()
        } else {
            self.secrets(&loaded.playbook)?
        };
        check_mask_key(&self.env, &replay)?;
        let inputs = decide::real_inputs(&record, &replay, &secrets);
        // The run takes its lock again (it may have been freed when it stopped),
        // once what was asked is known to be valid.
        let keys = leases::keys(&loaded, &inputs, &self.env)?;
        no_secret_in(&keys, &Masker::new(secrets.values().map(String::as_str)))?;
        let who = &self.user;
        // A submitted run goes back to the queue: a worker continues it.
        let mut journal = vec![if record.submitted {
            Event::RunQueued { user: who.clone() }
        } else {
            Event::RunResumed {
                user: who.clone(),
                runner: None,
            }
        }];
        if let Some((old, new)) = &upgraded {
            journal.push(Event::OperatorAction {
                action: "to-current".into(),
                step: None,
                who: who.clone(),
                comment: Some(format!("playbook text {old} -> {new}")),
                plan_hash: None,
                covers: None,
            });
        }
        journal.extend(ask_again.iter().map(|q| q.event(who)));
        let answered = match d.answer {
            Some(a) => {
                let inputs = &record.inputs;
                a.events(&answering, &plan_hash(&record), |step| {
                    decide::covers(&loaded, step, inputs)
                })
            }
            None => Vec::new(),
        };
        journal.extend(decide::events(d, who, &replay, answered, given));
        if upgraded.is_some() {
            let calls = runbook_core::calls::texts(&loaded);
            let hash = decide::text_hash(&loaded.source.text, &calls);
            self.store
                .replace_text(&record.id, &loaded.source.text, &hash, &calls)
                .await?;
        }
        if record.submitted {
            self.store.append_all(&record.id, &journal).await?;
            for e in &journal {
                self.watcher.event(&record.id, e);
            }
            self.watcher.notice(&Notice::Requeued { run: record.id.clone() });
            return Ok(Resumed::Requeued(record.id));
        }
        self.acquire(&keys, &record.id, opts.lease).await?;
        // One transaction: the decisions are recorded together or not at all.
        self.store.append_all(&record.id, &journal).await?;
        for e in &journal {
            self.watcher.event(&record.id, e);
        }
        let x = self.continued(&record, &loaded, inputs, secrets, &keys).await?;
        if d.cancel {
            // Stopped before it starts: what finished is restored, no step
            // starts, and the handlers (`finally`) run.
            opts.signals.stop.cancel();
        }
        self.execute(x, opts).await.map(Resumed::Executed)
    }

    /// A run that goes on from its journal (resumed here, or taken by a
    /// worker), ready to execute once it holds its lock.
    pub(crate) async fn continued<'a>(
        &self,
        record: &RunRecord,
        loaded: &'a Loaded,
        inputs: IndexMap<String, Json>,
        secrets: IndexMap<String, String>,
        keys: &[String],
    ) -> Result<Execute<'a>, StoreError> {
        let events = self.store.events(&record.id).await?;
        let notifier = self.notifier(&loaded.playbook, &secrets);
        Ok(Execute {
            loaded,
            run_id: record.id.clone(),
            inputs,
            secrets,
            started_at: record.created_at.clone(),
            replay: Replay::new(&events),
            keys: keys.to_vec(),
            notifier,
        })
    }

    /// The questions an answer answers, checked against the run (it waits,
    /// at them) and against the plan the answerer reviewed.
    fn answering(&self, record: &RunRecord, replay: &Replay, a: &Answer) -> Result<Vec<String>, RunnerError> {
        let waiting = replay.waiting();
        if record.status != RunStatus::Waiting || waiting.is_empty() {
            return Err(RunnerError::NotWaiting {
                id: record.id.clone(),
                status: record.status,
            });
        }
        let bound = plan_hash(record);
        if let Some(reviewed) = a.plan_hash.as_deref().filter(|h| *h != bound) {
            return Err(RunnerError::OtherPlan {
                id: record.id.clone(),
                reviewed: reviewed.to_owned(),
                bound,
            });
        }
        a.targets(&record.id, &waiting)
    }

    /// Cancels a run: a run being executed is signalled (or its worker asked);
    /// a run nobody executes ends at once, after its deferred `finally` steps
    /// if it waited for an approval or a decision (it has not run them yet).
    pub async fn cancel(&self, id: &str, opts: &RunOptions) -> Result<Cancelled, RunnerError> {
        let record = self.store.run(id).await?;
        let idle = matches!(record.status, RunStatus::Waiting | RunStatus::Uncertain)
            && !record.submitted
            && !record.pid.is_some_and(alive);
        if idle {
            let d = Decisions {
                cancel: true,
                ..Decisions::default()
            };
            return match self.resume(id, &d, opts).await? {
                Resumed::Executed(o) => Ok(Cancelled::AfterHandlers(o)),
                Resumed::Requeued(run) => Ok(Cancelled::Ended(run)),
            };
        }
        if !record.status.resumable() && record.status != RunStatus::Queued {
            return Err(RunnerError::AlreadyFinished {
                id: record.id,
                status: record.status,
            });
        }
        let action = cancel_event(&self.user);
        if record.submitted {
            return match held_by_worker(&record) {
                Some(worker) => {
                    self.store.append(&record.id, &action).await?;
                    self.store.request_cancel(&record.id).await?;
                    Ok(Cancelled::Requested {
                        worker: worker.to_owned(),
                        run: record.id,
                    })
                }
                None => {
                    self.store.append_all(&record.id, &[action, cancelled()]).await?;
                    Ok(Cancelled::Ended(record.id))
                }
            };
        }
        self.store.append(&record.id, &action).await?;
        match record.pid.filter(|p| alive(*p)) {
            Some(pid) => {
                let target = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0));
                nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM).map_err(|e| RunnerError::Signal {
                    pid,
                    message: e.to_string(),
                })?;
                Ok(Cancelled::Signalled { run: record.id, pid })
            }
            None => {
                // Nobody is executing it: record the end ourselves.
                self.store.append(&record.id, &cancelled()).await?;
                Ok(Cancelled::Ended(record.id))
            }
        }
    }

    /// Records an operator's cancel of a run this very process executes (a
    /// server); the caller then stops it through its `Signals`, and the
    /// engine ends it as cancelled, after its handlers.
    pub async fn record_cancel(&self, id: &str) -> Result<(), RunnerError> {
        self.store.append(id, &cancel_event(&self.user)).await?;
        Ok(())
    }

    /// Executes a run this process holds until it stops; renews its lock
    /// meanwhile, then keeps it (a run waiting for an approval) or gives it
    /// back.
    pub(crate) async fn execute(&self, x: Execute<'_>, opts: &RunOptions) -> Result<Outcome, RunnerError> {
        let run_id = x.run_id.clone();
        // The leases were taken moments ago; renewed once more now, the
        // clock the engine goes by starts from a moment this process knows.
        let lease = if !x.keys.is_empty() {
            let sent = Instant::now();
            if let Some(why) = leases::renew(self.store.as_ref(), &run_id, &x.keys, opts.lease.ttl).await? {
                return Err(RunnerError::LeaseLost { run: run_id, why });
            }
            Some(Arc::new(LeaseClock::new(sent, opts.lease.ttl)))
        } else {
            None
        };
        let heartbeat = lease.as_ref().map(|clock| {
            leases::heartbeat(
                self.store.clone(),
                run_id.clone(),
                x.keys.clone(),
                opts.lease.ttl,
                clock.clone(),
            )
        });
        let notifier = x.notifier.clone();
        let result = self.engine_run(x, lease, opts).await;
        if let Some(n) = notifier {
            n.drain().await;
        }
        if let Some(h) = heartbeat {
            drop(h);
            let waiting = matches!(self.store.run(&run_id).await, Ok(r) if r.status == RunStatus::Waiting);
            let kept = if waiting {
                self.store.renew_locks(&run_id, WAITING_TTL).await
            } else {
                self.store.release_locks(&run_id).await
            };
            if let Err(error) = kept {
                self.watcher.notice(&Notice::LockNotReturned { error });
            }
        }
        result
    }

    async fn engine_run(
        &self,
        x: Execute<'_>,
        lease: Option<Arc<LeaseClock>>,
        opts: &RunOptions,
    ) -> Result<Outcome, RunnerError> {
        let engine = Engine {
            registry: self.registry.clone(),
            store: self.store.clone(),
            observer: self.watching(x.notifier.as_ref()),
        };
        let _ = self.store.set_runner(&x.run_id, Some(std::process::id())).await;
        let run_id = x.run_id.clone();
        let input = RunInput {
            run_id: x.run_id,
            playbook: &x.loaded.playbook,
            calls: &x.loaded.calls,
            inputs: x.inputs,
            secrets: x.secrets,
            env: self.env.clone(),
            inventory: self.inventory.clone(),
            user: self.user.clone(),
            started_at: x.started_at,
            replay: x.replay,
            max_parallel: opts.max_parallel,
            auto_approve: opts.auto_approve.then(|| self.user.clone()),
            mask_key: mask_key(&self.env).map(Arc::new),
            lease,
        };
        let result = exec::execute(&engine, input, &opts.signals).await;
        let _ = self.store.set_runner(&run_id, None).await;
        match result {
            Ok(done) => Ok(Outcome {
                run_id,
                status: done.status,
            }),
            // Another worker owns the run now; this one wrote nothing more.
            Err(EngineError::Store(e @ StoreError::Fenced { .. })) => Err(RunnerError::TakenOver(e)),
            Err(EngineError::Store(source)) => Err(RunnerError::Journal { run: run_id, source }),
            Err(e @ EngineError::Previous(_)) => Err(RunnerError::Previous(e.to_string())),
        }
    }
}

/// Frees the lock `key` by force (its holder cannot: it died, or hangs),
/// journalled on the holder's run as `who`'s `unlock`:
/// the lease it took away, or `None` when nobody holds the key. The
/// lease is freed even when the journal cannot take the record: that
/// error comes back with it.
pub async fn unlock(
    store: &dyn Store,
    key: &str,
    who: &str,
) -> Result<Option<(runbook_state::Lock, Option<StoreError>)>, RunnerError> {
    let Some(lock) = store.remove_lock(key).await? else {
        return Ok(None);
    };
    let action = Event::OperatorAction {
        action: "unlock".into(),
        step: None,
        who: who.to_owned(),
        comment: Some(format!("lock `{key}` freed with --force")),
        plan_hash: None,
        covers: None,
    };
    let unjournalled = store.append(&lock.run_id, &action).await.err();
    Ok(Some((lock, unjournalled)))
}

/// Where the mask key is: `RUNBOOK_MASK_KEY_FILE`, else
/// `$XDG_STATE_HOME/runbook/mask.key` (`~/.local/state/runbook/mask.key`).
pub(crate) fn mask_key_path(env: &IndexMap<String, String>) -> Option<std::path::PathBuf> {
    if let Some(p) = env.get("RUNBOOK_MASK_KEY_FILE").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let state = env
        .get("XDG_STATE_HOME")
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| env.get("HOME").map(|h| std::path::Path::new(h).join(".local/state")))?;
    Some(state.join("runbook/mask.key"))
}

/// The runner's mask key (64 hex digits in its file), made (readable by its
/// owner alone) the first time; `None` when it can be neither read nor made:
/// registered values are then masked in this process only.
pub(crate) fn mask_key(env: &IndexMap<String, String>) -> Option<MaskKey> {
    use std::io::Write as _;
    let path = mask_key_path(env)?;
    let parse = |text: &str| -> Option<MaskKey> {
        let text = text.trim();
        let bytes: Vec<u8> = (0..text.len())
            .step_by(2)
            .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<_>>()?;
        MaskKey::new(&<[u8; MaskKey::LEN]>::try_from(bytes).ok()?)
    };
    if let Ok(text) = std::fs::read_to_string(&path) {
        return parse(&text);
    }
    let bytes = MaskKey::generate()?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(path.parent()?).ok()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut f) => {
            f.write_all(format!("{hex}\n").as_bytes()).ok()?;
            f.sync_all().ok()?;
            parse(&hex)
        }
        // Another process made it first: theirs.
        Err(_) => parse(&std::fs::read_to_string(&path).ok()?),
    }
}

/// Refuses lock keys that would hold a secret (an input that holds one): a
/// lock's key is shown to everyone who lists locks, and stored.
fn no_secret_in(keys: &[String], masker: &Masker) -> Result<(), RunnerError> {
    match keys.iter().find(|k| masker.text(k) != **k) {
        Some(k) => Err(RunnerError::LockKey {
            template: masker.text(k),
            message: "it would hold a secret, and lock keys are shown to everyone who lists locks; \
                      nothing was run (give the lock an input that names the target without the secret)"
                .to_owned(),
        }),
        None => Ok(()),
    }
}

/// Refuses to resume a run whose registered values this runner cannot open:
/// they would be shown in clear.
fn check_mask_key(env: &IndexMap<String, String>, replay: &Replay) -> Result<(), RunnerError> {
    if replay.registered.is_empty() {
        return Ok(());
    }
    let lost = replay.registered.iter().filter(|s| s.is_empty()).count();
    if lost > 0 {
        return Err(RunnerError::MaskKey(format!(
            "{lost} value(s) this run's steps registered as secret were not kept (the runner that ran them had no mask key: no HOME, XDG_STATE_HOME or RUNBOOK_MASK_KEY_FILE), so they would be shown in clear; nothing was resumed"
        )));
    }
    let key = mask_key(env);
    if key
        .as_ref()
        .is_some_and(|k| replay.registered.iter().all(|s| k.open(s).is_some()))
    {
        return Ok(());
    }
    let at = mask_key_path(env).map_or_else(
        || "(no path: set RUNBOOK_MASK_KEY_FILE)".to_owned(),
        |p| p.display().to_string(),
    );
    Err(RunnerError::MaskKey(format!(
        "{} value(s) this run's steps registered as secret cannot be opened with the mask key at {at}, so they would be shown in clear; nothing was resumed",
        replay.registered.len()
    )))
}
