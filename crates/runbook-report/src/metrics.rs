//! The daemon's metrics in the Prometheus text format: runs by schedule and
//! status, skipped fires, lock waits, step durations, the last measured RTO,
//! and the runs waiting for an approval or queued (prometheus-client's
//! registry and its OpenMetrics text encoding). Pure: the caller observes,
//! and serves the text.

use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};

/// Buckets of the step duration histogram, in seconds.
const BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];

/// A schedule's run, as `runbook_runs_total` labels it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RunLabels {
    playbook: String,
    schedule: String,
    status: String,
}

/// A schedule, as labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ScheduleLabels {
    schedule: String,
}

/// A playbook, as labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct PlaybookLabels {
    playbook: String,
}

type StepHistograms = Family<PlaybookLabels, Histogram, fn() -> Histogram>;

/// What the daemon counts, for `/metrics` (prometheus-client's registry and
/// its OpenMetrics text encoding).
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    runs: Family<RunLabels, Counter>,
    skipped: Family<ScheduleLabels, Counter>,
    lock_waits: Family<ScheduleLabels, Counter>,
    steps: StepHistograms,
    last_rto: Family<PlaybookLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    waiting: Gauge,
    queued: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = prometheus_client::registry::Registry::default();
        let runs = Family::default();
        let skipped = Family::default();
        let lock_waits = Family::default();
        let steps: StepHistograms = Family::new_with_constructor(|| Histogram::new(BUCKETS.iter().copied()));
        let last_rto = Family::default();
        let (waiting, queued) = (Gauge::default(), Gauge::default());
        registry.register(
            "runbook_runs",
            "Runs the daemon started that ended, by playbook, schedule and status",
            runs.clone(),
        );
        registry.register(
            "runbook_schedule_skipped",
            "Fires dropped because the previous run still ran",
            skipped.clone(),
        );
        registry.register(
            "runbook_lock_waits",
            "Runs that found their lock held (exit 4)",
            lock_waits.clone(),
        );
        registry.register(
            "runbook_step_duration_seconds",
            "How long step calls took, by playbook",
            steps.clone(),
        );
        registry.register(
            "runbook_last_rto_seconds",
            "The recovery time the last run of a playbook measured",
            last_rto.clone(),
        );
        registry.register(
            "runbook_runs_waiting_for_approval",
            "Runs paused at an approval now",
            waiting.clone(),
        );
        registry.register(
            "runbook_runs_queued",
            "Runs submitted and not yet claimed by a worker (the queue's depth)",
            queued.clone(),
        );
        Metrics {
            registry,
            runs,
            skipped,
            lock_waits,
            steps,
            last_rto,
            waiting,
            queued,
        }
    }
}

impl Metrics {
    /// A step call of `playbook` took `seconds`.
    pub fn observe_step(&mut self, playbook: &str, seconds: f64) {
        self.steps
            .get_or_create(&PlaybookLabels {
                playbook: playbook.to_owned(),
            })
            .observe(seconds);
    }

    /// A schedule's run ended as `status`.
    pub fn run_ended(&mut self, playbook: &str, schedule: &str, status: &str) {
        self.runs
            .get_or_create(&RunLabels {
                playbook: playbook.to_owned(),
                schedule: schedule.to_owned(),
                status: status.to_owned(),
            })
            .inc();
    }

    /// A fire was dropped.
    pub fn skipped(&mut self, schedule: &str) {
        self.skipped
            .get_or_create(&ScheduleLabels {
                schedule: schedule.to_owned(),
            })
            .inc();
    }

    /// A run found its lock held.
    pub fn lock_wait(&mut self, schedule: &str) {
        self.lock_waits
            .get_or_create(&ScheduleLabels {
                schedule: schedule.to_owned(),
            })
            .inc();
    }

    /// The recovery time a run of `playbook` measured.
    pub fn rto(&mut self, playbook: &str, seconds: f64) {
        self.last_rto
            .get_or_create(&PlaybookLabels {
                playbook: playbook.to_owned(),
            })
            .set(seconds);
    }

    /// The text, with the runs waiting for an approval and queued now.
    pub fn render(&self, waiting: u64, queued: u64) -> String {
        self.waiting.set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.queued.set(i64::try_from(queued).unwrap_or(i64::MAX));
        let mut o = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut o, &self.registry) {
            o = format!("# cannot encode the metrics: {e}\n");
        }
        o
    }
}
