//! Sub-playbooks: `uses: playbook` runs another playbook of the library as
//! one step.
//!
//! The language side lives here: the call's parameters (`name`, `version`,
//! `inputs`), the [`SubPlaybook`] kind that gives them a schema (the engine
//! runs the call itself: it walks the callee's steps under the step's
//! journal path), and [`Callees`], through which validation asks for the
//! playbook a call names. Two implementations: [`LibraryCallees`] reads the
//! library (a new run), [`StoredCallees`] reads the texts a run stored when
//! it started (resume never follows a library edit).
//!
//! A call is keyed by [`spec`] as written: `name` (the highest version when
//! the run started) or `name@N`. A loaded playbook keeps every playbook it
//! calls, directly or not, in [`Loaded::calls`] under that key.

use crate::diag::Source;
use crate::kind::{Effect, OutputDecl, Outputs, StepContext, StepError, StepKind, plan_params, schema_for};
use crate::library::{Library, LibraryError};
use crate::model::Step;
use crate::validate::{self, Expected, Loaded};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// The `uses:` name of a sub-playbook call.
pub const KIND: &str = "playbook";

/// How deep calls may nest (a guard; cycles are refused by name).
const MAX_DEPTH: usize = 16;

/// The parameters of `uses: playbook`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaybookParams {
    /// The playbook of the library to run (a literal name, not a template).
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]*$"))]
    pub name: String,
    /// The version to run (default: the highest when the run starts; the
    /// run keeps that text, so a resume runs the same one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub version: Option<u32>,
    /// Its inputs (templated), typed and checked against its declaration:
    /// literal values by `validate`, rendered ones when the step starts.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub inputs: IndexMap<String, Json>,
}

/// The key of a call: `name` or `name@N`.
pub fn spec(name: &str, version: Option<u32>) -> String {
    match version {
        Some(v) => format!("{name}@{v}"),
        None => name.to_owned(),
    }
}

/// The key of a step's call, if it calls a playbook.
pub fn call_of(step: &Step) -> Option<String> {
    if step.uses.as_deref() != Some(KIND) {
        return None;
    }
    let with = step.with.as_ref()?;
    let name = with.get("name")?.as_str()?;
    let version = with
        .get("version")
        .and_then(Json::as_u64)
        .and_then(|v| u32::try_from(v).ok());
    Some(spec(name, version))
}

/// The `playbook` kind: its schema and plan line. The engine runs the call
/// (the callee's steps are steps of the run); [`StepKind::run`] is never
/// reached through it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubPlaybook;

#[async_trait::async_trait]
impl StepKind for SubPlaybook {
    fn name(&self) -> &'static str {
        KIND
    }

    fn summary(&self) -> &'static str {
        "run another playbook of the library as one step (its steps are journalled under this one)"
    }

    fn params_schema(&self) -> Json {
        schema_for::<PlaybookParams>()
    }

    fn effect(&self, _with: &Json) -> Effect {
        Effect::Unknown
    }

    fn idempotent(&self, _with: &Json) -> bool {
        false
    }

    fn idempotence(&self) -> String {
        "each of its steps as declared (resume walks into it)".to_owned()
    }

    fn outputs(&self) -> &[OutputDecl] {
        &[]
    }

    fn describe(&self, with: &Json) -> String {
        plan_params::<PlaybookParams>(with).map_or_else(
            || "run a playbook".to_owned(),
            |p| format!("run playbook {}", spec(&p.name, p.version)),
        )
    }

    async fn run(&self, _ctx: &StepContext, _with: Json) -> Result<Outputs, StepError> {
        Err(StepError::new(
            "a sub-playbook call runs inside the engine, not as a kind (hint: this is a bug; report it)",
        ))
    }
}

/// Finds the playbook a call names, loaded and validated with its own
/// calls. The error is one line for the diagnostic at the call.
pub trait Callees {
    /// The playbook `name` (at `version`, or the highest).
    fn callee(&self, name: &str, version: Option<u32>, registry: &crate::kind::Registry)
    -> Result<Arc<Loaded>, String>;
}

/// No library at hand: a call is an error that says so.
pub struct NoCallees;

impl Callees for NoCallees {
    fn callee(&self, name: &str, _: Option<u32>, _: &crate::kind::Registry) -> Result<Arc<Loaded>, String> {
        Err(format!(
            "cannot find `{name}`: sub-playbooks come from a library (hint: run it by name, or with `--playbooks DIR`)"
        ))
    }
}

/// What both implementations share: the names of the playbooks being
/// loaded, outermost first (to name a cycle), the cycle found if any, and
/// what was loaded already.
#[derive(Default)]
struct Walk {
    stack: RefCell<Vec<String>>,
    cycle: RefCell<Option<String>>,
    done: RefCell<HashMap<String, Result<Arc<Loaded>, String>>>,
}

impl Walk {
    fn new(caller: Option<&str>) -> Self {
        Walk {
            stack: RefCell::new(caller.map(str::to_owned).into_iter().collect()),
            ..Walk::default()
        }
    }

    fn load(
        &self,
        name: &str,
        key: String,
        registry: &crate::kind::Registry,
        read: impl FnOnce() -> Result<(Source, Expected), String>,
        callees: &dyn Callees,
    ) -> Result<Arc<Loaded>, String> {
        if let Some(done) = self.done.borrow().get(&key) {
            return done.clone();
        }
        {
            let stack = self.stack.borrow();
            if stack.iter().any(|n| n == name) {
                let mut path: Vec<&str> = stack.iter().map(String::as_str).collect();
                path.push(name);
                let cycle = format!(
                    "`{name}` calls itself: {} (hint: a playbook cannot run itself, directly or not)",
                    path.join(" → ")
                );
                *self.cycle.borrow_mut() = Some(cycle.clone());
                return Err(cycle);
            }
            if stack.len() >= MAX_DEPTH {
                return Err(format!("calls nest deeper than {MAX_DEPTH} playbooks at `{key}`"));
            }
        }
        self.stack.borrow_mut().push(name.to_owned());
        let loaded = read().and_then(|(source, expected)| {
            validate::load_with(source, &expected, registry, callees)
                .map(Arc::new)
                .map_err(|invalid| {
                    let first = invalid.diagnostics.iter().find(|d| d.is_error());
                    // A cycle is told as itself, not as each file it went
                    // through (the callee's first error is the cycle's own).
                    let cycle = self.cycle.borrow().clone();
                    if let (Some(cycle), Some(d)) = (cycle, first) {
                        if cycle.starts_with(&d.message) {
                            return cycle;
                        }
                    }
                    let at = first
                        .and_then(|d| d.span)
                        .map(|s| format!("{}:{}:{}", invalid.source.name, s.line, s.col))
                        .unwrap_or_else(|| invalid.source.name.clone());
                    let what = first.map_or("invalid", |d| d.message.as_str());
                    format!(
                        "`{key}` is invalid ({} error(s)), first at {at}: {what} (hint: `runbook validate {key}`)",
                        invalid.error_count()
                    )
                })
        });
        self.stack.borrow_mut().pop();
        self.done.borrow_mut().insert(key, loaded.clone());
        loaded
    }
}

/// Reads callees from the library, as a new run does.
pub struct LibraryCallees<'l> {
    library: &'l Library,
    walk: Walk,
}

impl<'l> LibraryCallees<'l> {
    /// Callees from `library`, for the playbook named `caller` (so that a
    /// call back to it is named a cycle).
    pub fn new(library: &'l Library, caller: Option<&str>) -> Self {
        LibraryCallees {
            library,
            walk: Walk::new(caller),
        }
    }
}

impl Callees for LibraryCallees<'_> {
    fn callee(
        &self,
        name: &str,
        version: Option<u32>,
        registry: &crate::kind::Registry,
    ) -> Result<Arc<Loaded>, String> {
        let key = spec(name, version);
        self.walk.load(
            name,
            key.clone(),
            registry,
            || {
                let located = self.library.locate_entry(&key).map_err(|e| e.to_string())?;
                let text = std::fs::read_to_string(&located.path).map_err(|e| {
                    LibraryError::Io {
                        path: located.path.display().to_string(),
                        source: e,
                    }
                    .to_string()
                })?;
                Ok((Source::new(located.path.display().to_string(), text), located.expected))
            },
            self,
        )
    }
}

/// Reads callees from the texts a run stored when it started.
pub struct StoredCallees<'t> {
    texts: &'t IndexMap<String, String>,
    run: String,
    walk: Walk,
}

impl<'t> StoredCallees<'t> {
    /// The texts of run `run` of the playbook `caller`, by call key.
    pub fn new(texts: &'t IndexMap<String, String>, run: &str, caller: &str) -> Self {
        StoredCallees {
            texts,
            run: run.to_owned(),
            walk: Walk::new(Some(caller)),
        }
    }
}

impl Callees for StoredCallees<'_> {
    fn callee(
        &self,
        name: &str,
        version: Option<u32>,
        registry: &crate::kind::Registry,
    ) -> Result<Arc<Loaded>, String> {
        let key = spec(name, version);
        self.walk.load(
            name,
            key.clone(),
            registry,
            || {
                let text = self
                    .texts
                    .get(&key)
                    .ok_or_else(|| format!("run {} did not store the playbook `{key}` it calls", self.run))?;
                let source = Source::new(format!("{} (stored with run {})", key, self.run), text.clone());
                let expected = Expected {
                    name: Some(name.to_owned()),
                    version,
                };
                Ok((source, expected))
            },
            self,
        )
    }
}

/// Every playbook `loaded` calls, directly or not, by call key, as texts
/// (what a run stores).
pub fn texts(loaded: &Loaded) -> IndexMap<String, String> {
    loaded
        .calls
        .iter()
        .map(|(k, l)| (k.clone(), l.source.text.to_string()))
        .collect()
}
