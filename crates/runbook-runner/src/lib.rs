//! The run lifecycle as a library, for every front end (the command line
//! today; a server and a web UI next): no argument parsing, no printing, no
//! exit codes. Typed options in, a typed outcome or a [`RunnerError`] out, and
//! what happens meanwhile reported to an observer the caller passes.
//!
//! It owns the lock leases of a playbook's `lock:` keys ([`leases`]). Starting,
//! resuming and continuing runs, and the worker loop, are to move here from
//! the CLI (book/src/architecture.md says where things stand).

pub mod leases;

/// Why the lifecycle could not do what was asked; the one place its wording
/// lives.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A `lock:` key did not render from the inputs.
    #[error("lock `{template}`: {message}")]
    LockKey {
        /// The key as written in the playbook.
        template: String,
        /// Why it did not render.
        message: String,
    },
    /// Another run holds a key (after waiting, if asked to).
    #[error("lock `{key}` is held by run {} ({}{}) since {}, lease until {}",
        .holder.run_id, .holder.user,
        .holder.pid.map(|p| format!(", process {p}")).unwrap_or_default(),
        .holder.since, .holder.expires_at)]
    Locked {
        /// The key.
        key: String,
        /// Who holds it.
        holder: Box<runbook_state::Lock>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] runbook_state::StoreError),
}
