//! Pieces shared by the app simulators: the server's lifecycle (bind a free loopback
//! port, serve, stop on drop), injected faults (which requests they hit, how many times),
//! random transient trouble ([`Chaos`]) and a listener whose connections a fault can kill, so the client sees the connection
//! drop with no response, as with a real network failure.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A simulator's HTTP server on `127.0.0.1`; it stops when this value is dropped.
pub struct SimServer {
    addr: std::net::SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _task: tokio::task::JoinHandle<()>,
}

impl SimServer {
    /// Binds a free port on `127.0.0.1` and serves `router` from a spawned task. Handlers
    /// receive the connection's [`ConnHandle`] through `ConnectInfo`.
    pub async fn start(router: Router) -> io::Result<SimServer> {
        SimServer::start_on(0, router).await
    }

    /// As [`SimServer::start`], on a given port of `127.0.0.1` (`0`: any free one).
    pub async fn start_on(port: u16, router: Router) -> io::Result<SimServer> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<ConnHandle>();
            let _ = axum::serve(KillableListener::new(listener), service)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(SimServer {
            addr,
            shutdown: Some(tx),
            _task: task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Where a simulated credential (token, API key) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialStatus {
    /// Accepted.
    Active,
    /// Valid once, now expired.
    Expired,
    /// Withdrawn by its owner or an admin.
    Revoked,
}

/// A credential: whom it acts for and whether it still works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The user (member) the credential acts as.
    pub user_id: i64,
    /// Whether it still works.
    pub status: CredentialStatus,
}

/// The credentials a simulator accepts, by secret value.
#[derive(Clone, Debug, Default)]
pub struct Credentials(std::collections::HashMap<String, Credential>);

impl Credentials {
    /// Registers (or renews) an active credential acting as `user_id`.
    pub fn add(&mut self, secret: &str, user_id: i64) {
        let status = CredentialStatus::Active;
        self.0
            .insert(secret.to_string(), Credential { user_id, status });
    }

    /// Changes a known credential's status; unknown secrets are ignored.
    pub fn set_status(&mut self, secret: &str, status: CredentialStatus) {
        if let Some(c) = self.0.get_mut(secret) {
            c.status = status;
        }
    }

    /// The credential with this secret, if any.
    pub fn get(&self, secret: &str) -> Option<Credential> {
        self.0.get(secret).copied()
    }
}

/// A fault applied to the next `times` requests that match it (checked after
/// authentication); `K` is the simulator's own list of fault kinds.
#[derive(Clone, Debug)]
pub struct Fault<K> {
    /// Only requests with this method match (case-insensitive); `None` matches any.
    pub method: Option<String>,
    /// Only paths starting with this prefix match (`/users`, `/workspaces`…).
    pub path_prefix: String,
    /// How many matching requests are affected.
    pub times: u32,
    /// What happens to them.
    pub kind: K,
}

impl<K> Fault<K> {
    /// A fault for one request of any method whose path starts with `path_prefix`.
    pub fn new(path_prefix: &str, kind: K) -> Self {
        Fault {
            method: None,
            path_prefix: path_prefix.to_string(),
            times: 1,
            kind,
        }
    }

    /// Restricts the fault to one HTTP method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_string());
        self
    }

    /// Sets how many matching requests the fault affects.
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }

    fn matches(&self, method: &str, paths: &[&str]) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && paths.iter().any(|p| p.starts_with(&self.path_prefix))
    }
}

/// Takes one use of the first queued fault matching the request (any of `paths`, e.g.
/// with and without a version prefix); a fault used up is dropped from the queue.
pub fn take_fault<K: Clone>(faults: &mut Vec<Fault<K>>, method: &str, paths: &[&str]) -> Option<K> {
    let i = faults.iter().position(|f| f.matches(method, paths))?;
    let fault = &mut faults[i];
    fault.times = fault.times.saturating_sub(1);
    let kind = fault.kind.clone();
    if fault.times == 0 {
        faults.remove(i);
    }
    Some(kind)
}

/// Transient trouble a real API and network produce now and then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trouble {
    /// A 5xx answer (the app is overloaded or restarting).
    ServerError,
    /// A 429 answer with `Retry-After: 1`.
    RateLimited,
    /// The connection closes with no answer at all.
    Dropped,
}

/// Makes a share of requests fail transiently at random, one of [`Trouble`]'s three
/// kinds each time, in equal measure: an unreliable API without any script.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Chaos {
    /// The share of requests hit, between 0 and 1.
    pub rate: f64,
}

impl Chaos {
    /// The trouble for the next request, if it is hit.
    pub fn draw(&self) -> Option<Trouble> {
        use rand::RngExt;
        let mut rng = rand::rng();
        if !rng.random_bool(self.rate.clamp(0.0, 1.0)) {
            return None;
        }
        Some(match rng.random_range(0..3) {
            0 => Trouble::ServerError,
            1 => Trouble::RateLimited,
            _ => Trouble::Dropped,
        })
    }
}

/// Per-connection handle given to the middleware through `ConnectInfo`.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    killed: Arc<AtomicBool>,
}

impl ConnHandle {
    /// Makes the connection fail from now on, so it closes without a reply.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }
}

/// A TCP stream that starts failing every read and write once killed, which
/// makes hyper abandon the connection without writing a response.
pub struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

fn killed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection dropped by injected fault",
    )
}

impl KillableStream {
    fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_killed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// A listener whose connections can be killed through their [`ConnHandle`].
pub struct KillableListener {
    inner: TcpListener,
}

impl KillableListener {
    /// Wraps a bound listener.
    pub fn new(inner: TcpListener) -> Self {
        KillableListener { inner }
    }
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = ConnHandle;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let killed = Arc::new(AtomicBool::new(false));
                    let io = KillableStream {
                        inner: stream,
                        killed: killed.clone(),
                    };
                    return (io, ConnHandle { killed });
                }
                // Transient accept failures (e.g. too many open files): back off briefly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr().map(|_| ConnHandle {
            killed: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A key's calls in the sliding minute a simulated rate limit counts: drops the calls
/// older than a minute and returns the `Retry-After` a 429 sent `now` would carry (whole
/// seconds, at least one, until the oldest call left leaves the window).
pub fn slide_minute(hits: &mut VecDeque<Instant>, now: Instant) -> u64 {
    let window = Duration::from_secs(60);
    while hits
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        hits.pop_front();
    }
    let wait = hits
        .front()
        .map(|t| window.saturating_sub(now.duration_since(*t)))
        .unwrap_or(window);
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC), the
/// `dateTime` form SCIM and Smartsheet use.
pub fn iso_from_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days conversion (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// The current time as [`iso_from_unix`] formats it.
pub fn now_iso() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    iso_from_unix(secs)
}

/// A UUID-shaped id (version 4 layout) derived from a sequence number: distinct for
/// distinct numbers and stable from run to run, so a failing test shows the same ids.
pub fn uuid_from_seq(seq: u64) -> String {
    fn mix(mut x: u64) -> u64 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
    let a = mix(seq ^ 0x5c1d);
    let b = mix(a);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaos_hits_about_its_share_with_every_kind_of_trouble() {
        assert_eq!(Chaos { rate: 0.0 }.draw(), None);
        let chaos = Chaos { rate: 0.35 };
        let draws: Vec<Option<Trouble>> = (0..10_000).map(|_| chaos.draw()).collect();
        let hit = draws.iter().filter(|d| d.is_some()).count();
        assert!((3_000..4_000).contains(&hit), "{hit}");
        for kind in [Trouble::ServerError, Trouble::RateLimited, Trouble::Dropped] {
            let n = draws.iter().filter(|d| **d == Some(kind)).count();
            assert!(n > 800, "{kind:?}: {n}");
        }
    }

    #[test]
    fn dates_and_ids_are_well_formed() {
        assert_eq!(iso_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_from_unix(1_661_959_172), "2022-08-31T15:19:32Z");
        assert_eq!(uuid_from_seq(1).len(), 36);
        assert_ne!(uuid_from_seq(1), uuid_from_seq(2));
    }
}
