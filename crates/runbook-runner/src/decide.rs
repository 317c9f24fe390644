//! What an operator decides about a run being continued (`--rerun`,
//! `--mark-done`, `--set-output`, `approve`/`reject`, `--to-current`),
//! checked against its journal before anything is recorded, and turned into
//! the journal entries that record it.

use crate::RunnerError;
use indexmap::IndexMap;
use runbook_core::calls::{self, LibraryCallees, StoredCallees};
use runbook_core::diag::Source;
use runbook_core::kind::Registry;
use runbook_core::library::Library;
use runbook_core::model::{Playbook, Step};
use runbook_core::validate::{Expected, Loaded};
use runbook_engine::replay::{Prior, Replay};
use runbook_report::sha256_hex;
use runbook_state::{Event, RunRecord};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

/// An answer to an approval.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Approve (true) or reject.
    pub approve: bool,
    /// Who answers.
    pub who: String,
    /// Why, in their words.
    pub comment: Option<String>,
    /// The plan the answerer reviewed, if they said.
    pub plan_hash: Option<String>,
}

impl Answer {
    /// The journal entries that record it for each waiting step, bound to the
    /// run's plan.
    pub(crate) fn events(&self, waiting: &[String], plan: &str) -> Vec<Event> {
        waiting
            .iter()
            .map(|step| Event::OperatorAction {
                action: if self.approve { "approve" } else { "reject" }.into(),
                step: Some(step.clone()),
                who: self.who.clone(),
                comment: self.comment.clone(),
                plan_hash: Some(plan.to_owned()),
            })
            .collect()
    }
}

/// What an operator decided about a run being continued.
#[derive(Debug, Default, Clone, Copy)]
pub struct Decisions<'a> {
    /// `--rerun STEP`: run in-flight (or marked-done) steps again.
    pub rerun: &'a [String],
    /// `--mark-done STEP`: record in-flight steps as done.
    pub mark_done: &'a [String],
    /// `--set-output STEP.NAME=VALUE`: outputs of steps marked done.
    pub set_output: &'a [String],
    /// `approve` / `reject`.
    pub answer: Option<&'a Answer>,
    /// `cancel` of a run nobody executes: only its handlers run.
    pub cancel: bool,
    /// `--to-current`: continue on the playbook file's current text, once it
    /// agrees with what already ran.
    pub to_current: bool,
    /// The library, to tell whether the playbook file changed since the run
    /// started.
    pub library: Option<&'a Library>,
}

/// `--set-output STEP.NAME=VALUE` flags, by step path.
pub(crate) fn set_outputs(flags: &[String]) -> Result<IndexMap<String, serde_json::Map<String, Json>>, RunnerError> {
    let mut out: IndexMap<String, serde_json::Map<String, Json>> = IndexMap::new();
    for flag in flags {
        let parsed = flag.split_once('=').and_then(|(key, value)| {
            let (step, name) = key.rsplit_once('.')?;
            (!step.is_empty() && !name.is_empty()).then_some((step, name, value))
        });
        let Some((step, name, value)) = parsed else {
            return Err(RunnerError::SetOutputSyntax(flag.clone()));
        };
        out.entry(step.to_owned())
            .or_default()
            .insert(name.to_owned(), Json::String(value.to_owned()));
    }
    Ok(out)
}

/// The step id at the end of a step path (`roll[web1].deploy` → `deploy`).
fn step_id(path: &str) -> &str {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.split('[').next().unwrap_or(last)
}

/// Checks `--mark-done`, `--rerun` and `--set-output` against the journal;
/// the outputs given, by step.
pub(crate) fn check_steps(
    d: &Decisions<'_>,
    replay: &Replay,
    pb: &Playbook,
) -> Result<IndexMap<String, serde_json::Map<String, Json>>, RunnerError> {
    let in_flight = replay.in_flight();
    if let Some(step) = d.mark_done.iter().find(|s| !in_flight.contains(s)) {
        return Err(RunnerError::NotInFlight {
            step: step.clone(),
            in_flight,
        });
    }
    // `--rerun` also takes back a `--mark-done` the step has not run since.
    if let Some(step) = d
        .rerun
        .iter()
        .find(|s| !in_flight.contains(s) && !replay.marked_done.contains(*s))
    {
        let mut marked: Vec<String> = replay.marked_done.iter().cloned().collect();
        marked.sort();
        return Err(RunnerError::NotRerunnable {
            step: step.clone(),
            in_flight,
            marked,
        });
    }
    let given = set_outputs(d.set_output)?;
    if let Some(step) = given.keys().find(|s| !d.mark_done.contains(s)) {
        return Err(RunnerError::SetOutputNotMarked(step.clone()));
    }
    // A step marked done has the outputs the operator gives; every output a
    // later step reads must be given, or that step would fail on it.
    let steps = pb.all_steps();
    for step in d.mark_done {
        let have = given.get(step);
        let missing: Vec<String> = runbook_core::template::outputs_read(steps.iter().copied(), step_id(step))
            .into_iter()
            .filter(|name| match have {
                None => true,
                Some(h) => name != "*" && !h.contains_key(name),
            })
            .collect();
        if !missing.is_empty() {
            return Err(RunnerError::MissingOutputs {
                step: step.clone(),
                missing,
            });
        }
    }
    Ok(given)
}

/// The journal entries for the operator's decisions, after the first one
/// (`run_resumed` or `run_queued`): `answered` records an approval's answer,
/// `given` are the `--set-output` values.
pub(crate) fn events(
    d: &Decisions<'_>,
    who: &str,
    replay: &Replay,
    answered: Vec<Event>,
    mut given: IndexMap<String, serde_json::Map<String, Json>>,
) -> Vec<Event> {
    let action = |action: &str, step: Option<&String>| Event::OperatorAction {
        action: action.into(),
        step: step.cloned(),
        who: who.to_owned(),
        comment: None,
        plan_hash: None,
    };
    let mut journal = Vec::new();
    if d.cancel {
        journal.push(action("cancel", None));
    }
    journal.extend(answered);
    journal.extend(d.rerun.iter().map(|s| action("rerun", Some(s))));
    for step in d.mark_done {
        journal.push(action("mark-done", Some(step)));
        let attempt = match replay.steps.get(step) {
            Some(Prior::InFlight { attempt }) => *attempt,
            _ => 0,
        };
        journal.push(Event::StepSucceeded {
            step: step.clone(),
            attempt,
            outputs: Json::Object(given.shift_remove(step).unwrap_or_default()),
        });
    }
    journal
}

/// The playbook a run executes: the exact text it started with, validated
/// again by this runbook.
pub fn load_stored(record: &RunRecord, registry: &Registry) -> Result<Loaded, RunnerError> {
    let source = Source::new(
        format!("run {} ({} v{})", record.id, record.playbook, record.version),
        record.text.clone(),
    );
    let expected = Expected {
        name: Some(record.playbook.clone()),
        version: Some(record.version),
    };
    let callees = StoredCallees::new(&record.calls, &record.id, &record.playbook);
    runbook_core::validate::load_with(source, &expected, registry, &callees)
        .map_err(|inv| RunnerError::StoredInvalid(Box::new(inv)))
}

/// The hash a run keeps of its texts: its playbook's, and (when it calls
/// any) each called playbook's by key, so an edit of a callee counts as an
/// edit too.
pub fn text_hash(text: &str, calls: &IndexMap<String, String>) -> String {
    if calls.is_empty() {
        return sha256_hex(text);
    }
    let mut all = text.to_owned();
    for (key, callee) in calls {
        all.push_str(&format!("\0{key}\0{callee}"));
    }
    sha256_hex(&all)
}

/// The inputs a run was started with.
pub fn stored_inputs(record: &RunRecord) -> IndexMap<String, Json> {
    record
        .inputs
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// A run's inputs as its first attempt had them: where they held a secret,
/// the journal's sealed copy with the secrets fetched again; else as stored.
pub(crate) fn real_inputs(
    record: &RunRecord,
    replay: &Replay,
    secrets: &IndexMap<String, String>,
) -> IndexMap<String, Json> {
    match replay
        .sealed_inputs
        .as_ref()
        .map(|v| runbook_engine::secrets::unseal(v, secrets))
    {
        Some(Json::Object(m)) => m.into_iter().collect(),
        _ => stored_inputs(record),
    }
}

/// The current file of a run's playbook (same name and version), its text,
/// and the hash of that text with the current texts of the playbooks the run
/// calls ([`text_hash`]).
pub(crate) fn current_text(lib: &Library, record: &RunRecord) -> Option<(PathBuf, String, String)> {
    let located = lib.locate(&format!("{}@{}", record.playbook, record.version)).ok()?;
    let text = std::fs::read_to_string(&located.path).ok()?;
    let calls: IndexMap<String, String> = record
        .calls
        .keys()
        .map(|key| {
            let callee = lib.locate(key).ok().and_then(|l| std::fs::read_to_string(l.path).ok());
            (key.clone(), callee.unwrap_or_default())
        })
        .collect();
    let hash = text_hash(&text, &calls);
    Some((located.path, text, hash))
}

/// The step at a step path (`roll[web1].deploy`, `finally.notify`), into
/// the playbooks it calls (`failover.promote`).
fn step_at<'p>(loaded: &'p Loaded, path: &str) -> Option<&'p Step> {
    let pb = &loaded.playbook;
    let mut segs = path.split('.').peekable();
    let mut list: &[Step] = match segs.peek() {
        Some(&"on_failure") => {
            segs.next();
            &pb.on_failure
        }
        Some(&"finally") => {
            segs.next();
            &pb.finally
        }
        _ => &pb.steps,
    };
    let mut found = None;
    while let Some(seg) = segs.next() {
        let id = seg.split('[').next().unwrap_or(seg);
        let step = match id.parse::<usize>() {
            Ok(n) => list.get(n.checked_sub(1)?)?,
            Err(_) => list.iter().find(|s| s.id.as_deref() == Some(id))?,
        };
        found = Some(step);
        list = match segs.peek() {
            Some(&"on_failure") => {
                segs.next();
                &step.on_failure
            }
            Some(&"undo") => {
                segs.next();
                step.undo_steps()
            }
            _ => match calls::call_of(step).and_then(|k| loaded.calls.get(&k)) {
                Some(callee) => match segs.peek() {
                    Some(&"on_failure") => {
                        segs.next();
                        &callee.playbook.on_failure
                    }
                    Some(&"finally") => {
                        segs.next();
                        &callee.playbook.finally
                    }
                    _ => &callee.playbook.steps,
                },
                None => step.children(),
            },
        };
    }
    found
}

/// The new text of a run's playbook, loaded, if every step the run already
/// finished is the same in it (its definition, children included) and it
/// takes the run's inputs; else what differs.
pub(crate) fn upgrade(
    lib: &Library,
    old: &Loaded,
    path: &Path,
    text: &str,
    replay: &Replay,
    registry: &Registry,
    record: &RunRecord,
) -> Result<Loaded, RunnerError> {
    let source = Source::new(path.display().to_string(), text.to_owned());
    let expected = Expected {
        name: Some(record.playbook.clone()),
        version: Some(record.version),
    };
    let callees = LibraryCallees::new(lib, Some(&record.playbook));
    let new = runbook_core::validate::load_with(source, &expected, registry, &callees).map_err(|inv| {
        RunnerError::CurrentInvalid {
            path: path.display().to_string(),
            invalid: Box::new(inv),
        }
    })?;
    let mut done: Vec<&String> = replay
        .steps
        .iter()
        .filter(|(_, p)| matches!(p, Prior::Succeeded(_) | Prior::Skipped))
        .map(|(k, _)| k)
        .collect();
    done.sort();
    let mut differ = Vec::new();
    for step in done {
        let before = step_at(old, step).map(serde_json::to_value);
        let after = step_at(&new, step).map(serde_json::to_value);
        match (before, after) {
            (Some(Ok(a)), Some(Ok(b))) if a == b => {}
            (_, None) => differ.push(format!("`{step}` is gone")),
            _ => differ.push(format!("`{step}` changed")),
        }
    }
    if !differ.is_empty() {
        return Err(RunnerError::NotUpgradable(format!(
            "the current text of {} changes steps this run already finished: {}",
            path.display(),
            differ.join(", ")
        )));
    }
    if let Err(errors) = runbook_core::inputs::resolve(&new.playbook, &stored_inputs(record)) {
        let why: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(RunnerError::NotUpgradable(format!(
            "the current text does not take this run's inputs: {}",
            why.join("; ")
        )));
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn set_output_flags_group_by_step_and_refuse_other_shapes() {
        let flags = [
            "roll[web1].deploy.stdout=v42".to_owned(),
            "roll[web1].deploy.code=0".to_owned(),
        ];
        let got = set_outputs(&flags).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got["roll[web1].deploy"]["stdout"], "v42");
        assert_eq!(got["roll[web1].deploy"]["code"], "0");
        for bad in ["deploy=v42", ".stdout=x", "deploy.=x", "deploy.stdout"] {
            let err = set_outputs(&[bad.to_owned()]).unwrap_err();
            assert!(
                matches!(&err, RunnerError::SetOutputSyntax(f) if f == bad),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_step_path_names_its_step_through_groups_and_handlers() {
        let pb: Playbook = serde_json::from_value(serde_json::json!({
            "apiVersion": "runbook/v1", "name": "t", "version": 1,
            "steps": [{"id": "roll", "steps": [{"id": "deploy", "uses": "shell", "with": {"run": "true"}}]}],
            "finally": [{"id": "notify", "uses": "shell", "with": {"run": "true"}}],
        }))
        .unwrap();
        let loaded = Loaded {
            playbook: pb,
            source: Source::new("t", ""),
            warnings: Vec::new(),
            calls: IndexMap::new(),
        };
        assert_eq!(
            step_at(&loaded, "roll[web1].deploy").and_then(|s| s.id.as_deref()),
            Some("deploy")
        );
        assert_eq!(
            step_at(&loaded, "finally.notify").and_then(|s| s.id.as_deref()),
            Some("notify")
        );
        assert!(step_at(&loaded, "roll.missing").is_none());
        assert_eq!(step_id("roll[web1].deploy"), "deploy");
    }
}
