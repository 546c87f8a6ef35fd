//! Device rules of the `cgroup/dev` allow-list beyond the built-in one (null, zero, full,
//! random, urandom, tty, console, ptmx, pseudo-terminals): operator defaults
//! (`--device-allow`) and a task's own (`devices` label), e.g. `c 195:* rwm` for NVIDIA GPUs
//! or `/dev/fuse`. The syntax is the cgroup v1 `devices.allow` one.

use std::path::Path;

use super::abi::{DEV_ANY_MAJOR, DEV_ANY_MINOR};

/// Task label adding devices to the allow-list: rules separated by commas, each
/// `c|b|a MAJOR:MINOR [rwm]` or a device path (resolved on the agent), e.g.
/// `c 195:* rwm,/dev/fuse`.
pub const DEVICES_LABEL: &str = "devices";

/// Device types (`BPF_DEVCG_DEV_*`).
pub const DEV_BLOCK: u8 = 1;
pub const DEV_CHAR: u8 = 2;
/// Accesses (`BPF_DEVCG_ACC_*`).
pub const ACC_MKNOD: u8 = 1;
pub const ACC_READ: u8 = 2;
pub const ACC_WRITE: u8 = 4;

/// One allow rule: device types, major/minor (`None`: any), accesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// `DEV_BLOCK | DEV_CHAR` bits.
    pub types: u8,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// `ACC_MKNOD | ACC_READ | ACC_WRITE` bits.
    pub access: u8,
}

const SYNTAX: &str = "use `c|b|a MAJOR:MINOR [rwm]` (`*` for any number, e.g. `c 195:* rwm`) or a device path such as `/dev/fuse [rwm]`";

fn parse_access(s: Option<&str>, rule: &str) -> Result<u8, String> {
    let Some(s) = s else {
        return Ok(ACC_MKNOD | ACC_READ | ACC_WRITE);
    };
    let mut a = 0;
    for c in s.chars() {
        a |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => {
                return Err(format!(
                    "device rule `{rule}`: access `{s}` must be letters of `rwm`"
                ))
            }
        };
    }
    if a == 0 {
        return Err(format!("device rule `{rule}`: empty access; {SYNTAX}"));
    }
    Ok(a)
}

fn parse_number(s: &str, max: u32, what: &str, rule: &str) -> Result<Option<u32>, String> {
    if s == "*" {
        return Ok(None);
    }
    match s.parse::<u32>() {
        Ok(n) if n < max => Ok(Some(n)),
        _ => Err(format!(
            "device rule `{rule}`: {what} `{s}` must be `*` or a number below {max}"
        )),
    }
}

impl DeviceRule {
    /// Parses `c 195:* rwm`, `b 8:0 r`, `a *:* m`, `c 10:229` (access defaults to `rwm`) or
    /// a device path, `/dev/fuse [rwm]`, resolved to its type and numbers now.
    pub fn parse(rule: &str) -> Result<DeviceRule, String> {
        let mut words = rule.split_whitespace();
        let first = words
            .next()
            .ok_or_else(|| format!("empty device rule; {SYNTAX}"))?;
        let (types, major, minor, access) = if first.starts_with('/') {
            let (types, major, minor) =
                device_of(Path::new(first)).map_err(|e| format!("device rule `{rule}`: {e}"))?;
            (
                types,
                Some(major),
                Some(minor),
                parse_access(words.next(), rule)?,
            )
        } else {
            let types = match first {
                "c" => DEV_CHAR,
                "b" => DEV_BLOCK,
                "a" => DEV_CHAR | DEV_BLOCK,
                _ => {
                    return Err(format!(
                        "device rule `{rule}`: unknown type `{first}`; {SYNTAX}"
                    ))
                }
            };
            let numbers = words
                .next()
                .ok_or_else(|| format!("device rule `{rule}`: no MAJOR:MINOR; {SYNTAX}"))?;
            let (ma, mi) = numbers.split_once(':').ok_or_else(|| {
                format!("device rule `{rule}`: `{numbers}` is not MAJOR:MINOR; {SYNTAX}")
            })?;
            (
                types,
                parse_number(ma, DEV_ANY_MAJOR as u32, "major", rule)?,
                parse_number(mi, DEV_ANY_MINOR as u32, "minor", rule)?,
                parse_access(words.next(), rule)?,
            )
        };
        if let Some(extra) = words.next() {
            return Err(format!(
                "device rule `{rule}`: unexpected `{extra}`; {SYNTAX}"
            ));
        }
        Ok(DeviceRule {
            types,
            major,
            minor,
            access,
        })
    }

    /// Checks the syntax of a `devices` label where the device paths cannot be resolved
    /// (e.g. `brim run`: they name devices of the agent's host): numeric rules are parsed,
    /// paths only have to be absolute.
    pub fn check_list_syntax(list: &str) -> Result<(), String> {
        let mut any = false;
        for r in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            any = true;
            if !r.starts_with('/') {
                DeviceRule::parse(r)?;
            }
        }
        if any {
            Ok(())
        } else {
            Err(format!("no device rule in `{list}`; {SYNTAX}"))
        }
    }

    /// Parses a list separated by commas (the `devices` task label).
    pub fn parse_list(list: &str) -> Result<Vec<DeviceRule>, String> {
        list.split(',')
            .filter(|r| !r.trim().is_empty())
            .map(DeviceRule::parse)
            .collect()
    }

    /// The `u64` form the program reads (see `brim.h`).
    pub fn encode(&self) -> u64 {
        u64::from(self.minor.unwrap_or(DEV_ANY_MINOR as u32))
            | u64::from(self.major.unwrap_or(DEV_ANY_MAJOR as u32)) << 32
            | u64::from(self.types) << 48
            | u64::from(self.access) << 56
    }
}

impl std::fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = match self.types {
            DEV_CHAR => "c",
            DEV_BLOCK => "b",
            _ => "a",
        };
        let n = |v: Option<u32>| v.map_or("*".to_string(), |v| v.to_string());
        let mut a = String::new();
        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                a.push(c);
            }
        }
        write!(f, "{t} {}:{} {a}", n(self.major), n(self.minor))
    }
}

/// Type bits and numbers of a device node.
fn device_of(path: &Path) -> Result<(u8, u32, u32), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let ft = m.file_type();
    let types = if ft.is_char_device() {
        DEV_CHAR
    } else if ft.is_block_device() {
        DEV_BLOCK
    } else {
        return Err(format!("{} is not a device node", path.display()));
    };
    let rdev = m.rdev();
    // glibc's gnu_dev_major / gnu_dev_minor.
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    Ok((types, major as u32, minor as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules() {
        let r = DeviceRule::parse("c 195:* rwm").expect("parse");
        assert_eq!(
            r,
            DeviceRule {
                types: DEV_CHAR,
                major: Some(195),
                minor: None,
                access: ACC_READ | ACC_WRITE | ACC_MKNOD
            }
        );
        assert_eq!(r.to_string(), "c 195:* rwm");
        assert_eq!(
            r.encode(),
            0xffff_ffff | 195 << 32 | 2 << 48 | 7 << 56,
            "layout of brim.h"
        );
        let b = DeviceRule::parse("b 8:0 r").expect("parse");
        assert_eq!(
            (b.types, b.major, b.minor, b.access),
            (DEV_BLOCK, Some(8), Some(0), ACC_READ)
        );
        assert_eq!(
            DeviceRule::parse("a *:*").expect("parse").encode() >> 48,
            3 | 7 << 8
        );
        let null = DeviceRule::parse("/dev/null rw").expect("parse");
        assert_eq!(
            (null.types, null.major, null.minor),
            (DEV_CHAR, Some(1), Some(3))
        );
        assert_eq!(null.access, ACC_READ | ACC_WRITE);
        assert_eq!(
            DeviceRule::parse_list("c 195:* rwm, /dev/null")
                .expect("list")
                .len(),
            2
        );
        for (bad, why) in [
            ("", "empty"),
            ("x 1:2", "unknown type"),
            ("c 1", "not MAJOR:MINOR"),
            ("c", "no MAJOR:MINOR"),
            ("c 1:2 rwx", "access"),
            ("c 70000:1", "major"),
            ("c 1:-1", "minor"),
            ("c 1:2 r extra", "unexpected"),
            ("/dev/does-not-exist", "does-not-exist"),
            ("/etc/hostname", "not a device node"),
        ] {
            let e = DeviceRule::parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
