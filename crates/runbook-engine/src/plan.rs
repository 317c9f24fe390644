//! `plan`: exactly what a run would do, computed without doing any of it.
//!
//! Every step in execution order, with its parameters rendered from the inputs,
//! the outputs of earlier steps shown as typed placeholders
//! (`<steps.build.outputs.stdout: string>`), each step marked read, write or
//! unknown, parallel stages visible, and `for_each` expanded when its list is
//! known before the run (it depends only on inputs). Conditions that depend
//! only on inputs are decided here; the others are shown as decided at run time.

use crate::order::execution_order;
use indexmap::IndexMap;
use runbook_core::kind::{Effect, Registry};
use runbook_core::model::{Concurrency, CountOrPercent, ForEach, Playbook, ResumePolicy, Retry, Step};
use runbook_core::template::{self, Data, Mode, Renderer, TemplateError};
use runbook_core::validate::Loaded;
use serde::Serialize;
use serde_json::{Value as Json, json};
use std::sync::Arc;

/// The whole plan of a run.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Plan {
    /// The playbook's name.
    pub playbook: String,
    /// Its version.
    pub version: u32,
    /// What it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The inputs the run would start with (defaults applied).
    pub inputs: IndexMap<String, Json>,
    /// The lock keys, rendered (comma-separated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// Defaults for every step (timeout, retry), in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub defaults: Vec<String>,
    /// The steps, in execution order.
    pub steps: Vec<PlanStep>,
    /// Run if the playbook fails.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<PlanStep>,
    /// Run at the end whatever happens.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<PlanStep>,
}

impl Plan {
    /// Every step of the plan, nested ones (groups, items, called
    /// playbooks, handlers) included, in the plan's order.
    pub fn all(&self) -> Vec<&PlanStep> {
        fn walk<'p>(steps: &'p [PlanStep], out: &mut Vec<&'p PlanStep>) {
            for s in steps {
                out.push(s);
                walk(&s.children, out);
                walk(&s.on_failure, out);
                walk(&s.undo, out);
            }
        }
        let mut out = Vec::new();
        for list in [&self.steps, &self.on_failure, &self.finally] {
            walk(list, &mut out);
        }
        out
    }

    /// The call of `kind` at `path` (not a `for_each`, whose items are
    /// addressed one by one), or a hint naming the nearest or every path
    /// such calls have.
    pub fn call_of(&self, path: &str, kind: &str) -> Result<&PlanStep, String> {
        let calls: Vec<&PlanStep> = self
            .all()
            .into_iter()
            .filter(|s| s.uses.as_deref() == Some(kind) && s.for_each.is_none())
            .collect();
        calls.iter().find(|s| s.path == path).copied().ok_or_else(|| {
            runbook_core::diag::suggestion(path, calls.iter().map(|s| s.path.as_str())).unwrap_or_else(|| {
                let paths: Vec<&str> = calls.iter().map(|s| s.path.as_str()).collect();
                format!("its `{kind}` steps: {}", paths.join(", "))
            })
        })
    }
}

/// What the plan knows about a step's condition.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "decided")]
pub enum When {
    /// No condition, or it is true already.
    Runs,
    /// The condition is false: the step will be skipped.
    Skipped {
        /// The condition.
        condition: String,
    },
    /// Depends on earlier steps: decided during the run.
    AtRunTime {
        /// The condition.
        condition: String,
    },
}

/// How a `for_each` step will fan out.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct FanOut {
    /// The item variable.
    pub var: String,
    /// The items, when known before the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<Json>>,
    /// The expression that gives them, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// Concurrency as written or rendered (`1`, `25%`, `[1, 25%, 100%]`).
    pub concurrency: String,
    /// Failures tolerated before the rest are not started.
    pub max_failures: String,
}

/// One step of the plan.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PlanStep {
    /// The step path, e.g. `roll[web2].deploy`; what logs and resume use.
    pub path: String,
    /// The name to show.
    pub name: String,
    /// The stage within its list; steps with the same stage run in parallel.
    pub stage: usize,
    /// Ids of the siblings it waits for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// The kind, for calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    /// Read, write or unknown, for calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<Effect>,
    /// Whether resume may safely run it again.
    pub idempotent: bool,
    /// What the call will do, in one line.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Its parameters, rendered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with: Option<Json>,
    /// Its condition.
    pub when: When,
    /// Timeout, retry and continue_on_error, in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<String>,
    /// Fan-out, for `for_each` steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub for_each: Option<FanOut>,
    /// The group's steps (per item when the items are known).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<PlanStep>,
    /// Run if this step fails.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<PlanStep>,
    /// Compensation if the run fails after this step completed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undo: Vec<PlanStep>,
    /// Problems found while planning (a template that cannot render yet).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What the step would touch, looked up read-only by `plan --live`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub live: Vec<String>,
}

impl PlanStep {
    fn new(path: &str, name: &str, step: &Step) -> Self {
        PlanStep {
            path: path.to_owned(),
            name: name.to_owned(),
            stage: 1,
            after: Vec::new(),
            uses: step.uses.clone(),
            effect: None,
            idempotent: step.idempotent.unwrap_or(false),
            description: String::new(),
            with: None,
            when: When::Runs,
            policy: Vec::new(),
            for_each: None,
            children: Vec::new(),
            on_failure: Vec::new(),
            undo: Vec::new(),
            notes: Vec::new(),
            live: Vec::new(),
        }
    }
}

/// Facts about the run the plan is for.
#[derive(Debug, Clone, Default)]
pub struct PlanContext {
    /// The environment the templates' `env.*` reads.
    pub env: IndexMap<String, String>,
    /// The user the run would be recorded under.
    pub user: String,
    /// What templates see as `inventory` (null without one).
    pub inventory: Json,
}

/// The values of a playbook's secrets that can be read without running
/// anything: those in the environment and in files (not commands, Vault or
/// AWS).
fn known_secrets(playbook: &Playbook, env: &IndexMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for spec in &playbook.secrets {
        if let Some(v) = spec.env_var().and_then(|var| env.get(var)) {
            out.push(v.trim_end_matches(['\r', '\n']).to_owned());
        }
        if let runbook_core::model::SecretSpec::Full(s) = spec {
            if let Some(v) = s.file.as_deref().and_then(|f| std::fs::read_to_string(f).ok()) {
                out.push(v.trim_end_matches(['\r', '\n']).to_owned());
            }
        }
    }
    out
}

/// The template data a playbook's steps start from in a plan: its inputs,
/// placeholders for its secrets, no step results yet.
fn start_data(playbook: &Playbook, inputs: &IndexMap<String, Json>, pctx: &PlanContext) -> Data {
    let secrets: serde_json::Map<String, Json> = playbook
        .secrets
        .iter()
        .map(|s| (s.name().to_owned(), Json::String(format!("<secret {}>", s.name()))))
        .collect();
    // A secret read from the environment is as secret as `secrets.X`: a plan
    // (which viewers of the API see too) shows `env.X` as the same
    // placeholder, never the value.
    let masker = crate::secrets::Masker::new(known_secrets(playbook, &pctx.env).iter().map(String::as_str));
    let mut env: IndexMap<String, String> = pctx.env.iter().map(|(k, v)| (k.clone(), masker.text(v))).collect();
    for spec in &playbook.secrets {
        if let Some(slot) = spec.env_var().and_then(|var| env.get_mut(var)) {
            *slot = format!("<secret {}>", spec.name());
        }
    }
    for var in runbook_core::model::CREDENTIAL_VARS {
        if let Some(slot) = env.get_mut(*var) {
            *slot = format!("<secret {var}>");
        }
    }
    Data::new(json!({
        "inputs": inputs,
        "env": env,
        "secrets": secrets,
        "steps": {},
        "run": { "id": "<run id>", "user": pctx.user, "started_at": "<run start>" },
        "playbook": { "name": playbook.name, "version": playbook.version },
        "inventory": pctx.inventory,
    }))
}

/// Plans a run of a loaded playbook (and the playbooks it calls, nested
/// under the steps that call them) with already-checked `inputs`.
pub fn plan(loaded: &Loaded, inputs: &IndexMap<String, Json>, registry: &Registry, pctx: &PlanContext) -> Plan {
    let playbook = &loaded.playbook;
    // An input that holds a secret is shown masked, and so is all that is
    // made of it (items, paths, parameters): the secrets a plan can know
    // without running anything are those in the environment and in files.
    let masker = crate::secrets::Masker::new(known_secrets(playbook, &pctx.env).iter().map(String::as_str));
    let inputs: IndexMap<String, Json> = inputs.iter().map(|(k, v)| (k.clone(), masker.json(v))).collect();
    let inputs = &inputs;
    let ctx = start_data(playbook, inputs, pctx);
    let planner = Planner {
        registry,
        renderer: Renderer::new(),
        calls: &loaded.calls,
        pctx,
    };
    let lock = playbook.lock.as_ref().map(|keys| {
        keys.as_slice()
            .iter()
            .map(|l| planner.text(l, &ctx).unwrap_or_else(|e| format!("{l} ({e})")))
            .collect::<Vec<_>>()
            .join(", ")
    });
    Plan {
        playbook: playbook.name.clone(),
        version: playbook.version,
        description: playbook.description.clone(),
        inputs: inputs.clone(),
        lock,
        defaults: playbook.defaults.as_ref().map_or_else(Vec::new, |d| {
            planner.policy(&Step {
                timeout: d.timeout.clone(),
                retry: d.retry.clone(),
                ..Step::default()
            })
        }),
        steps: planner.list(&playbook.steps, &ctx, ""),
        on_failure: planner.list(&playbook.on_failure, &ctx, "on_failure"),
        finally: planner.list(&playbook.finally, &ctx, "finally"),
    }
}

/// `plan --live`: asks each call's kind to look, read-only, at what it would
/// touch (see `StepKind::preview`), with the real secrets put in place of the
/// plan's `<secret NAME>` placeholders. Whatever a kind reports is masked.
/// Calls that read outputs of earlier steps cannot be looked at yet and say so.
pub async fn preview(
    plan: &mut Plan,
    registry: &Registry,
    secrets: &IndexMap<String, String>,
    cancel: &runbook_core::kind::CancellationToken,
) {
    let masker = crate::secrets::Masker::new(secrets.values().map(String::as_str));
    let fill = |v: &Json| with_secrets(v, secrets);
    let mut pending: Vec<&mut PlanStep> = Vec::new();
    for list in [&mut plan.steps, &mut plan.on_failure, &mut plan.finally] {
        pending.extend(list.iter_mut());
    }
    while let Some(step) = pending.pop() {
        if !matches!(step.when, When::Skipped { .. }) {
            look(step, registry, &fill, &masker, cancel).await;
        }
        for list in [&mut step.children, &mut step.on_failure, &mut step.undo] {
            pending.extend(list.iter_mut());
        }
    }
}

async fn look(
    step: &mut PlanStep,
    registry: &Registry,
    fill: &impl Fn(&Json) -> Json,
    masker: &crate::secrets::Masker,
    cancel: &runbook_core::kind::CancellationToken,
) {
    let (Some(kind), Some(with)) = (step.uses.as_deref().and_then(|u| registry.get(u)), &step.with) else {
        return;
    };
    if !kind.can_preview(with) {
        return;
    }
    let with = fill(with);
    if !step.notes.is_empty() || with.to_string().contains("<steps.") {
        step.live
            .push("cannot look yet: reads outputs of earlier steps".to_owned());
        return;
    }
    step.live = match kind.preview(with, cancel).await {
        Ok(Some(lines)) if lines.is_empty() => vec!["nothing".to_owned()],
        Ok(Some(lines)) => lines.iter().map(|l| masker.text(l)).collect(),
        Ok(None) => Vec::new(),
        Err(e) => vec![format!("cannot look: {}", masker.text(&e.message))],
    };
}

/// `with` with each `<secret NAME>` placeholder replaced by the secret's value.
pub fn with_secrets(v: &Json, secrets: &IndexMap<String, String>) -> Json {
    match v {
        Json::String(s) if s.contains("<secret ") => {
            let mut s = s.clone();
            for (name, value) in secrets {
                s = s.replace(&format!("<secret {name}>"), value);
            }
            Json::String(s)
        }
        Json::Array(a) => Json::Array(a.iter().map(|x| with_secrets(x, secrets)).collect()),
        Json::Object(m) => Json::Object(m.iter().map(|(k, x)| (k.clone(), with_secrets(x, secrets))).collect()),
        other => other.clone(),
    }
}

struct Planner<'a> {
    registry: &'a Registry,
    renderer: Renderer,
    /// The playbooks the plan's playbook calls, by call key.
    calls: &'a IndexMap<String, Arc<Loaded>>,
    pctx: &'a PlanContext,
}

/// The strongest effect among steps and their children (write, then
/// unknown, then read).
fn strongest(steps: &[PlanStep]) -> Effect {
    let mut effect = Effect::Read;
    for s in steps {
        let inner = [s.effect.unwrap_or(Effect::Read), strongest(&s.children)];
        for e in inner {
            effect = match (effect, e) {
                (Effect::Write, _) | (_, Effect::Write) => Effect::Write,
                (Effect::Unknown, _) | (_, Effect::Unknown) => Effect::Unknown,
                _ => Effect::Read,
            };
        }
    }
    effect
}

/// True if a template reads only what is known before the run.
fn known_before_run(text: &str) -> bool {
    match template::compile(text) {
        Ok(t) => template::usage(&t)
            .references
            .iter()
            .all(|r| !matches!(r.segments[0].as_str(), "steps")),
        Err(_) => false,
    }
}

/// A placeholder for a value only known during the run.
fn placeholder(path: &str, ty: &str) -> Json {
    Json::String(format!("<{path}: {ty}>"))
}

/// Inserts `value` at the dotted `path`, creating objects on the way.
fn insert_at(ctx: &mut Json, path: &str, value: Json) {
    let mut node = ctx;
    let segs: Vec<&str> = path.split('.').collect();
    for (i, seg) in segs.iter().enumerate() {
        if !node.is_object() {
            *node = Json::Object(Default::default());
        }
        let Json::Object(map) = node else { return };
        if i + 1 == segs.len() {
            map.insert((*seg).to_owned(), value);
            return;
        }
        node = map
            .entry((*seg).to_owned())
            .or_insert_with(|| Json::Object(Default::default()));
    }
}

impl Planner<'_> {
    /// Renders with placeholders standing in for step results.
    fn render<T>(&self, ctx: &Data, f: impl Fn(&Data) -> Result<T, TemplateError>) -> Result<T, TemplateError> {
        let mut owned: Option<Data> = None;
        for _ in 0..32 {
            match f(owned.as_ref().unwrap_or(ctx)) {
                Err(TemplateError::Undefined(path)) if path.starts_with("steps.") => {
                    let ty = self.output_type(&path);
                    let data = owned.get_or_insert_with(|| ctx.clone());
                    insert_at(data.json_mut(), &path, placeholder(&path, ty));
                }
                other => return other,
            }
        }
        f(owned.as_ref().unwrap_or(ctx))
    }

    fn output_type(&self, path: &str) -> &'static str {
        let segs: Vec<&str> = path.split('.').collect();
        match segs.as_slice() {
            ["steps", _, "status"] => "status",
            ["steps", _, "outputs", name] => self
                .registry
                .kinds()
                .flat_map(|k| k.outputs().iter())
                .find(|o| o.name == *name)
                .map_or("any", |o| o.ty.as_str()),
            _ => "any",
        }
    }

    fn text(&self, text: &str, ctx: &Data) -> Result<String, TemplateError> {
        self.render(ctx, |c| self.renderer.render_str(text, c, Mode::Plain))
    }

    fn list(&self, steps: &[Step], ctx: &Data, prefix: &str) -> Vec<PlanStep> {
        let (order, stage) = execution_order(steps);
        let deps = crate::order::dependencies(steps);
        order
            .into_iter()
            .enumerate()
            .map(|(n, i)| {
                let step = &steps[i];
                let seg = step.id.clone().unwrap_or_else(|| format!("{}", n + 1));
                let path = if prefix.is_empty() {
                    seg
                } else {
                    format!("{prefix}.{seg}")
                };
                let mut p = self.step(step, ctx, &path);
                p.stage = stage[i];
                p.after = deps[i].iter().filter_map(|&j| steps[j].id.clone()).collect();
                p
            })
            .collect()
    }

    fn step(&self, step: &Step, ctx: &Data, path: &str) -> PlanStep {
        let mut p = PlanStep::new(path, step.display_name(), step);
        p.policy = self.policy(step);
        if let Some(cond) = &step.when {
            p.when = self.when(cond, ctx, &mut p.notes);
        }
        if let Some(each) = &step.for_each {
            let var = step.as_.clone().unwrap_or_else(|| "item".to_owned());
            let items = match each {
                ForEach::List(items) if crate::precheck::literal_known(items, known_before_run) => {
                    self.renderer.render_items(items, ctx).ok()
                }
                ForEach::List(items) => Some(items.clone()),
                ForEach::Template(t) if known_before_run(t) => match self.renderer.render_value(t, ctx, Mode::Plain) {
                    Ok(Json::Array(items)) => Some(items),
                    Ok(other) => {
                        p.notes.push(format!("`for_each` rendered {other}, not a list"));
                        None
                    }
                    Err(e) => {
                        p.notes.push(format!("`for_each`: {e}"));
                        None
                    }
                },
                ForEach::Template(_) => None,
            };
            let expression = match each {
                ForEach::Template(t) if items.is_none() => Some(t.clone()),
                _ => None,
            };
            p.for_each = Some(FanOut {
                var: var.clone(),
                concurrency: step
                    .concurrency
                    .as_ref()
                    .map_or("all at once".to_owned(), |c| self.concurrency(c, ctx)),
                max_failures: step
                    .max_failures
                    .as_ref()
                    .map_or("0".to_owned(), |m| self.count(m, ctx)),
                items: items.clone(),
                expression,
            });
            match items {
                Some(items) => {
                    let batches = crate::exec::batch_values(&self.renderer, step.concurrency.as_ref(), ctx, &items);
                    for (i, (item, batch)) in items.iter().zip(batches).enumerate() {
                        let mut ictx = ctx.clone();
                        insert_at(ictx.json_mut(), "batch", batch);
                        insert_at(ictx.json_mut(), &var, item.clone());
                        let ipath = format!("{path}[{}]", item_key(item, i));
                        p.children.push(self.item(step, &ictx, &ipath));
                    }
                }
                None => {
                    let mut ictx = ctx.clone();
                    insert_at(ictx.json_mut(), "batch", placeholder("batch", "list"));
                    insert_at(ictx.json_mut(), &var, placeholder(&var, "item"));
                    p.children.push(self.item(step, &ictx, &format!("{path}[<{var}>]")));
                }
            }
            return p;
        } else {
            let body = self.body(step, ctx, path);
            p.uses = body.uses;
            p.effect = body.effect;
            p.idempotent = body.idempotent;
            p.description = body.description;
            p.with = body.with;
            p.children = body.children;
            p.on_failure = body.on_failure;
            p.notes.extend(body.notes);
        }
        p.on_failure
            .extend(self.list(&step.on_failure, ctx, &crate::exec::own_handlers(step, path)));
        p.undo = self.list(step.undo_steps(), ctx, &format!("{path}.undo"));
        p
    }

    /// One item of a `for_each`: the body, with its own handlers (they run per item).
    fn item(&self, step: &Step, ctx: &Data, path: &str) -> PlanStep {
        let mut p = self.body(step, ctx, path);
        p.on_failure
            .extend(self.list(&step.on_failure, ctx, &crate::exec::own_handlers(step, path)));
        p.undo = self.list(step.undo_steps(), ctx, &format!("{path}.undo"));
        p
    }

    /// The call or group itself (once per item for `for_each`).
    fn body(&self, step: &Step, ctx: &Data, path: &str) -> PlanStep {
        let mut p = PlanStep::new(path, path.rsplit('.').next().unwrap_or(path), step);
        if let Some(kind) = step.uses.as_deref().and_then(|u| self.registry.get(u)) {
            let with = Json::Object(step.with.clone().unwrap_or_default());
            let shell = self.registry.shell_pointers(kind.name(), &with);
            let shell: Vec<&str> = shell.iter().map(String::as_str).collect();
            let rendered = match self.render(ctx, |c| {
                self.renderer
                    .render_params(&with, c, &shell, kind.deferred_fields())
                    .map_err(|(_, e)| e)
            }) {
                Ok(r) => r,
                Err(e) => {
                    p.notes.push(format!("cannot render `with` yet: {e}"));
                    with
                }
            };
            p.effect = Some(self.effect(kind.as_ref(), &rendered));
            p.idempotent = step.idempotent.unwrap_or_else(|| kind.idempotent(&rendered));
            p.description = kind.describe(&rendered);
            if let Some(callee) = runbook_core::calls::call_of(step).and_then(|k| self.calls.get(&k)) {
                self.callee(&mut p, &callee.playbook, &rendered, path);
            }
            p.with = Some(rendered);
        }
        if let Some(children) = &step.steps {
            p.children = self.list(children, ctx, path);
        }
        p
    }

    /// A call of another playbook: its steps nested under the call, planned
    /// with the inputs the call gives (typed and defaulted where they are
    /// known before the run), its `finally` after them and its `on_failure`
    /// with the call's; the call writes if any of its steps does.
    fn callee(&self, p: &mut PlanStep, callee: &Playbook, with: &Json, path: &str) {
        let given: IndexMap<String, Json> = with
            .get("inputs")
            .and_then(Json::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let inputs = runbook_core::inputs::resolve(callee, &given).unwrap_or_else(|_| {
            // Some are only known during the run: shown as given.
            let mut all = given.clone();
            for (name, spec) in &callee.inputs {
                if let (false, Some(d)) = (all.contains_key(name), &spec.default) {
                    all.insert(name.clone(), d.clone());
                }
            }
            all
        });
        let ctx = start_data(callee, &inputs, self.pctx);
        p.description = format!("run playbook {} v{}", callee.name, callee.version);
        p.children = self.list(&callee.steps, &ctx, path);
        // Its `finally` comes after its last stage.
        let last = p.children.iter().map(|c| c.stage).max().unwrap_or(0);
        p.children.extend(
            self.list(&callee.finally, &ctx, &format!("{path}.finally"))
                .into_iter()
                .map(|mut f| {
                    f.stage += last;
                    f
                }),
        );
        p.on_failure = self.list(&callee.on_failure, &ctx, &format!("{path}.on_failure"));
        p.effect = Some(strongest(&p.children));
    }

    /// A kind's effect, combined with the effects of the calls nested in it
    /// (a `wait` that polls a shell command can do whatever that command does).
    fn effect(&self, kind: &dyn runbook_core::kind::StepKind, with: &Json) -> Effect {
        let mut effect = kind.effect(with);
        for ptr in kind.nested_steps() {
            let Some(nested) = with.pointer(ptr) else { continue };
            let Some(k) = nested
                .get("uses")
                .and_then(Json::as_str)
                .and_then(|u| self.registry.get(u))
            else {
                continue;
            };
            let inner = self.effect(k.as_ref(), nested.get("with").unwrap_or(&Json::Null));
            effect = match (effect, inner) {
                (Effect::Write, _) | (_, Effect::Write) => Effect::Write,
                (Effect::Unknown, _) | (_, Effect::Unknown) => Effect::Unknown,
                _ => Effect::Read,
            };
        }
        effect
    }

    fn when(&self, cond: &str, ctx: &Data, notes: &mut Vec<String>) -> When {
        if !known_before_run(cond) {
            return When::AtRunTime {
                condition: cond.to_owned(),
            };
        }
        match self.renderer.condition(cond, ctx) {
            Ok(true) => When::Runs,
            Ok(false) => When::Skipped {
                condition: cond.to_owned(),
            },
            Err(e) => {
                notes.push(format!("`when`: {e}"));
                When::AtRunTime {
                    condition: cond.to_owned(),
                }
            }
        }
    }

    fn count(&self, c: &CountOrPercent, ctx: &Data) -> String {
        match c {
            CountOrPercent::Count(n) => n.to_string(),
            CountOrPercent::Text(t) => self.text(t, ctx).unwrap_or_else(|_| t.clone()),
        }
    }

    fn concurrency(&self, c: &Concurrency, ctx: &Data) -> String {
        // A template that gives a list is a ramp (as the executor reads it).
        if let Concurrency::One(CountOrPercent::Text(t)) = c {
            if let Ok(Json::Array(items)) = self.renderer.render_value(t, ctx, Mode::Plain) {
                let items: Vec<String> = items.iter().map(template::scalar_text).collect();
                return format!("ramp [{}]", items.join(", "));
            }
        }
        match c {
            Concurrency::One(c) => self.count(c, ctx),
            Concurrency::Ramp(r) => format!(
                "ramp [{}]",
                r.iter().map(|c| self.count(c, ctx)).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    fn policy(&self, step: &Step) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(t) = &step.timeout {
            out.push(format!("timeout {t}"));
        }
        match &step.retry {
            Some(Retry::Attempts(n)) if *n > 1 => out.push(format!("{n} attempts")),
            Some(Retry::Full(r)) if r.attempts > 1 || r.until.is_some() => {
                let mut s = format!("{} attempts", r.attempts);
                if let Some(d) = &r.delay {
                    s.push_str(&format!(", {d} apart"));
                }
                if r.backoff.is_some() {
                    s.push_str(", backing off");
                }
                if let Some(u) = &r.until {
                    s.push_str(&format!(", until {u}"));
                }
                out.push(s);
            }
            _ => {}
        }
        if step.continue_on_error {
            out.push("failure does not fail the run".to_owned());
        }
        if step.resume == Some(ResumePolicy::Restart) {
            out.push("resume: starts again from its first step once its on_failure ran".to_owned());
        }
        out
    }
}

/// The key of a `for_each` item in step paths: a string item itself, an object's
/// `name` or `id`, else its position.
pub fn item_key(item: &Json, index: usize) -> String {
    match item {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        Json::Object(m) => m
            .get("name")
            .or_else(|| m.get("id"))
            .map(template::scalar_text)
            .unwrap_or_else(|| index.to_string()),
        _ => index.to_string(),
    }
}

impl Plan {
    /// Counts calls by effect over the whole plan: (read, write, unknown).
    pub fn effects(&self) -> (usize, usize, usize) {
        fn walk(steps: &[PlanStep], acc: &mut (usize, usize, usize)) {
            for s in steps {
                match s.effect {
                    Some(Effect::Read) => acc.0 += 1,
                    Some(Effect::Write) => acc.1 += 1,
                    Some(Effect::Unknown) => acc.2 += 1,
                    None => {}
                }
                walk(&s.children, acc);
            }
        }
        let mut acc = (0, 0, 0);
        walk(&self.steps, &mut acc);
        acc
    }
}
