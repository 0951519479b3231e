//! Logging, set up once: human-readable on a terminal, JSON lines when
//! `OFFBOARD_LOG_FORMAT=json`; level from `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (a second call does nothing).
pub fn init(default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default_level},sqlx=warn,lapin=warn,sea_orm_migration=warn,hyper=warn"
        ))
    });
    let json = std::env::var("OFFBOARD_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}
