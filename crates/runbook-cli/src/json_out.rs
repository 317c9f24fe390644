//! `--output json` of the read-only commands: one pretty JSON document each,
//! of the types runbook-runner's `catalog` (and the engine and the state
//! crate) define.

use serde::Serialize;

/// Prints a document as pretty JSON.
pub(crate) fn print<T: Serialize>(doc: &T) {
    match serde_json::to_string_pretty(doc) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot write JSON: {e}"),
    }
}
