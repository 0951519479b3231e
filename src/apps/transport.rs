//! One API as a client speaks to it: the HTTP client ([`ApiHttp`]: credential, request
//! budget, redirects, dry run) and how each of its calls is retried ([`CallRetry`]).
//!
//! Every app client holds one [`Transport`] per API it uses — Smartsheet and a SCIM
//! provider one, Postman two (its public API and its SCIM API, each with its own key) —
//! and says which through [`Transported`]. What is set on a client as a whole is then
//! set on each of its APIs alike, in one place: the shared request budget, the retry of
//! each call, and the dry run of `offboard plan`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::AUTHORIZATION;

use super::dry_run::DryRun;
use super::http::{ApiHttp, CallLog, SlotSource};
use super::retry::{CallError, CallRetry};
use super::ClientError;
use crate::config::{ConnectionConfig, Secret};

/// An API's HTTP client with the retry its calls get.
#[derive(Debug)]
pub struct Transport {
    http: ApiHttp,
    retry: CallRetry,
}

impl Transport {
    /// `http`, each call retried as [`CallRetry::default`] says.
    pub fn new(http: ApiHttp) -> Self {
        Transport {
            http,
            retry: CallRetry::default(),
        }
    }

    /// The connection's API with `token` sent as `Authorization: Bearer …` (Smartsheet,
    /// SCIM), paced at the connection's `requests_per_minute`, its bodies in
    /// `media_type` when the API has one of its own (SCIM's `application/scim+json`).
    pub fn bearer(
        config: &ConnectionConfig,
        token: Secret,
        media_type: Option<&'static str>,
    ) -> Result<Self, ClientError> {
        let http = ApiHttp::new(
            &config.base_url,
            AUTHORIZATION,
            Some("Bearer"),
            token,
            config.requests_per_minute,
            Duration::from_secs(config.timeout_secs),
        )?;
        Ok(Transport::new(match media_type {
            Some(media_type) => http.with_media_type(media_type),
            None => http,
        }))
    }

    /// The HTTP client, for one attempt of a call.
    pub fn http(&self) -> &ApiHttp {
        &self.http
    }

    /// Runs `attempt` (one try of a call) until it succeeds, fails for good or the retry
    /// budget is spent; an operator's cancel (the log's stop token) ends the waiting.
    pub async fn send<T, E, F, Fut>(&self, log: &CallLog, attempt: F) -> Result<T, E>
    where
        E: CallError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.retry.run(log.stop(), attempt).await
    }
}

/// A client over one or more [`Transport`]s: what is set on the client is set on each.
pub trait Transported: Sized {
    /// Every API the client speaks.
    fn transports(&self) -> Vec<&Transport>;

    /// Every API the client speaks, to change.
    fn transports_mut(&mut self) -> Vec<&mut Transport>;

    /// Shares the request budget, under the name `budget`, with every process taking
    /// slots from `source`: all of a connection's APIs draw on the one budget.
    fn share_budget(&self, budget: &str, source: Arc<dyn SlotSource>) {
        for transport in self.transports() {
            transport.http.share_budget(budget, source.clone());
        }
    }

    /// The same client retrying each call as `retry` says (tests shorten the waits; a
    /// connection check does not retry).
    fn with_call_retry(mut self, retry: CallRetry) -> Self {
        for transport in self.transports_mut() {
            transport.retry = retry.clone();
        }
        self
    }

    /// The same client with writes recorded in `dry_run` instead of sent, the calls of
    /// all its APIs in the one list, in the order they are made.
    fn with_dry_run(mut self, dry_run: Arc<DryRun>) -> Self {
        for transport in self.transports_mut() {
            transport.http.set_dry_run(dry_run.clone());
        }
        self
    }
}
