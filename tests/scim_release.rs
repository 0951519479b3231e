//! Issue 25's acceptance run, on what ships: the RELEASE build of `offboard` (`serve` as a
//! process of its own; `check`, `verify`, `history` and `show` as an operator runs them),
//! RabbitMQ, a fresh PostgreSQL database, and six SCIM connections in one `offboard.toml`,
//! each in front of a SCIM simulator playing another provider:
//!
//! - `scim` (`match = "email"`): an offboarding that empties the leaver's groups and
//!   deactivates her, with a trail that verifies; a reclaim that keeps the groups; an absent
//!   person; two accounts carrying one address, which stop with `SCIM-114-B` unwritten;
//! - `scim_escaped` (`match = "externalId"`, `offboard = "delete"`): an employee id holding
//!   `"`, `\` and ` or `, which reaches the provider escaped and deletes only its owner;
//! - `scim_nopatch`: a provider without PATCH, deactivated with PUTs;
//! - `scim_etag`: a provider with ETags, one write losing a race (412) and sent again;
//! - `scim_revoked`: a revoked token, `SCIM-100-A` at `check` and `SCIM-100-B` in a run;
//! - `scim_limited`: a provider allowing 120 requests a minute, the connection's budget,
//!   which refuses one lookup with 429: the run is paced and finishes.
//!
//! Every event is published to the exchange at once and runs side by side in one `serve`;
//! the test polls the database until every workflow has ended, then reads each provider's
//! state and request log, and each workflow's state, code, outcome and trail.

mod scim_support;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use offboard::store::entities::workflow;
use offboard::store::Store;
use offboard_simulators::scim::{Fault, FaultKind, ScimCall, ScimGroup, ScimOptions, ScimUser};
use scim_support::*;
use serde_json::{json, Value};
use support::procs::{all_ended, command_of, publish_many, Procs};
use support::{
    amqp_names, delete_broker_names, drop_database, fresh_database, release_binary, run_to_end,
    trail, writes_by_read_only_steps, Db, AMQP_URL,
};

/// The externalId that must reach the provider escaped: quotes, a backslash, and ` or `
/// clauses that would match everyone if spliced into the filter raw.
const TRICKY: &str = r#"E"9\ or userName pr or ""#;

/// The address two accounts of the `scim` provider carry.
const SHARED: &str = "pat@example.com";

/// The budget of `scim_limited`, and the provider's own limit.
const LIMITED_RPM: u32 = 120;

/// One event of the run: its id, type, the one connection it names, and its body.
struct Sent {
    id: &'static str,
    kind: &'static str,
    connection: &'static str,
    body: Vec<u8>,
}

impl Sent {
    /// `event` (from [`scim_event`]) limited to `connection` by `data.connections`.
    fn new(id: &'static str, kind: &'static str, connection: &'static str, event: Vec<u8>) -> Sent {
        let mut v: Value = serde_json::from_slice(&event).unwrap();
        v["data"]["connections"] = json!([connection]);
        Sent {
            id,
            kind,
            connection,
            body: serde_json::to_vec(&v).unwrap(),
        }
    }
}

/// One `[connections.NAME]` table of a SCIM connection, with `settings` lines added.
fn connection_table(name: &str, base_url: &str, settings: &str) -> String {
    let rpm = if settings.contains("requests_per_minute") {
        String::new()
    } else {
        "requests_per_minute = 6000\n".into()
    };
    format!(
        "[connections.{name}]\napp = \"scim\"\nbase_url = \"{base_url}\"\ntoken_env = \"{SCIM_TOKEN_ENV}\"\ntimeout_secs = 5\n{rpm}{settings}\n"
    )
}

/// Runs a verb of the release binary to its end (off the async workers, so the
/// simulators keep answering): (exit code, stdout, stderr).
async fn cli(bin: &Path, config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = command_of(bin, config);
    cmd.args(args).env(SCIM_TOKEN_ENV, SCIM_TOKEN);
    run_to_end(cmd).await
}

/// The writes (not GET) a workflow's trail records, as `METHOD path`.
async fn trail_writes(store: &Store, id: &str) -> Vec<String> {
    trail(store, id)
        .await
        .iter()
        .filter(|r| r.kind == "api_call")
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
        .filter(|v| v["method"] != "GET")
        .map(|v| {
            format!(
                "{} {}",
                v["method"].as_str().unwrap(),
                v["path"].as_str().unwrap()
            )
        })
        .collect()
}

/// The `filter` of every lookup the provider received.
fn filters(calls: &[ScimCall]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.path == "/Users")
        .filter_map(|c| c.query_param("filter"))
        .collect()
}

/// How a workflow ended: its state, and its outcome or else its error code.
fn ended(w: &workflow::Model) -> (String, Option<String>) {
    (
        w.state.clone(),
        w.outcome.clone().or_else(|| w.error_code.clone()),
    )
}

/// `list` sorted, for comparing what side-by-side workflows wrote whatever their order.
fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_release_binary_offboards_from_six_scim_providers_side_by_side() {
    let bin = tokio::task::spawn_blocking(release_binary).await.unwrap();

    // The providers.
    let scim = provider(ScimOptions::default()).await;
    let outsider = scim.sim.add_user(ScimUser::new("linus@example.com"));
    let design = scim.sim.add_group(ScimGroup::new("Design", &[&outsider]));
    let pat = scim.sim.add_user(ScimUser::new(SHARED));
    let pat_admin = scim
        .sim
        .add_user(ScimUser::new("pat.admin").with_emails(&["pat.admin@example.com", SHARED]));

    let escaped = provider(ScimOptions::default()).await;
    let target = escaped
        .sim
        .add_user(ScimUser::new("odd@example.com").with_external_id(TRICKY));
    // Someone whose externalId is the tricky value's first part, in the target's group.
    let bystander = escaped
        .sim
        .add_user(ScimUser::new("bystander@example.com").with_external_id("E"));
    let contractors = escaped
        .sim
        .add_group(ScimGroup::new("Contractors", &[&target, &bystander]));

    let nopatch = provider(ScimOptions::default().without_patch()).await;
    let etag = provider(ScimOptions::default().with_etags()).await;
    etag.sim.race_next_writes(1);
    let revoked = provider(ScimOptions::default()).await;
    revoked.sim.revoke_token(SCIM_TOKEN);
    let limited = provider(ScimOptions::default()).await;
    limited.sim.set_rate_limit(Some(LIMITED_RPM));

    // One configuration with all six connections.
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "database_url = \"{url}\"\namqp_url = \"{AMQP_URL}\"\n[intake]\nallow_unsigned = true\n[amqp]\nexchange = \"{}\"\nqueue = \"{}\"\ndead_letter_exchange = \"{}\"\ndead_letter_queue = \"{}\"\n",
        names.exchange, names.queue, names.dead_letter_exchange, names.dead_letter_queue
    );
    for (name, p, settings) in [
        ("scim", &scim, "match = \"email\"".to_string()),
        (
            "scim_escaped",
            &escaped,
            "match = \"externalId\"\noffboard = \"delete\"".to_string(),
        ),
        ("scim_nopatch", &nopatch, String::new()),
        ("scim_etag", &etag, String::new()),
        ("scim_revoked", &revoked, String::new()),
        (
            "scim_limited",
            &limited,
            format!("requests_per_minute = {LIMITED_RPM}"),
        ),
    ] {
        text.push_str(&connection_table(name, &p.sim.base_url(), &settings));
    }
    let config = dir.path().join("offboard.toml");
    std::fs::write(&config, text).unwrap();

    // `check`: every connection passes but the revoked one, which says SCIM-100-A.
    let (code, out, err) = cli(&bin, &config, &["check", "--json"]).await;
    assert_eq!(code, 3, "{out}{err}");
    assert!(!format!("{out}{err}").contains(SCIM_TOKEN));
    let reports: Vec<Value> = serde_json::from_str(&out).unwrap();
    let mut verdicts: Vec<(String, Option<String>)> = reports
        .iter()
        .map(|r| {
            (
                r["connection"].as_str().unwrap().to_string(),
                r["error_code"].as_str().map(str::to_string),
            )
        })
        .collect();
    verdicts.sort();
    assert_eq!(
        verdicts,
        [
            ("scim".to_string(), None),
            ("scim_escaped".to_string(), None),
            ("scim_etag".to_string(), None),
            ("scim_limited".to_string(), None),
            ("scim_nopatch".to_string(), None),
            ("scim_revoked".to_string(), Some("SCIM-100-A".to_string())),
        ],
        "{out}"
    );

    // `serve`, its own process; once it consumes, only the workflows call the providers.
    let mut procs = Procs::new();
    let mut serve = command_of(&bin, &config);
    serve
        .arg("serve")
        .env(SCIM_TOKEN_ENV, SCIM_TOKEN)
        .env("RUST_LOG", "info");
    let log = dir.path().join("serve.log");
    let server = procs.spawn("serve (release)", serve, &log);
    procs.wait_logs(&[server], "consuming events", 60).await;
    for p in [&scim, &escaped, &nopatch, &etag, &revoked, &limited] {
        p.sim.clear_calls();
    }
    // The limited provider also refuses the first lookup once, with `Retry-After: 1`.
    limited.sim.inject(
        Fault::new(
            "/Users",
            FaultKind::Error {
                status: 429,
                retry_after_secs: Some(1),
            },
        )
        .method("GET"),
    );

    let sent = [
        Sent::new(
            "ev-rel-off",
            OFFBOARDING,
            "scim",
            scim_event("ev-rel-off", OFFBOARDING, LEAVER, None, Some(COLLEAGUE)),
        ),
        Sent::new(
            "ev-rel-reclaim",
            RECLAIM,
            "scim",
            scim_event("ev-rel-reclaim", RECLAIM, COLLEAGUE, None, None),
        ),
        Sent::new(
            "ev-rel-absent",
            OFFBOARDING,
            "scim",
            scim_event(
                "ev-rel-absent",
                OFFBOARDING,
                "nobody@example.com",
                None,
                None,
            ),
        ),
        Sent::new(
            "ev-rel-two",
            OFFBOARDING,
            "scim",
            scim_event("ev-rel-two", OFFBOARDING, SHARED, None, None),
        ),
        Sent::new(
            "ev-rel-escaped",
            OFFBOARDING,
            "scim_escaped",
            scim_event(
                "ev-rel-escaped",
                OFFBOARDING,
                "odd@example.com",
                Some(TRICKY),
                None,
            ),
        ),
        Sent::new(
            "ev-rel-put",
            OFFBOARDING,
            "scim_nopatch",
            scim_event("ev-rel-put", OFFBOARDING, LEAVER, None, None),
        ),
        Sent::new(
            "ev-rel-etag",
            OFFBOARDING,
            "scim_etag",
            scim_event("ev-rel-etag", OFFBOARDING, LEAVER, None, None),
        ),
        Sent::new(
            "ev-rel-401",
            OFFBOARDING,
            "scim_revoked",
            scim_event("ev-rel-401", OFFBOARDING, LEAVER, None, None),
        ),
        Sent::new(
            "ev-rel-limited",
            OFFBOARDING,
            "scim_limited",
            scim_event("ev-rel-limited", OFFBOARDING, LEAVER, None, None),
        ),
    ];
    let messages: Vec<(String, Vec<u8>)> = sent
        .iter()
        .map(|s| (s.kind.to_string(), s.body.clone()))
        .collect();
    let store = Store::open(&url).await.unwrap();
    let published = Instant::now();
    publish_many(&names, &messages).await;
    all_ended(&store, sent.len(), 120).await;
    eprintln!(
        "{} workflows ended in {:?}",
        sent.len(),
        published.elapsed()
    );
    let status = procs.terminate(server, 30).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "serve exits 0 on SIGTERM:\n{}",
        procs.all[server].log_text()
    );

    // One workflow per event, on the connection it named.
    let mut wf = std::collections::HashMap::<&str, workflow::Model>::new();
    for s in &sent {
        let mut rows = store.by_event(s.id).await.unwrap();
        assert_eq!(rows.len(), 1, "{}: {rows:?}", s.id);
        let row = rows.remove(0);
        assert_eq!(row.connection, s.connection, "{}", s.id);
        wf.insert(s.id, row);
    }
    let done = |outcome: &str| ("completed".to_string(), Some(outcome.to_string()));
    let failed = |code: &str| ("failed".to_string(), Some(code.to_string()));

    // `scim`: the leaver is out of every group and inactive, the colleague keeps hers.
    let off = &wf["ev-rel-off"];
    assert_eq!(ended(off), done("deactivated"), "{:?}", off.error_message);
    assert_eq!(scim.sim.user_active(&scim.leaver), Some(false));
    assert!(scim.sim.user_groups(&scim.leaver).is_empty());
    assert_eq!(
        trail_writes(&store, &off.id).await,
        [
            format!("PATCH /Groups/{}", scim.groups[0]),
            format!("PATCH /Groups/{}", scim.groups[1]),
            format!("PATCH /Users/{}", scim.leaver),
        ]
    );
    let reclaim = &wf["ev-rel-reclaim"];
    assert_eq!(ended(reclaim), done("downgraded"));
    assert_eq!(scim.sim.user_active(&scim.colleague), Some(false));
    for g in &scim.groups {
        assert_eq!(
            scim.sim.group_members(g),
            std::slice::from_ref(&scim.colleague),
            "the reclaimed colleague stays in {g}, the leaver does not"
        );
    }
    assert_eq!(
        trail_writes(&store, &reclaim.id).await,
        [format!("PATCH /Users/{}", scim.colleague)]
    );
    let absent = &wf["ev-rel-absent"];
    assert_eq!(ended(absent), done("absent"));
    assert!(trail_writes(&store, &absent.id).await.is_empty());
    let two = &wf["ev-rel-two"];
    assert_eq!(ended(two), failed("SCIM-114-B"));
    assert!(trail_writes(&store, &two.id).await.is_empty());
    for id in [&pat, &pat_admin, &outsider] {
        assert_eq!(scim.sim.user_active(id), Some(true), "{id} untouched");
    }
    assert_eq!(
        scim.sim.group_members(&design),
        std::slice::from_ref(&outsider)
    );
    // What the provider received: the four lookups, and only the writes above.
    assert_eq!(
        sorted(filters(&scim.sim.calls())),
        sorted(
            [LEAVER, COLLEAGUE, "nobody@example.com", SHARED]
                .iter()
                .map(|e| format!("emails[value eq \"{e}\"]"))
                .collect()
        )
    );
    assert_eq!(
        sorted(writes(&scim.sim.calls())),
        sorted(vec![
            format!("PATCH /Groups/{}", scim.groups[0]),
            format!("PATCH /Groups/{}", scim.groups[1]),
            format!("PATCH /Users/{}", scim.leaver),
            format!("PATCH /Users/{}", scim.colleague),
        ])
    );

    // `scim_escaped`: the value reached the provider escaped; only its owner was touched.
    let esc = &wf["ev-rel-escaped"];
    assert_eq!(ended(esc), done("removed"), "{:?}", esc.error_message);
    assert_eq!(
        filters(&escaped.sim.calls()),
        [r#"externalId eq "E\"9\\ or userName pr or \"""#]
    );
    assert_eq!(
        writes(&escaped.sim.calls()),
        [
            format!("PATCH /Groups/{contractors}"),
            format!("DELETE /Users/{target}"),
        ]
    );
    assert_eq!(escaped.sim.user(&target), None);
    assert_eq!(
        escaped.sim.group_members(&contractors),
        std::slice::from_ref(&bystander)
    );
    for other in [&escaped.leaver, &escaped.colleague, &bystander] {
        assert_eq!(
            escaped.sim.user_active(other),
            Some(true),
            "{other} untouched"
        );
    }
    assert_eq!(escaped.sim.user_groups(&escaped.leaver).len(), 2);

    // `scim_nopatch`: PUTs of what was just read.
    let put = &wf["ev-rel-put"];
    assert_eq!(ended(put), done("deactivated"), "{:?}", put.error_message);
    assert_deactivated_by_puts(&nopatch);

    // `scim_etag`: every write carried If-Match; the one that lost its race (412) was sent
    // again after a fresh read.
    let tagged = &wf["ev-rel-etag"];
    assert_eq!(
        ended(tagged),
        done("deactivated"),
        "{:?}",
        tagged.error_message
    );
    assert_if_match_and_one_race_lost(&etag);

    // `scim_revoked`: SCIM-100-B, nothing accepted, the token in no message or log.
    let refused = &wf["ev-rel-401"];
    assert_eq!(ended(refused), failed("SCIM-100-B"));
    let message = refused.error_message.clone().unwrap_or_default();
    assert!(!message.contains(SCIM_TOKEN), "{message}");
    let calls = revoked.sim.calls();
    assert!(
        !calls.is_empty() && calls.iter().all(|c| c.status == 401),
        "{calls:?}"
    );
    assert_eq!(revoked.sim.user_active(&revoked.leaver), Some(true));
    assert_eq!(revoked.sim.user_groups(&revoked.leaver).len(), 2);

    // `scim_limited`: paced at its budget (calls 500 ms apart at 120 a minute, the 429's
    // second waited out), so the provider refused nothing but the injected 429.
    let paced = &wf["ev-rel-limited"];
    assert_eq!(
        ended(paced),
        done("deactivated"),
        "{:?}",
        paced.error_message
    );
    let calls = limited.sim.calls();
    assert_eq!(calls.iter().filter(|c| c.status == 429).count(), 1);
    let interval = Duration::from_secs(60) / LIMITED_RPM;
    let floor = interval * (calls.len() as u32 - 2) + Duration::from_secs(1);
    let took = (paced.finished_at.unwrap() - paced.created_at)
        .to_std()
        .unwrap();
    assert!(took >= floor, "{} calls in {took:?}", calls.len());
    assert_eq!(limited.sim.user_active(&limited.leaver), Some(false));
    assert!(limited.sim.user_groups(&limited.leaver).is_empty());

    // Read-only steps wrote nothing; every trail verifies with the audit key.
    assert!(writes_by_read_only_steps(&store).await.is_empty());
    let (code, out, err) = cli(&bin, &config, &["verify", "--all"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let summary = format!("{} intact, 0 mismatched; {} keyed", sent.len(), sent.len());
    assert!(out.contains(&summary), "{out}");
    // The leaver's trail holds the account before, and says nothing was transferred.
    let (code, out, err) = cli(&bin, &config, &["history", &off.id, "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("nothing is transferred to grace@example.com in this app"),
        "{out}"
    );
    assert!(out.contains("entitlements_before") && out.contains("Paid seats"));
    let (code, out, _) = cli(&bin, &config, &["show", &off.id, "--json"]).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (shown["app"].as_str(), shown["outcome"].as_str()),
        (Some("scim"), Some("deactivated"))
    );

    // `serve` logged the revoked token's check at start, and never the token.
    let logged = procs.all[server].log_text();
    assert!(logged.contains("SCIM-100-A"), "{logged}");
    assert!(!logged.contains(SCIM_TOKEN));

    delete_broker_names(&names).await;
    drop_database(&url).await;
}
