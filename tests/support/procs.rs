//! Helpers for tests that run the real binary side by side with the test: configuration
//! files, `serve` processes that are killed when the test ends (pass or fail), CLI calls,
//! a TCP proxy that can cut PostgreSQL off, a watcher that counts outgoing events (with
//! acks), publishing many events on one channel, and checks on audit trails.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use offboard::config::AmqpNames;
use offboard::store::entities::{audit, workflow};
use offboard::store::Store;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{channel, watch_exchange, AMQP_URL, AUDIT_KEY, TOKEN};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_offboard");

/// What goes into an `offboard.toml` for one test.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    /// Database URL.
    pub database_url: String,
    /// Broker URL.
    pub amqp_url: String,
    /// Broker names.
    pub names: AmqpNames,
    /// Smartsheet simulator URL.
    pub smartsheet_url: String,
    /// `lease_secs`.
    pub lease_secs: u64,
    /// `max_concurrent_workflows`.
    pub max_concurrent_workflows: usize,
    /// The connection's `requests_per_minute`.
    pub requests_per_minute: u32,
    /// The lines of the `[intake]` table. `allow_unsigned = true` by default: `serve` on
    /// PostgreSQL refuses to start with neither that nor a signing key.
    pub intake: String,
}

impl ConfigFile {
    /// A configuration with a 2 s lease, 4 workflows at once and the budget out of the way.
    pub fn new(database_url: &str, names: &AmqpNames, smartsheet_url: &str) -> ConfigFile {
        ConfigFile {
            database_url: database_url.to_string(),
            amqp_url: AMQP_URL.to_string(),
            names: names.clone(),
            smartsheet_url: smartsheet_url.to_string(),
            lease_secs: 2,
            max_concurrent_workflows: 4,
            requests_per_minute: 600_000,
            intake: "allow_unsigned = true\n".into(),
        }
    }

    /// Writes the file; returns its path.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(
            path,
            format!(
                r#"database_url = "{db}"
amqp_url = "{amqp}"
lease_secs = {lease}
max_concurrent_workflows = {max}
[intake]
{intake}[amqp]
exchange = "{ex}"
queue = "{q}"
dead_letter_exchange = "{dlx}"
dead_letter_queue = "{dq}"
prefetch = {prefetch}
[connections.smartsheet]
app = "smartsheet"
base_url = "{url}"
token_env = "OFFBOARD_TEST_SMARTSHEET_TOKEN"
requests_per_minute = {rpm}
timeout_secs = 10
"#,
                db = self.database_url,
                amqp = self.amqp_url,
                lease = self.lease_secs,
                max = self.max_concurrent_workflows,
                ex = self.names.exchange,
                q = self.names.queue,
                dlx = self.names.dead_letter_exchange,
                dq = self.names.dead_letter_queue,
                prefetch = self.names.prefetch,
                url = self.smartsheet_url,
                rpm = self.requests_per_minute,
                intake = self.intake,
            ),
        )
        .unwrap();
        path.to_path_buf()
    }
}

/// A command for the binary with the test token, no stray overrides from the environment.
pub fn command(config: &Path) -> Command {
    command_of(Path::new(BIN), config)
}

/// [`command`] for another build of the binary (e.g. [`super::release_binary`]).
pub fn command_of(bin: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(config)
        .env("OFFBOARD_TEST_SMARTSHEET_TOKEN", TOKEN)
        .env("OFFBOARD_AUDIT_KEY", AUDIT_KEY)
        .env_remove("OFFBOARD_DATABASE_URL")
        .env_remove("OFFBOARD_AMQP_URL")
        .env_remove("OFFBOARD_CONFIG")
        .env_remove("OFFBOARD_LOG_FORMAT")
        .env("NO_COLOR", "1");
    cmd
}

/// Runs a CLI verb to the end: (exit code, stdout, stderr).
pub fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    super::outcome(command(config).args(args).output().unwrap())
}

/// Sends a signal (`STOP`, `CONT`, `TERM`, `KILL`) to a process with `kill(1)`.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// One child process the test started, with the file its stderr goes to.
pub struct Proc {
    /// A name for messages.
    pub label: String,
    /// The child.
    pub child: Child,
    /// Its stderr (the log).
    pub log: PathBuf,
    /// Set once the test killed it on purpose.
    pub killed: bool,
}

impl Proc {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

/// Every child process the test started; all are killed (SIGCONT first, in case one is
/// stopped, then SIGKILL) when this is dropped, so a failed assertion leaves none behind.
#[derive(Default)]
pub struct Procs {
    /// The children, in start order (restarted ones are new entries).
    pub all: Vec<Proc>,
}

impl Procs {
    /// No children yet.
    pub fn new() -> Procs {
        Procs::default()
    }

    /// Starts `offboard serve --config CONFIG` with its stderr in `log`; returns its index.
    pub fn serve(&mut self, label: &str, config: &Path, log: &Path) -> usize {
        let child = command(config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        self.all.push(Proc {
            label: label.to_string(),
            child,
            log: log.to_path_buf(),
            killed: false,
        });
        self.all.len() - 1
    }

    /// Starts any command with its stderr in `log`; returns its index.
    pub fn spawn(&mut self, label: &str, mut cmd: Command, log: &Path) -> usize {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        self.all.push(Proc {
            label: label.to_string(),
            child,
            log: log.to_path_buf(),
            killed: false,
        });
        self.all.len() - 1
    }

    /// SIGKILLs one child and reaps it.
    pub fn kill(&mut self, i: usize) {
        let p = &mut self.all[i];
        p.killed = true;
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    /// SIGTERMs one child and waits (at most `secs`) for it to exit; returns its status
    /// (`None` if it had to be killed).
    pub async fn terminate(&mut self, i: usize, secs: u64) -> Option<ExitStatus> {
        let p = &mut self.all[i];
        if let Some(status) = p.exited() {
            return Some(status);
        }
        signal(p.pid(), "CONT");
        signal(p.pid(), "TERM");
        let status = self.wait_exit(i, secs).await;
        if status.is_none() {
            self.kill(i);
        }
        status
    }

    /// Waits (at most `secs`, polling) for one child to exit.
    pub async fn wait_exit(&mut self, i: usize, secs: u64) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.all[i].exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every listed child's log contains `needle`; panics (with the log) if
    /// one exits first or the time runs out.
    pub async fn wait_logs(&mut self, which: &[usize], needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let mut all = true;
            for &i in which {
                let p = &mut self.all[i];
                if let Some(status) = p.exited() {
                    panic!(
                        "{} exited ({status}) before logging {needle:?}:\n{}",
                        p.label,
                        p.log_text()
                    );
                }
                all &= p.log_text().contains(needle);
            }
            if all {
                return;
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = which
                    .iter()
                    .map(|&i| format!("--- {}:\n{}", self.all[i].label, self.all[i].log_text()))
                    .collect();
                panic!(
                    "timed out waiting for {needle:?} in every log:\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.all {
            if p.child.try_wait().ok().flatten().is_none() {
                let _ = Command::new("kill")
                    .args(["-CONT", &p.child.id().to_string()])
                    .status();
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A TCP proxy that can cut a server off
// ---------------------------------------------------------------------------

struct ProxyState {
    down_until: Mutex<Option<Instant>>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl ProxyState {
    fn is_down(&self) -> bool {
        self.down_until
            .lock()
            .unwrap()
            .is_some_and(|until| Instant::now() < until)
    }
}

/// Forwards connections from a port on 127.0.0.1 to `upstream`, until told to cut.
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let state = Arc::new(ProxyState {
            down_until: Mutex::new(None),
            cut,
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if shared.is_down() {
                    drop(inbound); // refused: closed at once
                    continue;
                }
                let mut cut = shared.cut.subscribe();
                cut.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        TcpProxy { addr, state, task }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// For `duration` from now, every live connection is closed and new ones are refused.
    pub fn cut(&self, duration: Duration) {
        *self.state.down_until.lock().unwrap() = Some(Instant::now() + duration);
        self.state.cut.send_modify(|n| *n += 1);
    }

    /// Whether the proxy is refusing connections right now.
    pub fn is_down(&self) -> bool {
        self.state.is_down()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.cut.send_modify(|n| *n += 1);
    }
}

/// A PostgreSQL URL for database `name` through `proxy`.
pub fn pg_url_via(proxy: &TcpProxy, database_url: &str) -> String {
    let name = database_url.rsplit('/').next().unwrap();
    format!("postgres://postgres@{}/{name}", proxy.addr())
}

// ---------------------------------------------------------------------------
// AMQP
// ---------------------------------------------------------------------------

/// Declares the topology and publishes every (routing key, body) on one channel with
/// confirms.
pub async fn publish_many(names: &AmqpNames, messages: &[(String, Vec<u8>)]) {
    let (conn, ch) = offboard::intake::open(AMQP_URL).await.unwrap();
    offboard::intake::declare(&ch, names).await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (key, body) in messages {
        offboard::intake::publish(&ch, &names.exchange, key, body, None)
            .await
            .unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
}

/// Counts the events published on the test exchange with a routing key, per
/// `data.workflow_id`, consuming with acks.
pub struct Watch {
    queue: String,
    counts: Arc<Mutex<HashMap<String, Vec<String>>>>,
    sentinels: Arc<Mutex<HashSet<String>>>,
    task: JoinHandle<()>,
}

impl Watch {
    /// Binds a queue to `key` (e.g. `workflow.*`) and starts counting.
    pub async fn start(names: &AmqpNames, key: &str) -> Watch {
        let (ch, queue) = watch_exchange(names, key).await;
        let mut consumer = ch
            .basic_consume(
                queue.as_str().into(),
                format!("watch-{}", super::unique()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let counts: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
        let sentinels: Arc<Mutex<HashSet<String>>> = Arc::default();
        let (c, s) = (counts.clone(), sentinels.clone());
        let task = tokio::spawn(async move {
            let _ch = ch;
            while let Some(Ok(d)) = consumer.next().await {
                let v: Value = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
                if let Some(id) = v.get("sentinel").and_then(Value::as_str) {
                    s.lock().unwrap().insert(id.to_string());
                } else {
                    let id = v["data"]["workflow_id"]
                        .as_str()
                        .unwrap_or("(no workflow_id)")
                        .to_string();
                    c.lock()
                        .unwrap()
                        .entry(id)
                        .or_default()
                        .push(d.routing_key.to_string());
                }
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
        });
        Watch {
            queue,
            counts,
            sentinels,
            task,
        }
    }

    /// Routing keys received so far, per workflow id.
    pub fn counts(&self) -> HashMap<String, Vec<String>> {
        self.counts.lock().unwrap().clone()
    }

    /// Waits until everything already in the queue has been counted: puts a marker at its
    /// end and waits for it (the queue is FIFO with one consumer).
    pub async fn flush(&self, secs: u64) {
        let marker = super::unique();
        let ch = channel().await;
        ch.basic_publish(
            "".into(),
            self.queue.as_str().into(),
            BasicPublishOptions::default(),
            serde_json::json!({ "sentinel": marker })
                .to_string()
                .as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
        super::eventually(secs, "the watch queue to be drained", || async {
            self.sentinels
                .lock()
                .unwrap()
                .contains(&marker)
                .then_some(())
        })
        .await;
        let _ = ch.close(200, "done".into()).await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Takes every message now in `queue` (with acks) and returns (x-error-code, body) of each.
pub async fn drain_dead_letters(queue: &str) -> Vec<(Option<String>, Vec<u8>)> {
    let ch = channel().await;
    let mut got = Vec::new();
    for _ in 0..10_000 {
        let Some(msg) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
        else {
            break;
        };
        let code = msg
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-error-code").cloned())
            .map(|v| match v {
                AMQPValue::LongString(s) => s.to_string(),
                other => format!("{other:?}"),
            });
        got.push((code, msg.delivery.data.clone()));
        msg.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = ch.close(200, "done".into()).await;
    got
}

/// How many workflows exist and how many of them have not ended; a cheap query, for
/// polling (listing every row 20 times a second would slow the engine under test).
pub async fn progress(store: &Store) -> (u64, u64) {
    let db = store.connection();
    let total = workflow::Entity::find().count(db).await.unwrap();
    let open = workflow::Entity::find()
        .filter(workflow::Column::FinishedAt.is_null())
        .count(db)
        .await
        .unwrap();
    (total, open)
}

/// Waits (at most `secs`) until at least `count` workflows exist and all have ended.
pub async fn all_ended(store: &Store, count: usize, secs: u64) {
    super::eventually(secs, &format!("{count} workflows to end"), || async {
        let (total, open) = progress(store).await;
        (total >= count as u64 && open == 0).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------
// Trails
// ---------------------------------------------------------------------------

/// Kinds that may follow the `completed` record (notes that change nothing).
pub const NOTES: [&str; 2] = ["duplicate_received", "cancel_refused"];

/// Everything wrong with one trail as seen by a single, fenced driver: `step_started`
/// attempts count up by one per step with no repeat, `api_call`s of an attempt come
/// between its `step_started` and its result, a result belongs to the open attempt,
/// exactly one `completed`, and nothing but notes after it.
pub fn trail_problems(trail: &[audit::Model]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut last_started: BTreeMap<i64, u64> = BTreeMap::new();
    let mut open: BTreeMap<i64, u64> = BTreeMap::new();
    let mut seen: HashSet<(i64, u64)> = HashSet::new();
    let mut completed = 0;
    for r in trail {
        let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        let step = body["step"].as_i64().unwrap_or(-1);
        let attempt = body["attempt"].as_u64().unwrap_or(0);
        let at = format!(
            "record {} ({} step {step} attempt {attempt})",
            r.seq, r.kind
        );
        if completed > 0 && !NOTES.contains(&r.kind.as_str()) {
            problems.push(format!("{at} after `completed`"));
        }
        match r.kind.as_str() {
            "step_started" => {
                if !seen.insert((step, attempt)) {
                    problems.push(format!("{at}: this attempt was already started"));
                }
                let prev = last_started.get(&step).copied().unwrap_or(0);
                if attempt != prev + 1 {
                    problems.push(format!("{at}: previous attempt was {prev}"));
                }
                last_started.insert(step, attempt);
                open.insert(step, attempt);
            }
            "api_call" if open.get(&step) != Some(&attempt) => {
                problems.push(format!(
                    "{at}: not inside that attempt (open: {:?})",
                    open.get(&step)
                ));
            }
            "step_succeeded" | "step_failed" => {
                if open.get(&step) != Some(&attempt) {
                    problems.push(format!(
                        "{at}: result for an attempt that is not open (open: {:?})",
                        open.get(&step)
                    ));
                }
                open.remove(&step);
            }
            "completed" => completed += 1,
            _ => {}
        }
    }
    if completed != 1 {
        problems.insert(0, format!("{completed} `completed` records"));
    }
    problems.truncate(4);
    problems
}

/// Folds a workflow's trail through the state machine with the definition it started
/// with, as `offboard replay` does (without the chain check, which the binary does);
/// returns what is wrong, if anything.
pub async fn fold_problem(store: &Store, id: &str) -> Option<String> {
    let loaded = store.load(id).await.unwrap()?;
    let def = offboard::runtime::definitions::stored(&loaded.definition_source).unwrap();
    let mut records = Vec::new();
    for r in store.trail(id).await.unwrap() {
        match serde_json::from_str::<offboard::domain::machine::Record>(&r.body) {
            Ok(record) => records.push((r.at, record)),
            Err(e) => return Some(format!("record {}: unreadable: {e}", r.seq)),
        }
    }
    match offboard::domain::machine::fold(&def, &records) {
        Err((i, v)) => Some(format!("record {}: not a legal transition: {v}", i + 1)),
        Ok(rebuilt) if rebuilt != loaded.state => {
            Some("the rebuilt state differs from the stored one".into())
        }
        Ok(_) => None,
    }
}

/// Runs `offboard replay ID` for every id, `parallel` at a time; returns the failures
/// (id, exit code, output).
pub async fn replay_all(
    config: &Path,
    ids: &[String],
    parallel: usize,
) -> Vec<(String, i32, String)> {
    let mut failures = Vec::new();
    for chunk in ids.chunks(parallel.max(1)) {
        let mut running = Vec::new();
        for id in chunk {
            let mut cmd = tokio::process::Command::new(BIN);
            cmd.args(["replay", id])
                .arg("--config")
                .arg(config)
                .env("OFFBOARD_AUDIT_KEY", AUDIT_KEY)
                .env_remove("OFFBOARD_DATABASE_URL")
                .env_remove("OFFBOARD_AMQP_URL")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            running.push((id.clone(), cmd.spawn().unwrap()));
        }
        for (id, child) in running {
            let out = child.wait_with_output().await.unwrap();
            let code = out.status.code().unwrap_or(-1);
            if code != 0 {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                failures.push((id, code, tail.join(" | ")));
            }
        }
    }
    failures
}
