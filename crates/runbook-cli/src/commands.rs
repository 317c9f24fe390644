//! One function per command; each returns the exit code.

use crate::Exit;
use crate::args::{Cli, Command, GraphFormat, InputArgs, Output};
use crate::diagnostics::{eprint_all, plural};
use crate::fail::{Done, Failure};
use crate::loading::{limited, load, load_inventory, resolve_inputs};
use runbook_core::kind::Registry;
use runbook_core::library::{self, Library};

/// Runs the command; a failure is said once, here, and becomes its exit code.
pub(crate) fn dispatch(cli: Cli) -> Exit {
    command(cli).unwrap_or_else(|f| f.report())
}

fn command(cli: Cli) -> Done {
    let state = cli.state.clone();
    let inventory = cli.inventory.clone();
    let lib = Library::new(&cli.playbooks);
    let registry = crate::registry::registry(&cli.playbooks);
    let inv = || load_inventory(inventory.as_deref());
    match cli.command {
        Command::List { output } => list(&lib, &registry, output),
        Command::Show { playbook, output } => show(&lib, &registry, &playbook, output),
        Command::Validate { targets, output } => validate(&lib, &registry, &targets, output),
        Command::Plan {
            playbook,
            inputs,
            output,
            live,
        } => {
            let inv = limited(inv()?, &inputs)?;
            plan(&lib, &registry, &playbook, &inputs, (output, live), &inv)
        }
        Command::Inventory { output } => {
            let inv = runbook_runner::catalog::Inventory::of(&inv()?);
            match output {
                Output::Json => crate::json_out::print(&inv),
                Output::Text => print!("{}", runbook_runner::text::inventory(&inv)),
            }
            Ok(Exit::Ok)
        }
        Command::Run {
            playbook,
            inputs,
            exec,
            submit,
            wait,
        } => {
            if submit {
                return crate::runs::submit(state, &lib, &registry, &playbook, (&inputs, &exec), wait);
            }
            let inv = limited(inv()?, &inputs)?;
            crate::runs::run(state, &lib, &registry, &playbook, &inputs, &exec, &inv)
        }
        Command::Worker {
            name,
            concurrency,
            lease_ttl,
            poll,
            exit_when_idle,
            output,
        } => {
            let options = crate::worker::Options {
                name,
                concurrency,
                lease_ttl,
                poll,
                exit_when_idle,
                output,
            };
            crate::worker::worker(state, &registry, &options, &inv()?)
        }
        Command::Resume {
            run,
            rerun,
            mark_done,
            set_output,
            to_current,
            exec,
        } => {
            let decisions = runbook_runner::Decisions {
                rerun: &rerun,
                mark_done: &mark_done,
                set_output: &set_output,
                to_current,
                library: Some(&lib),
                ..runbook_runner::Decisions::default()
            };
            crate::runs::resume(state, &registry, &run, &decisions, &exec, &inv()?)
        }
        Command::Approve { answer, exec } => crate::runs::answer(state, &registry, &answer, true, &exec, &inv()?),
        Command::Reject { answer, exec } => crate::runs::answer(state, &registry, &answer, false, &exec, &inv()?),
        Command::Cancel { run, exec } => crate::runs::cancel(state, &registry, &run, &exec, &inv()?),
        Command::Serve {
            listen,
            max_parallel,
            tls_cert,
            tls_key,
            trusted_proxy,
            identity_header,
            require_token,
            roles,
            submit,
        } => {
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(
                    runbook_server::Tls::from_pem_files(&cert, &key)
                        .map_err(|e| Failure::invalid(format!("{e}; the server did not start")))?,
                ),
                _ => None,
            };
            let identity = match (require_token, trusted_proxy.is_empty()) {
                (true, _) => runbook_server::Identity::Tokens,
                (false, true) => runbook_server::Identity::Process,
                (false, false) => runbook_server::Identity::TrustedProxy {
                    header: identity_header,
                    from: trusted_proxy,
                },
            };
            let roles = roles.map(|f| runbook_runner::access::Roles::read(&f)).transpose()?;
            let options = runbook_server::ServeOptions {
                max_parallel,
                identity,
                roles,
                queue: submit,
                ..runbook_server::ServeOptions::default()
            };
            crate::serve::serve(state, lib, &registry, &inv()?, (&listen, options, tls))
        }
        Command::Token { action } => crate::tokens::token(state, action),
        Command::Workers { output } => crate::worker::list(state, output),
        Command::Locks { output } => crate::locks::list(state, output),
        Command::State {
            action: crate::args::StateAction::Migrate,
        } => crate::runs::migrate(state),
        Command::Daemon { schedules, metrics } => crate::daemon::daemon(
            state,
            &lib,
            cli.playbooks.clone(),
            inventory.clone(),
            &registry,
            &schedules,
            metrics.as_deref(),
        ),
        Command::Report { run, format } => crate::report::report(state, &registry, &run, format),
        Command::Unlock { key, force } => crate::locks::unlock(state, &key, force),
        Command::Status { run, output } => crate::history::status(state, run.as_deref(), output),
        Command::Logs {
            run,
            step,
            follow,
            output,
        } => crate::history::logs(state, &run, (step.as_deref(), follow), output),
        Command::History {
            playbook,
            limit,
            output,
        } => crate::history::history(state, &playbook, limit, output),
        Command::Graph { playbook, format } => graph(&lib, &registry, &playbook, format),
        Command::Schema {
            output_of: Some(command),
            ..
        } => {
            let s = runbook_runner::catalog::schema_of(&command).ok_or_else(|| {
                Failure::invalid(format!("`{command}` has no JSON document of its own")).hint(format!(
                    "one of {}; `run`, `plan`, `status` and the others print events: `runbook schema --events`",
                    runbook_runner::catalog::COMMANDS.join(", ")
                ))
            })?;
            crate::json_out::print(&s);
            Ok(Exit::Ok)
        }
        Command::Schema { openapi: true, .. } => {
            crate::json_out::print(&runbook_server::openapi::document());
            Ok(Exit::Ok)
        }
        Command::Schema { kind, events, .. } => schema(&registry, kind.as_deref(), events),
        Command::Docs {
            what: crate::args::Docs::Steps,
        } => {
            print!("{}", crate::reference::steps(&registry));
            Ok(Exit::Ok)
        }
        Command::Docs {
            what: crate::args::Docs::Man,
        } => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            page.render(&mut std::io::stdout()).map_err(|e| Failure::Message {
                exit: Exit::Failed,
                message: format!("cannot write the man page: {e}"),
                hint: None,
            })?;
            Ok(Exit::Ok)
        }
        Command::Plugin { action } => crate::plugins::plugin(&cli.playbooks, &registry, action),
        Command::Gate { action } => {
            let inv = inv()?;
            crate::gates::gate(&lib, &registry, &inv, action)
        }
        // Answered in main, where the settings' sources are known.
        Command::Config => Ok(Exit::Ok),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "runbook", &mut std::io::stdout());
            Ok(Exit::Ok)
        }
    }
}

/// A library that cannot be read.
fn unreadable(e: library::LibraryError) -> Failure {
    Failure::invalid(e.to_string()).hint("pass `--playbooks DIR` or set RUNBOOK_PLAYBOOKS")
}

fn list(lib: &Library, registry: &Registry, output: Output) -> Done {
    let list = runbook_runner::catalog::list(lib, registry).map_err(unreadable)?;
    let exit = if list.playbooks.iter().all(|p| p.valid) {
        Exit::Ok
    } else {
        Exit::Invalid
    };
    if output == Output::Json {
        crate::json_out::print(&list);
        return Ok(exit);
    }
    print!("{}", runbook_runner::text::list(&list));
    Ok(exit)
}

fn show(lib: &Library, registry: &Registry, spec: &str, output: Output) -> Done {
    let loaded = load(lib, registry, spec)?;
    let pb = &loaded.playbook;
    if output == Output::Json {
        crate::json_out::print(&runbook_runner::catalog::Show::of(&loaded));
        return Ok(Exit::Ok);
    }
    print!("{}", runbook_runner::text::playbook(pb, &loaded.source.name));
    Ok(Exit::Ok)
}

fn validate(lib: &Library, registry: &Registry, targets: &[String], output: Output) -> Done {
    use runbook_runner::catalog::Found;
    let checked = runbook_runner::catalog::check(lib, registry, targets).map_err(unreadable)?;
    let json = output == Output::Json;
    let mut files = Vec::new();
    for target in checked {
        match &target.found {
            _ if json => {}
            Found::Error(e) => eprintln!("error: {e}"),
            Found::Valid(l) => {
                eprint_all(&l.source, &l.warnings);
                let warn = if l.warnings.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", plural(l.warnings.len(), "warning"))
                };
                let pb = &l.playbook;
                println!("ok    {} v{}  {}{warn}", pb.name, pb.version, l.source.name);
            }
            Found::Invalid(inv) => {
                eprint_all(&inv.source, &inv.diagnostics);
                println!("FAIL  {}  {}", inv.source.name, plural(inv.error_count(), "error"));
            }
        }
        files.push(target.checked);
    }
    let valid = files.iter().filter(|f| f.valid).count();
    let invalid = files.len() - valid;
    if json {
        crate::json_out::print(&runbook_runner::catalog::Validate { files, valid, invalid });
    } else {
        println!("{valid} valid, {invalid} invalid");
    }
    Ok(if invalid > 0 { Exit::Invalid } else { Exit::Ok })
}

fn plan(
    lib: &Library,
    registry: &Registry,
    spec: &str,
    args: &InputArgs,
    (output, live): (Output, bool),
    inventory: &runbook_core::inventory::Inventory,
) -> Done {
    let loaded = load(lib, registry, spec)?;
    let inputs = resolve_inputs(&loaded.playbook, args)?;
    let pctx = runbook_engine::plan::PlanContext {
        env: std::env::vars().collect(),
        user: std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned()),
        inventory: inventory.to_template(),
    };
    let mut plan = runbook_engine::plan::plan(&loaded, &inputs, registry, &pctx);
    if live {
        crate::runs::look(&mut plan, &loaded.playbook, registry)?;
    }
    match output {
        Output::Text => print!("{}", runbook_engine::plan_text::render(&plan)),
        Output::Json => crate::json_out::print(&plan),
    }
    Ok(Exit::Ok)
}

fn graph(lib: &Library, registry: &Registry, spec: &str, format: GraphFormat) -> Done {
    let loaded = load(lib, registry, spec)?;
    let format = match format {
        GraphFormat::Dot => runbook_engine::graph::Format::Dot,
        GraphFormat::Mermaid => runbook_engine::graph::Format::Mermaid,
    };
    print!("{}", runbook_engine::graph::render(&loaded.playbook, format));
    Ok(Exit::Ok)
}

fn schema(registry: &Registry, kind: Option<&str>, events: bool) -> Done {
    let schema = match kind {
        None if events => runbook_runner::catalog::events_schema(),
        None => runbook_core::validate::full_schema(registry),
        Some(k) => match registry.get(k) {
            Some(kind) => kind.params_schema(),
            None => {
                let hint = runbook_core::diag::suggestion(k, registry.names())
                    .unwrap_or_else(|| format!("known kinds: {}", registry.names().collect::<Vec<_>>().join(", ")));
                return Err(Failure::invalid(format!("unknown step kind `{k}`")).hint(hint));
            }
        },
    };
    crate::json_out::print(&schema);
    Ok(Exit::Ok)
}
