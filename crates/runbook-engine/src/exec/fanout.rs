//! `for_each`: resolving the items (once, journalled), running them in
//! batches under `concurrency`, judging `max_failures`, and each item's group.

use super::*;

impl<'a> Exec<'a> {
    pub(super) async fn for_each(
        &self,
        step: &'a Step,
        frame: &Rc<Frame>,
        path: &str,
        cancel: &CancellationToken,
        restore: bool,
    ) -> Outcome {
        let items = match self.items(step, frame, path).await {
            Ok(items) => items,
            Err(e) => return self.group_failed(step, frame, path, e).await,
        };
        let var = step.as_.as_deref().unwrap_or("item");
        let n = items.len();
        let data = self.data(step, frame);
        let ramp = match step
            .concurrency
            .as_ref()
            .map(|c| concurrency(&self.renderer, c, &data, n))
            .transpose()
        {
            Ok(r) => r,
            Err(e) => return self.group_failed(step, frame, path, e).await,
        };
        let max_failures = match step
            .max_failures
            .as_ref()
            .map(|m| count(&self.renderer, m, &data, n))
            .transpose()
        {
            Ok(m) => m.unwrap_or(0),
            Err(e) => return self.group_failed(step, frame, path, e).await,
        };
        // Unique keys for step paths: the item itself, its `name`/`id`, or its position.
        let mut seen: HashMap<String, usize> = HashMap::new();
        let keys: Vec<String> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                // A path never holds a secret (an item may): the masked key,
                // the same on every attempt since the secrets are.
                let k = self.masker.text(&item_key(item, i));
                let count = seen.entry(k.clone()).or_default();
                *count += 1;
                if *count > 1 { format!("{k}#{i}") } else { k }
            })
            .collect();
        // Each item's frame lives while the item runs; once it is done only
        // its declared outputs are kept (memory stays flat in the fan-out's
        // size, not in its history).
        let names: Vec<String> = step
            .outputs
            .as_ref()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let item_key = format!("#item:{}", step.id.as_deref().unwrap_or(""));
        let mut kept: Vec<Option<Json>> = vec![None; if names.is_empty() { 0 } else { n }];
        let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
        let mut failures = 0usize;
        let mut next = 0usize;
        let mut batch = 0usize;
        let mut running = FuturesUnordered::new();
        let mut stopped = false;
        // A ramp runs in batches ([1, 25%, 100%]: a canary, a quarter, the
        // rest); a single value is a sliding window of that many items.
        let ramp = ramp.unwrap_or_else(|| vec![n.max(1)]);
        let windowed = ramp.len() == 1;
        // One item, in its own frame.
        let launch = |i: usize, p: String, batch: Json| {
            let item_frame = Frame::item(frame, var, items[i].clone(), batch);
            let (item_key, keep) = (&item_key, !names.is_empty());
            async move {
                let o = self.item(step, &item_frame, p, cancel, restore).await;
                let outputs = keep
                    .then(|| item_frame.results.borrow().get(item_key).map(|r| r["outputs"].clone()))
                    .flatten();
                (i, o, outputs)
            }
        };
        // Once stopped before it resumed (a `cancel` of a run that waits),
        // the items that finished are restored and those whose called
        // playbook began go on to its handlers; nothing new starts.
        let mut entered = false;
        loop {
            if cancel.is_cancelled() && restore && !entered {
                entered = true;
                for (i, key) in keys.iter().enumerate().skip(next) {
                    let p = format!("{path}[{key}]");
                    let finished = matches!(self.replay.steps.get(&p), Some(Prior::Succeeded(_) | Prior::Skipped));
                    if finished || self.enters_stopped(step, &p) {
                        running.push(launch(i, p, Json::Array(vec![items[i].clone()])));
                    }
                }
            }
            let may_launch = !stopped && !cancel.is_cancelled() && failures <= max_failures;
            if may_launch && next < n {
                // How many to start now: fill the window, or start the next batch.
                let room = if windowed {
                    ramp[0].saturating_sub(running.len())
                } else if running.is_empty() {
                    batch += 1;
                    ramp[(batch - 1).min(ramp.len() - 1)].max(1)
                } else {
                    0
                };
                // `{{batch}}`: the items started together (a ramp's batch), or
                // the item alone under a window.
                let members = (!windowed).then(|| Json::Array(items[next..(next + room).min(n)].to_vec()));
                for _ in 0..room {
                    if next >= n {
                        break;
                    }
                    let i = next;
                    next += 1;
                    let p = format!("{path}[{}]", keys[i]);
                    let batch = members.clone().unwrap_or_else(|| Json::Array(vec![items[i].clone()]));
                    running.push(launch(i, p, batch));
                }
            }
            match running.next().await {
                None => break,
                Some((i, o, outputs)) => {
                    if let Some(slot) = kept.get_mut(i) {
                        *slot = outputs;
                    }
                    if matches!(o, Outcome::Failed(_)) {
                        failures += 1;
                    }
                    if matches!(o, Outcome::Interrupted | Outcome::Uncertain(_) | Outcome::Waiting(..)) {
                        stopped = true;
                    }
                    outcomes[i] = Some(o);
                }
            }
        }
        let mut outcome = Outcome::Succeeded;
        for o in outcomes.iter().flatten() {
            if !matches!(o, Outcome::Failed(_)) {
                outcome = outcome.merge(o.clone());
            }
        }
        if outcome.rank() >= 2 {
            return outcome;
        }
        if failures > max_failures {
            let msg = format!(
                "{failures} of {n} items failed (max_failures {max_failures}){}",
                if next < n {
                    format!("; {} items were not started", n - next)
                } else {
                    String::new()
                }
            );
            return self.group_failed(step, frame, path, msg).await;
        }
        if next < n {
            return Outcome::Interrupted;
        }
        // Each declared output becomes the list of its per-item values.
        let mut outputs = Outputs::new();
        for name in &names {
            let values: Vec<Json> = kept
                .iter()
                .map(|o| o.as_ref().and_then(|o| o.get(name)).cloned().unwrap_or(Json::Null))
                .collect();
            outputs.insert(name.clone(), Json::Array(values));
        }
        let statuses: Vec<Json> = items
            .iter()
            .zip(&outcomes)
            .map(|(item, o)| {
                let status = match o {
                    Some(Outcome::Failed(_)) => "failed",
                    Some(Outcome::Skipped) => "skipped",
                    _ => "succeeded",
                };
                json!({ "item": item, "status": status })
            })
            .collect();
        outputs.insert("items".into(), Json::Array(statuses));
        self.group_succeeded(step, frame, path, Json::Object(outputs), restore)
    }

    /// The items of a `for_each`: as first resolved (on resume), else rendered now.
    pub(super) async fn items(&self, step: &'a Step, frame: &Rc<Frame>, path: &str) -> Result<Vec<Json>, String> {
        if let Some(items) = self.replay.items.get(path) {
            // Where they held a secret, the journal's references give the
            // values back (the secrets fetched again for this attempt).
            if let Some(Json::Array(real)) = self.replay.sealed_items.get(path).map(|v| unseal(v, &self.secrets())) {
                return Ok(real);
            }
            return Ok(items.clone());
        }
        let items = match &step.for_each {
            // A list's items may be templates: each is rendered, typed.
            Some(ForEach::List(items)) => {
                let data = self.data(step, frame);
                self.renderer
                    .render_items(items, &data)
                    .map_err(|(at, e)| format!("`for_each` item {at}: {e}"))?
            }
            Some(ForEach::Template(t)) => {
                let data = self.data(step, frame);
                match self.renderer.render_value(t, &data, Mode::Plain) {
                    Ok(Json::Array(items)) => items,
                    Ok(other) => {
                        return Err(format!(
                            "`for_each` must give a list, but `{t}` gave {}",
                            runbook_core::inputs::json_type(&other)
                        ));
                    }
                    Err(e) => return Err(format!("`for_each`: {e}")),
                }
            }
            None => Vec::new(),
        };
        // Items reach their steps as they are; the writer masks the journal's
        // copy, and a sealed one keeps what resume needs.
        self.journal_soon(Event::ItemsResolved {
            step: path.to_owned(),
            items: items.clone(),
        });
        if let Some(value) = seal(&Json::Array(items.clone()), &self.secrets()) {
            self.journal_soon(Event::Sealed {
                step: Some(path.to_owned()),
                value,
            });
        }
        Ok(items)
    }

    /// One item of a `for_each`.
    pub(super) fn item<'b>(
        &'b self,
        step: &'a Step,
        frame: &'b Rc<Frame>,
        path: String,
        cancel: &'b CancellationToken,
        restore: bool,
    ) -> LocalBoxFuture<'b, Outcome> {
        Box::pin(async move {
            let key = format!("#item:{}", step.id.as_deref().unwrap_or(""));
            if restore {
                let walk_in = self.inner(step).iter().any(|s| self.has_undo(s));
                match self.replay.steps.get(&path) {
                    Some(Prior::Succeeded(_)) if walk_in => {}
                    Some(Prior::Succeeded(outputs)) => {
                        frame.set(Some(&key), "succeeded", outputs);
                        if step.steps.is_none() {
                            frame.set(step.id.as_deref(), "succeeded", outputs);
                        }
                        self.completed(&path, step, frame);
                        return Outcome::Succeeded;
                    }
                    Some(Prior::Skipped) => return Outcome::Skipped,
                    _ => {}
                }
            }
            if let Some(skip) = self.when(step, frame, &path).await {
                return skip;
            }
            let outcome = match &step.steps {
                Some(children) => {
                    let restore = restore && !self.restarts(step, &path);
                    let o = self.run_list(children, frame, &path, cancel, restore).await;
                    match o {
                        Outcome::Succeeded | Outcome::Skipped | Outcome::Tolerated => {
                            match self.declared_outputs(step, frame, Outputs::new()) {
                                Ok(out) => {
                                    let out = Json::Object(out);
                                    frame.set(Some(&key), "succeeded", &out);
                                    if !self.recorded(&path, restore) {
                                        self.journal_soon(Event::StepSucceeded {
                                            step: path.clone(),
                                            attempt: 1,
                                            outputs: out,
                                        });
                                    }
                                    Outcome::Succeeded
                                }
                                Err(e) => Outcome::Failed(e),
                            }
                        }
                        Outcome::Failed(e) => {
                            self.journal_soon(Event::StepFailed {
                                step: path.clone(),
                                attempt: 1,
                                error: e.clone(),
                                will_retry: false,
                            });
                            Outcome::Failed(e)
                        }
                        other => other,
                    }
                }
                None => {
                    let o = self.call(step, frame, &path, cancel, restore).await;
                    if o == Outcome::Succeeded {
                        if let Some(r) = step.id.as_deref().and_then(|id| frame.lookup(id)) {
                            frame.results.borrow_mut().insert(key, r);
                        }
                    }
                    o
                }
            };
            self.after(step, frame, &path, outcome, false).await
        })
    }
}

/// How many of `n` items a count or a percentage (`2`, `25%`, a template
/// giving either) means; a percentage rounds up.
fn count(renderer: &Renderer, c: &CountOrPercent, data: &Data, n: usize) -> Result<usize, String> {
    let text = match c {
        CountOrPercent::Count(k) => return Ok(*k as usize),
        CountOrPercent::Text(t) => renderer.render_str(t, data, Mode::Plain).map_err(|e| e.to_string())?,
    };
    let text = text.trim();
    if let Some(p) = text.strip_suffix('%') {
        let p: f64 = p.trim().parse().map_err(|_| format!("`{text}` is not a percentage"))?;
        return Ok(((p / 100.0) * n as f64).ceil() as usize);
    }
    text.parse()
        .map_err(|_| format!("`{text}` is not a count or a percentage"))
}

/// `{{batch}}` for each of `items`, as the executor gives it: the items
/// started together with it (its batch in a ramp), or the item alone under a
/// window or when the concurrency is not known yet.
pub(crate) fn batch_values(renderer: &Renderer, c: Option<&Concurrency>, data: &Data, items: &[Json]) -> Vec<Json> {
    let n = items.len();
    let sizes = c.and_then(|c| concurrency(renderer, c, data, n).ok());
    let alone = || items.iter().map(|i| Json::Array(vec![i.clone()])).collect();
    let Some(sizes) = sizes.filter(|s| s.len() > 1) else {
        return alone();
    };
    let mut out = Vec::with_capacity(n);
    let (mut start, mut k) = (0, 0);
    while start < n {
        let end = (start + sizes[k.min(sizes.len() - 1)].max(1)).min(n);
        let members = Json::Array(items[start..end].to_vec());
        out.extend(std::iter::repeat_n(members, end - start));
        start = end;
        k += 1;
    }
    out
}

/// The batch sizes a `concurrency:` means for `n` items: one window, or a
/// ramp of batches (each at least 1). A template that gives a list (an input
/// `batches: [1, 25%, 100%]`) is a ramp.
fn concurrency(renderer: &Renderer, c: &Concurrency, data: &Data, n: usize) -> Result<Vec<usize>, String> {
    let one = |c: &CountOrPercent| count(renderer, c, data, n).map(|k| k.max(1));
    match c {
        Concurrency::One(CountOrPercent::Text(t)) if template::is_template(t) => {
            match renderer.render_value(t, data, Mode::Plain).map_err(|e| e.to_string())? {
                Json::Array(items) => {
                    let ramp = items
                        .iter()
                        .map(|i| match i {
                            Json::Number(k) => k
                                .as_u64()
                                .map(|k| CountOrPercent::Count(u32::try_from(k).unwrap_or(u32::MAX)))
                                .ok_or_else(|| format!("`{k}` is not a count")),
                            Json::String(s) => Ok(CountOrPercent::Text(s.clone())),
                            other => Err(format!("`{other}` is not a count or a percentage")),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    concurrency(renderer, &Concurrency::Ramp(ramp), data, n)
                }
                _ => Ok(vec![one(&CountOrPercent::Text(t.clone()))?]),
            }
        }
        Concurrency::One(c) => Ok(vec![one(c)?]),
        Concurrency::Ramp(r) if r.is_empty() => Ok(vec![n.max(1)]),
        Concurrency::Ramp(r) => {
            let mut v = r.iter().map(one).collect::<Result<Vec<_>, _>>()?;
            // A one-value ramp is still batches, not a window.
            if v.len() == 1 {
                v.push(v[0]);
            }
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use runbook_core::model::{Concurrency, CountOrPercent};

    fn data() -> Data {
        Data::new(json!({ "inputs": { "batch": "50%", "n": 3 } }))
    }

    #[test]
    fn a_count_is_a_number_a_percentage_rounded_up_or_a_template_giving_either() {
        let r = Renderer::new();
        let of = |c: CountOrPercent, n| count(&r, &c, &data(), n);
        assert_eq!(of(CountOrPercent::Count(2), 10), Ok(2));
        assert_eq!(of(CountOrPercent::Text("25%".into()), 10), Ok(3), "2.5 rounds up");
        assert_eq!(of(CountOrPercent::Text("{{inputs.batch}}".into()), 5), Ok(3));
        assert_eq!(of(CountOrPercent::Text("{{inputs.n}}".into()), 5), Ok(3));
        let err = of(CountOrPercent::Text("many".into()), 5).unwrap_err();
        assert!(err.contains("`many` is not a count or a percentage"), "{err}");
    }

    #[test]
    fn batch_is_the_items_started_together() {
        let r = Renderer::new();
        let items: Vec<Json> = ["a", "b", "c", "d"].iter().map(|s| json!(s)).collect();
        let ramp = Concurrency::Ramp(vec![CountOrPercent::Count(1), CountOrPercent::Text("50%".into())]);
        assert_eq!(
            batch_values(&r, Some(&ramp), &data(), &items),
            [json!(["a"]), json!(["b", "c"]), json!(["b", "c"]), json!(["d"])]
        );
        let window = Concurrency::One(CountOrPercent::Count(2));
        assert_eq!(
            batch_values(&r, Some(&window), &data(), &items)[1],
            json!(["b"]),
            "a window has no batches"
        );
        assert_eq!(batch_values(&r, None, &data(), &items)[3], json!(["d"]));
    }

    #[test]
    fn concurrency_is_a_window_or_a_ramp_of_batches_never_zero() {
        let r = Renderer::new();
        let of = |c: Concurrency, n| concurrency(&r, &c, &data(), n).unwrap();
        assert_eq!(
            of(Concurrency::One(CountOrPercent::Count(0)), 4),
            [1],
            "at least one at a time"
        );
        assert_eq!(of(Concurrency::Ramp(vec![]), 4), [4], "an empty ramp is all at once");
        let ramp = Concurrency::Ramp(vec![CountOrPercent::Count(1), CountOrPercent::Text("50%".into())]);
        assert_eq!(of(ramp, 10), [1, 5]);
        assert_eq!(
            of(Concurrency::Ramp(vec![CountOrPercent::Count(2)]), 10),
            [2, 2],
            "a one-value ramp is still batches"
        );
        let given = |v: serde_json::Value| Data::new(json!({ "inputs": { "batches": v } }));
        let from = |v| {
            concurrency(
                &r,
                &Concurrency::One(CountOrPercent::Text("{{inputs.batches}}".into())),
                &given(v),
                8,
            )
        };
        assert_eq!(
            from(json!([1, "25%", "100%"])),
            Ok(vec![1, 2, 8]),
            "a list from an input is a ramp"
        );
        assert_eq!(from(json!(3)), Ok(vec![3]), "a number from an input is a window");
        assert!(from(json!([1, true])).is_err());
    }
}
