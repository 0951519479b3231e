//! The bench's separate-process mode: offboard measured as users run it. The release
//! binary's `offboard serve` runs as a child process on a generated configuration and a
//! fresh PostgreSQL database; the Smartsheet simulator runs in a process of its own (this
//! bench binary started again in the simulator's role, serving through
//! `offboard_simulators::standalone`, the code of the `simulate` binary); licence reclaims
//! are published from the bench process through RabbitMQ, and each `workflow.completed`
//! is taken from the exchange the outbox publishes to.
//!
//! Printed per run: workflows per second, and per workflow the work each party did — CPU
//! time of `serve` (`/proc/<pid>/stat`), of the bench database's PostgreSQL backends
//! (sampled from `pg_stat_activity` every 100 ms, so backends that come and go count),
//! and of the broker (its `beam.smp`, shared with whatever else uses it), transactions
//! committed (`pg_stat_database.xact_commit`), WAL bytes and WAL syncs (`pg_stat_wal`, the
//! whole cluster's). Then, on the same `serve`, latency: one event at a time, publish →
//! `workflow.completed`, p50 and p99. Each run checks that nothing was driven twice: the
//! simulator received exactly one write per person, and each event completed once.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;
use offboard_simulators::standalone::{self, CallSummary};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use crate::support::procs::{command, ConfigFile, Procs};
use crate::support::{self, PG_ADMIN_URL};
use crate::{publish_all, reclaim, Completions, STEPS};

/// The environment variable that starts this binary as the simulator instead of the bench
/// (its value: the number of people to seed).
pub const SIMULATOR_ROLE: &str = "OFFBOARD_BENCH_SIMULATOR_USERS";

/// The environment variable naming another `offboard` binary to run as `serve` (a build
/// to compare with; by default the release build of this tree).
pub const SERVE_BINARY: &str = "OFFBOARD_BENCH_SERVE";

/// The bench token the simulator's admin holds.
const TOKEN: &str = "bench-token";

/// Runs this process as the Smartsheet simulator when [`SIMULATOR_ROLE`] says so; returns
/// false otherwise.
pub async fn run_simulator_role() -> bool {
    let Some(users) = std::env::var(SIMULATOR_ROLE)
        .ok()
        .and_then(|u| u.parse().ok())
    else {
        return false;
    };
    standalone::serve(&standalone::Seed {
        app: standalone::App::Smartsheet,
        port: 0,
        users,
        token: TOKEN.into(),
    })
    .await
    .expect("the simulator's standard streams");
    true
}

/// The simulator's process, spoken to through its standard streams.
struct Simulator {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    base_url: String,
}

impl Simulator {
    fn start(users: usize) -> Simulator {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(SIMULATOR_ROLE, users.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut base_url = String::new();
        stdout.read_line(&mut base_url).unwrap();
        Simulator {
            child,
            stdin,
            stdout,
            base_url: base_url.trim().to_string(),
        }
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line
    }

    fn calls(&mut self) -> CallSummary {
        let line = self.ask("calls");
        CallSummary::from_json(&line).unwrap_or_else(|| panic!("simulator said {line:?}"))
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User plus system CPU time of a process so far, in clock ticks; `None` once it is gone.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start with the state, field 3;
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Milliseconds per clock tick (`getconf CLK_TCK`, 100 on Linux).
fn ms_per_tick() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    let hz = out
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    1000.0 / hz
}

/// Peak resident set of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The broker's process (the Erlang VM), if it runs on this machine.
fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "beam.smp").then_some(pid)
        })
}

/// CPU of one database's backends, sampled every 100 ms: per backend, its ticks when
/// first seen (0 if it was born after the start) and when last seen.
struct BackendCpu {
    seen: Arc<Mutex<HashMap<u32, (u64, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl BackendCpu {
    async fn start(admin: DatabaseConnection, database: String) -> BackendCpu {
        let seen: Arc<Mutex<HashMap<u32, (u64, u64)>>> = Arc::default();
        for pid in backend_pids(&admin, &database).await {
            if let Some(t) = cpu_ticks(pid) {
                seen.lock().unwrap().insert(pid, (t, t));
            }
        }
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                for pid in backend_pids(&admin, &database).await {
                    if let Some(t) = cpu_ticks(pid) {
                        shared.lock().unwrap().entry(pid).or_insert((0, t)).1 = t;
                    }
                }
            }
        });
        BackendCpu { seen, task }
    }

    /// Ticks the backends used since the start (one last sample first).
    fn stop(self) -> u64 {
        self.task.abort();
        let mut seen = self.seen.lock().unwrap();
        for (pid, (_, last)) in seen.iter_mut() {
            if let Some(t) = cpu_ticks(*pid) {
                *last = t;
            }
        }
        seen.values().map(|(first, last)| last - first).sum()
    }
}

async fn backend_pids(admin: &DatabaseConnection, database: &str) -> Vec<u32> {
    let rows = admin
        .query_all_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT pid FROM pg_stat_activity WHERE datname = $1",
            [database.into()],
        ))
        .await
        .unwrap_or_default();
    rows.iter()
        .filter_map(|r| r.try_get::<i32>("", "pid").ok())
        .map(|p| p as u32)
        .collect()
}

/// The server's counters: the database's commits, the cluster's WAL bytes and syncs.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ServerCounters {
    commits: i64,
    wal_bytes: i64,
    wal_syncs: i64,
}

impl ServerCounters {
    async fn read(admin: &DatabaseConnection, database: &str) -> ServerCounters {
        let row = admin
            .query_one_raw(Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                "SELECT d.xact_commit AS commits, w.wal_bytes::bigint AS wal_bytes, \
                 w.wal_sync AS wal_syncs FROM pg_stat_database d, pg_stat_wal w \
                 WHERE d.datname = $1",
                [database.into()],
            ))
            .await
            .unwrap()
            .expect("the bench database in pg_stat_database");
        ServerCounters {
            commits: row.try_get("", "commits").unwrap(),
            wal_bytes: row.try_get("", "wal_bytes").unwrap(),
            wal_syncs: row.try_get("", "wal_syncs").unwrap(),
        }
    }

    /// Reads until the database's commit count holds still for a second: backends report
    /// their counts up to a second after going idle.
    async fn settled(admin: &DatabaseConnection, database: &str) -> ServerCounters {
        let mut last = ServerCounters::read(admin, database).await;
        let mut still_since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(15);
        while still_since.elapsed() < Duration::from_secs(1) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = ServerCounters::read(admin, database).await;
            if now.commits != last.commits {
                still_since = Instant::now();
            }
            last = now;
        }
        last
    }
}

/// One run's figures.
struct RunFigures {
    rate: f64,
    per_workflow: String,
}

/// Everything one run needs: the processes, the database and the broker names.
struct Deployment {
    procs: Procs,
    serve: usize,
    sim: Simulator,
    admin: DatabaseConnection,
    database: String,
    url: String,
    names: offboard::config::AmqpNames,
    _dir: tempfile::TempDir,
}

impl Deployment {
    async fn start(users: usize) -> Deployment {
        let sim = Simulator::start(users);
        let (url, _) = support::fresh_database(support::Db::Postgres).await;
        let database = url.rsplit('/').next().unwrap().to_string();
        let mut names = support::amqp_names();
        names.prefetch = 256;
        let mut config = ConfigFile::new(&url, &names, &sim.base_url);
        config.lease_secs = 15;
        config.max_concurrent_workflows = 64;
        config.requests_per_minute = 60_000_000;
        let dir = tempfile::tempdir().unwrap();
        let path = config.write(&dir.path().join("offboard.toml"));
        let mut serve_cmd = command(&path);
        if let Some(binary) = std::env::var_os(SERVE_BINARY) {
            let usual = command(&path);
            serve_cmd = Command::new(binary);
            serve_cmd.args(usual.get_args());
            for (key, value) in usual.get_envs() {
                match value {
                    Some(value) => serve_cmd.env(key, value),
                    None => serve_cmd.env_remove(key),
                };
            }
        }
        serve_cmd
            .arg("serve")
            .env_remove("RUST_LOG")
            .env("OFFBOARD_TEST_SMARTSHEET_TOKEN", TOKEN);
        let mut procs = Procs::new();
        let serve = procs.spawn("serve", serve_cmd, &dir.path().join("serve.log"));
        procs.wait_logs(&[serve], "consuming events", 120).await;
        let admin = sea_orm::Database::connect(PG_ADMIN_URL).await.unwrap();
        Deployment {
            procs,
            serve,
            sim,
            admin,
            database,
            url,
            names,
            _dir: dir,
        }
    }

    async fn tear_down(mut self) {
        self.procs.terminate(self.serve, 30).await;
        support::delete_broker_names(&self.names).await;
        support::drop_database(&self.url).await;
    }
}

/// Publishes `n` reclaims at once and takes their completions; measures the work.
async fn throughput(d: &mut Deployment, completions: &mut Completions, n: usize) -> RunFigures {
    let tick_ms = ms_per_tick();
    let serve_pid = d.procs.all[d.serve].pid();
    let broker = broker_pid();
    let bodies: Vec<String> = (0..n)
        .map(|i| reclaim(&format!("sep-{i}"), i, None))
        .collect();
    let before = ServerCounters::settled(&d.admin, &d.database).await;
    let backends = BackendCpu::start(d.admin.clone(), d.database.clone()).await;
    let (serve_before, broker_before) = (cpu_ticks(serve_pid), broker.and_then(cpu_ticks));
    let started = Instant::now();
    publish_all(&d.names, &bodies).await;
    let done = completions.take(n).await;
    let secs = done.last().unwrap().1.duration_since(started).as_secs_f64();
    let (serve_after, broker_after) = (cpu_ticks(serve_pid), broker.and_then(cpu_ticks));
    let backend_ticks = backends.stop();
    let after = ServerCounters::settled(&d.admin, &d.database).await;
    let distinct: HashSet<&String> = done.iter().map(|(id, _)| id).collect();
    assert_eq!(distinct.len(), n, "an event completed twice");
    let per = |ticks: u64| ticks as f64 * tick_ms / n as f64;
    let broker_ms = match (broker_before, broker_after) {
        (Some(a), Some(b)) => format!(", broker {:.2} ms (whole broker)", per(b - a)),
        _ => String::new(),
    };
    let per_workflow = format!(
        "CPU: engine {:.2} ms, PostgreSQL backends {:.2} ms{broker_ms}; {:.2} commits, \
         {:.0} WAL bytes, {:.2} WAL syncs (whole cluster); serve peak RSS {:.1} MiB",
        per(serve_after.unwrap() - serve_before.unwrap()),
        per(backend_ticks),
        (after.commits - before.commits) as f64 / n as f64,
        (after.wal_bytes - before.wal_bytes) as f64 / n as f64,
        (after.wal_syncs - before.wal_syncs) as f64 / n as f64,
        peak_rss_kib(serve_pid).unwrap_or(0) as f64 / 1024.0,
    );
    RunFigures {
        rate: n as f64 / secs,
        per_workflow,
    }
}

/// One event at a time on the idle `serve`: publish → `workflow.completed`, sorted.
async fn latencies(
    d: &Deployment,
    completions: &mut Completions,
    first_user: usize,
    samples: usize,
) -> Vec<Duration> {
    let channel = support::channel().await;
    let mut times = Vec::with_capacity(samples);
    for i in first_user..first_user + samples {
        let body = reclaim(&format!("lat-{i}"), i, None);
        let sent = Instant::now();
        channel
            .basic_publish(
                d.names.exchange.as_str().into(),
                "license.reclaim.requested".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        let (_, at) = completions.take(1).await.remove(0);
        times.push(at.duration_since(sent));
    }
    times.sort();
    times
}

/// One run of `n` events (then `samples` one at a time) on a fresh deployment.
async fn run(n: usize, samples: usize) -> f64 {
    let mut d = Deployment::start(n + samples).await;
    let mut completions = Completions::watch(&d.names).await;
    let figures = throughput(&mut d, &mut completions, n).await;
    let times = latencies(&d, &mut completions, n, samples).await;
    let calls = d.sim.calls();
    assert_eq!(
        (
            calls.writes,
            calls.written_paths,
            calls.most_writes_on_one_path
        ),
        (n + samples, n + samples, 1),
        "one write per person, none twice: {calls:?}"
    );
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "separate processes, PostgreSQL, {n} events: {:.0} workflows/s ({:.0} steps/s); \
         per workflow {}; latency one at a time p50 {:.1} ms, p99 {:.1} ms; \
         {} app calls, {} writes, none twice",
        figures.rate,
        figures.rate * STEPS as f64,
        figures.per_workflow,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        calls.calls,
        calls.writes,
    );
    d.tear_down().await;
    figures.rate
}

/// Runs every size `repeats` times, the sizes taking turns; prints each size's median
/// and the ratio of the larger's to the smaller's.
pub async fn sizes(sizes: &[usize], repeats: usize, samples: usize) {
    let mut rates = vec![Vec::with_capacity(repeats); sizes.len()];
    for _ in 0..repeats {
        for (i, &n) in sizes.iter().enumerate() {
            rates[i].push(run(n, samples).await);
        }
    }
    let medians: Vec<f64> = rates
        .iter_mut()
        .map(|r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect();
    for (n, median) in sizes.iter().zip(&medians) {
        println!("separate processes, PostgreSQL, {n} events, median of {repeats}: {median:.0} workflows/s");
    }
    if let [small, large] = medians[..] {
        println!(
            "separate processes, PostgreSQL: {} events at {:.2} x the rate of {}",
            sizes[1],
            large / small,
            sizes[0]
        );
    }
}
