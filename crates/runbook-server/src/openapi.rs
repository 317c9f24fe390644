//! The OpenAPI 3.1 document of `/api/v1/`, served at
//! `/api/v1/openapi.json` and checked in as `schemas/openapi.v1.json`. Its
//! schemas are generated from the very types the handlers read and write
//! (JSON Schema 2020-12, as OpenAPI 3.1 takes it); the table of routes below
//! is the one place that says which type each route takes and answers.

use crate::api::{AnswerRequest, CancelRequest, Inputs, ResumeRequest, StartRequest, UnlockRequest};
use crate::bodies::{Continued, ErrorBody, Health, LogsPage, PlanDoc, RunView, Started};
use crate::identity::{Me, SignIn};
use runbook_runner::catalog::{List, Show};
use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value as Json, json};

/// One route: method, path, summary, request body, success status and body.
struct Route {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: Option<Json>,
    status: &'static str,
    response: Json,
}

fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: Option<Json>,
    (status, response): (&'static str, Json),
) -> Route {
    Route {
        method,
        path,
        summary,
        request,
        status,
        response,
    }
}

/// The document.
pub fn document() -> Json {
    let mut settings = SchemaSettings::draft2020_12().for_serialize();
    settings.definitions_path = "#/components/schemas/".into();
    let mut g = SchemaGenerator::new(settings);
    let of = |g: &mut SchemaGenerator, f: fn(&mut SchemaGenerator) -> schemars::Schema| f(g).to_value();
    fn s<T: JsonSchema>(g: &mut SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<T>()
    }
    let text = json!({ "type": "string" });
    let routes = [
        route(
            "get",
            "/api/v1/health",
            "Whether the server answers, and its version",
            None,
            ("200", of(&mut g, s::<Health>)),
        ),
        route(
            "get",
            "/api/v1/session",
            "Who the caller is, their role, and (browsers) the CSRF token their changes carry",
            None,
            ("200", of(&mut g, s::<Me>)),
        ),
        route(
            "post",
            "/api/v1/session",
            "Sign a browser in with an API token: an HttpOnly, SameSite=Strict session cookie",
            Some(of(&mut g, s::<SignIn>)),
            ("200", of(&mut g, s::<Me>)),
        ),
        route(
            "delete",
            "/api/v1/session",
            "Sign the browser out",
            None,
            ("204", json!({})),
        ),
        route(
            "get",
            "/api/v1/openapi.json",
            "This document",
            None,
            ("200", json!({ "type": "object" })),
        ),
        route(
            "get",
            "/api/v1/playbooks",
            "The library: every playbook, its latest version checked",
            None,
            ("200", of(&mut g, s::<List>)),
        ),
        route(
            "get",
            "/api/v1/playbooks/{name}",
            "A playbook (`NAME` or `NAME@VERSION`) as runbook read it",
            None,
            ("200", of(&mut g, s::<Show>)),
        ),
        route(
            "post",
            "/api/v1/playbooks/{name}/plan",
            "What a run with these inputs would do, before it does it",
            Some(of(&mut g, s::<Inputs>)),
            ("200", of(&mut g, s::<PlanDoc>)),
        ),
        route(
            "get",
            "/api/v1/runs",
            "Runs, newest first (`playbook`, `limit` filter)",
            None,
            ("200", of(&mut g, s::<Vec<runbook_state::RunRecord>>)),
        ),
        route(
            "post",
            "/api/v1/runs",
            "Start a run of a playbook by name with typed inputs; answers once it is recorded",
            Some(of(&mut g, s::<StartRequest>)),
            ("201", of(&mut g, s::<Started>)),
        ),
        route(
            "get",
            "/api/v1/runs/{id}",
            "A run and each of its steps",
            None,
            ("200", of(&mut g, s::<RunView>)),
        ),
        route(
            "get",
            "/api/v1/runs/{id}/logs",
            "Its log lines (`step`, `after`, `tail` filter)",
            None,
            ("200", of(&mut g, s::<LogsPage>)),
        ),
        route(
            "get",
            "/api/v1/runs/{id}/events",
            "Its journal events and log lines as Server-Sent Events (`journal`, `log`, `end`); ids are `EVENT.LOG` cursors, resumed with `Last-Event-ID` or `after`",
            None,
            ("200", text.clone()),
        ),
        route(
            "get",
            "/api/v1/runs/{id}/report",
            "Its report (`format`: html, json, junit, markdown)",
            None,
            ("200", text.clone()),
        ),
        route(
            "get",
            "/api/v1/playbooks/{name}/history.svg",
            "Its last runs (`limit`, default 50) as a chart: durations, outcomes, measured RTO against the objective",
            None,
            ("200", text.clone()),
        ),
        route(
            "get",
            "/api/v1/runs/{id}/graph.svg",
            "Its step DAG (SVG), each step coloured by its state",
            None,
            ("200", text.clone()),
        ),
        route(
            "get",
            "/api/v1/runs/{id}/timeline.svg",
            "Its timeline as a Gantt chart (SVG), as in the HTML report",
            None,
            ("200", text),
        ),
        route(
            "post",
            "/api/v1/runs/{id}/approve",
            "Approve the question it waits at (or those in `steps`, or `all`), bound to the plan hash reviewed",
            Some(of(&mut g, s::<AnswerRequest>)),
            ("200", of(&mut g, s::<Continued>)),
        ),
        route(
            "post",
            "/api/v1/runs/{id}/reject",
            "Reject the question it waits at (or those in `steps`, or `all`): it fails, handlers run",
            Some(of(&mut g, s::<AnswerRequest>)),
            ("200", of(&mut g, s::<Continued>)),
        ),
        route(
            "post",
            "/api/v1/runs/{id}/resume",
            "Continue a stopped run, with the operator's decisions",
            Some(of(&mut g, s::<ResumeRequest>)),
            ("200", of(&mut g, s::<Continued>)),
        ),
        route(
            "post",
            "/api/v1/runs/{id}/cancel",
            "Cancel a run (handlers run)",
            Some(of(&mut g, s::<CancelRequest>)),
            ("200", of(&mut g, s::<Continued>)),
        ),
        route(
            "get",
            "/api/v1/locks",
            "Every lock lease",
            None,
            ("200", of(&mut g, s::<Vec<runbook_state::Lock>>)),
        ),
        route(
            "post",
            "/api/v1/locks/unlock",
            "Free a lock by force (admin), journalled on its holder's run",
            Some(of(&mut g, s::<UnlockRequest>)),
            ("200", of(&mut g, s::<Continued>)),
        ),
        route(
            "get",
            "/api/v1/workers",
            "The workers of the shared queue (PostgreSQL state; 501 on SQLite)",
            None,
            ("200", of(&mut g, s::<Vec<runbook_state::WorkerRow>>)),
        ),
    ];
    let error = of(&mut g, s::<ErrorBody>);
    let mut paths = Map::new();
    for r in routes {
        let mut responses = Map::new();
        let done = match r.status {
            "204" => json!({ "description": "done" }),
            _ => json!({ "description": "done", "content": { mime(r.path): { "schema": r.response } } }),
        };
        responses.insert(r.status.into(), done);
        if r.method == "post" && r.path.contains("/runs/") {
            responses.insert("202".into(), json!({ "description": "accepted: the run goes on", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Continued" } } } }));
        }
        responses.insert("default".into(), json!({ "description": "refused (400, 401, 403, 404, 405, 409, 413, 415, 421, 422, 429, 501, 503)", "content": { "application/json": { "schema": error.clone() } } }));
        let mut op = json!({ "summary": r.summary, "responses": responses });
        let public = ["/api/v1/health", "/api/v1/openapi.json"].contains(&r.path)
            || (r.path == "/api/v1/session" && r.method != "delete");
        if public {
            op["security"] = json!([]);
        }
        let params: Vec<Json> = ["name", "id"]
            .iter()
            .filter(|p| r.path.contains(&format!("{{{p}}}")))
            .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if !params.is_empty() {
            op["parameters"] = params.into();
        }
        if let Some(body) = r.request {
            op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": body } } });
        }
        let entry = paths.entry(r.path).or_insert_with(|| json!({}));
        entry[r.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "runbook",
            "version": "v1",
            "description": "runbook's HTTP API (`runbook serve`): the playbook library, plans, runs, their events, approvals and reports.",
        },
        "paths": paths,
        // An API token, or a browser's session cookie (whose changes also
        // carry `X-CSRF-Token`); behind a trusted proxy, the proxy's header.
        "security": [{ "token": [] }, { "session": [] }],
        "components": {
            "schemas": g.take_definitions(true),
            "securitySchemes": {
                "token": { "type": "http", "scheme": "bearer", "description": "An API token (`runbook token create NAME --role ROLE`)" },
                "session": { "type": "apiKey", "in": "cookie", "name": "runbook_session", "description": "A browser's session (POST /api/v1/session)" },
            },
        },
    })
}

fn mime(path: &str) -> &'static str {
    if path.ends_with("/events") {
        "text/event-stream"
    } else if path.ends_with("/report") {
        "text/html"
    } else if path.ends_with(".svg") {
        "image/svg+xml"
    } else {
        "application/json"
    }
}
