//! The SCIM steps named in `workflows/scim-*.toml`. Each reads before it writes and takes
//! "already done" as done (already inactive, already out of the group, already deleted),
//! so a step repeated after a crash between its call and its record changes nothing more.
//!
//! | action | does |
//! |---|---|
//! | `scim.find_user` | filter `/Users` on the connection's `match` attribute; exactly one exact match, else `absent` (none) or `SCIM-114-B` (several); records the account before |
//! | `scim.remove_from_groups` | PATCH `remove` of `members[value eq "<id>"]` on each group the user is a direct member of (PUT of the group without PATCH) |
//! | `scim.offboard_user` | deactivate (`active` false) or DELETE, as the connection's `offboard` says |
//! | `scim.deactivate_user` | deactivate, whatever `offboard` says (licence reclaim) |
//! | `scim.confirm_offboarded` | read the user: gone (outcome `removed`) or inactive (outcome `deactivated`) |
//! | `scim.confirm_deactivated` | read the user: inactive (or gone) |

use std::future::Future;

use serde_json::{json, Value};

use super::client::{is_active, ApiError, Client, Resource};
use super::discovery::Features;
use super::errors::{ActionResult, Area, Failure};
use super::filter::{emails, members_filter, Lookup};
use crate::apps::failure::{api, unknown_action};
use crate::apps::ActionContext;
use crate::codes::Code;
use crate::config::{ScimMatch, ScimOffboard};
use crate::domain::protection::Person;
use crate::domain::step::{Outcome, StepError, StepOutput};

/// Every action this module performs.
pub const ACTIONS: &[&str] = &[
    "scim.find_user",
    "scim.remove_from_groups",
    "scim.offboard_user",
    "scim.deactivate_user",
    "scim.confirm_offboarded",
    "scim.confirm_deactivated",
];

/// The actions that deactivate or delete the account (see [`crate::apps::ends_account`]).
pub const ENDS_ACCOUNT: &[&str] = &["scim.offboard_user", "scim.deactivate_user"];

/// The actions that only read (committed with what follows them, see
/// [`crate::apps::reads_only`]).
pub const READ_ONLY: &[&str] = &[
    "scim.find_user",
    "scim.confirm_offboarded",
    "scim.confirm_deactivated",
];

/// Performs one action; [`super::errors::run_error`] maps its API failures to codes.
pub async fn perform(client: &Client, action: &str, ctx: &ActionContext<'_>) -> ActionResult {
    match action {
        "scim.find_user" => find_user(client, ctx).await,
        "scim.remove_from_groups" => remove_from_groups(client, ctx).await,
        "scim.offboard_user" => offboard_user(client, ctx).await,
        "scim.deactivate_user" => deactivate_user(client, ctx).await,
        "scim.confirm_offboarded" => confirm(client, ctx, true).await,
        "scim.confirm_deactivated" => confirm(client, ctx, false).await,
        other => Err(unknown_action(Code::Scim199B, other).into()),
    }
}

/// What the connection looks the person up by, from the event: its email, or for
/// `match = "externalId"` its `employee_id` (`SCIM-116-B` when the event has none).
fn lookup(client: &Client, ctx: &ActionContext<'_>) -> Result<Lookup, Failure> {
    let attribute = client.settings.match_on;
    let value = match attribute {
        ScimMatch::ExternalId => ctx.request.employee_id.clone().ok_or_else(|| {
            Failure::fatal(
                Code::Scim116B,
                "the connection matches on externalId and the event has no data.person.employee_id; nothing was read or written",
            )
        })?,
        ScimMatch::UserName | ScimMatch::Email => ctx.request.person_email.clone(),
    };
    Ok(Lookup { attribute, value })
}

/// The account as evidence: the attributes that say what access it has.
fn evidence(user: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in [
        "active",
        "groups",
        "roles",
        "emails",
        "entitlements",
        "meta",
    ] {
        out.insert(key.into(), user.get(key).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

/// What a step says when the user it would change no longer exists.
fn already_gone(id: &str) -> StepOutput {
    StepOutput::summary(format!("SCIM user {id:?} is already gone"))
}

fn scim_id<'a>(ctx: &'a ActionContext<'_>) -> Result<&'a str, Failure> {
    ctx.fact_str("scim_id")
        .ok_or_else(|| Failure::fatal(Code::Scim199B, "no SCIM id recorded by find-user"))
}

fn text<'a>(user: &'a Value, key: &str) -> &'a str {
    user.get(key).and_then(Value::as_str).unwrap_or_default()
}

async fn find_user(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    let lookup = lookup(client, ctx)?;
    let features = client.features(ctx.calls).await.map_err(api(Area::Users))?;
    if !features.filter {
        return Err(Failure::fatal(
            Code::Scim103B,
            "the provider's ServiceProviderConfig says it does not support filtering, and offboard finds people only by filter",
        ));
    }
    let returned = client
        .list("Users", &lookup.filter(), ctx.calls)
        .await
        .map_err(api(Area::Users))?;
    let mut matching: Vec<Value> = returned.into_iter().filter(|u| lookup.matches(u)).collect();
    let (attribute, value) = (lookup.attribute_name(), &lookup.value);
    if matching.is_empty() {
        return Ok(StepOutput {
            finish_with: Some(Outcome::Absent),
            ..StepOutput::summary(format!(
                "no SCIM user has {attribute} {value:?}; nothing to do"
            ))
        });
    }
    if matching.len() > 1 {
        let ids: Vec<&str> = matching.iter().map(|u| text(u, "id")).collect();
        return Err(Failure::fatal(
            Code::Scim114B,
            format!(
                "{} SCIM users have {attribute} {value:?} (ids {ids:?}); nothing was changed",
                matching.len()
            ),
        ));
    }
    // A list may hold only some attributes (the RFC's own example lists `userName`
    // alone); the user's own record is the evidence.
    let listed = matching.remove(0);
    let user = client
        .get_user(text(&listed, "id"), ctx.calls)
        .await
        .map_err(api(Area::Users))?
        .map_or(listed, |full| full.body);
    protect(client, ctx, &user).await?;
    let (id, active) = (text(&user, "id"), is_active(&user));
    let mut summary = format!(
        "found SCIM user {id:?} ({:?}), {}",
        text(&user, "userName"),
        if active { "active" } else { "already inactive" }
    );
    if let Some(to) = &ctx.request.transfer_to {
        summary.push_str(&format!(
            "; SCIM has no hand-over of data, so nothing is transferred to {to} in this app"
        ));
    }
    Ok(StepOutput::summary(summary)
        .fact("scim_id", id)
        .fact("scim_active", active)
        .fact("user_name", text(&user, "userName"))
        .fact("entitlements_before", evidence(&user)))
}

/// Refuses to touch a protected person (`SCIM-112-B`) by the rules of the configuration
/// this process runs with: a `protected` pattern on the event's email, the `userName` or
/// an email of the account, or the token's own user (`/Me`, where the provider has it).
/// Asked by `find-user` and again by each writing step right before its first write.
async fn protect(client: &Client, ctx: &ActionContext<'_>, user: &Value) -> Result<(), Failure> {
    let id = text(user, "id");
    let token_owner = client.me(ctx.calls).await.is_some_and(|me| me == id);
    let mut addresses = vec![
        ctx.request.person_email.clone(),
        text(user, "userName").to_string(),
    ];
    addresses.extend(emails(user));
    let emails: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let person = Person {
        emails: &emails,
        admin: false,
        token_owner,
    };
    match client.guard.refusal(person) {
        Some(why) => Err(Failure::fatal(
            Code::Scim112B,
            format!(
                "SCIM user {id:?} ({:?}): {why}; nothing was changed by this step",
                text(user, "userName")
            ),
        )),
        None => Ok(()),
    }
}

async fn remove_from_groups(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    if !client.settings.remove_from_groups {
        return Ok(StepOutput::summary(
            "remove_from_groups = false: group memberships are left as they are",
        ));
    }
    let id = scim_id(ctx)?;
    let Some(user) = client
        .get_user(id, ctx.calls)
        .await
        .map_err(api(Area::Users))?
    else {
        return Ok(already_gone(id));
    };
    let groups = member_groups(client, &user, ctx).await?;
    if groups.is_empty() {
        return Ok(StepOutput::summary(format!(
            "SCIM user {id:?} is in no group"
        )));
    }
    protect(client, ctx, &user.body).await?;
    let features = client.features(ctx.calls).await.map_err(api(Area::Users))?;
    for (group, _) in &groups {
        leave_group(client, features, group, id, ctx).await?;
    }
    let names: Vec<&str> = groups.iter().map(|(_, name)| name.as_str()).collect();
    let ids: Vec<&str> = groups.iter().map(|(group, _)| group.as_str()).collect();
    let count = match groups.len() {
        1 => "1 group".to_string(),
        n => format!("{n} groups"),
    };
    Ok(
        StepOutput::summary(format!("took SCIM user {id:?} out of {count}: {names:?}"))
            .fact("groups_left", ids),
    )
}

/// The groups `user` is a direct member of, as (id, display name): its `groups`
/// attribute when the provider fills it in (memberships through a nested group are left
/// to that group), else the `/Groups` whose `members` hold it — read by a `members`
/// filter, or, from a provider that refuses that filter, by reading every group.
async fn member_groups(
    client: &Client,
    user: &Resource,
    ctx: &ActionContext<'_>,
) -> Result<Vec<(String, String)>, Failure> {
    let entry = |g: &Value, id: &str| (text(g, id).to_string(), text(g, "display").to_string());
    if let Some(listed) = user.body.get("groups").and_then(Value::as_array) {
        return Ok(listed
            .iter()
            .filter(|g| text(g, "type") != "indirect")
            .map(|g| entry(g, "value"))
            .filter(|(id, _)| !id.is_empty())
            .collect());
    }
    let id = user.id();
    let groups = match client.list("Groups", &members_filter(id), ctx.calls).await {
        Err(e) if e.status == Some(400) => client.list_all("Groups", ctx.calls).await,
        other => other,
    }
    .map_err(api(Area::Groups))?;
    let holds = |g: &Value| match g.get("members").and_then(Value::as_array) {
        // Trusted only as far as it shows: a group listing its members must list this one.
        Some(members) => members.iter().any(|m| text(m, "value") == id),
        None => true,
    };
    Ok(groups
        .iter()
        .filter(|g| holds(g))
        .map(|g| entry(g, "id"))
        .collect())
}

/// Takes `user` out of `group`: PATCH `remove` (with `If-Match` where the provider has
/// ETags, read again and sent once more on 412), or without PATCH a PUT of the group read
/// just before, minus the member. A group already gone (404) or a member already out
/// (`noTarget`, or not among the members read) is done.
async fn leave_group(
    client: &Client,
    features: Features,
    group: &str,
    user: &str,
    ctx: &ActionContext<'_>,
) -> Result<(), Failure> {
    retry_lost_race(|| async {
        let read = match (features.patch, features.etag) {
            (true, false) => None,
            _ => match client
                .get_group(group, ctx.calls)
                .await
                .map_err(api(Area::Groups))?
            {
                Some(read) => Some(read),
                None => return Ok(()),
            },
        };
        let etag = read
            .as_ref()
            .and_then(|r| r.etag.as_deref())
            .filter(|_| features.etag);
        let sent = match (features.patch, &read) {
            (false, Some(read)) => match without_member(&read.body, user) {
                Some(body) => client.put("Groups", group, &body, etag, ctx.calls).await,
                None => return Ok(()),
            },
            _ => client.remove_member(group, user, etag, ctx.calls).await,
        };
        match sent {
            Ok(()) => Ok(()),
            Err(e) if e.status == Some(404) || e.scim_type() == Some("noTarget") => Ok(()),
            Err(e) => Err(Failure::Api(e, Area::Groups)),
        }
    })
    .await
}

/// Runs `write` — which reads what it changes, then writes it with `If-Match` where the
/// provider keeps ETags — once more when it lost a race: a 412 says the resource changed
/// between the read and the write, so the second run reads it afresh. A second 412 goes
/// up as the provider's refusal (`SCIM-115-B`).
async fn retry_lost_race<T, F, Fut>(mut write: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    match write().await {
        Err(Failure::Api(e, _)) if e.status == Some(412) => write().await,
        done => done,
    }
}

/// The group with `user` taken out of its `members`; `None` when it is not a member.
fn without_member(group: &Value, user: &str) -> Option<Value> {
    let members = group.get("members")?.as_array()?;
    let kept: Vec<Value> = members
        .iter()
        .filter(|m| text(m, "value") != user)
        .cloned()
        .collect();
    if kept.len() == members.len() {
        return None;
    }
    let mut body = group.clone();
    body["members"] = Value::Array(kept);
    Some(body)
}

async fn offboard_user(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    let delete = client.settings.offboard == ScimOffboard::Delete;
    let how = if delete { "delete" } else { "deactivate" };
    Ok(end_user(client, ctx, delete).await?.fact("offboard", how))
}

async fn deactivate_user(client: &Client, ctx: &ActionContext<'_>) -> ActionResult {
    end_user(client, ctx, false).await
}

/// Ends the user's access, from the user read just before (gone already: done) and after
/// its protection is checked: DELETE when `delete`, else `active` set to false — PATCH
/// `replace` where the provider supports PATCH, else a PUT of what was read with `active`
/// false (an inactive user is done). Every write carries `If-Match` with the version read
/// where the provider has ETags; on 412 the user is read again and the write tried once
/// more.
async fn end_user(client: &Client, ctx: &ActionContext<'_>, delete: bool) -> ActionResult {
    let id = scim_id(ctx)?;
    let features = client.features(ctx.calls).await.map_err(api(Area::Users))?;
    retry_lost_race(|| async {
        let Some(user) = client
            .get_user(id, ctx.calls)
            .await
            .map_err(api(Area::Users))?
        else {
            return Ok(already_gone(id));
        };
        if !delete && !user.active() {
            return Ok(StepOutput::summary(format!(
                "SCIM user {id:?} is already inactive"
            )));
        }
        protect(client, ctx, &user.body).await?;
        let etag = user.etag.as_deref().filter(|_| features.etag);
        let summary = if delete {
            match client.delete_user(id, etag, ctx.calls).await {
                Ok(true) => format!("deleted SCIM user {id:?}"),
                Ok(false) => format!("SCIM user {id:?} was already deleted"),
                Err(e) => return Err(Failure::Api(e, Area::Users)),
            }
        } else {
            let (how, sent) = if features.patch {
                let op = json!([{ "op": "replace", "path": "active", "value": false }]);
                (
                    "PATCH",
                    client.patch("Users", id, op, etag, ctx.calls).await,
                )
            } else {
                let mut body = user.body.clone();
                body["active"] = Value::Bool(false);
                ("PUT", client.put("Users", id, &body, etag, ctx.calls).await)
            };
            match sent {
                Ok(()) => format!("deactivated SCIM user {id:?} ({how} active=false)"),
                Err(e) if matches!(e.status, Some(405 | 501)) => return Err(refused(how, id, &e)),
                Err(e) => return Err(Failure::Api(e, Area::Users)),
            }
        };
        Ok(StepOutput::summary(summary))
    })
    .await
}

/// `SCIM-103-B`: the provider does not take the write deactivation needs.
fn refused(how: &str, id: &str, e: &ApiError) -> Failure {
    Failure::fatal(
        Code::Scim103B,
        format!(
            "{how} /Users/{id:?} was refused ({}); the provider cannot deactivate users this way",
            e.describe()
        ),
    )
}

/// Reads the user back: gone, or inactive. For an offboarding (`finish`), the outcome
/// says which (`removed`, `deactivated`); a licence reclaim keeps its `downgraded`.
async fn confirm(client: &Client, ctx: &ActionContext<'_>, finish: bool) -> ActionResult {
    let id = scim_id(ctx)?;
    let user = client
        .get_user(id, ctx.calls)
        .await
        .map_err(api(Area::Users))?;
    let (outcome, summary, after) = match &user {
        None => (
            Outcome::Removed,
            format!("SCIM user {id:?} is gone"),
            Value::Null,
        ),
        Some(user) if !user.active() => (
            Outcome::Deactivated,
            format!("SCIM user {id:?} is inactive"),
            evidence(&user.body),
        ),
        Some(_) => {
            return Err(Failure::Step(StepError::transient(
                Code::Scim199B,
                format!("SCIM user {id:?} is still active after its deactivation or deletion"),
                None,
            )))
        }
    };
    Ok(StepOutput {
        finish_with: finish.then_some(outcome),
        ..StepOutput::summary(summary).fact("entitlements_after", after)
    })
}

#[cfg(test)]
mod tests {
    use crate::domain::definition::Definition;

    /// Both shipped SCIM workflows end an account (so the mass-offboarding brake counts
    /// them), start with a read (so they may recheck), and name only known actions.
    #[test]
    fn the_shipped_definitions_are_braked_and_start_with_a_read() {
        for name in ["scim-offboard.toml", "scim-license-reclaim.toml"] {
            let path = format!("{}/workflows/{name}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(path).unwrap();
            let def = Definition::parse(&text, crate::apps::known_action).unwrap();
            assert!(crate::apps::ends_account(&def), "{name}");
            assert!(crate::apps::reads_only(&def.steps[0].action), "{name}");
            assert!(!crate::apps::reads_only("scim.offboard_user"));
        }
    }
}
