//! A run acts once: nothing a step started outlives its runner, a resumed
//! run stops what an earlier runner left before it runs a step again, and a
//! runner killed at random points, resumed as an operator would, leaves
//! every effect done exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};
use support::Run;

const HEAD: &str = "apiVersion: runbook/v1\nname: t\nversion: 1\n";

/// True while `pid` is a live process (a zombie is dead).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

fn pid_in(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a pid")
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True once `pred` holds, or false after `within`.
fn until(within: Duration, pred: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pred()
}

fn sigkill(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
}

/// The runner's keeper: its child `sh` whose arguments name `runbook-keeper`.
fn keeper_of(runner: i32) -> i32 {
    let tasks = std::fs::read_dir(format!("/proc/{runner}/task")).expect("the runner's threads");
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("runbook-keeper"))
        })
        .expect("the runner has a keeper (cgroup v2 is writable here)")
}

/// A step that starts a child in the background, a child in a session of
/// its own, and a late write, then waits.
fn lingering(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"{HEAD}steps:
  - id: work
    uses: shell
    idempotent: true
    with:
      run: |
        if [ -f {d}/gate ]; then
          for p in $(cat {d}/pids); do
            s=$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null)
            if [ -n "$s" ] && [ "$s" != Z ]; then echo "$p alive" >> {d}/violations; fi
          done
          exit 0
        fi
        sleep 60 & echo $! >> {d}/pids
        setsid sleep 60 < /dev/null > /dev/null 2>&1 & echo $! >> {d}/pids
        ( sleep 2; echo late >> {d}/effects ) & echo $! >> {d}/pids
        echo $$ >> {d}/pids
        touch {d}/marker
        wait
"#
    )
}

fn pids(dir: &Path) -> Vec<i32> {
    support::lines(&dir.join("pids"))
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// runs.md (Stopping): "SIGKILL of runbook itself: ... every process of
/// the step that was running is killed by the kernel".
#[test]
fn a_runner_killed_mid_step_leaves_none_of_the_step_s_processes_running() {
    let run = Run::new();
    let dir = run.path().to_owned();
    let run = run.playbook("t", &lingering(&dir));
    support::kill_when(&run, &["run", "t"], &dir.join("marker"));
    let pids = pids(&dir);
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert!(
        until(Duration::from_secs(5), || pids.iter().all(|p| !alive(*p))),
        "still running after the runner's death: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !dir.join("effects").exists(),
        "the killed attempt's late write landed after its runner died"
    );
}

/// runs.md (Resume): "resume stops what an earlier runner of the run left
/// running before it decides anything" (here the keeper was killed too, so
/// only the journal knows where the processes are).
#[test]
fn resume_stops_what_an_earlier_runner_left_before_the_step_runs_again() {
    let run = Run::new();
    let dir = run.path().to_owned();
    let run = run.playbook("t", &lingering(&dir));
    let mut child = run.spawn(["run", "t"]);
    wait_for(&dir.join("marker"));
    let runner = i32::try_from(child.id()).unwrap();
    sigkill(keeper_of(runner));
    sigkill(runner);
    let _ = child.wait();
    let left = pids(&dir);
    // The shell itself died with its runner (the parent-death signal); what
    // it started in the background is still there, with no keeper.
    assert!(
        until(Duration::from_secs(3), || !alive(left[3])),
        "the step's shell outlived its runner"
    );
    assert!(
        alive(left[0]) && alive(left[1]),
        "the background children should still run before the resume: {left:?}"
    );
    std::fs::write(dir.join("gate"), "").unwrap();
    let listed = run.exec(["status", "--output", "json"]).exit(0);
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let out = run.exec(["resume", &id]).exit(0);
    assert!(
        out.stdout
            .contains("stopped the processes an earlier runner of this run left running"),
        "{}",
        out.stdout
    );
    assert!(
        !dir.join("violations").exists(),
        "processes of the earlier attempt were alive when the step ran again: {:?}",
        support::lines(&dir.join("violations"))
    );
    assert!(left.iter().all(|p| !alive(*p)), "{left:?}");
    std::thread::sleep(Duration::from_millis(2000));
    assert!(!dir.join("effects").exists(), "the earlier attempt's late write landed");
}

/// runs.md (Stopping): "without a cgroup, the step's command still dies
/// with its runner".
#[test]
fn without_a_cgroup_a_step_s_command_still_dies_with_its_runner() {
    let run = Run::new();
    let d = run.path().to_owned();
    let yaml = format!(
        "{HEAD}steps:\n  - id: work\n    uses: shell\n    with:\n      run: |\n        echo $$ > {d}/shell\n        \
         touch {d}/marker\n        sleep 2\n        echo end >> {d}/effects\n",
        d = d.display()
    );
    let run = run.playbook("t", &yaml).env("RUNBOOK_CONTAIN", "session");
    support::kill_when(&run, &["run", "t"], &d.join("marker"));
    let shell = pid_in(&d.join("shell"));
    assert!(
        until(Duration::from_secs(3), || !alive(shell)),
        "the shell outlived its runner"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!d.join("effects").exists(), "the killed attempt went on");
}

/// A tiny random source (xorshift), seeded from `RUNBOOK_CHAOS_SEED` or the clock.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("RUNBOOK_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("chaos seed {seed} (RUNBOOK_CHAOS_SEED repeats it)");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

const STEPS: usize = 4;

/// Four steps in a chain, each appending its line once and sleeping, with a
/// child in the background; each first checks that no process of any
/// earlier attempt is alive.
fn chain(dir: &Path) -> String {
    let d = dir.display();
    let mut yaml = format!("{HEAD}steps:\n");
    for i in 1..=STEPS {
        yaml.push_str(&format!(
            r#"  - id: s{i}
    uses: shell
    with:
      run: |
        for p in $(cat {d}/pids 2>/dev/null); do
          s=$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null)
          if [ -n "$s" ] && [ "$s" != Z ]; then echo "s{i}: $p alive" >> {d}/violations; fi
        done
        sleep 30 & echo $! >> {d}/pids
        echo $$ >> {d}/pids
        echo s{i} >> {d}/effects
        sleep 0.3
        kill $! 2>/dev/null
"#
        ));
    }
    yaml
}

/// One round: run, SIGKILL at a random moment, then carry the run to its
/// end as an operator would (an uncertain step is decided from the file).
fn round(rng: &mut Rng, k: usize) {
    let run = Run::new();
    let dir = run.path().to_owned();
    let run = run.playbook("t", &chain(&dir));
    let mut child = run.spawn(["run", "t"]);
    std::thread::sleep(Duration::from_millis(rng.below(1600)));
    sigkill(i32::try_from(child.id()).unwrap());
    let _ = child.wait();
    let effects = |dir: &Path| support::lines(&dir.join("effects"));
    for _ in 0..10 {
        let listed = run.exec(["status", "--output", "json"]).exit(0);
        let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
        let Some(id) = listed[0]["id"].as_str().map(str::to_owned) else {
            // Killed before the run was recorded: nothing may have run.
            assert!(effects(&dir).is_empty(), "round {k}: effects without a run");
            run.exec(["run", "t"]).exit(0);
            continue;
        };
        let v = support::status_json(&run, &id);
        match v["run"]["status"].as_str() {
            Some("succeeded") => break,
            Some("uncertain") => {
                let error = v["error"].as_str().unwrap_or_default();
                let path = error.split('`').nth(1).expect("uncertain names the step").to_owned();
                // The earlier attempt is over (resume stopped it), so the
                // file is the whole evidence.
                let happened = effects(&dir).contains(&path);
                let decision = if happened { "--mark-done" } else { "--rerun" };
                let out = run.exec(["resume", &id, decision, &path]);
                assert!(matches!(out.code, 0 | 3 | 5), "round {k}: {} {}", out.code, out.stderr);
            }
            Some("running" | "interrupted") => {
                let out = run.exec(["resume", &id]);
                assert!(matches!(out.code, 0 | 3 | 5), "round {k}: {} {}", out.code, out.stderr);
            }
            other => panic!("round {k}: unexpected status {other:?}"),
        }
    }
    let got = effects(&dir);
    for i in 1..=STEPS {
        let n = got.iter().filter(|l| **l == format!("s{i}")).count();
        assert_eq!(n, 1, "round {k}: s{i} took effect {n} times: {got:?}");
    }
    assert!(
        !dir.join("violations").exists(),
        "round {k}: a process of an earlier attempt was alive when a new one started: {:?}",
        support::lines(&dir.join("violations"))
    );
}

/// runs.md (Resume): "a runner killed at any moment and resumed leaves
/// every effect done once, and no process of an earlier attempt alive when
/// a new one starts" (`RUNBOOK_CHAOS_ROUNDS`, default 6; bench/chaos.sh runs
/// a thousand).
#[test]
fn a_runner_killed_at_random_moments_leaves_every_effect_done_once() {
    let rounds: usize = std::env::var("RUNBOOK_CHAOS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let mut rng = Rng::new();
    for k in 0..rounds {
        round(&mut rng, k);
        if (k + 1) % 100 == 0 {
            eprintln!("{} rounds done, every effect once", k + 1);
        }
    }
}

/// Steps that record when they act (by this host's clock), under one lock.
fn locked_chain(dir: &Path) -> String {
    let d = dir.display();
    let mut yaml = format!("{HEAD}inputs:\n  who: {{ type: string }}\nlock: shared\nsteps:\n");
    for i in 1..=6 {
        yaml.push_str(&format!(
            r#"  - id: s{i}
    uses: shell
    with:
      run: |
        echo "start {{{{inputs.who}}}} $(date +%s%N)" >> {d}/acts
        touch {d}/{{{{inputs.who}}}}-s{i}
        sleep 0.4
        echo "end {{{{inputs.who}}}} $(date +%s%N)" >> {d}/acts
"#
        ));
    }
    yaml
}

/// The journal's events of a run, with when each was recorded.
fn journal(state: &Path, id: &str) -> Vec<(std::time::SystemTime, runbook_state::Event)> {
    use runbook_state::Journal as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = runbook_state::SqliteStore::open(state).await.unwrap();
        store
            .events(id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (humantime::parse_rfc3339(&r.at).unwrap(), r.event))
            .collect()
    })
}

fn signal(child: &std::process::Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, sig).unwrap();
}

/// Runs `t` as A (`--set who=A`, a 1.5 s lease) until `a_acted`, pauses A
/// (SIGSTOP) past its lease while B waits for the lock, continues A once
/// `b_acted`, and checks how both ended: B succeeded, A was stopped
/// (`interrupted`, exit 5).
fn pause_a_while_b_takes_the_lock(run: &Run, a_acted: impl Fn() -> bool, b_acted: impl Fn() -> bool) {
    use nix::sys::signal::Signal;
    let lease = ["--lock-ttl", "1500ms"];
    let mut a = run.spawn(["run", "t", "--set", "who=A"].iter().chain(&lease));
    assert!(until(Duration::from_secs(20), a_acted), "A never acted");
    signal(&a, Signal::SIGSTOP);
    let b = run.spawn(
        ["run", "t", "--set", "who=B", "--wait-lock", "60s"]
            .iter()
            .chain(&lease),
    );
    let b_took = until(Duration::from_secs(20), b_acted);
    signal(&a, Signal::SIGCONT);
    assert!(b_took, "B never took the lock");
    let a_code = a.wait().unwrap().code();
    let mut a_out = String::new();
    if let Some(mut o) = a.stdout.take() {
        use std::io::Read;
        let _ = o.read_to_string(&mut a_out);
    }
    let b_out = b.wait_with_output().unwrap();
    assert_eq!(
        b_out.status.code(),
        Some(0),
        "B: {}",
        String::from_utf8_lossy(&b_out.stdout)
    );
    assert_eq!(a_code, Some(5), "A ends interrupted:\n{a_out}");
}

/// One try: A paused at step `at` past its lease while B waits for the
/// lock, then continued.
fn paused_past_the_lease(at: usize) {
    let run = Run::new();
    let dir = run.path().to_owned();
    let run = run.playbook("t", &locked_chain(&dir));
    pause_a_while_b_takes_the_lock(
        &run,
        || dir.join(format!("A-s{at}")).exists(),
        || dir.join("B-s2").exists(),
    );
    // What the steps did, by their own clock: nothing of A after B began.
    let acts = support::lines(&dir.join("acts"));
    let at = |who: &str| -> Vec<u128> {
        acts.iter()
            .filter(|l| l.split(' ').nth(1) == Some(who))
            .filter_map(|l| l.split(' ').nth(2)?.parse().ok())
            .collect()
    };
    let b_first = at("B").into_iter().min().expect("B acted");
    let a_last = at("A").into_iter().max().expect("A acted");
    assert!(
        a_last < b_first,
        "A acted at {a_last}, after B began at {b_first}: {acts:#?}"
    );
    // And by the journal: A started no step, and recorded no success, once
    // B had started one.
    let state = dir.join("state.db");
    let ids: Vec<String> = {
        let listed = run.exec(["status", "--output", "json"]).exit(0);
        let v: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let runs: Vec<_> = ids.iter().map(|id| journal(&state, id)).collect();
    let is_a = |events: &[(std::time::SystemTime, runbook_state::Event)]| {
        events.iter().any(|(_, e)| matches!(e, runbook_state::Event::RunFinished { status, .. } if *status == runbook_state::RunStatus::Interrupted))
    };
    let (a_events, b_events) = if is_a(&runs[0]) {
        (&runs[0], &runs[1])
    } else {
        (&runs[1], &runs[0])
    };
    let b_start = b_events
        .iter()
        .filter(|(_, e)| matches!(e, runbook_state::Event::StepStarted { .. }))
        .map(|(t, _)| *t)
        .min()
        .unwrap();
    for (t, e) in a_events {
        if matches!(
            e,
            runbook_state::Event::StepStarted { .. } | runbook_state::Event::StepSucceeded { .. }
        ) {
            assert!(
                *t < b_start,
                "A journalled {e:?} at {t:?}, after B's first step at {b_start:?}"
            );
        }
    }
    let why = a_events.iter().find_map(|(_, e)| match e {
        runbook_state::Event::RunFinished { error, .. } => error.clone(),
        _ => None,
    });
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains("lock leases were not renewed in time") || w.contains("is held by")),
        "{why:?}"
    );
}

/// runs.md (Locks): "a runner paused past its lease acts no more: it
/// starts no step and records no success once another run holds the lock,
/// and what it still ran is stopped before that run acts".
#[test]
fn a_runner_paused_past_its_lease_acts_no_more_once_another_run_holds_the_lock() {
    // Paused at random steps (`RUNBOOK_CHAOS_SEED` repeats a choice).
    let mut rng = Rng::new();
    for _ in 0..3 {
        paused_past_the_lease(1 + rng.below(5) as usize);
    }
}

/// runs.md (Stopping): "when its main process exits, what it left in its
/// session is killed; a daemon that started a session of its own lives on"
/// (a hostile review found every leftover taken for a daemon: the session
/// was read from the wrong field).
#[test]
fn a_job_a_step_leaves_behind_dies_with_it_and_only_a_daemon_of_its_own_session_lives_on() {
    let run = Run::new();
    let d = run.path().to_owned();
    let yaml = format!(
        "{HEAD}steps:\n  - id: work\n    uses: shell\n    with:\n      run: |\n        \
         sleep 60 & echo $! > {d}/job\n        \
         ( trap '' TERM; while :; do sleep 0.2; done ) & echo $! > {d}/stubborn\n        \
         setsid sleep 60 < /dev/null > /dev/null 2>&1 & echo $! > {d}/daemon\n        \
         sleep 0.3\n",
        d = d.display()
    );
    let run = run.playbook("t", &yaml);
    run.exec(["run", "t"]).exit(0);
    let (job, stubborn, daemon) = (
        pid_in(&d.join("job")),
        pid_in(&d.join("stubborn")),
        pid_in(&d.join("daemon")),
    );
    let daemon_alive = alive(daemon);
    sigkill(daemon);
    assert!(!alive(job), "a background job of the step outlived it");
    assert!(!alive(stubborn), "a job that ignores SIGTERM outlived the step");
    assert!(
        daemon_alive,
        "a daemon in a session of its own is let go, as documented"
    );
}

/// runs.md (Stopping): "a stop sends SIGTERM once to each process in the
/// step's cgroup, then kills the cgroup after 5 s": nothing is let go as a
/// daemon while a step is being stopped.
#[test]
fn a_stopped_step_s_processes_all_end_even_one_in_a_session_of_its_own() {
    let run = Run::new();
    let d = run.path().to_owned();
    let yaml = format!(
        "{HEAD}steps:\n  - id: work\n    uses: shell\n    timeout: 1s\n    with:\n      run: |\n        \
         setsid sh -c 'trap \"\" TERM; while :; do sleep 0.2; done' < /dev/null > /dev/null 2>&1 & echo $! > {d}/stubborn\n        \
         ( trap 'sleep 1; echo cleaned >> {d}/cleanup' TERM; sleep 30 & wait ) & echo $! > {d}/child\n        \
         sleep 30\n",
        d = d.display()
    );
    let run = run.playbook("t", &yaml);
    let started = Instant::now();
    run.exec(["run", "t"]).exit(1);
    let (stubborn, child) = (pid_in(&d.join("stubborn")), pid_in(&d.join("child")));
    let still = alive(stubborn);
    sigkill(stubborn);
    assert!(
        !still,
        "a process that left the session and ignores SIGTERM outlived the stop"
    );
    assert!(!alive(child));
    assert_eq!(
        support::lines(&d.join("cleanup")),
        ["cleaned"],
        "a child's SIGTERM cleanup ran once, within the grace, before the run ended"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "the stubborn one had the whole grace"
    );
}

/// A loopback HTTP server that records who sent each request (`X-Who`)
/// and when, answering 200.
/// Who sent each request, and when.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Instant)>>>;

fn recording_server() -> (u16, Seen) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
            let who = text
                .lines()
                .find_map(|l| l.strip_prefix("x-who:"))
                .map(|w| w.trim().to_uppercase())
                .unwrap_or_default();
            log.lock().unwrap().push((who, Instant::now()));
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (port, seen)
}

/// runs.md (Locks): "a runner woken past its lease takes no further action,
/// also in a kind that works in runbook's own process (a request)".
#[test]
fn a_runner_woken_past_its_lease_sends_no_more_requests() {
    let (port, seen) = recording_server();
    let yaml = format!(
        "{HEAD}inputs:\n  who: {{ type: string }}\nlock: shared\nsteps:\n  - id: poke\n    uses: http-check\n    with:\n      \
         url: http://127.0.0.1:{port}/\n      method: POST\n      headers: {{ X-Who: \"{{{{inputs.who}}}}\" }}\n      \
         samples: 30\n      rate: 4\n"
    );
    let run = Run::new().playbook("t", &yaml);
    let count = |who: &str| seen.lock().unwrap().iter().filter(|(w, _)| w == who).count();
    pause_a_while_b_takes_the_lock(&run, || count("A") >= 2, || count("B") >= 2);
    let seen = seen.lock().unwrap();
    let b_first = seen.iter().find(|(w, _)| w == "B").map(|(_, t)| *t).unwrap();
    let late: Vec<_> = seen.iter().filter(|(w, t)| w == "A" && *t > b_first).collect();
    assert!(late.is_empty(), "A sent {} requests after B began", late.len());
}

/// language.md (secrets): "a command a step starts is not given the
/// variables runbook read the run's secrets from; it sees a secret where
/// its step names it" (a hostile review found every shell step's
/// environment holding them).
#[test]
fn a_step_s_command_gets_a_secret_only_where_its_step_names_it() {
    let run = Run::new();
    let d = run.path().to_owned();
    let yaml = format!(
        "{HEAD}secrets: [API_KEY]\nsteps:\n  - id: plain\n    uses: shell\n    with:\n      run: |\n        \
         cat /proc/$$/environ | tr '\\0' '\\n' > {d}/plain\n  - id: named\n    uses: shell\n    with:\n      \
         env: {{ KEY: \"{{{{secrets.API_KEY}}}}\" }}\n      run: |\n        \
         cat /proc/$$/environ | tr '\\0' '\\n' > {d}/named\n",
        d = d.display()
    );
    let secret = "s3cr3t-Value-91f";
    let run = run.playbook("t", &yaml).env("API_KEY", secret);
    run.exec(["run", "t"]).exit(0);
    let plain = std::fs::read_to_string(d.join("plain")).unwrap();
    assert!(!plain.contains(secret), "a step that names no secret got it:\n{plain}");
    assert!(plain.contains("PATH="), "the rest of the environment is there");
    let named = std::fs::read_to_string(d.join("named")).unwrap();
    assert!(named.contains(&format!("KEY={secret}")), "{named}");
    assert!(!named.contains(&format!("API_KEY={secret}")), "{named}");
}
