//! Running a local command so that nothing outlives it.
//!
//! The command gets a process group of its own. Its output is streamed line by
//! line to the step log. When it exits, whatever it left running in its group is
//! killed (so its pipes close and no orphan remains); when the step is cancelled,
//! the group gets SIGTERM, then SIGKILL after a grace period; and when the step's
//! future is dropped (a timeout, or a second Ctrl-C), a guard kills the group at
//! once. A daemon meant to outlive its step must leave the group (`setsid`) or be
//! started by a service manager.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use runbook_core::kind::{LogStream, StepContext, StepError};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long a cancelled command gets between SIGTERM and SIGKILL.
pub(crate) const GRACE: Duration = Duration::from_secs(5);
/// The most output kept for the `stdout`/`stderr` outputs (the log keeps all).
const KEEP: usize = 1 << 20;
/// Lines of stderr quoted in a failure message.
const TAIL: usize = 5;

/// A finished command.
pub(crate) struct Done {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Done {
    /// `exited with status 2: <last lines of stderr>`.
    pub(crate) fn failure_message(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = &lines[lines.len().saturating_sub(TAIL)..];
        match (self.code, tail.is_empty()) {
            (c, true) if c < 0 => format!("killed by signal {}", -c),
            (c, true) => format!("exited with status {c}"),
            (c, false) if c < 0 => format!("killed by signal {}: {}", -c, tail.join(" | ")),
            (c, false) => format!("exited with status {c}: {}", tail.join(" | ")),
        }
    }
}

/// Kills the process group when dropped, unless disarmed.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn signal(&self, sig: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH (already gone) is the normal case once it has exited.
            let _ = killpg(pgid, sig);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Runs `cmd` in its own process group, streaming its output to the step log.
pub(crate) async fn run(
    mut cmd: tokio::process::Command,
    stdin: Option<&str>,
    ctx: &StepContext,
) -> Result<Done, StepError> {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| StepError::new(format!("cannot start `/bin/sh`: {e}")))?;
    let guard = GroupGuard {
        pgid: child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw),
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let text = text.to_owned();
        // Written concurrently, so a command that does not read stdin cannot block us.
        tokio::spawn(async move {
            let _ = pipe.write_all(text.as_bytes()).await;
            let _ = pipe.shutdown().await;
        });
    }
    let out = child.stdout.take();
    let err = child.stderr.take();
    let read_out = collect(out, LogStream::Stdout, ctx);
    let read_err = collect(err, LogStream::Stderr, ctx);
    let status = async {
        let status = child.wait().await;
        // The main process is gone: end whatever it left in its group, so the
        // pipes close and nothing is orphaned.
        guard.signal(Signal::SIGKILL);
        status
    };
    let finished = async { tokio::join!(status, read_out, read_err) };
    tokio::pin!(finished);
    let (status, stdout, stderr) = tokio::select! {
        r = &mut finished => r,
        () = ctx.cancel.cancelled() => {
            guard.signal(Signal::SIGTERM);
            if tokio::time::timeout(GRACE, &mut finished).await.is_err() {
                guard.signal(Signal::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut finished).await;
            }
            return Err(StepError::cancelled());
        }
    };
    let status = status.map_err(|e| StepError::new(format!("waiting for the command failed: {e}")))?;
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().unwrap_or_else(|| -status.signal().unwrap_or(0));
    Ok(Done { code, stdout, stderr })
}

/// Streams lines to the log and keeps the first [`KEEP`] bytes, trailing
/// newline removed.
async fn collect<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>, stream: LogStream, ctx: &StepContext) -> String {
    let Some(pipe) = pipe else { return String::new() };
    let mut reader = BufReader::new(pipe);
    let mut kept = String::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.strip_suffix('\n').unwrap_or(&line);
                let line = line.strip_suffix('\r').unwrap_or(line);
                ctx.log.line(stream, line);
                if kept.len() < KEEP {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
        }
    }
    if kept.ends_with('\n') {
        kept.pop();
    }
    kept
}
