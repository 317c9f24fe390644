//! The run lifecycle without the binary: a [`Runner`] over a real store
//! (SQLite; PostgreSQL from the lab for the queue), a step kind that records
//! what it did, and the approve kind. What an operator would notice: which
//! steps ran (and which did not run twice), how each run ended, what the
//! journal says, and why a request was refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use indexmap::IndexMap;
use runbook_core::diag::Source;
use runbook_core::kind::{Effect, OutputDecl, Outputs, Registry, StepContext, StepError, StepKind};
use runbook_core::validate::{Expected, Loaded, load};
use runbook_engine::exec::{Observer, Signals};
use runbook_runner::worker::{WorkerOptions, work};
use runbook_runner::{
    Answer, Cancelled, Decisions, Holder, Notice, Outcome, Resumed, RunOptions, Runner, RunnerError, Watcher,
};
use runbook_state::{Event, Fenced, Journal, LogLine, NewRun, RunStatus, SqliteStore, Store};
use serde_json::{Value as Json, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the `mark` steps did, in order.
type Marks = Arc<Mutex<Vec<String>>>;

/// Records its `name`; with `hang: true`, first waits until it is cancelled
/// (a step in flight when its process dies); idempotent unless
/// `idempotent: false`.
struct Mark(Marks);

#[async_trait]
impl StepKind for Mark {
    fn name(&self) -> &'static str {
        "mark"
    }
    fn summary(&self) -> &'static str {
        "records that it ran"
    }
    fn params_schema(&self) -> Json {
        json!({
            "type": "object",
            "properties": {
                "name": { "type": "string" },
                "hang": { "type": "boolean" },
                "idempotent": { "type": "boolean" },
            },
            "required": ["name"],
            "additionalProperties": false,
        })
    }
    fn effect(&self, _: &Json) -> Effect {
        Effect::Write
    }
    fn idempotent(&self, with: &Json) -> bool {
        with["idempotent"].as_bool().unwrap_or(true)
    }
    fn outputs(&self) -> &[OutputDecl] {
        &[]
    }
    fn describe(&self, w: &Json) -> String {
        format!("mark {}", w["name"])
    }
    async fn run(&self, ctx: &StepContext, with: Json) -> Result<Outputs, StepError> {
        let name = with["name"].as_str().unwrap_or("?").to_owned();
        if with["hang"].as_bool() == Some(true) {
            self.0.lock().unwrap().push(format!("{name} started"));
            ctx.cancel.cancelled().await;
            return Err(StepError::cancelled());
        }
        self.0.lock().unwrap().push(name);
        Ok(Outputs::new())
    }
}

/// Everything the runner told its front end, as lines.
#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl Observer for Seen {
    fn event(&self, _: &str, event: &Event) {
        self.0.lock().unwrap().push(format!("{event:?}"));
    }
    fn log(&self, _: &LogLine) {}
}

impl Watcher for Seen {
    fn notice(&self, notice: &Notice) {
        self.0.lock().unwrap().push(notice.to_string());
    }
}

struct World {
    _dir: tempfile::TempDir,
    marks: Marks,
    seen: Arc<Seen>,
    runner: Runner,
}

fn registry(marks: &Marks) -> Registry {
    Registry::new()
        .with(Mark(marks.clone()))
        .with(runbook_step_approve::Approve)
}

async fn sqlite() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("state.db")).await.unwrap());
    World::over(store, dir)
}

impl World {
    fn over(store: Arc<dyn Store>, dir: tempfile::TempDir) -> World {
        let marks = Marks::default();
        let seen = Arc::new(Seen::default());
        let runner = Runner {
            store,
            registry: registry(&marks),
            watcher: seen.clone(),
            user: "alice".into(),
            env: IndexMap::new(),
            inventory: Json::Null,
        };
        World {
            _dir: dir,
            marks,
            seen,
            runner,
        }
    }

    fn playbook(&self, text: &str) -> Loaded {
        load(
            Source::new("test.yaml", text.to_owned()),
            &Expected::default(),
            &self.runner.registry,
        )
        .unwrap_or_else(|inv| panic!("{:?}", inv.diagnostics))
    }

    /// Starts a run of `text` with no inputs; how it ended.
    async fn start(&self, text: &str) -> Outcome {
        let pb = self.playbook(text);
        self.runner
            .start(&pb, IndexMap::new(), &RunOptions::default())
            .await
            .unwrap()
    }

    fn marks(&self) -> Vec<String> {
        self.marks.lock().unwrap().clone()
    }

    async fn events(&self, run: &str) -> Vec<Event> {
        self.runner
            .store
            .events(run)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect()
    }
}

const CHAIN: &str = "apiVersion: runbook/v1
name: chain
version: 1
steps:
  - { id: a, uses: mark, with: { name: a } }
  - { id: b, uses: mark, needs: [a], with: { name: b } }
  - { id: c, uses: mark, needs: [b], with: { name: c } }
";

#[tokio::test(flavor = "current_thread")]
async fn a_started_run_executes_every_step_once_and_the_journal_says_so() {
    let w = sqlite().await;
    let out = w.start(CHAIN).await;
    assert_eq!(out.status, RunStatus::Succeeded);
    assert_eq!(w.marks(), ["a", "b", "c"]);
    let events = w.events(&out.run_id).await;
    assert!(matches!(&events[0], Event::RunStarted { user, runner: None } if user == "alice"));
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            status: RunStatus::Succeeded,
            ..
        })
    ));
    let seen = w.seen.0.lock().unwrap().clone();
    assert!(seen[0].starts_with("RunStarted"), "the watcher saw the start: {seen:?}");
    assert!(seen.last().unwrap().starts_with("RunFinished"), "{seen:?}");
    // It holds no runner any more: anyone may look at it, nobody runs it.
    assert_eq!(w.runner.store.run(&out.run_id).await.unwrap().pid, None);
}

#[tokio::test(flavor = "current_thread")]
async fn a_run_begun_is_recorded_with_its_id_before_any_step_runs() {
    let w = sqlite().await;
    let pb = w.playbook(CHAIN);
    let opts = RunOptions::default();
    let started = w.runner.begin(&pb, IndexMap::new(), &opts).await.unwrap();
    let id = started.run_id().to_owned();
    assert_eq!(w.runner.store.run(&id).await.unwrap().status, RunStatus::Running);
    assert!(w.marks().is_empty(), "recorded, not run");
    let out = started.execute(&opts).await.unwrap();
    assert_eq!((out.run_id.as_str(), out.status), (id.as_str(), RunStatus::Succeeded));
    assert_eq!(w.marks(), ["a", "b", "c"]);
}

/// A run whose process died after `a` succeeded and while `b` was in flight:
/// the journal it left, written as a crash leaves it.
async fn crashed(w: &World, pb: &Loaded) -> String {
    let id = runbook_state::new_run_id();
    let text = pb.source.text.to_string();
    let new = NewRun {
        id: id.clone(),
        playbook: pb.playbook.name.clone(),
        version: pb.playbook.version,
        hash: runbook_report::sha256_hex(&text),
        calls: Default::default(),
        text,
        inputs: json!({}),
        user: "alice".into(),
    };
    let store = &w.runner.store;
    let started = Event::RunStarted {
        user: "alice".into(),
        runner: None,
    };
    store.create_run(&new, &started).await.unwrap();
    store.append_all(&id, &a_done_b_in_flight()).await.unwrap();
    id
}

fn started(step: &str) -> Event {
    Event::StepStarted {
        step: step.into(),
        attempt: 1,
    }
}

/// What a runner that dies in `b` has journalled: `a` succeeded, `b` started.
fn a_done_b_in_flight() -> [Event; 3] {
    [
        started("a"),
        Event::StepSucceeded {
            step: "a".into(),
            attempt: 1,
            outputs: json!({}),
        },
        started("b"),
    ]
}

#[tokio::test(flavor = "current_thread")]
async fn after_a_crash_resume_runs_what_was_in_flight_and_never_redoes_finished_work() {
    let w = sqlite().await;
    let pb = w.playbook(CHAIN);
    let id = crashed(&w, &pb).await;
    assert_eq!(w.runner.store.run(&id).await.unwrap().status, RunStatus::Running);
    let out = w
        .runner
        .resume(&id, &Decisions::default(), &RunOptions::default())
        .await
        .unwrap();
    assert_eq!(
        out,
        Resumed::Executed(Outcome {
            run_id: id.clone(),
            status: RunStatus::Succeeded
        })
    );
    // `a` had succeeded: not again. `b` was in flight and is idempotent: again.
    assert_eq!(w.marks(), ["b", "c"]);
    assert!(
        w.events(&id)
            .await
            .iter()
            .any(|e| matches!(e, Event::RunResumed { user, .. } if user == "alice"))
    );
    // A finished run cannot be resumed, and says how it finished.
    let err = w
        .runner
        .resume(&id, &Decisions::default(), &RunOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RunnerError::Finished {
                status: RunStatus::Succeeded,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.hint().unwrap(), "start a new run with `runbook run chain`");
}

#[tokio::test(flavor = "current_thread")]
async fn a_step_that_may_have_acted_stops_the_run_as_uncertain_until_an_operator_decides() {
    let w = sqlite().await;
    let pb = w.playbook(&CHAIN.replace("with: { name: b }", "with: { name: b, idempotent: false }"));
    let id = crashed(&w, &pb).await;
    let opts = RunOptions::default();
    let out = w.runner.resume(&id, &Decisions::default(), &opts).await.unwrap();
    assert!(matches!(
        out,
        Resumed::Executed(Outcome {
            status: RunStatus::Uncertain,
            ..
        })
    ));
    assert!(w.marks().is_empty(), "nothing ran: b may have acted");
    // Marking a step done that was not in flight is refused, and nothing is recorded.
    let before = w.events(&id).await.len();
    let wrong = ["a".to_owned()];
    let d = Decisions {
        mark_done: &wrong,
        ..Decisions::default()
    };
    let err = w.runner.resume(&id, &d, &opts).await.unwrap_err();
    assert_eq!(err.to_string(), "step `a` was not in flight (steps in flight: b)");
    assert_eq!(w.events(&id).await.len(), before);
    // The operator checked: b did act. The run goes on from c.
    let b = ["b".to_owned()];
    let d = Decisions {
        mark_done: &b,
        ..Decisions::default()
    };
    let out = w.runner.resume(&id, &d, &opts).await.unwrap();
    assert!(matches!(
        out,
        Resumed::Executed(Outcome {
            status: RunStatus::Succeeded,
            ..
        })
    ));
    assert_eq!(w.marks(), ["c"]);
}

const GATED: &str = "apiVersion: runbook/v1
name: gated
version: 1
steps:
  - { id: before, uses: mark, with: { name: before } }
  - { id: ok, uses: approve, needs: [before], with: { message: go? } }
  - { id: after, uses: mark, needs: [ok], with: { name: after } }
finally:
  - { id: tidy, uses: mark, with: { name: tidy } }
";

/// A run of GATED, waiting at its approval.
async fn waiting_at_the_approval() -> (World, Outcome) {
    let w = sqlite().await;
    let out = w.start(GATED).await;
    assert_eq!(out.status, RunStatus::Waiting);
    (w, out)
}

#[tokio::test(flavor = "current_thread")]
async fn an_approval_waits_and_only_an_answer_to_the_plan_it_runs_continues_it() {
    let (w, out) = waiting_at_the_approval().await;
    let opts = RunOptions::default();
    assert_eq!(w.marks(), ["before"], "finally waits with the run");
    let mut answer = Answer {
        approve: true,
        who: "bob".into(),
        comment: Some("looks right".into()),
        plan_hash: Some("0000".into()),
        steps: Vec::new(),
        all: false,
    };
    let err = w.runner.answer(&out.run_id, &answer, &opts).await.unwrap_err();
    assert!(matches!(err, RunnerError::OtherPlan { .. }), "{err}");
    assert_eq!(w.marks(), ["before"], "a wrong plan records nothing and runs nothing");
    answer.plan_hash = None;
    let done = w.runner.answer(&out.run_id, &answer, &opts).await.unwrap();
    assert!(matches!(
        done,
        Resumed::Executed(Outcome {
            status: RunStatus::Succeeded,
            ..
        })
    ));
    assert_eq!(w.marks(), ["before", "after", "tidy"]);
    let approved = w.events(&out.run_id).await.into_iter().any(|e| {
        matches!(e, Event::OperatorAction { action, who, step: Some(step), plan_hash: Some(_), .. }
            if action == "approve" && who == "bob" && step == "ok")
    });
    assert!(approved, "the answer is journalled, bound to the plan");
    // Answering again: the run waits for nothing.
    let err = w.runner.answer(&out.run_id, &answer, &opts).await.unwrap_err();
    assert!(matches!(err, RunnerError::Finished { .. }), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn cancelling_a_waiting_run_runs_its_finally_and_ends_it() {
    let (w, out) = waiting_at_the_approval().await;
    let done = w.runner.cancel(&out.run_id, &RunOptions::default()).await.unwrap();
    assert!(
        matches!(&done, Cancelled::AfterHandlers(o) if o.status == RunStatus::Cancelled),
        "{done:?}"
    );
    assert_eq!(w.marks(), ["before", "tidy"], "after never ran; finally did");
    let err = w.runner.cancel(&out.run_id, &RunOptions::default()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("run {} already finished as cancelled", out.run_id)
    );
}

const LOCKED: &str = "apiVersion: runbook/v1
name: locked
version: 1
lock: [db/main]
inputs:
  hang: { type: boolean, default: false }
steps:
  - { id: work, uses: mark, with: { name: work, hang: '{{ inputs.hang }}' } }
";

#[tokio::test(flavor = "current_thread")]
async fn a_held_lock_refuses_a_second_run_before_anything_is_recorded() {
    let w = sqlite().await;
    let pb = w.playbook(LOCKED);
    let first = RunOptions::default();
    let hang: IndexMap<String, Json> = [("hang".to_owned(), json!(true))].into_iter().collect();
    let holder = w.runner.start(&pb, hang, &first);
    let second = async {
        // Once the first run holds the key (its step runs), a second is refused.
        while !w.marks().contains(&"work started".to_owned()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let err = w
            .runner
            .start(&pb, IndexMap::new(), &RunOptions::default())
            .await
            .unwrap_err();
        let runs = w.runner.store.runs(None, 10).await.unwrap().len();
        first.signals.stop.cancel();
        (err, runs)
    };
    let (held, (err, runs)) = tokio::join!(holder, second);
    assert!(
        matches!(&err, RunnerError::Locked { key, .. } if key == "db/main"),
        "{err}"
    );
    assert_eq!(err.class(), runbook_runner::ErrorClass::Locked);
    assert_eq!(runs, 1, "the refused run was never recorded");
    assert_eq!(held.unwrap().status, RunStatus::Interrupted);
    // The interrupted run gave its key back: the next run takes it.
    let out = w
        .runner
        .start(&pb, IndexMap::new(), &RunOptions::default())
        .await
        .unwrap();
    assert_eq!(out.status, RunStatus::Succeeded);
}

#[tokio::test(flavor = "current_thread")]
async fn of_two_resumes_at_once_one_runs_the_run_and_the_other_is_told_who_does() {
    let w = sqlite().await;
    let pb = w.playbook(&CHAIN.replace("with: { name: c }", "with: { name: c, hang: true }"));
    let id = crashed(&w, &pb).await;
    let one = RunOptions::default();
    let two = RunOptions::default();
    let d = Decisions::default();
    let stopper = async {
        // The one that runs it hangs in `c`: stop it there.
        while !w.marks().contains(&"c started".to_owned()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        one.signals.stop.cancel();
        two.signals.stop.cancel();
    };
    let (a, b, ()) = tokio::join!(w.runner.resume(&id, &d, &one), w.runner.resume(&id, &d, &two), stopper);
    let (ran, refused) = match (a, b) {
        (Ok(r), Err(e)) | (Err(e), Ok(r)) => (r, e),
        other => panic!("exactly one resume runs the run: {other:?}"),
    };
    assert!(matches!(
        ran,
        Resumed::Executed(Outcome {
            status: RunStatus::Interrupted,
            ..
        })
    ));
    assert!(
        matches!(&refused, RunnerError::Busy { holder: Holder::Process(pid), .. } if *pid == std::process::id()),
        "{refused}"
    );
    assert_eq!(w.marks(), ["b", "c started"], "b ran once");
}

#[tokio::test(flavor = "current_thread")]
async fn a_missing_secret_or_a_template_that_cannot_render_refuses_before_anything_is_recorded() {
    let w = sqlite().await;
    let pb = w.playbook(
        "apiVersion: runbook/v1
name: guarded
version: 1
secrets: [DEPLOY_TOKEN]
steps:
  - { id: a, uses: mark, with: { name: '{{ env.NOWHERE }}' } }
",
    );
    let err = w
        .runner
        .start(&pb, IndexMap::new(), &RunOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RunnerError::MissingSecrets { .. }), "{err}");
    assert!(err.to_string().contains("DEPLOY_TOKEN"), "{err}");
    let mut runner = w.runner.clone();
    runner.env.insert("DEPLOY_TOKEN".into(), "s3cr3t".into());
    let err = runner
        .start(&pb, IndexMap::new(), &RunOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RunnerError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("NOWHERE"), "{err}");
    assert!(w.runner.store.runs(None, 10).await.unwrap().is_empty());
    assert!(w.marks().is_empty());
}

/// Tells what it is told, as lines.
#[derive(Default)]
struct Told(Mutex<Vec<String>>);

impl runbook_runner::follow::Follower for Told {
    fn recorded(&self, _: &str, rec: &runbook_state::Recorded) {
        let name = format!("{:?}", rec.event);
        let name = name.split([' ', '{']).next().unwrap_or_default().to_owned();
        self.0.lock().unwrap().push(format!("{} {name}", rec.seq));
    }
    fn log(&self, _: i64, line: &LogLine) {
        self.0.lock().unwrap().push(format!("log {}", line.line));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_follower_is_told_everything_after_its_cursor_until_the_run_stops_or_it_leaves() {
    use runbook_runner::follow::{Cursor, Followed, follow};
    let (w, out) = waiting_at_the_approval().await;
    let stop = runbook_core::kind::CancellationToken::new();
    let poll = Duration::from_millis(20);
    let told = Told::default();
    let all = follow(
        w.runner.store.as_ref(),
        &out.run_id,
        Cursor::default(),
        &told,
        &stop,
        poll,
    )
    .await
    .unwrap();
    assert_eq!(
        all,
        Followed::Stopped(RunStatus::Waiting),
        "a run waiting for a person is where following ends"
    );
    let seen = told.0.lock().unwrap().clone();
    assert_eq!(seen.first().map(String::as_str), Some("1 RunStarted"), "{seen:?}");
    assert!(seen.iter().any(|l| l.ends_with("StepWaiting")), "{seen:?}");
    // From a cursor: only what came after it.
    let later = Told::default();
    let last = i64::try_from(seen.len()).unwrap();
    follow(
        w.runner.store.as_ref(),
        &out.run_id,
        Cursor {
            event: last - 1,
            log: 0,
        },
        &later,
        &stop,
        poll,
    )
    .await
    .unwrap();
    assert_eq!(later.0.lock().unwrap().len(), 1, "{:?}", later.0.lock().unwrap());
    // A run still running: the follower leaves when asked, with its cursor.
    let pb = w.playbook(CHAIN);
    let id = crashed(&w, &pb).await;
    let leave = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
    };
    let quiet = Told::default();
    let (left, ()) = tokio::join!(
        follow(w.runner.store.as_ref(), &id, Cursor::default(), &quiet, &stop, poll),
        leave
    );
    assert_eq!(left.unwrap(), Followed::Left(Cursor { event: 4, log: 0 }));
}

/// What a receiver got: each request's signature header and body.
type Received = Arc<Mutex<Vec<(Option<String>, Json)>>>;

/// A webhook receiver on loopback; the first `fail` requests get a 500.
fn receiver(fail: usize) -> (String, Received) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Received::default();
    let seen = got.clone();
    std::thread::spawn(move || {
        let mut served = 0;
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let (mut length, mut signature) = (0, None);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("x-runbook-signature:") {
                    signature = line.split_once(':').map(|(_, v)| v.trim().to_owned());
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            served += 1;
            let code = if served <= fail {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 {code}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            if served > fail {
                let body: Json = serde_json::from_slice(&body).unwrap();
                seen.lock().unwrap().push((signature, body));
            }
        }
    });
    (url, got)
}

#[tokio::test(flavor = "current_thread")]
async fn a_playbooks_hooks_hear_of_its_runs_signed_and_retried_from_any_runner() {
    let (all_url, all) = receiver(1);
    let (failed_url, failed) = receiver(0);
    let mut w = sqlite().await;
    w.runner.env.insert("HOOK_KEY".into(), "k3y".into());
    let text = format!(
        "{GATED}secrets: [HOOK_KEY]\nnotify:\n  - {{ webhook: \"{all_url}\", secret: HOOK_KEY }}\n  - {{ webhook: \"{failed_url}\", on: [failed] }}\n"
    );
    let pb = w.playbook(&text);
    let opts = RunOptions::default();
    let out = w.runner.start(&pb, IndexMap::new(), &opts).await.unwrap();
    assert_eq!(out.status, RunStatus::Waiting);
    let answer = Answer {
        approve: true,
        who: "bob".into(),
        comment: None,
        plan_hash: None,
        steps: Vec::new(),
        all: false,
    };
    w.runner.answer(&out.run_id, &answer, &opts).await.unwrap();
    // The runner waited for its notifications before letting the run go.
    let got = all.lock().unwrap().clone();
    let events: Vec<&str> = got.iter().map(|(_, b)| b["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["started", "waiting", "succeeded"],
        "the first try got a 500 and was tried again"
    );
    assert_eq!(got[1].1["step"], "ok");
    assert!(
        got[1].1["text"]
            .as_str()
            .unwrap()
            .contains("waits for an approval at `ok`")
    );
    for (signature, body) in &got {
        let expected = runbook_runner::notify::signature("k3y", body.to_string().as_bytes());
        assert_eq!(signature.as_deref(), Some(expected.as_str()), "signed with the secret");
    }
    assert!(
        failed.lock().unwrap().is_empty(),
        "a hook for failures hears nothing of a success"
    );
}

/// A PostgreSQL server from the lab (the queue needs it), stopped on drop.
struct Postgres {
    child: std::process::Child,
    dsn: String,
    _dir: tempfile::TempDir,
}

impl Postgres {
    fn start() -> Postgres {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let lab = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/lab/lab.py");
        let mut child = std::process::Command::new("python3")
            .arg(lab)
            .args(["up", "--watch-stdin", "--hosts", "0", "--postgres", "--dir"])
            .arg(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is needed for the lab: apt-get install python3 (scripts/setup does it)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Ok(info) = serde_json::from_str::<Json>(&line) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the lab did not start (its error is above; scripts/setup installs what it needs)");
        };
        let dsn = info["postgres"]["primary"]["dsn"].as_str().unwrap().to_owned();
        Postgres { child, dsn, _dir: dir }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Closing stdin asks the lab to stop what it started.
        drop(self.child.stdin.take());
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_worker_takes_over_a_run_whose_worker_died_and_the_dead_one_can_never_write_again() {
    let pg = Postgres::start();
    let store: Arc<dyn Store> = Arc::new(runbook_state::PgStore::open(&pg.dsn).await.unwrap());
    let w = World::over(store.clone(), tempfile::tempdir().unwrap());
    let pb = w.playbook(CHAIN);
    let id = w.runner.submit(&pb, IndexMap::new()).await.unwrap();
    assert_eq!(store.run(&id).await.unwrap().status, RunStatus::Queued);
    // Worker "gone" claims it with a 1 s lease, records `a` and starts `b`,
    // then dies: it never renews.
    let lease = store
        .claim("gone", Duration::from_secs(1))
        .await
        .unwrap()
        .expect("a run to claim");
    let dead = Fenced::new(store.clone(), lease);
    let first = Event::RunStarted {
        user: "alice".into(),
        runner: Some("gone".into()),
    };
    dead.append(&id, &first).await.unwrap();
    dead.append_all(&id, &a_done_b_in_flight()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let opts = WorkerOptions {
        name: "heir".into(),
        host: "test".into(),
        concurrency: 1,
        lease_ttl: Duration::from_secs(3),
        poll: Duration::from_millis(100),
        exit_when_idle: true,
    };
    let seen = w.seen.clone();
    let watcher_for = move |_: &str| seen.clone() as Arc<dyn Watcher>;
    work(&w.runner, &opts, &Signals::default(), &watcher_for).await.unwrap();
    assert_eq!(store.run(&id).await.unwrap().status, RunStatus::Succeeded);
    assert_eq!(
        w.marks(),
        ["b", "c"],
        "a is not redone; b was in flight and is idempotent"
    );
    let events = w.events(&id).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::RunResumed { runner: Some(r), .. } if r == "heir")),
        "the heir continued it through the resume path: {events:?}"
    );
    // The dead worker's lease is gone: its next write is refused.
    let late = dead.append(&id, &started("c")).await.unwrap_err();
    assert!(matches!(late, runbook_state::StoreError::Fenced { .. }), "{late}");
    let workers = store.workers().await.unwrap();
    assert!(workers.iter().any(|x| x.name == "heir"), "the worker registered itself");
}
