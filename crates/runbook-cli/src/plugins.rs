//! `runbook plugin list` and `runbook plugin test`.

use crate::Exit;
use crate::args::{Output, PluginAction};
use crate::fail::{Done, Failure};
use runbook_core::kind::Registry;
use runbook_step_plugin::conformance;
use serde::Serialize;
use std::path::Path;

/// One plugin as `plugin list` shows it.
#[derive(Debug, Serialize)]
struct Listed {
    kind: String,
    path: String,
    /// `null` when it can be used.
    problem: Option<String>,
    description: Option<String>,
}

/// Runs a `plugin` command.
pub(crate) fn plugin(library: &Path, registry: &Registry, action: PluginAction) -> Done {
    match action {
        PluginAction::List { output } => list(library, registry, output),
        PluginAction::Test { path, with, output } => test(&path, with.as_deref(), output),
    }
}

fn list(library: &Path, registry: &Registry, output: Output) -> Done {
    let folders = runbook_step_plugin::discover::folders(library, std::env::var("RUNBOOK_PLUGIN_PATH").ok().as_deref());
    let listed: Vec<Listed> = runbook_step_plugin::discover::executables(&folders)
        .into_iter()
        .map(|(kind, path)| Listed {
            problem: registry.problem(&kind).map(str::to_owned),
            description: registry
                .get(&kind)
                .filter(|_| registry.problem(&kind).is_none())
                .map(|k| k.summary().to_owned()),
            kind,
            path: path.display().to_string(),
        })
        .collect();
    match output {
        Output::Json => crate::json_out::print(&listed),
        Output::Text => {
            if listed.is_empty() {
                println!(
                    "no plugins (looked in: {})",
                    folders
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            for l in &listed {
                match &l.problem {
                    None => println!(
                        "{:<20} {}  ({})",
                        l.kind,
                        l.description.as_deref().unwrap_or(""),
                        l.path
                    ),
                    Some(why) => println!("{:<20} BROKEN: {why}", l.kind),
                }
            }
        }
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
        Output::Text => {
            println!("{}", report.path);
            for c in &report.checks {
                println!("  {} {:<18} {}", if c.ok { "ok  " } else { "FAIL" }, c.name, c.detail);
            }
            println!(
                "{}",
                if report.passed() {
                    "the plugin speaks the protocol"
                } else {
                    "the plugin does not speak the protocol (book: Plugins)"
                }
            );
        }
    }
    Ok(if report.passed() { Exit::Ok } else { Exit::Failed })
}
