//! The command line (CONTRACT §4). Parses arguments, loads the configuration, runs one
//! verb and maps the result to the contract's exit codes. Usage and configuration errors
//! print one line on stderr and exit 2.

// First: the verbs print through its macros.
#[macro_use]
mod output;

mod audit_key;
mod bulk;
#[cfg(feature = "demo")]
mod demo;
mod export;
mod intervene;
mod plan;
mod replay;
mod views;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::apps::AppClient;
use crate::codes::{self, Code};
use crate::config::Config;
use crate::domain::event::{self, EventType, Request};
use crate::domain::machine::Status;
use crate::runtime::definitions::Registry;
use crate::runtime::engine::Engine;
use crate::store::Store;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: a runtime failure (database or broker unreachable…).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: bad usage or configuration.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: a connection check failed.
pub const EXIT_CHECK_FAILED: i32 = 3;
/// Exit code: `plan` found a code the run would stop on.
pub const EXIT_PLAN_STOPS: i32 = 3;
/// Exit code: unknown workflow id or error code.
pub const EXIT_UNKNOWN: i32 = 4;
/// Exit code: replay found a mismatch or a broken trail.
pub const EXIT_MISMATCH: i32 = 5;

#[derive(Parser)]
#[command(
    name = "offboard",
    version,
    about = "Offboards people from SaaS apps, driven by HR events"
)]
struct Cli {
    /// Configuration file (else $OFFBOARD_CONFIG, else ./offboard.toml, else defaults).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate, declare the broker topology, consume events and run workflows until stopped.
    Serve {
        /// Serve metrics, health probes and the console here (overrides `[http] listen`).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Publish one event to the broker.
    Submit(SubmitArgs),
    /// Check credentials, role and plan of one connection or all.
    Check {
        /// Connection name.
        connection: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Dry run for one person: every write a run would make, and any code it would stop
    /// on; writes nothing to the apps and starts no workflow.
    Plan(plan::Args),
    /// List workflows, newest first.
    List {
        /// Only this state.
        #[arg(long)]
        state: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one workflow.
    Show {
        /// Workflow id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a workflow's audit trail, oldest first.
    History {
        /// Workflow id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a workflow's state from its trail alone and compare with what is stored.
    Replay {
        /// Workflow id.
        id: String,
    },
    /// Resume a failed workflow at the step that failed.
    Retry {
        /// Workflow id.
        id: String,
        /// Who asks (default: the OS user).
        #[arg(long)]
        by: Option<String>,
    },
    /// Stop a workflow that has not finished, at a step boundary.
    Cancel {
        /// Workflow id.
        id: String,
        /// Who asks (default: the OS user).
        #[arg(long)]
        by: Option<String>,
    },
    /// One row per workflow for auditors (CSV or JSON).
    Evidence {
        /// Workflows created at or after this date (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        since: String,
        /// Workflows created before this date.
        #[arg(long)]
        until: Option<String>,
        /// csv or json.
        #[arg(long, default_value = "csv")]
        format: String,
    },
    /// Let workflows held by the mass-offboarding brake run.
    Release {
        /// Workflow ids.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every held workflow.
        #[arg(long)]
        all: bool,
        /// Who releases them (kept in each trail).
        #[arg(long)]
        by: String,
    },
    /// Export the evidence of finished workflows older than a date, then remove them (and
    /// older dead letters).
    Prune {
        /// Workflows finished before this date (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        before: String,
        /// Where their evidence goes first (`.json` for JSON, else CSV); required.
        #[arg(long, value_name = "FILE")]
        evidence: Option<PathBuf>,
    },
    /// Replay every workflow's trail and print a summary (exit 5 on any mismatch).
    Verify {
        /// Every workflow (required: verifying is always over the whole set or a range).
        #[arg(long, required = true)]
        all: bool,
        /// Only workflows created at or after this date (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        since: Option<String>,
    },
    /// Explain an error code, or list them all.
    Explain {
        /// The code (e.g. SMT-100-A).
        code: Option<String>,
        /// List every code.
        #[arg(long)]
        list: bool,
    },
    /// Run the whole pipeline on embedded defaults with the built-in app simulators.
    #[cfg(feature = "demo")]
    Demo,
}

/// What `submit` was asked, as given on the command line.
#[derive(clap::Args)]
struct SubmitArgs {
    /// The person to offboard.
    #[arg(long)]
    email: Option<String>,
    /// Event type.
    #[arg(long = "type", default_value = "offboarding.requested")]
    event_type: String,
    /// Who receives the person's data.
    #[arg(long)]
    transfer_to: Option<String>,
    /// Limit to these connections (repeatable).
    #[arg(long = "connection")]
    connections: Vec<String>,
    /// Event id (default: a new UUID).
    #[arg(long)]
    id: Option<String>,
    /// Publish this CloudEvents JSON file instead.
    #[arg(long, value_name = "EVENT.json")]
    file: Option<PathBuf>,
    /// Publish one event per row of this leavers' list (columns email, transfer_to,
    /// type, not_before, connections, in HR exports' spellings too; other columns are
    /// ignored); nothing is published if any row is bad.
    #[arg(long, value_name = "FILE.csv", conflicts_with_all = ["email", "file", "id"])]
    csv: Option<PathBuf>,
    /// With --csv: refuse a file with columns offboard does not read.
    #[arg(long, requires = "csv")]
    strict: bool,
}

/// A verb's failure: an exit code and one line for stderr.
pub struct Failure {
    code: i32,
    message: String,
}

fn fail(code: i32, message: impl std::fmt::Display) -> Failure {
    Failure {
        code,
        message: message.to_string(),
    }
}

type Outcome = Result<i32, Failure>;

/// A database error as a verb's failure (exit 1).
fn db(e: impl std::fmt::Display) -> Failure {
    fail(EXIT_FAILURE, format!("database: {e}"))
}

/// A database failure ends a verb with exit 1 (so `?` works in callbacks such as
/// [`crate::evidence::verify_each`]'s).
impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        db(e)
    }
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    EXIT_USAGE
                } else {
                    EXIT_OK
                };
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first} (see offboard --help)");
            return EXIT_USAGE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    }
}

async fn run(cli: Cli) -> Outcome {
    if let Command::Explain { code, list } = &cli.command {
        return explain(code.as_deref(), *list);
    }
    let config = Config::load(cli.config.as_deref()).map_err(|e| fail(EXIT_USAGE, e))?;
    match cli.command {
        #[cfg(feature = "demo")]
        Command::Demo => demo::run().await,
        Command::Serve { listen } => serve(config, listen).await,
        Command::Submit(args) => submit(&config, args).await,
        Command::Check { connection, json } => {
            crate::telemetry::init("warn");
            check(&config, connection.as_deref(), json).await
        }
        Command::Plan(args) => {
            crate::telemetry::init("warn");
            plan::run(&config, args).await
        }
        Command::List { state, json } => list(&config, state, json).await,
        Command::Show { id, json } => views::show(&read_store(&config).await?, &id, json).await,
        Command::History { id, json } => {
            views::history(&read_store(&config).await?, &id, json).await
        }
        Command::Evidence {
            since,
            until,
            format,
        } => {
            export::run(
                &read_store(&config).await?,
                &since,
                until.as_deref(),
                &format,
            )
            .await
        }
        Command::Replay { id } => replay::replay(&read_store(&config).await?, &id).await,
        Command::Release { ids, all, by } => {
            let engine = engine(config).await?;
            intervene::release(&engine, ids, all, &by).await
        }
        Command::Prune { before, evidence } => prune(&config, &before, evidence).await,
        Command::Verify { all: _, since } => verify(&config, since).await,
        Command::Retry { id, by } => {
            crate::telemetry::init("warn");
            let engine = engine(config).await?;
            intervene::retry(&engine, &id, &by.unwrap_or_else(os_user)).await
        }
        Command::Cancel { id, by } => {
            let engine = engine(config).await?;
            intervene::cancel(&engine, &id, &by.unwrap_or_else(os_user)).await
        }
        Command::Explain { .. } => unreachable!("handled above"),
    }
}

/// `list`: the workflows, newest first, only those in `state` when given.
async fn list(config: &Config, state: Option<String>, json: bool) -> Outcome {
    let state = match state {
        None => None,
        Some(s) => Some(Status::parse(&s).ok_or_else(|| {
            fail(EXIT_USAGE, format!("unknown state {s:?}: use pending, held, running, retrying, completed, failed or cancelled"))
        })?),
    };
    let store = read_store(config).await?;
    views::list(&store, state, json).await
}

/// `prune`: refused without `--evidence`, which receives the evidence first.
async fn prune(config: &Config, before: &str, evidence: Option<PathBuf>) -> Outcome {
    let evidence = evidence.ok_or_else(|| {
        fail(
            EXIT_USAGE,
            "prune removes audit trails: give --evidence FILE to export their evidence first",
        )
    })?;
    let before = export::parse_date(before, "--before")?;
    let store = open_store(config).await?;
    export::prune(&store, before, &evidence).await
}

/// `verify --all`: every workflow (created since `since`) replayed.
async fn verify(config: &Config, since: Option<String>) -> Outcome {
    let since = since
        .map(|s| export::parse_date(&s, "--since"))
        .transpose()?;
    replay::verify_all(&read_store(config).await?, since).await
}

fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Opens the database without migrating it: for verbs that only read. The audit key is
/// attached when there is one, so keyed links can be checked.
async fn read_store(config: &Config) -> Result<Store, Failure> {
    let key = audit_key(config, false)?;
    let store = Store::connect(&config.database_url)
        .await
        .map_err(|e| unreachable_db(config, e))?;
    Ok(match key {
        Some(k) => store.with_audit_key(k),
        None => store,
    })
}

/// Opens the database and brings its schema up to date: for verbs that write. Writing
/// needs the audit key (checked before connecting).
async fn open_store(config: &Config) -> Result<Store, Failure> {
    let key = audit_key(config, true)?;
    let store = Store::open_with_pool(&config.database_url, config.database_pool_size)
        .await
        .map_err(|e| unreachable_db(config, e))?;
    Ok(match key {
        Some(k) => store.with_audit_key(k),
        None => store,
    })
}

/// The audit chain's key; a verb that writes the trail on PostgreSQL cannot go without.
fn audit_key(
    config: &Config,
    writes: bool,
) -> Result<Option<crate::domain::chain::AuditKey>, Failure> {
    let key = audit_key::resolve(&config.database_url).map_err(|e| fail(EXIT_USAGE, e))?;
    if key.is_none() && writes {
        return Err(fail(
            EXIT_USAGE,
            format!(
                "{} is not set: on PostgreSQL the audit trail is written only with its key (see README, \"For auditors\")",
                audit_key::ENV
            ),
        ));
    }
    Ok(key)
}

fn unreachable_db(config: &Config, e: crate::store::StoreError) -> Failure {
    if let crate::store::StoreError::Schema(refusal) = e {
        return fail(EXIT_USAGE, refusal);
    }
    {
        fail(
            EXIT_FAILURE,
            format!(
                "cannot open the database {}: {e}",
                crate::config::redact_url(&config.database_url)
            ),
        )
    }
}

/// An engine for a verb that takes leases (`serve`, and the operator's `retry`, `cancel`
/// and `release`), recorded in `workers` with this release's schema version so that a
/// `serve` starting meanwhile does not take its leases for an older worker's.
async fn engine(config: Config) -> Result<Arc<Engine>, Failure> {
    let registry =
        Registry::load(config.workflows_dir.as_deref()).map_err(|e| fail(EXIT_USAGE, e))?;
    let store = open_store(&config).await?;
    let engine = Engine::new(store, config, registry);
    engine
        .store()
        .register_worker(engine.worker_id())
        .await
        .map_err(|e| unreachable_db(engine.config(), e))?;
    Ok(Arc::new(engine))
}

fn explain(code: Option<&str>, list: bool) -> Outcome {
    if list {
        for info in codes::CATALOG {
            outln!("{:<11} {}", info.code.as_str(), info.message);
        }
        return Ok(EXIT_OK);
    }
    let Some(raw) = code else {
        return Err(fail(
            EXIT_USAGE,
            "name a code (e.g. offboard explain SMT-100-A) or use --list",
        ));
    };
    let Some(code) = Code::parse(raw) else {
        return Err(fail(
            EXIT_UNKNOWN,
            format!("unknown code {raw:?}; offboard explain --list shows them all"),
        ));
    };
    out!("{}", codes::render_explain(code));
    Ok(EXIT_OK)
}

#[cfg(feature = "console")]
/// The console's token named by `[http] <setting>` (`operator_token_env`,
/// `viewer_token_env`): required to be set (and not empty) once named, so a console meant
/// to be operable does not start read-only unseen, nor one meant to be guarded open.
fn console_token(
    setting: &str,
    var: Option<&String>,
) -> Result<Option<crate::config::Secret>, Failure> {
    secret_named(&format!("[http] {setting}"), var)
}

#[cfg(feature = "console")]
/// The secret in the variable `setting` names (`[ingest] bearer_token_env` too): required
/// to be set (and not empty) once named.
fn secret_named(
    setting: &str,
    var: Option<&String>,
) -> Result<Option<crate::config::Secret>, Failure> {
    let Some(var) = var else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(Some(crate::config::Secret::new(v.trim()))),
        _ => Err(fail(
            EXIT_USAGE,
            format!("{setting} names {var}, which is not set"),
        )),
    }
}

async fn serve(config: Config, listen: Option<std::net::SocketAddr>) -> Outcome {
    if let Some(why) = config.intake.unsigned_refusal(&config.database_url) {
        return Err(fail(EXIT_USAGE, why));
    }
    config
        .intake
        .signing_keys()
        .map_err(|e| fail(EXIT_USAGE, e))?;
    crate::telemetry::init("info");
    let listen = listen.or(config.http.listen);
    #[cfg(not(feature = "console"))]
    refuse_listeners(&config, listen)?;
    #[cfg(feature = "console")]
    let token = console_token(
        "operator_token_env",
        config.http.operator_token_env.as_ref(),
    )?;
    #[cfg(feature = "console")]
    let viewer = console_token("viewer_token_env", config.http.viewer_token_env.as_ref())?;
    #[cfg(feature = "console")]
    let listener = match listen {
        None => None,
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| fail(EXIT_FAILURE, format!("cannot listen on {addr}: {e}")))?,
        ),
    };
    #[cfg(feature = "console")]
    let ingest = bind_ingest(&config).await?;
    let engine = engine(config).await?;
    // No worker of an older schema may still be writing (README "Upgrading"); this one
    // was recorded with its version when its engine was built, before any lease.
    engine
        .store()
        .refuse_older_workers()
        .await
        .map_err(|e| unreachable_db(engine.config(), e))?;
    tracing::info!(database = %crate::config::redact_url(&engine.config().database_url), amqp = %engine.config().amqp_url_redacted(), "offboard serving");
    declare_topology(engine.config()).await?;
    log_connection_checks(engine.config()).await?;
    let service = crate::service::Service::start(engine.clone());
    #[cfg(feature = "console")]
    let service = match listener {
        None => service,
        Some(listener) => {
            let addr = listener
                .local_addr()
                .map_err(|e| fail(EXIT_FAILURE, e.to_string()))?;
            tracing::info!(%addr, operable = token.is_some(), guarded = viewer.is_some(), "console, metrics and health probes listening");
            let console = crate::console::Console::new(engine, token);
            let console = match viewer {
                Some(v) => console.with_viewer_token(v),
                None => console,
            };
            service.listen(listener, console)
        }
    };
    #[cfg(feature = "console")]
    let service = match ingest {
        None => service,
        Some((listener, ingest)) => {
            let addr = listener
                .local_addr()
                .map_err(|e| fail(EXIT_FAILURE, e.to_string()))?;
            tracing::info!(%addr, "HTTP intake listening for events on POST /events");
            service.ingest(listener, ingest)
        }
    };
    shutdown_signal().await;
    tracing::info!("stopping");
    service.stop().await;
    Ok(EXIT_OK)
}

/// Without the `console` feature, a configured listener (console or HTTP intake) is a
/// usage error rather than silently not served.
#[cfg(not(feature = "console"))]
fn refuse_listeners(config: &Config, listen: Option<std::net::SocketAddr>) -> Result<(), Failure> {
    if let Some(addr) = listen {
        return Err(fail(
            EXIT_USAGE,
            format!("cannot listen on {addr}: this offboard was built without the `console` feature (metrics, health probes, console); remove [http] listen / --listen or build with it"),
        ));
    }
    if let Some(addr) = config.ingest.listen {
        return Err(fail(
            EXIT_USAGE,
            format!("cannot listen on {addr}: this offboard was built without the `console` feature (the HTTP intake); remove [ingest] listen or build with it"),
        ));
    }
    Ok(())
}

/// The HTTP intake's listener, bound, with its handler, when `[ingest] listen` is set.
#[cfg(feature = "console")]
async fn bind_ingest(
    config: &Config,
) -> Result<Option<(tokio::net::TcpListener, crate::ingest::Ingest)>, Failure> {
    Ok(match config.ingest.listen {
        None => None,
        Some(addr) => {
            let token = secret_named(
                "[ingest] bearer_token_env",
                config.ingest.bearer_token_env.as_ref(),
            )?;
            let ingest =
                crate::ingest::Ingest::new(config, token).map_err(|e| fail(EXIT_USAGE, e))?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| fail(EXIT_FAILURE, format!("cannot listen on {addr}: {e}")))?;
            Some((listener, ingest))
        }
    })
}

/// Declares the broker topology before serving: the broker must answer at start (the
/// contract: exit 1 when it cannot be reached); once serving, a lost broker is
/// reconnected to instead.
async fn declare_topology(config: &Config) -> Result<(), Failure> {
    let (conn, _) = crate::intake::open(&config.amqp_url)
        .await
        .map_err(|e| fail(EXIT_FAILURE, e))?;
    crate::intake::topology::declare_upgrading(&conn, &config.amqp)
        .await
        .map_err(|e| {
            fail(
                EXIT_FAILURE,
                format!("cannot declare the broker topology: {e}"),
            )
        })?;
    let _ = conn.close(200, "topology declared".into()).await;
    Ok(())
}

/// Checks every connection at start and logs what `offboard check` would print; a
/// failed check is a warning, not a reason to stop serving.
async fn log_connection_checks(config: &Config) -> Result<(), Failure> {
    for (name, report) in check_all(config, None).await? {
        match &report {
            Ok(r) => {
                match &r.problem {
                    None => tracing::info!(connection = %name, "connection check passed"),
                    Some((code, msg)) => {
                        tracing::warn!(connection = %name, %code, message = %msg.escape_debug(), "connection check failed; workflows on it will run and may fail")
                    }
                }
                // The same warnings `offboard check` prints (e.g. POST-105-A, no audit logs).
                for (code, msg) in &r.warnings {
                    tracing::warn!(connection = %name, %code, message = ?msg, "connection check warning")
                }
            }
            Err(e) => {
                tracing::warn!(connection = %name, error = %e, "connection cannot be checked")
            }
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[allow(clippy::too_many_arguments)]
/// `submit`: one event (from the flags or a file), or a leavers' list with `--csv`.
async fn submit(config: &Config, args: SubmitArgs) -> Outcome {
    if let Some(path) = args.csv {
        let unknown = if args.strict {
            bulk::Unknown::Refuse
        } else {
            bulk::Unknown::Ignore
        };
        return bulk::run(config, &path, unknown).await;
    }
    let SubmitArgs {
        email,
        event_type,
        transfer_to,
        connections,
        id,
        file,
        ..
    } = args;
    let known: Vec<String> = config.connections.keys().cloned().collect();
    let body = match file {
        Some(path) => std::fs::read(&path)
            .map_err(|e| fail(EXIT_USAGE, format!("cannot read {}: {e}", path.display())))?,
        None => {
            let email = email.ok_or_else(|| fail(EXIT_USAGE, "--email or --file is required"))?;
            let event_type = EventType::parse(&event_type).ok_or_else(|| {
                fail(EXIT_USAGE, format!("unknown --type {event_type:?}: use offboarding.requested or license.reclaim.requested"))
            })?;
            let person_email =
                event::valid_email(&email, "--email").map_err(|r| fail(EXIT_USAGE, r.message))?;
            let transfer_to = transfer_to
                .map(|t| event::valid_email(&t, "--transfer-to"))
                .transpose()
                .map_err(|r| fail(EXIT_USAGE, r.message))?;
            let request = Request {
                event_id: id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
                source: "offboard-cli".into(),
                event_type,
                time: Some(chrono::Utc::now()),
                person_email,
                employee_id: None,
                transfer_to,
                connections: (!connections.is_empty()).then_some(connections),
                not_before: None,
                reason: None,
            };
            event::to_cloudevent(&request).to_string().into_bytes()
        }
    };
    let request = event::parse(&body, &known)
        .map_err(|r| fail(EXIT_USAGE, format!("{}: {}", r.code, r.message)))?;
    let signed = signer(config)?.map(|sign| sign(&request.event_id, &body));
    crate::intake::submit_signed(
        &config.amqp_url,
        &config.amqp,
        request.event_type.as_str(),
        &body,
        signed.as_ref(),
    )
    .await
    .map_err(|e| fail(EXIT_FAILURE, e))?;
    outln!("{}", request.event_id);
    Ok(EXIT_OK)
}

/// How `submit` signs an event (its id, its exact body) when `[intake] signing_key_env`
/// is set, with the first key named: the serving side then requires a signature.
pub(crate) fn signer(
    config: &Config,
) -> Result<Option<impl Fn(&str, &[u8]) -> crate::domain::admission::Signed>, Failure> {
    let keys = config
        .intake
        .signing_keys()
        .map_err(|e| fail(EXIT_USAGE, e))?;
    Ok(keys.into_iter().next().map(|key| {
        move |id: &str, body: &[u8]| {
            crate::domain::admission::sign(&key, id, chrono::Utc::now().timestamp(), body)
        }
    }))
}

type CheckResult = Result<crate::apps::CheckReport, crate::apps::ClientError>;

async fn check_all(
    config: &Config,
    only: Option<&str>,
) -> Result<Vec<(String, CheckResult)>, Failure> {
    if let Some(name) = only {
        if !config.connections.contains_key(name) {
            return Err(fail(
                EXIT_USAGE,
                format!("no connection named {name:?} in the configuration"),
            ));
        }
    }
    let mut reports = Vec::new();
    for (name, conn) in &config.connections {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let report = match AppClient::connect(name, conn) {
            Ok(client) => Ok(client.check().await),
            Err(e) => Err(e),
        };
        reports.push((name.clone(), report));
    }
    Ok(reports)
}

async fn check(config: &Config, only: Option<&str>, json: bool) -> Outcome {
    let reports = check_all(config, only).await?;
    let mut all_ok = true;
    let mut out = Vec::new();
    for (name, report) in &reports {
        let (problem, warnings) = match report {
            Ok(r) => (r.problem.clone(), r.warnings.clone()),
            Err(e) => {
                let app = config.connections[name].app;
                let code = match app {
                    crate::config::AppKind::Smartsheet => Code::Smt100A,
                    crate::config::AppKind::Postman => Code::Post100A,
                    crate::config::AppKind::Scim => Code::Scim100A,
                };
                (Some((code, e.to_string())), Vec::new())
            }
        };
        all_ok &= problem.is_none();
        if json {
            out.push(serde_json::json!({
                "connection": name,
                "ok": problem.is_none(),
                "error_code": problem.as_ref().map(|(c, _)| c.as_str()),
                "message": problem.as_ref().map(|(c, m)| format!("{}: {m}", c.message())),
                "remedy": problem.as_ref().map(|(c, _)| c.info().remedy),
                "warnings": warnings.iter().map(|(c, m)| serde_json::json!({"code": c.as_str(), "message": format!("{}: {m}", c.message())})).collect::<Vec<_>>(),
            }));
        } else {
            // The details quote the app's answers: shown escaped.
            match &problem {
                None => outln!("{name}: OK"),
                Some((code, detail)) => outln!(
                    "{name}: {code} {} ({}) -> {}",
                    code.message(),
                    views::terminal_safe(detail),
                    code.info().remedy.first().copied().unwrap_or("")
                ),
            }
            for (code, detail) in &warnings {
                outln!(
                    "{name}: warning {code} {} ({})",
                    code.message(),
                    views::terminal_safe(detail)
                );
            }
        }
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    Ok(if all_ok { EXIT_OK } else { EXIT_CHECK_FAILED })
}
