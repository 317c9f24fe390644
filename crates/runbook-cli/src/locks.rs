//! `runbook locks` and `runbook unlock`: the leases of playbooks' `lock:` keys
//! (taken, renewed and given back by runbook-runner), listed and, by force,
//! freed.

use crate::Exit;
use crate::args::Output;
use crate::fail::{Done, Failure};
use crate::session::{open_store, runtime, user};
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
        let Some((lock, unjournalled)) = runbook_runner::unlock(store.as_ref(), key, &user()).await? else {
            return Err(Failure::invalid(format!("no lock `{key}`")).hint("`runbook locks` lists them"));
        };
        if let Some(e) = unjournalled {
            eprintln!("warning: lock freed, but not journalled on run {}: {e}", lock.run_id);
        }
        println!("freed lock `{key}` (was held by {})", runbook_runner::describe(&lock));
        Ok(Exit::Ok)
    })
}
