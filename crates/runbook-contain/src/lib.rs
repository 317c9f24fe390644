//! What holds a run's local processes, so that stopping a step, or the end of
//! its runner, reaches every process the step started, however it forked, in
//! O(1) and without reading the process table.
//!
//! Where the runner may create a cgroup v2 (its own cgroup is writable: root,
//! a systemd service with `Delegate=yes`, a user session), the layout is
//! `<runner's cgroup>/runbook-<pid>/<run>.<n>/<m>`: a folder per runner
//! process, per run it executes, per step attempt. A step's process enters
//! its folder between fork and exec, so the kernel keeps everything it starts
//! there (neither a fork nor `setsid` leaves a cgroup), and `cgroup.kill` ends
//! them all at once.
//!
//! A runner that dies (SIGKILL, the OOM killer) cannot clean up: a keeper
//! does. It is a `sh` started once per runner process, outside the runner's
//! folder, blocked reading a pipe that only the runner holds. When the runner
//! ends, whatever the way, the kernel closes the pipe, and the keeper kills
//! the runner's whole folder and removes it. A run's folder is journalled too,
//! so a `resume` on the same host stops what an earlier runner left (had its
//! keeper been killed as well) before it decides anything: [`stop`].
//!
//! Where no cgroup v2 can be used (cgroup v1 only, no write access,
//! `RUNBOOK_CONTAIN=session`), [`Run::create`] returns `None` and the shell
//! kind falls back to a session of its own, which is weaker: a process that
//! makes a session of its own escapes it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `RUNBOOK_CONTAIN=session` turns cgroups off (what a host without cgroup v2
/// gets; the tests of the fallback use it).
pub const ENV: &str = "RUNBOOK_CONTAIN";

/// The prefix of a runner process's folder; [`stop`] acts only below one.
const PREFIX: &str = "runbook-";

/// What the keeper runs: wait until the runner's end closes the pipe, then
/// kill everything in the runner's folder and remove it (processes leave a
/// cgroup as they exit, so removal is retried for up to 10 s).
const KEEPER: &str = r#"trap '' INT HUP TERM QUIT
read -r _ || :
d=$1
echo 1 > "$d/cgroup.kill" 2>/dev/null
n=0
while [ -d "$d" ] && [ "$n" -lt 100 ]; do
  find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  [ -d "$d" ] && sleep 0.1
  n=$((n + 1))
done"#;

/// This process's place in the cgroup tree.
struct Host {
    /// The runner's own cgroup: where a daemon that left its step's session
    /// is moved, so it outlives the step as it asked.
    home: PathBuf,
    /// `<home>/runbook-<pid>`, killed whole by the keeper.
    base: PathBuf,
    /// The keeper and the pipe it watches, held for the life of the process.
    _keeper: Mutex<Option<(Child, ChildStdin)>>,
}

static HOST: OnceLock<Option<Host>> = OnceLock::new();
/// Numbers the folders this process creates.
static NEXT: AtomicU64 = AtomicU64::new(0);
/// Empty step folders, by run folder, for the run's next steps.
static SPARE: Mutex<std::collections::BTreeMap<PathBuf, Vec<Slot>>> = Mutex::new(std::collections::BTreeMap::new());

fn host() -> Option<&'static Host> {
    HOST.get_or_init(|| Host::create().ok()).as_ref()
}

impl Host {
    fn create() -> io::Result<Host> {
        if std::env::var(ENV).is_ok_and(|v| v == "session") {
            return Err(io::Error::other("turned off"));
        }
        let home = own_cgroup()?;
        let base = home.join(format!("{PREFIX}{}", std::process::id()));
        // A folder with this process's pid is a dead runner's (pids are
        // reused) whose keeper did not clean it: what is in it is stopped.
        if base.exists() {
            stop(&base, Duration::from_secs(5))?;
        }
        fs::create_dir(&base)?;
        if !base.join("cgroup.procs").exists() {
            let _ = fs::remove_dir(&base);
            return Err(io::Error::other("not a cgroup v2"));
        }
        let keeper = Command::new("/bin/sh")
            .arg("-c")
            .arg(KEEPER)
            .arg("runbook-keeper")
            .arg(&base)
            // Nothing of the runner's environment (its secrets) reaches it.
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Not in the terminal's foreground group: Ctrl-C is the runner's.
            .process_group(0)
            .spawn()
            .and_then(|mut child| match child.stdin.take() {
                Some(pipe) => Ok((child, pipe)),
                None => Err(io::Error::other("no pipe")),
            });
        // The keeper also proves that a process can be moved into a folder
        // here and back (a cgroup tree may refuse it: `cgroup.type`,
        // delegation), before any step relies on it.
        let keeper = keeper.and_then(|(child, pipe)| {
            let probe = base.join("probe");
            fs::create_dir(&probe)?;
            let moved = move_to(&probe, child.id()).and_then(|()| move_to(&home, child.id()));
            let _ = fs::remove_dir(&probe);
            moved.map(|()| (child, pipe))
        });
        let keeper = match keeper {
            Ok(k) => k,
            Err(e) => {
                let _ = fs::remove_dir(&base);
                return Err(e);
            }
        };
        Ok(Host {
            home,
            base,
            _keeper: Mutex::new(Some(keeper)),
        })
    }
}

/// The cgroup v2 folder of this process, from `/proc/self/cgroup` and the
/// cgroup2 mount in `/proc/self/mountinfo`.
fn own_cgroup() -> io::Result<PathBuf> {
    let cgroup = fs::read_to_string("/proc/self/cgroup")?;
    let rel = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| io::Error::other("no cgroup v2 membership"))?;
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    for line in mounts.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        if post.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let fields: Vec<&str> = pre.split_whitespace().collect();
        let (Some(root), Some(mount)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let Some(inside) = rel.strip_prefix(root.trim_end_matches('/')) else {
            continue;
        };
        let dir = PathBuf::from(unescape(mount)).join(inside.trim_start_matches('/'));
        if dir.join("cgroup.procs").exists() {
            return Ok(dir);
        }
    }
    Err(io::Error::other("no cgroup2 mount holds this process's cgroup"))
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The folder of one run in this process; dropping it stops what is left in
/// it and removes it.
#[derive(Debug)]
pub struct Run {
    dir: PathBuf,
}

impl Run {
    /// A folder for run `run_id`, or `None` where no cgroup v2 can be used.
    pub fn create(run_id: &str) -> Option<Run> {
        let host = host()?;
        let name: String = run_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .take(64)
            .collect();
        let dir = host
            .base
            .join(format!("{name}.{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir(&dir).ok()?;
        Some(Run { dir })
    }

    /// The folder, as the journal records it.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // Its spare folders go with it (taken out before they drop: a
        // spare dropped while the lock is held would give itself back).
        let spares = SPARE.lock().ok().and_then(|mut s| s.remove(&self.dir));
        for mut spare in spares.into_iter().flatten() {
            spare.dir.clear();
        }
        kill(&self.dir);
        remove_tree(&self.dir, Duration::from_millis(200));
    }
}

/// The folder of one step attempt: every process the step starts is held in
/// it. Dropping it kills them all and removes it.
#[derive(Debug)]
pub struct Slot {
    dir: PathBuf,
    procs: File,
}

impl Slot {
    /// A folder in the run's folder `run`: an empty one a finished step
    /// gave back, or a new one (creating and removing a cgroup costs more
    /// than the rest of holding a step).
    pub fn create(run: &Path) -> io::Result<Slot> {
        if let Some(slot) = SPARE.lock().ok().and_then(|mut s| s.get_mut(run).and_then(Vec::pop)) {
            return Ok(slot);
        }
        let dir = run.join(NEXT.fetch_add(1, Ordering::Relaxed).to_string());
        fs::create_dir(&dir)?;
        match OpenOptions::new().write(true).open(dir.join("cgroup.procs")) {
            Ok(procs) => Ok(Slot { dir, procs }),
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// The open `cgroup.procs` a new process writes `0` to, between fork and
    /// exec, to enter the folder (closed on exec).
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// True while any process is in the folder (or in one below it).
    pub fn populated(&self) -> bool {
        populated(&self.dir)
    }

    /// The processes in the folder itself (not those a runbook started in
    /// the folder keeps in its own folders below: their runner stops them).
    pub fn members(&self) -> Vec<i32> {
        members(&self.dir)
    }

    /// Sends `sig` to each process in the folder, once.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        for pid in self.members() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }

    /// Kills everything in the folder and below it.
    pub fn kill(&self) {
        kill(&self.dir);
    }

    /// Moves `pid` out, to the runner's own cgroup: a daemon that left the
    /// step's session to outlive it.
    pub fn release(&self, pid: i32) -> io::Result<()> {
        let home = host().ok_or_else(|| io::Error::other("no cgroup"))?;
        move_to(&home.home, u32::try_from(pid).map_err(io::Error::other)?)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // A spare its run let go of: the run removes the folder.
        if self.dir.as_os_str().is_empty() {
            return;
        }
        // The usual case: the step's processes have all ended, and the
        // empty folder waits for the run's next step.
        if !populated(&self.dir) {
            let run = self.dir.parent().map(Path::to_path_buf).unwrap_or_default();
            let spare = Slot {
                dir: std::mem::take(&mut self.dir),
                procs: match self.procs.try_clone() {
                    Ok(f) => f,
                    Err(_) => return remove_tree(&self.dir, Duration::ZERO),
                },
            };
            if let Ok(mut s) = SPARE.lock() {
                s.entry(run).or_default().push(spare);
            }
            return;
        }
        kill(&self.dir);
        remove_tree(&self.dir, Duration::from_millis(200));
    }
}

/// Prepares `cmd` to start in a session of its own, to be killed by the
/// kernel if this process (its runner) dies (the parent-death signal), and
/// to enter `slot`, if any, before it execs. The parent-death signal is
/// tied to the thread that spawns: runbook spawns from its runtime's
/// threads, which live as long as the runner.
#[allow(unsafe_code)]
pub fn prepare(cmd: &mut Command, slot: Option<&Slot>) {
    let runner = nix::unistd::getpid();
    let procs = slot.map(Slot::procs_fd);
    // SAFETY: between fork and exec the closure makes only async-signal-safe
    // calls (setsid, prctl, getppid, write) and allocates nothing; the fd it
    // writes to is the slot's, open in the parent until the spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The runner died before the signal was asked for: do not start.
            if nix::unistd::getppid() != runner {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            if let Some(fd) = procs {
                nix::unistd::write(std::os::fd::BorrowedFd::borrow_raw(fd), b"0")?;
            }
            Ok(())
        });
    }
}

/// The session a process belongs to (field 6 of `/proc/PID/stat`).
pub fn session_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // After `(comm)`: state, ppid, pgrp, session.
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// This host's name, journalled beside a run's folder: only a runner on
/// the same host stops what is in it.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Stops what is left in a run's folder an earlier runner journalled, and
/// removes the folder: `Ok(true)` if processes were still in it. Waits up to
/// `wait` for them to be gone. A path that is not a runbook folder in a
/// cgroup v2 (a mistake, or a journal from elsewhere) is left alone.
pub fn stop(dir: &Path, wait: Duration) -> io::Result<bool> {
    let named = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(PREFIX))
    };
    let ours = named(Some(dir)) || named(dir.parent());
    if !ours || !dir.join("cgroup.procs").exists() {
        return Ok(false);
    }
    let was = populated(dir);
    if was {
        kill(dir);
        let deadline = Instant::now() + wait;
        while populated(dir) {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "processes in {} did not end within {} of SIGKILL",
                        dir.display(),
                        wait.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    remove_tree(dir, Duration::from_secs(1));
    // The dead runner's own folder goes too once it is empty (a keeper that
    // was killed could not remove it); one still in use is not empty.
    if let Some(parent) = dir.parent().filter(|p| named(Some(p))) {
        let _ = fs::remove_dir(parent);
    }
    Ok(was)
}

/// Moves process `pid` into the cgroup `dir`.
fn move_to(dir: &Path, pid: u32) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))?
        .write_all(pid.to_string().as_bytes())
}

fn populated(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.events")).is_ok_and(|e| e.lines().any(|l| l == "populated 1"))
}

fn members(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// `cgroup.kill` (Linux 5.14); before it, SIGKILL to each member.
fn kill(dir: &Path) {
    let killed = OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
        .and_then(|mut f| f.write_all(b"1"));
    if killed.is_err() {
        for d in tree(dir) {
            for pid in members(&d) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// `dir` and every folder below it, deepest first.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(tree(&e.path()));
            }
        }
    }
    out.push(dir.to_path_buf());
    out
}

/// Removes `dir` and the folders below it, retrying while killed processes
/// are still leaving (up to `wait`).
fn remove_tree(dir: &Path, wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        for d in tree(dir) {
            let _ = fs::remove_dir(d);
        }
        if !dir.exists() || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn mountinfo_escapes_are_read() {
        assert_eq!(unescape(r"/sys/fs/cgroup/a\040b"), "/sys/fs/cgroup/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"\\x"), r"\\x");
    }

    #[test]
    fn stop_leaves_a_folder_that_is_not_runbook_s_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), "1\n").unwrap();
        assert!(!stop(dir.path(), Duration::from_millis(10)).unwrap());
        assert!(dir.path().exists());
    }
}
