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
    admins_of, role_name, roles_of, sole_admin_of, Client, Member, RoleChange, ScimUser, ROLE_ADMIN,
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

/// Finds the person in the team list and in SCIM, refuses a protected one, and reads
/// the roles they hold in each workspace (with whether they are its only Admin): the
/// facts the later steps act on and the entitlements before.
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
    let scim = scim_user(client, &exact_email, ctx).await?;
    let scim_active = scim.as_ref().map(|u| u.active);
    if member.is_none() && scim_active != Some(true) {
        return not_a_member(client, ctx, &exact_email, scim).await;
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
    let (held, evidence) = match &member {
        Some(m) => workspaces_held(client, m, &active, ctx).await?,
        None => (Vec::new(), Vec::new()),
    };
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

/// The person's SCIM user. Postman's SCIM filter compares case-sensitively: `email` as
/// the team spells it is tried, then in lower case.
async fn scim_user(
    client: &Client,
    email: &str,
    ctx: &ActionContext<'_>,
) -> Result<Option<ScimUser>, Failure> {
    let scim = client
        .scim_find_user(email, ctx.calls)
        .await
        .map_err(api(Area::Users))?;
    let lower = email.to_lowercase();
    if scim.is_some() || lower == email {
        return Ok(scim);
    }
    client
        .scim_find_user(&lower, ctx.calls)
        .await
        .map_err(api(Area::Users))
}

/// The end of `find_member` for someone not in the team list nor active in SCIM:
/// nothing to do, unless a deactivated SCIM user is still the only Admin of
/// workspaces, which need a new Admin as much as a leaver's do.
async fn not_a_member(
    client: &Client,
    ctx: &ActionContext<'_>,
    exact_email: &str,
    scim: Option<ScimUser>,
) -> ActionResult {
    if let Some(user) = scim.as_ref().filter(|u| !u.active) {
        let sole = sole_admin_by_scim_id(client, &user.id, ctx).await?;
        if !sole.is_empty() {
            return deactivated_sole_admin(ctx, exact_email, &user.id, sole);
        }
    }
    let why = match scim.as_ref().map(|u| u.active) {
        Some(false) => "is already deactivated in Postman",
        _ => "is not a member of this Postman team",
    };
    let email = &ctx.request.person_email;
    Ok(StepOutput {
        finish_with: Some(Outcome::Absent),
        ..StepOutput::summary(format!("{email} {why}; nothing to do"))
    }
    .fact("scim_id", scim.map(|u| u.id)))
}

/// The roles `member` holds in each workspace that has any, as the facts keep them
/// (with whether they are its only active Admin) and as the evidence shows them.
async fn workspaces_held(
    client: &Client,
    member: &Member,
    active: &[String],
    ctx: &ActionContext<'_>,
) -> Result<(Vec<Value>, Vec<Value>), Failure> {
    let mut held = Vec::new();
    let mut evidence = Vec::new();
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
        let mine = roles_of(&ws_roles, member.id);
        if mine.is_empty() {
            continue;
        }
        let me = member.id.to_string();
        let sole_admin = mine.iter().any(|r| r == ROLE_ADMIN)
            && admins_of(&ws_roles)
                .iter()
                .all(|a| *a == me || !active.contains(a));
        held.push(json!({ "id": w.id, "name": w.name, "roles": mine, "soleAdmin": sole_admin }));
        evidence.push(json!({
            "id": w.id,
            "name": w.name,
            "visibility": w.visibility,
            "roles": mine.iter().map(|r| role_name(r)).collect::<Vec<_>>(),
        }));
    }
    Ok((held, evidence))
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

/// What became of a leaver's roles in one workspace.
enum Taken {
    /// These roles (by name) were taken away.
    Roles(Vec<String>),
    /// The workspace is gone (404): nothing left to take.
    WorkspaceGone,
    /// Postman refused (422), saying why; the roles not yet taken stay.
    Refused(String),
}

/// Takes `roles` away from `leaver` in workspace `w`, one request per role: Postman takes
/// one action per user in a request.
async fn take_roles(
    client: &Client,
    ctx: &ActionContext<'_>,
    w: &HeldWorkspace,
    leaver: i64,
    roles: Vec<String>,
) -> Result<Taken, Failure> {
    let mut gone = Vec::new();
    for role in roles {
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
            Err(e) if e.status == Some(404) => return Ok(Taken::WorkspaceGone),
            Err(e) if e.status == Some(422) => return Ok(Taken::Refused(e.message)),
            Err(e) => return Err(Failure::Api(e, Area::Roles)),
        }
    }
    Ok(Taken::Roles(gone))
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
    for w in &held {
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
        match take_roles(client, ctx, w, leaver, mine).await? {
            Taken::Roles(gone) if !gone.is_empty() => {
                removed.push(json!({ "id": w.id, "name": w.name, "roles": gone }))
            }
            Taken::Roles(_) | Taken::WorkspaceGone => {}
            Taken::Refused(why) => kept.push(ws_reason(w, &why)),
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
