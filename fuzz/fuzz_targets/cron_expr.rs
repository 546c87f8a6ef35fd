//! Cron expressions and time zones of the cron framework (`Schedule::parse`), then the next
//! firing times: never a panic, and firings strictly increase.
#![no_main]

use brim_frameworks::cron::expr::{CronExpr, Schedule};
use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `<expr>\n<tz>\n<unix seconds>`; missing parts default.
    let mut parts = text.splitn(3, '\n');
    let expr = parts.next().unwrap_or_default();
    let tz = parts.next().unwrap_or("UTC");
    let start: i64 = parts
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1_700_000_000);
    let _ = CronExpr::parse(expr);
    let Ok(schedule) = Schedule::parse(expr, tz) else {
        return;
    };
    let Ok(mut t) = Timestamp::from_second(start) else {
        return;
    };
    for _ in 0..4 {
        match schedule.next_after(t) {
            Some(next) => {
                assert!(next > t, "{expr:?} in {tz}: {next} is not after {t}");
                t = next;
            }
            None => break,
        }
    }
});
