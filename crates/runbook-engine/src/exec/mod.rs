//! The executor: runs a playbook's step DAG against a journal.
//!
//! Rules, in the order they matter to an operator:
//! - **Nothing is lost.** A step's `step_started` is durable before its side
//!   effect starts, and its `step_succeeded` (with outputs) is durable before any
//!   step that depends on it starts. If the journal cannot be written, the run
//!   stops.
//! - **Resume** replays the journal: succeeded and skipped steps are not run
//!   again and their outputs are restored; failed steps run again; a step that
//!   was in flight runs again only if it is idempotent (or an operator said
//!   `--rerun`), otherwise the run stops as `uncertain` and names it.
//! - **Stopping** (Ctrl-C, SIGTERM, `runbook cancel`): no new step starts, running
//!   ones are cancelled (SIGTERM to their process group, SIGKILL after a grace
//!   period), `on_failure` and `finally` handlers run, and the run is recorded as
//!   interrupted. A second signal kills everything at once.
//! - **Failure**: the run's `on_failure` steps run, then each completed step's
//!   `undo` in reverse completion order, then `finally`.
//!
//! Independent steps run concurrently in one task (`FuturesUnordered`); the
//! steps themselves are child processes and sockets, so one thread is plenty.
//! `--max-parallel` bounds how many calls run at once.
//!
//! The journal is written by a writer task with group commit: an event that
//! must be durable before the executor goes on (`step_started`, `run_finished`)
//! is awaited; the others (a step's success, failure or skip) are queued and
//! committed in the same transaction as the next awaited one, or as soon as the
//! executor waits for anything. A finished step's success is therefore durable
//! before any step that depends on it starts (that step's `step_started`
//! commits it), at one fsync per step instead of two. An idempotent step does
//! not wait for its own `step_started` either: if the runner dies before it is
//! written, resume runs the step again, which its idempotence allows.
//!
//! Where things are: this file walks the DAG (order, `when`, groups,
//! handlers, undo, resume's restore); `writer` is the journal writer;
//! `fanout` runs `for_each`; `call` makes one call of a kind (rendering,
//! retries, timeouts, what success and failure journal).

use crate::order::dependencies;
use crate::plan::item_key;
use crate::replay::{Prior, Replay};
use crate::secrets::{Masker, seal, unseal};
use futures::future::LocalBoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use indexmap::IndexMap;
use runbook_core::inputs::parse_duration;
use runbook_core::kind::{
    Approval, CancellationToken, LogSink, LogStream, Nested, Outputs, Registry, StepContext, StepError, StepKind,
};
use runbook_core::model::{
    Backoff, BackoffName, Concurrency, CountOrPercent, ForEach, Playbook, ResumePolicy, Retry, Step,
};
use runbook_core::template::{self, Data, Mode, Renderer};
use runbook_core::validate::Loaded;
use runbook_state::{Event, LogLine, RunStatus, Store, StoreError, Stream};
use serde_json::{Value as Json, json};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod call;
mod fanout;
pub(crate) use fanout::batch_values;
mod subplaybook;
mod writer;

use call::NestedRunner;
use writer::{Msg, flush, spawn_writer};

/// Sees what happens, as it happens (progress lines, JSON events).
pub trait Observer: Send + Sync {
    /// An event, once it is durable in the journal.
    fn event(&self, run: &str, event: &Event);
    /// A log line of a step (secrets already masked).
    fn log(&self, line: &LogLine);
}

/// What the executor needs from its surroundings.
#[derive(Clone)]
pub struct Engine {
    /// The step kinds.
    pub registry: Registry,
    /// The journal.
    pub store: Arc<dyn Store>,
    /// Who watches.
    pub observer: Arc<dyn Observer>,
}

/// The two ways to stop a run.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// Stop gracefully: first Ctrl-C, SIGTERM, `runbook cancel`.
    pub stop: CancellationToken,
    /// Stop now: second Ctrl-C.
    pub kill: CancellationToken,
}

/// One run to execute (new or resumed).
#[derive(Debug)]
pub struct RunInput<'a> {
    /// The run's id (already created in the store).
    pub run_id: String,
    /// The playbook, parsed from the text stored with the run.
    pub playbook: &'a Playbook,
    /// The playbooks it calls (`uses: playbook`), by call key, as stored
    /// with the run.
    pub calls: &'a IndexMap<String, Arc<Loaded>>,
    /// Checked inputs.
    pub inputs: IndexMap<String, Json>,
    /// Resolved secrets (never stored).
    pub secrets: IndexMap<String, String>,
    /// The environment templates read as `env.*`.
    pub env: IndexMap<String, String>,
    /// What templates see as `inventory` (null without one).
    pub inventory: Json,
    /// Who runs it.
    pub user: String,
    /// When the run was first started.
    pub started_at: String,
    /// The journal so far (empty for a new run).
    pub replay: Replay,
    /// How many calls may run at once.
    pub max_parallel: usize,
    /// `--yes`: approval steps approve as this user without waiting.
    pub auto_approve: Option<String>,
    /// The key the values steps register as secret are journalled under
    /// (and opened with on resume); without one they are masked in this
    /// process only.
    pub mask_key: Option<Arc<crate::secrets::MaskKey>>,
    /// The validity of the run's lock leases, where it holds any: no step
    /// starts and no success is journalled without it.
    pub lease: Option<Arc<crate::lease::LeaseClock>>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The status recorded.
    pub status: RunStatus,
    /// Why, when it did not succeed.
    pub error: Option<String>,
}

/// The executor could not keep its promises (the journal failed).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The journal could not be written; the run stopped.
    #[error("the journal could not be written, so the run stopped: {0}")]
    Store(#[from] StoreError),
    /// Processes an earlier runner of the run left would not stop: nothing
    /// ran.
    #[error("an earlier attempt of this run is still running and did not stop: {0}")]
    Previous(String),
}

/// How a step (or a list of steps) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Skipped,
    /// Failed with `continue_on_error`.
    Tolerated,
    Failed(String),
    Interrupted,
    /// Steps wait for a person's answer (path, question), each named.
    Waiting(Vec<(String, String)>),
    /// Non-idempotent steps were in flight; an operator must decide.
    Uncertain(Vec<String>),
}

impl Outcome {
    fn lets_dependents_run(&self) -> bool {
        matches!(self, Outcome::Succeeded | Outcome::Skipped | Outcome::Tolerated)
    }

    fn rank(&self) -> u8 {
        match self {
            Outcome::Succeeded | Outcome::Skipped | Outcome::Tolerated => 0,
            Outcome::Failed(_) => 1,
            Outcome::Waiting(..) => 2,
            Outcome::Interrupted => 3,
            Outcome::Uncertain(_) => 4,
        }
    }

    /// The more serious of two outcomes (the first failure wins among
    /// failures; every uncertain step, and every question, is named).
    fn merge(self, other: Outcome) -> Outcome {
        match (self, other) {
            (Outcome::Uncertain(mut a), Outcome::Uncertain(b)) => {
                a.extend(b);
                Outcome::Uncertain(a)
            }
            (Outcome::Waiting(mut a), Outcome::Waiting(b)) => {
                a.extend(b);
                Outcome::Waiting(a)
            }
            (this, other) if other.rank() > this.rank() => other,
            (this, _) => this,
        }
    }
}

/// Variables and step results visible at one level (the run, a for_each
/// item, a called playbook).
#[derive(Debug, Default)]
struct Frame {
    parent: Option<Rc<Frame>>,
    vars: Vec<(String, Json)>,
    results: RefCell<HashMap<String, Json>>,
    /// The playbook called at this level (`uses: playbook`): its steps see
    /// only its own inputs, secrets and steps, and get its `defaults:`.
    callee: Option<Arc<Loaded>>,
}

impl Frame {
    /// A `for_each` item's frame: its variable, and `batch` (the items
    /// started with it), which an item variable named `batch` hides.
    fn item(parent: &Rc<Frame>, var: &str, value: Json, batch: Json) -> Rc<Frame> {
        Rc::new(Frame {
            parent: Some(parent.clone()),
            vars: vec![("batch".to_owned(), batch), (var.to_owned(), value)],
            results: RefCell::default(),
            callee: None,
        })
    }

    /// The playbook called at this level or the nearest one above, if any.
    fn callee(&self) -> Option<&Arc<Loaded>> {
        self.callee
            .as_ref()
            .or_else(|| self.parent.as_ref().and_then(|p| p.callee()))
    }

    fn lookup(&self, id: &str) -> Option<Json> {
        if let Some(r) = self.results.borrow().get(id) {
            return Some(r.clone());
        }
        self.parent.as_ref().and_then(|p| p.lookup(id))
    }

    /// Records a step's result as templates read it: its status, its
    /// outputs, and whether its action ever began (`acted`): a step that has
    /// not run, was skipped, or failed before its action began (its
    /// parameters did not render) did not act, so a handler can tell "never
    /// touched it" from "touched it and failed".
    fn set(&self, id: Option<&str>, status: &str, outputs: &Json) {
        let acted = !matches!(status, "pending" | "skipped");
        self.set_acted(id, status, outputs, acted);
    }

    fn set_acted(&self, id: Option<&str>, status: &str, outputs: &Json, acted: bool) {
        if let Some(id) = id {
            self.results.borrow_mut().insert(
                id.to_owned(),
                json!({ "status": status, "outputs": outputs, "acted": acted }),
            );
        }
    }
}

/// What a step's templates read.
#[derive(Default)]
struct Reads {
    /// The ids of the steps whose results they read.
    steps: Vec<String>,
    /// Whether they name the inventory.
    inventory: bool,
}

struct Exec<'a> {
    engine: &'a Engine,
    run_id: String,
    playbook: &'a Playbook,
    /// The playbooks it calls, by call key.
    calls: &'a IndexMap<String, Arc<Loaded>>,
    base: serde_json::Map<String, Json>,
    /// The run's inventory, shared by every step (see `data`).
    inventory: Arc<Json>,
    masker: Arc<Masker>,
    renderer: Renderer,
    replay: Replay,
    auto_approve: Option<String>,
    /// Who started the run: the journal's first user, else (a new run) this
    /// runner's.
    started_by: String,
    permits: tokio::sync::Semaphore,
    logs: Arc<Mutex<Vec<LogLine>>>,
    nested: Arc<NestedRunner>,
    /// Completed steps with `undo`, with the order they completed in.
    undo: RefCell<Vec<Done<'a>>>,
    /// Step ids each step's templates read, by step address.
    refs: RefCell<HashMap<usize, Rc<Reads>>>,
    /// The journal writer's queue.
    writer: tokio::sync::mpsc::UnboundedSender<Msg>,
    /// Events sent to the writer so far.
    sent: std::cell::Cell<u64>,
    /// Events the writer has committed so far: a step whose dependencies'
    /// results are not yet among them waits for them to be.
    durable: Arc<std::sync::atomic::AtomicU64>,
    /// The first journal failure; once set, the run stops.
    store_error: Arc<Mutex<Option<StoreError>>>,
    /// Stops everything when the journal fails.
    abort: CancellationToken,
    /// The run's cgroup in this process, where steps hold their processes.
    contain: Option<runbook_contain::Run>,
    /// Its path, as steps get it.
    contain_path: Option<Arc<std::path::Path>>,
    /// The run's lock leases, where it holds any.
    lease: Option<Arc<crate::lease::LeaseClock>>,
}

/// A completed step that has an `undo`.
#[derive(Clone)]
struct Done<'a> {
    /// Where it completed in the journal (restored steps), or after
    /// everything restored, in completion order (steps of this process).
    order: (i64, usize),
    path: String,
    step: &'a Step,
    frame: Rc<Frame>,
}

/// Where a step's own `on_failure` steps are journalled: `ID.on_failure`,
/// or for a call `ID.call.on_failure` (`ID.on_failure` is the called
/// playbook's own, as its steps are `ID.STEP`).
pub fn own_handlers(step: &Step, path: &str) -> String {
    if runbook_core::calls::call_of(step).is_some() {
        format!("{path}.call.on_failure")
    } else {
        format!("{path}.on_failure")
    }
}

/// Why a run waits: every question, each with the commands that answer it.
fn waiting_for(run_id: &str, questions: &[(String, String)]) -> String {
    let mut questions = questions.to_vec();
    questions.sort();
    questions.dedup_by(|a, b| a.0 == b.0);
    match questions.as_slice() {
        [(step, question)] => {
            let step_word = runbook_core::shell::quote(step);
            format!(
                "step `{step}` waits for an approval: {question} (hint: `runbook approve {run_id} {step_word}` or \
                 `runbook reject {run_id} {step_word}`)"
            )
        }
        _ => {
            let each: Vec<String> = questions.iter().map(|(s, q)| format!("`{s}`: {q}")).collect();
            let first = questions
                .first()
                .map_or_else(|| "STEP".to_owned(), |(s, _)| runbook_core::shell::quote(s));
            format!(
                "{} steps wait for an approval: {} (hint: `runbook approve {run_id} STEP` or `runbook reject \
                 {run_id} STEP` answers one, e.g. `runbook approve {run_id} {first}`; `--all` answers every one)",
                questions.len(),
                each.join("; ")
            )
        }
    }
}

fn join_path(prefix: &str, seg: &str) -> String {
    if prefix.is_empty() {
        seg.to_owned()
    } else {
        format!("{prefix}.{seg}")
    }
}

/// A step's journalled outputs, each secret one replaced by a marker that
/// fails whatever step reads it ([`call::LOST`]).
fn lose_secret_outputs(step: &Step, outputs: &Json) -> Json {
    let mut outputs = outputs.clone();
    if let (Some(id), Some(map)) = (step.id.as_deref(), outputs.as_object_mut()) {
        for name in &step.secret_outputs {
            if map.contains_key(name) {
                map.insert(name.clone(), Json::String(format!("{}{id}.{name}\u{1}", call::LOST)));
            }
        }
    }
    outputs
}

/// Runs (or resumes) a run to its end, recording everything in the journal.
pub async fn execute(engine: &Engine, input: RunInput<'_>, signals: &Signals) -> Result<Finished, EngineError> {
    // What steps registered before this attempt is masked again from the start.
    let registered: Vec<String> = input
        .mask_key
        .as_ref()
        .map(|key| input.replay.registered.iter().filter_map(|s| key.open(s)).collect())
        .unwrap_or_default();
    let masker = Arc::new(Masker::new(
        input.secrets.values().chain(registered.iter()).map(String::as_str),
    ));
    let mut base = serde_json::Map::new();
    base.insert("inputs".into(), json!(input.inputs));
    base.insert("env".into(), json!(input.env));
    base.insert("secrets".into(), json!(input.secrets));
    base.insert(
        "run".into(),
        json!({ "id": input.run_id, "user": input.user, "started_at": input.started_at }),
    );
    base.insert(
        "playbook".into(),
        json!({ "name": input.playbook.name, "version": input.playbook.version }),
    );
    // The inventory is kept apart: it can be large (a fleet), and goes into
    // a step's template data only where the step's templates name it.
    let inventory = Arc::new(input.inventory.clone());
    let store_error = Arc::new(Mutex::new(None));
    let abort = CancellationToken::new();
    let durable = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let logs: writer::LogBuffer = Arc::new(Mutex::new(Vec::new()));
    let (writer, writer_task) = spawn_writer(
        engine.store.clone(),
        engine.observer.clone(),
        input.run_id.clone(),
        (store_error.clone(), abort.clone()),
        durable.clone(),
        (masker.clone(), logs.clone(), input.mask_key.clone()),
    );
    // What an earlier runner of this run on this host left running is
    // stopped before anything is decided: an attempt it started must be over
    // before this one runs or judges it.
    let stopped = stop_previous(&input.replay.contained).await;
    let contain = runbook_contain::Run::create(&input.run_id);
    let contain_path: Option<Arc<std::path::Path>> = contain.as_ref().map(|c| Arc::from(c.path()));
    let exec = Exec {
        engine,
        run_id: input.run_id.clone(),
        playbook: input.playbook,
        calls: input.calls,
        base,
        inventory,
        masker,
        renderer: Renderer::new(),
        started_by: input.replay.started_by.clone().unwrap_or_else(|| input.user.clone()),
        replay: input.replay,
        auto_approve: input.auto_approve,
        permits: tokio::sync::Semaphore::new(input.max_parallel.max(1)),
        logs,
        nested: Arc::new(NestedRunner {
            registry: engine.registry.clone(),
        }),
        undo: RefCell::new(Vec::new()),
        refs: RefCell::new(HashMap::new()),
        writer,
        sent: std::cell::Cell::new(0),
        durable,
        store_error,
        abort,
        contain,
        contain_path,
        lease: input.lease.clone(),
    };
    let stopped = match stopped {
        Ok(stopped) => stopped,
        Err(e) => {
            drop(exec);
            let _ = writer_task.await;
            return Err(e);
        }
    };
    if exec.contain.is_some() || !stopped.is_empty() {
        exec.journal_soon(Event::Contained {
            host: runbook_contain::hostname(),
            cgroup: exec
                .contain
                .as_ref()
                .map(|c| c.path().display().to_string())
                .unwrap_or_default(),
            stopped,
        });
    }
    // Log lines reach the store in batches, not one fsync each. The flusher
    // stops only between batches: aborting it inside a write would lose the
    // lines it had taken.
    let flushing = CancellationToken::new();
    let flusher = {
        let store = engine.store.clone();
        let logs = exec.logs.clone();
        let run = exec.run_id.clone();
        let stop = flushing.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    () = stop.cancelled() => break,
                }
                flush(&*store, &run, &logs).await;
            }
        })
    };
    let result = exec.run(signals).await;
    // Connections the kinds kept for this run (ssh masters) end with it.
    for kind in engine.registry.kinds() {
        kind.close().await;
    }
    flushing.cancel();
    let _ = flusher.await;
    flush(&*engine.store, &exec.run_id, &exec.logs).await;
    // Closing the queue lets the writer finish what is queued and stop.
    drop(exec);
    let _ = writer_task.await;
    result
}

impl Exec<'_> {
    /// True unless the run holds lock leases that are no longer valid for
    /// the next action (then they are lost, and the run stops).
    fn lease_valid(&self) -> bool {
        self.lease.as_ref().is_none_or(|l| l.valid())
    }
}

/// Stops what is left in the cgroups earlier runners of a run recorded on
/// this host (`Replay::contained`); the ones that still held processes. A
/// resume does it before it decides anything; a run that takes a lock whose
/// holder's lease lapsed does it to the holder (fencing: the holder lost its
/// right to act).
pub async fn stop_previous(contained: &[(String, String)]) -> Result<Vec<String>, EngineError> {
    let here = runbook_contain::hostname();
    let mine: Vec<String> = contained
        .iter()
        .filter(|(host, cgroup)| *host == here && !cgroup.is_empty())
        .map(|(_, cgroup)| cgroup.clone())
        .collect();
    if mine.is_empty() {
        return Ok(Vec::new());
    }
    let stopping = tokio::task::spawn_blocking(move || {
        let mut stopped = Vec::new();
        for cgroup in mine {
            match runbook_contain::stop(std::path::Path::new(&cgroup), Duration::from_secs(10)) {
                Ok(true) => stopped.push(cgroup),
                Ok(false) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(stopped)
    });
    match stopping.await {
        Ok(Ok(stopped)) => Ok(stopped),
        Ok(Err(e)) => Err(EngineError::Previous(e)),
        Err(e) => Err(EngineError::Previous(e.to_string())),
    }
}

impl<'a> Exec<'a> {
    async fn run(&self, signals: &Signals) -> Result<Finished, EngineError> {
        let root = Rc::new(Frame::default());
        let stop = signals.stop.child_token();
        let aborted = {
            let stop = stop.clone();
            let abort = self.abort.clone();
            async move {
                abort.cancelled().await;
                stop.cancel();
            }
        };
        // The main steps, stoppable; a kill drops them at once (their process
        // groups are killed as the futures drop).
        let main = async {
            tokio::select! {
                o = self.run_list(&self.playbook.steps, &root, "", &stop, true) => o,
                () = aborted => Outcome::Interrupted,
            }
        };
        // Lost leases stop the run as a kill does: another run may hold the
        // lock and act now, so nothing of this one goes on, handlers neither.
        let lost = async {
            match &self.lease {
                Some(l) => l.lost().cancelled().await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            o = main => Some(o),
            () = signals.kill.cancelled() => None,
            () = lost => None,
        };
        let Some(mut outcome) = outcome else {
            let why = match self.lease.as_ref().and_then(|l| l.why()) {
                Some(why) => format!("stopped: {why}"),
                None => "killed (second interrupt)".into(),
            };
            return self.finish(RunStatus::Interrupted, Some(why)).await;
        };
        // A step that found the leases lost stopped the run the same way.
        if let Some(why) = self
            .lease
            .as_ref()
            .filter(|l| l.lost().is_cancelled())
            .and_then(|l| l.why())
        {
            return self
                .finish(RunStatus::Interrupted, Some(format!("stopped: {why}")))
                .await;
        }
        // The journal failed (the store is unreachable, or a worker lost its
        // lease): nothing more can be recorded, so no handler runs either.
        if let Some(e) = self.take_store_error() {
            return Err(EngineError::Store(e));
        }
        // Handlers run on the kill token only: a graceful stop has already happened.
        let handlers = &signals.kill;
        let handler_phase = |steps: &'a [Step], prefix: &'static str| {
            let root = root.clone();
            async move {
                tokio::select! {
                    o = self.run_handlers(steps, &root, prefix, handlers) => Some(o),
                    () = handlers.cancelled() => None,
                }
            }
        };
        match &outcome {
            Outcome::Failed(_) | Outcome::Interrupted => {
                if handler_phase(&self.playbook.on_failure, "on_failure").await.is_none() {
                    return self
                        .finish(RunStatus::Interrupted, Some("killed during on_failure".into()))
                        .await;
                }
                if matches!(outcome, Outcome::Failed(_)) {
                    let killed = tokio::select! {
                        () = self.compensate(handlers) => false,
                        () = handlers.cancelled() => true,
                    };
                    if killed {
                        return self
                            .finish(RunStatus::Interrupted, Some("killed during undo".into()))
                            .await;
                    }
                }
            }
            _ => {}
        }
        // A run that is paused (uncertain, waiting for an answer) is not over:
        // `finally` runs when it ends.
        if !matches!(outcome, Outcome::Uncertain(_) | Outcome::Waiting(..)) {
            match handler_phase(&self.playbook.finally, "finally").await {
                None => {
                    return self
                        .finish(RunStatus::Interrupted, Some("killed during finally".into()))
                        .await;
                }
                Some(Outcome::Failed(e)) if outcome.rank() == 0 => {
                    outcome = Outcome::Failed(format!("a `finally` step failed: {e}"));
                }
                Some(_) => {}
            }
        }
        if let Some(e) = self.take_store_error() {
            return Err(EngineError::Store(e));
        }
        let (status, error) = match outcome {
            Outcome::Succeeded | Outcome::Skipped | Outcome::Tolerated => (RunStatus::Succeeded, None),
            Outcome::Failed(e) => (RunStatus::Failed, Some(e)),
            Outcome::Interrupted => {
                if self.cancel_requested().await {
                    (RunStatus::Cancelled, Some("cancelled by an operator".to_owned()))
                } else {
                    (
                        RunStatus::Interrupted,
                        Some("interrupted; `runbook resume` continues it".to_owned()),
                    )
                }
            }
            Outcome::Waiting(questions) => (RunStatus::Waiting, Some(waiting_for(&self.run_id, &questions))),
            Outcome::Uncertain(steps) => {
                let names = steps.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ");
                let (one, verb) = if steps.len() == 1 {
                    ("step", "was")
                } else {
                    ("steps", "were")
                };
                let first = steps.first().map_or("STEP", String::as_str);
                (
                    RunStatus::Uncertain,
                    Some(format!(
                        "{one} {names} {verb} running when the run stopped and not idempotent, so each may or may \
                         not have taken effect; check, then `runbook resume {} --rerun {first}` or `--mark-done \
                         {first}` for each",
                        self.run_id
                    )),
                )
            }
        };
        self.finish(status, error).await
    }

    async fn cancel_requested(&self) -> bool {
        match self.engine.store.events(&self.run_id).await {
            Ok(events) => Replay::new(&events).cancel_requested,
            Err(_) => false,
        }
    }

    async fn finish(&self, status: RunStatus, error: Option<String>) -> Result<Finished, EngineError> {
        if status == RunStatus::Interrupted {
            self.interrupt_in_flight().await;
        }
        // The step logs are in the store before the run says it ended, so a
        // follower that stops at `run_finished` has every line (those still
        // queued pass the writer, which masks them, first).
        self.sync().await;
        flush(&*self.engine.store, &self.run_id, &self.logs).await;
        let error = error.map(|e| self.masker.text(&e));
        let event = Event::RunFinished {
            status,
            error: error.clone(),
        };
        if !self.journal(event).await {
            if let Some(e) = self.take_store_error() {
                return Err(EngineError::Store(e));
            }
        }
        Ok(Finished { status, error })
    }

    /// Steps killed without a word (a second interrupt dropped them) are
    /// recorded interrupted, so `status` never shows them running.
    async fn interrupt_in_flight(&self) {
        self.sync().await;
        let Ok(events) = self.engine.store.events(&self.run_id).await else {
            return;
        };
        for (step, attempt) in Replay::new(&events).unended {
            self.journal_soon(Event::StepInterrupted { step, attempt });
        }
    }

    /// A group (or a `for_each`) succeeded with `outputs`: visible to the
    /// steps after it, and journalled unless the journal already has it.
    fn group_succeeded(&self, step: &'a Step, frame: &Rc<Frame>, path: &str, outputs: Json, restore: bool) -> Outcome {
        frame.set(step.id.as_deref(), "succeeded", &outputs);
        if !self.recorded(path, restore) {
            self.journal_soon(Event::StepSucceeded {
                step: path.to_owned(),
                attempt: 1,
                outputs,
            });
        }
        Outcome::Succeeded
    }

    /// Runs a list of sibling steps as a DAG.
    fn run_list<'b>(
        &'b self,
        steps: &'a [Step],
        frame: &'b Rc<Frame>,
        prefix: &'b str,
        cancel: &'b CancellationToken,
        restore: bool,
    ) -> LocalBoxFuture<'b, Outcome> {
        self.run_steps(steps, frame, prefix, cancel, restore, false)
    }

    /// Runs a handler list (`on_failure`, `undo`, `finally`): every step runs
    /// once, in order, whatever the steps before it did.
    async fn run_handlers(
        &self,
        steps: &'a [Step],
        frame: &Rc<Frame>,
        prefix: &str,
        cancel: &CancellationToken,
    ) -> Outcome {
        self.run_steps(steps, frame, prefix, cancel, false, true).await
    }

    /// A list of sibling steps as a DAG; with `keep_going`, a step starts once
    /// the steps it follows have ended, however they ended.
    fn run_steps<'b>(
        &'b self,
        steps: &'a [Step],
        frame: &'b Rc<Frame>,
        prefix: &'b str,
        cancel: &'b CancellationToken,
        restore: bool,
        keep_going: bool,
    ) -> LocalBoxFuture<'b, Outcome> {
        Box::pin(async move {
            // A step that has not run reads as `pending` (so a handler can ask
            // whether the deploy ran before it rolls back).
            for id in steps.iter().filter_map(|s| s.id.as_deref()) {
                if !frame.results.borrow().contains_key(id) {
                    frame.set(Some(id), "pending", &json!({}));
                }
            }
            let deps = dependencies(steps);
            #[derive(Clone, PartialEq)]
            enum State {
                Pending,
                Running,
                Done(Outcome),
            }
            let mut state = vec![State::Pending; steps.len()];
            let mut running = FuturesUnordered::new();
            let mut result = Outcome::Succeeded;
            loop {
                if keep_going || result.rank() == 0 {
                    for i in 0..steps.len() {
                        let ready = state[i] == State::Pending
                            && deps[i].iter().all(|&j| match &state[j] {
                                State::Done(o) => keep_going || o.lets_dependents_run(),
                                _ => false,
                            });
                        if !ready {
                            continue;
                        }
                        let seg = steps[i].id.clone().unwrap_or_else(|| format!("{}", i + 1));
                        let path = join_path(prefix, &seg);
                        // Once stopped, only what already finished is restored
                        // (so that handlers see its results), and a call that
                        // began goes on to its handlers; nothing new starts.
                        if cancel.is_cancelled() && !(restore && self.enters_stopped(&steps[i], &path)) {
                            continue;
                        }
                        state[i] = State::Running;
                        let fut = self.run_step(&steps[i], frame, path, cancel, restore);
                        running.push(async move { (i, fut.await) });
                    }
                }
                match running.next().await {
                    None => break,
                    Some((i, o)) => {
                        result = result.merge(o.clone());
                        state[i] = State::Done(o);
                    }
                }
            }
            if result.rank() == 0 && state.contains(&State::Pending) {
                result = Outcome::Interrupted;
            }
            result
        })
    }

    /// True if the journal has the step finished (succeeded or skipped).
    fn finished_before(&self, step: &Step, path: &str) -> bool {
        match self.replay.steps.get(path) {
            Some(Prior::Succeeded(_)) => {
                !(self.has_undo(step) && (!self.inner(step).is_empty() || step.for_each.is_some()))
            }
            Some(Prior::Skipped) => true,
            _ => false,
        }
    }

    /// True if a resume that is stopped before it starts (`cancel` of a run
    /// that waits) still enters the step at `path`: it finished (it is
    /// restored, for the handlers to read), or a playbook it calls began and
    /// did something since its handlers last ran (its `on_failure` and
    /// `finally` have yet to run, as the run's own have).
    fn enters_stopped(&self, step: &Step, path: &str) -> bool {
        if self.finished_before(step, path) {
            return true;
        }
        if !self.calls_inside(step) {
            return false;
        }
        let (inside, items) = (format!("{path}."), format!("{path}["));
        let (mut acted, mut handled) = (None, None);
        for (k, seq) in &self.replay.last_seq {
            if !(k.starts_with(&inside) || k.starts_with(&items)) {
                continue;
            }
            let rest = &k[path.len()..];
            if rest.contains(".finally.") || rest.contains(".on_failure.") {
                handled = handled.max(Some(*seq));
            } else {
                acted = acted.max(Some(*seq));
            }
        }
        acted > handled
    }

    /// True if the step calls a playbook, or a step inside it does.
    fn calls_inside(&self, step: &Step) -> bool {
        runbook_core::calls::call_of(step).is_some() || self.inner(step).iter().any(|s| self.calls_inside(s))
    }

    /// True if a step that reads one of `step`'s secret outputs has not
    /// finished in the journal (so a resume must produce them again).
    fn secrets_needed(&self, step: &Step, frame: &Frame) -> bool {
        let Some(id) = step.id.as_deref().filter(|_| !step.secret_outputs.is_empty()) else {
            return false;
        };
        let playbook = frame.callee().map_or(self.playbook, |c| &c.playbook);
        playbook.all_steps().into_iter().any(|reader| {
            let read = runbook_core::template::outputs_read([reader], id);
            let reads_secret = read.iter().any(|n| n == "*" || step.secret_outputs.contains(n));
            let Some(reader_id) = reader.id.as_deref().filter(|_| reads_secret) else {
                return reads_secret;
            };
            // Every journalled path of the reader (one per item in a fan-out).
            let mut seen = self
                .replay
                .steps
                .iter()
                .filter(|(path, _)| path.rsplit('.').next().and_then(|last| last.split('[').next()) == Some(reader_id))
                .peekable();
            seen.peek().is_none() || seen.any(|(_, prior)| !matches!(prior, Prior::Succeeded(_) | Prior::Skipped))
        })
    }

    /// Remembers a completed step whose `undo` a failure of the run would run.
    fn completed(&self, path: &str, step: &'a Step, frame: &Rc<Frame>) {
        if step.undo_steps().is_empty() {
            return;
        }
        let mut undo = self.undo.borrow_mut();
        let order = match self.replay.succeeded_seq.get(path) {
            Some(seq) => (*seq, 0),
            None => (i64::MAX, undo.len()),
        };
        undo.push(Done {
            order,
            path: path.to_owned(),
            step,
            frame: frame.clone(),
        });
    }

    /// True if the journal already has this success (a part of the run that
    /// resume walked into); it is not recorded twice.
    fn recorded(&self, path: &str, restore: bool) -> bool {
        restore && matches!(self.replay.steps.get(path), Some(Prior::Succeeded(_)))
    }

    fn run_step<'b>(
        &'b self,
        step: &'a Step,
        frame: &'b Rc<Frame>,
        path: String,
        cancel: &'b CancellationToken,
        restore: bool,
    ) -> LocalBoxFuture<'b, Outcome> {
        Box::pin(async move {
            let id = step.id.as_deref();
            if restore {
                match self.replay.steps.get(&path) {
                    // A composite with an `undo` inside is walked into, so each
                    // completed part is known (and can be undone).
                    Some(Prior::Succeeded(_)) if !self.finished_before(step, &path) => {}
                    // Its secret outputs were never journalled: it runs again
                    // for a step that still needs them.
                    Some(Prior::Succeeded(_)) if self.secrets_needed(step, frame) => {}
                    Some(Prior::Succeeded(outputs)) => {
                        let outputs = lose_secret_outputs(step, outputs);
                        frame.set(id, "succeeded", &outputs);
                        self.completed(&path, step, frame);
                        return Outcome::Succeeded;
                    }
                    Some(Prior::Skipped) => {
                        frame.set(id, "skipped", &json!({}));
                        return Outcome::Skipped;
                    }
                    _ => {}
                }
            }
            if step.for_each.is_some() {
                // `continue_on_error` applies to the fan-out as a whole, once
                // `max_failures` has judged it.
                return match self.for_each(step, frame, &path, cancel, restore).await {
                    Outcome::Failed(_) if step.continue_on_error => Outcome::Tolerated,
                    other => other,
                };
            }
            if let Some(skip) = self.when(step, frame, &path).await {
                return skip;
            }
            let outcome = match &step.steps {
                Some(children) => self.group(step, children, frame, &path, cancel, restore).await,
                None => self.call(step, frame, &path, cancel, restore).await,
            };
            self.after(step, frame, &path, outcome, true).await
        })
    }

    /// Evaluates `when`; `Some(outcome)` if the step does not run.
    async fn when(&self, step: &'a Step, frame: &Rc<Frame>, path: &str) -> Option<Outcome> {
        let cond = step.when.as_ref()?;
        let data = self.data(step, frame);
        match self.renderer.condition(cond, &data) {
            Ok(true) => None,
            Ok(false) => {
                frame.set(step.id.as_deref(), "skipped", &json!({}));
                let reason = format!("`when: {cond}` is false");
                self.journal_soon(Event::StepSkipped {
                    step: path.to_owned(),
                    reason,
                });
                Some(Outcome::Skipped)
            }
            Err(e) => {
                let msg = self.masker.text(&format!("`when`: {e}"));
                self.journal_soon(Event::StepFailed {
                    step: path.to_owned(),
                    attempt: 0,
                    error: msg.clone(),
                    will_retry: false,
                });
                Some(Outcome::Failed(msg))
            }
        }
    }

    /// After a step, group or item: handlers, `continue_on_error` (not for an
    /// item: its failure counts against `max_failures`), undo bookkeeping.
    async fn after(&self, step: &'a Step, frame: &Rc<Frame>, path: &str, outcome: Outcome, tolerate: bool) -> Outcome {
        match outcome {
            Outcome::Succeeded => {
                self.completed(path, step, frame);
                Outcome::Succeeded
            }
            Outcome::Failed(e) => {
                self.handlers(step, frame, path).await;
                if tolerate && step.continue_on_error {
                    Outcome::Tolerated
                } else {
                    Outcome::Failed(e)
                }
            }
            Outcome::Interrupted => {
                self.handlers(step, frame, path).await;
                Outcome::Interrupted
            }
            other => other,
        }
    }

    /// Runs a step's `on_failure` steps (not restorable: they run each time).
    async fn handlers(&self, step: &'a Step, frame: &Rc<Frame>, path: &str) {
        if step.on_failure.is_empty() {
            return;
        }
        // Handlers outlive a graceful stop; only the journal failing stops them.
        let token = self.abort.child_token();
        let prefix = own_handlers(step, path);
        self.run_handlers(&step.on_failure, frame, &prefix, &token).await;
    }

    async fn group(
        &self,
        step: &'a Step,
        children: &'a [Step],
        frame: &Rc<Frame>,
        path: &str,
        cancel: &CancellationToken,
        restore: bool,
    ) -> Outcome {
        let restore = restore && !self.restarts(step, path);
        let outcome = self.run_list(children, frame, path, cancel, restore).await;
        self.conclude(step, frame, path, outcome).await
    }

    /// Whether resume runs this group (or item) again from its first step:
    /// `resume: restart`, and the last thing it did was fail and run its
    /// `on_failure` steps. A later interruption (a step of the restarted
    /// attempt in flight) resumes like any other.
    fn restarts(&self, step: &Step, path: &str) -> bool {
        if step.resume != Some(ResumePolicy::Restart) {
            return false;
        }
        let handlers = format!("{path}.on_failure.");
        // A called playbook's `finally` runs after its `on_failure`, and the
        // call's own `on_failure` after both.
        let call = runbook_core::calls::call_of(step).is_some();
        let finally = format!("{path}.finally.");
        let own = format!("{}.", own_handlers(step, path));
        let (inside, items) = (format!("{path}."), format!("{path}["));
        let (mut handled, mut other) = (None, None);
        for (k, seq) in &self.replay.last_seq {
            if k.starts_with(&finally) && call {
                continue;
            }
            if k.starts_with(&handlers) || k.starts_with(&own) {
                handled = handled.max(Some(*seq));
            } else if k == path || k.starts_with(&inside) || k.starts_with(&items) {
                other = other.max(Some(*seq));
            }
        }
        handled.is_some() && handled > other
    }

    /// Records how a group (or a for_each item) ended, with its `outputs:`.
    async fn conclude(&self, step: &'a Step, frame: &Rc<Frame>, path: &str, outcome: Outcome) -> Outcome {
        match outcome {
            Outcome::Succeeded | Outcome::Skipped | Outcome::Tolerated => {
                let outputs = match self.declared_outputs(step, frame, Outputs::new()) {
                    Ok(o) => o,
                    Err(e) => return self.group_failed(step, frame, path, e).await,
                };
                self.group_succeeded(step, frame, path, Json::Object(outputs), true)
            }
            Outcome::Failed(e) => self.group_failed(step, frame, path, e).await,
            other => other,
        }
    }

    async fn group_failed(&self, step: &'a Step, frame: &Rc<Frame>, path: &str, error: String) -> Outcome {
        frame.set(step.id.as_deref(), "failed", &json!({}));
        self.journal_soon(Event::StepFailed {
            step: path.to_owned(),
            attempt: 1,
            error: error.clone(),
            will_retry: false,
        });
        Outcome::Failed(error)
    }

    /// Computes a step's `outputs:` mapping on top of `outputs`.
    fn declared_outputs(&self, step: &'a Step, frame: &Rc<Frame>, outputs: Outputs) -> Result<Outputs, String> {
        let Some(map) = &step.outputs else { return Ok(outputs) };
        self.render_outputs(map, &self.data(step, frame), outputs)
    }

    /// Renders an `outputs:` mapping (a step's or a playbook's) over `data`,
    /// on top of `outputs` (what leaves the run is masked by the writer).
    fn render_outputs(
        &self,
        map: &IndexMap<String, String>,
        data: &Data,
        mut outputs: Outputs,
    ) -> Result<Outputs, String> {
        for (name, tpl) in map {
            let v = self
                .renderer
                .render_value(tpl, data, Mode::Plain)
                .map_err(|e| format!("output `{name}`: {e}"))?;
            outputs.insert(name.clone(), v);
        }
        Ok(outputs)
    }

    /// Compensation: each completed step's `undo`, in reverse completion
    /// order (as the journal has it, across resumes). A step whose undo
    /// succeeded is recorded `undone`: a resume runs it again.
    async fn compensate(&self, token: &CancellationToken) {
        let mut done: Vec<Done<'a>> = self.undo.borrow().clone();
        done.sort_by_key(|d| d.order);
        for d in done.into_iter().rev() {
            let prefix = format!("{}.undo", d.path);
            if self
                .run_handlers(d.step.undo_steps(), &d.frame, &prefix, token)
                .await
                .rank()
                == 0
            {
                self.journal_soon(Event::StepUndone { step: d.path });
            }
        }
    }

    /// The template data for a step: the run's values (the inventory only
    /// if its templates name it: it is copied into each step's data), the
    /// item variables in scope, and the results of the steps its templates
    /// read.
    /// The run's secrets by name, as fetched for this attempt.
    fn secrets(&self) -> IndexMap<String, String> {
        self.base
            .get("secrets")
            .and_then(Json::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn data(&self, step: &Step, frame: &Frame) -> Data {
        let mut m = self.base.clone();
        let reads = self.refs(step);
        if reads.inventory {
            m.insert("inventory".into(), (*self.inventory).clone());
        }
        let mut chain = Vec::new();
        let mut f = Some(frame);
        while let Some(x) = f {
            chain.push(x);
            f = x.parent.as_deref();
        }
        for x in chain.iter().rev() {
            for (k, v) in &x.vars {
                m.insert(k.clone(), v.clone());
            }
        }
        let mut steps = serde_json::Map::new();
        for id in &reads.steps {
            if let Some(r) = frame.lookup(id) {
                steps.insert(id.clone(), r);
            }
        }
        m.insert("steps".into(), Json::Object(steps));
        Data::new(Json::Object(m))
    }

    /// The secrets a step grants its kind (`secrets:`), by name.
    fn granted(&self, step: &Step) -> serde_json::Map<String, Json> {
        let all = self.base.get("secrets");
        step.secrets
            .iter()
            .filter_map(|name| Some((name.clone(), all?.get(name)?.clone())))
            .collect()
    }

    /// What a step's own templates read (cached per step).
    fn refs(&self, step: &Step) -> Rc<Reads> {
        let key = std::ptr::from_ref(step) as usize;
        if let Some(r) = self.refs.borrow().get(&key) {
            return r.clone();
        }
        let texts = step.texts();
        let mut reads = Reads::default();
        for t in texts.into_iter().filter(|t| template::is_template(t)) {
            // Textual, so it can only say yes too often: a helper's
            // argument (`lookup inventory.hosts host`) counts.
            reads.inventory |= t.contains("inventory");
            if let Ok(tpl) = template::compile(t) {
                for r in template::usage(&tpl).references {
                    if r.segments[0] == "steps" {
                        if let Some(id) = r.segments.get(1) {
                            if !reads.steps.contains(id) {
                                reads.steps.push(id.clone());
                            }
                        }
                    }
                }
            }
        }
        let reads = Rc::new(reads);
        self.refs.borrow_mut().insert(key, reads.clone());
        reads
    }
}
