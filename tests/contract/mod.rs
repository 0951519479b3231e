//! Contract checks against the apps' own OpenAPI documents, for the tests in
//! `connector_contract.rs`.
//!
//! A [`Recorder`] is a small HTTP proxy put between a client and a simulator: it passes
//! every request on and keeps each exchange (request and response, in full). An [`Api`]
//! is one OpenAPI document, read from `../shared/reference/` (the shared folder that
//! sits beside the repository, in CI too), with the operation each exchange hits; its
//! `check` lists everything in an exchange the document does not allow: an unknown
//! path or method, an undeclared or ill-typed query parameter, a request body or a
//! response body outside its schema, an undeclared status or content type. Schemas are
//! checked with the `jsonschema` crate, the OpenAPI 3.0 `nullable` keyword being turned
//! into JSON Schema's `null` type first.
//!
//! Where the documents are silent or contradict themselves, the test states what it
//! accepts ([`Allowances`]); the README's connector section lists the same points.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Router;
use jsonschema::{Draft, Validator};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Recording proxy
// ---------------------------------------------------------------------------

/// One request and the response it got.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// Upper-case method.
    pub method: String,
    /// Path as sent (no query).
    pub path: String,
    /// Query pairs, decoded.
    pub query: Vec<(String, String)>,
    /// The request's headers.
    pub request_headers: HeaderMap,
    /// The request's `Content-Type`, when it had a body.
    pub request_type: Option<String>,
    /// The request body, parsed as JSON.
    pub request_body: Option<Value>,
    /// Response status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body, parsed as JSON (`Null` when empty).
    pub body: Value,
}

impl Exchange {
    /// `GET /users/{id} -> 404` style, for messages.
    pub fn label(&self) -> String {
        format!("{} {} -> {}", self.method, self.path, self.status)
    }
}

type Log = Arc<Mutex<Vec<Exchange>>>;

/// A recording proxy on a local port, forwarding to `target`.
pub struct Recorder {
    url: String,
    log: Log,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Recorder {
    /// Starts a proxy in front of `target` (a base URL; its path prefix is kept).
    pub async fn start(target: &str) -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Log = Arc::default();
        let state = (target.trim_end_matches('/').to_string(), log.clone());
        let app = Router::new().fallback(forward).with_state(state);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        let prefix = url::Url::parse(target)
            .unwrap()
            .path()
            .trim_end_matches('/')
            .to_string();
        Recorder {
            url: format!("http://{addr}{prefix}"),
            log,
            _stop: tx,
        }
    }

    /// The base URL clients should use.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every exchange so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().unwrap().clone()
    }
}

async fn forward(State((target, log)): State<(String, Log)>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, 16 << 20).await.unwrap_or_default();
    let origin = url::Url::parse(&target).unwrap();
    let url = format!(
        "{}://{}{}",
        origin.scheme(),
        origin
            .host_str()
            .zip(origin.port())
            .map(|(h, p)| format!("{h}:{p}"))
            .unwrap(),
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut out = reqwest::Client::new().request(parts.method.clone(), url);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            out = out.header(name, value);
        }
    }
    let answer = match out.body(bytes.to_vec()).send().await {
        Ok(r) => r,
        Err(_) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::empty())
                .unwrap()
        }
    };
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let reply = answer.bytes().await.unwrap_or_default();
    let query = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    log.lock().unwrap().push(Exchange {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query,
        request_headers: parts.headers.clone(),
        request_type: (!bytes.is_empty()).then(|| {
            parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        }),
        request_body: serde_json::from_slice(&bytes).ok(),
        status,
        headers: headers.clone(),
        body: serde_json::from_slice(&reply).unwrap_or(Value::Null),
    });
    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(reply)).unwrap()
}

// ---------------------------------------------------------------------------
// OpenAPI documents
// ---------------------------------------------------------------------------

/// What a test accepts where a document is silent or contradicts itself.
#[derive(Clone, Debug, Default)]
pub struct Allowances {
    /// Path prefix of the API in the document's server URL (`/2.0` for Smartsheet).
    pub base_path: &'static str,
    /// Statuses every operation may answer although few declare them (documented in the
    /// introduction, e.g. Postman's 401 and 429), with the schemas (JSON pointers into
    /// the document) one of which their bodies follow.
    pub global_statuses: Vec<(u16, Vec<&'static str>)>,
    /// (method, path template, status, schemas): answers the operation does not declare
    /// but the app is known to give.
    pub extra_statuses: Vec<(&'static str, &'static str, u16, Vec<&'static str>)>,
    /// (method, path template): operations whose query parameters are documented as
    /// properties of a request body (Smartsheet's `DELETE /users/{userId}`).
    pub query_in_body: Vec<(&'static str, &'static str)>,
    /// Read `oneOf` as `anyOf`: Postman's error `oneOf`s list shapes that require no
    /// property, so every error body matches all of them and `oneOf` could never hold.
    pub one_of_as_any_of: bool,
}

/// One OpenAPI document and the validators built from it.
pub struct Api {
    name: String,
    doc: Value,
    draft: Draft,
    allow: Allowances,
    validators: HashMap<String, Arc<Validator>>,
}

/// Where the shared OpenAPI documents are: `../shared/reference/` beside the repository.
pub fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference")
}

impl Api {
    /// Loads `file` (JSON or YAML) from [`reference_dir`].
    pub fn load(file: &str, allow: Allowances) -> Api {
        let path = reference_dir().join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the shared/ folder must sit beside the repository)",
                path.display()
            )
        });
        let mut doc: Value = if file.ends_with(".json") {
            serde_json::from_str(&text).unwrap()
        } else {
            serde_norway::from_str(&text).unwrap()
        };
        if allow.one_of_as_any_of {
            rename_key(&mut doc, "oneOf", "anyOf");
        }
        let version = doc["openapi"].as_str().unwrap_or("3.0").to_string();
        let draft = if version.starts_with("3.0") {
            nullable_to_null(&mut doc);
            Draft::Draft4
        } else {
            Draft::Draft202012
        };
        Api {
            name: file.to_string(),
            doc,
            draft,
            allow,
            validators: HashMap::new(),
        }
    }

    /// The (template, method) of the operation a request hits, if the document has one.
    pub fn operation(&self, method: &str, path: &str) -> Option<(String, String)> {
        let path = path.strip_prefix(self.allow.base_path).unwrap_or(path);
        let method = method.to_ascii_lowercase();
        let paths = self.doc["paths"].as_object()?;
        // Literal segments win over templated ones (`/users/me` before `/users/{userId}`).
        let mut best: Option<(usize, String)> = None;
        for (template, item) in paths {
            if item.get(&method).is_none() {
                continue;
            }
            if let Some(literal) = matches(template, path) {
                if best.as_ref().is_none_or(|(n, _)| literal > *n) {
                    best = Some((literal, template.clone()));
                }
            }
        }
        best.map(|(_, t)| (t, method))
    }

    fn pointer(&self, template: &str, method: &str) -> String {
        format!("/paths/{}/{method}", escape(template))
    }

    /// Follows `$ref`s at `pointer` to the object they name; returns its pointer.
    fn resolve(&self, mut pointer: String) -> (String, &Value) {
        loop {
            let value = self.doc.pointer(&pointer).unwrap_or(&Value::Null);
            match value.get("$ref").and_then(Value::as_str) {
                Some(r) if r.starts_with('#') => pointer = decode(&r[1..]),
                _ => return (pointer, value),
            }
        }
    }

    fn validator(&mut self, schema_pointer: &str) -> Arc<Validator> {
        if let Some(v) = self.validators.get(schema_pointer) {
            return v.clone();
        }
        let mut root = self.doc.clone();
        let target = format!("#{}", encode(schema_pointer));
        root.as_object_mut()
            .unwrap()
            .insert("$ref".into(), json!(target));
        let validator = Arc::new(
            jsonschema::options()
                .with_draft(self.draft)
                .should_validate_formats(true)
                .build(&root)
                .unwrap_or_else(|e| panic!("{}: schema at {schema_pointer}: {e}", self.name)),
        );
        self.validators
            .insert(schema_pointer.to_string(), validator.clone());
        validator
    }

    fn errors_at(&mut self, schema_pointer: &str, instance: &Value) -> Vec<String> {
        let validator = self.validator(schema_pointer);
        validator
            .iter_errors(instance)
            .take(5)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    fn errors_against(&mut self, schema: &Value, instance: &Value) -> Vec<String> {
        match jsonschema::options().with_draft(self.draft).build(schema) {
            Ok(v) => v
                .iter_errors(instance)
                .take(5)
                .map(|e| e.to_string())
                .collect(),
            Err(e) => vec![format!("bad schema {schema}: {e}")],
        }
    }

    /// Every way `x` breaks the document; empty when it conforms.
    pub fn check(&mut self, x: &Exchange) -> Vec<String> {
        let Some((template, method)) = self.operation(&x.method, &x.path) else {
            return vec![format!("{}: no such operation in {}", x.label(), self.name)];
        };
        let op = self.pointer(&template, &method);
        let mut problems = Vec::new();
        self.check_request(x, &template, &method, &op, &mut problems);
        self.check_response(x, &template, &method, &op, &mut problems);
        problems
            .into_iter()
            .map(|p| format!("{} ({method} {template}): {p}", x.label()))
            .collect()
    }

    fn parameters(&self, template: &str, op: &str) -> Vec<Value> {
        let item = format!("/paths/{}", escape(template));
        let mut all = Vec::new();
        for at in [format!("{item}/parameters"), format!("{op}/parameters")] {
            let list = self
                .doc
                .pointer(&at)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (i, _) in list.iter().enumerate() {
                let (_, p) = self.resolve(format!("{at}/{i}"));
                all.push(p.clone());
            }
        }
        all
    }

    fn check_request(
        &mut self,
        x: &Exchange,
        template: &str,
        method: &str,
        op: &str,
        problems: &mut Vec<String>,
    ) {
        let mut params = self.parameters(template, op);
        let in_body = self
            .allow
            .query_in_body
            .iter()
            .any(|(m, t)| m.eq_ignore_ascii_case(method) && *t == template);
        if in_body {
            let (_, body) = self.resolve(format!("{op}/requestBody"));
            if let Some(props) = body
                .pointer("/content/application~1json/schema/properties")
                .and_then(Value::as_object)
            {
                for (name, schema) in props {
                    params.push(json!({"name": name, "in": "query", "schema": schema}));
                }
            }
        }
        for (name, value) in &x.query {
            let Some(p) = params
                .iter()
                .find(|p| p["in"] == "query" && p["name"] == name.as_str())
            else {
                problems.push(format!("query parameter {name:?} is not declared"));
                continue;
            };
            let schema = self.inline(&p["schema"]);
            let errors = self.errors_against(&schema, &coerce(value, &schema));
            if !errors.is_empty() {
                problems.push(format!("query parameter {name}={value:?}: {errors:?}"));
            }
        }
        for p in params
            .iter()
            .filter(|p| p["in"] == "query" && p["required"] == true)
        {
            if !x.query.iter().any(|(n, _)| p["name"] == n.as_str()) {
                problems.push(format!("required query parameter {} missing", p["name"]));
            }
        }
        // Required headers (Postman documents its credentials this way: `x-api-key`,
        // and `Authorization` for SCIM).
        for p in params
            .iter()
            .filter(|p| p["in"] == "header" && p["required"] == true)
        {
            let name = p["name"].as_str().unwrap_or("").to_ascii_lowercase();
            if !x.request_headers.contains_key(name.as_str()) {
                problems.push(format!("required header {name} missing"));
            }
        }
        if in_body {
            return;
        }
        let (body_at, body) = self.resolve(format!("{op}/requestBody"));
        match (
            &x.request_body,
            body.get("content").and_then(Value::as_object),
        ) {
            (None, _) => {
                if body["required"] == true {
                    problems.push("the request body is required".into());
                }
            }
            (Some(_), None) => problems.push("a body was sent where none is documented".into()),
            (Some(sent), Some(content)) => {
                let media = media_type(x.request_type.as_deref().unwrap_or(""));
                if !content.contains_key(&media) {
                    problems.push(format!(
                        "request content type {media} is not one of {:?}",
                        content.keys().collect::<Vec<_>>()
                    ));
                    return;
                }
                let at = format!("{body_at}/content/{}/schema", escape(&media));
                let errors = self.errors_at(&at, sent);
                if !errors.is_empty() {
                    problems.push(format!("request body: {errors:?}"));
                }
            }
        }
    }

    fn check_response(
        &mut self,
        x: &Exchange,
        template: &str,
        method: &str,
        op: &str,
        problems: &mut Vec<String>,
    ) {
        let responses = format!("{op}/responses");
        let declared = [
            x.status.to_string(),
            format!("{}XX", x.status / 100),
            "default".to_string(),
        ]
        .into_iter()
        .map(|k| format!("{responses}/{k}"))
        .find(|at| self.doc.pointer(at).is_some());
        let media = media_type(
            x.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        );
        let Some(at) = declared else {
            let extra = self
                .allow
                .extra_statuses
                .iter()
                .find(|(m, t, s, _)| {
                    m.eq_ignore_ascii_case(method) && *t == template && *s == x.status
                })
                .map(|(_, _, _, schemas)| schemas.clone())
                .or_else(|| {
                    self.allow
                        .global_statuses
                        .iter()
                        .find(|(s, _)| *s == x.status)
                        .map(|(_, schemas)| schemas.clone())
                });
            match extra {
                Some(schemas) => {
                    let mut errors = Vec::new();
                    for at in &schemas {
                        errors = self.errors_at(at, &x.body);
                        if errors.is_empty() {
                            break;
                        }
                    }
                    if !errors.is_empty() {
                        problems.push(format!("body: {errors:?}"));
                    }
                    if media != "application/json" {
                        problems.push(format!("content type {media}"));
                    }
                }
                None => problems.push(format!("status {} is not documented", x.status)),
            }
            return;
        };
        let (at, response) = self.resolve(at);
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            return;
        };
        if content.is_empty() {
            return;
        }
        if !content.contains_key(&media) {
            problems.push(format!(
                "content type {media:?} is not one of {:?}",
                content.keys().collect::<Vec<_>>()
            ));
            return;
        }
        let schema_at = format!("{at}/content/{}/schema", escape(&media));
        if self.doc.pointer(&schema_at).is_some() {
            let errors = self.errors_at(&schema_at, &x.body);
            if !errors.is_empty() {
                problems.push(format!("body: {errors:?}"));
            }
        }
    }

    /// A schema with every `$ref` into the document replaced by what it names (one level
    /// per call is enough for parameter schemas).
    fn inline(&self, schema: &Value) -> Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) if r.starts_with('#') => {
                self.inline(self.doc.pointer(&decode(&r[1..])).unwrap_or(&Value::Null))
            }
            _ => schema.clone(),
        }
    }
}

/// The number of literal segments when `path` fits `template`.
fn matches(template: &str, path: &str) -> Option<usize> {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut literal = 0;
    for (a, b) in t.iter().zip(&p) {
        if a.starts_with('{') && a.ends_with('}') {
            if b.is_empty() {
                return None;
            }
        } else if a == b {
            literal += 1;
        } else {
            return None;
        }
    }
    Some(literal)
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A query value as the JSON its schema expects (numbers and booleans unquoted).
fn coerce(value: &str, schema: &Value) -> Value {
    let kinds: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if kinds
        .iter()
        .any(|k| matches!(*k, "integer" | "number" | "boolean"))
    {
        if let Ok(v) = serde_json::from_str::<Value>(value) {
            if !v.is_string() {
                return v;
            }
        }
    }
    Value::String(value.to_string())
}

/// JSON-pointer escaping of one token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A `$ref` fragment (URI-encoded JSON pointer) as a plain JSON pointer.
fn decode(fragment: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", fragment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A JSON pointer as a URI fragment.
fn encode(pointer: &str) -> String {
    pointer
        .chars()
        .map(|c| match c {
            '{' => "%7B".to_string(),
            '}' => "%7D".to_string(),
            ' ' => "%20".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Renames every object key `from` to `to`, at any depth.
fn rename_key(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::Object(map) => {
            if let Some(v) = map.remove(from) {
                map.insert(to.to_string(), v);
            }
            for v in map.values_mut() {
                rename_key(v, from, to);
            }
        }
        Value::Array(list) => list.iter_mut().for_each(|v| rename_key(v, from, to)),
        _ => {}
    }
}

/// OpenAPI 3.0's `nullable: true` as JSON Schema: `null` added to the allowed types.
fn nullable_to_null(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(target) = map.remove("$ref") {
                    // Draft 4 ignores a `$ref`'s siblings: wrap it.
                    map.insert("anyOf".into(), json!([{"$ref": target}, {"type": "null"}]));
                }
                match map.get("type").cloned() {
                    Some(Value::String(t)) => {
                        map.insert("type".into(), json!([t, "null"]));
                    }
                    _ => {
                        if let Some(Value::Array(list)) = map.get_mut("enum") {
                            list.push(Value::Null);
                        }
                    }
                }
            }
            for v in map.values_mut() {
                nullable_to_null(v);
            }
        }
        Value::Array(list) => list.iter_mut().for_each(nullable_to_null),
        _ => {}
    }
}
