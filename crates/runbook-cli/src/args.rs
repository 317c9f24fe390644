//! Command-line arguments.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// runbook: operational runbooks as versioned, resumable YAML playbooks.
#[derive(Debug, Parser)]
#[command(name = "runbook", version, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    /// The playbook library folder (holds `<name>/v<N>.yaml`).
    #[arg(
        long,
        global = true,
        env = "RUNBOOK_PLAYBOOKS",
        default_value = "playbooks",
        value_name = "DIR"
    )]
    pub(crate) playbooks: PathBuf,

    /// The inventory of hosts and groups (default: ./inventory.yaml if it exists).
    #[arg(long, global = true, env = "RUNBOOK_INVENTORY", value_name = "FILE")]
    pub(crate) inventory: Option<PathBuf>,

    /// Where runs are recorded: a SQLite file (default: ~/.local/state/runbook/state.db).
    #[arg(long, global = true, env = "RUNBOOK_STATE", value_name = "PATH")]
    pub(crate) state: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List the playbooks of the library.
    List {
        /// Output format (`json`: schemas/cli/list.json).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show a playbook: description, inputs, secrets, objectives and steps.
    Show {
        /// `NAME`, `NAME@VERSION`, or a path to a `.yaml` file.
        playbook: String,
        /// Output format (`json`: schemas/cli/show.json).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Check playbooks and report every problem (default: the whole library).
    Validate {
        /// `NAME`, `NAME@VERSION`, or paths to `.yaml` files.
        #[arg(value_name = "PLAYBOOK")]
        targets: Vec<String>,
        /// Output format (`json`: every diagnostic with file, line and column,
        /// for CI annotations; schemas/cli/validate.json).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show exactly what a run would do, without doing any of it.
    Plan {
        /// `NAME`, `NAME@VERSION`, or a path to a `.yaml` file.
        playbook: String,
        #[command(flatten)]
        inputs: InputArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Also look, read-only, at what the steps would touch (the sessions
        /// terminate-idle would end, a server's state before a drain). Needs the
        /// playbook's secrets and access to the systems.
        #[arg(long)]
        live: bool,
    },
    /// Run a playbook, journalled so that it can be resumed.
    Run {
        /// `NAME`, `NAME@VERSION`, or a path to a `.yaml` file.
        playbook: String,
        #[command(flatten)]
        inputs: InputArgs,
        #[command(flatten)]
        exec: ExecArgs,
        /// Queue the run for `runbook worker`s instead of running it here
        /// (needs PostgreSQL state). Prints the run id.
        #[arg(long)]
        submit: bool,
        /// With `--submit`: follow the run until it stops, printing its events
        /// and logs, and exit with its code (0 succeeded, 1 failed, 3 waiting
        /// for an approval, 5 uncertain). Ctrl-C stops following, not the run.
        #[arg(long, requires = "submit")]
        wait: bool,
    },
    /// Execute queued runs (`run --submit`) from the shared state, and take over
    /// the runs of workers that died.
    Worker {
        /// This worker's name, shown in `status` and `history` (default: HOST:PID).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// How many runs it executes at once.
        #[arg(long, default_value_t = 4, value_name = "N")]
        concurrency: usize,
        /// How long its hold on a run lasts without a heartbeat; another worker
        /// takes the run over after that.
        #[arg(long, default_value = "15s", value_name = "DURATION")]
        lease_ttl: String,
        /// How often an idle worker looks for runs whose worker died (new
        /// submissions wake it at once).
        #[arg(long, default_value = "1s", value_name = "DURATION")]
        poll: String,
        /// Exit once there is nothing to claim and nothing running.
        #[arg(long)]
        exit_when_idle: bool,
        /// How it reports what its runs do.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Serve the HTTP API (`/api/v1/`): the library, plans, runs started
    /// and followed over HTTP (events as Server-Sent Events), approvals,
    /// cancels, reports. Runs execute in this process, in the same state as
    /// the command line's.
    Serve {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
        listen: String,
        /// At most this many step calls at once, per run.
        #[arg(long, default_value_t = 8, value_name = "N")]
        max_parallel: usize,
        /// Serve HTTPS with this certificate chain (PEM, the server's first).
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Take each request's user from an authenticating reverse proxy at
        /// this address (repeat for several); requests from elsewhere are
        /// refused. Without it, every request acts as the server's user.
        #[arg(long, value_name = "IP")]
        trusted_proxy: Vec<std::net::IpAddr>,
        /// The header in which the proxy names the user.
        #[arg(
            long,
            value_name = "NAME",
            default_value = "X-Forwarded-User",
            requires = "trusted_proxy"
        )]
        identity_header: String,
        /// Take only API tokens (`runbook token create`): a request without
        /// one is refused (401), and a browser signs in with one. Needed to
        /// listen beyond loopback without a proxy.
        #[arg(long, conflicts_with = "trusted_proxy")]
        require_token: bool,
        /// Who may do what on which playbooks (a YAML roles file; see
        /// book/src/server.md). Without it a token has its own role and a
        /// person named by the proxy may only read.
        #[arg(long, value_name = "FILE")]
        roles: Option<PathBuf>,
        /// Hand the runs it starts to the workers' queue (`runbook worker`)
        /// instead of executing them in this process (PostgreSQL state).
        #[arg(long)]
        submit: bool,
    },
    /// The workers of the shared state: alive, stopped or gone, and the runs
    /// each holds.
    Workers {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Continue an interrupted, failed or uncertain run where it stopped.
    Resume {
        /// The run id (a unique prefix is enough).
        run: String,
        /// Run this step again although it was in flight (you checked it did not take effect).
        #[arg(long, value_name = "STEP")]
        rerun: Vec<String>,
        /// Record this in-flight step as done (you checked it took effect).
        /// `--rerun STEP` takes the decision back while it has not run again.
        #[arg(long = "mark-done", value_name = "STEP")]
        mark_done: Vec<String>,
        /// An output of a step marked done, as later steps will read it
        /// (`deploy.stdout=v42`); required for each output they read.
        #[arg(long = "set-output", value_name = "STEP.NAME=VALUE")]
        set_output: Vec<String>,
        /// Continue on the playbook file's current text (the run's own text by
        /// default), once it is checked to agree with every step already done.
        #[arg(long = "to-current")]
        to_current: bool,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Approve the question a run waits at (or those named, or `--all`),
    /// and continue the run.
    Approve {
        #[command(flatten)]
        answer: AnswerArgs,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Reject the question a run waits at (or those named, or `--all`): the
    /// run fails (its handlers run).
    Reject {
        #[command(flatten)]
        answer: AnswerArgs,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// A run's report: timeline, steps, operator actions and approvals, and the
    /// measured RTO/RPO against the playbook's objectives.
    Report {
        /// The run id (a unique prefix is enough).
        run: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Markdown)]
        format: ReportFormat,
    },
    /// Run playbooks on cron schedules, with Prometheus metrics.
    Daemon {
        /// The schedules file (see the book: schedules).
        #[arg(long, value_name = "FILE")]
        schedules: PathBuf,
        /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9464.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
    },
    /// The server's API tokens: create (the secret is printed once), list,
    /// revoke.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// The state store: `runbook state migrate` brings its schema up to date.
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// The playbook locks held now: key, run, user, process, since, expiry.
    Locks {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Free a lock whose holder cannot free it (journalled on the holder's run).
    Unlock {
        /// The lock key, as `runbook locks` shows it.
        key: String,
        /// Required: freeing a lock lets another run start while the holder may
        /// still be changing things.
        #[arg(long)]
        force: bool,
    },
    /// Stop a run from another terminal (it records `cancelled`).
    Cancel {
        /// The run id (a unique prefix is enough).
        run: String,
        /// How the `finally` steps of a run that waited are shown.
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Recent runs, or one run's steps with state, attempts and durations.
    Status {
        /// The run id (a unique prefix is enough).
        run: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// A run's step logs.
    Logs {
        /// The run id (a unique prefix is enough).
        run: String,
        /// Only this step (and what is inside it).
        step: Option<String>,
        /// Keep printing new lines until the run stops.
        #[arg(long, short)]
        follow: bool,
        /// Output format (`json`: one `log` object a line, as in the events).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The runs of one playbook, newest first.
    History {
        /// The playbook's name.
        playbook: String,
        /// How many runs.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Output format (`json`: the runs, as `status --output json` lists them).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the step graph.
    Graph {
        /// `NAME`, `NAME@VERSION`, or a path to a `.yaml` file.
        playbook: String,
        /// Graph format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Show where the library, the inventory and the state are, and which
    /// setting (flag, environment, runbook.toml, default) said so.
    Config,
    /// List the inventory's hosts and groups.
    Inventory {
        /// Output format (`json`: schemas/cli/inventory.json).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the JSON Schema of playbooks (or of one step kind's `with:`).
    Schema {
        /// Print only this kind's `with:` schema.
        #[arg(long)]
        kind: Option<String>,
        /// Print the schema of `--output json` events instead.
        #[arg(long, conflicts_with = "kind")]
        events: bool,
        /// Print the schema of a command's `--output json` instead (list,
        /// show, validate, inventory, plan, history, locks, workers).
        #[arg(long, value_name = "COMMAND", conflicts_with_all = ["kind", "events"])]
        output_of: Option<String>,
        /// Print the OpenAPI document of `runbook serve`'s API instead.
        #[arg(long, conflicts_with_all = ["kind", "events", "output_of"])]
        openapi: bool,
    },
    /// External step kinds: list the plugins found, or check one against the
    /// protocol (book: Plugins).
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
    /// Metric gates (`prometheus` steps): `gate backtest` judges one over the
    /// past to show when it would have fired (book: Progressive delivery).
    Gate {
        #[command(subcommand)]
        action: GateAction,
    },
    /// Print generated reference documentation (the book's step reference).
    #[command(hide = true)]
    Docs {
        /// What to print.
        #[arg(value_enum)]
        what: Docs,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Inputs for a run or a plan.
#[derive(Debug, Args)]
pub(crate) struct InputArgs {
    /// Set an input: `name=value` (YAML scalar or `[list]`); repeatable.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub(crate) set: Vec<String>,
    /// Read inputs from a YAML or JSON file (`--set` wins over it).
    #[arg(long = "inputs", value_name = "FILE")]
    pub(crate) inputs_file: Option<PathBuf>,
    /// Only these hosts of the inventory, as Ansible's `--limit`: hosts or
    /// groups separated by `:` or `,`; `!x` excludes, `&x` intersects
    /// (`web:!web2`). Groups keep only the selected hosts.
    #[arg(long, value_name = "PATTERN")]
    pub(crate) limit: Option<String>,
}

/// How a run executes and reports.
#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// How many step calls may run at once.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub(crate) max_parallel: usize,
    /// `text` (progress lines) or `json` (one JSON event per line).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
    /// No live progress bars, only lines (they are off anyway when stdout is not a terminal).
    #[arg(long)]
    pub(crate) no_progress: bool,
    /// Approve every `approve` step as the current user, without waiting,
    /// where its approvers allow it (else the run waits at it, saying why);
    /// never a question that expired or is asked again: that waits for a
    /// person.
    #[arg(long)]
    pub(crate) yes: bool,
    /// When the playbook's lock is held by another run, wait up to this long
    /// for it (e.g. `10m`) instead of exiting 4.
    #[arg(long, value_name = "DURATION")]
    pub(crate) wait_lock: Option<String>,
    /// How long the lock outlives its runner if the runner dies (it is renewed
    /// every third of this while the run executes).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub(crate) lock_ttl: String,
    /// Write a report when the run stops: `junit=PATH`, `json=PATH`,
    /// `markdown=PATH` or `html=PATH` (repeatable).
    #[arg(long, value_name = "FORMAT=PATH")]
    pub(crate) report: Vec<String>,
}

/// A report's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReportFormat {
    /// For people: Markdown.
    Markdown,
    /// For people: a self-contained HTML page.
    Html,
    /// For programs: JSON.
    Json,
    /// For CI: JUnit XML, one test case per step.
    Junit,
}

/// What to do with API tokens.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum TokenAction {
    /// Make a token; its secret is printed once, on stdout.
    Create {
        /// Who requests with it act as (journalled): letters, digits, `.`,
        /// `_`, `-`, `@`.
        name: String,
        /// The most it may do: viewer, operator, approver or admin.
        #[arg(long)]
        role: String,
        /// It stops working after this long (e.g. `90d`); never if not given.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// Every token: name, role, who made it, expiry, revocation (never the
    /// secret).
    List {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Revoke a token now (its browser sessions end with it).
    Revoke {
        /// Its name.
        name: String,
    },
}

/// What to do with plugins.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum PluginAction {
    /// The plugins found (the library's `plugins/`, then
    /// `RUNBOOK_PLUGIN_PATH`), and those that cannot be used, with why.
    List {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Check a plugin against the protocol: describe, its schema and
    /// example, a run of the example, a cancel, malformed requests. The
    /// example runs for real: make it harmless or pass another with `--with`.
    Test {
        /// The plugin's executable.
        path: PathBuf,
        /// The `with:` to run it with, as JSON (default: its `example`).
        #[arg(long, value_name = "JSON")]
        with: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// What to do with a metric gate.
#[derive(Debug, Subcommand)]
pub(crate) enum GateAction {
    /// Judge a `prometheus` step's conditions over the past, from
    /// Prometheus's data: when it would have fired, and how often it
    /// changes its mind (a noisy threshold), before trusting it.
    Backtest {
        /// The playbook (`NAME`, `NAME@N` or a path).
        playbook: String,
        /// The step's path, as `plan` shows it (`analysis`, `roll[web1].analysis`).
        #[arg(long, value_name = "PATH")]
        step: String,
        /// How far back (`6h`, `7d`).
        #[arg(long, default_value = "24h", value_name = "DURATION")]
        since: String,
        /// Time between evaluations (default: the range / 360, at least 1s).
        #[arg(long, value_name = "DURATION")]
        every: Option<String>,
        #[command(flatten)]
        inputs: InputArgs,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// What to do with the state store.
#[derive(Debug, Clone, Copy, Subcommand)]
pub(crate) enum StateAction {
    /// Apply the schema migrations (SQLite file or PostgreSQL) and print the version.
    Migrate,
}

/// Who answers an approval, and about what.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AnswerArgs {
    /// The run id (a unique prefix is enough).
    pub(crate) run: String,
    /// The questions answered, by step path (`runbook status RUN` lists
    /// them); none: the only one the run waits at (with several, name them
    /// or give `--all`).
    #[arg(value_name = "STEP")]
    pub(crate) steps: Vec<String>,
    /// Answer every question the run waits at.
    #[arg(long, conflicts_with = "steps")]
    pub(crate) all: bool,
    /// Who answers (default: $RUNBOOK_USER, else $USER).
    #[arg(long = "as", value_name = "NAME")]
    pub(crate) who: Option<String>,
    /// Why; recorded in the journal and shown by `status`.
    #[arg(long)]
    pub(crate) comment: Option<String>,
    /// The plan hash you reviewed (`runbook status RUN` shows it): refused if
    /// the run's differs.
    #[arg(long, value_name = "HASH")]
    pub(crate) plan_hash: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// For people.
    Text,
    /// One JSON document.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Docs {
    /// The step kinds: parameters and outputs.
    Steps,
    /// The man page (roff), for `man runbook`.
    Man,
}
