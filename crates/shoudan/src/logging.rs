//! The log: what the switch, the issuer links, the journal tailer and the web server report
//! as they run (a link going down, a journal write failing, a risk alert), one line per
//! event on standard error.
//!
//! `SHOUDAN_LOG` chooses what is written, as `LEVEL` or `LEVEL,TARGET=LEVEL,...` with the
//! crates as targets (`warn,switch=debug`); each command has its own default. The events
//! carry terminal IDs, STANs, masked or fingerprinted cards and error kinds, never a full card
//! number, track data, PIN block or key: the crates that emit them keep to that, and
//! `tests/demo.rs` reads a debug log of the demo's traffic for the fixtures' card numbers.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

/// The environment variable that overrides a command's default filter.
pub const VARIABLE: &str = "SHOUDAN_LOG";

/// Writes events at `default` and above (`SHOUDAN_LOG` instead, when set) to standard error.
/// A `SHOUDAN_LOG` that does not parse is reported on standard error and the default used.
pub fn init(default: LevelFilter) {
    let filter = match std::env::var(VARIABLE) {
        Ok(text) if !text.trim().is_empty() => match text.parse::<Targets>() {
            Ok(targets) => targets,
            Err(error) => {
                eprintln!(
                    "warning: {VARIABLE}={text:?} is not a filter ({error}); using {default}"
                );
                Targets::new().with_default(default)
            }
        },
        Ok(_) | Err(_) => Targets::new().with_default(default),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(true);
    // Set once, before any command runs: a second call (none is made) would be ignored.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}
