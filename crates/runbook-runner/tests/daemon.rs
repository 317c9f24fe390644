//! The daemon's loop without the binary: real schedules (a cron firing
//! every second) over a real SQLite state, and a launcher that starts real
//! processes (`sh`) printing the events a run prints. What an operator
//! would notice: the runs counted by schedule and outcome, the steps timed,
//! an overlapping fire skipped, and a stop that asks the running run to stop
//! and waits for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use runbook_core::kind::Registry;
use runbook_core::library::Library;
use runbook_engine::exec::Observer;
use runbook_report::metrics::Metrics;
use runbook_runner::daemon::{Daemon, Launch, Launched, Launcher, Report};
use runbook_runner::{Notice, Watcher, schedule};
use runbook_state::{Event, LogLine, SqliteStore, Store};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

const PLAYBOOK: &str =
    "apiVersion: runbook/v1\nname: NAME\nversion: 1\nsteps:\n  - { id: ask, uses: approve, with: { message: go? } }\n";

/// Each schedule's run: `sh` printing a run's JSON events; the `slow`
/// playbook's then sleeps until it is stopped.
struct Shell;

impl Launcher for Shell {
    fn launch(&self, what: Launch<'_>, _user: &str, mut report: Report) -> Result<Launched, String> {
        let Launch::Run(spec) = what else {
            return Err("nothing to resume here".into());
        };
        let events = [
            r#"{"run":"r-1","event":"run_started"}"#,
            r#"{"run":"r-1","event":"step_started","step":"ask","at":"2026-11-28T03:00:00Z"}"#,
            r#"not json: ignored"#,
            r#"{"run":"r-1","event":"step_succeeded","step":"ask","at":"2026-11-28T03:00:02.500Z"}"#,
        ];
        let mut script = events.map(|e| format!("echo '{e}'; ")).concat();
        if spec.playbook == "slow" {
            script.push_str("exec sleep 30");
        }
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let pid = child.id().unwrap();
        let out = child.stdout.take().unwrap();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                report.line(&line);
            }
            let code = child.wait().await.unwrap().code().unwrap_or(-1);
            report.exited(code, false);
        });
        Ok(Launched {
            pid,
            command: format!("sh for {}", spec.playbook),
        })
    }
}

/// The daemon's notices, as lines.
#[derive(Default)]
struct Told(Mutex<Vec<String>>);

impl Observer for Told {
    fn event(&self, _: &str, _: &Event) {}
    fn log(&self, _: &LogLine) {}
}

impl Watcher for Told {
    fn notice(&self, notice: &Notice) {
        self.0.lock().unwrap().push(notice.to_string());
    }
}

/// The value of the sample of `metric` whose labels contain `label`.
fn sample(text: &str, metric: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn schedules_fire_count_skip_and_stop_their_runs() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["quick", "slow"] {
        let folder = dir.path().join("playbooks").join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("v1.yaml"), PLAYBOOK.replace("NAME", name)).unwrap();
    }
    let file = dir.path().join("schedules.yaml");
    std::fs::write(
        &file,
        "schedules:\n  - { name: often, playbook: quick, cron: \"* * * * * *\" }\n  - { name: drill, playbook: slow, cron: \"* * * * * *\" }\n",
    )
    .unwrap();
    let registry = Registry::new().with(runbook_step_approve::Approve);
    let lib = Library::new(dir.path().join("playbooks"));
    let schedules = schedule::load(&file, &lib, &registry).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("state.db")).await.unwrap());
    let metrics = Arc::new(Mutex::new(Metrics::default()));
    let told = Arc::new(Told::default());
    let daemon = Daemon {
        schedules,
        store,
        metrics: metrics.clone(),
        watcher: told.clone(),
    };
    // Stop once quick has run twice and slow has been skipped (a fire every
    // second: about 3 s), or after 20 s on a machine too loaded for that.
    let watched = metrics.clone();
    let stop = async move {
        let started = std::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let text = watched.lock().unwrap().render(0, 0);
            let enough = sample(&text, "runbook_runs_total", "schedule=\"often\"") >= 2.0
                && sample(&text, "runbook_schedule_skipped_total", "schedule=\"drill\"") >= 1.0;
            if enough || started.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
    };
    let left = daemon.run(&Shell, stop).await;

    assert_eq!(left, 0, "the slow run stopped when asked: {:?}", told.0.lock().unwrap());
    let text = metrics.lock().unwrap().render(0, 0);
    let quick_runs = sample(&text, "runbook_runs_total", "schedule=\"often\"");
    assert!(quick_runs >= 2.0, "quick ran at each fire:\n{text}");
    assert_eq!(
        sample(&text, "runbook_runs_total", "status=\"exit 0\",schedule=\"often\"")
            + sample(&text, "runbook_runs_total", "schedule=\"often\",status=\"exit 0\""),
        quick_runs,
        "no record in the state: the exit code is the status:\n{text}"
    );
    // Every run's one step took 2.5 s by its events.
    let steps = sample(&text, "runbook_step_duration_seconds_count", "playbook=\"quick\"");
    let total = sample(&text, "runbook_step_duration_seconds_sum", "playbook=\"quick\"");
    assert!(steps >= 2.0, "{text}");
    assert!((total - 2.5 * steps).abs() < 1e-6, "{total} for {steps} steps");
    // The slow run was still running at the next fires: skipped, one run.
    assert!(
        sample(&text, "runbook_schedule_skipped_total", "schedule=\"drill\"") >= 1.0,
        "{text}"
    );
    assert_eq!(sample(&text, "runbook_runs_total", "schedule=\"drill\""), 1.0, "{text}");
    let told = told.0.lock().unwrap().join("\n");
    for line in [
        "daemon: often (quick): next run at",
        "daemon: drill: sh for slow (process ",
        "daemon: drill: skipped: the previous run (process ",
        "daemon: often: run r-1 exit 0",
        "daemon: stopping; 1 run asked to stop",
        "daemon: drill: run r-1 exit -1",
    ] {
        assert!(told.contains(line), "no `{line}` in:\n{told}");
    }
}
