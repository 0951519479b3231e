//! Where the audit chain's key comes from: `OFFBOARD_AUDIT_KEY` in the environment, else,
//! for an SQLite database (the embedded demo, a single machine), a key file generated once
//! next to the database file. A PostgreSQL deployment must set the variable: a key kept
//! in the database's own directory would protect nothing against whoever can write rows.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngExt;

use crate::domain::chain::AuditKey;

/// The environment variable holding the key (any non-empty string; 32 random bytes in hex
/// is a good one).
pub const ENV: &str = "OFFBOARD_AUDIT_KEY";

/// The key file generated next to an SQLite database without `OFFBOARD_AUDIT_KEY`.
pub const FILE_NAME: &str = "offboard-audit.key";

/// Why the key file cannot give a key. The messages name the file, never the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// It cannot be created, written or read.
    #[error("audit key file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It holds nothing.
    #[error("audit key file {} is empty", .0.display())]
    Empty(PathBuf),
}

/// The key for `database_url`: from the environment, else from (or into) the key file of an
/// SQLite database; `Ok(None)` for PostgreSQL without the variable. Errors never include
/// the key.
pub fn resolve(database_url: &str) -> Result<Option<AuditKey>, KeyFileError> {
    if let Some(key) = std::env::var(ENV).ok().and_then(AuditKey::new) {
        return Ok(Some(key));
    }
    match sqlite_file(database_url) {
        Some(db) => key_file(&db.with_file_name(FILE_NAME)).map(Some),
        None if database_url.starts_with("sqlite:") => Ok(AuditKey::new(random_hex())),
        None => Ok(None),
    }
}

/// The file of an `sqlite://PATH?…` URL; `None` for an in-memory database or another URL.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") {
        return None;
    }
    let path = PathBuf::from(path);
    Some(if path.parent().is_some_and(|p| p.as_os_str().is_empty()) {
        Path::new(".").join(path)
    } else {
        path
    })
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes[..]);
    hex::encode(bytes)
}

/// Reads the key file, creating it (readable by its owner only) on first use.
fn key_file(path: &Path) -> Result<AuditKey, KeyFileError> {
    let unreadable = |source: std::io::Error| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut f) => f.write_all(random_hex().as_bytes()).map_err(unreadable)?,
            // Another process created it first: read theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(unreadable(e)),
        }
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    AuditKey::new(text.trim().as_bytes().to_vec())
        .ok_or_else(|| KeyFileError::Empty(path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_files() {
        assert_eq!(
            sqlite_file("sqlite://offboard.db?mode=rwc"),
            Some(PathBuf::from("./offboard.db"))
        );
        assert_eq!(
            sqlite_file("sqlite:///var/lib/o/db.sqlite"),
            Some(PathBuf::from("/var/lib/o/db.sqlite"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
    }

    #[test]
    fn the_key_file_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let first = key_file(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 64);
        let again = key_file(&path).unwrap();
        let at = chrono::Utc::now();
        let l = |k: &AuditKey| crate::domain::chain::link(Some(k), "0", 1, at, "x");
        assert_eq!(l(&first), l(&again));
    }
}
