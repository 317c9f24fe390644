//! Finding plugins: executables named `runbook-step-<kind>` in the library's
//! `plugins/` folder, then in each folder of `RUNBOOK_PLUGIN_PATH` (the first
//! found of a name wins, as on `PATH`), each asked to `describe` itself.

use crate::protocol::{Description, parse_description};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The prefix of a plugin's file name.
pub const PREFIX: &str = "runbook-step-";

/// How long `describe` may take.
pub const DESCRIBE_LIMIT: Duration = Duration::from_secs(10);

/// A plugin found and described.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its executable.
    pub path: PathBuf,
    /// What it said of itself.
    pub description: Description,
}

/// A plugin found that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The kind its file name gives.
    pub kind: String,
    /// Its executable.
    pub path: PathBuf,
    /// What is wrong, with what to do.
    pub why: String,
}

/// The folders searched, in order: `<library>/plugins`, then
/// `RUNBOOK_PLUGIN_PATH` (colon-separated).
pub fn folders(library: &Path, plugin_path: Option<&str>) -> Vec<PathBuf> {
    let mut out = vec![library.join("plugins")];
    out.extend(
        plugin_path
            .unwrap_or_default()
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
    );
    out
}

/// The executables named `runbook-step-<kind>` in `folders`, the first of
/// each kind; `(kind, path)`, in search order. A folder that does not exist
/// is skipped.
pub fn executables(folders: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for folder in folders {
        let Ok(dir) = std::fs::read_dir(folder) else { continue };
        let mut here: Vec<(String, PathBuf)> = dir
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_owned();
                let kind = name.strip_prefix(PREFIX)?.to_owned();
                let path = e.path();
                let meta = std::fs::metadata(&path).ok()?;
                (meta.is_file() && meta.permissions().mode() & 0o111 != 0 && !kind.is_empty()).then_some((kind, path))
            })
            .collect();
        here.sort();
        for (kind, path) in here {
            if !out.iter().any(|(k, _)| *k == kind) {
                out.push((kind, path));
            }
        }
    }
    out
}

/// Runs `path describe` and reads what it prints.
pub fn describe(path: &Path) -> Result<Description, String> {
    let text = run_bounded(path, &["describe"], DESCRIBE_LIMIT)?;
    parse_description(&text)
}

/// What a plugin said of itself, remembered by its file's identity (path,
/// size, modification time to the nanosecond) in
/// `$XDG_CACHE_HOME/runbook/plugins.json` (else `~/.cache/...`), so that a
/// command does not start every plugin each time: replacing or editing the
/// executable asks it again. Faults are not remembered.
mod cache {
    use super::*;
    use std::collections::BTreeMap;

    /// The file's identity.
    pub(super) fn stamp(path: &Path) -> Option<String> {
        let meta = std::fs::metadata(path).ok()?;
        let modified = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
        let path = std::fs::canonicalize(path).ok()?;
        Some(format!("{}|{}|{}", path.display(), meta.len(), modified.as_nanos()))
    }

    fn file() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("runbook").join("plugins.json"))
    }

    pub(super) fn load() -> BTreeMap<String, serde_json::Value> {
        file()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Writes the entries of plugins that still exist, atomically (a
    /// concurrent command keeps either version whole).
    pub(super) fn save(entries: &BTreeMap<String, serde_json::Value>) {
        let Some(file) = file() else { return };
        let Some(dir) = file.parent() else { return };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let kept: BTreeMap<&String, &serde_json::Value> = entries
            .iter()
            .filter(|(k, _)| k.split('|').next().is_some_and(|p| Path::new(p).exists()))
            .collect();
        let Ok(text) = serde_json::to_string(&kept) else { return };
        let tmp = dir.join(format!(".plugins.{}.json", std::process::id()));
        if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, &file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// Runs `path args...` with no input, for at most `limit`; its standard
/// output, or why there is none (it could not start, timed out, failed).
pub(crate) fn run_bounded(path: &Path, args: &[&str], limit: Duration) -> Result<String, String> {
    let (status, stdout, stderr) = run_with(path, args, None, limit)?;
    if !status.success() {
        let code = status.code().map_or("a signal".to_owned(), |c| format!("status {c}"));
        let why = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
        return Err(format!(
            "`{}` failed ({code}){}",
            args.join(" "),
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        ));
    }
    Ok(stdout)
}

/// Runs `path args...` with `input` on its standard input (or none), for at
/// most `limit` (then it is killed); how it ended, its standard output and
/// its standard error.
pub(crate) fn run_with(
    path: &Path,
    args: &[&str],
    input: Option<&str>,
    limit: Duration,
) -> Result<(ExitStatus, String, String), String> {
    let mut child = Command::new(path)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (input, child.stdin.take()) {
        let text = text.to_owned();
        // Written aside, so a plugin that does not read cannot block us.
        std::thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    // Read both pipes while it runs, so a long output cannot block it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{}` did not finish within {} s",
                    args.join(" "),
                    limit.as_secs_f64()
                ));
            }
            Err(e) => return Err(format!("waiting for it failed: {e}")),
        }
    };
    Ok((status, out.join().unwrap_or_default(), err.join().unwrap_or_default()))
}

/// Every plugin in `folders`, described (all at once: a command starts in
/// the time of the slowest `describe`, not of their sum); those that cannot be
/// used, with why. Names of built-in kinds (`taken`) cannot be replaced by a
/// plugin.
pub fn discover(folders: &[PathBuf], taken: &[&str]) -> (Vec<Found>, Vec<Broken>) {
    let candidates = executables(folders);
    let mut remembered = cache::load();
    let stamps: Vec<Option<String>> = candidates.iter().map(|(_, p)| cache::stamp(p)).collect();
    let described: Vec<Result<Description, String>> = std::thread::scope(|scope| {
        let asked: Vec<_> = candidates
            .iter()
            .zip(&stamps)
            .map(|((kind, path), stamp)| {
                let builtin = taken.contains(&kind.as_str());
                let known = stamp
                    .as_ref()
                    .and_then(|s| remembered.get(s))
                    .and_then(|d| serde_json::from_value::<Description>(d.clone()).ok());
                scope.spawn(move || {
                    if builtin {
                        Err(format!(
                            "`{kind}` is a built-in kind; a plugin cannot replace it (hint: rename the plugin)"
                        ))
                    } else {
                        known.map_or_else(|| describe(path), Ok)
                    }
                })
            })
            .collect();
        asked
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("describing it failed unexpectedly".to_owned()))
            })
            .collect()
    });
    let mut changed = false;
    for (stamp, d) in stamps.iter().zip(&described) {
        if let (Some(stamp), Ok(d)) = (stamp, d) {
            if !remembered.contains_key(stamp) {
                if let Ok(v) = serde_json::to_value(d) {
                    remembered.insert(stamp.clone(), v);
                    changed = true;
                }
            }
        }
    }
    if changed {
        cache::save(&remembered);
    }
    let mut found = Vec::new();
    let mut broken = Vec::new();
    for ((kind, path), description) in candidates.into_iter().zip(described) {
        match description {
            Ok(d) if d.kind != kind => broken.push(Broken {
                why: format!(
                    "its file name says kind `{kind}` but `describe` says `{}` (hint: name it {PREFIX}{})",
                    d.kind, d.kind
                ),
                kind,
                path,
            }),
            Ok(description) => found.push(Found { path, description }),
            Err(why) => broken.push(Broken { kind, path, why }),
        }
    }
    (found, broken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(dir: &Path, name: &str, script: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn the_first_plugin_of_a_name_wins_and_faults_are_kept_apart() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let good = r#"echo '{"protocol":1,"kind":"flag","description":"d","schema":{"type":"object"},"effect":"read","idempotent":true}'"#;
        plugin(a.path(), "runbook-step-flag", good);
        plugin(b.path(), "runbook-step-flag", "exit 3");
        plugin(b.path(), "runbook-step-shell", good);
        plugin(b.path(), "runbook-step-mute", "echo 'not json'");
        plugin(b.path(), "runbook-step-named", &good.replace("flag", "other"));
        std::fs::write(b.path().join("runbook-step-plain"), "not executable").unwrap();
        let folders = vec![a.path().to_owned(), b.path().join("missing"), b.path().to_owned()];
        let (found, broken) = discover(&folders, &["shell"]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, a.path().join("runbook-step-flag"));
        let why = |k: &str| {
            broken
                .iter()
                .find(|b| b.kind == k)
                .map(|b| b.why.clone())
                .unwrap_or_default()
        };
        assert!(why("shell").contains("built-in"));
        assert!(why("mute").contains("one JSON document"));
        assert!(why("named").contains("name it runbook-step-other"));
        assert_eq!(broken.len(), 3, "{broken:?}");
        assert_eq!(
            folders_of("/lib", Some("/a::/b")),
            ["/lib/plugins", "/a", "/b"].map(PathBuf::from)
        );
    }

    fn folders_of(lib: &str, path: Option<&str>) -> Vec<PathBuf> {
        folders(Path::new(lib), path)
    }

    #[test]
    fn a_describe_that_hangs_is_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let p = plugin(dir.path(), "runbook-step-slow", "exec sleep 30");
        let started = Instant::now();
        let why = run_bounded(&p, &["describe"], Duration::from_millis(300)).unwrap_err();
        assert!(why.contains("did not finish"), "{why}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

/// One plugin as `runbook plugin list` shows it.
#[derive(Debug, serde::Serialize)]
pub struct Listed {
    /// Its kind.
    pub kind: String,
    /// Its executable.
    pub path: String,
    /// Why it cannot be used; `null` when it can.
    pub problem: Option<String>,
    /// What it does, when it can be used.
    pub description: Option<String>,
}

/// Every plugin found in `folders`, with what `registry` made of it.
pub fn listing(folders: &[PathBuf], registry: &runbook_core::kind::Registry) -> Vec<Listed> {
    executables(folders)
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
        .collect()
}

/// A listing, for people.
pub fn listing_text(listed: &[Listed], folders: &[PathBuf]) -> String {
    if listed.is_empty() {
        let looked: Vec<String> = folders.iter().map(|f| f.display().to_string()).collect();
        return format!("no plugins (looked in: {})\n", looked.join(", "));
    }
    listed
        .iter()
        .map(|l| match &l.problem {
            None => format!(
                "{:<20} {}  ({})\n",
                l.kind,
                l.description.as_deref().unwrap_or(""),
                l.path
            ),
            Some(why) => format!("{:<20} BROKEN: {why}\n", l.kind),
        })
        .collect()
}
