//! `runbook.toml`: where the library, the inventory and the state are, so
//! that every front end (the command line, a server) works the same from any
//! folder of a project.
//!
//! The first `runbook.toml` found from the current folder upwards is used,
//! else `$XDG_CONFIG_HOME/runbook/config.toml` (`~/.config/runbook/config.toml`).
//! Relative paths in it are relative to the file ([`Found::relative`]).

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What the file may say.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The playbook library folder.
    pub playbooks: Option<PathBuf>,
    /// The inventory file.
    pub inventory: Option<PathBuf>,
    /// The state: a SQLite file or a `postgres://` URL.
    pub state: Option<String>,
    /// Webhooks and emails told about every run this runner executes,
    /// whatever its playbook says (`[[notify]]` tables: `webhook` or `email`,
    /// `on`, `secret`; the secret is the name of an environment variable of
    /// the runner).
    #[serde(default)]
    pub notify: Vec<runbook_core::model::Notify>,
}

/// The configuration file that applies here, read.
#[derive(Debug, Default)]
pub struct Found {
    /// The file, if there is one.
    pub path: Option<PathBuf>,
    /// What it says (empty without a file).
    pub file: File,
}

impl Found {
    /// Finds and reads the file that applies in the current folder.
    pub fn here() -> Result<Found, String> {
        match find() {
            Some(path) => Ok(Found {
                file: read(&path)?,
                path: Some(path),
            }),
            None => Ok(Found::default()),
        }
    }

    /// A path the file gives, made relative to the file's folder.
    pub fn relative(&self, p: &Path) -> PathBuf {
        match self.path.as_deref().and_then(Path::parent) {
            Some(d) if p.is_relative() => d.join(p),
            _ => p.to_path_buf(),
        }
    }

    /// Where a setting from the file came from, for `runbook config`.
    pub fn origin(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(String::new, |p| format!("file {}", p.display()))
    }
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
    let file: File = toml::from_str(&text).map_err(|e| {
        format!(
            "{} is not a valid runbook.toml: {} (keys: playbooks, inventory, state, notify)",
            path.display(),
            e.message()
        )
    })?;
    if let Some(n) = file.notify.iter().find(|n| n.webhook.is_some() == n.email.is_some()) {
        return Err(format!(
            "{} is not a valid runbook.toml: a [[notify]] names {} (give one of `webhook = URL` or `email = {{ to = [ADDRESS] }}`)",
            path.display(),
            if n.webhook.is_some() {
                "both a webhook and an email"
            } else {
                "neither a webhook nor an email"
            }
        ));
    }
    Ok(file)
}

/// A connection URL with its password replaced by `***`.
pub fn without_password(url: &str) -> String {
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
