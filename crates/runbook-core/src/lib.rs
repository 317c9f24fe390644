//! The playbook language of runbook: everything needed to read a playbook, find
//! every mistake in it, and render its templates, without running anything.
//!
//! It owns the model (`apiVersion: runbook/v1`), the YAML loader with line and
//! column locations, validation, templating and conditions, input typing, the
//! playbook library on disk, and the [`StepKind`](kind::StepKind) trait that step
//! kinds implement.
//!
//! A key design decision: this crate never executes anything and never names a
//! concrete step kind. Kinds live in `runbook-step-*` crates and are handed in
//! through a [`Registry`](kind::Registry); the executor lives in `runbook-engine`.
//! Loading is a pure function of text, so it is safe on untrusted input.

pub mod ansible;
pub mod calls;
pub mod diag;
pub mod inputs;
pub mod inventory;
pub mod kind;
pub mod library;
pub mod model;
pub mod parse;
pub mod shell;
pub mod template;
pub mod validate;
