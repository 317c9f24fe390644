//! The HTTP API over a real listener on loopback, a real SQLite state and
//! real `shell` and `approve` steps: what a browser or a script would
//! notice. Runs start by name with typed inputs (refused one problem at a
//! time, and an input is data, never code), their events stream as SSE and
//! resume from `Last-Event-ID` without gaps or repeats, an approval is bound
//! to the plan hash, a cancel stops that run (after its `finally`) and
//! nothing else, and reports download.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use serde_json::{Value as Json, json};
use std::path::Path;
use std::time::Duration;
use support::{get, post, request, serve, serve_full, serve_with, until_status};

/// An SSE response read to its end: (id, event, data) each.
async fn sse(url: &str, last_id: Option<&str>) -> Vec<(String, String, Json)> {
    let client = reqwest::Client::new();
    let mut req = client.get(url);
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = tokio::time::timeout(Duration::from_secs(60), resp.text())
        .await
        .expect("the stream ends when the run stops")
        .unwrap();
    text.split("\n\n")
        .filter(|block| block.contains("data:"))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")))
                    .map(|v| v.trim_start().to_owned())
                    .unwrap_or_default()
            };
            let data = serde_json::from_str(&field("data")).unwrap();
            (field("id"), field("event"), data)
        })
        .collect()
}

#[tokio::test]
async fn the_library_and_plans_are_read_and_bad_requests_refused_with_reasons() {
    let s = serve();
    let (code, list) = get(&format!("{}/playbooks", s.base)).await;
    assert_eq!(code, 200);
    let names: Vec<&str> = list["playbooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["broken", "chatty", "fanned", "gated", "hello", "paired", "slow", "two"]
    );
    let broken = &list["playbooks"][0];
    assert_eq!(broken["valid"], false);

    let (code, show) = get(&format!("{}/playbooks/hello", s.base)).await;
    assert_eq!(code, 200);
    assert_eq!(show["required_inputs"], json!(["who"]));
    let (code, missing) = get(&format!("{}/playbooks/nope", s.base)).await;
    assert_eq!(code, 404, "{missing}");
    let (code, invalid) = get(&format!("{}/playbooks/broken", s.base)).await;
    assert_eq!(code, 422);
    assert_eq!(invalid["details"][0]["code"], "unknown-kind", "{invalid}");
    assert_eq!(invalid["details"][0]["line"], 5);

    let (code, plan) = post(
        &format!("{}/playbooks/hello/plan", s.base),
        json!({ "inputs": { "who": "bob" } }),
    )
    .await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["plan"]["inputs"]["times"], 1, "defaults applied: {plan}");
    assert!(plan["text"].as_str().unwrap().contains("greet"), "{plan}");

    // Inputs are typed as the command line types them; each problem named.
    let (code, refused) = post(
        &format!("{}/runs", s.base),
        json!({ "playbook": "hello", "inputs": { "times": "many" } }),
    )
    .await;
    assert_eq!(code, 422, "{refused}");
    let inputs: Vec<&str> = refused["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["input"].as_str().unwrap())
        .collect();
    assert_eq!(inputs, ["who", "times"], "{refused}");
    let (code, _) = post(&format!("{}/runs", s.base), json!({ "playbook": "nope" })).await;
    assert_eq!(code, 404);
    let (code, _) = post(&format!("{}/runs", s.base), json!({ "playbook": "hello", "typo": 1 })).await;
    assert_eq!(code, 422, "an unknown field is refused, not ignored");
    let (_, runs) = get(&format!("{}/runs", s.base)).await;
    assert_eq!(runs, json!([]), "nothing was recorded by any refusal");
    let (code, _) = get(&format!("{}/runs/01nosuchrun", s.base)).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_run_streams_its_events_and_a_reconnect_misses_nothing_and_repeats_nothing() {
    let s = serve();
    let sneaky = format!("$(touch {}/pwned)", s.dir.path().display());
    let (code, started) = post(
        &format!("{}/runs", s.base),
        json!({ "playbook": "hello", "inputs": { "who": sneaky } }),
    )
    .await;
    assert_eq!(code, 201, "{started}");
    let run = started["run"].as_str().unwrap().to_owned();
    let all = sse(&format!("{}/runs/{run}/events", s.base), None).await;
    let kinds: Vec<String> = all
        .iter()
        .map(|(_, e, d)| match e.as_str() {
            "journal" => d["event"].as_str().unwrap_or("?").to_owned(),
            other => other.to_owned(),
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("run_started"), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("end"), "{kinds:?}");
    assert_eq!(all.last().unwrap().2["status"], "succeeded");
    assert!(kinds.contains(&"log".to_owned()), "{kinds:?}");
    // The input was data: echoed as typed, never run.
    let log = all.iter().find(|(_, e, _)| e == "log").unwrap();
    assert_eq!(log.2["line"], format!("hello {sneaky} x1"));
    assert!(!s.dir.path().join("pwned").exists());

    // A client that saw the first two items reconnects: it gets the rest,
    // exactly.
    let second = &all[1].0;
    let rest = sse(&format!("{}/runs/{run}/events", s.base), Some(second)).await;
    // (Journal events and log lines interleave by time; each keeps its own
    // sequence, which is what is compared.)
    let key = |items: &[(String, String, Json)]| {
        let mut k: Vec<(String, i64)> = items
            .iter()
            .map(|i| (i.1.clone(), i.2["seq"].as_i64().unwrap_or(-1)))
            .collect();
        k.sort();
        k
    };
    assert_eq!(key(&rest), key(&all[2..]));
    let (code, _) = get(&format!("{}/runs/{run}/events?after=nonsense", s.base)).await;
    assert_eq!(code, 400);

    // The log opens at its tail; the report downloads.
    let (_, tail) = get(&format!("{}/runs/{run}/logs?tail=1", s.base)).await;
    assert_eq!(tail["lines"].as_array().unwrap().len(), 1);
    let junit = reqwest::get(format!("{}/runs/{run}/report?format=junit", s.base))
        .await
        .unwrap();
    assert_eq!(junit.headers()["content-type"], "application/xml");
    assert!(junit.text().await.unwrap().contains("<testcase"));
}

#[tokio::test]
async fn an_approval_is_bound_to_the_plan_and_a_cancel_stops_only_its_run() {
    let s = serve();
    let (_, started) = post(&format!("{}/runs", s.base), json!({ "playbook": "gated" })).await;
    let gated = started["run"].as_str().unwrap().to_owned();
    let status = until_status(&s.base, &gated, "waiting").await;
    let hash = status["plan_hash"].as_str().unwrap().to_owned();
    let (code, refused) = post(
        &format!("{}/runs/{gated}/approve", s.base),
        json!({ "plan_hash": "0000", "comment": "lgtm" }),
    )
    .await;
    assert_eq!(code, 422, "{refused}");
    assert_eq!(
        until_status(&s.base, &gated, "waiting").await["run"]["id"],
        gated.as_str()
    );

    // A slow run starts; cancelling it stops it, runs its `finally`, and the
    // approval of the other run still goes through.
    let (_, started) = post(
        &format!("{}/runs", s.base),
        json!({ "playbook": "slow", "inputs": { "dir": s.dir.path().display().to_string() } }),
    )
    .await;
    let slow = started["run"].as_str().unwrap().to_owned();
    until_status(&s.base, &slow, "running").await;
    let (code, cancelled) = post(&format!("{}/runs/{slow}/cancel", s.base), json!({})).await;
    assert_eq!(code, 202, "{cancelled}");
    until_status(&s.base, &slow, "cancelled").await;
    assert!(s.dir.path().join("tidied").exists(), "its finally ran");

    let (code, approved) = post(
        &format!("{}/runs/{gated}/approve", s.base),
        json!({ "plan_hash": hash, "comment": "lgtm" }),
    )
    .await;
    assert!(code == 200 || code == 202, "{code} {approved}");
    let done = until_status(&s.base, &gated, "succeeded").await;
    let steps: Vec<(&str, &str)> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["step"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert!(steps.contains(&("after", "succeeded")), "{steps:?}");
    // A finished run cannot be approved again.
    let (code, _) = post(&format!("{}/runs/{gated}/approve", s.base), json!({})).await;
    assert_eq!(code, 422);
}

/// The state of each step of a run, once `step` is in state `want`.
async fn until_step(base: &str, run: &str, step: &str, want: &str) -> Vec<(String, String)> {
    for _ in 0..300 {
        let (_, s) = get(&format!("{base}/runs/{run}")).await;
        let steps: Vec<(String, String)> = s["steps"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        (
                            r["step"].as_str().unwrap_or("").to_owned(),
                            r["state"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if steps.iter().any(|(p, st)| p == step && st == want) && s["run"]["status"] != "running" {
            return steps;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("step {step} of run {run} never became {want}");
}

#[tokio::test]
async fn an_answer_names_its_question_when_a_run_waits_at_several() {
    let s = serve();
    let (_, started) = post(&format!("{}/runs", s.base), json!({ "playbook": "two" })).await;
    let id = started["run"].as_str().unwrap().to_owned();
    let status = until_status(&s.base, &id, "waiting").await;
    let error = status["error"].as_str().unwrap_or("");
    assert!(error.contains("`ok_db`") && error.contains("`ok_web`"), "{status:#}");
    let approve = format!("{}/runs/{id}/approve", s.base);
    let hash = status["plan_hash"].clone();
    // None named of two: refused, naming them; nothing recorded.
    let (code, refused) = post(&approve, json!({ "plan_hash": hash })).await;
    assert_eq!(code, 422, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or("")
            .contains("waits at 2 questions (`ok_db`, `ok_web`)"),
        "{refused}"
    );
    let (code, refused) = post(&approve, json!({ "steps": ["nope"], "plan_hash": hash })).await;
    assert_eq!(code, 422, "{refused}");
    // The one named, alone.
    let (code, answered) = post(&approve, json!({ "steps": ["ok_db"], "plan_hash": hash })).await;
    assert!(code == 200 || code == 202, "{code} {answered}");
    let steps = until_step(&s.base, &id, "ok_db", "succeeded").await;
    assert!(
        steps.contains(&("ok_web".to_owned(), "waiting".to_owned())),
        "{steps:?}"
    );
    // Every one, asked for explicitly.
    let (code, answered) = post(&approve, json!({ "all": true, "plan_hash": hash })).await;
    assert!(code == 200 || code == 202, "{code} {answered}");
    until_status(&s.base, &id, "succeeded").await;
}

/// Every `$ref` in a JSON document.
fn refs(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v.as_str()) {
                    ("$ref", Some(r)) => out.push(r.to_owned()),
                    _ => refs(v, out),
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_is_served_committed_and_whole() {
    let s = serve();
    let (code, served) = get(&format!("{}/openapi.json", s.base)).await;
    assert_eq!(code, 200);
    assert_eq!(served, runbook_server::openapi::document());
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/openapi.v1.json");
    let committed: Json = serde_json::from_str(&std::fs::read_to_string(committed).unwrap()).unwrap();
    assert_eq!(committed, served, "schemas/openapi.v1.json is stale: run scripts/regen");
    assert_eq!(served["openapi"], "3.1.0");
    let (code, workers) = get(&format!("{}/workers", s.base)).await;
    assert_eq!(code, 501, "{workers}");
    assert!(workers["error"].as_str().unwrap().contains("PostgreSQL"), "{workers}");
    // Every reference resolves to a component.
    let mut all = Vec::new();
    refs(&served, &mut all);
    assert!(all.len() > 20);
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
        assert!(
            served["components"]["schemas"].get(name).is_some(),
            "{r} is not defined"
        );
    }
    // Every route it lists exists (a GET without parameters answers).
    for (path, ops) in served["paths"].as_object().unwrap() {
        // (The workers need a PostgreSQL state: 501 here, said so.)
        if ops.get("get").is_some() && !path.contains('{') && path != "/api/v1/workers" {
            let url = format!(
                "http://{}{path}",
                s.base.trim_start_matches("http://").trim_end_matches("/api/v1")
            );
            let (code, body) = get(&url).await;
            assert_eq!(code, 200, "{path}: {body}");
        }
    }
}

/// A private CA (`ca.crt`) and a certificate it signed for 127.0.0.1, made
/// by openssl as a team would: (cert, key).
fn certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let openssl = |args: &[&str]| {
        let made = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl makes the test certificates (apt-get install openssl)");
        assert!(
            made.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-days",
                "2",
                "-subj",
                "/CN=test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"],
            &ec[..],
            &["-subj", "/CN=runbook", "-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
    (dir.join("server.crt"), dir.join("server.key"))
}

#[tokio::test]
async fn with_a_certificate_it_serves_https_only() {
    let s = serve_with(
        |dir| {
            let (cert, key) = certificate(dir);
            Some(runbook_server::Tls::from_pem_files(&cert, &key).unwrap())
        },
        runbook_server::Identity::Process,
    );
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let pem = std::fs::read(s.dir.path().join("ca.crt")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let health: Json = client
        .get(format!("{}/health", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["ok"], true);
    let (code, started) = {
        let r = client
            .post(format!("{}/runs", s.base))
            .json(&json!({ "playbook": "hello", "inputs": { "who": "tls" } }))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Json>().await.unwrap())
    };
    assert_eq!(code, 201, "{started}");
    // A client that does not trust the certificate is refused, and so is
    // plain HTTP on the same port.
    assert!(reqwest::get(format!("{}/health", s.base)).await.is_err());
    let plain = s.base.replace("https://", "http://");
    let answered = reqwest::get(format!("{plain}/health")).await;
    assert!(answered.is_err() || !answered.unwrap().status().is_success());
    // A key that is not a key is refused with the file named.
    let (cert, _) = certificate(s.dir.path());
    let refused = runbook_server::Tls::from_pem_files(&cert, &cert).err().unwrap();
    assert!(refused.contains("server.crt"), "{refused}");
}

/// One request as the proxy sends it, naming `user` (or nobody).
async fn as_user(method: reqwest::Method, url: &str, user: Option<&str>, body: Json) -> (u16, Json) {
    let changes = method != reqwest::Method::GET;
    let mut req = reqwest::Client::new().request(method, url).json(&body);
    if let Some(u) = user {
        req = req.header("X-Forwarded-User", u);
        if changes {
            // A browser behind the proxy sends the CSRF token the server gave it.
            let base = &url[..url.find("/api/v1").unwrap() + "/api/v1".len()];
            let (_, _, me) = request(
                reqwest::Method::GET,
                &format!("{base}/session"),
                &[("X-Forwarded-User", u)],
                None,
            )
            .await;
            req = req.header("X-CSRF-Token", me["csrf"].as_str().unwrap());
        }
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Json::Null))
}

/// [`until_status`], asking as `user` through the proxy (if any).
async fn until_as(base: &str, user: Option<&str>, run: &str, want: &str) -> Json {
    for _ in 0..300 {
        let (_, s) = as_user(reqwest::Method::GET, &format!("{base}/runs/{run}"), user, json!(null)).await;
        if s["run"]["status"] == want {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("run {run} never became {want}");
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_request_acts_as_the_user_it_names() {
    let proxy = runbook_server::Identity::TrustedProxy {
        header: "X-Forwarded-User".into(),
        from: vec!["127.0.0.1".parse().unwrap()],
    };
    let roles = "grants:\n  - { who: [carol], role: operator }\n  - { who: [dave], role: approver }\n";
    let s = serve_full(|_| None, proxy, Some(roles));
    // A change without the CSRF token is refused: the proxy's cookie alone
    // could be a forged cross-site request.
    let (code, _, refused) = request(
        reqwest::Method::POST,
        &format!("{}/runs", s.base),
        &[("X-Forwarded-User", "carol")],
        Some(json!({ "playbook": "gated" })),
    )
    .await;
    assert_eq!(code, 403, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("X-CSRF-Token"), "{refused}");
    // Someone the roles file does not name may only read.
    let (code, refused) = as_user(
        reqwest::Method::POST,
        &format!("{}/runs", s.base),
        Some("erin"),
        json!({ "playbook": "gated" }),
    )
    .await;
    assert_eq!(code, 403, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("erin is a viewer on `gated`"),
        "{refused}"
    );
    let (code, refused) = as_user(
        reqwest::Method::GET,
        &format!("{}/playbooks", s.base),
        None,
        json!(null),
    )
    .await;
    assert_eq!(code, 401, "no name, no answer: {refused}");
    let (code, started) = as_user(
        reqwest::Method::POST,
        &format!("{}/runs", s.base),
        Some("carol"),
        json!({ "playbook": "gated" }),
    )
    .await;
    assert_eq!(code, 201, "{started}");
    let id = started["run"].as_str().unwrap().to_owned();
    let status = until_as(&s.base, Some("carol"), &id, "waiting").await;
    assert_eq!(status["run"]["user"], "carol", "the run is carol's");
    let hash = status["plan_hash"].as_str().unwrap();
    let (code, _) = as_user(
        reqwest::Method::POST,
        &format!("{}/runs/{id}/approve", s.base),
        Some("dave"),
        json!({ "plan_hash": hash, "comment": "second pair of eyes" }),
    )
    .await;
    assert!(code == 200 || code == 202, "{code}");
    until_as(&s.base, Some("dave"), &id, "succeeded").await;
    // The journal says dave approved.
    let report = reqwest::Client::new()
        .get(format!("{}/runs/{id}/report?format=json", s.base))
        .header("X-Forwarded-User", "erin")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(report.contains("dave"), "{report}");

    // A proxy at another address: nobody here is taken at their word.
    let elsewhere = runbook_server::Identity::TrustedProxy {
        header: "X-Forwarded-User".into(),
        from: vec!["10.9.9.9".parse().unwrap()],
    };
    let s = serve_with(|_| None, elsewhere);
    let (code, refused) = as_user(
        reqwest::Method::GET,
        &format!("{}/playbooks", s.base),
        Some("mallory"),
        json!(null),
    )
    .await;
    assert_eq!(code, 403, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("127.0.0.1"), "{refused}");
}

#[tokio::test]
async fn a_run_s_timeline_is_the_report_s_chart() {
    let s = serve();
    let (_, started) = post(&format!("{}/runs", s.base), json!({ "playbook": "gated" })).await;
    let id = started["run"].as_str().unwrap().to_owned();
    until_status(&s.base, &id, "waiting").await;
    let resp = reqwest::get(format!("{}/runs/{id}/timeline.svg", s.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/svg+xml");
    let svg = resp.text().await.unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.contains("before: succeeded"), "{svg}");
    assert!(svg.contains("ok: waited for an approval"), "the wait is drawn: {svg}");
    let report = reqwest::get(format!("{}/runs/{id}/report?format=html", s.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        report.contains("<svg") && report.contains("before: succeeded"),
        "{report}"
    );
}

#[tokio::test]
async fn a_long_log_is_read_from_its_end_a_page_at_a_time() {
    let s = serve();
    let (_, started) = post(&format!("{}/runs", s.base), json!({ "playbook": "chatty" })).await;
    let id = started["run"].as_str().unwrap().to_owned();
    until_status(&s.base, &id, "succeeded").await;
    let text = |page: &Json| -> Vec<String> {
        page["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["line"].as_str().unwrap().to_owned())
            .collect()
    };
    let logs = format!("{}/runs/{id}/logs", s.base);
    let (_, tail) = get(&format!("{logs}?tail=10")).await;
    assert_eq!(
        text(&tail),
        (16..=25).map(|n| n.to_string()).collect::<Vec<_>>(),
        "the end, oldest first"
    );
    let before = tail["before"]
        .as_i64()
        .expect("a full page from the end says where the one before starts");
    let (_, middle) = get(&format!("{logs}?tail=10&before={before}")).await;
    assert_eq!(text(&middle).first().map(String::as_str), Some("6"));
    let (_, first) = get(&format!("{logs}?tail=10&before={}", middle["before"])).await;
    assert_eq!(text(&first), (1..=5).map(|n| n.to_string()).collect::<Vec<_>>());
    assert!(first.get("before").is_none(), "nothing before the first line: {first}");
    // Forward from a position, a page at a time.
    let after = first["lines"][4]["seq"].as_i64().unwrap();
    let (_, next) = get(&format!("{logs}?after={after}&limit=3")).await;
    assert_eq!(text(&next), ["6", "7", "8"]);
    assert_eq!(next["next"], next["lines"][2]["seq"]);
}

/// Not a `tokio::test`: the client reads its stream on a runtime of its own
/// while this thread stops the server.
#[test]
fn a_stopping_server_ends_its_event_streams_at_once() {
    let s = serve();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = s.dir.path().display().to_string();
    let base = s.base.clone();
    let id = rt.block_on(async {
        let body = json!({ "playbook": "slow", "inputs": { "dir": dir } });
        let (code, started) = post(&format!("{base}/runs"), body).await;
        assert_eq!(code, 201, "{started}");
        started["run"].as_str().unwrap().to_owned()
    });
    let url = format!("{}/runs/{id}/events", s.base);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut stream = reqwest::get(url).await.unwrap();
            let first = stream.chunk().await;
            tx.send(matches!(first, Ok(Some(_)))).unwrap();
            while let Ok(Some(_)) = stream.chunk().await {}
        });
    });
    assert!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), "the stream streams");
    // The run sleeps for 30 s; the server stops it and its stream at once,
    // well within its grace period (10 s here).
    let stopping = std::time::Instant::now();
    drop(s);
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(6), "the server took {took:?} to stop");
    reader.join().unwrap();
}
