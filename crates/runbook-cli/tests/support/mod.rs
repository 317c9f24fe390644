//! A harness that reads like a sentence:
//! `Run::new().playbook("x", yaml).args(["plan", "x"]).run().exit(0).stdout_has("...")`.
//!
//! Each `Run` gets its own temporary library folder, removed on drop (also when
//! the test panics), and runs the real `runbook` binary in it.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root, where `tests/corpus` and `schemas/` live.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

pub struct Run {
    dir: tempfile::TempDir,
    args: Vec<String>,
    cwd: Option<PathBuf>,
    env: Vec<(String, String)>,
    unset: Vec<String>,
}

pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn new() -> Self {
        Run {
            dir: tempfile::tempdir().expect("tempdir"),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            unset: Vec::new(),
        }
    }

    /// Adds `playbooks/<name>/v1.yaml`.
    pub fn playbook(self, name: &str, yaml: &str) -> Self {
        self.file(&format!("playbooks/{name}/v1.yaml"), yaml)
    }

    /// Adds any file under the run's folder.
    pub fn file(self, rel: &str, text: &str) -> Self {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(|s| s.as_ref().to_owned()));
        self
    }

    /// Runs in `dir` instead of the temporary folder (for the repository's own files).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// Runs without the environment variable `k` (as cron or systemd would).
    pub fn unset(mut self, k: &str) -> Self {
        self.unset.push(k.to_owned());
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn run(&self) -> Outcome {
        self.exec(Vec::<String>::new())
    }

    /// The command for the binary with extra arguments, in this run's folder,
    /// with its own state file.
    fn command<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, extra: I) -> Command {
        let cwd = self.cwd.clone().unwrap_or_else(|| self.dir.path().to_owned());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
        cmd.args(&self.args)
            .args(extra.into_iter().map(|s| s.as_ref().to_owned()))
            .current_dir(&cwd)
            .env_remove("RUNBOOK_PLAYBOOKS")
            .env_remove("RUNBOOK_PLUGIN_PATH")
            .env("NO_COLOR", "1")
            .env("USER", "tester")
            // No user-level runbook.toml from the machine the tests run on.
            .env("XDG_CONFIG_HOME", self.dir.path())
            // Nor its cache of plugin descriptions.
            .env("XDG_CACHE_HOME", self.dir.path().join(".cache"))
            // Nor its mask key.
            .env("XDG_STATE_HOME", self.dir.path().join(".state"))
            .env("RUNBOOK_STATE", self.dir.path().join("state.db"));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for k in &self.unset {
            cmd.env_remove(k);
        }
        cmd
    }

    /// Starts the binary in the background with extra arguments.
    pub fn spawn<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, extra: I) -> std::process::Child {
        self.command(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("runbook starts")
    }

    /// Starts the binary in the background, its output going to `log` (a
    /// long-lived process that must never block on a full pipe).
    pub fn spawn_logged<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, extra: I, log: &Path) -> std::process::Child {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        self.command(extra)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("runbook starts")
    }

    /// [`Run::spawn_logged`] with more environment variables for it only.
    pub fn spawn_logged_env<I: IntoIterator<Item = S>, S: AsRef<str>>(
        &self,
        env: &[(&str, &str)],
        extra: I,
        log: &Path,
    ) -> std::process::Child {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = self.command(extra);
        cmd.envs(env.iter().copied());
        cmd.stdout(out).stderr(err).spawn().expect("runbook starts")
    }

    /// Runs with extra arguments, leaving the `Run` reusable.
    pub fn exec<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, extra: I) -> Outcome {
        self.exec_env(&[], extra)
    }

    /// [`Run::exec`] with more environment variables for this call only.
    pub fn exec_env<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, env: &[(&str, &str)], extra: I) -> Outcome {
        let mut cmd = self.command(extra);
        cmd.envs(env.iter().copied());
        let out = cmd.output().expect("runbook runs");
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Outcome {
    /// The run id printed by `run` (first line: `run <id> started`).
    pub fn run_id(&self) -> String {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("run ").and_then(|r| r.strip_suffix(" started")))
            .map(str::to_owned)
            .or_else(|| {
                self.stdout.lines().find_map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).ok()?;
                    v["run"].as_str().map(str::to_owned)
                })
            })
            .unwrap_or_else(|| panic!("no run id in\n{}", self.stdout))
    }

    /// The outputs of step `id` from `--output json` events (Null if it did not succeed).
    pub fn outputs_of(&self, id: &str) -> serde_json::Value {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "step_succeeded" && e["step"] == id)
            .map(|e| e["outputs"].clone())
            .unwrap_or(serde_json::Value::Null)
    }

    #[track_caller]
    pub fn exit(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(self, text: &str) -> Self {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(self, text: &str) -> Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}\n--- stderr\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_lacks(self, text: &str) -> Self {
        assert!(
            !self.stdout.contains(text),
            "stdout has {text:?}\n--- stdout\n{}",
            self.stdout
        );
        self
    }
}

/// The lab's HTTP app (`tests/lab/app.py`) on a loopback port, stopped on drop
/// (also when the test panics).
pub struct App {
    child: std::process::Child,
    pub port: u16,
}

impl App {
    pub fn start() -> App {
        use std::io::BufRead;
        let mut child = Command::new("python3")
            .arg(workspace().join("tests/lab/app.py"))
            .args(["--bind", "127.0.0.1", "--port", "0", "--version", "v7"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is needed for the lab app: apt-get install python3 (scripts/setup does it)");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line).expect("app starts");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .expect("app prints its port");
        App { child, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real sshd on a loopback address, with a host key, a client key and a
/// known_hosts made for it; killed on drop (also when the test panics).
pub struct Sshd {
    child: std::process::Child,
    pub dir: tempfile::TempDir,
    pub address: String,
    pub port: u16,
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen is needed: apt-get install openssh-client (scripts/setup does it)")
        .success();
    assert!(ok, "ssh-keygen failed");
}

impl Sshd {
    pub fn start(address: &str) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "sshd is needed for the lab: apt-get install openssh-server (scripts/setup does it)"
        );
        // sshd's privilege separation folder; the package creates it at boot.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).expect("authorized_keys");
        let port = std::net::TcpListener::bind((address, 0))
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress {address}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nUsePAM no\nLogLevel INFO\nMaxSessions 10\n",
                d = d.display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(d.join("sshd.log")).expect("log");
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stderr(log)
            .spawn()
            .expect("sshd starts");
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
        std::fs::write(d.join("known_hosts"), format!("[{address}]:{port} {host_pub}")).expect("known_hosts");
        for _ in 0..100 {
            if std::net::TcpStream::connect((address, port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        Sshd {
            child,
            dir,
            address: address.to_owned(),
            port,
        }
    }

    /// An inventory entry (YAML flow mapping) for this host.
    pub fn inventory_entry(&self) -> String {
        let d = self.dir.path();
        format!(
            "{{ address: \"{}\", port: {}, user: {}, key: \"{}/client_key\", known_hosts: \"{}/known_hosts\" }}",
            self.address,
            self.port,
            std::env::var("USER").unwrap_or_else(|_| "root".into()),
            d.display(),
            d.display()
        )
    }

    /// How many logins sshd accepted.
    /// The listening sshd's pid (its connections are its children).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logins(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("sshd.log"))
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The multi-host lab (`tests/lab/lab.py`): `n` hosts, each with its own sshd in
/// its own mount namespace (a private /srv/app), the lab app, and HAProxy in
/// front. Stopped on drop, also when the test panics; if the test process dies
/// outright, the lab sees its standard input close and stops itself.
pub struct Lab {
    child: std::process::Child,
    pub dir: tempfile::TempDir,
    pub info: serde_json::Value,
}

impl Lab {
    pub fn start(hosts: usize) -> Lab {
        Lab::start_with(&["--hosts", &hosts.to_string()])
    }

    /// The whole service (`--stack`): `hosts` app hosts configured for the
    /// PostgreSQL primary (with its standby) and Redis, Celery on web1, HAProxy.
    pub fn stack(hosts: usize) -> Lab {
        Lab::start_with(&["--hosts", &hosts.to_string(), "--stack"])
    }

    /// The whole service in the lab's other world (`--flavor alt`): other
    /// names, user, paths, endpoints and TLS on the app (tests/lab/lab.py's
    /// FLAVOURS).
    pub fn alt(hosts: usize) -> Lab {
        Lab::start_with(&["--hosts", &hosts.to_string(), "--stack", "--flavor", "alt"])
    }

    /// A PostgreSQL primary and streaming standby, no hosts.
    pub fn postgres() -> Lab {
        Lab::start_with(&["--hosts", "0", "--postgres"])
    }

    pub fn start_with(args: &[&str]) -> Lab {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new("python3")
            .arg(workspace().join("tests/lab/lab.py"))
            .args(["up", "--watch-stdin"])
            .args(args)
            .arg("--dir")
            .arg(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is needed for the lab: apt-get install python3 (scripts/setup does it)");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line).expect("lab starts");
        let info: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the lab did not start (its error is above; scripts/setup installs what it needs)");
            }
        };
        Lab { child, dir, info }
    }

    /// The inventory the lab wrote (hosts web1..webN, group `web`).
    pub fn inventory(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("inventory.yaml")).expect("inventory")
    }

    pub fn host(&self, i: usize) -> &serde_json::Value {
        &self.info["hosts"][i]
    }

    /// How many logins host `i`'s sshd accepted.
    pub fn logins(&self, i: usize) -> usize {
        let log = self.host(i)["sshd_log"].as_str().expect("log");
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }

    /// What host `i`'s app serves at `path`.
    pub fn get(&self, i: usize, path: &str) -> String {
        let h = self.host(i);
        http_get(
            h["address"].as_str().expect("address"),
            h["app_port"].as_u64().expect("port") as u16,
            path,
        )
    }

    /// What HAProxy serves at `path`.
    pub fn get_via_lb(&self, path: &str) -> String {
        http_get(
            "127.0.0.1",
            self.info["haproxy"]["port"].as_u64().expect("lb port") as u16,
            path,
        )
    }

    /// A HAProxy runtime API command, over its unix socket.
    pub fn haproxy(&self, command: &str) -> String {
        use std::io::{Read, Write};
        let sock = self.info["haproxy"]["socket"].as_str().expect("socket");
        let mut s = std::os::unix::net::UnixStream::connect(sock).expect("haproxy socket");
        s.write_all(format!("{command}\n").as_bytes()).expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }
}

impl Lab {
    /// `runbook` on the repository's playbooks with the lab's inventory, a state
    /// file of its own, and the lab's superuser DSNs as secrets.
    pub fn runbook(&self) -> Run {
        let run = Run::new()
            .cwd(workspace())
            .args(["--inventory", self.info["inventory"].as_str().unwrap()]);
        match self.info.get("postgres") {
            Some(pg) => run
                .env("PRIMARY_DSN", pg["primary"]["dsn"].as_str().unwrap())
                .env("STANDBY_DSN", pg["standby"]["dsn"].as_str().unwrap()),
            None => run,
        }
    }

    /// `--set KEY=VALUE` for each input of a library playbook that points it at
    /// the lab (lab.json's `inputs`: its HAProxy, its app port, and the hosts'
    /// scripts for the commands that are systemctl and git in production).
    pub fn sets(&self, keys: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for k in keys {
            let v = &self.info["inputs"][k];
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            assert!(v != "null", "the lab has no value for input `{k}`");
            out.push("--set".to_owned());
            out.push(format!("{k}={v}"));
        }
        out
    }

    /// `runbook run PLAYBOOK` with the lab's values for `keys` and `KEY=VALUE`
    /// pairs of the test's own.
    pub fn play(&self, run: &Run, playbook: &str, keys: &[&str], sets: &[&str]) -> Outcome {
        let mut args = vec!["run".to_owned(), playbook.to_owned()];
        for s in sets {
            // A flag (`--yes`) goes as it is; anything else is an input.
            if !s.starts_with("--") {
                args.push("--set".to_owned());
            }
            args.push((*s).to_owned());
        }
        args.extend(self.sets(keys));
        run.exec(&args)
    }

    /// Runs a command inside host `i` (its mount namespace, as ssh sees it); its
    /// standard output.
    pub fn in_host(&self, i: usize, script: &str) -> String {
        let pid = self.host(i)["sshd_pid"].to_string();
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-m", "sh", "-c", script])
            .output()
            .expect("nsenter");
        assert!(
            out.status.success(),
            "{script} on host {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A verified off-site backup, as the `backup` playbook makes it, in the
    /// lab's backup_dir (what blue-green needs before it migrates).
    pub fn verified_backup(&self, run: &Run) {
        let dir = format!("dir={}", self.info["inputs"]["backup_dir"].as_str().unwrap());
        self.play(run, "backup", &["copy_cmd", "verify_cmd"], &[&dir]).exit(0);
    }

    /// The releases host `i` was deployed, oldest first (its deploys.log).
    pub fn deploys(&self, i: usize) -> Vec<String> {
        self.host_file(i, "deploys.log").lines().map(str::to_owned).collect()
    }

    /// The release each of the first `hosts` hosts says it serves (`/version/`).
    pub fn versions(&self, hosts: usize) -> Vec<String> {
        (0..hosts)
            .map(|i| {
                let v: serde_json::Value = serde_json::from_str(&self.get(i, "/version/")).unwrap();
                v["version"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    /// A file of host `i`'s /srv/app, as the host sees it.
    pub fn host_file(&self, i: usize, rel: &str) -> String {
        let dir = self.host(i)["dir"].as_str().unwrap();
        std::fs::read_to_string(format!("{dir}/app/{rel}")).unwrap_or_default()
    }

    /// `psql` as the superuser on the primary or the standby; its output
    /// (unaligned, tuples only).
    pub fn psql(&self, server: &str, sql: &str) -> String {
        self.psql_in(server, self.database(), sql)
    }

    /// The app's database (`finance` in the default lab).
    pub fn database(&self) -> &str {
        self.info["postgres"]["database"].as_str().unwrap_or("finance")
    }

    /// `psql` as the superuser in database `db`.
    pub fn psql_in(&self, server: &str, db: &str, sql: &str) -> String {
        let pg = &self.info["postgres"];
        let dsn = pg[server]["dsn"]
            .as_str()
            .unwrap()
            .replace(&format!("/{}?", self.database()), &format!("/{db}?"));
        let out = Command::new(format!("{}/psql", pg["bin"].as_str().unwrap()))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(dsn)
            .args(["-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The lab's database hosts' controls (`DIR/pg/ctl stop primary`,
    /// `basebackup primary`, ...); panics with its error if it fails.
    pub fn pg_ctl(&self, args: &[&str]) {
        let out = Command::new(self.dir.path().join("pg/ctl"))
            .args(args)
            .output()
            .expect("pg/ctl");
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A fresh database on the primary for runbook's own state; its URL.
    pub fn state_db(&self, name: &str) -> String {
        self.psql("primary", &format!("CREATE DATABASE {name}"));
        self.dsn("primary")
            .replace(&format!("/{}?", self.database()), &format!("/{name}?"))
    }

    pub fn dsn(&self, server: &str) -> String {
        self.info["postgres"][server]["dsn"].as_str().unwrap().to_owned()
    }
}

/// The lines of a marker file (none if it does not exist).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until `holder` holds `key`; if it ended first, says how.
pub fn wait_for_lock(run: &Run, key: &str, holder: &mut std::process::Child) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let locks = run.exec(["locks"]);
        if locks.stdout.contains(key) {
            return;
        }
        if let Ok(Some(status)) = holder.try_wait() {
            let mut out = String::new();
            if let Some(mut o) = holder.stdout.take() {
                use std::io::Read;
                let _ = o.read_to_string(&mut out);
            }
            panic!("the holder ended ({status}) before taking `{key}`:\n{out}");
        }
        assert!(
            std::time::Instant::now() < until,
            "the lock was never taken: {}{}",
            locks.stdout,
            locks.stderr
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `runbook status RUN --output json`.
pub fn status_json(run: &Run, id: &str) -> serde_json::Value {
    let out = run.exec(["status", id, "--output", "json"]).exit(0);
    serde_json::from_str(&out.stdout).expect("status json")
}

/// A plain HTTP/1.0 GET; the body.
pub fn http_get(address: &str, port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((address, port)).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or(out)
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Closing stdin asks the lab to stop everything it started; wait for it.
        drop(self.child.stdin.take());
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bounded HTTP load: `threads` clients each sending GET `path` to
/// 127.0.0.1:`port` back to back (one request per connection), counting
/// successes (2xx), HTTP errors and connection errors, until stopped.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(u64, u64, u64)>>,
}

/// What a [`Load`] saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadCount {
    pub ok: u64,
    pub http_errors: u64,
    pub connection_errors: u64,
}

impl Load {
    pub fn start(port: u16, path: &str, threads: usize) -> Load {
        use std::io::{Read, Write};
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                let path = path.to_owned();
                std::thread::spawn(move || {
                    let (mut ok, mut bad, mut conn) = (0, 0, 0);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                            conn += 1;
                            continue;
                        };
                        let mut out = String::new();
                        if write!(s, "GET {path} HTTP/1.0\r\n\r\n").is_err() || s.read_to_string(&mut out).is_err() {
                            conn += 1;
                        } else if out.starts_with("HTTP/1.0 2") || out.starts_with("HTTP/1.1 2") {
                            ok += 1;
                        } else {
                            bad += 1;
                        }
                    }
                    (ok, bad, conn)
                })
            })
            .collect();
        Load { stop, threads }
    }

    pub fn stop(self) -> LoadCount {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut c = LoadCount::default();
        for t in self.threads {
            let (ok, bad, conn) = t.join().expect("load thread");
            c.ok += ok;
            c.http_errors += bad;
            c.connection_errors += conn;
        }
        c
    }
}

impl Lab {
    /// HAProxy's view of one server: (admin state bits, operational state,
    /// current sessions), from the runtime API.
    pub fn server_state(&self, backend: &str, server: &str) -> (u32, u32, u64) {
        let state = self.haproxy(&format!("show servers state {backend}"));
        let line = state
            .lines()
            .find(|l| l.split(' ').nth(3) == Some(server))
            .unwrap_or_else(|| panic!("no {server} in\n{state}"));
        let f: Vec<&str> = line.split(' ').collect();
        let stat = self.haproxy(&format!("show stat {backend} 4 -1"));
        let head: Vec<&str> = stat
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let scur = head.iter().position(|c| *c == "scur").unwrap();
        let sessions = stat
            .lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|r| r.get(1) == Some(&server))
            .map(|r| r[scur].parse().unwrap_or(0))
            .unwrap_or(0);
        (f[6].parse().unwrap(), f[5].parse().unwrap(), sessions)
    }
}

/// A local moto server (AWS APIs) on a loopback port, from the venv that
/// scripts/setup makes in tests/lab/.venv; killed on drop.
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let venv = workspace().join("tests/lab/.venv/bin");
        assert!(
            venv.join("moto_server").exists(),
            "moto is needed for the aws-elbv2 tests: run scripts/setup (it installs moto[server] into tests/lab/.venv)"
        );
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let child = Command::new(venv.join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server starts");
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Runs tests/lab/moto_fixture.py with the venv's python; its JSON answer.
    pub fn fixture(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new(workspace().join("tests/lab/.venv/bin/python"))
            .arg(workspace().join("tests/lab/moto_fixture.py"))
            .arg(args[0])
            .arg(&self.endpoint)
            .args(&args[1..])
            .output()
            .expect("fixture runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("fixture JSON")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port free on 127.0.0.1 now.
#[allow(dead_code)]
/// blue-green's inputs that point it at the lab (its HAProxy, its map, the
/// hosts' scripts, the backup folder its migration guard reads).
pub const BLUE_GREEN: &[&str] = &[
    "lb_socket",
    "app_port",
    "deploy_cmd",
    "restart_cmd",
    "migrate_cmd",
    "bluegreen_map",
    "bluegreen_url",
    "backup_dir",
];

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// Polls `f` until it holds; fails the test after `limit`, naming `what`.
#[allow(dead_code)]
pub fn until(what: &str, limit: std::time::Duration, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + limit;
    while !f() {
        assert!(std::time::Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Waits for `child` to exit, at most `limit`: a process that does not is
/// killed and the test fails, naming `what` (a hung child must never hang
/// the suite).
#[allow(dead_code)]
pub fn exits_within(
    what: &str,
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let end = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            return status;
        }
        if std::time::Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}; killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A process of the test's, killed and reaped when dropped (also when the
/// test panics).
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real SMTP server on loopback (aiosmtpd from the lab's venv) that keeps
/// every message it accepts in a maildir; stopped on drop.
#[allow(dead_code)]
pub struct SmtpSink {
    child: std::process::Child,
    maildir: tempfile::TempDir,
    pub port: u16,
}

#[allow(dead_code)]
impl SmtpSink {
    pub fn start() -> SmtpSink {
        let python = workspace().join("tests/lab/.venv/bin/python");
        assert!(
            Command::new(&python)
                .args(["-c", "import aiosmtpd"])
                .status()
                .is_ok_and(|s| s.success()),
            "aiosmtpd is needed for the email tests: run scripts/setup (it installs it into tests/lab/.venv)"
        );
        let maildir = tempfile::tempdir().expect("maildir");
        let port = free_port();
        let child = Command::new(python)
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(maildir.path().join("box"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        SmtpSink { child, maildir, port }
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received, as a person reads it (folded headers joined,
    /// quoted-printable soft breaks removed), oldest first.
    pub fn messages(&self) -> Vec<String> {
        let dir = self.maildir.path().join("box/new");
        let mut files: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| {
                        let at = e.metadata().ok()?.modified().ok()?;
                        Some((at, std::fs::read_to_string(e.path()).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .map(|(_, m)| m.replace("\r\n", "\n").replace("=\n", "").replace("\n ", " "))
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails, showing where, if any of `secrets` is in `text` (what a user could
/// read: output, logs, the journal's bytes).
#[allow(dead_code)]
#[track_caller]
pub fn assert_absent(text: &str, secrets: &[&str]) {
    for secret in secrets {
        if let Some(at) = text.find(secret) {
            let from = text[..at].char_indices().rev().nth(200).map_or(0, |(i, _)| i);
            let to = (at + secret.len() + 40).min(text.len());
            let to = (to..=text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            panic!("{secret} leaked: …{}…", &text[from..to]);
        }
    }
}

/// Starts `run` (arguments `args`), waits until `marker` exists (a step is
/// under way), then kills the runbook process with SIGKILL.
pub fn kill_when(run: &Run, args: &[&str], marker: &std::path::Path) -> String {
    let child = run.spawn(args);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            marker.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The id of the run a `run` printed it started (`run <id> started`).
pub fn started_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("run ").and_then(|r| r.strip_suffix(" started")))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no run id in\n{stdout}"))
}
