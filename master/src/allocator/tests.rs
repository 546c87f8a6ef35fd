//! Unit tests (data-driven) and properties of the allocator; the baseline is the oracle.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use brim_proto::{RangeSet, Resources};
use proptest::prelude::*;

use super::{Allocation, Allocator, AllocatorConfig, BaselineAllocator, Quota};

fn r(s: &str) -> Resources {
    match Resources::parse(s) {
        Ok(r) => r,
        Err(e) => panic!("test resources `{s}` should parse: {e}"),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn new_allocator() -> Allocator {
    Allocator::new(AllocatorConfig::default())
}

/// `(framework, agent, resources)` of each allocation, in decision order.
fn summary(allocs: &[Allocation]) -> Vec<(String, String, String)> {
    allocs
        .iter()
        .map(|a| {
            (
                a.framework_id.clone(),
                a.agent_id.clone(),
                a.resources.to_string(),
            )
        })
        .collect()
}

/// Builds a cluster: `agents` are `(id, resources)`, `frameworks` are `(id, role)`.
fn cluster(agents: &[(&str, &str)], frameworks: &[(&str, &str)]) -> Allocator {
    let mut a = new_allocator();
    for (id, res) in agents {
        a.add_agent(id, r(res), &[]);
    }
    for (id, role) in frameworks {
        a.add_framework(id, role);
    }
    a
}

/// Runs one full cycle at `now` and checks the decisions against `expected`
/// (`(framework, agent, resources)` in order), and that the baseline decides the same.
#[track_caller]
fn check_cycle(a: &mut Allocator, now: Duration, expected: &[(&str, &str, &str)]) {
    let got = summary(&a.allocate(now));
    let want: Vec<(String, String, String)> = expected
        .iter()
        .map(|(f, ag, res)| (f.to_string(), ag.to_string(), r(res).to_string()))
        .collect();
    assert_eq!(got, want, "allocations of the cycle at {now:?}");
}

// ---- unit tests ----

/// `(framework, agent, unreserved, reserved)` of each allocation, in decision order.
fn summary_reserved(allocs: &[Allocation]) -> Vec<(String, String, String, String)> {
    allocs
        .iter()
        .map(|a| {
            (
                a.framework_id.clone(),
                a.agent_id.clone(),
                a.resources.to_string(),
                a.reserved.to_string(),
            )
        })
        .collect()
}

/// f1 (role db) takes the whole agent, reserves part of it and gives everything back.
fn reserved_cluster() -> Allocator {
    let mut a = cluster(&[("a1", "cpus:4;mem:4096")], &[("f1", "db"), ("f2", "web")]);
    let got = a.allocate(secs(0));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].framework_id, "f1");
    a.reserve("f1", "a1", "db", &r("cpus:2;mem:1024"))
        .expect("f1 holds the offer");
    a.recover("f1", "a1", &r("cpus:2;mem:3072"), None, secs(0));
    a.recover_reserved("f1", "a1", "db", &r("cpus:2;mem:1024"), None, secs(0));
    assert_eq!(
        a.agent_reservations("a1"),
        vec![("db".to_string(), r("cpus:2;mem:1024"))]
    );
    assert_eq!(a.allocated_total(), Resources::new());
    a
}

#[test]
fn reserved_resources_are_offered_only_to_their_role() {
    let mut a = reserved_cluster();
    // f2 (web) is offered the agent's unreserved part only; f1 gets its role's reservation
    // by itself after the stages, although the agent was offered to f2.
    a.suppress("f1");
    let got = summary_reserved(&a.allocate(secs(1)));
    assert_eq!(
        got,
        vec![(
            "f2".to_string(),
            "a1".to_string(),
            r("cpus:2;mem:3072").to_string(),
            String::new()
        )]
    );
    a.revive("f1");
    let got = summary_reserved(&a.allocate(secs(2)));
    assert_eq!(
        got,
        vec![(
            "f1".to_string(),
            "a1".to_string(),
            String::new(),
            r("cpus:2;mem:1024").to_string()
        )]
    );
    // What f1 holds of its reservation counts to its role's share.
    assert_eq!(a.role_share("db"), 0.5);
}

#[test]
fn a_framework_picked_for_an_agent_gets_its_reservation_with_it() {
    let mut a = reserved_cluster();
    a.suppress("f2");
    let got = summary_reserved(&a.allocate(secs(1)));
    assert_eq!(
        got,
        vec![(
            "f1".to_string(),
            "a1".to_string(),
            r("cpus:2;mem:3072").to_string(),
            r("cpus:2;mem:1024").to_string()
        )]
    );
    assert_eq!(a.role_share("db"), 1.0);
}

#[test]
fn unreserve_returns_resources_to_the_shared_pool() {
    let mut a = reserved_cluster();
    a.suppress("f2");
    a.allocate(secs(1));
    assert!(
        a.unreserve("f1", "a1", "web", &r("cpus:1")).is_err(),
        "another role's reservation"
    );
    assert!(
        a.unreserve("f1", "a1", "db", &r("cpus:3")).is_err(),
        "more than reserved"
    );
    a.unreserve("f1", "a1", "db", &r("cpus:2;mem:1024"))
        .expect("held");
    assert!(a.agent_reservations("a1").is_empty());
    a.remove_framework("f1");
    a.revive("f2");
    check_cycle(&mut a, secs(2), &[("f2", "a1", "cpus:4;mem:4096")]);
}

#[test]
fn reserve_needs_resources_the_framework_holds() {
    let mut a = cluster(&[("a1", "cpus:4;mem:4096")], &[("f1", "db")]);
    assert!(a.reserve("f1", "a1", "db", &r("cpus:1")).is_err());
    assert!(a.reserve("nope", "a1", "db", &r("cpus:1")).is_err());
    a.allocate(secs(0));
    assert!(a.reserve("f1", "a1", "db", &r("cpus:5")).is_err());
    assert!(a.agent_reservations("a1").is_empty());
}

#[test]
fn removed_framework_gives_its_reservation_back_to_the_role() {
    let mut a = reserved_cluster();
    a.add_framework("f3", "db");
    a.suppress("f2");
    a.suppress("f3");
    a.allocate(secs(1));
    a.remove_framework("f1");
    a.revive("f3");
    let got = summary_reserved(&a.allocate(secs(2)));
    assert_eq!(
        got,
        vec![(
            "f3".to_string(),
            "a1".to_string(),
            r("cpus:2;mem:3072").to_string(),
            r("cpus:2;mem:1024").to_string()
        )]
    );
}

#[test]
fn restored_reservations_charge_the_tasks_that_use_them() {
    let mut a = new_allocator();
    a.add_framework("f1", "db");
    a.add_framework("f2", "web");
    a.add_agent("a1", r("cpus:4;mem:4096"), &[]);
    a.set_agent_reservations(
        "a1",
        &[("db".into(), r("cpus:2;mem:1024"))],
        &[("f1".into(), "db".into(), r("cpus:1;mem:512"))],
    );
    assert_eq!(a.framework_allocated("f1"), r("cpus:1;mem:512"));
    a.suppress("f1");
    check_cycle(&mut a, secs(0), &[("f2", "a1", "cpus:2;mem:3072")]);
    a.revive("f1");
    let got = summary_reserved(&a.allocate(secs(1)));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].3, r("cpus:1;mem:512").to_string());
}

#[test]
fn one_framework_gets_every_agent_whole() {
    let mut a = cluster(
        &[
            ("a1", "cpus:4;mem:1024;ports:[31000-31010]"),
            ("a2", "cpus:2;mem:512"),
        ],
        &[("f1", "web")],
    );
    check_cycle(
        &mut a,
        secs(0),
        &[
            ("f1", "a1", "cpus:4;mem:1024;ports:[31000-31010]"),
            ("f1", "a2", "cpus:2;mem:512"),
        ],
    );
    // Everything is outstanding now: the next cycle offers nothing.
    check_cycle(&mut a, secs(1), &[]);
    assert_eq!(a.framework_allocated("f1"), a.total());
    assert_eq!(a.allocated_total(), a.total());
    assert_eq!(a.role_share("web"), 1.0);
}

#[test]
fn drf_alternates_between_equal_roles() {
    let agents: Vec<(String, &str)> = (0..4)
        .map(|i| (format!("a{i}"), "cpus:1;mem:100"))
        .collect();
    let agents: Vec<(&str, &str)> = agents.iter().map(|(i, x)| (i.as_str(), *x)).collect();
    let mut a = cluster(&agents, &[("f1", "r1"), ("f2", "r2")]);
    check_cycle(
        &mut a,
        secs(0),
        &[
            ("f1", "a0", "cpus:1;mem:100"),
            ("f2", "a1", "cpus:1;mem:100"),
            ("f1", "a2", "cpus:1;mem:100"),
            ("f2", "a3", "cpus:1;mem:100"),
        ],
    );
    assert_eq!(a.role_share("r1"), 0.5);
    assert_eq!(a.role_share("r2"), 0.5);
}

#[test]
fn frameworks_within_a_role_share_fairly() {
    let mut a = cluster(
        &[
            ("a0", "cpus:1;mem:100"),
            ("a1", "cpus:1;mem:100"),
            ("a2", "cpus:1;mem:100"),
        ],
        &[("f1", "r"), ("f2", "r"), ("g", "other")],
    );
    check_cycle(
        &mut a,
        secs(0),
        &[
            ("f1", "a0", "cpus:1;mem:100"),
            ("g", "a1", "cpus:1;mem:100"),
            ("f2", "a2", "cpus:1;mem:100"),
        ],
    );
}

#[test]
fn weights_scale_shares() {
    let ids: Vec<String> = (0..8).map(|i| format!("a{i}")).collect();
    let agents: Vec<(&str, &str)> = ids.iter().map(|i| (i.as_str(), "cpus:1;mem:10")).collect();
    let mut a = cluster(&agents, &[("light", "r1"), ("heavy", "r3")]);
    a.set_weight("r3", 3.0);
    a.set_weight("r1", -2.0); // ignored
    a.allocate(secs(0));
    assert_eq!(a.framework_allocated("light").scalar("cpus"), 2.0);
    assert_eq!(a.framework_allocated("heavy").scalar("cpus"), 6.0);
    assert_eq!(a.role_share("r3"), 0.75 / 3.0);
    assert_eq!(a.weight("r1"), 1.0);
}

#[test]
fn tiny_leftovers_are_not_offered() {
    // (agent resources, offered?) — skipped only when both cpus and mem are under threshold.
    for (res, offered) in [
        ("cpus:0.009;mem:31", false),
        ("ports:[1-100]", false),
        ("cpus:0.01;mem:1", true),
        ("cpus:0.001;mem:32", true),
        ("disk:1000", false),
    ] {
        let mut a = cluster(&[("a", res)], &[("f", "r")]);
        assert_eq!(
            !a.allocate(secs(0)).is_empty(),
            offered,
            "agent with `{res}`"
        );
    }
}

#[test]
fn inactive_agents_inactive_and_suppressed_frameworks_get_nothing() {
    let mut a = cluster(
        &[("a1", "cpus:1;mem:64"), ("a2", "cpus:1;mem:64")],
        &[("f", "r")],
    );
    a.set_agent_active("a1", false);
    check_cycle(&mut a, secs(0), &[("f", "a2", "cpus:1;mem:64")]);
    a.set_agent_active("a1", true);
    a.set_framework_active("f", false);
    check_cycle(&mut a, secs(1), &[]);
    a.set_framework_active("f", true);
    a.suppress("f");
    check_cycle(&mut a, secs(2), &[]);
    a.revive("f");
    check_cycle(&mut a, secs(3), &[("f", "a1", "cpus:1;mem:64")]);
    // An inactive framework keeps what it holds.
    a.set_framework_active("f", false);
    assert_eq!(a.framework_allocated("f"), r("cpus:2;mem:128"));
}

#[test]
fn refuse_filters_expire_and_revive_clears_them() {
    let mut a = cluster(&[("a1", "cpus:1;mem:64")], &[("f", "r"), ("g", "r")]);
    check_cycle(&mut a, secs(0), &[("f", "a1", "cpus:1;mem:64")]);
    a.recover("f", "a1", &r("cpus:1;mem:64"), Some(secs(10)), secs(1));
    // f is filtered, so g gets it even though both have share 0.
    check_cycle(&mut a, secs(2), &[("g", "a1", "cpus:1;mem:64")]);
    a.recover("g", "a1", &r("cpus:1;mem:64"), Some(secs(100)), secs(3));
    check_cycle(&mut a, secs(4), &[]);
    check_cycle(&mut a, secs(10), &[]);
    check_cycle(&mut a, secs(11), &[("f", "a1", "cpus:1;mem:64")]);
    a.recover("f", "a1", &r("cpus:1;mem:64"), Some(secs(100)), secs(12));
    check_cycle(&mut a, secs(13), &[]);
    a.revive("g");
    check_cycle(&mut a, secs(14), &[("g", "a1", "cpus:1;mem:64")]);
    // No filter: offered again right away.
    a.recover("g", "a1", &r("cpus:1;mem:64"), None, secs(15));
    check_cycle(&mut a, secs(15), &[("g", "a1", "cpus:1;mem:64")]);
    a.recover(
        "g",
        "a1",
        &r("cpus:1;mem:64"),
        Some(Duration::ZERO),
        secs(16),
    );
    check_cycle(&mut a, secs(16), &[("g", "a1", "cpus:1;mem:64")]);
    assert_eq!(a.default_refuse(), secs(5));
}

#[test]
fn quota_guarantee_comes_before_fair_share() {
    let ids: Vec<String> = (0..6).map(|i| format!("a{i}")).collect();
    let agents: Vec<(&str, &str)> = ids.iter().map(|i| (i.as_str(), "cpus:2;mem:100")).collect();
    let mut a = cluster(&agents, &[("q", "prod"), ("x", "dev"), ("y", "test")]);
    a.set_quota(
        "prod",
        Quota {
            guarantee: r("cpus:5"),
            limit: None,
        },
    );
    check_cycle(
        &mut a,
        secs(0),
        &[
            // Stage 1: prod until 5 cpus are met (three agents of 2).
            ("q", "a0", "cpus:2;mem:100"),
            ("q", "a1", "cpus:2;mem:100"),
            ("q", "a2", "cpus:2;mem:100"),
            // Stage 2: fair share; prod is far ahead, the others catch up.
            ("x", "a3", "cpus:2;mem:100"),
            ("y", "a4", "cpus:2;mem:100"),
            ("x", "a5", "cpus:2;mem:100"),
        ],
    );
}

#[test]
fn quota_limit_caps_offers() {
    let mut a = cluster(
        &[
            ("a0", "cpus:4;mem:400;ports:[1-10]"),
            ("a1", "cpus:4;mem:400"),
            ("a2", "cpus:4;mem:400"),
        ],
        &[("f", "capped")],
    );
    a.set_quota(
        "capped",
        Quota {
            guarantee: Resources::new(),
            limit: Some(r("cpus:6")),
        },
    );
    check_cycle(
        &mut a,
        secs(0),
        &[
            ("f", "a0", "cpus:4;mem:400;ports:[1-10]"),
            ("f", "a1", "cpus:2;mem:400"),
        ],
    );
    // a1 keeps 2 cpus free but the role is at its limit; a new framework elsewhere gets them.
    a.add_framework("g", "free");
    check_cycle(
        &mut a,
        secs(1),
        &[("g", "a1", "cpus:2"), ("g", "a2", "cpus:4;mem:400")],
    );
    assert_eq!(a.framework_allocated("f").scalar("cpus"), 6.0);
    // Removing the quota lifts the limit.
    a.set_quota("capped", Quota::default());
    assert!(a.quota("capped").is_none());
    a.suppress("g");
    a.recover("g", "a2", &r("cpus:4;mem:400"), None, secs(2));
    check_cycle(&mut a, secs(2), &[("f", "a2", "cpus:4;mem:400")]);
}

#[test]
fn removing_a_framework_returns_its_resources() {
    let mut a = cluster(
        &[("a1", "cpus:2;mem:64;ports:[5-9]")],
        &[("f", "r"), ("g", "r")],
    );
    check_cycle(&mut a, secs(0), &[("f", "a1", "cpus:2;mem:64;ports:[5-9]")]);
    a.remove_framework("f");
    assert!(a.framework_allocated("f").is_empty());
    assert!(a.allocated_total().is_empty());
    check_cycle(&mut a, secs(1), &[("g", "a1", "cpus:2;mem:64;ports:[5-9]")]);
}

#[test]
fn removing_an_agent_forgets_what_was_allocated_there() {
    let mut a = cluster(
        &[("a1", "cpus:2;mem:64"), ("a2", "cpus:2;mem:64")],
        &[("f", "r")],
    );
    a.allocate(secs(0));
    a.remove_agent("a1");
    assert_eq!(a.framework_allocated("f"), r("cpus:2;mem:64"));
    assert_eq!(a.total(), r("cpus:2;mem:64"));
    assert_eq!(a.role_share("r"), 1.0);
    a.remove_agent("a1"); // unknown: no-op
    a.add_agent("a1", r("cpus:2;mem:64"), &[]);
    check_cycle(&mut a, secs(1), &[("f", "a1", "cpus:2;mem:64")]);
}

#[test]
fn ranges_recovered_in_part_are_offered_again() {
    let mut a = cluster(
        &[("a1", "cpus:4;mem:256;ports:[31000-31009]")],
        &[("f", "r")],
    );
    a.allocate(secs(0));
    // The framework launched a task with 1 cpu and port 31003; the rest comes back.
    a.recover(
        "f",
        "a1",
        &r("cpus:3;mem:200;ports:[31000-31002,31004-31009]"),
        None,
        secs(1),
    );
    check_cycle(
        &mut a,
        secs(1),
        &[("f", "a1", "cpus:3;mem:200;ports:[31000-31002,31004-31009]")],
    );
    assert_eq!(
        a.framework_allocated("f"),
        r("cpus:4;mem:256;ports:[31000-31009]")
    );
    // Recovering what it does not hold changes nothing; more than it holds releases all.
    a.recover("f", "a1", &r("ports:[1-5];disk:10"), None, secs(2));
    assert_eq!(a.allocated_total(), a.total());
    a.recover("f", "a1", &r("cpus:100"), None, secs(3));
    assert_eq!(a.allocated_total(), r("mem:256;ports:[31000-31009]"));
    a.recover("g", "a1", &r("mem:256"), None, secs(3));
    assert_eq!(a.allocated_total(), r("mem:256;ports:[31000-31009]"));
}

#[test]
fn sets_are_offered_whole() {
    let mut a = cluster(
        &[("a1", "cpus:1;mem:64;gpus:{g0,g1}")],
        &[("f", "r"), ("g", "s")],
    );
    check_cycle(
        &mut a,
        secs(0),
        &[("f", "a1", "cpus:1;mem:64;gpus:{g0,g1}")],
    );
    a.recover(
        "f",
        "a1",
        &r("cpus:1;mem:64;gpus:{g1}"),
        Some(secs(60)),
        secs(0),
    );
    check_cycle(&mut a, secs(1), &[("g", "a1", "cpus:1;mem:64;gpus:{g1}")]);
}

#[test]
fn used_resources_count_at_registration() {
    let mut a = new_allocator();
    a.add_framework("f", "r");
    a.add_agent(
        "a1",
        r("cpus:4;mem:400;ports:[1-10]"),
        &[
            ("f".to_string(), r("cpus:1;mem:100;ports:[1-1]")),
            ("ghost".to_string(), r("cpus:1;mem:100")),
            // More than what is left: only what fits counts.
            ("f".to_string(), r("cpus:10;ports:[2-2,50-60]")),
        ],
    );
    assert_eq!(a.framework_allocated("f"), r("cpus:3;mem:100;ports:[1-2]"));
    assert_eq!(a.framework_allocated("ghost"), r("cpus:1;mem:100"));
    // The ghost framework sits in role `*`, inactive, until it is added.
    assert_eq!(a.role_share("*"), 0.25);
    check_cycle(&mut a, secs(0), &[("f", "a1", "mem:200;ports:[3-10]")]);
    a.add_framework("ghost", "batch");
    assert_eq!(a.role_share("*"), 0.0);
    assert_eq!(a.role_share("batch"), 0.25);
    a.recover("ghost", "a1", &r("cpus:1;mem:100"), None, secs(1));
    check_cycle(&mut a, secs(1), &[("ghost", "a1", "cpus:1;mem:100")]);
}

#[test]
fn incremental_cycle_walks_only_the_given_agents() {
    let mut a = cluster(
        &[("a1", "cpus:1;mem:64"), ("a2", "cpus:1;mem:64")],
        &[("f", "r")],
    );
    let got = a.allocate_agents(
        &["a2".to_string(), "nope".to_string(), "a2".to_string()],
        secs(0),
    );
    assert_eq!(
        summary(&got),
        vec![("f".into(), "a2".into(), "cpus:1;mem:64".into())]
    );
    check_cycle(&mut a, secs(1), &[("f", "a1", "cpus:1;mem:64")]);
}

#[test]
fn re_adding_a_framework_can_change_its_role() {
    let mut a = cluster(&[("a1", "cpus:1;mem:64")], &[("f", "r1")]);
    a.allocate(secs(0));
    a.add_framework("f", "r2");
    assert_eq!(a.role_share("r1"), 0.0);
    assert_eq!(a.role_share("r2"), 1.0);
    assert_eq!(a.roles().collect::<Vec<_>>(), vec!["r1", "r2"]);
}

#[test]
fn slots_are_compacted_without_changing_decisions() {
    let mut a = new_allocator();
    let mut b = BaselineAllocator::new(AllocatorConfig::default());
    for i in 0..2100 {
        let (fw, ag) = (format!("f{i}"), format!("a{i}"));
        for_both(&mut a, &mut b, |x| {
            x.add_framework(&fw, "r");
            x.add_agent(&ag, r("cpus:1;mem:64"), &[]);
        });
    }
    for i in (0..2100).filter(|i| i % 3 != 0) {
        let (fw, ag) = (format!("f{i}"), format!("a{i}"));
        for_both(&mut a, &mut b, |x| {
            x.remove_framework(&fw);
            x.remove_agent(&ag);
        });
    }
    let now = secs(0);
    let fast = a.allocate(now);
    assert_eq!(fast.len(), 700);
    assert_eq!(fast, b.allocate(now));
    a.recover("f3", "a3", &r("cpus:1;mem:64"), Some(secs(5)), now);
    b.recover("f3", "a3", &r("cpus:1;mem:64"), Some(secs(5)), now);
    for i in 2100..3000 {
        let (fw, ag) = (format!("f{i}"), format!("a{i}"));
        for_both(&mut a, &mut b, |x| {
            x.add_framework(&fw, "r");
            x.add_agent(&ag, r("cpus:1;mem:64"), &[]);
            x.remove_framework(&format!("f{}", i - 2100));
        });
    }
    assert_eq!(a.allocate(now), b.allocate(now));
}

/// Runs the same calls on the allocator and the baseline.
fn for_both(a: &mut Allocator, b: &mut BaselineAllocator, f: impl Fn(&mut dyn Api)) {
    f(a);
    f(b);
}

/// The calls `for_both` drives on both allocators.
trait Api {
    fn add_agent(&mut self, id: &str, total: Resources, used: &[(String, Resources)]);
    fn remove_agent(&mut self, id: &str);
    fn add_framework(&mut self, id: &str, role: &str);
    fn remove_framework(&mut self, id: &str);
}

macro_rules! impl_api {
    ($t:ty) => {
        impl Api for $t {
            fn add_agent(&mut self, id: &str, total: Resources, used: &[(String, Resources)]) {
                <$t>::add_agent(self, id, total, used)
            }
            fn remove_agent(&mut self, id: &str) {
                <$t>::remove_agent(self, id)
            }
            fn add_framework(&mut self, id: &str, role: &str) {
                <$t>::add_framework(self, id, role)
            }
            fn remove_framework(&mut self, id: &str) {
                <$t>::remove_framework(self, id)
            }
        }
    };
}

impl_api!(Allocator);
impl_api!(BaselineAllocator);

// ---- properties ----

const AGENTS: usize = 6;
const FRAMEWORKS: usize = 5;
const ROLES: [&str; 3] = ["r0", "r1", "r2"];

#[derive(Clone, Debug)]
enum Op {
    AddAgent {
        agent: usize,
        cpus: u32,
        mem: u32,
        ports: (u64, u64),
        used: Option<(usize, u32)>,
    },
    RemoveAgent(usize),
    SetAgentActive(usize, bool),
    AddFramework(usize, usize),
    RemoveFramework(usize),
    SetFrameworkActive(usize, bool),
    Suppress(usize),
    Revive(usize),
    SetWeight(usize, u32),
    SetQuota {
        role: usize,
        guarantee: u32,
        limit: Option<u32>,
    },
    /// Recovers part of the `pick`-th outstanding holding (in the model's order).
    Recover {
        pick: usize,
        whole: bool,
        refuse: Option<u64>,
    },
    Allocate,
    AllocateAgents(Vec<usize>),
    Tick(u64),
}

fn arb_op() -> impl Strategy<Value = Op> {
    let fw = 0..FRAMEWORKS;
    let ag = 0..AGENTS;
    prop_oneof![
        3 => (ag.clone(), 1u32..16, 1u32..4096, (0u64..40, 0u64..20), proptest::option::of((0..FRAMEWORKS + 1, 0u32..4)))
            .prop_map(|(agent, cpus, mem, ports, used)| Op::AddAgent { agent, cpus, mem, ports, used }),
        1 => ag.clone().prop_map(Op::RemoveAgent),
        1 => (ag.clone(), any::<bool>()).prop_map(|(a, b)| Op::SetAgentActive(a, b)),
        3 => (fw.clone(), 0..ROLES.len()).prop_map(|(f, r)| Op::AddFramework(f, r)),
        1 => fw.clone().prop_map(Op::RemoveFramework),
        1 => (fw.clone(), any::<bool>()).prop_map(|(f, b)| Op::SetFrameworkActive(f, b)),
        1 => fw.clone().prop_map(Op::Suppress),
        1 => fw.clone().prop_map(Op::Revive),
        1 => (0..ROLES.len(), 1u32..5).prop_map(|(r, w)| Op::SetWeight(r, w)),
        1 => (0..ROLES.len(), 0u32..20, proptest::option::of(1u32..30))
            .prop_map(|(role, guarantee, limit)| Op::SetQuota { role, guarantee, limit }),
        5 => (any::<usize>(), any::<bool>(), proptest::option::of(1u64..5))
            .prop_map(|(pick, whole, refuse)| Op::Recover { pick, whole, refuse }),
        4 => Just(Op::Allocate),
        1 => proptest::collection::vec(ag, 0..4).prop_map(Op::AllocateAgents),
        2 => (1u64..4).prop_map(Op::Tick),
    ]
}

fn agent_id(i: usize) -> String {
    format!("agent-{i}")
}

fn framework_id(i: usize) -> String {
    format!("fw-{i}")
}

/// What the test believes is outstanding, from the allocations it was handed.
#[derive(Default)]
struct Model {
    totals: BTreeMap<String, Resources>,
    held: BTreeMap<(String, String), Resources>,
    /// `(framework, agent)` -> refused until.
    filters: BTreeMap<(String, String), Duration>,
    suppressed: BTreeSet<String>,
}

impl Model {
    fn holdings_on<'a>(
        &'a self,
        agent: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Resources)> + 'a {
        self.held
            .iter()
            .filter(move |((_, a), _)| a == agent)
            .map(|((f, _), r)| (f, r))
    }

    /// Checks one decided allocation against what is outstanding, then records it.
    fn offer(&mut self, alloc: &Allocation, now: Duration) -> Result<(), TestCaseError> {
        let total = self
            .totals
            .get(&alloc.agent_id)
            .cloned()
            .unwrap_or_default();
        prop_assert!(
            total.contains(&alloc.resources),
            "offer {alloc:?} is not within the agent's total {total}"
        );
        let mut sum = alloc.resources.clone();
        for (f, held) in self.holdings_on(&alloc.agent_id) {
            for (name, set) in alloc.resources.all_ranges() {
                if let Some(h) = held.ranges(name) {
                    prop_assert!(
                        set.difference(h) == *set,
                        "{name} {set} offered while {f} holds {h} on {}",
                        alloc.agent_id
                    );
                }
            }
            for (name, items) in alloc.resources.all_sets() {
                if let Some(h) = held.set(name) {
                    prop_assert!(items.is_disjoint(h), "{name} offered twice");
                }
            }
            sum.add(held);
        }
        for (name, v) in sum.scalars() {
            prop_assert!(
                v <= total.scalar(name) + 1e-9,
                "{name}: {v} outstanding on {} which has {}",
                alloc.agent_id,
                total.scalar(name)
            );
        }
        prop_assert!(
            !self.suppressed.contains(&alloc.framework_id),
            "suppressed {} got an offer",
            alloc.framework_id
        );
        let key = (alloc.framework_id.clone(), alloc.agent_id.clone());
        if let Some(&until) = self.filters.get(&key) {
            prop_assert!(
                now >= until,
                "filter of {key:?} until {until:?} ignored at {now:?}"
            );
        }
        self.held.entry(key).or_default().add(&alloc.resources);
        Ok(())
    }
}

/// Applies `ops` to the allocator, the baseline and the model, checking after every step.
fn run_ops(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut fast = new_allocator();
    let mut base = BaselineAllocator::new(AllocatorConfig::default());
    let mut model = Model::default();
    let mut now = Duration::ZERO;
    let mut known_frameworks = BTreeSet::new();
    for op in ops {
        let mut decided = None;
        match op {
            Op::AddAgent {
                agent,
                cpus,
                mem,
                ports,
                used,
            } => {
                let id = agent_id(*agent);
                let mut total = Resources::cpus_mem(*cpus as f64, *mem as f64).expect("valid");
                total
                    .set_ranges("ports", RangeSet::new(vec![(ports.0, ports.0 + ports.1)]))
                    .expect("valid");
                let used: Vec<(String, Resources)> = used
                    .iter()
                    .map(|&(f, c)| (framework_id(f), r(&format!("cpus:{}", c.min(*cpus)))))
                    .collect();
                model.held.retain(|(_, a), _| *a != id);
                for (f, res) in &used {
                    known_frameworks.insert(f.clone());
                    if !res.is_empty() {
                        model
                            .held
                            .entry((f.clone(), id.clone()))
                            .or_default()
                            .add(res);
                    }
                }
                model.totals.insert(id.clone(), total.clone());
                model.filters.retain(|(_, a), _| *a != id);
                fast.add_agent(&id, total.clone(), &used);
                base.add_agent(&id, total, &used);
            }
            Op::RemoveAgent(a) => {
                let id = agent_id(*a);
                model.held.retain(|(_, x), _| *x != id);
                model.totals.remove(&id);
                model.filters.retain(|(_, x), _| *x != id);
                fast.remove_agent(&id);
                base.remove_agent(&id);
            }
            Op::SetAgentActive(a, on) => {
                fast.set_agent_active(&agent_id(*a), *on);
                base.set_agent_active(&agent_id(*a), *on);
            }
            Op::AddFramework(f, role) => {
                known_frameworks.insert(framework_id(*f));
                fast.add_framework(&framework_id(*f), ROLES[*role]);
                base.add_framework(&framework_id(*f), ROLES[*role]);
            }
            Op::RemoveFramework(f) => {
                let id = framework_id(*f);
                let before = fast.allocated_total();
                let held = fast.framework_allocated(&id);
                model.held.retain(|(x, _), _| *x != id);
                model.filters.retain(|(x, _), _| *x != id);
                model.suppressed.remove(&id);
                known_frameworks.remove(&id);
                fast.remove_framework(&id);
                base.remove_framework(&id);
                // Its scalars went back to the free pools.
                for (name, v) in before.scalars() {
                    let after = fast.allocated_total().scalar(name);
                    prop_assert!((after - (v - held.scalar(name))).abs() < 1e-6);
                }
            }
            Op::SetFrameworkActive(f, on) => {
                fast.set_framework_active(&framework_id(*f), *on);
                base.set_framework_active(&framework_id(*f), *on);
            }
            Op::Suppress(f) => {
                let id = framework_id(*f);
                if known_frameworks.contains(&id) {
                    model.suppressed.insert(id.clone());
                }
                fast.suppress(&id);
                base.suppress(&id);
            }
            Op::Revive(f) => {
                let id = framework_id(*f);
                model.suppressed.remove(&id);
                model.filters.retain(|(x, _), _| *x != id);
                fast.revive(&id);
                base.revive(&id);
            }
            Op::SetWeight(role, w) => {
                fast.set_weight(ROLES[*role], *w as f64);
                base.set_weight(ROLES[*role], *w as f64);
            }
            Op::SetQuota {
                role,
                guarantee,
                limit,
            } => {
                let q = Quota {
                    guarantee: r(&format!("cpus:{guarantee}")),
                    limit: limit.map(|l| r(&format!("cpus:{l};mem:{}", l * 200))),
                };
                fast.set_quota(ROLES[*role], q.clone());
                base.set_quota(ROLES[*role], q);
            }
            Op::Recover {
                pick,
                whole,
                refuse,
            } => {
                if model.held.is_empty() {
                    continue;
                }
                let key = model
                    .held
                    .keys()
                    .nth(pick % model.held.len())
                    .cloned()
                    .expect("in range");
                let held = model.held[&key].clone();
                let give_back = if *whole {
                    held.clone()
                } else {
                    // Half the scalars (rounded to thousandths) and the first half of each range.
                    let mut part = Resources::new();
                    for (n, v) in held.scalars() {
                        part.set_scalar(n, (v * 500.0).round() / 1000.0)
                            .expect("valid");
                    }
                    for (n, set) in held.all_ranges() {
                        part.set_ranges(n, set.take(set.count() / 2))
                            .expect("valid");
                    }
                    part
                };
                let refuse = refuse.map(secs);
                let kept = held.saturating_sub(&give_back);
                if kept.is_empty() {
                    model.held.remove(&key);
                } else {
                    model.held.insert(key.clone(), kept);
                }
                if let Some(d) = refuse {
                    model.filters.insert(key.clone(), now + d);
                }
                fast.recover(&key.0, &key.1, &give_back, refuse, now);
                base.recover(&key.0, &key.1, &give_back, refuse, now);
            }
            Op::Allocate => {
                let got = fast.allocate(now);
                prop_assert_eq!(
                    &got,
                    &base.allocate(now),
                    "full cycle differs from the baseline"
                );
                decided = Some(got);
            }
            Op::AllocateAgents(list) => {
                let ids: Vec<String> = list.iter().map(|&a| agent_id(a)).collect();
                let got = fast.allocate_agents(&ids, now);
                prop_assert_eq!(
                    &got,
                    &base.allocate_agents(&ids, now),
                    "incremental cycle differs"
                );
                for a in &got {
                    prop_assert!(
                        ids.contains(&a.agent_id),
                        "{} was not asked for",
                        a.agent_id
                    );
                }
                decided = Some(got);
            }
            Op::Tick(s) => now += secs(*s),
        }
        if let Some(allocs) = decided {
            let mut seen = BTreeSet::new();
            for a in &allocs {
                prop_assert!(
                    seen.insert(a.agent_id.clone()),
                    "{} offered twice in a cycle",
                    a.agent_id
                );
                model.offer(a, now)?;
            }
        }
        // Views agree with the model (scalars) and with the baseline.
        for f in 0..FRAMEWORKS + 1 {
            let id = framework_id(f);
            let mut want = Resources::new();
            for ((x, _), res) in &model.held {
                if *x == id {
                    want.add(res);
                }
            }
            let got = fast.framework_allocated(&id);
            for name in want.scalars().chain(got.scalars()).map(|(n, _)| n) {
                prop_assert!(
                    (got.scalar(name) - want.scalar(name)).abs() < 1e-6,
                    "{id} holds {got} but the model says {want}"
                );
                prop_assert!(
                    (base.framework_allocated(&id).scalar(name) - got.scalar(name)).abs() < 1e-6
                );
            }
        }
        for role in ROLES.iter().chain(["*"].iter()) {
            prop_assert_eq!(
                fast.role_share(role),
                base.role_share(role),
                "share of {}",
                role
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Never more than an agent has, never the same resource twice, filters and suppression
    /// respected, removal returns resources, views consistent — and the same decisions as
    /// the baseline.
    #[test]
    fn random_operations_keep_invariants_and_match_baseline(ops in proptest::collection::vec(arb_op(), 1..60)) {
        run_ops(&ops)?;
    }

    /// Under contention, frameworks that keep what they get end with dominant shares in the
    /// ratio of their roles' weights.
    #[test]
    fn dominant_shares_converge_to_weights(
        sizes in proptest::collection::vec(1u32..4, 120..200),
        release in proptest::collection::vec(0usize..1000, 20),
    ) {
        let mut a = new_allocator();
        a.set_weight("w1", 1.0);
        a.set_weight("w3", 3.0);
        a.add_framework("light", "w1");
        a.add_framework("heavy", "w3");
        for (i, c) in sizes.iter().enumerate() {
            a.add_agent(&agent_id(i), r(&format!("cpus:{c};mem:{}", c * 1024)), &[]);
        }
        let mut held: Vec<Allocation> = Vec::new();
        let mut now = Duration::ZERO;
        for (cycle, seed) in release.iter().enumerate() {
            // Some holdings end (tasks finish) and return; frameworks keep the rest.
            if cycle > 0 && !held.is_empty() {
                for k in 0..held.len() / 4 {
                    let i = (seed + k * 7919) % held.len();
                    let gone = held.swap_remove(i);
                    a.recover(&gone.framework_id, &gone.agent_id, &gone.resources, None, now);
                }
            }
            held.extend(a.allocate(now));
            now += secs(1);
        }
        let light = a.role_share("w1") * 1.0;
        let heavy = a.role_share("w3") * 3.0;
        let biggest = 3.0 / sizes.iter().sum::<u32>() as f64;
        prop_assert!(light > 0.0);
        let ratio = heavy / light;
        prop_assert!((heavy + light - 1.0).abs() < 1e-9, "everything is allocated");
        // Off by at most one agent on each side.
        let (lo, hi) = ((0.75 - biggest) / (0.25 + biggest), (0.75 + biggest) / (0.25 - biggest));
        prop_assert!(ratio >= lo && ratio <= hi, "ratio {ratio} not within [{lo}, {hi}]");
    }

    /// A role's guarantee is satisfied before anyone gets a fair share: on a fresh cluster
    /// big enough, the first decisions of a cycle all go to the guaranteed role, until it
    /// holds its guarantee.
    #[test]
    fn quota_guarantee_is_met_first(
        sizes in proptest::collection::vec(1u32..8, 2..40),
        guarantee_frac in 0.0f64..1.0,
        others in 1usize..4,
    ) {
        let mut a = new_allocator();
        let total: u32 = sizes.iter().sum();
        for (i, c) in sizes.iter().enumerate() {
            a.add_agent(&agent_id(i), r(&format!("cpus:{c};mem:100")), &[]);
        }
        for k in 0..others {
            a.add_framework(&framework_id(k), &format!("fair{k}"));
        }
        a.add_framework("q", "prod");
        let guarantee = (total as f64 * guarantee_frac).floor();
        a.set_quota("prod", Quota { guarantee: r(&format!("cpus:{guarantee}")), limit: None });
        let allocs = a.allocate(Duration::ZERO);
        let mut got = 0.0;
        for x in &allocs {
            if got < guarantee {
                prop_assert_eq!(&x.framework_id, "q", "fair share before the guarantee was met");
            }
            if x.framework_id == "q" {
                got += x.resources.scalar("cpus");
            }
        }
        prop_assert!(got >= guarantee, "prod got {got} < guarantee {guarantee}");
    }

    /// Limits are never exceeded, whatever the agents look like.
    #[test]
    fn quota_limit_is_never_exceeded(
        sizes in proptest::collection::vec((1u32..8, 1u32..2000), 1..40),
        limit in 1u32..40,
    ) {
        let mut a = new_allocator();
        for (i, (c, m)) in sizes.iter().enumerate() {
            a.add_agent(&agent_id(i), r(&format!("cpus:{c};mem:{m}")), &[]);
        }
        a.add_framework("f", "capped");
        a.add_framework("g", "capped");
        a.set_quota("capped", Quota { guarantee: Resources::new(), limit: Some(r(&format!("cpus:{limit}"))) });
        a.allocate(Duration::ZERO);
        let held = a.framework_allocated("f").scalar("cpus") + a.framework_allocated("g").scalar("cpus");
        prop_assert!(held <= limit as f64 + 1e-9);
        let cluster = a.total().scalar("cpus");
        prop_assert!(held >= (limit as f64).min(cluster) - 1e-9, "limited role got {held}, less than it could");
    }
}
