//! The `ssh` kind against real sshd processes on loopback addresses: commands
//! on several hosts in parallel, env and stdin, exit codes, host keys, an
//! unreachable host, and one authentication per host per run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Run, Sshd};

const HEAD: &str = "apiVersion: runbook/v1\nname: t\nversion: 1\n";

fn user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

fn lab(hosts: &[(&str, &Sshd)]) -> String {
    let mut inv = String::from("hosts:\n");
    for (name, s) in hosts {
        inv.push_str(&format!("  {name}: {}\n", s.inventory_entry()));
    }
    inv.push_str(&format!(
        "groups:\n  web: [{}]\n",
        hosts.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
    ));
    inv
}

#[test]
fn commands_on_several_hosts_with_env_and_stdin() {
    let a = Sshd::start("127.0.0.1");
    let b = Sshd::start("127.0.0.2");
    let yaml = format!(
        "{HEAD}steps:\n  - id: roll\n    for_each: \"{{{{inventory.groups.web}}}}\"\n    as: host\n    concurrency: 2\n    steps:\n      - {{ id: hi, uses: ssh, with: {{ host: \"{{{{host}}}}\", run: \"echo $GREETING from $SSH_CONNECTION; cat\", env: {{ GREETING: \"hello {{{{host}}}}\" }}, stdin: \"piped in\\n\" }} }}\n"
    );
    let run = Run::new()
        .file("inventory.yaml", &lab(&[("web1", &a), ("web2", &b)]))
        .playbook("t", &yaml);
    let out = run.exec(["run", "t"]).exit(0);
    for (name, s) in [("web1", &a), ("web2", &b)] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.contains(&format!("roll[{name}].hi │ hello {name} from")))
            .unwrap_or_else(|| panic!("no output from {name}:\n{}", out.stdout));
        // $SSH_CONNECTION names the server address: the command ran on that host.
        assert!(line.contains(&format!(" {} {}", s.address, s.port)), "{line}");
        assert!(
            out.stdout.contains(&format!("roll[{name}].hi │ piped in")),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn one_authentication_per_host_per_run() {
    let a = Sshd::start("127.0.0.3");
    let mut steps = String::new();
    for i in 1..=5 {
        steps.push_str(&format!(
            "  - {{ id: s{i}, uses: ssh, with: {{ host: web1, run: \"echo {i}\" }} }}\n"
        ));
    }
    let run = Run::new()
        .file("inventory.yaml", &lab(&[("web1", &a)]))
        .playbook("t", &format!("{HEAD}steps:\n{steps}"));
    run.exec(["run", "t"]).exit(0).stdout_has("s5 │ 5");
    assert_eq!(a.logins(), 1, "5 steps on one host must share one SSH login");
    // The master is closed when the run ends: no ssh process of ours is left.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let leftover = ssh_processes(&[&a]);
    assert!(leftover.is_empty(), "an ssh master outlived the run: {leftover:?}");
}

#[test]
fn failures_say_what_happened() {
    let a = Sshd::start("127.0.0.4");
    let inv = lab(&[("web1", &a)]);
    // A command that fails: its exit code and the tail of its stderr.
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: x, uses: ssh, with: {{ host: web1, run: \"echo bad thing >&2; exit 3\" }} }}\n"
    );
    Run::new()
        .file("inventory.yaml", &inv)
        .playbook("t", &yaml)
        .exec(["run", "t"])
        .exit(1)
        .stdout_has(&format!(
            "{}@127.0.0.4:{}: exited with status 3: bad thing",
            user(),
            a.port
        ));
    // A host whose key is not the one in known_hosts.
    let other = Sshd::start("127.0.0.5");
    let swapped = inv.replace(
        &format!("{}/known_hosts", a.dir.path().display()),
        &format!("{}/wrong_known_hosts", a.dir.path().display()),
    );
    let other_pub = std::fs::read_to_string(other.dir.path().join("host_key.pub")).expect("pub");
    std::fs::write(
        a.dir.path().join("wrong_known_hosts"),
        format!("[127.0.0.4]:{} {other_pub}", a.port),
    )
    .expect("write");
    Run::new()
        .file("inventory.yaml", &swapped)
        .playbook("t", &yaml.replace("echo bad thing >&2; exit 3", "true"))
        .exec(["run", "t"])
        .exit(1)
        .stdout_has("host key mismatch");
    // A host nobody listens on.
    let dead = inv.replace(&format!("port: {}", a.port), "port: 9");
    Run::new()
        .file("inventory.yaml", &dead)
        .playbook("t", &yaml.replace("echo bad thing >&2; exit 3", "true"))
        .exec(["run", "t"])
        .exit(1)
        .stdout_has("unreachable");
}

#[test]
fn inputs_are_data_on_the_remote_shell_too() {
    let a = Sshd::start("127.0.0.6");
    let pwned = a.dir.path().join("pwned");
    let yaml = format!(
        "{HEAD}inputs:\n  release: {{ type: string }}\nsteps:\n  - {{ id: x, uses: ssh, with: {{ host: web1, run: \"echo deploying {{{{inputs.release}}}}; echo 'quoted: {{{{inputs.release}}}}'\" }} }}\n"
    );
    let evil = format!("v1; touch {}", pwned.display());
    Run::new()
        .file("inventory.yaml", &lab(&[("web1", &a)]))
        .playbook("t", &yaml)
        .exec(["run", "t", "--set", &format!("release={evil}")])
        .exit(0)
        .stdout_has(&format!("x │ deploying {evil}"))
        .stdout_has(&format!("x │ quoted: {evil}"));
    assert!(!pwned.exists(), "an input ran as shell code on the remote host");
}

/// Every command line on this machine (sshd's sessions for the lab's hosts
/// run here too): what any user sees with `ps`.
fn command_lines() -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            out.push(String::from_utf8_lossy(&bytes).replace('\0', " "));
        }
    }
    out
}

/// The command lines of the ssh processes (masters) talking to any of `sshds`.
fn ssh_processes(sshds: &[&Sshd]) -> Vec<String> {
    let ports: Vec<String> = sshds.iter().map(|s| format!("-p {} ", s.port)).collect();
    command_lines()
        .into_iter()
        .filter(|l| l.starts_with("ssh ") && ports.iter().any(|p| l.contains(p.as_str())))
        .collect()
}

/// A secret passed in `env:`, and the script itself, never appear in a
/// command line, local (the ssh client) or remote (the shell sshd starts),
/// while the step runs; the script still gets the value and its stdin.
#[test]
fn env_values_and_the_script_stay_out_of_every_process_list() {
    let a = Sshd::start("127.0.0.9");
    let run = Run::new();
    let started = run.path().join("started");
    let yaml = format!(
        "{HEAD}secrets: [DB_PASSWORD]\nsteps:\n  - {{ id: x, uses: ssh, with: {{ host: web1, run: \"touch {s}; sleep 2; printf '%s' \\\"$PW\\\" | wc -c; cat\", env: {{ PW: \"{{{{secrets.DB_PASSWORD}}}}\" }}, stdin: \"and stdin\\n\" }} }}\n",
        s = started.display()
    );
    let secret = "Sw0rdf1sh-in-argv";
    let run = run
        .file("inventory.yaml", &lab(&[("web1", &a)]))
        .playbook("t", &yaml)
        .env("DB_PASSWORD", secret);
    let child = run.spawn(["run", "t"]);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !started.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(started.exists(), "the step never started");
    let lines = command_lines();
    let sshd_children = lines.iter().filter(|l| l.contains("rb_n")).count();
    assert!(sshd_children > 0, "the remote shell was not found in the process table");
    for l in &lines {
        assert!(!l.contains(secret), "a command line shows the secret: {l}");
        assert!(!l.contains("sleep 2; printf"), "a command line shows the script: {l}");
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("x │ {}", secret.len())),
        "the script got the value:\n{stdout}"
    );
    assert!(stdout.contains("x │ and stdin"), "{stdout}");
}

#[test]
fn ctrl_c_leaves_no_ssh_process_behind() {
    let a = Sshd::start("127.0.0.7");
    let run = Run::new();
    let started = run.path().join("started");
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: mark, uses: shell, with: {{ run: \"true\" }} }}\n  - {{ id: long, uses: ssh, with: {{ host: web1, run: \"touch {s}; sleep 317\" }} }}\n",
        s = started.display()
    );
    let run = run.file("inventory.yaml", &lab(&[("web1", &a)])).playbook("t", &yaml);
    let child = run.spawn(["run", "t"]);
    for _ in 0..200 {
        if started.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(started.exists(), "the remote command never started");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("signal");
    let out = child.wait_with_output().expect("waits");
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stdout));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ours = ssh_processes(&[&a]);
    assert!(ours.is_empty(), "ssh processes left behind after Ctrl-C: {ours:?}");
    // The remote command is stopped too, not just the channel closed.
    assert!(
        !command_lines().iter().any(|l| l.trim_end() == "sleep 317"),
        "the remote command kept running after Ctrl-C"
    );
}

#[test]
fn a_timeout_stops_the_remote_command() {
    let a = Sshd::start("127.0.0.8");
    let yaml = format!(
        "{HEAD}steps:
  - {{ id: long, uses: ssh, with: {{ host: web1, run: \"sleep 318\", timeout: 500ms }} }}
"
    );
    Run::new()
        .file("inventory.yaml", &lab(&[("web1", &a)]))
        .playbook("t", &yaml)
        .exec(["run", "t"])
        .exit(1)
        .stdout_has("timed out after 500ms; the remote command was stopped");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !command_lines().iter().any(|l| l.trim_end() == "sleep 318"),
        "the remote command kept running after the timeout"
    );
}

/// More hosts than the pool has places for masters (RUNBOOK_SSH_MASTERS=2,
/// six hosts at once): never more than two ssh processes of the run alive
/// at any moment, idle masters closed to make room, a host's master kept
/// between its own steps, and every host's steps done.
#[test]
fn a_fan_out_wider_than_the_master_pool_keeps_to_its_cap() {
    let hosts: Vec<Sshd> = (1..=6).map(|i| Sshd::start(&format!("127.0.5.{i}"))).collect();
    let named: Vec<(String, &Sshd)> = hosts
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("web{}", i + 1), s))
        .collect();
    let refs: Vec<(&str, &Sshd)> = named.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let yaml = format!(
        "{HEAD}steps:\n  - id: roll\n    for_each: \"{{{{inventory.groups.web}}}}\"\n    as: host\n    concurrency: 6\n    steps:\n\
         {}",
        (1..=3)
            .map(|i| {
                let needs = if i > 1 { format!(", needs: [s{}]", i - 1) } else { String::new() };
                format!("      - {{ id: s{i}, uses: ssh{needs}, with: {{ host: \"{{{{host}}}}\", run: \"sleep 0.2; echo {i}\" }} }}\n")
            })
            .collect::<String>()
    );
    let run = Run::new()
        .env("RUNBOOK_SSH_MASTERS", "2")
        .file("inventory.yaml", &lab(&refs))
        .playbook("t", &yaml);
    let done = std::sync::atomic::AtomicBool::new(false);
    let sshds: Vec<&Sshd> = hosts.iter().collect();
    let (out, most) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                most = most.max(ssh_processes(&sshds).len());
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            most
        });
        let out = run.exec(["run", "t"]);
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (out, sampler.join().unwrap())
    });
    let out = out.exit(0);
    for (name, _) in &named {
        let line = format!("roll[{name}].s3 │ 3");
        assert!(out.stdout.contains(&line), "{line} missing:\n{}", out.stdout);
    }
    assert!(most >= 1, "the sampler never saw a master");
    assert!(most <= 2, "{most} ssh masters at once with a pool of 2");
    // A host keeps its master between its own steps (one login each; a
    // loaded machine may stretch a gap past the pool's grace now and then),
    // rather than a login per step (18).
    let logins: usize = hosts.iter().map(Sshd::logins).sum();
    assert!((6..=9).contains(&logins), "{logins} logins for 6 hosts x 3 steps");
    eprintln!("6 hosts x 3 steps through a pool of 2: at most {most} masters at once, {logins} logins");
}

/// The host drops the connection between two steps (its sshd's session
/// processes are killed, as a reboot or a network cut would): the next step
/// finds its master gone, opens a new one and runs.
#[test]
fn a_master_that_has_gone_is_replaced_before_the_next_step() {
    let a = Sshd::start("127.0.5.9");
    let yaml = format!(
        "{HEAD}steps:\n  - {{ id: one, uses: ssh, with: {{ host: web1, run: \"echo one\" }} }}\n\
         \x20 - {{ id: cut, uses: shell, needs: [one], with: {{ run: \"pkill -KILL -P {pid}; sleep 0.5\" }} }}\n\
         \x20 - {{ id: two, uses: ssh, needs: [cut], with: {{ host: web1, run: \"echo two\" }} }}\n",
        pid = a.pid()
    );
    let run = Run::new()
        .file("inventory.yaml", &lab(&[("web1", &a)]))
        .playbook("t", &yaml);
    run.exec(["run", "t"]).exit(0).stdout_has("two │ two");
    assert_eq!(a.logins(), 2, "a new login for the second step");
}
