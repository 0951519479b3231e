//! The Smartsheet steps named in `workflows/smartsheet-*.toml`. Each reads before it
//! writes and treats "already done" as done, so running a step twice (after a crash
//! between the call and its record) changes nothing more.

use serde_json::{json, Value};

use super::client::{Client, User};
use super::errors::{ActionResult, Area, Failure};
use crate::apps::failure::{api, unknown_action};
use crate::apps::ActionContext;
use crate::codes::Code;
use crate::domain::event::EventType;
use crate::domain::protection::Person;
use crate::domain::step::{Outcome, StepError, StepOutput};

/// Every action this module performs.
pub const ACTIONS: &[&str] = &[
    "smartsheet.find_user",
    "smartsheet.list_groups",
    "smartsheet.check_recipient",
    "smartsheet.reassign_groups",
    "smartsheet.revoke_licenses",
    "smartsheet.remove_user",
    "smartsheet.confirm_removed",
];

/// The actions that remove or deactivate the account (see [`crate::apps::ends_account`]).
pub const ENDS_ACCOUNT: &[&str] = &["smartsheet.remove_user"];

/// The actions that only read: their start need not be durable before they run (a read
/// repeated after a crash changes nothing), so the runner commits them with what follows.
/// `tests/smartsheet_flow.rs` checks from the trails that they make no other request.
pub const READ_ONLY: &[&str] = &[
    "smartsheet.find_user",
    "smartsheet.list_groups",
    "smartsheet.check_recipient",
    "smartsheet.confirm_removed",
];

/// Performs one action; [`super::errors::run_error`] maps its API failures to codes.
pub async fn perform(client: &Client, action: &str, ctx: &ActionContext<'_>) -> ActionResult {
    match action {
        "smartsheet.find_user" => find_user(client, ctx).await,
        "smartsheet.list_groups" => list_groups(client, ctx).await,
        "smartsheet.check_recipient" => check_recipient(client, ctx).await,
        "smartsheet.reassign_groups" => reassign_groups(client, ctx).await,
        "smartsheet.revoke_licenses" => revoke_licenses(client, ctx).await,
        "smartsheet.remove_user" => remove_user(client, ctx).await,
        "smartsheet.confirm_removed" => confirm_removed(client, ctx).await,
        other => Err(unknown_action(Code::Smt199B, other).into()),
    }
}

fn entitlements(user: &User) -> Value {
    json!({
        "status": user.status,
        "admin": user.admin,
        "licensedSheetCreator": user.licensed_sheet_creator,
        "groupAdmin": user.group_admin,
        "resourceViewer": user.resource_viewer,
        "lastLogin": user.last_login,
    })
}

fn user_id(ctx: &ActionContext<'_>) -> Result<i64, Failure> {
    ctx.fact_i64("user_id")
        .ok_or_else(|| Failure::fatal(Code::Smt199B, "no user id recorded by find_user"))
}

fn owned_groups(ctx: &ActionContext<'_>) -> Vec<(i64, String)> {
    ctx.facts
        .get("owned_groups")
        .and_then(Value::as_array)
        .map(|groups| {
            groups
                .iter()
                .filter_map(|g| {
                    Some((g.get("id")?.as_i64()?, g.get("name")?.as_str()?.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn find_user(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    let email = &ctx.request.person_email;
    let Some(found) = client
        .find_user(email, ctx.calls)
        .await
        .map_err(api(Area::Users))?
    else {
        return Ok(StepOutput {
            finish_with: Some(Outcome::Absent),
            ..StepOutput::summary(format!(
                "no Smartsheet user has the email {email}; nothing to do"
            ))
        });
    };
    // The list omits some fields (lastLogin); the user's own record has them all.
    let user = client
        .get_user(found.id, ctx.calls)
        .await
        .map_err(api(Area::Users))?
        .unwrap_or(found);
    protect(client, ctx, Subject::of(&user)).await?;
    Ok(
        StepOutput::summary(format!("found user {} ({})", user.id, user.email))
            .fact("user_id", user.id)
            .fact("user_email", user.email.as_str())
            .fact("entitlements_before", entitlements(&user)),
    )
}

/// Who a protection check is about: the user's id, email as Smartsheet spells it, and
/// whether they are a System Admin.
struct Subject<'a> {
    id: i64,
    email: &'a str,
    admin: bool,
}

impl<'a> Subject<'a> {
    /// The user as the action has just read them.
    fn of(user: &'a User) -> Self {
        Subject {
            id: user.id,
            email: &user.email,
            admin: user.admin,
        }
    }

    /// The user as `find_user` recorded them (its admin role from the evidence, the email
    /// as the event spells it when an older trail recorded no other).
    fn recorded(ctx: &'a ActionContext<'_>) -> Result<Self, Failure> {
        Ok(Subject {
            id: user_id(ctx)?,
            email: ctx
                .fact_str("user_email")
                .unwrap_or(&ctx.request.person_email),
            admin: ctx
                .facts
                .get("entitlements_before")
                .and_then(|e| e.get("admin"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

/// Refuses to touch a protected person (`SMT-112-B`), by the rules of the configuration
/// this process runs with (`protected`, `allow_admins`). Asked by `find_user`, and again
/// by every action that writes (`reassign_groups`, `revoke_licenses`, `remove_user`)
/// right before its first write: that write may come hours of retries after `find_user`,
/// in a process started with other rules. Only a System Admin can own offboard's token
/// (the token must manage users), so `/users/me` is asked only when an admin may
/// otherwise be removed.
async fn protect(
    client: &Client,
    ctx: &ActionContext<'_>,
    who: Subject<'_>,
) -> Result<(), Failure> {
    let token_owner = who.admin
        && client.guard.allow_admins
        && client.me(ctx.calls).await.map_err(api(Area::Users))?.id == who.id;
    let emails = [ctx.request.person_email.as_str(), who.email];
    let person = Person {
        emails: &emails,
        admin: who.admin,
        token_owner,
    };
    match client.guard.refusal(person) {
        Some(why) => Err(Failure::fatal(
            Code::Smt112B,
            format!(
                "user {} ({}): {why}; nothing was changed by this step",
                who.id, who.email
            ),
        )),
        None => Ok(()),
    }
}

async fn list_groups(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    let user_id = user_id(ctx)?;
    let all = client
        .list_groups(ctx.calls)
        .await
        .map_err(api(Area::Groups))?;
    let owned: Vec<Value> = all
        .iter()
        .filter(|g| g.owner_id == Some(user_id))
        .map(|g| json!({ "id": g.id, "name": g.name }))
        .collect();
    Ok(StepOutput::summary(format!(
        "read {} groups; the person owns {}",
        all.len(),
        owned.len()
    ))
    .fact("owned_groups", owned))
}

async fn check_recipient(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    let owns_groups = !owned_groups(ctx).is_empty();
    let Some(email) = ctx.request.transfer_to.as_deref() else {
        if owns_groups && ctx.request.event_type == EventType::Offboarding {
            return Err(Failure::fatal(Code::Smt110B,
                "the person owns groups, so Smartsheet needs a recipient (transfer_to) to remove them",
            ));
        }
        return Ok(StepOutput::summary(
            "no recipient given; nothing will be transferred",
        ));
    };
    let recipient = client
        .find_user(email, ctx.calls)
        .await
        .map_err(api(Area::Users))?
        .ok_or_else(|| {
            Failure::fatal(
                Code::Smt110B,
                format!("recipient {email} is not a user of this Smartsheet account"),
            )
        })?;
    if recipient.id == user_id(ctx)? {
        return Err(Failure::fatal(
            Code::Smt110B,
            "the recipient is the person being offboarded",
        ));
    }
    let status = recipient.status.as_deref().unwrap_or("ACTIVE");
    if status != "ACTIVE" {
        return Err(Failure::fatal(
            Code::Smt110B,
            format!("recipient {email} is {status}, not ACTIVE"),
        ));
    }
    if owns_groups && !(recipient.group_admin || recipient.admin) {
        return Err(Failure::fatal(
            Code::Smt110B,
            format!("recipient {email} must be a group admin to take over the person's groups"),
        ));
    }
    Ok(StepOutput::summary(format!(
        "recipient {} ({email}) can take over",
        recipient.id
    ))
    .fact("recipient_id", recipient.id))
}

async fn reassign_groups(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    let owned = owned_groups(ctx);
    let leaver = user_id(ctx)?;
    let Some(recipient) = ctx.fact_i64("recipient_id") else {
        return Ok(StepOutput::summary(format!(
            "no recipient; {} owned groups keep their owner",
            owned.len()
        )));
    };
    if !owned.is_empty() {
        protect(client, ctx, Subject::recorded(ctx)?).await?;
    }
    let mut moved = Vec::new();
    let mut left = Vec::new();
    for (id, name) in &owned {
        // Read right before each write: since `list_groups` ran the group may have been
        // moved (by us before a crash, or by someone else) or deleted. Only a group the
        // leaver still owns is theirs to hand over.
        match client
            .get_group(*id, ctx.calls)
            .await
            .map_err(api(Area::Groups))?
        {
            Some(g) if g.owner_id == Some(leaver) => {}
            Some(g) if g.owner_id == Some(recipient) => continue,
            Some(g) => {
                left.push(json!({ "id": id, "name": name, "ownerId": g.owner_id,
                    "reason": "owned by someone else by the time of the reassignment" }));
                continue;
            }
            None => {
                left.push(
                    json!({ "id": id, "name": name, "reason": "the group no longer exists" }),
                );
                continue;
            }
        }
        client
            .set_group_owner(*id, recipient, ctx.calls)
            .await
            .map_err(api(Area::Groups))?;
        moved.push(json!({ "id": id, "name": name }));
    }
    Ok(StepOutput::summary(format!(
        "{} of {} owned groups now belong to user {recipient}; {} left alone",
        moved.len(),
        owned.len(),
        left.len()
    ))
    .fact("groups_reassigned", moved)
    .fact("groups_not_reassigned", left))
}

async fn revoke_licenses(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    let id = user_id(ctx)?;
    let drop_group_admin =
        ctx.request.event_type == EventType::Offboarding || ctx.fact_i64("recipient_id").is_some();
    let Some(user) = client
        .get_user(id, ctx.calls)
        .await
        .map_err(api(Area::Users))?
    else {
        if ctx.request.event_type == EventType::Offboarding {
            // Removed by someone else (or by us before a crash): the seat is already free.
            return Ok(StepOutput::summary(format!(
                "user {id} is already gone; no roles left to remove"
            )));
        }
        return Err(Failure::fatal(
            Code::Smt199B,
            format!("user {id} disappeared before the licence could be taken back"),
        ));
    };
    let mut roles = json!({ "licensedSheetCreator": false, "resourceViewer": false });
    if drop_group_admin {
        roles["groupAdmin"] = Value::Bool(false);
    }
    let already = !(user.licensed_sheet_creator
        || user.resource_viewer
        || (drop_group_admin && user.group_admin));
    let mut after = user.clone();
    after.licensed_sheet_creator = false;
    after.resource_viewer = false;
    after.group_admin &= !drop_group_admin;
    if already {
        return Ok(StepOutput::summary("roles were already off")
            .fact("entitlements_after", entitlements(&after)));
    }
    // The user was read just now: their admin role and email as they stand.
    protect(client, ctx, Subject::of(&user)).await?;
    client
        .set_user_roles(id, &roles, ctx.calls)
        .await
        .map_err(api(Area::Users))?;
    Ok(
        StepOutput::summary(format!("set {} to false", roles_list(&roles)))
            .fact("entitlements_after", entitlements(&after)),
    )
}

fn roles_list(roles: &Value) -> String {
    roles
        .as_object()
        .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

async fn remove_user(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    let id = user_id(ctx)?;
    // Smartsheet refuses transferTo/transferSheets for a user who never accepted the
    // invitation (status PENDING); such a user owns no sheets or groups to transfer.
    let pending = ctx
        .facts
        .get("entitlements_before")
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        == Some("PENDING");
    let recipient = ctx.fact_i64("recipient_id").filter(|_| !pending);
    protect(client, ctx, Subject::recorded(ctx)?).await?;
    match client.remove_user(id, recipient, ctx.calls).await {
        Ok(()) => {}
        // Already removed (a crash after the DELETE, before its record): done. Only
        // Smartsheet's "User not found" counts; another 404 is no proof of anything.
        Err(e) if e.is_user_not_found() => {
            return Ok(StepOutput::summary(format!(
                "user {id} was already removed"
            )));
        }
        Err(e) => return Err(Failure::Api(e, Area::Users)),
    }
    Ok(StepOutput::summary(match recipient {
        Some(to) => format!("removed user {id}, from sharing too; sheets transferred to user {to}"),
        None => format!("removed user {id}, from sharing too"),
    }))
}

async fn confirm_removed(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    let id = user_id(ctx)?;
    match client
        .get_user(id, ctx.calls)
        .await
        .map_err(api(Area::Users))?
    {
        None => Ok(StepOutput::summary(format!("user {id} is gone"))
            .fact("entitlements_after", Value::Null)),
        Some(_) => Err(Failure::Step(StepError::transient(
            Code::Smt199B,
            format!("user {id} is still listed after removal"),
            None,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::apps::http::CallLog;
    use crate::apps::transport::Transported;
    use crate::config::{AppKind, ConnectionConfig, Secret};
    use crate::domain::machine::WorkflowRequest;
    use offboard_simulators::smartsheet::{DemoSeed, SmartsheetSim};

    const OFFBOARD: &[&str] = &[
        "smartsheet.find_user",
        "smartsheet.list_groups",
        "smartsheet.check_recipient",
        "smartsheet.reassign_groups",
        "smartsheet.revoke_licenses",
        "smartsheet.remove_user",
    ];

    /// A seeded account, a client for it, and the facts of the steps run so far.
    struct Run {
        sim: SmartsheetSim,
        seed: DemoSeed,
        client: Client,
        facts: Map<String, Value>,
    }

    impl Run {
        async fn new() -> Run {
            let sim = SmartsheetSim::start().await.unwrap();
            let seed = sim.seed_demo();
            let config = ConnectionConfig {
                timeout_secs: 2,
                ..ConnectionConfig::new(AppKind::Smartsheet, sim.base_url(), "UNUSED", 60_000)
            };
            let client = Client::new(&config, Secret::new(&seed.token))
                .unwrap()
                .with_call_retry(crate::apps::retry::CallRetry::never());
            Run {
                sim,
                seed,
                client,
                facts: Map::new(),
            }
        }

        fn request(&self) -> WorkflowRequest {
            WorkflowRequest {
                event_id: "evt-1".into(),
                source: "test".into(),
                event_time: None,
                event_type: EventType::Offboarding,
                connection: "smartsheet".into(),
                app: "smartsheet".into(),
                person_email: self.seed.leaver_email.clone(),
                transfer_to: Some(self.seed.recipient_email.clone()),
                not_before: None,
                employee_id: None,
            }
        }

        async fn step(&mut self, action: &str) -> Result<StepOutput, StepError> {
            let log = CallLog::discard();
            let req = self.request();
            let ctx = ActionContext {
                request: &req,
                facts: &self.facts,
                calls: &log,
            };
            let result = perform(&self.client, action, &ctx).await;
            let out = crate::apps::failure::settle(result, |e, area| {
                super::super::errors::run_error(&self.client, e, area, &log)
            })
            .await?;
            self.facts.extend(out.facts.clone());
            Ok(out)
        }

        fn writes(&self) -> usize {
            self.sim
                .calls()
                .iter()
                .filter(|c| c.method != "GET")
                .count()
        }
    }

    #[tokio::test]
    async fn protection_is_checked_again_right_before_each_write() {
        // Each writing step, reached under rules that let the person go, runs after the
        // rules changed (a restart with a new `protected` list): it refuses before its
        // own write.
        for (i, action) in OFFBOARD.iter().enumerate() {
            if READ_ONLY.contains(action) {
                continue;
            }
            let mut run = Run::new().await;
            for earlier in &OFFBOARD[..i] {
                run.step(earlier).await.unwrap();
            }
            let before = run.writes();
            run.client.guard.patterns = vec![run.seed.leaver_email.to_uppercase()];
            let err = run.step(action).await.unwrap_err();
            assert_eq!(err.code, Code::Smt112B, "{action}: {}", err.message);
            assert!(err.message.contains("protected pattern"), "{}", err.message);
            assert_eq!(run.writes(), before, "{action} wrote");
            assert!(run.sim.user(run.seed.leaver_id).is_some());
        }
    }

    #[tokio::test]
    async fn an_admin_role_given_after_find_is_seen_before_the_licences_go() {
        let mut run = Run::new().await;
        for action in &OFFBOARD[..4] {
            run.step(action).await.unwrap();
        }
        let before = run.writes();
        // `revoke_licenses` reads the user right before its write: the new role shows.
        let leaver = run.seed.leaver_id;
        run.sim.update_user(leaver, |u| u.admin = true);
        let err = run.step("smartsheet.revoke_licenses").await.unwrap_err();
        assert_eq!(err.code, Code::Smt112B, "{}", err.message);
        assert!(err.message.contains("administrator"), "{}", err.message);
        assert_eq!(run.writes(), before);
    }
}
