//! `runbook plugin list` and `runbook plugin test`.

use crate::Exit;
use crate::args::{Output, PluginAction};
use crate::fail::{Done, Failure};
use runbook_core::kind::Registry;
use runbook_step_plugin::{conformance, discover};
use std::path::Path;

/// Runs a `plugin` command.
pub(crate) fn plugin(library: &Path, registry: &Registry, action: PluginAction) -> Done {
    match action {
        PluginAction::List { output } => list(library, registry, output),
        PluginAction::Test { path, with, output } => test(&path, with.as_deref(), output),
    }
}

fn list(library: &Path, registry: &Registry, output: Output) -> Done {
    let folders = discover::folders(library, std::env::var("RUNBOOK_PLUGIN_PATH").ok().as_deref());
    let listed = discover::listing(&folders, registry);
    match output {
        Output::Json => crate::json_out::print(&listed),
        Output::Text => print!("{}", discover::listing_text(&listed, &folders)),
    }
    Ok(if listed.iter().any(|l| l.problem.is_some()) {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

fn test(path: &Path, with: Option<&str>, output: Output) -> Done {
    if !path.is_file() {
        return Err(Failure::invalid(format!("`{}` is not a file", path.display()))
            .hint("give the path of the plugin's executable, e.g. plugins/runbook-step-flag"));
    }
    let with = with
        .map(|text| {
            serde_json::from_str::<serde_json::Value>(text).map_err(|e| {
                Failure::invalid(format!("--with is not JSON: {e}")).hint(r#"e.g. --with '{"name": "x"}'"#)
            })
        })
        .transpose()?;
    let report = crate::session::runtime()?.block_on(conformance::check(path, with));
    match output {
        Output::Json => crate::json_out::print(&report),
        Output::Text => print!("{}", report.text()),
    }
    Ok(if report.passed() { Exit::Ok } else { Exit::Failed })
}
