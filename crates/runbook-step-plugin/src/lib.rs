//! External step kinds: executables named `runbook-step-<kind>` that speak
//! runbook's plugin protocol (version 1), so a team can drive the systems
//! runbook ships no kind for (their deploy tool, a feature-flag service, a
//! ticketing system) in any language.
//!
//! This crate owns the protocol's types ([`protocol`]), finding and describing
//! plugins ([`discover`]), the step kind that runs one ([`External`]) and the
//! checks of `runbook plugin test` ([`conformance`]). A plugin is run the way a
//! `shell` command is (its own session, SIGTERM then SIGKILL on cancel), its
//! request on standard input so that no parameter or secret is ever in a
//! process list. book/src/plugins.md specifies the protocol for plugin
//! authors.

pub mod conformance;
pub mod discover;
mod kind;
pub mod protocol;

pub use kind::External;

use runbook_core::kind::Registry;
use std::path::Path;
use std::sync::Arc;

/// Adds to `registry` every plugin found for the library at `library`
/// (its `plugins/` folder, then `RUNBOOK_PLUGIN_PATH`); a plugin that cannot
/// be used is recorded with why, so a step that uses it is refused with the
/// reason.
pub fn register(registry: Registry, library: &Path) -> Registry {
    let folders = discover::folders(library, std::env::var("RUNBOOK_PLUGIN_PATH").ok().as_deref());
    let taken: Vec<String> = registry.names().map(str::to_owned).collect();
    let taken: Vec<&str> = taken.iter().map(String::as_str).collect();
    let (found, broken) = discover::discover(&folders, &taken);
    let mut registry = registry;
    for f in found {
        registry = registry.with_shared(Arc::new(External::new(f)));
    }
    for b in broken {
        registry = registry.with_problem(
            &b.kind,
            format!("plugin `{}` cannot be used: {}", b.path.display(), b.why),
        );
    }
    registry
}
