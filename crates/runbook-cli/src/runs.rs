//! `run`, `resume`, `approve`/`reject` and `cancel` at the command line: the
//! flags turned into runbook-runner options, the terminal's signals and
//! questions, and the runner's outcome turned into words and an exit code.

use crate::Exit;
use crate::args::{AnswerArgs, ExecArgs, InputArgs, Output};
use crate::fail::{Done, Failure};
use crate::loading::{load, resolve_inputs};
use crate::session::{open_store, runtime, user};
use indexmap::IndexMap;
use runbook_core::inventory::Inventory;
use runbook_core::kind::Registry;
use runbook_core::library::Library;
use runbook_core::model::Playbook;
use runbook_engine::exec::Signals;
use runbook_engine::replay::Replay;
use runbook_runner::leases::LeaseOptions;
use runbook_runner::{Answer, Decisions, Outcome, Resumed, RunOptions, Runner, RunnerError, Watcher};
use runbook_state::{RunStatus, Store};
use serde_json::Value as Json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `runbook state migrate`: opening the store applies its migrations.
pub(crate) fn migrate(state: Option<PathBuf>) -> Done {
    runtime()?.block_on(async {
        let v = open_store(state).await?.schema_version().await?;
        println!("state schema is up to date: version {v}");
        Ok(Exit::Ok)
    })
}

/// What shows a run's progress: text (live bars with `progress`, each line
/// starting with `label` when a worker's runs interleave) or JSON lines.
pub(crate) fn observer(output: Output, progress: bool, label: Option<&str>) -> Arc<dyn Watcher> {
    match (output, label) {
        (Output::Text, Some(label)) => Arc::new(crate::observe::Text::prefixed(label.to_owned())),
        (Output::Text, None) => Arc::new(crate::observe::Text::new(progress)),
        (Output::Json, _) => Arc::new(crate::observe::JsonLines),
    }
}

pub(crate) fn env() -> IndexMap<String, String> {
    std::env::vars().collect()
}

/// `plan --live`: resolves the secrets and lets the kinds look at what the
/// steps would touch (a missing secret refuses).
pub(crate) fn look(plan: &mut runbook_engine::plan::Plan, pb: &Playbook, registry: &Registry) -> Result<(), Failure> {
    let secrets = runbook_runner::resolve_secrets(pb, &env())?;
    runtime()?.block_on(async {
        let cancel = runbook_core::kind::CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        });
        runbook_engine::plan::preview(plan, registry, &secrets, &cancel).await;
    });
    Ok(())
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

/// Asks at the terminal about the first question the run waits at (the
/// next one is asked once the run waits again): the answer, or `None` to
/// leave the run waiting.
async fn ask(store: &dyn Store, run_id: &str) -> Option<Answer> {
    let events = store.events(run_id).await.ok()?;
    let step = Replay::new(&events).waiting().into_iter().next()?;
    let who = user();
    eprint!("approve {step} as {who}? [y = approve, n = reject, Enter = leave it waiting]: ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).ok()?;
    let approve = match line.trim() {
        "y" | "yes" => true,
        "n" | "no" => false,
        _ => return None,
    };
    Some(Answer {
        approve,
        who,
        comment: Some("answered at the terminal".into()),
        plan_hash: None,
        steps: vec![step],
        all: false,
    })
}

/// What the flags ask of a run started or continued at this terminal.
struct Flags {
    opts: RunOptions,
    watcher: Arc<dyn Watcher>,
    reports: Vec<(crate::args::ReportFormat, PathBuf)>,
    interactive: bool,
    output: Output,
}

impl Flags {
    /// Refused (exit 2) on a bad flag, before anything runs.
    fn new(exec: &ExecArgs) -> Result<Flags, Failure> {
        let bad = |e: String| Failure::invalid(format!("{e}; nothing was run"));
        let mut reports = Vec::new();
        for spec in &exec.report {
            reports.push(crate::report::parse_spec(spec).map_err(bad)?);
        }
        let duration = |flag: &str, text: &str| {
            runbook_core::inputs::parse_duration(text).map_err(|e| bad(format!("{flag}: {e}")))
        };
        let lease = LeaseOptions {
            ttl: duration("--lock-ttl", &exec.lock_ttl)?,
            wait: match &exec.wait_lock {
                Some(w) => duration("--wait-lock", w)?,
                None => Duration::ZERO,
            },
        };
        Ok(Flags {
            opts: RunOptions {
                max_parallel: exec.max_parallel,
                auto_approve: exec.yes,
                lease,
                signals: Signals::default(),
            },
            watcher: observer(exec.output, !exec.no_progress, None),
            reports,
            interactive: interactive(exec),
            output: exec.output,
        })
    }
}

/// A run started or continued at this terminal: the runner and the flags.
struct Session {
    runner: Runner,
    flags: Flags,
}

impl Session {
    /// Opens the store; from here on Ctrl-C and SIGTERM stop the run.
    async fn open(
        state: Option<PathBuf>,
        registry: &Registry,
        inventory: Json,
        mut flags: Flags,
    ) -> Result<Session, Failure> {
        let store = open_store(state).await?;
        flags.opts.signals = runbook_runner::watch_signals(flags.watcher.clone());
        let runner = Runner {
            store,
            registry: registry.clone(),
            watcher: flags.watcher.clone(),
            user: user(),
            env: env(),
            inventory,
        };
        Ok(Session { runner, flags })
    }

    /// After a run stopped: at a terminal, a person can answer an approval
    /// right here; then the reports are written, and the exit code is the
    /// run's.
    async fn finish(&self, mut ran: Result<Outcome, RunnerError>) -> Done {
        loop {
            let run_id = match &ran {
                Ok(o) if self.flags.interactive && o.status == RunStatus::Waiting => o.run_id.clone(),
                _ => break,
            };
            let Some(answer) = ask(self.runner.store.as_ref(), &run_id).await else {
                break;
            };
            ran = match self.runner.answer(&run_id, &answer, &self.flags.opts).await {
                Ok(Resumed::Executed(next)) => Ok(next),
                Ok(Resumed::Requeued(_)) => break,
                Err(e) => Err(e),
            };
        }
        let o = ran?;
        crate::report::write_all(
            self.runner.store.as_ref(),
            &self.runner.registry,
            &o.run_id,
            &self.flags.reports,
        )
        .await;
        let resumable = matches!(
            o.status,
            RunStatus::Interrupted | RunStatus::Failed | RunStatus::Uncertain
        );
        if resumable && self.flags.output == Output::Text {
            eprintln!("hint: {}", self.runner.resume_hint(&o.run_id).await);
        }
        Ok(exit_for(o.status))
    }
}

/// The playbook and its inputs, checked.
fn load_with_inputs(
    lib: &Library,
    registry: &Registry,
    spec: &str,
    args: &InputArgs,
) -> Result<(runbook_core::validate::Loaded, IndexMap<String, Json>), Failure> {
    let loaded = load(lib, registry, spec)?;
    let inputs = resolve_inputs(&loaded.playbook, args)?;
    Ok((loaded, inputs))
}

pub(crate) fn run(
    state: Option<PathBuf>,
    lib: &Library,
    registry: &Registry,
    spec: &str,
    args: &InputArgs,
    exec: &ExecArgs,
    inventory: &Inventory,
) -> Done {
    let (loaded, inputs) = load_with_inputs(lib, registry, spec, args)?;
    let flags = Flags::new(exec)?;
    // Everything that can be checked without the store is, before it opens.
    let inventory = inventory.to_template();
    let checked = runbook_runner::check_start(registry, &env(), &inventory, &user(), &loaded, &inputs)?;
    runtime()?.block_on(async {
        let session = Session::open(state, registry, inventory, flags).await?;
        let opts = &session.flags.opts;
        let ran = match session.runner.begin_checked(&loaded, checked, opts).await {
            Ok(started) => started.execute(opts).await,
            Err(e) => Err(e),
        };
        session.finish(ran).await
    })
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
) -> Done {
    let (loaded, inputs) = load_with_inputs(lib, registry, spec, args)?;
    runtime()?.block_on(async {
        let store = open_store(state).await?;
        let runner = Runner {
            store: store.clone(),
            registry: registry.clone(),
            watcher: observer(exec.output, false, None),
            user: user(),
            env: env(),
            inventory: Json::Null,
        };
        let quiet = Runner {
            watcher: Arc::new(crate::observe::Quiet),
            ..runner.clone()
        };
        let submitter = if exec.output == Output::Json { &runner } else { &quiet };
        let run_id = submitter.submit(&loaded, inputs).await?;
        if exec.output == Output::Text {
            println!("{run_id}");
            eprintln!("queued: a `runbook worker` runs it (hint: `runbook status {run_id}`)");
        }
        if wait {
            return Ok(follow(store.as_ref(), &run_id, exec.output).await);
        }
        Ok(Exit::Ok)
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
    use runbook_runner::follow::{Cursor, Followed, follow};
    let shown = crate::observe::Shown::new(output);
    let stop = runbook_core::kind::CancellationToken::new();
    let on_ctrl_c = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    // The run's first event (`run_queued`) was shown when it was submitted.
    let from = Cursor { event: 1, log: 0 };
    match follow(store, run_id, from, &shown, &stop, Duration::from_millis(200)).await {
        Ok(Followed::Stopped(status)) => exit_for(status),
        Ok(Followed::Left(_)) => {
            eprintln!("stopped following; the run goes on (hint: `runbook status {run_id}`)");
            Exit::Interrupted
        }
        Err(e) => Failure::Message {
            exit: Exit::Interrupted,
            message: e.to_string(),
            hint: Some(format!("`runbook status {run_id}` once the state is back")),
        }
        .report(),
    }
}

/// Opens the store and continues a run with `go`, at this terminal.
fn continuing<F>(state: Option<PathBuf>, registry: &Registry, flags: Flags, inventory: &Inventory, go: F) -> Done
where
    F: AsyncFnOnce(&Session) -> Result<Resumed, RunnerError>,
{
    runtime()?.block_on(async {
        let session = Session::open(state, registry, inventory.to_template(), flags).await?;
        match go(&session).await? {
            Resumed::Executed(o) => session.finish(Ok(o)).await,
            Resumed::Requeued(_) => Ok(Exit::Ok),
        }
    })
}

pub(crate) fn resume(
    state: Option<PathBuf>,
    registry: &Registry,
    id: &str,
    decisions: &Decisions<'_>,
    exec: &ExecArgs,
    inventory: &Inventory,
) -> Done {
    continuing(state, registry, Flags::new(exec)?, inventory, async |s: &Session| {
        s.runner.resume(id, decisions, &s.flags.opts).await
    })
}

/// `approve` / `reject`: records the answer for the step(s) the run waits at,
/// then continues the run (a rejected step fails, and its handlers run).
pub(crate) fn answer(
    state: Option<PathBuf>,
    registry: &Registry,
    args: &AnswerArgs,
    approve: bool,
    exec: &ExecArgs,
    inventory: &Inventory,
) -> Done {
    let answer = Answer {
        approve,
        who: args.who.clone().unwrap_or_else(user),
        comment: args.comment.clone(),
        plan_hash: args.plan_hash.clone(),
        steps: args.steps.clone(),
        all: args.all,
    };
    continuing(state, registry, Flags::new(exec)?, inventory, async |s: &Session| {
        s.runner.answer(&args.run, &answer, &s.flags.opts).await
    })
}

/// `runbook cancel`: a run being executed is signalled; a run nobody
/// executes ends at once, after its deferred `finally` steps (a run that
/// waits for an approval or a decision has not run them yet).
pub(crate) fn cancel(
    state: Option<PathBuf>,
    registry: &Registry,
    id: &str,
    exec: &ExecArgs,
    inventory: &Inventory,
) -> Done {
    let mut flags = Flags::new(exec)?;
    // The run is cancelled: nobody is asked about its approvals.
    flags.interactive = false;
    runtime()?.block_on(async {
        let session = Session::open(state, registry, inventory.to_template(), flags).await?;
        match session.runner.cancel(id, &session.flags.opts).await? {
            // The run ended as asked: cancelled, after its handlers.
            runbook_runner::Cancelled::AfterHandlers(o) => match session.finish(Ok(o)).await? {
                Exit::Failed => Ok(Exit::Ok),
                other => Ok(other),
            },
            done => {
                println!("{done}");
                Ok(Exit::Ok)
            }
        }
    })
}
