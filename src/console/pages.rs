//! The console's HTML, rendered on the server from plain data: no script, no stylesheet
//! or font from elsewhere, so it works on an air-gapped host. Pure functions (data in,
//! text out) over [`maud`] templates, which are checked at compile time and escape every
//! value spliced into them, so nothing that came from an event, an app or an operator can
//! become markup.
//!
//! The pages carry no inline style or script: their one stylesheet, [`STYLESHEET`], is
//! served as `/console.css`, so the Content-Security-Policy can allow styles from this
//! origin only (`style-src 'self'`) and scripts not at all.

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use crate::codes::Code;
use crate::domain::describe::{describe, Description};
use crate::domain::machine::{Record, State};
use crate::evidence::ReplayReport;
use crate::store::entities::workflow;
use crate::store::DeadLetterRow;

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
fn layout(title: &str, body: Markup, nav: Nav) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · offboard" }
                link rel="stylesheet" href="/console.css";
            }
            body {
                header {
                    @if nav == Nav::SignOut {
                        form method="post" action="/logout" { button { "Sign out" } }
                    }
                    a href="/workflows" { b { "offboard" } }
                    a href="/workflows" { "Workflows" }
                    a href="/dead-letters" { "Dead letters" }
                    a href="/metrics" { "Metrics" }
                }
                main { (body) }
            }
        }
    }
    .into_string()
}

/// A page that only says what went wrong (`title` is the status), with a link to the
/// login form when signing in would help.
pub fn problem(title: &str, message: &str, offer_sign_in: bool) -> String {
    let body = html! {
        p.error { (message) }
        @if offer_sign_in {
            p { a href="/login" { "Sign in" } }
        }
    };
    layout(title, body, Nav::Plain)
}

/// The login form: the token (the viewers' or the operators'), and where to go next.
pub fn login(next: &str, problem: Option<&str>) -> String {
    let body = html! {
        h1 { "Sign in" }
        @if let Some(p) = problem {
            p.error { (p) }
        }
        form.login method="post" action="/login" {
            input type="hidden" name="next" value=(next);
            label {
                "viewer or operator token "
                input type="password" name="token" required autocomplete="current-password" autofocus;
            }
            button { "Sign in" }
        }
    };
    layout("Sign in", body, Nav::Plain)
}

fn state_badge(state: &str) -> Markup {
    html! { span class={ "state " (state) } { (state) } }
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
    let all: i64 = v.counts.iter().map(|(_, n)| n).sum();
    let body = html! {
        h1 { "Workflows" }
        p.counts {
            a href="/workflows" { "all " b { (all) } }
            @for (state, n) in v.counts {
                a href={ "/workflows?state=" (state) } { (state_badge(state)) " " b { (n) } }
            }
        }
        (filters(v.query))
        @if let Some(p) = &v.problem {
            p.error { (p) }
        }
        table {
            thead { tr {
                th { "created" } th { "person" } th { "app" } th { "connection" }
                th { "state" } th { "result" } th { "event" }
            } }
            tbody {
                @for r in v.rows { (list_row(r)) }
                @if v.rows.is_empty() {
                    tr { td colspan="7" { "No workflows match." } }
                }
            }
        }
        (paging(v))
        section {
            h2 { "Evidence for auditors" }
            form method="get" action="/evidence.csv" {
                label { "since " input type="date" name="since" required; } " "
                label { "until " input type="date" name="until"; } " "
                button { "Download CSV" }
            }
        }
    };
    layout("Workflows", body, v.nav)
}

/// The filter form, holding the filters as typed.
fn filters(query: &ListQuery) -> Markup {
    html! {
        form.filters method="get" action="/workflows" {
            @for (name, value) in query.pairs() {
                @let kind = if matches!(name, "since" | "until") { "date" } else { "text" };
                label { (name) " " input type=(kind) name=(name) value=(value.as_deref().unwrap_or("")); } " "
            }
            button { "Filter" }
        }
    }
}

/// One workflow in the list; its person links to its page.
fn list_row(r: &workflow::Model) -> Markup {
    let result = r
        .outcome
        .as_deref()
        .or(r.error_code.as_deref())
        .unwrap_or("");
    html! {
        tr {
            td { (time(r.created_at)) }
            td { a href={ "/workflows/" (r.id) } { (r.person_email) } }
            td { (r.app) }
            td { (r.connection) }
            td { (state_badge(&r.state)) }
            td { (result) }
            td { (r.event_id) }
        }
    }
}

/// Where this page is among all, with links to its neighbours.
fn paging(v: &ListView<'_>) -> Markup {
    let pages = v.total.div_ceil(v.per_page).max(1);
    html! {
        p {
            @if v.page > 1 {
                a href=(v.query.link(v.page - 1)) { "← newer" } " "
            }
            "page " (v.page) " of " (pages) " (" (v.total) " workflows)"
            @if v.page < pages {
                " " a href=(v.query.link(v.page + 1)) { "older →" }
            }
        }
    }
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

/// One workflow: person, event, definition, steps, timeline, error with its remedy,
/// entitlements before and after, the replay verdict, and the operator's buttons.
pub fn workflow_detail(v: &DetailView<'_>) -> String {
    let (row, state) = (v.row, v.state);
    let body = html! {
        h1 {
            (row.person_email) " " small { "on " (row.connection) " (" (row.app) ")" } " "
            (state_badge(&row.state))
        }
        @if let Some(n) = v.notice {
            p.error { (n) }
        }
        @if let Some(o) = &row.outcome {
            p.ok { "Outcome: " b { (o) } }
        }
        @if let Some(code) = &row.error_code {
            (code_box(code, row.error_message.as_deref()))
        }
        (request(row, state))
        (steps(state))
        (timeline(state, v.trail))
        section {
            h2 { "Entitlements" }
            h3 { "Before" } (json_block(state.facts.get("entitlements_before")))
            h3 { "After" } (json_block(state.facts.get("entitlements_after")))
        }
        section { h2 { "Replay" } (replay_verdict(v.replay, v.trail.len())) }
        @if v.operable { (operator(row)) }
    };
    layout(&row.person_email, body, v.nav)
}

/// The request and the workflow's times, as a two-column table.
fn request(row: &workflow::Model, state: &State) -> Markup {
    let r = &state.request;
    let definition = html! {
        (state.definition.name) " v" (state.definition.version) " "
        code { (state.definition.hash.get(..12).unwrap_or("")) }
    };
    let items = [
        ("workflow", html! { code { (row.id) } }),
        ("event id", html! { (r.event_id) }),
        ("event type", html! { (r.event_type.as_str()) }),
        ("event source", html! { (r.source) }),
        ("event time", html! { (opt_time(r.event_time)) }),
        (
            "recipient",
            html! { (r.transfer_to.as_deref().unwrap_or("none")) },
        ),
        ("not before", html! { (opt_time(r.not_before)) }),
        ("definition", definition),
        ("created", html! { (time(row.created_at)) }),
        ("updated", html! { (time(row.updated_at)) }),
        ("finished", html! { (opt_time(row.finished_at)) }),
        ("next attempt", html! { (opt_time(row.wake_at)) }),
    ];
    html! {
        section {
            h2 { "Request" }
            table {
                @for (key, value) in items {
                    tr { th.key { (key) } td { (value) } }
                }
            }
        }
    }
}

/// Each step with its state, attempts and code.
fn steps(state: &State) -> Markup {
    html! {
        section {
            h2 { "Steps" }
            table {
                thead { tr { th { "step" } th { "state" } th { "attempts" } th { "code" } } }
                tbody {
                    @for s in &state.steps {
                        tr {
                            td { (s.name) }
                            td { (s.state.as_str()) }
                            td { (s.attempts) }
                            td { @if let Some(c) = s.error_code { (c) } }
                        }
                    }
                }
            }
        }
    }
}

/// The trail, one row per record in [`describe`]'s words, coloured by its tone.
fn timeline(state: &State, trail: &[(i32, DateTime<Utc>, Option<Record>)]) -> Markup {
    let names: Vec<String> = state.steps.iter().map(|s| s.name.clone()).collect();
    html! {
        section {
            h2 { "Timeline" }
            table {
                thead { tr {
                    th { "#" } th { "time" } th { "step" } th { "what happened" } th { "code" }
                } }
                tbody {
                    @for (seq, at, record) in trail {
                        @let d = record
                            .as_ref()
                            .map_or_else(Description::unreadable, |r| describe(r, *at, &names));
                        tr class=(d.tone.as_str()) {
                            td { (seq) }
                            td { (at.format("%H:%M:%S%.3f")) }
                            td { (d.step.unwrap_or_default()) }
                            td { (d.summary) }
                            td { (d.code.unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}

fn json_block(v: Option<&Value>) -> Markup {
    match v {
        None | Some(Value::Null) => html! { p { "not recorded" } },
        Some(v) => html! { pre { (serde_json::to_string_pretty(v).unwrap_or_default()) } },
    }
}

/// A code with its explanation and remedy from the catalog.
fn code_box(code: &str, message: Option<&str>) -> Markup {
    html! {
        div.error {
            h2 { "Error " code { (code) } }
            @if let Some(m) = message {
                p { (m) }
            }
            @if let Some(info) = Code::parse(code).map(Code::info) {
                p { b { (info.message) } }
                p { "When: " (info.condition) }
                h3 { "Remedy" }
                ol {
                    @for step in info.remedy {
                        li { (step) }
                    }
                }
            }
        }
    }
}

/// [`ReplayReport::verdict`], the words `offboard replay` prints.
fn replay_verdict(report: &ReplayReport, records: usize) -> Markup {
    match report.verdict(records) {
        Ok(verdict) => html! { p.ok { "Replay OK: " (verdict) } },
        Err(problem) => html! { p.bad { "Replay MISMATCH " (problem) } },
    }
}

/// Retry for a failed workflow and cancel for an unfinished one, if either applies.
fn operator(row: &workflow::Model) -> Markup {
    let retry = row.state == "failed";
    let cancel = row.finished_at.is_none();
    html! {
        @if retry || cancel {
            section {
                h2 { "Operator" }
                @if retry { (action_form(&row.id, "retry", "Retry")) }
                @if cancel { (action_form(&row.id, "cancel", "Cancel")) }
            }
        }
    }
}

fn action_form(id: &str, action: &str, label: &str) -> Markup {
    html! {
        form.action method="post" action={ "/workflows/" (id) "/" (action) } {
            label { "your name " input name="by" required maxlength="100"; } " "
            label {
                "operator token "
                input type="password" name="token" required autocomplete="off";
            } " "
            button { (label) }
        }
    }
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
    let body = html! {
        h1 { "Dead letters" }
        table {
            thead { tr {
                th { "received" } th { "code" } th { "why" } th { "event id" }
                th { "routing key" } th { "size" } th { "body (first 4 KiB)" }
            } }
            tbody {
                @for d in rows { (dead_letter(d)) }
                @if rows.is_empty() {
                    tr { td colspan="7" { "No dead letters." } }
                }
            }
        }
    };
    layout("Dead letters", body, nav)
}

/// One dead letter: its code (explained on hover), why, and the start of its body.
fn dead_letter(d: &DeadLetterRow) -> Markup {
    let explained = Code::parse(&d.code).map(Code::message).unwrap_or("");
    let (shown, cut) = preview(&d.body, BODY_PREVIEW);
    let size = d.size.unwrap_or(d.body.len() as i64);
    let more = if cut || size > shown.len() as i64 {
        "…"
    } else {
        ""
    };
    html! {
        tr {
            td { (time(d.received_at)) }
            td { code title=(explained) { (d.code) } }
            td { (d.message) }
            td { (d.event_id.as_deref().unwrap_or("")) }
            td { (d.routing_key) }
            td { (bytes(size)) }
            td { pre { (shown) (more) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` as maud splices it into a page.
    fn escaped(text: &str) -> String {
        html! { (text) }.into_string()
    }

    #[test]
    fn outside_values_cannot_become_markup() {
        let hostile = r#"/x"><script>alert("x")</script>"#;
        let page = login(hostile, Some("<b>wrong</b> & 'late'"));
        assert!(
            !page.contains("<script>") && !page.contains("<b>wrong"),
            "{page}"
        );
        assert!(page.contains(r#"value="/x&quot;&gt;&lt;script&gt;alert(&quot;x&quot;)"#));
        assert!(page.contains("&lt;b&gt;wrong&lt;/b&gt; &amp; 'late'"));
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
            problem("Unauthorized", "<p>y</p>", true),
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
        let html = code_box("SMT-110-B", Some("recipient <b> missing")).into_string();
        let info = Code::Smt110B.info();
        assert!(html.contains(&escaped(info.message)));
        assert!(html.contains(&escaped(info.remedy[0])));
        assert!(html.contains("recipient &lt;b&gt; missing"));
    }
}
