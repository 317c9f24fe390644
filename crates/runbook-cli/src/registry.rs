//! Every step kind this binary knows, registered in one place.

use runbook_core::kind::Registry;

/// The registry of step kinds: read this function to find them all.
pub(crate) fn registry() -> Registry {
    Registry::new()
        .with(runbook_step_shell::Shell)
        .with(runbook_step_wait::Sleep)
        .with(runbook_step_wait::Wait)
        .with(runbook_step_http::HttpCheck::default())
        .with(runbook_step_ssh::Ssh::default())
        .with(runbook_step_lb::Lb)
        .with(runbook_step_pg::Pg)
        .with(runbook_step_approve::Approve)
}
