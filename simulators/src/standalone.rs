//! A simulator in a process of its own, as the bench's separate-process mode runs it (and
//! the `simulate` binary): one app's API on a loopback port, seeded with an admin holding
//! a given token and `users` people named `user{i}@bench.example`, so a caller can drive
//! licence reclaims against it over real sockets from another process.
//!
//! The process speaks a line protocol on its standard streams: it prints its API root
//! first, then answers `calls` on stdin with one JSON line summing up the requests it saw
//! ([`CallSummary`]), and `clear` by forgetting them; it exits when stdin closes.

use std::collections::HashMap;
use std::io;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::postman::{PostmanSim, SimMember};
use crate::smartsheet::{SimUser, SmartsheetSim};

/// Which API to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    /// The Smartsheet REST API 2.0 (reclaimable users: `resourceViewer` set).
    Smartsheet,
    /// The Postman API with SCIM (the token is both the API key and the SCIM key).
    Postman,
}

/// What to serve and with whom.
#[derive(Clone, Debug)]
pub struct Seed {
    /// The API.
    pub app: App,
    /// The port on `127.0.0.1` (`0`: any free one; the printed root says which).
    pub port: u16,
    /// How many people to create: `user0@bench.example`, `user1@…`, …
    pub users: usize,
    /// The admin's token (Smartsheet bearer token, Postman API and SCIM key).
    pub token: String,
}

/// The email of the bench's `i`-th person.
pub fn user_email(i: usize) -> String {
    format!("user{i}@bench.example")
}

/// What the simulator saw, for a caller checking that nothing was driven twice: every
/// request, the writes (any method but `GET`), and the most writes one path received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallSummary {
    /// Requests received.
    pub calls: usize,
    /// Requests answered with a status of 400 or above, or not answered.
    pub failed: usize,
    /// Requests that change something (`PUT`, `POST`, `PATCH`, `DELETE`).
    pub writes: usize,
    /// Distinct paths written to.
    pub written_paths: usize,
    /// The most writes any one path received (1 when each person was written once).
    pub most_writes_on_one_path: usize,
}

impl CallSummary {
    /// Sums up requests given as (method, path, status).
    pub fn of<'a>(calls: impl IntoIterator<Item = (&'a str, &'a str, u16)>) -> CallSummary {
        let mut summary = CallSummary::default();
        let mut per_path: HashMap<&str, usize> = HashMap::new();
        for (method, path, status) in calls {
            summary.calls += 1;
            if status == 0 || status >= 400 {
                summary.failed += 1;
            }
            if method != "GET" {
                summary.writes += 1;
                *per_path.entry(path).or_default() += 1;
            }
        }
        summary.written_paths = per_path.len();
        summary.most_writes_on_one_path = per_path.values().copied().max().unwrap_or(0);
        summary
    }

    /// The summary as one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "calls": self.calls,
            "failed": self.failed,
            "writes": self.writes,
            "written_paths": self.written_paths,
            "most_writes_on_one_path": self.most_writes_on_one_path,
        })
        .to_string()
    }

    /// Reads a line [`CallSummary::to_json`] wrote; `None` if it is not one.
    pub fn from_json(line: &str) -> Option<CallSummary> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let field = |name: &str| v.get(name)?.as_u64().map(|n| n as usize);
        Some(CallSummary {
            calls: field("calls")?,
            failed: field("failed")?,
            writes: field("writes")?,
            written_paths: field("written_paths")?,
            most_writes_on_one_path: field("most_writes_on_one_path")?,
        })
    }
}

/// A seeded simulator of either app.
enum Running {
    Smartsheet(SmartsheetSim),
    Postman(PostmanSim),
}

impl Running {
    async fn start(seed: &Seed) -> io::Result<Running> {
        Ok(match seed.app {
            App::Smartsheet => {
                let sim = SmartsheetSim::start_on(seed.port).await?;
                let admin = sim.add_user(SimUser {
                    admin: true,
                    ..SimUser::new("admin@bench.example")
                });
                sim.add_token(&seed.token, admin);
                for i in 0..seed.users {
                    sim.add_user(SimUser {
                        resource_viewer: true,
                        ..SimUser::new(&user_email(i))
                    });
                }
                Running::Smartsheet(sim)
            }
            App::Postman => {
                let sim = PostmanSim::start_on(seed.port).await?;
                let team = sim.seed_demo();
                sim.add_api_key(&seed.token, team.admin_id);
                sim.add_scim_key(&seed.token);
                for i in 0..seed.users {
                    sim.add_member(SimMember::new(&user_email(i)));
                }
                Running::Postman(sim)
            }
        })
    }

    fn base_url(&self) -> String {
        match self {
            Running::Smartsheet(sim) => sim.base_url(),
            Running::Postman(sim) => sim.base_url(),
        }
    }

    fn summary(&self) -> CallSummary {
        match self {
            Running::Smartsheet(sim) => {
                let calls = sim.calls();
                CallSummary::of(
                    calls
                        .iter()
                        .map(|c| (c.method.as_str(), c.path.as_str(), c.status)),
                )
            }
            Running::Postman(sim) => {
                let calls = sim.calls();
                CallSummary::of(
                    calls
                        .iter()
                        .map(|c| (c.method.as_str(), c.path.as_str(), c.status)),
                )
            }
        }
    }

    fn clear(&self) {
        match self {
            Running::Smartsheet(sim) => sim.clear_calls(),
            Running::Postman(sim) => sim.clear_calls(),
        }
    }
}

/// Serves `seed` until stdin closes: prints the API root, then answers `calls` and
/// `clear` lines (see the module docs).
pub async fn serve(seed: &Seed) -> io::Result<()> {
    let sim = Running::start(seed).await?;
    let mut out = tokio::io::stdout();
    out.write_all(format!("{}\n", sim.base_url()).as_bytes())
        .await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match line.trim() {
            "calls" => {
                out.write_all(format!("{}\n", sim.summary().to_json()).as_bytes())
                    .await?
            }
            "clear" => {
                sim.clear();
                out.write_all(b"cleared\n").await?
            }
            other => {
                let shown: String = other.chars().flat_map(char::escape_default).collect();
                out.write_all(format!("unknown command \"{shown}\"\n").as_bytes())
                    .await?
            }
        }
        out.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_written_twice_shows_in_the_summary() {
        let summary = CallSummary::of([
            ("GET", "/users", 200),
            ("PUT", "/users/1", 200),
            ("PUT", "/users/2", 200),
            ("PUT", "/users/1", 429),
        ]);
        assert_eq!(
            summary,
            CallSummary {
                calls: 4,
                failed: 1,
                writes: 3,
                written_paths: 2,
                most_writes_on_one_path: 2,
            }
        );
        assert_eq!(CallSummary::from_json(&summary.to_json()), Some(summary));
    }
}
