//! `offboard submit --csv FILE`: one event per row of a leavers' list, all or nothing.
//!
//! Every row is checked first ([`read`], pure: text in, events or errors out); one bad
//! row stops the whole file before anything is published, and every bad line is named
//! by row and column. Then each event is published with a publisher confirm, with a
//! progress bar on a terminal and plain lines otherwise.
//!
//! Event ids are `csv-<first 12 hex digits of the file's SHA-256>-<row>`: submitting the
//! same file again publishes the same ids, which offboard recognises as duplicates and
//! starts nothing for.
//!
//! Files come as HR tools export them: headers are matched ignoring case, and spaces,
//! hyphens and underscores alike, with the common spellings of each column ([`ALIASES`]:
//! `Work Email`, `Transfer To`, …). Columns offboard does not know (names, departments,
//! managers) are ignored and named once; with `--strict` they are refused.

use std::io::IsTerminal;
use std::path::Path;

use chrono::Utc;
use lapin::options::ConfirmSelectOptions;
use sha2::{Digest, Sha256};

use super::{fail, Failure, Outcome, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::config::Config;
use crate::domain::event::{self, EventType, Request};

/// The columns a leavers' file may have; `email` is required.
pub const COLUMNS: [&str; 5] = ["email", "transfer_to", "type", "not_before", "connections"];

/// The header spellings read as each column, after [`normalise`]: what HR systems'
/// exports call them. A header matching none is unknown.
pub const ALIASES: [(&str, &[&str]); 5] = [
    (
        "email",
        &[
            "email",
            "e_mail",
            "email_address",
            "work_email",
            "work_email_address",
            "business_email",
            "primary_email",
        ],
    ),
    (
        "transfer_to",
        &[
            "transfer_to",
            "transfer_to_email",
            "transfer_email",
            "successor_email",
            "new_owner_email",
        ],
    ),
    ("type", &["type", "event_type", "request_type"]),
    ("not_before", &["not_before", "effective_date"]),
    ("connections", &["connections", "connection", "apps"]),
];

/// A header as it is compared: trimmed, lower case, with spaces and hyphens read as
/// underscores (`Work Email`, `work-email` and `WORK_EMAIL` are the same).
pub fn normalise(header: &str) -> String {
    header
        .trim()
        .chars()
        .map(|c| match c {
            ' ' | '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The column (one of [`COLUMNS`]) a header is read as, if any.
pub fn column_of(header: &str) -> Option<&'static str> {
    let h = normalise(header);
    ALIASES
        .iter()
        .find(|(_, spellings)| spellings.contains(&h.as_str()))
        .map(|(column, _)| *column)
}

/// Whether columns offboard does not know are ignored or refused (`--strict`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {
    /// Ignored, and named once on stderr.
    Ignore,
    /// The file is refused.
    Refuse,
}

/// A leavers' file read: its events, and the headers ignored as unknown.
#[derive(Clone, Debug, PartialEq)]
pub struct Leavers {
    /// One event per data row.
    pub requests: Vec<Request>,
    /// The headers of the columns that were not read, as written in the file.
    pub ignored: Vec<String>,
}

/// One problem in a leavers' file: the line (counting the header as row 1), the column,
/// and what is wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct RowError {
    /// Line number in the file, the header being row 1.
    pub row: u64,
    /// Column name (empty when the whole line is unreadable).
    pub column: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.column.is_empty() {
            write!(f, "row {}: {}", self.row, self.message)
        } else {
            write!(
                f,
                "row {}, column {}: {}",
                self.row, self.column, self.message
            )
        }
    }
}

/// One event per data row, or every problem found. `now` stamps the events' `time`;
/// `unknown` says what becomes of columns offboard does not know.
pub fn read(
    text: &[u8],
    known_connections: &[String],
    now: chrono::DateTime<Utc>,
    unknown: Unknown,
) -> Result<Leavers, Vec<RowError>> {
    let digest = hex::encode(Sha256::digest(text));
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text);
    let header_error = |message: String| {
        vec![RowError {
            row: 1,
            column: String::new(),
            message,
        }]
    };
    let headers = reader
        .headers()
        .map_err(|e| header_error(format!("unreadable header: {e}")))?
        .clone();
    let (columns, ignored) = read_headers(&headers, unknown).map_err(header_error)?;
    let mut requests = Vec::new();
    let mut errors = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = record
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map_or(i as u64 + 2, |p| line_at(text, p.byte()));
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errors.push(RowError {
                    row,
                    column: String::new(),
                    message: format!("unreadable: {e}"),
                });
                continue;
            }
        };
        let cell = |name: &str| {
            columns
                .iter()
                .position(|c| *c == Some(name))
                .and_then(|i| record.get(i))
                .filter(|v| !v.is_empty())
        };
        let row_of = RowOf {
            row,
            event_id: format!("csv-{}-{row}", &digest[..12]),
            now,
            known_connections,
        };
        match row_of.request(cell) {
            Ok(request) => requests.push(request),
            Err(found) => errors.extend(found),
        }
    }
    if requests.is_empty() && errors.is_empty() {
        errors.push(RowError {
            row: 2,
            column: String::new(),
            message: "the file has no rows".into(),
        });
    }
    if errors.is_empty() {
        Ok(Leavers { requests, ignored })
    } else {
        Err(errors)
    }
}

/// Each header read as its column (`None` when offboard does not know it) and the
/// headers ignored; or why the header row is refused (an unknown column under
/// [`Unknown::Refuse`], a column spelled twice, no email column).
fn read_headers(
    headers: &csv::StringRecord,
    unknown: Unknown,
) -> Result<(Vec<Option<&'static str>>, Vec<String>), String> {
    let columns: Vec<Option<&'static str>> = headers.iter().map(column_of).collect();
    let ignored: Vec<String> = headers
        .iter()
        .zip(&columns)
        .filter(|(_, c)| c.is_none())
        .map(|(h, _)| h.to_string())
        .collect();
    if let (Unknown::Refuse, Some(name)) = (unknown, ignored.first()) {
        return Err(format!(
            "unknown column {name:?}; the columns are {}",
            COLUMNS.join(", ")
        ));
    }
    for column in COLUMNS {
        let spelled: Vec<String> = headers
            .iter()
            .zip(&columns)
            .filter(|(_, c)| **c == Some(column))
            .map(|(h, _)| format!("{h:?}"))
            .collect();
        if spelled.len() > 1 {
            return Err(format!(
                "the headers {} are all the {column} column; keep one",
                spelled.join(", ")
            ));
        }
    }
    if !columns.contains(&Some("email")) {
        return Err("the email column is missing".into());
    }
    Ok((columns, ignored))
}

/// What a data row's event is made with besides its cells.
struct RowOf<'a> {
    /// Its line in the file.
    row: u64,
    /// Its event id: the file's digest and the line, so a file sent twice repeats ids.
    event_id: String,
    /// The events' `time`.
    now: chrono::DateTime<Utc>,
    /// The connections a `connections` cell may name.
    known_connections: &'a [String],
}

impl RowOf<'_> {
    /// The row's event, from `cell` (a column's non-empty value), or every problem in it.
    fn request<'c>(
        &self,
        cell: impl Fn(&str) -> Option<&'c str>,
    ) -> Result<Request, Vec<RowError>> {
        let mut errors = Vec::new();
        let mut bad = |column: &str, message: String| {
            errors.push(RowError {
                row: self.row,
                column: column.into(),
                message,
            })
        };
        let email = match cell("email").map(|e| event::valid_email(e, "email")) {
            None => {
                bad("email", "is empty".into());
                None
            }
            Some(Err(r)) => {
                bad("email", r.message);
                None
            }
            Some(Ok(e)) => Some(e),
        };
        let transfer_to = match cell("transfer_to").map(|e| event::valid_email(e, "transfer_to")) {
            Some(Err(r)) => {
                bad("transfer_to", r.message);
                None
            }
            other => other.and_then(Result::ok),
        };
        let event_type = match cell("type") {
            None => Some(EventType::Offboarding),
            Some(t) => EventType::parse(t).or_else(|| {
                bad(
                    "type",
                    format!("{t:?} is not offboarding.requested or license.reclaim.requested"),
                );
                None
            }),
        };
        let not_before = match cell("not_before").map(crate::evidence::parse_date) {
            Some(Err(e)) => {
                bad("not_before", e.to_string());
                None
            }
            other => other.and_then(Result::ok),
        };
        let connections: Option<Vec<String>> = cell("connections").map(|c| {
            c.split([';', ' ', '|'])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        });
        for c in connections.iter().flatten() {
            if !self.known_connections.contains(c) {
                bad(
                    "connections",
                    format!("no connection named {c:?} in the configuration"),
                );
            }
        }
        match (email, event_type) {
            (Some(person_email), Some(event_type)) if errors.is_empty() => Ok(Request {
                event_id: self.event_id.clone(),
                source: "offboard-csv".into(),
                event_type,
                time: Some(self.now),
                person_email,
                employee_id: None,
                transfer_to,
                connections,
                not_before,
                reason: None,
            }),
            _ => Err(errors),
        }
    }
}

/// The line (from 1) of the first non-blank character at or after `byte`: the reader
/// reports a record as starting where the blank lines before it start.
fn line_at(text: &[u8], byte: u64) -> u64 {
    let start = (byte as usize).min(text.len());
    let skipped = text[start..]
        .iter()
        .take_while(|b| matches!(b, b'\n' | b'\r'))
        .count();
    1 + text[..start + skipped]
        .iter()
        .filter(|b| **b == b'\n')
        .count() as u64
}

/// `offboard submit --csv FILE` (`--strict`: `unknown` is [`Unknown::Refuse`]).
pub async fn run(config: &Config, path: &Path, unknown: Unknown) -> Outcome {
    let text = std::fs::read(path)
        .map_err(|e| fail(EXIT_USAGE, format!("cannot read {}: {e}", path.display())))?;
    let known: Vec<String> = config.connections.keys().cloned().collect();
    let requests = reported(path, read(&text, &known, Utc::now(), unknown))?;
    let signer = super::signer(config)?;
    let (conn, channel) = crate::intake::open(&config.amqp_url)
        .await
        .map_err(|e| fail(EXIT_FAILURE, e))?;
    crate::intake::topology::declare_upgrading(&conn, &config.amqp)
        .await
        .map_err(|e| fail(EXIT_FAILURE, format!("cannot declare the topology: {e}")))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| fail(EXIT_FAILURE, e.to_string()))?;
    let total = requests.len() as u64;
    let progress = Progress::new(total);
    // Printing stops if the reader goes away; publishing goes on to the end.
    let mut listening = true;
    for (i, request) in requests.iter().enumerate() {
        let done = i as u64 + 1;
        let body = event::to_cloudevent(request).to_string().into_bytes();
        // Signed when each is sent, so that a long file stays within the tolerance.
        let signed = signer.as_ref().map(|sign| sign(&request.event_id, &body));
        crate::intake::publish(
            &channel,
            &config.amqp.exchange,
            request.event_type.as_str(),
            &body,
            signed.as_ref(),
        )
        .await
        .map_err(|e| {
            fail(
                EXIT_FAILURE,
                format!("{done} of {total}: {e}; the events before it were published"),
            )
        })?;
        if listening {
            listening = super::output::write_unless_gone(format_args!(
                "{} {}\n",
                request.event_id, request.person_email
            ));
        }
        progress.published(done);
    }
    progress.finish();
    let _ = conn.close(200, "done".into()).await;
    let reclaims = requests
        .iter()
        .filter(|r| r.event_type == EventType::LicenseReclaim)
        .count();
    eprintln!(
        "published {total} events from {} ({} offboarding, {reclaims} licence reclaim), each confirmed by the broker",
        path.display(),
        total as usize - reclaims
    );
    Ok(EXIT_OK)
}

/// The events of a file read well (the ignored columns named on stderr), or every bad
/// line on stderr and the verb's failure.
fn reported(path: &Path, read: Result<Leavers, Vec<RowError>>) -> Result<Vec<Request>, Failure> {
    match read {
        Ok(Leavers { requests, ignored }) => {
            if !ignored.is_empty() {
                let names: Vec<String> = ignored.iter().map(|h| format!("{h:?}")).collect();
                eprintln!(
                    "{}: ignoring column(s) offboard does not read: {} (--strict refuses them)",
                    path.display(),
                    names.join(", ")
                );
            }
            Ok(requests)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{}: {e}", path.display());
            }
            Err(fail(
                EXIT_USAGE,
                format!(
                    "{} bad line(s) in {}; nothing was published",
                    errors.len(),
                    path.display()
                ),
            ))
        }
    }
}

/// How far publishing has come, on stderr: a bar on a terminal, else a line every
/// tenth of the file.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} events published ({per_sec}, {eta} left)",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Progress { bar, total }
    }

    /// `done` events of the total are published.
    fn published(&self, done: u64) {
        let step = (self.total / 10).max(1);
        match &self.bar {
            Some(bar) => bar.inc(1),
            None if done.is_multiple_of(step) || done == self.total => {
                eprintln!("published {done}/{}", self.total)
            }
            None => {}
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A test helper: the rows' errors as the lines a person reads, to compare with text.
    fn check(text: &str) -> Result<Vec<Request>, Vec<String>> {
        read_as(text, Unknown::Refuse).map(|l| l.requests)
    }

    fn read_as(text: &str, unknown: Unknown) -> Result<Leavers, Vec<String>> {
        read(
            text.as_bytes(),
            &["smartsheet".into(), "postman".into()],
            Utc::now(),
            unknown,
        )
        .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn good_rows_become_events() {
        let r = check(
            "email,transfer_to,type,not_before,connections\n\
             ada@example.com,grace@example.com,,2026-12-01,smartsheet\n\
             linus@example.com,,license.reclaim.requested,,smartsheet;postman\n",
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].transfer_to.as_deref(), Some("grace@example.com"));
        assert_eq!(r[0].event_type, EventType::Offboarding);
        assert!(r[0].not_before.is_some());
        assert_eq!(r[1].event_type, EventType::LicenseReclaim);
        assert_eq!(r[1].connections.as_ref().unwrap().len(), 2);
        assert!(r[0].event_id.starts_with("csv-") && r[0].event_id.ends_with("-2"));
    }

    #[test]
    fn every_bad_cell_is_named_by_row_and_column() {
        let cases = [
            ("email\nnot-an-email\n", "row 2, column email"),
            (
                "email,transfer_to\nada@example.com,\n\n,grace@example.com\n",
                "row 4, column email: is empty",
            ),
            (
                "email,type\nada@example.com,user.hired\n",
                "row 2, column type",
            ),
            (
                "email,not_before\nada@example.com,soon\n",
                "row 2, column not_before",
            ),
            (
                "email,connections\nada@example.com,jira\n",
                "row 2, column connections",
            ),
            (
                "email,transfer_to\nada@example.com,grace\n",
                "row 2, column transfer_to",
            ),
            ("mail\nada@example.com\n", "row 1: unknown column \"mail\""),
            (
                "transfer_to\ngrace@example.com\n",
                "row 1: the email column is missing",
            ),
            ("email\n", "the file has no rows"),
        ];
        for (text, expected) in cases {
            let errors = check(text).unwrap_err();
            assert!(
                errors.iter().any(|e| e.contains(expected)),
                "{text:?}: {errors:?}"
            );
        }
    }

    #[test]
    fn the_same_file_gives_the_same_ids() {
        let text = "email\nada@example.com\n";
        assert_eq!(
            check(text).unwrap()[0].event_id,
            check(text).unwrap()[0].event_id
        );
    }

    /// An HR export: its own spellings of the known columns, and names, departments and
    /// managers besides, which are ignored (and listed) unless the file is read strictly.
    #[test]
    fn an_hr_export_is_read_by_its_spellings_and_its_other_columns_ignored() {
        let text = "Employee Name,Work Email,Department,Transfer-To,Manager,EFFECTIVE DATE\n\
                    Ada Lovelace,ada@example.com,R&D,grace@example.com,Grace,2026-12-01\n";
        let leavers = read_as(text, Unknown::Ignore).unwrap();
        assert_eq!(leavers.ignored, ["Employee Name", "Department", "Manager"]);
        let r = &leavers.requests[0];
        assert_eq!(r.person_email, "ada@example.com");
        assert_eq!(r.transfer_to.as_deref(), Some("grace@example.com"));
        assert!(r.not_before.is_some());
        let strict = read_as(text, Unknown::Refuse).unwrap_err();
        assert!(
            strict[0].contains("row 1: unknown column \"Employee Name\""),
            "{strict:?}"
        );
    }

    #[test]
    fn headers_are_compared_ignoring_case_spaces_hyphens_and_underscores() {
        for header in [
            "Email",
            "EMAIL",
            "work email",
            "Work_Email",
            "e-mail",
            " Email Address ",
        ] {
            assert_eq!(column_of(header), Some("email"), "{header:?}");
        }
        for header in ["transfer to", "Transfer To", "TRANSFER_TO", "transfer-to"] {
            assert_eq!(column_of(header), Some("transfer_to"), "{header:?}");
        }
        for header in ["Name", "Manager", "mail", "emails"] {
            assert_eq!(column_of(header), None, "{header:?}");
        }
        // Two spellings of one column: which one is meant cannot be told.
        let errors = read_as(
            "Email,Work Email\na@example.com,b@example.com\n",
            Unknown::Ignore,
        )
        .unwrap_err();
        assert!(errors[0].contains("are all the email column"), "{errors:?}");
        // Ignoring other columns does not make the email column optional.
        let errors = read_as("Name\nAda\n", Unknown::Ignore).unwrap_err();
        assert!(
            errors[0].contains("the email column is missing"),
            "{errors:?}"
        );
    }
}
