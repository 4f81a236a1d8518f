//! The series budget (`max_active_series`) at 1,000,000 active series: its memory (the
//! tables' own count, and the process's resident set before and after), and the cost of an
//! admission, for a series not seen before and for one already counted.
//!
//! `cargo bench --bench budget` measures; without `--bench` (as `cargo test --all-targets`
//! runs it) it only says it was skipped.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use promlink::codec::SeriesBudget;

const SERIES: u64 = 1_000_000;

/// `VmRSS` of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A label hash as the codec makes them (any 64-bit value; these are spread like FxHash's).
fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555
}

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("budget: skipped (not run with --bench; use `cargo bench --bench budget`)");
        return ExitCode::SUCCESS;
    }
    let before = rss_kib();
    let budget = SeriesBudget::new(SERIES as usize, Duration::from_secs(12 * 3600));
    let now = budget.now();
    let t = Instant::now();
    let admitted = (0..SERIES).filter(|i| budget.admit(key(*i), now)).count();
    let new_ns = t.elapsed().as_nanos() as f64 / SERIES as f64;
    let t = Instant::now();
    let known = (0..SERIES).filter(|i| budget.admit(key(*i), now)).count();
    let known_ns = t.elapsed().as_nanos() as f64 / SERIES as f64;
    let t = Instant::now();
    let refused = (SERIES..2 * SERIES)
        .filter(|i| !budget.admit(key(*i), now))
        .count();
    let refused_ns = t.elapsed().as_nanos() as f64 / SERIES as f64;
    let after = rss_kib();
    let tables = budget.memory_bytes() as f64 / (1 << 20) as f64;
    let rss = after.saturating_sub(before) as f64 / 1024.0;
    println!(
        "budget: {admitted} series admitted ({new_ns:.0} ns each), {known} known again ({known_ns:.0} ns each), {refused} new ones refused when full ({refused_ns:.0} ns each)"
    );
    println!("budget: tables {tables:.1} MiB, resident set grew {rss:.1} MiB");
    let met = tables <= 32.0 && rss <= 32.0 && admitted == known && refused == SERIES as usize;
    println!(
        "target: at most 32 MiB at 1,000,000 active series: {} ({tables:.1} MiB tables, {rss:.1} MiB resident)",
        if met { "met" } else { "NOT met" }
    );
    if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
