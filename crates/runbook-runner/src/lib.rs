//! The run lifecycle as a library, for every front end (the command line,
//! and `runbook serve` with its web UI): no argument parsing, no printing,
//! no exit codes. Typed options in, a typed outcome or a [`RunnerError`] out,
//! and what happens meanwhile told to a [`Watcher`] the caller passes.
//!
//! It owns starting, submitting, resuming, answering and cancelling runs
//! ([`Runner`]), the operator's decisions about a stopped run ([`decide`]),
//! following a run another process executes ([`follow`]),
//! the documents and text a front end shows of the library and of runs
//! ([`catalog`], [`text`]), the lock leases of a playbook's `lock:` keys
//! ([`leases`]), the worker loop of the shared queue ([`worker`]), and the
//! daemon's schedules ([`schedule`]) and loop ([`daemon`]).
//!
//! The one design decision to know: every path that executes a run ends in
//! one `Runner::execute`, and a run is taken (its lock, its runner or its
//! lease) before anything about it is recorded, so two front ends can never
//! both run it.

pub mod access;
pub mod catalog;
pub mod config;
pub mod daemon;
pub mod decide;
mod error;
pub mod follow;
pub mod inputs;
pub mod leases;
mod lifecycle;
pub mod notice;
pub mod notify;
pub mod schedule;
pub mod text;
pub mod worker;

pub use decide::{Answer, Decisions};
pub use error::{ErrorClass, Holder, RunnerError, describe};
pub use lifecycle::{
    Cancelled, Checked, Outcome, Resumed, RunOptions, Runner, Started, alive, check_start, held_by_worker,
    resolve_secrets, unlock,
};
pub use notice::{Notice, Watcher};

/// The user recorded as running a run or taking an operator action:
/// `$RUNBOOK_USER`, else `$USER`, else the operating system's name for this
/// process's user (containers, cron and systemd set no `$USER`).
pub fn os_user() -> String {
    std::env::var("RUNBOOK_USER")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            let uid = nix::unistd::getuid();
            nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map_or_else(|| format!("uid {uid}"), |u| u.name)
        })
}

/// What stops this process's runs: the first SIGINT or SIGTERM stops them
/// gracefully (no new steps; running steps are stopped), the second kills
/// their steps now. The watcher is told each.
pub fn watch_signals(watcher: std::sync::Arc<dyn Watcher>) -> runbook_engine::exec::Signals {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = runbook_engine::exec::Signals::default();
    let s = signals.clone();
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        watcher.notice(&Notice::Stopping);
        s.stop.cancel();
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        watcher.notice(&Notice::Killing);
        s.kill.cancel();
    });
    signals
}
