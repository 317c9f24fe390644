//! A step that runs another playbook (`uses: playbook`).
//!
//! The callee's steps are steps of this run: journalled under the step's
//! path (`failover.promote`), restored and resumed like a group's, their
//! `undo`s part of the run's compensation. They run in a frame of their own:
//! the callee's inputs (rendered in the caller's frame, then typed and
//! defaulted by the callee's declarations), its declared secrets (from the
//! run's), its name and version, its `defaults:`, and only its own steps'
//! results. Its `on_failure` runs when it fails, its `finally` when it ends
//! (not while it waits), and its `outputs:` become the step's outputs.

use super::*;

impl<'a> Exec<'a> {
    /// The steps a step runs inside it: a group's, or a called playbook's.
    pub(super) fn inner<'s>(&self, step: &'s Step) -> &'s [Step]
    where
        'a: 's,
    {
        let calls: &'a IndexMap<String, Arc<Loaded>> = self.calls;
        match runbook_core::calls::call_of(step).and_then(|k| calls.get(&k)) {
            Some(callee) => &callee.playbook.steps,
            None => step.steps.as_deref().unwrap_or_default(),
        }
    }

    /// True if a step or anything inside it (a called playbook included) has
    /// an `undo`: resume walks into it (rather than restoring it whole) so
    /// that each completed part can be undone.
    pub(super) fn has_undo(&self, step: &Step) -> bool {
        !step.undo_steps().is_empty() || self.inner(step).iter().any(|s| self.has_undo(s))
    }

    /// The `defaults:` that apply in a frame: the called playbook's, or the
    /// run's.
    pub(super) fn defaults<'f>(&'f self, frame: &'f Frame) -> Option<&'f runbook_core::model::Defaults> {
        match frame.callee() {
            Some(callee) => callee.playbook.defaults.as_ref(),
            None => self.playbook.defaults.as_ref(),
        }
    }

    /// Runs a called playbook as the step at `path`.
    pub(super) async fn sub_playbook(
        &self,
        step: &'a Step,
        frame: &Rc<Frame>,
        path: &str,
        cancel: &CancellationToken,
        restore: bool,
    ) -> Outcome {
        let key = runbook_core::calls::call_of(step).unwrap_or_default();
        let calls: &'a IndexMap<String, Arc<Loaded>> = self.calls;
        let Some(callee) = calls.get(&key) else {
            let e = format!("the playbook `{key}` it calls was not stored with the run (hint: start a new run)");
            return self.group_failed(step, frame, path, e).await;
        };
        let pb: &'a Playbook = &callee.playbook;
        let inputs = match self.callee_inputs(step, frame, pb) {
            Ok(i) => i,
            Err(e) => return self.group_failed(step, frame, path, e).await,
        };
        let all = self.base.get("secrets").and_then(Json::as_object);
        let secrets: serde_json::Map<String, Json> = pb
            .secrets
            .iter()
            .filter_map(|s| Some((s.name().to_owned(), all?.get(s.name())?.clone())))
            .collect();
        let root = Rc::new(Frame {
            parent: None,
            vars: vec![
                ("inputs".to_owned(), json!(inputs)),
                ("secrets".to_owned(), Json::Object(secrets)),
                ("playbook".to_owned(), json!({ "name": pb.name, "version": pb.version })),
            ],
            results: RefCell::default(),
            callee: Some(callee.clone()),
        });
        let restore = restore && !self.restarts(step, path);
        let outcome = self.run_list(&pb.steps, &root, path, cancel, restore).await;
        // Then its handlers, which outlive a graceful stop as the run's do:
        // a failure is recorded first (as a group's is), then `on_failure`,
        // then `finally` (not while it waits for a person or an operator).
        let token = self.abort.child_token();
        let on_failure = format!("{path}.on_failure");
        let finally = format!("{path}.finally");
        match outcome {
            Outcome::Failed(e) => {
                let failed = self
                    .group_failed(step, frame, path, format!("playbook `{}`: {e}", pb.name))
                    .await;
                self.run_handlers(&pb.on_failure, &root, &on_failure, &token).await;
                self.run_handlers(&pb.finally, &root, &finally, &token).await;
                failed
            }
            Outcome::Interrupted => {
                self.run_handlers(&pb.on_failure, &root, &on_failure, &token).await;
                self.run_handlers(&pb.finally, &root, &finally, &token).await;
                Outcome::Interrupted
            }
            // A call the journal has succeeded (resume walked into it for its
            // `undo`s) ran its `finally` then: it does not run again.
            Outcome::Succeeded | Outcome::Skipped | Outcome::Tolerated if self.recorded(path, restore) => {
                self.finish_call(step, frame, path, pb, &root, restore).await
            }
            Outcome::Succeeded | Outcome::Skipped | Outcome::Tolerated => {
                if let Outcome::Failed(e) = self.run_handlers(&pb.finally, &root, &finally, &token).await {
                    let e = format!("playbook `{}`: a `finally` step failed: {e}", pb.name);
                    return self.group_failed(step, frame, path, e).await;
                }
                self.finish_call(step, frame, path, pb, &root, restore).await
            }
            other => other,
        }
    }

    /// A call whose steps (and `finally`) succeeded: its outputs, read from
    /// its frame, are the step's.
    async fn finish_call(
        &self,
        step: &'a Step,
        frame: &Rc<Frame>,
        path: &str,
        pb: &Playbook,
        root: &Rc<Frame>,
        restore: bool,
    ) -> Outcome {
        let outputs = match self.callee_outputs(pb, root) {
            Ok(o) => o,
            Err(e) => {
                return self
                    .group_failed(step, frame, path, format!("`{}`: {e}", pb.name))
                    .await;
            }
        };
        let outputs = match self.declared_outputs(step, frame, outputs) {
            Ok(o) => o,
            Err(e) => return self.group_failed(step, frame, path, e).await,
        };
        self.group_succeeded(step, frame, path, Json::Object(outputs), restore)
    }

    /// The callee's inputs: the call's `with.inputs`, rendered in the
    /// caller's frame, checked and defaulted by the callee's declarations.
    fn callee_inputs(&self, step: &Step, frame: &Rc<Frame>, pb: &Playbook) -> Result<IndexMap<String, Json>, String> {
        let given = match step.with.as_ref().and_then(|w| w.get("inputs")) {
            Some(v) => {
                let data = self.data(step, frame);
                self.renderer
                    .render_tree(v, &data, &[])
                    .map_err(|(at, e)| format!("`with.inputs{at}`: {e}"))?
            }
            None => json!({}),
        };
        let given: IndexMap<String, Json> = given
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        runbook_core::inputs::resolve(pb, &given).map_err(|errors| {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            self.masker
                .text(&format!("the inputs of `{}`: {}", pb.name, all.join("; ")))
        })
    }

    /// The callee's `outputs:`, rendered over its steps' results.
    fn callee_outputs(&self, pb: &Playbook, root: &Rc<Frame>) -> Result<Outputs, String> {
        if pb.outputs.is_empty() {
            return Ok(Outputs::new());
        }
        let mut m = self.base.clone();
        for (k, v) in &root.vars {
            m.insert(k.clone(), v.clone());
        }
        let steps: serde_json::Map<String, Json> = root
            .results
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        m.insert("steps".into(), Json::Object(steps));
        self.render_outputs(&pb.outputs, &Data::new(Json::Object(m)), Outputs::new())
    }
}
