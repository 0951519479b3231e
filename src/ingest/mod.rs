//! The HR-facing HTTP intake `serve` opens when `[ingest] listen` is set (feature
//! `console`): `POST /events` takes CloudEvents as the CloudEvents HTTP binding sends
//! them and puts them on the exchange, so an HR system that can call a webhook needs no
//! AMQP bridge. It is its own listener, apart from the operators' console.
//!
//! A request is checked in this order, and answered at the first refusal:
//!
//! 1. its size: over [`request::MAX_REQUEST_BYTES`] is 413;
//! 2. its mode ([`request::mode`]): structured (`application/cloudevents+json` or
//!    `application/json`) or a batch (`application/cloudevents-batch+json`); binary mode
//!    and other types are 415;
//! 3. who sent it: the Standard Webhooks headers checked by the AMQP intake's own
//!    [`admission::check_signature`] under `[intake] signing_key_env` (for a batch,
//!    `webhook-id` is the batch's own id), or `Authorization: Bearer` with the token
//!    `[ingest] bearer_token_env` names, compared in constant time; otherwise 401 `EVT-105`;
//! 4. every event, by the AMQP intake's parser and admission lists ([`request::check`]):
//!    one bad event refuses the whole request, 400 with each one's code;
//! 5. the broker: each event is published to the exchange, signed again with the first
//!    configured key (so the consumer's check passes as for `offboard submit`), and the
//!    answer, `202 {"accepted": [ids…]}`, waits for the broker's confirms. A broker that
//!    cannot be reached or does not confirm is 503 with `Retry-After`; posting again is
//!    harmless, the engine deduplicates by event id.

pub mod request;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};
use tracing::{info, warn};

use crate::codes::Code;
use crate::config::{AmqpNames, Config, ConfigError, IntakeConfig, Secret};
use crate::console::access::{bearer, token_matches};
use crate::domain::admission::{self, SignatureHeaders, SignaturePolicy, SigningKey};
use crate::domain::event::Rejection;
use crate::intake::BrokerError;
use request::{Admitted, Refused};

/// What the client is told to wait before posting again after a 503, in seconds.
pub const RETRY_AFTER_SECS: u64 = 5;

/// The HTTP intake: what it checks requests against and the broker link it publishes on.
pub struct Ingest {
    intake: IntakeConfig,
    known_connections: Vec<String>,
    names: AmqpNames,
    amqp_url: String,
    keys: Vec<SigningKey>,
    bearer: Option<Secret>,
    /// The connection and confirming channel events are published on, opened on first
    /// use and again after a failure.
    link: Mutex<Option<(Connection, Channel)>>,
}

impl Ingest {
    /// The intake for `config`: its signing keys read from the environment (an error names
    /// the variable), `bearer` the token `[ingest] bearer_token_env` names, if any.
    pub fn new(config: &Config, bearer: Option<Secret>) -> Result<Ingest, ConfigError> {
        Ok(Ingest {
            intake: config.intake.clone(),
            known_connections: config.connections.keys().cloned().collect(),
            names: config.amqp.clone(),
            amqp_url: config.ingest.amqp_url(&config.amqp_url).to_string(),
            keys: config.intake.signing_keys()?,
            bearer,
            link: Mutex::new(None),
        })
    }

    /// Who sent the request, by bearer token or signature; why not, in one line.
    fn authenticate(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        if let (Some(expected), Some(given)) = (&self.bearer, bearer(headers)) {
            return if token_matches(expected, given) {
                Ok(())
            } else {
                Err("the bearer token is not the one [ingest] bearer_token_env names".into())
            };
        }
        if self.keys.is_empty() {
            return Err(
                "send the token [ingest] bearer_token_env names as Authorization: Bearer".into(),
            );
        }
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let signature = SignatureHeaders {
            id: text(admission::WEBHOOK_ID),
            timestamp: text(admission::WEBHOOK_TIMESTAMP),
            signature: text(admission::WEBHOOK_SIGNATURE),
            legacy: None,
        };
        let policy = SignaturePolicy {
            keys: &self.keys,
            tolerance_secs: self.intake.signature_tolerance_secs,
            accept_legacy: false,
        };
        let now = chrono::Utc::now().timestamp();
        admission::check_signature(&policy, &signature, body, now).map_err(|r| r.message)
    }

    /// A confirming channel to the broker, the one held if it is still open.
    async fn channel(&self) -> Result<Channel, BrokerError> {
        let mut link = self.link.lock().await;
        if let Some((conn, channel)) = link.as_ref() {
            if conn.status().connected() && channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        *link = None;
        let (conn, channel) = crate::intake::open_named(&self.amqp_url, "offboard ingest").await?;
        crate::intake::declare(&channel, &self.names)
            .await
            .map_err(BrokerError::Declare)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        *link = Some((conn, channel.clone()));
        Ok(channel)
    }

    /// Publishes every event, each signed again with the first key, and waits for each
    /// confirm. On a failure the link is dropped, to be opened again by the next request.
    async fn publish(&self, events: &[Admitted]) -> Result<(), BrokerError> {
        let result = async {
            let channel = self.channel().await?;
            for event in events {
                let now = chrono::Utc::now().timestamp();
                let signed = self
                    .keys
                    .first()
                    .map(|key| admission::sign(key, &event.id, now, &event.body));
                crate::intake::publish(
                    &channel,
                    &self.names.exchange,
                    event.event_type.as_str(),
                    &event.body,
                    signed.as_ref(),
                )
                .await?;
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            if let Some((conn, _)) = self.link.lock().await.take() {
                let _ = conn.close(200, "publish failed".into()).await;
            }
        }
        result
    }

    /// Everything a request goes through, in the order of the module's documentation.
    async fn answer(&self, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Answer {
        let body = match body {
            Ok(body) => body,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Answer::TooLarge(format!(
                    "the request is over the limit of {} bytes",
                    request::MAX_REQUEST_BYTES
                ))
            }
            Err(rejection) => return Answer::Unreadable(rejection.body_text()),
        };
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let has_ce_headers = headers.keys().any(|k| k.as_str().starts_with("ce-"));
        let mode = match request::mode(content_type, has_ce_headers) {
            Ok(mode) => mode,
            Err(why) => return Answer::Unsupported(why),
        };
        if let Err(why) = self.authenticate(headers, &body) {
            return Answer::Unauthorized(why);
        }
        let bodies = match request::split(mode, &body) {
            Ok(bodies) => bodies,
            Err(r) => return Answer::Malformed(r),
        };
        let events = match request::check(bodies, &self.known_connections, &self.intake) {
            Ok(events) => events,
            Err(refused) => return Answer::Invalid(refused),
        };
        match self.publish(&events).await {
            Ok(()) => Answer::Accepted(events.into_iter().map(|e| e.id).collect()),
            Err(e) => Answer::Unavailable(e),
        }
    }
}

/// What a request is answered.
enum Answer {
    /// 202: every event confirmed by the broker, by id.
    Accepted(Vec<String>),
    /// 400: the body could not be read.
    Unreadable(String),
    /// 400: the batch itself is wrong (not an array, empty, too many events).
    Malformed(Rejection),
    /// 413: the request is over the size limit.
    TooLarge(String),
    /// 415: not structured mode or a batch.
    Unsupported(String),
    /// 401: neither a good signature nor the bearer token.
    Unauthorized(String),
    /// 400: the refused events (a batch is refused whole).
    Invalid(Vec<Refused>),
    /// 503: the broker is away or did not confirm.
    Unavailable(BrokerError),
}

impl Answer {
    /// The `outcome` label of the request counter.
    fn outcome(&self) -> &'static str {
        match self {
            Answer::Accepted(_) => "accepted",
            Answer::Unreadable(_) | Answer::Malformed(_) | Answer::Invalid(_) => "invalid",
            Answer::TooLarge(_) => "too_large",
            Answer::Unsupported(_) => "unsupported",
            Answer::Unauthorized(_) => "unauthorized",
            Answer::Unavailable(_) => "unavailable",
        }
    }

    /// Logs what was decided; values from the request are escaped.
    fn log(&self) {
        match self {
            Answer::Accepted(ids) => info!(events = ids.len(), "HTTP intake accepted events"),
            Answer::Invalid(refused) => {
                for r in refused {
                    warn!(index = r.index, code = %r.rejection.code, reason = %r.rejection.message.escape_debug(), "HTTP intake refused an event")
                }
            }
            Answer::Unavailable(e) => {
                warn!(error = %e, "HTTP intake could not publish; answered 503")
            }
            Answer::Malformed(r) => {
                warn!(code = %r.code, reason = %r.message.escape_debug(), "HTTP intake refused a batch")
            }
            Answer::Unreadable(why) | Answer::TooLarge(why) | Answer::Unsupported(why) => {
                warn!(reason = %why.escape_debug(), outcome = self.outcome(), "HTTP intake refused a request")
            }
            Answer::Unauthorized(why) => {
                warn!(reason = %why.escape_debug(), "HTTP intake refused an unauthenticated request")
            }
        }
    }
}

/// `{"code": …, "message": …}`.
fn problem(code: Code, message: &str) -> serde_json::Value {
    json!({ "code": code.as_str(), "message": message })
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Accepted(ids) => (StatusCode::ACCEPTED, Json(json!({ "accepted": ids }))).into_response(),
            Answer::Unreadable(why) => (StatusCode::BAD_REQUEST, Json(problem(Code::Evt100, &why))).into_response(),
            Answer::TooLarge(why) => {
                (StatusCode::PAYLOAD_TOO_LARGE, Json(problem(Code::Evt100, &why))).into_response()
            }
            Answer::Unsupported(why) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Json(json!({ "message": why })),
            )
                .into_response(),
            Answer::Unauthorized(why) => {
                (StatusCode::UNAUTHORIZED, Json(problem(Code::Evt105, &why))).into_response()
            }
            Answer::Malformed(r) => {
                (StatusCode::BAD_REQUEST, Json(problem(r.code, &r.message))).into_response()
            }
            Answer::Invalid(refused) => {
                let events: Vec<serde_json::Value> = refused
                    .iter()
                    .map(|r| {
                        json!({
                            "index": r.index,
                            "code": r.rejection.code.as_str(),
                            "message": r.rejection.message,
                        })
                    })
                    .collect();
                let first = &refused[0].rejection;
                let mut body = problem(first.code, &first.message);
                body["events"] = json!(events);
                (StatusCode::BAD_REQUEST, Json(body)).into_response()
            }
            Answer::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
                Json(json!({
                    "message": "the event bus cannot be reached; post the request again later (events already published are recognised by their id)"
                })),
            )
                .into_response(),
        }
    }
}

async fn post_events(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = ingest.answer(&headers, body).await;
    answer.log();
    metrics::counter!("offboard_ingest_requests_total", "outcome" => answer.outcome()).increment(1);
    if let Answer::Accepted(ids) = &answer {
        metrics::counter!("offboard_ingest_events_total").increment(ids.len() as u64);
    }
    answer.into_response()
}

/// The route: `POST /events`, bodies up to [`request::MAX_REQUEST_BYTES`].
pub fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/events", post(post_events))
        .layer(DefaultBodyLimit::max(request::MAX_REQUEST_BYTES))
        .with_state(ingest)
}

/// Serves the HTTP intake on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, ingest: Ingest, mut stop: watch::Receiver<bool>) {
    crate::console::metrics::install();
    metrics::describe_counter!(
        "offboard_ingest_requests_total",
        "Requests to the HTTP intake's POST /events, by outcome"
    );
    metrics::describe_counter!(
        "offboard_ingest_events_total",
        "Events the HTTP intake published, each confirmed by the broker"
    );
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, router(Arc::new(ingest)))
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!(error = %e, "the HTTP intake's listener stopped");
    }
}
