//! Reading what a command acts on: a playbook of the library (by name,
//! `name@version` or path) with its diagnostics, its inputs from `--set`,
//! `--inputs` and defaults, and the inventory (with `--limit`).

use crate::args::InputArgs;
use crate::diagnostics::{eprint_all, plural};
use indexmap::IndexMap;
use runbook_core::diag::{Diagnostic, Source};
use runbook_core::inputs;
use runbook_core::kind::Registry;
use runbook_core::library::{self, Library, LoadError};
use runbook_core::model::Playbook;
use runbook_core::validate::Loaded;
use serde_json::Value as Json;

/// Loads a playbook, printing every diagnostic; `None` means exit 2.
pub(crate) fn load(lib: &Library, registry: &Registry, spec: &str) -> Option<Loaded> {
    let located = match lib.locate(spec) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    match library::load(&located, registry) {
        Ok(loaded) => {
            eprint_all(&loaded.source, &loaded.warnings);
            Some(loaded)
        }
        Err(LoadError::Library(e)) => {
            eprintln!("error: {e}");
            None
        }
        Err(LoadError::Invalid(inv)) => {
            eprint_all(&inv.source, &inv.diagnostics);
            eprintln!(
                "error: `{}` is invalid: {}; nothing was run",
                inv.source.name,
                plural(inv.error_count(), "error")
            );
            None
        }
    }
}

/// Reads `--inputs FILE` and `--set`, and checks them against the playbook.
pub(crate) fn resolve_inputs(pb: &Playbook, args: &InputArgs) -> Option<IndexMap<String, Json>> {
    let mut given: IndexMap<String, Json> = IndexMap::new();
    let mut file_source: Option<(Source, runbook_core::parse::Node)> = None;
    if let Some(path) = &args.inputs_file {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read inputs file `{}`: {e}", path.display());
                return None;
            }
        };
        let text = inputs::join_surrogate_escapes(&text).into_owned();
        let source = Source::new(path.display().to_string(), text);
        let node = match runbook_core::parse::parse(&source.text) {
            Ok(n) => n,
            Err(diags) => {
                eprint_all(&source, &diags);
                return None;
            }
        };
        let Some(entries) = node.entries() else {
            let d = Diagnostic::error(
                "inputs-file",
                "an inputs file is a mapping of input names to values",
                Some(node.span),
            )
            .hint("write `name: value` lines");
            eprint_all(&source, &[d]);
            return None;
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
            Err(e) => {
                eprintln!("error: {e}");
                return None;
            }
        }
    }
    match inputs::resolve(pb, &given) {
        Ok(v) => Some(v),
        Err(errors) => {
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
                        eprint_all(source, &[d]);
                    }
                    _ => eprintln!("error: {e}"),
                }
            }
            eprintln!(
                "error: {} for `{}`; nothing was run",
                plural(errors.len(), "invalid input"),
                pb.name
            );
            None
        }
    }
}

/// The inventory restricted by `--limit`, if given; `None` after saying why.
pub(crate) fn limited(
    inv: runbook_core::inventory::Inventory,
    args: &InputArgs,
) -> Option<runbook_core::inventory::Inventory> {
    let Some(pattern) = &args.limit else { return Some(inv) };
    match runbook_core::ansible::limit(&inv, pattern) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("error: {e}; nothing was run");
            None
        }
    }
}

/// Reads the inventory: the file given, else `./inventory.yaml` if it exists,
/// else an empty one. `None` (after printing why) means exit 2.
pub(crate) fn load_inventory(path: Option<&std::path::Path>) -> Option<runbook_core::inventory::Inventory> {
    let default = std::path::Path::new("inventory.yaml");
    let path = match path {
        Some(p) => p,
        None if default.exists() => default,
        None => return Some(Default::default()),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read inventory `{}`: {e}", path.display());
            return None;
        }
    };
    // An Ansible inventory, INI or YAML, is read as it is.
    if let Some(read) = runbook_core::ansible::read(path, &text) {
        return match read {
            Ok(inv) => Some(inv),
            Err(e) => {
                eprintln!("error: Ansible inventory `{}`: {e}; nothing was run", path.display());
                None
            }
        };
    }
    let source = Source::new(path.display().to_string(), text);
    match runbook_core::inventory::load(&source) {
        Ok(inv) => Some(inv),
        Err(diags) => {
            eprint_all(&source, &diags);
            eprintln!(
                "error: inventory `{}` is invalid: {}; nothing was run",
                path.display(),
                plural(diags.len(), "error")
            );
            None
        }
    }
}
