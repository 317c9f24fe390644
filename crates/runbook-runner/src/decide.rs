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
use std::time::SystemTime;

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
    /// The questions it answers, by step path; none named: the only one the
    /// run waits at (several waiting is refused, naming them).
    pub steps: Vec<String>,
    /// Answers every question the run waits at.
    pub all: bool,
}

impl Answer {
    /// The command that gives this answer (`approve` or `reject`).
    fn verb(&self) -> &'static str {
        if self.approve { "approve" } else { "reject" }
    }

    /// The questions it answers among those the run `id` waits at: those it
    /// names, every one if asked, else the only one; refused (naming them)
    /// when it names a step that does not wait, or names none of several.
    pub(crate) fn targets(&self, id: &str, waiting: &[String]) -> Result<Vec<String>, RunnerError> {
        if self.all && !self.steps.is_empty() {
            return Err(RunnerError::Options(format!(
                "`{}` names questions and asks for all of them; do one or the other",
                self.verb()
            )));
        }
        if self.all {
            return Ok(waiting.to_vec());
        }
        if let Some(step) = self.steps.iter().find(|s| !waiting.contains(s)) {
            return Err(RunnerError::NotAsked {
                id: id.to_owned(),
                step: step.clone(),
                waiting: waiting.to_vec(),
            });
        }
        match (self.steps.as_slice(), waiting) {
            ([], [one]) => Ok(vec![one.clone()]),
            ([], _) => Err(RunnerError::WhichQuestion {
                id: id.to_owned(),
                verb: self.verb(),
                waiting: waiting.to_vec(),
            }),
            (named, _) => {
                let mut named = named.to_vec();
                named.sort();
                named.dedup();
                Ok(named)
            }
        }
    }

    /// The journal entries that record it for each step it answers, bound to
    /// the run's plan and to what each question covers ([`covers`]).
    pub(crate) fn events(&self, steps: &[String], plan: &str, covers: impl Fn(&str) -> Option<String>) -> Vec<Event> {
        steps
            .iter()
            .map(|step| Event::OperatorAction {
                action: self.verb().into(),
                step: Some(step.clone()),
                who: self.who.clone(),
                comment: self.comment.clone(),
                plan_hash: Some(plan.to_owned()),
                covers: covers(step),
            })
            .collect()
    }
}

/// A question resume asks again (a fresh question, for a person), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskAgain {
    /// The step path of the question.
    pub step: String,
    /// Why, in words: it expired, was rejected, or what it approved changed.
    pub why: String,
}

impl AskAgain {
    /// Its journal entry, by `who` (who resumes).
    pub(crate) fn event(&self, who: &str) -> Event {
        Event::OperatorAction {
            action: "ask-again".into(),
            step: Some(self.step.clone()),
            who: who.to_owned(),
            comment: Some(format!(
                "{}; asked anew, with a fresh expiry, for a person (`--yes` does not answer it)",
                self.why
            )),
            plan_hash: None,
            covers: None,
        }
    }
}

/// The questions a resume at `now` asks again, from the journal: those
/// rejected, those whose approval came after they expired, and those that
/// expired unanswered. An approval given in time stands (its gates are
/// checked again), and so does an answer the step has not seen yet.
pub fn to_ask_again(replay: &Replay, now: SystemTime) -> Vec<AskAgain> {
    let mut again: Vec<AskAgain> = replay
        .steps
        .iter()
        .filter_map(|(step, prior)| {
            let failed = match prior {
                Prior::Failed => true,
                Prior::Waiting => false,
                _ => return None,
            };
            let expires = replay.waiting.get(step).and_then(|(_, e)| e.clone());
            let expiry = expires.as_deref().and_then(|e| humantime::parse_rfc3339_weak(e).ok());
            let expires = expires.unwrap_or_default();
            let why = match replay.decisions.get(step) {
                Some(d) if failed && !d.approved => format!("{} rejected it", d.who),
                Some(d) if failed => {
                    let at = humantime::parse_rfc3339_weak(&d.at).ok();
                    match (at, expiry) {
                        (Some(at), Some(until)) if at > until => {
                            format!("the approval by {} came after it expired ({expires})", d.who)
                        }
                        _ => return None,
                    }
                }
                Some(_) => return None,
                None => match expiry {
                    Some(until) if now > until => format!("nobody answered it before it expired ({expires})"),
                    _ => return None,
                },
            };
            Some(AskAgain {
                step: step.clone(),
                why,
            })
        })
        .collect();
    again.sort_by(|a, b| a.step.cmp(&b.step));
    again
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
    loaded: &Loaded,
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
    // later step reads must be given, or that step would fail on it. Inside
    // a called playbook, its readers are that playbook's steps and its
    // `outputs:` (what the call hands back).
    for step in d.mark_done {
        let have = given.get(step);
        let scope = scope_of(loaded, step);
        let called = !std::ptr::eq(scope, &loaded.playbook);
        let handed_back = Step {
            outputs: called.then(|| scope.outputs.clone()),
            ..Step::default()
        };
        let mut readers = scope.all_steps();
        readers.push(&handed_back);
        let missing: Vec<String> = runbook_core::template::outputs_read(readers, step_id(step))
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
        covers: None,
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

/// The steps on the way to a step path, each as the list it is in and its
/// place there (`roll[web1].deploy`: `roll` in the playbook's steps, then
/// `deploy` in roll's), into the playbooks it calls (`failover.promote`).
fn chain<'p>(loaded: &'p Loaded, path: &str) -> Option<Vec<(&'p [Step], usize)>> {
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
    let mut found = Vec::new();
    while let Some(seg) = segs.next() {
        let id = seg.split('[').next().unwrap_or(seg);
        let at = match id.parse::<usize>() {
            Ok(n) => n.checked_sub(1)?,
            Err(_) => list.iter().position(|s| s.id.as_deref() == Some(id))?,
        };
        let step = list.get(at)?;
        found.push((list, at));
        // A call's own handlers are `ID.call.on_failure` (`ID.on_failure`
        // is the called playbook's).
        let own: &[&str] = if calls::call_of(step).is_some() {
            &["call", "on_failure"]
        } else {
            &["on_failure"]
        };
        if segs.clone().take(own.len()).eq(own.iter().copied()) {
            segs.nth(own.len() - 1);
            list = &step.on_failure;
            continue;
        }
        list = match segs.peek() {
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
    (!found.is_empty()).then_some(found)
}

/// The playbook a step path's step is written in: the run's, or one it
/// calls (`failover.promote` is dr-failover's).
fn scope_of<'p>(loaded: &'p Loaded, path: &str) -> &'p Playbook {
    let mut pb = &loaded.playbook;
    for pair in chain(loaded, path).unwrap_or_default().windows(2) {
        let ((list, at), (next, _)) = (pair[0], pair[1]);
        let Some(step) = list.get(at) else { break };
        // After a call: its own handlers, or the called playbook's steps.
        let own = std::ptr::eq(next, step.on_failure.as_slice()) || std::ptr::eq(next, step.undo_steps());
        if let Some(callee) = calls::call_of(step).and_then(|k| loaded.calls.get(&k)).filter(|_| !own) {
            pb = &callee.playbook;
        }
    }
    pb
}

/// The step at a step path (`roll[web1].deploy`, `finally.notify`), into
/// the playbooks it calls (`failover.promote`).
fn step_at<'p>(loaded: &'p Loaded, path: &str) -> Option<&'p Step> {
    let (list, at) = *chain(loaded, path)?.last()?;
    list.get(at)
}

/// The places of the steps of `list` that wait for its step `at`, directly
/// or through others.
fn dependents(list: &[Step], at: usize) -> Vec<usize> {
    let deps = runbook_engine::order::dependencies(list);
    let mut found = vec![at];
    // Each pass adds at least one step, or ends.
    for _ in 0..list.len() {
        let more: Vec<usize> = (0..list.len())
            .filter(|j| !found.contains(j) && deps.get(*j).is_some_and(|d| d.iter().any(|k| found.contains(k))))
            .collect();
        if more.is_empty() {
            break;
        }
        found.extend(more);
    }
    found.retain(|j| *j != at);
    found.sort_unstable();
    found
}

/// What an answer to the question at `path` approves: the SHA-256 of the
/// question's step, of every step that waits for it (after it in its list,
/// and after what holds it, up to the playbook's steps; with the text of a
/// playbook such a step calls) and of the run's `inputs`. `None` when the
/// path names no step of this text.
pub(crate) fn covers(loaded: &Loaded, path: &str, inputs: &Json) -> Option<String> {
    let chain = chain(loaded, path)?;
    let (list, at) = *chain.last()?;
    let step = list.get(at)?;
    let guarded: Vec<Json> = chain
        .iter()
        .rev()
        .flat_map(|(list, at)| dependents(list, *at).into_iter().filter_map(|j| list.get(j)))
        .map(|s| {
            let callee = calls::call_of(s).and_then(|k| loaded.calls.get(&k));
            serde_json::json!({ "step": s, "calls": callee.map(|c| &c.playbook) })
        })
        .collect();
    let all = serde_json::json!({ "step": step, "guards": guarded, "inputs": inputs });
    Some(sha256_hex(&all.to_string()))
}

/// The questions of a run whose approval does not cover `new`, the text
/// it moves to: each step of a kind that guards (an approval) that asked or
/// was answered, where what it approves ([`covers`]) differs between `old`
/// and `new`.
fn uncovered(old: &Loaded, new: &Loaded, replay: &Replay, registry: &Registry, inputs: &Json) -> Vec<AskAgain> {
    let mut again: Vec<AskAgain> = replay
        .steps
        .iter()
        .filter(|(_, prior)| !matches!(prior, Prior::Skipped))
        .filter_map(|(path, _)| {
            let step = step_at(old, path)?;
            let kind = step.uses.as_deref().and_then(|u| registry.get(u))?;
            if !kind.guards() {
                return None;
            }
            // A question the new text no longer has is not asked: the
            // check of what already finished names it.
            step_at(new, path)?;
            (covers(old, path, inputs) != covers(new, path, inputs)).then(|| AskAgain {
                step: path.clone(),
                why: "the current text changes what it approved (the step, or a step that waits for it)".to_owned(),
            })
        })
        .collect();
    again.sort_by(|a, b| a.step.cmp(&b.step));
    again
}

/// The new text of a run's playbook, loaded, if every step the run already
/// finished is the same in it (its definition, children included) and it
/// takes the run's inputs; else what differs. With it, the questions whose
/// approval does not cover the new text: they are asked again (an approval
/// that finished is no reason to refuse).
pub(crate) fn upgrade(
    lib: &Library,
    old: &Loaded,
    path: &Path,
    text: &str,
    replay: &Replay,
    registry: &Registry,
    record: &RunRecord,
) -> Result<(Loaded, Vec<AskAgain>), RunnerError> {
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
    let again = uncovered(old, &new, replay, registry, &record.inputs);
    let mut done: Vec<&String> = replay
        .steps
        .iter()
        .filter(|(k, p)| matches!(p, Prior::Succeeded(_) | Prior::Skipped) && !again.iter().any(|a| a.step == **k))
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
    Ok((new, again))
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
