//! The `ssh` step kind: a command on a remote host, through the system OpenSSH
//! client, multiplexed.
//!
//! A key design decision: we drive the operator's own `ssh` (the openssh crate,
//! native mux) rather than an SSH library, so `~/.ssh/config`, the agent, keys,
//! certificates and ProxyJump bastions work exactly as they do by hand. One
//! ControlMaster per destination per run is opened on first use, reused by every
//! step on that host, and closed when the run ends; at most 64 are open at once
//! (`RUNBOOK_SSH_MASTERS`): past that, the least recently used master that has
//! been idle for half a second is closed to make room. Host keys are checked
//! strictly against known_hosts unless the inventory says `accept_new_host_keys`.
//!
//! This crate depends only on `runbook-core`, never on the engine.

use indexmap::IndexMap;
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use runbook_core::kind::{
    Effect, LogStream, OutputDecl, OutputType, Outputs, Scalar, StepContext, StepError, StepKind, UNKNOWN_YET,
    one_line, params, plan_params, schema_for,
};
use runbook_core::template::shell_quote;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, Notify, OwnedSemaphorePermit, Semaphore};

/// Runs a command on a remote host over SSH.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshParams {
    /// An inventory host name, or `[user@]host[:port]`.
    pub host: String,
    /// The command, run by `sh -c` on the host. `{{x}}` passes a value in an environment variable (sent on stdin) and writes a reference to it: a value is never script text.
    pub run: String,
    /// Environment variables set for the command.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, Scalar>,
    /// Text written to the command's standard input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Run it with `sudo -n` (no password prompt: sudo must be allowed without one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sudo: bool,
    /// The longest the command may take, e.g. `5m` (the step's `timeout` also applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub timeout: Option<String>,
    /// Parse standard output as JSON into the `json` output.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub json: bool,
}

/// Where and how to connect, resolved from the inventory or the `host` text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Target {
    address: String,
    user: Option<String>,
    port: Option<u16>,
    key: Option<String>,
    jump: Option<Jump>,
    known_hosts: Option<String>,
    accept_new: bool,
}

/// A bastion between runbook and the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Jump {
    /// `[user@]host[:port]` or a `Host` of the operator's ssh config, passed to
    /// `ssh -J` as it is.
    Named(String),
    /// An inventory host: its user, port, key and known_hosts reach the jump
    /// connection through a Host block of a per-run ssh config file (see
    /// `jump_config`), since `ssh -J` passes no `-i` or `-o` on to it.
    Inventory { name: String, target: Box<Target> },
}

impl Target {
    fn shown(&self) -> String {
        let user = self.user.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("{user}{}{port}", self.address)
    }
}

/// `[user@]host[:port]`.
fn parse_destination(text: &str) -> (Option<String>, String, Option<u16>) {
    let (user, rest) = match text.split_once('@') {
        Some((u, r)) => (Some(u.to_owned()), r),
        None => (None, text),
    };
    match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (user, h.to_owned(), Some(port)),
            Err(_) => (user, rest.to_owned(), None),
        },
        _ => (user, rest.to_owned(), None),
    }
}

fn resolve(host: &str, inventory: &Json) -> Target {
    resolve_hop(host, inventory, 0)
}

/// Resolves `host`; `depth` stops a jump chain that loops.
fn resolve_hop(host: &str, inventory: &Json, depth: usize) -> Target {
    let hosts = inventory.get("hosts");
    let entry = hosts.and_then(|h| h.get(host));
    let s = |v: Option<&Json>, k: &str| v.and_then(|e| e.get(k)).and_then(Json::as_str).map(str::to_owned);
    match entry {
        Some(e) => {
            // A jump host may itself be an inventory host.
            let jump = s(Some(e), "jump").map(|j| match hosts.and_then(|h| h.get(&j)) {
                Some(_) if depth < 4 => Jump::Inventory {
                    target: Box::new(resolve_hop(&j, inventory, depth + 1)),
                    name: j,
                },
                _ => Jump::Named(j),
            });
            Target {
                address: s(Some(e), "address").unwrap_or_else(|| host.to_owned()),
                user: s(Some(e), "user"),
                port: e.get("port").and_then(Json::as_u64).and_then(|p| u16::try_from(p).ok()),
                key: s(Some(e), "key"),
                jump,
                known_hosts: s(Some(e), "known_hosts"),
                accept_new: e.get("accept_new_host_keys").and_then(Json::as_bool).unwrap_or(false),
            }
        }
        None => {
            let (user, address, port) = parse_destination(host);
            Target {
                address,
                user,
                port,
                key: None,
                jump: None,
                known_hosts: None,
                accept_new: false,
            }
        }
    }
}

/// The first line the remote wrapper writes to stderr: its process group and pid,
/// so that a cancelled or timed-out command can be stopped on the host too.
const MARKER: &str = "runbook-remote-pgid ";
/// What runs first on the host: report the process group (from /proc on Linux,
/// else the shell's pid), then the script.
const PRELUDE: &str = "read -r _ _ _ _ rb_pgid _ < /proc/$$/stat 2>/dev/null || rb_pgid=$$; \
echo \"runbook-remote-pgid $rb_pgid $$\" >&2; ";
/// Reads the header (its byte count on the first line, then the exports and
/// the script) from stdin, exactly, and runs it in this shell; what follows on
/// stdin is the step's `stdin:`.
const BOOTSTRAP: &str = "IFS= read -r rb_n && eval \"$(dd bs=1 count=\"$rb_n\" 2>/dev/null)\"";
/// How long a stopped remote command gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// The most connection set-ups in flight at once (each is a TCP + SSH handshake).
const SETUPS: usize = 16;
/// The most commands at once on one host (below sshd's default MaxSessions 10).
const PER_HOST: usize = 8;
/// The most master connections (ssh processes) open at once, unless
/// `RUNBOOK_SSH_MASTERS` says otherwise.
const MASTERS: usize = 64;
/// How long a master outlives its last use when nobody closes it (its runner
/// died), in seconds.
const MASTER_IDLE: std::num::NonZeroUsize = std::num::NonZeroUsize::new(300).expect("not zero");
/// How long a master must have been idle before the pool may close it for
/// another host: a host between two of its steps keeps its master.
const IDLE_GRACE: Duration = Duration::from_millis(500);

/// One host's connection and command slots.
struct Conn {
    session: Mutex<Option<Master>>,
    slots: Semaphore,
    /// Commands in flight on this host (a master in use is never closed).
    busy: AtomicUsize,
    /// When a command last finished or started here (the pool closes the
    /// least recently used idle master first).
    used: std::sync::Mutex<Instant>,
}

/// An open master connection and its place in the pool.
struct Master {
    session: Arc<Session>,
    _place: OwnedSemaphorePermit,
}

/// A command in flight on a host: the host's master stays open meanwhile.
struct Busy<'c>(&'c Conn);

impl<'c> Busy<'c> {
    fn new(conn: &'c Conn) -> Busy<'c> {
        conn.busy.fetch_add(1, Ordering::SeqCst);
        conn.touch();
        Busy(conn)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// Tells the pool's waiters when a command ends (dropped after its `Busy`).
struct Told<'n>(&'n Notify);

impl Drop for Told<'_> {
    fn drop(&mut self) {
        self.0.notify_waiters();
    }
}

impl Conn {
    fn touch(&self) {
        if let Ok(mut at) = self.used.lock() {
            *at = Instant::now();
        }
    }

    fn last_used(&self) -> Instant {
        self.used.lock().map_or_else(|_| Instant::now(), |at| *at)
    }
}

/// The `ssh` kind.
pub struct Ssh {
    conns: std::sync::Mutex<HashMap<Target, Arc<Conn>>>,
    setups: Semaphore,
    /// Places for master connections: a fan-out over more hosts than this
    /// closes idle masters (least recently used first) to open new ones.
    masters: Arc<Semaphore>,
    /// Told when a command finishes (a master may have become idle).
    idle: Notify,
    /// Per-run ssh config files (jump hosts from the inventory), removed on drop.
    config_dir: std::sync::Mutex<Option<tempfile::TempDir>>,
}

impl Default for Ssh {
    fn default() -> Self {
        let masters = std::env::var("RUNBOOK_SSH_MASTERS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(MASTERS);
        Ssh {
            conns: std::sync::Mutex::new(HashMap::new()),
            setups: Semaphore::new(SETUPS),
            masters: Arc::new(Semaphore::new(masters)),
            idle: Notify::new(),
            config_dir: std::sync::Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for Ssh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ssh")
    }
}

/// Says which of the usual things went wrong, from what ssh printed.
fn classify(target: &Target, e: &openssh::Error) -> String {
    let all = runbook_core::kind::error_chain(e);
    let low = all.to_lowercase();
    let who = target.shown();
    if low.contains("host key verification failed") || low.contains("identification has changed") {
        if low.contains("identification has changed") {
            format!(
                "{who}: host key mismatch: the host's key is not the one in known_hosts (possible man-in-the-middle; if the host was rebuilt, update known_hosts)"
            )
        } else {
            format!(
                "{who}: host key not trusted: it is not in known_hosts (add it, or set `accept_new_host_keys: true` for this host in the inventory)"
            )
        }
    } else if low.contains("permission denied") || low.contains("too many authentication failures") {
        format!(
            "{who}: authentication refused (check the user, the key or the agent): {}",
            last_line(&all)
        )
    } else if low.contains("connection refused")
        || low.contains("no route to host")
        || low.contains("could not resolve")
        || low.contains("name or service not known")
        || low.contains("network is unreachable")
        || low.contains("timed out")
    {
        format!("{who}: unreachable: {}", last_line(&all))
    } else {
        format!("{who}: ssh failed: {}", last_line(&all))
    }
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_owned()
}

/// The `Host` alias of an inventory jump host in the per-run ssh config.
fn jump_alias(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect();
    format!("runbook-jump-{safe}")
}

/// The ssh config for a connection through an inventory jump host: a Host block
/// per bastion of the chain (ssh passes `-F` on to the jump connection, but not
/// `-i` or `-o`), then the operator's own configuration, which `-F` would
/// otherwise skip.
fn jump_config_text(name: &str, hop: &Target) -> String {
    let mut out = String::from("# written by runbook for one run\n");
    let mut next = Some((name, hop));
    while let Some((name, hop)) = next {
        out.push_str(&format!("Host {}\n  HostName {}\n", jump_alias(name), hop.address));
        if let Some(u) = &hop.user {
            out.push_str(&format!("  User {u}\n"));
        }
        if let Some(p) = hop.port {
            out.push_str(&format!("  Port {p}\n"));
        }
        if let Some(k) = &hop.key {
            out.push_str(&format!("  IdentityFile \"{k}\"\n"));
        }
        if let Some(k) = &hop.known_hosts {
            out.push_str(&format!("  UserKnownHostsFile \"{k}\"\n"));
        }
        let check = if hop.accept_new { "accept-new" } else { "yes" };
        out.push_str(&format!("  StrictHostKeyChecking {check}\n"));
        next = match &hop.jump {
            Some(Jump::Named(j)) => {
                out.push_str(&format!("  ProxyJump {j}\n"));
                None
            }
            Some(Jump::Inventory { name, target }) => {
                out.push_str(&format!("  ProxyJump {}\n", jump_alias(name)));
                Some((name.as_str(), target.as_ref()))
            }
            None => None,
        };
    }
    out.push_str("Host *\n  Include ~/.ssh/config\n  Include /etc/ssh/ssh_config\n");
    out
}

impl Ssh {
    /// Writes the ssh config for a jump through inventory host `name`, in this
    /// run's private folder, and returns its path.
    fn jump_config(&self, name: &str, hop: &Target) -> Result<std::path::PathBuf, StepError> {
        let mut dir = self
            .config_dir
            .lock()
            .map_err(|_| StepError::new("ssh config folder poisoned"))?;
        if dir.is_none() {
            let made = tempfile::Builder::new()
                .prefix("runbook-ssh-")
                .tempdir()
                .map_err(|e| StepError::new(format!("cannot create a folder for ssh config: {e}")))?;
            *dir = Some(made);
        }
        let folder = dir.as_ref().map(|d| d.path().to_owned()).unwrap_or_default();
        let path = folder.join(format!("{}.conf", jump_alias(name)));
        std::fs::write(&path, jump_config_text(name, hop))
            .map_err(|e| StepError::new(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }

    fn conn(&self, target: &Target) -> Result<Arc<Conn>, StepError> {
        let mut conns = self
            .conns
            .lock()
            .map_err(|_| StepError::new("ssh connection table poisoned"))?;
        Ok(conns
            .entry(target.clone())
            .or_insert_with(|| {
                Arc::new(Conn {
                    session: Mutex::new(None),
                    slots: Semaphore::new(PER_HOST),
                    busy: AtomicUsize::new(0),
                    used: std::sync::Mutex::new(Instant::now()),
                })
            })
            .clone())
    }

    /// The host's master connection, opened on first use.
    async fn session(&self, target: &Target, conn: &Conn) -> Result<Arc<Session>, StepError> {
        let mut slot = conn.session.lock().await;
        if let Some(m) = slot.as_ref() {
            return Ok(m.session.clone());
        }
        let place = self.place().await?;
        let _setup = self
            .setups
            .acquire()
            .await
            .map_err(|_| StepError::new("ssh shutting down"))?;
        let mut b = SessionBuilder::default();
        b.known_hosts_check(if target.accept_new {
            KnownHosts::Add
        } else {
            KnownHosts::Strict
        })
        .connect_timeout(Duration::from_secs(10))
        .server_alive_interval(Duration::from_secs(15))
        // A master left behind by a runner that died (kill -9, a crash)
        // exits by itself once idle this long; one that exits during a run
        // is replaced (see `run`).
        .control_persist(ControlPersist::IdleFor(MASTER_IDLE))
        .control_directory(std::env::temp_dir());
        if let Some(u) = &target.user {
            b.user(u.clone());
        }
        if let Some(p) = target.port {
            b.port(p);
        }
        if let Some(k) = &target.key {
            b.keyfile(k);
        }
        match &target.jump {
            Some(Jump::Named(j)) => {
                b.jump_hosts([j.as_str()]);
            }
            Some(Jump::Inventory { name, target: hop }) => {
                let config = self.jump_config(name, hop)?;
                b.config_file(config).jump_hosts([jump_alias(name)]);
            }
            None => {}
        }
        if let Some(k) = &target.known_hosts {
            b.user_known_hosts_file(k);
        }
        let session = b
            .connect_mux(&target.address)
            .await
            .map_err(|e| StepError::new(classify(target, &e)))?;
        let session = Arc::new(session);
        *slot = Some(Master {
            session: session.clone(),
            _place: place,
        });
        Ok(session)
    }

    /// Drops a host's master if it is still `session` (it has gone).
    async fn forget(&self, conn: &Conn, session: &Arc<Session>) {
        let mut slot = conn.session.lock().await;
        if slot.as_ref().is_some_and(|m| Arc::ptr_eq(&m.session, session)) {
            *slot = None;
        }
    }

    /// A place in the pool for one more master: a free one, else the place
    /// of the least recently used idle master, which is closed; else waits
    /// until a command somewhere finishes or a master has been idle long
    /// enough.
    async fn place(&self) -> Result<OwnedSemaphorePermit, StepError> {
        loop {
            let idle = self.idle.notified();
            match self.masters.clone().try_acquire_owned() {
                Ok(place) => return Ok(place),
                Err(tokio::sync::TryAcquireError::Closed) => return Err(StepError::new("ssh shutting down")),
                Err(tokio::sync::TryAcquireError::NoPermits) => {}
            }
            if let Some(master) = self.evict() {
                let Master { session, _place } = master;
                if let Ok(session) = Arc::try_unwrap(session) {
                    let _ = session.close().await;
                }
                continue;
            }
            // Checked again now and then: a notification can come between
            // the look above and this wait.
            tokio::select! {
                () = idle => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Takes the master of the least recently used host with nothing in
    /// flight for at least [`IDLE_GRACE`] (and not being opened or used right
    /// now).
    fn evict(&self) -> Option<Master> {
        let conns: Vec<Arc<Conn>> = self.conns.lock().ok()?.values().cloned().collect();
        let mut idle: Vec<(Instant, Arc<Conn>)> = conns
            .into_iter()
            .filter(|c| c.busy.load(Ordering::SeqCst) == 0)
            .map(|c| (c.last_used(), c))
            .filter(|(at, _)| at.elapsed() >= IDLE_GRACE)
            .collect();
        idle.sort_by_key(|(at, _)| *at);
        idle.into_iter().find_map(|(_, c)| {
            let mut slot = c.session.try_lock().ok()?;
            if c.busy.load(Ordering::SeqCst) > 0 {
                return None;
            }
            slot.take()
        })
    }
}

const OUTPUTS: &[OutputDecl] = &[
    OutputDecl::new("exit_code", OutputType::Integer, "the remote command's exit status"),
    OutputDecl::new(
        "stdout",
        OutputType::String,
        "standard output, trailing newline removed",
    ),
    OutputDecl::new("stderr", OutputType::String, "standard error, trailing newline removed"),
    OutputDecl::new(
        "json",
        OutputType::Any,
        "standard output parsed as JSON (with `json: true`)",
    ),
    OutputDecl::new("host", OutputType::String, "where it ran, `user@address:port`"),
];

/// The remote process group and pid, once the wrapper has reported them.
type RemoteIds = std::sync::Mutex<Option<(i64, i64)>>;

async fn collect<R: tokio::io::AsyncRead + Unpin>(
    pipe: Option<R>,
    stream: LogStream,
    ctx: &StepContext,
    ids: Option<&RemoteIds>,
) -> String {
    let Some(pipe) = pipe else { return String::new() };
    let mut lines = BufReader::new(pipe).lines();
    let mut kept = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if let (Some(ids), Some(rest)) = (ids, line.strip_prefix(MARKER)) {
            let mut parts = rest.split_whitespace().filter_map(|p| p.parse::<i64>().ok());
            if let (Some(pgid), Some(pid), Ok(mut slot)) = (parts.next(), parts.next(), ids.lock()) {
                if slot.is_none() {
                    *slot = Some((pgid, pid));
                    continue;
                }
            }
        }
        ctx.log.line(stream, &line);
        if kept.len() < 1 << 20 {
            kept.push_str(&line);
            kept.push('\n');
        }
    }
    if kept.ends_with('\n') {
        kept.pop();
    }
    kept
}

/// Sends a signal to a remote process group (or, failing that, the process).
async fn signal_remote(session: &Arc<Session>, pgid: i64, pid: i64, sig: &str, sudo: bool) {
    // `kill -SIG -PGID`, without `--`: dash's builtin rejects `--`.
    let kill = format!("kill -{sig} -{pgid} 2>/dev/null || kill -{sig} {pid} 2>/dev/null");
    let line = if sudo {
        format!("sudo -n -- sh -c {}", shell_quote(&kill))
    } else {
        format!("sh -c {}", shell_quote(&kill))
    };
    let mut cmd = Session::to_raw_command(session.clone(), line);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let _ = tokio::time::timeout(Duration::from_secs(5), cmd.status()).await;
}

#[async_trait::async_trait]
impl StepKind for Ssh {
    fn name(&self) -> &'static str {
        "ssh"
    }

    fn summary(&self) -> &'static str {
        "run a command on a remote host through the system OpenSSH client, multiplexed"
    }

    fn params_schema(&self) -> Json {
        schema_for::<SshParams>()
    }

    fn shell_fields(&self) -> &'static [&'static str] {
        &["/run"]
    }

    fn effect(&self, _with: &Json) -> Effect {
        Effect::Unknown
    }

    fn idempotent(&self, _with: &Json) -> bool {
        false
    }

    fn outputs(&self) -> &[OutputDecl] {
        OUTPUTS
    }

    fn describe(&self, with: &Json) -> String {
        let Some(p) = plan_params::<SshParams>(with) else {
            return format!("run a command over ssh {UNKNOWN_YET}");
        };
        let sudo = if p.sudo { "sudo " } else { "" };
        format!("on {}: {sudo}`{}`", p.host, one_line(&p.run, 100))
    }

    async fn run(&self, ctx: &StepContext, with: Json) -> Result<Outputs, StepError> {
        let p: SshParams = params(with)?;
        let target = resolve(&p.host, &ctx.inventory);
        let conn = self.conn(&target)?;
        let _slot = conn
            .slots
            .acquire()
            .await
            .map_err(|_| StepError::new("ssh shutting down"))?;
        // Dropped in reverse: the host is idle before the waiters are told.
        let _told = Told(&self.idle);
        let _busy = Busy::new(&conn);
        let mut session = tokio::select! {
            s = self.session(&target, &conn) => s?,
            () = ctx.cancel.cancelled() => return Err(StepError::cancelled()),
        };
        // A master that has gone (the host rebooted, it sat idle past its
        // persistence) is replaced once, before the command is sent.
        if session.check().await.is_err() {
            self.forget(&conn, &session).await;
            session = tokio::select! {
                s = self.session(&target, &conn) => s?,
                () = ctx.cancel.cancelled() => return Err(StepError::cancelled()),
            };
        }
        // The remote command line is fixed and holds no value (every user of
        // either host can read a command line): the exports and the script
        // come on stdin, ahead of the step's own `stdin:`, as a header of
        // known length that the bootstrap reads exactly and evaluates.
        let mut header = String::new();
        for (k, v) in &p.env {
            header.push_str(&format!("export {k}={}\n", shell_quote(&v.to_string())));
        }
        header.push_str(&p.run);
        let bootstrap = format!("{PRELUDE}{BOOTSTRAP}");
        let line = if p.sudo {
            format!("sudo -n -- sh -c {}", shell_quote(&bootstrap))
        } else {
            format!("sh -c {}", shell_quote(&bootstrap))
        };
        let mut cmd = Session::to_raw_command(session.clone(), line);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().await.map_err(|e| StepError::new(classify(&target, &e)))?;
        if let Some(mut pipe) = child.stdin().take() {
            let mut input = format!("{}\n{header}", header.len()).into_bytes();
            input.extend(p.stdin.clone().unwrap_or_default().into_bytes());
            tokio::spawn(async move {
                let _ = pipe.write_all(&input).await;
                let _ = pipe.shutdown().await;
            });
        }
        let out = child.stdout().take();
        let err = child.stderr().take();
        let limit = runbook_core::kind::duration_param("timeout", p.timeout.as_deref())?;
        let ids: RemoteIds = std::sync::Mutex::new(None);
        let (status, stdout, stderr) = {
            let work = async {
                let (o, e) = tokio::join!(
                    collect(out, LogStream::Stdout, ctx, None),
                    collect(err, LogStream::Stderr, ctx, Some(&ids))
                );
                (child.wait().await, o, e)
            };
            let mut work = std::pin::pin!(work);
            let deadline = async {
                match limit {
                    Some(l) => tokio::time::sleep(l).await,
                    None => std::future::pending().await,
                }
            };
            let stopped = tokio::select! {
                r = &mut work => Ok(r),
                () = ctx.cancel.cancelled() => Err(StepError::cancelled()),
                () = deadline => Err(StepError::new(format!(
                    "{}: timed out after {}; the remote command was stopped",
                    target.shown(),
                    p.timeout.as_deref().unwrap_or("?")
                ))),
            };
            match stopped {
                Ok(r) => r,
                Err(e) => {
                    // Closing the channel does not stop a command without a
                    // terminal: signal its process group on the host. Its ids
                    // may still be in the pipe, unread (a loaded machine): let
                    // the readers catch up first.
                    let known = || ids.lock().ok().and_then(|g| *g);
                    let until = tokio::time::Instant::now() + Duration::from_millis(500);
                    let mut ended = false;
                    while known().is_none() && tokio::time::Instant::now() < until {
                        tokio::select! {
                            _ = &mut work => {
                                ended = true;
                                break;
                            }
                            () = tokio::time::sleep(Duration::from_millis(20)) => {}
                        }
                    }
                    if let Some((pgid, pid)) = known().filter(|_| !ended) {
                        signal_remote(&session, pgid, pid, "TERM", p.sudo).await;
                        if tokio::time::timeout(GRACE, &mut work).await.is_err() {
                            signal_remote(&session, pgid, pid, "KILL", p.sudo).await;
                            let _ = tokio::time::timeout(Duration::from_secs(2), &mut work).await;
                        }
                    }
                    return Err(e);
                }
            }
        };
        let status = status.map_err(|e| StepError::new(classify(&target, &e)))?;
        let code = status.code().unwrap_or(-1);
        let mut outputs = Outputs::new();
        outputs.insert("exit_code".into(), Json::from(code));
        outputs.insert("stdout".into(), Json::String(stdout.clone()));
        outputs.insert("stderr".into(), Json::String(stderr.clone()));
        outputs.insert("host".into(), Json::String(target.shown()));
        if code != 0 {
            let msg = format!(
                "{}: {}",
                target.shown(),
                runbook_core::kind::exit_message(code, &stderr)
            );
            return Err(StepError::new(msg).with_outputs(outputs));
        }
        if p.json {
            match serde_json::from_str::<Json>(&stdout) {
                Ok(v) => {
                    outputs.insert("json".into(), v);
                }
                Err(e) => {
                    return Err(
                        StepError::new(format!("`json: true` but standard output is not JSON ({e})"))
                            .with_outputs(outputs),
                    );
                }
            }
        }
        Ok(outputs)
    }

    async fn close(&self) {
        let conns: Vec<Arc<Conn>> = match self.conns.lock() {
            Ok(mut c) => c.drain().map(|(_, v)| v).collect(),
            Err(_) => return,
        };
        for c in conns {
            let master = c.session.lock().await.take();
            if let Some(s) = master.and_then(|m| Arc::try_unwrap(m.session).ok()) {
                let _ = s.close().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn destinations_and_inventory() {
        assert_eq!(
            parse_destination("deploy@10.0.0.1:2222"),
            (Some("deploy".into()), "10.0.0.1".into(), Some(2222))
        );
        assert_eq!(parse_destination("web1"), (None, "web1".into(), None));
        let inv = json!({"hosts": {
            "web1": {"address": "127.0.1.1", "user": "deploy", "port": 2222, "jump": "bastion", "key": "/k"},
            "bastion": {"address": "b.example.com", "user": "ops", "port": 22}
        }});
        let t = resolve("web1", &inv);
        assert_eq!(t.shown(), "deploy@127.0.1.1:2222");
        match &t.jump {
            Some(Jump::Inventory { name, target }) => {
                assert_eq!(name, "bastion");
                assert_eq!(target.shown(), "ops@b.example.com:22");
                let text = jump_config_text(name, target);
                assert!(text.contains("Host runbook-jump-bastion\n  HostName b.example.com\n  User ops\n  Port 22\n"));
                assert!(text.contains("StrictHostKeyChecking yes"));
                assert!(text.ends_with("Host *\n  Include ~/.ssh/config\n  Include /etc/ssh/ssh_config\n"));
            }
            other => panic!("jump {other:?}"),
        }
        // A jump chain that loops ends as a plain name instead of recursing forever.
        let looped = json!({"hosts": {"a": {"jump": "b"}, "b": {"jump": "a"}}});
        let mut hop = resolve("a", &looped);
        let mut hops = 0;
        while let Some(Jump::Inventory { target, .. }) = hop.jump.clone() {
            hop = *target;
            hops += 1;
        }
        assert!(hops <= 5, "{hops}");
        assert!(!t.accept_new);
        assert_eq!(resolve("root@h:22", &inv).shown(), "root@h:22");
    }
}
