//! One description of each trail record, in words, for every place that shows a trail:
//! `offboard history`, the records `offboard replay` prints and the demo, and the
//! console's timeline. [`describe`] returns the parts ([`Description`]); the terminal
//! lays them out as a line, the console as a table row, so both say the same thing.
//!
//! The parts are plain text as recorded: values from events and apps are *not* escaped
//! here, because how to escape depends on where they go (control characters for a
//! terminal, markup for HTML). Each renderer escapes them.

use chrono::{DateTime, Utc};

use super::definition::DefinitionRef;
use super::machine::{Record, WorkflowRequest};
use super::recheck::Finding;

/// What kind of moment a record is, for a reader scanning a trail (the console colours
/// its rows by it; the names are its CSS classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    /// The workflow was created.
    Created,
    /// A step attempt began.
    Start,
    /// An HTTP call, evidence of what a step did.
    Api,
    /// Something went right: a step succeeded, the workflow completed, a clean recheck.
    Ok,
    /// Something went wrong: a failed attempt, a failed workflow, a recheck that found
    /// the person back, a record that cannot be read.
    Fail,
    /// An operator's action or the engine's decision: cancel, retry, hold, duplicate.
    Note,
}

impl Tone {
    /// The lower-case name (`created`, `start`, `api`, `ok`, `fail`, `note`).
    pub fn as_str(self) -> &'static str {
        match self {
            Tone::Created => "created",
            Tone::Start => "start",
            Tone::Api => "api",
            Tone::Ok => "ok",
            Tone::Fail => "fail",
            Tone::Note => "note",
        }
    }
}

/// A trail record described: what kind of moment, which step, what happened, and the
/// code that explains it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// What kind of moment it is.
    pub tone: Tone,
    /// The step it belongs to (its name, `#N` for an index the workflow does not have,
    /// or `recheck`); `None` for a record about the whole workflow.
    pub step: Option<String>,
    /// What happened, in one sentence.
    pub summary: String,
    /// The catalog code (`SMT-110-B`) or the app's own (`errorCode 1020`) that explains
    /// it, if any.
    pub code: Option<String>,
}

impl Description {
    /// The description of a record whose body cannot be parsed (replay reports where).
    pub fn unreadable() -> Description {
        Description {
            tone: Tone::Fail,
            step: None,
            summary: "unreadable record".into(),
            code: None,
        }
    }
}

/// A moment as every description prints it: UTC to the millisecond, like the trail's own
/// time column in `offboard history`.
pub fn moment(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// Describes `record`, written at `at`, of a workflow whose steps are named `steps` (in
/// order).
pub fn describe(record: &Record, at: DateTime<Utc>, steps: &[String]) -> Description {
    let step = match record {
        Record::Rechecked { .. } | Record::RecheckFailed { .. } => Some("recheck".to_string()),
        _ => record
            .step()
            .map(|i| steps.get(i).cloned().unwrap_or_else(|| format!("#{i}"))),
    };
    let (tone, summary, code) = what_happened(record, at);
    Description {
        tone,
        step,
        summary,
        code,
    }
}

/// A record's tone, summary and code (everything but its step).
fn what_happened(record: &Record, at: DateTime<Utc>) -> (Tone, String, Option<String>) {
    let (tone, summary) = match record {
        Record::Created {
            request,
            definition,
            ..
        } => (Tone::Created, created(request, definition)),
        Record::StepStarted { attempt, .. } => (Tone::Start, format!("attempt {attempt} started")),
        Record::ApiCall {
            method,
            path,
            status,
            error_code,
            duration_ms,
            ..
        } => {
            let summary = api_call(method, path, *status, *duration_ms);
            let code = error_code.map(|c| format!("errorCode {c}"));
            return (Tone::Api, summary, code);
        }
        Record::StepSucceeded {
            attempt, output, ..
        } => (
            Tone::Ok,
            format!("attempt {attempt} succeeded: {}", output.summary),
        ),
        Record::StepFailed {
            attempt,
            error,
            retry_at,
            ..
        } => {
            let next = next_try(at, *retry_at);
            let summary = format!("attempt {attempt} failed: {}; {next}", error.message);
            return (Tone::Fail, summary, Some(error.code.to_string()));
        }
        Record::Completed { outcome } => (Tone::Ok, format!("completed: {}", outcome.as_str())),
        Record::Failed { code, message } => {
            return (
                Tone::Fail,
                format!("failed: {message}"),
                Some(code.to_string()),
            )
        }
        Record::Cancelled { by } => (Tone::Note, format!("cancelled by {by}")),
        Record::RetryRequested { by } => (Tone::Note, format!("retry requested by {by}")),
        Record::Released { by } => (Tone::Note, format!("released by {by}")),
        Record::DuplicateReceived { source } => (
            Tone::Note,
            format!("the same event arrived again (from {source}); nothing new started"),
        ),
        Record::CancelRefused { by } => (
            Tone::Note,
            format!("cancel asked by {by} refused: the workflow had already ended"),
        ),
        Record::Held {
            limit,
            in_last_hour,
        } => (Tone::Note, held(*limit, *in_last_hour)),
        Record::Rechecked { recheck, finding } => {
            let d = recheck_finding(*recheck, finding);
            return (d.tone, d.summary, d.code);
        }
        Record::RecheckFailed {
            recheck,
            attempt,
            error,
            retry_at,
            ..
        } => {
            let summary = recheck_retry(*recheck, *attempt, &error.message, *retry_at);
            return (Tone::Note, summary, Some(error.code.to_string()));
        }
    };
    (tone, summary, None)
}

/// A recheck's lookup that failed, and when it runs again.
fn recheck_retry(recheck: usize, attempt: u32, message: &str, retry_at: DateTime<Utc>) -> String {
    format!(
        "recheck {} attempt {attempt} failed: {message}; again at {}",
        recheck + 1,
        moment(retry_at)
    )
}

/// The brake's hold, and who lifts it.
fn held(limit: u32, in_last_hour: u64) -> String {
    format!(
        "held by the mass-offboarding brake: {in_last_hour} offboardings in the last hour, \
         limit {limit}; waits for `offboard release`"
    )
}

/// An HTTP call: method, path (without secrets), the status or `no response`, and how
/// long it took.
fn api_call(method: &str, path: &str, status: Option<u16>, duration_ms: u64) -> String {
    let answer = status.map_or_else(|| "no response".into(), |s| s.to_string());
    format!("{method} {path} -> {answer} in {duration_ms} ms")
}

/// The creation record: which event, from where, with which definition, and the
/// earliest start when the event asked for one.
fn created(request: &WorkflowRequest, definition: &DefinitionRef) -> String {
    let not_before = request
        .not_before
        .map(|t| format!(", not before {}", moment(t)))
        .unwrap_or_default();
    format!(
        "created from event {} ({} from {}) with {} v{}{not_before}",
        request.event_id,
        request.event_type.as_str(),
        request.source,
        definition.name,
        definition.version,
    )
}

/// When a failed attempt, written at `at`, is tried again: how long after, and when.
fn next_try(at: DateTime<Utc>, retry_at: Option<DateTime<Utc>>) -> String {
    match retry_at {
        Some(t) => format!(
            "retry in {:.1} s (at {})",
            (t - at).as_seconds_f64().max(0.0),
            moment(t)
        ),
        None => "no retry".into(),
    }
}

/// What recheck number `recheck` (0-based) found: a clean finding is good news, one with
/// a code (the person is back) is not. The `rechecked` record's description, and what
/// `offboard show` lists under a workflow's rechecks.
pub fn recheck_finding(recheck: usize, finding: &Finding) -> Description {
    let tone = if finding.code.is_some() {
        Tone::Fail
    } else {
        Tone::Ok
    };
    let summary = format!(
        "recheck {}: {} ({})",
        recheck + 1,
        finding.result.as_str(),
        finding.summary
    );
    Description {
        tone,
        step: Some("recheck".into()),
        summary,
        code: finding.code.map(|c| c.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::Code;
    use crate::domain::recheck::RecheckResult;
    use crate::domain::step::StepError;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + secs, 0).unwrap()
    }

    fn steps() -> Vec<String> {
        vec!["find-user".into(), "remove-user".into()]
    }

    #[test]
    fn a_call_names_its_step_and_carries_the_apps_own_code() {
        let call = Record::ApiCall {
            step: 1,
            attempt: 1,
            method: "DELETE".into(),
            path: "/users/7".into(),
            status: Some(404),
            error_code: Some(1020),
            duration_ms: 3,
        };
        let d = describe(&call, at(0), &steps());
        assert_eq!(d.tone, Tone::Api);
        assert_eq!(d.step.as_deref(), Some("remove-user"));
        assert_eq!(d.summary, "DELETE /users/7 -> 404 in 3 ms");
        assert_eq!(d.code.as_deref(), Some("errorCode 1020"));
    }

    #[test]
    fn a_failed_attempt_says_when_it_is_tried_again() {
        let failed = Record::StepFailed {
            step: 5,
            attempt: 2,
            error: StepError::fatal(Code::Smt110B, "recipient missing"),
            jitter: 0.5,
            retry_at: Some(at(90)),
        };
        let d = describe(&failed, at(0), &steps());
        assert_eq!(d.tone, Tone::Fail);
        assert_eq!(d.step.as_deref(), Some("#5"), "an index the workflow lacks");
        assert_eq!(
            d.summary,
            format!(
                "attempt 2 failed: recipient missing; retry in 90.0 s (at {})",
                moment(at(90))
            )
        );
        assert_eq!(d.code.as_deref(), Some("SMT-110-B"));
    }

    #[test]
    fn a_recheck_that_finds_the_person_back_is_bad_news_with_its_code() {
        let finding = |result, code| Finding {
            result,
            code,
            user_id: Some(7),
            scim_id: None,
            entitlements: serde_json::Value::Null,
            summary: "user 7 is active".into(),
            offboarded_again: None,
        };
        let back = Record::Rechecked {
            recheck: 0,
            finding: finding(RecheckResult::Reactivated, Some(Code::Smt113B)),
        };
        let d = describe(&back, at(0), &steps());
        assert_eq!((d.tone, d.step.as_deref()), (Tone::Fail, Some("recheck")));
        assert_eq!(d.summary, "recheck 1: reactivated (user 7 is active)");
        assert_eq!(d.code.as_deref(), Some("SMT-113-B"));
        let gone = recheck_finding(1, &finding(RecheckResult::StillGone, None));
        assert_eq!((gone.tone, gone.code), (Tone::Ok, None));
    }

    #[test]
    fn operators_actions_belong_to_the_whole_workflow() {
        let d = describe(&Record::Cancelled { by: "bob".into() }, at(0), &steps());
        assert_eq!(
            d,
            Description {
                tone: Tone::Note,
                step: None,
                summary: "cancelled by bob".into(),
                code: None,
            }
        );
        assert_eq!(Description::unreadable().tone.as_str(), "fail");
    }
}
