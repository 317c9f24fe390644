//! What a front end shows of the library, the inventory and a run: the
//! documents `runbook list`, `show`, `validate`, `inventory` and `status`
//! print with `--output json` (and a server answers with), built here from
//! the library, the inventory and the journal. They are typed so that their
//! JSON Schema (`runbook schema --output-of COMMAND`, checked in under
//! `schemas/cli/`) is generated from the same types that print them.

use indexmap::IndexMap;
use runbook_core::diag::{Diagnostic, Severity, Source};
use runbook_core::kind::Registry;
use runbook_core::library::{self, Library, LibraryError, LoadError};
use runbook_core::validate::Loaded;
use runbook_state::{Recorded, RunRecord};
use schemars::JsonSchema;
use serde::Serialize;

/// `runbook list --output json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct List {
    /// Every playbook of the library.
    pub playbooks: Vec<ListEntry>,
}

/// One playbook of the library.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListEntry {
    /// Its name (the folder).
    pub name: String,
    /// Every version, oldest first.
    pub versions: Vec<u32>,
    /// The highest version (what `run NAME` runs).
    pub latest: u32,
    /// The first line of its description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether its latest version validates.
    pub valid: bool,
    /// Why not, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True when the reason is that it does not validate (not that it
    /// cannot be read).
    #[serde(skip)]
    pub invalid: bool,
}

/// `runbook show --output json`: the playbook as runbook read it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Show {
    /// The file it was read from.
    pub file: String,
    /// Inputs a run must be given (no default, not `required: false`).
    pub required_inputs: Vec<String>,
    /// The playbook (the format of `schemas/playbook.v1.json`).
    pub playbook: runbook_core::model::Playbook,
}

/// `runbook validate --output json`: what CI annotates a pull request from.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Validate {
    /// One entry per playbook checked.
    pub files: Vec<Checked>,
    /// How many validate.
    pub valid: usize,
    /// How many do not.
    pub invalid: usize,
}

/// One playbook checked.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Checked {
    /// What was asked for (`NAME@VERSION` or a path).
    pub target: String,
    /// The file read, when one was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Whether it validates (warnings allowed).
    pub valid: bool,
    /// Every error and warning, located.
    pub diagnostics: Vec<Diag>,
}

/// A diagnostic, with what an annotation needs.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Diag {
    /// `error` or `warning`.
    pub severity: &'static str,
    /// A stable code (`unknown-kind`, `undefined`, ...).
    pub code: String,
    /// What is wrong.
    pub message: String,
    /// The file.
    pub file: String,
    /// 1-based line, when located.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column (in characters), when located.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// How to fix it, when there is an obvious way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diag {
    /// An error about a whole file (not found, not readable).
    pub fn unlocated(code: &str, message: String, file: &str) -> Diag {
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

    /// A located diagnostic of a file.
    pub fn of(source: &Source, d: &Diagnostic) -> Diag {
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
pub struct Inventory {
    /// Every host, with its settings resolved (defaults applied).
    pub hosts: IndexMap<String, Host>,
    /// Every group and its hosts.
    pub groups: IndexMap<String, Vec<String>>,
}

/// A host as runbook reaches it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Host {
    /// The address ssh and checks use.
    pub address: String,
    /// The ssh user, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The ssh port, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The bastion, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jump: Option<String>,
    /// The groups it is in.
    pub groups: Vec<String>,
    /// Its variables.
    pub vars: IndexMap<String, serde_json::Value>,
}

/// `runbook status RUN --output json`: one run and each of its steps.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Status {
    /// The run.
    pub run: runbook_state::RunRecord,
    /// The plan an approval of this run is bound to (SHA-256).
    pub plan_hash: String,
    /// Each step path, in the order it first ran, with its last state.
    pub steps: Vec<runbook_report::StepRow>,
    /// Why the run did not succeed, if it did not.
    pub error: Option<String>,
}

// `event_line` and `log_line` write the lines this type describes.
/// One line of `--output json`: a journal event with its run and time, or a
/// step's log line. Only its schema is used (`runbook schema --events`).
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum EventLine {
    /// A journal event.
    Event {
        #[serde(flatten)]
        event: runbook_state::Event,
        /// The run id.
        run: String,
        /// When it was printed (RFC 3339).
        at: String,
    },
    /// A log line of a step.
    Log {
        #[serde(flatten)]
        line: runbook_state::LogLine,
        /// Always `log`.
        event: LogTag,
    },
}

/// The `event` of a log line.
#[derive(Serialize, JsonSchema)]
#[allow(dead_code)]
enum LogTag {
    /// A log line.
    #[serde(rename = "log")]
    Log,
}

/// The JSON Schema of one `--output json` line (schemas/events.v1.json).
pub fn events_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(EventLine)).unwrap_or_default();
    if let Some(m) = schema.as_object_mut() {
        m.insert("title".into(), "runbook --output json: one line".into());
        m.insert("$id".into(), "https://runbook.dev/schemas/events.v1.json".into());
    }
    schema
}

/// A journal event of `run` as one `--output json` line, recorded `at`.
pub fn event_line(run: &str, event: &runbook_state::Event, at: &str) -> String {
    // Serialized straight to text: an event can carry a large fan-out's
    // outputs, never copied into a JSON value first.
    #[derive(serde::Serialize)]
    struct Line<'e> {
        #[serde(flatten)]
        event: &'e runbook_state::Event,
        run: &'e str,
        at: &'e str,
    }
    serde_json::to_string(&Line { event, run, at }).unwrap_or_default()
}

/// A step's log line as one `--output json` line.
pub fn log_line(line: &runbook_state::LogLine) -> String {
    let mut v = serde_json::to_value(line).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert("event".into(), "log".into());
    }
    v.to_string()
}

/// The commands with a JSON document of their own, for `runbook schema
/// --output-of`.
pub const COMMANDS: &[&str] = &[
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
pub fn schema_of(command: &str) -> Option<serde_json::Value> {
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

/// Every playbook of the library, each with its latest version loaded and
/// checked.
pub fn list(lib: &Library, registry: &Registry) -> Result<List, LibraryError> {
    let playbooks = lib
        .entries()?
        .iter()
        .map(|e| {
            let loaded = lib.locate(&e.name).map(|l| library::load(lib, &l, registry));
            let (description, error, invalid) = match loaded {
                Ok(Ok(l)) => (
                    l.playbook
                        .description
                        .as_deref()
                        .and_then(|d| d.lines().next())
                        .map(str::to_owned),
                    None,
                    false,
                ),
                Ok(Err(LoadError::Invalid(inv))) => {
                    (None, Some(crate::error::plural(inv.error_count(), "error")), true)
                }
                Ok(Err(LoadError::Library(err))) | Err(err) => (None, Some(err.to_string()), false),
            };
            ListEntry {
                name: e.name.clone(),
                versions: e.versions.clone(),
                latest: e.latest(),
                valid: error.is_none(),
                description,
                error,
                invalid,
            }
        })
        .collect();
    Ok(List { playbooks })
}

/// One playbook checked, with what a person is shown about it.
pub struct Target {
    /// The document entry.
    pub checked: Checked,
    /// What to show.
    pub found: Found,
}

/// What checking a target found.
pub enum Found {
    /// Not found, or not readable.
    Error(String),
    /// It validates; its warnings, if any.
    Valid(Box<Loaded>),
    /// It does not validate.
    Invalid(Box<runbook_core::validate::Invalid>),
}

/// Checks each target (`NAME`, `NAME@VERSION` or a path), or every version
/// of every playbook of the library when none is given.
pub fn check(lib: &Library, registry: &Registry, targets: &[String]) -> Result<Vec<Target>, LibraryError> {
    let targets: Vec<String> = if targets.is_empty() {
        lib.entries()?
            .iter()
            .flat_map(|e| e.versions.iter().map(move |v| format!("{}@{v}", e.name)))
            .collect()
    } else {
        targets.to_vec()
    };
    let checked = |target: &str, file: Option<String>, diagnostics: Vec<Diag>, valid| Checked {
        target: target.to_owned(),
        file,
        valid,
        diagnostics,
    };
    let each = targets.iter().map(|target| {
        let located = match lib.locate(target) {
            Ok(l) => l,
            Err(e) => {
                let d = Diag::unlocated("not-found", e.to_string(), target);
                return Target {
                    checked: checked(target, None, vec![d], false),
                    found: Found::Error(e.to_string()),
                };
            }
        };
        match library::load(lib, &located, registry) {
            Ok(l) => {
                let diags = l.warnings.iter().map(|d| Diag::of(&l.source, d)).collect();
                Target {
                    checked: checked(target, Some(l.source.name.clone()), diags, true),
                    found: Found::Valid(Box::new(l)),
                }
            }
            Err(LoadError::Library(e)) => {
                let file = located.path.display().to_string();
                let d = Diag::unlocated("library", e.to_string(), &file);
                Target {
                    checked: checked(target, Some(file), vec![d], false),
                    found: Found::Error(e.to_string()),
                }
            }
            Err(LoadError::Invalid(inv)) => {
                let diags = inv.diagnostics.iter().map(|d| Diag::of(&inv.source, d)).collect();
                Target {
                    checked: checked(target, Some(inv.source.name.clone()), diags, false),
                    found: Found::Invalid(inv),
                }
            }
        }
    });
    Ok(each.collect())
}

impl Show {
    /// A loaded playbook, as `show` prints it.
    pub fn of(loaded: &Loaded) -> Show {
        let pb = &loaded.playbook;
        Show {
            file: loaded.source.name.clone(),
            required_inputs: pb
                .inputs
                .iter()
                .filter(|(_, s)| s.is_required())
                .map(|(k, _)| k.clone())
                .collect(),
            playbook: pb.clone(),
        }
    }
}

impl Inventory {
    /// Every host with its settings resolved, and the groups.
    pub fn of(inv: &runbook_core::inventory::Inventory) -> Inventory {
        let hosts = inv
            .hosts
            .keys()
            .filter_map(|name| {
                let (address, s, vars) = inv.resolved(name)?;
                let host = Host {
                    address,
                    user: s.user,
                    port: s.port,
                    jump: s.jump,
                    groups: inv.groups_of(name).iter().map(|g| (*g).to_owned()).collect(),
                    vars: vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                };
                Some((name.clone(), host))
            })
            .collect();
        Inventory {
            hosts,
            groups: inv.groups.clone(),
        }
    }
}

impl Status {
    /// A run and its journal.
    pub fn of(run: RunRecord, events: &[Recorded]) -> Status {
        Status {
            plan_hash: runbook_report::plan_hash(&run),
            steps: runbook_report::steps(events),
            error: runbook_report::last_error(events),
            run,
        }
    }
}

/// The report of a run: its record, journal and log from the store, and the
/// playbook's objectives from the text the run recorded.
pub async fn report(
    store: &dyn runbook_state::Store,
    registry: &Registry,
    id: &str,
) -> runbook_state::Result<runbook_report::Report> {
    let record = store.run(id).await?;
    let events = store.events(&record.id).await?;
    let logs: Vec<_> = store
        .logs(&record.id, None, 0)
        .await?
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    // A text this runbook no longer validates has no objectives to judge by.
    let objectives = crate::decide::load_stored(&record, registry)
        .ok()
        .and_then(|loaded| loaded.playbook.objectives);
    Ok(runbook_report::Report::build(
        &record,
        &events,
        &logs,
        objectives.as_ref(),
    ))
}

/// A run's timeline as a Gantt chart (SVG), against its playbook's RTO
/// objective; the bars of a run still going reach now.
pub async fn timeline(
    store: &dyn runbook_state::Store,
    registry: &Registry,
    id: &str,
) -> runbook_state::Result<String> {
    use runbook_state::RunStatus;
    let record = store.run(id).await?;
    let events = store.events(&record.id).await?;
    let objectives = crate::decide::load_stored(&record, registry)
        .ok()
        .and_then(|loaded| loaded.playbook.objectives);
    let against = runbook_report::timeline::Against::of(&events, objectives.as_ref());
    let live = matches!(
        record.status,
        RunStatus::Running | RunStatus::Waiting | RunStatus::Queued
    );
    Ok(runbook_report::timeline::svg(
        &events,
        against,
        live.then(std::time::SystemTime::now),
    ))
}

/// The last `limit` runs of `playbook`, oldest first, each with how long it
/// took and the recovery time it measured: what its history chart draws.
pub async fn history(
    store: &dyn runbook_state::Store,
    playbook: &str,
    limit: u32,
) -> runbook_state::Result<Vec<runbook_report::history::Point>> {
    use runbook_state::RunStatus;
    let mut points = Vec::new();
    for r in store.runs(Some(playbook), limit).await?.into_iter().rev() {
        let events = store.events(&r.id).await?;
        let ended = !matches!(r.status, RunStatus::Running | RunStatus::Queued | RunStatus::Waiting);
        points.push(runbook_report::history::Point {
            took_seconds: ended
                .then(|| runbook_report::seconds_between(&r.created_at, &r.updated_at))
                .flatten(),
            rto_seconds: runbook_report::measured(&events, "rto_seconds"),
            status: r.status.as_str().to_owned(),
            started: r.created_at,
            run: r.id,
        });
    }
    Ok(points)
}

/// A run's step DAG (SVG), each step coloured by its state in the journal.
pub async fn graph(
    store: &dyn runbook_state::Store,
    registry: &Registry,
    id: &str,
) -> Result<String, crate::RunnerError> {
    let record = store.run(id).await?;
    let events = store.events(&record.id).await?;
    let loaded = crate::decide::load_stored(&record, registry)?;
    let states = runbook_report::steps(&events)
        .into_iter()
        .map(|r| (r.step, r.state))
        .collect();
    Ok(runbook_engine::graph::svg(&loaded.playbook, &states))
}
