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
            .env("NO_COLOR", "1")
            .env("USER", "tester")
            .env("RUNBOOK_STATE", self.dir.path().join("state.db"));
        for (k, v) in &self.env {
            cmd.env(k, v);
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

    /// Runs with extra arguments, leaving the `Run` reusable.
    pub fn exec<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, extra: I) -> Outcome {
        let mut cmd = self.command(extra);
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
