//! The console's HTML, rendered on the server from plain data: no script, no stylesheet
//! or font from elsewhere, so it works on an air-gapped host. Pure functions (data in,
//! text out); every value that came from an event, an app or an operator goes through
//! [`esc`] before it reaches the page.
//!
//! The pages carry no inline style or script: their one stylesheet, [`STYLESHEET`], is
//! served as `/console.css`, so the Content-Security-Policy can allow styles from this
//! origin only (`style-src 'self'`) and scripts not at all.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::codes::Code;
use crate::domain::machine::{Record, State};
use crate::evidence::ReplayReport;
use crate::store::entities::workflow;
use crate::store::DeadLetterRow;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The console's stylesheet, served as `/console.css`.
pub const STYLESHEET: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330}\
header{background:#1d2330;color:#fff;padding:.6em 1.2em}header a{color:#fff;margin-right:1.2em}\
main{padding:1em 1.2em}table{border-collapse:collapse;width:100%}\
td,th{border-bottom:1px solid #dde;padding:.3em .5em;text-align:left;vertical-align:top}\
th{background:#f3f4f8}code,pre{font:12px ui-monospace,monospace}pre{background:#f6f7fa;padding:.6em;overflow:auto}\
.state{padding:.1em .5em;border-radius:.6em;background:#e4e7ef}.completed{background:#cdeccf}\
.failed{background:#f6caca}.retrying,.running{background:#fbe7b5}.cancelled{background:#ddd}\
.counts a{margin-right:1em}.error{border-left:4px solid #c33;padding:.2em 1em;background:#fdf0f0}\
.ok{color:#1a7f37}.bad{color:#c33}tr.api td{color:#555}tr.fail td{background:#fdf0f0}\
form.filters input,form.filters select{width:9em}section{margin-bottom:1.4em}\
th.key{width:12em}form.action{display:inline-block;margin-right:2em}\
header form{display:inline;float:right}header button{font:inherit}\
form.login label{display:block;margin:.6em 0}";

/// Whether the page header offers to sign out: only a console that asks for a viewers'
/// token has sessions to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nav {
    /// No sessions: the console is open, or this is the login page or an error.
    Plain,
    /// A **Sign out** button (`POST /logout`) in the header.
    SignOut,
}

/// A whole page around `body`.
pub fn layout(title: &str, body: &str, nav: Nav) -> String {
    let sign_out = match nav {
        Nav::Plain => "",
        Nav::SignOut => "<form method=\"post\" action=\"/logout\"><button>Sign out</button></form>",
    };
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title} · offboard</title><link rel=\"stylesheet\" href=\"/console.css\"></head><body>\
         <header>{sign_out}<a href=\"/workflows\"><b>offboard</b></a><a href=\"/workflows\">Workflows</a>\
         <a href=\"/dead-letters\">Dead letters</a><a href=\"/metrics\">Metrics</a></header>\
         <main>{body}</main></body></html>",
        title = esc(title)
    )
}

/// The login form: the token (the viewers' or the operators'), and where to go next.
pub fn login(next: &str, problem: Option<&str>) -> String {
    let mut b = String::from("<h1>Sign in</h1>");
    if let Some(p) = problem {
        b.push_str(&format!("<p class=\"error\">{}</p>", esc(p)));
    }
    b.push_str(&format!(
        "<form class=\"login\" method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label>viewer or operator token <input type=\"password\" name=\"token\" required \
         autocomplete=\"current-password\" autofocus></label><button>Sign in</button></form>",
        esc(next)
    ));
    layout("Sign in", &b, Nav::Plain)
}

fn state_badge(state: &str) -> String {
    let s = esc(state);
    format!("<span class=\"state {s}\">{s}</span>")
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_default()
}

/// The filters of the workflow list, as typed (echoed back into the form and the links).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct ListQuery {
    /// State.
    pub state: Option<String>,
    /// App.
    pub app: Option<String>,
    /// Connection.
    pub connection: Option<String>,
    /// Part of the person's email.
    pub person: Option<String>,
    /// Error code.
    pub code: Option<String>,
    /// Created on or after (YYYY-MM-DD).
    pub since: Option<String>,
    /// Created before (YYYY-MM-DD).
    pub until: Option<String>,
    /// Page, from 1.
    pub page: Option<u64>,
}

impl ListQuery {
    fn pairs(&self) -> [(&'static str, &Option<String>); 7] {
        [
            ("state", &self.state),
            ("app", &self.app),
            ("connection", &self.connection),
            ("person", &self.person),
            ("code", &self.code),
            ("since", &self.since),
            ("until", &self.until),
        ]
    }

    /// The query string for `page` with the same filters.
    fn link(&self, page: u64) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.pairs() {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                q.append_pair(k, v);
            }
        }
        q.append_pair("page", &page.to_string());
        format!("/workflows?{}", q.finish())
    }
}

/// What the workflow list shows.
pub struct ListView<'a> {
    /// The filters as typed.
    pub query: &'a ListQuery,
    /// A problem with them (an unreadable date), shown above the list.
    pub problem: Option<String>,
    /// Workflows per state, over all workflows.
    pub counts: &'a [(String, i64)],
    /// This page's rows.
    pub rows: &'a [workflow::Model],
    /// How many match the filters.
    pub total: u64,
    /// This page, from 1.
    pub page: u64,
    /// Rows per page.
    pub per_page: u64,
    /// The header's navigation.
    pub nav: Nav,
}

/// The workflow list: counts per state, filters, one page of rows, paging, and the
/// evidence download.
pub fn workflow_list(v: &ListView<'_>) -> String {
    let mut b = String::from("<h1>Workflows</h1><p class=\"counts\">");
    let all: i64 = v.counts.iter().map(|(_, n)| n).sum();
    b.push_str(&format!("<a href=\"/workflows\">all <b>{all}</b></a>"));
    for (state, n) in v.counts {
        let s = esc(state);
        b.push_str(&format!(
            "<a href=\"/workflows?state={s}\">{} <b>{n}</b></a>",
            state_badge(state)
        ));
    }
    b.push_str("</p><form class=\"filters\" method=\"get\" action=\"/workflows\">");
    for (name, value) in v.query.pairs() {
        let kind = if matches!(name, "since" | "until") {
            "date"
        } else {
            "text"
        };
        b.push_str(&format!(
            "<label>{name} <input type=\"{kind}\" name=\"{name}\" value=\"{}\"></label> ",
            esc(value.as_deref().unwrap_or(""))
        ));
    }
    b.push_str("<button>Filter</button></form>");
    if let Some(p) = &v.problem {
        b.push_str(&format!("<p class=\"error\">{}</p>", esc(p)));
    }
    b.push_str(
        "<table><thead><tr><th>created</th><th>person</th><th>app</th><th>connection</th>\
         <th>state</th><th>result</th><th>event</th></tr></thead><tbody>",
    );
    for r in v.rows {
        let result = r
            .outcome
            .as_deref()
            .or(r.error_code.as_deref())
            .unwrap_or("");
        b.push_str(&format!(
            "<tr><td>{}</td><td><a href=\"/workflows/{id}\">{}</a></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            time(r.created_at),
            esc(&r.person_email),
            esc(&r.app),
            esc(&r.connection),
            state_badge(&r.state),
            esc(result),
            esc(&r.event_id),
            id = esc(&r.id),
        ));
    }
    if v.rows.is_empty() {
        b.push_str("<tr><td colspan=\"7\">No workflows match.</td></tr>");
    }
    b.push_str("</tbody></table><p>");
    let pages = v.total.div_ceil(v.per_page).max(1);
    if v.page > 1 {
        b.push_str(&format!(
            "<a href=\"{}\">&larr; newer</a> ",
            esc(&v.query.link(v.page - 1))
        ));
    }
    b.push_str(&format!(
        "page {} of {pages} ({} workflows)",
        v.page, v.total
    ));
    if v.page < pages {
        b.push_str(&format!(
            " <a href=\"{}\">older &rarr;</a>",
            esc(&v.query.link(v.page + 1))
        ));
    }
    b.push_str(
        "</p><section><h2>Evidence for auditors</h2>\
         <form method=\"get\" action=\"/evidence.csv\">\
         <label>since <input type=\"date\" name=\"since\" required></label> \
         <label>until <input type=\"date\" name=\"until\"></label> \
         <button>Download CSV</button></form></section>",
    );
    layout("Workflows", &b, v.nav)
}

/// What one workflow's page shows.
pub struct DetailView<'a> {
    /// The row.
    pub row: &'a workflow::Model,
    /// Its machine state.
    pub state: &'a State,
    /// The trail, oldest first: position, time and the record (`None`: unreadable).
    pub trail: &'a [(i32, DateTime<Utc>, Option<Record>)],
    /// The replay verdict.
    pub replay: &'a ReplayReport,
    /// Whether retry and cancel are offered (an operator token is configured).
    pub operable: bool,
    /// The result of an operator action just taken, shown at the top.
    pub notice: Option<&'a str>,
    /// The header's navigation.
    pub nav: Nav,
}

fn dl(items: &[(&str, String)]) -> String {
    let mut b = String::from("<table>");
    for (k, v) in items {
        b.push_str(&format!("<tr><th class=\"key\">{k}</th><td>{v}</td></tr>"));
    }
    b.push_str("</table>");
    b
}

fn json_block(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "<p>not recorded</p>".into(),
        Some(v) => format!(
            "<pre>{}</pre>",
            esc(&serde_json::to_string_pretty(v).unwrap_or_default())
        ),
    }
}

/// A code with its explanation and remedy from the catalog.
fn code_box(code: &str, message: Option<&str>) -> String {
    let mut b = format!(
        "<div class=\"error\"><h2>Error <code>{}</code></h2>",
        esc(code)
    );
    if let Some(m) = message {
        b.push_str(&format!("<p>{}</p>", esc(m)));
    }
    if let Some(info) = Code::parse(code).map(Code::info) {
        b.push_str(&format!(
            "<p><b>{}</b></p><p>When: {}</p><h3>Remedy</h3><ol>",
            esc(info.message),
            esc(info.condition)
        ));
        for step in info.remedy {
            b.push_str(&format!("<li>{}</li>", esc(step)));
        }
        b.push_str("</ol>");
    }
    b.push_str("</div>");
    b
}

/// One trail record as a timeline row: class, step, what happened, code.
fn timeline_row(
    state: &State,
    at: DateTime<Utc>,
    record: &Record,
) -> (&'static str, String, String, String) {
    let step = |i: &usize| {
        state
            .steps
            .get(*i)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| format!("#{i}"))
    };
    match record {
        Record::Created {
            request,
            definition,
            ..
        } => (
            "created",
            String::new(),
            format!(
                "created from event {} ({} from {}) with {} v{}",
                request.event_id,
                request.event_type.as_str(),
                request.source,
                definition.name,
                definition.version
            ),
            String::new(),
        ),
        Record::StepStarted { step: i, attempt } => (
            "start",
            step(i),
            format!("attempt {attempt} started"),
            String::new(),
        ),
        Record::ApiCall {
            step: i,
            method,
            path,
            status,
            error_code,
            duration_ms,
            ..
        } => (
            "api",
            step(i),
            format!(
                "{method} {path} → {} in {duration_ms} ms",
                status.map_or("no response".into(), |s| s.to_string())
            ),
            error_code
                .map(|c| format!("errorCode {c}"))
                .unwrap_or_default(),
        ),
        Record::StepSucceeded {
            step: i,
            attempt,
            output,
        } => (
            "ok",
            step(i),
            format!("attempt {attempt} succeeded: {}", output.summary),
            String::new(),
        ),
        Record::StepFailed {
            step: i,
            attempt,
            error,
            retry_at,
            ..
        } => (
            "fail",
            step(i),
            format!(
                "attempt {attempt} failed: {}{}",
                error.message,
                match retry_at {
                    Some(t) => format!(
                        "; retry in {:.1} s (at {})",
                        (*t - at).as_seconds_f64().max(0.0),
                        time(*t)
                    ),
                    None => "; no retry".into(),
                }
            ),
            error.code.to_string(),
        ),
        Record::Completed { outcome } => (
            "ok",
            String::new(),
            format!("completed: {}", outcome.as_str()),
            String::new(),
        ),
        Record::Failed { code, message } => (
            "fail",
            String::new(),
            format!("failed: {message}"),
            code.to_string(),
        ),
        Record::Cancelled { by } => (
            "note",
            String::new(),
            format!("cancelled by {by}"),
            String::new(),
        ),
        Record::RetryRequested { by } => (
            "note",
            String::new(),
            format!("retry requested by {by}"),
            String::new(),
        ),
        Record::DuplicateReceived { source } => (
            "note",
            String::new(),
            format!("the same event arrived again (from {source}); nothing new started"),
            String::new(),
        ),
        Record::CancelRefused { by } => (
            "note",
            String::new(),
            format!("cancel asked by {by} refused: the workflow had already ended"),
            String::new(),
        ),
        Record::Held {
            limit,
            in_last_hour,
        } => (
            "note",
            String::new(),
            format!("held by the brake: {in_last_hour} offboardings in the last hour, over the limit of {limit}"),
            String::new(),
        ),
        Record::Released { by } => (
            "note",
            String::new(),
            format!("released by {by}"),
            String::new(),
        ),
        Record::Rechecked { recheck, finding } => (
            if finding.code.is_some() { "fail" } else { "ok" },
            "recheck".to_string(),
            format!(
                "recheck {}: {} ({})",
                recheck + 1,
                finding.result.as_str(),
                finding.summary
            ),
            finding.code.map(|c| c.to_string()).unwrap_or_default(),
        ),
        Record::RecheckFailed {
            recheck,
            attempt,
            error,
            retry_at,
            ..
        } => (
            "note",
            "recheck".to_string(),
            format!(
                "recheck {} attempt {attempt} failed: {}; again at {}",
                recheck + 1,
                error.message,
                time(*retry_at)
            ),
            error.code.to_string(),
        ),
    }
}

fn replay_verdict(report: &ReplayReport, records: usize) -> String {
    match (&report.problem, &report.rebuilt) {
        (None, Some(s)) => format!(
            "<p class=\"ok\">Replay OK: {records} records, chain intact, state rebuilt from the trail matches ({}{}).</p>",
            s.status.as_str(),
            s.outcome.map(|o| format!(", {}", o.as_str())).unwrap_or_default()
        ),
        (Some((seq, why)), _) => format!(
            "<p class=\"bad\">Replay MISMATCH at record {seq}: {}</p>",
            esc(why)
        ),
        (None, None) => "<p class=\"bad\">Replay rebuilt nothing.</p>".into(),
    }
}

fn action_form(id: &str, action: &str, label: &str) -> String {
    format!(
        "<form class=\"action\" method=\"post\" action=\"/workflows/{id}/{action}\">\
         <label>your name <input name=\"by\" required maxlength=\"100\"></label> \
         <label>operator token <input type=\"password\" name=\"token\" required autocomplete=\"off\"></label> \
         <button>{label}</button></form>",
        id = esc(id)
    )
}

/// One workflow: person, event, definition, steps, timeline, error with its remedy,
/// entitlements before and after, the replay verdict, and the operator's buttons.
pub fn workflow_detail(v: &DetailView<'_>) -> String {
    let (row, state) = (v.row, v.state);
    let r = &state.request;
    let mut b = format!(
        "<h1>{} <small>on {} ({})</small> {}</h1>",
        esc(&row.person_email),
        esc(&row.connection),
        esc(&row.app),
        state_badge(&row.state)
    );
    if let Some(n) = v.notice {
        b.push_str(&format!("<p class=\"error\">{}</p>", esc(n)));
    }
    if let Some(o) = &row.outcome {
        b.push_str(&format!("<p class=\"ok\">Outcome: <b>{}</b></p>", esc(o)));
    }
    if let Some(code) = &row.error_code {
        b.push_str(&code_box(code, row.error_message.as_deref()));
    }
    b.push_str("<section><h2>Request</h2>");
    b.push_str(&dl(&[
        ("workflow", format!("<code>{}</code>", esc(&row.id))),
        ("event id", esc(&r.event_id)),
        ("event type", esc(r.event_type.as_str())),
        ("event source", esc(&r.source)),
        ("event time", opt_time(r.event_time)),
        ("recipient", esc(r.transfer_to.as_deref().unwrap_or("none"))),
        ("not before", opt_time(r.not_before)),
        (
            "definition",
            format!(
                "{} v{} <code>{}</code>",
                esc(&state.definition.name),
                state.definition.version,
                esc(state.definition.hash.get(..12).unwrap_or(""))
            ),
        ),
        ("created", time(row.created_at)),
        ("updated", time(row.updated_at)),
        ("finished", opt_time(row.finished_at)),
        ("next attempt", opt_time(row.wake_at)),
    ]));
    b.push_str("</section><section><h2>Steps</h2><table><thead><tr><th>step</th><th>state</th><th>attempts</th><th>code</th></tr></thead><tbody>");
    for s in &state.steps {
        let st = serde_json::to_value(s.state).unwrap_or_default();
        b.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.name),
            esc(st.as_str().unwrap_or("")),
            s.attempts,
            s.error_code.map(|c| c.to_string()).unwrap_or_default()
        ));
    }
    b.push_str("</tbody></table></section><section><h2>Timeline</h2><table><thead><tr><th>#</th><th>time</th><th>step</th><th>what happened</th><th>code</th></tr></thead><tbody>");
    for (seq, at, record) in v.trail {
        let (class, step, what, code) = match record {
            Some(rec) => timeline_row(state, *at, rec),
            None => (
                "fail",
                String::new(),
                "unreadable record".into(),
                String::new(),
            ),
        };
        b.push_str(&format!(
            "<tr class=\"{class}\"><td>{seq}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            at.format("%H:%M:%S%.3f"),
            esc(&step),
            esc(&what),
            esc(&code)
        ));
    }
    b.push_str("</tbody></table></section><section><h2>Entitlements</h2><h3>Before</h3>");
    b.push_str(&json_block(state.facts.get("entitlements_before")));
    b.push_str("<h3>After</h3>");
    b.push_str(&json_block(state.facts.get("entitlements_after")));
    b.push_str("</section><section><h2>Replay</h2>");
    b.push_str(&replay_verdict(v.replay, v.trail.len()));
    b.push_str("</section>");
    if v.operable {
        let mut forms = String::new();
        if row.state == "failed" {
            forms.push_str(&action_form(&row.id, "retry", "Retry"));
        }
        if row.finished_at.is_none() {
            forms.push_str(&action_form(&row.id, "cancel", "Cancel"));
        }
        if !forms.is_empty() {
            b.push_str(&format!("<section><h2>Operator</h2>{forms}</section>"));
        }
    }
    layout(&row.person_email, &b, v.nav)
}

/// How much of a dead letter's body the console shows.
pub const BODY_PREVIEW: usize = 4096;

/// The first `limit` bytes of `body` (cut back to a character boundary), and whether
/// anything was left out.
fn preview(body: &str, limit: usize) -> (&str, bool) {
    if body.len() <= limit {
        return (body, false);
    }
    let mut end = limit;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    (&body[..end], true)
}

/// A byte count for people: `812 B`, `4.0 KiB`, `1.5 MiB`.
fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    match n {
        n if n < 1024.0 => format!("{n} B"),
        n if n < 1024.0 * 1024.0 => format!("{:.1} KiB", n / 1024.0),
        n => format!("{:.1} MiB", n / (1024.0 * 1024.0)),
    }
}

/// The newest dead letters with their codes, each body shown up to [`BODY_PREVIEW`]
/// bytes with its whole size.
pub fn dead_letters(rows: &[DeadLetterRow], nav: Nav) -> String {
    let mut b = String::from(
        "<h1>Dead letters</h1><table><thead><tr><th>received</th><th>code</th><th>why</th>\
         <th>event id</th><th>routing key</th><th>size</th><th>body (first 4 KiB)</th></tr></thead><tbody>",
    );
    for d in rows {
        let explained = Code::parse(&d.code).map(Code::message).unwrap_or("");
        let (shown, cut) = preview(&d.body, BODY_PREVIEW);
        let size = d.size.unwrap_or(d.body.len() as i64);
        b.push_str(&format!(
            "<tr><td>{}</td><td><code title=\"{}\">{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><pre>{}{}</pre></td></tr>",
            time(d.received_at),
            esc(explained),
            esc(&d.code),
            esc(&d.message),
            esc(d.event_id.as_deref().unwrap_or("")),
            esc(&d.routing_key),
            bytes(size),
            esc(shown),
            if cut || size > shown.len() as i64 { "…" } else { "" },
        ));
    }
    if rows.is_empty() {
        b.push_str("<tr><td colspan=\"7\">No dead letters.</td></tr>");
    }
    b.push_str("</tbody></table>");
    layout("Dead letters", &b, nav)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_quotes_are_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn page_links_keep_the_filters() {
        let q = ListQuery {
            state: Some("failed".into()),
            person: Some("a b@x".into()),
            app: Some(String::new()),
            ..ListQuery::default()
        };
        assert_eq!(q.link(2), "/workflows?state=failed&person=a+b%40x&page=2");
    }

    #[test]
    fn a_long_body_is_cut_at_a_character_and_its_size_shown() {
        let long = format!("<i>{}é{}", "a".repeat(4092), "x".repeat(20_000));
        let (shown, cut) = preview(&long, BODY_PREVIEW);
        assert!(cut && shown.len() == 4095, "cut before the two-byte é");
        assert_eq!(preview("short", BODY_PREVIEW), ("short", false));
        let row = DeadLetterRow {
            received_at: Utc::now(),
            code: "EVT-101".into(),
            message: "not JSON".into(),
            event_id: None,
            routing_key: "offboarding.requested".into(),
            body: long.clone(),
            size: Some(200_000),
        };
        let html = dead_letters(&[row], Nav::Plain);
        assert!(html.contains("195.3 KiB"), "the whole size");
        assert!(
            html.contains("&lt;i&gt;aaa") && !html.contains("<i>"),
            "escaped"
        );
        assert!(
            html.len() < 4 * BODY_PREVIEW,
            "{} bytes of page",
            html.len()
        );
    }

    #[test]
    fn pages_have_no_inline_style_or_script() {
        let pages = [
            login("/workflows", Some("wrong <token>")),
            dead_letters(&[], Nav::SignOut),
            layout("x", "<p>y</p>", Nav::Plain),
        ];
        for page in pages {
            for inline in ["<style", "style=", "<script", "javascript:"] {
                assert!(!page.contains(inline), "{inline} in {page}");
            }
        }
        assert!(dead_letters(&[], Nav::SignOut).contains("action=\"/logout\""));
        assert!(!dead_letters(&[], Nav::Plain).contains("/logout"));
    }

    #[test]
    fn a_code_shows_its_catalog_remedy() {
        let html = code_box("SMT-110-B", Some("recipient <b> missing"));
        let info = Code::Smt110B.info();
        assert!(html.contains(&esc(info.message)));
        assert!(html.contains(&esc(info.remedy[0])));
        assert!(html.contains("recipient &lt;b&gt; missing"));
    }
}
