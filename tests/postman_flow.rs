//! Postman end to end (issue 4): offboarding and seat reclaim over real RabbitMQ and a
//! real database, every POST code provoked by the real condition in the Postman
//! simulator (`-A` through `offboard check`, `-B` through workflow runs), and one event
//! fanned out to every configured connection.

mod apps_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use apps_support::{quick_retry, retry_calls};
use offboard_simulators::postman::{
    Fault, FaultKind, PostmanSim, SimCall, SimMember, SimWorkspace, ROLE_ADMIN, ROLE_EDITOR,
    ROLE_VIEWER,
};
use serde_json::{json, Value};
use support::*;

const OFFBOARDING: &str = "offboarding.requested";
const RECLAIM_KIND: &str = "license.reclaim.requested";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// One write the simulator received, in words: `add 123 as 3 in <ws>`,
/// `remove 123 as 2 in <ws>`, `deactivate <scim id>`, or `METHOD /path`.
fn describe(call: &SimCall) -> String {
    let body = call.body.clone().unwrap_or(Value::Null);
    if let Some(ws) = call
        .path
        .strip_prefix("/workspaces/")
        .and_then(|p| p.strip_suffix("/roles"))
    {
        let ops = body["roles"].as_array().cloned().unwrap_or_default();
        assert_eq!(ops.len(), 1, "one role change per request: {body}");
        let values = ops[0]["value"].as_array().cloned().unwrap_or_default();
        assert_eq!(values.len(), 1, "one user per role change: {body}");
        return format!(
            "{} {} as {} in {ws}",
            ops[0]["op"].as_str().unwrap_or("?"),
            values[0]["id"].as_str().unwrap_or("?"),
            values[0]["role"].as_str().unwrap_or("?"),
        );
    }
    if let Some(id) = call.path.strip_prefix("/scim/v2/Users/") {
        let op = &body["Operations"][0];
        if op["op"] == "replace" && op["value"] == json!({"active": false}) {
            return format!("deactivate {id}");
        }
    }
    format!("{} {} {body}", call.method, call.path)
}

/// Every non-GET request, oldest first, with the status it got.
fn writes(sim: &PostmanSim) -> Vec<(String, u16)> {
    sim.calls()
        .iter()
        .filter(|c| c.method != "GET")
        .map(|c| (describe(c), c.status))
        .collect()
}

/// The writes Postman accepted.
fn accepted_writes(sim: &PostmanSim) -> Vec<String> {
    writes(sim)
        .into_iter()
        .filter(|(_, status)| (200..300).contains(status))
        .map(|(w, _)| w)
        .collect()
}

fn add(ws: &str, user: i64, role: &str) -> String {
    format!("add {user} as {role} in {ws}")
}

fn remove(ws: &str, user: i64, role: &str) -> String {
    format!("remove {user} as {role} in {ws}")
}

fn deactivate(sim: &PostmanSim, user: i64) -> String {
    format!("deactivate {}", sim.member(user).unwrap().scim_id)
}

/// Runs the `offboard` binary (off the async workers, so the simulators keep answering).
/// The Postman key variables are set only when `env` names them.
async fn offboard(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_offboard"));
    cmd.args(args)
        .env("OFFBOARD_AUDIT_KEY", support::AUDIT_KEY)
        .env_remove("OFFBOARD_CONFIG")
        .env_remove("OFFBOARD_DATABASE_URL")
        .env_remove(POSTMAN_TOKEN_ENV)
        .env_remove(format!("{POSTMAN_TOKEN_ENV}_SCIM"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_to_end(cmd).await
}

/// An `offboard.toml` with this database and, when given, one `postman` connection.
fn write_config(dir: &Path, database_url: &str, postman_url: Option<&str>) -> PathBuf {
    let mut text = format!("database_url = \"{database_url}\"\n");
    if let Some(url) = postman_url {
        text.push_str(&format!(
            "[connections.postman]\napp = \"postman\"\nbase_url = \"{url}\"\ntoken_env = \"{POSTMAN_TOKEN_ENV}\"\nrequests_per_minute = 6000\ntimeout_secs = 5\n"
        ));
    }
    let path = dir.join("offboard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Which workflow definitions a run uses.
#[derive(Clone, Copy, Debug)]
enum Defs {
    /// `workflows/postman-*.toml` as shipped.
    Shipped,
    /// The shipped ones with millisecond retry intervals.
    Fast,
    /// Fast, and `postman.require_activity` in place of `postman.record_activity`: the
    /// shipped workflows only *record* POST-104-B / POST-105-B as evidence and go on
    /// (see `a_team_without_audit_logs_is_offboarded_with_the_reason_recorded`), so the
    /// runs that must fail with those codes use this copy.
    Strict,
}

/// Copies of the shipped Postman definitions, changed as `defs` says.
fn postman_workflows(defs: Defs) -> Option<tempfile::TempDir> {
    if let Defs::Shipped = defs {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["postman-offboard.toml", "postman-license-reclaim.toml"] {
        let mut text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("workflows")
                .join(name),
        )
        .unwrap();
        let mut edits = vec![
            ("initial_interval_ms = 1000", "initial_interval_ms = 10"),
            ("initial_interval_ms = 2000", "initial_interval_ms = 10"),
            ("max_interval_ms = 300000", "max_interval_ms = 40"),
        ];
        if let Defs::Strict = defs {
            edits.push((
                "action = \"postman.record_activity\"",
                "action = \"postman.require_activity\"",
            ));
        }
        for (from, to) in edits {
            assert!(text.contains(from), "{name} no longer has {from:?}");
            text = text.replace(from, to);
        }
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    Some(dir)
}

// ---------------------------------------------------------------------------
// 1. Offboarding and seat reclaim over RabbitMQ
// ---------------------------------------------------------------------------

async fn offboard_and_reclaim(db: Db) {
    let team = postman_team().await;
    let s = team.seed.clone();
    let sim = &team.sim;
    let (url, _dir) = fresh_database(db).await;
    let names = amqp_names();
    let engine = postman_engine(
        postman_config(&url, names.clone(), &sim.base_url()),
        POSTMAN_KEY,
    )
    .await;
    let (watch_ch, watch_q) = watch_exchange(&names, "workflow.*").await;
    let service = serve(&engine);

    // --- Offboarding with a recipient: outcome `removed`.
    let seats = sim.seats_consumed();
    publish(
        &names,
        OFFBOARDING,
        &event(
            "ev-pm-off",
            OFFBOARDING,
            &s.leaver_email,
            Some(&s.recipient_email),
        ),
    )
    .await;
    let off = finished(engine.store(), "ev-pm-off", 1, 30).await;
    assert_eq!(
        (
            off[0].connection.as_str(),
            off[0].state.as_str(),
            off[0].outcome.as_deref()
        ),
        ("postman", "completed", Some("removed")),
        "{:?}",
        off[0].error_message
    );

    // The recipient becomes Admin of the two workspaces the leaver administers alone,
    // then the leaver's roles go (Admin, Admin, Editor, Admin, one request each), then
    // the SCIM deactivation. Nothing else is written: no Admin is added where the leaver
    // was not the only one, no workspace where the leaver holds no role is touched.
    let [payments, sandbox, platform, docs] = [0, 1, 2, 3].map(|i| s.leaver_workspaces[i].as_str());
    assert_eq!(s.leaver_sole_admin_workspaces, [payments, sandbox]);
    let (leaver, recipient) = (s.leaver_id, s.recipient_id);
    let expected = vec![
        add(payments, recipient, ROLE_ADMIN),
        add(sandbox, recipient, ROLE_ADMIN),
        remove(payments, leaver, ROLE_ADMIN),
        remove(sandbox, leaver, ROLE_ADMIN),
        remove(platform, leaver, ROLE_EDITOR),
        remove(docs, leaver, ROLE_ADMIN),
        deactivate(sim, leaver),
    ];
    let done = writes(sim);
    assert_eq!(
        done.iter().map(|(w, _)| w.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(done.iter().all(|(_, status)| *status == 200), "{done:?}");
    // SCIM calls carry the SCIM key as a bearer token, the others the API key.
    for c in sim.calls() {
        let scim = c.path.starts_with("/scim/");
        assert_eq!(
            (c.authorization_present, c.api_key_present),
            (scim, !scim),
            "{} {}",
            c.method,
            c.path
        );
    }
    // What Postman now says.
    for ws in [payments, sandbox] {
        assert_eq!(
            sim.workspace_role(ws, recipient).as_deref(),
            Some(ROLE_ADMIN)
        );
    }
    for ws in [payments, sandbox, platform, docs] {
        assert_eq!(sim.workspace_role(ws, leaver), None, "{ws}");
    }
    assert_eq!(
        sim.workspace_role(platform, recipient).as_deref(),
        Some(ROLE_ADMIN)
    );
    assert_eq!(sim.workspace_role(docs, recipient), None);
    assert!(!sim.member(leaver).unwrap().active);
    assert_eq!(sim.seats_consumed(), seats - 1);
    // The evidence kept with the workflow.
    let facts = engine
        .store()
        .load(&off[0].id)
        .await
        .unwrap()
        .unwrap()
        .state
        .facts;
    assert_eq!(facts["entitlements_before"]["teamMember"], true);
    assert_eq!(
        facts["entitlements_before"]["workspaces"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        facts["last_activity"]["action"],
        "user.login_google_success"
    );
    assert_eq!(facts["entitlements_after"]["scimActive"], false);

    // --- Seat reclaim with a recipient: outcome `downgraded`.
    sim.clear_calls();
    let seats = sim.seats_consumed();
    let reclaim = s.reclaim_id;
    publish(
        &names,
        RECLAIM_KIND,
        &event(
            "ev-pm-lic",
            RECLAIM_KIND,
            &s.reclaim_email,
            Some(&s.recipient_email),
        ),
    )
    .await;
    let lic = finished(engine.store(), "ev-pm-lic", 1, 30).await;
    assert_eq!(
        (lic[0].state.as_str(), lic[0].outcome.as_deref()),
        ("completed", Some("downgraded")),
        "{:?}",
        lic[0].error_message
    );
    // The one workspace the member administers alone ("Legacy Mocks") is handed over,
    // then the account is deactivated; no workspace role is taken away.
    let legacy = sim
        .calls()
        .into_iter()
        .find(|c| c.method == "PATCH" && c.path.starts_with("/workspaces/"))
        .expect("a hand-over")
        .path
        .trim_start_matches("/workspaces/")
        .trim_end_matches("/roles")
        .to_string();
    assert_eq!(sim.workspace(&legacy).unwrap().name, "Legacy Mocks");
    assert_eq!(
        accepted_writes(sim),
        vec![
            add(&legacy, recipient, ROLE_ADMIN),
            deactivate(sim, reclaim)
        ]
    );
    assert!(!accepted_writes(sim).iter().any(|w| w.starts_with("remove")));
    assert_eq!(
        sim.workspace_role(&legacy, reclaim).as_deref(),
        Some(ROLE_ADMIN)
    );
    assert_eq!(
        sim.workspace_role(docs, reclaim).as_deref(),
        Some(ROLE_VIEWER)
    );
    assert!(!sim.member(reclaim).unwrap().active);
    assert_eq!(sim.seats_consumed(), seats - 1);

    // --- Unknown and long-deactivated people: outcome `absent`, nothing written.
    sim.clear_calls();
    for (id, email) in [
        ("ev-pm-nobody", "nobody@northwind.example"),
        ("ev-pm-gone", "felix.wagner@northwind.example"),
    ] {
        publish(
            &names,
            OFFBOARDING,
            &event(id, OFFBOARDING, email, Some(&s.recipient_email)),
        )
        .await;
        let wf = finished(engine.store(), id, 1, 30).await;
        assert_eq!(
            (wf[0].state.as_str(), wf[0].outcome.as_deref()),
            ("completed", Some("absent")),
            "{email}: {:?}",
            wf[0].error_message
        );
    }
    assert_eq!(writes(sim), vec![]);

    // Each outcome went out as a `workflow.completed` event.
    let out = take(&watch_ch, &watch_q, 4, 10).await;
    let mut seen: Vec<(String, String, String)> = out
        .iter()
        .map(|d| {
            let v: Value = serde_json::from_slice(&d.data).unwrap();
            (
                v["type"].as_str().unwrap().to_string(),
                v["data"]["connection"].as_str().unwrap().to_string(),
                v["data"]["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let completed = |o: &str| -> (String, String, String) {
        ("workflow.completed".into(), "postman".into(), o.into())
    };
    assert_eq!(
        seen,
        vec![
            completed("absent"),
            completed("absent"),
            completed("downgraded"),
            completed("removed")
        ]
    );
    service.stop().await;
    assert_eq!(
        writes_by_read_only_steps(engine.store()).await,
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_and_seat_reclaim_over_amqp_on_postgres() {
    offboard_and_reclaim(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_and_seat_reclaim_over_amqp_on_sqlite() {
    offboard_and_reclaim(Db::Sqlite).await;
}

// ---------------------------------------------------------------------------
// 2. `offboard check postman`: OK, a warning, or the `-A` code of each condition
// ---------------------------------------------------------------------------

/// What `offboard check` should say.
#[derive(Clone, Copy, Debug)]
enum Says {
    /// `postman: OK`, exit 0.
    Ok,
    /// `postman: OK` and `postman: warning CODE …`, exit 0.
    Warns(&'static str),
    /// One line `postman: CODE …`, exit 3.
    Fails(&'static str),
}

struct CheckCase {
    name: &'static str,
    setup: fn(&Team),
    /// The API key in the connection's variable (`None`: the variable is unset).
    key: Option<&'static str>,
    /// A separate SCIM key in `<token_env>_SCIM`.
    scim_key: Option<&'static str>,
    says: Says,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_ok_a_warning_or_the_a_code_of_each_condition() {
    let key = Some(POSTMAN_KEY);
    #[rustfmt::skip]
    let cases = [
        CheckCase { name: "healthy", setup: |_| {}, key, scim_key: None, says: Says::Ok },
        CheckCase { name: "SCIM key given separately", setup: |t| t.sim.add_scim_key("scim-test-5b0e"), key, scim_key: Some("scim-test-5b0e"), says: Says::Ok },
        CheckCase { name: "no Enterprise plan", setup: |t| t.sim.set_enterprise(false), key, scim_key: None, says: Says::Warns("POST-105-A") },
        CheckCase { name: "wrong API key", setup: |_| {}, key: Some("PMAK-wrong-0000"), scim_key: None, says: Says::Fails("POST-100-A") },
        CheckCase { name: "wrong SCIM key", setup: |_| {}, key, scim_key: Some("scim-wrong-0000"), says: Says::Fails("POST-100-A") },
        CheckCase { name: "key variable unset", setup: |_| {}, key: None, scim_key: None, says: Says::Fails("POST-100-A") },
        CheckCase { name: "API key expired", setup: |t| t.sim.expire_api_key(POSTMAN_KEY), key, scim_key: None, says: Says::Fails("POST-100-B") },
        CheckCase { name: "API key revoked", setup: |t| t.sim.revoke_api_key(POSTMAN_KEY), key, scim_key: None, says: Says::Fails("POST-100-B") },
        CheckCase { name: "SCIM key revoked", setup: |t| t.sim.revoke_scim_key(POSTMAN_KEY), key, scim_key: None, says: Says::Fails("POST-100-B") },
        CheckCase { name: "members not readable", setup: |t| t.sim.set_users_access(false), key, scim_key: None, says: Says::Fails("POST-101-A") },
        CheckCase { name: "SCIM turned off", setup: |t| t.sim.set_scim_enabled(false), key, scim_key: None, says: Says::Fails("POST-101-A") },
        CheckCase { name: "workspaces not listable", setup: |t| t.sim.set_workspaces_access(false), key, scim_key: None, says: Says::Fails("POST-102-A") },
        CheckCase { name: "workspace roles not readable", setup: |t| t.sim.set_roles_access(false), key, scim_key: None, says: Says::Fails("POST-103-A") },
        CheckCase { name: "audit logs not readable", setup: |t| t.sim.set_audit_logs_access(false), key, scim_key: None, says: Says::Fails("POST-104-A") },
        CheckCase { name: "team deleted", setup: |t| t.sim.set_team_deleted(true), key, scim_key: None, says: Says::Fails("POST-106-A") },
    ];
    for case in cases {
        let name = case.name;
        let team = postman_team().await;
        (case.setup)(&team);
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/offboard.db?mode=rwc", dir.path().display());
        let config = write_config(dir.path(), &db, Some(&team.sim.base_url()));
        let config = config.to_str().unwrap();
        let scim_env = format!("{POSTMAN_TOKEN_ENV}_SCIM");
        let mut env = Vec::new();
        if let Some(k) = case.key {
            env.push((POSTMAN_TOKEN_ENV, k));
        }
        if let Some(k) = case.scim_key {
            env.push((scim_env.as_str(), k));
        }

        let (code, out, err) = offboard(&["check", "--config", config], &env).await;
        let (_, json, _) =
            offboard(&["check", "postman", "--json", "--config", config], &env).await;
        let v: Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}: {e}: {json}"));
        let report = &v[0];
        assert_eq!(report["connection"], "postman", "{name}");
        let lines: Vec<&str> = out.lines().collect();
        match case.says {
            Says::Ok => {
                assert_eq!((code, out.trim()), (0, "postman: OK"), "{name}: {err}");
                assert_eq!(
                    (&report["ok"], &report["error_code"], &report["warnings"]),
                    (&json!(true), &Value::Null, &json!([])),
                    "{name}"
                );
            }
            Says::Warns(warning) => {
                assert_eq!(code, 0, "{name}: {out}{err}");
                assert_eq!(lines.len(), 2, "{name}: {out}");
                assert_eq!(lines[0], "postman: OK", "{name}");
                assert!(
                    lines[1].starts_with(&format!("postman: warning {warning} ")),
                    "{name}: {out}"
                );
                assert_eq!(report["ok"], true, "{name}");
                assert_eq!(report["error_code"], Value::Null, "{name}");
                assert_eq!(report["warnings"][0]["code"], warning, "{name}");
            }
            Says::Fails(expected) => {
                assert_eq!(code, 3, "{name}: {out}{err}");
                assert_eq!(lines.len(), 1, "{name}: one line per connection: {out}");
                assert!(
                    lines[0].starts_with(&format!("postman: {expected} ")),
                    "{name}: {out}"
                );
                assert_eq!(report["ok"], false, "{name}");
                assert_eq!(report["error_code"], expected, "{name}");
                assert!(
                    !report["message"].as_str().unwrap_or("").is_empty(),
                    "{name}"
                );
                assert!(
                    report["remedy"].as_array().is_some_and(|r| !r.is_empty()),
                    "{name}"
                );
            }
        }
        for secret in [
            POSTMAN_KEY,
            "PMAK-wrong-0000",
            "scim-wrong-0000",
            "scim-test-5b0e",
        ] {
            assert!(
                !out.contains(secret) && !err.contains(secret) && !json.contains(secret),
                "{name}: a key leaked"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 3. Runs that meet a condition fail with its `-B` code
// ---------------------------------------------------------------------------

/// Who takes over.
#[derive(Clone, Copy, Debug)]
enum To {
    /// The seeded recipient, an active member.
    Recipient,
    /// Someone else.
    Email(&'static str),
}

struct RunCase {
    name: &'static str,
    defs: Defs,
    kind: &'static str,
    to: To,
    setup: fn(&Team),
    code: &'static str,
    /// Whether Postman may have accepted writes before the failure.
    writes_allowed: bool,
}

fn refuse(status: u16, path: &str, method: &str, body: Value) -> Fault {
    Fault::new(path, FaultKind::Reply { status, body }).method(method)
}

fn forbidden() -> Value {
    json!({"error": {"name": "forbiddenError", "message": "You do not have enough permissions to perform this action."}})
}

fn fail_always(path: &str, kind: FaultKind) -> Fault {
    Fault::new(path, kind).times(1000)
}

fn unavailable(status: u16) -> FaultKind {
    FaultKind::Error {
        status,
        retry_after_secs: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_fail_with_the_b_code_of_each_condition() {
    use Defs::*;
    let off = OFFBOARDING;
    #[rustfmt::skip]
    let cases = [
        RunCase { name: "API key revoked", defs: Shipped, kind: off, to: To::Recipient, setup: |t| t.sim.revoke_api_key(POSTMAN_KEY), code: "POST-100-B", writes_allowed: false },
        RunCase { name: "API key expired", defs: Shipped, kind: RECLAIM_KIND, to: To::Recipient, setup: |t| t.sim.expire_api_key(POSTMAN_KEY), code: "POST-100-B", writes_allowed: false },
        RunCase { name: "SCIM key revoked", defs: Shipped, kind: off, to: To::Recipient, setup: |t| t.sim.revoke_scim_key(POSTMAN_KEY), code: "POST-100-B", writes_allowed: false },
        RunCase { name: "members no longer readable", defs: Shipped, kind: off, to: To::Recipient, setup: |t| t.sim.set_users_access(false), code: "POST-101-B", writes_allowed: false },
        RunCase { name: "SCIM turned off", defs: Shipped, kind: off, to: To::Recipient, setup: |t| t.sim.set_scim_enabled(false), code: "POST-101-B", writes_allowed: false },
        RunCase { name: "SCIM deactivation refused after the hand-over", defs: Shipped, kind: off, to: To::Recipient,
            setup: |t| t.sim.inject(refuse(403, "/scim/v2/Users/", "PATCH", json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "detail": "Forbidden", "status": "403"}))),
            code: "POST-101-B", writes_allowed: true },
        RunCase { name: "workspaces no longer listable", defs: Shipped, kind: off, to: To::Recipient, setup: |t| t.sim.set_workspaces_access(false), code: "POST-102-B", writes_allowed: false },
        RunCase { name: "workspace roles no longer readable", defs: Shipped, kind: off, to: To::Recipient, setup: |t| t.sim.set_roles_access(false), code: "POST-103-B", writes_allowed: false },
        RunCase { name: "role change refused", defs: Shipped, kind: off, to: To::Recipient, setup: |t| t.sim.inject(refuse(403, "/workspaces/", "PATCH", forbidden())), code: "POST-103-B", writes_allowed: false },
        RunCase { name: "audit logs no longer readable", defs: Strict, kind: off, to: To::Recipient, setup: |t| t.sim.set_audit_logs_access(false), code: "POST-104-B", writes_allowed: false },
        RunCase { name: "team left the Enterprise plan", defs: Strict, kind: RECLAIM_KIND, to: To::Recipient, setup: |t| t.sim.set_enterprise(false), code: "POST-105-B", writes_allowed: false },
        RunCase { name: "team deleted", defs: Shipped, kind: off, to: To::Recipient, setup: |t| t.sim.set_team_deleted(true), code: "POST-106-B", writes_allowed: false },
        RunCase { name: "recipient not in the team", defs: Shipped, kind: off, to: To::Email("stranger@elsewhere.example"), setup: |_| {}, code: "POST-110-B", writes_allowed: false },
        RunCase { name: "recipient deactivated", defs: Shipped, kind: RECLAIM_KIND, to: To::Email("felix.wagner@northwind.example"), setup: |_| {}, code: "POST-110-B", writes_allowed: false },
        RunCase { name: "Postman down through every retry", defs: Fast, kind: off, to: To::Recipient, setup: |t| t.sim.inject(fail_always("/users", unavailable(503))), code: "POST-190-B", writes_allowed: false },
        RunCase { name: "rate-limited through every retry", defs: Fast, kind: RECLAIM_KIND, to: To::Recipient,
            setup: |t| t.sim.inject(fail_always("/workspaces", FaultKind::Error { status: 429, retry_after_secs: Some(0) })),
            code: "POST-190-B", writes_allowed: false },
        RunCase { name: "connections dropped through every retry", defs: Fast, kind: off, to: To::Recipient, setup: |t| t.sim.inject(fail_always("/scim/v2/Users", FaultKind::DropConnection)), code: "POST-190-B", writes_allowed: false },
    ];
    for case in cases {
        let name = case.name;
        let team = postman_team().await;
        let s = team.seed.clone();
        let defs = postman_workflows(case.defs);
        let (url, _db) = fresh_database(Db::Sqlite).await;
        let mut config = postman_config(&url, amqp_names(), &team.sim.base_url());
        config.workflows_dir = defs.as_ref().map(|d| d.path().to_path_buf());
        let engine = postman_engine(config, POSTMAN_KEY).await;
        retry_calls(&engine, "postman", POSTMAN_KEY, quick_retry()).await;
        (case.setup)(&team);
        let seats = team.sim.seats_consumed();

        let id = format!("ev-{}", unique());
        let to = match case.to {
            To::Recipient => s.recipient_email.clone(),
            To::Email(e) => e.to_string(),
        };
        let body = event(&id, case.kind, &s.leaver_email, Some(&to));
        let request = offboard::domain::event::parse(&body, &["postman".into()]).unwrap();
        engine.accept(&request, "{}").await.unwrap().unwrap();
        engine
            .run_until_settled(Duration::from_secs(60))
            .await
            .unwrap();

        let wf = &engine.store().by_event(&id).await.unwrap()[0];
        assert_eq!(wf.state, "failed", "{name}: {:?}", wf.outcome);
        assert_eq!(
            wf.error_code.as_deref(),
            Some(case.code),
            "{name}: {:?}",
            wf.error_message
        );
        let message = wf.error_message.clone().unwrap_or_default();
        assert!(!message.trim().is_empty(), "{name}: empty message");
        assert!(!message.contains(POSTMAN_KEY), "{name}: the key leaked");

        // The account was not deactivated and, unless the failure came late, Postman
        // accepted no write at all.
        assert!(team.sim.member(s.leaver_id).unwrap().active, "{name}");
        assert_eq!(team.sim.seats_consumed(), seats, "{name}");
        if !case.writes_allowed {
            assert_eq!(accepted_writes(&team.sim), Vec::<String>::new(), "{name}");
        }

        let state = engine.store().load(&wf.id).await.unwrap().unwrap().state;
        let step = &state.steps[state.current];
        assert_eq!(
            step.error_code.map(|c| c.as_str()),
            Some(case.code),
            "{name}"
        );
        if case.code == "POST-190-B" {
            // find-member allows 24 attempts (the default); every one of them was made.
            assert_eq!(
                (step.name.as_str(), step.attempts),
                ("find-member", 24),
                "{name}"
            );
        } else {
            assert_eq!(step.attempts, 1, "{name}: a refusal is not retried");
        }
        // The failure is what `workflow.failed` will carry.
        let out = offboard::outbox::events::completion(&wf.id, &state).unwrap();
        assert_eq!(out.routing_key, "workflow.failed", "{name}");
        let v: Value = serde_json::from_str(&out.body).unwrap();
        assert_eq!(v["data"]["error_code"], case.code, "{name}");
        assert_eq!(v["data"]["connection"], "postman", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_without_audit_logs_is_offboarded_with_the_reason_recorded() {
    // The shipped workflows treat audit logs as optional evidence: the run goes on and
    // the code that `postman.require_activity` would fail with is kept with the workflow.
    type Setup = fn(&PostmanSim);
    let cases: [(Setup, &str); 2] = [
        (|sim| sim.set_audit_logs_access(false), "POST-104-B"),
        (|sim| sim.set_enterprise(false), "POST-105-B"),
    ];
    for (setup, code) in cases {
        let team = postman_team().await;
        let s = team.seed.clone();
        let (url, _db) = fresh_database(Db::Sqlite).await;
        let engine = postman_engine(
            postman_config(&url, amqp_names(), &team.sim.base_url()),
            POSTMAN_KEY,
        )
        .await;
        setup(&team.sim);
        let id = format!("ev-{}", unique());
        let body = event(&id, OFFBOARDING, &s.leaver_email, Some(&s.recipient_email));
        let request = offboard::domain::event::parse(&body, &["postman".into()]).unwrap();
        engine.accept(&request, "{}").await.unwrap().unwrap();
        engine
            .run_until_settled(Duration::from_secs(30))
            .await
            .unwrap();
        let wf = &engine.store().by_event(&id).await.unwrap()[0];
        assert_eq!(
            (wf.state.as_str(), wf.outcome.as_deref()),
            ("completed", Some("removed")),
            "{code}: {:?}",
            wf.error_message
        );
        let facts = engine
            .store()
            .load(&wf.id)
            .await
            .unwrap()
            .unwrap()
            .state
            .facts;
        assert_eq!(facts["audit_evidence"]["code"], code);
        assert_eq!(facts["last_activity"], Value::Null);
        assert!(!team.sim.member(s.leaver_id).unwrap().active);
    }
}

// ---------------------------------------------------------------------------
// 4. One event, every configured connection
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_without_connections_runs_on_smartsheet_and_postman() {
    // Ada (leaving) and Grace (taking over) work in both apps.
    let org = org().await;
    let team = postman_team().await;
    let ada = team.sim.add_member(SimMember::new(LEAVER));
    let grace = team.sim.add_member(SimMember::new(RECIPIENT));
    let apis = team
        .sim
        .add_workspace(SimWorkspace::team("Ada's APIs", ada).role(grace, ROLE_VIEWER));

    let (url, _db) = fresh_database(Db::Sqlite).await;
    let names = amqp_names();
    let mut cfg = config(&url, names.clone(), &org.sim.base_url());
    cfg.connections
        .insert("postman".into(), postman_connection(&team.sim.base_url()));
    let engine = engine(cfg, TOKEN).await;
    use_postman(&engine, POSTMAN_KEY).await;
    let service = serve(&engine);

    let body = event("ev-both", OFFBOARDING, LEAVER, Some(RECIPIENT));
    assert!(!String::from_utf8_lossy(&body).contains("connections"));
    publish(&names, OFFBOARDING, &body).await;
    let rows = finished(engine.store(), "ev-both", 2, 60).await;
    service.stop().await;

    let mut got: Vec<(String, String, String, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r.connection.clone(),
                r.app.clone(),
                r.state.clone(),
                r.outcome.clone(),
            )
        })
        .collect();
    got.sort();
    let removed = |c: &str| -> (String, String, String, Option<String>) {
        (
            c.into(),
            c.into(),
            "completed".into(),
            Some("removed".into()),
        )
    };
    assert_eq!(got, vec![removed("postman"), removed("smartsheet")]);
    // Both apps did the work.
    assert!(org.sim.user(org.leaver).is_none());
    assert!(!team.sim.member(ada).unwrap().active);
    assert_eq!(
        team.sim.workspace_role(&apis, grace).as_deref(),
        Some(ROLE_ADMIN)
    );
    assert_eq!(team.sim.workspace_role(&apis, ada), None);

    // `offboard list --json` shows both under the event's id.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &url, None);
    let (code, out, err) = offboard(
        &["list", "--json", "--config", config.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    let mut seen: Vec<(String, String, String)> = listed
        .iter()
        .map(|w| {
            (
                w["event_id"].as_str().unwrap().to_string(),
                w["connection"].as_str().unwrap().to_string(),
                w["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let row =
        |c: &str| -> (String, String, String) { ("ev-both".into(), c.into(), "removed".into()) };
    assert_eq!(seen, vec![row("postman"), row("smartsheet")]);
}
