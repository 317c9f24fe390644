//! The playbook model for `apiVersion: runbook/v1`.
//!
//! These types are the single source of truth for the format: the JSON Schema
//! in `schemas/playbook.v1.json` is generated from them, the loader checks a
//! playbook's structure against that schema, and only then deserializes it.
//! Doc comments on fields become the schema's descriptions, which editors show
//! as people type.
//!
//! Values that may be templated (`concurrency: "{{inputs.batch}}"`) are typed to
//! accept a template string in their schema; durations are kept as text here and
//! checked, with their location, by the validator.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The only `apiVersion` this build understands.
pub const API_VERSION: &str = "runbook/v1";

/// A playbook: a versioned, typed procedure made of steps.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "runbook playbook (runbook/v1)")]
pub struct Playbook {
    /// Always `runbook/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: ApiVersion,
    /// The playbook's name, as used by `runbook run NAME`; the folder name in the library.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]*$"))]
    pub name: String,
    /// The version; must match the file name `v<N>.yaml`.
    #[schemars(range(min = 1))]
    pub version: u32,
    /// What the playbook does, shown by `list`, `show` and `plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Typed inputs, given with `--set name=value` or `--inputs FILE`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub inputs: IndexMap<String, InputSpec>,
    /// Secrets resolved at run time (from the environment or a file), masked in all output and never stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretSpec>,
    /// Lock keys (templated), one or a list: a run holds every rendered key
    /// while it runs, and no other run holds any of them meanwhile (a
    /// deployment group, a host, a database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<OneOrMany<String>>,
    /// Recovery and latency objectives, measured and reported by drills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<Objectives>,
    /// Who hears about runs of this playbook, from whichever runner executes
    /// them (a terminal, CI, a worker, the daemon).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
    /// Defaults applied to every step that does not set them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<Defaults>,
    /// What a run of it gives back: named values rendered from templates once
    /// its steps have ended. A step that calls it (`uses: playbook`) has
    /// these outputs.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub outputs: IndexMap<String, String>,
    /// The steps, run top to bottom unless `needs` says otherwise.
    pub steps: Vec<Step>,
    /// Run when the playbook fails, before `finally`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<Step>,
    /// Always run at the end, whatever happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<Step>,
}

/// The format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// Version 1 of the playbook format.
    #[serde(rename = "runbook/v1")]
    V1,
}

/// The type of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A duration with a unit: `30s`, `5m`, `1h30m`.
    Duration,
    /// A list of values.
    List,
    /// A mapping of names to values.
    Map,
    /// One of the `values` listed.
    Enum,
}

impl InputType {
    /// The name as written in playbooks.
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Duration => "duration",
            InputType::List => "list",
            InputType::Map => "map",
            InputType::Enum => "enum",
        }
    }
}

/// A declared input.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The input's type; values are checked against it before anything runs.
    #[serde(rename = "type")]
    pub ty: InputType,
    /// What the input is for, shown by `show` and `plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether a run refuses to start without it. An input without a
    /// `default` is required unless it says `required: false`; an input with a
    /// default is never missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// The value used when none is given; must match the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Json>,
    /// A regular expression a string value must match (anchor it with `^...$`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The smallest value (numbers, durations) or length (lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Bound>,
    /// The largest value (numbers, durations) or length (lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Bound>,
    /// The allowed values (required for `enum`, optional for others).
    #[serde(default, alias = "allowed", skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<Json>>,
    /// The type of each item of a `list` input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<InputType>,
}

impl InputSpec {
    /// A run must be given it: no default, and not `required: false`.
    pub fn is_required(&self) -> bool {
        self.default.is_none() && self.required != Some(false)
    }
}

/// A bound of an input: a number, or a duration for `duration` inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Bound {
    /// A number (or a list length).
    Number(f64),
    /// A duration such as `30s`.
    Duration(String),
}

/// A secret: a name, resolved from the environment variable of that name, or a
/// full form naming the variable or file to read it from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SecretSpec {
    /// `DATABASE_URL`: read from the environment variable of that name.
    Name(String),
    /// `{ name: db, env: PROD_DB_URL }` or `{ name: db, file: /run/secrets/db }`.
    Full(Box<SecretSource>),
}

/// A webhook told about a playbook's runs: a JSON POST with a Slack-compatible
/// `text`, retried with backoff, signed when it names a secret.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// The URL to POST to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Or: an email to send over SMTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    /// What it hears about (default: all of them).
    #[serde(default = "RunMoment::all", skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<RunMoment>,
    /// A declared secret: the body is signed with HMAC-SHA256 under it, in
    /// the header `X-Runbook-Signature: sha256=HEX` (webhooks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl Notify {
    /// Where it goes, for people: the webhook's URL or `mailto:` the
    /// addresses.
    pub fn target(&self) -> String {
        match (&self.webhook, &self.email) {
            (Some(url), _) => url.clone(),
            (None, Some(e)) => format!("mailto:{}", e.to.join(",")),
            (None, None) => "nowhere".to_owned(),
        }
    }
}

/// An email notification.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Email {
    /// Who receives it.
    #[schemars(length(min = 1))]
    pub to: Vec<String>,
    /// Who it is from (default `runbook@<this host>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The SMTP server as a URL: `smtp://host:25` (STARTTLS when offered),
    /// `smtp://host:587?tls=required`, `smtps://host:465`, with
    /// `user:password@` if it asks for a login. Default: the runner's
    /// `RUNBOOK_SMTP_URL` (keep credentials there, not in a playbook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<String>,
}

/// A moment of a run worth telling someone about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunMoment {
    /// It started (not when it resumes).
    Started,
    /// It waits for an approval.
    Waiting,
    /// It failed, was cancelled, or stopped uncertain.
    Failed,
    /// It succeeded.
    Succeeded,
}

impl RunMoment {
    /// Every moment.
    pub fn all() -> Vec<RunMoment> {
        vec![
            RunMoment::Started,
            RunMoment::Waiting,
            RunMoment::Failed,
            RunMoment::Succeeded,
        ]
    }
}

/// Where a secret comes from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// The name used in templates: `{{secrets.NAME}}`.
    pub name: String,
    /// The environment variable to read (default: the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// A file to read instead (trailing newline removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// A command whose standard output is the value (trailing newline
    /// removed), run by `/bin/sh -c` when the run starts and again when it
    /// resumes: `sops -d --extract '["db"]' secrets.yaml`, `pass show db`,
    /// `aws secretsmanager get-secret-value ...`. A failing command (exit
    /// status not 0) refuses the run with its stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// AWS Secrets Manager, through the official SDK (credentials, region and
    /// `AWS_ENDPOINT_URL` as every AWS tool reads them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSecret>,
    /// HashiCorp Vault's KV version 2 engine, over its HTTP API (`VAULT_ADDR`,
    /// `VAULT_TOKEN` or `~/.vault-token`, `VAULT_NAMESPACE`, `VAULT_CACERT`, as
    /// the vault command reads them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultSecret>,
}

/// A secret of AWS Secrets Manager.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsSecret {
    /// The secret's name or ARN.
    pub secret_id: String,
    /// A field of the secret when its value is a JSON object (as RDS
    /// credentials are: `password`); default: the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The region (default: `AWS_REGION`, then the profile's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The version stage (default `AWSCURRENT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_stage: Option<String>,
}

/// A secret of a Vault KV version 2 engine.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VaultSecret {
    /// The secret's path inside the engine, e.g. `finance/db`.
    pub path: String,
    /// The field of the secret to read, e.g. `password`.
    pub key: String,
    /// Where the engine is mounted (default `secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// A version to read (default: the latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The server (default: `VAULT_ADDR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl SecretSpec {
    /// The name used in templates.
    pub fn name(&self) -> &str {
        match self {
            SecretSpec::Name(n) => n,
            SecretSpec::Full(s) => &s.name,
        }
    }

    /// The environment variable the value is read from, when it is read from
    /// one (not from a file, a command, Vault or AWS).
    pub fn env_var(&self) -> Option<&str> {
        match self {
            SecretSpec::Name(n) => Some(n),
            SecretSpec::Full(s) if s.file.is_none() && s.command.is_none() && s.vault.is_none() && s.aws.is_none() => {
                Some(s.env.as_deref().unwrap_or(&s.name))
            }
            SecretSpec::Full(_) => None,
        }
    }
}

/// Environment variables that hold the credentials of the secret backends
/// themselves: never shown where a secret would not be.
pub const CREDENTIAL_VARS: &[&str] = &["VAULT_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

/// Objectives a run is measured against.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// Recovery time objective: the longest acceptable time to recover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<String>,
    /// Recovery point objective: the most data (as time) that may be lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<String>,
    /// Latency and error-rate objectives, e.g. `{ p95: 100ms, max_error_rate: 0.001 }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyObjective>,
}

/// A latency objective.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyObjective {
    /// Median latency, e.g. `50ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<String>,
    /// 95th percentile latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95: Option<String>,
    /// 99th percentile latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<String>,
    /// The largest acceptable fraction of failed requests (0.001 = 0.1%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
}

/// Defaults for every step.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The default step timeout, e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// The default retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// One step: a call of a step kind (`uses` + `with`), or a group of steps
/// (`steps`), optionally repeated for each item of a list (`for_each`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// A unique id, used by `needs`, templates (`steps.<id>`), logs and resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"))]
    pub id: Option<String>,
    /// A human name for plans and progress (default: the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The step kind: `shell`, `ssh`, `http-check`, `lb`, `pg`, `sleep`, `wait`, `approve`,
    /// `prometheus`, a plugin's, or `playbook` (another playbook of the library).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    /// The kind's parameters, checked against its schema.
    #[serde(default, rename = "with", skip_serializing_if = "Option::is_none")]
    pub with: Option<serde_json::Map<String, Json>>,
    /// The steps (by id, in the same list) this one waits for; `[]` starts it at once.
    /// Without `needs`, a step runs after the step before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<String>>,
    /// A condition; when it renders `false` the step is skipped (and recorded as skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The longest the step may take, e.g. `5m`; the step is killed after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// How to retry a failed step: `retry: 3` or the full form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// A failure of this step does not fail the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_error: bool,
    /// Repeat the step (or group) for each item: a template giving a list, or a literal list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEach>,
    /// The name of the item variable in templates (default `item`).
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub as_: Option<String>,
    /// How many items run at once: a count, a percentage (`25%`), or a ramp (`[1, 25%, 100%]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// How many items may fail before the rest are not started: a count or a percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<CountOrPercent>,
    /// A group: these steps run as one unit (once per item with `for_each`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<Step>>,
    /// Steps run when this step (or, for a group, any of its steps) fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<Step>,
    /// Compensation: run, in reverse completion order, for each completed step when the run fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<OneOrMany<Step>>,
    /// Named outputs computed from templates after the step (or group) succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<IndexMap<String, String>>,
    /// Whether running the step twice is safe; decides what resume does with a step
    /// that was in flight. Defaults to what the kind declares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// For a group: what resume does once the group's `on_failure` steps have run
    /// (they usually roll it back). `continue` (default): run the failed step
    /// again. `restart`: run the whole group again from its first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumePolicy>,
    /// Outputs of this call that are secret: masked from the moment the step
    /// ends (logs, events, the journal), given in clear only to the steps of
    /// this run that read them. Never journalled, so a resumed run runs the
    /// step again when a step that reads them has not finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_outputs: Vec<String>,
    /// Secrets (declared under `secrets:`) handed to an external kind's
    /// plugin in its request, never on its command line or in its
    /// environment. Built-in kinds take secrets through templates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

/// What resume does with a group whose `on_failure` steps ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResumePolicy {
    /// Run the failed step again; what succeeded stays done.
    Continue,
    /// Run the whole group again from its first step: its handlers undid it.
    Restart,
}

impl Step {
    /// True for a group (`steps:`), false for a call of a kind.
    pub fn is_group(&self) -> bool {
        self.steps.is_some()
    }

    /// The name shown in plans: `name`, else `id`, else the kind.
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .or(self.id.as_deref())
            .or(self.uses.as_deref())
            .unwrap_or("step")
    }

    /// The nested steps of a group (empty for a call).
    pub fn children(&self) -> &[Step] {
        self.steps.as_deref().unwrap_or(&[])
    }

    /// The compensation steps.
    pub fn undo_steps(&self) -> &[Step] {
        self.undo.as_ref().map_or(&[], OneOrMany::as_slice)
    }

    /// The texts of the step's own fields that may hold templates (`with:`
    /// values at any depth, `when`, `timeout`, `for_each`, `retry.until`,
    /// `outputs:`), not those of the steps inside it.
    pub fn texts<'a>(&'a self) -> Vec<&'a str> {
        let strings = |v: &'a Json, out: &mut Vec<&'a str>| out.extend(crate::template::strings_in(v));
        let mut texts = Vec::new();
        if let Some(w) = &self.with {
            w.values().for_each(|v| strings(v, &mut texts));
        }
        texts.extend(self.when.as_deref());
        texts.extend(self.timeout.as_deref());
        match &self.for_each {
            Some(ForEach::Template(t)) => texts.push(t),
            Some(ForEach::List(items)) => items.iter().for_each(|v| strings(v, &mut texts)),
            None => {}
        }
        if let Some(Retry::Full(r)) = &self.retry {
            texts.extend(r.until.as_deref());
        }
        if let Some(o) = &self.outputs {
            texts.extend(o.values().map(String::as_str));
        }
        texts
    }

    /// This step and every step inside it (group, `on_failure`, `undo`), in
    /// document order.
    pub fn walk(&self) -> Vec<&Step> {
        let mut out = vec![self];
        for s in self.children().iter().chain(&self.on_failure).chain(self.undo_steps()) {
            out.extend(s.walk());
        }
        out
    }
}

impl Playbook {
    /// Every step of the playbook, handlers included, in document order.
    pub fn all_steps(&self) -> Vec<&Step> {
        self.steps
            .iter()
            .chain(&self.on_failure)
            .chain(&self.finally)
            .flat_map(Step::walk)
            .collect()
    }
}

/// One item or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single item.
    One(Box<T>),
    /// A list.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The items, one or many.
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(x) => std::slice::from_ref(&**x),
            OneOrMany::Many(v) => v,
        }
    }
}

/// A retry policy: `retry: 3` (attempts) or the full form.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Retry {
    /// The number of attempts, with the default delay.
    Attempts(u32),
    /// The full form.
    Full(RetrySpec),
}

/// The full retry policy.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// How many attempts in all (1 = no retry).
    #[schemars(range(min = 1))]
    pub attempts: u32,
    /// The pause before the second attempt, e.g. `3s` (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// How the delay grows: `fixed`, `exponential` (x2), or a factor such as `1.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// The longest delay between attempts, e.g. `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<String>,
    /// A condition on the step's outputs; the step is retried until it renders `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// How retry delays grow.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Backoff {
    /// A named policy.
    Named(BackoffName),
    /// A factor applied to the delay after each attempt.
    Factor(f64),
}

/// A named backoff policy.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackoffName {
    /// The same delay every time.
    Fixed,
    /// The delay doubles after each attempt.
    Exponential,
}

/// What `for_each` iterates over.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ForEach {
    /// A template that renders to a list: `"{{inputs.hosts}}"`.
    Template(String),
    /// A literal list.
    List(Vec<Json>),
}

/// How many `for_each` items run at once.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Concurrency {
    /// A fixed count, a percentage or a template: `2`, `"25%"`, `"{{inputs.batch}}"`.
    One(CountOrPercent),
    /// A ramp: the first batch runs with the first value, the next with the second,
    /// and so on, the last value holding for the rest: `[1, 25%, 100%]`.
    Ramp(Vec<CountOrPercent>),
}

/// A count (`2`) or a text: a percentage (`"25%"`) or a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CountOrPercent {
    /// A count.
    Count(u32),
    /// `"25%"` or a template rendering to a count or a percentage.
    Text(String),
}
