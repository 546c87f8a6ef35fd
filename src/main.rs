//! `brim`: one binary for the master, the agent, `brim dev` and the operator/framework CLI.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "brim", version, about = "brim: fill machines to the brim")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Master + a local agent in one process, embedded registry: the first thing to run.
    Dev(cli::dev::DevArgs),
    /// Run a master.
    Master(cli::daemon::MasterArgs),
    /// Run an agent on this machine.
    Agent(cli::daemon::AgentArgs),
    /// Run a command (or N instances of it) on the cluster and stream its output.
    Run(cli::run::RunArgs),
    /// List tasks.
    Tasks(cli::query::QueryArgs),
    /// List agents.
    Agents(cli::query::QueryArgs),
    /// List frameworks.
    Frameworks(cli::query::QueryArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli::init_logging(matches!(
        cli.command,
        Command::Dev(_) | Command::Master(_) | Command::Agent(_)
    ));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("brim: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Dev(a) => cli::dev::run(a).await.map(|()| 0),
            Command::Master(a) => cli::daemon::master(a).await.map(|()| 0),
            Command::Agent(a) => cli::daemon::agent(a).await.map(|()| 0),
            Command::Run(a) => cli::run::run(a).await,
            Command::Tasks(a) => cli::query::tasks(a).await.map(|()| 0),
            Command::Agents(a) => cli::query::agents(a).await.map(|()| 0),
            Command::Frameworks(a) => cli::query::frameworks(a).await.map(|()| 0),
        }
    });
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("brim: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_parses_its_defaults() {
        for args in [
            vec!["brim", "dev"],
            vec!["brim", "master"],
            vec![
                "brim",
                "agent",
                "--resources",
                "cpus:2;mem:512",
                "--attributes",
                "rack:r1",
            ],
            vec!["brim", "run", "--", "echo", "hi"],
            vec!["brim", "tasks", "--json"],
            vec!["brim", "agents"],
            vec!["brim", "frameworks"],
        ] {
            if let Err(e) = Cli::try_parse_from(&args) {
                panic!("{args:?} should parse: {e}");
            }
        }
        assert!(Cli::try_parse_from(["brim", "agent", "--resources", "cpus:-1"]).is_err());
    }
}
