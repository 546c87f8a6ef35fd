//! Placement constraints (Marathon's): `field:UNIQUE`, `field:LIKE:regex`,
//! `field:UNLIKE:regex`, `field:CLUSTER:value`, `field:GROUP_BY[:n]`. `field` is `hostname`
//! or the name of an agent attribute. Pure: an agent's facts and the service's current
//! placements in, a reason out.

use std::collections::{BTreeMap, BTreeSet};

/// What placement knows about an agent.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct AgentFacts {
    pub agent_id: String,
    pub hostname: String,
    pub attributes: Vec<(String, String)>,
}

impl AgentFacts {
    /// `hostname`, or the attribute of that name.
    pub fn value(&self, field: &str) -> Option<&str> {
        if field == "hostname" {
            return Some(&self.hostname);
        }
        self.attributes
            .iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.as_str())
    }

    /// `host h1` or `agent a1 (host h1)` for messages.
    pub fn describe(&self) -> String {
        format!("agent {} (host {})", short(&self.agent_id), self.hostname)
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[derive(Debug, Clone)]
pub enum Op {
    Unique,
    Like(regex::Regex),
    Unlike(regex::Regex),
    Cluster(String),
    /// Spread evenly over the field's values; `Some(n)`: expect n distinct values.
    GroupBy(Option<u32>),
}

#[derive(Debug, Clone)]
pub struct Constraint {
    pub field: String,
    pub op: Op,
    pub text: String,
}

impl Constraint {
    pub fn parse(text: &str) -> Result<Constraint, String> {
        let mut parts = text.splitn(3, ':');
        let field = parts.next().unwrap_or("").trim();
        let op = parts.next().map(str::trim).unwrap_or("");
        let arg = parts.next();
        if field.is_empty() {
            return Err("missing field: write `field:OP[:value]`, e.g. `hostname:UNIQUE`".into());
        }
        let regex = |a: Option<&str>| -> Result<regex::Regex, String> {
            let a = a.ok_or_else(|| format!("{op} needs a regex: `{field}:{op}:regex`"))?;
            regex::Regex::new(&format!("^(?:{a})$"))
                .map_err(|e| format!("invalid regex `{a}`: {e}"))
        };
        let op = match op.to_ascii_uppercase().as_str() {
            "UNIQUE" if arg.is_none() => Op::Unique,
            "LIKE" => Op::Like(regex(arg)?),
            "UNLIKE" => Op::Unlike(regex(arg)?),
            "CLUSTER" => Op::Cluster(
                arg.filter(|a| !a.is_empty())
                    .ok_or_else(|| format!("CLUSTER needs a value: `{field}:CLUSTER:value`"))?
                    .to_string(),
            ),
            "GROUP_BY" => Op::GroupBy(match arg {
                None => None,
                Some(n) => {
                    Some(n.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        format!("GROUP_BY count `{n}` must be a positive integer")
                    })?)
                }
            }),
            "UNIQUE" => return Err("UNIQUE takes no value".into()),
            "" => {
                return Err(format!(
                "missing operator after `{field}`: use UNIQUE, LIKE, UNLIKE, CLUSTER or GROUP_BY"
            ))
            }
            other => {
                return Err(format!(
                    "unknown operator `{other}`: use UNIQUE, LIKE, UNLIKE, CLUSTER or GROUP_BY"
                ))
            }
        };
        Ok(Constraint {
            field: field.to_string(),
            op,
            text: text.to_string(),
        })
    }

    /// Can an instance go on `agent`, given where the service's live instances are (`placed`)
    /// and every agent seen (`known`, for GROUP_BY)? `Err` says why not.
    pub fn check(
        &self,
        agent: &AgentFacts,
        placed: &[AgentFacts],
        known: &[AgentFacts],
    ) -> Result<(), String> {
        self.check_static(agent)?;
        let Some(value) = agent.value(&self.field) else {
            return Ok(()); // UNLIKE on a missing attribute
        };
        match &self.op {
            Op::Unique => {
                if placed.iter().any(|p| p.value(&self.field) == Some(value)) {
                    return Err(format!(
                        "{}: {}={value} already runs an instance",
                        self.text, self.field
                    ));
                }
            }
            Op::GroupBy(expected) => {
                let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                for k in known.iter().chain(std::iter::once(agent)) {
                    if let Some(v) = k.value(&self.field) {
                        counts.entry(v).or_insert(0);
                    }
                }
                for p in placed {
                    if let Some(v) = p.value(&self.field) {
                        *counts.entry(v).or_insert(0) += 1;
                    }
                }
                let values_missing = expected.is_some_and(|n| (counts.len() as u32) < n);
                let min = if values_missing {
                    0
                } else {
                    counts.values().copied().min().unwrap_or(0)
                };
                let mine = counts.get(value).copied().unwrap_or(0);
                if mine > min {
                    return Err(format!(
                        "{}: {}={value} has {mine} instances, another value has {min}",
                        self.text, self.field
                    ));
                }
            }
            Op::Like(_) | Op::Unlike(_) | Op::Cluster(_) => {}
        }
        Ok(())
    }

    /// The part of the check that depends only on the agent (never changes while it runs).
    pub fn check_static(&self, agent: &AgentFacts) -> Result<(), String> {
        let value = agent.value(&self.field);
        match (&self.op, value) {
            (Op::Unlike(re), Some(v)) if re.is_match(v) => {
                Err(format!("{}: {}={v} matches", self.text, self.field))
            }
            (Op::Unlike(_), _) => Ok(()),
            (_, None) => Err(format!(
                "{}: the agent has no `{}` attribute",
                self.text, self.field
            )),
            (Op::Like(re), Some(v)) if !re.is_match(v) => {
                Err(format!("{}: {}={v} does not match", self.text, self.field))
            }
            (Op::Cluster(want), Some(v)) if v != want => {
                Err(format!("{}: {}={v}, not {want}", self.text, self.field))
            }
            _ => Ok(()),
        }
    }
}

/// Checks every constraint; the first failure explains.
pub fn check_all(
    constraints: &[Constraint],
    agent: &AgentFacts,
    placed: &[AgentFacts],
    known: &[AgentFacts],
) -> Result<(), String> {
    constraints
        .iter()
        .try_for_each(|c| c.check(agent, placed, known))
}

/// Why `instances` instances can never all be placed on `agents` (static constraints, and
/// UNIQUE/CLUSTER capacity), or `None` when the constraints allow it.
pub fn why_unplaceable(
    constraints: &[Constraint],
    instances: u32,
    agents: &[AgentFacts],
) -> Option<String> {
    if instances == 0 {
        return None;
    }
    if agents.is_empty() {
        return Some("no agents are registered".into());
    }
    let mut reasons = Vec::new();
    let eligible: Vec<&AgentFacts> = agents
        .iter()
        .filter(
            |a| match constraints.iter().try_for_each(|c| c.check_static(a)) {
                Ok(()) => true,
                Err(why) => {
                    reasons.push(format!("{}: {why}", a.describe()));
                    false
                }
            },
        )
        .collect();
    if eligible.is_empty() {
        return Some(format!(
            "no agent satisfies the constraints ({})",
            reasons.join("; ")
        ));
    }
    for c in constraints {
        if matches!(c.op, Op::Unique) {
            let distinct: BTreeSet<&str> =
                eligible.iter().filter_map(|a| a.value(&c.field)).collect();
            if (distinct.len() as u32) < instances {
                return Some(format!(
                    "{} allows at most {} instance{} (distinct `{}` values among eligible agents: {}), but {instances} are asked",
                    c.text,
                    distinct.len(),
                    if distinct.len() == 1 { "" } else { "s" },
                    c.field,
                    distinct.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, host: &str, attrs: &[(&str, &str)]) -> AgentFacts {
        AgentFacts {
            agent_id: id.into(),
            hostname: host.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn c(text: &str) -> Constraint {
        Constraint::parse(text).unwrap_or_else(|e| panic!("`{text}`: {e}"))
    }

    #[test]
    fn parse_errors() {
        for (text, want) in [
            ("", "missing field"),
            ("rack", "missing operator"),
            ("rack:NEAR", "unknown operator `NEAR`"),
            ("rack:LIKE", "LIKE needs a regex"),
            ("rack:LIKE:(", "invalid regex"),
            ("rack:GROUP_BY:0", "must be a positive integer"),
            ("rack:CLUSTER", "CLUSTER needs a value"),
            ("hostname:UNIQUE:x", "UNIQUE takes no value"),
        ] {
            match Constraint::parse(text) {
                Ok(_) => panic!("`{text}` should be rejected"),
                Err(e) => assert!(e.contains(want), "`{text}`: `{e}` should mention `{want}`"),
            }
        }
    }

    #[test]
    fn unique_like_unlike_cluster() {
        let a1 = agent("a1", "h1", &[("rack", "r1")]);
        let a2 = agent("a2", "h2", &[("rack", "r2")]);
        let bare = agent("a3", "h3", &[]);
        let check = |cs: &str, a: &AgentFacts, placed: &[AgentFacts], want: Result<(), &str>| {
            let got = c(cs).check(a, placed, &[]);
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => assert!(e.contains(w), "{cs}: `{e}` should mention `{w}`"),
                (g, w) => panic!("{cs} on {}: got {g:?}, want {w:?}", a.agent_id),
            }
        };
        check("hostname:UNIQUE", &a1, &[], Ok(()));
        check(
            "hostname:UNIQUE",
            &a1,
            std::slice::from_ref(&a1),
            Err("hostname=h1 already runs"),
        );
        check("hostname:UNIQUE", &a2, std::slice::from_ref(&a1), Ok(()));
        check("rack:LIKE:r[12]", &a2, &[], Ok(()));
        check("rack:LIKE:r1", &a2, &[], Err("rack=r2 does not match"));
        check("rack:LIKE:r", &a1, &[], Err("does not match")); // full match, not substring
        check("rack:LIKE:r1", &bare, &[], Err("has no `rack` attribute"));
        check("rack:UNLIKE:r1", &a1, &[], Err("rack=r1 matches"));
        check("rack:UNLIKE:r1", &bare, &[], Ok(()));
        check("rack:CLUSTER:r1", &a2, &[], Err("rack=r2, not r1"));
        check("rack:CLUSTER:r1", &a1, &[], Ok(()));
    }

    #[test]
    fn group_by_spreads_evenly() {
        let a1 = agent("a1", "h1", &[("rack", "r1")]);
        let a2 = agent("a2", "h2", &[("rack", "r2")]);
        let known = [a1.clone(), a2.clone()];
        let g = c("rack:GROUP_BY");
        assert!(g.check(&a1, &[], &known).is_ok());
        assert!(g.check(&a1, std::slice::from_ref(&a1), &known).is_err());
        assert!(g.check(&a2, std::slice::from_ref(&a1), &known).is_ok());
        assert!(g.check(&a1, &[a1.clone(), a2.clone()], &known).is_ok());
        // Expecting 3 racks while only 2 are known: a rack holding one already must wait.
        let g3 = c("rack:GROUP_BY:3");
        assert!(g3.check(&a2, std::slice::from_ref(&a1), &known).is_ok());
        assert!(g3.check(&a1, std::slice::from_ref(&a1), &known).is_err());
    }

    #[test]
    fn unplaceable_explanations() {
        let agents = [
            agent("a1", "h", &[("rack", "r1")]),
            agent("a2", "h", &[("rack", "r2")]),
        ];
        let why = |cs: &[&str], n: u32| {
            let cs: Vec<Constraint> = cs.iter().map(|s| c(s)).collect();
            why_unplaceable(&cs, n, &agents)
        };
        assert_eq!(why(&["rack:UNIQUE"], 2), None);
        let w = why(&["rack:UNIQUE"], 3).unwrap_or_default();
        assert!(
            w.contains("rack:UNIQUE allows at most 2 instances") && w.contains("r1, r2"),
            "{w}"
        );
        let w = why(&["hostname:UNIQUE"], 2).unwrap_or_default();
        assert!(w.contains("at most 1 instance "), "{w}");
        let w = why(&["rack:LIKE:zz"], 1).unwrap_or_default();
        assert!(
            w.contains("no agent satisfies") && w.contains("rack=r1 does not match"),
            "{w}"
        );
        let w = why(&["zone:GROUP_BY"], 1).unwrap_or_default();
        assert!(w.contains("no `zone` attribute"), "{w}");
        assert!(why_unplaceable(&[], 1, &[]).is_some());
    }
}
