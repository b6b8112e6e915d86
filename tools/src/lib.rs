//! Shared bits of the command-line programs: logging setup.

/// Installs the `tracing` subscriber every binary uses: human-readable lines on
/// stderr, filtered by `RUST_LOG` (default `warn`), coloured only on a
/// terminal (a log file gets plain text that grep finds).
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
