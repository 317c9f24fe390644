//! Reading what a command acts on: a playbook of the library (by name,
//! `name@version` or path) with its diagnostics, its inputs from `--set`,
//! `--inputs` and defaults, and the inventory (with `--limit`).

use crate::args::InputArgs;
use crate::diagnostics::{eprint_all, plural};
use crate::fail::Failure;
use indexmap::IndexMap;
use runbook_core::kind::Registry;
use runbook_core::library::{self, Library, LoadError};
use runbook_core::model::Playbook;
use runbook_core::validate::Loaded;
use serde_json::Value as Json;

/// Loads a playbook, showing its warnings.
pub(crate) fn load(lib: &Library, registry: &Registry, spec: &str) -> Result<Loaded, Failure> {
    let located = lib.locate(spec).map_err(|e| Failure::invalid(e.to_string()))?;
    match library::load(lib, &located, registry) {
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
    runbook_runner::inputs::given(pb, args.inputs_file.as_deref(), &args.set).map_err(Failure::from)
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
    use runbook_core::inventory::ReadError;
    runbook_core::inventory::read_file(path).map_err(|e| match e {
        ReadError::Io(m) => Failure::invalid(m),
        ReadError::Ansible(m) => Failure::invalid(format!("{m}; nothing was run")),
        ReadError::Invalid { source, diagnostics } => {
            let summary = format!(
                "inventory `{}` is invalid: {}; nothing was run",
                path.display(),
                plural(diagnostics.len(), "error")
            );
            Failure::Diagnosed {
                source,
                diagnostics,
                summary: Some(summary),
            }
        }
    })
}
