//! One call of a step kind: rendering its `with:`, retries with backoff and
//! `until`, timeouts, cancellation, and what its success or failure journals.

use super::*;

/// Runs nested calls (`wait`'s `check`) through the registry.
pub(super) struct NestedRunner {
    pub(super) registry: Registry,
}

#[async_trait::async_trait]
impl Nested for NestedRunner {
    async fn call(&self, uses: &str, with: Json, ctx: &StepContext) -> Result<Outputs, StepError> {
        let kind = self
            .registry
            .get(uses)
            .ok_or_else(|| StepError::new(format!("unknown step kind `{uses}`")))?;
        kind.run(ctx, with).await
    }
}

/// How long a step's line waits before it goes to the writer (which masks
/// it): a value registered with `::add-mask::` on one stream masks the lines
/// of the other stream that came this shortly before it (the two pipes are
/// read apart, so their order is not known closer than this).
const HOLD: Duration = Duration::from_millis(150);

/// Holds and forwards a step's log lines to the writer, which masks them;
/// registers the values a step marks as secret the moment they come.
pub(super) struct Sink {
    step: String,
    masker: Arc<Masker>,
    writer: tokio::sync::mpsc::UnboundedSender<Msg>,
    /// Lines not yet forwarded, with when each came.
    held: Mutex<std::collections::VecDeque<Held>>,
    /// For a step with secret outputs: nothing is forwarded before it ends
    /// (its output is only known to be secret then).
    until_end: bool,
    /// Whether the task that forwards a quiet step's lines is running (it
    /// starts with the first line: most steps print nothing).
    ticking: std::sync::atomic::AtomicBool,
    /// The sink itself, for that task (which ends when the sink is gone).
    me: std::sync::Weak<Sink>,
}

/// A line held back: its stream, when it came (wall clock, and monotonic), its
/// text.
type Held = (LogStream, String, std::time::Instant, String);

impl Sink {
    pub(super) fn new(
        step: &str,
        masker: Arc<Masker>,
        writer: tokio::sync::mpsc::UnboundedSender<Msg>,
        until_end: bool,
    ) -> Arc<Sink> {
        Arc::new_cyclic(|me| Sink {
            step: step.to_owned(),
            masker,
            writer,
            held: Mutex::new(std::collections::VecDeque::new()),
            until_end,
            ticking: std::sync::atomic::AtomicBool::new(false),
            me: me.clone(),
        })
    }

    /// Lines of a step that goes quiet still leave once they are old enough:
    /// a task forwards them until the sink is gone.
    fn tick(&self) {
        if self.until_end || self.ticking.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let weak = self.me.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HOLD / 2).await;
                match weak.upgrade() {
                    Some(sink) => sink.forward(Some(HOLD)),
                    None => break,
                }
            }
        });
    }

    /// Sends every held line on: the step has ended.
    fn release(&self) {
        self.forward(None);
    }

    /// Sends on the held lines older than `age` (all with `None`), in order.
    fn forward(&self, age: Option<Duration>) {
        let Ok(mut held) = self.held.lock() else { return };
        let now = std::time::Instant::now();
        while let Some((_, _, came, _)) = held.front() {
            if age.is_some_and(|a| now.duration_since(*came) < a) {
                break;
            }
            let Some((stream, at, _, text)) = held.pop_front() else {
                break;
            };
            let line = LogLine {
                step: self.step.clone(),
                at,
                stream: match stream {
                    LogStream::Stdout => Stream::Stdout,
                    LogStream::Stderr => Stream::Stderr,
                },
                line: text,
            };
            // Through the writer, so people see lines and events in journal
            // order, masked with all that is known by then.
            let _ = self.writer.send(Msg::Log(line));
        }
    }
}

impl LogSink for Sink {
    fn line(&self, stream: LogStream, text: &str) {
        let at = runbook_state::now();
        // The step registers a value as secret: masked from here on, in
        // both streams, this line included.
        let text = match crate::secrets::add_mask(text) {
            Some(value) => {
                self.masker.add(value);
                format!("::add-mask::{}", crate::secrets::MASK)
            }
            None => text.to_owned(),
        };
        if let Ok(mut held) = self.held.lock() {
            held.push_back((stream, at, std::time::Instant::now(), text));
        }
        if !self.until_end {
            self.tick();
            self.forward(Some(HOLD));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.forward(None);
    }
}

/// What a secret output of a step restored from the journal holds: its value
/// was never journalled. A step whose `with:` reads it fails, saying so.
pub(super) const LOST: &str = "\u{1}runbook-lost-secret-output:";

/// The `step.output` of a lost secret output a rendered `with:` holds.
fn lost_secret(with: &Json) -> Option<String> {
    match with {
        Json::String(s) => s
            .split(LOST)
            .nth(1)
            .map(|rest| rest.split('\u{1}').next().unwrap_or_default().to_owned()),
        Json::Array(a) => a.iter().find_map(lost_secret),
        Json::Object(m) => m.values().find_map(lost_secret),
        _ => None,
    }
}

/// How long a step stopped by its `timeout:` has to end once told, as a
/// cancelled one is (a kind sends SIGTERM, then SIGKILL after its 5 s
/// grace), before it is dropped, which kills what is left at once.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Runs a step for at most `limit`; then stops it through its token, as a
/// cancel does, and fails it with what it said while stopping (a plugin's
/// `failed` result, the outputs it had sent).
async fn timed<F>(run: F, limit: Duration, stop: &CancellationToken) -> Result<Outputs, StepError>
where
    F: std::future::Future<Output = Result<Outputs, StepError>>,
{
    let mut run = std::pin::pin!(run);
    if let Ok(result) = tokio::time::timeout(limit, &mut run).await {
        return result;
    }
    stop.cancel();
    let (said, outputs) = match tokio::time::timeout(STOP_WAIT, &mut run).await {
        Ok(Err(e)) if e.cancelled && e.message != StepError::cancelled().message => {
            (format!(": {}", e.message), e.outputs)
        }
        Ok(Err(e)) => (String::new(), e.outputs),
        Ok(Ok(outputs)) => (String::new(), outputs),
        Err(_) => (String::new(), Outputs::new()),
    };
    Err(StepError::new(format!(
        "timed out after {}; the step was stopped (a local command's whole session is killed){said}",
        humantime::format_duration(limit)
    ))
    .with_outputs(outputs))
}

pub(super) struct Policy {
    attempts: u32,
    delay: Duration,
    factor: f64,
    max_delay: Option<Duration>,
    until: Option<String>,
}

impl<'a> Exec<'a> {
    /// A call of a kind, with retries and a timeout.
    pub(super) async fn call(
        &self,
        step: &'a Step,
        frame: &Rc<Frame>,
        path: &str,
        cancel: &CancellationToken,
        restore: bool,
    ) -> Outcome {
        if step.uses.as_deref() == Some(runbook_core::calls::KIND) {
            return self.sub_playbook(step, frame, path, cancel, restore).await;
        }
        let id = step.id.as_deref();
        let Some(kind) = step.uses.as_deref().and_then(|u| self.engine.registry.get(u)).cloned() else {
            return self
                .call_failed(
                    frame,
                    id,
                    path,
                    0,
                    format!("unknown step kind `{}`", step.uses.as_deref().unwrap_or("?")),
                )
                .await;
        };
        let data = self.data(step, frame);
        let with = match self.render_with(step, kind.as_ref(), &data) {
            Ok(w) => w,
            Err(e) => return self.call_failed(frame, id, path, 0, e).await,
        };
        if let Some(lost) = lost_secret(&with) {
            return self
                .call_failed(
                    frame,
                    id,
                    path,
                    0,
                    format!(
                        "it reads the secret output `{lost}`, which is never journalled and was lost when the run \
                         stopped (hint: `runbook resume` the run: it runs `{}` again first, for this step)",
                        lost.split('.').next().unwrap_or_default()
                    ),
                )
                .await;
        }
        let idempotent = step.idempotent.unwrap_or_else(|| kind.idempotent(&with));
        if restore {
            if let Some(Prior::InFlight { .. }) = self.replay.steps.get(path) {
                if !idempotent && !self.replay.rerun.contains(path) {
                    return Outcome::Uncertain(vec![path.to_owned()]);
                }
            }
        }
        let policy = match self.policy(step, frame) {
            Ok(p) => p,
            Err(e) => return self.call_failed(frame, id, path, 0, e).await,
        };
        let timeout = match self.timeout(step, frame, &data) {
            Ok(t) => t,
            Err(e) => return self.call_failed(frame, id, path, 0, e).await,
        };
        let first = self.replay.attempts.get(path).copied().unwrap_or(0) + 1;
        let mut delay = policy.delay;
        for n in 0..policy.attempts {
            let attempt = first + n;
            let Ok(permit) = self.permits.acquire().await else {
                return Outcome::Interrupted;
            };
            if cancel.is_cancelled() {
                return Outcome::Interrupted;
            }
            // Steps that never wait (no-ops) would otherwise queue the whole run
            // in memory; bound what is not yet durable.
            if self.backlog() >= 256 {
                self.sync().await;
            }
            // Under the lock it holds, or not at all.
            if !self.lease_valid() {
                return Outcome::Interrupted;
            }
            let started = Event::StepStarted {
                step: path.to_owned(),
                attempt,
            };
            if idempotent {
                // If the runner dies before this is written, resume simply runs
                // the step again, which its idempotence allows.
                self.journal_soon(started);
                // But what it depends on must be on disk before it acts: all
                // that was queued before it (one commit, shared by the steps
                // starting together). A step that only looks need not wait.
                let before = self.sent.get().saturating_sub(1);
                if kind.effect(&with) != runbook_core::kind::Effect::Read && !self.durable(before).await {
                    return Outcome::Interrupted;
                }
            } else if !self.journal(started).await {
                // A step whose effect must not happen twice starts only once its
                // start (and everything before it) is durable.
                return Outcome::Interrupted;
            }
            // This attempt's token: the run's stop, or its own `timeout:`.
            let stop = cancel.child_token();
            // Its start may have waited for the disk: still under the lock?
            if !self.lease_valid() {
                return Outcome::Interrupted;
            }
            let sink = Sink::new(
                path,
                self.masker.clone(),
                self.writer.clone(),
                !step.secret_outputs.is_empty(),
            );
            let ctx = StepContext {
                run_id: self.run_id.clone(),
                step: path.to_owned(),
                attempt,
                secrets: self.granted(step),
                cancel: stop.clone(),
                log: sink.clone(),
                data: data.clone(),
                inventory: self.inventory.clone(),
                nested: self.nested.clone(),
                approval: Approval {
                    decision: self.replay.decisions.get(path).cloned(),
                    waiting_since: self.replay.waiting.get(path).map(|(at, _)| at.clone()),
                    // A question asked again is for a person: `--yes`
                    // does not answer it.
                    auto_approve: self
                        .auto_approve
                        .clone()
                        .filter(|_| !self.replay.asked_again.contains(path)),
                    started_by: self.started_by.clone(),
                },
                contain: self.contain_path.clone(),
            };
            // Fenced: each time the step is woken to go on (a timer, an
            // answer), the leases are checked first, so a runner woken past
            // its lease does not take one more action in a kind that works
            // in this process (a request, a query): the step stops instead.
            let mut kind_run = std::pin::pin!(kind.run(&ctx, with.clone()));
            let run = std::future::poll_fn(|cx| {
                if !self.lease_valid() {
                    return std::task::Poll::Ready(Err(StepError::cancelled()));
                }
                kind_run.as_mut().poll(cx)
            });
            let result = match timeout {
                Some(t) => timed(run, t, &stop).await,
                None => run.await,
            };
            drop(permit);
            let result = match result {
                Ok(outputs) => self.check_until(step, frame, &policy, outputs),
                Err(e) => Err(e),
            };
            // Its secret outputs are masked from its end on, its own held
            // lines included.
            self.register_secrets(
                step,
                match &result {
                    Ok(o) => o,
                    Err(e) => &e.outputs,
                },
            );
            sink.release();
            match result {
                Ok(outputs) => {
                    let outputs = match self.declared_outputs(step, frame, outputs) {
                        Ok(o) => Json::Object(o),
                        Err(e) => return self.call_failed(frame, id, path, attempt, e).await,
                    };
                    // Those of its `outputs:` too. The steps after it read
                    // every output as it is; what leaves the run is masked.
                    if let Json::Object(o) = &outputs {
                        self.register_secrets(step, o);
                    }
                    // A cut output is not the value anyway: the part of a
                    // secret the cut left is masked in it, for the steps
                    // after it too (one of them printing it would show a
                    // text the writer cannot know as a secret's).
                    let outputs = self.cut_masked(outputs);
                    // A success is journalled under a valid lease only: a
                    // runner that woke past its lease records nothing as done.
                    if !self.lease_valid() {
                        frame.set(id, "interrupted", &json!({}));
                        self.journal_soon(Event::StepInterrupted {
                            step: path.to_owned(),
                            attempt,
                        });
                        return Outcome::Interrupted;
                    }
                    frame.set(id, "succeeded", &outputs);
                    self.journal_soon(Event::StepSucceeded {
                        step: path.to_owned(),
                        attempt,
                        outputs,
                    });
                    return Outcome::Succeeded;
                }
                Err(e) if e.waiting.is_some() => {
                    let question = self.masker.text(&e.message);
                    frame.set(id, "waiting", &json!({}));
                    self.journal_soon(Event::StepWaiting {
                        step: path.to_owned(),
                        message: question.clone(),
                        expires_at: e.waiting.as_ref().and_then(|w| w.expires_at.clone()),
                    });
                    return Outcome::Waiting(vec![(path.to_owned(), question)]);
                }
                Err(e) if e.cancelled => {
                    frame.set(id, "interrupted", &Json::Object(e.outputs));
                    self.journal_soon(Event::StepInterrupted {
                        step: path.to_owned(),
                        attempt,
                    });
                    return Outcome::Interrupted;
                }
                Err(e) => {
                    let message = self.masker.text(&e.message);
                    let will_retry = n + 1 < policy.attempts && !cancel.is_cancelled();
                    frame.set(id, "failed", &Json::Object(e.outputs));
                    self.journal_soon(Event::StepFailed {
                        step: path.to_owned(),
                        attempt,
                        error: message.clone(),
                        will_retry,
                    });
                    if !will_retry {
                        return Outcome::Failed(format!("step `{path}` failed: {message}"));
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => return Outcome::Interrupted,
                    }
                    let next = delay.mul_f64(policy.factor);
                    delay = policy.max_delay.map_or(next, |m| next.min(m));
                }
            }
        }
        Outcome::Failed(format!("step `{path}` failed"))
    }

    /// The outputs a kind cut short (`X` with `X_truncated: true`) with any
    /// first part of a secret at their end masked: the writer's masker sees
    /// only whole values.
    fn cut_masked(&self, mut outputs: Json) -> Json {
        if let Json::Object(map) = &mut outputs {
            let cut: Vec<String> = map
                .iter()
                .filter_map(|(k, v)| {
                    (v == &Json::Bool(true))
                        .then(|| k.strip_suffix("_truncated").map(str::to_owned))
                        .flatten()
                })
                .collect();
            for name in cut {
                if let Some(Json::String(s)) = map.get_mut(&name) {
                    *s = self.masker.text_cut(s);
                }
            }
        }
        outputs
    }

    /// Masks the values of a step's secret outputs from now on.
    fn register_secrets(&self, step: &Step, outputs: &Outputs) {
        for name in &step.secret_outputs {
            if let Some(v) = outputs.get(name) {
                self.masker.add_all(v);
            }
        }
    }

    /// Fails a call before or without running it (bad template, bad policy).
    pub(super) async fn call_failed(
        &self,
        frame: &Rc<Frame>,
        id: Option<&str>,
        path: &str,
        attempt: u32,
        error: String,
    ) -> Outcome {
        let error = self.masker.text(&error);
        // Its action never began.
        frame.set_acted(id, "failed", &json!({}), false);
        self.journal_soon(Event::StepFailed {
            step: path.to_owned(),
            attempt,
            error: error.clone(),
            will_retry: false,
        });
        Outcome::Failed(format!("step `{path}` failed: {error}"))
    }

    /// `retry.until`: a succeeded attempt whose condition is false counts as failed.
    pub(super) fn check_until(
        &self,
        step: &'a Step,
        frame: &Rc<Frame>,
        policy: &Policy,
        outputs: Outputs,
    ) -> Result<Outputs, StepError> {
        let Some(until) = &policy.until else { return Ok(outputs) };
        frame.set(step.id.as_deref(), "succeeded", &Json::Object(outputs.clone()));
        let data = self.data(step, frame);
        match self.renderer.condition(until, &data) {
            Ok(true) => Ok(outputs),
            Ok(false) => Err(StepError::new(format!("`until: {until}` is not yet true")).with_outputs(outputs)),
            Err(e) => Err(StepError::new(format!("`until`: {e}")).with_outputs(outputs)),
        }
    }

    /// Renders `with:`, leaving the kind's deferred fields as written.
    pub(super) fn render_with(&self, step: &Step, kind: &dyn StepKind, data: &Data) -> Result<Json, String> {
        let with = Json::Object(step.with.clone().unwrap_or_default());
        let shell = self.engine.registry.shell_pointers(kind.name(), &with);
        let shell: Vec<&str> = shell.iter().map(String::as_str).collect();
        self.renderer
            .render_params(&with, data, &shell, kind.deferred_fields())
            .map_err(|(at, e)| format!("`with{at}`: {e}"))
    }

    pub(super) fn policy(&self, step: &Step, frame: &Frame) -> Result<Policy, String> {
        let retry = step
            .retry
            .as_ref()
            .or(self.defaults(frame).and_then(|d| d.retry.as_ref()));
        let mut p = Policy {
            attempts: 1,
            delay: Duration::from_secs(1),
            factor: 1.0,
            max_delay: None,
            until: None,
        };
        match retry {
            None => {}
            Some(Retry::Attempts(n)) => p.attempts = (*n).max(1),
            Some(Retry::Full(r)) => {
                p.attempts = r.attempts.max(1);
                if let Some(d) = &r.delay {
                    p.delay = parse_duration(d).map_err(|e| format!("`retry.delay`: {e}"))?;
                }
                if let Some(d) = &r.max_delay {
                    p.max_delay = Some(parse_duration(d).map_err(|e| format!("`retry.max_delay`: {e}"))?);
                }
                p.factor = match &r.backoff {
                    None | Some(Backoff::Named(BackoffName::Fixed)) => 1.0,
                    Some(Backoff::Named(BackoffName::Exponential)) => 2.0,
                    Some(Backoff::Factor(f)) if f.is_finite() && *f >= 1.0 => *f,
                    Some(Backoff::Factor(f)) => return Err(format!("`retry.backoff` must be at least 1, got {f}")),
                };
                p.until = r.until.clone();
            }
        }
        Ok(p)
    }

    pub(super) fn timeout(&self, step: &Step, frame: &Frame, data: &Data) -> Result<Option<Duration>, String> {
        let Some(t) = step
            .timeout
            .as_ref()
            .or(self.defaults(frame).and_then(|d| d.timeout.as_ref()))
        else {
            return Ok(None);
        };
        let text = self
            .renderer
            .render_str(t, data, Mode::Plain)
            .map_err(|e| format!("`timeout`: {e}"))?;
        parse_duration(&text).map(Some).map_err(|e| format!("`timeout`: {e}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn lines(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Msg>, masker: &Masker) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Msg::Log(l)) = rx.try_recv() {
            out.push(masker.text(&l.line));
        }
        out
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_value_registered_on_one_stream_masks_what_the_other_said_just_before() {
        let masker = Arc::new(Masker::new(["hunter2"]));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = Sink::new("deploy", masker.clone(), tx, false);
        sink.line(LogStream::Stdout, "password is hunter2");
        // Read from stderr before stdout's registration was: held, so the
        // writer masks it with the registered value.
        sink.line(LogStream::Stderr, "using tok-991 now");
        sink.line(LogStream::Stdout, "::add-mask::tok-991");
        assert!(
            lines(&mut rx, &masker).is_empty(),
            "nothing leaves before it is old enough"
        );
        tokio::time::sleep(HOLD * 3).await;
        assert_eq!(
            lines(&mut rx, &masker),
            ["password is ***", "using *** now", "::add-mask::***"],
            "a quiet step's lines leave once old enough, in order"
        );
        sink.line(LogStream::Stdout, "tok-991 again");
        sink.release();
        assert_eq!(lines(&mut rx, &masker), ["*** again"], "the step's end sends the rest");
    }

    #[test]
    fn a_lost_secret_output_is_found_wherever_a_step_reads_it() {
        let step = Step {
            id: Some("login".into()),
            secret_outputs: vec!["token".into()],
            ..Step::default()
        };
        let restored = super::super::lose_secret_outputs(&step, &json!({"token": "***", "user": "ops"}));
        assert_eq!(restored["user"], "ops", "other outputs are restored as journalled");
        let token = restored["token"].as_str().unwrap().to_owned();
        let with = json!({"env": {"T": format!("Bearer {token}")}, "run": "curl"});
        assert_eq!(lost_secret(&with).as_deref(), Some("login.token"));
        assert_eq!(lost_secret(&json!({"run": "true"})), None);
    }
}
