//! `brim completions SHELL`: prints a completion script for bash, zsh, fish, elvish or
//! PowerShell, generated from the same clap definition as the parser, so it never drifts.

use clap_complete::Shell;

#[derive(clap::Args)]
pub(crate) struct CompletionsArgs {
    /// Shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: Shell,
}

/// Writes the script for `cmd` (the whole `brim` command tree) to stdout.
pub(crate) fn run(a: CompletionsArgs, cmd: &mut clap::Command) {
    clap_complete::generate(a.shell, cmd, "brim", &mut std::io::stdout());
}

/// Where each shell looks for completions, for `--help`.
pub(crate) const INSTALL_HELP: &str = "\
Install:
  bash  brim completions bash > /etc/bash_completion.d/brim
        (or: source <(brim completions bash) in ~/.bashrc)
  zsh   brim completions zsh > \"${fpath[1]}/_brim\"   (then restart zsh)
  fish  brim completions fish > ~/.config/fish/completions/brim.fish";

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: Shell) -> String {
        let mut cmd = clap::Command::new("brim")
            .subcommand(clap::Command::new("top").arg(clap::Arg::new("interval").long("interval")));
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, "brim", &mut out);
        String::from_utf8(out).unwrap_or_else(|e| panic!("{shell} script is not UTF-8: {e}"))
    }

    #[test]
    fn scripts_name_subcommands_and_flags() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = script(shell);
            assert!(s.contains("top"), "{shell}: {s}");
            assert!(s.contains("interval"), "{shell}: {s}");
        }
    }
}
