//! `offboard evidence`: one row per workflow for auditors — who, which app, on whose
//! request, when asked, when done, how it ended, the entitlements before and after, and
//! how long access outlived the request.

use chrono::{DateTime, Utc};

use super::{db, fail, Failure, Outcome, EXIT_OK, EXIT_USAGE};
use crate::evidence::{csv, rows};
use crate::store::Store;

/// [`crate::evidence::parse_date`] as a usage error naming the flag.
pub fn parse_date(raw: &str, flag: &str) -> Result<DateTime<Utc>, Failure> {
    crate::evidence::parse_date(raw).map_err(|e| fail(EXIT_USAGE, format!("{flag} {e}")))
}

/// `offboard evidence`.
pub async fn run(store: &Store, since: &str, until: Option<&str>, format: &str) -> Outcome {
    let since = parse_date(since, "--since")?;
    let until = until.map(|u| parse_date(u, "--until")).transpose()?;
    let rows = rows(store, since, until).await.map_err(db)?;
    match format {
        "json" => println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        ),
        "csv" => print!("{}", csv(&rows)),
        other => {
            return Err(fail(
                EXIT_USAGE,
                format!("unknown --format {other:?}: use csv or json"),
            ))
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_are_accepted() {
        assert_eq!(
            parse_date("2026-11-20", "--since")
                .ok()
                .unwrap()
                .to_rfc3339(),
            "2026-11-20T00:00:00+00:00"
        );
        assert!(parse_date("2026-11-20T17:00:00Z", "--since").is_ok());
        assert!(parse_date("last tuesday", "--since").is_err());
    }
}
