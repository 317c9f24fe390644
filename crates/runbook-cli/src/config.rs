//! The settings of `runbook.toml` (found and read by runbook-runner's
//! `config`) applied to the command line. Precedence: a flag, then its
//! environment variable, then the file, then the built-in default; `runbook
//! config` shows each setting and where it came from.

use crate::args::Cli;
use clap::parser::ValueSource;
use runbook_runner::config::{Found, without_password};
use std::path::{Path, PathBuf};

/// One setting, its value and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Setting {
    pub(crate) name: &'static str,
    pub(crate) value: Option<String>,
    pub(crate) source: String,
}

/// Fills what neither a flag nor the environment set from the configuration
/// file; returns every setting with its source (for `runbook config`).
pub(crate) fn apply(cli: &mut Cli, matches: &clap::ArgMatches) -> Result<Vec<Setting>, String> {
    let found = Found::here()?;
    let (file, relative, from_file) = (&found.file, |p: &Path| found.relative(p), found.origin());
    let given = |id: &str| match matches.value_source(id) {
        Some(ValueSource::CommandLine) => Some("flag".to_owned()),
        Some(ValueSource::EnvVariable) => Some("environment".to_owned()),
        _ => None,
    };
    let mut out = Vec::new();
    // playbooks: flag > RUNBOOK_PLAYBOOKS > file > `playbooks`.
    let source = match (given("playbooks"), &file.playbooks) {
        (Some(s), _) => s,
        (None, Some(p)) => {
            cli.playbooks = relative(p);
            from_file.clone()
        }
        (None, None) => "built-in default".to_owned(),
    };
    out.push(Setting {
        name: "playbooks",
        value: Some(cli.playbooks.display().to_string()),
        source,
    });
    // plugins: the library's `plugins/`, then RUNBOOK_PLUGIN_PATH.
    let path = std::env::var("RUNBOOK_PLUGIN_PATH").ok();
    out.push(Setting {
        name: "plugins",
        value: Some(
            runbook_step_plugin::discover::folders(&cli.playbooks, path.as_deref())
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        ),
        source: if path.is_some() {
            "the library's plugins/, then environment".to_owned()
        } else {
            "the library's plugins/".to_owned()
        },
    });
    let source = match (given("inventory"), &file.inventory) {
        (Some(s), _) => s,
        (None, Some(p)) => {
            cli.inventory = Some(relative(p));
            from_file.clone()
        }
        (None, None) => "built-in default (./inventory.yaml if it exists)".to_owned(),
    };
    out.push(Setting {
        name: "inventory",
        value: cli.inventory.as_ref().map(|p| p.display().to_string()),
        source,
    });
    let source = match (given("state"), &file.state) {
        (Some(s), _) => s,
        (None, Some(s)) => {
            let url = s.starts_with("postgres://") || s.starts_with("postgresql://");
            cli.state = Some(if url { PathBuf::from(s) } else { relative(Path::new(s)) });
            from_file.clone()
        }
        (None, None) => format!("built-in default ({})", runbook_state::default_path().display()),
    };
    out.push(Setting {
        name: "state",
        value: cli.state.as_ref().map(|p| without_password(&p.display().to_string())),
        source,
    });
    // notify: only the file says (webhooks told about every run run here).
    out.push(Setting {
        name: "notify",
        value: (!file.notify.is_empty()).then(|| {
            file.notify
                .iter()
                .map(|n| without_password(&n.target()))
                .collect::<Vec<_>>()
                .join(", ")
        }),
        source: if file.notify.is_empty() {
            "none".to_owned()
        } else {
            from_file
        },
    });
    Ok(out)
}

/// `runbook config`: each setting, its value, and where it came from.
pub(crate) fn show(settings: &[Setting]) -> crate::Exit {
    for s in settings {
        println!(
            "{:10} {}  ({})",
            s.name,
            s.value.as_deref().unwrap_or("(not set)"),
            s.source
        );
    }
    crate::Exit::Ok
}
