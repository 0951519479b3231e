//! Writes turned off: the HTTP layer's dry-run mode, which `offboard plan` runs the real
//! actions through.
//!
//! A client given a [`DryRun`] sends every read (`GET`) to the app as usual, but no write:
//! a `PUT`, `POST`, `PATCH` or `DELETE` is recorded as a [`PlannedWrite`] and answered
//! with the success the app would send, so the action goes on exactly as in a run. The
//! actions read before they write, and some read again after (a removal is confirmed, a
//! workspace's Admins are read once the recipient was made one); for those reads to see
//! what the run would see, each app has a [`Model`] of its writes' effects that makes a
//! read's answer look as it would once the planned writes were made (a removed user is
//! "not found", a workspace lists the recipient among its Admins). The model knows nothing
//! the actions do not: it only replays the writes it was handed onto the answers the app
//! gives.

use std::sync::{Arc, Mutex};

use reqwest::header::HeaderMap;
use serde::Serialize;
use serde_json::Value;

use super::reply::Reply;

/// One write a run would make, in the order it would make it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedWrite {
    /// HTTP method (`PUT`, `PATCH`, `DELETE`…).
    pub method: String,
    /// Path and query relative to the connection's base URL, as the run would send them.
    pub path: String,
    /// The JSON body the run would send, if any.
    pub body: Option<Value>,
    /// What it would change, in words (names and emails as the app reported them).
    pub description: String,
}

/// An app's model of what its writes change, so reads in a dry run see their effects.
pub trait Model: Send + std::fmt::Debug {
    /// Takes a write in (remembering its effect) and returns the body the app answers a
    /// successful one with, and the write described in words.
    fn write(&mut self, method: &str, path: &str, body: Option<&Value>) -> (Value, String);

    /// Learns from a successful read's answer and makes it look as it would after the
    /// writes taken in so far; may turn it into the app's "not found" (status and body).
    fn read(&mut self, path: &str, status: &mut u16, body: &mut Value);
}

/// How a planned write names a thing: kind, name and id once a read told the model the
/// name (`workspace "Launch" (w1)`), kind and id before (`workspace w1`).
pub fn thing(kind: &str, name: Option<&String>, id: impl std::fmt::Display) -> String {
    match name {
        Some(name) => format!("{kind} {name:?} ({id})"),
        None => format!("{kind} {id}"),
    }
}

/// How a planned write names a person: email and user id once a read told the model the
/// email (`ada@example.com (user 7)`), the user id before (`user 7`).
pub fn person(email: Option<&String>, id: impl std::fmt::Display) -> String {
    match email {
        Some(email) => format!("{email} (user {id})"),
        None => format!("user {id}"),
    }
}

/// A successful (200) read of `path` answered with `body`, as `model` makes it look: the
/// status and body the action would see. For the models' tests.
#[cfg(test)]
pub(crate) fn read_through(model: &mut impl Model, path: &str, mut body: Value) -> (u16, Value) {
    let mut status = 200;
    model.read(path, &mut status, &mut body);
    (status, body)
}

/// The dry run of one connection: its app's model and the writes planned so far. Shared
/// by every HTTP client of the connection (Postman's API and SCIM clients), so the writes
/// stay in the order the actions made them.
#[derive(Debug)]
pub struct DryRun {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    model: Box<dyn Model>,
    writes: Vec<PlannedWrite>,
}

impl DryRun {
    /// A dry run with nothing planned yet, reading through `model`.
    pub fn new(model: impl Model + 'static) -> Arc<DryRun> {
        Arc::new(DryRun {
            inner: Mutex::new(Inner {
                model: Box::new(model),
                writes: Vec::new(),
            }),
        })
    }

    /// Every write planned so far, in order.
    pub fn writes(&self) -> Vec<PlannedWrite> {
        self.lock().writes.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the list half-written: each change is one push.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a write instead of sending it; answers as the app does on success.
    pub(super) fn write(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let mut inner = self.lock();
        let (answer, description) = inner.model.write(method, path, body);
        inner.writes.push(PlannedWrite {
            method: method.to_string(),
            path: path.to_string(),
            body: body.cloned(),
            description,
        });
        Reply {
            status: 200,
            retry_after_ms: None,
            headers: HeaderMap::new(),
            body: answer,
            oversized: false,
        }
    }

    /// Passes a read's successful answer through the model.
    pub(super) fn read(&self, path: &str, reply: &mut Reply) {
        if reply.status < 400 && !reply.oversized {
            self.lock()
                .model
                .read(path, &mut reply.status, &mut reply.body);
        }
    }
}

/// Whether a method changes something at the app (everything but reads).
pub(super) fn is_write(method: &reqwest::Method) -> bool {
    !matches!(
        *method,
        reqwest::Method::GET | reqwest::Method::HEAD | reqwest::Method::OPTIONS
    )
}

/// A path split into its segments (without the query) and its query pairs.
pub(super) fn split(path: &str) -> (Vec<&str>, Vec<(String, String)>) {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let segments = path.split('/').filter(|s| !s.is_empty()).collect();
    let pairs = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    (segments, pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_segments_and_decoded_query_pairs() {
        let (segments, query) = split("/users?email=ada%40example.com&page=1");
        assert_eq!(segments, ["users"]);
        assert_eq!(
            query,
            [
                ("email".to_string(), "ada@example.com".to_string()),
                ("page".to_string(), "1".to_string())
            ]
        );
        assert_eq!(
            split("/workspaces/w1/roles").0,
            ["workspaces", "w1", "roles"]
        );
    }
}
