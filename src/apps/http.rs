//! The HTTP plumbing every app client shares: one reqwest client per connection, a pacer
//! that keeps the connection under its `requests_per_minute`, the secret header, and a
//! record of every call (method, path, status, app error code, duration) for the trail.
//! In dry-run mode ([`super::dry_run`], for `offboard plan`) writes are recorded, not sent.
//!
//! What an app sends back is bounded: a body is read up to [`MAX_BODY_BYTES`] and no
//! further, and list loops stop after [`MAX_PAGES`] pages, so a broken or hostile API can
//! neither exhaust memory nor keep a step paging forever; both end in the app's `-199-B`.
//!
//! No redirect is followed. The credential goes in a header built for each request, and
//! reqwest, following a redirect to another origin, drops `Authorization` but not a custom
//! header such as Postman's `X-Api-Key`: a `307` to another port would carry the key
//! away. So a `3xx` answer is [`CallFailure::Redirected`], naming where it pointed (query
//! stripped, so no token in a URL is repeated), and each app maps it to its `-199-B`,
//! never retried.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use futures_util::future::BoxFuture;

use tokio::time::Instant as TokioInstant;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, LOCATION, RETRY_AFTER,
};
use reqwest::Method;
use serde_json::Value;
use tokio::sync::{mpsc, Mutex};

use secrecy::zeroize::Zeroizing;

use super::dry_run::{is_write, DryRun};
pub use super::reply::Reply;
use super::ClientError;
use crate::config::Secret;

/// The largest response body read (8 MiB: far above any page the apps document).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The most pages one list is read to (100,000 entries at the page sizes asked for).
pub const MAX_PAGES: usize = 1000;

/// Why a step stops reading a list: it ran past [`MAX_PAGES`].
pub fn page_loop_message(path: &str) -> String {
    format!("{path}: still more pages after {MAX_PAGES}; stopped reading (the API keeps paging)")
}

/// Why a step stops reading a response: its body ran past [`MAX_BODY_BYTES`].
pub fn oversized_message(path: &str) -> String {
    format!(
        "{path}: the response body is larger than {} MiB; stopped reading it",
        MAX_BODY_BYTES / (1024 * 1024)
    )
}

/// One HTTP call as the audit trail keeps it. No header, no body, no secret.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    /// HTTP method.
    pub method: String,
    /// Path and query relative to the base URL.
    pub path: String,
    /// Status, when a response came.
    pub status: Option<u16>,
    /// The app's error code from the body, when there was one.
    pub error_code: Option<i64>,
    /// Time from sending to the full response.
    pub duration_ms: u64,
}

/// Where a client reports its calls; the runner writes them to the trail as they happen.
#[derive(Clone, Debug, Default)]
pub struct CallLog {
    sender: Option<mpsc::UnboundedSender<CallRecord>>,
    stop: Option<CancellationToken>,
}

impl CallLog {
    /// A log feeding `sender`.
    pub fn new(sender: mpsc::UnboundedSender<CallRecord>) -> Self {
        CallLog {
            sender: Some(sender),
            stop: None,
        }
    }

    /// A log that keeps nothing (connection checks).
    pub fn discard() -> Self {
        CallLog {
            sender: None,
            stop: None,
        }
    }

    /// The same log, for a step an operator may cancel with `stop`: the per-call retries
    /// give up (with the last error) as soon as it is cancelled.
    pub fn stopped_by(mut self, stop: CancellationToken) -> Self {
        self.stop = Some(stop);
        self
    }

    /// What stops the per-call retries of this step, if anything can.
    pub fn stop(&self) -> Option<&CancellationToken> {
        self.stop.as_ref()
    }

    fn record(&self, call: CallRecord) {
        if let Some(tx) = &self.sender {
            // The receiver only goes away when the step is over; nothing to keep then.
            let _ = tx.send(call);
        }
    }
}

/// Where a connection's request slots come from when several processes share its budget
/// (the runtime hands the database in; see `Store::take_request_span`).
pub trait SlotSource: Send + Sync + std::fmt::Debug {
    /// Reserves the next `span` of `budget`'s time — a run of slots end to end, which
    /// only the pacer counts — and returns how long to wait for its start.
    fn take_slots<'a>(
        &'a self,
        budget: &'a str,
        span: Duration,
    ) -> BoxFuture<'a, Result<Duration, BudgetUnavailable>>;
}

/// A [`SlotSource`] could not hand out slots (the database behind it failed); the pacer
/// then paces this process alone. The source's own error is kept.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BudgetUnavailable(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// How far ahead a process reserves shared slots in one go: one database write per
/// this much of the budget's time, not one per request — however many requests a fast
/// budget fits into it (at 60,000,000 a minute, 100,000 slots in one write).
const RESERVE_AHEAD: Duration = Duration::from_millis(100);

/// Spaces requests so a connection never exceeds its requests-per-minute budget, across
/// every workflow that shares it — and, once [`Pacer::share`]d, across every process.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    slots: Mutex<Slots>,
    shared: OnceLock<(String, Arc<dyn SlotSource>)>,
}

/// The slots this process holds: the next one, how many it has left, and the end of the
/// window they belong to (past it they are gone: another process may own the time after).
#[derive(Debug)]
struct Slots {
    next: TokioInstant,
    left: u32,
    end: TokioInstant,
}

impl Pacer {
    /// A pacer allowing `per_minute` requests a minute (at least one).
    pub fn new(per_minute: u32) -> Self {
        Pacer {
            // A hair (0.1 %) over the exact spacing, so timer jitter never fits one request
            // too many into an app's 60-second window.
            interval: (Duration::from_secs(60) / per_minute.max(1)).mul_f64(1.001),
            slots: Mutex::new(Slots {
                next: TokioInstant::now(),
                left: 0,
                end: TokioInstant::now(),
            }),
            shared: OnceLock::new(),
        }
    }

    /// Takes slots from `source` under the name `budget` from now on (once; later calls
    /// change nothing).
    pub fn share(&self, budget: &str, source: Arc<dyn SlotSource>) {
        let _ = self.shared.set((budget.to_string(), source));
    }

    /// Waits for this request's slot. A shared budget is drawn on in batches covering
    /// `RESERVE_AHEAD`; when it cannot be reached, this process paces itself alone
    /// rather than stop calling.
    pub async fn wait(&self) {
        let slot = {
            let mut slots = self.slots.lock().await;
            let now = TokioInstant::now();
            if now >= slots.end {
                // The window went by: its unused slots are gone, as using them late could
                // overlap another process's window.
                slots.left = 0;
            }
            if let (0, Some((budget, source))) = (slots.left, self.shared.get()) {
                let count = reserve_count(self.interval);
                let span = reserved_span(self.interval, count);
                match source.take_slots(budget, span).await {
                    Ok(wait) => {
                        *slots = Slots {
                            next: now + wait,
                            left: count,
                            end: now + wait + span,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(budget = %budget, error = %e, "shared request budget unavailable; pacing this process alone")
                    }
                }
            }
            let slot = slots.next.max(now);
            slots.next = slot + self.interval;
            slots.left = slots.left.saturating_sub(1);
            slot
        };
        // A slot already due is taken at once: a timer, even one already elapsed, waits
        // for the timer wheel's next millisecond tick.
        if slot > TokioInstant::now() {
            tokio::time::sleep_until(slot).await;
        }
    }
}

/// How many slots one reservation takes: as many as fit into [`RESERVE_AHEAD`], at least one.
fn reserve_count(interval: Duration) -> u32 {
    let count = RESERVE_AHEAD.as_micros() / interval.as_micros().max(1);
    count.clamp(1, u128::from(u32::MAX)) as u32
}

/// The stretch of time `count` slots `interval` apart cover in the shared budget, in whole
/// microseconds (the budget's unit): past its end the time is another process's, so the
/// slots left unused then are given up.
fn reserved_span(interval: Duration, count: u32) -> Duration {
    let micros = interval.as_micros().max(1) * u128::from(count);
    Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

/// The characters escaped in one segment of a URL's path: the WHATWG URL standard's
/// path-segment set, plus `/` and `%` so a value can neither add a segment nor pass for
/// an escape of its own.
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'%');

/// `value` (an id an app handed out) escaped for one segment of a request's path.
pub fn path_segment(value: &str) -> String {
    utf8_percent_encode(value, PATH_SEGMENT).to_string()
}

/// `value` escaped for a query string (`application/x-www-form-urlencoded`: a space is
/// `+`), as the apps read their filters and cursors.
pub fn query_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A call that brought back no answer to read.
#[derive(Debug, Clone, PartialEq)]
pub enum CallFailure {
    /// No HTTP response came (timeout, refused, reset…); the message has no secret.
    NoResponse(String),
    /// The app answered with a redirect (`status` 3xx), which is not followed; the
    /// message names the method, the path and the target ([`redirect_message`]).
    Redirected {
        /// The 3xx status.
        status: u16,
        /// What happened, the target escaped and without its query.
        message: String,
    },
}

impl CallFailure {
    /// The status (a redirect's, or `None` when no response came) and the message, for
    /// the apps' [`ApiError`](super::api_error::ApiError).
    pub fn into_parts(self) -> (Option<u16>, String) {
        match self {
            CallFailure::NoResponse(message) => (None, message),
            CallFailure::Redirected { status, message } => (Some(status), message),
        }
    }
}

/// The longest redirect target a message repeats (a `Location` can be kilobytes long).
const MAX_TARGET_CHARS: usize = 200;

/// Where a redirect pointed, fit for a message: `location` resolved against the request's
/// URL, without user info, query or fragment (they may hold tokens), at most
/// `MAX_TARGET_CHARS` characters. Quote it with `{:?}` to escape it.
pub fn redirect_target(request_url: &str, location: Option<&str>) -> String {
    let Some(location) = location else {
        return "nowhere (no Location header)".into();
    };
    let target = match url::Url::parse(request_url).and_then(|base| base.join(location)) {
        Ok(mut url) => {
            url.set_query(None);
            url.set_fragment(None);
            // Only URLs with a host have user info to clear; for the others these fail
            // and there is nothing to clear.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        // Not a URL: its text up to any query or fragment.
        Err(_) => location
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    match target.char_indices().nth(MAX_TARGET_CHARS) {
        Some((cut, _)) => format!("{}…", &target[..cut]),
        None => target,
    }
}

/// Why a redirect answer ends the call: `METHOD path: answered 307, a redirect to "…"`.
pub fn redirect_message(method: &Method, path: &str, status: u16, target: &str) -> String {
    format!(
        "{method} {path}: answered {status}, a redirect to {target:?}; offboard follows no redirect, so its credential never leaves the configured base_url"
    )
}

/// An authenticated JSON client for one connection.
#[derive(Debug)]
pub struct ApiHttp {
    client: reqwest::Client,
    base_url: String,
    auth_header: HeaderName,
    auth_scheme: Option<&'static str>,
    auth_value: Secret,
    pacer: Pacer,
    /// Set for `offboard plan`: writes are recorded there instead of sent.
    dry_run: Option<Arc<DryRun>>,
    /// The JSON media type sent as `Content-Type` and asked for in `Accept` (with
    /// `application/json` accepted too); `None` sends plain `application/json`.
    media_type: Option<&'static str>,
}

impl ApiHttp {
    /// A client for `base_url`, sending `auth_value` in `auth_header` (kept secret), after
    /// `auth_scheme` and a space when there is one (`Bearer`).
    pub fn new(
        base_url: &str,
        auth_header: HeaderName,
        auth_scheme: Option<&'static str>,
        auth_value: Secret,
        requests_per_minute: u32,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("offboard/", env!("CARGO_PKG_VERSION")))
            // See the module's documentation: a redirect is an answer, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(ApiHttp {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            auth_header,
            auth_scheme,
            auth_value,
            pacer: Pacer::new(requests_per_minute),
            dry_run: None,
            media_type: None,
        })
    }

    /// The same client speaking `media_type` (SCIM's `application/scim+json`): bodies are
    /// sent with it as `Content-Type`, and `Accept` asks for it or `application/json`.
    pub fn with_media_type(mut self, media_type: &'static str) -> Self {
        self.media_type = Some(media_type);
        self
    }

    /// Turns writes off: each write is recorded in `dry_run` and
    /// answered as a success, and reads are seen through its model (see [`DryRun`]).
    pub fn set_dry_run(&mut self, dry_run: Arc<DryRun>) {
        self.dry_run = Some(dry_run);
    }

    /// The credential header's value, built for this request only: the `Bearer …` text is
    /// assembled in a buffer zeroized right after, so no formatted copy of the secret stays.
    fn auth_header_value(&self) -> Result<HeaderValue, reqwest::header::InvalidHeaderValue> {
        let secret = self.auth_value.expose();
        match self.auth_scheme {
            None => HeaderValue::from_str(secret),
            Some(scheme) => {
                let mut text =
                    Zeroizing::new(String::with_capacity(scheme.len() + 1 + secret.len()));
                text.push_str(scheme);
                text.push(' ');
                text.push_str(secret);
                HeaderValue::from_str(&text)
            }
        }
    }

    /// The request to send: the credential, the call's own headers, and the body as JSON
    /// in the client's media type.
    fn request(
        &self,
        method: &Method,
        url: &str,
        body: Option<&Value>,
        headers: HeaderMap,
        credential: HeaderValue,
    ) -> reqwest::RequestBuilder {
        let request = self
            .client
            .request(method.clone(), url)
            .header(self.auth_header.clone(), credential)
            .headers(headers);
        match (self.media_type, body) {
            (Some(media), body) => {
                let request = request.header(ACCEPT, format!("{media}, application/json"));
                match body {
                    Some(body) => request
                        .header(CONTENT_TYPE, media)
                        .body(serde_json::to_vec(body).unwrap_or_default()),
                    None => request,
                }
            }
            (None, Some(body)) => request.json(body),
            (None, None) => request,
        }
    }

    /// Shares this client's request budget, under the name `budget`, with every process
    /// taking slots from `source`.
    pub fn share_budget(&self, budget: &str, source: Arc<dyn SlotSource>) {
        self.pacer.share(budget, source);
    }

    /// Sends one request; `error_code_of` extracts the app's error code from a body. A
    /// redirect is not followed: it comes back as [`CallFailure::Redirected`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        log: &CallLog,
        error_code_of: fn(&Value) -> Option<i64>,
    ) -> Result<Reply, CallFailure> {
        self.call_with(method, path, body, HeaderMap::new(), log, error_code_of)
            .await
    }

    /// [`ApiHttp::call`] with request headers of the call's own (SCIM's `If-Match`).
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: HeaderMap,
        log: &CallLog,
        error_code_of: fn(&Value) -> Option<i64>,
    ) -> Result<Reply, CallFailure> {
        if let Some(plan) = self.dry_run.as_ref().filter(|_| is_write(&method)) {
            // Not sent, so not paced or logged as a call: the plan lists it instead.
            return Ok(plan.write(method.as_str(), path, body));
        }
        self.pacer.wait().await;
        let mut value = self.auth_header_value().map_err(|_| {
            CallFailure::NoResponse(
                "the credential contains characters not allowed in a header".into(),
            )
        })?;
        value.set_sensitive(true);
        let url = format!("{}{path}", self.base_url);
        let request = self.request(&method, &url, body, headers, value);
        let started = Instant::now();
        let outcome = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let (bytes, oversized) = read_capped(response).await?;
            Ok::<_, reqwest::Error>((status, headers, bytes, oversized))
        }
        .await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let record = |status: Option<u16>, error_code: Option<i64>| CallRecord {
            method: method.to_string(),
            path: path.to_string(),
            status,
            error_code,
            duration_ms,
        };
        let (status, headers, bytes, oversized) = match outcome {
            Ok(answer) => answer,
            Err(e) => {
                log.record(record(None, None));
                return Err(no_response(&method, path, &e));
            }
        };
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let error_code = (status >= 400).then(|| error_code_of(&body)).flatten();
        log.record(record(Some(status), error_code));
        if (300..400).contains(&status) {
            let location = headers
                .get(LOCATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let target = redirect_target(&url, location.as_deref());
            return Err(CallFailure::Redirected {
                status,
                message: redirect_message(&method, path, status, &target),
            });
        }
        let mut reply = Reply {
            status,
            retry_after_ms: retry_after_ms(&headers),
            headers,
            body,
            oversized,
        };
        if let Some(plan) = &self.dry_run {
            plan.read(path, &mut reply);
        }
        Ok(reply)
    }
}

/// `Retry-After` in milliseconds, when the app gave it in seconds.
fn retry_after_ms(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| s * 1000)
}

/// A call that brought no answer, said without the URL's host or query: whether it
/// timed out, could not connect, or broke off.
fn no_response(method: &Method, path: &str, e: &reqwest::Error) -> CallFailure {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "connection failed"
    };
    CallFailure::NoResponse(format!("{method} {path}: {kind}"))
}

/// Reads a body chunk by chunk, up to [`MAX_BODY_BYTES`]; past that it stops (dropping
/// the response closes the connection) and says so.
async fn read_capped(mut response: reqwest::Response) -> Result<(Vec<u8>, bool), reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Ok((Vec::new(), true));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Ok((Vec::new(), true));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_stays_one_path_segment_and_a_query_value_one_value() {
        assert_eq!(path_segment("12345002"), "12345002");
        assert_eq!(
            path_segment("a b/../c%2F?x#y"),
            "a%20b%2F..%2Fc%252F%3Fx%23y"
        );
        assert_eq!(
            query_value("userName eq \"a+b@x.example\""),
            "userName+eq+%22a%2Bb%40x.example%22"
        );
    }

    #[test]
    fn the_credential_header_is_built_per_request_and_never_printed() {
        let http = |scheme| {
            ApiHttp::new(
                "http://127.0.0.1:9",
                reqwest::header::AUTHORIZATION,
                scheme,
                Secret::new("tok-123"),
                60,
                Duration::from_secs(1),
            )
            .unwrap()
        };
        let bearer = http(Some("Bearer"));
        assert_eq!(bearer.auth_header_value().unwrap(), "Bearer tok-123");
        assert_eq!(http(None).auth_header_value().unwrap(), "tok-123");
        assert!(!format!("{bearer:?}").contains("tok-123"));
    }

    /// A server that answers any request with a 200 and a body of `len` bytes (sent
    /// without a length, in 64 KiB chunks, as long as the client reads); returns its URL
    /// and a counter of the bytes it managed to send.
    async fn endless_body(len: u64) -> (String, Arc<std::sync::atomic::AtomicU64>) {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b' '; 64 * 1024];
            while counter.load(Ordering::Relaxed) < len {
                if socket.write_all(&chunk).await.is_err() {
                    return;
                }
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        });
        (url, sent)
    }

    /// A client of `url` sending `key` as an `X-Api-Key` header (as Postman's API wants),
    /// with budget to spare.
    fn api_key_client(url: &str, key: &str, timeout: Duration) -> ApiHttp {
        let header = HeaderName::from_static("x-api-key");
        ApiHttp::new(url, header, None, Secret::new(key), 60_000, timeout).unwrap()
    }

    #[tokio::test]
    async fn a_100_mib_body_is_not_read_past_the_cap() {
        let (url, sent) = endless_body(100 * 1024 * 1024).await;
        let http = api_key_client(&url, "k", Duration::from_secs(30));
        let reply = http
            .call(Method::GET, "/big", None, &CallLog::discard(), |_| None)
            .await
            .unwrap();
        assert!(reply.oversized);
        assert_eq!(reply.body, Value::Null);
        // Memory stays flat: the client hung up soon after the cap, long before 100 MiB
        // (what is in flight in socket buffers is all that passes the cap).
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(sent < 24 * 1024 * 1024, "{sent} bytes were sent");
    }

    #[test]
    fn redirect_targets_lose_user_info_query_and_fragment_and_are_bounded() {
        let asked = "http://127.0.0.1:8080/api/users/me";
        for (location, expected) in [
            (
                Some("http://127.0.0.1:9999/users/me?token=abc#top"),
                "http://127.0.0.1:9999/users/me",
            ),
            (Some("/elsewhere?key=v"), "http://127.0.0.1:8080/elsewhere"),
            (Some("next"), "http://127.0.0.1:8080/api/users/next"),
            (
                Some("https://who:pw@evil.example/x"),
                "https://evil.example/x",
            ),
            (None, "nowhere (no Location header)"),
        ] {
            assert_eq!(redirect_target(asked, location), expected, "{location:?}");
        }
        let long = format!("http://evil.example/{}", "a".repeat(5000));
        let cut = redirect_target(asked, Some(&long));
        assert_eq!(cut.chars().count(), MAX_TARGET_CHARS + 1);
        assert!(cut.ends_with('…'));
        // What came from the app is quoted and escaped in the message.
        let message = redirect_message(&Method::DELETE, "/users/7", 307, "x\u{1b}[2J\ny");
        assert!(
            !message.contains('\u{1b}') && !message.contains('\n'),
            "{message}"
        );
        assert!(
            message.starts_with("DELETE /users/7: answered 307, a redirect to \"x\\u{1b}[2J\\ny\"")
        );
    }

    /// A server answering every request with `status` and a `Location` pointing at a
    /// second server (with a query), and a counter of the requests the second one got.
    async fn redirecting(status: u16) -> (String, String, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::http::{header, StatusCode};
        let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = reached.clone();
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_url = format!("http://{}", target.local_addr().unwrap());
        let sink = axum::Router::new().fallback(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { "{}" }
        });
        tokio::spawn(async move { axum::serve(target, sink).await });
        let location = format!("{target_url}/stolen?token=secret-in-query");
        let redirect = axum::Router::new().fallback(move || {
            let location = location.clone();
            async move {
                (
                    StatusCode::from_u16(status).unwrap(),
                    [(header::LOCATION, location)],
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, redirect).await });
        (url, target_url, reached)
    }

    #[tokio::test]
    async fn a_redirect_is_an_answer_not_followed_and_the_key_stays_home() {
        for status in [301, 302, 303, 307, 308] {
            let (url, target, reached) = redirecting(status).await;
            let http = api_key_client(&url, "PMAK-must-not-travel", Duration::from_secs(5));
            for method in [Method::GET, Method::DELETE, Method::PATCH] {
                let body = serde_json::json!({"active": false});
                let got = http
                    .call(
                        method.clone(),
                        "/scim/v2/Users/1",
                        Some(&body),
                        &CallLog::discard(),
                        |_| None,
                    )
                    .await
                    .unwrap_err();
                let CallFailure::Redirected {
                    status: got_status,
                    message,
                } = got
                else {
                    panic!("{got:?}");
                };
                assert_eq!(got_status, status);
                assert!(message.contains(&format!("{target}/stolen")), "{message}");
                assert!(!message.contains("secret-in-query"), "{message}");
                assert!(
                    message.starts_with(&format!("{method} /scim/v2/Users/1")),
                    "{message}"
                );
            }
            assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_requests_evenly() {
        let pacer = Pacer::new(120); // one every 500 ms
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            pacer.wait().await;
        }
        assert_eq!(start.elapsed(), pacer.interval * 4);
        assert!(pacer.interval >= Duration::from_millis(500));
    }

    /// A shared budget that hands out every reservation at once and notes its span.
    #[derive(Debug, Default)]
    struct CountingSource(std::sync::Mutex<Vec<Duration>>);

    impl SlotSource for CountingSource {
        fn take_slots<'a>(
            &'a self,
            _budget: &'a str,
            span: Duration,
        ) -> BoxFuture<'a, Result<Duration, BudgetUnavailable>> {
            self.0.lock().unwrap().push(span);
            Box::pin(async { Ok(Duration::ZERO) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_shared_budget_is_reserved_once_per_window_not_once_per_request() {
        let pacer = Pacer::new(60_000_000); // one a microsecond: it cannot bind here
        let source = Arc::new(CountingSource::default());
        pacer.share("fast", source.clone());
        // (Paused, the clock moves a whole millisecond per timer: 50 waits fit in the window.)
        for _ in 0..50 {
            pacer.wait().await;
        }
        // 100,000 slots a microsecond apart: the whole 100 ms window in one reservation.
        assert_eq!(*source.0.lock().unwrap(), vec![RESERVE_AHEAD]);
        // Past the window, the unused slots are given up and a new window reserved.
        tokio::time::advance(RESERVE_AHEAD + Duration::from_millis(1)).await;
        pacer.wait().await;
        assert_eq!(
            *source.0.lock().unwrap(),
            vec![RESERVE_AHEAD, RESERVE_AHEAD]
        );
    }

    #[test]
    fn a_reservation_spans_the_time_the_store_reserves() {
        let fast = Duration::from_nanos(1001);
        assert_eq!(reserve_count(fast), 100_000);
        assert_eq!(reserved_span(fast, 100_000), RESERVE_AHEAD);
        let slow = Duration::from_millis(500);
        assert_eq!(reserve_count(slow), 1);
        assert_eq!(reserved_span(slow, 1), slow);
    }
}
