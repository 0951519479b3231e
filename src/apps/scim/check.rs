//! `offboard check` for a SCIM connection: `/ServiceProviderConfig` read again (filtering
//! must be supported), one page of `/Users`, and one of `/Groups` when the connection
//! takes leavers out of their groups.

use super::client::Client;
use super::errors::{check_code, Area};
use crate::apps::http::CallLog;
use crate::apps::CheckReport;
use crate::codes::Code;

/// Runs the check; the first problem found is reported.
pub async fn run(client: &Client) -> CheckReport {
    let log = CallLog::discard();
    let fail = |area| move |e: super::client::ApiError| (check_code(&e, area), e.describe());
    let problem = async {
        let features = client
            .refresh_features(&log)
            .await
            .map_err(fail(Area::Users))?;
        if !features.filter {
            return Err((
                Code::Scim103A,
                "the provider's ServiceProviderConfig says it does not support filtering"
                    .to_string(),
            ));
        }
        client
            .probe("Users", &log)
            .await
            .map_err(fail(Area::Users))?;
        if client.settings.remove_from_groups {
            client
                .probe("Groups", &log)
                .await
                .map_err(fail(Area::Groups))?;
        }
        Ok(())
    }
    .await
    .err();
    CheckReport {
        problem,
        warnings: Vec::new(),
    }
}
