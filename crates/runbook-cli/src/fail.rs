//! [`Failure`]: why a command stopped short of what was asked. Commands and
//! their helpers return it with `?`; `dispatch` says it once, on stderr, and
//! turns it into the exit code it means. A runner's refusal keeps its own
//! wording and hint (`RunnerError`); a playbook's or inventory's diagnostics
//! are shown against their text.

use crate::Exit;
use crate::diagnostics::eprint_all;
use runbook_core::diag::{Diagnostic, Source};
use runbook_runner::{ErrorClass, RunnerError};

/// Why a command stopped short.
#[derive(Debug)]
pub(crate) enum Failure {
    /// `error: MESSAGE` and, if there is one, `hint: HINT`.
    Message {
        /// The exit code it means.
        exit: Exit,
        /// What went wrong.
        message: String,
        /// What to do about it.
        hint: Option<String>,
    },
    /// Diagnostics shown against their text, then `error: SUMMARY`.
    Diagnosed {
        /// The text.
        source: Source,
        /// Errors (and warnings), in order.
        diagnostics: Vec<Diagnostic>,
        /// One line on what it means, if more than the diagnostics.
        summary: Option<String>,
    },
    /// Several, said in order, then `error: SUMMARY` (exit 2).
    All {
        /// Each one.
        each: Vec<Failure>,
        /// What they mean together.
        summary: String,
    },
    /// The run lifecycle refused or stopped.
    Runner(RunnerError),
}

/// What a command ends with.
pub(crate) type Done = Result<Exit, Failure>;

impl Failure {
    /// Bad input: nothing ran, nothing changed (exit 2).
    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::Message {
            exit: Exit::Invalid,
            message: message.into(),
            hint: None,
        }
    }

    /// The same, with what to do about it.
    pub(crate) fn hint(self, hint: impl Into<String>) -> Failure {
        match self {
            Failure::Message { exit, message, .. } => Failure::Message {
                exit,
                message,
                hint: Some(hint.into()),
            },
            other => other,
        }
    }

    /// Says it on stderr; the exit code it means.
    pub(crate) fn report(&self) -> Exit {
        match self {
            Failure::Message { exit, message, hint } => {
                eprintln!("error: {message}");
                if let Some(h) = hint {
                    eprintln!("hint: {h}");
                }
                *exit
            }
            Failure::Diagnosed {
                source,
                diagnostics,
                summary,
            } => {
                eprint_all(source, diagnostics);
                if let Some(s) = summary {
                    eprintln!("error: {s}");
                }
                Exit::Invalid
            }
            Failure::All { each, summary } => {
                for f in each {
                    f.report();
                }
                eprintln!("error: {summary}");
                Exit::Invalid
            }
            Failure::Runner(e) => {
                if let Some(inv) = e.invalid() {
                    eprint_all(&inv.source, &inv.diagnostics);
                }
                let class = e.class();
                match class {
                    ErrorClass::Invalid | ErrorClass::Locked => eprintln!("error: {e}; nothing was run"),
                    ErrorClass::Interrupted | ErrorClass::Failed => eprintln!("error: {e}"),
                }
                if let Some(hint) = e.hint() {
                    eprintln!("hint: {hint}");
                }
                match class {
                    ErrorClass::Invalid => Exit::Invalid,
                    ErrorClass::Locked => Exit::Locked,
                    ErrorClass::Interrupted => Exit::Interrupted,
                    ErrorClass::Failed => Exit::Failed,
                }
            }
        }
    }
}

impl From<RunnerError> for Failure {
    fn from(e: RunnerError) -> Failure {
        Failure::Runner(e)
    }
}

impl From<runbook_runner::inputs::Refused> for Failure {
    fn from(r: runbook_runner::inputs::Refused) -> Failure {
        use runbook_runner::inputs::Problem;
        let mut each: Vec<Failure> = r
            .problems
            .into_iter()
            .map(|p| match p {
                Problem::Located { source, diagnostics } => Failure::Diagnosed {
                    source,
                    diagnostics,
                    summary: None,
                },
                Problem::Message(m) => Failure::invalid(m),
            })
            .collect();
        match r.summary {
            Some(summary) => Failure::All { each, summary },
            None if each.len() == 1 => each.remove(0),
            None => Failure::All {
                each,
                summary: "invalid inputs; nothing was run".into(),
            },
        }
    }
}

/// A store that failed while a command read or wrote it (exit 2: nothing was
/// run).
impl From<runbook_state::StoreError> for Failure {
    fn from(e: runbook_state::StoreError) -> Failure {
        Failure::invalid(e.to_string())
    }
}
