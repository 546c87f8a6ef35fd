//! Pure decisions of the cron framework: what a fire does given the runs still active, and
//! whether a finished attempt is retried.

use serde::{Deserialize, Serialize};

/// What to do when a job fires while earlier runs are still queued or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// Start another run alongside.
    Allow,
    /// Skip this fire (recorded as a skipped run).
    #[default]
    Forbid,
    /// Kill the active runs, then start this one.
    Replace,
}

impl std::str::FromStr for Concurrency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "allow" => Ok(Concurrency::Allow),
            "forbid" => Ok(Concurrency::Forbid),
            "replace" => Ok(Concurrency::Replace),
            _ => Err(format!(
                "`{s}` is not a concurrency policy: use allow, forbid or replace"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireAction {
    Launch,
    Skip,
    ReplaceThenLaunch,
}

pub fn on_fire(policy: Concurrency, active_runs: usize) -> FireAction {
    match (policy, active_runs) {
        (_, 0) | (Concurrency::Allow, _) => FireAction::Launch,
        (Concurrency::Forbid, _) => FireAction::Skip,
        (Concurrency::Replace, _) => FireAction::ReplaceThenLaunch,
    }
}

/// Retry a failed attempt (`attempt` is 1-based) while `retries` allow.
pub fn should_retry(succeeded: bool, replaced: bool, attempt: u32, retries: u32) -> bool {
    !succeeded && !replaced && attempt <= retries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_decisions() {
        use Concurrency::*;
        use FireAction::*;
        for (policy, active, want) in [
            (Allow, 0, Launch),
            (Allow, 3, Launch),
            (Forbid, 0, Launch),
            (Forbid, 1, Skip),
            (Replace, 0, Launch),
            (Replace, 2, ReplaceThenLaunch),
        ] {
            assert_eq!(
                on_fire(policy, active),
                want,
                "{policy:?} with {active} active"
            );
        }
    }

    #[test]
    fn retries() {
        assert!(!should_retry(true, false, 1, 3));
        assert!(should_retry(false, false, 1, 1));
        assert!(!should_retry(false, false, 2, 1));
        assert!(!should_retry(false, true, 1, 3));
        assert!(!should_retry(false, false, 1, 0));
        assert_eq!("Replace".parse::<Concurrency>(), Ok(Concurrency::Replace));
        assert!("sometimes".parse::<Concurrency>().is_err());
    }
}
