//! Progress bars for `qk`'s long commands, on stderr.
//!
//! indicatif's stderr target draws nothing while stderr is not a terminal (a pipe, a file, a
//! test capturing it), so a failure still prints exactly one line there. A bar is cleared when
//! it is finished or dropped (an error returned mid-way), never left on the screen.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
use std::time::Duration;

/// A bar of `len` steps named `what` (`layers`, `tensors`, ...) on stderr; its message is the
/// item in progress.
pub fn bar(len: usize, what: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{bar:25}] {pos}/{len} {prefix}, eta {eta}: {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let pb = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr())
        .with_style(style)
        .with_prefix(what.to_string())
        .with_finish(ProgressFinish::AndClear);
    if !pb.is_hidden() {
        // Redraw (elapsed time, spinner) while one large layer takes a while.
        pb.enable_steady_tick(Duration::from_millis(200));
    }
    pb
}
