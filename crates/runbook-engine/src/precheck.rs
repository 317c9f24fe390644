//! Before the first step starts: every template whose references are known
//! at start (inputs, secrets, the environment, the inventory, the run, item
//! variables of lists known at start) is rendered once, so that a run that
//! would fail on one (a missing inventory group, an input that does not fit
//! where it goes) is refused before anything changed, naming the step and
//! the field. Templates that read `steps.*` wait for run time.
//!
//! A step whose `when` is known to be false at start is not checked: it will
//! not run.

use runbook_core::kind::Registry;
use runbook_core::model::{ForEach, Playbook, Step};
use runbook_core::template::{self, Data, Mode, Renderer, TemplateError};
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

/// Renders every template of `playbook` known at start against `data` (the
/// run's `inputs`, `env`, `secrets`, `run`, `playbook` and `inventory`).
pub fn check(playbook: &Playbook, registry: &Registry, data: &Json) -> Vec<Refused> {
    let roots: HashSet<String> = ["inputs", "env", "secrets", "run", "playbook", "inventory"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut c = Checker {
        registry,
        renderer: Renderer::new(),
        out: Vec::new(),
    };
    let data = Data::new(data.clone());
    c.list(&playbook.steps, &data, &roots, "");
    c.list(&playbook.on_failure, &data, &roots, "on_failure");
    c.list(&playbook.finally, &data, &roots, "finally");
    c.out
}

struct Checker<'a> {
    registry: &'a Registry,
    renderer: Renderer,
    out: Vec<Refused>,
}

/// True if every template in a literal `for_each` list passes `known`.
pub(crate) fn literal_known(items: &[Json], known: impl Fn(&str) -> bool) -> bool {
    items.iter().flat_map(runbook_core::template::strings_in).all(known)
}

/// True if every name the template reads is known (no `steps.*`, no item
/// variable of a list known only at run time).
fn known(text: &str, roots: &HashSet<String>) -> bool {
    match template::compile(text) {
        Ok(t) => template::usage(&t)
            .references
            .iter()
            .all(|r| r.in_block || roots.contains(&r.segments[0])),
        Err(_) => false,
    }
}

/// True if every template in a `with:` reads only what is known at start.
fn all_known(v: &Json, roots: &HashSet<String>) -> bool {
    match v {
        Json::String(s) => !template::is_template(s) || known(s, roots),
        Json::Array(a) => a.iter().all(|x| all_known(x, roots)),
        Json::Object(m) => m.values().all(|x| all_known(x, roots)),
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

    fn list(&mut self, steps: &[Step], data: &Data, roots: &HashSet<String>, prefix: &str) {
        for (i, step) in steps.iter().enumerate() {
            let seg = step.id.clone().unwrap_or_else(|| format!("{}", i + 1));
            let path = if prefix.is_empty() {
                seg
            } else {
                format!("{prefix}.{seg}")
            };
            self.step(step, data, roots, &path);
        }
    }

    fn step(&mut self, step: &Step, data: &Data, roots: &HashSet<String>, path: &str) {
        if let Some(each) = &step.for_each {
            let var = step.as_.clone().unwrap_or_else(|| "item".to_owned());
            let items = match each {
                ForEach::List(items) if literal_known(items, |t| known(t, roots)) => {
                    match self.renderer.render_items(items, data) {
                        Ok(items) => Some(items),
                        Err((at, e)) => {
                            self.refuse(path, "for_each", format!("item {at}: {e}"));
                            return;
                        }
                    }
                }
                ForEach::List(_) => None,
                ForEach::Template(t) if known(t, roots) => match self.renderer.render_value(t, data, Mode::Plain) {
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
                    let mut inner = roots.clone();
                    inner.insert(var.clone());
                    inner.insert("batch".to_owned());
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
                None => self.body(step, data, roots, &format!("{path}[<{var}>]")),
            }
            return;
        }
        self.body(step, data, roots, path);
    }

    /// The step itself (once per item of a fan-out): its condition, timeout,
    /// parameters, children and handlers.
    fn body(&mut self, step: &Step, data: &Data, roots: &HashSet<String>, path: &str) {
        if let Some(cond) = step.when.as_deref().filter(|c| known(c, roots)) {
            match self.renderer.condition(cond, data) {
                // It will be skipped: nothing in it renders.
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => self.refuse(path, "when", describe(&e)),
            }
        }
        if let Some(t) = step.timeout.as_deref().filter(|t| known(t, roots)) {
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
                self.params(&with, String::new(), data, roots, path, (&shell, deferred));
                // All of it known now: the rendered parameters must fit the
                // kind (a duration input that is not a duration).
                if self.out.len() == before && all_known(&with, roots) {
                    let shell: Vec<&str> = shell.iter().map(String::as_str).collect();
                    if let Ok(rendered) = self.renderer.render_params(&with, data, &shell, deferred) {
                        for (field, why) in self.registry.check_params(uses, &rendered) {
                            self.refuse(path, &field, why);
                        }
                    }
                }
            }
        }
        self.list(step.children(), data, roots, path);
        self.list(&step.on_failure, data, roots, &format!("{path}.on_failure"));
        self.list(step.undo_steps(), data, roots, &format!("{path}.undo"));
    }

    fn params(
        &mut self,
        value: &Json,
        at: String,
        data: &Data,
        roots: &HashSet<String>,
        path: &str,
        (shell, deferred): (&[String], &[&str]),
    ) {
        if deferred.contains(&at.as_str()) {
            return;
        }
        match value {
            Json::String(s) if template::is_template(s) && known(s, roots) => {
                let mode = if shell.contains(&at) { Mode::Shell } else { Mode::Plain };
                if let Err(e) = self.renderer.render_value(s, data, mode) {
                    let field = format!("with{}", at.replace('/', "."));
                    self.refuse(path, &field, describe(&e));
                }
            }
            Json::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.params(v, format!("{at}/{i}"), data, roots, path, (shell, deferred));
                }
            }
            Json::Object(m) => {
                for (k, v) in m {
                    self.params(v, format!("{at}/{k}"), data, roots, path, (shell, deferred));
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
