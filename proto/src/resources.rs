//! Resource arithmetic shared by the allocator, the agent and frameworks.
//!
//! A [`Resources`] value is a bag of named scalars (`cpus`, `mem` in MiB, `disk` in MiB,
//! `gpus`, custom), range sets (`ports`) and string sets. Scalars are kept in fixed point
//! (thousandths, as Mesos does) so that adding and subtracting never drifts.
//!
//! Invariant: every value held is valid — scalars finite and > 0 (zero entries are
//! dropped), ranges sorted, merged and non-empty, sets non-empty.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::v1;

/// Why a resource description was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    #[error("resource `{name}` has invalid scalar value {value}: use a finite number >= 0")]
    InvalidScalar { name: String, value: f64 },
    #[error("resource `{name}` is too large ({value}): scalars must be below 1e12")]
    ScalarTooLarge { name: String, value: f64 },
    #[error("resource `{name}` has range {begin}-{end} with begin > end")]
    InvalidRange { name: String, begin: u64, end: u64 },
    #[error("resource has an empty name: every resource needs a name such as `cpus`")]
    EmptyName,
    #[error("resource `{0}` has no value: give a scalar, ranges or a set")]
    MissingValue(String),
    #[error("resource `{name}` is declared with two different kinds (scalar, ranges, set)")]
    MixedKinds { name: String },
    #[error("cannot parse resources `{input}`: {why} (expected e.g. `cpus:4;mem:1024;ports:[31000-32000]`)")]
    Parse { input: String, why: String },
    #[error("too many resource entries ({0}); at most 1024 are accepted")]
    TooMany(usize),
}

const MILLI: f64 = 1000.0;
const MAX_SCALAR: f64 = 1e12;
const MAX_ENTRIES: usize = 1024;

/// A normalized set of closed integer intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    /// Builds a normalized range set from possibly overlapping, unsorted intervals.
    /// Intervals must already satisfy begin <= end.
    pub fn new(mut ranges: Vec<(u64, u64)>) -> Self {
        ranges.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (b, e) in ranges {
            match out.last_mut() {
                Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => out.push((b, e)),
            }
        }
        RangeSet(out)
    }

    pub fn intervals(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of integers covered.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(b, e)| e - b + 1).sum()
    }

    pub fn contains_value(&self, v: u64) -> bool {
        self.0.iter().any(|&(b, e)| b <= v && v <= e)
    }

    pub fn contains(&self, other: &RangeSet) -> bool {
        other
            .0
            .iter()
            .all(|&(ob, oe)| self.0.iter().any(|&(b, e)| b <= ob && oe <= e))
    }

    pub fn union(&self, other: &RangeSet) -> RangeSet {
        let mut v = self.0.clone();
        v.extend_from_slice(&other.0);
        RangeSet::new(v)
    }

    /// Removes every value of `other` from `self`.
    pub fn difference(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            let mut cur = Some((b, e));
            for &(ob, oe) in &other.0 {
                let Some((cb, ce)) = cur else { break };
                if oe < cb || ob > ce {
                    continue;
                }
                if ob > cb {
                    out.push((cb, ob - 1));
                }
                cur = if oe < ce { Some((oe + 1, ce)) } else { None };
            }
            if let Some(c) = cur {
                out.push(c);
            }
        }
        RangeSet::new(out)
    }

    /// The first `n` values of the set, as a range set (fewer if the set is smaller).
    pub fn take(&self, mut n: u64) -> RangeSet {
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            if n == 0 {
                break;
            }
            let len = e - b + 1;
            let k = len.min(n);
            out.push((b, b + k - 1));
            n -= k;
        }
        RangeSet(out)
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, (b, e)) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{b}-{e}")?;
        }
        write!(f, "]")
    }
}

/// A bag of resources. See the module docs for the invariants.
///
/// Serializes (for `/state` JSON) as a flat object: scalars as numbers, ranges as
/// `"[31000-32000]"` strings, sets as arrays, e.g. `{"cpus":1.5,"mem":128,"ports":"[31000-31000]"}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// Scalar amounts in thousandths.
    scalars: BTreeMap<String, i64>,
    ranges: BTreeMap<String, RangeSet>,
    sets: BTreeMap<String, BTreeSet<String>>,
}

fn to_milli(name: &str, v: f64) -> Result<i64, ResourceError> {
    if !v.is_finite() || v < 0.0 {
        return Err(ResourceError::InvalidScalar {
            name: name.to_string(),
            value: v,
        });
    }
    if v >= MAX_SCALAR {
        return Err(ResourceError::ScalarTooLarge {
            name: name.to_string(),
            value: v,
        });
    }
    Ok((v * MILLI).round() as i64)
}

impl Resources {
    pub fn new() -> Self {
        Self::default()
    }

    /// `cpus`/`mem`(MiB) convenience constructor for tests and CLIs.
    pub fn cpus_mem(cpus: f64, mem_mib: f64) -> Result<Self, ResourceError> {
        let mut r = Resources::new();
        r.set_scalar("cpus", cpus)?;
        r.set_scalar("mem", mem_mib)?;
        Ok(r)
    }

    pub fn is_empty(&self) -> bool {
        self.scalars.is_empty() && self.ranges.is_empty() && self.sets.is_empty()
    }

    /// Scalar amount of `name` (0 when absent).
    pub fn scalar(&self, name: &str) -> f64 {
        self.scalars.get(name).map_or(0.0, |&m| m as f64 / MILLI)
    }

    /// Names and amounts of every scalar resource.
    pub fn scalars(&self) -> impl Iterator<Item = (&str, f64)> {
        self.scalars
            .iter()
            .map(|(k, &v)| (k.as_str(), v as f64 / MILLI))
    }

    pub fn set_scalar(&mut self, name: &str, value: f64) -> Result<(), ResourceError> {
        if name.is_empty() {
            return Err(ResourceError::EmptyName);
        }
        let m = to_milli(name, value)?;
        if self.ranges.contains_key(name) || self.sets.contains_key(name) {
            return Err(ResourceError::MixedKinds {
                name: name.to_string(),
            });
        }
        if m == 0 {
            self.scalars.remove(name);
        } else {
            self.scalars.insert(name.to_string(), m);
        }
        Ok(())
    }

    pub fn ranges(&self, name: &str) -> Option<&RangeSet> {
        self.ranges.get(name)
    }

    pub fn all_ranges(&self) -> impl Iterator<Item = (&str, &RangeSet)> {
        self.ranges.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn set_ranges(&mut self, name: &str, ranges: RangeSet) -> Result<(), ResourceError> {
        if name.is_empty() {
            return Err(ResourceError::EmptyName);
        }
        if self.scalars.contains_key(name) || self.sets.contains_key(name) {
            return Err(ResourceError::MixedKinds {
                name: name.to_string(),
            });
        }
        if ranges.is_empty() {
            self.ranges.remove(name);
        } else {
            self.ranges.insert(name.to_string(), ranges);
        }
        Ok(())
    }

    pub fn set(&self, name: &str) -> Option<&BTreeSet<String>> {
        self.sets.get(name)
    }

    pub fn all_sets(&self) -> impl Iterator<Item = (&str, &BTreeSet<String>)> {
        self.sets.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn set_items(&mut self, name: &str, items: BTreeSet<String>) -> Result<(), ResourceError> {
        if name.is_empty() {
            return Err(ResourceError::EmptyName);
        }
        if self.scalars.contains_key(name) || self.ranges.contains_key(name) {
            return Err(ResourceError::MixedKinds {
                name: name.to_string(),
            });
        }
        if items.is_empty() {
            self.sets.remove(name);
        } else {
            self.sets.insert(name.to_string(), items);
        }
        Ok(())
    }

    /// True when every resource in `other` is available in `self`.
    pub fn contains(&self, other: &Resources) -> bool {
        other
            .scalars
            .iter()
            .all(|(k, &v)| self.scalars.get(k).copied().unwrap_or(0) >= v)
            && other
                .ranges
                .iter()
                .all(|(k, r)| self.ranges.get(k).is_some_and(|s| s.contains(r)))
            && other
                .sets
                .iter()
                .all(|(k, s)| self.sets.get(k).is_some_and(|mine| s.is_subset(mine)))
    }

    /// Adds `other` into `self`. Kinds never mix: a name keeps the kind it first had.
    pub fn add(&mut self, other: &Resources) {
        for (k, &v) in &other.scalars {
            if self.ranges.contains_key(k) || self.sets.contains_key(k) {
                continue;
            }
            *self.scalars.entry(k.clone()).or_insert(0) += v;
        }
        for (k, r) in &other.ranges {
            if self.scalars.contains_key(k) || self.sets.contains_key(k) {
                continue;
            }
            let merged = self.ranges.get(k).map_or_else(|| r.clone(), |s| s.union(r));
            self.ranges.insert(k.clone(), merged);
        }
        for (k, s) in &other.sets {
            if self.scalars.contains_key(k) || self.ranges.contains_key(k) {
                continue;
            }
            self.sets
                .entry(k.clone())
                .or_default()
                .extend(s.iter().cloned());
        }
    }

    /// `self - other`, or `None` when `other` is not contained in `self`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        Some(self.saturating_sub(other))
    }

    /// `self - other`, dropping whatever of `other` `self` does not hold.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        let mut out = self.clone();
        for (k, &v) in &other.scalars {
            if let Some(mine) = out.scalars.get_mut(k) {
                *mine -= v.min(*mine);
                if *mine == 0 {
                    out.scalars.remove(k);
                }
            }
        }
        for (k, r) in &other.ranges {
            if let Some(mine) = out.ranges.get(k) {
                let d = mine.difference(r);
                if d.is_empty() {
                    out.ranges.remove(k);
                } else {
                    out.ranges.insert(k.clone(), d);
                }
            }
        }
        for (k, s) in &other.sets {
            if let Some(mine) = out.sets.get_mut(k) {
                for item in s {
                    mine.remove(item);
                }
                if mine.is_empty() {
                    out.sets.remove(k);
                }
            }
        }
        out
    }

    /// Validates and converts wire resources. Duplicate names of the same kind are summed.
    /// Revocable entries are skipped here; see [`Resources::from_proto_revocable`].
    /// Reserved entries are kept (with their amounts; the reservation is not part of a
    /// `Resources` value): see [`Resources::from_proto_unreserved`] and
    /// [`Resources::from_proto_reserved`] to tell them apart.
    pub fn from_proto(list: &[v1::Resource]) -> Result<Resources, ResourceError> {
        Self::from_proto_filtered(list, |r| !r.revocable)
    }

    /// Like [`Resources::from_proto`] but keeps only the entries marked revocable.
    pub fn from_proto_revocable(list: &[v1::Resource]) -> Result<Resources, ResourceError> {
        Self::from_proto_filtered(list, |r| r.revocable)
    }

    /// Like [`Resources::from_proto`] but keeps only the entries without a reservation.
    pub fn from_proto_unreserved(list: &[v1::Resource]) -> Result<Resources, ResourceError> {
        Self::from_proto_filtered(list, |r| !r.revocable && r.reservation_role.is_empty())
    }

    /// The reserved (non-revocable) entries, per reservation role.
    pub fn from_proto_reserved(
        list: &[v1::Resource],
    ) -> Result<BTreeMap<String, Resources>, ResourceError> {
        let roles: BTreeSet<&str> = list
            .iter()
            .filter(|r| !r.revocable && !r.reservation_role.is_empty())
            .map(|r| r.reservation_role.as_str())
            .collect();
        let mut out = BTreeMap::new();
        for role in roles {
            let one =
                Self::from_proto_filtered(list, |r| !r.revocable && r.reservation_role == role)?;
            if !one.is_empty() {
                out.insert(role.to_string(), one);
            }
        }
        Ok(out)
    }

    fn from_proto_filtered(
        list: &[v1::Resource],
        keep: impl Fn(&v1::Resource) -> bool,
    ) -> Result<Resources, ResourceError> {
        if list.len() > MAX_ENTRIES {
            return Err(ResourceError::TooMany(list.len()));
        }
        let mut out = Resources::new();
        for r in list {
            if r.name.is_empty() {
                return Err(ResourceError::EmptyName);
            }
            let mut one = Resources::new();
            match &r.value {
                Some(v1::resource::Value::Scalar(v)) => one.set_scalar(&r.name, *v)?,
                Some(v1::resource::Value::Ranges(rs)) => {
                    let mut iv = Vec::with_capacity(rs.range.len());
                    for x in &rs.range {
                        if x.begin > x.end {
                            return Err(ResourceError::InvalidRange {
                                name: r.name.clone(),
                                begin: x.begin,
                                end: x.end,
                            });
                        }
                        iv.push((x.begin, x.end));
                    }
                    one.set_ranges(&r.name, RangeSet::new(iv))?;
                }
                Some(v1::resource::Value::Set(s)) => {
                    one.set_items(&r.name, s.item.iter().cloned().collect())?
                }
                None => return Err(ResourceError::MissingValue(r.name.clone())),
            }
            if !keep(r) {
                continue;
            }
            out.check_kind_compatible(&one)?;
            out.add(&one);
        }
        Ok(out)
    }

    fn check_kind_compatible(&self, other: &Resources) -> Result<(), ResourceError> {
        let clash = |name: &String| ResourceError::MixedKinds { name: name.clone() };
        for k in other.scalars.keys() {
            if self.ranges.contains_key(k) || self.sets.contains_key(k) {
                return Err(clash(k));
            }
        }
        for k in other.ranges.keys() {
            if self.scalars.contains_key(k) || self.sets.contains_key(k) {
                return Err(clash(k));
            }
        }
        for k in other.sets.keys() {
            if self.scalars.contains_key(k) || self.ranges.contains_key(k) {
                return Err(clash(k));
            }
        }
        Ok(())
    }

    /// Wire form of resources reserved for `role` (by `principal`).
    pub fn to_proto_reserved(&self, role: &str, principal: &str) -> Vec<v1::Resource> {
        let mut out = self.to_proto();
        for r in &mut out {
            r.reservation_role = role.to_string();
            r.reservation_principal = principal.to_string();
        }
        out
    }

    /// Wire form; `revocable` marks every entry.
    pub fn to_proto_with(&self, revocable: bool) -> Vec<v1::Resource> {
        let mut out = Vec::new();
        for (k, &v) in &self.scalars {
            out.push(v1::Resource {
                name: k.clone(),
                value: Some(v1::resource::Value::Scalar(v as f64 / MILLI)),
                revocable,
                ..Default::default()
            });
        }
        for (k, r) in &self.ranges {
            out.push(v1::Resource {
                name: k.clone(),
                value: Some(v1::resource::Value::Ranges(v1::Ranges {
                    range: r
                        .0
                        .iter()
                        .map(|&(begin, end)| v1::Range { begin, end })
                        .collect(),
                })),
                revocable,
                ..Default::default()
            });
        }
        for (k, s) in &self.sets {
            out.push(v1::Resource {
                name: k.clone(),
                value: Some(v1::resource::Value::Set(v1::Set {
                    item: s.iter().cloned().collect(),
                })),
                revocable,
                ..Default::default()
            });
        }
        out
    }

    /// Wire form of non-revocable resources.
    pub fn to_proto(&self) -> Vec<v1::Resource> {
        self.to_proto_with(false)
    }

    /// Parses the operator syntax `cpus:4;mem:1024;ports:[31000-32000,40000-40010];zones:{a,b}`.
    pub fn parse(input: &str) -> Result<Resources, ResourceError> {
        let err = |why: &str| ResourceError::Parse {
            input: input.to_string(),
            why: why.to_string(),
        };
        let mut out = Resources::new();
        for part in input.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| err(&format!("`{part}` has no `:`")))?;
            let (name, value) = (name.trim(), value.trim());
            if name.is_empty() {
                return Err(ResourceError::EmptyName);
            }
            let mut one = Resources::new();
            if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                let mut iv = Vec::new();
                for r in inner.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                    let (b, e) = r.split_once('-').unwrap_or((r, r));
                    let b: u64 = b
                        .trim()
                        .parse()
                        .map_err(|_| err(&format!("`{r}` is not a range like 31000-32000")))?;
                    let e: u64 = e
                        .trim()
                        .parse()
                        .map_err(|_| err(&format!("`{r}` is not a range like 31000-32000")))?;
                    if b > e {
                        return Err(ResourceError::InvalidRange {
                            name: name.to_string(),
                            begin: b,
                            end: e,
                        });
                    }
                    iv.push((b, e));
                }
                one.set_ranges(name, RangeSet::new(iv))?;
            } else if let Some(inner) = value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
                let items = inner
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                one.set_items(name, items)?;
            } else {
                let v: f64 = value
                    .parse()
                    .map_err(|_| err(&format!("`{value}` is not a number")))?;
                one.set_scalar(name, v)?;
            }
            out.check_kind_compatible(&one)?;
            // A later entry with the same name replaces the earlier one (operator override).
            out.scalars.remove(name);
            out.ranges.remove(name);
            out.sets.remove(name);
            out.add(&one);
        }
        Ok(out)
    }

    /// Overrides entries of `self` with those named in `other` (used for `--resources`).
    pub fn override_with(&mut self, other: &Resources) {
        for k in other
            .scalars
            .keys()
            .chain(other.ranges.keys())
            .chain(other.sets.keys())
        {
            self.scalars.remove(k);
            self.ranges.remove(k);
            self.sets.remove(k);
        }
        self.add(other);
    }
}

impl Serialize for Resources {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(
            self.scalars.len() + self.ranges.len() + self.sets.len(),
        ))?;
        for (k, &v) in &self.scalars {
            map.serialize_entry(k, &(v as f64 / MILLI))?;
        }
        for (k, r) in &self.ranges {
            map.serialize_entry(k, &r.to_string())?;
        }
        for (k, s) in &self.sets {
            map.serialize_entry(k, s)?;
        }
        map.end()
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            if !first {
                write!(f, ";")?;
            }
            first = false;
            Ok(())
        };
        for (k, &v) in &self.scalars {
            sep(f)?;
            write!(f, "{k}:{}", v as f64 / MILLI)?;
        }
        for (k, r) in &self.ranges {
            sep(f)?;
            write!(f, "{k}:{r}")?;
        }
        for (k, s) in &self.sets {
            sep(f)?;
            let items: Vec<&str> = s.iter().map(String::as_str).collect();
            write!(f, "{k}:{{{}}}", items.join(","))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: &str) -> Resources {
        match Resources::parse(s) {
            Ok(r) => r,
            Err(e) => panic!("test input `{s}` should parse: {e}"),
        }
    }

    #[test]
    fn parse_and_display_round_trip() {
        let x = r("cpus:4;mem:1024;ports:[31000-32000,32001-32005,100-200];gpus:{a,b}");
        assert_eq!(
            x.to_string(),
            "cpus:4;mem:1024;ports:[100-200,31000-32005];gpus:{a,b}"
        );
        assert_eq!(r(&x.to_string()), x);
    }

    #[test]
    fn parse_rejects_bad_input() {
        for bad in [
            "cpus",
            "cpus:abc",
            "cpus:-1",
            "cpus:NaN",
            "cpus:inf",
            "ports:[5-1]",
            "ports:[a-b]",
            ":4",
            "cpus:1e13",
        ] {
            assert!(Resources::parse(bad).is_err(), "`{bad}` should be rejected");
        }
    }

    #[test]
    fn arithmetic() {
        let total = r("cpus:4;mem:1024;ports:[31000-31010]");
        let used = r("cpus:1.5;mem:1024;ports:[31005-31005]");
        assert!(total.contains(&used));
        let left = total.checked_sub(&used).expect("contained");
        assert_eq!(left.to_string(), "cpus:2.5;ports:[31000-31004,31006-31010]");
        assert!(left.checked_sub(&used).is_none());
        let mut back = left.clone();
        back.add(&used);
        assert_eq!(back, total);
    }

    #[test]
    fn scalars_do_not_drift() {
        let mut acc = Resources::new();
        let tenth = r("cpus:0.1");
        for _ in 0..10 {
            acc.add(&tenth);
        }
        assert_eq!(acc, r("cpus:1"));
    }

    #[test]
    fn reserved_entries_split_by_role() {
        let mut wire = r("cpus:4;mem:1024").to_proto();
        wire.extend(r("cpus:1;disk:100").to_proto_reserved("db", "alice"));
        wire.extend(r("mem:64").to_proto_reserved("web", ""));
        assert_eq!(
            Resources::from_proto(&wire).expect("valid"),
            r("cpus:5;mem:1088;disk:100")
        );
        assert_eq!(
            Resources::from_proto_unreserved(&wire).expect("valid"),
            r("cpus:4;mem:1024")
        );
        let reserved = Resources::from_proto_reserved(&wire).expect("valid");
        assert_eq!(reserved.len(), 2);
        assert_eq!(reserved["db"], r("cpus:1;disk:100"));
        assert_eq!(reserved["web"], r("mem:64"));
        assert!(wire
            .iter()
            .any(|x| x.reservation_role == "db" && x.reservation_principal == "alice"));
    }

    #[test]
    fn proto_rejects_nan_negative_and_mixed_kinds() {
        let nan = v1::Resource {
            name: "cpus".into(),
            value: Some(v1::resource::Value::Scalar(f64::NAN)),
            revocable: false,
            ..Default::default()
        };
        assert!(Resources::from_proto(&[nan]).is_err());
        let neg = v1::Resource {
            name: "mem".into(),
            value: Some(v1::resource::Value::Scalar(-5.0)),
            revocable: false,
            ..Default::default()
        };
        assert!(Resources::from_proto(&[neg]).is_err());
        let a = v1::Resource {
            name: "x".into(),
            value: Some(v1::resource::Value::Scalar(1.0)),
            revocable: false,
            ..Default::default()
        };
        let b = v1::Resource {
            name: "x".into(),
            value: Some(v1::resource::Value::Set(v1::Set {
                item: vec!["a".into()],
            })),
            revocable: false,
            ..Default::default()
        };
        assert!(matches!(
            Resources::from_proto(&[a, b]),
            Err(ResourceError::MixedKinds { .. })
        ));
        let none = v1::Resource {
            name: "x".into(),
            value: None,
            revocable: false,
            ..Default::default()
        };
        assert!(Resources::from_proto(&[none]).is_err());
    }

    fn arb_resources() -> impl Strategy<Value = Resources> {
        (
            0u32..64_000,
            0u32..1_000_000,
            proptest::collection::vec((0u64..2000, 0u64..50), 0..5),
        )
            .prop_map(|(c, m, rs)| {
                let mut x = Resources::new();
                x.set_scalar("cpus", c as f64 / 1000.0).expect("valid");
                x.set_scalar("mem", m as f64).expect("valid");
                x.set_ranges(
                    "ports",
                    RangeSet::new(rs.into_iter().map(|(b, l)| (b, b + l)).collect()),
                )
                .expect("valid");
                x
            })
    }

    proptest! {
        #[test]
        fn add_then_sub_is_identity(a in arb_resources(), b in arb_resources()) {
            let mut s = a.clone();
            s.add(&b);
            prop_assert!(s.contains(&a));
            prop_assert!(s.contains(&b));
            // Ranges may overlap, so only scalar identity is exact.
            let back = s.saturating_sub(&b);
            prop_assert_eq!(back.scalar("cpus"), a.scalar("cpus"));
            prop_assert_eq!(back.scalar("mem"), a.scalar("mem"));
        }

        /// Decoder fuzzing: any text given to the operator parser is accepted or rejected,
        /// never a panic, and whatever is accepted round-trips through Display.
        #[test]
        fn parse_never_panics(input in "[a-z:;\\[\\]{},0-9.\\-eE ]{0,64}") {
            if let Ok(r) = Resources::parse(&input) {
                prop_assert_eq!(Resources::parse(&r.to_string()).expect("display re-parses"), r);
            }
        }

        /// Decoder fuzzing: arbitrary bytes as a TaskInfo, then as resources: errors only.
        #[test]
        fn arbitrary_protobuf_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            use prost::Message;
            if let Ok(t) = v1::TaskInfo::decode(bytes.as_slice()) {
                let _ = Resources::from_proto(&t.resources);
            }
            if let Ok(r) = v1::Resource::decode(bytes.as_slice()) {
                let _ = Resources::from_proto(&[r]);
            }
        }

        #[test]
        fn proto_round_trip(a in arb_resources()) {
            prop_assert_eq!(Resources::from_proto(&a.to_proto()).expect("valid"), a);
        }

        #[test]
        fn range_difference_is_disjoint(a in arb_resources(), b in arb_resources()) {
            let (Some(ra), Some(rb)) = (a.ranges("ports"), b.ranges("ports")) else { return Ok(()) };
            let d = ra.difference(rb);
            for &(x, y) in d.intervals() {
                for v in [x, y] {
                    prop_assert!(ra.contains_value(v));
                    prop_assert!(!rb.contains_value(v));
                }
            }
            prop_assert_eq!(d.union(rb).count(), ra.union(rb).count());
        }
    }
}
