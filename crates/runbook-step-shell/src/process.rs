//! Running a local command so that nothing outlives it.
//!
//! The command gets a session of its own (through util-linux's `setsid`, which
//! execs in place; a process group where there is none), so a process it starts
//! that makes its own group (`timeout 300 cmd`) is still found and killed. Its
//! output is streamed line by line to the step log. When it exits:
//! - if nothing else is left in its group, the step is done at once;
//! - otherwise the stragglers get [`SETTLE`] to finish or to leave the group (a
//!   daemon started with `setsid cmd &` does exactly that), then what remains in
//!   the group is killed, so no orphan is left behind;
//! - output is read until the pipes close, or for at most [`DRAIN`] after that (a
//!   detached daemon that kept our stdout must not hold the step open).
//!
//! When the step is cancelled, the group gets SIGTERM, then SIGKILL after
//! [`GRACE`]; when the step's future is dropped (a timeout, or a second Ctrl-C), a
//! guard kills the group at once. A daemon meant to outlive its step must leave the
//! group (`setsid`) or be started by a service manager.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use runbook_core::kind::{LogStream, StepContext, StepError};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long a cancelled command gets between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);
/// How long processes left in the group after the command exits may take to end
/// or to leave the group before they are killed.
pub(crate) const SETTLE: Duration = Duration::from_millis(300);
/// How long output is still read after the command exited and its group is gone.
pub(crate) const DRAIN: Duration = Duration::from_millis(500);
/// The most output kept for the `stdout`/`stderr` outputs by default (the
/// log keeps all of it); `max_output` changes it.
pub(crate) const KEEP: usize = 1 << 20;

/// A finished command.
pub(crate) struct Done {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// More standard output came than was kept.
    pub(crate) stdout_cut: bool,
    /// More standard error came than was kept.
    pub(crate) stderr_cut: bool,
}

impl Done {
    /// `exited with status 2: <last lines of stderr>`.
    pub(crate) fn failure_message(&self) -> String {
        runbook_core::kind::exit_message(self.code, &self.stderr)
    }
}

/// Kills the command's process group and session when dropped.
struct GroupGuard {
    pgid: Option<Pid>,
    /// The command leads a session of its own.
    session: bool,
}

impl GroupGuard {
    fn signal(&self, sig: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH (already gone) is the normal case once it has exited.
            let _ = killpg(pgid, sig);
            if self.session {
                for pid in session_members(pgid) {
                    let _ = nix::sys::signal::kill(pid, sig);
                }
            }
        }
    }

    /// True if any process is still in the group (or the session).
    fn occupied(&self) -> bool {
        self.pgid.is_some_and(|pgid| {
            killpg(pgid, None::<Signal>).is_ok() || (self.session && !session_members(pgid).is_empty())
        })
    }

    /// After the command exited: give what it left in the group a moment to end
    /// or detach, then kill the rest.
    async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + SETTLE;
        while self.occupied() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.signal(Signal::SIGKILL);
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// The live processes of session `sid` (from /proc; empty where there is none).
fn session_members(sid: Pid) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // After `(comm)`: state, ppid, pgrp, session. A zombie is dead.
                let mut f = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace();
                let state = f.next();
                f.nth(2).and_then(|s| s.parse::<i32>().ok()) == Some(sid.as_raw()) && state != Some("Z")
            })
        })
        .map(Pid::from_raw)
        .collect()
}

/// Where util-linux's `setsid` is, if it is.
fn setsid_program() -> Option<&'static str> {
    ["/usr/bin/setsid", "/bin/setsid"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// The same command, started in a session of its own: `setsid` (not a group
/// leader here, so it does not fork) makes the session and execs the command.
fn in_session(cmd: &tokio::process::Command, setsid: &str) -> tokio::process::Command {
    let std = cmd.as_std();
    let mut wrapped = tokio::process::Command::new(setsid);
    wrapped.arg(std.get_program()).args(std.get_args());
    for (k, v) in std.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(dir) = std.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// Runs `cmd` in its own session (or process group), streaming its output to
/// the step log and keeping up to `keep` bytes of each stream.
pub(crate) async fn run(
    cmd: tokio::process::Command,
    stdin: Option<&str>,
    keep: usize,
    ctx: &StepContext,
) -> Result<Done, StepError> {
    let kept_out = Mutex::new(Kept::new(keep));
    let kept_err = Mutex::new(Kept::new(keep));
    let on_line = |stream: LogStream, line: &str| {
        ctx.log.line(stream, line);
        let kept = match stream {
            LogStream::Stdout => &kept_out,
            LogStream::Stderr => &kept_err,
        };
        if let Ok(mut k) = kept.lock() {
            k.push(line);
        }
    };
    let code = run_lines(cmd, stdin, ctx, &on_line).await?;
    let text = |m: Mutex<Kept>, name: &str| {
        let kept = m.into_inner().unwrap_or_else(|_| Kept::new(0));
        if kept.cut {
            ctx.log.line(
                LogStream::Stderr,
                &format!(
                    "runbook: the `{name}` output keeps the first {} bytes; the log above has all of it (raise \
                     `max_output` to keep more)",
                    kept.limit
                ),
            );
        }
        let mut s = kept.text;
        if s.ends_with('\n') {
            s.pop();
        }
        (s, kept.cut)
    };
    let (stdout, stdout_cut) = text(kept_out, "stdout");
    let (stderr, stderr_cut) = text(kept_err, "stderr");
    Ok(Done {
        code,
        stdout,
        stderr,
        stdout_cut,
        stderr_cut,
    })
}

/// Runs `cmd` in its own session (or process group) and hands each line of
/// its output, as it comes, to `on_line`; its exit code (minus the signal
/// number when a signal ended it). Cancelling the step stops it as the module
/// says: SIGTERM to its session, SIGKILL after [`GRACE`].
pub async fn run_lines(
    cmd: tokio::process::Command,
    stdin: Option<&str>,
    ctx: &StepContext,
    on_line: &(dyn Fn(LogStream, &str) + Sync),
) -> Result<i32, StepError> {
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    let session = setsid_program();
    let mut cmd = match session {
        Some(setsid) => in_session(&cmd, setsid),
        None => {
            let mut cmd = cmd;
            cmd.process_group(0);
            cmd
        }
    };
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| StepError::new(format!("cannot start `{program}`: {e}")))?;
    let guard = GroupGuard {
        pgid: child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw),
        session: session.is_some(),
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let text = text.to_owned();
        // Written concurrently, so a command that does not read stdin cannot block us.
        tokio::spawn(async move {
            let _ = pipe.write_all(text.as_bytes()).await;
            let _ = pipe.shutdown().await;
        });
    }
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let status = {
        let work = async {
            let reading = async {
                tokio::join!(
                    collect(out, LogStream::Stdout, on_line),
                    collect(err, LogStream::Stderr, on_line)
                );
            };
            let mut reading = std::pin::pin!(reading);
            let mut read_all = false;
            // 1. Until the command exits, reading meanwhile.
            let status = {
                let mut wait = std::pin::pin!(child.wait());
                loop {
                    tokio::select! {
                        s = &mut wait => break s,
                        () = &mut reading, if !read_all => read_all = true,
                    }
                }
            };
            // 2. Let what it left in its group end or detach, then kill the rest.
            {
                let mut settle = std::pin::pin!(guard.settle());
                loop {
                    tokio::select! {
                        () = &mut settle => break,
                        () = &mut reading, if !read_all => read_all = true,
                    }
                }
            }
            // 3. Whatever is still buffered, for a bounded time.
            if !read_all {
                let _ = tokio::time::timeout(DRAIN, &mut reading).await;
            }
            status
        };
        let mut work = std::pin::pin!(work);
        let status = tokio::select! {
            s = &mut work => s,
            () = ctx.cancel.cancelled() => {
                guard.signal(Signal::SIGTERM);
                if tokio::time::timeout(GRACE, &mut work).await.is_err() {
                    guard.signal(Signal::SIGKILL);
                    let _ = tokio::time::timeout(Duration::from_secs(2), &mut work).await;
                }
                return Err(StepError::cancelled());
            }
        };
        status
    };
    let status = status.map_err(|e| StepError::new(format!("waiting for `{program}` failed: {e}")))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status.code().unwrap_or_else(|| -status.signal().unwrap_or(0)))
}

/// The part of a stream kept for the step's outputs.
struct Kept {
    text: String,
    limit: usize,
    cut: bool,
}

impl Kept {
    fn new(limit: usize) -> Self {
        Kept {
            text: String::new(),
            limit,
            cut: false,
        }
    }

    /// Keeps a line while there is room; a NUL byte (which no later command
    /// could take as an argument) becomes U+FFFD.
    fn push(&mut self, line: &str) {
        if self.cut {
            return;
        }
        let room = self.limit.saturating_sub(self.text.len());
        let line = line.replace('\0', "\u{FFFD}");
        if line.len() + 1 > room {
            let mut end = room.min(line.len());
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            self.text.push_str(&line[..end]);
            self.cut = true;
            return;
        }
        self.text.push_str(&line);
        self.text.push('\n');
    }
}

/// Hands each line of a stream to `on_line`.
async fn collect<R: tokio::io::AsyncRead + Unpin>(
    pipe: Option<R>,
    stream: LogStream,
    on_line: &(dyn Fn(LogStream, &str) + Sync),
) {
    let Some(pipe) = pipe else { return };
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.strip_suffix('\n').unwrap_or(&line);
                let line = line.strip_suffix('\r').unwrap_or(line);
                on_line(stream, line);
            }
        }
    }
}
