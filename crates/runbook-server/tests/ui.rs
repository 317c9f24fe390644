//! The web UI in a real browser (headless Chromium driven over WebDriver by
//! chromedriver), against a real server: what a person at the page does and
//! sees. A form generated from the playbook's inputs refuses a bad value as
//! it is typed, shows the plan, starts the run and opens its live view,
//! which follows it to the end with its log; an approval is answered from
//! the run's page, bound to the plan hash it shows; a hostile page of
//! another origin open in the same browser cannot answer, cancel or resume.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`; `scripts/setup` installs them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use serde_json::{Value as Json, json};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};
use support::{get, post, serve};

/// A headless Chromium session through a chromedriver of its own; both
/// stopped when dropped (even on panic).
struct Browser {
    driver: std::process::Child,
    port: u16,
    session: String,
    http: reqwest::Client,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // A process group of its own: the Chromium it starts is in it, and
        // all of it is stopped together.
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start chromedriver ({e}): install it with `apt-get install chromium chromium-driver` (scripts/setup does)")
            });
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            http: reqwest::Client::new(),
        };
        let end = Instant::now() + Duration::from_secs(30);
        while b.http.get(b.url("/status")).send().await.is_err() {
            assert!(Instant::now() < end, "chromedriver did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"],
        } } } });
        let v = b.send(reqwest::Method::POST, "/session", Some(caps)).await;
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        b
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Json>) -> Json {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Json = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn command(&self, path: &str, body: Json) -> Json {
        let path = format!("/session/{}{path}", self.session);
        self.send(reqwest::Method::POST, &path, Some(body)).await
    }

    async fn goto(&self, url: &str) {
        self.command("/url", json!({ "url": url })).await;
    }

    /// Runs a script in the page; what it returns.
    async fn js(&self, script: &str) -> Json {
        self.command("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    /// Waits until `script` returns something truthy; fails naming `what`.
    async fn until(&self, what: &str, script: &str) -> Json {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script).await;
            if !(v.is_null() || v == json!(false) || v == json!("")) && v.get("error").is_none() {
                return v;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; page: {}",
                self.js("return document.body.innerText").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .command("/element", json!({ "using": "css selector", "value": css }))
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.command(&format!("/element/{e}/click"), json!({})).await;
    }

    /// Saves what the window shows as `NAME.png` in $RUNBOOK_SCREENSHOTS, when
    /// it is set (`scripts/screenshots` sets it to the book's images).
    async fn shot(&self, name: &str) {
        use base64::Engine;
        let Ok(dir) = std::env::var("RUNBOOK_SCREENSHOTS") else {
            return;
        };
        let path = format!("/session/{}/screenshot", self.session);
        let png = self.send(reqwest::Method::GET, &path, None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), bytes).unwrap();
    }

    /// Clears a field and types into it, key by key.
    async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.command(&format!("/element/{e}/clear"), json!({})).await;
        self.command(&format!("/element/{e}/value"), json!({ "text": text }))
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session's end closes Chromium; then the driver goes.
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let group = nix::unistd::Pid::from_raw(-pid);
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

#[tokio::test]
async fn a_form_checks_as_you_type_shows_the_plan_and_starts_a_run_followed_live() {
    let s = serve();
    let root = s.base.trim_end_matches("/api/v1").to_owned();
    let b = Browser::start().await;

    b.goto(&format!("{root}/")).await;
    let listed = b
        .until("the library", "return document.querySelector('#playbooks')?.innerText")
        .await;
    let listed = listed.as_str().unwrap();
    assert!(listed.contains("hello") && listed.contains("Says hello."), "{listed}");
    assert!(listed.contains("invalid"), "the broken playbook is marked: {listed}");
    b.shot("library").await;

    b.click("a[href='#/playbooks/hello']").await;
    b.until("the form", "return document.getElementById('input-who')").await;
    // A bad value is refused as it is typed; the run cannot start.
    b.type_into("#input-times", "many").await;
    b.until(
        "the field's error",
        "return document.getElementById('error-times').innerText === 'a whole number'",
    )
    .await;
    assert_eq!(b.js("return document.getElementById('start').disabled").await, true);
    // Good values: the plan appears, and the run can start.
    b.type_into("#input-times", "3").await;
    b.type_into("#input-who", "bob").await;
    let plan = b.until("the plan", "const t = document.getElementById('plan').innerText; return t.includes('greet') && !document.getElementById('start').disabled && t").await;
    assert!(plan.as_str().unwrap().contains("shell"), "{plan}");
    b.shot("playbook-form").await;
    b.click("#start").await;

    // The run's page follows it to the end, its log in place.
    b.until(
        "the run to succeed",
        "return document.getElementById('run-status')?.innerText === 'succeeded'",
    )
    .await;
    b.until(
        "the log line",
        "return document.getElementById('log').innerText.includes('hello bob x3')",
    )
    .await;
    let hash = b.js("return location.hash").await;
    let id = hash.as_str().unwrap().trim_start_matches("#/runs/").to_owned();
    let (_, status) = get(&format!("{}/runs/{id}", s.base)).await;
    assert_eq!(status["run"]["status"], "succeeded");
    // The timeline is drawn in the page: the chart the HTML report has.
    b.until(
        "the timeline",
        "const i = document.getElementById('timeline'); return i && i.complete && i.naturalWidth > 0",
    )
    .await;
    b.until(
        "the step graph",
        "const i = document.getElementById('dag'); return i && i.complete && i.naturalWidth > 0",
    )
    .await;
    assert_eq!(status["run"]["inputs"]["times"], 3, "the form sent a typed integer");
    // A step's row filters the log to that step (the rows are redrawn as
    // events arrive: clicked again if a redraw took the first click).
    let filtered = "return document.body.innerText.includes('Log of greet')";
    for _ in 0..20 {
        if b.js(filtered).await == json!(true) {
            break;
        }
        b.click("tr[data-step='greet']").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.until("the filtered log", filtered).await;
    b.shot("run").await;

    // The runs page shows each run's inputs.
    b.goto(&format!("{root}/#/runs")).await;
    b.until(
        "the runs table",
        "return document.querySelector('#runs')?.innerText.includes('who=bob')",
    )
    .await;

    // A second run with other inputs: the playbook's history charts both,
    // and two ticked runs are compared, what differs marked.
    let (_, other) = post(
        &format!("{}/runs", s.base),
        json!({ "playbook": "hello", "inputs": { "who": "carol" } }),
    )
    .await;
    let other = other["run"].as_str().unwrap().to_owned();
    support::until_status(&s.base, &other, "succeeded").await;
    b.goto(&format!("{root}/#/runs?playbook=hello")).await;
    b.until(
        "the history chart",
        "const i = document.getElementById('history'); return i && i.complete && i.naturalWidth > 0",
    )
    .await;
    b.until(
        "both runs",
        "return document.querySelectorAll('input.pick').length === 2",
    )
    .await;
    b.shot("runs-history").await;
    // The status filter keeps the rows of that status (both succeeded).
    let select = "const s = document.getElementById('status-filter'); s.value = 'succeeded'; s.dispatchEvent(new Event('change')); return [...document.querySelectorAll('#runs tr[data-status]')].filter((r) => !r.hidden).length";
    assert_eq!(b.js(select).await, 2);
    b.click(&format!("input.pick[data-run='{id}']")).await;
    b.click(&format!("input.pick[data-run='{other}']")).await;
    b.click("#compare").await;
    b.until("the comparison", "return document.getElementById('diff')")
        .await;
    let marked = |row: &str| format!("return document.querySelector(\"#diff tr[data-row='{row}']\")?.className");
    assert_eq!(b.js(&marked("input-who")).await, "differs", "the inputs differ");
    assert_eq!(b.js(&marked("input-times")).await, "differs", "3 against the default 1");
    assert_eq!(b.js(&marked("status")).await, "", "both succeeded");
    assert_eq!(
        b.js(&marked("step-greet"))
            .await
            .as_str()
            .map(|c| c.is_empty() || c == "differs"),
        Some(true)
    );
    b.shot("compare").await;
    let plans = b.js("return document.querySelector('.side').innerText").await;
    assert!(plans.as_str().unwrap().contains("carol"), "{plans}");
}

/// A gated run started, and a browser at its page showing the approval:
/// the UI's root, the run's id, its status document and the browser.
async fn at_a_waiting_run(s: &support::Served) -> (String, String, Json, Browser) {
    let root = s.base.trim_end_matches("/api/v1").to_owned();
    let (_, started) = post(&format!("{}/runs", s.base), json!({ "playbook": "gated" })).await;
    let id = started["run"].as_str().unwrap().to_owned();
    let b = Browser::start().await;
    b.goto(&format!("{root}/#/runs/{id}")).await;
    b.until("the approval panel", "return document.getElementById('approve')")
        .await;
    let (_, status) = get(&format!("{}/runs/{id}", s.base)).await;
    (root, id, status, b)
}

#[tokio::test]
async fn an_approval_is_answered_from_the_run_page_bound_to_the_plan_it_shows() {
    let s = serve();
    let (_, id, status, b) = at_a_waiting_run(&s).await;
    let shown = b.js("return document.getElementById('plan-hash').innerText").await;
    assert_eq!(
        shown, status["plan_hash"],
        "the page shows the plan the answer is bound to"
    );
    assert!(
        b.js("return document.getElementById('approval').innerText")
            .await
            .as_str()
            .unwrap()
            .contains("go on?")
            || b.js("return document.getElementById('approval').innerText")
                .await
                .as_str()
                .unwrap()
                .contains("ok"),
        "the approval names what waits"
    );
    let objective = b
        .until(
            "the objective",
            "return document.getElementById('objective')?.innerText",
        )
        .await;
    assert!(
        objective.as_str().unwrap().contains("of the RTO objective 15m"),
        "the elapsed time is set against the objective: {objective}"
    );
    b.shot("approval").await;
    b.type_into("#comment", "looked at the plan").await;
    b.click("#approve").await;
    b.until(
        "the run to succeed",
        "return document.getElementById('run-status')?.innerText === 'succeeded'",
    )
    .await;
    b.until(
        "the after step's log",
        "return document.getElementById('log').innerText.includes('after')",
    )
    .await;
    let (_, done) = get(&format!("{}/runs/{id}", s.base)).await;
    assert_eq!(done["run"]["status"], "succeeded");
}

/// Signs the browser in with `token` at the sign-in form, and waits for
/// the page to say who it is.
async fn sign_in(b: &Browser, root: &str, token: &str, who: &str) {
    b.goto(&format!("{root}/")).await;
    b.until("the sign-in form", "return document.getElementById('token')")
        .await;
    b.type_into("#token", token).await;
    b.click("#sign-in-button").await;
    let script = format!("return document.getElementById('me')?.innerText.startsWith('{who} (')");
    b.until("the signed-in name", &script).await;
}

#[tokio::test]
async fn an_operator_starts_a_viewer_cannot_answer_and_a_second_person_approves() {
    let roles = "grants:\n  - { who: [ops], role: operator }\n  - { who: [lead], role: approver }\n";
    let s = support::serve_full(|_| None, runbook_server::Identity::Tokens, Some(roles));
    let ops = s.token("ops", "approver").await;
    let watcher = s.token("watcher", "viewer").await;
    let lead = s.token("lead", "approver").await;
    let root = s.base.trim_end_matches("/api/v1").to_owned();
    let b = Browser::start().await;

    // A wrong token is refused at the form.
    b.goto(&format!("{root}/")).await;
    b.until("the sign-in form", "return document.getElementById('token')")
        .await;
    b.shot("sign-in").await;
    b.type_into("#token", "rbk_wrong").await;
    b.click("#sign-in-button").await;
    b.until(
        "the refusal",
        "return document.getElementById('sign-in-error').innerText.includes('unknown API token')",
    )
    .await;

    // The operator (capped by the roles file, whatever its token says)
    // starts the four-eyes playbook from its form and watches it wait.
    sign_in(&b, &root, &ops, "ops").await;
    b.until("the library", "return document.querySelector('#playbooks')")
        .await;
    b.click("a[href='#/playbooks/paired']").await;
    b.until(
        "the plan",
        "return !document.getElementById('start').disabled && document.getElementById('plan').innerText.includes('ok')",
    )
    .await;
    b.click("#start").await;
    b.until(
        "the run to wait",
        "return document.getElementById('run-status')?.innerText === 'waiting'",
    )
    .await;
    let hash = b.js("return location.hash").await;
    let id = hash.as_str().unwrap().trim_start_matches("#/runs/").to_owned();
    b.until("the approval panel", "return document.getElementById('may-not-answer')")
        .await;
    assert_eq!(b.js("return document.getElementById('approve')").await, Json::Null);
    assert_eq!(
        b.js("return !!document.getElementById('cancel')").await,
        true,
        "an operator may cancel"
    );

    // A viewer sees no button, and the API refuses them if they try anyway
    // (from the page, with the session's CSRF token).
    b.click("#sign-out").await;
    sign_in(&b, &root, &watcher, "watcher").await;
    b.goto(&format!("{root}/#/runs/{id}")).await;
    b.until("the approval panel", "return document.getElementById('may-not-answer')")
        .await;
    assert_eq!(b.js("return document.getElementById('approve')").await, Json::Null);
    assert_eq!(b.js("return document.getElementById('cancel')").await, Json::Null);
    let tried = b
        .command(
            "/execute/async",
            json!({ "script": "const done = arguments[arguments.length - 1]; api('POST', '/runs/' + arguments[0] + '/approve', {}).then((r) => done([r.status, r.data.error]));", "args": [id] }),
        )
        .await;
    assert_eq!(tried[0], 403, "{tried}");
    assert!(tried[1].as_str().unwrap().contains("watcher is a viewer"), "{tried}");

    // A second person, an approver, approves from the page; the run ends.
    b.click("#sign-out").await;
    sign_in(&b, &root, &lead, "lead").await;
    b.goto(&format!("{root}/#/runs/{id}")).await;
    b.until("the approve button", "return document.getElementById('approve')")
        .await;
    b.type_into("#comment", "second pair of eyes").await;
    b.click("#approve").await;
    b.until(
        "the run to succeed",
        "return document.getElementById('run-status')?.innerText === 'succeeded'",
    )
    .await;
    b.until(
        "the after step's log",
        "return document.getElementById('log').innerText.includes('promoted')",
    )
    .await;
}

#[tokio::test]
async fn a_fan_out_is_a_grid_of_items_and_steps_with_what_each_gate_measured() {
    let s = serve();
    let root = s.base.trim_end_matches("/api/v1").to_owned();
    let (_, started) = post(&format!("{}/runs", s.base), json!({ "playbook": "fanned" })).await;
    let id = started["run"].as_str().unwrap().to_owned();
    support::until_status(&s.base, &id, "succeeded").await;
    let b = Browser::start().await;
    b.goto(&format!("{root}/#/runs/{id}")).await;
    b.until(
        "the grid",
        "return document.querySelector(\"table.grid[data-fan='roll']\")",
    )
    .await;
    let items = b
        .js("return [...document.querySelectorAll(\"table.grid tr[data-item]\")].map((r) => r.dataset.item)")
        .await;
    assert_eq!(items, json!(["web-1", "web-2"]));
    let cell = b
        .js("return document.querySelector(\"td[data-step='roll[web-2].gate']\").innerText")
        .await;
    assert_eq!(
        cell, "p95 120 ms · errors 0.5%",
        "the gate's verdict is what it measured"
    );
    let drain = b
        .js("return document.querySelector(\"td[data-step='roll[web-1].drain']\").innerText")
        .await;
    assert_eq!(drain, "ok");
    b.shot("fan-out-grid").await;
}

/// A hostile page's server: answers every request with `page`, from
/// 127.0.0.1 on a port of its own (an origin other than the server's; a
/// thread that ends with the test).
fn hostile(page: String) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    port
}

#[tokio::test]
async fn a_hostile_page_in_the_operator_s_browser_cannot_approve_cancel_or_resume() {
    let s = serve();
    // The operator has the UI open (and so, in the default mode, is the
    // server's user to any request this browser makes).
    let (root, id, status, b) = at_a_waiting_run(&s).await;
    let hash = status["plan_hash"].as_str().unwrap().to_owned();
    // The worst case: the page knows the run and its plan hash. It tries
    // each way a page can send a POST without the server's leave, and
    // frames the UI.
    let page = format!(
        r#"<!doctype html><html><body>
<iframe id="framed" src="{root}/#/runs/{id}"></iframe>
<iframe name="sink"></iframe>
<form id="form" method="POST" enctype="text/plain" target="sink" action="{root}/api/v1/runs/{id}/approve">
<input name='{{"plan_hash":"{hash}","comment":"' value='"}}'></form>
<script>
const base = "{root}/api/v1/runs/{id}/";
const body = JSON.stringify({{ plan_hash: "{hash}" }});
const tries = [];
for (const how of ["approve", "reject", "resume", "cancel"]) {{
  tries.push(fetch(base + how, {{ method: "POST", mode: "no-cors", credentials: "include" }}));
  tries.push(fetch(base + how, {{ method: "POST", mode: "no-cors", credentials: "include",
    headers: {{ "content-type": "text/plain" }}, body }}));
  tries.push(fetch(base + how, {{ method: "POST", credentials: "include",
    headers: {{ "content-type": "application/json" }}, body }}));
  navigator.sendBeacon(base + how, body);
}}
for (let n = 1; n < 26; n++) {{
  tries.push(fetch("{root}/api/v1/runs/" + "{id}".slice(0, n) + "/approve",
    {{ method: "POST", mode: "no-cors", credentials: "include", body }}));
}}
Promise.allSettled(tries).then((r) => {{
  window.refused = r.filter((x) => x.status === "rejected").length;
  document.getElementById("form").submit();
  setTimeout(() => {{ document.title = "done"; }}, 1000);
}});
</script></body></html>"#
    );
    let port = hostile(page);
    // Another site (`localhost` is not `127.0.0.1`), then the same site on
    // another port.
    for origin in [format!("http://localhost:{port}/"), format!("http://127.0.0.1:{port}/")] {
        b.goto(&origin).await;
        b.until("the hostile page to finish", "return document.title === 'done'")
            .await;
        // The JSON `fetch` never left the browser: its preflight was refused.
        let refused = b.js("return window.refused").await;
        assert_eq!(refused, json!(4), "{origin}");
        let (_, view) = get(&format!("{}/runs/{id}", s.base)).await;
        assert_eq!(view["run"]["status"], "waiting", "{origin}: {view:#}");
    }
    // Nothing was answered or asked of the run.
    use runbook_state::Journal;
    let store = runbook_state::SqliteStore::open(&s.dir.path().join("state.db"))
        .await
        .unwrap();
    let events = serde_json::to_string(&store.events(&id).await.unwrap()).unwrap();
    assert!(
        !events.contains("operator_action") && !events.contains("run_resumed"),
        "{events}"
    );
    // The operator's own page still approves it.
    b.goto(&format!("{root}/#/runs/{id}")).await;
    b.until("the approval panel", "return document.getElementById('approve')")
        .await;
    b.click("#approve").await;
    b.until(
        "the run to succeed",
        "return document.getElementById('run-status')?.innerText === 'succeeded'",
    )
    .await;
}
