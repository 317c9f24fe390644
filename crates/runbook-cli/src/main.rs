//! The `runbook` binary: argument parsing, output, and the wiring of step kinds.
//!
//! The language lives in `runbook-core`, planning and execution in
//! `runbook-engine`, the journal and its stores in `runbook-state`, what a
//! journal says (step rows, objectives, the reports) in `runbook-report`, and
//! each step kind in its `runbook-step-*` crate, registered in
//! [`registry::registry`], the one place a newcomer reads to find every kind.
//! The run lifecycle (start, resume, approve, cancel, locks, the worker
//! loop, the daemon's loop, the documents `--output json` prints and their
//! text forms) is
//! `runbook-runner`'s; this crate turns flags into its options, shows what
//! its `Watcher` is told, and maps its outcomes and errors to exit codes. The
//! daemon's launcher is here: it starts each scheduled run as a child
//! `runbook`.
//!
//! Exit codes (book/src/cli.md): 0 succeeded, 1 run failed, 2 invalid input or
//! playbook (nothing ran), 3 waiting for an approval, 4 lock held, 5
//! interrupted or uncertain (resume, or decide about a step in flight).

mod args;
mod commands;
mod config;
mod daemon;
mod diagnostics;
mod fail;
mod gates;
mod history;
mod json_out;
mod loading;
mod locks;
mod observe;
mod plugins;
mod reference;
mod registry;
mod report;
mod runs;
mod serve;
mod session;
mod tokens;
mod worker;

use std::process::ExitCode;

/// What a command ended with; the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Everything went as asked.
    Ok = 0,
    /// A run failed (or was cancelled).
    Failed = 1,
    /// Invalid input or playbook: nothing ran, nothing changed.
    Invalid = 2,
    /// The run waits for a person's answer (an approval): an expected pause.
    Waiting = 3,
    /// Another process holds the run, or another run holds its lock.
    Locked = 4,
    /// Interrupted or uncertain: it stopped before its end and needs a
    /// `resume` (or a person's decision about a step in flight).
    Interrupted = 5,
}

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = args::Cli::command().get_matches();
    let mut cli = args::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let settings = match config::apply(&mut cli, &matches) {
        Ok(s) => s,
        Err(e) => return ExitCode::from(fail::Failure::invalid(e.to_string()).report() as u8),
    };
    let code = match cli.command {
        args::Command::Config => config::show(&settings),
        _ => commands::dispatch(cli),
    };
    ExitCode::from(code as u8)
}
