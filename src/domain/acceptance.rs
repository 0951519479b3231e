//! What an accepted event's workflows open with: the mass-offboarding brake's verdict
//! (`held` or not) and, for each workflow, the records that follow its `created` record
//! in the same transaction (`held`, or the first step's start when the accepting process
//! drives it at once). The store persists what this decides.

use chrono::{DateTime, Utc};

use super::definition::Definition;
use super::machine::{self, Record, State, Violation};

/// A workflow to create for an accepted event.
pub struct NewWorkflow {
    /// Its id (a UUIDv7, so ids sort by creation).
    pub id: String,
    /// The definition it runs with.
    pub definition: Definition,
    /// Its first record (`Created`).
    pub created: Record,
    /// The state after that record.
    pub state: State,
    /// The first step's start (`StepStarted`), when the accepting process will drive the
    /// workflow at once: recorded in the same transaction as its creation.
    pub start: Option<Record>,
    /// Whether its definition removes or deactivates an account (`apps::ends_account`):
    /// the mass-offboarding brake counts and holds only such workflows.
    pub ends_account: bool,
}

/// How a new workflow opens: its first records and the state after them.
#[derive(Debug)]
pub struct Opening<'w> {
    /// `created`, then `held` or the first step's start, if either.
    pub trail: Vec<&'w Record>,
    /// The state after the trail.
    pub state: State,
    /// Whether it is leased at creation to the process that drives it at once.
    pub leased: bool,
}

/// How many of an event's workflows end an account: what the brake counts.
pub fn account_endings(workflows: &[NewWorkflow]) -> u64 {
    workflows.iter().filter(|w| w.ends_account).count() as u64
}

/// The brake's verdict on an event whose `ending` workflows end an account, after
/// `earlier` such workflows were created in the hour before: the `held` record its
/// account-ending workflows open with when together they pass `limit`
/// (`max_offboardings_per_hour`), else `None`.
pub fn brake(limit: u32, earlier: u64, ending: u64) -> Option<Record> {
    let in_last_hour = earlier + ending;
    (ending > 0 && in_last_hour > u64::from(limit)).then_some(Record::Held {
        limit,
        in_last_hour,
    })
}

impl NewWorkflow {
    /// How this workflow opens at `now`: a held workflow starts nothing; with
    /// `handing_off`, one with a `start` records it with its creation and is leased to
    /// the process that drives it. `held` is the event's brake verdict.
    pub fn opening<'w>(
        &'w self,
        held: Option<&'w Record>,
        handing_off: bool,
        now: DateTime<Utc>,
    ) -> Result<Opening<'w>, Violation> {
        let held = held.filter(|_| self.ends_account);
        let start = self.start.as_ref().filter(|_| handing_off);
        let mut opening = Opening {
            trail: vec![&self.created],
            state: self.state.clone(),
            leased: held.is_none() && start.is_some(),
        };
        if let Some(record) = held.or(start) {
            opening.state = machine::apply(&opening.state, &self.definition, record, now)?;
            opening.trail.push(record);
        }
        Ok(opening)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brake_holds_only_past_its_limit_and_only_with_account_endings() {
        assert_eq!(brake(10, 7, 3), None);
        assert_eq!(
            brake(10, 8, 3),
            Some(Record::Held {
                limit: 10,
                in_last_hour: 11
            })
        );
        assert_eq!(brake(0, 5, 0), None);
    }
}
