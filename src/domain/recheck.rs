//! Rechecks after the end: a completed offboarding looks at the app again, at the offsets
//! its definition lists (`recheck_after = ["24h", "30d"]`), with the app's read-only lookup
//! (the same action as its `find` step), to prove the access stayed removed — or to catch
//! an identity provider or auto-provisioning that brought it back.
//!
//! Everything here is pure: parsing offsets, and telling what a lookup's output means
//! for the account the workflow removed ([`classify`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::step::{Outcome, StepOutput};
use crate::codes::Code;

/// What a recheck found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecheckResult {
    /// No account for the person: the removal stands.
    StillGone,
    /// The account the workflow removed is back under the same app user id (a SCIM
    /// re-activation, an identity provider's push).
    Reactivated,
    /// A new account with another user id for the same email (auto-provisioning, an
    /// admin's invitation).
    Recreated,
}

impl RecheckResult {
    /// The contract's spelling: `still_gone`, `reactivated`, `recreated`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecheckResult::StillGone => "still_gone",
            RecheckResult::Reactivated => "reactivated",
            RecheckResult::Recreated => "recreated",
        }
    }
}

/// What a definition does when a recheck finds access back (`recheck_action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecheckAction {
    /// Record it, publish `workflow.access_reappeared`, count it (the default).
    #[default]
    Report,
    /// That, and start a fresh offboarding of the person on the same connection, under
    /// the event id [`again_event_id`] (so once per recheck, however often it runs).
    OffboardAgain,
}

/// The event id of the fresh offboarding that recheck `recheck` (0-based) of the
/// workflow started by `event_id` asks for.
pub fn again_event_id(event_id: &str, recheck: usize) -> String {
    format!("{event_id}:recheck-{}", recheck + 1)
}

/// One recheck's finding, as recorded in the trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// What the lookup found.
    pub result: RecheckResult,
    /// `SMT-113-B` / `POST-113-B` when access came back; none when it stayed removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Code>,
    /// The app user id found, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i64>,
    /// The SCIM user id found (Postman), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scim_id: Option<String>,
    /// The entitlements the lookup saw (null when the person has no account).
    #[serde(default)]
    pub entitlements: Value,
    /// One line for people.
    pub summary: String,
    /// The event id of the fresh offboarding this finding asks for (`recheck_action =
    /// "offboard-again"`); the runner stores that event before it records the finding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offboarded_again: Option<String>,
}

/// Parses one `recheck_after` offset: a whole number and a unit (`3s`, `15m`, `24h`,
/// `30d`), more than zero and at most a year.
pub fn parse_offset(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (s, m, h or d)"))?;
    let (number, unit) = text.split_at(unit_at);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let secs_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    if n == 0 {
        return Err(format!("{text:?} is no offset: it must be after the end"));
    }
    n.checked_mul(secs_per)
        .filter(|s| *s <= 366 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is more than a year"))
}

/// Parses a definition's `recheck_after` list: each offset after the completion, strictly
/// increasing, at most ten.
pub fn parse_offsets(texts: &[String]) -> Result<Vec<Duration>, String> {
    if texts.len() > 10 {
        return Err("at most ten rechecks".into());
    }
    let offsets = texts
        .iter()
        .map(|t| parse_offset(t))
        .collect::<Result<Vec<_>, _>>()?;
    if offsets.windows(2).any(|w| w[0] >= w[1]) {
        return Err("the offsets must increase".into());
    }
    Ok(offsets)
}

/// The code that says access came back on `app`, if the app has one.
pub fn reappeared_code(app: &str) -> Option<Code> {
    match app {
        "smartsheet" => Some(Code::Smt113B),
        "postman" => Some(Code::Post113B),
        "scim" => Some(Code::Scim113B),
        _ => None,
    }
}

/// An account as a lookup's facts name it: the app's ids for it, and whether it can be
/// used (signed in with, holds a seat).
#[derive(Debug, PartialEq)]
struct Account {
    /// Smartsheet's `user_id`, Postman's team `member_id`.
    user_id: Option<i64>,
    /// Postman's SCIM user id: the identity the deactivation acted on, kept while the
    /// user is deactivated and again once re-activated.
    scim_id: Option<String>,
    /// Whether the account is active: Smartsheet's lookup finds only accounts in the
    /// organisation; on Postman, a team member or a SCIM user with `active: true` (a
    /// deactivated user, whom the lookup still reports when they are the only Admin of
    /// workspaces, is not).
    active: bool,
}

impl Account {
    /// The account `facts` (of `app`'s first step) name.
    fn of(app: &str, facts: &Map<String, Value>) -> Account {
        match app {
            "postman" => {
                let user_id = facts.get("member_id").and_then(Value::as_i64);
                Account {
                    user_id,
                    scim_id: facts
                        .get("scim_id")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    active: user_id.is_some()
                        || facts.get("scim_active").and_then(Value::as_bool) == Some(true),
                }
            }
            // A SCIM app's `find-user` records the SCIM id and `active`; a deleted user
            // is not found at all.
            "scim" => Account {
                user_id: None,
                scim_id: facts
                    .get("scim_id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                active: facts.get("scim_active").and_then(Value::as_bool) == Some(true),
            },
            _ => Account {
                user_id: facts.get("user_id").and_then(Value::as_i64),
                scim_id: None,
                active: true,
            },
        }
    }

    /// Whether this is the account `removed`: by SCIM id when both have one (it outlives
    /// a deactivation), else by the app's user id.
    fn is(&self, removed: &Account) -> bool {
        match (&self.scim_id, &removed.scim_id) {
            (Some(found), Some(removed)) => found == removed,
            _ => self.user_id.is_some() && self.user_id == removed.user_id,
        }
    }

    /// How people know the account: its user id, else its SCIM id.
    fn label(&self) -> String {
        match (self.user_id, &self.scim_id) {
            (Some(id), _) => format!("user {id}"),
            // Debug-quoted: the id comes from the app and ends up in logs.
            (None, Some(scim)) => format!("SCIM user {scim:?}"),
            (None, None) => "account".into(),
        }
    }
}

/// What the lookup's `output` means for the account the workflow removed, whose facts
/// (as the `find` step recorded them) are `facts`: no account, or one that is not active
/// (Postman's deactivated SCIM user), is still gone; the same account active is a
/// re-activation; another account a re-creation.
pub fn classify(app: &str, facts: &Map<String, Value>, output: &StepOutput) -> Finding {
    let found = Account::of(app, &output.facts);
    if output.finish_with == Some(Outcome::Absent) || !found.active {
        let summary = if output.finish_with == Some(Outcome::Absent) {
            "still gone: no active account has the person's email".to_string()
        } else {
            format!("still gone: {} is deactivated", found.label())
        };
        return Finding {
            result: RecheckResult::StillGone,
            code: None,
            user_id: None,
            scim_id: None,
            entitlements: Value::Null,
            summary,
            offboarded_again: None,
        };
    }
    let result = if found.is(&Account::of(app, facts)) {
        RecheckResult::Reactivated
    } else {
        RecheckResult::Recreated
    };
    let entitlements = output
        .facts
        .get("entitlements_before")
        .cloned()
        .unwrap_or(Value::Null);
    let summary = match result {
        RecheckResult::Reactivated => format!(
            "access came back: {}, the one removed, is active again",
            found.label()
        ),
        _ => format!(
            "access came back: a new {} has the person's email",
            found.label()
        ),
    };
    Finding {
        result,
        code: reappeared_code(app),
        user_id: found.user_id,
        scim_id: found.scim_id,
        entitlements,
        summary,
        offboarded_again: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_in_units_and_must_increase() {
        let ok = parse_offsets(&["3s".into(), "24h".into(), "30d".into()]).unwrap();
        assert_eq!(
            ok,
            [
                Duration::from_secs(3),
                Duration::from_secs(86_400),
                Duration::from_secs(30 * 86_400)
            ]
        );
        for bad in ["", "24", "h", "0s", "2w", "-1h", "400d", "1.5h"] {
            assert!(parse_offset(bad).is_err(), "{bad:?}");
        }
        assert!(parse_offsets(&["30d".into(), "24h".into()]).is_err());
        assert!(parse_offsets(&["1h".into(), "60m".into()]).is_err());
    }

    fn removed_user(id: i64) -> Map<String, Value> {
        let mut facts = Map::new();
        facts.insert("user_id".into(), id.into());
        facts
    }

    #[test]
    fn absent_is_still_gone_same_id_reactivated_other_id_recreated() {
        let absent = StepOutput {
            finish_with: Some(Outcome::Absent),
            ..StepOutput::summary("nobody")
        };
        let gone = classify("smartsheet", &removed_user(7), &absent);
        assert_eq!((gone.result, gone.code), (RecheckResult::StillGone, None));

        let same = StepOutput::summary("found")
            .fact("user_id", 7)
            .fact("entitlements_before", serde_json::json!({"admin": false}));
        let back = classify("smartsheet", &removed_user(7), &same);
        assert_eq!(
            (back.result, back.code, back.user_id),
            (RecheckResult::Reactivated, Some(Code::Smt113B), Some(7))
        );
        assert_eq!(back.entitlements["admin"], false);

        let other = StepOutput::summary("found").fact("user_id", 9);
        let new = classify("smartsheet", &removed_user(7), &other);
        assert_eq!(
            (new.result, new.code),
            (RecheckResult::Recreated, Some(Code::Smt113B))
        );
    }

    /// Postman's `find_member` facts: the team member id (none once out of the team),
    /// the SCIM id and whether SCIM says active.
    fn postman(member: Option<i64>, scim: &str, active: bool) -> Map<String, Value> {
        let mut facts = Map::new();
        facts.insert("member_id".into(), member.into());
        facts.insert("scim_id".into(), scim.into());
        facts.insert("scim_active".into(), active.into());
        facts
    }

    fn found(facts: Map<String, Value>) -> StepOutput {
        StepOutput {
            facts,
            ..StepOutput::summary("found")
        }
    }

    #[test]
    fn on_postman_the_scim_id_decides_and_a_deactivated_user_is_still_gone() {
        let removed = postman(Some(12), "scim-a", true);

        // Deactivated, yet reported because they are still the only Admin of workspaces.
        let deactivated = classify("postman", &removed, &found(postman(None, "scim-a", false)));
        assert_eq!(
            (deactivated.result, deactivated.code),
            (RecheckResult::StillGone, None)
        );
        assert!(
            deactivated.summary.contains("deactivated"),
            "{deactivated:?}"
        );

        // The same SCIM user active again, back in the team (the member id may differ).
        for member in [Some(12), Some(40), None] {
            let back = classify("postman", &removed, &found(postman(member, "scim-a", true)));
            assert_eq!(
                (back.result, back.code, back.scim_id.as_deref()),
                (
                    RecheckResult::Reactivated,
                    Some(Code::Post113B),
                    Some("scim-a")
                ),
                "{member:?}"
            );
            assert_eq!(back.user_id, member);
        }

        // Another SCIM user with the person's email, even under the old member id.
        let new = classify(
            "postman",
            &removed,
            &found(postman(Some(12), "scim-b", true)),
        );
        assert_eq!(
            (new.result, new.code),
            (RecheckResult::Recreated, Some(Code::Post113B))
        );

        // Without SCIM ids on one side, the team member id decides.
        let mut no_scim = Map::new();
        no_scim.insert("member_id".into(), 12.into());
        no_scim.insert("scim_id".into(), Value::Null);
        let same = classify("postman", &removed, &found(no_scim.clone()));
        assert_eq!(same.result, RecheckResult::Reactivated);
        no_scim.insert("member_id".into(), 13.into());
        let other = classify("postman", &removed, &found(no_scim));
        assert_eq!(other.result, RecheckResult::Recreated);
    }

    /// A SCIM app's `find-user` facts: the SCIM id and whether the user is active.
    fn scim(id: &str, active: bool) -> Map<String, Value> {
        let mut facts = Map::new();
        facts.insert("scim_id".into(), id.into());
        facts.insert("scim_active".into(), active.into());
        facts
    }

    #[test]
    fn on_a_scim_app_an_inactive_user_is_still_gone_and_an_active_one_is_scim_113_b() {
        let removed = scim("u-1", true);
        let still = classify("scim", &removed, &found(scim("u-1", false)));
        assert_eq!((still.result, still.code), (RecheckResult::StillGone, None));
        let back = classify("scim", &removed, &found(scim("u-1", true)));
        assert_eq!(
            (back.result, back.code, back.scim_id.as_deref()),
            (
                RecheckResult::Reactivated,
                Some(Code::Scim113B),
                Some("u-1")
            )
        );
        let new = classify("scim", &removed, &found(scim("u-2", true)));
        assert_eq!(
            (new.result, new.code),
            (RecheckResult::Recreated, Some(Code::Scim113B))
        );
    }
}
