//! The broker-free half of handling a message, shared by the consumer and `offboard
//! demo`: the checks (delivery limit, signature, parse, admission), then the event's
//! workflows stored or the rejection recorded as a dead letter.

use crate::codes::Code;
use crate::config::IntakeConfig;
use crate::domain::admission::{self, SignatureHeaders, SignaturePolicy};
use crate::domain::event::{self, Rejection};
use crate::runtime::engine::{Engine, EngineError};
use crate::store::Accepted;

use super::dead_letter::record;
use super::DELIVERY_LIMIT;

/// A message as the intake reads it, whoever carried it: the broker's consumer, or
/// `offboard demo`, which has no broker.
pub struct Message<'a> {
    /// The CloudEvents JSON, as received.
    pub body: &'a [u8],
    /// Where it was published (the event type, by convention); kept with a dead letter.
    pub routing_key: &'a str,
    /// The signature headers it came with.
    pub signature: SignatureHeaders<'a>,
    /// How many times the broker delivered it before (`x-delivery-count`), if it says.
    pub delivery_count: Option<i64>,
}

/// What became of a message.
#[derive(Debug)]
pub enum Received {
    /// Its workflows are stored (or it was a duplicate, or it is held by the brake).
    Accepted(Accepted),
    /// It was rejected and the dead letter recorded; the consumer still publishes it to
    /// the dead-letter exchange.
    DeadLettered(Rejection),
}

/// The broker-free half of handling a message, the same for the consumer and the demo:
/// the delivery limit, the signature, the parse (with its bounds), the allowed sources
/// and recipients, then either the event's workflows are stored
/// ([`Engine::accept_reserved`], handed to this process's work loop when one runs) or the
/// rejection is recorded as a dead letter. `Err` is a database failure: nothing was
/// decided.
pub async fn receive(engine: &Engine, message: &Message<'_>) -> Result<Received, EngineError> {
    let rejection = match decide(engine, message).await? {
        Ok(accepted) => return Ok(Received::Accepted(accepted)),
        Err(rejection) => rejection,
    };
    record(engine, message, &rejection).await?;
    Ok(Received::DeadLettered(rejection))
}

/// Accepts the message or says why not.
async fn decide(
    engine: &Engine,
    message: &Message<'_>,
) -> Result<Result<Accepted, Rejection>, EngineError> {
    if let Some(count) = message.delivery_count.filter(|n| *n >= DELIVERY_LIMIT - 1) {
        return Ok(Err(Rejection {
            code: Code::Evt106,
            message: format!("delivered {} times without being processed", count + 1),
        }));
    }
    let intake = &engine.config().intake;
    if let Some(rejection) = signature_rejection(intake, message) {
        return Ok(Err(rejection));
    }
    let known: Vec<String> = engine.config().connections.keys().cloned().collect();
    let request = match event::parse(message.body, &known).and_then(|r| {
        admission::check_source(intake.allowed_sources.as_deref(), &r.source)?;
        admission::check_recipient(
            intake.recipient_domains.as_deref(),
            r.transfer_to.as_deref(),
        )?;
        Ok(r)
    }) {
        Ok(request) => request,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let text = String::from_utf8_lossy(message.body);
    let place = engine.reserve().await;
    let accepted = engine.accept_reserved(&request, &text, place).await?;
    if let (Ok(_), Some(t)) = (&accepted, request.time) {
        metrics::histogram!("offboard_intake_lag_seconds")
            .record((chrono::Utc::now() - t).as_seconds_f64().max(0.0));
    }
    Ok(accepted)
}

/// Why a message's signature is refused, when `[intake] signing_key_env` asks for one.
fn signature_rejection(intake: &IntakeConfig, message: &Message<'_>) -> Option<Rejection> {
    let keys = match intake.signing_keys() {
        Ok(keys) => keys,
        Err(why) => {
            return Some(Rejection {
                code: Code::Evt105,
                message: why.to_string(),
            })
        }
    };
    let policy = SignaturePolicy {
        keys: &keys,
        tolerance_secs: intake.signature_tolerance_secs,
        accept_legacy: intake.accept_legacy_signatures,
    };
    let now = chrono::Utc::now().timestamp();
    admission::check_signature(&policy, &message.signature, message.body, now).err()
}
