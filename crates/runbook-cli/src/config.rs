//! `runbook.toml`: where the library, the inventory and the state are, so that
//! runbook works the same from any folder of a project.
//!
//! The first `runbook.toml` found from the current folder upwards is used, else
//! `$XDG_CONFIG_HOME/runbook/config.toml` (`~/.config/runbook/config.toml`).
//! Relative paths in it are relative to the file. Precedence: a flag, then its
//! environment variable, then the file, then the built-in default; `runbook
//! config` shows each setting and where it came from.

use crate::args::Cli;
use clap::parser::ValueSource;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What the file may say.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// The playbook library folder.
    playbooks: Option<PathBuf>,
    /// The inventory file.
    inventory: Option<PathBuf>,
    /// The state: a SQLite file or a `postgres://` URL.
    state: Option<String>,
}

/// One setting, its value and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Setting {
    pub(crate) name: &'static str,
    pub(crate) value: Option<String>,
    pub(crate) source: String,
}

/// The configuration file that applies here, if any.
fn find() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    for dir in cwd.ancestors() {
        let f = dir.join("runbook.toml");
        if f.is_file() {
            return Some(f);
        }
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let f = base.join("runbook/config.toml");
    f.is_file().then_some(f)
}

fn read(path: &Path) -> Result<File, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        format!(
            "{} is not a valid runbook.toml: {} (keys: playbooks, inventory, state)",
            path.display(),
            e.message()
        )
    })
}

/// Fills what neither a flag nor the environment set from the configuration
/// file; returns every setting with its source (for `runbook config`).
pub(crate) fn apply(cli: &mut Cli, matches: &clap::ArgMatches) -> Result<Vec<Setting>, String> {
    let found = find();
    let file = match &found {
        Some(p) => read(p)?,
        None => File::default(),
    };
    let dir = found.as_deref().and_then(Path::parent).map(Path::to_path_buf);
    let relative = |p: &Path| match &dir {
        Some(d) if p.is_relative() => d.join(p),
        _ => p.to_path_buf(),
    };
    let from_file = found
        .as_ref()
        .map_or_else(String::new, |p| format!("file {}", p.display()));
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
    Ok(out)
}

/// A connection URL with its password replaced by `***`.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if scheme < at => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            super::without_password("postgres://runbook:s3cret@db:5432/state"),
            "postgres://runbook:***@db:5432/state"
        );
        assert_eq!(
            super::without_password("/var/lib/runbook/state.db"),
            "/var/lib/runbook/state.db"
        );
    }
}
