//! `runbook locks` and `runbook unlock`: the leases of playbooks' `lock:` keys
//! (taken, renewed and given back by runbook-runner), listed and, by force,
//! freed.

use crate::Exit;
use crate::args::Output;
use crate::fail::{Done, Failure};
use crate::session::{open_store, runtime, user};
use runbook_state::Event;
use std::path::PathBuf;

pub(crate) fn list(state: Option<PathBuf>, output: Output) -> Done {
    runtime()?.block_on(async {
        let locks = open_store(state).await?.locks().await?;
        if output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&locks).unwrap_or_default());
            return Ok(Exit::Ok);
        }
        print!("{}", runbook_runner::text::locks(&locks));
        Ok(Exit::Ok)
    })
}

pub(crate) fn unlock(state: Option<PathBuf>, key: &str, force: bool) -> Done {
    if !force {
        return Err(Failure::invalid(format!(
            "`runbook unlock {key}` needs --force: another run may start while the holder is still changing \
             things; check `runbook locks` and `runbook status RUN` first"
        )));
    }
    runtime()?.block_on(async {
        let store = open_store(state).await?;
        let Some(l) = store.remove_lock(key).await? else {
            return Err(Failure::invalid(format!("no lock `{key}`")).hint("`runbook locks` lists them"));
        };
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
        println!("freed lock `{key}` (was held by {})", runbook_runner::describe(&l));
        Ok(Exit::Ok)
    })
}
