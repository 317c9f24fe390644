//! Templates: Handlebars in strict mode, with the rules of the playbook format.
//!
//! - **Types survive**: a value that is exactly one `{{path}}` takes the JSON value
//!   at that path (a list stays a list). A single helper call (`{{len inputs.hosts}}`)
//!   keeps the type of its result (a `lookup` that finds a list gives the list);
//!   text results are read as YAML scalars (`3` is an integer).
//!   Anything else renders to a string.
//! - **Shell fields** (the fields a kind runs through a shell) never hold a
//!   value's text: `{{x}}` becomes a reference to an environment variable of
//!   the command (`deploy "${RUNBOOK_INPUTS_RELEASE}"`), set in the step's
//!   `env:` beside the field (see [`crate::shell`]). `{{{x}}}` inserts raw text,
//!   code by the playbook's choice, and is flagged by `validate`.
//! - **Conditions** must render `true` or `false`; anything else is an error.
//! - **Strict**: an undefined reference is an error, never an empty string.
//!
//! [`usage`] walks a template's AST so `validate` can check every path
//! before anything runs.

use handlebars::template::{Parameter, Template, TemplateElement};
use handlebars::{Context, Handlebars, Helper, PathSeg, RenderContext, RenderErrorReason, Renderable, StringOutput};
use serde_json::Value as Json;
use thiserror::Error;

/// True if the text contains a template expression.
pub fn is_template(s: &str) -> bool {
    s.contains("{{")
}

/// How expressions are inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As they are.
    Plain,
    /// Shell-quoted (`{{x}}`), for fields that a shell runs.
    Shell,
}

/// A template that failed to compile or render.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TemplateError {
    /// The text is not a valid template.
    #[error("template syntax error: {message}")]
    Syntax {
        /// What the parser said.
        message: String,
        /// 1-based line and column inside the template text, when known.
        pos: Option<(usize, usize)>,
    },
    /// A path is not defined.
    #[error("undefined reference `{0}`")]
    Undefined(String),
    /// A condition rendered something other than `true` or `false`.
    #[error("condition rendered `{0}`, which is neither `true` nor `false`")]
    NotBoolean(String),
    /// Any other rendering failure.
    #[error("template error: {0}")]
    Render(String),
}

pub use crate::shell::Bound;
pub use crate::shell::quote as shell_quote;
use crate::shell::{CLOSE, OPEN, bind_marked, value_names};

fn mark_value(v: &str) -> String {
    let clean: String = v.chars().filter(|c| *c != OPEN && *c != CLOSE).collect();
    format!("{OPEN}{clean}{CLOSE}")
}

/// The helpers available in templates besides Handlebars' built-ins.
pub const EXTRA_HELPERS: &[&str] = &["json", "join", "default"];

/// Every helper name a template may call.
pub fn helper_names() -> impl Iterator<Item = &'static str> {
    [
        "eq", "ne", "gt", "gte", "lt", "lte", "and", "or", "not", "len", "if", "unless", "each", "with", "lookup",
    ]
    .into_iter()
    .chain(EXTRA_HELPERS.iter().copied())
}

/// The values templates read (`inputs`, `steps`, ...), prepared once for many
/// renderings.
#[derive(Debug, Clone)]
pub struct Data(Context);

impl Data {
    /// Wraps a JSON object.
    pub fn new(json: Json) -> Self {
        Data(Context::from(json))
    }

    /// The values.
    pub fn json(&self) -> &Json {
        self.0.data()
    }

    /// The values, to change.
    pub fn json_mut(&mut self) -> &mut Json {
        self.0.data_mut()
    }
}

impl From<Json> for Data {
    fn from(json: Json) -> Self {
        Data::new(json)
    }
}

/// Compiles and renders templates. Cheap to share; build one per process.
pub struct Renderer {
    plain: Handlebars<'static>,
    shell: Handlebars<'static>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Renderer")
    }
}

impl Default for Renderer {
    fn default() -> Self {
        Renderer::new()
    }
}

/// A helper that maps its parameters (missing ones are null) to a text. The
/// text is a value, so handlebars escapes it like any other: in a shell field it
/// is bound to a variable of the command (`{{{...}}}` alone inserts it raw).
struct TextHelper(fn(&[Json]) -> String);

impl handlebars::HelperDef for TextHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<handlebars::ScopedJson<'rc>, handlebars::RenderError> {
        let params: Vec<Json> = (0..2)
            .map(|i| h.param(i).map_or(Json::Null, |p| p.value().clone()))
            .collect();
        Ok(handlebars::ScopedJson::Derived(Json::String((self.0)(&params))))
    }
}

/// `{{json value}}`: the value as JSON.
fn json_text(p: &[Json]) -> String {
    p[0].to_string()
}

/// `{{join list sep}}`: the items joined by `sep` (default `,`).
fn join_text(p: &[Json]) -> String {
    let sep = p[1].as_str().unwrap_or(",");
    match &p[0] {
        Json::Array(v) => v.iter().map(scalar_text).collect::<Vec<_>>().join(sep),
        other => scalar_text(other),
    }
}

/// `{{default value fallback}}`: the fallback when the value is null or empty.
fn default_text(p: &[Json]) -> String {
    match &p[0] {
        Json::Null => scalar_text(&p[1]),
        Json::String(s) if s.is_empty() => scalar_text(&p[1]),
        other => scalar_text(other),
    }
}

/// The text of a value as it is inserted into a string.
pub fn scalar_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

impl Renderer {
    /// A renderer with the playbook helpers.
    pub fn new() -> Self {
        let build = |mode: Mode| {
            let mut hb = Handlebars::new();
            hb.set_strict_mode(true);
            hb.set_prevent_indent(true);
            match mode {
                Mode::Plain => hb.register_escape_fn(handlebars::no_escape),
                Mode::Shell => hb.register_escape_fn(mark_value),
            }
            hb.register_helper("json", Box::new(TextHelper(json_text)));
            hb.register_helper("join", Box::new(TextHelper(join_text)));
            hb.register_helper("default", Box::new(TextHelper(default_text)));
            hb
        };
        Renderer {
            plain: build(Mode::Plain),
            shell: build(Mode::Shell),
        }
    }

    /// Renders a text to a string.
    pub fn render_str(&self, text: &str, data: &Data, mode: Mode) -> Result<String, TemplateError> {
        if !is_template(text) {
            return Ok(text.to_owned());
        }
        let tpl = compile(text)?;
        self.render_compiled(&tpl, text, data, mode)
    }

    /// Renders a shell field under the contract: the script with a reference
    /// for each value, and the variables that carry the values.
    pub fn render_shell(&self, text: &str, data: &Data) -> Result<Bound, TemplateError> {
        if !is_template(text) {
            return Ok(Bound {
                script: text.to_owned(),
                vars: Vec::new(),
            });
        }
        self.bound(&compile(text)?, text, data)
    }

    fn bound(&self, tpl: &Template, text: &str, data: &Data) -> Result<Bound, TemplateError> {
        let marked = self.render_marked(tpl, text, data, Mode::Shell)?;
        bind_marked(&marked, &value_names(text)).map_err(|r| TemplateError::Render(r.to_string()))
    }

    /// Renders a text; in shell mode the script alone (its values' variables
    /// come from [`Renderer::render_shell`]).
    fn render_compiled(&self, tpl: &Template, text: &str, data: &Data, mode: Mode) -> Result<String, TemplateError> {
        match mode {
            Mode::Plain => self.render_marked(tpl, text, data, mode),
            Mode::Shell => Ok(self.bound(tpl, text, data)?.script),
        }
    }

    fn render_marked(&self, tpl: &Template, text: &str, data: &Data, mode: Mode) -> Result<String, TemplateError> {
        let hb = match mode {
            Mode::Plain => &self.plain,
            Mode::Shell => &self.shell,
        };
        if mode == Mode::Shell && text.contains([OPEN, CLOSE]) {
            return Err(TemplateError::Render(
                "the command contains a reserved character (U+E000 or U+E001)".to_owned(),
            ));
        }
        let mut out = StringOutput::new();
        let mut rc = RenderContext::new(None);
        tpl.render(hb, &data.0, &mut rc, &mut out).map_err(render_error)?;
        out.into_string().map_err(|e| TemplateError::Render(e.to_string()))
    }

    /// Renders a text to a typed value (see the module docs).
    pub fn render_value(&self, text: &str, data: &Data, mode: Mode) -> Result<Json, TemplateError> {
        if !is_template(text) {
            return Ok(Json::String(text.to_owned()));
        }
        let tpl = compile(text)?;
        if mode == Mode::Plain {
            match single_expression(&tpl) {
                Some(Single::Path(segs)) => {
                    return lookup(data.json(), &segs)
                        .cloned()
                        .ok_or_else(|| TemplateError::Undefined(segs.join(".")));
                }
                Some(Single::Helper) => {
                    if let Some(v) = self.typed_helper(text, data)? {
                        return Ok(v);
                    }
                    let s = self.render_compiled(&tpl, text, data, mode)?;
                    return Ok(scalar_from_text(&s));
                }
                None => {}
            }
        }
        self.render_compiled(&tpl, text, data, mode).map(Json::String)
    }

    /// The value of a text that is one helper call, keeping its type: a
    /// `lookup` that finds a list gives the list. Text results are read as YAML
    /// scalars. `None` when the text is not a plain `{{helper ...}}`.
    fn typed_helper(&self, text: &str, data: &Data) -> Result<Option<Json>, TemplateError> {
        let Some(expr) = text.trim().strip_prefix("{{").and_then(|t| t.strip_suffix("}}")) else {
            return Ok(None);
        };
        if expr.starts_with(['{', '~', '#', '/', '!', '>', '^']) || expr.ends_with('~') {
            return Ok(None);
        }
        let wrapped = format!("{{{{json ({})}}}}", expr.trim());
        let Ok(tpl) = compile(&wrapped) else { return Ok(None) };
        let out = self.render_compiled(&tpl, &wrapped, data, Mode::Plain)?;
        Ok(serde_json::from_str::<Json>(&out).ok().map(|v| match v {
            Json::String(s) => scalar_from_text(&s),
            other => other,
        }))
    }

    /// Renders a condition, which must come out `true` or `false`.
    pub fn condition(&self, text: &str, data: &Data) -> Result<bool, TemplateError> {
        let out = self.render_str(text, data, Mode::Plain)?;
        match out.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(TemplateError::NotBoolean(other.to_owned())),
        }
    }

    /// Renders a step's `with:` for its kind: strings at `shell` pointers in
    /// shell mode (their values' variables added to the `env` object beside
    /// each), and the `deferred` pointers (fields the kind renders itself, such
    /// as `wait`'s `until`) left exactly as written.
    pub fn render_params(
        &self,
        with: &Json,
        data: &Data,
        shell: &[&str],
        deferred: &[&str],
    ) -> Result<Json, (String, TemplateError)> {
        let mut with = with.clone();
        let mut kept = Vec::new();
        for ptr in deferred {
            if let Some(v) = with.pointer_mut(ptr) {
                kept.push((*ptr, v.take()));
            }
        }
        let mut rendered = self.render_tree(&with, data, shell)?;
        for (ptr, v) in kept {
            if let Some(slot) = rendered.pointer_mut(ptr) {
                *slot = v;
            }
        }
        Ok(rendered)
    }

    /// Renders each item of a literal list (a `for_each:` written as a list),
    /// typed; an error's place starts with the item's index.
    pub fn render_items(&self, items: &[Json], ctx: &Data) -> Result<Vec<Json>, (String, TemplateError)> {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                self.render_tree(item, ctx, &[])
                    .map_err(|(at, e)| (format!("{i}{at}"), e))
            })
            .collect()
    }

    /// Renders every string inside a JSON value (a step's `with:`), typed; strings
    /// at `shell_fields` (JSON pointers) are rendered in shell mode, and the
    /// variables their values travel in are added to the `env` object beside
    /// each (created if missing; a variable of the playbook's own `env:` with the
    /// same name is refused).
    pub fn render_tree(
        &self,
        value: &Json,
        ctx: &Data,
        shell_fields: &[&str],
    ) -> Result<Json, (String, TemplateError)> {
        let mut bound = Vec::new();
        let mut out = self.render_tree_at(value, ctx, shell_fields, &mut String::new(), &mut bound)?;
        for (at, vars) in bound {
            let parent = at.rsplit_once('/').map_or("", |(p, _)| p);
            let env_at = format!("{parent}/env");
            let Some(Json::Object(owner)) = out.pointer_mut(parent) else {
                continue;
            };
            let env = owner
                .entry("env")
                .or_insert_with(|| Json::Object(serde_json::Map::new()));
            let Json::Object(env) = env else {
                return Err((
                    env_at,
                    TemplateError::Render("`env` must be a map of names to values".to_owned()),
                ));
            };
            for (name, value) in vars {
                match env.get(&name) {
                    Some(Json::String(v)) if *v == value => {}
                    Some(_) => {
                        return Err((
                            format!("{env_at}/{name}"),
                            TemplateError::Render(format!(
                                "`{name}` is the name of a variable that carries a value into the command; name yours otherwise"
                            )),
                        ));
                    }
                    None => {
                        env.insert(name, Json::String(value));
                    }
                }
            }
        }
        Ok(out)
    }

    fn render_tree_at(
        &self,
        value: &Json,
        ctx: &Data,
        shell_fields: &[&str],
        at: &mut String,
        bound: &mut Vec<(String, Vec<(String, String)>)>,
    ) -> Result<Json, (String, TemplateError)> {
        Ok(match value {
            Json::String(s) if shell_fields.contains(&at.as_str()) => {
                let b = self.render_shell(s, ctx).map_err(|e| (at.clone(), e))?;
                if !b.vars.is_empty() {
                    bound.push((at.clone(), b.vars));
                }
                Json::String(b.script)
            }
            Json::String(s) => self.render_value(s, ctx, Mode::Plain).map_err(|e| (at.clone(), e))?,
            Json::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = at.len();
                    at.push_str(&format!("/{i}"));
                    out.push(self.render_tree_at(item, ctx, shell_fields, at, bound)?);
                    at.truncate(len);
                }
                Json::Array(out)
            }
            Json::Object(map) => {
                let mut out = serde_json::Map::with_capacity(map.len());
                for (k, v) in map {
                    let len = at.len();
                    at.push('/');
                    at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    out.insert(k.clone(), self.render_tree_at(v, ctx, shell_fields, at, bound)?);
                    at.truncate(len);
                }
                Json::Object(out)
            }
            other => other.clone(),
        })
    }
}

fn render_error(e: handlebars::RenderError) -> TemplateError {
    match e.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => TemplateError::Undefined(path.clone()),
        // Strict mode's word for a `lookup` (or a subexpression) that found nothing.
        RenderErrorReason::MissingVariable(None) => TemplateError::Render(
            "a `lookup` found nothing: the key is not there (check the name, e.g. the inventory group or host)"
                .to_owned(),
        ),
        RenderErrorReason::TemplateError(t) => TemplateError::Syntax {
            message: t.reason().to_string(),
            pos: t.pos(),
        },
        RenderErrorReason::HelperNotFound(h) => TemplateError::Render(format!("unknown helper `{h}`")),
        other => TemplateError::Render(other.to_string()),
    }
}

/// Every string inside a JSON value, at any depth.
pub fn strings_in(v: &Json) -> Vec<&str> {
    fn walk<'x>(v: &'x Json, out: &mut Vec<&'x str>) {
        match v {
            Json::String(s) => out.push(s),
            Json::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Json::Object(m) => m.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

/// Reads text as a YAML plain scalar: `3` is an integer, `true` a boolean.
pub fn scalar_from_text(s: &str) -> Json {
    use crate::parse::{Value, resolve_plain};
    match resolve_plain(s.trim()) {
        Value::Int(i) => Json::from(i),
        Value::Float(f) => serde_json::Number::from_f64(f).map_or(Json::String(s.to_owned()), Json::Number),
        Value::Bool(b) => Json::Bool(b),
        _ => Json::String(s.to_owned()),
    }
}

/// Compiles a template.
pub fn compile(text: &str) -> Result<Template, TemplateError> {
    Template::compile(text).map_err(|e| TemplateError::Syntax {
        message: e.reason().to_string(),
        pos: e.pos(),
    })
}

enum Single {
    Path(Vec<String>),
    Helper,
}

/// If the whole template (ignoring surrounding whitespace) is one `{{...}}`.
fn single_expression(t: &Template) -> Option<Single> {
    let mut found = None;
    for el in &t.elements {
        match el {
            TemplateElement::RawString(s) if s.trim().is_empty() => {}
            TemplateElement::Expression(h) if found.is_none() => {
                found = Some(if h.params.is_empty() && h.hash.is_empty() {
                    match &h.name {
                        Parameter::Path(handlebars::Path::Relative((segs, _))) => Single::Path(named_segments(segs)?),
                        Parameter::Name(n) if !helper_names().any(|h| h == n) => Single::Path(split_path(n)),
                        _ => return None,
                    }
                } else {
                    Single::Helper
                });
            }
            _ => return None,
        }
    }
    found
}

fn named_segments(segs: &[PathSeg]) -> Option<Vec<String>> {
    segs.iter()
        .map(|s| match s {
            PathSeg::Named(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn split_path(raw: &str) -> Vec<String> {
    raw.split(['.', '/'])
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_start_matches('[').trim_end_matches(']').to_owned())
        .collect()
}

/// Follows path segments into a JSON value (array items by index).
pub fn lookup<'a>(mut v: &'a Json, segs: &[String]) -> Option<&'a Json> {
    for s in segs {
        v = match v {
            Json::Object(m) => m.get(s)?,
            Json::Array(a) => a.get(s.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// A path a template reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The path's segments: `["steps", "build", "outputs", "stdout"]`.
    pub segments: Vec<String>,
    /// The path as written.
    pub raw: String,
    /// Inside an `each`/`with` block, where unqualified paths are relative.
    pub in_block: bool,
}

/// What a template reads and calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every path it reads.
    pub references: Vec<Reference>,
    /// Every helper it calls.
    pub helpers: Vec<String>,
    /// True if it has a raw `{{{...}}}` insertion.
    pub raw_insertion: bool,
}

/// Lists what a compiled template reads, calls and inserts raw.
pub fn usage(t: &Template) -> Usage {
    let mut u = Usage::default();
    walk(&t.elements, false, &mut u);
    u
}

fn walk(elements: &[TemplateElement], in_block: bool, u: &mut Usage) {
    for el in elements {
        match el {
            TemplateElement::Expression(h) => walk_helper(h, in_block, u),
            TemplateElement::HtmlExpression(h) => {
                u.raw_insertion = true;
                walk_helper(h, in_block, u);
            }
            TemplateElement::HelperBlock(h) => walk_helper(h, in_block, u),
            _ => {}
        }
    }
}

fn walk_helper(h: &handlebars::template::HelperTemplate, in_block: bool, u: &mut Usage) {
    let is_call = !h.params.is_empty() || !h.hash.is_empty() || h.block;
    match &h.name {
        Parameter::Name(n) if is_call || helper_names().any(|x| x == n) => u.helpers.push(n.clone()),
        Parameter::Name(n) => push_ref(split_path(n), n, in_block, u),
        Parameter::Path(p) => walk_param(&Parameter::Path(p.clone()), in_block, u),
        Parameter::Subexpression(s) => walk(std::slice::from_ref(s.as_element()), in_block, u),
        _ => {}
    }
    for p in h.params.iter().chain(h.hash.values()) {
        walk_param(p, in_block, u);
    }
    let changes_context = matches!(&h.name, Parameter::Name(n) if n == "each" || n == "with");
    for t in h.template.iter().chain(h.inverse.iter()) {
        walk(&t.elements, in_block || changes_context, u);
    }
}

fn walk_param(p: &Parameter, in_block: bool, u: &mut Usage) {
    match p {
        Parameter::Path(handlebars::Path::Relative((segs, raw))) => match named_segments(segs) {
            Some(names) if !names.is_empty() => push_ref(names, raw, in_block, u),
            _ => {}
        },
        Parameter::Name(n) => push_ref(split_path(n), n, in_block, u),
        Parameter::Subexpression(s) => walk(std::slice::from_ref(s.as_element()), in_block, u),
        _ => {}
    }
}

/// The outputs of step `id` that these steps' templates read
/// (`steps.<id>.outputs.<name>`); `*` when one reads them all.
pub fn outputs_read<'s>(steps: impl IntoIterator<Item = &'s crate::model::Step>, id: &str) -> Vec<String> {
    let mut names = Vec::new();
    for step in steps {
        for text in step.texts().into_iter().filter(|t| is_template(t)) {
            let Ok(tpl) = compile(text) else { continue };
            for r in usage(&tpl).references {
                if r.segments.first().map(String::as_str) != Some("steps")
                    || r.segments.get(1).map(String::as_str) != Some(id)
                    || r.segments.get(2).map(String::as_str) != Some("outputs")
                {
                    continue;
                }
                let name = r.segments.get(3).cloned().unwrap_or_else(|| "*".to_owned());
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    names
}

fn push_ref(segments: Vec<String>, raw: &str, in_block: bool, u: &mut Usage) {
    if segments.is_empty() || segments[0] == "this" {
        return;
    }
    u.references.push(Reference {
        segments,
        raw: raw.to_owned(),
        in_block,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Data {
        Data::new(json!({
            "inputs": { "hosts": ["web1", "web2"], "batch": 2, "release": "v42", "msg": "it's; rm -rf /" },
            "steps": { "build": { "status": "succeeded", "outputs": { "ok": true } } },
        }))
    }

    #[test]
    fn single_path_keeps_its_type() {
        let r = Renderer::new();
        assert_eq!(
            r.render_value("{{inputs.hosts}}", &ctx(), Mode::Plain),
            Ok(json!(["web1", "web2"]))
        );
        assert_eq!(r.render_value(" {{inputs.batch}} ", &ctx(), Mode::Plain), Ok(json!(2)));
        assert_eq!(
            r.render_value("{{len inputs.hosts}}", &ctx(), Mode::Plain),
            Ok(json!(2))
        );
        assert_eq!(
            r.render_value("n={{inputs.batch}}", &ctx(), Mode::Plain),
            Ok(json!("n=2"))
        );
    }

    #[test]
    fn shell_mode_binds_values_to_variables_and_never_types() {
        let r = Renderer::new();
        assert_eq!(
            r.render_shell("echo {{inputs.msg}}", &ctx()),
            Ok(Bound {
                script: "echo \"${RUNBOOK_INPUTS_MSG}\"".to_owned(),
                vars: vec![("RUNBOOK_INPUTS_MSG".to_owned(), "it's; rm -rf /".to_owned())],
            })
        );
        assert_eq!(
            r.render_value("{{inputs.batch}}", &ctx(), Mode::Shell),
            Ok(json!("\"${RUNBOOK_INPUTS_BATCH}\""))
        );
        assert_eq!(
            r.render_str("{{{inputs.msg}}}", &ctx(), Mode::Shell),
            Ok("it's; rm -rf /".to_owned())
        );
        let with = json!({ "run": "deploy {{inputs.release}}", "env": { "A": "{{inputs.batch}}" } });
        assert_eq!(
            r.render_tree(&with, &ctx(), &["/run"]),
            Ok(json!({
                "run": "deploy \"${RUNBOOK_INPUTS_RELEASE}\"",
                "env": { "A": 2, "RUNBOOK_INPUTS_RELEASE": "v42" }
            }))
        );
        let clash = json!({ "run": "deploy {{inputs.release}}", "env": { "RUNBOOK_INPUTS_RELEASE": "x" } });
        assert!(r.render_tree(&clash, &ctx(), &["/run"]).is_err());
    }

    #[test]
    fn strict_mode_rejects_undefined() {
        let r = Renderer::new();
        assert_eq!(
            r.render_value("{{inputs.nope}}", &ctx(), Mode::Plain),
            Err(TemplateError::Undefined("inputs.nope".into()))
        );
        assert!(matches!(
            r.render_str("x {{inputs.nope}}", &ctx(), Mode::Plain),
            Err(TemplateError::Undefined(_))
        ));
    }

    #[test]
    fn conditions_must_be_boolean() {
        let r = Renderer::new();
        assert_eq!(
            r.condition("{{and (eq inputs.batch 2) steps.build.outputs.ok}}", &ctx()),
            Ok(true)
        );
        assert_eq!(r.condition("{{gt (len inputs.hosts) 5}}", &ctx()), Ok(false));
        assert_eq!(
            r.condition("{{inputs.release}}", &ctx()),
            Err(TemplateError::NotBoolean("v42".into()))
        );
    }

    #[test]
    fn usage_finds_paths_helpers_and_raw() {
        let t = compile("{{#if (eq inputs.env \"prod\")}}{{steps.a.outputs.x}}{{/if}} {{{inputs.cmd}}} {{#each inputs.hosts}}{{this}} {{name}}{{/each}}").expect("compiles");
        let u = usage(&t);
        let paths: Vec<_> = u
            .references
            .iter()
            .map(|r| (r.segments.join("."), r.in_block))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("inputs.env".to_owned(), false),
                ("steps.a.outputs.x".to_owned(), false),
                ("inputs.cmd".to_owned(), false),
                ("inputs.hosts".to_owned(), false),
                ("name".to_owned(), true),
            ]
        );
        assert!(u.raw_insertion);
        assert!(u.helpers.contains(&"eq".to_owned()));
    }

    #[test]
    fn dashes_in_ids_are_paths() {
        let r = Renderer::new();
        let c = Data::new(json!({"steps": {"wait-drained": {"outputs": {"n": 0}}}}));
        assert_eq!(
            r.render_value("{{steps.wait-drained.outputs.n}}", &c, Mode::Plain),
            Ok(json!(0))
        );
    }

    #[test]
    fn a_lookup_that_finds_nothing_says_so_in_words() {
        let r = Renderer::new();
        let e = r
            .render_value("{{lookup inputs.hosts 7}}", &ctx(), Mode::Plain)
            .expect_err("nothing at 7");
        let text = e.to_string();
        assert!(text.contains("`lookup` found nothing"), "{text}");
        assert!(!text.contains("strict mode"), "{text}");
    }

    #[test]
    fn extra_helpers() {
        let r = Renderer::new();
        let c = Data::new(json!({ "hosts": ["a", "b"], "empty": "", "n": 3 }));
        assert_eq!(
            r.render_str("{{join hosts \" \"}}", &c, Mode::Plain),
            Ok("a b".to_owned())
        );
        assert_eq!(
            r.render_str("{{json hosts}}", &c, Mode::Plain),
            Ok(r#"["a","b"]"#.to_owned())
        );
        assert_eq!(
            r.render_str("{{default empty \"x\"}}-{{default n 1}}", &c, Mode::Plain),
            Ok("x-3".to_owned())
        );
    }

    #[test]
    fn shell_quote_cases() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("web-1.example.com"), "web-1.example.com");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("$(id)"), "'$(id)'");
    }
}
