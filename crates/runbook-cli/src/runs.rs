//! `run`, `resume` and `cancel`: starting, continuing and stopping runs.

use crate::Exit;
use crate::args::{AnswerArgs, ExecArgs, InputArgs, Output};
use crate::diagnostics::plural;
use crate::loading::{load, resolve_inputs};
use crate::session::{alive, held_by_worker, open_run, open_store, runtime, user};
use indexmap::IndexMap;
use runbook_core::diag::Source;
use runbook_core::kind::Registry;
use runbook_core::library::Library;
use runbook_core::model::Playbook;
use runbook_engine::exec::{self, Engine, Observer, RunInput, Signals};
use runbook_engine::replay::{Prior, Replay};
use runbook_engine::secrets::{self, Masker};
use runbook_report::{plan_hash, sha256_hex};
use runbook_state::{Event, NewRun, RunStatus, Store};
use serde_json::Value as Json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `runbook state migrate`: opening the store applies its migrations.
pub(crate) fn migrate(state: Option<PathBuf>) -> Exit {
    let Some(rt) = runtime() else { return Exit::Invalid };
    rt.block_on(async {
        let Some(store) = open_store(state).await else {
            return Exit::Invalid;
        };
        match store.schema_version().await {
            Ok(v) => {
                println!("state schema is up to date: version {v}");
                Exit::Ok
            }
            Err(e) => {
                eprintln!("error: {e}");
                Exit::Invalid
            }
        }
    })
}

/// What shows a run's progress: text (live bars with `progress`, each line
/// starting with `label` when a worker's runs interleave) or JSON lines.
pub(crate) fn observer(output: Output, progress: bool, label: Option<&str>) -> Arc<dyn Observer> {
    match (output, label) {
        (Output::Text, Some(label)) => Arc::new(crate::observe::Text::prefixed(label.to_owned())),
        (Output::Text, None) => Arc::new(crate::observe::Text::new(progress)),
        (Output::Json, _) => Arc::new(crate::observe::JsonLines),
    }
}

pub(crate) fn env() -> IndexMap<String, String> {
    std::env::vars().collect()
}

fn secrets_or_exit(pb: &Playbook, env: &IndexMap<String, String>) -> Option<IndexMap<String, String>> {
    match secrets::resolve(pb, env) {
        Ok(s) => Some(s),
        Err(missing) => {
            for m in &missing {
                eprintln!("error: {}", m.message);
            }
            eprintln!(
                "error: {} missing for `{}`; nothing was run",
                plural(missing.len(), "secret"),
                pb.name
            );
            None
        }
    }
}

/// `plan --live`: resolves the secrets and lets the kinds look at what the
/// steps would touch. False (after saying why) when a secret is missing.
pub(crate) fn look(plan: &mut runbook_engine::plan::Plan, pb: &Playbook, registry: &Registry) -> bool {
    let Some(secrets) = secrets_or_exit(pb, &env()) else {
        return false;
    };
    let Some(rt) = runtime() else { return false };
    rt.block_on(async {
        let cancel = runbook_core::kind::CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        });
        runbook_engine::plan::preview(plan, registry, &secrets, &cancel).await;
    });
    true
}

/// Signals for a run in this process, stopped by Ctrl-C and SIGTERM.
fn watched_signals() -> Signals {
    let signals = Signals::default();
    watch_signals(&signals);
    signals
}

/// First SIGINT/SIGTERM: stop gracefully. Second: kill.
pub(crate) fn watch_signals(signals: &Signals) {
    use tokio::signal::unix::{SignalKind, signal};
    let s = signals.clone();
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        let mut count = 0;
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            count += 1;
            if count == 1 {
                eprintln!(
                    "stopping: no new steps start; running steps are being stopped (interrupt again to kill now)"
                );
                s.stop.cancel();
            } else {
                eprintln!("killing running steps now");
                s.kill.cancel();
                break;
            }
        }
    });
}

pub(crate) struct Execute<'a> {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: &'a Registry,
    pub(crate) playbook: &'a Playbook,
    pub(crate) run_id: String,
    pub(crate) inputs: IndexMap<String, Json>,
    pub(crate) secrets: IndexMap<String, String>,
    pub(crate) env: IndexMap<String, String>,
    pub(crate) inventory: Json,
    pub(crate) started_at: String,
    pub(crate) replay: Replay,
    pub(crate) exec: &'a ExecArgs,
    /// The run holds its playbook's lock: renew it while running, then give it back.
    pub(crate) locked: bool,
    /// Reports to write when the run stops.
    pub(crate) reports: Vec<(crate::args::ReportFormat, PathBuf)>,
    /// What stops the run: this process's signals, or its worker.
    pub(crate) signals: Signals,
    /// May ask at the terminal (approvals).
    pub(crate) interactive: bool,
    /// Put before each line of text output (a worker's runs interleave).
    pub(crate) label: Option<String>,
}

/// A person is at the keyboard: text output, stdin and stdout are terminals,
/// and no CI.
fn interactive(exec: &ExecArgs) -> bool {
    use std::io::IsTerminal;
    exec.output == Output::Text
        && std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal()
        && !crate::observe::in_ci()
}

/// Asks at the terminal about the step(s) the run waits at; records the
/// answer and returns the journal to continue from, or `None` to leave the run
/// waiting.
async fn answer_at_terminal(store: &Arc<dyn Store>, run_id: &str) -> Option<Vec<runbook_state::Recorded>> {
    let record = store.run(run_id).await.ok()?;
    if record.status != RunStatus::Waiting {
        return None;
    }
    let events = store.events(run_id).await.ok()?;
    let waiting = Replay::new(&events).waiting();
    if waiting.is_empty() {
        return None;
    }
    let who = user();
    eprint!(
        "approve {} as {who}? [y = approve, n = reject, Enter = leave it waiting]: ",
        waiting.join(", ")
    );
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).ok()?;
    let approve = match line.trim() {
        "y" | "yes" => true,
        "n" | "no" => false,
        _ => return None,
    };
    let answer = Answer {
        approve,
        who: who.clone(),
        comment: Some("answered at the terminal".into()),
        plan_hash: None,
    };
    let mut journal = vec![Event::RunResumed {
        user: who,
        runner: None,
    }];
    journal.extend(answer.events(&waiting, &plan_hash(&record)));
    store.append_all(run_id, &journal).await.ok()?;
    store.events(run_id).await.ok()
}

/// `--report FORMAT=PATH` flags, checked before anything runs.
fn reports(exec: &ExecArgs) -> Option<Vec<(crate::args::ReportFormat, PathBuf)>> {
    let mut out = Vec::new();
    for spec in &exec.report {
        match crate::report::parse_spec(spec) {
            Ok(r) => out.push(r),
            Err(e) => {
                eprintln!("error: {e}; nothing was run");
                return None;
            }
        }
    }
    Some(out)
}

pub(crate) async fn execute(x: Execute<'_>) -> Exit {
    let ttl = crate::locks::ttl(x.exec).unwrap_or(Duration::from_secs(30));
    let heartbeat = x
        .locked
        .then(|| crate::locks::heartbeat(x.store.clone(), x.run_id.clone(), ttl));
    let (store, run_id) = (x.store.clone(), x.run_id.clone());
    let (registry, reports) = (x.registry.clone(), x.reports.clone());
    let mut x = x;
    let mut code = execute_inner(&x).await;
    // At a terminal, a person can answer an approval right here.
    while code == Exit::Waiting && x.interactive {
        let Some(events) = answer_at_terminal(&x.store, &x.run_id).await else {
            break;
        };
        x.replay = Replay::new(&events);
        code = execute_inner(&x).await;
    }
    crate::report::write_all(store.as_ref(), &registry, &run_id, &reports).await;
    if let Some(h) = heartbeat {
        h.abort();
        // A run waiting for an approval keeps its lock; any other stop frees it.
        let waiting = matches!(store.run(&run_id).await, Ok(r) if r.status == RunStatus::Waiting);
        let kept = if waiting {
            store.renew_locks(&run_id, crate::locks::WAITING_TTL).await
        } else {
            store.release_locks(&run_id).await
        };
        if let Err(e) = kept {
            eprintln!("warning: the run's lock: {e} (it expires by itself)");
        }
    }
    code
}

async fn execute_inner(x: &Execute<'_>) -> Exit {
    let observer = observer(x.exec.output, !x.exec.no_progress, x.label.as_deref());
    let engine = Engine {
        registry: x.registry.clone(),
        store: x.store.clone(),
        observer,
    };
    let _ = x.store.set_runner(&x.run_id, Some(std::process::id())).await;
    let input = RunInput {
        run_id: x.run_id.clone(),
        playbook: x.playbook,
        inputs: x.inputs.clone(),
        secrets: x.secrets.clone(),
        env: x.env.clone(),
        inventory: x.inventory.clone(),
        user: user(),
        started_at: x.started_at.clone(),
        replay: x.replay.clone(),
        max_parallel: x.exec.max_parallel,
        auto_approve: x.exec.yes.then(user),
    };
    let result = exec::execute(&engine, input, &x.signals).await;
    let _ = x.store.set_runner(&x.run_id, None).await;
    match result {
        Ok(done) => {
            let resumable = matches!(
                done.status,
                RunStatus::Interrupted | RunStatus::Failed | RunStatus::Uncertain
            );
            if resumable && x.exec.output == Output::Text {
                eprintln!("hint: `runbook resume {}` continues this run", x.run_id);
            }
            exit_for(done.status)
        }
        Err(runbook_engine::exec::EngineError::Store(e @ runbook_state::StoreError::Fenced { .. })) => {
            // Another worker owns the run now; this one wrote nothing more.
            eprintln!("{}stopped: {e}", x.label.as_deref().unwrap_or(""));
            Exit::Interrupted
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("hint: fix the state location, then `runbook resume {}`", x.run_id);
            Exit::Interrupted
        }
    }
}

/// The playbook and its inputs, checked; `None` after printing why (exit 2).
fn load_with_inputs(
    lib: &Library,
    registry: &Registry,
    spec: &str,
    args: &InputArgs,
) -> Option<(runbook_core::validate::Loaded, IndexMap<String, Json>)> {
    let loaded = load(lib, registry, spec)?;
    let inputs = resolve_inputs(&loaded.playbook, args)?;
    Some((loaded, inputs))
}

pub(crate) fn run(
    state: Option<PathBuf>,
    lib: &Library,
    registry: &Registry,
    spec: &str,
    args: &InputArgs,
    exec: &ExecArgs,
    inventory: &runbook_core::inventory::Inventory,
) -> Exit {
    let Some((loaded, inputs)) = load_with_inputs(lib, registry, spec, args) else {
        return Exit::Invalid;
    };
    let pb = &loaded.playbook;
    let env = env();
    let Some(secrets) = secrets_or_exit(pb, &env) else {
        return Exit::Invalid;
    };
    let Some(wanted) = reports(exec) else {
        return Exit::Invalid;
    };
    // Every template known at start renders now, or nothing runs.
    let data = runbook_engine::precheck::start_data(pb, &inputs, &env, &secrets, &inventory.to_template(), &user());
    let refused = runbook_engine::precheck::check(pb, registry, &data);
    if !refused.is_empty() {
        let masker = Masker::new(secrets.values().map(String::as_str));
        for r in &refused {
            eprintln!("error: {}", masker.text(&r.to_string()));
        }
        eprintln!(
            "error: {} cannot render with these inputs, secrets and inventory; nothing was run",
            plural(refused.len(), "template")
        );
        return Exit::Invalid;
    }
    let lock = match crate::locks::keys(pb, &inputs, &env) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}; nothing was run");
            return Exit::Invalid;
        }
    };
    let Some(rt) = runtime() else { return Exit::Invalid };
    rt.block_on(async {
        let Some(store) = open_store(state).await else {
            return Exit::Invalid;
        };
        let masker = Masker::new(secrets.values().map(String::as_str));
        let run_id = runbook_state::new_run_id();
        if let Err(code) = crate::locks::acquire_all(&store, &lock, &run_id, exec).await {
            return code;
        }
        let new = new_run(&loaded, &run_id, masker.json(&serde_json::json!(inputs)));
        let first = Event::RunStarted {
            user: user(),
            runner: None,
        };
        if let Err(e) = store.create_run(&new, &first).await {
            let _ = store.release_locks(&run_id).await;
            eprintln!("error: {e}; nothing was run");
            return Exit::Invalid;
        }
        observer(exec.output, false, None).event(&run_id, &first);
        execute(Execute {
            store,
            registry,
            playbook: pb,
            run_id,
            inputs,
            secrets,
            env,
            inventory: inventory.to_template(),
            started_at: runbook_state::now(),
            replay: Replay::default(),
            exec,
            locked: !lock.is_empty(),
            reports: wanted,
            signals: watched_signals(),
            interactive: interactive(exec),
            label: None,
        })
        .await
    })
}

/// A run of the exact text loaded, with its inputs (secrets masked).
fn new_run(loaded: &runbook_core::validate::Loaded, id: &str, inputs: Json) -> NewRun {
    let text = loaded.source.text.to_string();
    NewRun {
        id: id.to_owned(),
        playbook: loaded.playbook.name.clone(),
        version: loaded.playbook.version,
        hash: sha256_hex(&text),
        text,
        inputs,
        user: user(),
    }
}

/// `run --submit`: checks everything `run` checks except the secrets (they
/// are the worker's), then queues the run for the workers.
pub(crate) fn submit(
    state: Option<PathBuf>,
    lib: &Library,
    registry: &Registry,
    spec: &str,
    (args, exec): (&InputArgs, &ExecArgs),
    wait: bool,
) -> Exit {
    let Some((loaded, inputs)) = load_with_inputs(lib, registry, spec, args) else {
        return Exit::Invalid;
    };
    let pb = &loaded.playbook;
    if let Err(e) = crate::locks::keys(pb, &inputs, &env()) {
        eprintln!("error: {e}; nothing was queued");
        return Exit::Invalid;
    }
    let Some(rt) = runtime() else { return Exit::Invalid };
    rt.block_on(async {
        let Some(store) = open_store(state).await else {
            return Exit::Invalid;
        };
        let run_id = runbook_state::new_run_id();
        let new = new_run(&loaded, &run_id, serde_json::json!(inputs));
        let first = Event::RunQueued { user: user() };
        if let Err(e) = store.create_run(&new, &first).await {
            eprintln!("error: {e}; nothing was queued");
            return Exit::Invalid;
        }
        match exec.output {
            Output::Json => observer(Output::Json, false, None).event(&run_id, &first),
            Output::Text => {
                println!("{run_id}");
                eprintln!("queued: a `runbook worker` runs it (hint: `runbook status {run_id}`)");
            }
        }
        if wait {
            return follow(store.as_ref(), &run_id, exec.output).await;
        }
        Exit::Ok
    })
}

/// The exit code of a run that stopped as `status`.
fn exit_for(status: RunStatus) -> Exit {
    match status {
        RunStatus::Succeeded => Exit::Ok,
        RunStatus::Failed | RunStatus::Cancelled => Exit::Failed,
        RunStatus::Waiting => Exit::Waiting,
        RunStatus::Interrupted | RunStatus::Uncertain | RunStatus::Running | RunStatus::Queued => Exit::Interrupted,
    }
}

/// `run --submit --wait`: prints a submitted run's events and logs as its
/// workers record them, until it stops for good or for a person (an approval,
/// an uncertain step); then its exit code. A run interrupted by a worker's
/// shutdown is not stopped: another worker continues it.
async fn follow(store: &dyn Store, run_id: &str, output: Output) -> Exit {
    let text = crate::observe::Text::new(false);
    let show = |rec: &runbook_state::Recorded| match output {
        Output::Text => text.recorded(run_id, rec),
        Output::Json => crate::observe::JsonLines::recorded(run_id, rec),
    };
    let show_line = |line: &runbook_state::LogLine| match output {
        Output::Text => text.log(line),
        Output::Json => crate::observe::JsonLines.log(line),
    };
    let (mut seen, mut after) = (1, 0);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let status = match store.run(run_id).await {
            Ok(r) => r.status,
            Err(e) => {
                eprintln!("error: {e} (hint: `runbook status {run_id}` once the state is back)");
                return Exit::Interrupted;
            }
        };
        // Read after the status, so the last ones are never missed; shown in
        // the order they happened.
        let lines = store.logs(run_id, None, after).await.unwrap_or_default();
        let events = store.events_after(run_id, seen).await.unwrap_or_default();
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
                    show(rec);
                    seen = rec.seq;
                }
            } else if let Some((seq, line)) = lines.next() {
                show_line(line);
                after = *seq;
            }
        }
        if !matches!(status, RunStatus::Queued | RunStatus::Running | RunStatus::Interrupted) {
            return exit_for(status);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = &mut ctrl_c => {
                eprintln!("stopped following; the run goes on (hint: `runbook status {run_id}`)");
                return Exit::Interrupted;
            }
        }
    }
}

/// The playbook a run executes: the exact text it started with, validated
/// again by this runbook; why not (its diagnostics already printed).
pub(crate) fn load_stored(
    record: &runbook_state::RunRecord,
    registry: &Registry,
) -> Result<runbook_core::validate::Loaded, String> {
    let source = Source::new(
        format!("run {} ({} v{})", record.id, record.playbook, record.version),
        record.text.clone(),
    );
    let expected = runbook_core::validate::Expected {
        name: Some(record.playbook.clone()),
        version: Some(record.version),
    };
    runbook_core::validate::load(source, &expected, registry).map_err(|inv| {
        crate::diagnostics::eprint_all(&inv.source, &inv.diagnostics);
        "the stored playbook no longer validates with this runbook".to_owned()
    })
}

/// The inputs a run was started with.
pub(crate) fn stored_inputs(record: &runbook_state::RunRecord) -> IndexMap<String, Json> {
    record
        .inputs
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// `approve` / `reject`: records the answer for the step(s) the run waits at,
/// then continues the run (a rejected step fails, and its handlers run).
pub(crate) fn answer(
    state: Option<PathBuf>,
    registry: &Registry,
    args: &AnswerArgs,
    approve: bool,
    exec: &ExecArgs,
    inventory: &runbook_core::inventory::Inventory,
) -> Exit {
    let who = args.who.clone().unwrap_or_else(user);
    let answer = Answer {
        approve,
        who,
        comment: args.comment.clone(),
        plan_hash: args.plan_hash.clone(),
    };
    let decisions = Decisions {
        answer: Some(&answer),
        ..Decisions::default()
    };
    continue_run(state, registry, &args.run, &decisions, exec, inventory)
}

/// An answer to an approval.
pub(crate) struct Answer {
    approve: bool,
    who: String,
    comment: Option<String>,
    /// The plan the answerer reviewed, if they said.
    plan_hash: Option<String>,
}

impl Answer {
    /// The journal entries that record it for each waiting step, bound to the
    /// run's plan.
    fn events(&self, waiting: &[String], plan: &str) -> Vec<Event> {
        waiting
            .iter()
            .map(|step| Event::OperatorAction {
                action: if self.approve { "approve" } else { "reject" }.into(),
                step: Some(step.clone()),
                who: self.who.clone(),
                comment: self.comment.clone(),
                plan_hash: Some(plan.to_owned()),
            })
            .collect()
    }
}

/// What an operator decided about a run being continued.
#[derive(Default)]
pub(crate) struct Decisions<'a> {
    /// `--rerun STEP`: run in-flight (or marked-done) steps again.
    pub(crate) rerun: &'a [String],
    /// `--mark-done STEP`: record in-flight steps as done.
    pub(crate) mark_done: &'a [String],
    /// `--set-output STEP.NAME=VALUE`: outputs of steps marked done.
    pub(crate) set_output: &'a [String],
    /// `approve` / `reject`.
    pub(crate) answer: Option<&'a Answer>,
    /// `cancel` of a run nobody executes: only its handlers run.
    pub(crate) cancel: bool,
    /// `--to-current`: continue on the playbook file's current text, once it
    /// agrees with what already ran.
    pub(crate) to_current: bool,
    /// The library, to tell whether the playbook file changed since the run
    /// started.
    pub(crate) library: Option<&'a Library>,
}

pub(crate) fn resume(
    state: Option<PathBuf>,
    registry: &Registry,
    id: &str,
    decisions: &Decisions<'_>,
    exec: &ExecArgs,
    inventory: &runbook_core::inventory::Inventory,
) -> Exit {
    continue_run(state, registry, id, decisions, exec, inventory)
}

fn continue_run(
    state: Option<PathBuf>,
    registry: &Registry,
    id: &str,
    decisions: &Decisions<'_>,
    exec: &ExecArgs,
    inventory: &runbook_core::inventory::Inventory,
) -> Exit {
    let Some(wanted) = reports(exec) else {
        return Exit::Invalid;
    };
    let Some(rt) = runtime() else { return Exit::Invalid };
    rt.block_on(async {
        let Some((store, record)) = open_run(state, id).await else {
            return Exit::Invalid;
        };
        if !record.status.resumable() {
            eprintln!(
                "error: run {} finished as {}; it cannot be resumed (hint: start a new run with `runbook run {}`)",
                record.id,
                record.status.as_str(),
                record.playbook
            );
            return Exit::Invalid;
        }
        if let Some(pid) = record.pid.filter(|p| alive(*p) && *p != std::process::id()) {
            eprintln!(
                "error: run {} is being executed by process {pid} (hint: `runbook cancel {}` stops it)",
                record.id, record.id
            );
            return Exit::Locked;
        }
        if let Some(worker) = held_by_worker(&record) {
            eprintln!(
                "error: run {} is being executed by worker {worker} (hint: `runbook cancel {}` stops it)",
                record.id, record.id
            );
            return Exit::Locked;
        }
        let run = Continue {
            store: &store,
            registry,
            decisions,
            exec,
            inventory,
            wanted,
        };
        if record.submitted {
            return run.claimed(record).await;
        }
        // Take the run atomically: of two resumes started together, one runs it
        // and the other is told who does, before either records anything.
        let me = std::process::id();
        let claimed = store.claim_runner(&record.id, me, record.pid).await;
        let record = match (claimed, store.run(&record.id).await) {
            (Ok(true), Ok(now)) if now.status.resumable() => now,
            (Ok(true), Ok(now)) => {
                let _ = store.set_runner(&now.id, None).await;
                eprintln!(
                    "error: run {} finished as {} meanwhile; it cannot be resumed",
                    now.id,
                    now.status.as_str()
                );
                return Exit::Invalid;
            }
            (Ok(false), now) => {
                let by = now
                    .ok()
                    .and_then(|r| r.pid)
                    .map_or("another process".to_owned(), |p| format!("process {p}"));
                eprintln!(
                    "error: run {} is being executed by {by} (hint: `runbook cancel {}` stops it)",
                    record.id, record.id
                );
                return Exit::Locked;
            }
            (Err(e), _) | (Ok(true), Err(e)) => {
                let _ = store.set_runner(&record.id, None).await;
                eprintln!("error: {e}; nothing was run");
                return Exit::Invalid;
            }
        };
        let id = record.id.clone();
        let code = run.claimed(record).await;
        // Whatever happened, this process no longer runs it.
        let _ = store.set_runner(&id, None).await;
        code
    })
}

/// `--set-output STEP.NAME=VALUE` flags, by step path.
fn set_outputs(flags: &[String]) -> Result<IndexMap<String, serde_json::Map<String, Json>>, String> {
    let mut out: IndexMap<String, serde_json::Map<String, Json>> = IndexMap::new();
    for flag in flags {
        let parsed = flag.split_once('=').and_then(|(key, value)| {
            let (step, name) = key.rsplit_once('.')?;
            (!step.is_empty() && !name.is_empty()).then_some((step, name, value))
        });
        let Some((step, name, value)) = parsed else {
            return Err(format!(
                "`--set-output {flag}` is not STEP.NAME=VALUE (e.g. `--set-output deploy.stdout=v42`)"
            ));
        };
        out.entry(step.to_owned())
            .or_default()
            .insert(name.to_owned(), Json::String(value.to_owned()));
    }
    Ok(out)
}

/// The step id at the end of a step path (`roll[web1].deploy` → `deploy`).
fn step_id(path: &str) -> &str {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.split('[').next().unwrap_or(last)
}

/// Continuing a run: what it needs besides the run.
struct Continue<'a> {
    store: &'a Arc<dyn Store>,
    registry: &'a Registry,
    decisions: &'a Decisions<'a>,
    exec: &'a ExecArgs,
    inventory: &'a runbook_core::inventory::Inventory,
    wanted: Vec<(crate::args::ReportFormat, PathBuf)>,
}

impl Continue<'_> {
    /// Continues a run this process has claimed (or a submitted run, which
    /// goes back to the queue).
    async fn claimed(self, record: runbook_state::RunRecord) -> Exit {
        let Continue {
            store,
            registry,
            decisions,
            exec,
            inventory,
            wanted,
        } = self;
        let Decisions {
            rerun,
            mark_done,
            set_output,
            answer,
            cancel,
            to_current,
            library,
        } = *decisions;
        let store = store.clone();
        // The run continues against the exact text it started with.
        let loaded = match load_stored(&record, registry) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {e}; nothing was run");
                return Exit::Invalid;
            }
        };
        let events = match store.events(&record.id).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Invalid;
            }
        };
        let replay = Replay::new(&events);
        // The playbook file may have changed since the run started: say so, and
        // with `--to-current` continue on the new text if it agrees with what ran.
        let mut upgraded: Option<(String, String)> = None;
        let current = library.and_then(|lib| current_text(lib, &record));
        let loaded = match current {
            Some((path, text)) if sha256_hex(&text) != record.hash => {
                if !to_current {
                    eprintln!(
                        "note: {} changed since run {} started; the run continues on the text it started with \
                         (hint: `--to-current` continues on the new text, once it agrees with what already ran)",
                        path.display(),
                        record.id
                    );
                    loaded
                } else {
                    match upgrade(&loaded, &path, &text, &replay, registry, &record) {
                        Ok(new) => {
                            upgraded = Some((record.hash.clone(), sha256_hex(&text)));
                            eprintln!(
                                "run {} continues on the current text of {} (checked against the steps already done)",
                                record.id,
                                path.display()
                            );
                            new
                        }
                        Err(why) => {
                            eprintln!("error: {why}; nothing was run");
                            return Exit::Invalid;
                        }
                    }
                }
            }
            _ => loaded,
        };
        let in_flight = replay.in_flight();
        let list = |paths: &[String]| {
            if paths.is_empty() {
                "none".to_owned()
            } else {
                paths.join(", ")
            }
        };
        for step in mark_done {
            if !in_flight.contains(step) {
                eprintln!(
                    "error: step `{step}` was not in flight (steps in flight: {}); nothing was run",
                    list(&in_flight)
                );
                return Exit::Invalid;
            }
        }
        // `--rerun` also takes back a `--mark-done` the step has not run since.
        for step in rerun {
            if !in_flight.contains(step) && !replay.marked_done.contains(step) {
                let mut marked: Vec<String> = replay.marked_done.iter().cloned().collect();
                marked.sort();
                eprintln!(
                    "error: step `{step}` was not in flight nor marked done (in flight: {}; marked done: {}); \
                     nothing was run",
                    list(&in_flight),
                    list(&marked)
                );
                return Exit::Invalid;
            }
        }
        let mut given = match set_outputs(set_output) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: {e}; nothing was run");
                return Exit::Invalid;
            }
        };
        if let Some(step) = given.keys().find(|s| !mark_done.contains(s)) {
            eprintln!(
                "error: `--set-output` names `{step}`, which is not marked done here (hint: add `--mark-done {step}`); nothing was run"
            );
            return Exit::Invalid;
        }
        // A step marked done has the outputs the operator gives; every output a
        // later step reads must be given, or that step would fail on it.
        let steps = loaded.playbook.all_steps();
        for step in mark_done {
            let have = given.get(step);
            let missing: Vec<String> = runbook_core::template::outputs_read(steps.iter().copied(), step_id(step))
                .into_iter()
                .filter(|name| match have {
                    None => true,
                    Some(h) => name != "*" && !h.contains_key(name),
                })
                .collect();
            if !missing.is_empty() {
                let example = missing.iter().find(|n| *n != "*").map_or("NAME", String::as_str);
                eprintln!(
                    "error: later steps read {} of `{step}`, which it would not have once marked done; nothing was \
                     run (hint: give each with `--set-output {step}.{example}=VALUE`)",
                    missing
                        .iter()
                        .map(|n| if n == "*" {
                            "all outputs".to_owned()
                        } else {
                            format!("output `{n}`")
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Exit::Invalid;
            }
        }
        let env = env();
        // A worker resolves a submitted run's secrets in its own environment.
        let secrets = if record.submitted {
            IndexMap::new()
        } else {
            let Some(secrets) = secrets_or_exit(&loaded.playbook, &env) else {
                return Exit::Invalid;
            };
            secrets
        };
        let inputs = stored_inputs(&record);
        // The run takes its lock again (it may have been freed when it stopped),
        // once what was asked is known to be valid.
        let lock = match crate::locks::keys(&loaded.playbook, &inputs, &env) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("error: {e}; nothing was run");
                return Exit::Invalid;
            }
        };
        let who = user();
        let obs = observer(exec.output, false, None);
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
            });
        }
        if cancel {
            journal.push(Event::OperatorAction {
                action: "cancel".into(),
                step: None,
                who: who.clone(),
                comment: None,
                plan_hash: None,
            });
        }
        if let Some(a) = answer {
            let waiting = replay.waiting();
            if record.status != RunStatus::Waiting || waiting.is_empty() {
                eprintln!(
                    "error: run {} is not waiting for an approval (it is {}); nothing was recorded",
                    record.id,
                    record.status.as_str()
                );
                return Exit::Invalid;
            }
            let bound = plan_hash(&record);
            if let Some(reviewed) = a.plan_hash.as_deref().filter(|h| *h != bound) {
                eprintln!(
                    "error: you reviewed plan {reviewed}, but run {} runs plan {bound}; nothing was recorded \
                     (hint: `runbook status {}` shows what it runs)",
                    record.id, record.id
                );
                return Exit::Invalid;
            }
            journal.extend(a.events(&waiting, &bound));
        }
        for step in rerun {
            journal.push(Event::OperatorAction {
                action: "rerun".into(),
                step: Some(step.clone()),
                who: who.clone(),
                comment: None,
                plan_hash: None,
            });
        }
        for step in mark_done {
            journal.push(Event::OperatorAction {
                action: "mark-done".into(),
                step: Some(step.clone()),
                who: who.clone(),
                comment: None,
                plan_hash: None,
            });
            let attempt = match replay.steps.get(step) {
                Some(Prior::InFlight { attempt }) => *attempt,
                _ => 0,
            };
            journal.push(Event::StepSucceeded {
                step: step.clone(),
                attempt,
                outputs: Json::Object(given.shift_remove(step).unwrap_or_default()),
            });
        }
        if upgraded.is_some() {
            if let Err(e) = store
                .replace_text(&record.id, &loaded.source.text, &sha256_hex(&loaded.source.text))
                .await
            {
                eprintln!("error: {e}; nothing was run");
                return Exit::Invalid;
            }
        }
        if record.submitted {
            if let Err(err) = store.append_all(&record.id, &journal).await {
                eprintln!("error: {err}; nothing was recorded");
                return Exit::Invalid;
            }
            for e in &journal {
                obs.event(&record.id, e);
            }
            if exec.output == Output::Text {
                eprintln!(
                    "run {} is queued again: a `runbook worker` continues it (hint: `runbook status {}`)",
                    record.id, record.id
                );
            }
            return Exit::Ok;
        }
        if let Err(code) = crate::locks::acquire_all(&store, &lock, &record.id, exec).await {
            return code;
        }
        // One transaction: the decisions are recorded together or not at all.
        if let Err(err) = store.append_all(&record.id, &journal).await {
            eprintln!("error: {err}; nothing was run");
            return Exit::Invalid;
        }
        for e in &journal {
            obs.event(&record.id, e);
        }
        let events = match store.events(&record.id).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Invalid;
            }
        };
        execute(Execute {
            store,
            registry,
            playbook: &loaded.playbook,
            run_id: record.id.clone(),
            inputs,
            secrets,
            env,
            inventory: inventory.to_template(),
            started_at: record.created_at.clone(),
            replay: Replay::new(&events),
            exec,
            locked: !lock.is_empty(),
            reports: wanted,
            signals: if cancel {
                // Stopped before it starts: what finished is restored, no step
                // starts, and the handlers (`finally`) run.
                let signals = watched_signals();
                signals.stop.cancel();
                signals
            } else {
                watched_signals()
            },
            interactive: interactive(exec) && !cancel,
            label: None,
        })
        .await
    }
}

/// The current file of a run's playbook (same name and version) and its text.
fn current_text(lib: &Library, record: &runbook_state::RunRecord) -> Option<(PathBuf, String)> {
    let located = lib.locate(&format!("{}@{}", record.playbook, record.version)).ok()?;
    let text = std::fs::read_to_string(&located.path).ok()?;
    Some((located.path, text))
}

/// The step at a step path (`roll[web1].deploy`, `finally.notify`).
fn step_at<'p>(pb: &'p Playbook, path: &str) -> Option<&'p runbook_core::model::Step> {
    let mut segs = path.split('.').peekable();
    let mut list: &[runbook_core::model::Step] = match segs.peek() {
        Some(&"on_failure") => {
            segs.next();
            &pb.on_failure
        }
        Some(&"finally") => {
            segs.next();
            &pb.finally
        }
        _ => &pb.steps,
    };
    let mut found = None;
    while let Some(seg) = segs.next() {
        let id = seg.split('[').next().unwrap_or(seg);
        let step = match id.parse::<usize>() {
            Ok(n) => list.get(n.checked_sub(1)?)?,
            Err(_) => list.iter().find(|s| s.id.as_deref() == Some(id))?,
        };
        found = Some(step);
        list = match segs.peek() {
            Some(&"on_failure") => {
                segs.next();
                &step.on_failure
            }
            Some(&"undo") => {
                segs.next();
                step.undo_steps()
            }
            _ => step.children(),
        };
    }
    found
}

/// The new text of a run's playbook, loaded, if every step the run already
/// finished is the same in it (its definition, children included) and it
/// takes the run's inputs; else what differs.
fn upgrade(
    old: &runbook_core::validate::Loaded,
    path: &std::path::Path,
    text: &str,
    replay: &Replay,
    registry: &Registry,
    record: &runbook_state::RunRecord,
) -> Result<runbook_core::validate::Loaded, String> {
    let source = Source::new(path.display().to_string(), text.to_owned());
    let expected = runbook_core::validate::Expected {
        name: Some(record.playbook.clone()),
        version: Some(record.version),
    };
    let new = runbook_core::validate::load(source, &expected, registry).map_err(|inv| {
        crate::diagnostics::eprint_all(&inv.source, &inv.diagnostics);
        format!("the current text of {} does not validate", path.display())
    })?;
    let mut done: Vec<&String> = replay
        .steps
        .iter()
        .filter(|(_, p)| matches!(p, Prior::Succeeded(_) | Prior::Skipped))
        .map(|(k, _)| k)
        .collect();
    done.sort();
    let mut differ = Vec::new();
    for step in done {
        let before = step_at(&old.playbook, step).map(serde_json::to_value);
        let after = step_at(&new.playbook, step).map(serde_json::to_value);
        match (before, after) {
            (Some(Ok(a)), Some(Ok(b))) if a == b => {}
            (_, None) => differ.push(format!("`{step}` is gone")),
            _ => differ.push(format!("`{step}` changed")),
        }
    }
    if !differ.is_empty() {
        return Err(format!(
            "the current text of {} changes steps this run already finished: {}",
            path.display(),
            differ.join(", ")
        ));
    }
    if let Err(errors) = runbook_core::inputs::resolve(&new.playbook, &stored_inputs(record)) {
        let why: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "the current text does not take this run's inputs: {}",
            why.join("; ")
        ));
    }
    Ok(new)
}

/// Cancels a run of the queue: its worker stops it at its next heartbeat; a
/// run no worker holds ends at once.
async fn cancel_submitted(store: &dyn Store, record: &runbook_state::RunRecord, action: Event) -> Exit {
    let done = Event::RunFinished {
        status: RunStatus::Cancelled,
        error: Some("cancelled by an operator".into()),
    };
    let (result, said) = match held_by_worker(record) {
        Some(worker) => {
            let asked = match store.append(&record.id, &action).await {
                Ok(_) => store.request_cancel(&record.id).await,
                Err(e) => Err(e),
            };
            (
                asked,
                format!("cancel requested: worker {worker} is stopping run {}", record.id),
            )
        }
        None => (
            store.append_all(&record.id, &[action, done]).await.map(|_| ()),
            format!("run {} cancelled", record.id),
        ),
    };
    match result {
        Ok(()) => {
            println!("{said}");
            Exit::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Invalid
        }
    }
}

/// `runbook cancel`: a run being executed is signalled; a run nobody
/// executes ends at once, after its deferred `finally` steps (a run that
/// waits for an approval or a decision has not run them yet).
pub(crate) fn cancel(
    state: Option<PathBuf>,
    registry: &Registry,
    id: &str,
    exec: &ExecArgs,
    inventory: &runbook_core::inventory::Inventory,
) -> Exit {
    let Some(rt) = runtime() else { return Exit::Invalid };
    let done = rt.block_on(async {
        let Some((store, record)) = open_run(state.clone(), id).await else {
            return Some(Exit::Invalid);
        };
        if matches!(record.status, RunStatus::Waiting | RunStatus::Uncertain)
            && !record.submitted
            && !record.pid.is_some_and(alive)
        {
            return None;
        }
        Some(cancel_now(store.as_ref(), &record).await)
    });
    drop(rt);
    done.unwrap_or_else(|| {
        let decisions = Decisions {
            cancel: true,
            ..Decisions::default()
        };
        match continue_run(state, registry, id, &decisions, exec, inventory) {
            // The run ended as asked: cancelled, after its handlers.
            Exit::Failed => Exit::Ok,
            other => other,
        }
    })
}

async fn cancel_now(store: &dyn Store, record: &runbook_state::RunRecord) -> Exit {
    {
        if !record.status.resumable() && record.status != RunStatus::Queued {
            eprintln!(
                "error: run {} already finished as {}",
                record.id,
                record.status.as_str()
            );
            return Exit::Invalid;
        }
        let action = Event::OperatorAction {
            action: "cancel".into(),
            step: None,
            who: user(),
            comment: None,
            plan_hash: None,
        };
        if record.submitted {
            return cancel_submitted(store, record, action).await;
        }
        if let Err(e) = store.append(&record.id, &action).await {
            eprintln!("error: {e}");
            return Exit::Invalid;
        }
        match record.pid.filter(|p| alive(*p)) {
            Some(pid) => {
                let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0));
                if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
                    eprintln!("error: cannot signal process {pid}: {e}");
                    return Exit::Failed;
                }
                println!("cancel requested: run {} is stopping (process {pid})", record.id);
            }
            None => {
                // Nobody is executing it: record the end ourselves.
                let done = Event::RunFinished {
                    status: RunStatus::Cancelled,
                    error: Some("cancelled by an operator".into()),
                };
                if let Err(e) = store.append(&record.id, &done).await {
                    eprintln!("error: {e}");
                    return Exit::Invalid;
                }
                println!("run {} cancelled", record.id);
            }
        }
        Exit::Ok
    }
}
