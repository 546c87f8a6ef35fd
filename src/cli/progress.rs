//! The `brim run --instances N` progress bar: on stderr, only when stderr is a terminal and
//! N > 1, so pipes, logs and CI output stay plain. Task output is written with the bar
//! hidden ([`suspend`]) so lines never mix with it.
//!
//! One bar per process (a `brim run` runs one job), hence a process-wide slot.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static BAR: OnceLock<ProgressBar> = OnceLock::new();

/// Where a job's instances are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Not placed yet.
    pub(crate) queued: usize,
    /// Launched and not ended.
    pub(crate) running: usize,
    /// Ended, any exit code.
    pub(crate) done: usize,
    /// Ended with a non-zero exit code (or killed, lost...).
    pub(crate) failed: usize,
}

/// The text after the bar: `3 running · 4 queued · 1 failed`, empty parts left out.
fn message(c: Counts) -> String {
    let mut parts = Vec::new();
    if c.running > 0 {
        parts.push(format!("{} running", c.running));
    }
    if c.queued > 0 {
        parts.push(format!("{} queued", c.queued));
    }
    if c.failed > 0 {
        parts.push(format!("{} failed", c.failed));
    }
    parts.join(" · ")
}

/// Shows the bar for a job of `instances` when that is useful (see the module doc).
pub(crate) fn start(instances: u32) {
    if instances <= 1 || !std::io::stderr().is_terminal() {
        return;
    }
    let bar = ProgressBar::with_draw_target(
        Some(u64::from(instances)),
        ProgressDrawTarget::stderr_with_hz(4),
    );
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} done  {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(250));
    let _ = BAR.set(bar);
}

/// Updates the bar, if there is one.
pub(crate) fn show(c: Counts) {
    if let Some(bar) = BAR.get() {
        bar.set_position(c.done as u64);
        bar.set_message(message(c));
    }
}

/// Runs `f` (which writes to the terminal) with the bar hidden.
pub(crate) fn suspend<R>(f: impl FnOnce() -> R) -> R {
    match BAR.get() {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// Removes the bar for good (before the final messages).
pub(crate) fn finish() {
    if let Some(bar) = BAR.get() {
        bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_what_is_not_zero() {
        let check = |queued, running, done, failed, want: &str| {
            let c = Counts {
                queued,
                running,
                done,
                failed,
            };
            assert_eq!(message(c), want, "{c:?}");
        };
        check(0, 0, 0, 0, "");
        check(4, 3, 2, 0, "3 running · 4 queued");
        check(0, 0, 5, 1, "1 failed");
        check(2, 1, 1, 1, "1 running · 2 queued · 1 failed");
    }

    #[test]
    fn without_a_bar_everything_is_a_no_op() {
        show(Counts::default());
        assert_eq!(suspend(|| 7), 7);
        finish();
    }
}
