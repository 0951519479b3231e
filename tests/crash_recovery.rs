//! The real binary, killed with SIGKILL in the middle of a step, resumes on restart and
//! finishes without repeating what it had done; its token never reaches logs or the
//! database.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use offboard_simulators::smartsheet::{Fault, FaultKind};
use serde_json::Value;
use support::*;

fn start(config: &std::path::Path, log: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_offboard"))
        .env("OFFBOARD_AUDIT_KEY", support::AUDIT_KEY)
        .args(["serve", "--config"])
        .arg(config)
        .env("OFFBOARD_TEST_SMARTSHEET_TOKEN", TOKEN)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn cli(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_offboard"))
        .env("OFFBOARD_AUDIT_KEY", support::AUDIT_KEY)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    outcome(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_step_resumes_without_harmful_repeats_and_leaks_no_token() {
    let org = org().await;
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("offboard.db");
    let names = amqp_names();
    let config_path = dir.path().join("offboard.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"database_url = "sqlite://{db}?mode=rwc"
amqp_url = "{AMQP_URL}"
lease_secs = 2
[amqp]
exchange = "{ex}"
queue = "{q}"
dead_letter_exchange = "{dlx}"
dead_letter_queue = "{dq}"
[connections.smartsheet]
app = "smartsheet"
base_url = "{url}"
token_env = "OFFBOARD_TEST_SMARTSHEET_TOKEN"
requests_per_minute = 6000
"#,
            db = db_path.display(),
            ex = names.exchange,
            q = names.queue,
            dlx = names.dead_letter_exchange,
            dq = names.dead_letter_queue,
            url = org.sim.base_url(),
        ),
    )
    .unwrap();
    // The removal hangs long enough to kill the process while it waits for the answer.
    org.sim
        .inject(Fault::new("/users", FaultKind::Delay(Duration::from_secs(4))).method("DELETE"));

    let first_log = dir.path().join("first.log");
    let mut first = start(&config_path, &first_log);
    publish(
        &names,
        "offboarding.requested",
        &event("ev-kill", "offboarding.requested", LEAVER, Some(RECIPIENT)),
    )
    .await;
    eventually(30, "the DELETE to reach Smartsheet", || async {
        org.sim
            .calls()
            .iter()
            .any(|c| c.method == "DELETE")
            .then_some(())
    })
    .await;
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    let second_log = dir.path().join("second.log");
    let mut second = start(&config_path, &second_log);
    let store = offboard::store::Store::open(&format!("sqlite://{}?mode=rwc", db_path.display()))
        .await
        .unwrap();
    let wf = finished(&store, "ev-kill", 1, 60).await.remove(0);
    // SIGTERM: a graceful stop, exit code 0.
    let term = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = second.wait().unwrap();
    assert_eq!(status.code(), Some(0), "serve exits 0 on SIGTERM");

    assert_eq!(
        (wf.state.as_str(), wf.outcome.as_deref()),
        ("completed", Some("removed"))
    );
    assert!(org.sim.user(org.leaver).is_none());
    // Steps recorded before the kill were not run again: two group writes, one role write.
    let calls = org.sim.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.method == "PUT" && c.path.starts_with("/groups/"))
            .count(),
        2
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.method == "PUT" && c.path.starts_with("/users/"))
            .count(),
        1
    );
    let state = store.load(&wf.id).await.unwrap().unwrap().state;
    let remove = state
        .steps
        .iter()
        .find(|s| s.name == "remove-user")
        .unwrap();
    assert_eq!(remove.attempts, 2, "the interrupted removal ran once more");
    assert!(state
        .steps
        .iter()
        .filter(|s| s.name != "remove-user")
        .all(|s| s.attempts == 1));

    // The trail replays and `show --json` has the contract's fields.
    let (code, out, _) = cli(&config_path, &["replay", &wf.id]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = cli(&config_path, &["show", &wf.id, "--json"]);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    for key in [
        "id",
        "event_id",
        "connection",
        "app",
        "type",
        "person_email",
        "state",
        "outcome",
        "steps",
        "created_at",
        "updated_at",
    ] {
        assert!(shown.get(key).is_some(), "show --json lacks {key}");
    }
    assert_eq!(shown["steps"][5]["attempts"], 2);
    assert_eq!(cli(&config_path, &["show", "no-such-id"]).0, 4);

    // The token is nowhere: not in either log, not in the database files (WAL included).
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 4, "{files:?}");
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(TOKEN),
            "{} contains the token",
            file.display()
        );
    }
    let first_text = std::fs::read_to_string(&first_log).unwrap();
    let second_text = std::fs::read_to_string(&second_log).unwrap();
    assert!(second_text.contains("stopping: letting in-flight steps finish"));
    assert!(
        first_text.contains("step started"),
        "the log is not empty, so the check means something"
    );
}
