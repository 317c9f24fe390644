//! The shell contract: a value is never spliced into script text.
//!
//! A key design decision: in a field that a shell runs, each `{{...}}` value
//! is bound to an environment variable of the command (`RUNBOOK_INPUTS_TAG`)
//! and the script gets a *reference* to it (`"${RUNBOOK_INPUTS_TAG}"`), never
//! the value's text. A shell expands a parameter once and never reads its
//! result as code, so whatever the value holds it reaches the command as data.
//! The reference's text is fixed (`'`, `"`, `$`, braces, letters, digits) and
//! balanced in every quoting context, so a mistake of the reader below mostly
//! gives a wrong value (a literal `${...}`, a split word). One mistake is
//! worse: a reference the reader believes quoted that stands unquoted at a
//! command's start runs the value's first word. So the reader follows POSIX
//! `sh` (bash called `sh` agrees), refuses what shells read differently
//! (`$'...'`), and a differential fuzzer holds it to dash and bash.
//!
//! The reader still follows the command the way `sh` will (quotes, `$(...)`,
//! backticks, `$((...))`, `${...}`, comments, here-documents), but only to
//! choose the reference's spelling and to refuse the places where a shell
//! would not expand it as data: arithmetic (bash evaluates a value there, and
//! array subscripts in it run commands), backticks, `$'...'`, `${...}` words
//! and quoted here-documents. `validate` finds those before anything runs
//! ([`refusals`]).

/// Marks where a value starts and ends in a shell field's first rendering.
pub(crate) const OPEN: char = '\u{E000}';
/// See [`OPEN`].
pub(crate) const CLOSE: char = '\u{E001}';

/// The prefix of the environment variables that carry values into commands.
pub const VAR_PREFIX: &str = "RUNBOOK_";

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

/// Quotes a value for a POSIX shell, leaving plain words as they are: for the
/// few places the engine itself writes a script (`export NAME=...` ahead of an
/// ssh command), never for a template's values.
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
    /// Inside `$((...))`, `$[...]` or a `((...))` command.
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
        end: ArithEnd,
    },
    Param {
        braces: usize,
        /// Within double quotes (or a here-document), where `'` is a
        /// character, not a quote.
        quoted: bool,
    },
    Comment,
    Heredoc {
        delim: String,
        strip_tabs: bool,
        quoted: bool,
    },
}

/// What ends an arithmetic context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArithEnd {
    /// `$((...))` and the `((...))` command.
    DoubleParen,
    /// bash's old `$[...]`.
    Bracket,
    /// A `[[ ... ]]` test that compares numbers (`-eq`, `-lt`, ...).
    DoubleBracket,
    /// The end of a `let` command.
    Command,
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

/// The reference to variable `name` for the context it lands in: one quoted
/// word where words are read, the bare expansion inside double quotes and
/// here-documents, and a closed-then-reopened quote inside `'...'`. Each form
/// is balanced, so the context after it is the one before it, and each is a
/// plain parameter expansion wherever a shell really is.
fn reference(ctx: Ctx, name: &str, value: &str, index: usize) -> Result<String, Refusal> {
    let refuse = |message: String, hint: &'static str| Refusal {
        message,
        hint,
        value: index,
    };
    if value.contains('\0') {
        return Err(refuse(
            "a value holds a NUL byte, which no command can take".to_owned(),
            "remove the NUL byte from the value",
        ));
    }
    Ok(match ctx {
        Ctx::Word | Ctx::Comment => format!("\"${{{name}}}\""),
        Ctx::Double | Ctx::Heredoc => format!("${{{name}}}"),
        Ctx::Single => format!("'\"${{{name}}}\"'"),
        // An integer travels in its variable like any value (a secret one
        // stays out of the command line); only integers, since bash evaluates
        // a variable's text in arithmetic (and runs the commands of an array
        // subscript).
        Ctx::Arith if is_integer(value) => format!("${{{name}}}"),
        Ctx::Arith => {
            return Err(refuse(
                format!("a value inside arithmetic must be an integer, got `{value}`"),
                "check the input's type (`type: integer`), or compute in the shell from a variable set by `env:`",
            ));
        }
        Ctx::QuotedHeredoc => {
            return Err(refuse(
                "a value inside a quoted here-document (`<<'EOF'`) is never expanded".to_owned(),
                "use an unquoted delimiter (`<<EOF`): the value is inserted as `${NAME}`, which expands to the value and nothing else",
            ));
        }
        Ctx::Param => {
            return Err(refuse(
                "a value inside `${...}` cannot be kept data".to_owned(),
                VIA_ENV,
            ));
        }
        Ctx::Backtick => {
            return Err(refuse(
                "a value inside backticks cannot be kept data".to_owned(),
                "use `$(...)` instead of backticks",
            ));
        }
        Ctx::AnsiC => {
            return Err(refuse(
                "a value inside `$'...'` cannot be kept data".to_owned(),
                "use '...' or \"...\" around it",
            ));
        }
    })
}

/// A decimal integer as arithmetic reads it (no leading zero: `010` is octal
/// there, `08` an error) that a shell's 64-bit arithmetic holds.
fn is_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s.parse::<i64>().is_ok()
}

/// The reader's state: the contexts open, here-documents announced on the
/// current line, and the current line (to find a here-document's end).
struct Lexer {
    stack: Vec<Frame>,
    pending: Vec<Frame>,
    line: String,
    word_start: bool,
    /// Where a command's first word may stand: only there are `case`,
    /// `esac`, `let`, `((` and `[[` keywords.
    cmd_start: bool,
    /// The current word of a command, to know a reserved word when it ends.
    word: String,
}

/// The reserved words after which a command's first word stands.
const LEADING: [&str; 10] = ["then", "do", "else", "elif", "if", "while", "until", "{", "!", "time"];

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
    fn newline(&mut self) {
        // In an unquoted here-document's body, `\` at a line's end joins it
        // with the next: the delimiter must stand alone on the joined line.
        if matches!(self.stack.last(), Some(Frame::Heredoc { quoted: false, .. }))
            && self.line.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
        {
            self.line.pop();
            return;
        }
        let line = std::mem::take(&mut self.line);
        // A here-document's body is read line by line as raw text first: a
        // line equal to its delimiter ends it, whatever is open inside it.
        if let Some(at) = self.stack.iter().rposition(|f| matches!(f, Frame::Heredoc { .. })) {
            if let Frame::Heredoc { delim, strip_tabs, .. } = &self.stack[at] {
                let text = if *strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    &line
                };
                if text == delim {
                    self.stack.truncate(at);
                    return;
                }
            }
            if at + 1 == self.stack.len() {
                return;
            }
        }
        // Otherwise the line ends a comment or a `let`, and the next starts
        // a new command (and the here-documents this one announced).
        if matches!(
            self.top(),
            Frame::Comment
                | Frame::Arith {
                    end: ArithEnd::Command,
                    ..
                }
        ) {
            self.pop();
        }
        if matches!(self.top(), Frame::Cmd { .. }) {
            self.word_start = true;
            self.cmd_start = true;
            self.word.clear();
            if !self.pending.is_empty() {
                let mut pending = std::mem::take(&mut self.pending);
                pending.reverse();
                self.stack.extend(pending);
            }
        }
    }
}

/// Reads `s` as `sh` would and replaces each marked value with what `insert`
/// makes of it for its context.
fn lex(s: &str, mut insert: impl FnMut(Ctx, &str, usize) -> Result<String, Refusal>) -> Result<String, Refusal> {
    let chars: Vec<char> = s.chars().collect();
    let has_values = s.contains(OPEN);
    let mut out = String::with_capacity(s.len() + 16);
    let mut lx = Lexer {
        stack: vec![Frame::Cmd {
            nested: false,
            parens: 0,
            cases: 0,
        }],
        pending: Vec::new(),
        line: String::new(),
        word_start: true,
        cmd_start: true,
        word: String::new(),
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
            // A reference or an integer: never a line break.
            let text = insert(lx.top().ctx(), &value, index)?;
            lx.line.push_str(&text);
            out.push_str(&text);
            lx.word_start = false;
            lx.word.push('x');
            i = end + 1;
            continue;
        }
        let top = lx.top().clone();
        let mut n = 1;
        let next = at(i + 1);
        let dollar_opens = |lx: &mut Lexer, n: &mut usize| match (at(i + 1), at(i + 2)) {
            (Some('('), Some('(')) => {
                lx.push(Frame::Arith {
                    parens: 0,
                    end: ArithEnd::DoubleParen,
                });
                *n = 3;
                true
            }
            (Some('['), _) => {
                lx.push(Frame::Arith {
                    parens: 0,
                    end: ArithEnd::Bracket,
                });
                *n = 2;
                true
            }
            (Some('('), _) => {
                lx.push(Frame::Cmd {
                    nested: true,
                    parens: 0,
                    cases: 0,
                });
                lx.word_start = true;
                lx.cmd_start = true;
                lx.word.clear();
                *n = 2;
                true
            }
            (Some('{'), _) => {
                let quoted = matches!(
                    lx.top(),
                    Frame::Double | Frame::Heredoc { .. } | Frame::Param { quoted: true, .. }
                );
                lx.push(Frame::Param { braces: 0, quoted });
                *n = 2;
                true
            }
            _ => false,
        };
        match top {
            Frame::Cmd { nested, parens, cases } => {
                let was_word_start = lx.word_start;
                lx.word_start = c.is_whitespace() || ";&|()".contains(c);
                let at_command = was_word_start && lx.cmd_start;
                if c == '\n' || ";&|(".contains(c) {
                    lx.cmd_start = true;
                    lx.word.clear();
                } else if c.is_whitespace() {
                    if !lx.word.is_empty() {
                        lx.cmd_start = LEADING.contains(&lx.word.as_str());
                        lx.word.clear();
                    }
                } else if c == ')' {
                    // A case pattern's end: its commands follow.
                    lx.cmd_start = cases > 0 && parens == 0;
                    lx.word.clear();
                } else {
                    lx.word.push(c);
                }
                match c {
                    '\\' => n = 2,
                    '\'' => lx.push(Frame::Single),
                    '"' => lx.push(Frame::Double),
                    '`' => lx.push(Frame::Backtick),
                    '#' if was_word_start => lx.push(Frame::Comment),
                    // bash reads `$'...'` as a quote with escapes, dash (sh)
                    // as `$` and a plain quote: they disagree on where it
                    // ends, so no value in the command could be kept data.
                    '$' if next == Some('\'') && has_values => {
                        return Err(Refusal {
                            message: "`$'...'` is read differently by bash and by dash (sh): no value in this command can be kept data".to_owned(),
                            hint: "write the text with '...' or \"...\" (printf '\\t' for escapes)",
                            value: 0,
                        });
                    }
                    '$' if next == Some('\'') => {
                        lx.push(Frame::AnsiC);
                        n = 2;
                    }
                    '$' => {
                        dollar_opens(&mut lx, &mut n);
                    }
                    '(' if at_command && next == Some('(') => {
                        lx.push(Frame::Arith {
                            parens: 0,
                            end: ArithEnd::DoubleParen,
                        });
                        n = 2;
                    }
                    '(' => {
                        set_cmd(&mut lx, parens + 1, cases);
                        lx.word_start = true;
                    }
                    'l' if at_command && starts(i, "let") => {
                        lx.push(Frame::Arith {
                            parens: 0,
                            end: ArithEnd::Command,
                        });
                        n = 3;
                    }
                    '[' if at_command && next == Some('[') && numeric_test(&chars[i..]) => {
                        lx.push(Frame::Arith {
                            parens: 0,
                            end: ArithEnd::DoubleBracket,
                        });
                        n = 2;
                    }
                    ')' if parens > 0 => set_cmd(&mut lx, parens - 1, cases),
                    ')' if cases > 0 => {}
                    ')' if nested => {
                        // `$(...)` ends inside a word: a `#` right after it
                        // does not start a comment.
                        lx.pop();
                        lx.word_start = false;
                        lx.cmd_start = false;
                        lx.word.push('x');
                    }
                    'c' if at_command && starts(i, "case") => {
                        set_cmd(&mut lx, parens, cases + 1);
                        lx.word = "case".to_owned();
                        n = 4;
                    }
                    'e' if at_command && starts(i, "esac") => {
                        set_cmd(&mut lx, parens, cases.saturating_sub(1));
                        lx.word = "esac".to_owned();
                        n = 4;
                    }
                    '<' if next == Some('<') && at(i + 2) == Some('<') => n = 3,
                    '<' if next == Some('<') => {
                        take(&chars, i, 2, &mut out, &mut lx);
                        i += 2;
                        let (heredoc, used) = heredoc_word(&chars[i..])?;
                        take(&chars, i, used, &mut out, &mut lx);
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
            Frame::Arith { parens, end } => match c {
                '(' => {
                    lx.pop();
                    lx.push(Frame::Arith {
                        parens: parens + 1,
                        end,
                    });
                }
                ')' if parens > 0 => {
                    lx.pop();
                    lx.push(Frame::Arith {
                        parens: parens - 1,
                        end,
                    });
                }
                ')' if end == ArithEnd::DoubleParen => {
                    lx.pop();
                    if next == Some(')') {
                        n = 2;
                    }
                }
                ']' if end == ArithEnd::Bracket => lx.pop(),
                ']' if end == ArithEnd::DoubleBracket && next == Some(']') => {
                    lx.pop();
                    n = 2;
                }
                ';' | '&' | '|' | ')' if end == ArithEnd::Command => lx.pop(),
                '$' => {
                    dollar_opens(&mut lx, &mut n);
                }
                '`' => lx.push(Frame::Backtick),
                _ => {}
            },
            Frame::Param { braces, quoted } => match c {
                '\\' => n = 2,
                '{' => {
                    lx.pop();
                    lx.push(Frame::Param {
                        braces: braces + 1,
                        quoted,
                    });
                }
                '}' if braces > 0 => {
                    lx.pop();
                    lx.push(Frame::Param {
                        braces: braces - 1,
                        quoted,
                    });
                }
                '}' => lx.pop(),
                '\'' if !quoted => lx.push(Frame::Single),
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
        take(&chars, i, n, &mut out, &mut lx);
        i += n;
    }
    Ok(out)
}

/// Whether a value could run a command if bash evaluated it as arithmetic:
/// a name followed by `[` (an array subscript, which bash expands) and a `$`
/// or a backquote to expand. A command line (`[ -f "$x" ]`, `grep '^[0-9]$'`)
/// has no name right before its `[`.
fn holds_subscript(value: &str) -> bool {
    let named = value.char_indices().any(|(i, c)| {
        c == '['
            && value[..i]
                .chars()
                .next_back()
                .is_some_and(|p| p.is_ascii_alphanumeric() || p == '_')
    });
    named && value.contains(['$', '`'])
}

/// Whether a command's text (its values left out) evaluates arithmetic
/// anywhere, as far as its words show: `$((`, `((`, `$[`, `let`,
/// `declare`/`typeset` (`-i`), a numeric test. Read as plain text, without
/// the reader's contexts, so that a mistake of the reader cannot hide one.
fn uses_arithmetic(s: &str) -> bool {
    let text: String = {
        let mut out = String::with_capacity(s.len());
        let mut inside = false;
        for c in s.chars() {
            match c {
                OPEN => inside = true,
                CLOSE => inside = false,
                c if !inside => out.push(c),
                _ => {}
            }
        }
        out
    };
    text.contains("((")
        || text.contains("$[")
        || text
            .split(|c: char| c.is_whitespace() || ";&|()`\"'".contains(c))
            .any(|w| ["let", "-eq", "-ne", "-lt", "-le", "-gt", "-ge", "declare", "typeset"].contains(&w))
}

/// True if the `[[ ... ]]` test starting here compares numbers, which bash
/// does by evaluating both sides as arithmetic.
fn numeric_test(rest: &[char]) -> bool {
    let text: String = rest.iter().collect();
    let body = text.find("]]").map_or(text.as_str(), |e| &text[..e]);
    ["-eq", "-ne", "-lt", "-le", "-gt", "-ge"]
        .iter()
        .any(|op| body.split_whitespace().any(|w| w == *op))
}

/// Copies `n` characters from `start` as they are.
fn take(chars: &[char], start: usize, n: usize, out: &mut String, lx: &mut Lexer) {
    for &ch in chars.iter().skip(start).take(n) {
        out.push(ch);
        if ch == '\n' {
            lx.newline();
        } else {
            lx.line.push(ch);
        }
    }
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

/// A shell field rendered under the contract: the script, whose values are
/// references, and the variables that carry them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bound {
    /// The script as the shell will read it.
    pub script: String,
    /// Each variable the script references, with its value, in first-use order.
    pub vars: Vec<(String, String)>,
}

/// Replaces each marked value with a reference to a variable that carries it.
/// `names[i]` is the variable name wanted for the i-th value (from the
/// template's text, [`value_names`]); a value without one gets `RUNBOOK_V<n>`.
/// The same name with another value gets a suffix.
pub(crate) fn bind_marked(s: &str, names: &[Option<String>]) -> Result<Bound, Refusal> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let arithmetic = uses_arithmetic(s);
    let script = lex(s, |ctx, value, index| {
        // Independent of the reader: bash runs the commands of an array
        // subscript in a value it evaluates as arithmetic, so a command that
        // evaluates arithmetic anywhere takes no value that could hold one.
        if arithmetic && holds_subscript(value) {
            return Err(Refusal {
                message: "a value holding an array subscript with an expansion (`a[$(...)]`), in a command that evaluates arithmetic"
                    .to_owned(),
                hint: "bash runs the commands of an array subscript in arithmetic: compute with the value outside arithmetic, or check the input's type",
                value: index,
            });
        }
        let base = names
            .get(index)
            .cloned()
            .flatten()
            .unwrap_or_else(|| format!("{VAR_PREFIX}V{}", index + 1));
        let mut name = base.clone();
        let mut k = 1;
        loop {
            match vars.iter().find(|(n, _)| *n == name) {
                Some((_, v)) if v == value => break,
                Some(_) => {
                    k += 1;
                    name = format!("{base}_{k}");
                }
                None => {
                    vars.push((name.clone(), value.to_owned()));
                    break;
                }
            }
        }
        reference(ctx, &name, value, index)
    })?;
    Ok(Bound { script, vars })
}

/// The `{{...}}` value expressions of a template in text order (block helpers,
/// comments and raw `{{{...}}}` left out), and the template with each replaced
/// by a marked probe value.
fn value_expressions(template: &str) -> (String, Vec<&str>, bool) {
    let mut probe = String::with_capacity(template.len());
    let mut values: Vec<&str> = Vec::new();
    let mut blocks = false;
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
        blocks |= inner.starts_with(['#', '/', '^']) || inner.trim() == "else";
        if is_value {
            probe.push(OPEN);
            probe.push('0');
            probe.push(CLOSE);
            values.push(&after[..len + end + close.len()]);
        }
        rest = &after[len + end + close.len()..];
    }
    probe.push_str(rest);
    (probe, values, blocks)
}

/// The variable name for each value of a template, in the order its values
/// render: `{{inputs.release}}` is `RUNBOOK_INPUTS_RELEASE`, a helper call has
/// none. A template with blocks renders its values in another order (or
/// repeats them): none of its values is named.
pub(crate) fn value_names(template: &str) -> Vec<Option<String>> {
    let (_, values, blocks) = value_expressions(template);
    if blocks {
        return Vec::new();
    }
    values
        .iter()
        .map(|written| {
            let inner = written
                .trim_start_matches('{')
                .trim_end_matches('}')
                .trim_matches(['~', ' ']);
            let simple = !inner.is_empty()
                && inner
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-[]/@".contains(c))
                && inner
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '@');
            simple.then(|| {
                let mut name = VAR_PREFIX.to_owned();
                let mut gap = false;
                for c in inner.chars() {
                    if c.is_ascii_alphanumeric() {
                        if gap && !name.ends_with('_') {
                            name.push('_');
                        }
                        gap = false;
                        name.push(c.to_ascii_uppercase());
                    } else {
                        gap = true;
                    }
                }
                name
            })
        })
        .collect()
}

/// The places in a shell field's template where no value could be inserted
/// safely (for `validate`): each `{{...}}` is read as a value in the command
/// around it. Block helpers and raw insertions are left out. Each refusal comes
/// with the `{{...}}` it is about, as written.
pub fn refusals(template: &str) -> Vec<(Refusal, &str)> {
    let (probe, values, _) = value_expressions(template);
    let mut found = Vec::new();
    let result = lex(&probe, |ctx, v, i| match reference(ctx, "V", v, i) {
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

    fn bind(s: String) -> Result<String, String> {
        bind_marked(&s, &[]).map(|b| b.script).map_err(|r| r.to_string())
    }

    #[test]
    fn each_context_gets_a_reference_spelled_for_it() {
        let x = mark("a b");
        assert_eq!(bind(format!("echo {x}")), Ok("echo \"${RUNBOOK_V1}\"".into()));
        assert_eq!(bind(format!("echo 'a {x}'")), Ok("echo 'a '\"${RUNBOOK_V1}\"''".into()));
        assert_eq!(bind(format!("echo \"a {x}\"")), Ok("echo \"a ${RUNBOOK_V1}\"".into()));
        assert_eq!(
            bind(format!("echo \"$(echo {x})\"")),
            Ok("echo \"$(echo \"${RUNBOOK_V1}\")\"".into())
        );
        assert_eq!(
            bind(format!("cat <<EOF\n{x} $HOME\nEOF\necho {x}")),
            Ok("cat <<EOF\n${RUNBOOK_V1} $HOME\nEOF\necho \"${RUNBOOK_V2}\"".into())
        );
        assert!(bind(format!("cat <<'EOF'\n{x}\nEOF")).is_err_and(|e| e.contains("quoted here-document")));
        assert!(bind(format!("echo `echo {x}`")).is_err_and(|e| e.contains("backticks")));
        assert!(bind(format!("echo $(( {x} + 1 ))")).is_err_and(|e| e.contains("integer")));
        assert!(bind(format!("echo $[ {x} + 1 ]")).is_err_and(|e| e.contains("integer")));
        assert!(bind(format!("(( {x} > 1 ))")).is_err_and(|e| e.contains("integer")));
        assert!(bind(format!("let n={x}+1")).is_err_and(|e| e.contains("integer")));
        assert!(bind(format!("[[ {x} -eq 1 ]]")).is_err_and(|e| e.contains("integer")));
        assert_eq!(
            bind(format!("[[ {x} == a* ]]")),
            Ok("[[ \"${RUNBOOK_V1}\" == a* ]]".into())
        );
        assert_eq!(
            bind(format!("echo $(( {} + 1 ))", mark("41"))),
            Ok("echo $(( ${RUNBOOK_V1} + 1 ))".into())
        );
        assert!(bind(format!("echo $(( {} ))", mark("99999999999999999999"))).is_err());
        // Found by a hostile review: inside double quotes, `'` in `${x-'}` is
        // a character, so the quote after it opens nothing.
        assert_eq!(
            bind(format!("printf '%s' \"${{x-'}}\" '}}' \"{x}\"")),
            Ok("printf '%s' \"${x-'}\" '}' \"${RUNBOOK_V1}\"".into())
        );
        assert!(bind(format!("echo ${{X:-{x}}}")).is_err());
        // Found by a hostile review: dash has no `$'...'`, so bash's reading
        // and sh's disagree; with a value in the command it is refused.
        assert!(bind(format!("echo $'\\' \" '\"; {x}; echo \" \"")).is_err_and(|e| e.contains("read differently")));
        assert_eq!(
            bind(format!("grep -E '^'{x}'-[0-9]$' f")),
            Ok("grep -E '^'\"${RUNBOOK_V1}\"'-[0-9]$' f".into()),
            "a `$` before a closing quote is no `$'`"
        );
        // Whatever the reader makes of the rest, a command that evaluates
        // arithmetic anywhere takes no value that could run a subscript.
        let sub = mark("a[$(touch p)]");
        assert!(bind(format!("echo {sub}; echo $((1))")).is_err_and(|e| e.contains("array subscript")));
        // A command given as an input is not a subscript.
        let cmd = mark("for f in *; do [ -f \"$f\" ] && grep -E '^[0-9]+$' \"$f\"; done");
        assert!(bind(format!("sh -c {cmd}; echo $(( 1 + 1 ))")).is_ok());
        assert!(bind(format!("x=$(( 1 )); [[ {x} -eq 1 ]]")).is_err());
        assert_eq!(bind(format!("echo {sub}")), Ok("echo \"${RUNBOOK_V1}\"".into()));
        // Found by the fuzzer: a line after a comment starts a command.
        assert!(bind(format!("echo a # note\nlet n={x}")).is_err_and(|e| e.contains("integer")));
        // `\` at a line's end in a here-document joins the delimiter's line.
        assert_eq!(
            bind(format!("cat <<EOF\na \\\nEOF\n{x}\nEOF")),
            Ok("cat <<EOF\na \\\nEOF\n${RUNBOOK_V1}\nEOF".into())
        );
    }

    #[test]
    fn names_come_from_the_template_and_never_clash() {
        let names = value_names("deploy {{inputs.release}} {{steps.wait-drained.outputs.n}} {{join inputs.l}}");
        assert_eq!(
            names,
            vec![
                Some("RUNBOOK_INPUTS_RELEASE".to_owned()),
                Some("RUNBOOK_STEPS_WAIT_DRAINED_OUTPUTS_N".to_owned()),
                None
            ]
        );
        assert!(value_names("{{#each x}}{{this}}{{/each}}").is_empty());
        let same = Some("RUNBOOK_X".to_owned());
        let b = bind_marked(
            &format!("{} {} {}", mark("1"), mark("1"), mark("2")),
            &[same.clone(), same.clone(), same],
        )
        .expect("binds");
        assert_eq!(b.script, "\"${RUNBOOK_X}\" \"${RUNBOOK_X}\" \"${RUNBOOK_X_2}\"");
        assert_eq!(
            b.vars,
            vec![
                ("RUNBOOK_X".to_owned(), "1".to_owned()),
                ("RUNBOOK_X_2".to_owned(), "2".to_owned())
            ]
        );
    }

    #[test]
    fn refusals_point_at_the_value() {
        let r = refusals("echo ok {{inputs.a}} `echo {{inputs.b}}`");
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].0.value, r[0].1), (1, "{{inputs.b}}"));
        assert!(refusals("echo \"$(echo {{inputs.x}})\" {{#if a}}`date`{{/if}}").is_empty());
        assert_eq!(refusals("echo ${X:-{{inputs.x}}}").len(), 1);
        assert_eq!(refusals("cat <<'EOF'\n{{inputs.x}}\nEOF").len(), 1);
    }
}
