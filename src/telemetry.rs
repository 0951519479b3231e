//! Logging, set up once: human-readable on a terminal, JSON lines when
//! `OFFBOARD_LOG_FORMAT=json`; level from `RUST_LOG` (default `info`). Colours only when
//! stderr is a terminal and `NO_COLOR` is unset or empty (<https://no-color.org>): a
//! journal or a log shipper reading a file or a pipe gets plain text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (a second call does nothing).
pub fn init(default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default_level},sqlx=warn,lapin=warn,sea_orm_migration=warn,hyper=warn"
        ))
    });
    let json = std::env::var("OFFBOARD_LOG_FORMAT").is_ok_and(|v| v == "json");
    let no_color = std::env::var_os("NO_COLOR");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours(
            std::io::stderr().is_terminal(),
            no_color.as_deref(),
        ))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}

/// Whether log lines carry ANSI colours: on a terminal, unless `NO_COLOR` holds any
/// non-empty value.
fn colours(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colours;
    use std::ffi::OsStr;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours(true, None));
        assert!(colours(true, Some(OsStr::new(""))));
        assert!(!colours(true, Some(OsStr::new("1"))));
        assert!(!colours(false, None));
        assert!(!colours(false, Some(OsStr::new(""))));
    }
}
