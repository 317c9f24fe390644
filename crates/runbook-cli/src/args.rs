//! Command-line arguments.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// runbook: operational runbooks as versioned, resumable YAML playbooks.
#[derive(Debug, Parser)]
#[command(name = "runbook", version, about, long_about = None, propagate_version = true)]
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

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List the playbooks of the library.
    List,
    /// Show a playbook: description, inputs, secrets, objectives and steps.
    Show {
        /// `NAME`, `NAME@VERSION`, or a path to a `.yaml` file.
        playbook: String,
    },
    /// Check playbooks and report every problem (default: the whole library).
    Validate {
        /// `NAME`, `NAME@VERSION`, or paths to `.yaml` files.
        #[arg(value_name = "PLAYBOOK")]
        targets: Vec<String>,
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
    },
    /// Print the step graph.
    Graph {
        /// `NAME`, `NAME@VERSION`, or a path to a `.yaml` file.
        playbook: String,
        /// Graph format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Print the JSON Schema of playbooks (or of one step kind's `with:`).
    Schema {
        /// Print only this kind's `with:` schema.
        #[arg(long)]
        kind: Option<String>,
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
}
