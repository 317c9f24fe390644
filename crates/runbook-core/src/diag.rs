//! Diagnostics: what a person sees when a playbook or an input is wrong.
//!
//! Every problem found while loading or validating becomes one [`Diagnostic`]
//! with a location ([`Span`]), a short label for that location and, where the
//! fix is obvious, a hint. Loading collects them all before reporting, so a
//! playbook with five mistakes gets five diagnostics. All wording lives with the
//! code that finds the problem; messages are lowercase and name things in
//! backticks.

use std::fmt;
use std::sync::Arc;

/// A location in a source text: byte offset and length, plus the 1-based line and
/// column of its start (columns count characters, as editors do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Byte offset of the first byte.
    pub offset: usize,
    /// Length in bytes (0 for a point).
    pub len: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

/// How bad a diagnostic is. Only errors make validation fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Validation fails; nothing runs.
    Error,
    /// Reported, but the playbook is still usable.
    Warning,
}

/// One problem, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// A stable kebab-case code, e.g. `unknown-key`, for tests and documentation.
    pub code: &'static str,
    /// What is wrong, one line.
    pub message: String,
    /// Where it is; `None` for problems of the file as a whole.
    pub span: Option<Span>,
    /// A short label printed under the span.
    pub label: Option<String>,
    /// How to fix it, when that is obvious.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A new error at `span`.
    pub fn error(code: &'static str, message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span,
            label: None,
            hint: None,
        }
    }

    /// A new warning at `span`.
    pub fn warning(code: &'static str, message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message, span)
        }
    }

    /// Sets the label shown under the span.
    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Sets the hint.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets the hint if there is one.
    #[must_use]
    pub fn maybe_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint.or(self.hint);
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The text a diagnostic points into, and the name to show for it (a path).
#[derive(Debug, Clone)]
pub struct Source {
    /// Shown to the user, usually a path relative to the working directory.
    pub name: String,
    /// The full text.
    pub text: Arc<str>,
}

impl Source {
    /// A named source text.
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// A diagnostic together with the text it points into: what the binary renders.
#[derive(Debug, Clone)]
pub struct Located {
    /// The problem.
    pub diagnostic: Diagnostic,
    /// Where it was found.
    pub source: Source,
}

impl fmt::Display for Located {
    /// The message alone; the location and hint are rendered around it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

/// The one-line form `file:line:col: error: message (hint: ...)`, for logs and
/// machine consumers. The binary renders the richer miette form.
pub struct OneLine<'a>(pub &'a Located);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0.diagnostic;
        let name = &self.0.source.name;
        let sev = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match d.span {
            Some(s) => write!(f, "{name}:{}:{}: {sev}: {}", s.line, s.col, d.message)?,
            None => write!(f, "{name}: {sev}: {}", d.message)?,
        }
        if let Some(h) = &d.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Located {}

impl miette::Diagnostic for Located {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.diagnostic.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.diagnostic
            .hint
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.diagnostic.span.map(|_| self as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let span = self.diagnostic.span?;
        let label = miette::LabeledSpan::new(
            Some(self.diagnostic.label.clone().unwrap_or_else(|| "here".to_owned())),
            span.offset,
            span.len,
        );
        Some(Box::new(std::iter::once(label)))
    }
}

impl miette::SourceCode for Located {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let inner = self
            .source
            .text
            .read_span(span, context_lines_before, context_lines_after)?;
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.source.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            inner.column(),
            inner.line_count(),
        )))
    }
}

/// The closest candidate to `word`, if one is close enough to be a plausible typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// `did you mean `x`?` as a hint string.
pub fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    did_you_mean(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        let keys = ["needs", "when", "timeout", "retry"];
        assert_eq!(did_you_mean("neds", keys), Some("needs"));
        assert_eq!(did_you_mean("timeuot", keys), Some("timeout"));
        assert_eq!(did_you_mean("banana", keys), None);
    }
}
