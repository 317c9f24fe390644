//! Where a value lands in a shell command, and how it is quoted there.
//!
//! A key design decision: a template's values are marked while it renders,
//! then one pass reads the command the way `sh` will, with a stack of the
//! contexts it opens (quotes, `$(...)`, backticks, `$((...))`, `${...}`,
//! comments, here-documents), and quotes each value for the context it lands
//! in. Where no quoting can keep a value data (inside backticks, `$'...'` or
//! `${...}`, a value that would end a here-document), the command is refused
//! with a hint instead of guessed at; `validate` finds those places before
//! anything runs ([`refusals`]).

/// Marks where a value starts and ends in a shell field's first rendering.
pub(crate) const OPEN: char = '\u{E000}';
/// See [`OPEN`].
pub(crate) const CLOSE: char = '\u{E001}';

/// A place where a value cannot be inserted safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What is wrong.
    pub message: String,
    /// How to write it instead.
    pub hint: &'static str,
    /// Which inserted value (0-based, in text order) it is about.
    pub value: usize,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (hint: {})", self.message, self.hint)
    }
}

const VIA_ENV: &str = "pass the value through the step's `env:` and use \"$NAME\" in the command";

/// Quotes a value for a POSIX shell, leaving plain words as they are.
pub fn quote(s: &str) -> String {
    if s.is_empty() {
        "''".to_owned()
    } else if s.chars().all(safe_char) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c)
}

/// The shell context a value lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctx {
    /// Where words are read: the top level or inside `$(...)`.
    Word,
    /// Inside `'...'`.
    Single,
    /// Inside `"..."`.
    Double,
    /// In the body of a here-document whose delimiter is not quoted.
    Heredoc,
    /// In the body of a here-document whose delimiter is quoted (no expansion).
    QuotedHeredoc,
    /// In a `#` comment.
    Comment,
    /// Inside `$((...))`.
    Arith,
    /// Inside `${...}`.
    Param,
    /// Inside backticks.
    Backtick,
    /// Inside `$'...'`.
    AnsiC,
}

#[derive(Debug, Clone, PartialEq)]
enum Frame {
    Cmd {
        nested: bool,
        parens: usize,
        cases: usize,
    },
    Single,
    Double,
    Backtick,
    AnsiC,
    Arith {
        parens: usize,
    },
    Param {
        braces: usize,
    },
    Comment,
    Heredoc {
        delim: String,
        strip_tabs: bool,
        quoted: bool,
    },
}

impl Frame {
    fn ctx(&self) -> Ctx {
        match self {
            Frame::Cmd { .. } => Ctx::Word,
            Frame::Single => Ctx::Single,
            Frame::Double => Ctx::Double,
            Frame::Backtick => Ctx::Backtick,
            Frame::AnsiC => Ctx::AnsiC,
            Frame::Arith { .. } => Ctx::Arith,
            Frame::Param { .. } => Ctx::Param,
            Frame::Comment => Ctx::Comment,
            Frame::Heredoc { quoted: true, .. } => Ctx::QuotedHeredoc,
            Frame::Heredoc { quoted: false, .. } => Ctx::Heredoc,
        }
    }
}

/// Quotes one value for the context it lands in.
fn quote_for(ctx: Ctx, value: &str, index: usize) -> Result<String, Refusal> {
    let refuse = |message: String, hint: &'static str| Refusal {
        message,
        hint,
        value: index,
    };
    let escaped = |specials: &[char]| {
        let mut out = String::with_capacity(value.len() + 4);
        for c in value.chars() {
            if specials.contains(&c) {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    if value.contains('\0') {
        return Err(refuse(
            "a value holds a NUL byte, which no command can take".to_owned(),
            "remove the NUL byte from the value",
        ));
    }
    Ok(match ctx {
        Ctx::Word => quote(value),
        Ctx::Single => value.replace('\'', r"'\''"),
        Ctx::Double => escaped(&['"', '\\', '$', '`']),
        Ctx::Heredoc => escaped(&['\\', '$', '`']),
        Ctx::QuotedHeredoc => value.to_owned(),
        // A comment is never run; a line break in it would end it.
        Ctx::Comment => value.replace(['\n', '\r'], " "),
        Ctx::Arith if is_integer(value) => value.to_owned(),
        Ctx::Arith => {
            return Err(refuse(
                format!("a value inside `$((...))` must be an integer, got `{value}`"),
                "check the input's type (`type: integer`), or compute in the shell from a variable set by `env:`",
            ));
        }
        Ctx::Param => {
            return Err(refuse(
                "a value inside `${...}` cannot be quoted safely".to_owned(),
                VIA_ENV,
            ));
        }
        Ctx::Backtick => {
            return Err(refuse(
                "a value inside backticks cannot be quoted safely".to_owned(),
                "use `$(...)` instead of backticks",
            ));
        }
        Ctx::AnsiC => {
            return Err(refuse(
                "a value inside `$'...'` cannot be quoted safely".to_owned(),
                "use '...' or \"...\" around it",
            ));
        }
    })
}

/// A decimal integer as arithmetic reads it (no leading zero: `010` is octal
/// there, `08` an error).
fn is_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0'))
}

/// The reader's state: the contexts open, here-documents announced on the
/// current line, and the current line (to find a here-document's end).
struct Lexer {
    stack: Vec<Frame>,
    pending: Vec<Frame>,
    line: String,
    line_has_value: bool,
    word_start: bool,
}

impl Lexer {
    fn top(&self) -> &Frame {
        // The bottom frame (the top level) is never popped.
        self.stack.last().unwrap_or(&Frame::Cmd {
            nested: false,
            parens: 0,
            cases: 0,
        })
    }

    fn push(&mut self, f: Frame) {
        self.stack.push(f);
    }

    fn pop(&mut self) {
        if self.stack.len() > 1 {
            self.stack.pop();
        }
    }

    /// A line ended (literal text or a value's line break): it may end a
    /// here-document, and the here-documents it announced begin.
    fn newline(&mut self, value_index: Option<usize>) -> Result<(), Refusal> {
        let line = std::mem::take(&mut self.line);
        let had_value = std::mem::replace(&mut self.line_has_value, value_index.is_some());
        if let Some(at) = self.stack.iter().rposition(|f| matches!(f, Frame::Heredoc { .. })) {
            if let Frame::Heredoc { delim, strip_tabs, .. } = &self.stack[at] {
                let text = if *strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    &line
                };
                if text == delim {
                    if had_value || value_index.is_some() {
                        return Err(Refusal {
                            message: format!("a value would end the here-document `{delim}` early"),
                            hint: "the value holds a line equal to the delimiter; choose another delimiter",
                            value: value_index.unwrap_or(0),
                        });
                    }
                    self.stack.truncate(at);
                }
            }
            return Ok(());
        }
        if value_index.is_none() {
            if matches!(self.top(), Frame::Comment) {
                self.pop();
            }
            if matches!(self.top(), Frame::Cmd { .. }) && !self.pending.is_empty() {
                let mut pending = std::mem::take(&mut self.pending);
                pending.reverse();
                self.stack.extend(pending);
            }
        }
        Ok(())
    }
}

/// Reads `s` as `sh` would and replaces each marked value with what `insert`
/// makes of it for its context.
fn lex(s: &str, mut insert: impl FnMut(Ctx, &str, usize) -> Result<String, Refusal>) -> Result<String, Refusal> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 16);
    let mut lx = Lexer {
        stack: vec![Frame::Cmd {
            nested: false,
            parens: 0,
            cases: 0,
        }],
        pending: Vec::new(),
        line: String::new(),
        line_has_value: false,
        word_start: true,
    };
    let mut values = 0usize;
    let mut i = 0usize;
    let at = |k: usize| chars.get(k).copied();
    let starts = |k: usize, w: &str| {
        let mut j = k;
        for c in w.chars() {
            if at(j) != Some(c) {
                return false;
            }
            j += 1;
        }
        at(j).is_none_or(|c| c.is_whitespace() || ";&|()".contains(c))
    };
    while i < chars.len() {
        let c = chars[i];
        if c == OPEN {
            let end = chars[i + 1..]
                .iter()
                .position(|&x| x == CLOSE)
                .map_or(chars.len(), |p| i + 1 + p);
            let value: String = chars[i + 1..end].iter().collect();
            let index = values;
            values += 1;
            let text = insert(lx.top().ctx(), &value, index)?;
            lx.line_has_value = true;
            for piece in text.split_inclusive('\n') {
                match piece.strip_suffix('\n') {
                    Some(body) => {
                        lx.line.push_str(body);
                        lx.newline(Some(index))?;
                    }
                    None => lx.line.push_str(piece),
                }
            }
            out.push_str(&text);
            lx.word_start = false;
            i = end + 1;
            continue;
        }
        let top = lx.top().clone();
        let mut n = 1;
        let next = at(i + 1);
        let dollar_opens = |lx: &mut Lexer, n: &mut usize| match (at(i + 1), at(i + 2)) {
            (Some('('), Some('(')) => {
                lx.push(Frame::Arith { parens: 0 });
                *n = 3;
                true
            }
            (Some('('), _) => {
                lx.push(Frame::Cmd {
                    nested: true,
                    parens: 0,
                    cases: 0,
                });
                lx.word_start = true;
                *n = 2;
                true
            }
            (Some('{'), _) => {
                lx.push(Frame::Param { braces: 0 });
                *n = 2;
                true
            }
            _ => false,
        };
        match top {
            Frame::Cmd { nested, parens, cases } => {
                let was_word_start = lx.word_start;
                lx.word_start = c.is_whitespace() || ";&|()".contains(c);
                match c {
                    '\\' => n = 2,
                    '\'' => lx.push(Frame::Single),
                    '"' => lx.push(Frame::Double),
                    '`' => lx.push(Frame::Backtick),
                    '#' if was_word_start => lx.push(Frame::Comment),
                    '$' if next == Some('\'') => {
                        lx.push(Frame::AnsiC);
                        n = 2;
                    }
                    '$' => {
                        dollar_opens(&mut lx, &mut n);
                    }
                    '(' => {
                        set_cmd(&mut lx, parens + 1, cases);
                        lx.word_start = true;
                    }
                    ')' if parens > 0 => set_cmd(&mut lx, parens - 1, cases),
                    ')' if cases > 0 => {}
                    ')' if nested => lx.pop(),
                    'c' if was_word_start && starts(i, "case") => {
                        set_cmd(&mut lx, parens, cases + 1);
                        n = 4;
                    }
                    'e' if was_word_start && starts(i, "esac") => {
                        set_cmd(&mut lx, parens, cases.saturating_sub(1));
                        n = 4;
                    }
                    '<' if next == Some('<') && at(i + 2) == Some('<') => n = 3,
                    '<' if next == Some('<') => {
                        take(&chars, i, 2, &mut out, &mut lx)?;
                        i += 2;
                        let (heredoc, used) = heredoc_word(&chars[i..])?;
                        take(&chars, i, used, &mut out, &mut lx)?;
                        i += used;
                        lx.pending.push(heredoc);
                        continue;
                    }
                    _ => {}
                }
            }
            Frame::Single => {
                if c == '\'' {
                    lx.pop();
                }
            }
            Frame::Double => match c {
                '\\' => n = 2,
                '"' => lx.pop(),
                '`' => lx.push(Frame::Backtick),
                '$' => {
                    dollar_opens(&mut lx, &mut n);
                }
                _ => {}
            },
            Frame::Backtick => match c {
                '\\' => n = 2,
                '`' => lx.pop(),
                _ => {}
            },
            Frame::AnsiC => match c {
                '\\' => n = 2,
                '\'' => lx.pop(),
                _ => {}
            },
            Frame::Arith { parens } => match c {
                '(' => {
                    lx.pop();
                    lx.push(Frame::Arith { parens: parens + 1 });
                }
                ')' if parens > 0 => {
                    lx.pop();
                    lx.push(Frame::Arith { parens: parens - 1 });
                }
                ')' => {
                    lx.pop();
                    if next == Some(')') {
                        n = 2;
                    }
                }
                '$' => {
                    dollar_opens(&mut lx, &mut n);
                }
                '`' => lx.push(Frame::Backtick),
                _ => {}
            },
            Frame::Param { braces } => match c {
                '\\' => n = 2,
                '{' => {
                    lx.pop();
                    lx.push(Frame::Param { braces: braces + 1 });
                }
                '}' if braces > 0 => {
                    lx.pop();
                    lx.push(Frame::Param { braces: braces - 1 });
                }
                '}' => lx.pop(),
                '\'' => lx.push(Frame::Single),
                '"' => lx.push(Frame::Double),
                '`' => lx.push(Frame::Backtick),
                '$' => {
                    dollar_opens(&mut lx, &mut n);
                }
                _ => {}
            },
            Frame::Comment => {}
            Frame::Heredoc { quoted: true, .. } => {}
            Frame::Heredoc { quoted: false, .. } => match c {
                '\\' => n = 2,
                '`' => lx.push(Frame::Backtick),
                '$' => {
                    dollar_opens(&mut lx, &mut n);
                }
                _ => {}
            },
        }
        // An escaped value (`\{{x}}`) is still a value: only the marker's
        // own character is taken.
        if n == 2 && c == '\\' && at(i + 1) == Some(OPEN) {
            n = 1;
        }
        take(&chars, i, n, &mut out, &mut lx)?;
        i += n;
    }
    Ok(out)
}

/// Copies `n` characters from `start` as they are.
fn take(chars: &[char], start: usize, n: usize, out: &mut String, lx: &mut Lexer) -> Result<(), Refusal> {
    for &ch in chars.iter().skip(start).take(n) {
        out.push(ch);
        if ch == '\n' {
            lx.newline(None)?;
        } else {
            lx.line.push(ch);
        }
    }
    Ok(())
}

fn set_cmd(lx: &mut Lexer, parens: usize, cases: usize) {
    if let Some(Frame::Cmd {
        parens: p, cases: k, ..
    }) = lx.stack.last_mut()
    {
        *p = parens;
        *k = cases;
    }
}

/// Reads a here-document's delimiter after `<<`: `-`, blanks, then a word
/// that may be quoted. Returns the frame its body opens and how many
/// characters were read.
fn heredoc_word(rest: &[char]) -> Result<(Frame, usize), Refusal> {
    let mut k = 0;
    let strip_tabs = rest.first() == Some(&'-');
    if strip_tabs {
        k += 1;
    }
    while rest.get(k).is_some_and(|c| *c == ' ' || *c == '\t') {
        k += 1;
    }
    let mut delim = String::new();
    let mut quoted = false;
    let mut quote: Option<char> = None;
    while let Some(&c) = rest.get(k) {
        if c == OPEN || c == CLOSE {
            return Err(Refusal {
                message: "a value cannot be a here-document's delimiter".to_owned(),
                hint: "write the delimiter literally, e.g. `<<'EOF'`",
                value: 0,
            });
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => delim.push(c),
            None if c == '\'' || c == '"' => {
                quoted = true;
                quote = Some(c);
            }
            None if c == '\\' => {
                quoted = true;
                if let Some(&e) = rest.get(k + 1) {
                    delim.push(e);
                    k += 1;
                }
            }
            None if c.is_whitespace() || ";&|<>()".contains(c) => break,
            None => delim.push(c),
        }
        k += 1;
    }
    Ok((
        Frame::Heredoc {
            delim,
            strip_tabs,
            quoted,
        },
        k,
    ))
}

/// Replaces each marked value with its text quoted for where it stands.
pub(crate) fn quote_marked(s: &str) -> Result<String, Refusal> {
    lex(s, quote_for)
}

/// The places in a shell field's template where no value could be inserted
/// safely (for `validate`): each `{{...}}` is read as a value in the command
/// around it. Block helpers and raw insertions are left out. Each refusal comes
/// with the `{{...}}` it is about, as written.
pub fn refusals(template: &str) -> Vec<(Refusal, &str)> {
    let mut probe = String::with_capacity(template.len());
    let mut values: Vec<&str> = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        probe.push_str(&rest[..start]);
        let after = &rest[start..];
        let (close, len) = if after.starts_with("{{{") {
            ("}}}", 3)
        } else {
            ("}}", 2)
        };
        let Some(end) = after[len..].find(close) else {
            probe.push_str(after);
            rest = "";
            break;
        };
        let inner = after[len..len + end].trim_start_matches('~').trim_start();
        let is_value = len == 2 && !inner.starts_with(['#', '/', '^', '!', '>']) && inner.trim() != "else";
        if is_value {
            probe.push(OPEN);
            probe.push('0');
            probe.push(CLOSE);
            values.push(&after[..len + end + close.len()]);
        }
        rest = &after[len + end + close.len()..];
    }
    probe.push_str(rest);
    let mut found = Vec::new();
    let result = lex(&probe, |ctx, v, i| match quote_for(ctx, v, i) {
        Ok(t) => Ok(t),
        // Arithmetic takes integers; whether this one is shows at run time.
        Err(_) if ctx == Ctx::Arith => Ok(v.to_owned()),
        Err(r) => {
            found.push(r);
            Ok(v.to_owned())
        }
    });
    if let Err(r) = result {
        found.push(r);
    }
    found
        .into_iter()
        .map(|r| {
            let at = values.get(r.value).copied().unwrap_or(template);
            (r, at)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(v: &str) -> String {
        format!("{OPEN}{v}{CLOSE}")
    }

    #[test]
    fn contexts() {
        let x = mark("a b");
        let q = |s: String| quote_marked(&s).map_err(|r| r.to_string());
        assert_eq!(q(format!("echo {x}")), Ok("echo 'a b'".into()));
        assert_eq!(
            q(format!("echo \"r: $(echo {x})\"")),
            Ok("echo \"r: $(echo 'a b')\"".into())
        );
        assert_eq!(
            q(format!("echo \"$(echo \"{x}\")\"")),
            Ok("echo \"$(echo \"a b\")\"".into())
        );
        assert_eq!(
            q(format!("cat <<EOF\n{x} $HOME\nEOF\necho {x}")),
            Ok("cat <<EOF\na b $HOME\nEOF\necho 'a b'".into())
        );
        assert_eq!(q(format!("cat <<'EOF'\n{x}\nEOF")), Ok("cat <<'EOF'\na b\nEOF".into()));
        assert_eq!(
            q(format!("echo hi # {}", mark("x\ntouch p"))),
            Ok("echo hi # x touch p".into())
        );
        assert!(q(format!("echo `echo {x}`")).is_err_and(|e| e.contains("backticks")));
        assert!(q(format!("echo $(( {x} + 1 ))")).is_err_and(|e| e.contains("integer")));
        assert_eq!(
            q(format!("echo $(( {} + 1 ))", mark("41"))),
            Ok("echo $(( 41 + 1 ))".into())
        );
        assert!(q(format!("cat <<EOF\n{}\nEOF", mark("x\nEOF\nrm -rf /"))).is_err_and(|e| e.contains("here-document")));
        assert_eq!(
            q(format!("echo \"$(case y in y) echo {x};; esac)\"")),
            Ok("echo \"$(case y in y) echo 'a b';; esac)\"".into())
        );
    }

    #[test]
    fn refusals_point_at_the_value() {
        let r = refusals("echo ok {{inputs.a}} `echo {{inputs.b}}`");
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].0.value, r[0].1), (1, "{{inputs.b}}"));
        assert!(refusals("echo \"$(echo {{inputs.x}})\" {{#if a}}`date`{{/if}}").is_empty());
        assert_eq!(refusals("echo ${X:-{{inputs.x}}}").len(), 1);
    }
}
