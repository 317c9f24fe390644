//! What a run's journal says, as pure functions of it: the journal's one fold
//! ([`replay::Replay`]: what resume needs, and each step's story that
//! `status`, `history` and the reports show), the
//! measured recovery time and point against the playbook's objectives, and the
//! reports in JSON and JUnit XML (for pipelines) and Markdown and HTML (for
//! people), and the daemon's Prometheus text ([`metrics::Metrics`]). No I/O and no runtime: the caller reads the journal from the store
//! and decides where the text goes.
//!
//! The one design decision to know: measured values are step outputs named
//! `rto_seconds` and `rpo_seconds` (directly or inside a `json` output), the
//! last one recorded wins, so a playbook reports a measurement by printing it.

mod fold;
pub mod history;
pub mod metrics;
mod render;
pub mod replay;
pub mod timeline;

pub use fold::{StepRow, last_error, measured, plan_hash, runners, seconds_between, sha256_hex, short, steps};
pub use render::{Format, Report, xml};
