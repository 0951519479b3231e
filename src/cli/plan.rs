//! `offboard plan`: prints what [`crate::runtime::dry_run`] found — per connection, the
//! steps the run would get through, every write it would make, in order, and the code it
//! would stop on. Every value that came from an app goes through
//! [`super::views::terminal_safe`]; JSON output is the [`Plan`] itself.

use super::views::terminal_safe;
use super::{fail, Outcome, EXIT_FAILURE, EXIT_OK, EXIT_PLAN_STOPS, EXIT_USAGE};
use crate::config::Config;
use crate::domain::event::{self, EventType, Request};
use crate::runtime::definitions::Registry;
use crate::runtime::dry_run::{self, ConnectionPlan, Plan, PlanError};

/// What `plan` was asked, as given on the command line.
#[derive(clap::Args)]
pub struct Args {
    /// The person.
    #[arg(long)]
    pub email: String,
    /// Who would receive the person's data.
    #[arg(long)]
    pub transfer_to: Option<String>,
    /// The person's HR employee id (what a SCIM connection with `match =
    /// "externalId"` looks for).
    #[arg(long)]
    pub employee_id: Option<String>,
    /// Event type.
    #[arg(long = "type", default_value = "offboarding.requested")]
    pub event_type: String,
    /// Only these connections (repeatable; default: every configured one).
    #[arg(long = "connection")]
    pub connections: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `plan`: exit 0 when every connection's run would end well, 3 when one would stop.
pub async fn run(config: &Config, args: Args) -> Outcome {
    let usage = |r: event::Rejection| fail(EXIT_USAGE, r.message);
    let event_type = EventType::parse(&args.event_type).ok_or_else(|| {
        fail(
            EXIT_USAGE,
            format!(
                "unknown --type {:?}: use offboarding.requested or license.reclaim.requested",
                args.event_type
            ),
        )
    })?;
    let request = Request {
        event_id: format!("plan-{}", uuid::Uuid::now_v7()),
        source: "offboard-plan".into(),
        event_type,
        time: Some(chrono::Utc::now()),
        person_email: event::valid_email(&args.email, "--email").map_err(usage)?,
        employee_id: args
            .employee_id
            .map(|id| event::valid_employee_id(&id, "--employee-id"))
            .transpose()
            .map_err(usage)?,
        transfer_to: args
            .transfer_to
            .map(|t| event::valid_email(&t, "--transfer-to"))
            .transpose()
            .map_err(usage)?,
        connections: (!args.connections.is_empty()).then_some(args.connections),
        not_before: None,
        reason: None,
    };
    let registry =
        Registry::load(config.workflows_dir.as_deref()).map_err(|e| fail(EXIT_USAGE, e))?;
    let plan = dry_run::plan(config, &registry, &request)
        .await
        .map_err(|e| match e {
            PlanError::Rejected(r) => fail(EXIT_USAGE, r.message),
            other => fail(EXIT_FAILURE, other.to_string()),
        })?;
    if args.json {
        let text = serde_json::to_string_pretty(&plan)
            .map_err(|e| fail(EXIT_FAILURE, format!("cannot write the plan as JSON: {e}")))?;
        outln!("{text}");
    } else {
        print_text(&plan);
    }
    Ok(if plan.would_succeed {
        EXIT_OK
    } else {
        EXIT_PLAN_STOPS
    })
}

fn print_text(plan: &Plan) {
    let recipient = match &plan.transfer_to {
        Some(to) => format!("recipient {to}"),
        None => "no recipient".to_string(),
    };
    outln!(
        "{}",
        terminal_safe(&format!(
            "plan for {} ({}, {recipient}); nothing has been changed",
            plan.person_email,
            plan.event_type.as_str()
        ))
    );
    outln!("each step shows the line a run would record; numbered lines are the writes it would make, in order");
    for connection in &plan.connections {
        outln!();
        print_connection(connection);
    }
}

fn print_connection(c: &ConnectionPlan) {
    let verdict = match (&c.outcome, &c.stop) {
        (_, Some(stop)) => format!(
            "would stop{} with {}",
            stop.step
                .as_deref()
                .map(|s| format!(" at {s}"))
                .unwrap_or_default(),
            stop.code
        ),
        (Some(outcome), None) => format!("would complete: {}", outcome.as_str()),
        (None, None) => "would do nothing".to_string(),
    };
    let say = |line: String| outln!("{}", terminal_safe(&line));
    say(format!(
        "{} ({} v{}): {verdict}; {} writes, {} reads",
        c.connection,
        c.definition.name,
        c.definition.version,
        c.writes.len(),
        c.reads.len()
    ));
    let mut number = 0;
    let mut writes_of = |step: &str| {
        for w in c.writes.iter().filter(|w| w.step == step) {
            number += 1;
            let body = w
                .write
                .body
                .as_ref()
                .map(|b| format!(" {b}"))
                .unwrap_or_default();
            say(format!(
                "      {number}. {} {}{body}",
                w.write.method, w.write.path
            ));
            say(format!("         {}", w.write.description));
        }
    };
    for step in &c.steps {
        say(format!("  {:<22} {}", step.name, step.summary));
        writes_of(&step.name);
    }
    if let Some(stop) = &c.stop {
        let at = stop.step.as_deref().unwrap_or("before the first step");
        say(format!(
            "  {at:<22} {} {}: {}{}",
            stop.code,
            stop.code.message(),
            stop.message,
            if stop.retryable {
                " (the run would retry this step)"
            } else {
                ""
            }
        ));
        writes_of(at);
        for line in &stop.remedy {
            say(format!("  remedy: {line}"));
        }
    }
}
