//! The routes under `/api/v1/`. Reading handlers read the library and the
//! store and answer; handlers that start or continue a run hand a job to
//! the executor and answer once the run is recorded (start: 201 with its
//! id) or once it stopped, or after [`SETTLE`] with 202 while it still runs.

use crate::Shared;
use crate::bodies::{Continued, Health, LogEntry, LogsPage, May, PlanDoc, RunView, Started};
use crate::error::ApiError;
use crate::executor::{How, Job, Streamed};
use crate::identity::{Credential, allow, still_valid};
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use indexmap::IndexMap;
use runbook_core::library::LoadError;
use runbook_core::validate::Loaded;
use runbook_runner::Answer;
use runbook_runner::access::{Caller, Role};
use runbook_runner::catalog;
use runbook_runner::follow::Cursor;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value as Json_, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a request that continues a run waits for it to stop before it
/// answers 202 (the run goes on; its events say how it ends).
pub(crate) const SETTLE: Duration = Duration::from_secs(2);

type S = State<Arc<Shared>>;
type Answered = Result<Response, ApiError>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route(
            "/api/v1/session",
            get(crate::identity::whoami)
                .post(crate::identity::sign_in)
                .delete(crate::identity::sign_out),
        )
        .route(
            "/api/v1/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .route("/api/v1/playbooks", get(playbooks))
        .route("/api/v1/playbooks/{name}", get(playbook))
        .route("/api/v1/playbooks/{name}/plan", post(plan))
        .route("/api/v1/playbooks/{name}/history.svg", get(history_chart))
        .route("/api/v1/runs", get(runs).post(start))
        .route("/api/v1/runs/{id}", get(status))
        .route("/api/v1/runs/{id}/logs", get(logs))
        .route("/api/v1/runs/{id}/events", get(events))
        .route("/api/v1/runs/{id}/report", get(report))
        .route("/api/v1/runs/{id}/timeline.svg", get(timeline))
        .route("/api/v1/runs/{id}/graph.svg", get(graph))
        .route("/api/v1/runs/{id}/approve", post(approve))
        .route("/api/v1/runs/{id}/reject", post(reject))
        .route("/api/v1/runs/{id}/resume", post(resume))
        .route("/api/v1/runs/{id}/cancel", post(cancel))
        .route("/api/v1/locks", get(locks))
        .route("/api/v1/locks/unlock", post(unlock))
        .route("/api/v1/workers", get(workers))
        .route(
            "/",
            get(|| async { ui("text/html; charset=utf-8", include_str!("../ui/index.html")) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { ui("text/javascript; charset=utf-8", include_str!("../ui/app.js")) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { ui("text/css; charset=utf-8", include_str!("../ui/app.css")) }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route (the API is under /api/v1/)") })
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            crate::identity::identify,
        ))
        .layer(axum::middleware::from_fn(crate::error::contract))
        .with_state(shared)
}

/// A file of the web UI, embedded in the binary at build time (it works
/// offline; nothing is fetched from elsewhere).
fn ui(content_type: &'static str, body: &'static str) -> Response {
    // The CSP (its own scripts only, never framed) and `nosniff` are
    // every answer's: see `error::contract`.
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn health() -> Json<Health> {
    Json(Health {
        ok: true,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

async fn playbooks(State(s): S) -> Answered {
    let list = catalog::list(&s.library, &s.runner.registry)
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(list).into_response())
}

/// Refuses (422) what is not a library entry's name (`NAME` or
/// `NAME@VERSION`): a path is read only at the operator's own terminal,
/// never for a request.
fn name_only(name: &str) -> Result<(), ApiError> {
    let lower = name.to_ascii_lowercase();
    let pathlike = lower.ends_with(".yaml") || lower.ends_with(".yml") || name.contains(['/', '\\']);
    if pathlike || name.starts_with('.') || name.contains('\0') {
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`{name}` is not a playbook name: the API takes names from the library, never paths"),
        );
        e.hint = Some("`GET /api/v1/playbooks` lists the names (`NAME` or `NAME@VERSION`)".into());
        return Err(e);
    }
    Ok(())
}

/// The library entry's name in `NAME` or `NAME@VERSION`: what roles are
/// granted on (not the `name:` its text declares).
fn entry_name(spec: &str) -> &str {
    spec.split_once('@').map_or(spec, |(name, _)| name)
}

/// A playbook of the library, by name, checked.
fn load(s: &Shared, name: &str) -> Result<Loaded, ApiError> {
    name_only(name)?;
    let located = s
        .library
        .locate(name)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.to_string()))?;
    match runbook_core::library::load(&s.library, &located, &s.runner.registry) {
        Ok(l) => Ok(l),
        Err(LoadError::Library(e)) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Err(LoadError::Invalid(inv)) => {
            let message = format!("`{name}` does not validate; nothing was run");
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message).diagnosed(&inv.source, &inv.diagnostics))
        }
    }
}

async fn playbook(State(s): S, Path(name): Path<String>) -> Answered {
    Ok(Json(catalog::Show::of(&load(&s, &name)?)).into_response())
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    limit: Option<u32>,
}

/// `GET /api/v1/playbooks/{name}/history.svg`: its last runs (50 unless
/// `limit`, at most 500) as a chart of durations and outcomes, with the
/// recovery time each drill measured against the RTO objective.
async fn history_chart(State(s): S, Path(name): Path<String>, Query(q): Query<HistoryQuery>) -> Answered {
    name_only(&name)?;
    let limit = q.limit.unwrap_or(50).min(500);
    let points = catalog::history(s.runner.store.as_ref(), &name, limit).await?;
    // The objective of the playbook as it is now (none if it does not load).
    let target = load(&s, &name)
        .ok()
        .and_then(|l| l.playbook.objectives)
        .and_then(|o| o.rto)
        .and_then(|t| runbook_core::inputs::parse_duration(&t).ok())
        .map(|d| d.as_secs_f64());
    let svg = runbook_report::history::svg(&points, target);
    Ok(svg_response(svg))
}

/// Typed inputs, as a form sends them.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Inputs {
    /// Input name to value (a string, number, boolean, list or map, as
    /// declared); defaults fill in the rest.
    #[serde(default)]
    inputs: IndexMap<String, Json_>,
}

/// The inputs checked against the playbook's declarations, as the command
/// line checks them: each problem named.
fn resolve(loaded: &Loaded, given: &IndexMap<String, Json_>) -> Result<IndexMap<String, Json_>, ApiError> {
    runbook_core::inputs::resolve(&loaded.playbook, given).map_err(|errors| {
        let details: Vec<Json_> = errors
            .iter()
            .map(|e| json!({ "input": e.name, "message": e.message, "hint": e.hint }))
            .collect();
        let mut refused = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid inputs for `{}`; nothing was run", loaded.playbook.name),
        );
        refused.details = Some(Box::new(details.into()));
        refused
    })
}

async fn plan(State(s): S, Path(name): Path<String>, Json(body): Json<Inputs>) -> Answered {
    let loaded = load(&s, &name)?;
    let inputs = resolve(&loaded, &body.inputs)?;
    let pctx = runbook_engine::plan::PlanContext {
        env: s.runner.env.clone(),
        user: s.runner.user.clone(),
        inventory: s.runner.inventory.clone(),
    };
    let plan = runbook_engine::plan::plan(&loaded, &inputs, &s.runner.registry, &pctx);
    let text = runbook_engine::plan_text::render(&plan);
    Ok(Json(PlanDoc { plan, text }).into_response())
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    playbook: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/runs`: the newest runs (`limit`, default 50, at most 500),
/// of one playbook and in one status if asked (among the newest 500).
async fn runs(State(s): S, Query(q): Query<RunsQuery>) -> Answered {
    let limit = q.limit.unwrap_or(50).min(500);
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(runbook_state::RunStatus::parse(text).ok_or_else(|| {
            let message = format!("unknown status `{text}`");
            let mut e = ApiError::new(StatusCode::BAD_REQUEST, message);
            e.hint = Some("succeeded, failed, waiting, running, queued, interrupted, uncertain or cancelled".into());
            e
        })?),
    };
    let fetch = if status.is_some() { 500 } else { limit };
    let mut runs = s.runner.store.runs(q.playbook.as_deref(), fetch).await?;
    if let Some(want) = status {
        runs.retain(|r| r.status == want);
        runs.truncate(limit as usize);
    }
    Ok(Json(runs).into_response())
}

/// `POST /api/v1/runs`: a run of a playbook by name.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRequest {
    /// `NAME` or `NAME@VERSION`.
    playbook: String,
    /// Input name to value, typed as declared.
    #[serde(default)]
    inputs: IndexMap<String, Json_>,
    /// Approve its approvals as the server's user.
    #[serde(default)]
    yes: bool,
}

async fn start(State(s): S, Extension(caller): Extension<Caller>, Json(req): Json<StartRequest>) -> Answered {
    let loaded = load(&s, &req.playbook)?;
    // The role is the library entry's, whatever name its text declares.
    let name = entry_name(&req.playbook);
    allow(&s, &caller, Some(name), Role::Operator, "starting a run")?;
    if req.yes {
        allow(&s, &caller, Some(name), Role::Approver, "approving with `yes`")?;
    }
    let who = caller.name().to_owned();
    // The inputs' problems are named one by one before anything else.
    resolve(&loaded, &req.inputs)?;
    if s.options.queue {
        return submit(&s, loaded, req, who).await;
    }
    let r = &s.runner_as(&who);
    let checked = runbook_runner::check_start(&r.registry, &r.env, &r.inventory, &r.user, &loaded, &req.inputs)?;
    let (reply, answer) = oneshot::channel();
    let job = Job::Start {
        loaded: Box::new(loaded),
        checked,
        yes: req.yes,
        user: who,
        reply,
    };
    let id = ask(&s, job, answer).await??;
    Ok(created(id))
}

/// Queues a run for the workers (`serve --submit`): its secrets and its
/// approvals are the workers' business, so `yes` is refused.
async fn submit(s: &Shared, loaded: Loaded, req: StartRequest, who: String) -> Answered {
    if req.yes {
        let message = "`yes` cannot approve runs executed by workers; answer their approvals here";
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message));
    }
    let (reply, answer) = oneshot::channel();
    let job = Job::Submit {
        loaded: Box::new(loaded),
        inputs: req.inputs,
        user: who,
        reply,
    };
    let id = ask(s, job, answer).await??;
    Ok(created(id))
}

/// 201 with the new run's id and where it is.
fn created(id: String) -> Response {
    let location = format!("/api/v1/runs/{id}");
    let headers = [(header::LOCATION, location)];
    (StatusCode::CREATED, headers, Json(Started { run: id })).into_response()
}

/// The run `id`, named whole: over HTTP a prefix is no run (a page could
/// otherwise find runs it never knew by sweeping prefixes).
async fn run_of(s: &Shared, id: &str) -> Result<runbook_state::RunRecord, ApiError> {
    let none = || {
        let mut e = ApiError::new(StatusCode::NOT_FOUND, format!("no run `{id}`"));
        e.hint = Some("the API takes whole run ids (`GET /api/v1/runs` lists them)".into());
        e
    };
    match s.runner.store.run(id).await {
        Ok(record) if record.id == id => Ok(record),
        Ok(_) | Err(runbook_state::StoreError::NoRun(_) | runbook_state::StoreError::Ambiguous(_)) => Err(none()),
        Err(e) => Err(e.into()),
    }
}

/// Hands a job to the executor and waits for its reply.
async fn ask<T>(s: &Shared, job: Job, reply: oneshot::Receiver<T>) -> Result<T, ApiError> {
    let stopping = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
    if !s.submit(job) {
        return Err(stopping());
    }
    reply.await.map_err(|_| stopping())
}

async fn status(State(s): S, Extension(caller): Extension<Caller>, Path(id): Path<String>) -> Answered {
    let record = run_of(&s, &id).await?;
    let events = s.runner.store.events(&record.id).await?;
    let role = caller.role(s.options.roles.as_ref(), Some(&record.playbook));
    let may = May {
        answer: role >= Role::Approver,
        operate: role >= Role::Operator,
    };
    let objectives = runbook_runner::decide::load_stored(&record, &s.runner.registry)
        .ok()
        .and_then(|l| l.playbook.objectives);
    let rto_seconds = runbook_report::measured(&events, "rto_seconds");
    let status = catalog::Status::of(record, &events);
    Ok(Json(RunView {
        status,
        may,
        objectives,
        rto_seconds,
    })
    .into_response())
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    step: Option<String>,
    /// The lines after this one (oldest first).
    after: Option<i64>,
    /// With `tail`: the last lines before this one (an earlier page).
    before: Option<i64>,
    /// The last N lines: a run opens at its tail.
    tail: Option<u32>,
    /// At most this many lines (default and most: 10,000).
    limit: Option<u32>,
}

/// The most lines one page holds.
const PAGE: u32 = 10_000;

/// `GET /api/v1/runs/{id}/logs`: a page of the run's log, read by sequence
/// number (a run with a million lines opens at its tail at once).
async fn logs(State(s): S, Path(id): Path<String>, Query(q): Query<LogsQuery>) -> Answered {
    use runbook_state::Page;
    let record = run_of(&s, &id).await?;
    let (page, limit) = match (q.tail, q.after) {
        (Some(n), _) => (Page::Before(q.before.unwrap_or(i64::MAX)), n.min(PAGE)),
        (None, after) => (Page::After(after.unwrap_or(0)), q.limit.unwrap_or(PAGE).min(PAGE)),
    };
    let lines = s
        .runner
        .store
        .log_page(&record.id, q.step.as_deref(), page, limit)
        .await?;
    let full = lines.len() == limit as usize;
    let before = match page {
        Page::Before(_) if full => lines.first().map(|(seq, _)| *seq),
        _ => None,
    };
    let next = lines.last().map_or(q.after.unwrap_or(0), |(seq, _)| *seq);
    let lines = lines.into_iter().map(|(seq, line)| LogEntry { seq, line }).collect();
    let page = LogsPage {
        run: record.id,
        lines,
        next,
        before,
    };
    Ok(Json(page).into_response())
}

/// A cursor as an event id: `EVENT.LOG`.
fn cursor_of(text: &str) -> Option<Cursor> {
    let (event, log) = text.trim().split_once('.')?;
    Some(Cursor {
        event: event.parse().ok()?,
        log: log.parse().ok()?,
    })
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    /// Resume after this event id (as `Last-Event-ID` does).
    after: Option<String>,
}

/// `GET /api/v1/runs/{id}/events`: the run's journal events and log lines
/// as Server-Sent Events (`journal`, `log`, and a last `end` with the status
/// it stopped at), each with the id a reconnecting client sends back.
async fn events(
    State(s): S,
    Extension(caller): Extension<Caller>,
    credential: Option<Extension<Credential>>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Answered {
    let record = run_of(&s, &id).await?;
    let given = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(q.after);
    let from = match given {
        Some(text) => cursor_of(&text)
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("event id `{text}` is not EVENT.LOG")))?,
        None => Cursor::default(),
    };
    let open = StreamSlot::take(&s, caller.name())?;
    let (to, from_executor) = mpsc::unbounded_channel::<Streamed>();
    if !s.submit(Job::Follow {
        id: record.id,
        from,
        to,
    }) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"));
    }
    let credential = credential.map_or(Credential::Lasting, |Extension(c)| c);
    let from_executor = lasting_while_valid(s.clone(), credential, from_executor);
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(from_executor);
    let stream = tokio_stream::StreamExt::map(stream, move |item: Streamed| {
        // Held for as long as the stream is: its end frees the caller's slot.
        let _open = &open;
        let id = format!("{}.{}", item.cursor.event, item.cursor.log);
        Ok::<_, Infallible>(SseEvent::default().id(id).event(item.kind).data(item.data.to_string()))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// One of a caller's event streams, counted while it is open.
struct StreamSlot {
    streams: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    caller: String,
}

impl StreamSlot {
    /// A slot for `caller`, or 429 when it holds as many streams as it may.
    fn take(s: &Shared, caller: &str) -> Result<StreamSlot, ApiError> {
        let most = s.options.streams_per_caller;
        let mut open = s
            .streams
            .lock()
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"))?;
        let count = open.entry(caller.to_owned()).or_default();
        if *count >= most {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{caller} has {most} event streams open, as many as one caller may"),
            );
            e.hint = Some("close one (a run's page) first".into());
            return Err(e);
        }
        *count += 1;
        Ok(StreamSlot {
            streams: s.streams.clone(),
            caller: caller.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.streams.lock() {
            if let Some(count) = open.get_mut(&self.caller) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.remove(&self.caller);
                }
            }
        }
    }
}

/// How often an event stream checks that its token or session still
/// authenticates.
const RECHECK: Duration = Duration::from_secs(5);

/// The events of `from`, until the token or session that opened the stream
/// ends (revoked, expired, signed out): checked every [`RECHECK`].
fn lasting_while_valid(
    s: Arc<Shared>,
    credential: Credential,
    mut from: mpsc::UnboundedReceiver<Streamed>,
) -> mpsc::UnboundedReceiver<Streamed> {
    if matches!(credential, Credential::Lasting) {
        return from;
    }
    let (to, out) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut check = tokio::time::interval(RECHECK);
        check.tick().await;
        loop {
            tokio::select! {
                item = from.recv() => {
                    let Some(item) = item else { break };
                    if to.send(item).is_err() {
                        break;
                    }
                }
                _ = check.tick() => {
                    if !still_valid(&s, &credential).await {
                        break;
                    }
                }
                () = to.closed() => break,
            }
        }
    });
    out
}

#[derive(Debug, Deserialize)]
struct ReportQuery {
    format: Option<String>,
}

async fn report(State(s): S, Path(id): Path<String>, Query(q): Query<ReportQuery>) -> Answered {
    use runbook_report::Format;
    let (format, content_type) = match q.format.as_deref().unwrap_or("html") {
        "html" => (Format::Html, "text/html; charset=utf-8"),
        "json" => (Format::Json, "application/json"),
        "junit" => (Format::Junit, "application/xml"),
        "markdown" => (Format::Markdown, "text/markdown; charset=utf-8"),
        other => {
            let message = format!("unknown report format `{other}` (html, json, junit, markdown)");
            return Err(ApiError::new(StatusCode::BAD_REQUEST, message));
        }
    };
    let report = catalog::report(s.runner.store.as_ref(), &s.runner.registry, &run_of(&s, &id).await?.id).await?;
    Ok(([(header::CONTENT_TYPE, content_type)], report.render(format)).into_response())
}

/// `GET /api/v1/runs/{id}/timeline.svg`: the run's Gantt chart, as the
/// HTML report draws it (a live run's bars reach now).
async fn timeline(State(s): S, Path(id): Path<String>) -> Answered {
    let svg = catalog::timeline(s.runner.store.as_ref(), &s.runner.registry, &run_of(&s, &id).await?.id).await?;
    Ok(svg_response(svg))
}

/// `GET /api/v1/runs/{id}/graph.svg`: the run's step DAG, each step
/// coloured by its state.
async fn graph(State(s): S, Path(id): Path<String>) -> Answered {
    let svg = catalog::graph(s.runner.store.as_ref(), &s.runner.registry, &run_of(&s, &id).await?.id).await?;
    Ok(svg_response(svg))
}

/// An SVG picture, never cached (it changes as the run goes on).
fn svg_response(svg: String) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "image/svg+xml"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    (headers, svg).into_response()
}

/// An answer to the approval a run waits at: the one named in `steps`,
/// every one with `all`, or, naming none, the only one (a run waiting at
/// several refuses, naming them).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AnswerRequest {
    /// The questions answered, by step path (`status`'s steps in state
    /// `waiting`).
    #[serde(default)]
    steps: Vec<String>,
    /// Answer every question the run waits at.
    #[serde(default)]
    all: bool,
    /// Why, in the answerer's words (journalled).
    comment: Option<String>,
    /// The plan the answerer reviewed (`status`'s `plan_hash`): refused if
    /// the run's plan is not that one. Required to approve.
    plan_hash: Option<String>,
}

async fn approve(
    state: S,
    who: Extension<Caller>,
    Path(id): Path<String>,
    Json(body): Json<AnswerRequest>,
) -> Answered {
    answer(state, who, id, true, body).await
}

async fn reject(state: S, who: Extension<Caller>, Path(id): Path<String>, Json(body): Json<AnswerRequest>) -> Answered {
    answer(state, who, id, false, body).await
}

async fn answer(
    State(s): S,
    Extension(caller): Extension<Caller>,
    id: String,
    approve: bool,
    req: AnswerRequest,
) -> Answered {
    let record = run_of(&s, &id).await?;
    let what = if approve { "approving" } else { "rejecting" };
    allow(&s, &caller, Some(&record.playbook), Role::Approver, what)?;
    // Over HTTP an approval names the plan the answerer reviewed.
    if approve && req.plan_hash.as_deref().is_none_or(str::is_empty) {
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("approving run {} needs the plan hash you reviewed", record.id),
        );
        e.hint = Some("send `plan_hash` as `GET /api/v1/runs/{id}` gives it".into());
        return Err(e);
    }
    let who = caller.name().to_owned();
    if approve && who == record.user {
        four_eyes(&s, &record, &req.steps).await?;
    }
    let answer = Answer {
        approve,
        who: who.clone(),
        comment: req.comment,
        plan_hash: req.plan_hash,
        steps: req.steps,
        all: req.all,
    };
    continue_run(&s, &who, &id, How::Answer(answer)).await
}

/// Refuses (403), before anything is recorded, the approval by whoever
/// started the run of a question that needs four eyes: among `named`, or,
/// naming none, among those the run waits at.
async fn four_eyes(s: &Shared, record: &runbook_state::RunRecord, named: &[String]) -> Result<(), ApiError> {
    let Ok(loaded) = runbook_runner::decide::load_stored(record, &s.runner.registry) else {
        return Ok(()); // the step itself still says no
    };
    let paths: Vec<String> = if named.is_empty() {
        let events = s.runner.store.events(&record.id).await?;
        let status = catalog::Status::of(record.clone(), &events);
        status
            .steps
            .into_iter()
            .filter(|r| r.state == "waiting")
            .map(|r| r.step)
            .collect()
    } else {
        named.to_vec()
    };
    let pb = &loaded.playbook;
    let everywhere = pb.steps.iter().chain(&pb.on_failure).chain(&pb.finally);
    for path in paths {
        // `roll[web-1].ok` is the step `ok`.
        let tail = path.rsplit_once(']').map_or(path.as_str(), |(_, t)| t);
        let id = tail.rsplit('.').next().unwrap_or(tail);
        if everywhere.clone().any(|step| needs_four_eyes(step, id)) {
            let message = format!(
                "{} started run {} and may not approve `{path}` too (four eyes): a second person must",
                record.user, record.id
            );
            return Err(ApiError::new(StatusCode::FORBIDDEN, message));
        }
    }
    Ok(())
}

/// Whether `step`, or a step within it, is the approval `id` with
/// `four_eyes: true`.
fn needs_four_eyes(step: &runbook_core::model::Step, id: &str) -> bool {
    let own = step.id.as_deref() == Some(id)
        && step.uses.as_deref() == Some("approve")
        && step
            .with
            .as_ref()
            .and_then(|w| w.get("four_eyes"))
            .is_some_and(|v| v == &Json_::Bool(true));
    own || step
        .steps
        .iter()
        .flatten()
        .chain(&step.on_failure)
        .any(|inner| needs_four_eyes(inner, id))
}

/// The operator's decisions about a stopped run.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResumeRequest {
    /// Steps to run again although they finished.
    #[serde(default)]
    rerun: Vec<String>,
    /// Steps in flight to record as done (they did act).
    #[serde(default)]
    mark_done: Vec<String>,
}

async fn resume(
    State(s): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(req): Json<ResumeRequest>,
) -> Answered {
    let record = run_of(&s, &id).await?;
    allow(&s, &caller, Some(&record.playbook), Role::Operator, "resuming")?;
    if !req.rerun.is_empty() || !req.mark_done.is_empty() {
        let what = "deciding about steps (`rerun`, `mark_done`)";
        allow(&s, &caller, Some(&record.playbook), Role::Approver, what)?;
    }
    let who = caller.name().to_owned();
    let how = How::Resume {
        rerun: req.rerun,
        mark_done: req.mark_done,
    };
    continue_run(&s, &who, &id, how).await
}

/// `POST /api/v1/runs/{id}/cancel`: nothing to say but `{}` (a JSON body,
/// as every change sends).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelRequest {}

/// `POST /api/v1/runs/{id}/cancel`: a run executing here is stopped through
/// its own signals (never this process's); any other goes through the
/// runner's cancel, as `runbook cancel` does.
async fn cancel(
    State(s): S,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(_): Json<CancelRequest>,
) -> Answered {
    let record = run_of(&s, &id).await?;
    allow(&s, &caller, Some(&record.playbook), Role::Operator, "cancelling")?;
    let who = caller.name().to_owned();
    if let Some(signals) = s.signals_of(&record.id) {
        s.runner_as(&who).record_cancel(&record.id).await?;
        signals.stop.cancel();
        let message = format!("cancel requested: run {} is stopping", record.id);
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "run": record.id, "message": message })),
        )
            .into_response());
    }
    if record.pid == Some(std::process::id()) && record.status == runbook_state::RunStatus::Running {
        let message = format!("run {} is finishing here; ask again in a moment", record.id);
        return Err(ApiError::new(StatusCode::CONFLICT, message));
    }
    continue_run(&s, &who, &record.id, How::Cancel).await
}

/// Continues a run on the executor: its outcome if it stops within
/// [`SETTLE`], else 202 while it goes on.
async fn continue_run(s: &Shared, who: &str, id: &str, how: How) -> Answered {
    let record = run_of(s, id).await?;
    let (reply, mut answer) = oneshot::channel();
    let job = Job::Continue {
        id: record.id.clone(),
        how,
        user: who.to_owned(),
        reply,
    };
    if !s.submit(job) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"));
    }
    match tokio::time::timeout(SETTLE, &mut answer).await {
        Ok(Ok(done)) => Ok(Json(done?).into_response()),
        Ok(Err(_)) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping")),
        Err(_) => {
            let body = Continued {
                run: record.id,
                status: Some("running".into()),
                message: None,
            };
            Ok((StatusCode::ACCEPTED, Json(body)).into_response())
        }
    }
}

async fn locks(State(s): S) -> Answered {
    Ok(Json(s.runner.store.locks().await?).into_response())
}

/// `POST /api/v1/locks/unlock`: a lock freed by force.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnlockRequest {
    /// The lock's key, as `GET /api/v1/locks` shows it.
    key: String,
}

/// Frees a lock whose holder cannot (admins only: another run may then
/// start while the holder still changes things), journalled on the
/// holder's run as the caller's `unlock`.
async fn unlock(State(s): S, Extension(caller): Extension<Caller>, Json(req): Json<UnlockRequest>) -> Answered {
    allow(&s, &caller, None, Role::Admin, "freeing a lock")?;
    let Some((lock, unjournalled)) = runbook_runner::unlock(s.runner.store.as_ref(), &req.key, caller.name()).await?
    else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no lock `{}`", req.key)));
    };
    let mut message = format!(
        "freed lock `{}` (was held by {})",
        req.key,
        runbook_runner::describe(&lock)
    );
    if let Some(e) = unjournalled {
        message.push_str(&format!("; not journalled on run {}: {e}", lock.run_id));
    }
    Ok(Json(Continued {
        run: lock.run_id,
        status: None,
        message: Some(message),
    })
    .into_response())
}

async fn workers(State(s): S) -> Answered {
    Ok(Json(s.runner.store.workers().await?).into_response())
}
