//! A differential fuzzer of the shell contract: random POSIX sh programs with
//! template placeholders in every position, random hostile values, each
//! program run by real `dash` and `bash`, each called `sh` as the shell and
//! ssh kinds call it (bash so called reads in POSIX mode).
//!
//! For every program, either the renderer refuses it (the place cannot keep a
//! value data), or:
//! - **nothing else executes**: every hostile value tries to create a
//!   sentinel file (`$(touch S)`, backticks, quotes closed early, line breaks,
//!   here-document delimiters, arithmetic subscripts...), and the file never
//!   appears;
//! - **the value arrives byte for byte**: the program run with the hostile
//!   value prints exactly what it prints with a plain token, the token
//!   replaced by the value (a differential oracle: no model of the shell).
//!
//! Bounded and seeded here (`RUNBOOK_FUZZ_CASES`, default 1500, and
//! `RUNBOOK_FUZZ_SEED`); `bench/shell-fuzz.sh` runs it longer. A failure prints
//! the seed, the program and the value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use runbook_core::template::{Data, Renderer};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// A small deterministic generator (xorshift64*): the same seed gives the
/// same programs on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

/// The placeholder: every program reads one input, `inputs.v`.
const PH: &str = "{{inputs.v}}";

/// Builds a program and counts where it put placeholders.
struct Gen<'r> {
    rng: &'r mut Rng,
    used: BTreeMap<&'static str, usize>,
    heredocs: usize,
}

impl Gen<'_> {
    fn ph(&mut self, context: &'static str) -> String {
        *self.used.entry(context).or_default() += 1;
        PH.to_owned()
    }

    /// Literal text safe in an unquoted word (no glob, no operator).
    fn lit(&mut self) -> String {
        self.rng
            .pick(&[
                "a", "x1", "-", "build-", "case", "esac", "in", "=", ":", ",", "%", "+", "@", "#", "v.2",
            ])
            .to_owned()
    }

    /// Literal text for inside single quotes (anything but `'`).
    fn sq_lit(&mut self) -> String {
        self.rng
            .pick(&[
                "a b", "$(x)", "`x`", "\"", "#", "${x}", "\\", ")", "case", "<<EOF", "$((1))", ";",
            ])
            .to_owned()
    }

    /// Literal text for inside double quotes (no expansion).
    fn dq_lit(&mut self) -> String {
        self.rng
            .pick(&[
                "a b",
                "'",
                // A quote inside a quoted `${...}` is a character.
                "${UNSET_X-'}",
                "#",
                ")",
                "case x in",
                "\\\"",
                "\\$",
                "\\`",
                "esac",
                "(",
                "{",
                "}",
                "<<EOF",
                ";",
            ])
            .to_owned()
    }

    /// One word: parts glued together.
    fn word(&mut self, depth: usize) -> String {
        let parts = 1 + self.rng.below(3);
        let word: String = (0..parts).map(|_| self.part(depth)).collect();
        // A word that starts with `#` is a comment: only `stmt` writes those.
        if word.starts_with('#') {
            format!("a{word}")
        } else {
            word
        }
    }

    fn part(&mut self, depth: usize) -> String {
        let deep = depth < 3;
        match self.rng.below(if deep { 14 } else { 5 }) {
            0 | 1 => self.lit(),
            2 => self.ph("word"),
            3 => {
                let n = 1 + self.rng.below(3);
                let body: String = (0..n)
                    .map(|_| {
                        if self.rng.chance(40) {
                            self.ph("single quotes")
                        } else {
                            self.sq_lit()
                        }
                    })
                    .collect();
                format!("'{body}'")
            }
            4 => format!("\"{}\"", self.dq(depth)),
            // An unquoted `$(...)` splits what it prints: its program runs
            // (and is checked for the sentinel) but prints a constant.
            5 => format!("$({{ {}; }} >/dev/null; printf ok)", self.prog(depth + 1, 2)),
            6 => format!("\"$({})\"", self.prog(depth + 1, 2)),
            7 => format!(
                "\"x$({})#{}\"",
                self.prog(depth + 1, 1),
                self.ph("after $(...)# in quotes")
            ),
            8 => format!(
                "$({{ {}; }} >/dev/null; printf ok)#{}",
                self.prog(depth + 1, 1),
                self.ph("after $(...)#")
            ),
            9 => format!("`printf %s {}`", self.rng.pick(&["a", "'b c'", PH])),
            10 => format!("${{UNSET_X:-{}}}", self.rng.pick(&["d", "'e f'", PH, "\"g\""])),
            11 => format!(
                "\"${{UNSET_X:-{}}}\"",
                self.rng.pick(&["d", "'e f'", PH, "'{{inputs.v}}'"])
            ),
            12 => format!("$(( {} + 1 ))", self.rng.pick(&["1", PH, "(2)"])),
            13 if self.rng.chance(20) => {
                // bash's `$'...'`, which dash reads otherwise.
                format!("$'\\' \" '{}", self.rng.pick(&["", "\"", "'"]))
            }
            _ => format!("\\{}", self.rng.pick(&["#", "'", "\"", "$", "(", "`"])),
        }
    }

    /// The inside of double quotes.
    fn dq(&mut self, depth: usize) -> String {
        let n = 1 + self.rng.below(3);
        (0..n)
            .map(|_| match self.rng.below(if depth < 3 { 6 } else { 3 }) {
                0 => self.dq_lit(),
                1 => self.ph("double quotes"),
                2 => "$HOME_UNSET".to_owned(),
                3 => format!("$({})", self.prog(depth + 1, 2)),
                4 => format!("$(printf %s {} case)", self.ph("$(...) in quotes")),
                _ => format!("${{UNSET_X:-'{}'}}", self.ph("${...} in quotes")),
            })
            .collect()
    }

    /// A simple command that prints, followed by nothing or a comment.
    fn stmt(&mut self, depth: usize) -> String {
        let deep = depth < 3;
        match self.rng.below(if deep { 9 } else { 4 }) {
            0 | 1 => {
                let n = 1 + self.rng.below(3);
                let args: Vec<String> = (0..n).map(|_| self.word(depth)).collect();
                format!("printf '[%s]' {}", args.join(" "))
            }
            2 if self.rng.chance(30) => {
                // A value in the command's name: one word, whatever it holds
                // (no such command; its message is not compared).
                let name = if self.rng.chance(50) {
                    format!("\"{}\"", self.dq(depth))
                } else {
                    self.word(depth)
                };
                format!("{name} 2>/dev/null; printf '|'")
            }
            2 => format!("x={}; printf '<%s>' \"$x\"", self.word(depth)),
            // A match that does not depend on what the value holds: the
            // value against itself, or a word that ends with `z`.
            3 if self.rng.chance(50) => {
                let (w, p) = (self.ph("case word"), self.ph("case pattern"));
                format!("case {w} in {p}) printf 'm';; *) printf 'n';; esac")
            }
            3 => format!("case {}z in *z) printf 'm';; *) printf 'n';; esac", self.word(depth)),
            4 => self.heredoc(depth),
            5 => format!("{{ {}; }}", self.stmt(depth + 1)),
            6 => format!("if true; then {}; fi", self.stmt(depth + 1)),
            7 => format!("f() {{ {}; }}; f", self.stmt(depth + 1)),
            _ => format!("{} && {}", self.stmt(depth + 1), self.stmt(depth + 1)),
        }
    }

    /// A statement, maybe with a comment after it (only a program adds one,
    /// and a line break follows it: what a comment swallows would make
    /// another program than the one generated).
    fn commented(&mut self, depth: usize) -> String {
        let s = self.stmt(depth);
        if self.rng.chance(15) {
            let c = if self.rng.chance(50) {
                self.ph("comment")
            } else {
                "it's (a) $(note)".to_owned()
            };
            format!("{s} # {c}")
        } else {
            s
        }
    }

    fn heredoc(&mut self, depth: usize) -> String {
        self.heredocs += 1;
        let delim = format!("EOF{}", self.heredocs);
        let (open, quoted) = match self.rng.below(4) {
            0 => (format!("<<'{delim}'"), true),
            1 => (format!("<<\"{delim}\""), true),
            2 => (format!("<<-{delim}"), false),
            _ => (format!("<<{delim}"), false),
        };
        let lines = 1 + self.rng.below(3);
        let mut body = String::new();
        for _ in 0..lines {
            match self.rng.below(if depth < 3 { 6 } else { 4 }) {
                0 => body.push_str("plain 'text' \"here\" #"),
                1 => body.push_str(&self.ph(if quoted {
                    "quoted here-document"
                } else {
                    "here-document"
                })),
                2 => body.push_str(&format!("a {} \\", self.ph("here-document before \\"))),
                3 => body.push_str("$HOME_UNSET `x` case"),
                _ => body.push_str(&format!("$(printf %s {})", self.ph("$(...) in a here-document"))),
            }
            body.push('\n');
        }
        format!("cat {open}\n{body}{delim}\nprintf ';'")
    }

    fn prog(&mut self, depth: usize, most: usize) -> String {
        let n = 1 + self.rng.below(most);
        let seps = ["; ", "\n", " && "];
        let mut out = String::new();
        for i in 0..n {
            if i > 0 {
                // Only a line break ends a comment: what follows one on its
                // line would be part of it (a `)` of `$(...)` included), and
                // the program would not be the one generated.
                let sep = if out.rsplit('\n').next().is_some_and(has_comment) {
                    "\n"
                } else {
                    self.rng.pick(&seps)
                };
                out.push_str(sep);
            }
            out.push_str(&self.commented(depth));
        }
        if out.rsplit('\n').next().is_some_and(has_comment) {
            out.push('\n');
        }
        out
    }
}

/// Whether a generated line holds a comment (`stmt` writes them as ` # `).
fn has_comment(line: &str) -> bool {
    line.contains(" # ")
}

/// A hostile value: each shape tries to run `touch SENTINEL`.
fn hostile(rng: &mut Rng, sentinel: &str) -> String {
    let t = format!("touch {sentinel}");
    let shapes = [
        format!("$({t})"),
        format!("`{t}`"),
        format!("';{t};'"),
        format!("\";{t};\""),
        format!("x\n{t}\ny"),
        format!("EOF1\n{t}\nEOF2\n{t}"),
        format!("a[$({t})]"),
        format!(")\n{t}\n("),
        format!("}};{t};{{"),
        format!("*) {t};; x"),
        format!("\\'$({t})\\'"),
        format!("${{x:-$({t})}}"),
        format!("$(({t}))"),
        format!("# '\n{t} #"),
        format!("\u{e9}t\u{e9} \u{1F600} $({t})\t"),
        // Bare words: they run only at a command's start, unquoted.
        t.clone(),
        "42".to_owned(),
        "-7".to_owned(),
        String::new(),
        " spaces  and *.globs? [x] ".to_owned(),
    ];
    let mut v = shapes[rng.below(shapes.len())].clone();
    if rng.chance(30) {
        v = format!("{}{}", shapes[rng.below(shapes.len())], v);
    }
    // A value never ends with a line break here: `$(...)` strips trailing
    // ones, which would make the oracle's replacement differ.
    while v.ends_with('\n') {
        v.pop();
    }
    v
}

/// Runs a rendered script with its variables, the shell called `sh` as the
/// kinds call it (bash so called reads in POSIX mode, as it does where it is
/// /bin/sh); stdout and the exit status.
fn run(shell: &str, script: &str, vars: &[(String, String)], dir: &Path) -> (Vec<u8>, Option<i32>) {
    use std::os::unix::process::CommandExt as _;
    let out = Command::new(shell)
        .arg0("sh")
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .output()
        .expect("the shell runs");
    (out.stdout, out.status.code())
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn random_programs_never_run_a_value_and_receive_it_byte_for_byte() {
    for shell in ["/usr/bin/dash", "/bin/bash"] {
        assert!(
            Path::new(shell).exists(),
            "{shell} is missing: install it (apt-get install dash bash); the fuzzer runs both"
        );
    }
    let cases: usize = std::env::var("RUNBOOK_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let seed: u64 = std::env::var("RUNBOOK_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_2026);
    let dir = std::env::temp_dir().join(format!("runbook-shell-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sentinel = dir.join("pwned");
    let sentinel_text = sentinel.to_string_lossy().into_owned();
    let renderer = Renderer::new();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut used: BTreeMap<&'static str, usize> = BTreeMap::new();
    let (mut ran, mut refused) = (0usize, 0usize);
    const TOKEN: &str = "QzTOKENq7";
    for case in 0..cases {
        let mut g = Gen {
            rng: &mut rng,
            used: BTreeMap::new(),
            heredocs: 0,
        };
        // A `{` or `}` glued to a placeholder would make Handlebars read a
        // raw `{{{...}}}`: code by the playbook's choice, not this contract.
        let program = (g.prog(0, 3) + "\n").replace("{{{", "{ {{").replace("}}}", "}} }");
        let counted = std::mem::take(&mut g.used);
        let value = hostile(&mut rng, &sentinel_text);
        let render = |v: &str| renderer.render_shell(&program, &Data::new(json!({ "inputs": { "v": v } })));
        let (bad, good) = match (render(&value), render(TOKEN)) {
            (Ok(b), Ok(g)) => (b, g),
            // Refused for this value (arithmetic takes integers) or for any.
            _ => {
                refused += 1;
                continue;
            }
        };
        ran += 1;
        for (k, n) in counted {
            *used.entry(k).or_default() += n;
        }
        for shell in ["/usr/bin/dash", "/bin/bash"] {
            let (out_bad, code_bad) = run(shell, &bad.script, &bad.vars, &dir);
            assert!(
                !sentinel.exists(),
                "case {case} (seed {seed}): {shell} ran code from the value\nprogram:\n{program}\nrendered:\n{}\nvalue: {value:?}",
                bad.script
            );
            let (out_good, code_good) = run(shell, &good.script, &good.vars, &dir);
            let expected = replace_bytes(&out_good, TOKEN.as_bytes(), value.as_bytes());
            assert!(
                out_bad == expected && code_bad == code_good,
                "case {case} (seed {seed}): {shell} did not receive the value as it is\nprogram:\n{program}\nrendered:\n{}\nvalue: {value:?}\nwith a token: {:?} (exit {code_good:?})\nwith the value: {:?} (exit {code_bad:?})",
                bad.script,
                String::from_utf8_lossy(&expected),
                String::from_utf8_lossy(&out_bad),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "shell contract: {cases} programs (seed {seed}), {ran} run by dash and bash, {refused} refused; placeholders run per context:"
    );
    for (k, n) in &used {
        eprintln!("  {n:>6}  {k}");
    }
    assert!(
        ran * 3 > cases,
        "at least a third of the programs must run, not be refused ({ran} of {cases})"
    );
    for context in [
        "word",
        "single quotes",
        "double quotes",
        "here-document",
        "case pattern",
        "after $(...)#",
    ] {
        assert!(used.contains_key(context), "no program placed a value in {context}");
    }
}
