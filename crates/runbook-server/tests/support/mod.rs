//! What the API and UI tests share: a server on loopback over a real SQLite
//! state, with real `shell` and `approve` steps and a small library, and a
//! JSON client.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use indexmap::IndexMap;
use runbook_core::kind::{CancellationToken, Registry};
use runbook_core::library::Library;
use runbook_engine::exec::Observer;
use runbook_runner::{Notice, Runner, Watcher};
use runbook_server::{ServeOptions, Server};
use runbook_state::{Event, LogLine, SqliteStore, Store};
use serde_json::Value as Json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub const HELLO: &str = r#"apiVersion: runbook/v1
name: hello
version: 1
description: Says hello.
inputs:
  who: { type: string, description: whom to greet }
  times: { type: integer, default: 1 }
steps:
  - id: greet
    uses: shell
    with:
      run: echo "hello {{ inputs.who }} x{{ inputs.times }}"
"#;

pub const GATED: &str = r#"apiVersion: runbook/v1
name: gated
version: 1
objectives: { rto: 15m }
steps:
  - { id: before, uses: shell, with: { run: "echo before" } }
  - { id: ok, uses: approve, needs: [before], with: { message: "go on?" } }
  - { id: after, uses: shell, needs: [ok], with: { run: "echo after" } }
"#;

/// An approval a second person must give (four eyes).
pub const PAIRED: &str = r#"apiVersion: runbook/v1
name: paired
version: 1
lock: db/primary
steps:
  - { id: ok, uses: approve, with: { message: "promote the standby?", four_eyes: true } }
  - { id: after, uses: shell, needs: [ok], with: { run: "echo promoted" } }
"#;

/// Two questions asked at once.
pub const TWO: &str = r#"apiVersion: runbook/v1
name: two
version: 1
steps:
  - { id: ok_db, uses: approve, with: { message: "migrate?" } }
  - { id: ok_web, uses: approve, needs: [], with: { message: "switch?" } }
  - { id: after, uses: shell, needs: [ok_db, ok_web], with: { run: "echo after" } }
"#;

/// 25 log lines.
pub const CHATTY: &str = r#"apiVersion: runbook/v1
name: chatty
version: 1
steps:
  - { id: count, uses: shell, with: { run: "seq 1 25" } }
"#;

/// A fan-out over two hosts, each drained, then gated on what it measured.
pub const FANNED: &str = r#"apiVersion: runbook/v1
name: fanned
version: 1
steps:
  - id: roll
    for_each: [web-1, web-2]
    as: host
    steps:
      - { id: drain, uses: shell, with: { run: "echo draining {{ host }}" } }
      - id: gate
        uses: shell
        needs: [drain]
        with: { run: "echo '{\"p95_ms\": 120, \"error_rate\": 0.005}'", json: true }
"#;

pub const SLOW: &str = r#"apiVersion: runbook/v1
name: slow
version: 1
inputs:
  dir: { type: string }
steps:
  - { id: wait, uses: shell, with: { run: "sleep 30" } }
finally:
  - id: tidy
    uses: shell
    with:
      run: touch {{ inputs.dir }}/tidied
"#;

/// Hears nothing (the journal has it all).
pub struct Deaf;

impl Observer for Deaf {
    fn event(&self, _: &str, _: &Event) {}
    fn log(&self, _: &LogLine) {}
}

impl Watcher for Deaf {
    fn notice(&self, _: &Notice) {}
}

/// A server on 127.0.0.1, on a thread of its own; stopped when dropped.
pub struct Served {
    pub base: String,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    let folder = dir.join("playbooks").join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("v1.yaml"), text).unwrap();
}

pub fn serve() -> Served {
    serve_with(|_| None, runbook_server::Identity::Process)
}

/// A server over TLS when `tls` gives a certificate for its folder, whose
/// requests act as `identity` says.
pub fn serve_with(
    tls: impl FnOnce(&Path) -> Option<runbook_server::Tls>,
    identity: runbook_server::Identity,
) -> Served {
    serve_full(tls, identity, None)
}

/// A server with the roles file `roles` (YAML), if given.
pub fn serve_full(
    tls: impl FnOnce(&Path) -> Option<runbook_server::Tls>,
    identity: runbook_server::Identity,
    roles: Option<&str>,
) -> Served {
    serve_tuned(tls, identity, roles, |_| ())
}

/// A server whose options `tune` changes last.
pub fn serve_tuned(
    tls: impl FnOnce(&Path) -> Option<runbook_server::Tls>,
    identity: runbook_server::Identity,
    roles: Option<&str>,
    tune: impl FnOnce(&mut ServeOptions) + Send + 'static,
) -> Served {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("hello", HELLO),
        ("gated", GATED),
        ("slow", SLOW),
        ("paired", PAIRED),
        ("chatty", CHATTY),
        ("fanned", FANNED),
        ("two", TWO),
    ] {
        write(dir.path(), name, text);
    }
    write(
        dir.path(),
        "broken",
        "apiVersion: runbook/v1\nname: broken\nversion: 1\nsteps:\n  - { id: x, uses: nope }\n",
    );
    let state = dir.path().join("state.db");
    let tls = tls(dir.path());
    let roles = roles.map(|text| {
        let file = dir.path().join("roles.yaml");
        std::fs::write(&file, text).unwrap();
        runbook_runner::access::Roles::read(&file).unwrap()
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    let library = Library::new(dir.path().join("playbooks"));
    let stop = CancellationToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let quit = stop.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&state).await.unwrap());
            let runner = Runner {
                store,
                registry: Registry::new()
                    .with(runbook_step_shell::Shell)
                    .with(runbook_step_approve::Approve),
                watcher: Arc::new(Deaf),
                user: "alice".into(),
                env: IndexMap::new(),
                inventory: Json::Null,
            };
            let mut options = ServeOptions {
                poll: Duration::from_millis(50),
                grace: Duration::from_secs(10),
                identity,
                roles,
                ..ServeOptions::default()
            };
            tune(&mut options);
            let server = Server::new(runner, library, options);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            server.serve(listener, tls, quit).await.unwrap();
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    Served {
        base: format!("{scheme}://{addr}/api/v1"),
        stop,
        thread: Some(thread),
        dir,
    }
}

impl Served {
    /// A new API token `name` with `role`: its secret.
    pub async fn token(&self, name: &str, role: &str) -> String {
        let store = SqliteStore::open(&self.dir.path().join("state.db")).await.unwrap();
        let role = role.parse().unwrap();
        let (secret, _) = runbook_runner::access::create_token(&store, name, role, None, "test")
            .await
            .unwrap();
        secret
    }
}

/// One request with these headers; its status, its headers and its JSON body.
pub async fn request(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Json>,
) -> (u16, reqwest::header::HeaderMap, Json) {
    let mut req = reqwest::Client::new().request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Json::String(text)),
    )
}

/// One request; its status and JSON body.
pub async fn call(method: reqwest::Method, url: &str, body: Option<Json>) -> (u16, Json) {
    let client = reqwest::Client::new();
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Json::String(text)))
}

pub async fn get(url: &str) -> (u16, Json) {
    call(reqwest::Method::GET, url, None).await
}

pub async fn post(url: &str, body: Json) -> (u16, Json) {
    call(reqwest::Method::POST, url, Some(body)).await
}

/// Waits until the run's status is `want`; its status document.
pub async fn until_status(base: &str, run: &str, want: &str) -> Json {
    for _ in 0..300 {
        let (_, s) = get(&format!("{base}/runs/{run}")).await;
        if s["run"]["status"] == want {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("run {run} never became {want}");
}
