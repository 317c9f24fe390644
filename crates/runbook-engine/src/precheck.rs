//! Before the first step starts: every template whose references are known
//! at start (inputs, secrets, the environment, the inventory, the run, item
//! variables of lists known at start) is rendered once, so that a run that
//! would fail on one (a missing inventory group, an input that does not fit
//! where it goes) is refused before anything changed, naming the step and
//! the field. Templates that read `steps.*` wait for run time.
//!
//! A step whose `when` is known to be false at start is not checked: it will
//! not run.
//!
//! A called playbook (`uses: playbook`) is checked as its steps will run: in
//! its own frame, with the inputs the call gives where they are known at
//! start (typed and defaulted by its declarations); a template of it that
//! reads an input only known later waits for run time.

use runbook_core::kind::Registry;
use runbook_core::model::{ForEach, Playbook, Step};
use runbook_core::template::{self, Data, Mode, Renderer, TemplateError};
use runbook_core::validate::Loaded;
use serde_json::{Value as Json, json};
use std::collections::HashSet;

/// A template that cannot render with what the run starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The step path (`roll[web1].deploy`, `finally.notify`).
    pub step: String,
    /// The field (`with.run`, `when`, `for_each`).
    pub field: String,
    /// Why, in words for the person who runs it.
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step `{}`, `{}`: {}", self.step, self.field, self.message)
    }
}

/// The most items of one list checked (each item's templates are rendered).
const ITEMS: usize = 1000;

/// How deep a check follows calls (validation refuses cycles by name).
const DEPTH: usize = 16;

/// Renders every template of the playbook `loaded` (and of the playbooks it
/// calls) known at start against `data` (the run's `inputs`, `env`,
/// `secrets`, `run`, `playbook` and `inventory`).
pub fn check(loaded: &Loaded, registry: &Registry, data: &Json) -> Vec<Refused> {
    let mut c = Checker {
        registry,
        calls: &loaded.calls,
        renderer: Renderer::new(),
        out: Vec::new(),
        depth: 0,
    };
    c.playbook(&loaded.playbook, &Data::new(data.clone()), &Scope::start(), "");
    c.out
}

/// What a template may read at start: its roots (`inputs`, an item
/// variable...), less the inputs of a called playbook that are only known
/// at run time.
#[derive(Clone)]
struct Scope {
    roots: HashSet<String>,
    late: HashSet<String>,
}

impl Scope {
    fn start() -> Scope {
        Scope {
            roots: ["inputs", "env", "secrets", "run", "playbook", "inventory"]
                .into_iter()
                .map(str::to_owned)
                .collect(),
            late: HashSet::new(),
        }
    }
}

struct Checker<'a> {
    registry: &'a Registry,
    /// The playbooks the run calls, by call key.
    calls: &'a indexmap::IndexMap<String, std::sync::Arc<Loaded>>,
    renderer: Renderer,
    out: Vec<Refused>,
    /// How many calls deep the check is.
    depth: usize,
}

/// True if every template in a literal `for_each` list passes `known`.
pub(crate) fn literal_known(items: &[Json], known: impl Fn(&str) -> bool) -> bool {
    items.iter().flat_map(runbook_core::template::strings_in).all(known)
}

/// True if every name the template reads is known (no `steps.*`, no item
/// variable of a list known only at run time, no input a call gives only
/// at run time).
fn known(text: &str, scope: &Scope) -> bool {
    match template::compile(text) {
        Ok(t) => template::usage(&t).references.iter().all(|r| {
            r.in_block
                || (scope.roots.contains(&r.segments[0])
                    && !(r.segments[0] == "inputs" && r.segments.get(1).is_some_and(|n| scope.late.contains(n))))
        }),
        Err(_) => false,
    }
}

/// True if every template in a `with:` reads only what is known at start.
fn all_known(v: &Json, scope: &Scope) -> bool {
    match v {
        Json::String(s) => !template::is_template(s) || known(s, scope),
        Json::Array(a) => a.iter().all(|x| all_known(x, scope)),
        Json::Object(m) => m.values().all(|x| all_known(x, scope)),
        _ => true,
    }
}

impl Checker<'_> {
    fn refuse(&mut self, step: &str, field: &str, message: String) {
        self.out.push(Refused {
            step: step.to_owned(),
            field: field.to_owned(),
            message,
        });
    }

    /// A playbook's steps and handlers, under `prefix` (a call's path).
    fn playbook(&mut self, pb: &Playbook, data: &Data, scope: &Scope, prefix: &str) {
        let under = |list: &str| {
            if prefix.is_empty() {
                list.to_owned()
            } else {
                format!("{prefix}.{list}")
            }
        };
        self.list(&pb.steps, data, scope, prefix);
        self.list(&pb.on_failure, data, scope, &under("on_failure"));
        self.list(&pb.finally, data, scope, &under("finally"));
    }

    /// A called playbook, in its own frame: its inputs are those the call
    /// gives that are known at start (rendered in the caller's frame), typed
    /// and defaulted by its declarations; its secrets, its name and version.
    fn callee(&mut self, step: &Step, pb: &Playbook, data: &Data, scope: &Scope, path: &str) {
        if self.depth >= DEPTH {
            return;
        }
        let given = step
            .with
            .as_ref()
            .and_then(|w| w.get("inputs"))
            .and_then(Json::as_object);
        let mut late = HashSet::new();
        let mut values = serde_json::Map::new();
        for (name, value) in given.into_iter().flatten() {
            if !all_known(value, scope) {
                late.insert(name.clone());
                continue;
            }
            match self.renderer.render_tree(value, data, &[]) {
                Ok(v) => {
                    values.insert(name.clone(), v);
                }
                // Refused with the call's own parameters already.
                Err(_) => return,
            }
        }
        let mut inputs = serde_json::Map::new();
        let before = self.out.len();
        for (name, spec) in pb.inputs.iter().filter(|(name, _)| !late.contains(*name)) {
            let Some(value) = values.get(name).or(spec.default.as_ref()) else {
                continue;
            };
            match runbook_core::inputs::check(name, spec, value) {
                Ok(v) => {
                    inputs.insert(name.clone(), v);
                }
                Err(e) => {
                    let why = format!("`{}` input `{name}`: {}", pb.name, e.message);
                    self.refuse(path, &format!("with.inputs.{name}"), why);
                }
            }
        }
        if self.out.len() > before {
            return;
        }
        let secrets: serde_json::Map<String, Json> = pb
            .secrets
            .iter()
            .filter_map(|s| Some((s.name().to_owned(), data.json().get("secrets")?.get(s.name())?.clone())))
            .collect();
        let mut frame = data.json().clone();
        if let Json::Object(m) = &mut frame {
            m.insert("inputs".to_owned(), Json::Object(inputs));
            m.insert("secrets".to_owned(), Json::Object(secrets));
            m.insert("playbook".to_owned(), json!({ "name": pb.name, "version": pb.version }));
        }
        let inner = Scope { late, ..Scope::start() };
        self.depth += 1;
        self.playbook(pb, &Data::new(frame), &inner, path);
        self.depth -= 1;
    }

    fn list(&mut self, steps: &[Step], data: &Data, scope: &Scope, prefix: &str) {
        for (i, step) in steps.iter().enumerate() {
            let seg = step.id.clone().unwrap_or_else(|| format!("{}", i + 1));
            let path = if prefix.is_empty() {
                seg
            } else {
                format!("{prefix}.{seg}")
            };
            self.step(step, data, scope, &path);
        }
    }

    fn step(&mut self, step: &Step, data: &Data, scope: &Scope, path: &str) {
        if let Some(each) = &step.for_each {
            let var = step.as_.clone().unwrap_or_else(|| "item".to_owned());
            let items = match each {
                ForEach::List(items) if literal_known(items, |t| known(t, scope)) => {
                    match self.renderer.render_items(items, data) {
                        Ok(items) => Some(items),
                        Err((at, e)) => {
                            self.refuse(path, "for_each", format!("item {at}: {e}"));
                            return;
                        }
                    }
                }
                ForEach::List(_) => None,
                ForEach::Template(t) if known(t, scope) => match self.renderer.render_value(t, data, Mode::Plain) {
                    Ok(Json::Array(items)) => Some(items),
                    Ok(other) => {
                        let message = format!("gave {}, not a list", runbook_core::inputs::json_type(&other));
                        self.refuse(path, "for_each", message);
                        return;
                    }
                    Err(e) => {
                        let message = self.explain_items(t, data, &e);
                        self.refuse(path, "for_each", message);
                        return;
                    }
                },
                ForEach::Template(_) => None,
            };
            match items {
                Some(items) => {
                    let mut inner = scope.clone();
                    inner.roots.insert(var.clone());
                    inner.roots.insert("batch".to_owned());
                    let items: Vec<Json> = items.into_iter().take(ITEMS).collect();
                    let batches = crate::exec::batch_values(&self.renderer, step.concurrency.as_ref(), data, &items);
                    for (i, (item, batch)) in items.iter().zip(batches).enumerate() {
                        let mut d = data.clone();
                        if let Json::Object(m) = d.json_mut() {
                            m.insert("batch".to_owned(), batch);
                            m.insert(var.clone(), item.clone());
                        }
                        let ipath = format!("{path}[{}]", crate::plan::item_key(item, i));
                        self.body(step, &d, &inner, &ipath);
                    }
                }
                None => self.body(step, data, scope, &format!("{path}[<{var}>]")),
            }
            return;
        }
        self.body(step, data, scope, path);
    }

    /// The step itself (once per item of a fan-out): its condition, timeout,
    /// parameters, children and handlers.
    fn body(&mut self, step: &Step, data: &Data, scope: &Scope, path: &str) {
        if let Some(cond) = step.when.as_deref().filter(|c| known(c, scope)) {
            match self.renderer.condition(cond, data) {
                // It will be skipped: nothing in it renders.
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => self.refuse(path, "when", describe(&e)),
            }
        }
        if let Some(t) = step.timeout.as_deref().filter(|t| known(t, scope)) {
            match self.renderer.render_str(t, data, Mode::Plain) {
                Ok(text) => {
                    if let Err(e) = runbook_core::inputs::parse_duration(&text) {
                        self.refuse(path, "timeout", e);
                    }
                }
                Err(e) => self.refuse(path, "timeout", describe(&e)),
            }
        }
        if let (Some(uses), Some(with)) = (step.uses.as_deref(), &step.with) {
            if let Some(kind) = self.registry.get(uses) {
                let with = Json::Object(with.clone());
                let shell = self.registry.shell_pointers(kind.name(), &with);
                let deferred = kind.deferred_fields();
                let before = self.out.len();
                self.params(&with, String::new(), data, scope, path, (&shell, deferred));
                // All of it known now: the rendered parameters must fit the
                // kind (a duration input that is not a duration).
                if self.out.len() == before && all_known(&with, scope) {
                    let shell: Vec<&str> = shell.iter().map(String::as_str).collect();
                    if let Ok(rendered) = self.renderer.render_params(&with, data, &shell, deferred) {
                        for (field, why) in self.registry.check_params(uses, &rendered) {
                            self.refuse(path, &field, why);
                        }
                    }
                }
            }
        }
        if let Some(callee) = runbook_core::calls::call_of(step).and_then(|k| self.calls.get(&k)) {
            let callee = callee.clone();
            self.callee(step, &callee.playbook, data, scope, path);
        }
        self.list(step.children(), data, scope, path);
        self.list(&step.on_failure, data, scope, &crate::exec::own_handlers(step, path));
        self.list(step.undo_steps(), data, scope, &format!("{path}.undo"));
    }

    fn params(
        &mut self,
        value: &Json,
        at: String,
        data: &Data,
        scope: &Scope,
        path: &str,
        (shell, deferred): (&[String], &[&str]),
    ) {
        if deferred.contains(&at.as_str()) {
            return;
        }
        match value {
            Json::String(s) if template::is_template(s) && known(s, scope) => {
                let mode = if shell.contains(&at) { Mode::Shell } else { Mode::Plain };
                if let Err(e) = self.renderer.render_value(s, data, mode) {
                    let field = format!("with{}", at.replace('/', "."));
                    self.refuse(path, &field, describe(&e));
                }
            }
            Json::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.params(v, format!("{at}/{i}"), data, scope, path, (shell, deferred));
                }
            }
            Json::Object(m) => {
                for (k, v) in m {
                    self.params(v, format!("{at}/{k}"), data, scope, path, (shell, deferred));
                }
            }
            _ => {}
        }
    }

    /// Why a `for_each` list did not render: a missing inventory group is
    /// named as such.
    fn explain_items(&self, text: &str, data: &Data, e: &TemplateError) -> String {
        let inner = text.trim().trim_start_matches("{{").trim_end_matches("}}").trim();
        if let Some(key) = inner.strip_prefix("lookup inventory.groups ") {
            let name = self
                .renderer
                .render_str(&format!("{{{{{}}}}}", key.trim()), data, Mode::Plain)
                .unwrap_or_else(|_| key.trim().to_owned());
            let groups: Vec<String> = data
                .json()
                .pointer("/inventory/groups")
                .and_then(Json::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            let have = if groups.is_empty() {
                "the inventory has no groups (hint: pass `--inventory FILE`)".to_owned()
            } else {
                format!("its groups are: {}", groups.join(", "))
            };
            return format!("the inventory has no group `{name}`; {have}");
        }
        describe(e)
    }
}

/// A template failure in an operator's words.
fn describe(e: &TemplateError) -> String {
    match e {
        TemplateError::Undefined(path) => format!("`{path}` is not defined"),
        other => other.to_string(),
    }
}

/// The data a run's templates start with (what [`check`] renders against).
pub fn start_data(
    playbook: &Playbook,
    inputs: &indexmap::IndexMap<String, Json>,
    env: &indexmap::IndexMap<String, String>,
    secrets: &indexmap::IndexMap<String, String>,
    inventory: &Json,
    user: &str,
) -> Json {
    json!({
        "inputs": inputs,
        "env": env,
        "secrets": secrets,
        "run": { "id": "<run id>", "user": user, "started_at": "<run start>" },
        "playbook": { "name": playbook.name, "version": playbook.version },
        "inventory": inventory,
    })
}
