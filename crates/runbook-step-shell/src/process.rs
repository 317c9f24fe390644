//! Running a local command so that nothing outlives it.
//!
//! The command is held where the kernel keeps everything it starts: the
//! step's own cgroup (see `runbook-contain`), entered between fork and exec,
//! so neither a fork, a process group of its own (`timeout 300 cmd`) nor a
//! session of its own leaves it. It also leads a session of its own, and gets
//! SIGKILL from the kernel if its runner dies (the parent-death signal; the
//! runner's keeper then kills the rest of its cgroup). Its output is streamed
//! line by line to the step log. When it exits:
//! - if nothing else is left in its cgroup, the step is done at once;
//! - otherwise the stragglers get [`SETTLE`] to finish or to leave the
//!   command's session (a daemon started with `setsid cmd &` does exactly
//!   that: it is moved out, to the runner's own cgroup, and lives on), then
//!   what remains is killed, so no orphan is left behind;
//! - output is read until the pipes close, or for at most [`DRAIN`] after that
//!   (a detached daemon that kept our stdout must not hold the step open).
//!
//! When the step is cancelled or times out, each of its processes gets
//! SIGTERM once, then everything is killed after [`GRACE`]; when the step's
//! future is dropped (a second Ctrl-C), its cgroup is killed at once. Every
//! check is a read of the cgroup's own files: O(1) in the processes of the
//! host. Where no cgroup can be used, the session's process group stands in
//! (what left the group is then not found).

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use runbook_contain::Slot;
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

/// Where the command's processes are: its cgroup, or (without one) its
/// session's process group. Dropping it kills them all.
struct Held {
    /// The command's pid, which is also its session's and group's id.
    leader: Option<Pid>,
    slot: Option<Slot>,
    /// Set when the step is being stopped: nothing is released as a daemon
    /// then, and what is left gets the whole grace, not [`SETTLE`].
    stopping: std::sync::atomic::AtomicBool,
}

impl Held {
    /// Sends `sig` once to each process of the command.
    fn signal(&self, sig: Signal) {
        match (&self.slot, self.leader) {
            (Some(slot), _) => slot.signal(sig),
            // ESRCH (already gone) is the normal case once it has exited.
            (None, Some(leader)) => {
                let _ = killpg(leader, sig);
            }
            (None, None) => {}
        }
    }

    fn kill(&self) {
        match &self.slot {
            Some(slot) => slot.kill(),
            None => self.signal(Signal::SIGKILL),
        }
    }

    /// True if any process of the command is still there.
    fn occupied(&self) -> bool {
        match (&self.slot, self.leader) {
            (Some(slot), _) => slot.populated(),
            (None, Some(leader)) => killpg(leader, None::<Signal>).is_ok(),
            (None, None) => false,
        }
    }

    /// Moves out what left the command's session (a daemon meant to outlive
    /// the step); true if anything is left in the session.
    fn release_detached(&self) -> bool {
        let (Some(slot), Some(leader)) = (&self.slot, self.leader) else {
            return self.occupied();
        };
        let mut left = false;
        for pid in slot.members() {
            match runbook_contain::session_of(pid) {
                Some(sid) if sid != leader.as_raw() => {
                    let _ = slot.release(pid);
                }
                // Gone meanwhile, or still in the session.
                None => {}
                Some(_) => left = true,
            }
        }
        left || slot.populated()
    }

    /// After the command exited: give what it left a moment to end or
    /// detach, then kill the rest.
    async fn settle(&self) {
        if !self.occupied() {
            return;
        }
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            // The stop's grace bounds this; the stop kills what is left.
            while self.occupied() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return;
        }
        let deadline = tokio::time::Instant::now() + SETTLE;
        while self.release_detached() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // The slot kills its cgroup as it goes; without one, the group.
        if self.slot.is_none() {
            self.kill();
        }
    }
}

/// Runs `cmd` held as the module says, streaming its output to
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

/// Runs `cmd` held as the module says and hands each line of its output, as
/// it comes, to `on_line`; its exit code (minus the signal number when a
/// signal ended it). Cancelling the step stops it as the module says:
/// SIGTERM once to each of its processes, SIGKILL after [`GRACE`].
pub async fn run_lines(
    mut cmd: tokio::process::Command,
    stdin: Option<&str>,
    ctx: &StepContext,
    on_line: &(dyn Fn(LogStream, &str) + Sync),
) -> Result<i32, StepError> {
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    // What runbook read the run's secrets from is not the command's: it
    // gets a secret where its step's templates name one (its own `env:`).
    ctx.withhold_secrets(cmd.as_std_mut());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let slot = ctx.contain.as_deref().and_then(|run| Slot::create(run).ok());
    runbook_contain::prepare(cmd.as_std_mut(), slot.as_ref());
    let mut child = cmd
        .spawn()
        .map_err(|e| StepError::new(format!("cannot start `{program}`: {e}")))?;
    let guard = Held {
        leader: child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw),
        slot,
        stopping: std::sync::atomic::AtomicBool::new(false),
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
                guard.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                guard.signal(Signal::SIGTERM);
                if tokio::time::timeout(GRACE, &mut work).await.is_err() {
                    guard.kill();
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
