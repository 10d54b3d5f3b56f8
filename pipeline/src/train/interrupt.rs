//! Ctrl-C (SIGINT) and SIGTERM during training: the first asks the loop to write a checkpoint
//! after the step it is in and stop; a second one ends the process at once.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler (once per process; later calls do nothing).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let handler = || {
            if REQUESTED.swap(true, Ordering::SeqCst) {
                eprintln!("interrupted again: stopping now, without a checkpoint");
                std::process::exit(130);
            }
            eprintln!("interrupt: writing a checkpoint after this step, then stopping (interrupt again to stop at once)");
        };
        if let Err(e) = ctrlc::set_handler(handler) {
            tracing::warn!("no interrupt handler ({e}): Ctrl-C stops training without a checkpoint");
        }
    });
}

/// Whether an interrupt asked training to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// The stop an interrupt asked for, as an error the command turns into exit status 130.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);
