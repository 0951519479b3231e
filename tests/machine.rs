//! The workflow state machine driven with scripted action results, as the runner drives
//! it: steps in order, retries on the policy's timer, failures, `not_before`, records the
//! machine refuses, retry times checked against the policy, and rechecks after the end.
//! Pure functions only: no database, no broker, no HTTP.

use chrono::{DateTime, Utc};
use offboard::codes::Code;
use offboard::domain::definition::Definition;
use offboard::domain::event::EventType;
use offboard::domain::machine::*;
use offboard::domain::recheck;
use offboard::domain::step::{Outcome, StepError, StepOutput};

const DEF: &str = r#"
name = "t"
version = 1
app = "t"
event_type = "offboarding.requested"
outcome = "removed"
[retry]
initial_interval_ms = 1000
multiplier = 2.0
max_interval_ms = 10000
max_attempts = 3
jitter = 0.5
[[steps]]
name = "find"
action = "t.find"
[[steps]]
name = "remove"
action = "t.remove"
"#;

fn def() -> Definition {
    Definition::parse(DEF, |_| true).unwrap()
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

fn created(not_before: Option<DateTime<Utc>>) -> Record {
    created_for("t", not_before)
}

fn created_for(app: &str, not_before: Option<DateTime<Utc>>) -> Record {
    Record::Created {
        request: WorkflowRequest {
            event_id: "e1".into(),
            source: "test".into(),
            event_time: None,
            event_type: EventType::Offboarding,
            connection: "c".into(),
            app: app.into(),
            person_email: "a@b.co".into(),
            transfer_to: None,
            not_before,
            employee_id: None,
        },
        definition: def().reference(),
        steps: vec!["find".into(), "remove".into()],
    }
}

/// Drives a workflow with scripted action results, as the runner would, and returns
/// the trail it wrote.
fn drive(results: Vec<Result<StepOutput, StepError>>) -> Vec<(DateTime<Utc>, Record)> {
    drive_with(&def(), results)
}

/// [`drive`] with definition `d`; rechecks take their lookup results from the script
/// too.
fn drive_with(
    d: &Definition,
    results: Vec<Result<StepOutput, StepError>>,
) -> Vec<(DateTime<Utc>, Record)> {
    let d = d.clone();
    let first = created_for(&d.app, None);
    let mut state = create(&first).unwrap();
    let mut trail = vec![(t(0), first)];
    let mut results = results.into_iter();
    let mut now = t(1);
    loop {
        let record = match next(&state, &d, now) {
            Next::Done => return trail,
            Next::Sleep(at) => {
                now = at;
                continue;
            }
            Next::Complete(outcome) => Record::Completed { outcome },
            Next::Fail(code, message) => Record::Failed { code, message },
            Next::Recheck { recheck, attempt } => {
                let result = results.next().expect("a scripted lookup");
                recheck_result(&state, &d, recheck, attempt, result, now, 0.5)
            }
            Next::Run { step, attempt } => {
                let started = Record::StepStarted { step, attempt };
                state = apply(&state, &d, &started, now).unwrap();
                trail.push((now, started));
                let result = results.next().expect("a scripted result");
                step_result(&state, &d, step, attempt, result, now, 0.5)
            }
        };
        state = apply(&state, &d, &record, now).unwrap();
        trail.push((now, record));
        now += chrono::Duration::seconds(1);
    }
}

fn kinds(trail: &[(DateTime<Utc>, Record)]) -> Vec<&'static str> {
    trail.iter().map(|(_, r)| r.kind()).collect()
}

fn transient() -> Result<StepOutput, StepError> {
    Err(StepError::transient(Code::Smt190B, "503", None))
}

#[test]
fn every_step_in_order_then_the_definition_outcome() {
    let trail = drive(vec![
        Ok(StepOutput::summary("found")),
        Ok(StepOutput::summary("gone")),
    ]);
    assert_eq!(
        kinds(&trail),
        [
            "created",
            "step_started",
            "step_succeeded",
            "step_started",
            "step_succeeded",
            "completed"
        ]
    );
    let state = fold(&def(), &trail).unwrap();
    assert_eq!(state.status, Status::Completed);
    assert_eq!(state.outcome, Some(Outcome::Removed));
}

#[test]
fn an_early_finish_skips_the_rest() {
    let absent = StepOutput {
        finish_with: Some(Outcome::Absent),
        ..StepOutput::summary("nobody")
    };
    let trail = drive(vec![Ok(absent)]);
    let state = fold(&def(), &trail).unwrap();
    assert_eq!(state.outcome, Some(Outcome::Absent));
    assert_eq!(state.steps[1].state, StepState::Skipped);
}

#[test]
fn transient_errors_retry_on_the_policy_timer_then_succeed() {
    let trail = drive(vec![
        Ok(StepOutput::summary("found")),
        transient(),
        transient(),
        Ok(StepOutput::summary("gone")),
    ]);
    let state = fold(&def(), &trail).unwrap();
    assert_eq!(state.status, Status::Completed);
    assert_eq!(state.steps[1].attempts, 3);
    let delays: Vec<i64> = trail
        .iter()
        .filter_map(|(at, r)| match r {
            Record::StepFailed {
                retry_at: Some(when),
                ..
            } => Some((*when - *at).num_milliseconds()),
            _ => None,
        })
        .collect();
    // 1 s then 2 s, each plus half the 0.5 jitter (0.5 × 0.5 = 25 %).
    assert_eq!(delays, vec![1250, 2500]);
}

#[test]
fn exhausted_attempts_fail_with_the_errors_code() {
    let trail = drive(vec![
        Ok(StepOutput::summary("found")),
        transient(),
        transient(),
        transient(),
    ]);
    let state = fold(&def(), &trail).unwrap();
    assert_eq!(state.status, Status::Failed);
    assert_eq!(state.error_code, Some(Code::Smt190B));
    assert_eq!(kinds(&trail).last(), Some(&"failed"));
}

#[test]
fn fatal_errors_fail_at_once_and_retry_resumes_the_failed_step() {
    let d = def();
    let mut trail = drive(vec![Err(StepError::fatal(Code::Smt100B, "expired"))]);
    let state = fold(&d, &trail).unwrap();
    assert_eq!(
        (state.status, state.error_code),
        (Status::Failed, Some(Code::Smt100B))
    );
    trail.push((t(100), Record::RetryRequested { by: "ops".into() }));
    let state = fold(&d, &trail).unwrap();
    assert_eq!(
        next(&state, &d, t(100)),
        Next::Run {
            step: 0,
            attempt: 2
        }
    );
}

#[test]
fn not_before_holds_the_first_step() {
    let d = def();
    let state = create(&created(Some(t(60)))).unwrap();
    assert_eq!(next(&state, &d, t(0)), Next::Sleep(t(60)));
    assert_eq!(
        next(&state, &d, t(60)),
        Next::Run {
            step: 0,
            attempt: 1
        }
    );
    let early = apply(
        &state,
        &d,
        &Record::StepStarted {
            step: 0,
            attempt: 1,
        },
        t(10),
    );
    assert!(early.is_err());
}

#[test]
fn illegal_records_are_refused() {
    let d = def();
    let trail = drive(vec![
        Ok(StepOutput::summary("found")),
        transient(),
        Ok(StepOutput::summary("gone")),
    ]);
    // A forged retry time.
    let mut forged = trail.clone();
    for (_, r) in forged.iter_mut() {
        if let Record::StepFailed { retry_at, .. } = r {
            *retry_at = retry_at.map(|t| t + chrono::Duration::seconds(1));
        }
    }
    assert!(fold(&d, &forged).is_err());
    // A step skipped.
    let mut skipped = trail.clone();
    skipped.remove(2);
    assert_eq!(fold(&d, &skipped).unwrap_err().0, 2);
    // Anything after the end.
    let mut after = trail.clone();
    after.push((t(999), Record::Cancelled { by: "x".into() }));
    assert!(fold(&d, &after).is_err());
    // Completion before the steps are done.
    let early = vec![
        trail[0].clone(),
        (
            t(1),
            Record::Completed {
                outcome: Outcome::Removed,
            },
        ),
    ];
    assert!(fold(&d, &early).is_err());
}

/// `trail` with every recorded retry time replaced by what `change` makes of it.
fn with_retry_times(
    trail: &[(DateTime<Utc>, Record)],
    change: impl Fn(Option<DateTime<Utc>>) -> Option<DateTime<Utc>>,
) -> Vec<(DateTime<Utc>, Record)> {
    let mut out = trail.to_vec();
    for (_, r) in out.iter_mut() {
        if let Record::StepFailed { retry_at, .. } = r {
            *retry_at = change(*retry_at);
        }
    }
    out
}

/// Retry times are data checked against the policy's bounds: a time 1 ms off what
/// today's arithmetic computes (another release of the generator) still folds, and so
/// does any jitter draw within the policy; a time outside the bounds, a missing one
/// while attempts remain, and one after the last attempt do not.
#[test]
fn retry_times_are_checked_against_the_policys_bounds() {
    let d = def();
    let retried = drive(vec![
        Ok(StepOutput::summary("found")),
        transient(),
        Ok(StepOutput::summary("gone")),
    ]);
    let ms = chrono::Duration::milliseconds;
    // A whole trail whose retry time is 1 ms before today's computation.
    let earlier = with_retry_times(&retried, |t| t.map(|t| t - ms(1)));
    assert_eq!(fold(&d, &earlier).unwrap().status, Status::Completed);
    // The trail while it waits: recorded 1250 ms after the failure, where the policy
    // allows 1000–1500 ms (a retry started before its recorded time is refused on its
    // own, so later times are tried on the waiting trail).
    let failed = retried
        .iter()
        .position(|(_, r)| r.kind() == "step_failed")
        .unwrap();
    let waiting = &retried[..=failed];
    for shift in [-250, -1, 1, 250, 251] {
        let moved = with_retry_times(waiting, |t| t.map(|t| t + ms(shift)));
        assert!(fold(&d, &moved).is_ok(), "shifted by {shift} ms");
    }
    for shift in [-252, 252, 60_000, -1_250, -5_000] {
        let moved = with_retry_times(waiting, |t| t.map(|t| t + ms(shift)));
        let (at, why) = fold(&d, &moved).unwrap_err();
        assert_eq!(at, failed, "shifted by {shift} ms: {why}");
    }
    assert!(fold(&d, &with_retry_times(&retried, |_| None)).is_err());

    let exhausted = drive(vec![
        Ok(StepOutput::summary("found")),
        transient(),
        transient(),
        transient(),
    ]);
    assert!(fold(&d, &exhausted).is_ok());
    let one_more = with_retry_times(&exhausted, |t| t.or(Some(t_after_last(&exhausted))));
    assert!(fold(&d, &one_more).is_err());
    let fatal = drive(vec![Err(StepError::fatal(Code::Smt100B, "expired"))]);
    let retried_fatal = with_retry_times(&fatal, |_| Some(t(10)));
    assert!(fold(&d, &retried_fatal).is_err());
}

/// A time after every record of `trail`.
fn t_after_last(trail: &[(DateTime<Utc>, Record)]) -> DateTime<Utc> {
    trail.last().unwrap().0 + chrono::Duration::seconds(1)
}

fn rechecking() -> Definition {
    let text = DEF
        .replace("[retry]", "recheck_after = [\"3s\", \"1h\"]\n[retry]")
        .replace("\"t", "\"smartsheet");
    Definition::parse(&text, |_| true).unwrap()
}

fn found(id: i64) -> Result<StepOutput, StepError> {
    Ok(StepOutput::summary("found").fact("user_id", id))
}

fn absent() -> Result<StepOutput, StepError> {
    Ok(StepOutput {
        finish_with: Some(Outcome::Absent),
        ..StepOutput::summary("nobody")
    })
}

/// A removal rechecks at each offset from its completion; what the lookups find is on
/// record, and the workflow stays `completed` / `removed` throughout.
#[test]
fn rechecks_follow_a_removal_at_their_offsets_and_never_change_the_outcome() {
    let d = rechecking();
    let trail = drive_with(
        &d,
        vec![
            found(7),
            Ok(StepOutput::summary("gone")),
            absent(),
            found(8),
        ],
    );
    assert_eq!(
        kinds(&trail),
        [
            "created",
            "step_started",
            "step_succeeded",
            "step_started",
            "step_succeeded",
            "completed",
            "rechecked",
            "rechecked"
        ]
    );
    let completed_at = trail[5].0;
    assert_eq!(trail[6].0, completed_at + chrono::Duration::seconds(3));
    assert_eq!(trail[7].0, completed_at + chrono::Duration::hours(1));
    let state = fold(&d, &trail).unwrap();
    assert_eq!(
        (state.status, state.outcome),
        (Status::Completed, Some(Outcome::Removed))
    );
    let found: Vec<_> = state
        .rechecks
        .iter()
        .map(|r| (r.finding.result, r.finding.code))
        .collect();
    assert_eq!(
        found,
        [
            (recheck::RecheckResult::StillGone, None),
            (recheck::RecheckResult::Recreated, Some(Code::Smt113B))
        ]
    );
    assert_eq!(
        (state.wake_at, next(&state, &d, t(999_999))),
        (None, Next::Done)
    );

    // A workflow that found nobody to remove has nothing to recheck.
    let absent_trail = drive_with(&d, vec![absent()]);
    let state = fold(&d, &absent_trail).unwrap();
    assert_eq!(
        (state.outcome, state.wake_at),
        (Some(Outcome::Absent), None)
    );
}

#[test]
fn a_failed_lookup_is_retried_on_the_policy_and_bad_rechecks_are_refused() {
    let d = rechecking();
    let trail = drive_with(
        &d,
        vec![
            found(7),
            Ok(StepOutput::summary("gone")),
            transient(),
            found(7),
            absent(),
        ],
    );
    assert_eq!(
        &kinds(&trail)[6..],
        ["recheck_failed", "rechecked", "rechecked"]
    );
    let state = fold(&d, &trail).unwrap();
    assert_eq!(
        state.rechecks[0].finding.result,
        recheck::RecheckResult::Reactivated
    );
    assert_eq!(state.rechecks[0].finding.code, Some(Code::Smt113B));

    let mut early = trail.clone();
    early[6].0 = trail[5].0 + chrono::Duration::seconds(1);
    assert_eq!(fold(&d, &early).unwrap_err().0, 6);
    let mut forged = trail.clone();
    if let Record::RecheckFailed { retry_at, .. } = &mut forged[6].1 {
        *retry_at += chrono::Duration::seconds(60);
    }
    assert!(fold(&d, &forged).is_err());
    let mut silent = trail.clone();
    if let Record::Rechecked { finding, .. } = &mut silent[7].1 {
        finding.code = None;
    }
    assert_eq!(fold(&d, &silent).unwrap_err().0, 7);
    // The same trail under a definition without rechecks: nothing is due after the end.
    assert_eq!(fold(&def(), &trail).unwrap_err().0, 6);
}

/// `offboard-again` names the fresh offboarding's derived event id in the finding, and
/// a trail is held to what its definition asks: no such id under a report-only one.
#[test]
fn offboard_again_names_one_derived_event_per_recheck() {
    let text = rechecking().source.replace(
        "recheck_after",
        "recheck_action = \"offboard-again\"\nrecheck_after",
    );
    let again = Definition::parse(&text, |_| true).unwrap();
    let trail = drive_with(
        &again,
        vec![
            found(7),
            Ok(StepOutput::summary("gone")),
            found(9),
            absent(),
        ],
    );
    let state = fold(&again, &trail).unwrap();
    let asked: Vec<_> = state
        .rechecks
        .iter()
        .map(|r| r.finding.offboarded_again.clone())
        .collect();
    assert_eq!(asked, [Some("e1:recheck-1".to_string()), None]);
    assert_eq!(fold(&rechecking(), &trail).unwrap_err().0, 6);
}
