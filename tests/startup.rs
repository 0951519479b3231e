//! Starting up: three `serve` processes on one brand-new PostgreSQL database all come up
//! (migrations run once, whoever starts first), and a broker that cannot be talked to
//! ends `submit` and `serve` with exit 1 within the contract's 15 seconds.

mod support;

use std::time::{Duration, Instant};

use support::procs::{command, ConfigFile, Procs};
use support::*;

/// The contract's bound for "a database or broker that cannot be reached exits 1".
const UNREACHABLE_BOUND: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_serve_processes_on_an_empty_database_all_come_up() {
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let names = amqp_names();
    let dir = tempfile::tempdir().unwrap();
    let config =
        ConfigFile::new(&url, &names, &org.sim.base_url()).write(&dir.path().join("offboard.toml"));
    let mut procs = Procs::new();
    // Started together, nothing migrated yet: they race for the schema.
    let workers: Vec<usize> = (0..3)
        .map(|i| {
            procs.serve(
                &format!("serve-{i}"),
                &config,
                &dir.path().join(format!("serve-{i}.log")),
            )
        })
        .collect();
    procs.wait_logs(&workers, "consuming events", 60).await;
    for &i in &workers {
        assert!(
            procs.all[i].exited().is_none(),
            "{} exited:\n{}",
            procs.all[i].label,
            procs.all[i].log_text()
        );
    }

    // And they work: an event goes through.
    publish(
        &names,
        "license.reclaim.requested",
        &event("ev-up", "license.reclaim.requested", RECLAIM, None),
    )
    .await;
    let store = offboard::store::Store::open(&url).await.unwrap();
    let wf = finished(&store, "ev-up", 1, 60).await.remove(0);
    assert_eq!(wf.state, "completed");
    for &i in &workers {
        assert!(
            procs.all[i].exited().is_none(),
            "{} exited",
            procs.all[i].label
        );
    }
}

/// Runs a command and waits for it, at most `limit` + 5 s; returns its exit code (None if
/// it was still running and had to be killed), the time it took and its stderr.
async fn run_bounded(
    procs: &mut Procs,
    cmd: std::process::Command,
    log: &std::path::Path,
    limit: Duration,
) -> (Option<i32>, Duration, String) {
    let started = Instant::now();
    let i = procs.spawn("cli", cmd, log);
    let status = procs.wait_exit(i, limit.as_secs() + 5).await;
    let took = started.elapsed();
    if status.is_none() {
        procs.kill(i);
    }
    (status.and_then(|s| s.code()), took, procs.all[i].log_text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_to_a_port_that_never_speaks_amqp_exits_1_within_15_s() {
    // Accepts TCP connections (the kernel completes the handshake) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let config = ConfigFile::new(&url, &amqp_names(), "http://127.0.0.1:9/2.0")
        .write(&dir.path().join("offboard.toml"));
    let mut cmd = command(&config);
    cmd.args(["submit", "--email", "a@example.com"]).env(
        "OFFBOARD_AMQP_URL",
        format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
    );
    let mut procs = Procs::new();
    let (code, took, stderr) = run_bounded(
        &mut procs,
        cmd,
        &dir.path().join("submit.log"),
        UNREACHABLE_BOUND,
    )
    .await;
    assert!(
        code.is_some() && took <= UNREACHABLE_BOUND,
        "submit to a silent port did not exit within {UNREACHABLE_BOUND:?} (took {took:?}, exit {code:?}); stderr: {stderr}"
    );
    assert_eq!(code, Some(1), "stderr: {stderr}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_the_broker_unreachable_exits_1_within_15_s_with_one_line() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed); // nothing listens there now
    let org = org().await;
    let (url, _) = fresh_database(Db::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let mut file = ConfigFile::new(&url, &amqp_names(), &org.sim.base_url());
    file.amqp_url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let config = file.write(&dir.path().join("offboard.toml"));
    let mut cmd = command(&config);
    cmd.arg("serve").env("RUST_LOG", "info");
    let mut procs = Procs::new();
    let (code, took, stderr) = run_bounded(
        &mut procs,
        cmd,
        &dir.path().join("serve.log"),
        UNREACHABLE_BOUND,
    )
    .await;
    assert!(
        code.is_some() && took <= UNREACHABLE_BOUND,
        "serve with no broker did not exit within {UNREACHABLE_BOUND:?} (took {took:?}, exit {code:?}); stderr:\n{stderr}"
    );
    assert_eq!(code, Some(1), "stderr:\n{stderr}");
    // The last line says what is wrong, in one line: the broker could not be reached.
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_lowercase();
    assert!(
        ["rabbitmq", "amqp", "broker"]
            .iter()
            .any(|w| last.contains(w)),
        "the last line of stderr does not name the broker: {last:?}\n{stderr}"
    );
}
