//! `runbook worker`: executes the runs of the shared queue (`run --submit`).
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

use crate::Exit;
use crate::args::{ExecArgs, Output};
use crate::runs::{Execute, env, execute, load_stored, stored_inputs, watch_signals};
use crate::session::{open_store, runtime, user};
use runbook_core::inputs::parse_duration;
use runbook_core::inventory::Inventory;
use runbook_core::kind::Registry;
use runbook_engine::exec::Signals;
use runbook_engine::replay::Replay;
use runbook_runner::leases::{self, LeaseOptions};
use runbook_state::LockHolder;
use runbook_state::{Event, Fenced, Lease, RunStatus, Store, StoreError, WorkerInfo};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `runbook worker` flags.
pub(crate) struct Options {
    pub(crate) name: Option<String>,
    pub(crate) concurrency: usize,
    pub(crate) lease_ttl: String,
    pub(crate) poll: String,
    pub(crate) exit_when_idle: bool,
    pub(crate) output: Output,
}

/// What every run of this worker shares.
#[derive(Clone)]
struct Worker {
    name: String,
    store: Arc<dyn Store>,
    registry: Registry,
    inventory: serde_json::Value,
    ttl: Duration,
    output: Output,
}

/// This machine's name.
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".to_owned())
}

/// `HOST:PID`.
fn default_name() -> String {
    format!("{}:{}", host(), std::process::id())
}

/// `runbook workers`: the workers of the shared state, whether each is alive,
/// and how many runs each holds.
pub(crate) fn list(state: Option<PathBuf>, output: Output) -> Exit {
    let Some(rt) = runtime() else { return Exit::Invalid };
    rt.block_on(async {
        let Some(store) = open_store(state).await else {
            return Exit::Invalid;
        };
        let workers = match store.workers().await {
            Ok(w) => w,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Invalid;
            }
        };
        if output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&workers).unwrap_or_default());
            return Exit::Ok;
        }
        if workers.is_empty() {
            println!("no worker has served this state yet (hint: `runbook worker`)");
            return Exit::Ok;
        }
        use crate::table::Column;
        let rows = workers
            .iter()
            .map(|w| {
                vec![
                    w.name.clone(),
                    w.state.to_string(),
                    format!("{}/{}", w.running, w.concurrency),
                    w.host.clone(),
                    w.pid.to_string(),
                    w.started_at.clone(),
                    w.seen_at.clone(),
                ]
            })
            .collect();
        crate::table::print(
            &[
                Column("NAME", false),
                Column("STATE", false),
                Column("RUNS", true),
                Column("HOST", false),
                Column("PID", true),
                Column("STARTED", false),
                Column("LAST SEEN", false),
            ],
            rows,
        );
        Exit::Ok
    })
}

pub(crate) fn worker(state: Option<PathBuf>, registry: &Registry, options: &Options, inventory: &Inventory) -> Exit {
    let durations = parse_duration(&options.lease_ttl)
        .map_err(|e| format!("--lease-ttl: {e}"))
        .and_then(|ttl| Ok((ttl, parse_duration(&options.poll).map_err(|e| format!("--poll: {e}"))?)));
    let (ttl, poll) = match durations {
        Ok((ttl, _)) if ttl < Duration::from_secs(1) => {
            eprintln!("error: --lease-ttl must be at least 1s, got {}", options.lease_ttl);
            return Exit::Invalid;
        }
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Invalid;
        }
    };
    let name = options.name.clone().unwrap_or_else(default_name);
    let Some(rt) = runtime() else { return Exit::Invalid };
    // Runs execute on this thread (the engine's futures are not Send).
    let local = tokio::task::LocalSet::new();
    let code = local.block_on(&rt, async {
        let Some(store) = open_store(state).await else {
            return Exit::Invalid;
        };
        let me = WorkerInfo {
            name: name.clone(),
            host: host(),
            pid: std::process::id(),
            concurrency: u32::try_from(options.concurrency.max(1)).unwrap_or(u32::MAX),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        };
        if let Err(e) = store.worker_seen(&me, false).await {
            eprintln!("error: {e}");
            return Exit::Invalid;
        }
        // Heard of every third of the lease time, for `runbook workers`.
        let presence = {
            let (store, me) = (store.clone(), me.clone());
            tokio::task::spawn_local(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    let _ = store.worker_seen(&me, false).await;
                }
            })
        };
        let w = Worker {
            name,
            store: store.clone(),
            registry: registry.clone(),
            inventory: inventory.to_template(),
            ttl,
            output: options.output,
        };
        let code = serve(&w, options.concurrency.max(1), poll, options.exit_when_idle).await;
        presence.abort();
        let _ = store.worker_seen(&me, true).await;
        code
    });
    // Tasks left in the set (aborted heartbeats) hold the store: they must be
    // dropped where its connections can still hand themselves back.
    let _inside = rt.enter();
    drop(local);
    code
}

/// Claims and executes runs until stopped (or idle, with `--exit-when-idle`).
async fn serve(w: &Worker, concurrency: usize, poll: Duration, exit_when_idle: bool) -> Exit {
    let signals = Signals::default();
    watch_signals(&signals);
    eprintln!(
        "worker {}: claiming runs ({concurrency} at once, lease {})",
        w.name,
        runbook_report::short(w.ttl)
    );
    let mut running = tokio::task::JoinSet::new();
    // The database refused the last claim: not idle, whatever `--exit-when-idle`.
    let mut failing = false;
    while !signals.stop.is_cancelled() {
        let mut claimed = false;
        while running.len() < concurrency && !signals.stop.is_cancelled() {
            match w.store.claim(&w.name, w.ttl).await {
                Ok(Some(lease)) => {
                    claimed = true;
                    failing = false;
                    let run = Signals {
                        stop: signals.stop.child_token(),
                        kill: signals.kill.child_token(),
                    };
                    running.spawn_local(take(w.clone(), lease, run));
                }
                Ok(None) => {
                    failing = false;
                    break;
                }
                Err(e @ StoreError::Unsupported(_)) => {
                    eprintln!("error: {e}");
                    return Exit::Invalid;
                }
                Err(e) => {
                    // The database may come back; the runs in hand go on.
                    eprintln!("worker {}: cannot claim: {e}; trying again", w.name);
                    failing = true;
                    break;
                }
            }
        }
        if exit_when_idle && !claimed && running.is_empty() && !failing {
            break;
        }
        tokio::select! {
            Some(_) = running.join_next(), if !running.is_empty() => {}
            () = w.store.wait_for_work(poll), if running.len() < concurrency => {}
            () = signals.stop.cancelled() => {}
        }
    }
    // A graceful stop: each run stops its steps, records where it stopped and
    // gives its lease back, so another worker continues it at once.
    while running.join_next().await.is_some() {}
    eprintln!("worker {}: stopped", w.name);
    Exit::Ok
}

/// Executes one claimed run while its heartbeat renews the lease.
async fn take(w: Worker, lease: Lease, signals: Signals) {
    let heartbeat = tokio::task::spawn_local(heartbeat(w.clone(), lease.clone(), signals.clone()));
    let store: Arc<dyn Store> = Arc::new(Fenced::new(w.store.clone(), lease.clone()));
    if let Err(e) = continue_claimed(&w, &store, &lease, signals).await {
        eprintln!("[{}] {e}", short_id(&lease.run_id));
    }
    heartbeat.abort();
    if let Err(e) = w.store.release_lease(&lease).await {
        eprintln!(
            "[{}] cannot give the lease back ({e}); it expires by itself",
            short_id(&lease.run_id)
        );
    }
}

fn short_id(run: &str) -> &str {
    run.get(run.len().saturating_sub(8)..).unwrap_or(run)
}

/// Renews the lease every third of its time to live. A lost lease (expired,
/// or taken over) kills the run's steps at once: the run is someone else's.
/// An operator's `cancel` stops the run gracefully.
async fn heartbeat(w: Worker, lease: Lease, signals: Signals) {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(w.ttl / 3).await;
        // An unreachable database must not hold the heartbeat past the lease.
        let renewal = tokio::time::timeout(w.ttl / 3, w.store.renew_lease(&lease, w.ttl)).await;
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
            Err(e) if renewed.elapsed() < w.ttl => {
                eprintln!("[{}] cannot renew the lease: {e}", short_id(&lease.run_id));
            }
            Err(_) => break,
        }
    }
    eprintln!(
        "[{}] worker {} lost its lease on run {} (epoch {}); stopping its steps",
        short_id(&lease.run_id),
        w.name,
        lease.run_id,
        lease.epoch
    );
    signals.kill.cancel();
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
async fn continue_claimed(w: &Worker, store: &Arc<dyn Store>, lease: &Lease, signals: Signals) -> Result<(), String> {
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
    let first = if started {
        Event::RunResumed {
            user: user(),
            runner: Some(w.name.clone()),
        }
    } else {
        Event::RunStarted {
            user: user(),
            runner: Some(w.name.clone()),
        }
    };
    let label = format!("[{}] ", short_id(&record.id));
    let fail = |error: String| fail(store, &record.id, &first, error);
    let loaded = match load_stored(&record, &w.registry) {
        Ok(l) => l,
        Err(e) => return fail(format!("{e} (worker {})", w.name)).await,
    };
    let pb = &loaded.playbook;
    let env = env();
    let secrets = match runbook_engine::secrets::resolve(pb, &env) {
        Ok(s) => s,
        Err(missing) => {
            let names: Vec<String> = missing.iter().map(|m| m.message.clone()).collect();
            return fail(format!("on worker {}: {}", w.name, names.join("; "))).await;
        }
    };
    let inputs = stored_inputs(&record);
    let lock = match crate::locks::keys(pb, &inputs, &env) {
        Ok(k) => k,
        Err(e) => return fail(e).await,
    };
    let exec = ExecArgs {
        max_parallel: 8,
        output: w.output,
        no_progress: true,
        yes: false,
        wait_lock: None,
        lock_ttl: "30s".into(),
        report: Vec::new(),
    };
    // The run's lock, waited for as long as it takes: the waiting ends when
    // the worker stops or loses the lease, and the run stays as it was, for
    // the next claim.
    let holder = LockHolder {
        run_id: record.id.clone(),
        user: user(),
        pid: Some(std::process::id()),
    };
    let opts = LeaseOptions {
        ttl: Duration::from_secs(30),
        wait: Duration::from_secs(365 * 24 * 3600),
    };
    let waiting = |key: &str, other: &runbook_state::Lock| {
        eprintln!("{label}waiting for lock `{key}`: held by run {}", other.run_id);
    };
    let taken = tokio::select! {
        r = leases::acquire_all(store, &lock, &holder, opts, &waiting) => r.is_ok(),
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
    crate::runs::observer(w.output, false, Some(&label)).event(&record.id, &first);
    let events = store.events(&record.id).await.map_err(|e| e.to_string())?;
    execute(Execute {
        store: store.clone(),
        registry: &w.registry,
        playbook: pb,
        run_id: record.id.clone(),
        inputs,
        secrets,
        env,
        inventory: w.inventory.clone(),
        started_at: record.created_at.clone(),
        replay: Replay::new(&events),
        exec: &exec,
        locked: !lock.is_empty(),
        reports: Vec::new(),
        signals,
        interactive: false,
        label: Some(label),
    })
    .await;
    Ok(())
}
