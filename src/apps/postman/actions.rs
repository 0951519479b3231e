//! The Postman steps named in `workflows/postman-*.toml`. Each reads before it writes and
//! treats "already done" as done, so running a step twice (after a crash between the
//! call and its record) changes nothing more.
//!
//! | action | does |
//! |---|---|
//! | `postman.find_member` | finds the person in `GET /users` and in SCIM; absent → outcome `absent`; records ids (`member_id`, `scim_id`, `scim_active`), team roles and every team workspace where they hold a role (evidence `entitlements_before`, seats `seats_before`). Someone already deactivated who is still the only Admin of workspaces (found in role lists by SCIM id) goes on to the hand-over when there is a recipient; without one the outcome is `absent` with those workspaces in `orphaned_workspaces` |
//! | `postman.record_activity` | records the person's newest audit-log event (`last_activity`); without audit logs (POST-104-B / POST-105-B) it notes why and goes on |
//! | `postman.require_activity` | the same, but missing audit logs fail the step |
//! | `postman.check_recipient` | `transfer_to` must be an active team member other than the leaver (else POST-110-B) |
//! | `postman.hand_over_workspaces` | where the leaver is the only active Admin, makes the recipient Admin |
//! | `postman.remove_workspace_roles` | takes the leaver's workspace roles away (keeps an only Admin's role when no one took over) |
//! | `postman.deprovision` | SCIM `active: false`: out of the team, sign-in blocked, seat freed, data kept |
//! | `postman.confirm_deprovisioned` | checks SCIM says inactive and `GET /users/{id}` no longer lists them; evidence `entitlements_after`, `seats_after` |

use serde_json::{json, Value};

use super::client::{
    admins_of, role_name, roles_of, sole_admin_of, Client, Member, RoleChange, ROLE_ADMIN,
};
use super::errors::{run_error, ActionResult, Area, Failure};
use crate::apps::failure::{api, unknown_action};
use crate::apps::ActionContext;
use crate::codes::Code;
use crate::domain::event::EventType;
use crate::domain::protection::Person;
use crate::domain::step::{Outcome, StepError, StepOutput};

/// Every action this module performs.
pub const ACTIONS: &[&str] = &[
    "postman.find_member",
    "postman.record_activity",
    "postman.require_activity",
    "postman.check_recipient",
    "postman.hand_over_workspaces",
    "postman.remove_workspace_roles",
    "postman.deprovision",
    "postman.confirm_deprovisioned",
];

/// The actions that remove or deactivate the account (see [`crate::apps::ends_account`]).
pub const ENDS_ACCOUNT: &[&str] = &["postman.deprovision"];

/// The actions that only read: their start need not be durable before they run (a read
/// repeated after a crash changes nothing), so the runner commits them with what follows.
/// `tests/postman_flow.rs` checks from the trails that they make no other request.
pub const READ_ONLY: &[&str] = &[
    "postman.find_member",
    "postman.record_activity",
    "postman.require_activity",
    "postman.check_recipient",
    "postman.confirm_deprovisioned",
];

/// Performs one action; [`super::errors::run_error`] maps its API failures to codes.
pub async fn perform(client: &Client, action: &str, ctx: &ActionContext<'_>) -> ActionResult {
    match action {
        "postman.find_member" => find_member(client, ctx).await,
        "postman.check_recipient" => check_recipient(client, ctx).await,
        "postman.record_activity" => record_activity(client, ctx, false).await,
        "postman.require_activity" => record_activity(client, ctx, true).await,
        "postman.hand_over_workspaces" => hand_over_workspaces(client, ctx).await,
        "postman.remove_workspace_roles" => remove_workspace_roles(client, ctx).await,
        "postman.deprovision" => deprovision(client, ctx).await,
        "postman.confirm_deprovisioned" => confirm_deprovisioned(client, ctx).await,
        other => Err(unknown_action(Code::Post199B, other).into()),
    }
}

/// A workspace where the leaver held roles when `find_member` ran.
struct HeldWorkspace {
    id: String,
    name: String,
    sole_admin: bool,
}

fn held_workspaces(ctx: &ActionContext<'_>) -> Vec<HeldWorkspace> {
    ctx.facts
        .get("workspace_roles")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|w| {
                    Some(HeldWorkspace {
                        id: w.get("id")?.as_str()?.to_string(),
                        name: w
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        sole_admin: w.get("soleAdmin").and_then(Value::as_bool).unwrap_or(false),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn sole_admin_workspaces(ctx: &ActionContext<'_>) -> Vec<HeldWorkspace> {
    held_workspaces(ctx)
        .into_iter()
        .filter(|w| w.sole_admin)
        .collect()
}

fn names(list: &[HeldWorkspace]) -> String {
    list.iter()
        .map(|w| w.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn ws_json(w: &HeldWorkspace) -> Value {
    json!({ "id": w.id, "name": w.name })
}

fn ws_reason(w: &HeldWorkspace, reason: &str) -> Value {
    json!({ "id": w.id, "name": w.name, "reason": reason })
}

/// The person's email as Postman spells it (found by `find_member`), else the event's.
fn member_email<'a>(ctx: &'a ActionContext<'_>) -> &'a str {
    ctx.fact_str("member_email")
        .unwrap_or(&ctx.request.person_email)
}

async fn find_member(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    let email = &ctx.request.person_email;
    let team = client
        .list_members(ctx.calls)
        .await
        .map_err(api(Area::Users))?;
    // Role lists also name deactivated members; only active ones count as an Admin.
    let active: Vec<String> = team.iter().map(|m| m.id.to_string()).collect();
    let member = team
        .into_iter()
        .find(|m| m.email.eq_ignore_ascii_case(email));
    let exact_email = member
        .as_ref()
        .map(|m| m.email.clone())
        .unwrap_or_else(|| email.clone());
    // Postman's SCIM filter compares case-sensitively: try its spelling, then lower case.
    let mut scim = client
        .scim_find_user(&exact_email, ctx.calls)
        .await
        .map_err(api(Area::Users))?;
    let lower = exact_email.to_lowercase();
    if scim.is_none() && lower != exact_email {
        scim = client
            .scim_find_user(&lower, ctx.calls)
            .await
            .map_err(api(Area::Users))?;
    }
    let scim_active = scim.as_ref().map(|u| u.active);
    if member.is_none() && scim_active != Some(true) {
        if let Some(user) = scim.as_ref().filter(|u| !u.active) {
            // Deactivated, yet perhaps still the only Admin of workspaces: those need a
            // new Admin as much as a leaver's do.
            let sole = sole_admin_by_scim_id(client, &user.id, ctx).await?;
            if !sole.is_empty() {
                return deactivated_sole_admin(ctx, &exact_email, &user.id, sole);
            }
        }
        let why = match scim_active {
            Some(false) => "is already deactivated in Postman",
            _ => "is not a member of this Postman team",
        };
        return Ok(StepOutput {
            finish_with: Some(Outcome::Absent),
            ..StepOutput::summary(format!("{email} {why}; nothing to do"))
        }
        .fact("scim_id", scim.map(|u| u.id)));
    }

    let who = match &member {
        Some(m) => Subject::of(m),
        None => Subject {
            id: None,
            email: &exact_email,
            admin: false,
        },
    };
    protect(client, ctx, who).await?;
    let mut held = Vec::new();
    let mut evidence = Vec::new();
    if let Some(m) = &member {
        let all = client
            .list_workspaces(ctx.calls)
            .await
            .map_err(api(Area::Workspaces))?;
        for w in all.iter().filter(|w| w.has_roles()) {
            let Some(ws_roles) = client
                .workspace_roles(&w.id, ctx.calls)
                .await
                .map_err(api(Area::Roles))?
            else {
                continue;
            };
            let mine = roles_of(&ws_roles, m.id);
            if mine.is_empty() {
                continue;
            }
            let me = m.id.to_string();
            let sole_admin = mine.iter().any(|r| r == ROLE_ADMIN)
                && admins_of(&ws_roles)
                    .iter()
                    .all(|a| *a == me || !active.contains(a));
            held.push(
                json!({ "id": w.id, "name": w.name, "roles": mine, "soleAdmin": sole_admin }),
            );
            evidence.push(json!({
                "id": w.id,
                "name": w.name,
                "visibility": w.visibility,
                "roles": mine.iter().map(|r| role_name(r)).collect::<Vec<_>>(),
            }));
        }
    }
    let sole = held.iter().filter(|w| w["soleAdmin"] == true).count();
    let seats = client.seats(ctx.calls).await.ok();
    let team_roles = member.as_ref().map(|m| m.roles.clone()).unwrap_or_default();
    let entitlements = json!({
        "teamMember": member.is_some(),
        "teamRoles": team_roles,
        "joinedAt": member.as_ref().and_then(|m| m.joined_at.clone()),
        "scimActive": scim_active,
        "workspaces": evidence,
    });
    let summary = match &member {
        Some(m) => format!(
            "found member {} ({}); roles in {} workspaces, only Admin of {sole}",
            m.id,
            m.email,
            held.len()
        ),
        None => format!("{exact_email} is not in the team list but still active in SCIM"),
    };
    Ok(StepOutput::summary(summary)
        .fact("member_id", member.as_ref().map(|m| m.id))
        .fact("member_email", exact_email)
        .fact("scim_id", scim.map(|u| u.id))
        .fact("scim_active", scim_active)
        .fact("team_roles", team_roles)
        .fact("workspace_roles", held)
        .fact("entitlements_before", entitlements)
        .fact(
            "seats_before",
            seats.map(|s| json!(s)).unwrap_or(Value::Null),
        ))
}

/// Whether team roles make a team Admin.
fn is_admin(roles: &[String]) -> bool {
    roles.iter().any(|r| r == "admin" || r == "super-admin")
}

/// Who a protection check is about: the team member's id (none for someone known to SCIM
/// only), email as Postman spells it, and whether they are a team Admin.
struct Subject<'a> {
    id: Option<i64>,
    email: &'a str,
    admin: bool,
}

impl<'a> Subject<'a> {
    /// The member as the action has just read them.
    fn of(member: &'a Member) -> Self {
        Subject {
            id: Some(member.id),
            email: &member.email,
            admin: is_admin(&member.roles),
        }
    }

    /// The person as `find_member` recorded them (id, email, team roles).
    fn recorded(ctx: &'a ActionContext<'_>) -> Self {
        let roles: Vec<String> = ctx
            .facts
            .get("team_roles")
            .and_then(Value::as_array)
            .map(|roles| {
                roles
                    .iter()
                    .filter_map(|r| r.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Subject {
            id: ctx.fact_i64("member_id"),
            email: member_email(ctx),
            admin: is_admin(&roles),
        }
    }
}

/// Refuses to touch a protected person (`POST-112-B`), by the rules of the configuration
/// this process runs with (`protected`, `allow_admins`). Asked by `find_member`, and
/// again by every action that writes (`hand_over_workspaces`, `remove_workspace_roles`,
/// `deprovision`) right before its first write: that write may come hours of retries
/// after `find_member`, in a process started with other rules. Managing the team takes an
/// Admin's key, so `GET /me` is asked only when an Admin may otherwise be removed;
/// `deprovision` checks the key's owner once more just before its write.
async fn protect(
    client: &Client,
    ctx: &ActionContext<'_>,
    who: Subject<'_>,
) -> Result<(), Failure> {
    let token_owner = match who.id {
        Some(id) if who.admin && client.guard.allow_admins => {
            client.me(ctx.calls).await.map_err(api(Area::Users))?.id == id
        }
        _ => false,
    };
    let emails = [ctx.request.person_email.as_str(), who.email];
    let person = Person {
        emails: &emails,
        admin: who.admin,
        token_owner,
    };
    match client.guard.refusal(person) {
        Some(why) => Err(Failure::fatal(
            Code::Post112B,
            format!("{}: {why}; nothing was changed by this step", who.email),
        )),
        None => Ok(()),
    }
}

/// The team workspaces whose only Admin is the SCIM user `scim_id` (role lists read with
/// SCIM ids, since a deactivated member has no entry in `GET /users` to learn their id).
async fn sole_admin_by_scim_id(
    client: &Client,
    scim_id: &str,
    ctx: &ActionContext<'_>,
) -> Result<Vec<Value>, Failure> {
    let all = client
        .list_workspaces(ctx.calls)
        .await
        .map_err(api(Area::Workspaces))?;
    let mut sole = Vec::new();
    for w in all.iter().filter(|w| w.has_roles()) {
        let Some(ws_roles) = client
            .workspace_roles_scim(&w.id, ctx.calls)
            .await
            .map_err(api(Area::Roles))?
        else {
            continue;
        };
        if sole_admin_of(&ws_roles, scim_id) {
            sole.push(
                json!({ "id": w.id, "name": w.name, "roles": [ROLE_ADMIN], "soleAdmin": true }),
            );
        }
    }
    Ok(sole)
}

/// A person already deactivated in Postman who is still the only Admin of `sole`: with a
/// recipient the run goes on to hand those workspaces over (role lists read by SCIM id);
/// without one it ends `absent`, saying which workspaces are left without an active Admin.
fn deactivated_sole_admin(
    ctx: &ActionContext<'_>,
    email: &str,
    scim_id: &str,
    sole: Vec<Value>,
) -> ActionResult {
    let names: Vec<&str> = sole.iter().filter_map(|w| w["name"].as_str()).collect();
    // Debug-quoted: the names come from Postman and end up in logs.
    let listed = format!("{} workspaces: {names:?}", sole.len());
    let entitlements = json!({
        "teamMember": false,
        "teamRoles": [],
        "scimActive": false,
        "workspaces": sole.iter().map(|w| json!({"id": w["id"], "name": w["name"], "roles": ["Admin"]})).collect::<Vec<_>>(),
    });
    if ctx.request.transfer_to.is_none() {
        return Ok(StepOutput {
            finish_with: Some(Outcome::Absent),
            ..StepOutput::summary(format!(
                "{email} is already deactivated in Postman but still the only Admin of {listed}; no recipient given, so they stay without an active Admin"
            ))
        }
        .fact("scim_id", scim_id)
        .fact("orphaned_workspaces", sole)
        .fact("entitlements_before", entitlements));
    }
    Ok(StepOutput::summary(format!(
        "{email} is already deactivated in Postman but still the only Admin of {listed}; they go to the recipient"
    ))
    .fact("member_id", Value::Null)
    .fact("member_email", email)
    .fact("scim_id", scim_id)
    .fact("scim_active", false)
    .fact("role_ids", "scim")
    .fact("workspace_roles", sole)
    .fact("entitlements_before", entitlements))
}

async fn record_activity(client: &Client, ctx: &ActionContext<'_>, strict: bool) -> ActionResult {
    let Some(id) = ctx.fact_i64("member_id") else {
        return Ok(
            StepOutput::summary("not a team member; no audit-log evidence to read")
                .fact("last_activity", Value::Null),
        );
    };
    match client.last_activity(id, ctx.calls).await {
        Ok(Some(event)) => Ok(StepOutput::summary(format!(
            "newest audit event for user {id}: {} at {}",
            event.action, event.timestamp
        ))
        .fact(
            "last_activity",
            json!({ "action": event.action, "timestamp": event.timestamp, "message": event.message }),
        )),
        Ok(None) => Ok(StepOutput::summary(format!("no audit events for user {id}")).fact("last_activity", Value::Null)),
        Err(err) => {
            let step = run_error(client, err, Area::AuditLogs, ctx.calls).await;
            if strict || !matches!(step.code, Code::Post104B | Code::Post105B) {
                return Err(step.into());
            }
            Ok(StepOutput::summary(format!(
                "audit logs unavailable ({}), going on without them: {}",
                step.code.as_str(),
                step.message
            ))
            .fact("last_activity", Value::Null)
            .fact(
                "audit_evidence",
                json!({ "code": step.code.as_str(), "message": step.message }),
            ))
        }
    }
}

async fn check_recipient(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    let sole = sole_admin_workspaces(ctx);
    let Some(email) = ctx.request.transfer_to.as_deref() else {
        if sole.is_empty() {
            return Ok(StepOutput::summary(
                "no recipient given; nothing will be transferred",
            ));
        }
        return Ok(StepOutput::summary(format!(
            "no recipient given; the person stays the only Admin of {} workspaces: {}",
            sole.len(),
            names(&sole)
        ))
        .fact(
            "orphaned_workspaces",
            sole.iter().map(ws_json).collect::<Vec<_>>(),
        ));
    };
    if email.eq_ignore_ascii_case(&ctx.request.person_email) {
        return Err(Failure::fatal(
            Code::Post110B,
            "the recipient is the person being offboarded",
        ));
    }
    let recipient = client
        .find_member(email, ctx.calls)
        .await
        .map_err(api(Area::Users))?
        .ok_or_else(|| {
            Failure::fatal(
                Code::Post110B,
                format!("recipient {email} is not an active member of this Postman team"),
            )
        })?;
    if Some(recipient.id) == ctx.fact_i64("member_id") {
        return Err(Failure::fatal(
            Code::Post110B,
            "the recipient is the person being offboarded",
        ));
    }
    let scim = client
        .scim_find_user(&recipient.email, ctx.calls)
        .await
        .map_err(api(Area::Users))?;
    if scim.as_ref().is_some_and(|u| !u.active) {
        return Err(Failure::fatal(
            Code::Post110B,
            format!("recipient {email} is deactivated in Postman"),
        ));
    }
    Ok(StepOutput::summary(format!(
        "recipient {} ({}) can take over",
        recipient.id, recipient.email
    ))
    .fact("recipient_id", recipient.id)
    .fact("recipient_email", recipient.email)
    .fact("recipient_scim_id", scim.map(|u| u.id)))
}

async fn hand_over_workspaces(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    let sole = sole_admin_workspaces(ctx);
    let Some(recipient) = ctx.fact_i64("recipient_id") else {
        return Ok(StepOutput::summary(format!(
            "no recipient; {} workspaces keep the person as their only Admin",
            sole.len()
        )));
    };
    // Role lists name users by Postman id, or by SCIM id for a leaver already deactivated
    // (found by `find_member` through SCIM only).
    let by_scim = ctx.fact_str("role_ids") == Some("scim");
    let (leaver, to) = if by_scim {
        let Some(to) = ctx.fact_str("recipient_scim_id") else {
            return Err(Failure::fatal(Code::Post110B, format!(
                "recipient {recipient} has no SCIM identity, so the workspaces of a deactivated Admin cannot be matched"
            )));
        };
        (ctx.fact_str("scim_id").map(str::to_string), to.to_string())
    } else {
        (
            ctx.fact_i64("member_id").map(|id| id.to_string()),
            recipient.to_string(),
        )
    };
    if !sole.is_empty() {
        protect(client, ctx, Subject::recorded(ctx)).await?;
    }
    let mut done = Vec::new();
    let mut skipped = Vec::new();
    for w in &sole {
        // Read before write: after a crash the recipient may already be Admin.
        let current = if by_scim {
            client.workspace_roles_scim(&w.id, ctx.calls).await
        } else {
            client.workspace_roles(&w.id, ctx.calls).await
        };
        let Some(current) = current.map_err(api(Area::Roles))? else {
            skipped.push(ws_reason(w, "the workspace no longer exists"));
            continue;
        };
        let admins = admins_of(&current);
        if admins.contains(&to) {
            done.push(ws_json(w));
            continue;
        }
        let others: Vec<&String> = admins
            .iter()
            .filter(|a| Some(*a) != leaver.as_ref())
            .collect();
        if !others.is_empty() && any_active(client, ctx, &others, by_scim).await? {
            skipped.push(ws_reason(w, "another Admin took over meanwhile"));
            continue;
        }
        let change = RoleChange {
            add: true,
            user: recipient,
            role: ROLE_ADMIN.to_string(),
        };
        match client
            .update_workspace_roles(&w.id, &[change], ctx.calls)
            .await
        {
            Ok(()) => done.push(ws_json(w)),
            Err(e) if e.status == Some(404) => {
                skipped.push(ws_reason(w, "the workspace no longer exists"))
            }
            Err(e) if e.status == Some(422) => skipped.push(ws_reason(w, &e.message)),
            Err(e) => return Err(Failure::Api(e, Area::Roles)),
        }
    }
    Ok(StepOutput::summary(format!(
        "{} of {} workspaces the person administered alone now have user {recipient} as Admin",
        done.len(),
        sole.len()
    ))
    .fact("workspaces_handed_over", done)
    .fact("workspaces_not_handed_over", skipped))
}

/// Whether any of `admins` (ids as role lists spell them: Postman ids, or SCIM ids when
/// `by_scim`) is an active member; role lists also name deactivated ones.
async fn any_active(
    client: &Client,
    ctx: &ActionContext<'_>,
    admins: &[&String],
    by_scim: bool,
) -> Result<bool, Failure> {
    if by_scim {
        for id in admins {
            let user = client
                .scim_get_user(id, ctx.calls)
                .await
                .map_err(api(Area::Users))?;
            if user.is_some_and(|u| u.active) {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    let team = client
        .list_members(ctx.calls)
        .await
        .map_err(api(Area::Users))?;
    Ok(team.iter().any(|m| admins.contains(&&m.id.to_string())))
}

async fn remove_workspace_roles(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    let Some(leaver) = ctx.fact_i64("member_id") else {
        return Ok(StepOutput::summary(
            "not a team member; no workspace roles to take away",
        ));
    };
    let me = leaver.to_string();
    let held = held_workspaces(ctx);
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    // Role lists also name deactivated members; only an active Admin keeps a workspace
    // administered once the leaver's role is gone.
    let team = client
        .list_members(ctx.calls)
        .await
        .map_err(api(Area::Users))?;
    if !held.is_empty() {
        // The team list was read just now: the leaver's roles and email as they stand.
        let who = match team.iter().find(|m| m.id == leaver) {
            Some(m) => Subject::of(m),
            None => Subject::recorded(ctx),
        };
        protect(client, ctx, who).await?;
    }
    let active: Vec<String> = team.iter().map(|m| m.id.to_string()).collect();
    'workspaces: for w in &held {
        let Some(current) = client
            .workspace_roles(&w.id, ctx.calls)
            .await
            .map_err(api(Area::Roles))?
        else {
            continue;
        };
        let mut mine = roles_of(&current, leaver);
        if mine.is_empty() {
            continue;
        }
        let other_admin = admins_of(&current)
            .iter()
            .any(|a| *a != me && active.contains(a));
        if mine.iter().any(|r| r == ROLE_ADMIN) && !other_admin {
            kept.push(ws_reason(
                w,
                "only Admin and no one took over; the role stays",
            ));
            mine.retain(|r| r != ROLE_ADMIN);
        }
        let mut gone = Vec::new();
        // One request per role: Postman takes one action per user in a request.
        for role in mine {
            let change = RoleChange {
                add: false,
                user: leaver,
                role: role.clone(),
            };
            match client
                .update_workspace_roles(&w.id, &[change], ctx.calls)
                .await
            {
                Ok(()) => gone.push(role_name(&role).to_string()),
                Err(e) if e.status == Some(404) => continue 'workspaces,
                Err(e) if e.status == Some(422) => {
                    kept.push(ws_reason(w, &e.message));
                    continue 'workspaces;
                }
                Err(e) => return Err(Failure::Api(e, Area::Roles)),
            }
        }
        if !gone.is_empty() {
            removed.push(json!({ "id": w.id, "name": w.name, "roles": gone }));
        }
    }
    Ok(StepOutput::summary(format!(
        "took roles away in {} workspaces; kept in {}",
        removed.len(),
        kept.len()
    ))
    .fact("workspace_roles_removed", removed)
    .fact("workspace_roles_kept", kept))
}

// The `String` is the SCIM id found, not an error: failures are the app's `Failure`.
async fn scim_id(client: &Client, ctx: &ActionContext<'_>) -> Result<Option<String>, Failure> {
    if let Some(id) = ctx.fact_str("scim_id") {
        return Ok(Some(id.to_string()));
    }
    let found = client
        .scim_find_user(member_email(ctx), ctx.calls)
        .await
        .map_err(api(Area::Users))?;
    Ok(found.map(|u| u.id))
}

async fn deprovision(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    let email = member_email(ctx).to_string();
    let Some(id) = scim_id(client, ctx).await? else {
        return Err(Failure::fatal(
            Code::Post199B,
            format!("Postman's SCIM API knows no user {email}; the account cannot be deactivated"),
        ));
    };
    // Read before write: after a crash the account may already be inactive.
    let Some(user) = client
        .scim_get_user(&id, ctx.calls)
        .await
        .map_err(api(Area::Users))?
    else {
        return Ok(StepOutput::summary(format!(
            "SCIM user {id} no longer exists; nothing left to deactivate"
        )));
    };
    if !user.user_name.eq_ignore_ascii_case(&email) {
        return Err(Failure::fatal(
            Code::Post199B,
            format!(
                "SCIM user {id} is now {}, not {email}; nothing was changed",
                user.user_name
            ),
        ));
    }
    if !user.active {
        return Ok(StepOutput::summary(format!(
            "{email} (SCIM user {id}) was already deactivated"
        )));
    }
    protect(client, ctx, Subject::recorded(ctx)).await?;
    if let Some(member) = ctx.fact_i64("member_id") {
        let me = client.me(ctx.calls).await.map_err(api(Area::Users))?;
        if me.id == member {
            return Err(Failure::fatal(
                Code::Post112B,
                format!("{email} owns this connection's API key; deactivating them would cut offboard off. Use another Team Admin's key"),
            ));
        }
    }
    client
        .scim_set_active(&id, false, ctx.calls)
        .await
        .map_err(api(Area::Users))?;
    Ok(StepOutput::summary(format!(
        "deactivated {email} (SCIM user {id}): out of the team, sign-in blocked, seat freed; the account and its data stay"
    )))
}

async fn confirm_deprovisioned(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    let email = member_email(ctx).to_string();
    let scim = match scim_id(client, ctx).await? {
        Some(id) => client
            .scim_get_user(&id, ctx.calls)
            .await
            .map_err(api(Area::Users))?,
        None => None,
    };
    if scim.as_ref().is_some_and(|u| u.active) {
        return Err(Failure::Step(StepError::transient(
            Code::Post199B,
            format!("{email} is still active in Postman's SCIM API"),
            None,
        )));
    }
    let still_member = match ctx.fact_i64("member_id") {
        Some(id) => client
            .get_member(id, ctx.calls)
            .await
            .map_err(api(Area::Users))?
            .is_some(),
        None => client
            .find_member(&email, ctx.calls)
            .await
            .map_err(api(Area::Users))?
            .is_some(),
    };
    if still_member {
        return Err(Failure::Step(StepError::transient(
            Code::Post199B,
            format!("{email} is still listed as a team member"),
            None,
        )));
    }
    let seats = client.seats(ctx.calls).await.ok();
    let kept_roles = match ctx.request.event_type {
        EventType::LicenseReclaim => "kept (restored by a reactivation)",
        EventType::Offboarding => "taken away",
    };
    Ok(StepOutput::summary(format!(
        "{email} is deactivated and no longer a team member"
    ))
    .fact(
        "entitlements_after",
        json!({
            "teamMember": false,
            "teamRoles": [],
            "scimActive": scim.map(|u| u.active),
            "workspaceRoles": kept_roles,
        }),
    )
    .fact(
        "seats_after",
        seats.map(|s| json!(s)).unwrap_or(Value::Null),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::apps::http::CallLog;
    use crate::config::{AppKind, ConnectionConfig, Secret};
    use crate::domain::definition::Definition;
    use crate::domain::machine::WorkflowRequest;
    use offboard_simulators::postman::{
        DemoSeed, Fault, FaultKind, PostmanSim, SimWorkspace, ROLE_EDITOR,
    };

    const OFFBOARD: &[&str] = &[
        "postman.find_member",
        "postman.record_activity",
        "postman.check_recipient",
        "postman.hand_over_workspaces",
        "postman.remove_workspace_roles",
        "postman.deprovision",
        "postman.confirm_deprovisioned",
    ];

    const RECLAIM: &[&str] = &[
        "postman.find_member",
        "postman.record_activity",
        "postman.check_recipient",
        "postman.hand_over_workspaces",
        "postman.deprovision",
        "postman.confirm_deprovisioned",
    ];

    fn client_for(sim: &PostmanSim, key: &str) -> Client {
        let config = ConnectionConfig {
            app: AppKind::Postman,
            base_url: sim.base_url(),
            token_env: "UNUSED".into(),
            requests_per_minute: 60_000,
            timeout_secs: 2,
            protected: Vec::new(),
            allow_admins: false,
            scim_match: None,
            offboard: None,
            remove_from_groups: None,
        };
        Client::with_keys(&config, Secret::new(key), Secret::new(key))
            .unwrap()
            // One call, one answer: these tests are about how each answer is read.
            .with_call_retry(crate::apps::retry::CallRetry::never())
    }

    fn request(event_type: EventType, email: &str, transfer_to: Option<&str>) -> WorkflowRequest {
        WorkflowRequest {
            event_id: "evt-1".into(),
            source: "test".into(),
            event_time: None,
            event_type,
            connection: "postman".into(),
            app: "postman".into(),
            person_email: email.into(),
            transfer_to: transfer_to.map(str::to_string),
            not_before: None,
            employee_id: None,
        }
    }

    struct Run {
        sim: PostmanSim,
        seed: DemoSeed,
        client: Client,
        facts: Map<String, Value>,
    }

    impl Run {
        async fn new() -> Run {
            let sim = PostmanSim::start().await.unwrap();
            let seed = sim.seed_demo();
            let client = client_for(&sim, &seed.api_key);
            Run {
                sim,
                seed,
                client,
                facts: Map::new(),
            }
        }

        async fn step(
            &mut self,
            req: &WorkflowRequest,
            action: &str,
        ) -> Result<StepOutput, StepError> {
            let log = CallLog::discard();
            let ctx = ActionContext {
                request: req,
                facts: &self.facts,
                calls: &log,
            };
            let result = perform(&self.client, action, &ctx).await;
            let out = crate::apps::failure::settle(result, |e, area| {
                run_error(&self.client, e, area, &log)
            })
            .await?;
            self.facts.extend(out.facts.clone());
            Ok(out)
        }

        /// Runs the steps in order; stops at the first error or early finish.
        async fn steps(
            &mut self,
            req: &WorkflowRequest,
            actions: &[&str],
        ) -> Result<Vec<StepOutput>, StepError> {
            let mut outs = Vec::new();
            for a in actions {
                let out = self.step(req, a).await?;
                let stop = out.finish_with.is_some();
                outs.push(out);
                if stop {
                    break;
                }
            }
            Ok(outs)
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
    async fn offboarding_hands_over_takes_roles_away_and_deactivates() {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        let req = request(
            EventType::Offboarding,
            &s.leaver_email,
            Some(&s.recipient_email),
        );
        let outs = run.steps(&req, OFFBOARD).await.unwrap();
        assert_eq!(outs.len(), OFFBOARD.len());
        assert!(outs.iter().all(|o| o.finish_with.is_none()));

        let f = &run.facts;
        assert_eq!(f["member_id"], s.leaver_id);
        assert_eq!(f["recipient_id"], s.recipient_id);
        let before = &f["entitlements_before"];
        assert_eq!(before["teamMember"], true);
        assert_eq!(before["scimActive"], true);
        assert_eq!(before["workspaces"].as_array().unwrap().len(), 4);
        assert_eq!(f["last_activity"]["action"], "user.login_google_success");
        assert_eq!(f["workspaces_handed_over"].as_array().unwrap().len(), 2);
        assert_eq!(f["workspace_roles_removed"].as_array().unwrap().len(), 4);
        assert_eq!(f["workspace_roles_kept"], json!([]));
        assert_eq!(f["entitlements_after"]["scimActive"], false);
        let (b, a) = (&f["seats_before"], &f["seats_after"]);
        assert_eq!(
            a["consumed"].as_i64().unwrap(),
            b["consumed"].as_i64().unwrap() - 1
        );
        assert_eq!(
            a["available"].as_i64().unwrap(),
            b["available"].as_i64().unwrap() + 1
        );

        for ws in &s.leaver_sole_admin_workspaces {
            assert_eq!(
                run.sim.workspace_role(ws, s.recipient_id).as_deref(),
                Some(ROLE_ADMIN)
            );
        }
        for ws in &s.leaver_workspaces {
            assert_eq!(run.sim.workspace_role(ws, s.leaver_id), None, "{ws}");
        }
        assert!(!run.sim.member(s.leaver_id).unwrap().active);
        // Workspaces the leaver did not administer alone got no new Admin.
        assert_eq!(
            run.sim
                .workspace_role(&s.leaver_workspaces[3], s.recipient_id),
            None
        );
    }

    #[tokio::test]
    async fn every_step_is_safe_to_run_twice() {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        let req = request(
            EventType::Offboarding,
            &s.leaver_email,
            Some(&s.recipient_email),
        );
        for action in OFFBOARD {
            let first = run.step(&req, action).await.unwrap();
            let writes = run.writes();
            let again = run.step(&req, action).await.unwrap();
            assert_eq!(run.writes(), writes, "{action} wrote again");
            // What a step reports about the end state does not change on a rerun.
            for key in [
                "workspaces_handed_over",
                "entitlements_after",
                "recipient_id",
                "member_id",
            ] {
                if let Some(v) = first.facts.get(key) {
                    assert_eq!(again.facts.get(key), Some(v), "{action}: {key}");
                }
            }
        }
        assert!(!run.sim.member(s.leaver_id).unwrap().active);
    }

    #[tokio::test]
    async fn unknown_or_already_deactivated_people_are_absent() {
        let mut run = Run::new().await;
        let req = request(EventType::Offboarding, "nobody@northwind.example", None);
        let outs = run.steps(&req, OFFBOARD).await.unwrap();
        assert_eq!(outs.len(), 1);
        assert_eq!(outs[0].finish_with, Some(Outcome::Absent));
        assert_eq!(run.writes(), 0);

        let mut run = Run::new().await;
        let gone = run
            .sim
            .member_by_email("felix.wagner@northwind.example")
            .unwrap();
        assert!(!gone.active);
        let req = request(EventType::LicenseReclaim, &gone.email.to_uppercase(), None);
        let outs = run.steps(&req, RECLAIM).await.unwrap();
        assert_eq!(outs[0].finish_with, Some(Outcome::Absent));
        assert!(outs[0].summary.contains("already deactivated"));
    }

    #[tokio::test]
    async fn emails_match_without_case_but_scim_gets_postmans_spelling() {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        run.sim.update_member(s.leaver_id, |m| {
            m.email = "Marcus.Lee@Northwind.example".into()
        });
        let req = request(
            EventType::Offboarding,
            &s.leaver_email,
            Some(&s.recipient_email),
        );
        run.steps(&req, OFFBOARD).await.unwrap();
        assert!(!run.sim.member(s.leaver_id).unwrap().active);
        let scim_lookup = run
            .sim
            .calls()
            .into_iter()
            .find(|c| c.path == "/scim/v2/Users")
            .unwrap();
        assert!(
            scim_lookup.query.contains("Marcus.Lee%40Northwind.example"),
            "{}",
            scim_lookup.query
        );
    }

    #[tokio::test]
    async fn without_a_recipient_only_admins_keep_their_admin_role() {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        let req = request(EventType::Offboarding, &s.leaver_email, None);
        let outs = run.steps(&req, OFFBOARD).await.unwrap();
        assert_eq!(outs.len(), OFFBOARD.len());
        assert_eq!(
            run.facts["orphaned_workspaces"].as_array().unwrap().len(),
            2
        );
        assert_eq!(
            run.facts["workspace_roles_kept"].as_array().unwrap().len(),
            2
        );
        for ws in &s.leaver_sole_admin_workspaces {
            assert_eq!(
                run.sim.workspace_role(ws, s.leaver_id).as_deref(),
                Some(ROLE_ADMIN)
            );
        }
        for ws in &s.leaver_workspaces[2..] {
            assert_eq!(run.sim.workspace_role(ws, s.leaver_id), None);
        }
        assert!(!run.sim.member(s.leaver_id).unwrap().active);
    }

    #[tokio::test]
    async fn unusable_recipients_fail_with_post_110_b() {
        let s = Run::new().await.seed;
        let deactivated = "felix.wagner@northwind.example";
        for to in [
            "stranger@elsewhere.example",
            s.leaver_email.as_str(),
            deactivated,
        ] {
            let mut run = Run::new().await;
            let req = request(EventType::Offboarding, &s.leaver_email, Some(to));
            let err = run.steps(&req, OFFBOARD).await.unwrap_err();
            assert_eq!(
                (err.code, err.retryable),
                (Code::Post110B, false),
                "{to}: {}",
                err.message
            );
            assert_eq!(run.writes(), 0);
        }
    }

    #[tokio::test]
    async fn reclaim_keeps_roles_and_frees_the_seat() {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        let before = run.sim.seats_consumed();
        let req = request(
            EventType::LicenseReclaim,
            &s.reclaim_email,
            Some(&s.recipient_email),
        );
        run.steps(&req, RECLAIM).await.unwrap();
        assert_eq!(run.sim.seats_consumed(), before - 1);
        let m = run.sim.member(s.reclaim_id).unwrap();
        assert!(!m.active);
        assert_eq!(
            run.facts["workspaces_handed_over"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            run.facts["last_activity"]["action"],
            "user.login_password_success"
        );
        assert_eq!(
            run.facts["entitlements_after"]["workspaceRoles"],
            "kept (restored by a reactivation)"
        );
        // Roles are kept: a reactivation gives the seat and the access back.
        let viewer_ws = &s.leaver_workspaces[3];
        assert_eq!(
            run.sim.workspace_role(viewer_ws, s.reclaim_id).as_deref(),
            Some("1")
        );
        let log = CallLog::discard();
        run.client
            .scim_set_active(&m.scim_id, true, &log)
            .await
            .unwrap();
        assert!(run.sim.member(s.reclaim_id).unwrap().active);
    }

    #[tokio::test]
    async fn recipient_becomes_admin_even_if_they_held_another_role() {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        let ws = &s.leaver_sole_admin_workspaces[0];
        run.sim
            .set_workspace_role(ws, s.recipient_id, Some(ROLE_EDITOR));
        let req = request(
            EventType::Offboarding,
            &s.leaver_email,
            Some(&s.recipient_email),
        );
        run.steps(&req, OFFBOARD).await.unwrap();
        assert_eq!(
            run.sim.workspace_role(ws, s.recipient_id).as_deref(),
            Some(ROLE_ADMIN)
        );
    }

    #[tokio::test]
    async fn workspaces_that_changed_meanwhile_are_skipped() {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        let req = request(
            EventType::Offboarding,
            &s.leaver_email,
            Some(&s.recipient_email),
        );
        run.steps(&req, &OFFBOARD[..3]).await.unwrap();
        let [gone, other] = [
            &s.leaver_sole_admin_workspaces[0],
            &s.leaver_sole_admin_workspaces[1],
        ];
        run.sim.delete_workspace(gone);
        run.sim
            .set_workspace_role(other, s.admin_id, Some(ROLE_ADMIN));
        run.steps(&req, &OFFBOARD[3..]).await.unwrap();
        let skipped = run.facts["workspaces_not_handed_over"].as_array().unwrap();
        assert_eq!(skipped.len(), 2);
        assert_eq!(run.sim.workspace_role(other, s.recipient_id), None);
        // The other Admin lets the leaver's Admin role go.
        assert_eq!(run.sim.workspace_role(other, s.leaver_id), None);
    }

    #[tokio::test]
    async fn partner_and_personal_workspaces_do_not_stop_the_run() {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        let partner = run.sim.add_workspace(
            SimWorkspace::team("Partner Portal", s.admin_id)
                .visibility("partner")
                .role(s.leaver_id, ROLE_EDITOR),
        );
        let req = request(
            EventType::Offboarding,
            &s.leaver_email,
            Some(&s.recipient_email),
        );
        run.steps(&req, OFFBOARD).await.unwrap();
        let kept = run.facts["workspace_roles_kept"].as_array().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0]["id"], partner);
        assert!(!run.sim.member(s.leaver_id).unwrap().active);
    }

    #[tokio::test]
    async fn protected_people_are_refused_before_any_write() {
        // (who, allow_admins, protected patterns, what the refusal names)
        type Who = fn(&DemoSeed) -> String;
        let cases: [(Who, bool, &[&str], &str); 4] = [
            (|s| s.admin_email.clone(), false, &[], "administrator"),
            (|s| s.admin_email.clone(), true, &[], "owns the token"),
            (
                |s| s.leaver_email.clone(),
                false,
                &["*@*"],
                "protected pattern",
            ),
            (
                |s| s.leaver_email.to_uppercase(),
                false,
                &["marcus.*@northwind.example"],
                "protected pattern",
            ),
        ];
        for (who, allow_admins, patterns, why) in cases {
            let mut run = Run::new().await;
            let s = run.seed.clone();
            run.client.guard.allow_admins = allow_admins;
            run.client.guard.patterns = patterns.iter().map(|p| p.to_string()).collect();
            for (event_type, steps) in [
                (EventType::Offboarding, OFFBOARD),
                (EventType::LicenseReclaim, RECLAIM),
            ] {
                let req = request(event_type, &who(&s), Some(&s.recipient_email));
                let err = run.steps(&req, steps).await.unwrap_err();
                assert_eq!(err.code, Code::Post112B, "{}", err.message);
                assert!(err.message.contains(why), "{}", err.message);
            }
            let writes: Vec<_> = run
                .sim
                .calls()
                .into_iter()
                .filter(|c| c.method != "GET")
                .collect();
            assert!(writes.is_empty(), "{writes:?}");
            assert!(run.sim.member(s.admin_id).unwrap().active);
        }
    }

    #[tokio::test]
    async fn protection_is_checked_again_right_before_each_write() {
        // Each writing step, reached under rules that let the person go, is run again
        // after the rules changed (a restart with a new `protected` list): it refuses
        // before its own write.
        for (i, action) in OFFBOARD.iter().enumerate() {
            if READ_ONLY.contains(action) {
                continue;
            }
            let mut run = Run::new().await;
            let s = run.seed.clone();
            let req = request(
                EventType::Offboarding,
                &s.leaver_email,
                Some(&s.recipient_email),
            );
            run.steps(&req, &OFFBOARD[..i]).await.unwrap();
            let before = run.writes();
            run.client.guard.patterns = vec![s.leaver_email.to_uppercase()];
            let err = run.step(&req, action).await.unwrap_err();
            assert_eq!(err.code, Code::Post112B, "{action}: {}", err.message);
            assert!(err.message.contains("protected pattern"), "{}", err.message);
            assert_eq!(run.writes(), before, "{action} wrote");
            assert!(run.sim.member(s.leaver_id).unwrap().active);
        }
    }

    #[tokio::test]
    async fn an_admin_role_given_after_find_is_seen_before_the_role_removal() {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        let req = request(
            EventType::Offboarding,
            &s.leaver_email,
            Some(&s.recipient_email),
        );
        let upto = OFFBOARD
            .iter()
            .position(|a| *a == "postman.remove_workspace_roles")
            .unwrap();
        run.steps(&req, &OFFBOARD[..upto]).await.unwrap();
        let before = run.writes();
        // `remove_workspace_roles` reads the team list: the new role shows there.
        run.sim
            .update_member(s.leaver_id, |m| m.roles = vec!["admin".into()]);
        let err = run
            .step(&req, "postman.remove_workspace_roles")
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::Post112B, "{}", err.message);
        assert!(err.message.contains("administrator"), "{}", err.message);
        assert_eq!(run.writes(), before);
    }

    type Setup = Box<dyn FnOnce(&PostmanSim, &DemoSeed)>;

    async fn failing(setup: impl FnOnce(&PostmanSim, &DemoSeed), actions: &[&str]) -> StepError {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        setup(&run.sim, &s);
        let req = request(
            EventType::Offboarding,
            &s.leaver_email,
            Some(&s.recipient_email),
        );
        run.steps(&req, actions).await.unwrap_err()
    }

    #[tokio::test]
    async fn refusals_during_a_run_map_to_the_area_codes() {
        let cases: Vec<(Setup, Code)> = vec![
            (
                Box::new(|sim, _| sim.set_users_access(false)),
                Code::Post101B,
            ),
            (
                Box::new(|sim, _| sim.set_scim_enabled(false)),
                Code::Post101B,
            ),
            (
                Box::new(|sim, _| sim.set_workspaces_access(false)),
                Code::Post102B,
            ),
            (
                Box::new(|sim, _| sim.set_roles_access(false)),
                Code::Post103B,
            ),
            (
                Box::new(|sim, s| sim.revoke_api_key(&s.api_key)),
                Code::Post100B,
            ),
            (
                Box::new(|sim, s| sim.revoke_scim_key(&s.scim_key)),
                Code::Post100B,
            ),
            (
                Box::new(|sim, _| sim.set_team_deleted(true)),
                Code::Post106B,
            ),
        ];
        for (setup, code) in cases {
            let err = failing(setup, OFFBOARD).await;
            assert_eq!((err.code, err.retryable), (code, false), "{}", err.message);
        }
    }

    #[tokio::test]
    async fn refusals_later_in_the_run_are_mapped_too() {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        let req = request(
            EventType::Offboarding,
            &s.leaver_email,
            Some(&s.recipient_email),
        );
        run.steps(&req, &OFFBOARD[..4]).await.unwrap();
        run.sim.set_roles_access(false);
        let err = run
            .step(&req, "postman.remove_workspace_roles")
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::Post103B);
        run.sim.set_roles_access(true);
        run.sim.set_team_deleted(true);
        let err = run
            .step(&req, "postman.remove_workspace_roles")
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::Post106B);
        run.sim.set_team_deleted(false);
        run.sim.set_scim_enabled(false);
        let err = run.step(&req, "postman.deprovision").await.unwrap_err();
        assert_eq!(err.code, Code::Post101B);
    }

    #[tokio::test]
    async fn transient_trouble_is_retryable_with_the_servers_wait() {
        let err = failing(
            |sim, _| {
                sim.inject(
                    Fault::new(
                        "/workspaces",
                        FaultKind::Error {
                            status: 503,
                            retry_after_secs: Some(9),
                        },
                    )
                    .method("GET"),
                )
            },
            OFFBOARD,
        )
        .await;
        assert_eq!(
            (err.code, err.retryable, err.retry_after_ms),
            (Code::Post190B, true, Some(9000))
        );

        let err = failing(
            |sim, _| sim.inject(Fault::new("/scim/v2/Users", FaultKind::DropConnection)),
            OFFBOARD,
        )
        .await;
        assert_eq!((err.code, err.retryable), (Code::Post190B, true));

        let err = failing(
            |sim, _| {
                sim.inject(Fault::new(
                    "/users",
                    FaultKind::Delay(std::time::Duration::from_secs(4)),
                ))
            },
            OFFBOARD,
        )
        .await;
        assert_eq!((err.code, err.retryable), (Code::Post190B, true));
        assert!(err.message.contains("timed out"), "{}", err.message);

        let err = failing(|sim, _| sim.set_rate_limit(Some(3)), OFFBOARD).await;
        assert_eq!((err.code, err.retryable), (Code::Post190B, true));
        assert!(err.retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 60_000));
    }

    #[tokio::test]
    async fn a_failed_write_is_retried_without_harm() {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        run.sim.inject(
            Fault::new(
                "/scim/v2/Users/",
                FaultKind::Error {
                    status: 502,
                    retry_after_secs: None,
                },
            )
            .method("PATCH"),
        );
        let req = request(
            EventType::Offboarding,
            &s.leaver_email,
            Some(&s.recipient_email),
        );
        let err = run.steps(&req, OFFBOARD).await.unwrap_err();
        assert_eq!((err.code, err.retryable), (Code::Post190B, true));
        assert!(run.sim.member(s.leaver_id).unwrap().active);
        run.step(&req, "postman.deprovision").await.unwrap();
        run.step(&req, "postman.confirm_deprovisioned")
            .await
            .unwrap();
        assert!(!run.sim.member(s.leaver_id).unwrap().active);
    }

    #[tokio::test]
    async fn confirmation_waits_while_the_account_is_still_active() {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        let req = request(
            EventType::Offboarding,
            &s.leaver_email,
            Some(&s.recipient_email),
        );
        run.steps(&req, &OFFBOARD[..6]).await.unwrap();
        run.sim.update_member(s.leaver_id, |m| m.active = true);
        let err = run
            .step(&req, "postman.confirm_deprovisioned")
            .await
            .unwrap_err();
        assert_eq!((err.code, err.retryable), (Code::Post199B, true));
    }

    #[tokio::test]
    async fn audit_evidence_is_optional_unless_required() {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        let req = request(EventType::Offboarding, &s.leaver_email, None);
        run.step(&req, "postman.find_member").await.unwrap();
        run.sim.set_enterprise(false);
        let out = run.step(&req, "postman.record_activity").await.unwrap();
        assert_eq!(out.facts["audit_evidence"]["code"], "POST-105-B");
        assert_eq!(out.facts["last_activity"], Value::Null);
        let err = run
            .step(&req, "postman.require_activity")
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::Post105B);
        run.sim.set_enterprise(true);
        run.sim.set_audit_logs_access(false);
        let out = run.step(&req, "postman.record_activity").await.unwrap();
        assert_eq!(out.facts["audit_evidence"]["code"], "POST-104-B");
        let err = run
            .step(&req, "postman.require_activity")
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::Post104B);
        // Other trouble is not swallowed.
        run.sim.set_audit_logs_access(true);
        run.sim.inject(Fault::new(
            "/audit/logs",
            FaultKind::Error {
                status: 500,
                retry_after_secs: None,
            },
        ));
        let err = run.step(&req, "postman.record_activity").await.unwrap_err();
        assert_eq!((err.code, err.retryable), (Code::Post190B, true));
    }

    #[tokio::test]
    async fn seats_are_optional_evidence() {
        let mut run = Run::new().await;
        let s = run.seed.clone();
        run.sim.inject(
            Fault::new(
                "/accounts",
                FaultKind::Error {
                    status: 403,
                    retry_after_secs: None,
                },
            )
            .times(5),
        );
        let req = request(EventType::Offboarding, &s.leaver_email, None);
        run.step(&req, "postman.find_member").await.unwrap();
        assert_eq!(run.facts["seats_before"], Value::Null);
    }

    #[tokio::test]
    async fn unknown_actions_are_refused() {
        let mut run = Run::new().await;
        let req = request(EventType::Offboarding, "x@y.z", None);
        let err = run.step(&req, "postman.nope").await.unwrap_err();
        assert_eq!(err.code, Code::Post199B);
    }

    #[test]
    fn shipped_workflows_name_only_known_actions() {
        for (text, outcome, steps) in [
            (
                include_str!("../../../workflows/postman-offboard.toml"),
                Outcome::Removed,
                OFFBOARD,
            ),
            (
                include_str!("../../../workflows/postman-license-reclaim.toml"),
                Outcome::Downgraded,
                RECLAIM,
            ),
        ] {
            let def = Definition::parse(text, |a| ACTIONS.contains(&a)).unwrap();
            assert_eq!(def.app, "postman");
            assert_eq!(def.outcome, outcome);
            let actions: Vec<&str> = def.steps.iter().map(|s| s.action.as_str()).collect();
            assert_eq!(actions, steps);
        }
    }
}
