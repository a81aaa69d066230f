//! Progress bars (on stderr, hidden when stderr is not a terminal) and Ctrl-C handling.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A bar of `len` steps of `unit`, or a hidden one when stderr is not a terminal.
pub fn bar(len: u64, unit: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{msg}}  (eta {{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

static STOP: AtomicBool = AtomicBool::new(false);
static PRESSES: AtomicUsize = AtomicUsize::new(0);

/// First Ctrl-C: ask the running job to stop at its next safe point (it then saves what it
/// has). Second: exit at once (the atomic writes leave no partial output behind). `what`
/// says what the first press does, e.g. "stopping after this epoch and saving the best model".
pub fn install_interrupt_handler(what: &'static str) {
    let r = ctrlc::set_handler(move || {
        if PRESSES.fetch_add(1, Ordering::SeqCst) >= 1 {
            eprintln!("\nspinr: interrupted again, exiting without saving");
            std::process::exit(130);
        }
        STOP.store(true, Ordering::SeqCst);
        eprintln!("\nspinr: interrupt: {what} (Ctrl-C again to quit at once)");
    });
    if let Err(e) = r {
        eprintln!("spinr: warning: Ctrl-C will not save the results ({e})");
    }
}

/// Whether Ctrl-C asked to stop.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
