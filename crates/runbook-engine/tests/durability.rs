//! The journal's promise under failure: a step starts only once the results
//! of the steps it depends on are durable. Here the journal refuses the write
//! that records a step's success (as it does for a worker that lost its lease,
//! or a full disk): the idempotent step that depends on it must never start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use indexmap::IndexMap;
use runbook_core::diag::Source;
use runbook_core::kind::{Effect, OutputDecl, Outputs, Registry, StepContext, StepError, StepKind};
use runbook_core::validate::{Expected, load};
use runbook_engine::exec::{Engine, EngineError, Observer, RunInput, Signals, execute};
use runbook_engine::replay::Replay;
use runbook_state::{
    Event, Journal, Leases, Lock, LockHolder, LogLine, NewRun, Queue, Recorded, RunRecord, RunStatus, SqliteStore,
    StoreError,
};
use serde_json::{Value as Json, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An idempotent step that records that it started.
struct Mark(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl StepKind for Mark {
    fn name(&self) -> &'static str {
        "mark"
    }
    fn summary(&self) -> &'static str {
        "records that it ran"
    }
    fn params_schema(&self) -> Json {
        json!({ "type": "object", "properties": { "name": { "type": "string" } }, "required": ["name"], "additionalProperties": false })
    }
    fn effect(&self, _: &Json) -> Effect {
        Effect::Write
    }
    fn idempotent(&self, _: &Json) -> bool {
        true
    }
    fn outputs(&self) -> &[OutputDecl] {
        &[]
    }
    fn describe(&self, w: &Json) -> String {
        format!("mark {}", w["name"])
    }
    async fn run(&self, _: &StepContext, with: Json) -> Result<Outputs, StepError> {
        self.0
            .lock()
            .unwrap()
            .push(with["name"].as_str().unwrap_or("?").to_owned());
        Ok(Outputs::new())
    }
}

/// SQLite, except that it refuses to record the success of step `a`.
struct Refusing(SqliteStore);

#[async_trait]
impl Journal for Refusing {
    async fn create_run(&self, run: &NewRun, first: &Event) -> Result<(), StoreError> {
        self.0.create_run(run, first).await
    }

    async fn append(&self, run: &str, event: &Event) -> Result<i64, StoreError> {
        self.append_all(run, std::slice::from_ref(event)).await
    }

    async fn append_all(&self, run: &str, events: &[Event]) -> Result<i64, StoreError> {
        if events
            .iter()
            .any(|e| matches!(e, Event::StepSucceeded { step, .. } if step == "a"))
        {
            return Err(StoreError::Unsupported("refused: the lease is gone".into()));
        }
        self.0.append_all(run, events).await
    }

    async fn events(&self, run: &str) -> Result<Vec<Recorded>, StoreError> {
        self.0.events(run).await
    }

    async fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        self.0.run(id).await
    }

    async fn runs(&self, playbook: Option<&str>, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        self.0.runs(playbook, limit).await
    }

    async fn count_runs(&self, status: RunStatus) -> Result<u64, StoreError> {
        self.0.count_runs(status).await
    }

    async fn set_runner(&self, run: &str, pid: Option<u32>) -> Result<(), StoreError> {
        self.0.set_runner(run, pid).await
    }

    async fn replace_text(
        &self,
        run: &str,
        text: &str,
        hash: &str,
        calls: &indexmap::IndexMap<String, String>,
    ) -> Result<(), StoreError> {
        self.0.replace_text(run, text, hash, calls).await
    }

    async fn claim_runner(&self, run: &str, pid: u32, previous: Option<u32>) -> Result<bool, StoreError> {
        self.0.claim_runner(run, pid, previous).await
    }

    async fn append_logs(&self, run: &str, lines: &[LogLine]) -> Result<(), StoreError> {
        self.0.append_logs(run, lines).await
    }

    async fn logs(&self, run: &str, step: Option<&str>, after: i64) -> Result<Vec<(i64, LogLine)>, StoreError> {
        self.0.logs(run, step, after).await
    }

    async fn log_page(
        &self,
        run: &str,
        step: Option<&str>,
        page: runbook_state::Page,
        limit: u32,
    ) -> Result<Vec<(i64, LogLine)>, StoreError> {
        self.0.log_page(run, step, page, limit).await
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        self.0.schema_version().await
    }
}

#[async_trait]
impl Leases for Refusing {
    async fn acquire_lock(&self, key: &str, holder: &LockHolder, ttl: Duration) -> Result<Option<Lock>, StoreError> {
        self.0.acquire_lock(key, holder, ttl).await
    }

    async fn renew_locks(&self, run: &str, ttl: Duration) -> Result<(), StoreError> {
        self.0.renew_locks(run, ttl).await
    }

    async fn release_locks(&self, run: &str) -> Result<(), StoreError> {
        self.0.release_locks(run).await
    }

    async fn locks(&self) -> Result<Vec<Lock>, StoreError> {
        self.0.locks().await
    }

    async fn remove_lock(&self, key: &str) -> Result<Option<Lock>, StoreError> {
        self.0.remove_lock(key).await
    }
}

#[async_trait]
impl Queue for Refusing {}

#[async_trait]
impl runbook_state::Tokens for Refusing {}

struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: &str, _: &Event) {}
    fn log(&self, _: &LogLine) {}
}

#[tokio::test(flavor = "current_thread")]
async fn a_dependent_never_starts_before_its_dependency_is_recorded() {
    let started = Arc::new(Mutex::new(Vec::new()));
    let registry = Registry::new().with(Mark(started.clone()));
    let text = "apiVersion: runbook/v1\nname: chain\nversion: 1\nsteps:\n  - { id: a, uses: mark, with: { name: a } }\n  - { id: b, uses: mark, needs: [a], with: { name: b } }\n  - { id: c, uses: mark, with: { name: c } }\n";
    let loaded = load(
        Source::new("chain.yaml", text.to_owned()),
        &Expected::default(),
        &registry,
    )
    .unwrap_or_else(|_| panic!("the playbook loads"));
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("state.db")).await.unwrap();
    let run = NewRun {
        id: runbook_state::new_run_id(),
        playbook: "chain".into(),
        version: 1,
        text: text.into(),
        hash: "h".into(),
        calls: Default::default(),
        inputs: json!({}),
        user: "t".into(),
    };
    let first = Event::RunStarted {
        user: "t".into(),
        runner: None,
    };
    sqlite.create_run(&run, &first).await.unwrap();
    let engine = Engine {
        registry,
        store: Arc::new(Refusing(sqlite)),
        observer: Arc::new(Quiet),
    };
    let input = RunInput {
        run_id: run.id.clone(),
        playbook: &loaded.playbook,
        calls: &loaded.calls,
        inputs: IndexMap::new(),
        secrets: IndexMap::new(),
        env: IndexMap::new(),
        inventory: Json::Null,
        user: "t".into(),
        started_at: runbook_state::now(),
        replay: Replay::default(),
        max_parallel: 8,
        auto_approve: None,
        mask_key: None,
        lease: None,
    };
    let result = execute(&engine, input, &Signals::default()).await;
    assert!(matches!(result, Err(EngineError::Store(_))), "{result:?}");
    let started = started.lock().unwrap().clone();
    assert!(started.contains(&"a".to_owned()), "{started:?}");
    assert!(
        !started.contains(&"b".to_owned()),
        "b started although a's success was never recorded: {started:?}"
    );
}
