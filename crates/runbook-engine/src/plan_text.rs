//! The human form of a plan (what `runbook plan` prints, and what an
//! approver reads).
//!
//! ```text
//!  1   preflight   read     http-check  GET http://lb/health/
//!  2∥  build       unknown  shell       run `make`
//!  2∥  lint        unknown  shell       run `make lint`
//! ```
//! The number is the stage; `∥` marks steps that run in parallel with the others
//! of their stage. Parameters are shown rendered, below each call.

use crate::plan::{Plan, PlanStep, When};
use runbook_core::template::scalar_text;
use std::fmt::Write;

/// The plan as text, one line per step.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = write!(out, "plan: {} v{}", plan.playbook, plan.version);
    if let Some(d) = plan.description.as_deref().and_then(|d| d.lines().next()) {
        let _ = write!(out, " - {d}");
    }
    out.push('\n');
    if !plan.inputs.is_empty() {
        let inputs: Vec<String> = plan.inputs.iter().map(|(k, v)| format!("{k}={}", short(v))).collect();
        let _ = writeln!(out, "inputs: {}", inputs.join(", "));
    }
    if let Some(l) = &plan.lock {
        let _ = writeln!(out, "lock: {l}");
    }
    if !plan.defaults.is_empty() {
        let _ = writeln!(out, "defaults: {}", plan.defaults.join(", "));
    }
    let (r, w, u) = plan.effects();
    let _ = writeln!(out, "calls: {} ({r} read, {w} write, {u} unknown)", r + w + u);
    out.push('\n');
    list(&mut out, &plan.steps, 0);
    for (label, steps) in [("on failure of the run", &plan.on_failure), ("finally", &plan.finally)] {
        if !steps.is_empty() {
            let _ = writeln!(out, "\n{label}:");
            list(&mut out, steps, 0);
        }
    }
    out
}

/// A value in YAML flow style: `{uses: shell, with: {run: make}}`.
fn flow(v: &serde_json::Value) -> String {
    use serde_json::Value as J;
    match v {
        J::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}: {}", flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        J::Array(a) => format!("[{}]", a.iter().map(flow).collect::<Vec<_>>().join(", ")),
        J::String(s) if s.is_empty() || s.contains([':', ',', '{', '}', '[', ']', '#', '\n']) => format!("{s:?}"),
        other => scalar_text(other),
    }
}

fn short(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(items) => format!("[{}]", items.iter().map(short).collect::<Vec<_>>().join(", ")),
        other => scalar_text(other),
    }
}

fn list(out: &mut String, steps: &[PlanStep], depth: usize) {
    let width = steps.iter().map(|s| s.name.chars().count()).max().unwrap_or(0).min(32);
    for s in steps {
        let parallel = steps.iter().filter(|o| o.stage == s.stage).count() > 1;
        step(out, s, depth, width, parallel);
    }
}

fn step(out: &mut String, s: &PlanStep, depth: usize, width: usize, parallel: bool) {
    let pad = "  ".repeat(depth);
    let stage = format!("{}{}", s.stage, if parallel { "∥" } else { "" });
    let effect = s.effect.map_or("", |e| e.as_str());
    let what = match (&s.uses, &s.for_each) {
        (_, Some(f)) => {
            let items = match (&f.items, &f.expression) {
                (Some(items), _) => format!("[{}]", items.iter().map(short).collect::<Vec<_>>().join(", ")),
                (None, Some(e)) => format!("{e} (known at run time)"),
                (None, None) => "?".to_owned(),
            };
            format!(
                "for each {} in {items}; concurrency {}, max_failures {}",
                f.var, f.concurrency, f.max_failures
            )
        }
        (Some(kind), None) => format!("{kind:10}  {}", s.description),
        (None, None) => "group".to_owned(),
    };
    let _ = writeln!(out, "{pad}{stage:>3}  {:width$}  {effect:7}  {what}", s.name);
    let detail = format!("{pad}       ");
    match &s.when {
        When::Runs => {}
        When::Skipped { condition } => {
            let _ = writeln!(out, "{detail}skipped: `when: {condition}` is false");
        }
        When::AtRunTime { condition } => {
            let _ = writeln!(out, "{detail}when: {condition} (decided at run time)");
        }
    }
    if !s.after.is_empty() && s.stage > 1 && parallel {
        let _ = writeln!(out, "{detail}after: {}", s.after.join(", "));
    }
    if s.for_each.is_none() {
        if let Some(serde_json::Value::Object(with)) = &s.with {
            for (k, v) in with {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => flow(other),
                };
                if !text.contains('\n') && s.description.contains(&text) {
                    continue; // already shown in the description
                }
                let mut lines = text.lines();
                let _ = writeln!(out, "{detail}{k}: {}", lines.next().unwrap_or(""));
                for l in lines {
                    let _ = writeln!(out, "{detail}{}  {l}", " ".repeat(k.len()));
                }
            }
        }
    }
    for p in &s.policy {
        let _ = writeln!(out, "{detail}{p}");
    }
    if s.effect.is_some() && s.idempotent {
        let _ = writeln!(out, "{detail}idempotent: resume may run it again");
    }
    for n in &s.notes {
        let _ = writeln!(out, "{detail}note: {n}");
    }
    for l in &s.live {
        let _ = writeln!(out, "{detail}live: {l}");
    }
    match &s.for_each {
        Some(_) => {
            for item in &s.children {
                let _ = writeln!(out, "{detail}{}", item.path);
                if item.uses.is_some() {
                    let mut one = item.clone();
                    one.name = item
                        .path
                        .rsplit('[')
                        .next()
                        .map(|k| format!("[{k}"))
                        .unwrap_or_default();
                    // A call shows its own handlers.
                    step(out, &one, depth + 3, 0, false);
                } else {
                    list(out, &item.children, depth + 3);
                    handlers(out, item, &format!("{detail}   "), depth + 3);
                }
            }
        }
        None => list(out, &s.children, depth + 3),
    }
    handlers(out, s, &detail, depth);
}

fn handlers(out: &mut String, s: &PlanStep, detail: &str, depth: usize) {
    for (label, hs) in [("on failure", &s.on_failure), ("undo", &s.undo)] {
        if !hs.is_empty() {
            let _ = writeln!(out, "{detail}{label}:");
            list(out, hs, depth + 3);
        }
    }
}
