//! `runbook gate backtest`: a `prometheus` step of a playbook, rendered with
//! the inputs given (as `plan` renders it), judged over the past by
//! `runbook_step_prometheus::backtest`.

use crate::Exit;
use crate::args::{GateAction, Output};
use crate::fail::{Done, Failure};
use crate::loading::{load, resolve_inputs};
use runbook_core::inventory::Inventory;
use runbook_core::kind::Registry;
use runbook_core::library::Library;
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
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    let pctx = runbook_engine::plan::PlanContext {
        env: env.clone(),
        user,
        inventory: inv.to_template(),
    };
    let plan = runbook_engine::plan::plan(&loaded, &given, registry, &pctx);
    let found = plan
        .call_of(&step, "prometheus")
        .map_err(|hint| Failure::invalid(format!("no `prometheus` step `{step}` in `{playbook}`")).hint(hint))?;
    if let Some(note) = found.notes.first() {
        return Err(Failure::invalid(format!("step `{step}` cannot be rendered before a run: {note}"))
            .hint("give the inputs it reads with `--set`; a gate that reads an earlier step's outputs cannot be backtested"));
    }
    let mut with = found.with.clone().unwrap_or(Json::Null);
    if with.to_string().contains("<secret ") {
        let secrets = runbook_runner::resolve_secrets(&loaded.playbook, &env)?;
        with = runbook_engine::plan::with_secrets(&with, &secrets);
    }
    let data = runbook_core::template::Data::new(json!({ "inputs": given, "env": env }));
    let result = crate::session::runtime()?
        .block_on(runbook_step_prometheus::backtest::from_with(with, &data, since, every))
        .map_err(|e| Failure::Message {
            exit: Exit::Failed,
            message: format!("backtest of `{step}`: {e}"),
            hint: Some("is Prometheus up, and does it keep data that far back?".to_owned()),
        })?;
    match output {
        Output::Json => crate::json_out::print(&result),
        Output::Text => print!("{}", result.text(&format!("{playbook} {step}"))),
    }
    Ok(Exit::Ok)
}

fn duration(flag: &str, text: &str) -> Result<Duration, Failure> {
    runbook_core::inputs::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Failure::invalid(format!("`{flag} {text}` is not a duration")).hint("e.g. `30s`, `6h`, `7d`"))
}
