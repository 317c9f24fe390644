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

use crate::diag::{Diagnostic, Source, Span, suggestion};
use crate::kind::Registry;
use crate::model::{InputSpec, Playbook};
use crate::parse::{Node, Value};
use crate::template;
use petgraph::graphmap::DiGraphMap;
use serde_json::Value as Json;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

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

/// Loads and validates a playbook.
pub fn load(source: Source, expected: &Expected, registry: &Registry) -> Result<Loaded, Invalid> {
    let root = match crate::parse::parse(&source.text) {
        Ok(root) => root,
        Err(diagnostics) => return Err(Invalid { source, diagnostics }),
    };
    let mut check = Check {
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

/// A small fixed-size bit set: which siblings come before a step.
#[derive(Debug, Clone, Default)]
struct BitSet(Vec<u64>);

impl BitSet {
    fn new(n: usize) -> Self {
        BitSet(vec![0; n.div_ceil(64)])
    }
    fn insert(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }
    fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    fn union(&mut self, other: &BitSet) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
}

/// One list of sibling steps and where it is.
struct List<'n> {
    pointer: String,
    items: &'n [Node],
    /// `undo: {step}` written as one mapping: the item's pointer is the list's.
    single: bool,
}

impl List<'_> {
    fn item_pointer(&self, i: usize) -> String {
        if self.single {
            self.pointer.clone()
        } else {
            format!("{}/{i}", self.pointer)
        }
    }
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

    fn schema(&mut self) {
        let (schema, validator) = playbook_schema();
        let Some(validator) = validator else { return };
        let json = self.root.to_json();
        let errors: Vec<_> = validator.iter_errors(&json).map(|e| e.to_owned()).collect();
        for e in errors {
            self.schema_error(&e, schema, "");
        }
    }

    fn schema_error(&mut self, e: &jsonschema::ValidationError<'_>, schema: &Json, prefix: &str) {
        use jsonschema::error::ValidationErrorKind as K;
        let at = format!("{prefix}{}", e.instance_path().as_str());
        // A template where a number or a choice is expected is checked at run time.
        if let Json::String(s) = &**e.instance() {
            if template::is_template(s)
                && matches!(
                    e.kind(),
                    K::Type { .. } | K::Enum { .. } | K::Pattern { .. } | K::Minimum { .. } | K::Maximum { .. }
                )
            {
                return;
            }
        }
        let node = self.root.pointer(&at);
        let span = node.map(|n| n.span);
        let key = at.rsplit('/').next().unwrap_or("").to_owned();
        let field = if key.is_empty() || key.parse::<usize>().is_ok() {
            "this value".to_owned()
        } else {
            format!("`{key}`")
        };
        let found = node.map_or("nothing", Node::type_name);
        let d = match e.kind() {
            K::AnyOf { context } | K::OneOfNotValid { context } if one_of_constants(context).is_some() => {
                let opts = one_of_constants(context).unwrap_or_default();
                self.not_allowed(&field, node, span, &opts)
            }
            K::AnyOf { context } | K::OneOfNotValid { context } => {
                // Report the errors of the alternative that came closest: the one
                // whose type matches, with the fewest complaints.
                let best = context
                    .iter()
                    .filter(|errs| {
                        !errs
                            .iter()
                            .any(|x| x.instance_path() == e.instance_path() && matches!(x.kind(), K::Type { .. }))
                    })
                    .min_by_key(|errs| errs.len());
                if let Some(errs) = best {
                    for x in errs {
                        self.schema_error(x, schema, prefix);
                    }
                    return;
                }
                let expected = alternatives(context);
                Diagnostic::error("type", format!("{field} must be {expected}, found {found}"), span)
                    .label(format!("{found} here"))
                    .maybe_hint(duration_hint(&key, node))
            }
            K::AdditionalProperties { unexpected } => {
                let allowed = allowed_keys(schema, e.schema_path().as_str());
                for name in unexpected {
                    let ptr = format!("{at}/{}", name.replace('~', "~0").replace('/', "~1"));
                    let kspan = self.root.pointer_key_span(&ptr);
                    let context = describe_location(&at);
                    let hint = suggestion(name, allowed.iter().map(String::as_str)).or_else(|| {
                        (!allowed.is_empty() && allowed.len() <= 12)
                            .then(|| format!("expected one of: {}", allowed.join(", ")))
                    });
                    self.diags.push(
                        Diagnostic::error("unknown-key", format!("unknown key `{name}` {context}"), kspan)
                            .label("not a known key")
                            .maybe_hint(hint),
                    );
                }
                return;
            }
            K::Required { property } => {
                let name = property.as_str().unwrap_or("?");
                let context = describe_location(&at);
                let span = match node {
                    Some(n) if at.is_empty() => Some(Span { len: 0, ..n.span }),
                    Some(n) => n
                        .entries()
                        .and_then(|m| m.first())
                        .map(|(k, _)| k.span)
                        .or(Some(n.span)),
                    None => None,
                };
                Diagnostic::error("missing-key", format!("missing required key `{name}` {context}"), span)
                    .label(format!("`{name}` is missing"))
                    .maybe_hint(required_hint(name))
            }
            K::Format { format } => {
                let text = template::scalar_text(e.instance());
                let (what, hint) = match format.as_str() {
                    "duration" => ("a duration", "write a duration such as `30s`, `5m`, `1h30m` or `250ms`"),
                    "size" => ("a size", "write a size such as `16MB`, `512kB` or a number of bytes"),
                    _ => ("valid", "check the value"),
                };
                Diagnostic::error("format", format!("{field}: `{text}` is not {what}"), span)
                    .label(format!("not {what}"))
                    .hint(hint)
            }
            K::Type { kind } => {
                let expected = type_kind(kind);
                Diagnostic::error("type", format!("{field} must be {expected}, found {found}"), span)
                    .label(format!("{found} here"))
                    .maybe_hint(duration_hint(&key, node))
            }
            K::Enum { options } => {
                let opts: Vec<String> = options
                    .as_array()
                    .map(|a| a.iter().map(template::scalar_text).collect())
                    .unwrap_or_default();
                self.not_allowed(&field, node, span, &opts)
            }
            K::Pattern { pattern } => {
                let given = node.and_then(Node::as_str).unwrap_or_default();
                let (msg, hint) = match key.as_str() {
                    "id" | "name" => (
                        format!("invalid {} `{given}`", if key == "id" { "step id" } else { "name" }),
                        "use letters, digits, `-` and `_`, starting with a letter or digit".to_owned(),
                    ),
                    "as" => (
                        format!("invalid variable name `{given}`"),
                        "use letters, digits and `_`".to_owned(),
                    ),
                    _ => (format!("{field} `{given}` does not match `{pattern}`"), String::new()),
                };
                Diagnostic::error("pattern", msg, span)
                    .label("here")
                    .maybe_hint((!hint.is_empty()).then_some(hint))
            }
            K::Minimum { limit } => {
                Diagnostic::error("range", format!("{field} must be at least {limit}"), span).label("too small")
            }
            K::Maximum { limit } => {
                Diagnostic::error("range", format!("{field} must be at most {limit}"), span).label("too large")
            }
            _ => Diagnostic::error("schema", format!("{field} is invalid: {e}"), span).label("here"),
        };
        self.diags.push(d);
    }

    fn not_allowed(&self, field: &str, node: Option<&Node>, span: Option<Span>, opts: &[String]) -> Diagnostic {
        let given = node.map(|n| template::scalar_text(&n.to_json())).unwrap_or_default();
        let list = opts.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", ");
        Diagnostic::error(
            "not-allowed",
            format!("{field} must be one of {list}, found `{given}`"),
            span,
        )
        .label("not an allowed value")
        .maybe_hint(suggestion(&given, opts.iter().map(String::as_str)))
    }

    // ---- pass 3: meaning ---------------------------------------------------

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

    /// Records every step id (with duplicates reported) and every list of
    /// siblings, in source order, before references are checked.
    fn collect_ids(&mut self) {
        let root = self.root;
        for key in ["steps", "on_failure", "finally"] {
            if let Some(items) = root.get(key).and_then(Node::items) {
                self.collect_list(&format!("/{key}"), items, false, None, None);
            }
        }
    }

    fn collect_list(
        &mut self,
        ptr: &str,
        items: &'a [Node],
        single: bool,
        in_for_each: Option<String>,
        parent: Option<String>,
    ) {
        let list = self.before.len();
        self.before.push(Vec::new());
        self.list_ids.insert(ptr.to_owned(), list);
        for (i, step) in items.iter().enumerate() {
            let sp = if single { ptr.to_owned() } else { format!("{ptr}/{i}") };
            let id = step.get("id").and_then(Node::as_str).map(str::to_owned);
            let for_each = step.get("for_each").is_some();
            let inner = if for_each {
                id.clone().or_else(|| in_for_each.clone())
            } else {
                in_for_each.clone()
            };
            if let Some(id) = &id {
                if let Some(prev) = self.steps.get(id) {
                    let line = self
                        .root
                        .pointer(&prev.pointer)
                        .and_then(|n| n.get("id"))
                        .map_or(0, |n| n.span.line);
                    let span = step.get("id").map(|n| n.span);
                    self.diags.push(
                        Diagnostic::error("duplicate-id", format!("duplicate step id `{id}`"), span)
                            .label("used again here")
                            .hint(format!(
                                "ids are unique across the playbook; `{id}` is first used on line {line}"
                            )),
                    );
                } else {
                    let declared_outputs = step
                        .get("outputs")
                        .and_then(Node::entries)
                        .map(|m| m.iter().map(|(k, _)| k.name.clone()).collect())
                        .unwrap_or_default();
                    let info = StepInfo {
                        pointer: sp.clone(),
                        list,
                        index: i,
                        parent: parent.clone(),
                        uses: step.get("uses").and_then(Node::as_str).map(str::to_owned),
                        declared_outputs,
                        in_for_each: if for_each {
                            Some(id.clone())
                        } else {
                            in_for_each.clone()
                        },
                    };
                    self.steps.insert(id.clone(), info);
                }
            }
            if let Some(children) = step.get("steps").and_then(Node::items) {
                self.collect_list(&format!("{sp}/steps"), children, false, inner.clone(), id.clone());
            }
            if let Some(handlers) = step.get("on_failure").and_then(Node::items) {
                self.collect_list(&format!("{sp}/on_failure"), handlers, false, inner.clone(), id.clone());
            }
            if let Some(u) = step.get("undo") {
                let (items, single) = match u.items() {
                    Some(items) => (items, false),
                    None => (std::slice::from_ref(u), true),
                };
                if single && u.entries().is_none() {
                    continue;
                }
                self.collect_list(&format!("{sp}/undo"), items, single, inner.clone(), id.clone());
            }
        }
    }

    /// Checks one list of sibling steps: ordering, cycles, then each step.
    fn list(&mut self, list: &List<'_>, outer: &Scope, ids_required: bool) {
        let ids: Vec<Option<&str>> = list.items.iter().map(|s| s.get("id").and_then(Node::as_str)).collect();
        let sibling_ids: Vec<&str> = ids.iter().flatten().copied().collect();
        // Edges: i depends on j.
        let mut graph: DiGraphMap<usize, ()> = DiGraphMap::new();
        for (i, step) in list.items.iter().enumerate() {
            graph.add_node(i);
            if ids_required && ids[i].is_none() && step.entries().is_some() {
                self.diags.push(
                    Diagnostic::error(
                        "missing-id",
                        "this step has no `id`",
                        step.entries().and_then(|m| m.first()).map(|(k, _)| k.span),
                    )
                    .label("add `id:` to this step")
                    .hint("every step needs an id for `needs`, templates, logs and resume, e.g. `id: deploy`"),
                );
            }
            match step.get("needs") {
                Some(needs) => {
                    for n in needs.items().unwrap_or_default() {
                        let Some(name) = n.as_str() else { continue };
                        match ids.iter().position(|x| *x == Some(name)) {
                            Some(j) => {
                                graph.add_edge(i, j, ());
                            }
                            None => {
                                let (msg, hint) = if self.steps.contains_key(name) {
                                    (
                                        format!("`needs` names `{name}`, which is not in the same list of steps"),
                                        Some("`needs` orders steps of one list; to wait for a step elsewhere, make the enclosing group need it".to_owned()),
                                    )
                                } else {
                                    (
                                        format!("`needs` names an unknown step `{name}`"),
                                        suggestion(name, sibling_ids.iter().copied()),
                                    )
                                };
                                self.diags.push(
                                    Diagnostic::error("unknown-need", msg, Some(n.span))
                                        .label("no such step here")
                                        .maybe_hint(hint),
                                );
                            }
                        }
                    }
                }
                None if i > 0 => {
                    graph.add_edge(i, i - 1, ());
                }
                None => {}
            }
        }
        let mut cyclic = HashSet::new();
        for scc in petgraph::algo::tarjan_scc(&graph) {
            let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
            if scc.len() > 1 || self_loop {
                let mut members: Vec<usize> = scc.clone();
                members.sort_unstable();
                let names: Vec<String> = members
                    .iter()
                    .map(|&i| format!("`{}`", ids[i].unwrap_or("?")))
                    .collect();
                let first = members[0];
                let span = list.items[first].get("needs").map(|n| n.span);
                self.diags.push(
                    Diagnostic::error(
                        "cycle",
                        format!("`needs` makes a cycle: {} -> {}", names.join(" -> "), names[0]),
                        span,
                    )
                    .label("part of the cycle")
                    .hint("remove one of these `needs` so the steps can be ordered"),
                );
                cyclic.extend(members);
            }
        }
        // What each sibling is guaranteed to come after: reachability over the
        // `needs` graph, as bit sets built in topological order (linear in the
        // number of edges times n/64, so a 10,000-step chain stays fast).
        let n = list.items.len();
        let mut before: Vec<BitSet> = vec![BitSet::new(n); n];
        if cyclic.is_empty() {
            if let Ok(order) = petgraph::algo::toposort(&graph, None) {
                // Edges point from a step to what it waits for, so the reverse of
                // a topological order visits what is waited for first.
                for &i in order.iter().rev() {
                    let mut b = BitSet::new(n);
                    for j in graph.neighbors(i) {
                        b.insert(j);
                        b.union(&before[j]);
                    }
                    before[i] = b;
                }
            }
        }
        let lid = self.list_ids.get(&list.pointer).copied();
        if let Some(slot) = lid.and_then(|l| self.before.get_mut(l)) {
            *slot = before;
        }
        for (i, step) in list.items.iter().enumerate() {
            let mut scope = outer.clone();
            if let Some(list) = lid {
                scope.levels.insert(
                    0,
                    Level {
                        list,
                        index: i,
                        include_self: false,
                    },
                );
            }
            self.step(step, &list.item_pointer(i), &scope);
        }
    }

    fn step(&mut self, step: &Node, ptr: &str, scope: &Scope) {
        let Some(entries) = step.entries() else { return };
        let head = entries.first().map(|(k, _)| k.span);
        let id = step.get("id").and_then(Node::as_str).map(str::to_owned);
        let uses = step.get("uses");
        let group = step.get("steps");
        match (uses, group) {
            (None, None) => self.diags.push(
                Diagnostic::error(
                    "no-action",
                    "a step needs `uses` (a step kind) or `steps` (a group)",
                    head,
                )
                .label("this step does nothing")
                .hint("add e.g. `uses: shell` with `with: { run: ... }`"),
            ),
            (Some(u), Some(_)) => self.diags.push(
                Diagnostic::error(
                    "uses-and-steps",
                    "a step has either `uses` or `steps`, not both",
                    Some(u.span),
                )
                .label("`uses` here")
                .hint("move the call into the group as its own step"),
            ),
            _ => {}
        }
        if step.get("for_each").is_none() {
            for key in ["as", "concurrency", "max_failures"] {
                if let Some((k, _)) = step.entry(key) {
                    self.diags.push(
                        Diagnostic::error(
                            "needs-for-each",
                            format!("`{key}` only applies with `for_each`"),
                            Some(k.span),
                        )
                        .label("no `for_each` on this step")
                        .hint(format!("add `for_each:` or remove `{key}`")),
                    );
                }
            }
        }
        if group.is_none() {
            if let Some((k, _)) = step.entry("resume") {
                self.diags.push(
                    Diagnostic::error("resume-on-call", "`resume` applies to groups (`steps:`)", Some(k.span))
                        .label("on a call")
                        .hint("a call that failed always runs again on resume; remove `resume`"),
                );
            }
        }
        if group.is_some() {
            if let Some((k, _)) = step.entry("with") {
                self.diags.push(
                    Diagnostic::error(
                        "with-on-group",
                        "`with` applies to `uses`; a group has no parameters",
                        Some(k.span),
                    )
                    .label("on a group"),
                );
            }
            // A group is not retried or timed as a unit: say so rather than
            // accept and ignore it.
            for (key, hint) in [
                (
                    "timeout",
                    "put `timeout` on the steps inside, or set `defaults: { timeout: ... }` for all of them",
                ),
                (
                    "retry",
                    "put `retry` on the steps inside that may fail; to run the whole group again, use `resume: restart`",
                ),
            ] {
                if let Some((k, _)) = step.entry(key) {
                    self.diags.push(
                        Diagnostic::error(
                            "group-policy",
                            format!("`{key}` applies to calls (`uses`), not to a group (`steps:`)"),
                            Some(k.span),
                        )
                        .label("on a group")
                        .hint(hint),
                    );
                }
            }
        }

        // Templates that run before the step, with the step's own scope.
        if let Some(f) = step.get("for_each") {
            // A template, or a list whose items may be templates.
            self.strings(f, scope, false);
        }
        let mut inner = scope.clone();
        if step.get("for_each").is_some() {
            let var = step.get("as").and_then(Node::as_str).unwrap_or("item").to_owned();
            inner.items.push((var, id.clone().unwrap_or_default()));
            if let Some(id) = &id {
                inner.for_each.push(id.clone());
            }
        }
        for key in ["when", "concurrency", "max_failures"] {
            if let Some(n) = step.get(key) {
                self.strings(n, &inner, false);
            }
        }
        if let Some(c) = step.get("concurrency") {
            self.count_or_percent(c, "concurrency");
        }
        if let Some(c) = step.get("max_failures") {
            self.count_or_percent(c, "max_failures");
        }
        if let Some(t) = step.get("timeout") {
            self.duration(t);
            self.template_field(t, &inner, false);
        }
        if let Some(r) = step.get("retry") {
            let own = Self::after_self(&inner);
            self.retry(r, &own);
        }

        if let Some(kind_node) = uses {
            if let Some(kind) = kind_node.as_str() {
                self.call(step, ptr, kind, kind_node, &inner);
            }
        }
        if let Some(children) = group.and_then(Node::items) {
            if children.is_empty() {
                self.diags.push(
                    Diagnostic::error(
                        "empty-group",
                        "a group needs at least one step",
                        Some(group.map_or(Span::default(), |g| g.span)),
                    )
                    .label("empty"),
                );
            }
            self.list(
                &List {
                    pointer: format!("{ptr}/steps"),
                    items: children,
                    single: false,
                },
                &inner,
                true,
            );
        }

        let after = Self::after_self(&inner);
        if let Some(outputs) = step.get("outputs") {
            self.strings(outputs, &after, false);
        }
        if let Some(items) = step.get("on_failure").and_then(Node::items) {
            let handlers = Scope {
                lenient: true,
                ..after.clone()
            };
            let list = List {
                pointer: format!("{ptr}/on_failure"),
                items,
                single: false,
            };
            self.list(&list, &handlers, false);
        }
        if let Some(u) = step.get("undo") {
            let (items, single) = match u.items() {
                Some(items) => (items, false),
                None => (std::slice::from_ref(u), true),
            };
            let list = List {
                pointer: format!("{ptr}/undo"),
                items,
                single,
            };
            self.list(&list, &after, false);
        }
    }

    /// The scope of what runs after the step itself finished (its handlers,
    /// `retry.until`, `outputs:`): the step and what is inside it are done.
    fn after_self(scope: &Scope) -> Scope {
        let mut s = scope.clone();
        if let Some(own) = s.levels.first_mut() {
            own.include_self = true;
        }
        s
    }

    /// True if step `id` is guaranteed to have finished where the reader stands:
    /// at some level of the reader's position, the target (or the group holding
    /// it) is a sibling that the reader's position comes after.
    fn finished_before(&self, id: &str, scope: &Scope) -> bool {
        let mut chain = Vec::new();
        let mut cur = self.steps.get(id);
        while let Some(info) = cur {
            chain.push((info.list, info.index));
            cur = info.parent.as_deref().and_then(|p| self.steps.get(p));
            if chain.len() > MAX_NESTING {
                break;
            }
        }
        for level in &scope.levels {
            if let Some(&(_, index)) = chain.iter().find(|(l, _)| *l == level.list) {
                return (level.include_self && index == level.index)
                    || self
                        .before
                        .get(level.list)
                        .and_then(|b| b.get(level.index))
                        .is_some_and(|b| b.contains(index));
            }
        }
        false
    }

    /// A call of a kind: the kind exists, `with` matches its schema, templates are sound.
    fn call(&mut self, step: &Node, ptr: &str, kind: &str, kind_node: &Node, scope: &Scope) {
        let Some(k) = self.registry.get(kind).cloned() else {
            let hint = suggestion(kind, self.registry.names()).or_else(|| {
                Some(format!(
                    "known kinds: {}",
                    self.registry.names().collect::<Vec<_>>().join(", ")
                ))
            });
            self.diags.push(
                Diagnostic::error(
                    "unknown-kind",
                    format!("unknown step kind `{kind}`"),
                    Some(kind_node.span),
                )
                .label("not a known kind")
                .maybe_hint(hint),
            );
            // Still check the templates inside `with`.
            if let Some(with) = step.get("with") {
                self.strings(with, scope, false);
            }
            return;
        };
        let with = step.get("with");
        let with_json = with.map_or(Json::Object(Default::default()), Node::to_json);
        if let Some(v) = self.registry.validator(kind) {
            let schema = self.registry.params_schema(kind).cloned().unwrap_or(Json::Null);
            let errors: Vec<_> = v.iter_errors(&with_json).map(|e| e.to_owned()).collect();
            for e in errors {
                if with.is_none() {
                    if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind() {
                        let name = property.as_str().unwrap_or("?");
                        self.diags.push(
                            Diagnostic::error(
                                "missing-key",
                                format!("`{kind}` needs `with: {{ {name}: ... }}`"),
                                Some(kind_node.span),
                            )
                            .label(format!("`{name}` is missing")),
                        );
                        continue;
                    }
                }
                self.schema_error(&e, &schema, &format!("{ptr}/with"));
            }
        }
        if let Some(with) = with {
            let shell: Vec<String> = k.shell_fields().iter().map(|f| format!("{ptr}/with{f}")).collect();
            let mut own = scope.clone();
            own.items
                .extend(k.extra_roots().iter().map(|r| ((*r).to_owned(), String::new())));
            self.with_templates(with, &format!("{ptr}/with"), &shell, &own);
            for nested in k.nested_steps() {
                if let Some(n) = with.pointer(nested) {
                    let nested_ptr = format!("{ptr}/with{nested}");
                    if let Some(kn) = n.get("uses") {
                        if let Some(kname) = kn.as_str() {
                            self.call(n, &nested_ptr, kname, kn, scope);
                        }
                    }
                }
            }
        }
    }

    fn with_templates(&mut self, node: &Node, ptr: &str, shell: &[String], scope: &Scope) {
        match &node.value {
            Value::Str(_) => self.template_field(node, scope, shell.iter().any(|s| s == ptr)),
            Value::Seq(items) => {
                for (i, n) in items.iter().enumerate() {
                    self.with_templates(n, &format!("{ptr}/{i}"), shell, scope);
                }
            }
            Value::Map(m) => {
                for (k, v) in m {
                    // nested step calls are checked by `call`
                    if v.get("uses").is_some() && v.get("with").is_some() {
                        continue;
                    }
                    self.with_templates(v, &format!("{ptr}/{}", k.name), shell, scope);
                }
            }
            _ => {}
        }
    }

    fn strings(&mut self, node: &Node, scope: &Scope, shell: bool) {
        match &node.value {
            Value::Str(_) => self.template_field(node, scope, shell),
            Value::Seq(items) => items.iter().for_each(|n| self.strings(n, scope, shell)),
            Value::Map(m) => m.iter().for_each(|(_, n)| self.strings(n, scope, shell)),
            _ => {}
        }
    }

    fn retry(&mut self, r: &Node, scope: &Scope) {
        for key in ["delay", "max_delay"] {
            if let Some(n) = r.get(key) {
                self.duration(n);
            }
        }
        if let Some(u) = r.get("until") {
            self.template_field(u, scope, false);
        }
    }

    fn duration(&mut self, n: &Node) {
        match &n.value {
            Value::Str(s) if template::is_template(s) => {}
            Value::Str(s) => {
                if let Err(m) = crate::inputs::parse_duration(s) {
                    self.diags.push(
                        Diagnostic::error("duration", m, Some(n.span))
                            .label("not a duration")
                            .hint("durations look like `30s`, `5m`, `1h30m`, `250ms`"),
                    );
                }
            }
            // A bare number is a type error, reported (with a hint) by the schema pass.
            _ => {}
        }
    }

    fn count_or_percent(&mut self, n: &Node, key: &str) {
        let check = |s: &str| -> bool {
            template::is_template(s)
                || s.strip_suffix('%')
                    .and_then(|p| p.trim().parse::<f64>().ok())
                    .is_some_and(|p| p > 0.0 && p <= 100.0)
        };
        let bad: Vec<&Node> = match &n.value {
            Value::Str(s) if !check(s) => vec![n],
            Value::Seq(items) => items.iter().filter(|i| i.as_str().is_some_and(|s| !check(s))).collect(),
            _ => vec![],
        };
        for b in bad {
            self.diags.push(
                Diagnostic::error(
                    "count",
                    format!(
                        "`{key}` must be a count or a percentage, found `{}`",
                        b.as_str().unwrap_or("")
                    ),
                    Some(b.span),
                )
                .label("here")
                .hint("write a count such as `2` or a percentage such as `25%`"),
            );
        }
    }

    /// A string that may be a template: syntax, helpers, references, raw insertions.
    fn template_field(&mut self, node: &Node, scope: &Scope, shell: bool) {
        let Some(text) = node.as_str() else { return };
        if !template::is_template(text) {
            return;
        }
        let tpl = match template::compile(text) {
            Ok(t) => t,
            Err(template::TemplateError::Syntax { message, .. }) => {
                let msg = message.lines().next().unwrap_or("invalid template").trim().to_owned();
                self.diags.push(
                    Diagnostic::error("template-syntax", format!("invalid template: {msg}"), Some(node.span))
                        .label("in this template")
                        .hint(
                            "templates look like `{{inputs.name}}` or `{{eq inputs.env \"prod\"}}`; check the braces",
                        ),
                );
                return;
            }
            Err(e) => {
                self.diags
                    .push(Diagnostic::error("template-syntax", e.to_string(), Some(node.span)));
                return;
            }
        };
        let usage = template::usage(&tpl);
        if usage.raw_insertion && shell {
            self.diags.push(
                Diagnostic::warning(
                    "raw-in-shell",
                    "`{{{...}}}` inserts text unquoted into a shell command",
                    Some(self.sub_span(node, "{{{")),
                )
                .label("runs as shell code")
                .hint("use `{{...}}` to insert the value as one quoted word, unless the playbook means to run it"),
            );
        }
        if shell {
            for (r, written) in crate::shell::refusals(text) {
                let at = self.sub_span(node, written);
                self.diags.push(
                    Diagnostic::error("unsafe-in-shell", r.message, Some(at))
                        .label("no quoting keeps this value data here")
                        .hint(r.hint),
                );
            }
        }
        for h in &usage.helpers {
            if !template::helper_names().any(|x| x == h) {
                self.diags.push(
                    Diagnostic::error(
                        "unknown-helper",
                        format!("unknown template helper `{h}`"),
                        Some(self.sub_span(node, h)),
                    )
                    .label("not a helper")
                    .maybe_hint(suggestion(h, template::helper_names())),
                );
            }
        }
        for r in &usage.references {
            if let Some((msg, hint)) = self.reference(r, scope) {
                let label = if msg.contains("not guaranteed") {
                    "may not have run yet"
                } else if msg.contains("once per item") {
                    "per-item result"
                } else {
                    "not defined"
                };
                self.diags.push(
                    Diagnostic::error("undefined", msg, Some(self.sub_span(node, &r.raw)))
                        .label(label)
                        .maybe_hint(hint),
                );
            }
        }
    }

    /// Why a reference is wrong, if it is.
    fn reference(&self, r: &template::Reference, scope: &Scope) -> Option<(String, Option<String>)> {
        let segs = &r.segments;
        let root = segs[0].as_str();
        let second = segs.get(1).map(String::as_str);
        if scope.items.iter().any(|(v, _)| v == root) {
            return None;
        }
        match root {
            "inputs" => {
                let name = second?;
                (!self.inputs.iter().any(|i| i == name)).then(|| {
                    (
                        format!("undefined input `{name}`"),
                        suggestion(name, self.inputs.iter().map(String::as_str))
                            .or_else(|| Some(format!("declare it under `inputs:`, e.g. `{name}: {{ type: string }}`"))),
                    )
                })
            }
            "secrets" => {
                let name = second?;
                (!self.secrets.iter().any(|i| i == name)).then(|| {
                    (
                        format!("undefined secret `{name}`"),
                        suggestion(name, self.secrets.iter().map(String::as_str))
                            .or_else(|| Some(format!("declare it under `secrets:`, e.g. `secrets: [{name}]`"))),
                    )
                })
            }
            // The environment and the inventory are only known when the run starts.
            "env" | "inventory" => None,
            "run" => field_check(second, RUN_FIELDS, "run"),
            "playbook" => field_check(second, PLAYBOOK_FIELDS, "playbook"),
            "steps" => self.step_reference(segs, scope),
            _ if r.in_block => None,
            _ => {
                let mut names: Vec<&str> = ROOTS.to_vec();
                names.extend(scope.items.iter().map(|(v, _)| v.as_str()));
                let hint = suggestion(root, names.iter().copied()).or_else(|| {
                    Some(format!(
                        "templates read `inputs.*`, `steps.<id>.outputs.*`, `secrets.*`, `env.*`, `run.*`, `playbook.*`{}",
                        if scope.items.is_empty() { String::new() } else { format!(" or `{}`", scope.items.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>().join("`, `")) }
                    ))
                });
                Some((format!("undefined name `{root}` in template"), hint))
            }
        }
    }

    fn step_reference(&self, segs: &[String], scope: &Scope) -> Option<(String, Option<String>)> {
        let id = segs.get(1)?;
        let Some(info) = self.steps.get(id) else {
            return Some((
                format!("unknown step `{id}`"),
                suggestion(id, self.steps.keys().map(String::as_str)),
            ));
        };
        if let Some(fe) = &info.in_for_each {
            if fe != id && !scope.for_each.contains(fe) {
                return Some((
                    format!("step `{id}` runs once per item of `{fe}`; its results cannot be read outside that group"),
                    Some(format!(
                        "give the group `{fe}` an `outputs:` mapping, or read the step from inside the group"
                    )),
                ));
            }
        }
        if !scope.lenient && !self.finished_before(id, scope) {
            return Some((
                format!("step `{id}` is not guaranteed to have run before this one"),
                Some(format!("add `needs: [{id}]` (or move the step after `{id}`)")),
            ));
        }
        let field = segs.get(2)?;
        if !STEP_FIELDS.contains(&field.as_str()) {
            return Some((
                format!("steps have no `{field}`"),
                suggestion(field, STEP_FIELDS.iter().copied())
                    .or_else(|| Some("use `steps.<id>.outputs.<name>` or `steps.<id>.status`".to_owned())),
            ));
        }
        let (Some(out), "outputs") = (segs.get(3), field.as_str()) else {
            return None;
        };
        let mut known: Vec<&str> = info.declared_outputs.iter().map(String::as_str).collect();
        // A fan-out's result, read from outside it, is its declared outputs
        // (a list each) and `items` (each item and how it ended).
        if info.in_for_each.as_deref() == Some(id.as_str()) && !scope.for_each.contains(id) {
            known.push("items");
            return (!known.contains(&out.as_str())).then(|| {
                (
                    format!("step `{id}` (a `for_each`) has no output `{out}` outside its items"),
                    Some(format!(
                        "outside the fan-out it has: {} (each declared output is a list, one value per item)",
                        known.join(", ")
                    )),
                )
            });
        }
        if let Some(k) = info.uses.as_deref().and_then(|u| self.registry.get(u)) {
            known.extend(k.outputs().iter().map(|o| o.name));
        } else if info.uses.is_some() {
            return None; // unknown kind, already reported
        }
        (!known.contains(&out.as_str())).then(|| {
            let what = info.uses.as_deref().map_or("group".to_owned(), |u| format!("`{u}`"));
            (
                format!("step `{id}` ({what}) has no output `{out}`"),
                suggestion(out, known.iter().copied()).or_else(|| {
                    Some(if known.is_empty() {
                        "declare it in the step's `outputs:`".to_owned()
                    } else {
                        format!("its outputs are: {}", known.join(", "))
                    })
                }),
            )
        })
    }

    /// The span of `needle` inside the source text of `node`, or the node's span.
    fn sub_span(&self, node: &Node, needle: &str) -> Span {
        let s = node.span;
        let end = (s.offset + s.len.max(1)).min(self.text.len());
        let Some(hay) = self.text.get(s.offset..end) else {
            return s;
        };
        match hay.find(needle) {
            Some(i) if !hay[..i].contains('\n') => Span {
                offset: s.offset + i,
                len: needle.len(),
                line: s.line,
                col: s.col + hay[..i].chars().count(),
            },
            _ => s,
        }
    }
}

fn field_check(second: Option<&str>, fields: &[&str], root: &str) -> Option<(String, Option<String>)> {
    let name = second?;
    (!fields.contains(&name)).then(|| {
        (
            format!("`{root}` has no `{name}`"),
            suggestion(name, fields.iter().copied()).or_else(|| Some(format!("`{root}` has: {}", fields.join(", ")))),
        )
    })
}

fn type_kind(kind: &jsonschema::error::TypeKind) -> String {
    use jsonschema::error::TypeKind;
    let name = |t: &str| match t {
        "integer" => "an integer",
        "number" => "a number",
        "string" => "a string",
        "boolean" => "`true` or `false`",
        "array" => "a list",
        "object" => "a mapping",
        "null" => "null",
        _ => "a value",
    };
    match kind {
        TypeKind::Single(t) => name(&t.to_string()).to_owned(),
        TypeKind::Multiple(set) => {
            let names: Vec<&str> = set
                .iter()
                .map(|t| t.to_string())
                .filter(|t| t != "null")
                .map(|t| name(&t))
                .collect();
            names.join(" or ")
        }
    }
}

/// The allowed values when every alternative is a single constant (how schemars
/// writes an enum whose variants have doc comments).
fn one_of_constants(context: &[Vec<jsonschema::ValidationError<'static>>]) -> Option<Vec<String>> {
    use jsonschema::error::ValidationErrorKind as K;
    context
        .iter()
        .map(|errs| match errs.as_slice() {
            [e] => match e.kind() {
                K::Constant { expected_value } => Some(template::scalar_text(expected_value)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn alternatives(context: &[Vec<jsonschema::ValidationError<'static>>]) -> String {
    use jsonschema::error::ValidationErrorKind as K;
    let mut out: Vec<String> = Vec::new();
    for errs in context {
        for e in errs {
            if let K::Type { kind } = e.kind() {
                let t = type_kind(kind);
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
    }
    if out.is_empty() {
        "valid".to_owned()
    } else {
        out.join(" or ")
    }
}

fn duration_hint(key: &str, node: Option<&Node>) -> Option<String> {
    let durationish = [
        "timeout",
        "delay",
        "max_delay",
        "rto",
        "rpo",
        "p50",
        "p95",
        "p99",
        "duration",
        "interval",
    ];
    match node.map(|n| &n.value) {
        Some(Value::Int(i)) if durationish.contains(&key) => Some(format!("durations have a unit: `{i}s`, `{i}m`")),
        Some(Value::Map(_))
            if node
                .and_then(|n| n.entries())
                .is_some_and(|m| m.len() == 1 && m[0].1.value == Value::Null) =>
        {
            Some("a template must be quoted: `\"{{...}}\"`".to_owned())
        }
        _ => None,
    }
}

fn required_hint(name: &str) -> Option<String> {
    Some(match name {
        "apiVersion" => "start the file with `apiVersion: runbook/v1`".to_owned(),
        "steps" => "add `steps:` with at least one step".to_owned(),
        "version" => "add `version: 1` (matching the file name `v1.yaml`)".to_owned(),
        "name" => "add `name:` (the playbook's folder name)".to_owned(),
        "type" => "give the input a type: string, integer, number, boolean, duration, list, map or enum".to_owned(),
        _ => return None,
    })
}

/// "in a step", "in input `x`", for messages about a location.
fn describe_location(ptr: &str) -> String {
    let segs: Vec<&str> = ptr.split('/').skip(1).collect();
    match segs.as_slice() {
        [] => "at the top level".to_owned(),
        ["inputs", name] => format!("in input `{name}`"),
        [.., "with"] => "in `with`".to_owned(),
        [.., "retry"] => "in `retry`".to_owned(),
        [.., "objectives"] | [.., "latency"] => "in `objectives`".to_owned(),
        [.., "defaults"] => "in `defaults`".to_owned(),
        [.., list, i] if i.parse::<usize>().is_ok() && matches!(*list, "steps" | "on_failure" | "finally" | "undo") => {
            "in a step".to_owned()
        }
        [.., "undo"] => "in a step".to_owned(),
        [.., last] => format!("in `{last}`"),
    }
}

/// The property names allowed where an `additionalProperties` error was raised,
/// following `$ref`s through the schema path.
fn allowed_keys(schema: &Json, schema_path: &str) -> Vec<String> {
    let mut node = schema;
    let segs: Vec<&str> = schema_path.split('/').skip(1).collect();
    let Some((_, parents)) = segs.split_last() else {
        return Vec::new();
    };
    for seg in parents {
        if *seg == "$ref" {
            let Some(target) = node.get("$ref").and_then(Json::as_str) else {
                return Vec::new();
            };
            let Some(found) = target.strip_prefix('#').and_then(|p| schema.pointer(p)) else {
                return Vec::new();
            };
            node = found;
            continue;
        }
        let next = match node {
            Json::Object(m) => m.get(*seg),
            Json::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return Vec::new(),
        }
    }
    if let Some(target) = node.get("$ref").and_then(Json::as_str) {
        if let Some(found) = target.strip_prefix('#').and_then(|p| schema.pointer(p)) {
            node = found;
        }
    }
    node.get("properties")
        .and_then(Json::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}
