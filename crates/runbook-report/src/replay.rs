//! The journal's one fold: read once, it says what each step path last did
//! (so that resume skips what finished and decides about what was in
//! flight) and gives the step rows that `status`, `history` and the reports
//! show.

use runbook_state::{Event, Recorded, RunStatus};
use serde_json::Value as Json;
use std::collections::{HashMap, HashSet};

/// The last known state of a step path.
#[derive(Debug, Clone, PartialEq)]
pub enum Prior {
    /// Finished well; its outputs are restored, it does not run again.
    Succeeded(Json),
    /// Skipped by `when`; it stays skipped.
    Skipped,
    /// Failed (all attempts); it runs again.
    Failed,
    /// Waited for a person's answer; it runs again (and finds the answer).
    Waiting,
    /// Started and never finished: the process died, or the run was stopped
    /// while it ran. Its effect is unknown.
    InFlight {
        /// The attempt that was running.
        attempt: u32,
    },
}

/// Everything resume needs from a journal.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Per step path.
    pub steps: HashMap<String, Prior>,
    /// The highest attempt seen per step path.
    pub attempts: HashMap<String, u32>,
    /// `for_each` lists as first resolved (secrets masked).
    pub items: HashMap<String, Vec<Json>>,
    /// The same lists where they held a secret, secrets as references
    /// (`Event::Sealed`): what resume gives the steps, the secrets fetched again.
    pub sealed_items: HashMap<String, Json>,
    /// The run's inputs where they held a secret, secrets as references.
    pub sealed_inputs: Option<Json>,
    /// The values steps registered as secret, sealed under the mask key.
    pub registered: Vec<String>,
    /// The cgroups earlier runners held the run's processes in, with their
    /// host (`Event::Contained`).
    pub contained: Vec<(String, String)>,
    /// Paths an operator said to run again although they were in flight.
    pub rerun: HashSet<String>,
    /// How the run last ended, if it did and was not resumed since.
    pub finished: Option<RunStatus>,
    /// Someone asked for the run to be cancelled.
    pub cancel_requested: bool,
    /// Answers to steps that waited (approvals), by step path: the last one,
    /// until the step waits again (then it did not count).
    pub decisions: HashMap<String, runbook_core::kind::Decision>,
    /// When each step's question was put (RFC 3339: when it first waited, or
    /// was asked again), and when it expires (as last journalled).
    pub waiting: HashMap<String, (String, Option<String>)>,
    /// Questions asked again (`ask-again`): they are for a person, `--yes`
    /// does not answer them.
    pub asked_again: HashSet<String>,
    /// The journal position of each step path's latest event.
    pub last_seq: HashMap<String, i64>,
    /// The journal position of each step path's latest success (the order in
    /// which undo takes completed steps back).
    pub succeeded_seq: HashMap<String, i64>,
    /// Paths an operator marked done (a decision that `--rerun` can undo).
    pub marked_done: HashSet<String>,
    /// Paths whose latest event is their start: a runner that was killed
    /// never recorded how they ended (with the attempt that ran).
    pub unended: HashMap<String, u32>,
    /// Each step path in the order it first appeared, with its last state,
    /// attempts and duration (what people and reports read).
    pub rows: Vec<crate::StepRow>,
    /// Who started (or submitted) the run, once its first event is read.
    pub started_by: Option<String>,
}

impl Replay {
    /// Replays events in order.
    pub fn new(events: &[Recorded]) -> Replay {
        let mut r = Replay::default();
        let mut rows = crate::fold::Rows::default();
        for rec in events {
            rows.apply(rec);
            if let Some(step) = rec.event.step() {
                r.last_seq.insert(step.to_owned(), rec.seq);
                match &rec.event {
                    Event::StepStarted { attempt, .. } => {
                        r.unended.insert(step.to_owned(), *attempt);
                    }
                    Event::OperatorAction { .. } | Event::ItemsResolved { .. } | Event::Sealed { .. } => {}
                    _ => {
                        r.unended.remove(step);
                    }
                }
            }
            match &rec.event {
                Event::RunQueued { user } => {
                    r.started_by.get_or_insert_with(|| user.clone());
                }
                Event::RunStarted { user, .. } => {
                    r.started_by.get_or_insert_with(|| user.clone());
                    r.finished = None;
                    r.cancel_requested = false;
                }
                Event::RunResumed { .. } => {
                    r.finished = None;
                    r.cancel_requested = false;
                }
                Event::StepStarted { step, attempt } => {
                    r.rerun.remove(step);
                    r.marked_done.remove(step);
                    r.steps.insert(step.clone(), Prior::InFlight { attempt: *attempt });
                    let a = r.attempts.entry(step.clone()).or_default();
                    *a = (*a).max(*attempt);
                }
                Event::StepSucceeded { step, outputs, .. } => {
                    r.steps.insert(step.clone(), Prior::Succeeded(outputs.clone()));
                    r.succeeded_seq.insert(step.clone(), rec.seq);
                }
                // Its effect was taken back: it runs again.
                Event::StepUndone { step } => {
                    r.steps.insert(step.clone(), Prior::Failed);
                    r.succeeded_seq.remove(step);
                }
                Event::StepFailed { step, .. } => {
                    r.steps.insert(step.clone(), Prior::Failed);
                }
                Event::StepSkipped { step, .. } => {
                    r.steps.insert(step.clone(), Prior::Skipped);
                }
                Event::StepInterrupted { step, attempt } => {
                    r.steps.insert(step.clone(), Prior::InFlight { attempt: *attempt });
                }
                Event::StepWaiting { step, expires_at, .. } => {
                    r.steps.insert(step.clone(), Prior::Waiting);
                    let asked = r.waiting.entry(step.clone()).or_insert_with(|| (rec.at.clone(), None));
                    asked.1.clone_from(expires_at);
                    // Asked after an answer: the answer did not count (not
                    // an approver, four eyes), it is not the one in force.
                    r.decisions.remove(step);
                }
                Event::ItemsResolved { step, items } => {
                    r.items.entry(step.clone()).or_insert_with(|| items.clone());
                }
                Event::Sealed {
                    step: Some(step),
                    value,
                } => {
                    r.sealed_items.entry(step.clone()).or_insert_with(|| value.clone());
                }
                Event::Sealed { step: None, value } => {
                    r.sealed_inputs.get_or_insert_with(|| value.clone());
                }
                Event::MaskRegistered { sealed } => r.registered.push(sealed.clone()),
                Event::Contained { host, cgroup, .. } => r.contained.push((host.clone(), cgroup.clone())),
                Event::OperatorAction {
                    action,
                    step,
                    who,
                    comment,
                    ..
                } => match (action.as_str(), step) {
                    ("rerun", Some(s)) => {
                        r.rerun.insert(s.clone());
                        // Undoing a `--mark-done`: the step runs again.
                        if r.marked_done.remove(s) {
                            r.steps.insert(s.clone(), Prior::Failed);
                            r.succeeded_seq.remove(s);
                        }
                    }
                    ("mark-done", Some(s)) => {
                        r.marked_done.insert(s.clone());
                    }
                    (verdict @ ("approve" | "reject"), Some(s)) => {
                        r.decisions.insert(
                            s.clone(),
                            runbook_core::kind::Decision {
                                approved: verdict == "approve",
                                who: who.clone(),
                                comment: comment.clone(),
                                at: rec.at.clone(),
                            },
                        );
                    }
                    // A fresh question from now on: the old answer and
                    // expiry no longer count, and the step runs again.
                    ("ask-again", Some(s)) => {
                        r.decisions.remove(s);
                        r.waiting.insert(s.clone(), (rec.at.clone(), None));
                        r.asked_again.insert(s.clone());
                        r.steps.insert(s.clone(), Prior::Waiting);
                        r.succeeded_seq.remove(s);
                    }
                    ("cancel", _) => r.cancel_requested = true,
                    _ => {}
                },
                Event::RunFinished { status, .. } => r.finished = Some(*status),
            }
        }
        r.rows = rows.finish();
        r
    }

    /// Step paths that were in flight.
    pub fn in_flight(&self) -> Vec<String> {
        self.paths(|p| matches!(p, Prior::InFlight { .. }))
    }

    /// Step paths that wait for a person's answer.
    pub fn waiting(&self) -> Vec<String> {
        self.paths(|p| matches!(p, Prior::Waiting))
    }

    fn paths(&self, which: impl Fn(&Prior) -> bool) -> Vec<String> {
        let mut v: Vec<String> = self
            .steps
            .iter()
            .filter(|(_, p)| which(p))
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(seq: i64, event: Event) -> Recorded {
        Recorded {
            seq,
            at: String::new(),
            event,
        }
    }

    #[test]
    fn last_word_wins_and_operator_decisions_apply_once() {
        let events = vec![
            rec(
                1,
                Event::RunStarted {
                    user: "a".into(),
                    runner: None,
                },
            ),
            rec(
                2,
                Event::StepStarted {
                    step: "a".into(),
                    attempt: 1,
                },
            ),
            rec(
                3,
                Event::StepSucceeded {
                    step: "a".into(),
                    attempt: 1,
                    outputs: json!({"x": 1}),
                },
            ),
            rec(
                4,
                Event::StepStarted {
                    step: "b".into(),
                    attempt: 1,
                },
            ),
            rec(
                5,
                Event::StepFailed {
                    step: "b".into(),
                    attempt: 1,
                    error: "e".into(),
                    will_retry: true,
                },
            ),
            rec(
                6,
                Event::StepStarted {
                    step: "b".into(),
                    attempt: 2,
                },
            ),
            rec(
                7,
                Event::RunFinished {
                    status: RunStatus::Interrupted,
                    error: None,
                },
            ),
            rec(
                8,
                Event::RunResumed {
                    user: "a".into(),
                    runner: None,
                },
            ),
            rec(
                9,
                Event::OperatorAction {
                    action: "rerun".into(),
                    step: Some("b".into()),
                    who: "a".into(),
                    comment: None,
                    plan_hash: None,
                    covers: None,
                },
            ),
        ];
        let r = Replay::new(&events);
        assert_eq!(r.steps["a"], Prior::Succeeded(json!({"x": 1})));
        assert_eq!(r.steps["b"], Prior::InFlight { attempt: 2 });
        assert_eq!(r.attempts["b"], 2);
        assert!(r.rerun.contains("b"));
        assert_eq!(r.finished, None);
        // Once the step starts again, the decision is used up.
        let mut more = events.clone();
        more.push(rec(
            10,
            Event::StepStarted {
                step: "b".into(),
                attempt: 3,
            },
        ));
        assert!(!Replay::new(&more).rerun.contains("b"));
    }
}
