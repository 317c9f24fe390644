//! A run's inputs as a person gives them: an inputs file (YAML, its errors
//! located in it) and `NAME=VALUE` pairs (`--set`; a string input takes the
//! text as typed, so `0005` stays "0005"), checked against the playbook's
//! declarations with the same rules as any other front end's typed values
//! (`runbook_core::inputs::resolve`).

use indexmap::IndexMap;
use runbook_core::diag::{Diagnostic, Source};
use runbook_core::inputs;
use runbook_core::model::{InputType, Playbook};
use serde_json::Value as Json;
use std::path::Path;

/// One problem with the given inputs.
#[derive(Debug)]
pub enum Problem {
    /// In the inputs file, shown against its text.
    Located {
        /// The file's text.
        source: Source,
        /// What is wrong where.
        diagnostics: Vec<Diagnostic>,
    },
    /// Anywhere else.
    Message(String),
}

/// Why the given inputs were refused (nothing ran).
#[derive(Debug)]
pub struct Refused {
    /// Each problem, in order.
    pub problems: Vec<Problem>,
    /// What they mean together, when there are several checks' worth.
    pub summary: Option<String>,
}

impl From<Problem> for Refused {
    fn from(p: Problem) -> Refused {
        Refused {
            problems: vec![p],
            summary: None,
        }
    }
}

/// Reads the inputs file (if any), then the pairs (a pair wins over the
/// file), and checks them: the run's inputs with defaults filled in.
pub fn given(pb: &Playbook, file: Option<&Path>, pairs: &[String]) -> Result<IndexMap<String, Json>, Refused> {
    let mut given: IndexMap<String, Json> = IndexMap::new();
    let read = match file {
        Some(path) => Some(read_file(path)?),
        None => None,
    };
    if let Some((_, node)) = &read {
        for (k, v) in node.entries().into_iter().flatten() {
            given.insert(k.name.clone(), v.to_json());
        }
    }
    for pair in pairs {
        let (k, v) = inputs::parse_set(pair).map_err(|e| Problem::Message(e.to_string()))?;
        let v = match (pb.inputs.get(&k), pair.split_once('=')) {
            (Some(spec), Some((_, raw))) if spec.ty == InputType::String => Json::String(raw.to_owned()),
            _ => v,
        };
        given.insert(k, v);
    }
    inputs::resolve(pb, &given).map_err(|errors| {
        let paired = |name: &str| {
            pairs
                .iter()
                .any(|p| p.split_once('=').map(|(k, _)| k.trim()) == Some(name))
        };
        let problems = errors
            .iter()
            .map(|e| match &read {
                Some((source, node)) if !paired(&e.name) && node.get(&e.name).is_some() => {
                    let span = node.get(&e.name).map(|n| n.span);
                    let diagnostic = Diagnostic::error("input", format!("input `{}`: {}", e.name, e.message), span)
                        .label("this value")
                        .maybe_hint(e.hint.clone());
                    Problem::Located {
                        source: source.clone(),
                        diagnostics: vec![diagnostic],
                    }
                }
                _ => Problem::Message(e.to_string()),
            })
            .collect();
        let summary = format!(
            "{} for `{}`; nothing was run",
            crate::error::plural(errors.len(), "invalid input"),
            pb.name
        );
        Refused {
            problems,
            summary: Some(summary),
        }
    })
}

/// An inputs file: its text and its mapping.
fn read_file(path: &Path) -> Result<(Source, runbook_core::parse::Node), Refused> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Problem::Message(format!("cannot read inputs file `{}`: {e}", path.display())))?;
    let text = inputs::join_surrogate_escapes(&text).into_owned();
    let source = Source::new(path.display().to_string(), text);
    let node = match runbook_core::parse::parse(&source.text) {
        Ok(n) => n,
        Err(diagnostics) => return Err(Problem::Located { source, diagnostics }.into()),
    };
    if node.entries().is_none() {
        let diagnostic = Diagnostic::error(
            "inputs-file",
            "an inputs file is a mapping of input names to values",
            Some(node.span),
        )
        .hint("write `name: value` lines");
        let diagnostics = vec![diagnostic];
        return Err(Problem::Located { source, diagnostics }.into());
    }
    Ok((source, node))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use runbook_core::validate::{Expected, load};

    fn playbook() -> Playbook {
        let text = "apiVersion: runbook/v1\nname: deploy\nversion: 1\ninputs:\n  release: { type: string }\n  hosts: { type: integer, default: 2 }\nsteps:\n  - { id: x, uses: shell, with: { run: \"true\" } }\n";
        let registry = runbook_core::kind::Registry::new().with(runbook_core::kind::test_kit::Cmd);
        load(
            Source::new("deploy.yaml", text.to_owned()),
            &Expected::default(),
            &registry,
        )
        .unwrap_or_else(|inv| panic!("{:?}", inv.diagnostics))
        .playbook
    }

    #[test]
    fn a_pair_wins_over_the_file_and_a_string_stays_as_typed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("inputs.yaml");
        std::fs::write(&file, "release: v1\nhosts: 5\n").unwrap();
        let got = given(&playbook(), Some(&file), &["release=0005".to_owned()]).unwrap();
        assert_eq!(got["release"], Json::String("0005".into()));
        assert_eq!(got["hosts"], 5);
        let defaults = given(&playbook(), None, &["release=v2".to_owned()]).unwrap();
        assert_eq!(defaults["hosts"], 2, "the default is filled in");
    }

    #[test]
    fn a_bad_value_in_the_file_is_located_there_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("inputs.yaml");
        std::fs::write(&file, "release: v1\nhosts: many\n").unwrap();
        let refused = given(&playbook(), Some(&file), &[]).unwrap_err();
        let Problem::Located { source, diagnostics } = &refused.problems[0] else {
            panic!("{refused:?}")
        };
        assert_eq!(source.name, file.display().to_string());
        assert_eq!(diagnostics[0].span.map(|s| s.line), Some(2));
        assert!(diagnostics[0].message.starts_with("input `hosts`"), "{diagnostics:?}");
        let missing = given(&playbook(), None, &[]).unwrap_err();
        assert!(
            matches!(&missing.problems[..], [Problem::Message(m)] if m.contains("release")),
            "{missing:?}"
        );
        assert_eq!(
            missing.summary.as_deref(),
            Some("1 invalid input for `deploy`; nothing was run")
        );
        let not_a_map = dir.path().join("list.yaml");
        std::fs::write(&not_a_map, "- a\n- b\n").unwrap();
        let refused = given(&playbook(), Some(&not_a_map), &[]).unwrap_err();
        assert!(
            matches!(&refused.problems[..], [Problem::Located { diagnostics, .. }] if diagnostics[0].code == "inputs-file")
        );
    }
}
