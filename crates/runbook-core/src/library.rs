//! The playbook library on disk: `playbooks/<name>/v<N>.yaml`.
//!
//! `NAME` means the highest version, `NAME@N` pins one, and an argument ending in
//! `.yaml`/`.yml` is a path to a file. A name is only ever letters, digits, `-`
//! and `_`: anything with `/`, `..` or other path tricks is refused before the
//! file system is touched, so a name from a schedule or a webhook cannot reach
//! outside the library.

use crate::diag::Source;
use crate::kind::Registry;
use crate::validate::{self, Expected, Invalid, Loaded};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a playbook could not be found or read.
#[derive(Debug, Error)]
pub enum LibraryError {
    /// The name is not a plain playbook name.
    #[error(
        "`{0}` is not a playbook name (hint: names use letters, digits, `-` and `_`; give a path ending in `.yaml` to run a file)"
    )]
    BadName(String),
    /// A path where only a library name is taken.
    #[error("`{0}` is a path, not a playbook name: only a name from the library is taken here")]
    NotAName(String),
    /// No such playbook.
    #[error("no playbook `{name}` in `{dir}`{hint}")]
    NotFound {
        /// The name asked for.
        name: String,
        /// The library folder.
        dir: String,
        /// ` (hint: ...)` or empty.
        hint: String,
    },
    /// No such version.
    #[error("playbook `{name}` has no version {version} (hint: it has {have})")]
    NoVersion {
        /// The name.
        name: String,
        /// The version asked for.
        version: u32,
        /// The versions it has, e.g. `v1, v2`.
        have: String,
    },
    /// The file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// One playbook of the library and its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name (the folder).
    pub name: String,
    /// Its versions, ascending.
    pub versions: Vec<u32>,
}

impl Entry {
    /// The highest version.
    pub fn latest(&self) -> u32 {
        self.versions.last().copied().unwrap_or(0)
    }
}

/// A playbook file located in (or outside) the library.
#[derive(Debug, Clone)]
pub struct Located {
    /// The file.
    pub path: PathBuf,
    /// What its place says it must be.
    pub expected: Expected,
}

/// The library folder.
#[derive(Debug, Clone)]
pub struct Library {
    dir: PathBuf,
}

/// True for a plain playbook name.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 100
}

fn version_of(file_name: &str) -> Option<u32> {
    let stem = file_name
        .strip_suffix(".yaml")
        .or_else(|| file_name.strip_suffix(".yml"))?;
    let digits = stem.strip_prefix('v')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

impl Library {
    /// A library rooted at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Library { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every playbook, by name.
    pub fn entries(&self) -> Result<Vec<Entry>, LibraryError> {
        let io = |e| LibraryError::Io {
            path: self.dir.display().to_string(),
            source: e,
        };
        let mut out = Vec::new();
        for dent in std::fs::read_dir(&self.dir).map_err(io)? {
            let dent = dent.map_err(io)?;
            let name = dent.file_name().to_string_lossy().into_owned();
            if !is_valid_name(&name) || !dent.path().is_dir() {
                continue;
            }
            let versions = self.versions(&name)?;
            if !versions.is_empty() {
                out.push(Entry { name, versions });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn versions(&self, name: &str) -> Result<Vec<u32>, LibraryError> {
        let dir = self.dir.join(name);
        let mut versions: Vec<u32> = std::fs::read_dir(&dir)
            .map_err(|e| LibraryError::Io {
                path: dir.display().to_string(),
                source: e,
            })?
            .filter_map(Result::ok)
            .filter_map(|d| version_of(&d.file_name().to_string_lossy()))
            .collect();
        versions.sort_unstable();
        versions.dedup();
        Ok(versions)
    }

    /// Finds `NAME` or `NAME@N` in the library, never a file by its path:
    /// what a playbook calls and what a schedule names (only the operator's
    /// own command line runs a file by its path).
    pub fn locate_entry(&self, spec: &str) -> Result<Located, LibraryError> {
        let lower = spec.to_ascii_lowercase();
        if lower.ends_with(".yaml") || lower.ends_with(".yml") || spec.contains(['/', '\\']) {
            return Err(LibraryError::NotAName(spec.to_owned()));
        }
        self.locate(spec)
    }

    /// Finds `NAME`, `NAME@N`, or a path ending in `.yaml`/`.yml`.
    pub fn locate(&self, spec: &str) -> Result<Located, LibraryError> {
        if spec.ends_with(".yaml") || spec.ends_with(".yml") {
            let path = PathBuf::from(spec);
            return Ok(Located {
                expected: expected_from_path(&path),
                path,
            });
        }
        let (name, pinned) = match spec.split_once('@') {
            Some((n, v)) => {
                let v = v.strip_prefix('v').unwrap_or(v);
                match v.parse::<u32>() {
                    Ok(v) => (n, Some(v)),
                    Err(_) => return Err(LibraryError::BadName(spec.to_owned())),
                }
            }
            None => (spec, None),
        };
        if !is_valid_name(name) {
            return Err(LibraryError::BadName(spec.to_owned()));
        }
        let dir = self.dir.join(name);
        if !dir.is_dir() {
            let names: Vec<String> = self
                .entries()
                .map(|e| e.into_iter().map(|e| e.name).collect())
                .unwrap_or_default();
            let hint = crate::diag::suggestion(name, names.iter().map(String::as_str))
                .map(|h| format!(" (hint: {h})"))
                .unwrap_or_else(|| " (hint: `runbook list` shows the library)".to_owned());
            return Err(LibraryError::NotFound {
                name: name.to_owned(),
                dir: self.dir.display().to_string(),
                hint,
            });
        }
        let versions = self.versions(name)?;
        let version = match pinned {
            Some(v) if versions.contains(&v) => v,
            Some(v) => {
                return Err(LibraryError::NoVersion {
                    name: name.to_owned(),
                    version: v,
                    have: versions.iter().map(|v| format!("v{v}")).collect::<Vec<_>>().join(", "),
                });
            }
            None => match versions.last() {
                Some(v) => *v,
                None => {
                    return Err(LibraryError::NotFound {
                        name: name.to_owned(),
                        dir: self.dir.display().to_string(),
                        hint: format!(" (hint: `{}` holds no `v<N>.yaml`)", dir.display()),
                    });
                }
            },
        };
        let yaml = dir.join(format!("v{version}.yaml"));
        let path = if yaml.exists() {
            yaml
        } else {
            dir.join(format!("v{version}.yml"))
        };
        Ok(Located {
            path,
            expected: Expected {
                name: Some(name.to_owned()),
                version: Some(version),
            },
        })
    }
}

/// What a path like `.../<name>/v<N>.yaml` says the playbook must be.
pub fn expected_from_path(path: &Path) -> Expected {
    let version = path.file_name().and_then(|f| version_of(&f.to_string_lossy()));
    let name = version
        .and(path.parent())
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| is_valid_name(n));
    Expected { name, version }
}

/// Either failure of reading then validating a playbook.
#[derive(Debug)]
pub enum LoadError {
    /// Not found or not readable.
    Library(LibraryError),
    /// Read, but invalid.
    Invalid(Box<Invalid>),
}

/// Reads and validates a located playbook, and the playbooks it calls (from
/// `library`).
pub fn load(library: &Library, located: &Located, registry: &Registry) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(&located.path).map_err(|e| {
        LoadError::Library(LibraryError::Io {
            path: located.path.display().to_string(),
            source: e,
        })
    })?;
    let source = Source::new(located.path.display().to_string(), text);
    let callees = crate::calls::LibraryCallees::new(library, located.expected.name.as_deref());
    validate::load_with(source, &located.expected, registry, &callees).map_err(|e| LoadError::Invalid(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_path_tricks() {
        for bad in ["../etc", "a/b", "..", "", "-x", "A", "a b", "a\0b", "a\\b", ".hidden"] {
            assert!(!is_valid_name(bad), "{bad:?} accepted");
        }
        for good in ["rolling-deploy", "dr_drill", "a1"] {
            assert!(is_valid_name(good));
        }
        let lib = Library::new("/nonexistent");
        assert!(matches!(lib.locate("../../etc/passwd"), Err(LibraryError::BadName(_))));
        assert!(matches!(lib.locate("x@two"), Err(LibraryError::BadName(_))));
    }

    #[test]
    fn what_a_playbook_calls_is_a_name_never_a_path() {
        let lib = Library::new("/nonexistent");
        for path in ["/tmp/evil.yaml", "evil.yml", "x/v1", "EVIL.YAML", "a\\b"] {
            assert!(
                matches!(lib.locate_entry(path), Err(LibraryError::NotAName(_))),
                "{path}"
            );
        }
        // The operator's own command line still runs a file by its path.
        assert!(lib.locate("/tmp/evil.yaml").is_ok());
        assert!(matches!(lib.locate_entry("nope"), Err(LibraryError::NotFound { .. })));
    }

    #[test]
    fn versions_from_file_names() {
        assert_eq!(version_of("v1.yaml"), Some(1));
        assert_eq!(version_of("v12.yml"), Some(12));
        assert_eq!(version_of("v01.yaml"), None);
        assert_eq!(version_of("v1.yaml.bak"), None);
        assert_eq!(version_of("latest.yaml"), None);
        let e = expected_from_path(Path::new("playbooks/backup/v3.yaml"));
        assert_eq!((e.name.as_deref(), e.version), (Some("backup"), Some(3)));
    }

    #[test]
    fn highest_version_unless_pinned() {
        let dir = std::env::temp_dir().join(format!("runbook-lib-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("deploy")).expect("mkdir");
        for v in [1, 2, 10] {
            std::fs::write(dir.join(format!("deploy/v{v}.yaml")), "x").expect("write");
        }
        let lib = Library::new(&dir);
        assert_eq!(lib.locate("deploy").expect("found").expected.version, Some(10));
        assert_eq!(lib.locate("deploy@2").expect("found").expected.version, Some(2));
        assert!(matches!(lib.locate("deploy@3"), Err(LibraryError::NoVersion { .. })));
        assert!(matches!(lib.locate("deplyo"), Err(LibraryError::NotFound { hint, .. }) if hint.contains("deploy")));
        std::fs::remove_dir_all(&dir).ok();
    }
}
