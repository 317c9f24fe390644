//! The masking contract end to end, as a property: random secrets (ASCII and
//! not, with the characters URL and JSON encoders treat specially) are given
//! to a run whose steps print them in every form the book says is masked
//! (base64 at any alignment behind a prefix, URL encodings of the common
//! tools, JSON escapes, hex), each text split across two writes, on both
//! streams; an input holds the secret, a step registers a value of its own
//! with `::add-mask::` and uses it on the other stream at once, an output is
//! cut through the secret; the runner is killed and the run resumed. Then
//! no form of any of them may be found in the terminal's JSON events, `logs`,
//! `status`, every report format, the journal itself (the SQLite files, or a
//! dump of the PostgreSQL state) or the API's answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::io::{Read, Write};
use std::time::Duration;
use support::{Killed, Lab, Run, free_port, until};

/// Prints every form of the secret in `$T` (each split across two writes, on
/// a stream drawn at random) and appends the texts that must never be seen
/// to `forms.txt`, one JSON string a line.
const ENCODE: &str = r#"
import base64, json, os, random, re, sys, urllib.parse
s = os.environ["T"]; b = s.encode()
rnd = random.Random(int(sys.argv[1]))
forms = [s]
for t in (b, b + b"\n"):
    for f in (base64.b64encode, base64.urlsafe_b64encode):
        e = f(t).decode(); forms += [e, e.rstrip("=")]
q = urllib.parse.quote
forms += [q(s), urllib.parse.quote_plus(s), q(s, safe=""), q(s, safe="-._~"), q(s, safe="-_.!~*'()"),
          re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), q(s, safe="")),
          json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1],
          json.dumps(s)[1:-1].replace("/", "\\/"), b.hex(), b.hex().upper()]
shown, searched = list(forms), list(forms)
for k in range(1, 6):
    p = "".join(rnd.choice("ab:") for _ in range(k)).encode()
    e = base64.b64encode(p + b).decode()
    shown.append(e)
    mid = e[-(-8 * len(p) // 6):(8 * (len(p) + len(b))) // 6]
    if len(mid) >= 6:
        searched.append(mid)
with open("forms.txt", "a") as f:
    for x in searched:
        f.write(json.dumps(x) + "\n")
for x in shown:
    out = rnd.choice([sys.stdout, sys.stderr])
    text = "pre " + x + " post"
    cut = rnd.randrange(len(text) + 1)
    out.write(text[:cut]); out.flush(); out.write(text[cut:] + "\n"); out.flush()
"#;

const PLAYBOOK: &str = r#"apiVersion: runbook/v1
name: m
version: 1
secrets: [TOKEN]
inputs:
  url: { type: string }
steps:
  - { id: enc, uses: shell, with: { run: "python3 enc.py 1", env: { T: "{{secrets.TOKEN}}" } } }
  - id: reg
    uses: shell
    with: { run: "v=reg-$$-$(date +%N); echo ::add-mask::$v; echo using $v >&2; printf '%s' $v > reg.txt" }
  - { id: cut, uses: shell, with: { run: "printf 'AAAAAAAAAA%s\\n' {{secrets.TOKEN}}", max_output: 13B } }
  - { id: url, uses: shell, with: { run: "echo got {{inputs.url}} {{steps.cut.outputs.stdout}}" } }
  - id: each
    for_each: ["{{inputs.url}}", plain]
    steps:
      - { id: e, uses: shell, with: { run: "echo item {{item}}" } }
  - { id: hold, uses: shell, idempotent: true, with: { run: "test -f gate || { touch marker; sleep 30; }" } }
  - { id: again, uses: shell, with: { run: "python3 enc.py 2; echo $(cat reg.txt); echo {{inputs.url}} >&2", env: { T: "{{secrets.TOKEN}}" } } }
"#;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

/// A secret: four ASCII letters first (the cut falls among them), then
/// characters encoders treat specially, some not ASCII.
fn secret(rng: &mut Rng) -> String {
    const FIRST: &[char] = &['k', 'Q', 'z', 'M', 'r', 'T'];
    const REST: &[char] = &[
        'a',
        'B',
        '7',
        '/',
        '-',
        '.',
        '_',
        '~',
        '+',
        '=',
        '&',
        '%',
        ' ',
        '\u{e9}',
        '\u{1F600}',
        '\u{4e2d}',
        'x',
        'Y',
    ];
    let mut s: String = (0..4).map(|_| FIRST[rng.below(FIRST.len())]).collect();
    for _ in 0..(6 + rng.below(12)) {
        s.push(REST[rng.below(REST.len())]);
    }
    s
}

/// One GET on loopback; the whole answer, or `None` while nothing listens.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    Some(text)
}

/// Runs the scenario once; every place a person or a program could read, by
/// name, and the texts none of them may hold.
fn scenario(run: &Run, secret: &str) -> (Vec<(String, String)>, Vec<String>) {
    let url = format!("postgres://app:{secret}@db1/app");
    let set = format!("url={url}");
    let first = support::kill_when(
        run,
        &["run", "m", "--set", &set, "--output", "json"],
        &run.path().join("marker"),
    );
    let id = first
        .lines()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["run"].as_str().map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no run id in\n{first}"));
    std::fs::write(run.path().join("gate"), "").unwrap();
    let resumed = run.exec(["resume", &id, "--output", "json"]).exit(0);
    let mut places = vec![
        ("run events".to_owned(), first),
        ("resume events".to_owned(), resumed.stdout + &resumed.stderr),
        ("logs".to_owned(), run.exec(["logs", &id]).exit(0).stdout),
        (
            "status".to_owned(),
            run.exec(["status", &id, "--output", "json"]).exit(0).stdout,
        ),
        (
            "plan".to_owned(),
            run.exec(["plan", "m", "--set", &set, "--output", "json"])
                .exit(0)
                .stdout,
        ),
    ];
    for format in ["json", "markdown", "html", "junit"] {
        let out = run.exec(["report", &id, "--format", format]).exit(0).stdout;
        places.push((format!("{format} report"), out));
    }
    // The items finished before the kill are not run again: their paths
    // (masked where an item holds the secret) are the same on resume.
    let both = format!("{}{}", places[0].1, places[1].1);
    assert_eq!(
        both.matches(r#""line":"item postgres://app:***@db1/app""#).count(),
        1,
        "{both}"
    );
    assert_eq!(both.matches(r#""line":"item plain""#).count(), 1, "{both}");
    assert!(
        places[0].1.contains("AAAAAAAAAA***"),
        "the cut output ends masked:\n{}",
        places[0].1
    );
    let mut never: Vec<String> = std::fs::read_to_string(run.path().join("forms.txt"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<String>(l).unwrap())
        .collect();
    never.push(std::fs::read_to_string(run.path().join("reg.txt")).unwrap());
    // The cut kept the secret's first three characters: they never show.
    never.push(format!("AAAAAAAAAA{}", &secret[..3]));
    never.sort();
    never.dedup();
    (places, never)
}

fn assert_nowhere(places: &[(String, String)], never: &[String], secret: &str) {
    for (place, text) in places {
        for form in never {
            assert!(
                !text.contains(form.as_str()),
                "{place} holds {form:?} (a form of the secret {secret:?} or a registered value):\n{text}"
            );
        }
    }
}

fn with_files(run: Run) -> Run {
    run.playbook("m", PLAYBOOK).file("enc.py", ENCODE)
}

#[test]
fn no_form_of_a_secret_is_found_anywhere_a_run_leaves_text_with_sqlite_and_the_api() {
    let mut rng = Rng(0x6d61_736b);
    for case in 0..6 {
        let secret = secret(&mut rng);
        let run = with_files(Run::new()).env("TOKEN", &secret);
        let (mut places, never) = scenario(&run, &secret);
        for file in ["state.db", "state.db-wal"] {
            let bytes = std::fs::read(run.path().join(file)).unwrap_or_default();
            places.push((
                format!("journal ({file})"),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
        // The API serves the same runs to whoever may read them.
        if case == 0 {
            let port = free_port();
            let log = run.path().join("serve.log");
            let _server = Killed(run.spawn_logged(["serve", "--listen", &format!("127.0.0.1:{port}")], &log));
            until("the API answers", Duration::from_secs(30), || {
                get(port, "/api/v1/health").is_some()
            });
            let runs = get(port, "/api/v1/runs").unwrap();
            let id = runs
                .split("\"id\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap()
                .to_owned();
            for path in [
                "runs",
                &format!("runs/{id}"),
                &format!("runs/{id}/logs"),
                &format!("runs/{id}/report"),
            ] {
                places.push((
                    format!("GET /api/v1/{path}"),
                    get(port, &format!("/api/v1/{path}")).unwrap(),
                ));
            }
            places.push((
                "GET events".to_owned(),
                get(port, &format!("/api/v1/runs/{id}/events")).unwrap(),
            ));
            assert!(
                places.iter().any(|(p, t)| p.ends_with("/logs") && t.contains("***")),
                "the API served the logs"
            );
        }
        assert_nowhere(&places, &never, &secret);
    }
}

#[test]
fn no_form_of_a_secret_is_found_in_a_postgresql_journal() {
    let lab = Lab::postgres();
    let mut rng = Rng(0x7067_6d61);
    for case in 0..2 {
        let url = lab.state_db(&format!("masking_{case}"));
        let secret = secret(&mut rng);
        let run = with_files(Run::new()).env("TOKEN", &secret).env("RUNBOOK_STATE", &url);
        run.exec(["state", "migrate"]).exit(0);
        let (mut places, never) = scenario(&run, &secret);
        let dump = std::process::Command::new("pg_dump")
            .args(["--data-only", &url])
            .output()
            .expect("pg_dump runs (apt-get install postgresql-client)");
        assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
        let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
        assert!(dump.contains("step_succeeded"), "the dump holds the journal");
        places.push(("journal (PostgreSQL dump)".to_owned(), dump));
        assert_nowhere(&places, &never, &secret);
    }
}
