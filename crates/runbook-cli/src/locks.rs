//! The playbook `lock:`: taking its lease before a run starts (or waiting for
//! it), renewing it while the run executes, giving it back when the run stops,
//! and the `locks` / `unlock` commands.

use crate::Exit;
use crate::args::{ExecArgs, Output};
use crate::session::{open_store, runtime, user};
use indexmap::IndexMap;
use runbook_core::model::Playbook;
use runbook_core::template::{Data, Mode, Renderer};
use runbook_state::{Event, Lock, LockHolder, Store};
use serde_json::{Value as Json, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a run waiting for an approval keeps its lock without a runner
/// (the default expiry of an approval).
pub(crate) const WAITING_TTL: Duration = Duration::from_secs(24 * 3600);

/// The playbook's lock keys, rendered from the inputs, sorted and without
/// repeats (every run takes them in the same order); empty without `lock:`.
pub(crate) fn keys(
    pb: &Playbook,
    inputs: &IndexMap<String, Json>,
    env: &IndexMap<String, String>,
) -> Result<Vec<String>, String> {
    let Some(templates) = &pb.lock else {
        return Ok(Vec::new());
    };
    let data = Data::new(json!({
        "inputs": inputs,
        "env": env,
        "playbook": { "name": pb.name, "version": pb.version },
    }));
    let renderer = Renderer::new();
    let mut keys = templates
        .as_slice()
        .iter()
        .map(|t| {
            renderer
                .render_str(t, &data, Mode::Plain)
                .map_err(|e| format!("lock `{t}`: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The lease's time to live, from `--lock-ttl`.
pub(crate) fn ttl(exec: &ExecArgs) -> Result<Duration, String> {
    runbook_core::inputs::parse_duration(&exec.lock_ttl).map_err(|e| format!("--lock-ttl: {e}"))
}

fn describe(l: &Lock) -> String {
    let pid = l.pid.map(|p| format!(", process {p}")).unwrap_or_default();
    format!(
        "run {} ({}{pid}) since {}, lease until {}",
        l.run_id, l.user, l.since, l.expires_at
    )
}

/// Takes every key for `run_id`, in order, each waiting up to `--wait-lock`;
/// all or none (what was taken is given back on failure).
pub(crate) async fn acquire_all(
    store: &Arc<dyn Store>,
    keys: &[String],
    run_id: &str,
    exec: &ExecArgs,
) -> Result<(), Exit> {
    for key in keys {
        if let Err(code) = acquire(store, key, run_id, exec).await {
            let _ = store.release_locks(run_id).await;
            return Err(code);
        }
    }
    Ok(())
}

/// Takes the lock for `run_id`, waiting up to `--wait-lock`. On failure, says
/// who holds it and returns the exit code (4, or 2 for a bad flag).
async fn acquire(store: &Arc<dyn Store>, key: &str, run_id: &str, exec: &ExecArgs) -> Result<(), Exit> {
    let bad = |e: String| {
        eprintln!("error: {e}");
        Exit::Invalid
    };
    let ttl = ttl(exec).map_err(bad)?;
    let wait = match &exec.wait_lock {
        Some(w) => runbook_core::inputs::parse_duration(w).map_err(|e| bad(format!("--wait-lock: {e}")))?,
        None => Duration::ZERO,
    };
    let holder = LockHolder {
        run_id: run_id.to_owned(),
        user: user(),
        pid: Some(std::process::id()),
    };
    let until = Instant::now() + wait;
    let mut said = false;
    loop {
        match store.acquire_lock(key, &holder, ttl).await {
            Ok(None) => return Ok(()),
            Ok(Some(other)) if Instant::now() < until => {
                if !said {
                    eprintln!("waiting for lock `{key}`: held by {}", describe(&other));
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Some(other)) => {
                eprintln!("error: lock `{key}` is held by {}; nothing was run", describe(&other));
                eprintln!(
                    "hint: `--wait-lock 10m` waits for it; `runbook locks` lists locks; if its holder is gone, the \
                     lease expires by itself, or `runbook unlock {key} --force`"
                );
                return Err(Exit::Locked);
            }
            Err(e) => return Err(bad(e.to_string())),
        }
    }
}

/// Renews the run's leases every third of the TTL until dropped.
pub(crate) fn heartbeat(store: Arc<dyn Store>, run_id: String, ttl: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = (ttl / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            let _ = store.renew_locks(&run_id, ttl).await;
        }
    })
}

pub(crate) fn list(state: Option<PathBuf>, output: Output) -> Exit {
    let Some(rt) = runtime() else { return Exit::Invalid };
    rt.block_on(async {
        let Some(store) = open_store(state).await else {
            return Exit::Invalid;
        };
        let locks = match store.locks().await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Invalid;
            }
        };
        if output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&locks).unwrap_or_default());
            return Exit::Ok;
        }
        if locks.is_empty() {
            println!("no locks held");
            return Exit::Ok;
        }
        use crate::table::Column;
        let rows = locks
            .iter()
            .map(|l| {
                vec![
                    l.key.clone(),
                    l.run_id.clone(),
                    l.user.clone(),
                    l.pid.map(|p| p.to_string()).unwrap_or_default(),
                    l.since.clone(),
                    format!("{}{}", l.expires_at, if l.expired { " (expired: free)" } else { "" }),
                ]
            })
            .collect();
        crate::table::print(
            &[
                Column("KEY", false),
                Column("RUN", false),
                Column("USER", false),
                Column("PID", true),
                Column("SINCE", false),
                Column("LEASE UNTIL", false),
            ],
            rows,
        );
        Exit::Ok
    })
}

pub(crate) fn unlock(state: Option<PathBuf>, key: &str, force: bool) -> Exit {
    if !force {
        eprintln!(
            "error: `runbook unlock {key}` needs --force: another run may start while the holder is still changing \
             things; check `runbook locks` and `runbook status RUN` first"
        );
        return Exit::Invalid;
    }
    let Some(rt) = runtime() else { return Exit::Invalid };
    rt.block_on(async {
        let Some(store) = open_store(state).await else {
            return Exit::Invalid;
        };
        match store.remove_lock(key).await {
            Ok(Some(l)) => {
                let action = Event::OperatorAction {
                    action: "unlock".into(),
                    step: None,
                    who: user(),
                    comment: Some(format!("lock `{key}` freed with --force")),
                    plan_hash: None,
                };
                if let Err(e) = store.append(&l.run_id, &action).await {
                    eprintln!("warning: lock freed, but not journalled on run {}: {e}", l.run_id);
                }
                println!("freed lock `{key}` (was held by {})", describe(&l));
                Exit::Ok
            }
            Ok(None) => {
                eprintln!("error: no lock `{key}` (hint: `runbook locks` lists them)");
                Exit::Invalid
            }
            Err(e) => {
                eprintln!("error: {e}");
                Exit::Invalid
            }
        }
    })
}
