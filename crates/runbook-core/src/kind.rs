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
use std::borrow::Cow;
use std::sync::Arc;

pub use tokio_util::sync::CancellationToken;

/// What a step produced: named JSON values under `steps.<id>.outputs`.
pub type Outputs = serde_json::Map<String, Json>;

/// Why a step failed, with whatever outputs it still produced (a command that
/// exited 1 still has its `exit_code` and `stderr`).
#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    /// What went wrong, for a tired engineer: what happened and what to check.
    pub message: String,
    /// Outputs produced before the failure.
    pub outputs: Outputs,
    /// True when the step stopped because the run was cancelled.
    pub cancelled: bool,
    /// Set when the step waits for a person's answer: the run pauses as
    /// `waiting` (the message says what is asked) instead of failing.
    pub waiting: Option<Box<Waiting>>,
}

/// A question a step waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// When it expires (RFC 3339), if it does.
    pub expires_at: Option<String>,
}

impl StepError {
    /// A failure with a message.
    pub fn new(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            outputs: Outputs::new(),
            cancelled: false,
            waiting: None,
        }
    }

    /// The step waits for a person's answer to `question` (until `expires_at`).
    pub fn waiting(question: impl Into<String>, expires_at: Option<String>) -> Self {
        StepError {
            waiting: Some(Box::new(Waiting { expires_at })),
            ..StepError::new(question)
        }
    }

    /// A failure because the run was cancelled.
    pub fn cancelled() -> Self {
        StepError {
            cancelled: true,
            ..StepError::new("cancelled")
        }
    }

    /// Attaches outputs.
    #[must_use]
    pub fn with_outputs(mut self, outputs: Outputs) -> Self {
        self.outputs = outputs;
        self
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Where a step's log lines go. The engine's sink masks secrets before a line
/// reaches the terminal or the store.
pub trait LogSink: Send + Sync {
    /// One line, without its newline.
    fn line(&self, stream: LogStream, text: &str);
}

/// Runs a step call nested in another (e.g. `wait`'s `check`), through the
/// registry, with the same context. Implemented by the engine.
#[async_trait::async_trait]
pub trait Nested: Send + Sync {
    /// Runs `uses` with already-rendered `with`.
    async fn call(&self, uses: &str, with: Json, ctx: &StepContext) -> Result<Outputs, StepError>;
}

/// A person's answer to a step that waited (an approval), from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Approved (true) or rejected.
    pub approved: bool,
    /// Who answered.
    pub who: String,
    /// What they said.
    pub comment: Option<String>,
    /// When (RFC 3339).
    pub at: String,
}

/// What an approval step can know about its question and its answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Approval {
    /// The answer recorded for this step, if any.
    pub decision: Option<Decision>,
    /// When the step first waited (RFC 3339), if it did.
    pub waiting_since: Option<String>,
    /// `--yes`: approve as this user without asking.
    pub auto_approve: Option<String>,
    /// Who started the run (for steps that need a second person).
    pub started_by: String,
}

/// What a running step is given.
pub struct StepContext {
    /// The run's id.
    pub run_id: String,
    /// The step path, e.g. `roll[web2].deploy`.
    pub step: String,
    /// Which attempt this is (1 for the first; retries and resumes count on).
    pub attempt: u32,
    /// The secrets the step grants its kind (its `secrets:`), by name.
    pub secrets: serde_json::Map<String, Json>,
    /// Cancelled when the run is stopped; long steps must watch it.
    pub cancel: CancellationToken,
    /// Where log lines go.
    pub log: Arc<dyn LogSink>,
    /// The template data the step's `with:` was rendered from, for fields a kind
    /// renders itself (`wait`'s `until`).
    pub data: crate::template::Data,
    /// The run's inventory (hosts, groups, connection defaults), shared; the
    /// template data holds it only where the step's templates name it.
    pub inventory: Arc<Json>,
    /// Runs nested step calls.
    pub nested: Arc<dyn Nested>,
    /// Answers of people to this step (approvals).
    pub approval: Approval,
    /// The run's cgroup, where a kind that starts local processes holds
    /// them (`runbook-contain`); `None` where the host has none to give.
    pub contain: Option<Arc<std::path::Path>>,
}

impl StepContext {
    /// Leaves out of `cmd`'s environment the variables of runbook's own
    /// that hold one of the run's secrets (those it read them from), unless
    /// the command sets them itself: a command a step starts gets a secret
    /// only where its step names it (`{{secrets.X}}` in its `env:`).
    pub fn withhold_secrets(&self, cmd: &mut std::process::Command) {
        let data = self.data.json();
        let values: Vec<&str> = data
            .get("secrets")
            .and_then(Json::as_object)
            .map(|m| m.values().filter_map(Json::as_str).filter(|v| !v.is_empty()).collect())
            .unwrap_or_default();
        if values.is_empty() {
            return;
        }
        let given: Vec<std::ffi::OsString> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
        for (name, value) in std::env::vars_os() {
            if value.to_str().is_some_and(|v| values.contains(&v)) && !given.contains(&name) {
                cmd.env_remove(name);
            }
        }
    }
}

impl std::fmt::Debug for StepContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext")
            .field("run_id", &self.run_id)
            .field("step", &self.step)
            .finish()
    }
}

/// What a step does to the world, as `plan` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
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

/// The type of an output, for `plan`'s typed placeholders and reference checks
/// (and a plugin's description, where it is spelt as [`OutputType::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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

    /// True when `value` is of this type (`null` is never: an output that
    /// has no value is left out).
    pub fn admits(self, value: &Json) -> bool {
        match self {
            OutputType::String => value.is_string(),
            OutputType::Integer => value.is_i64() || value.is_u64(),
            OutputType::Number => value.is_number(),
            OutputType::Boolean => value.is_boolean(),
            OutputType::List => value.is_array(),
            OutputType::Any => true,
        }
    }
}

/// One declared output of a kind.
#[derive(Debug, Clone)]
pub struct OutputDecl {
    /// The name under `steps.<id>.outputs`.
    pub name: Cow<'static, str>,
    /// Its type.
    pub ty: OutputType,
    /// What it holds.
    pub doc: Cow<'static, str>,
}

impl OutputDecl {
    /// A built-in kind's output.
    pub const fn new(name: &'static str, ty: OutputType, doc: &'static str) -> OutputDecl {
        OutputDecl {
            name: Cow::Borrowed(name),
            ty,
            doc: Cow::Borrowed(doc),
        }
    }
}

/// A step kind: what `uses:` names.
#[async_trait::async_trait]
pub trait StepKind: Send + Sync + 'static {
    /// The `uses` name, e.g. `shell`.
    fn name(&self) -> &str;

    /// One line on what the kind does, for `runbook schema` and the book.
    fn summary(&self) -> &str;

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

    /// Whether a call is idempotent, in words for the reference. By default,
    /// what [`idempotent`](Self::idempotent) says of a call without
    /// parameters; a kind whose answer depends on them says how.
    fn idempotence(&self) -> String {
        if self.idempotent(&Json::Null) {
            "yes (resume may run it again)".to_owned()
        } else {
            "no (set `idempotent: true` on the step if it is)".to_owned()
        }
    }

    /// The outputs it produces.
    fn outputs(&self) -> &[OutputDecl];

    /// True when a person's answer to it approves what comes after it (an
    /// approval): the answer is bound to the step and to the steps that wait
    /// for it, and a playbook text that changes one of them
    /// (`resume --to-current`) asks again.
    fn guards(&self) -> bool {
        false
    }

    /// True when the kind takes secrets granted by the step's `secrets:`
    /// (external kinds); built-in kinds take them through templates.
    fn takes_secrets(&self) -> bool {
        false
    }

    /// Names of secrets the kind expects a step to grant (a plugin's
    /// description says); `validate` warns where a step does not.
    fn wants_secrets(&self) -> &[String] {
        &[]
    }

    /// A one-line description of what this call will do, for `plan`.
    fn describe(&self, with: &Json) -> String;

    /// JSON pointers (inside `with`) of fields the engine leaves unrendered,
    /// because the kind renders them itself with its [`extra_roots`](Self::extra_roots).
    fn deferred_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// Does it: `with` is rendered and valid against the schema. Must stop
    /// promptly when `ctx.cancel` fires, leaving no process behind.
    async fn run(&self, ctx: &StepContext, with: Json) -> Result<Outputs, StepError>;

    /// Whether [`preview`](Self::preview) has something to show for these params.
    fn can_preview(&self, with: &Json) -> bool {
        let _ = with;
        false
    }

    /// Looks, read-only, at what this call would touch, for `plan --live`: the
    /// sessions `terminate-idle` would end, a server's state before a drain.
    /// `with` is rendered, secrets included. `Ok(None)`: nothing to show.
    async fn preview(&self, with: Json, cancel: &CancellationToken) -> Result<Option<Vec<String>>, StepError> {
        let _ = (with, cancel);
        Ok(None)
    }

    /// Releases what the kind keeps for the run (connections); called once when
    /// the run ends, however it ends.
    async fn close(&self) {}
}

/// Deserializes a kind's params from rendered `with:`, as a step error.
pub fn params<T: serde::de::DeserializeOwned>(with: Json) -> Result<T, StepError> {
    serde_json::from_value(with).map_err(|e| StepError::new(format!("invalid parameters: {e}")))
}

/// A kind's params for its plan-time methods (`effect`, `idempotent`,
/// `describe`, `can_preview`): `with:` as far as it rendered before the run.
/// `None` while a field still holds a template where its type wants a number,
/// a boolean or a list: the kind then says what it can without guessing
/// ([`UNKNOWN_YET`], an unknown effect, not idempotent).
pub fn plan_params<T: serde::de::DeserializeOwned>(with: &Json) -> Option<T> {
    T::deserialize(with).ok()
}

/// What `describe` says of a call whose params are known only when it runs.
pub const UNKNOWN_YET: &str = "(its parameters are known when it runs)";

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

/// Why a command failed, in one line: `exited with status 3: <last lines of
/// stderr>` (or `killed by signal 9`, for a negative code).
pub fn exit_message(code: i32, stderr: &str) -> String {
    const TAIL: usize = 5;
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(TAIL)..].join(" | ");
    let what = if code < 0 {
        format!("killed by signal {}", -code)
    } else {
        format!("exited with status {code}")
    };
    if tail.is_empty() {
        what
    } else {
        format!("{what}: {tail}")
    }
}

/// An error with every cause under it, joined by `: ` (libraries often keep
/// the useful part, "connection refused", in a source).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        chain.push(s.to_string());
        src = s.source();
    }
    chain.join(": ")
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

/// A validator of a kind's `with:` that also checks the formats its fields
/// declare: a literal `duration` (`30s`, `1h30m`) or `size` (`16MB`) is
/// checked before anything runs; a template is checked when it renders.
fn params_validator(schema: &Json) -> Result<jsonschema::Validator, jsonschema::ValidationError<'static>> {
    let templated = |s: &str| crate::template::is_template(s);
    jsonschema::options()
        .should_validate_formats(true)
        .with_format("duration", move |s: &str| {
            templated(s) || crate::inputs::parse_duration(s).is_ok()
        })
        .with_format("size", move |s: &str| {
            templated(s) || crate::inputs::parse_size(s).is_ok()
        })
        .build(schema)
}

/// A duration parameter (`30s`, `5m`), if given; the error names the field.
pub fn duration_param(field: &str, text: Option<&str>) -> Result<Option<std::time::Duration>, StepError> {
    text.map(|t| crate::inputs::parse_duration(t).map_err(|e| StepError::new(format!("`{field}`: {e}"))))
        .transpose()
}

/// Adds to a params schema the fields each `action` needs, so `validate`
/// reports a missing one before anything runs: each rule is (actions, fields).
pub fn require_by_action(mut schema: Json, rules: &[(&[&str], &[&str])]) -> Json {
    let rules: Vec<Json> = rules
        .iter()
        .map(|(actions, fields)| {
            serde_json::json!({
                "if": {"properties": {"action": {"enum": actions}}, "required": ["action"]},
                "then": {"required": fields}
            })
        })
        .collect();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("allOf".into(), Json::Array(rules));
    }
    schema
}

/// The kinds a binary knows, by `uses` name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: IndexMap<String, Arc<dyn StepKind>>,
    schemas: IndexMap<String, Arc<Json>>,
    validators: IndexMap<String, Arc<jsonschema::Validator>>,
    problems: IndexMap<String, String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    /// A registry with the language's own kind, `playbook` (sub-playbook
    /// calls); the step kinds are added with [`with`](Self::with).
    pub fn new() -> Self {
        Registry::default().with(crate::calls::SubPlaybook)
    }

    /// Adds a kind. A kind whose schema does not compile is a programming error
    /// caught by each kind's own tests; it is registered without a validator.
    #[must_use]
    pub fn with(self, kind: impl StepKind) -> Self {
        self.with_shared(Arc::new(kind))
    }

    /// Adds a kind already shared (one loaded at run time, such as a plugin).
    #[must_use]
    pub fn with_shared(mut self, kind: Arc<dyn StepKind>) -> Self {
        let name = kind.name().to_owned();
        let schema = kind.params_schema();
        if let Ok(v) = params_validator(&schema) {
            self.validators.insert(name.clone(), Arc::new(v));
        }
        self.schemas.insert(name.clone(), Arc::new(schema));
        self.kinds.insert(name, kind);
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

    /// What is wrong with a rendered `with:` of `kind` (types, formats such as
    /// durations): each as (`with.FIELD`, why).
    pub fn check_params(&self, kind: &str, with: &Json) -> Vec<(String, String)> {
        let Some(v) = self.validator(kind) else {
            return Vec::new();
        };
        v.iter_errors(with)
            .map(|e| {
                let at = format!("with{}", e.instance_path().as_str().replace('/', "."));
                let why = match e.kind() {
                    jsonschema::error::ValidationErrorKind::Format { format } => {
                        format!("`{}` is not a {format}", crate::template::scalar_text(e.instance()))
                    }
                    _ => e.to_string(),
                };
                (at, why)
            })
            .collect()
    }

    /// The JSON pointers (inside `with`) of every field a shell runs for a call of
    /// `kind`, including the shell fields of nested calls (`wait`'s `check`), so
    /// that `{{x}}` is quoted wherever a shell will see it.
    pub fn shell_pointers(&self, kind: &str, with: &Json) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_shell_pointers(kind, with, "", &mut out, 0);
        out
    }

    fn collect_shell_pointers(&self, kind: &str, with: &Json, prefix: &str, out: &mut Vec<String>, depth: usize) {
        let Some(k) = self.get(kind) else { return };
        out.extend(k.shell_fields().iter().map(|f| format!("{prefix}{f}")));
        if depth > 8 {
            return;
        }
        for nested in k.nested_steps() {
            let Some(call) = with.pointer(nested) else { continue };
            let Some(uses) = call.get("uses").and_then(Json::as_str) else {
                continue;
            };
            let inner = call.get("with").cloned().unwrap_or(Json::Null);
            self.collect_shell_pointers(uses, &inner, &format!("{prefix}{nested}/with"), out, depth + 1);
        }
    }

    /// Every kind's name, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.kinds.keys().map(String::as_str)
    }

    /// Records that the kind `name` exists but could not be loaded (a broken
    /// plugin), so that a step using it is refused with the reason.
    #[must_use]
    pub fn with_problem(mut self, name: &str, why: String) -> Self {
        self.problems.insert(name.to_owned(), why);
        self
    }

    /// Why the kind `name` could not be loaded, if it is a known broken one.
    pub fn problem(&self, name: &str) -> Option<&str> {
        self.problems.get(name).map(String::as_str)
    }

    /// Every kind, in registration order.
    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn StepKind>> + '_ {
        self.kinds.values()
    }
}

/// A step kind for tests of validation and planning (this crate's and
/// others', through the `test-kit` feature): `shell` by name, with a
/// shell-run `run` and an `env` map, an output `stdout`; it never runs.
#[cfg(any(test, feature = "test-kit"))]
pub mod test_kit {
    use super::{Effect, OutputDecl, OutputType, Outputs, StepContext, StepError, StepKind};
    use serde_json::{Value as Json, json};

    /// The kind.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Cmd;

    #[async_trait::async_trait]
    impl StepKind for Cmd {
        fn name(&self) -> &'static str {
            "shell"
        }
        fn summary(&self) -> &'static str {
            "test kind"
        }
        fn params_schema(&self) -> Json {
            json!({
                "type": "object",
                "properties": { "run": { "type": "string" }, "env": { "type": "object" } },
                "required": ["run"],
                "additionalProperties": false,
            })
        }
        fn shell_fields(&self) -> &'static [&'static str] {
            &["/run"]
        }
        fn effect(&self, _: &Json) -> Effect {
            Effect::Unknown
        }
        fn idempotent(&self, _: &Json) -> bool {
            false
        }
        fn outputs(&self) -> &[OutputDecl] {
            const OUTPUTS: &[OutputDecl] = &[OutputDecl::new("stdout", OutputType::String, "")];
            OUTPUTS
        }
        fn describe(&self, w: &Json) -> String {
            format!("run {}", w["run"])
        }
        async fn run(&self, _: &StepContext, _: Json) -> Result<Outputs, StepError> {
            Err(StepError::new("a test kind never runs"))
        }
    }
}
