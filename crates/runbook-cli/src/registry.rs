//! Every step kind this binary knows, registered in one place.

use runbook_core::kind::Registry;

/// The registry of step kinds: read this function to find them all. The
/// built-in kinds, then the plugins found for the library at `library`
/// (its `plugins/` folder, then `RUNBOOK_PLUGIN_PATH`).
pub(crate) fn registry(library: &std::path::Path) -> Registry {
    runbook_step_plugin::register(builtin(), library)
}

/// The kinds compiled into this binary.
pub(crate) fn builtin() -> Registry {
    Registry::new()
        .with(runbook_step_shell::Shell)
        .with(runbook_step_wait::Sleep)
        .with(runbook_step_wait::Wait)
        .with(runbook_step_http::HttpCheck::default())
        .with(runbook_step_ssh::Ssh::default())
        .with(runbook_step_lb::Lb)
        .with(runbook_step_pg::Pg)
        .with(runbook_step_approve::Approve)
        .with(runbook_step_prometheus::Prometheus::default())
}
