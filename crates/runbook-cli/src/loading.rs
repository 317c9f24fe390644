//! Reading what a command acts on: a playbook of the library (by name,
//! `name@version` or path) with its diagnostics, its inputs from `--set`,
//! `--inputs` and defaults, and the inventory (with `--limit`).

use crate::args::InputArgs;
use crate::diagnostics::{eprint_all, plural};
use crate::fail::Failure;
use indexmap::IndexMap;
use runbook_core::diag::{Diagnostic, Source};
use runbook_core::inputs;
use runbook_core::kind::Registry;
use runbook_core::library::{self, Library, LoadError};
use runbook_core::model::Playbook;
use runbook_core::validate::Loaded;
use serde_json::Value as Json;

/// Loads a playbook, showing its warnings.
pub(crate) fn load(lib: &Library, registry: &Registry, spec: &str) -> Result<Loaded, Failure> {
    let located = lib.locate(spec).map_err(|e| Failure::invalid(e.to_string()))?;
    match library::load(&located, registry) {
        Ok(loaded) => {
            eprint_all(&loaded.source, &loaded.warnings);
            Ok(loaded)
        }
        Err(LoadError::Library(e)) => Err(Failure::invalid(e.to_string())),
        Err(LoadError::Invalid(inv)) => {
            let summary = format!(
                "`{}` is invalid: {}; nothing was run",
                inv.source.name,
                plural(inv.error_count(), "error")
            );
            Err(Failure::Diagnosed {
                source: inv.source,
                diagnostics: inv.diagnostics,
                summary: Some(summary),
            })
        }
    }
}

/// Reads `--inputs FILE` and `--set`, and checks them against the playbook.
pub(crate) fn resolve_inputs(pb: &Playbook, args: &InputArgs) -> Result<IndexMap<String, Json>, Failure> {
    let mut given: IndexMap<String, Json> = IndexMap::new();
    let mut file_source: Option<(Source, runbook_core::parse::Node)> = None;
    if let Some(path) = &args.inputs_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::invalid(format!("cannot read inputs file `{}`: {e}", path.display())))?;
        let text = inputs::join_surrogate_escapes(&text).into_owned();
        let source = Source::new(path.display().to_string(), text);
        let node = match runbook_core::parse::parse(&source.text) {
            Ok(n) => n,
            Err(diagnostics) => {
                return Err(Failure::Diagnosed {
                    source,
                    diagnostics,
                    summary: None,
                });
            }
        };
        let Some(entries) = node.entries() else {
            let d = Diagnostic::error(
                "inputs-file",
                "an inputs file is a mapping of input names to values",
                Some(node.span),
            )
            .hint("write `name: value` lines");
            return Err(Failure::Diagnosed {
                source,
                diagnostics: vec![d],
                summary: None,
            });
        };
        for (k, v) in entries {
            given.insert(k.name.clone(), v.to_json());
        }
        file_source = Some((source, node));
    }
    for s in &args.set {
        match inputs::parse_set(s) {
            Ok((k, v)) => {
                // A string input takes the text as typed: `--set migration=0005`
                // is "0005", not the number 5.
                let v = match (pb.inputs.get(&k), s.split_once('=')) {
                    (Some(spec), Some((_, raw))) if spec.ty == runbook_core::model::InputType::String => {
                        Json::String(raw.to_owned())
                    }
                    _ => v,
                };
                given.insert(k, v);
            }
            Err(e) => return Err(Failure::invalid(e.to_string())),
        }
    }
    match inputs::resolve(pb, &given) {
        Ok(v) => Ok(v),
        Err(errors) => {
            let mut each = Vec::new();
            for e in &errors {
                let from_file = !args
                    .set
                    .iter()
                    .any(|s| s.split_once('=').map(|(k, _)| k.trim()) == Some(e.name.as_str()));
                match (&file_source, from_file) {
                    (Some((source, node)), true) if node.get(&e.name).is_some() => {
                        let span = node.get(&e.name).map(|n| n.span);
                        let d = Diagnostic::error("input", format!("input `{}`: {}", e.name, e.message), span)
                            .label("this value")
                            .maybe_hint(e.hint.clone());
                        each.push(Failure::Diagnosed {
                            source: source.clone(),
                            diagnostics: vec![d],
                            summary: None,
                        });
                    }
                    _ => each.push(Failure::invalid(e.to_string())),
                }
            }
            let summary = format!(
                "{} for `{}`; nothing was run",
                plural(errors.len(), "invalid input"),
                pb.name
            );
            Err(Failure::All { each, summary })
        }
    }
}

/// The inventory restricted by `--limit`, if given.
pub(crate) fn limited(
    inv: runbook_core::inventory::Inventory,
    args: &InputArgs,
) -> Result<runbook_core::inventory::Inventory, Failure> {
    let Some(pattern) = &args.limit else { return Ok(inv) };
    runbook_core::ansible::limit(&inv, pattern).map_err(|e| Failure::invalid(format!("{e}; nothing was run")))
}

/// Reads the inventory: the file given, else `./inventory.yaml` if it exists,
/// else an empty one.
pub(crate) fn load_inventory(path: Option<&std::path::Path>) -> Result<runbook_core::inventory::Inventory, Failure> {
    let default = std::path::Path::new("inventory.yaml");
    let path = match path {
        Some(p) => p,
        None if default.exists() => default,
        None => return Ok(Default::default()),
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::invalid(format!("cannot read inventory `{}`: {e}", path.display())))?;
    // An Ansible inventory, INI or YAML, is read as it is.
    if let Some(read) = runbook_core::ansible::read(path, &text) {
        return read
            .map_err(|e| Failure::invalid(format!("Ansible inventory `{}`: {e}; nothing was run", path.display())));
    }
    let source = Source::new(path.display().to_string(), text);
    runbook_core::inventory::load(&source).map_err(|diagnostics| {
        let summary = format!(
            "inventory `{}` is invalid: {}; nothing was run",
            path.display(),
            plural(diagnostics.len(), "error")
        );
        Failure::Diagnosed {
            source: source.clone(),
            diagnostics,
            summary: Some(summary),
        }
    })
}
