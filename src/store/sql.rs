//! The few statements written as SQL rather than through sea-orm's builders: claims with
//! `FOR UPDATE SKIP LOCKED`, compare-and-set appends and upserts that read the database's
//! own clock. This module hides what differs between PostgreSQL and SQLite.

use sea_orm::{DbBackend, Statement, Value};

/// How to say a few things in the dialect of one back-end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dialect(pub DbBackend);

impl Dialect {
    /// A statement from SQL written with `$1, $2…` placeholders.
    ///
    /// On SQLite every `$n` becomes a plain `?` and the values are laid out in the order
    /// their placeholders appear (a value used twice is bound twice), so that statements
    /// can be sent together (see [`Dialect::join`]): SQLite numbers the slots of each
    /// statement up to the highest `?NNN` in it, and the driver binds slots it finds
    /// unnamed to the next unused values, so a later statement's `?40` would leave 39
    /// unnamed slots before it and overrun the values.
    pub fn stmt(self, sql: &str, values: Vec<Value>) -> Statement {
        if self.0 != DbBackend::Sqlite {
            return Statement::from_sql_and_values(self.0, sql, values);
        }
        let mut text = String::with_capacity(sql.len());
        let mut laid_out = Vec::with_capacity(values.len());
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '$' {
                text.push(c);
                continue;
            }
            let mut n = 0usize;
            while let Some(digit) = chars.peek().and_then(|d| d.to_digit(10)) {
                n = n * 10 + digit as usize;
                chars.next();
            }
            text.push('?');
            laid_out.push(values[n - 1].clone());
        }
        Statement::from_sql_and_values(DbBackend::Sqlite, text, laid_out)
    }

    /// SQLite statements, each with positional `?` placeholders (as [`Dialect::stmt`] and
    /// sea-query write them), as one text sent in one trip, their values in order.
    pub fn join(statements: impl IntoIterator<Item = Statement>) -> Statement {
        let mut sql = Vec::new();
        let mut values = Vec::new();
        for s in statements {
            sql.push(s.sql);
            values.extend(s.values.map(|v| v.0).unwrap_or_default());
        }
        Statement::from_sql_and_values(DbBackend::Sqlite, sql.join("; "), values)
    }

    /// Placeholder `$n` with the type PostgreSQL cannot infer where it stands (in a
    /// `VALUES` list or a bare `SELECT`); SQLite takes the value as bound.
    pub fn typed(self, n: usize, ty: &str) -> String {
        match self.0 {
            DbBackend::Sqlite => format!("${n}"),
            _ => format!("${n}::{ty}"),
        }
    }

    /// The database's current time, comparable with stored timestamps.
    pub fn now(self) -> String {
        self.later(0.0)
    }

    /// The database's current time plus `secs` seconds. SQLite stores sea-orm's times as
    /// RFC 3339 text, which `strftime` reproduces (so text order is time order).
    pub fn later(self, secs: f64) -> String {
        match self.0 {
            DbBackend::Sqlite => {
                format!("strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', '{secs:+.3} seconds')")
            }
            _ if secs == 0.0 => "now()".to_string(),
            _ => format!("(now() + interval '{secs:.3} seconds')"),
        }
    }

    /// The database's current time in microseconds since the Unix epoch.
    pub fn now_micros(self) -> &'static str {
        match self.0 {
            DbBackend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
            _ => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
        }
    }

    /// The larger of two values.
    pub fn greatest(self) -> &'static str {
        match self.0 {
            DbBackend::Sqlite => "MAX",
            _ => "GREATEST",
        }
    }

    /// Row locking for a claim's sub-select: other claimers skip what one is taking.
    /// SQLite has one writer at a time, so a single statement is already exclusive.
    pub fn skip_locked(self) -> &'static str {
        match self.0 {
            DbBackend::Sqlite => "",
            _ => "FOR UPDATE SKIP LOCKED",
        }
    }

    /// Locks the rows a `SELECT` reads until the transaction ends (SQLite's one writer
    /// needs no lock of its own).
    pub fn for_update(self) -> &'static str {
        match self.0 {
            DbBackend::Sqlite => "",
            _ => "FOR UPDATE",
        }
    }
}

/// Text the database can store: PostgreSQL refuses 0x00 in text, so it is escaped.
pub(crate) fn storable(text: &str) -> String {
    if text.contains('\0') {
        text.replace('\0', "\\u0000")
    } else {
        text.to_string()
    }
}

/// Text safe to show a person: control characters other than newline and tab escaped.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c.to_string(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storable_text_holds_no_nul() {
        assert_eq!(storable("a\0b"), "a\\u0000b");
        assert_eq!(storable("plain"), "plain");
    }

    #[test]
    fn printable_text_escapes_control_characters_but_keeps_lines() {
        assert_eq!(printable("a\0b\x1b[31m\nc"), "a\\u{0}b\\u{1b}[31m\nc");
    }

    #[test]
    fn sqlite_placeholders_are_laid_out_in_order_of_appearance() {
        let values: Vec<Value> = (1..=10).map(Value::from).collect();
        let s = Dialect(DbBackend::Sqlite).stmt(
            "UPDATE t SET a = $3 WHERE b = $1; SELECT $2, $10, $3",
            values,
        );
        assert_eq!(s.sql, "UPDATE t SET a = ? WHERE b = ?; SELECT ?, ?, ?");
        let expected: Vec<Value> = [3, 1, 2, 10, 3].into_iter().map(Value::from).collect();
        assert_eq!(s.values.unwrap().0, expected);
    }

    #[test]
    fn joined_sqlite_statements_keep_their_values_in_order() {
        let d = Dialect(DbBackend::Sqlite);
        let s = Dialect::join([
            d.stmt("SELECT $2, $1", vec![1.into(), 2.into()]),
            d.stmt("SELECT 0", vec![]),
            d.stmt("SELECT $1", vec![3.into()]),
        ]);
        assert_eq!(s.sql, "SELECT ?, ?; SELECT 0; SELECT ?");
        let expected: Vec<Value> = [2, 1, 3].into_iter().map(Value::from).collect();
        assert_eq!(s.values.unwrap().0, expected);
    }
}
