//! Memory budgets, checked before anything large is allocated (ARCHITECTURE.md, "The memory
//! rule"): what a fit or a render will hold, estimated from its options, against what the
//! machine has available (or a user's `--max-memory`).
//!
//! The estimates count the large buffers (per-sample state, cached features, gate masks, the
//! sparse slots) plus a fixed allowance for the program itself; `tests/budget.rs` holds them
//! to measured peak memory.

pub use crate::error::human_bytes as human;
use crate::error::{Error, Result};

/// The program, its threads and libraries, and small buffers not counted one by one.
pub const BASE_BYTES: u64 = 40 << 20;

/// What an operation will hold, part by part.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Estimate {
    pub parts: Vec<(&'static str, u64)>,
}

impl Estimate {
    pub fn add(&mut self, what: &'static str, bytes: u64) {
        if bytes > 0 {
            self.parts.push((what, bytes));
        }
    }

    pub fn total(&self) -> u64 {
        self.parts.iter().map(|p| p.1).sum()
    }

    /// "a 512 MiB + b 20 MiB", largest first.
    pub fn breakdown(&self) -> String {
        let mut parts = self.parts.clone();
        parts.sort_by_key(|p| std::cmp::Reverse(p.1));
        parts
            .iter()
            .map(|(w, b)| format!("{w} {}", human(*b)))
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// Refuses when the total exceeds `budget`; `fix` says what lowers it.
    pub fn check(&self, what: &str, budget: &Budget, fix: &str) -> Result<()> {
        let needed = self.total();
        if needed <= budget.bytes {
            return Ok(());
        }
        Err(Error::Memory {
            what: format!("{what} ({})", self.breakdown()),
            needed,
            budget: budget.bytes,
            limited_by: budget.source.clone(),
            fix: fix.to_string(),
        })
    }
}

/// How much memory an operation may use, and who said so (for the message).
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub bytes: u64,
    /// e.g. "--max-memory" or "the machine's available memory".
    pub source: String,
}

/// Parses a size: a number of bytes, or with a unit `K`, `M`, `G`, `T` (powers of 1024,
/// optionally written `KiB`, `KB`, …; case-insensitive), e.g. `512M`, `1.5G`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 512M, 8G or a number of bytes)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        u => return Err(format!("unknown unit {u:?} in {s:?} (use K, M, G or T)")),
    };
    let bytes = v * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("{s:?} is not a size of at least one byte"));
    }
    Ok(bytes as u64)
}

/// Memory the machine can give a new process without swapping (`MemAvailable`), where the
/// system says (Linux); `None` elsewhere.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("2gib"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "G", "-1G", "1X", "0", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(300 << 20), "300 MiB");
        assert_eq!(human(17), "17 bytes");
    }

    #[test]
    fn an_estimate_over_budget_names_its_parts_and_the_fix() {
        let mut e = Estimate::default();
        e.add("features", 2 << 30);
        e.add("pixels", 1 << 20);
        e.add("nothing", 0);
        let budget = Budget {
            bytes: 1 << 30,
            source: "--max-memory".into(),
        };
        let err = e
            .check("the fit", &budget, "use --resize")
            .unwrap_err()
            .to_string();
        assert!(err.contains("features 2.0 GiB + pixels 1.0 MiB"), "{err}");
        assert!(
            err.contains("--max-memory") && err.contains("use --resize"),
            "{err}"
        );
        assert!(e
            .check(
                "the fit",
                &Budget {
                    bytes: 3 << 30,
                    ..budget
                },
                ""
            )
            .is_ok());
    }
}
