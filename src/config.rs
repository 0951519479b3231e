//! Configuration: built-in defaults, then `offboard.toml` (`--config`, `$OFFBOARD_CONFIG`
//! or `./offboard.toml`), then the environment (`OFFBOARD_DATABASE_URL`,
//! `OFFBOARD_AMQP_URL`). Parsed once into typed structs. Secrets are never in the file:
//! each connection names the environment variable that holds its token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::admission::{KeyError, SigningKey};

/// A secret string, kept in a [`SecretString`]: zeroized when dropped, and `Debug` prints
/// a placeholder, never the value.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a secret; the string handed in is zeroized once copied.
    pub fn new(value: impl Into<String>) -> Self {
        let mut value = value.into();
        let secret = SecretString::from(value.as_str());
        value.zeroize();
        Secret(secret)
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The apps offboard can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    /// Smartsheet REST API 2.0.
    Smartsheet,
    /// Postman API (and its SCIM 2.0 endpoints).
    Postman,
    /// Any SCIM 2.0 service provider (RFC 7643/7644).
    Scim,
}

impl AppKind {
    /// The app's name as used in configs and workflow files.
    pub fn as_str(self) -> &'static str {
        match self {
            AppKind::Smartsheet => "smartsheet",
            AppKind::Postman => "postman",
            AppKind::Scim => "scim",
        }
    }
}

/// One configured app account.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Which app.
    pub app: AppKind,
    /// API base URL (region-specific).
    pub base_url: String,
    /// The environment variable holding the API token or key.
    pub token_env: String,
    /// Request budget shared by every workflow on this connection.
    #[serde(default = "default_rpm")]
    pub requests_per_minute: u32,
    /// Per-request timeout, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// People this connection never removes or downgrades: exact emails or patterns with
    /// `*` (`"*@ops.example.com"`), compared without regard to case.
    #[serde(default)]
    pub protected: Vec<String>,
    /// Whether the app's administrators may be removed or downgraded (default: no).
    #[serde(default)]
    pub allow_admins: bool,
    /// SCIM only: which attribute finds the person (`match`; default `userName`).
    #[serde(default, rename = "match")]
    pub scim_match: Option<ScimMatch>,
    /// SCIM only: what offboarding does to the account (default `deactivate`).
    #[serde(default)]
    pub offboard: Option<ScimOffboard>,
    /// SCIM only: whether offboarding takes the user out of its groups first (default
    /// true).
    #[serde(default)]
    pub remove_from_groups: Option<bool>,
}

/// The SCIM attribute a connection finds the person by (`match`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum ScimMatch {
    /// `userName` equals the event's email (compared without case, as RFC 7643 says).
    #[default]
    #[serde(rename = "userName")]
    UserName,
    /// One of the user's `emails` values equals the event's email.
    #[serde(rename = "email")]
    Email,
    /// `externalId` equals the event's `employee_id` (compared exactly).
    #[serde(rename = "externalId")]
    ExternalId,
}

/// What a SCIM offboarding does to the account (`offboard`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScimOffboard {
    /// `active` set to false: sign-in blocked, the account and its data kept.
    #[default]
    Deactivate,
    /// The user resource deleted.
    Delete,
}

/// A SCIM connection's settings with their defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScimSettings {
    /// The attribute the person is found by.
    pub match_on: ScimMatch,
    /// Deactivate or delete.
    pub offboard: ScimOffboard,
    /// Whether offboarding empties the user's group memberships first.
    pub remove_from_groups: bool,
}

fn default_rpm() -> u32 {
    300
}

fn default_timeout() -> u64 {
    30
}

impl ConnectionConfig {
    /// A connection to `app` at `base_url` whose token is in `token_env`, drawing on
    /// `requests_per_minute`; everything else as a config file that names nothing more
    /// would have it (default timeout, nobody protected, SCIM defaults).
    pub fn new(
        app: AppKind,
        base_url: impl Into<String>,
        token_env: impl Into<String>,
        requests_per_minute: u32,
    ) -> ConnectionConfig {
        ConnectionConfig {
            app,
            base_url: base_url.into(),
            token_env: token_env.into(),
            requests_per_minute,
            timeout_secs: default_timeout(),
            protected: Vec::new(),
            allow_admins: false,
            scim_match: None,
            offboard: None,
            remove_from_groups: None,
        }
    }

    /// The connection's protection rules, as the connectors apply them.
    pub fn guard(&self) -> crate::domain::protection::Guard {
        crate::domain::protection::Guard {
            patterns: self.protected.clone(),
            allow_admins: self.allow_admins,
        }
    }

    /// The SCIM settings, defaults filled in (meaningful for `app = "scim"` only; the
    /// other apps refuse them at load).
    pub fn scim(&self) -> ScimSettings {
        ScimSettings {
            match_on: self.scim_match.unwrap_or_default(),
            offboard: self.offboard.unwrap_or_default(),
            remove_from_groups: self.remove_from_groups.unwrap_or(true),
        }
    }

    /// Reads the token from the environment.
    pub fn token(&self, name: &str) -> Result<Secret, ConfigError> {
        match std::env::var(&self.token_env) {
            Ok(mut v) if !v.trim().is_empty() => {
                let secret = Secret::new(v.trim());
                v.zeroize();
                Ok(secret)
            }
            _ => Err(ConfigError::TokenUnset {
                connection: name.to_string(),
                var: self.token_env.clone(),
            }),
        }
    }
}

/// Broker names; the defaults are the contract's.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpNames {
    /// Topic exchange for events in and out.
    pub exchange: String,
    /// Quorum queue the engine consumes.
    pub queue: String,
    /// Fanout exchange for rejected messages.
    pub dead_letter_exchange: String,
    /// Queue holding rejected messages.
    pub dead_letter_queue: String,
    /// Unacknowledged messages in flight at once.
    pub prefetch: u16,
}

impl Default for AmqpNames {
    fn default() -> Self {
        AmqpNames {
            exchange: "offboard".into(),
            queue: "offboard.requests".into(),
            dead_letter_exchange: "offboard.dlx".into(),
            dead_letter_queue: "offboard.requests.dead".into(),
            prefetch: 16,
        }
    }
}

/// Who may ask for an offboarding, and for what (`[intake]`). Every check is off by
/// default; on PostgreSQL `serve` still needs a signing key or `allow_unsigned = true`
/// (see [`IntakeConfig::unsigned_refusal`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    /// The CloudEvents `source` values accepted; any other is dead-lettered with `EVT-104`.
    /// Absent: every source.
    pub allowed_sources: Option<Vec<String>>,
    /// The environment variables holding the keys events are signed with (Standard
    /// Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature` headers); a
    /// message signed under none of them is dead-lettered with `EVT-105`. One name or a
    /// list (so that keys can rotate); `submit` signs with the first. Empty: signatures
    /// are not required.
    #[serde(deserialize_with = "one_or_many")]
    pub signing_key_env: Vec<String>,
    /// Lets `serve` run on PostgreSQL without a signing key, accepting unsigned events.
    pub allow_unsigned: bool,
    /// Accepts the body-only `x-offboard-signature` of earlier releases (no timestamp, so
    /// a captured message can be replayed) when a message has no `webhook-signature`.
    pub accept_legacy_signatures: bool,
    /// How far `webhook-timestamp` may lie from the receiver's clock, either way.
    pub signature_tolerance_secs: u64,
    /// The domains a `transfer_to` address may be at (case ignored, exact domain); any
    /// other is dead-lettered with `EVT-102`. Absent: any recipient.
    pub recipient_domains: Option<Vec<String>>,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            allowed_sources: None,
            signing_key_env: Vec::new(),
            allow_unsigned: false,
            accept_legacy_signatures: false,
            signature_tolerance_secs: DEFAULT_SIGNATURE_TOLERANCE_SECS,
            recipient_domains: None,
        }
    }
}

/// How far a signature's timestamp may lie from now unless configured: Standard
/// Webhooks' own default.
pub const DEFAULT_SIGNATURE_TOLERANCE_SECS: u64 = 300;

/// Reads a setting given as one string or as a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let names = OneOrMany::deserialize(d).map_err(|_| {
        serde::de::Error::custom("signing_key_env must be a variable name or a list of names")
    })?;
    Ok(match names {
        OneOrMany::One(name) => vec![name],
        OneOrMany::Many(names) => names,
    })
}

impl IntakeConfig {
    /// The signing keys from the environment, in the order configured (none when
    /// `signing_key_env` is not set); an error names the variable, never its value.
    pub fn signing_keys(&self) -> Result<Vec<SigningKey>, ConfigError> {
        self.signing_key_env
            .iter()
            .map(|var| match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => {
                    let value = Secret::new(v.trim());
                    SigningKey::decode(value.expose()).map_err(|why| {
                        ConfigError::SigningKeyInvalid {
                            var: var.clone(),
                            why,
                        }
                    })
                }
                _ => Err(ConfigError::SigningKeyUnset(var.clone())),
            })
            .collect()
    }

    /// What is wrong with the `[intake]` values, if anything, in one line.
    fn problem(&self) -> Option<String> {
        if !(1..=86_400).contains(&self.signature_tolerance_secs) {
            return Some("[intake] signature_tolerance_secs must be between 1 and 86400".into());
        }
        if self.signing_key_env.iter().any(|v| v.trim().is_empty()) {
            return Some("[intake] signing_key_env names an empty variable".into());
        }
        let bad_domain = |d: &String| d.is_empty() || d.contains(['@', ' ']) || !d.contains('.');
        if let Some(d) = self
            .recipient_domains
            .iter()
            .flatten()
            .find(|d| bad_domain(d))
        {
            return Some(format!(
                "[intake] recipient_domains: {d:?} is not a domain (write example.com)"
            ));
        }
        None
    }

    /// Why `serve` must not start on `database_url` with this intake, if it must not: on
    /// PostgreSQL (a shared, production database) unsigned events are accepted only when
    /// that is said outright. One line naming the settings.
    pub fn unsigned_refusal(&self, database_url: &str) -> Option<String> {
        let shared = !database_url.starts_with("sqlite:");
        (shared && self.signing_key_env.is_empty() && !self.allow_unsigned).then(|| {
            "[intake] signing_key_env is not set: on PostgreSQL serve accepts only signed events; name the signing key's variable, or set [intake] allow_unsigned = true".to_string()
        })
    }
}

/// Brakes on how much offboard does on its own (`[limits]`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Workflows that remove or deactivate an account (every offboarding, a Postman
    /// licence reclaim; not a Smartsheet one) created in any hour, counted in the
    /// database across every `serve` process, past which new ones are created `held`
    /// until an operator releases them. Absent: no brake.
    pub max_offboardings_per_hour: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    database_url: Option<String>,
    amqp_url: Option<String>,
    workflows_dir: Option<PathBuf>,
    max_concurrent_workflows: Option<usize>,
    lease_secs: Option<u64>,
    database_pool_size: Option<u32>,
    amqp: Option<AmqpNames>,
    intake: Option<IntakeConfig>,
    limits: Option<LimitsConfig>,
    connections: Option<BTreeMap<String, ConnectionConfig>>,
    http: Option<HttpConfig>,
    ingest: Option<IngestConfig>,
}

/// The HR-facing HTTP intake (`[ingest]`, feature `console`): `POST /events` publishes
/// CloudEvents to the exchange. Requests are authenticated by the `[intake]` signing keys
/// or by a fixed bearer token; one of them is required.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Where `serve` listens for HR systems, e.g. `0.0.0.0:8080`; no listener when absent.
    pub listen: Option<std::net::SocketAddr>,
    /// The environment variable holding a token HR tools that cannot sign send as
    /// `Authorization: Bearer`, compared in constant time.
    pub bearer_token_env: Option<String>,
    /// The broker the intake publishes to (e.g. a user that may only publish); the
    /// top-level `amqp_url` when absent.
    pub amqp_url: Option<String>,
}

impl IngestConfig {
    /// The broker URL events are published to: its own, else `default`.
    pub fn amqp_url<'a>(&'a self, default: &'a str) -> &'a str {
        self.amqp_url.as_deref().unwrap_or(default)
    }

    /// What is wrong with the `[ingest]` values given the `[intake]` ones, in one line.
    fn problem(&self, intake: &IntakeConfig) -> Option<String> {
        if self
            .amqp_url
            .as_ref()
            .is_some_and(|u| !u.starts_with("amqp"))
        {
            return Some("[ingest] amqp_url must be an amqp:// or amqps:// URL".into());
        }
        if self
            .bearer_token_env
            .as_ref()
            .is_some_and(|v| v.trim().is_empty())
        {
            return Some("[ingest] bearer_token_env names an empty variable".into());
        }
        let open = intake.signing_key_env.is_empty() && self.bearer_token_env.is_none();
        (self.listen.is_some() && open).then(|| {
            "[ingest] listen: the HTTP intake needs [intake] signing_key_env or [ingest] bearer_token_env, so that not anyone who reaches it can ask for removals".to_string()
        })
    }
}

/// The operators' listener (`[http]`): metrics, health probes and the web console.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where `serve` listens, e.g. `127.0.0.1:9464`; no listener when absent.
    pub listen: Option<std::net::SocketAddr>,
    /// The environment variable holding the operators' token; without it the console is
    /// read-only (no retry or cancel).
    pub operator_token_env: Option<String>,
    /// The environment variable holding the viewers' token; with it every console page,
    /// form and the evidence CSV need it (or the operators' token), as a bearer header or
    /// through the login form's session cookie. Without it the console is open to anyone
    /// who reaches the port.
    pub viewer_token_env: Option<String>,
}

/// The whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// SQLite or PostgreSQL URL.
    pub database_url: String,
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// Broker names.
    pub amqp: AmqpNames,
    /// Where workflow definitions are read; the built-in ones when absent.
    pub workflows_dir: Option<PathBuf>,
    /// How many workflows run at once.
    pub max_concurrent_workflows: usize,
    /// How long a worker's claim on a workflow lasts without renewal; a crashed
    /// process's workflows are resumed by another after this.
    pub lease_secs: u64,
    /// PostgreSQL connections per process (SQLite always uses one).
    pub database_pool_size: u32,
    /// Who may ask: allowed sources and event signatures.
    pub intake: IntakeConfig,
    /// The mass-offboarding brake.
    pub limits: LimitsConfig,
    /// Connections by name.
    pub connections: BTreeMap<String, ConnectionConfig>,
    /// The operators' listener.
    pub http: HttpConfig,
    /// The HR-facing HTTP intake.
    pub ingest: IngestConfig,
}

/// The default database: a file next to where offboard runs.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://offboard.db?mode=rwc";
/// The default broker.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl Config {
    /// The built-in defaults: a Smartsheet and a Postman connection as in the contract.
    pub fn defaults() -> Config {
        let mut connections = BTreeMap::new();
        connections.insert(
            "smartsheet".to_string(),
            ConnectionConfig::new(
                AppKind::Smartsheet,
                "https://api.smartsheet.com/2.0",
                "SMARTSHEET_TOKEN",
                300,
            ),
        );
        connections.insert(
            "postman".to_string(),
            ConnectionConfig::new(
                AppKind::Postman,
                "https://api.getpostman.com",
                "POSTMAN_API_KEY",
                120,
            ),
        );
        Config {
            database_url: DEFAULT_DATABASE_URL.into(),
            amqp_url: DEFAULT_AMQP_URL.into(),
            amqp: AmqpNames::default(),
            workflows_dir: None,
            max_concurrent_workflows: 8,
            lease_secs: 15,
            database_pool_size: crate::store::DEFAULT_POOL_SIZE,
            intake: IntakeConfig::default(),
            limits: LimitsConfig::default(),
            connections,
            http: HttpConfig::default(),
            ingest: IngestConfig::default(),
        }
    }

    /// Loads the configuration: `explicit` path, else `$OFFBOARD_CONFIG`, else
    /// `./offboard.toml` if present, else defaults; then environment overrides.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let from_env = std::env::var_os("OFFBOARD_CONFIG").map(PathBuf::from);
        let path = match (explicit, from_env) {
            (Some(p), _) => Some(p.to_path_buf()),
            (None, Some(p)) => Some(p),
            (None, None) => Some(PathBuf::from("offboard.toml")).filter(|p| p.exists()),
        };
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Config::parse(&text).map_err(|e| ConfigError::InFile {
                    path,
                    source: Box::new(e),
                })?
            }
            None => Config::defaults(),
        };
        if let Ok(url) = std::env::var("OFFBOARD_DATABASE_URL") {
            config.database_url = url;
        }
        if let Ok(url) = std::env::var("OFFBOARD_AMQP_URL") {
            config.amqp_url = url;
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a config file's text over the defaults.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let file: ConfigFile = toml::from_str(text)?;
        let defaults = Config::defaults();
        let config = Config {
            database_url: file.database_url.unwrap_or(defaults.database_url),
            amqp_url: file.amqp_url.unwrap_or(defaults.amqp_url),
            amqp: file.amqp.unwrap_or(defaults.amqp),
            workflows_dir: file.workflows_dir,
            max_concurrent_workflows: file
                .max_concurrent_workflows
                .unwrap_or(defaults.max_concurrent_workflows),
            lease_secs: file.lease_secs.unwrap_or(defaults.lease_secs),
            database_pool_size: file
                .database_pool_size
                .unwrap_or(defaults.database_pool_size),
            intake: file.intake.unwrap_or(defaults.intake),
            limits: file.limits.unwrap_or(defaults.limits),
            connections: file.connections.unwrap_or(defaults.connections),
            http: file.http.unwrap_or(defaults.http),
            ingest: file.ingest.unwrap_or(defaults.ingest),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.problem()
            .map_or(Ok(()), |why| Err(ConfigError::Invalid(why)))
    }

    /// What is wrong with the values, if anything, in one line naming the setting.
    fn problem(&self) -> Option<String> {
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("postgres"))
        {
            return Some("database_url must be a sqlite:// or postgres:// URL".into());
        }
        if !self.amqp_url.starts_with("amqp") {
            return Some("amqp_url must be an amqp:// or amqps:// URL".into());
        }
        if !(1..=3600).contains(&self.lease_secs) {
            return Some("lease_secs must be between 1 and 3600".into());
        }
        if !(1..=1000).contains(&self.database_pool_size) {
            return Some("database_pool_size must be between 1 and 1000".into());
        }
        if self.max_concurrent_workflows == 0 {
            return Some("max_concurrent_workflows must be at least 1".into());
        }
        if let Some(why) = self.intake.problem() {
            return Some(why);
        }
        if let Some(why) = self.ingest.problem(&self.intake) {
            return Some(why);
        }
        for (name, c) in &self.connections {
            let Ok(url) = url::Url::parse(&c.base_url) else {
                return Some(format!("connection {name:?}: base_url is not a URL"));
            };
            if !matches!(url.scheme(), "http" | "https") {
                return Some(format!("connection {name:?}: base_url must be http(s)"));
            }
            if c.requests_per_minute == 0 {
                return Some(format!(
                    "connection {name:?}: requests_per_minute must be above 0"
                ));
            }
            if c.token_env.trim().is_empty() {
                return Some(format!("connection {name:?}: token_env is empty"));
            }
            let scim_only = [
                ("match", c.scim_match.is_some()),
                ("offboard", c.offboard.is_some()),
                ("remove_from_groups", c.remove_from_groups.is_some()),
            ];
            if let Some((key, _)) = scim_only.iter().find(|(_, set)| *set) {
                if c.app != AppKind::Scim {
                    return Some(format!(
                        "connection {name:?}: {key} is a setting of app = \"scim\" connections only"
                    ));
                }
            }
        }
        None
    }

    /// The AMQP URL with any password replaced, for logs.
    pub fn amqp_url_redacted(&self) -> String {
        redact_url(&self.amqp_url)
    }
}

/// Query parameters whose value is a secret: `?password=` (sqlx and libpq read the
/// database password there too) and its TLS relatives.
const SECRET_PARAMETERS: [&str; 2] = ["password", "sslpassword"];

/// A URL with its password replaced by `***`, for logs and errors: the one after the user
/// name (`user:password@`) and any `?password=` parameter.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "<unparseable url>".into();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    let secret = |k: &str| SECRET_PARAMETERS.iter().any(|s| k.eq_ignore_ascii_case(s));
    if url.query_pairs().any(|(k, _)| secret(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// Why the configuration cannot be used. Messages name the file, the setting or the
/// variable — never a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named cannot be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file's contents are wrong (the inner error says how).
    #[error("config {}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        #[source]
        source: Box<ConfigError>,
    },
    /// Not TOML, or not the settings offboard knows.
    #[error("{}", one_line(.0.message()))]
    Syntax(#[from] toml::de::Error),
    /// A value out of range or of the wrong kind.
    #[error("{0}")]
    Invalid(String),
    /// A connection's token variable is not set.
    #[error("connection {connection:?}: environment variable {var} is not set")]
    TokenUnset {
        /// The connection.
        connection: String,
        /// The variable its `token_env` names.
        var: String,
    },
    /// `[intake] signing_key_env` names a variable that is not set.
    #[error("[intake] signing_key_env: environment variable {0} is not set")]
    SigningKeyUnset(String),
    /// `[intake] signing_key_env` names a variable whose value is no usable key.
    #[error("[intake] signing_key_env: environment variable {var}: {why}")]
    SigningKeyInvalid {
        /// The variable.
        var: String,
        /// What is wrong with its value (never the value).
        why: KeyError,
    },
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[ingest]`: its own listener and broker URL, and never open to anyone: a signing
    /// key or a bearer token is required.
    #[test]
    fn the_http_intake_needs_a_key_or_a_token() {
        let c = Config::parse("").unwrap();
        assert!(c.ingest.listen.is_none(), "no HTTP intake unless asked");
        assert_eq!(c.ingest.amqp_url(&c.amqp_url), DEFAULT_AMQP_URL);
        let c = Config::parse(
            "[intake]\nsigning_key_env = \"K\"\n[ingest]\nlisten = \"127.0.0.1:8080\"\namqp_url = \"amqp://hr@rabbit/%2f\"",
        )
        .unwrap();
        assert_eq!(c.ingest.listen.unwrap().port(), 8080);
        assert_eq!(c.ingest.amqp_url(&c.amqp_url), "amqp://hr@rabbit/%2f");
        let c = Config::parse("[ingest]\nlisten = \"127.0.0.1:8080\"\nbearer_token_env = \"T\"")
            .unwrap();
        assert_eq!(c.ingest.bearer_token_env.as_deref(), Some("T"));
        for (text, expected) in [
            (
                "[ingest]\nlisten = \"127.0.0.1:8080\"",
                "needs [intake] signing_key_env or [ingest] bearer_token_env",
            ),
            (
                "[ingest]\nbearer_token_env = \" \"",
                "bearer_token_env names an empty variable",
            ),
            (
                "[ingest]\nbearer_token_env = \"T\"\namqp_url = \"http://rabbit\"",
                "[ingest] amqp_url must be",
            ),
            (
                "[ingest]\nlisten = \"127.0.0.1:8080\"\nport = 1",
                "unknown field",
            ),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn file_values_override_defaults() {
        let c = Config::parse(
            r#"
database_url = "postgres://postgres@127.0.0.1/test"
[connections.sheets]
app = "smartsheet"
base_url = "https://api.smartsheet.eu/2.0"
token_env = "EU_TOKEN"
requests_per_minute = 100
"#,
        )
        .unwrap();
        assert_eq!(c.database_url, "postgres://postgres@127.0.0.1/test");
        assert_eq!(c.connections.len(), 1);
        assert_eq!(c.connections["sheets"].requests_per_minute, 100);
        assert_eq!(c.amqp.queue, "offboard.requests");
        assert!(c.http.listen.is_none(), "no listener unless asked");
        let c = Config::parse(
            "[http]\nlisten = \"127.0.0.1:9464\"\noperator_token_env = \"OFFBOARD_OPERATOR_TOKEN\"\nviewer_token_env = \"OFFBOARD_VIEWER_TOKEN\"",
        )
        .unwrap();
        assert_eq!(c.http.listen.unwrap().port(), 9464);
        assert_eq!(
            c.http.operator_token_env.as_deref(),
            Some("OFFBOARD_OPERATOR_TOKEN")
        );
        assert_eq!(
            c.http.viewer_token_env.as_deref(),
            Some("OFFBOARD_VIEWER_TOKEN")
        );
    }

    #[test]
    fn guard_rails_are_read() {
        let c = Config::parse(
            r#"
[intake]
allowed_sources = ["workday", "bamboohr"]
signing_key_env = "OFFBOARD_SIGNING_KEY"
[limits]
max_offboardings_per_hour = 50
[connections.smartsheet]
app = "smartsheet"
base_url = "https://api.smartsheet.com/2.0"
token_env = "T"
protected = ["ceo@example.com", "*@ops.example.com"]
allow_admins = true
"#,
        )
        .unwrap();
        assert_eq!(
            c.intake.allowed_sources.as_deref(),
            Some(&["workday".to_string(), "bamboohr".to_string()][..])
        );
        assert_eq!(c.intake.signing_key_env, ["OFFBOARD_SIGNING_KEY"]);
        assert_eq!(c.intake.signature_tolerance_secs, 300);
        assert!(!c.intake.allow_unsigned && !c.intake.accept_legacy_signatures);
        assert_eq!(c.limits.max_offboardings_per_hour, Some(50));
        let guard = c.connections["smartsheet"].guard();
        assert_eq!(guard.patterns.len(), 2);
        assert!(guard.allow_admins);
        let plain = Config::parse("").unwrap();
        assert!(
            plain.intake.allowed_sources.is_none()
                && plain.limits.max_offboardings_per_hour.is_none()
        );
        assert!(Config::parse("[intake]\nallowed = []").is_err());
        assert!(Config::parse("[limits]\nmax_per_day = 1").is_err());
    }

    #[test]
    fn intake_settings_are_read_and_checked() {
        let c = Config::parse(
            r#"
[intake]
signing_key_env = ["OFFBOARD_SIGNING_KEY_NEW", "OFFBOARD_SIGNING_KEY_OLD"]
accept_legacy_signatures = true
signature_tolerance_secs = 60
recipient_domains = ["example.com", "Example.org"]
"#,
        )
        .unwrap();
        assert_eq!(
            c.intake.signing_key_env,
            ["OFFBOARD_SIGNING_KEY_NEW", "OFFBOARD_SIGNING_KEY_OLD"]
        );
        assert!(c.intake.accept_legacy_signatures);
        assert_eq!(c.intake.signature_tolerance_secs, 60);
        assert_eq!(c.intake.recipient_domains.as_ref().unwrap().len(), 2);
        for bad in [
            "[intake]\nsignature_tolerance_secs = 0",
            "[intake]\nsigning_key_env = \"\"",
            "[intake]\nsigning_key_env = 3",
            "[intake]\nrecipient_domains = [\"@example.com\"]",
            "[intake]\nrecipient_domains = [\"localhost\"]",
        ] {
            let e = Config::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("[intake]") || e.contains("signing_key_env"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn serve_on_postgres_needs_a_key_or_allow_unsigned() {
        let pg = "postgres://postgres@127.0.0.1/test";
        let unsigned = IntakeConfig::default();
        let refusal = unsigned.unsigned_refusal(pg).unwrap();
        assert!(refusal.contains("allow_unsigned") && !refusal.contains('\n'));
        assert!(unsigned.unsigned_refusal(DEFAULT_DATABASE_URL).is_none());
        let allowed = IntakeConfig {
            allow_unsigned: true,
            ..IntakeConfig::default()
        };
        assert!(allowed.unsigned_refusal(pg).is_none());
        let keyed = IntakeConfig {
            signing_key_env: vec!["K".into()],
            ..IntakeConfig::default()
        };
        assert!(keyed.unsigned_refusal(pg).is_none());
    }

    #[test]
    fn signing_keys_come_from_the_environment_and_are_checked() {
        let var = |name: &str| IntakeConfig {
            signing_key_env: vec![name.to_string()],
            ..IntakeConfig::default()
        };
        // Variables only this test sets.
        std::env::set_var("OFFBOARD_CONFIG_TEST_KEY_GOOD", "whsec_c2VjcmV0");
        std::env::set_var("OFFBOARD_CONFIG_TEST_KEY_BAD", "whsec_not base64!");
        assert_eq!(
            var("OFFBOARD_CONFIG_TEST_KEY_GOOD")
                .signing_keys()
                .unwrap()
                .len(),
            1
        );
        let e = var("OFFBOARD_CONFIG_TEST_KEY_BAD")
            .signing_keys()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("OFFBOARD_CONFIG_TEST_KEY_BAD") && !e.contains("not base64!"),
            "{e}"
        );
        let e = var("OFFBOARD_CONFIG_TEST_KEY_UNSET")
            .signing_keys()
            .unwrap_err();
        assert!(matches!(e, ConfigError::SigningKeyUnset(_)));
        assert!(IntakeConfig::default().signing_keys().unwrap().is_empty());
    }

    #[test]
    fn scim_connections_are_read_side_by_side_with_their_defaults() {
        let text = r#"
            [connections.slack]
            app = "scim"
            base_url = "https://api.slack.com/scim/v2"
            token_env = "SLACK_SCIM_TOKEN"
            requests_per_minute = 60
            match = "externalId"
            offboard = "delete"
            remove_from_groups = false

            [connections.github]
            app = "scim"
            base_url = "https://api.github.com/scim/v2/enterprises/acme"
            token_env = "GITHUB_SCIM_TOKEN"
        "#;
        let config = Config::parse(text).unwrap();
        let slack = &config.connections["slack"];
        assert_eq!(slack.app, AppKind::Scim);
        assert_eq!(
            slack.scim(),
            ScimSettings {
                match_on: ScimMatch::ExternalId,
                offboard: ScimOffboard::Delete,
                remove_from_groups: false,
            }
        );
        assert_eq!(
            config.connections["github"].scim(),
            ScimSettings {
                match_on: ScimMatch::UserName,
                offboard: ScimOffboard::Deactivate,
                remove_from_groups: true,
            }
        );
        let scim = "[connections.x]\napp = \"scim\"\nbase_url = \"https://x\"\ntoken_env = \"T\"\n";
        for (bad, says) in [
            (format!("{scim}match = \"mail\""), "unknown variant"),
            (format!("{scim}offboard = \"suspend\""), "unknown variant"),
            (
                "[connections.x]\napp = \"postman\"\nbase_url = \"https://x\"\ntoken_env = \"T\"\noffboard = \"delete\"".to_string(),
                "offboard is a setting of app = \"scim\" connections only",
            ),
        ] {
            let e = Config::parse(&bad).unwrap_err().to_string();
            assert!(e.contains(says) && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn bad_files_give_one_line_errors() {
        for bad in [
            "database_url = 3",
            "unknown_key = 1",
            "[connections.x]\napp = \"jira\"\nbase_url = \"https://x\"\ntoken_env = \"T\"",
            "[connections.x]\napp = \"postman\"\nbase_url = \"ftp://x\"\ntoken_env = \"T\"",
            "database_url = \"mysql://x\"",
        ] {
            let e = Config::parse(bad).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn secrets_and_passwords_stay_hidden() {
        assert_eq!(format!("{:?}", Secret::new("tok-123")), "Secret(***)");
        for (url, shown) in [
            (
                "amqp://guest:hunter2@h:5672/%2f",
                "amqp://guest:***@h:5672/%2f",
            ),
            (
                "postgres://app@db:5432/offboard?password=hunter2&sslmode=require",
                "postgres://app@db:5432/offboard?password=***&sslmode=require",
            ),
            (
                "postgres://app:hunter2@db/o?PassWord=hunter2&sslpassword=hunter2",
                "postgres://app:***@db/o?PassWord=***&sslpassword=***",
            ),
            (
                "sqlite://offboard.db?mode=rwc",
                "sqlite://offboard.db?mode=rwc",
            ),
            ("postgres://app@db/o", "postgres://app@db/o"),
        ] {
            assert_eq!(redact_url(url), shown);
            assert!(!redact_url(url).contains("hunter2"));
        }
    }
}
