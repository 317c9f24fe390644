//! `--output json` of the read-only commands (`list`, `show`, `validate`,
//! `inventory`, and `plan`, `history`, `locks`, `workers` whose types live in
//! the engine and the state crate): one JSON document each, typed so that its JSON Schema
//! (`runbook schema --output-of COMMAND`, checked in under `schemas/cli/`) is
//! generated from the same types that print it.

use indexmap::IndexMap;
use runbook_core::diag::{Diagnostic, Severity, Source};
use schemars::JsonSchema;
use serde::Serialize;

/// `runbook list --output json`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct List {
    /// Every playbook of the library.
    pub(crate) playbooks: Vec<ListEntry>,
}

/// One playbook of the library.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ListEntry {
    /// Its name (the folder).
    pub(crate) name: String,
    /// Every version, oldest first.
    pub(crate) versions: Vec<u32>,
    /// The highest version (what `run NAME` runs).
    pub(crate) latest: u32,
    /// The first line of its description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    /// Whether its latest version validates.
    pub(crate) valid: bool,
    /// Why not, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// `runbook show --output json`: the playbook as runbook read it.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Show {
    /// The file it was read from.
    pub(crate) file: String,
    /// Inputs a run must be given (no default, not `required: false`).
    pub(crate) required_inputs: Vec<String>,
    /// The playbook (the format of `schemas/playbook.v1.json`).
    pub(crate) playbook: runbook_core::model::Playbook,
}

/// `runbook validate --output json`: what CI annotates a pull request from.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Validate {
    /// One entry per playbook checked.
    pub(crate) files: Vec<Checked>,
    /// How many validate.
    pub(crate) valid: usize,
    /// How many do not.
    pub(crate) invalid: usize,
}

/// One playbook checked.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Checked {
    /// What was asked for (`NAME@VERSION` or a path).
    pub(crate) target: String,
    /// The file read, when one was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<String>,
    /// Whether it validates (warnings allowed).
    pub(crate) valid: bool,
    /// Every error and warning, located.
    pub(crate) diagnostics: Vec<Diag>,
}

/// A diagnostic, with what an annotation needs.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Diag {
    /// `error` or `warning`.
    pub(crate) severity: &'static str,
    /// A stable code (`unknown-kind`, `undefined`, ...).
    pub(crate) code: String,
    /// What is wrong.
    pub(crate) message: String,
    /// The file.
    pub(crate) file: String,
    /// 1-based line, when located.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) line: Option<usize>,
    /// 1-based column (in characters), when located.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) column: Option<usize>,
    /// How to fix it, when there is an obvious way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hint: Option<String>,
}

impl Diag {
    /// An error about a whole file (not found, not readable).
    pub(crate) fn unlocated(code: &str, message: String, file: &str) -> Diag {
        Diag {
            severity: "error",
            code: code.to_owned(),
            message,
            file: file.to_owned(),
            line: None,
            column: None,
            hint: None,
        }
    }

    pub(crate) fn of(source: &Source, d: &Diagnostic) -> Diag {
        Diag {
            severity: match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            },
            code: d.code.to_owned(),
            message: d.message.clone(),
            file: source.name.clone(),
            line: d.span.map(|s| s.line),
            column: d.span.map(|s| s.col),
            hint: d.hint.clone(),
        }
    }
}

/// `runbook inventory --output json`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Inventory {
    /// Every host, with its settings resolved (defaults applied).
    pub(crate) hosts: IndexMap<String, Host>,
    /// Every group and its hosts.
    pub(crate) groups: IndexMap<String, Vec<String>>,
}

/// A host as runbook reaches it.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Host {
    /// The address ssh and checks use.
    pub(crate) address: String,
    /// The ssh user, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<String>,
    /// The ssh port, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) port: Option<u16>,
    /// The bastion, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) jump: Option<String>,
    /// The groups it is in.
    pub(crate) groups: Vec<String>,
    /// Its variables.
    pub(crate) vars: IndexMap<String, serde_json::Value>,
}

/// `runbook status RUN --output json`: one run and each of its steps.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Status {
    /// The run.
    pub(crate) run: runbook_state::RunRecord,
    /// The plan an approval of this run is bound to (SHA-256).
    pub(crate) plan_hash: String,
    /// Each step path, in the order it first ran, with its last state.
    pub(crate) steps: Vec<runbook_report::StepRow>,
    /// Why the run did not succeed, if it did not.
    pub(crate) error: Option<String>,
}

/// The commands with a JSON document of their own, for `runbook schema
/// --output-of`.
pub(crate) const COMMANDS: &[&str] = &[
    "list",
    "show",
    "validate",
    "inventory",
    "status",
    "plan",
    "history",
    "locks",
    "workers",
];

/// The JSON Schema of a command's `--output json`: of what is written (a
/// field left out when empty is not required).
pub(crate) fn schema_of(command: &str) -> Option<serde_json::Value> {
    let generator = schemars::generate::SchemaSettings::default()
        .for_serialize()
        .into_generator();
    let schema = match command {
        "list" => generator.into_root_schema_for::<List>(),
        "show" => generator.into_root_schema_for::<Show>(),
        "validate" => generator.into_root_schema_for::<Validate>(),
        "inventory" => generator.into_root_schema_for::<Inventory>(),
        "plan" => generator.into_root_schema_for::<runbook_engine::plan::Plan>(),
        // `status RUN`; without a run, `status` lists runs as `history` does.
        "status" => generator.into_root_schema_for::<Status>(),
        // `status` without a run lists runs the same way.
        "history" => generator.into_root_schema_for::<Vec<runbook_state::RunRecord>>(),
        "locks" => generator.into_root_schema_for::<Vec<runbook_state::Lock>>(),
        "workers" => generator.into_root_schema_for::<Vec<runbook_state::WorkerRow>>(),
        _ => return None,
    };
    serde_json::to_value(schema).ok()
}

/// Prints a document as pretty JSON.
pub(crate) fn print<T: Serialize>(doc: &T) {
    match serde_json::to_string_pretty(doc) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot write JSON: {e}"),
    }
}
