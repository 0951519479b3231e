//! `offboard check` for Smartsheet: the token works, its user is a system admin, the plan
//! allows the API, and users and groups are readable.

use super::client::Client;
use super::errors::{check_code, Area};
use crate::apps::http::CallLog;
use crate::apps::CheckReport;
use crate::codes::Code;

/// Runs the check; the first problem found is reported.
pub async fn run(client: &Client) -> CheckReport {
    let log = CallLog::discard();
    let problem = async {
        let me = client
            .me(&log)
            .await
            .map_err(|e| (check_code(&e, Area::Users), e.describe()))?;
        if !me.admin {
            return Err((
                Code::Smt105A,
                format!(
                    "the token belongs to {}, who is not a system admin",
                    me.email
                ),
            ));
        }
        client
            .probe_users(&log)
            .await
            .map_err(|e| (check_code(&e, Area::Users), e.describe()))?;
        client
            .probe_groups(&log)
            .await
            .map_err(|e| (check_code(&e, Area::Groups), e.describe()))?;
        Ok(())
    }
    .await
    .err();
    CheckReport {
        problem,
        warnings: Vec::new(),
    }
}
