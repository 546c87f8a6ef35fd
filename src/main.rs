//! `brim`: one binary for the master, the agent, `brim dev` and the operator/framework CLI.

mod cli;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "brim",
    version,
    about = "brim: fill machines to the brim",
    long_about = cli::help::LONG_ABOUT,
    after_long_help = cli::help::OVERVIEW
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    security: cli::security::SecurityArgs,
}

// Parsed once per process: the size of the largest variant (the daemons' flags) is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Master + a local agent in one process, embedded registry: the first thing to run.
    #[command(after_long_help = cli::help::DEV)]
    Dev(cli::dev::DevArgs),
    /// Run a master.
    #[command(after_long_help = cli::help::MASTER)]
    Master(cli::daemon::MasterArgs),
    /// Run an agent on this machine.
    #[command(after_long_help = cli::help::AGENT)]
    Agent(cli::daemon::AgentArgs),
    /// Run a command (or N instances of it) on the cluster and stream its output.
    #[command(after_long_help = cli::help::RUN)]
    Run(cli::run::RunArgs),
    /// List tasks.
    #[command(after_long_help = cli::help::TASKS)]
    Tasks(cli::query::TasksArgs),
    /// Work with one task: `brim task exec TASK -- CMD` runs CMD inside it.
    Task(cli::task::TaskArgs),
    /// List agents.
    #[command(after_long_help = cli::help::AGENTS)]
    Agents(cli::query::AgentsArgs),
    /// List frameworks.
    #[command(after_long_help = cli::help::FRAMEWORKS)]
    Frameworks(cli::query::QueryArgs),
    /// Long-running services (hosted by the master): apply, list, show, scale, restart, remove.
    Service(cli::service::ServiceArgs),
    /// Scheduled jobs (hosted by the master): add, list, runs, remove.
    Cron(cli::cron::CronArgs),
    /// Live per-task and per-agent usage and slack in the terminal (q quits).
    #[command(after_long_help = cli::help::TOP)]
    Top(cli::top::TopArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_long_help = cli::completions::INSTALL_HELP)]
    Completions(cli::completions::CompletionsArgs),
    /// Print brim's version (and the master's, with --master or BRIM_MASTER).
    Version(cli::version::VersionArgs),
    /// Make a cluster CA and certificates signed by it (for --tls-cert/--tls-key/--tls-ca).
    #[command(after_long_help = cli::help::CERTS)]
    Certs(cli::security::CertsArgs),
}

/// The commands that talk to a master as clients (TLS settings installed).
async fn run_client(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Run(a) => cli::run::run(a).await,
        Command::Tasks(a) => cli::query::tasks(a).await.map(|()| 0),
        Command::Task(a) => cli::task::run(a).await,
        Command::Agents(a) => cli::query::agents(a).await.map(|()| 0),
        Command::Frameworks(a) => cli::query::frameworks(a).await.map(|()| 0),
        Command::Service(a) => cli::service::run(a).await,
        Command::Cron(a) => cli::cron::run(a).await,
        Command::Top(a) => cli::top::run(a).await.map(|()| 0),
        Command::Dev(_)
        | Command::Master(_)
        | Command::Agent(_)
        | Command::Certs(_)
        | Command::Completions(_)
        | Command::Version(_) => Ok(0),
    }
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
    let security = cli.security;
    let result = rt.block_on(async move {
        let client = || security.install_client();
        match cli.command {
            Command::Dev(a) => cli::dev::run(a, &security).await.map(|()| 0),
            Command::Master(a) => cli::daemon::master(a, &security).await.map(|()| 0),
            Command::Agent(a) => cli::daemon::agent(a, &security).await.map(|()| 0),
            Command::Certs(a) => cli::security::certs(a).map(|()| 0),
            Command::Completions(a) => {
                cli::completions::run(a, &mut Cli::command());
                Ok(0)
            }
            Command::Version(a) => {
                // `brim version` works without any CA: the master's version is a bonus.
                let _ = client();
                cli::version::run(a).await.map(|()| 0)
            }
            command => match client() {
                Err(e) => Err(e),
                Ok(()) => run_client(command).await,
            },
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
            vec!["brim", "service", "list"],
            vec!["brim", "service", "apply", "app.toml"],
            vec![
                "brim",
                "cron",
                "add",
                "j",
                "--schedule",
                "*/5 * * * *",
                "--",
                "echo",
                "hi",
            ],
            vec!["brim", "cron", "runs", "j"],
            vec!["brim", "top", "--interval", "0.5", "--sort", "mem"],
            vec!["brim", "completions", "bash"],
            vec!["brim", "completions", "zsh"],
            vec!["brim", "completions", "fish"],
            vec!["brim", "version"],
            vec![
                "brim", "certs", "/tmp/ca", "master", "agent1", "--host", "m1",
            ],
            vec!["brim", "--insecure", "tasks"],
            vec![
                "brim", "run", "--tls-ca", "ca.pem", "--token", "t", "--", "true",
            ],
        ] {
            if let Err(e) = Cli::try_parse_from(&args) {
                panic!("{args:?} should parse: {e}");
            }
        }
        assert!(Cli::try_parse_from(["brim", "agent", "--resources", "cpus:-1"]).is_err());
    }
}
