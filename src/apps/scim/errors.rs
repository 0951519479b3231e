//! SCIM errors → catalog codes: `-A` codes for a connection check, `-B` codes during a
//! run. The provider's answer is read from the status and the SCIM error body (RFC 7644
//! §3.12: `status`, `scimType`, `detail`); the message repeats `scimType` and `detail`
//! escaped. A redirect (never followed, see [`crate::apps::http`]) is `SCIM-199-B`.

use super::client::ApiError;
use crate::apps::failure;
use crate::codes::Code;
use crate::domain::step::StepError;

/// Which SCIM resource a call touched: decides SCIM-101 (users) versus SCIM-102 (groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// `/Users…`, `/Me`, `/ServiceProviderConfig`.
    Users,
    /// `/Groups…`
    Groups,
}

/// How this app's actions stop: [`failure::Failure`] over its API error and areas.
pub type Failure = failure::Failure<ApiError, Area>;

/// What this app's actions return.
pub type ActionResult = failure::ActionResult<ApiError, Area>;

/// The code for `err` in `area`; `run` picks the `-B` codes of a workflow run.
pub fn code(err: &ApiError, area: Area, run: bool) -> Code {
    let pick = |a, b| if run { b } else { a };
    if err.is_redirect() {
        return Code::Scim199B;
    }
    if err.is_transient() {
        return Code::Scim190B;
    }
    match (err.status, err.scim_type(), area) {
        (Some(401), _, _) => pick(Code::Scim100A, Code::Scim100B),
        (Some(403), _, Area::Users) => pick(Code::Scim101A, Code::Scim101B),
        (Some(403), _, Area::Groups) => pick(Code::Scim102A, Code::Scim102B),
        (Some(501), _, _) | (Some(400), Some("invalidFilter"), _) => {
            pick(Code::Scim103A, Code::Scim103B)
        }
        (Some(404), _, _) if !run => Code::Scim103A,
        (Some(400 | 409 | 412), _, _) if run => Code::Scim115B,
        _ => Code::Scim199B,
    }
}

/// The `-A` code for an error met while checking a connection.
pub fn check_code(err: &ApiError, area: Area) -> Code {
    code(err, area, false)
}

/// The step error for an API error met during a run.
pub fn run_error(err: ApiError, area: Area) -> StepError {
    let code = code(&err, area, true);
    if code == Code::Scim190B {
        StepError::transient(code, err.describe(), err.retry_after_ms)
    } else {
        StepError::fatal(code, err.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::scim::client::ScimType;

    fn err(status: u16, scim_type: Option<&str>) -> ApiError {
        ApiError {
            status: Some(status),
            kind: scim_type.map(|t| ScimType(t.into())),
            message: "d".into(),
            retry_after_ms: None,
        }
    }

    #[test]
    fn codes_follow_the_catalog() {
        use Area::{Groups, Users};
        let cases = [
            (err(401, None), Users, Code::Scim100A, Code::Scim100B),
            (err(403, None), Users, Code::Scim101A, Code::Scim101B),
            (err(403, None), Groups, Code::Scim102A, Code::Scim102B),
            (err(501, None), Users, Code::Scim103A, Code::Scim103B),
            (
                err(400, Some("invalidFilter")),
                Users,
                Code::Scim103A,
                Code::Scim103B,
            ),
            (err(404, None), Users, Code::Scim103A, Code::Scim199B),
            (
                err(400, Some("mutability")),
                Users,
                Code::Scim199B,
                Code::Scim115B,
            ),
            (
                err(409, Some("uniqueness")),
                Groups,
                Code::Scim199B,
                Code::Scim115B,
            ),
            (err(429, None), Users, Code::Scim190B, Code::Scim190B),
            (err(503, None), Groups, Code::Scim190B, Code::Scim190B),
            (err(307, None), Users, Code::Scim199B, Code::Scim199B),
            (err(418, None), Users, Code::Scim199B, Code::Scim199B),
        ];
        for (e, area, check, run) in cases {
            assert_eq!(code(&e, area, false), check, "check {e:?}");
            assert_eq!(code(&e, area, true), run, "run {e:?}");
        }
        let no_answer = ApiError {
            status: None,
            ..err(0, None)
        };
        assert!(run_error(no_answer, Users).retryable);
    }

    #[test]
    fn what_the_provider_says_is_escaped_in_the_message() {
        let e = ApiError {
            message: "bad\n\u{1b}[31mred".into(),
            ..err(400, Some("invalid\"Value"))
        };
        let message = run_error(e, Area::Users).message;
        assert!(
            !message.contains('\n') && !message.contains('\u{1b}'),
            "{message}"
        );
        assert!(
            message.contains(r#"scimType "invalid\"Value""#),
            "{message}"
        );
    }
}
