//! Planning and executing playbooks.
//!
//! This crate owns the order in which steps run ([`order`]), what a run would
//! do before it does it ([`plan`], and as text: [`plan_text`]), the templates
//! checked before a run starts ([`precheck`]), the step graph for humans
//! ([`graph`]), and the durable executor ([`exec`]: journal, resume,
//! cancellation, handlers).
//!
//! A key design decision: the engine never names a step kind. It reaches kinds
//! only through `runbook_core::kind::Registry`, so adding a kind never touches
//! this crate, and it never depends on a `runbook-step-*` crate.

pub mod exec;
pub mod graph;
pub mod lease;
pub mod order;
pub mod plan;
pub mod plan_text;
pub mod precheck;
/// The journal's fold lives with the other readers of the journal.
pub use runbook_report::replay;
pub mod secrets;
