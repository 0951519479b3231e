//! Smartsheet errors → catalog codes. One table-like function per phase: `-A` codes for a
//! connection check, `-B` codes during a run. A 403/1004 during a run is ambiguous (lost
//! system-admin role, or lost access to users or groups) and is settled by asking
//! `GET /users/me`. A redirect (3xx, never followed: see [`crate::apps::http`]) is
//! `SMT-199-B` in either phase, not retried.

use super::client::{ApiError, Client};
use crate::apps::failure;
use crate::apps::http::CallLog;
use crate::codes::Code;
use crate::domain::step::StepError;

/// Which API area a call touched: decides SMT-101 (users) versus SMT-102 (groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// `/users…`
    Users,
    /// `/groups…`
    Groups,
}

/// How this app's actions stop: [`failure::Failure`] over its API error and areas.
pub type Failure = failure::Failure<ApiError, Area>;

/// What this app's actions return.
pub type ActionResult = failure::ActionResult<ApiError, Area>;

/// Codes that hold whatever the phase; `None` when the phase decides.
fn common(err: &ApiError, run: bool) -> Option<Code> {
    let pick = |a, b| Some(if run { b } else { a });
    match (err.status, err.error_code()) {
        (_, Some(1003)) => Some(Code::Smt100B),
        (Some(401), Some(1002)) if run => Some(Code::Smt100B),
        (Some(401), _) => pick(Code::Smt100A, Code::Smt100B),
        (_, Some(1013)) => pick(Code::Smt103A, Code::Smt103B),
        (_, Some(5000..=5999)) if err.error_code() != Some(5666) => {
            pick(Code::Smt104A, Code::Smt104B)
        }
        _ => None,
    }
}

/// The `-A` code for an error met while checking a connection.
pub fn check_code(err: &ApiError, area: Area) -> Code {
    if err.is_redirect() {
        return Code::Smt199B;
    }
    if let Some(code) = common(err, false) {
        return code;
    }
    if err.is_transient() {
        return Code::Smt190B;
    }
    match (err.status, area) {
        (Some(403), Area::Users) => Code::Smt101A,
        (Some(403), Area::Groups) => Code::Smt102A,
        _ => Code::Smt199B,
    }
}

/// Turns an error met during a run into the step error, probing `/users/me` on 403/1004.
pub async fn run_error(client: &Client, err: ApiError, area: Area, log: &CallLog) -> StepError {
    let detail = err.describe();
    if err.is_redirect() {
        return StepError::fatal(Code::Smt199B, detail);
    }
    if err.is_transient() {
        return StepError::transient(Code::Smt190B, detail, err.retry_after_ms);
    }
    if let Some(code) = common(&err, true) {
        return StepError::fatal(code, detail);
    }
    let code = match err.error_code() {
        Some(1018 | 1019 | 1021 | 1107 | 1121) => Code::Smt110B,
        Some(5666) => Code::Smt111B,
        // 1022: the user belongs to another organisation account, not a permission problem.
        Some(1022) => Code::Smt199B,
        _ if err.status == Some(403) => match client.me(log).await {
            Ok(me) if !me.admin => Code::Smt105B,
            Err(probe) if probe.status == Some(401) => Code::Smt100B,
            _ => match area {
                Area::Users => Code::Smt101B,
                Area::Groups => Code::Smt102B,
            },
        },
        _ => Code::Smt199B,
    };
    StepError::fatal(code, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::smartsheet::client::ErrorCode;

    fn err(status: u16, code: i64) -> ApiError {
        ApiError {
            status: Some(status),
            kind: Some(ErrorCode(code)),
            message: "m".into(),
            retry_after_ms: None,
        }
    }

    #[test]
    fn check_codes_follow_the_catalog() {
        let cases = [
            (err(401, 1001), Area::Users, Code::Smt100A),
            (err(401, 1002), Area::Users, Code::Smt100A),
            (err(401, 1003), Area::Users, Code::Smt100B),
            (err(403, 1004), Area::Users, Code::Smt101A),
            (err(403, 1004), Area::Groups, Code::Smt102A),
            (err(403, 1013), Area::Groups, Code::Smt103A),
            (err(400, 5001), Area::Users, Code::Smt104A),
            (err(429, 4003), Area::Users, Code::Smt190B),
            (err(500, 4000), Area::Users, Code::Smt190B),
            (err(400, 1018), Area::Users, Code::Smt199B),
        ];
        for (e, area, code) in cases {
            assert_eq!(check_code(&e, area), code, "{e:?}");
        }
    }

    #[tokio::test]
    async fn a_page_loop_and_an_oversized_body_end_in_199() {
        use axum::{routing::get, Router};
        // Every page says there is another one; `/users/me` answers a body past the cap.
        let app = Router::new()
            .route(
                "/groups",
                get(|| async {
                    axum::Json(serde_json::json!({"totalPages": 1_000_000, "data": []}))
                }),
            )
            .route(
                "/users/me",
                get(|| async { " ".repeat(crate::apps::http::MAX_BODY_BYTES + 1) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = crate::config::ConnectionConfig {
            timeout_secs: 10,
            ..crate::config::ConnectionConfig::new(
                crate::config::AppKind::Smartsheet,
                url,
                "UNUSED",
                6_000_000,
            )
        };
        let client = Client::new(&config, crate::config::Secret::new("t")).unwrap();
        let log = CallLog::discard();
        let looped = client.list_groups(&log).await.unwrap_err();
        assert!(looped.message.contains("after 1000"), "{}", looped.message);
        let step = run_error(&client, looped, Area::Groups, &log).await;
        assert_eq!(step.code, Code::Smt199B);
        let big = client.me(&log).await.unwrap_err();
        assert!(big.message.contains("larger than 8 MiB"), "{}", big.message);
        assert_eq!(
            run_error(&client, big, Area::Users, &log).await.code,
            Code::Smt199B
        );
    }

    #[test]
    fn transient_errors_are_recognised() {
        assert!(err(429, 4003).is_transient());
        assert!(err(503, 4001).is_transient());
        assert!(ApiError::without_body(None, "x").is_transient());
        assert!(!err(400, 1121).is_transient());
        assert!(!err(403, 1004).is_transient());
    }
}
