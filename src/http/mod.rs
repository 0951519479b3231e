//! The operators' listener `serve` opens when `[http] listen` (or `--listen`) is set:
//! Prometheus metrics, health probes for an orchestrator, and a web console rendered on
//! the server.
//!
//! - `GET /metrics` — Prometheus text ([`metrics`]).
//! - `GET /healthz` — the process answers. `GET /readyz` — the database and the broker
//!   answer and every migration is applied; 503 with the reason otherwise.
//! - `GET /workflows` (filters, paging, counts per state), `GET /workflows/{id}` (the
//!   timeline, the error with its remedy, the replay verdict), `GET /dead-letters`,
//!   `GET /evidence.csv?since=…&until=…` ([`pages`]).
//! - `POST /workflows/{id}/retry` and `/cancel` — only when `[http] operator_token_env`
//!   names a variable holding a token; the form (or an `Authorization: Bearer` header)
//!   must carry it. They go through [`Engine::intervene`], as the CLI does, so the trail
//!   records who asked. The token is compared in constant time and never rendered.

pub mod metrics;
pub mod pages;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Secret;
use crate::evidence;
use crate::runtime::engine::Engine;
use crate::runtime::operator::{Intervened, Intervention};
use crate::store::WorkflowFilter;
use pages::{DetailView, ListQuery, ListView};

/// A rendered HTML page.
type Page = Html<String>;

/// Rows per page of the workflow list.
const PER_PAGE: u64 = 50;

/// What the handlers share: the engine (store, configuration, interventions) and the
/// operators' token, when one is configured.
pub struct Console {
    engine: Arc<Engine>,
    operator_token: Option<Secret>,
}

impl Console {
    /// A console over `engine`; retry and cancel are offered only with a token.
    pub fn new(engine: Arc<Engine>, operator_token: Option<Secret>) -> Console {
        Console {
            engine,
            operator_token,
        }
    }
}

/// The routes.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/", get(|| async { Redirect::to("/workflows") }))
        .route("/workflows", get(list))
        .route("/workflows/{id}", get(detail))
        .route("/workflows/{id}/retry", post(retry))
        .route("/workflows/{id}/cancel", post(cancel))
        .route("/dead-letters", get(dead_letters))
        .route("/evidence.csv", get(evidence_csv))
        .with_state(console)
}

/// Serves the console on `listener` until `stop` turns true. Installs the metrics
/// recorder first, so everything the engine does from now on is counted.
pub async fn serve(listener: TcpListener, console: Console, mut stop: watch::Receiver<bool>) {
    metrics::install();
    let app = router(Arc::new(console));
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!(error = %e, "the HTTP listener stopped");
    }
}

/// A failure of a console request, as a status and one line for people.
struct Problem(StatusCode, String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = pages::layout(
            self.0.canonical_reason().unwrap_or("error"),
            &format!("<p class=\"error\">{}</p>", pages::esc(&self.1)),
        );
        (self.0, Html(body)).into_response()
    }
}

fn db_problem(e: impl std::fmt::Display) -> Problem {
    Problem(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}"))
}

async fn readyz(State(c): State<Arc<Console>>) -> Response {
    let mut problems = Vec::new();
    if let Some(why) = c.engine.store().unready().await {
        problems.push(why);
    }
    let broker = tokio::time::timeout(
        Duration::from_secs(5),
        crate::intake::open(&c.engine.config().amqp_url),
    )
    .await;
    match broker {
        Ok(Ok((conn, _))) => {
            let _ = conn.close(200, "readiness probe".into()).await;
        }
        Ok(Err(e)) => problems.push(format!("broker unreachable: {e}")),
        Err(_) => problems.push("broker unreachable: no answer in 5 s".into()),
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let text = format!("not ready: {}\n", problems.join("; "));
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}

async fn metrics_text(State(c): State<Arc<Console>>) -> Response {
    let gauges = c.engine.store().gauges().await;
    let text = metrics::render(c.engine.config(), gauges);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

async fn list(State(c): State<Arc<Console>>, Query(q): Query<ListQuery>) -> Result<Page, Problem> {
    let mut problem = None;
    let mut date = |raw: &Option<String>| {
        non_empty(raw).and_then(|r| match evidence::parse_date(&r) {
            Ok(t) => Some(t),
            Err(e) => {
                problem = Some(format!("ignored: {e}"));
                None
            }
        })
    };
    let filter = WorkflowFilter {
        since: date(&q.since),
        until: date(&q.until),
        state: non_empty(&q.state),
        app: non_empty(&q.app),
        connection: non_empty(&q.connection),
        person: non_empty(&q.person),
        error_code: non_empty(&q.code),
    };
    let page = q.page.unwrap_or(1).max(1);
    let store = c.engine.store();
    let (rows, total) = store
        .workflow_page(&filter, (page - 1) * PER_PAGE, PER_PAGE)
        .await
        .map_err(db_problem)?;
    let counts = store.counts_by_state().await.map_err(db_problem)?;
    Ok(Html(pages::workflow_list(&ListView {
        query: &q,
        problem,
        counts: &counts,
        rows: &rows,
        total,
        page,
        per_page: PER_PAGE,
    })))
}

async fn render_detail(c: &Console, id: &str, notice: Option<&str>) -> Result<Page, Problem> {
    let checked = evidence::replay(c.engine.store(), id)
        .await
        .map_err(db_problem)?
        .ok_or_else(|| Problem(StatusCode::NOT_FOUND, format!("no workflow with id {id:?}")))?;
    let records: Vec<_> = checked
        .trail
        .iter()
        .map(|r| (r.seq, r.at, serde_json::from_str(&r.body).ok()))
        .collect();
    Ok(Html(pages::workflow_detail(&DetailView {
        row: &checked.loaded.row,
        state: &checked.loaded.state,
        trail: &records,
        replay: &checked.report,
        operable: c.operator_token.is_some(),
        notice,
    })))
}

async fn detail(State(c): State<Arc<Console>>, Path(id): Path<String>) -> Result<Page, Problem> {
    render_detail(&c, &id, None).await
}

/// An operator's request: who asks, and the token (unless sent as a bearer header).
#[derive(serde::Deserialize)]
struct ActionForm {
    by: String,
    #[serde(default)]
    token: String,
}

/// Whether `given` is the operators' token, compared in constant time (over digests, so
/// neither the length nor a matching prefix shows in the timing).
fn token_matches(expected: &Secret, given: &str) -> bool {
    let a = Sha256::digest(expected.expose().as_bytes());
    let b = Sha256::digest(given.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Checks the token and the name of who asks; the name as the trail will record it.
fn authorize(c: &Console, headers: &HeaderMap, form: &ActionForm) -> Result<String, Problem> {
    let Some(expected) = &c.operator_token else {
        return Err(Problem(
            StatusCode::FORBIDDEN,
            "the console is read-only: set [http] operator_token_env to allow retry and cancel"
                .into(),
        ));
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = bearer.unwrap_or(&form.token);
    if given.is_empty() || !token_matches(expected, given) {
        return Err(Problem(
            StatusCode::UNAUTHORIZED,
            "the operator token is missing or wrong".into(),
        ));
    }
    let by = form.by.trim();
    if by.is_empty() || by.chars().count() > 100 || by.chars().any(char::is_control) {
        return Err(Problem(
            StatusCode::BAD_REQUEST,
            "say who asks: a name of 1 to 100 printable characters".into(),
        ));
    }
    Ok(format!("{by} (console)"))
}

async fn intervene(
    c: &Console,
    id: &str,
    headers: &HeaderMap,
    form: &ActionForm,
    what: Intervention,
) -> Result<Response, Problem> {
    let by = authorize(c, headers, form)?;
    let result = c
        .engine
        .intervene(id, &by, what)
        .await
        .map_err(db_problem)?;
    let notice = match (result, what) {
        (Intervened::Unknown, _) => {
            return Err(Problem(
                StatusCode::NOT_FOUND,
                format!("no workflow with id {id:?}"),
            ))
        }
        (Intervened::Refused(why), _) => {
            return Err(Problem(StatusCode::CONFLICT, format!("refused: {why}")))
        }
        (Intervened::Done(_), Intervention::Retry) => {
            tracing::info!(workflow = %id, by = %by.escape_debug(), "retry asked from the console");
            return Ok(Redirect::to(&format!("/workflows/{id}")).into_response());
        }
        (Intervened::Done(_), Intervention::Release) => {
            tracing::info!(workflow = %id, by = %by.escape_debug(), "release asked from the console");
            return Ok(Redirect::to(&format!("/workflows/{id}")).into_response());
        }
        (Intervened::Done(_), Intervention::Cancel) => {
            tracing::info!(workflow = %id, by = %by.escape_debug(), "cancel asked from the console");
            return Ok((
                StatusCode::OK,
                render_detail(c, id, Some("cancelled")).await?,
            )
                .into_response());
        }
        (Intervened::Requested, _) => "will stop after the call in flight",
    };
    Ok((
        StatusCode::ACCEPTED,
        render_detail(c, id, Some(notice)).await?,
    )
        .into_response())
}

async fn retry(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, Problem> {
    intervene(&c, &id, &headers, &form, Intervention::Retry).await
}

async fn cancel(
    State(c): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, Problem> {
    intervene(&c, &id, &headers, &form, Intervention::Cancel).await
}

async fn dead_letters(State(c): State<Arc<Console>>) -> Result<Page, Problem> {
    let rows = c
        .engine
        .store()
        .recent_dead_letters(500)
        .await
        .map_err(db_problem)?;
    Ok(Html(pages::dead_letters(&rows)))
}

/// The evidence range: `since` required, `until` optional.
#[derive(serde::Deserialize)]
struct Range {
    since: String,
    until: Option<String>,
}

async fn evidence_csv(
    State(c): State<Arc<Console>>,
    Query(range): Query<Range>,
) -> Result<Response, Problem> {
    let bad = |e: evidence::NotADate| Problem(StatusCode::BAD_REQUEST, e.to_string());
    let since = evidence::parse_date(range.since.trim()).map_err(bad)?;
    let until = non_empty(&range.until)
        .map(|u| evidence::parse_date(&u))
        .transpose()
        .map_err(bad)?;
    let rows = evidence::rows(c.engine.store(), since, until)
        .await
        .map_err(db_problem)?;
    let name = format!("offboard-evidence-{}.csv", since.format("%Y-%m-%d"));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        evidence::csv(&rows),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let t = Secret::new("op-7f3a");
        assert!(token_matches(&t, "op-7f3a"));
        for wrong in ["", "op-7f3", "op-7f3a ", "OP-7F3A"] {
            assert!(!token_matches(&t, wrong), "{wrong:?}");
        }
    }
}
