//! Who may do what through the server, against a real server and its SQLite
//! state: API tokens (unknown, revoked), roles from a roles file per
//! playbook, four eyes on an approval, browser sessions with their CSRF
//! token, and a local server that answers only for localhost (that it
//! never listens beyond loopback is `Identity::check_listener`'s unit test
//! and the command line's test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use reqwest::Method;
use serde_json::{Value as Json, json};
use std::time::Duration;
use support::{Served, request, serve, serve_full, serve_tuned};

/// The roles of these tests: `ops` runs anything, `lead` approves the
/// gated and paired playbooks only, `second` approves anything.
const ROLES: &str = "grants:
  - { who: [ops], role: operator }
  - { who: [lead], role: approver, playbooks: [\"gat*\", paired] }
  - { who: [second], role: approver }
  - { who: [root], role: admin }
";

fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

/// A request with a token.
async fn with(token: &str, method: Method, url: &str, body: Option<Json>) -> (u16, Json) {
    let (k, v) = bearer(token);
    let (code, _, body) = request(method, url, &[(k, &v)], body).await;
    (code, body)
}

async fn until(s: &Served, token: &str, run: &str, want: &str) -> Json {
    for _ in 0..300 {
        let (_, v) = with(token, Method::GET, &format!("{}/runs/{run}", s.base), None).await;
        if v["run"]["status"] == want {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("run {run} never became {want}");
}

fn tokens_only() -> Served {
    serve_full(|_| None, runbook_server::Identity::Tokens, Some(ROLES))
}

#[tokio::test]
async fn tokens_and_roles_decide_who_reads_starts_and_approves() {
    let s = tokens_only();
    let ops = s.token("ops", "operator").await;
    let lead = s.token("lead", "admin").await;
    let watcher = s.token("watcher", "viewer").await;
    let runs = format!("{}/runs", s.base);

    // Nobody: only health, the API's description and signing in.
    let (code, _, refused) = request(Method::GET, &runs, &[], None).await;
    assert_eq!(code, 401, "{refused}");
    assert!(refused["hint"].as_str().unwrap().contains("runbook token create"));
    let (code, _, _) = request(Method::GET, &format!("{}/health", s.base), &[], None).await;
    assert_eq!(code, 200);
    let (code, refused) = with("rbk_not-a-token", Method::GET, &runs, None).await;
    assert_eq!((code, refused["error"].as_str().unwrap()), (401, "unknown API token"));

    // A viewer reads, and is refused a start, saying what it needs.
    let (code, _) = with(&watcher, Method::GET, &format!("{}/playbooks", s.base), None).await;
    assert_eq!(code, 200);
    let (code, refused) = with(&watcher, Method::POST, &runs, Some(json!({ "playbook": "gated" }))).await;
    assert_eq!(code, 403, "{refused}");
    let said = refused["error"].as_str().unwrap();
    assert_eq!(said, "watcher is a viewer on `gated`; starting a run needs operator");

    // The operator starts; it may not approve, and its view says so.
    let (code, started) = with(&ops, Method::POST, &runs, Some(json!({ "playbook": "gated" }))).await;
    assert_eq!(code, 201, "{started}");
    let id = started["run"].as_str().unwrap().to_owned();
    let view = until(&s, &ops, &id, "waiting").await;
    assert_eq!(view["may"], json!({ "answer": false, "operate": true }));
    let approve = format!("{runs}/{id}/approve");
    let (code, refused) = with(&ops, Method::POST, &approve, Some(json!({}))).await;
    assert_eq!(code, 403, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("approving needs approver"));
    let (code, _) = with(&watcher, Method::POST, &approve, Some(json!({}))).await;
    assert_eq!(code, 403, "a viewer cannot approve through the API either");
    let (_, still) = with(&watcher, Method::GET, &format!("{runs}/{id}"), None).await;
    assert_eq!(still["run"]["status"], "waiting", "nothing was recorded");
    assert_eq!(still["may"], json!({ "answer": false, "operate": false }));

    // The lead approves on `gated` (its grant), as itself.
    let hash = still["plan_hash"].clone();
    let (code, _) = with(
        &lead,
        Method::POST,
        &approve,
        Some(json!({ "comment": "ok", "plan_hash": hash })),
    )
    .await;
    assert!(code == 200 || code == 202, "{code}");
    until(&s, &lead, &id, "succeeded").await;
    let (_, report) = with(&lead, Method::GET, &format!("{runs}/{id}/report?format=json"), None).await;
    assert!(
        report.to_string().contains("\"lead\""),
        "the journal names the lead: {report}"
    );
    // ... but the grant is for `gat*` and `paired` only: elsewhere a viewer,
    // whatever the token's own role.
    let (code, refused) = with(
        &lead,
        Method::POST,
        &runs,
        Some(json!({ "playbook": "hello", "inputs": { "who": "x" } })),
    )
    .await;
    assert_eq!(code, 403, "{refused}");

    // A revoked token stops working at once.
    let store = runbook_state::SqliteStore::open(&s.dir.path().join("state.db"))
        .await
        .unwrap();
    use runbook_state::Tokens;
    assert!(store.revoke_token("ops", "2026-11-28T00:00:00Z").await.unwrap());
    let (code, refused) = with(&ops, Method::GET, &runs, None).await;
    assert_eq!(code, 401, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("revoked"), "{refused}");
}

#[tokio::test]
async fn four_eyes_the_starter_cannot_approve_a_second_person_can() {
    let s = tokens_only();
    let lead = s.token("lead", "approver").await;
    let second = s.token("second", "approver").await;
    let runs = format!("{}/runs", s.base);
    let (code, started) = with(&lead, Method::POST, &runs, Some(json!({ "playbook": "paired" }))).await;
    assert_eq!(code, 201, "{started}");
    let id = started["run"].as_str().unwrap().to_owned();
    let hash = until(&s, &lead, &id, "waiting").await["plan_hash"].clone();
    let approve = format!("{runs}/{id}/approve");
    let (code, refused) = with(&lead, Method::POST, &approve, Some(json!({ "plan_hash": hash }))).await;
    assert_eq!(code, 403, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("may not approve `ok` too (four eyes)"),
        "{refused}"
    );
    // Nothing was recorded as an approval.
    use runbook_state::Journal;
    let store = runbook_state::SqliteStore::open(&s.dir.path().join("state.db"))
        .await
        .unwrap();
    let events = serde_json::to_string(&store.events(&id).await.unwrap()).unwrap();
    assert!(!events.contains("operator_action"), "{events}");
    let view = until(&s, &lead, &id, "waiting").await;
    let steps = view["steps"].to_string();
    assert!(
        steps.contains("four eyes"),
        "the starter's approval does not count: {steps}"
    );
    // A second person approves; the run goes on.
    with(
        &second,
        Method::POST,
        &approve,
        Some(json!({ "comment": "checked", "plan_hash": hash })),
    )
    .await;
    until(&s, &second, &id, "succeeded").await;
    // `yes` on a start cannot be the second person either (once the lock
    // the first run held is free).
    let (code, yes) = with(
        &lead,
        Method::POST,
        &runs,
        Some(json!({ "playbook": "paired", "yes": true })),
    )
    .await;
    assert_eq!(code, 201, "{yes}");
    until(&s, &lead, yes["run"].as_str().unwrap(), "waiting").await;
}

#[tokio::test]
async fn only_an_admin_frees_a_lock_and_the_holder_s_journal_says_who() {
    let s = tokens_only();
    let lead = s.token("lead", "approver").await;
    let ops = s.token("ops", "operator").await;
    let root = s.token("root", "admin").await;
    let (_, started) = with(
        &lead,
        Method::POST,
        &format!("{}/runs", s.base),
        Some(json!({ "playbook": "paired" })),
    )
    .await;
    let id = started["run"].as_str().unwrap().to_owned();
    until(&s, &lead, &id, "waiting").await;
    let locks = format!("{}/locks", s.base);
    let (_, held) = with(&ops, Method::GET, &locks, None).await;
    assert_eq!(held[0]["key"], "db/primary", "a waiting run keeps its lock: {held}");
    let unlock = format!("{locks}/unlock");
    let key = json!({ "key": "db/primary" });
    let (code, refused) = with(&ops, Method::POST, &unlock, Some(key.clone())).await;
    assert_eq!(code, 403, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("freeing a lock needs admin"),
        "{refused}"
    );
    let (code, freed) = with(&root, Method::POST, &unlock, Some(key.clone())).await;
    assert_eq!(code, 200, "{freed}");
    assert_eq!(freed["run"], id.as_str());
    let (_, none) = with(&ops, Method::GET, &locks, None).await;
    assert_eq!(none, json!([]));
    let (code, _) = with(&root, Method::POST, &unlock, Some(key)).await;
    assert_eq!(code, 404, "nothing to free twice");
    let (_, report) = with(
        &root,
        Method::GET,
        &format!("{}/runs/{id}/report?format=json", s.base),
        None,
    )
    .await;
    let actions = report["operator_actions"].to_string();
    assert!(
        actions.contains("\"unlock\"") && actions.contains("\"root\""),
        "{actions}"
    );
}

#[tokio::test]
async fn a_browser_session_needs_its_csrf_token_for_changes_and_ends_at_sign_out() {
    let s = tokens_only();
    let ops = s.token("ops", "operator").await;
    let session = format!("{}/session", s.base);
    let (code, headers, me) = request(Method::POST, &session, &[], Some(json!({ "token": ops }))).await;
    assert_eq!(code, 200, "{me}");
    assert_eq!(me["user"], "ops");
    let cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let csrf = me["csrf"].as_str().unwrap().to_owned();
    let runs = format!("{}/runs", s.base);
    let (code, _, _) = request(Method::GET, &runs, &[("Cookie", &pair)], None).await;
    assert_eq!(code, 200, "the cookie signs reads in");
    let start = json!({ "playbook": "gated" });
    let (code, _, refused) = request(Method::POST, &runs, &[("Cookie", &pair)], Some(start.clone())).await;
    assert_eq!(
        code, 403,
        "a cookie alone may be a forged cross-site request: {refused}"
    );
    let wrong = [("Cookie", pair.as_str()), ("X-CSRF-Token", "guess")];
    let (code, _, _) = request(Method::POST, &runs, &wrong, Some(start.clone())).await;
    assert_eq!(code, 403);
    let right = [("Cookie", pair.as_str()), ("X-CSRF-Token", csrf.as_str())];
    let (code, _, started) = request(Method::POST, &runs, &right, Some(start)).await;
    assert_eq!(code, 201, "{started}");
    let (code, _, _) = request(Method::DELETE, &session, &right, None).await;
    assert_eq!(code, 204);
    let (code, _, _) = request(Method::GET, &runs, &[("Cookie", &pair)], None).await;
    assert_eq!(code, 401, "signed out: the cookie is worth nothing");
    let (code, _, _) = request(Method::POST, &session, &[], Some(json!({ "token": "rbk_wrong" }))).await;
    assert_eq!(code, 401);
}

#[tokio::test]
async fn a_local_server_answers_only_for_localhost() {
    let s = serve();
    let runs = format!("{}/runs", s.base);
    let (code, _, refused) = request(Method::GET, &runs, &[("Host", "evil.example:8080")], None).await;
    assert_eq!(
        code, 421,
        "a page that rebinds its name to 127.0.0.1 is refused: {refused}"
    );
    let (code, _, me) = request(Method::GET, &format!("{}/session", s.base), &[], None).await;
    assert_eq!(code, 200);
    assert_eq!(
        (me["user"].as_str(), me["via"].as_str(), me["role"].as_str()),
        (Some("alice"), Some("local"), Some("admin"))
    );
}

#[tokio::test]
async fn an_event_stream_ends_when_its_token_is_revoked() {
    let s = tokens_only();
    let ops = s.token("ops", "operator").await;
    let runs = format!("{}/runs", s.base);
    let dir = s.dir.path().display().to_string();
    let body = json!({ "playbook": "slow", "inputs": { "dir": dir } });
    let (code, started) = with(&ops, Method::POST, &runs, Some(body)).await;
    assert_eq!(code, 201, "{started}");
    let id = started["run"].as_str().unwrap().to_owned();
    let (k, v) = bearer(&ops);
    let mut stream = reqwest::Client::new()
        .get(format!("{runs}/{id}/events"))
        .header(k, v)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    // It streams while the token lives (the run sleeps for 30 s).
    let first = tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await;
    assert!(matches!(first, Ok(Ok(Some(_)))), "{first:?}");
    use runbook_state::Tokens;
    let store = runbook_state::SqliteStore::open(&s.dir.path().join("state.db"))
        .await
        .unwrap();
    assert!(store.revoke_token("ops", &runbook_state::now()).await.unwrap());
    // Revoked: the stream ends within the server's next check, the run going on.
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token");
    let (code, _) = with(&ops, Method::GET, &format!("{runs}/{id}/events"), None).await;
    assert_eq!(code, 401, "and cannot be opened again");
}

#[tokio::test]
async fn a_caller_holds_a_bounded_number_of_event_streams() {
    let s = serve_tuned(
        |_| None,
        runbook_server::Identity::Tokens,
        Some(ROLES),
        |o| {
            o.streams_per_caller = 2;
        },
    );
    let ops = s.token("ops", "operator").await;
    let other = s.token("second", "approver").await;
    let runs = format!("{}/runs", s.base);
    let dir = s.dir.path().display().to_string();
    let body = json!({ "playbook": "slow", "inputs": { "dir": dir } });
    let (_, started) = with(&ops, Method::POST, &runs, Some(body)).await;
    let events = format!("{runs}/{}/events", started["run"].as_str().unwrap());
    let open = |token: &str| {
        let (k, v) = bearer(token);
        reqwest::Client::new().get(&events).header(k, v).send()
    };
    let first = open(&ops).await.unwrap();
    let second = open(&ops).await.unwrap();
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = open(&ops).await.unwrap();
    assert_eq!(third.status().as_u16(), 429);
    let refused: Json = third.json().await.unwrap();
    assert!(
        refused["error"].as_str().unwrap().contains("2 event streams open"),
        "{refused}"
    );
    // Another caller is not held back by it.
    assert_eq!(open(&other).await.unwrap().status().as_u16(), 200);
    // A stream closed frees its place.
    drop(first);
    let mut again = 0;
    for _ in 0..50 {
        again = open(&ops).await.unwrap().status().as_u16();
        if again == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(again, 200);
    // The streams close before the server stops (it waits for its
    // connections): their client tasks run while this one sleeps.
    drop(second);
    tokio::time::sleep(Duration::from_millis(300)).await;
}
