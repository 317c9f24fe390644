//! The [`StepKind`] trait and the [`Registry`] of kinds.
//!
//! A step kind is declared by a typed params struct (its `with:`), from which
//! its JSON Schema is derived, plus a few facts the validator and `plan` need:
//! which fields a shell runs (and so get shell-quoted templating), whether the
//! step changes anything, whether it is safe to run twice, and which outputs it
//! produces. The engine and the binary only ever see `dyn StepKind`.
//!
//! Kinds are registered in one explicit place, the CLI's `registry()`, so a
//! newcomer finds every kind by reading one function.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde_json::Value as Json;
use std::sync::Arc;

/// What a step does to the world, as `plan` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Only looks: safe to run any time.
    Read,
    /// Changes something.
    Write,
    /// Cannot tell (an arbitrary command).
    Unknown,
}

impl Effect {
    /// `read`, `write` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Read => "read",
            Effect::Write => "write",
            Effect::Unknown => "unknown",
        }
    }
}

/// The type of an output, for `plan`'s typed placeholders and reference checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` / `false`.
    Boolean,
    /// A list.
    List,
    /// Any JSON value.
    Any,
}

impl OutputType {
    /// The name shown in placeholders.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputType::String => "string",
            OutputType::Integer => "integer",
            OutputType::Number => "number",
            OutputType::Boolean => "boolean",
            OutputType::List => "list",
            OutputType::Any => "any",
        }
    }
}

/// One declared output of a kind.
#[derive(Debug, Clone, Copy)]
pub struct OutputDecl {
    /// The name under `steps.<id>.outputs`.
    pub name: &'static str,
    /// Its type.
    pub ty: OutputType,
    /// What it holds.
    pub doc: &'static str,
}

/// A step kind: what `uses:` names.
pub trait StepKind: Send + Sync + 'static {
    /// The `uses` name, e.g. `shell`.
    fn name(&self) -> &'static str;

    /// One line on what the kind does, for `runbook schema` and the book.
    fn summary(&self) -> &'static str;

    /// The JSON Schema of `with:`, derived from the params type with [`schema_for`].
    fn params_schema(&self) -> Json;

    /// JSON pointers (inside `with`) of the fields a shell runs. Templates in them
    /// insert values shell-quoted; `{{{raw}}}` there is flagged by `validate`.
    fn shell_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// JSON pointers (inside `with`) of nested step calls (`{uses, with}`), which
    /// are validated like steps.
    fn nested_steps(&self) -> &'static [&'static str] {
        &[]
    }

    /// Extra template roots that this kind's `with:` may read besides the
    /// playbook's (e.g. `check` in `wait`'s `until`).
    fn extra_roots(&self) -> &'static [&'static str] {
        &[]
    }

    /// What the step does to the world, given its (possibly rendered) params.
    fn effect(&self, with: &Json) -> Effect;

    /// Whether running it twice is safe, given its params. A step's own
    /// `idempotent:` overrides this.
    fn idempotent(&self, with: &Json) -> bool;

    /// The outputs it produces.
    fn outputs(&self) -> &'static [OutputDecl];

    /// A one-line description of what this call will do, for `plan`.
    fn describe(&self, with: &Json) -> String;
}

/// A scalar parameter value (an environment variable, a header): text, a number
/// or a boolean, used as text.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Scalar {
    /// Text.
    Text(String),
    /// A number, e.g. a port.
    Number(serde_json::Number),
    /// A boolean.
    Bool(bool),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Text(s) => f.write_str(s),
            Scalar::Number(n) => write!(f, "{n}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A step call nested in another kind's `with:` (e.g. `wait`'s `check`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NestedStep {
    /// The step kind.
    pub uses: String,
    /// Its parameters.
    #[serde(default, rename = "with")]
    pub with: serde_json::Map<String, Json>,
}

/// The first line of a command, shortened for one-line descriptions.
pub fn one_line(text: &str, max: usize) -> String {
    let mut lines = text.trim().lines();
    let first = lines.next().unwrap_or_default();
    let more = lines.next().is_some();
    let mut out: String = first.chars().take(max).collect();
    if first.chars().count() > max || more {
        out.push('…');
    }
    out
}

/// The JSON Schema of a params type, as a JSON value.
pub fn schema_for<T: JsonSchema>() -> Json {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Json::Null)
}

/// The kinds a binary knows, by `uses` name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: IndexMap<&'static str, Arc<dyn StepKind>>,
    schemas: IndexMap<&'static str, Arc<Json>>,
    validators: IndexMap<&'static str, Arc<jsonschema::Validator>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a kind. A kind whose schema does not compile is a programming error
    /// caught by each kind's own tests; it is registered without a validator.
    #[must_use]
    pub fn with(mut self, kind: impl StepKind) -> Self {
        let name = kind.name();
        let schema = kind.params_schema();
        if let Ok(v) = jsonschema::validator_for(&schema) {
            self.validators.insert(name, Arc::new(v));
        }
        self.schemas.insert(name, Arc::new(schema));
        self.kinds.insert(name, Arc::new(kind));
        self
    }

    /// The kind named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn StepKind>> {
        self.kinds.get(name)
    }

    /// The params schema of `name`, computed once at registration.
    pub fn params_schema(&self, name: &str) -> Option<&Json> {
        self.schemas.get(name).map(|s| &**s)
    }

    /// The compiled params validator of `name`.
    pub(crate) fn validator(&self, name: &str) -> Option<&jsonschema::Validator> {
        self.validators.get(name).map(|v| &**v)
    }

    /// Every kind's name, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }

    /// Every kind, in registration order.
    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn StepKind>> + '_ {
        self.kinds.values()
    }
}
