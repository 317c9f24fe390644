//! The leases of a playbook's `lock:` keys: rendered from the inputs, taken
//! all or none in one order (so two runs never deadlock), waited for if asked,
//! renewed while the run executes, and given back when it stops. A lease
//! whose runner died expires by its time to live.

use crate::RunnerError;
use indexmap::IndexMap;
use runbook_core::calls;
use runbook_core::model::Playbook;
use runbook_core::template::{Data, Mode, Renderer};
use runbook_core::validate::Loaded;
use runbook_engine::lease::LeaseClock;
use runbook_state::{Lock, LockHolder, Store, StoreError};
use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a run waiting for an approval keeps its lock without a runner
/// (the default expiry of an approval).
pub const WAITING_TTL: Duration = Duration::from_secs(24 * 3600);

/// How often a waiting taker asks again.
const POLL: Duration = Duration::from_millis(200);

/// The playbook's lock keys, rendered from the inputs, and those of every
/// playbook it calls (rendered from the inputs each call gives, with their
/// defaults), sorted and without repeats: a key a callee shares with its
/// caller is taken once, and every run takes its keys in the same order.
/// Empty without `lock:`. A callee's key must be known when the run starts:
/// a call repeated over a list known at start gives one key per item; one
/// that depends on a step's result (or an item of a list a step computes)
/// is refused, never guessed from the callee's defaults.
pub fn keys(
    loaded: &Loaded,
    inputs: &IndexMap<String, Json>,
    env: &IndexMap<String, String>,
) -> Result<Vec<String>, RunnerError> {
    let mut keys = Vec::new();
    collect(loaded, &loaded.playbook, inputs, env, &mut keys, 0)?;
    keys.sort();
    keys.dedup();
    Ok(keys)
}

fn collect(
    root: &Loaded,
    pb: &Playbook,
    inputs: &IndexMap<String, Json>,
    env: &IndexMap<String, String>,
    keys: &mut Vec<String>,
    depth: usize,
) -> Result<(), RunnerError> {
    let data = json!({
        "inputs": inputs,
        "env": env,
        "playbook": { "name": pb.name, "version": pb.version },
    });
    let renderer = Renderer::new();
    for t in pb.lock.as_ref().map(|l| l.as_slice()).unwrap_or_default() {
        let key = renderer
            .render_str(t, &Data::new(data.clone()), Mode::Plain)
            .map_err(|e| RunnerError::LockKey {
                template: t.clone(),
                message: e.to_string(),
            })?;
        keys.push(key);
    }
    // Calls nest as deep as validation allowed; the depth guards a loop.
    if depth > 16 {
        return Ok(());
    }
    let top = pb.steps.iter().chain(&pb.on_failure).chain(&pb.finally);
    for step in top {
        calls_in(root, step, &data, env, keys, depth)?;
    }
    Ok(())
}

/// The keys of the playbooks `step` (and the steps in it) call, each call
/// rendered with what it will really get: once per item where the step or a
/// group around it repeats over a list known at start (`data` holds the
/// item), and refused where an input it gives is not known at start (an item
/// of a list computed by a step, a step's result). A callee's default
/// applies only to an input the call does not give.
fn calls_in(
    root: &Loaded,
    step: &runbook_core::model::Step,
    data: &Json,
    env: &IndexMap<String, String>,
    keys: &mut Vec<String>,
    depth: usize,
) -> Result<(), RunnerError> {
    let renderer = Renderer::new();
    // Each item the step repeats over, bound in the data; one pass without.
    let scopes: Vec<Json> = match &step.for_each {
        None => vec![data.clone()],
        Some(each) => {
            let var = step.as_.as_deref().unwrap_or("item");
            let items = match each {
                runbook_core::model::ForEach::Template(t) => renderer
                    .render_tree(&Json::String(t.clone()), &Data::new(data.clone()), &[])
                    .ok()
                    .and_then(|v| v.as_array().cloned()),
                runbook_core::model::ForEach::List(items) => items
                    .iter()
                    .map(|i| renderer.render_tree(i, &Data::new(data.clone()), &[]).ok())
                    .collect(),
            };
            match items {
                Some(items) => items
                    .into_iter()
                    .map(|item| {
                        let mut d = data.clone();
                        if let Json::Object(m) = &mut d {
                            m.insert(var.to_owned(), item);
                        }
                        d
                    })
                    .collect(),
                // Not known at start: the item is absent, and a call that
                // gives an input from it cannot render it (refused below).
                None => vec![data.clone()],
            }
        }
    };
    let callee = calls::call_of(step).and_then(|k| root.calls.get(&k));
    for scope in &scopes {
        if let Some(callee) = callee.filter(|c| locks_anything(root, &c.playbook)) {
            call_keys(root, step, callee, scope, env, keys, depth)?;
        }
        for child in step.children().iter().chain(&step.on_failure).chain(step.undo_steps()) {
            calls_in(root, child, scope, env, keys, depth)?;
        }
    }
    Ok(())
}

/// The keys of one call of `callee` by `step`, with `scope` as its data.
fn call_keys(
    root: &Loaded,
    step: &runbook_core::model::Step,
    callee: &Loaded,
    scope: &Json,
    env: &IndexMap<String, String>,
    keys: &mut Vec<String>,
    depth: usize,
) -> Result<(), RunnerError> {
    let renderer = Renderer::new();
    let refused = |message: String| RunnerError::LockKey {
        template: format!(
            "{} (called by step `{}`)",
            callee.playbook.name,
            step.id.as_deref().unwrap_or("?")
        ),
        message: format!(
            "`{}` takes a lock, and its key must be known when the run starts: {message} (hint: give the inputs \
             it reads from the run's inputs or a list known at start, not from a step's result)",
            callee.playbook.name
        ),
    };
    let mut callee_inputs: IndexMap<String, Json> = IndexMap::new();
    let mut unknown: Vec<String> = Vec::new();
    let given = step
        .with
        .as_ref()
        .and_then(|w| w.get("inputs"))
        .and_then(Json::as_object);
    for (name, value) in given.into_iter().flatten() {
        match renderer.render_tree(value, &Data::new(scope.clone()), &[]) {
            Ok(v) => {
                callee_inputs.insert(name.clone(), v);
            }
            Err(_) => unknown.push(name.clone()),
        }
    }
    for (name, spec) in &callee.playbook.inputs {
        if let (false, false, Some(d)) = (callee_inputs.contains_key(name), unknown.contains(name), &spec.default) {
            callee_inputs.insert(name.clone(), d.clone());
        }
    }
    let mut callee_keys = Vec::new();
    match collect(root, &callee.playbook, &callee_inputs, env, &mut callee_keys, depth + 1) {
        Ok(()) => {
            keys.extend(callee_keys);
            Ok(())
        }
        Err(RunnerError::LockKey { message, .. }) => Err(refused(match unknown.first() {
            Some(input) => format!("the call gives input `{input}` from a value not known at start ({message})"),
            None => message,
        })),
        Err(other) => Err(other),
    }
}

/// True if `pb` or a playbook it calls takes a lock.
fn locks_anything(root: &Loaded, pb: &Playbook) -> bool {
    pb.lock.is_some()
        || pb
            .all_steps()
            .into_iter()
            .filter_map(|s| calls::call_of(s).and_then(|k| root.calls.get(&k)))
            .any(|c| c.playbook.lock.is_some() || !c.calls.is_empty() && locks_anything(root, &c.playbook))
}

/// How leases are taken.
#[derive(Debug, Clone, Copy)]
pub struct LeaseOptions {
    /// How long a lease lasts unless renewed.
    pub ttl: Duration,
    /// How long to wait for a held key (zero: fail at once).
    pub wait: Duration,
}

/// Takes every key for `holder`, in order, each waiting up to `opts.wait`;
/// all or none (what was taken is given back on failure). `waiting` is told
/// once per key that it waits, and for whom.
pub async fn acquire_all(
    store: &Arc<dyn Store>,
    keys: &[String],
    holder: &LockHolder,
    opts: LeaseOptions,
    waiting: &(dyn Fn(&str, &Lock) + Sync),
) -> Result<(), RunnerError> {
    for key in keys {
        if let Err(e) = acquire(store, key, holder, opts, waiting).await {
            let _ = store.release_locks(&holder.run_id).await;
            return Err(e);
        }
    }
    Ok(())
}

async fn acquire(
    store: &Arc<dyn Store>,
    key: &str,
    holder: &LockHolder,
    opts: LeaseOptions,
    waiting: &(dyn Fn(&str, &Lock) + Sync),
) -> Result<(), RunnerError> {
    let until = Instant::now() + opts.wait;
    let mut said = false;
    loop {
        let lapsed = store
            .locks()
            .await?
            .into_iter()
            .find(|l| l.key == key && l.expired && l.run_id != holder.run_id);
        match store.acquire_lock(key, holder, opts.ttl).await? {
            None => {
                if let Some(prior) = lapsed {
                    fence(store.as_ref(), &prior.run_id).await?;
                }
                return Ok(());
            }
            // A run that ended gives its leases back as it ends; one that
            // holds a lease anyway died between the two (a crash, kill -9):
            // its leases are stale, and freed at once, not after their TTL.
            Some(other) if ended(store.as_ref(), &other.run_id).await => {
                store.release_locks(&other.run_id).await?;
            }
            Some(other) if Instant::now() < until => {
                if !said {
                    waiting(key, &other);
                    said = true;
                }
                tokio::time::sleep(POLL).await;
            }
            Some(other) => {
                return Err(RunnerError::Locked {
                    key: key.to_owned(),
                    holder: Box::new(other),
                });
            }
        }
    }
}

/// The key was taken from run `id`, whose lease had lapsed (its runner
/// paused, or cut off from the state): what it still runs on this host is
/// stopped before this run acts, so the two never act at once. Its runner,
/// on waking, finds its lease gone and records the run interrupted.
async fn fence(store: &dyn Store, id: &str) -> Result<(), RunnerError> {
    if ended(store, id).await {
        return Ok(());
    }
    let replay = runbook_engine::replay::Replay::new(&store.events(id).await?);
    runbook_engine::exec::stop_previous(&replay.contained)
        .await
        .map(|_| ())
        .map_err(|e| RunnerError::Previous(format!("run {id}, whose lock lease lapsed: {e}")))
}

/// Whether the run `id` has ended (a status its runner records just before
/// giving its leases back); a run that waits for a person keeps them.
async fn ended(store: &dyn Store, id: &str) -> bool {
    use runbook_state::RunStatus;
    matches!(
        store.run(id).await.map(|r| r.status),
        Ok(RunStatus::Succeeded
            | RunStatus::Failed
            | RunStatus::Cancelled
            | RunStatus::Interrupted
            | RunStatus::Uncertain)
    )
}

/// The runner's heartbeats: a thread of their own with its own runtime, so
/// that no other work of the process (a long request, a busy step) can keep
/// a renewal from being sent. It lives as long as the process: connections a
/// store opens from it stay usable by the rest.
fn heartbeats() -> Option<&'static tokio::runtime::Handle> {
    static RUNTIME: std::sync::OnceLock<Option<tokio::runtime::Handle>> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("runbook-leases".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

/// Renews the run's leases on `keys` until dropped: every third of the TTL,
/// each renewal given a third of the TTL to answer. Each one that succeeds,
/// with every key still the run's, moves `clock` on; a key another run holds
/// loses the leases at once; renewals that fail leave the clock to run out.
pub struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the heartbeat of run `run_id` (see [`Heartbeat`]).
pub fn heartbeat(
    store: Arc<dyn Store>,
    run_id: String,
    keys: Vec<String>,
    ttl: Duration,
    clock: Arc<LeaseClock>,
) -> Heartbeat {
    let beat = async move {
        // Connections of its own, made in this runtime.
        let store = match store.detached().await {
            Ok(Some(own)) => own,
            _ => store,
        };
        let every = (ttl / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            let sent = Instant::now();
            match tokio::time::timeout(every, renew(store.as_ref(), &run_id, &keys, ttl)).await {
                Ok(Ok(None)) => clock.renewed(sent, ttl),
                Ok(Ok(Some(why))) => {
                    clock.lose(why);
                    return;
                }
                // The state did not answer in time: the clock runs on, and
                // the engine stops the run if it runs out.
                Ok(Err(_)) | Err(_) => {}
            }
            if !clock.valid() {
                return;
            }
        }
    };
    Heartbeat(match heartbeats() {
        Some(h) => h.spawn(beat),
        None => tokio::spawn(beat),
    })
}

/// Renews the run's leases, then checks that each key is still the run's:
/// why it is not, if one is not.
pub async fn renew(
    store: &dyn Store,
    run_id: &str,
    keys: &[String],
    ttl: Duration,
) -> Result<Option<String>, StoreError> {
    store.renew_locks(run_id, ttl).await?;
    let held = store.locks().await?;
    Ok(keys.iter().find_map(|k| match held.iter().find(|l| l.key == *k) {
        Some(l) if l.run_id == run_id => None,
        Some(l) => Some(format!("its lock `{k}` is held by {}", crate::error::describe(l))),
        None => Some(format!("its lock `{k}` was freed (`runbook unlock --force`)")),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use runbook_state::SqliteStore;

    fn holder(run: &str) -> LockHolder {
        LockHolder {
            run_id: run.to_owned(),
            user: "alice".to_owned(),
            pid: None,
        }
    }

    async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(&dir.path().join("state.db")).await.unwrap())
    }

    /// `db/main` held by run a for `ttl` (no waiting), with a's clock.
    async fn held_by_a(dir: &tempfile::TempDir, ttl: Duration) -> (Arc<dyn Store>, LeaseOptions, Arc<LeaseClock>) {
        let store = store(dir).await;
        let opts = LeaseOptions {
            ttl,
            wait: Duration::ZERO,
        };
        acquire_all(&store, &["db/main".into()], &holder("a"), opts, &|_, _| {})
            .await
            .unwrap();
        (store, opts, Arc::new(LeaseClock::new(Instant::now(), ttl)))
    }

    /// Run a's heartbeat on `db/main`.
    fn beat(store: &Arc<dyn Store>, opts: LeaseOptions, clock: &Arc<LeaseClock>) -> Heartbeat {
        heartbeat(
            store.clone(),
            "a".into(),
            vec!["db/main".into()],
            opts.ttl,
            clock.clone(),
        )
    }

    /// Whether run b can take `db/main` now.
    async fn b_takes(store: &Arc<dyn Store>, opts: LeaseOptions) -> bool {
        acquire_all(store, &["db/main".into()], &holder("b"), opts, &|_, _| {})
            .await
            .is_ok()
    }

    const NOW: LeaseOptions = LeaseOptions {
        ttl: Duration::from_secs(60),
        wait: Duration::ZERO,
    };

    #[tokio::test(flavor = "current_thread")]
    async fn a_held_key_refuses_the_second_run_and_it_takes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let quiet = |_: &str, _: &Lock| {};
        acquire_all(&store, &["db/main".into()], &holder("a"), NOW, &quiet)
            .await
            .unwrap();
        // b wants fleet/app (free) and db/main (held): all or none.
        let keys = ["db/main".to_owned(), "fleet/app".to_owned()];
        let err = acquire_all(&store, &keys, &holder("b"), NOW, &quiet).await.unwrap_err();
        assert!(
            matches!(&err, RunnerError::Locked { key, holder } if key == "db/main" && holder.run_id == "a"),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("lock `db/main` is held by run a (alice)"),
            "{err}"
        );
        let held: Vec<String> = store.locks().await.unwrap().into_iter().map(|l| l.key).collect();
        assert_eq!(held, ["db/main"], "b gave back what it took");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiting_run_takes_the_key_once_it_is_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let quiet = |_: &str, _: &Lock| {};
        acquire_all(&store, &["fleet/app".into()], &holder("a"), NOW, &quiet)
            .await
            .unwrap();
        let releaser = {
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                store.release_locks("a").await.unwrap();
            })
        };
        let told = std::sync::Mutex::new(Vec::new());
        let waiting = |key: &str, by: &Lock| told.lock().unwrap().push(format!("{key} by {}", by.run_id));
        let opts = LeaseOptions {
            wait: Duration::from_secs(10),
            ..NOW
        };
        acquire_all(&store, &["fleet/app".into()], &holder("b"), opts, &waiting)
            .await
            .unwrap();
        releaser.await.unwrap();
        assert_eq!(*told.lock().unwrap(), ["fleet/app by a"], "told once that it waits");
        assert_eq!(store.locks().await.unwrap()[0].run_id, "b");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_lease_lives_while_its_heartbeat_renews_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, opts, clock) = held_by_a(&dir, Duration::from_millis(400)).await;
        let beating = beat(&store, opts, &clock);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // Three lifetimes later, still a's, and valid by a's own clock.
        assert!(!b_takes(&store, opts).await);
        assert!(clock.valid(), "{:?}", clock.why());
        // Without its heartbeat, the lease expires and b takes the key.
        drop(beating);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(b_takes(&store, opts).await);
        assert!(!clock.valid(), "a's clock ran out too");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_heartbeat_that_finds_its_key_taken_loses_the_leases_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (store, opts, clock) = held_by_a(&dir, Duration::from_millis(600)).await;
        // Another run took the key (a's lease had lapsed meanwhile).
        store.release_locks("a").await.unwrap();
        assert!(b_takes(&store, opts).await);
        let _beating = beat(&store, opts, &clock);
        tokio::time::timeout(Duration::from_secs(5), clock.lost().cancelled())
            .await
            .expect("lost at the first renewal");
        let why = clock.why().unwrap();
        assert!(why.contains("`db/main` is held by run b"), "{why}");
    }

    #[test]
    fn keys_render_sorted_and_once() {
        let pb: Playbook = serde_json::from_value(json!({
            "apiVersion": "runbook/v1",
            "name": "t",
            "version": 1,
            "lock": ["fleet/app", "db/{{inputs.db}}", "db/{{inputs.db}}"],
            "steps": [],
        }))
        .expect("a playbook");
        let inputs: IndexMap<String, Json> = [("db".to_owned(), json!("billing"))].into_iter().collect();
        let loaded = loaded(pb, IndexMap::new());
        let got = keys(&loaded, &inputs, &IndexMap::new()).unwrap();
        assert_eq!(got, ["db/billing", "fleet/app"]);
        // A key that names nothing is refused with its text.
        let inputs = IndexMap::new();
        let err = keys(&loaded, &inputs, &IndexMap::new()).unwrap_err();
        assert!(err.to_string().starts_with("lock `db/{{inputs.db}}`"), "{err}");
    }

    fn loaded(pb: Playbook, calls: IndexMap<String, Arc<Loaded>>) -> Loaded {
        Loaded {
            playbook: pb,
            source: runbook_core::diag::Source::new("t", ""),
            warnings: Vec::new(),
            calls,
        }
    }

    #[test]
    fn a_callee_s_keys_are_rendered_from_its_call_and_taken_once() {
        let callee: Playbook = serde_json::from_value(json!({
            "apiVersion": "runbook/v1", "name": "failover", "version": 1,
            "inputs": { "cluster": { "type": "string" }, "region": { "type": "string", "default": "eu" } },
            "lock": ["db/{{inputs.cluster}}", "region/{{inputs.region}}"],
            "steps": [],
        }))
        .expect("a playbook");
        let call = |given: Json| {
            let pb: Playbook = serde_json::from_value(json!({
                "apiVersion": "runbook/v1", "name": "drill", "version": 1,
                "lock": "db/{{inputs.db}}",
                "steps": [{ "id": "fail", "uses": "playbook", "with": { "name": "failover", "inputs": given } }],
            }))
            .expect("a playbook");
            let calls = [("failover".to_owned(), Arc::new(loaded(callee.clone(), IndexMap::new())))];
            loaded(pb, calls.into_iter().collect())
        };
        let inputs: IndexMap<String, Json> = [("db".to_owned(), json!("billing"))].into_iter().collect();
        let got = keys(&call(json!({ "cluster": "{{inputs.db}}" })), &inputs, &IndexMap::new()).unwrap();
        assert_eq!(
            got,
            ["db/billing", "region/eu"],
            "the shared key once, the callee's default applied"
        );
        let err = keys(
            &call(json!({ "cluster": "{{steps.x.outputs.db}}" })),
            &inputs,
            &IndexMap::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("must be known when the run starts"), "{err}");
    }

    #[test]
    fn a_callee_s_key_that_reads_an_item_is_rendered_per_item_or_refused() {
        let callee: Playbook = serde_json::from_value(json!({
            "apiVersion": "runbook/v1", "name": "deploy-host", "version": 1,
            "inputs": { "host": { "type": "string", "default": "web1" } },
            "lock": "host/{{inputs.host}}",
            "steps": [],
        }))
        .expect("a playbook");
        let call = |each: Json| {
            let pb: Playbook = serde_json::from_value(json!({
                "apiVersion": "runbook/v1", "name": "roll", "version": 1,
                "inputs": { "hosts": { "type": "list" } },
                "steps": [
                    { "id": "list", "uses": "noop" },
                    { "id": "each", "for_each": each, "as": "h", "steps": [
                        { "id": "one", "uses": "playbook",
                          "with": { "name": "deploy-host", "inputs": { "host": "{{h}}" } } },
                    ] },
                ],
            }))
            .expect("a playbook");
            let calls = [(
                "deploy-host".to_owned(),
                Arc::new(loaded(callee.clone(), IndexMap::new())),
            )];
            loaded(pb, calls.into_iter().collect())
        };
        let inputs: IndexMap<String, Json> = [("hosts".to_owned(), json!(["web2", "web3"]))].into_iter().collect();
        let got = keys(&call(json!("{{inputs.hosts}}")), &inputs, &IndexMap::new()).unwrap();
        assert_eq!(got, ["host/web2", "host/web3"], "one key per item, never the default's");
        let got = keys(&call(json!(["web4"])), &inputs, &IndexMap::new()).unwrap();
        assert_eq!(got, ["host/web4"]);
        let err = keys(&call(json!("{{steps.list.outputs.hosts}}")), &inputs, &IndexMap::new()).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("must be known when the run starts"), "{err}");
        assert!(err.contains("input `host`"), "{err}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_heartbeat_renews_while_the_runner_s_own_thread_is_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let (store, opts, clock) = held_by_a(&dir, Duration::from_millis(600)).await;
        let _beating = beat(&store, opts, &clock);
        // One long piece of work holds the only thread of this runtime (a
        // slow request in a server), three lifetimes of the lease.
        std::thread::sleep(Duration::from_millis(1800));
        assert!(clock.valid(), "renewed meanwhile: {:?}", clock.why());
        assert!(!b_takes(&store, opts).await, "still a's");
    }
}
