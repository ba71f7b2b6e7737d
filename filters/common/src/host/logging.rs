//! The `log` crate's backend and the panic hook, both over [`super::log`], which returns
//! its error instead of panicking: a logger that can trap would turn a log line into an
//! outage.

use super::calls::{self, LogLevel};
use std::fmt::Write;

/// Longest panic message logged; a panic should never carry request data, but if one does,
/// this bounds how much reaches the log.
const MAX_PANIC_LOG: usize = 256;

struct HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        };
        let mut message = String::new();
        if write!(message, "{}", record.args()).is_ok() {
            let _ = calls::log(level, &message);
        }
    }

    fn flush(&self) {}
}

static LOGGER: HostLogger = HostLogger;

pub(super) fn install() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    std::panic::set_hook(Box::new(|info| {
        let mut message = String::new();
        let _ = write!(message, "filter panicked: {info}");
        if message.len() > MAX_PANIC_LOG {
            let mut cut = MAX_PANIC_LOG;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let _ = calls::log(LogLevel::Critical, &message);
    }));
}

/// Formats no line the host would drop: Envoy's `--component-log-level wasm:debug` turns
/// debug lines on, and they cost nothing otherwise.
pub(super) fn follow_host_level() {
    if let Ok(level) = calls::log_level() {
        log::set_max_level(match level {
            LogLevel::Trace => log::LevelFilter::Trace,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Error | LogLevel::Critical => log::LevelFilter::Error,
        });
    }
}

/// A line at critical, the level that says the filter is failing closed or lost data.
pub fn critical(message: &str) {
    let _ = calls::log(LogLevel::Critical, message);
}
