//! The operators' listener `serve` opens when `[http] listen` (or `--listen`) is set:
//! Prometheus metrics, health probes for an orchestrator, and a web console rendered on
//! the server.
//!
//! Open to anyone who reaches the port:
//!
//! - `GET /metrics` — Prometheus text ([`metrics`]).
//! - `GET /healthz` — the process answers. `GET /readyz` — the latest background check
//!   (at most 2 s old) found the database answering with every migration applied and the
//!   event consumer connected to the broker; 503 with the reason otherwise ([`readiness`]).
//! - `GET /login`, `POST /login`, `POST /logout`, and `GET /console.css`.
//!
//! Behind the viewers' token when `[http] viewer_token_env` names one ([`access`]):
//!
//! - `GET /workflows` (filters, paging, counts per state), `GET /workflows/{id}` (the
//!   timeline, the error with its remedy, the replay verdict), `GET /dead-letters`,
//!   `GET /evidence.csv?since=…&until=…` ([`pages`]).
//! - `POST /workflows/{id}/retry` and `/cancel` — only when `[http] operator_token_env`
//!   names a variable holding a token; the form (or an `Authorization: Bearer` header)
//!   must carry it. They go through [`Engine::intervene`], as the CLI does, so the trail
//!   records who asked. The token is compared in constant time and never rendered.
//!
//! Every answer carries the security headers of [`headers`].

pub mod access;
pub mod headers;
pub mod metrics;
pub mod pages;
pub mod readiness;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self as layer, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use tokio::net::TcpListener;

use crate::config::Secret;
use crate::evidence;
use crate::intake::link::BrokerLink;
use crate::runtime::engine::Engine;
use crate::runtime::operator::{Intervened, Intervention};
use crate::store::WorkflowFilter;
use access::{token_matches, Tokens, Verdict};
use pages::{DetailView, ListQuery, ListView, Nav};
use readiness::Readiness;

/// A rendered HTML page.
type Page = Html<String>;

/// Rows per page of the workflow list.
const PER_PAGE: u64 = 50;

/// What the handlers share: the engine (store, configuration, interventions), the
/// operators' and viewers' tokens when configured, and the latest readiness check.
pub struct Console {
    engine: Arc<Engine>,
    operator_token: Option<Secret>,
    viewer_token: Option<Secret>,
    readiness: Readiness,
}

impl Console {
    /// A console over `engine`, open to anyone who reaches it; retry and cancel are
    /// offered only with an operators' token.
    pub fn new(engine: Arc<Engine>, operator_token: Option<Secret>) -> Console {
        Console {
            engine,
            operator_token,
            viewer_token: None,
            readiness: Readiness::default(),
        }
    }

    /// The same console, its pages, forms and CSV only for who presents `token` (or the
    /// operators' token).
    pub fn with_viewer_token(self, token: Secret) -> Console {
        Console {
            viewer_token: Some(token),
            ..self
        }
    }

    fn tokens(&self) -> Tokens<'_> {
        Tokens {
            viewer: self.viewer_token.as_ref(),
            operator: self.operator_token.as_ref(),
        }
    }

    /// The pages' header: a sign-out button when there are sessions.
    fn nav(&self) -> Nav {
        match self.viewer_token {
            Some(_) => Nav::SignOut,
            None => Nav::Plain,
        }
    }
}

/// The routes: the open ones, the console behind `gate`, and the security headers on
/// every answer (unknown paths included).
pub fn router(console: Arc<Console>) -> Router {
    let guarded = Router::new()
        .route("/", get(|| async { Redirect::to("/workflows") }))
        .route("/workflows", get(list))
        .route("/workflows/{id}", get(detail))
        .route("/workflows/{id}/retry", post(retry))
        .route("/workflows/{id}/cancel", post(cancel))
        .route("/dead-letters", get(dead_letters))
        .route("/evidence.csv", get(evidence_csv))
        .route_layer(layer::from_fn_with_state(console.clone(), gate));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/console.css", get(stylesheet))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .merge(guarded)
        .fallback(|| async { Problem(StatusCode::NOT_FOUND, "no such page".into()) })
        .layer(layer::map_response(headers::secure))
        .with_state(console)
}

/// Serves the console on `listener` until `stop` turns true, checking readiness in the
/// background meanwhile (the broker's side through `broker`). Installs the metrics
/// recorder first, so everything the engine does from now on is counted. Warns once
/// when the console is open (no viewers' token) on an address other hosts can reach.
pub async fn serve(
    listener: TcpListener,
    console: Console,
    broker: BrokerLink,
    stop: tokio_util::sync::CancellationToken,
) {
    metrics::install();
    if let Ok(addr) = listener.local_addr() {
        if console.viewer_token.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the console shows every workflow, person and dead letter to anyone who reaches {addr}: set [http] viewer_token_env, or listen on a loopback address");
        }
    }
    let console = Arc::new(console);
    let app = router(console.clone());
    let until_stopped = stop.clone().cancelled_owned();
    let server = async {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(until_stopped)
            .await
        {
            tracing::error!(error = %e, "the HTTP listener stopped");
        }
    };
    let checks = console.readiness.run(console.engine.store(), &broker, stop);
    tokio::join!(server, checks);
}

/// Lets a request through to the console when the viewers' token allows it; otherwise
/// a browser's page request goes to `/login` (and back after), and anything else — a
/// script asking for JSON, a form post, a wrong bearer token — gets 401.
async fn gate(State(c): State<Arc<Console>>, request: Request, next: Next) -> Response {
    let verdict = c.tokens().judge(request.headers(), Utc::now().timestamp());
    let page = matches!(*request.method(), Method::GET | Method::HEAD);
    match verdict {
        Verdict::Open | Verdict::Allowed => next.run(request).await,
        Verdict::Missing if page && !access::wants_json(request.headers()) => {
            let here = request
                .uri()
                .path_and_query()
                .map_or("/workflows", |p| p.as_str());
            let next: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("next", here)
                .finish();
            Redirect::to(&format!("/login?{next}")).into_response()
        }
        Verdict::Missing => unauthorized(request.headers(), "sign in: a viewer token is needed"),
        Verdict::WrongBearer => {
            tracing::warn!(path = ?request.uri().path(), "console: a wrong bearer token was refused");
            unauthorized(request.headers(), "the bearer token is wrong")
        }
    }
}

/// A 401 that names the scheme, as JSON for a client that asked for it.
fn unauthorized(headers: &HeaderMap, why: &str) -> Response {
    let challenge = (
        header::WWW_AUTHENTICATE,
        "Bearer realm=\"offboard console\"",
    );
    if access::wants_json(headers) {
        let body = serde_json::json!({ "error": why }).to_string();
        let json = (header::CONTENT_TYPE, "application/json");
        (StatusCode::UNAUTHORIZED, [challenge, json], body).into_response()
    } else {
        let page = Html(pages::problem("Unauthorized", why, true));
        (StatusCode::UNAUTHORIZED, [challenge], page).into_response()
    }
}

/// Where the login form sends a browser after it signs in.
#[derive(serde::Deserialize)]
struct AfterLogin {
    next: Option<String>,
}

async fn login_form(State(c): State<Arc<Console>>, Query(q): Query<AfterLogin>) -> Response {
    if c.viewer_token.is_none() {
        return Redirect::to("/workflows").into_response();
    }
    Html(pages::login(access::safe_next(q.next.as_deref()), None)).into_response()
}

/// The login form as posted.
#[derive(serde::Deserialize)]
struct Login {
    token: String,
    next: Option<String>,
}

async fn login(State(c): State<Arc<Console>>, Form(form): Form<Login>) -> Response {
    let next = access::safe_next(form.next.as_deref());
    let Some(viewer) = &c.viewer_token else {
        return Redirect::to(next).into_response();
    };
    if !c.tokens().grants_viewing(&form.token) {
        tracing::warn!("console: a sign-in with a wrong token was refused");
        let page = pages::login(
            next,
            Some("That is neither the viewer nor the operator token."),
        );
        return (StatusCode::UNAUTHORIZED, Html(page)).into_response();
    }
    let session = access::session_value(viewer, Utc::now().timestamp());
    (
        [(header::SET_COOKIE, access::set_session(&session))],
        Redirect::to(next),
    )
        .into_response()
}

async fn logout(State(c): State<Arc<Console>>) -> Response {
    let to = match c.viewer_token {
        Some(_) => "/login",
        None => "/workflows",
    };
    (
        [(header::SET_COOKIE, access::clear_session())],
        Redirect::to(to),
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        pages::STYLESHEET,
    )
        .into_response()
}

/// A failure of a console request, as a status and one line for people.
struct Problem(StatusCode, String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = pages::problem(self.0.canonical_reason().unwrap_or("error"), &self.1, false);
        (self.0, Html(body)).into_response()
    }
}

fn db_problem(e: impl std::fmt::Display) -> Problem {
    Problem(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}"))
}

async fn readyz(State(c): State<Arc<Console>>) -> Response {
    match c.readiness.answer(Instant::now()) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => {
            let text = format!("not ready: {why}\n");
            (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
        }
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
        nav: c.nav(),
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
        nav: c.nav(),
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
    Ok(Html(pages::dead_letters(&rows, c.nav())))
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
