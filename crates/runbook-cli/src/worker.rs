//! `runbook worker` and `runbook workers`: the flags of the worker loop
//! (runbook-runner's `worker::work`, which claims, heartbeats and takes over
//! runs of the shared queue) and the table of the workers a state has seen.

use crate::Exit;
use crate::args::Output;
use crate::fail::{Done, Failure};
use crate::runs::{env, observer};
use crate::session::{open_store, runtime, user};
use runbook_core::inputs::parse_duration;
use runbook_core::inventory::Inventory;
use runbook_core::kind::Registry;
use runbook_runner::Runner;
use runbook_runner::notice::short_id;
use runbook_runner::worker::WorkerOptions;
use std::path::PathBuf;

/// `runbook worker` flags.
pub(crate) struct Options {
    pub(crate) name: Option<String>,
    pub(crate) concurrency: usize,
    pub(crate) lease_ttl: String,
    pub(crate) poll: String,
    pub(crate) exit_when_idle: bool,
    pub(crate) output: Output,
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
pub(crate) fn list(state: Option<PathBuf>, output: Output) -> Done {
    runtime()?.block_on(async {
        let workers = open_store(state).await?.workers().await?;
        if output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&workers).unwrap_or_default());
            return Ok(Exit::Ok);
        }
        print!("{}", runbook_runner::text::workers(&workers));
        Ok(Exit::Ok)
    })
}

pub(crate) fn worker(state: Option<PathBuf>, registry: &Registry, options: &Options, inventory: &Inventory) -> Done {
    let duration = |flag: &str, text: &str| parse_duration(text).map_err(|e| Failure::invalid(format!("{flag}: {e}")));
    let opts = WorkerOptions {
        name: options.name.clone().unwrap_or_else(default_name),
        host: host(),
        concurrency: options.concurrency.max(1),
        lease_ttl: duration("--lease-ttl", &options.lease_ttl)?,
        poll: duration("--poll", &options.poll)?,
        exit_when_idle: options.exit_when_idle,
    };
    let output = options.output;
    // Each run's lines carry the run's short id: a worker's runs interleave.
    let watcher_for = move |run: &str| observer(output, false, Some(&format!("[{}] ", short_id(run))));
    runtime()?.block_on(async {
        let runner = Runner {
            store: open_store(state).await?,
            registry: registry.clone(),
            watcher: observer(output, false, None),
            user: user(),
            env: env(),
            inventory: inventory.to_template(),
        };
        let signals = runbook_runner::watch_signals(runner.watcher.clone());
        runbook_runner::worker::work(&runner, &opts, &signals, &watcher_for).await?;
        Ok(Exit::Ok)
    })
}
