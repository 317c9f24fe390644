//! `runbook gate backtest`: a `prometheus` step of a playbook, rendered with
//! the inputs given (as `plan` renders it), judged over the past.

use crate::Exit;
use crate::args::{GateAction, Output};
use crate::fail::{Done, Failure};
use crate::loading::{load, resolve_inputs};
use runbook_core::inventory::Inventory;
use runbook_core::kind::Registry;
use runbook_core::library::Library;
use runbook_engine::plan::PlanStep;
use runbook_step_prometheus::PrometheusParams;
use runbook_step_prometheus::backtest::{self, Backtest};
use serde_json::{Value as Json, json};
use std::time::Duration;

/// Runs a `gate` command.
pub(crate) fn gate(lib: &Library, registry: &Registry, inv: &Inventory, action: GateAction) -> Done {
    let GateAction::Backtest {
        playbook,
        step,
        since,
        every,
        inputs,
        output,
    } = action;
    let since = duration("--since", &since)?;
    let every = match every {
        Some(e) => duration("--every", &e)?,
        None => (since / 360).max(Duration::from_secs(1)),
    };
    // Prometheus answers at most 11,000 points per series.
    let points = since.as_secs_f64() / every.as_secs_f64();
    if points > 11_000.0 {
        return Err(Failure::invalid(format!(
            "{points:.0} evaluations: Prometheus answers at most 11000 points per series"
        ))
        .hint("a larger `--every`, or a shorter `--since`"));
    }
    let loaded = load(lib, registry, &playbook)?;
    let given = resolve_inputs(&loaded.playbook, &inputs)?;
    let env: indexmap::IndexMap<String, String> = std::env::vars().collect();
    let pctx = runbook_engine::plan::PlanContext {
        env: env.clone(),
        user: std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned()),
        inventory: inv.to_template(),
    };
    let plan = runbook_engine::plan::plan(&loaded, &given, registry, &pctx);
    let mut all = Vec::new();
    for list in [&plan.steps, &plan.on_failure, &plan.finally] {
        flatten(list, &mut all);
    }
    let gates: Vec<&PlanStep> = all
        .iter()
        .copied()
        .filter(|s| s.uses.as_deref() == Some("prometheus") && s.for_each.is_none())
        .collect();
    let Some(found) = gates.iter().find(|s| s.path == step) else {
        let paths: Vec<&str> = gates.iter().map(|s| s.path.as_str()).collect();
        let hint = runbook_core::diag::suggestion(&step, paths.iter().copied()).unwrap_or_else(|| {
            if paths.is_empty() {
                format!("`{playbook}` has no `prometheus` step")
            } else {
                format!("its `prometheus` steps: {}", paths.join(", "))
            }
        });
        return Err(Failure::invalid(format!("no `prometheus` step `{step}` in `{playbook}`")).hint(hint));
    };
    if let Some(note) = found.notes.first() {
        return Err(Failure::invalid(format!("step `{step}` cannot be rendered before a run: {note}"))
            .hint("give the inputs it reads with `--set`; a gate that reads an earlier step's outputs cannot be backtested"));
    }
    let mut with = found.with.clone().unwrap_or(Json::Null);
    if with.to_string().contains("<secret ") {
        let secrets = runbook_runner::resolve_secrets(&loaded.playbook, &env)?;
        with = runbook_engine::plan::with_secrets(&with, &secrets);
    }
    let params: PrometheusParams = serde_json::from_value(with)
        .map_err(|e| Failure::invalid(format!("step `{step}`: its `with:` is not a prometheus call: {e}")))?;
    let client = runbook_step_http::client(&params.tls.clone().unwrap_or_default()).map_err(|e| Failure::Message {
        exit: Exit::Failed,
        message: e.message,
        hint: None,
    })?;
    let data = runbook_core::template::Data::new(json!({ "inputs": given, "env": env }));
    let result = crate::session::runtime()?
        .block_on(backtest::run(&client, &params, &data, since, every))
        .map_err(|e| Failure::Message {
            exit: Exit::Failed,
            message: format!("backtest of `{step}`: {e}"),
            hint: Some("is Prometheus up, and does it keep data that far back?".to_owned()),
        })?;
    match output {
        Output::Json => crate::json_out::print(&result),
        Output::Text => print!("{}", text(&playbook, &step, &result)),
    }
    Ok(Exit::Ok)
}

fn duration(flag: &str, text: &str) -> Result<Duration, Failure> {
    runbook_core::inputs::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Failure::invalid(format!("`{flag} {text}` is not a duration")).hint("e.g. `30s`, `6h`, `7d`"))
}

/// Every step of a plan, nested ones (items, called playbooks) included.
fn flatten<'p>(steps: &'p [PlanStep], out: &mut Vec<&'p PlanStep>) {
    for s in steps {
        out.push(s);
        flatten(&s.children, out);
        flatten(&s.on_failure, out);
        flatten(&s.undo, out);
    }
}

fn show(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"))
}

/// The report, for people.
fn text(playbook: &str, step: &str, b: &Backtest) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "backtest: {playbook} {step}, {} to {} every {}s",
        b.from, b.to, b.every_seconds
    );
    let _ = writeln!(out, "query: {}", b.query);
    let _ = writeln!(
        out,
        "{} points: {} success, {} failure, {} inconclusive (no data); {} change(s) of mind",
        b.points.len(),
        b.successes,
        b.failures,
        b.inconclusive,
        b.flips
    );
    if b.fired.is_empty() {
        let _ = writeln!(out, "it would not have fired");
    } else {
        let _ = writeln!(out, "it would have fired {} time(s):", b.fired.len());
        for f in &b.fired {
            let _ = writeln!(
                out,
                "  {} to {}  ({} points, worst {})",
                f.from,
                f.to,
                f.points,
                show(f.worst)
            );
        }
    }
    out
}
