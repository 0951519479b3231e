//! Postman errors → catalog codes: `-A` codes for a connection check, `-B` codes during a
//! run. Retryable: 429, 5xx, timeouts and connection errors (→ POST-190-B, honouring the
//! server's wait). A 401 during a run is POST-100-B. Other refusals (400, 403, 404) are
//! settled by asking `GET /me`: no team there means POST-106-B, a rejected key POST-100-B;
//! otherwise a 403 is the code of the area the call touched (users and SCIM: 101,
//! workspaces: 102, roles: 103, audit logs: 104, or 105 when Postman blames the plan).
//! A redirect (3xx, never followed: see [`crate::apps::http`]) is POST-199-B in either
//! phase, not retried.
//!
//! Postman documents no distinct reply for an expired or revoked key, nor for "not on
//! Enterprise" versus "not allowed"; both are told apart by the error's name and message
//! (`expired`, `revoked`, `deactivated`… / `plan`, `Enterprise`, `isn't available`…).

use super::client::{ApiError, Client};
use crate::apps::failure;
use crate::apps::http::CallLog;
use crate::codes::Code;
use crate::domain::step::StepError;

/// Which API area a call touched: decides which code a 403 becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// `/me`, `/users…`, `/scim/v2/Users…`
    Users,
    /// `/workspaces…`
    Workspaces,
    /// `/workspaces-roles`, `/workspaces/{id}/roles`
    Roles,
    /// `/audit/logs`
    AuditLogs,
}

/// How this app's actions stop: [`failure::Failure`] over its API error and areas.
pub type Failure = failure::Failure<ApiError, Area>;

/// What this app's actions return.
pub type ActionResult = failure::ActionResult<ApiError, Area>;

/// What `GET /me` said when asked after a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Not asked (the error needed no probe), or the probe itself failed.
    Unknown,
    /// The key was rejected (401).
    KeyRejected,
    /// The key's user belongs to no team.
    NoTeam,
    /// The key's user is in a team.
    InTeam,
}

fn area_code_a(err: &ApiError, area: Area) -> Code {
    match area {
        Area::Users => Code::Post101A,
        Area::Workspaces => Code::Post102A,
        Area::Roles => Code::Post103A,
        Area::AuditLogs if err.says_plan() => Code::Post105A,
        Area::AuditLogs => Code::Post104A,
    }
}

fn area_code_b(err: &ApiError, area: Area) -> Code {
    match area {
        Area::Users => Code::Post101B,
        Area::Workspaces => Code::Post102B,
        Area::Roles => Code::Post103B,
        Area::AuditLogs if err.says_plan() => Code::Post105B,
        Area::AuditLogs => Code::Post104B,
    }
}

/// The `-A` code for an error met while checking a connection.
pub fn check_code(err: &ApiError, area: Area) -> Code {
    if err.is_redirect() {
        return Code::Post199B;
    }
    if err.is_transient() {
        return Code::Post190B;
    }
    match err.status {
        Some(401) if err.says_key_expired() => Code::Post100B,
        Some(401) => Code::Post100A,
        _ if err.says_no_team() => Code::Post106A,
        Some(403) => area_code_a(err, area),
        _ => Code::Post199B,
    }
}

/// Whether a run error needs `GET /me` to be told apart.
pub fn needs_probe(err: &ApiError) -> bool {
    matches!(err.status, Some(400 | 403 | 404))
}

/// The `-B` code for an error met during a run, given what the `/me` probe said.
pub fn run_code(err: &ApiError, area: Area, probe: Probe) -> Code {
    if err.is_redirect() {
        return Code::Post199B;
    }
    if err.is_transient() {
        return Code::Post190B;
    }
    if err.status == Some(401) {
        return Code::Post100B;
    }
    match probe {
        Probe::KeyRejected => return Code::Post100B,
        Probe::NoTeam => return Code::Post106B,
        Probe::Unknown if err.says_no_team() => return Code::Post106B,
        _ => {}
    }
    match err.status {
        Some(403) => area_code_b(err, area),
        _ => Code::Post199B,
    }
}

/// Turns an error met during a run into the step error, asking `GET /me` when needed.
pub async fn run_error(client: &Client, err: ApiError, area: Area, log: &CallLog) -> StepError {
    let detail = err.describe();
    if err.is_transient() {
        return StepError::transient(Code::Post190B, detail, err.retry_after_ms);
    }
    let probe = if needs_probe(&err) {
        match client.me(log).await {
            Ok(me) if !me.in_team() => Probe::NoTeam,
            Ok(_) => Probe::InTeam,
            Err(p) if p.status == Some(401) => Probe::KeyRejected,
            Err(_) => Probe::Unknown,
        }
    } else {
        Probe::Unknown
    };
    StepError::fatal(run_code(&err, area, probe), detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::postman::client::ErrorName;

    fn err(status: u16, name: &str, message: &str) -> ApiError {
        ApiError {
            status: Some(status),
            kind: Some(ErrorName(name.into())),
            message: message.into(),
            retry_after_ms: None,
        }
    }

    fn invalid_key() -> ApiError {
        err(
            401,
            "AuthenticationError",
            "Invalid API Key. Every request requires a valid API Key to be sent.",
        )
    }

    fn expired_key() -> ApiError {
        err(401, "AuthenticationError", "The API Key has expired.")
    }

    fn forbidden() -> ApiError {
        err(
            403,
            "forbiddenError",
            "You do not have enough permissions to perform this action.",
        )
    }

    fn not_on_plan() -> ApiError {
        err(
            403,
            "forbidden",
            "This feature isn't available on your team's plan.",
        )
    }

    fn no_team() -> ApiError {
        err(400, "bad-request", "You must be part of a team")
    }

    fn down() -> ApiError {
        ApiError::without_body(None, "GET /users: timed out")
    }

    #[test]
    fn check_codes_follow_the_catalog() {
        let cases = [
            (invalid_key(), Area::Users, Code::Post100A),
            (
                err(
                    401,
                    "unauthorized",
                    "An API key must be provided in the request header.",
                ),
                Area::Users,
                Code::Post100A,
            ),
            (expired_key(), Area::Users, Code::Post100B),
            (
                err(401, "AuthenticationError", "The API Key has been revoked."),
                Area::Workspaces,
                Code::Post100B,
            ),
            (
                err(401, "scimError", "The SCIM API key has been revoked."),
                Area::Users,
                Code::Post100B,
            ),
            (forbidden(), Area::Users, Code::Post101A),
            (
                err(
                    403,
                    "scimError",
                    "SCIM provisioning is not enabled for this team.",
                ),
                Area::Users,
                Code::Post101A,
            ),
            (forbidden(), Area::Workspaces, Code::Post102A),
            (forbidden(), Area::Roles, Code::Post103A),
            (
                err(
                    403,
                    "ForbiddenRequest",
                    "You do not have permissions to view audit logs",
                ),
                Area::AuditLogs,
                Code::Post104A,
            ),
            (not_on_plan(), Area::AuditLogs, Code::Post105A),
            (no_team(), Area::Workspaces, Code::Post106A),
            (
                err(429, "rateLimited", "Rate limit exceeded."),
                Area::Users,
                Code::Post190B,
            ),
            (
                err(503, "service-unavailable", "down"),
                Area::Roles,
                Code::Post190B,
            ),
            (down(), Area::Users, Code::Post190B),
            (
                err(400, "invalidParamError", "limit must be a number"),
                Area::Workspaces,
                Code::Post199B,
            ),
            (
                err(404, "not-found", "The requested resource was not found."),
                Area::Users,
                Code::Post199B,
            ),
        ];
        for (e, area, code) in cases {
            assert_eq!(check_code(&e, area), code, "{e:?} on {area:?}");
        }
    }

    #[test]
    fn run_codes_follow_the_catalog() {
        use Probe::*;
        let cases = [
            (invalid_key(), Area::Users, Unknown, Code::Post100B),
            (expired_key(), Area::Workspaces, Unknown, Code::Post100B),
            (forbidden(), Area::Users, InTeam, Code::Post101B),
            (forbidden(), Area::Workspaces, InTeam, Code::Post102B),
            (forbidden(), Area::Roles, InTeam, Code::Post103B),
            (
                err(
                    403,
                    "ForbiddenRequest",
                    "You do not have permissions to view audit logs",
                ),
                Area::AuditLogs,
                InTeam,
                Code::Post104B,
            ),
            (not_on_plan(), Area::AuditLogs, InTeam, Code::Post105B),
            (forbidden(), Area::Roles, NoTeam, Code::Post106B),
            (no_team(), Area::Workspaces, NoTeam, Code::Post106B),
            (no_team(), Area::Workspaces, Unknown, Code::Post106B),
            (
                err(404, "not-found", "Not Found"),
                Area::Users,
                NoTeam,
                Code::Post106B,
            ),
            (forbidden(), Area::Users, KeyRejected, Code::Post100B),
            (forbidden(), Area::Users, Unknown, Code::Post101B),
            (
                err(404, "not-found", "Not Found"),
                Area::Users,
                InTeam,
                Code::Post199B,
            ),
            (
                err(400, "invalidParamError", "bad"),
                Area::Roles,
                InTeam,
                Code::Post199B,
            ),
            (
                err(422, "unprocessable-entity", "Roles are not supported"),
                Area::Roles,
                Unknown,
                Code::Post199B,
            ),
            (
                err(429, "rateLimited", "slow"),
                Area::Users,
                Unknown,
                Code::Post190B,
            ),
            (
                err(500, "internal-server-error", "oops"),
                Area::AuditLogs,
                Unknown,
                Code::Post190B,
            ),
            (down(), Area::Workspaces, Unknown, Code::Post190B),
        ];
        for (e, area, probe, code) in cases {
            assert_eq!(
                run_code(&e, area, probe),
                code,
                "{e:?} on {area:?} with {probe:?}"
            );
        }
    }

    #[test]
    fn only_refusals_are_probed() {
        assert!(needs_probe(&forbidden()));
        assert!(needs_probe(&no_team()));
        assert!(needs_probe(&err(404, "not-found", "x")));
        assert!(!needs_probe(&invalid_key()));
        assert!(!needs_probe(&err(429, "rateLimited", "x")));
        assert!(!needs_probe(&down()));
    }
}
