//! Loading and validating a playbook: text in, a checked [`Playbook`] or every
//! problem with it out.
//!
//! Validation runs in three passes, and collects everything before reporting:
//! 1. YAML to a located tree ([`crate::parse`]).
//! 2. The tree against the JSON Schema generated from [`Playbook`], and each
//!    step's `with:` against its kind's schema. Every violation becomes a
//!    diagnostic at the offending key or value.
//! 3. Meaning, on the located tree (so a malformed step elsewhere does not hide
//!    these): step ids, `needs` (unknown, cycles), kinds, durations, templates
//!    (syntax, helpers, and every reference: declared inputs and secrets, steps
//!    that are guaranteed to have run before the reader), input defaults, and
//!    `name`/`version` against the file's place in the library.
//!
//! Only when nothing is wrong is the tree deserialized into the typed model.
//!
//! Where things are: this file holds the entry points and the header and
//! input checks; `schema_errors` turns schema violations into diagnostics
//! (pass 2); `graph` walks the step lists (ids, `needs`, cycles, what is
//! guaranteed to run before what); `references` checks templates and every
//! reference in them, and the durations and counts of step fields.

use crate::calls::{Callees, NoCallees};
use crate::diag::{Diagnostic, Source, Span, suggestion};
use crate::kind::Registry;
use crate::model::{InputSpec, Playbook};
use crate::parse::{Node, Value};
use crate::template;
use indexmap::IndexMap;
use petgraph::graphmap::DiGraphMap;
use serde_json::Value as Json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

mod calls;
mod graph;
mod references;
mod schema_errors;

use graph::{BitSet, List};

/// What the file's place in the library says the playbook must be.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// The folder name (`playbooks/<name>/`).
    pub name: Option<String>,
    /// The file name's version (`v<N>.yaml`).
    pub version: Option<u32>,
}

/// A playbook that passed validation.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The typed playbook.
    pub playbook: Playbook,
    /// The text it was read from.
    pub source: Source,
    /// Warnings (never errors).
    pub warnings: Vec<Diagnostic>,
    /// Every playbook it calls (`uses: playbook`), directly or not, by call
    /// key ([`crate::calls::spec`]).
    pub calls: IndexMap<String, Arc<Loaded>>,
}

/// A playbook that failed validation, with everything wrong with it.
#[derive(Debug, Clone)]
pub struct Invalid {
    /// The text it was read from.
    pub source: Source,
    /// Errors and warnings, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Invalid {
    /// The number of errors (not warnings).
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
}

/// The template roots a playbook may read besides step and item variables.
pub const ROOTS: &[&str] = &["inputs", "secrets", "env", "steps", "run", "playbook", "inventory"];
/// Guards walks up the step tree.
const MAX_NESTING: usize = 256;
/// What `steps.<id>` exposes.
pub const STEP_FIELDS: &[&str] = &["outputs", "status", "acted"];
/// What `run` exposes.
pub const RUN_FIELDS: &[&str] = &["id", "user", "started_at"];
/// What `playbook` exposes.
pub const PLAYBOOK_FIELDS: &[&str] = &["name", "version"];

fn playbook_schema() -> &'static (Json, Option<jsonschema::Validator>) {
    static SCHEMA: OnceLock<(Json, Option<jsonschema::Validator>)> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema = crate::kind::schema_for::<Playbook>();
        let validator = jsonschema::validator_for(&schema).ok();
        (schema, validator)
    })
}

/// The JSON Schema of the playbook format (without per-kind `with:` schemas).
pub fn base_schema() -> Json {
    playbook_schema().0.clone()
}

/// The playbook schema with each kind's `with:` schema attached by `uses`, so
/// editors check parameters too.
pub fn full_schema(registry: &crate::kind::Registry) -> Json {
    let mut schema = base_schema();
    let mut rules = Vec::new();
    for kind in registry.kinds() {
        let mut params = kind.params_schema();
        // Sub-schemas are referenced from the kind's own `$defs`; lift them.
        let defs = params.as_object_mut().and_then(|o| o.remove("$defs"));
        if let Some(Json::Object(defs)) = defs {
            for (name, def) in defs {
                let key = format!("{}.{name}", kind.name());
                // Definitions refer to each other: rename those references too.
                let def = rewrite_refs(def, kind.name());
                if let Some(all) = schema.get_mut("$defs").and_then(Json::as_object_mut) {
                    all.insert(key, def);
                }
            }
        }
        let params = rewrite_refs(params, kind.name());
        if let Some(o) = params.as_object() {
            let mut o = o.clone();
            o.remove("$schema");
            o.remove("title");
            rules.push(serde_json::json!({
                "if": { "properties": { "uses": { "const": kind.name() } }, "required": ["uses"] },
                "then": { "properties": { "with": Json::Object(o) } },
            }));
        }
    }
    if let Some(step) = schema.pointer_mut("/$defs/Step").and_then(Json::as_object_mut) {
        step.insert("allOf".to_owned(), Json::Array(rules));
    }
    schema
}

fn rewrite_refs(v: Json, kind: &str) -> Json {
    match v {
        Json::Object(m) => Json::Object(
            m.into_iter()
                .map(|(k, v)| {
                    if k == "$ref" {
                        if let Some(name) = v.as_str().and_then(|s| s.strip_prefix("#/$defs/")) {
                            return (k, Json::String(format!("#/$defs/{kind}.{name}")));
                        }
                    }
                    (k, rewrite_refs(v, kind))
                })
                .collect(),
        ),
        Json::Array(a) => Json::Array(a.into_iter().map(|v| rewrite_refs(v, kind)).collect()),
        other => other,
    }
}

/// Checks any located document against a JSON Schema, with the playbook
/// validator's wording and spans (used for inventories and schedules).
pub fn structure(root: &Node, schema: &Json) -> Vec<Diagnostic> {
    let Ok(validator) = jsonschema::validator_for(schema) else {
        return vec![Diagnostic::error(
            "schema",
            "internal: the schema does not compile",
            None,
        )];
    };
    let registry = Registry::new();
    let mut check = Check {
        callees: &NoCallees,
        callee: HashMap::new(),
        registry: &registry,
        text: "",
        root,
        diags: Vec::new(),
        steps: HashMap::new(),
        inputs: Vec::new(),
        secrets: Vec::new(),
        list_ids: HashMap::new(),
        before: Vec::new(),
    };
    let json = root.to_json();
    let errors: Vec<_> = validator.iter_errors(&json).map(|e| e.to_owned()).collect();
    for e in errors {
        check.schema_error(&e, schema, "");
    }
    let mut diags = check.diags;
    diags.sort_by_key(|d| d.span.map(|s| (s.offset, s.len)));
    dedup(&mut diags);
    diags
}

/// Loads and validates a playbook that calls no other (a call is an error
/// saying that sub-playbooks come from a library).
pub fn load(source: Source, expected: &Expected, registry: &Registry) -> Result<Loaded, Invalid> {
    load_with(source, expected, registry, &NoCallees)
}

/// Loads and validates a playbook, and every playbook it calls through
/// `callees`.
pub fn load_with(
    source: Source,
    expected: &Expected,
    registry: &Registry,
    callees: &dyn Callees,
) -> Result<Loaded, Invalid> {
    let root = match crate::parse::parse(&source.text) {
        Ok(root) => root,
        Err(diagnostics) => return Err(Invalid { source, diagnostics }),
    };
    let mut check = Check {
        callees,
        callee: HashMap::new(),
        registry,
        text: &source.text,
        root: &root,
        diags: Vec::new(),
        steps: HashMap::new(),
        inputs: Vec::new(),
        secrets: Vec::new(),
        list_ids: HashMap::new(),
        before: Vec::new(),
    };
    check.all(expected);
    let calls = check.calls();
    let mut diagnostics = check.diags;
    diagnostics.sort_by_key(|d| d.span.map(|s| (s.offset, s.len)));
    dedup(&mut diagnostics);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(Invalid { source, diagnostics });
    }
    match serde_json::from_value::<Playbook>(root.to_json()) {
        Ok(playbook) => Ok(Loaded {
            playbook,
            source,
            warnings: diagnostics,
            calls,
        }),
        Err(e) => {
            diagnostics.push(Diagnostic::error("invalid", format!("invalid playbook: {e}"), None));
            Err(Invalid { source, diagnostics })
        }
    }
}

fn dedup(d: &mut Vec<Diagnostic>) {
    let mut seen = HashSet::new();
    d.retain(|x| seen.insert((x.span.map(|s| s.offset), x.message.clone())));
}

/// What the validator knows about one step id.
#[derive(Debug, Clone)]
struct StepInfo {
    /// The JSON pointer of the step.
    pointer: String,
    /// The list of siblings it is in, and its index there.
    list: usize,
    index: usize,
    /// The step that owns that list (a group, or the step whose handler it is).
    parent: Option<String>,
    /// The kind, for steps that call one.
    uses: Option<String>,
    /// Names declared in its `outputs:` mapping.
    declared_outputs: Vec<String>,
    /// The nearest enclosing `for_each` group (or itself), if any.
    in_for_each: Option<String>,
}

/// One level of where a reader stands: a position in a list of siblings. The
/// reader's own level comes first, then its enclosing group's, and so on.
#[derive(Debug, Clone, Copy)]
struct Level {
    list: usize,
    index: usize,
    /// The step at this position has finished too (handlers, `until`, `outputs`).
    include_self: bool,
}

/// What a step's templates may read.
#[derive(Debug, Clone, Default)]
struct Scope {
    /// Where the reader stands, innermost first.
    levels: Vec<Level>,
    /// Item variables of enclosing `for_each` groups, with the group's id.
    items: Vec<(String, String)>,
    /// The for_each groups the reader is inside.
    for_each: Vec<String>,
    /// In playbook-level handlers, steps may not have run; references are allowed.
    lenient: bool,
}

struct Check<'a> {
    /// Where the playbooks it calls come from.
    callees: &'a dyn Callees,
    /// What each call found, by the step's pointer.
    callee: HashMap<String, Result<Arc<Loaded>, String>>,
    registry: &'a Registry,
    text: &'a str,
    root: &'a Node,
    diags: Vec<Diagnostic>,
    steps: HashMap<String, StepInfo>,
    inputs: Vec<String>,
    secrets: Vec<String>,
    /// List ids by the pointer of the list.
    list_ids: HashMap<String, usize>,
    /// For each list, for each sibling, the siblings it is guaranteed to come after.
    before: Vec<Vec<BitSet>>,
}

impl<'a> Check<'a> {
    fn all(&mut self, expected: &Expected) {
        self.schema();
        self.header(expected);
        self.inputs();
        self.collect_ids();
        let Some(steps) = self.root.get("steps").and_then(Node::items) else {
            if let Some(n) = self.root.get("steps") {
                if n.items().is_none() {
                    return;
                }
            }
            return;
        };
        if steps.is_empty() {
            let span = self.root.pointer_key_span("/steps");
            self.diags.push(
                Diagnostic::error("no-steps", "a playbook needs at least one step", span)
                    .label("empty")
                    .hint("add a step, e.g. `- { id: hello, uses: shell, with: { run: \"echo hello\" } }`"),
            );
        }
        let scope = Scope::default();
        let main = List {
            pointer: "/steps".to_owned(),
            items: steps,
            single: false,
        };
        self.list(&main, &scope, true);
        for key in ["on_failure", "finally"] {
            if let Some(items) = self.root.get(key).and_then(Node::items) {
                let scope = Scope {
                    lenient: true,
                    ..Scope::default()
                };
                let list = List {
                    pointer: format!("/{key}"),
                    items,
                    single: false,
                };
                self.list(&list, &scope, false);
            }
        }
        self.playbook_outputs();
        if let Some(lock) = self.root.get("lock") {
            match lock.items() {
                Some(keys) => {
                    for k in keys {
                        self.template_field(k, &Scope::default(), false);
                    }
                }
                None => self.template_field(lock, &Scope::default(), false),
            }
        }
    }

    // ---- pass 2: structure -------------------------------------------------

    fn header(&mut self, expected: &Expected) {
        if let (Some(want), Some(node)) = (expected.version, self.root.get("version")) {
            if let Value::Int(v) = node.value {
                if v != i64::from(want) {
                    self.diags.push(
                        Diagnostic::error(
                            "version-mismatch",
                            format!("`version: {v}` does not match the file name `v{want}.yaml`"),
                            Some(node.span),
                        )
                        .label(format!("the file says {want}"))
                        .hint(format!("set `version: {want}` or rename the file to `v{v}.yaml`")),
                    );
                }
            }
        }
        if let (Some(want), Some(node)) = (&expected.name, self.root.get("name")) {
            if let Some(name) = node.as_str() {
                if name != want {
                    self.diags.push(
                        Diagnostic::error(
                            "name-mismatch",
                            format!("`name: {name}` does not match its folder `{want}`"),
                            Some(node.span),
                        )
                        .label(format!("the folder says `{want}`"))
                        .hint(format!("set `name: {want}` or move the file to `playbooks/{name}/`")),
                    );
                }
            }
        }
        if let Some(secrets) = self.root.get("secrets").and_then(Node::items) {
            for s in secrets {
                let name = s.as_str().or_else(|| s.get("name").and_then(Node::as_str));
                if let Some(name) = name {
                    if self.secrets.iter().any(|x| x == name) {
                        self.diags.push(
                            Diagnostic::error(
                                "duplicate-secret",
                                format!("secret `{name}` is declared twice"),
                                Some(s.span),
                            )
                            .label("again here"),
                        );
                    }
                    self.secrets.push(name.to_owned());
                }
                let sources: Vec<&str> = ["env", "file", "command", "aws", "vault"]
                    .into_iter()
                    .filter(|k| s.get(k).is_some())
                    .collect();
                if sources.len() > 1 {
                    self.diags.push(
                        Diagnostic::error(
                            "secret-sources",
                            format!(
                                "secret `{}` names {} sources: {}",
                                name.unwrap_or("?"),
                                sources.len(),
                                sources.join(", ")
                            ),
                            Some(s.span),
                        )
                        .hint("a secret comes from one place: keep one of `env`, `file`, `command`, `aws` or `vault`"),
                    );
                }
            }
        }
        if let Some(hooks) = self.root.get("notify").and_then(Node::items) {
            for h in hooks {
                let kinds = ["webhook", "email"].into_iter().filter(|k| h.get(k).is_some()).count();
                if kinds != 1 {
                    self.diags.push(
                        Diagnostic::error(
                            "notify-target",
                            if kinds == 0 {
                                "a notification goes nowhere".to_owned()
                            } else {
                                "a notification names both a webhook and an email".to_owned()
                            },
                            Some(h.span),
                        )
                        .label("here")
                        .hint("give one of `webhook: URL` or `email: { to: [ADDRESS] }` (two notifications for both)"),
                    );
                }
            }
            for n in hooks.iter().filter_map(|h| h.get("secret")) {
                if let Some(name) = n.as_str().filter(|name| !self.secrets.iter().any(|x| x == name)) {
                    self.diags.push(
                        Diagnostic::error("undefined", format!("undefined secret `{name}`"), Some(n.span))
                            .label("not in `secrets:`")
                            .hint(format!("declare it: `secrets: [{name}]`")),
                    );
                }
            }
        }
        for key in ["rto", "rpo"] {
            if let Some(n) = self.root.pointer(&format!("/objectives/{key}")) {
                self.duration(n);
            }
        }
        if let Some(lat) = self.root.pointer("/objectives/latency") {
            for key in ["p50", "p95", "p99"] {
                if let Some(n) = lat.get(key) {
                    self.duration(n);
                }
            }
        }
        if let Some(d) = self.root.get("defaults") {
            if let Some(t) = d.get("timeout") {
                self.duration(t);
            }
            if let Some(r) = d.get("retry") {
                self.retry(r, &Scope::default());
            }
        }
    }

    fn inputs(&mut self) {
        let Some(entries) = self.root.get("inputs").and_then(Node::entries) else {
            return;
        };
        for (key, node) in entries {
            self.inputs.push(key.name.clone());
            let Ok(spec) = serde_json::from_value::<InputSpec>(node.to_json()) else {
                continue; // structural errors were reported by the schema pass
            };
            if let Some(p) = node.get("pattern") {
                if let Err(e) = regex::Regex::new(p.as_str().unwrap_or_default()) {
                    let first = e.to_string().lines().last().unwrap_or_default().trim().to_owned();
                    self.diags.push(
                        Diagnostic::error(
                            "bad-pattern",
                            format!(
                                "`pattern` of input `{}` is not a valid regular expression: {first}",
                                key.name
                            ),
                            Some(p.span),
                        )
                        .label("here"),
                    );
                    continue;
                }
            }
            if spec.ty == crate::model::InputType::Enum && spec.values.as_ref().is_none_or(Vec::is_empty) {
                self.diags.push(
                    Diagnostic::error(
                        "enum-values",
                        format!("input `{}` is an `enum` without `values`", key.name),
                        Some(key.span),
                    )
                    .label("no values")
                    .hint("list the allowed values: `values: [staging, prod]`"),
                );
                continue;
            }
            for b in ["min", "max"] {
                if let (Some(n), Some(bound)) = (node.get(b), if b == "min" { &spec.min } else { &spec.max }) {
                    if let Err(m) = crate::inputs::bound_value(spec.ty, bound) {
                        self.diags.push(
                            Diagnostic::error("bad-bound", format!("`{b}` of input `{}`: {m}", key.name), Some(n.span))
                                .label("here"),
                        );
                    }
                }
            }
            if let (Some(d), Some(default)) = (node.get("default"), &spec.default) {
                if let Err(e) = crate::inputs::check(&key.name, &spec, default) {
                    self.diags.push(
                        Diagnostic::error(
                            "bad-default",
                            format!("the default of input `{}` is invalid: {}", key.name, e.message),
                            Some(d.span),
                        )
                        .label(format!("not a valid {}", spec.ty.as_str()))
                        .maybe_hint(e.hint),
                    );
                }
            }
        }
    }
}

/// What the unit tests of validate's modules share: a registry with the test
/// kind (`shell`, whose `run` is shell-run) and the diagnostics of a text.
#[cfg(test)]
pub(super) mod testkit {
    use crate::diag::{Severity, Source};
    use crate::kind::Registry;
    use crate::kind::test_kit::Cmd;

    /// `apiVersion`, `name` and `version`, for a playbook's text.
    pub(crate) const HEAD: &str = "apiVersion: runbook/v1\nname: t\nversion: 1\n";

    /// The diagnostics of `text`, as (code, is an error, message).
    pub(crate) fn check(text: &str) -> Vec<(&'static str, bool, String)> {
        let registry = Registry::new().with(Cmd);
        let diags = match super::load(
            Source::new("t.yaml", text.to_owned()),
            &super::Expected::default(),
            &registry,
        ) {
            Ok(loaded) => loaded.warnings,
            Err(invalid) => invalid.diagnostics,
        };
        diags
            .into_iter()
            .map(|d| (d.code, d.severity == Severity::Error, d.message))
            .collect()
    }

    /// Just the codes.
    pub(crate) fn codes(text: &str) -> Vec<&'static str> {
        check(text).into_iter().map(|(c, _, _)| c).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::{HEAD, check, codes};

    #[test]
    fn a_secret_comes_from_one_source_and_is_declared_once() {
        let twice = format!("{HEAD}secrets: [A, A]\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: \"true\" }} }}\n");
        assert_eq!(codes(&twice), ["duplicate-secret"]);
        let two_sources = format!(
            "{HEAD}secrets:\n  - {{ name: a, file: /x, command: \"echo\" }}\nsteps:\n  - {{ id: a, uses: shell, with: {{ run: \"true\" }} }}\n"
        );
        let found = check(&two_sources);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "secret-sources");
        assert!(found[0].2.contains("names 2 sources: file, command"), "{}", found[0].2);
    }

    #[test]
    fn a_notify_hook_signs_only_with_a_declared_secret() {
        let step = "steps:\n  - { id: a, uses: shell, with: { run: \"true\" } }\n";
        let undeclared = format!("{HEAD}notify:\n  - {{ webhook: \"http://h/\", secret: KEY }}\n{step}");
        let found = check(&undeclared);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].2, "undefined secret `KEY`");
        let declared = format!(
            "{HEAD}secrets: [KEY]\nnotify:\n  - {{ webhook: \"http://h/\", secret: KEY, on: [failed] }}\n{step}"
        );
        assert!(codes(&declared).is_empty(), "{:?}", codes(&declared));
        let bad_moment = format!("{HEAD}notify:\n  - {{ webhook: \"http://h/\", on: [exploded] }}\n{step}");
        assert!(!codes(&bad_moment).is_empty(), "an unknown moment is refused");
    }
}
