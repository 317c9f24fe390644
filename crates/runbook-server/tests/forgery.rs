//! What a web page elsewhere, or a name that is a path, can do to a
//! server: nothing. Against a real server in its default mode (the server's
//! own user on loopback, no token): each forged approval, cancel and resume
//! is refused and the run is untouched; a run id prefix finds nothing; the
//! UI, reports and pictures cannot be framed or sniffed; the framework's own
//! refusals answer in the JSON contract.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value as Json, json};
use support::{Served, get, post, request, serve, serve_with, until_status};

/// A gated run waiting for its approval: its id and plan hash.
async fn waiting(s: &Served) -> (String, String) {
    let (code, started) = post(&format!("{}/runs", s.base), json!({ "playbook": "gated" })).await;
    assert_eq!(code, 201, "{started}");
    let id = started["run"].as_str().unwrap().to_owned();
    let status = until_status(&s.base, &id, "waiting").await;
    (id, status["plan_hash"].as_str().unwrap().to_owned())
}

/// A raw request: a body as given, with exactly these headers.
async fn raw(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> (u16, HeaderMap, Json) {
    let mut req = reqwest::Client::new().request(method, url).body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    (code, headers, serde_json::from_str(&text).unwrap_or(Json::String(text)))
}

/// The server's own origin (`http://127.0.0.1:PORT`).
fn origin(s: &Served) -> String {
    s.base.trim_end_matches("/api/v1").to_owned()
}

/// Nothing was answered: still waiting, no approval in its journal.
async fn untouched(s: &Served, id: &str) {
    let (_, view) = get(&format!("{}/runs/{id}", s.base)).await;
    assert_eq!(view["run"]["status"], "waiting", "{view:#}");
    use runbook_state::Journal;
    let store = runbook_state::SqliteStore::open(&s.dir.path().join("state.db"))
        .await
        .unwrap();
    let events = serde_json::to_string(&store.events(id).await.unwrap()).unwrap();
    for kind in ["operator_action", "run_resumed"] {
        assert!(!events.contains(kind), "{kind}: {events}");
    }
}

#[tokio::test]
async fn a_page_elsewhere_cannot_approve_cancel_or_resume_in_the_default_mode() {
    let s = serve();
    let (id, hash) = waiting(&s).await;
    let runs = format!("{}/runs", s.base);
    let answer = json!({ "plan_hash": hash }).to_string();
    for how in ["approve", "reject", "resume", "cancel"] {
        let url = format!("{runs}/{id}/{how}");
        // A no-cors fetch: no body, or one declared as plain text or a form.
        for (headers, body) in [
            (vec![], ""),
            (vec![("content-type", "text/plain")], answer.as_str()),
            (
                vec![("content-type", "application/x-www-form-urlencoded")],
                "plan_hash=x",
            ),
            (vec![("content-type", "multipart/form-data; boundary=x")], ""),
        ] {
            let (code, _, refused) = raw(Method::POST, &url, &headers, body).await;
            assert_eq!(code, 415, "{how} {headers:?}: {refused}");
            assert!(refused["error"].as_str().unwrap().contains("JSON body"), "{refused}");
        }
        // JSON from another origin, or from another site by the browser's word.
        let json = ("content-type", "application/json");
        for forged in [
            vec![json, ("origin", "http://evil.example")],
            vec![json, ("origin", "null")],
            vec![json, ("origin", "http://localhost:9")],
            vec![json, ("sec-fetch-site", "cross-site")],
            vec![json, ("sec-fetch-site", "same-site")],
        ] {
            let (code, _, refused) = raw(Method::POST, &url, &forged, &answer).await;
            assert_eq!(code, 403, "{how} {forged:?}: {refused}");
            assert!(refused["error"].as_str().unwrap().contains("another"), "{refused}");
        }
    }
    untouched(&s, &id).await;

    // A run found by a prefix of its id is no run (nothing to sweep for).
    for prefix in [&id[..1], &id[..10], &id[..25]] {
        let (code, refused) = post(&format!("{runs}/{prefix}/approve"), json!({ "plan_hash": hash })).await;
        assert_eq!(code, 404, "{prefix}: {refused}");
        let (code, _) = get(&format!("{runs}/{prefix}")).await;
        assert_eq!(code, 404, "{prefix}");
    }
    // An approval without the plan it approves is refused.
    let (code, refused) = post(&format!("{runs}/{id}/approve"), json!({})).await;
    assert_eq!(code, 422, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("plan hash"), "{refused}");
    untouched(&s, &id).await;

    // The server's own page (same origin, JSON, the plan hash) approves.
    let own = origin(&s);
    let headers = [
        ("content-type", "application/json"),
        ("origin", own.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];
    let (code, _, done) = raw(Method::POST, &format!("{runs}/{id}/approve"), &headers, &answer).await;
    assert!(code == 200 || code == 202, "{code} {done}");
    until_status(&s.base, &id, "succeeded").await;
}

#[tokio::test]
async fn the_default_mode_s_browser_token_stands_for_a_json_body() {
    let s = serve();
    let (_, me) = get(&format!("{}/session", s.base)).await;
    assert_eq!(me["via"], "local");
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    let url = format!("{}/session", s.base);
    let (code, _, refused) = raw(Method::DELETE, &url, &[], "").await;
    assert_eq!(code, 415, "{refused}");
    let (code, _, refused) = raw(Method::DELETE, &url, &[("x-csrf-token", "guess")], "").await;
    assert_eq!(code, 415, "{refused}");
    let (code, _, _) = raw(Method::DELETE, &url, &[("x-csrf-token", &csrf)], "").await;
    assert_eq!(code, 204);
}

#[tokio::test]
async fn html_and_svg_answers_cannot_be_framed_sniffed_or_scripted() {
    let s = serve();
    let (id, _) = waiting(&s).await;
    let root = origin(&s);
    let pages = [
        format!("{root}/"),
        format!("{}/runs/{id}/report?format=html", s.base),
        format!("{}/runs/{id}/timeline.svg", s.base),
        format!("{}/runs/{id}/graph.svg", s.base),
        format!("{}/playbooks/gated/history.svg", s.base),
    ];
    for url in &pages {
        let (code, headers, _) = request(Method::GET, url, &[], None).await;
        assert_eq!(code, 200, "{url}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{url}: {csp}");
        assert!(
            !csp.contains("script-src") && !csp.contains("'unsafe-eval'"),
            "{url}: {csp}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{url}");
        assert_eq!(headers["x-frame-options"], "DENY", "{url}");
    }
    // A report and a picture run no script at all.
    for url in &pages[1..] {
        let (_, headers, _) = request(Method::GET, url, &[], None).await;
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{url}: {csp}");
    }
    for url in [format!("{root}/ui/app.js"), format!("{}/health", s.base)] {
        let (_, headers, _) = request(Method::GET, &url, &[], None).await;
        assert_eq!(headers["x-content-type-options"], "nosniff", "{url}");
    }
}

#[tokio::test]
async fn a_playbook_is_named_never_a_path() {
    let s = serve();
    // A file outside the library that says it is `hello`.
    let outside = s.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let file = outside.join("hello.yaml");
    std::fs::write(&file, support::HELLO.replace("echo", "touch pwned; echo")).unwrap();
    let path = file.display().to_string();
    let encoded = path.replace('/', "%2F");
    for name in [
        path.as_str(),
        "hello.yaml",
        "hello.YML",
        "../outside/hello",
        "hello/v1",
        ".hidden",
    ] {
        let (code, refused) = post(
            &format!("{}/runs", s.base),
            json!({ "playbook": name, "inputs": { "who": "x" } }),
        )
        .await;
        assert_eq!(code, 422, "{name}: {refused}");
        assert!(
            refused["error"].as_str().unwrap().contains("not a playbook name"),
            "{name}: {refused}"
        );
    }
    for url in [
        format!("{}/playbooks/{encoded}", s.base),
        format!("{}/playbooks/hello.yaml", s.base),
        format!("{}/playbooks/{encoded}/history.svg", s.base),
    ] {
        let (code, refused) = get(&url).await;
        assert_eq!(code, 422, "{url}: {refused}");
        assert!(refused["error"].is_string(), "{refused}");
    }
    let (code, refused) = post(
        &format!("{}/playbooks/{encoded}/plan", s.base),
        json!({ "inputs": { "who": "x" } }),
    )
    .await;
    assert_eq!(code, 422, "{refused}");
    // Nothing ran: no run, no file.
    let (_, runs) = get(&format!("{}/runs", s.base)).await;
    assert_eq!(runs, json!([]));
    assert!(!outside.join("pwned").exists());
}

/// A request (method, URL, headers, body) and the status it gets.
type Case<'h> = (Method, String, Vec<(&'h str, &'h str)>, String, u16);

#[tokio::test]
async fn the_framework_s_own_refusals_answer_in_the_json_contract() {
    let s = serve();
    let json = ("content-type", "application/json");
    let cases: Vec<Case> = vec![
        // A method the route does not take.
        (
            Method::DELETE,
            format!("{}/health", s.base),
            vec![json],
            "{}".into(),
            405,
        ),
        (Method::PUT, format!("{}/runs", s.base), vec![json], "{}".into(), 405),
        // A body that is not JSON, or not the request's shape.
        (Method::POST, format!("{}/runs", s.base), vec![json], "{".into(), 400),
        (Method::POST, format!("{}/runs", s.base), vec![json], String::new(), 400),
        (
            Method::POST,
            format!("{}/runs", s.base),
            vec![json],
            r#"{"playbook": 3}"#.into(),
            422,
        ),
        (
            Method::POST,
            format!("{}/runs", s.base),
            vec![json],
            r#"{"typo": 1}"#.into(),
            422,
        ),
        // Too large.
        (
            Method::POST,
            format!("{}/playbooks/hello/plan", s.base),
            vec![json],
            format!(r#"{{"inputs": {{"who": "{}"}}}}"#, "x".repeat(3 << 20)),
            413,
        ),
        // A query that does not parse.
        (
            Method::GET,
            format!("{}/runs?limit=many", s.base),
            vec![],
            String::new(),
            400,
        ),
    ];
    for (method, url, headers, body, want) in cases {
        let (code, got, refused) = raw(method.clone(), &url, &headers, &body).await;
        assert_eq!(code, want, "{method} {url}: {refused}");
        assert!(
            got["content-type"].to_str().unwrap().starts_with("application/json"),
            "{method} {url}"
        );
        assert!(
            refused["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {url}: {refused}"
        );
        if want == 405 {
            assert!(got.contains_key("allow"), "{url}");
            assert!(
                refused["hint"].as_str().unwrap_or("").contains("methods it takes"),
                "{refused}"
            );
        }
    }
}

#[tokio::test]
async fn a_401_says_how_to_authenticate_and_the_scheme_is_case_insensitive() {
    let s = serve_with(|_| None, runbook_server::Identity::Tokens);
    let url = format!("{}/playbooks", s.base);
    let (code, headers, refused) = request(Method::GET, &url, &[], None).await;
    assert_eq!(code, 401, "{refused}");
    assert!(refused["error"].is_string());
    assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let (code, headers, _) = request(Method::GET, &url, &[("authorization", "Bearer rbk_nope")], None).await;
    assert_eq!(code, 401);
    assert!(headers.contains_key("www-authenticate"));
    let token = s.token("reader", "viewer").await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let value = format!("{scheme} {token}");
        let (code, _, body) = request(Method::GET, &url, &[("authorization", &value)], None).await;
        assert_eq!(code, 200, "{scheme}: {body}");
    }
    // A token's changes still need a JSON body.
    let value = format!("Bearer {token}");
    let (code, _, refused) = raw(
        Method::POST,
        &format!("{}/runs", s.base),
        &[("authorization", &value)],
        "",
    )
    .await;
    assert_eq!(code, 415, "{refused}");
}

#[tokio::test]
async fn behind_the_proxy_two_names_are_no_name_and_a_foreign_origin_is_refused() {
    let proxy = runbook_server::Identity::TrustedProxy {
        header: "X-Forwarded-User".into(),
        from: vec!["127.0.0.1".parse().unwrap()],
    };
    let s = serve_with(|_| None, proxy);
    let url = format!("{}/session", s.base);
    let mut req = reqwest::Client::new().get(&url);
    req = req
        .header("X-Forwarded-User", "mallory")
        .header("X-Forwarded-User", "alice");
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let refused: Json = resp.json().await.unwrap();
    assert!(
        refused["error"].as_str().unwrap().contains("more than one user"),
        "{refused}"
    );
    // One name: who it is, and the token its browser's changes carry.
    let (code, _, me) = request(Method::GET, &url, &[("X-Forwarded-User", "alice")], None).await;
    assert_eq!(code, 200, "{me}");
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    // With its token, from a page the proxy's host did not serve, then from
    // one it did (a viewer without a roles file: refused for its role then,
    // not its origin).
    let runs = format!("{}/runs", s.base);
    let body = r#"{"playbook": "hello", "inputs": {"who": "x"}}"#;
    for (origin, why) in [
        ("https://evil.example", "another origin"),
        ("https://runbook.example", "starting a run needs operator"),
    ] {
        let headers = [
            ("X-Forwarded-User", "alice"),
            ("x-csrf-token", csrf.as_str()),
            ("content-type", "application/json"),
            ("origin", origin),
            ("x-forwarded-host", "runbook.example"),
        ];
        let (code, _, refused) = raw(Method::POST, &runs, &headers, body).await;
        assert_eq!(code, 403, "{origin}: {refused}");
        assert!(refused["error"].as_str().unwrap().contains(why), "{origin}: {refused}");
    }
}
