//! The audit trail's hash chain: each record's hash covers the previous record's hash, its
//! position, its time and its body, so an edited, deleted, inserted or reordered record
//! breaks the chain from that point on.

use chrono::{DateTime, SubsecRound, Utc};
use sha2::{Digest, Sha256};

/// The `prev_hash` of a workflow's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A time as stored and hashed: microsecond precision (what PostgreSQL keeps).
pub fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// The hash of a record at position `seq` (from 1) written at `at` with JSON `body`.
pub fn link(prev_hash: &str, seq: i32, at: DateTime<Utc>, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(stored_time(at).timestamp_micros().to_string().as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

/// A stored record, as far as the chain is concerned.
pub struct Link<'a> {
    /// Position, from 1.
    pub seq: i32,
    /// Written at.
    pub at: DateTime<Utc>,
    /// JSON body.
    pub body: &'a str,
    /// Stored previous hash.
    pub prev_hash: &'a str,
    /// Stored hash.
    pub hash: &'a str,
}

/// Checks a trail (ordered by position) against its stored head; on a break, returns the
/// 0-based index of the first bad record and why.
pub fn verify(links: &[Link<'_>], head: &str) -> Result<(), (usize, String)> {
    let mut prev = GENESIS.to_string();
    for (i, l) in links.iter().enumerate() {
        if l.seq != i as i32 + 1 {
            return Err((
                i,
                format!(
                    "position {} found where {} was expected (a record is missing or moved)",
                    l.seq,
                    i + 1
                ),
            ));
        }
        if l.prev_hash != prev {
            return Err((i, "does not point at the record before it".into()));
        }
        if link(&prev, l.seq, l.at, l.body) != l.hash {
            return Err((i, "its content does not match its hash (edited)".into()));
        }
        prev = l.hash.to_string();
    }
    if prev != head {
        return Err((
            links.len().saturating_sub(1),
            "the trail ends before the workflow's last record (records removed from the end)"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(bodies: &[&'static str]) -> Vec<(i32, DateTime<Utc>, &'static str, String, String)> {
        let at = DateTime::parse_from_rfc3339("2026-11-23T10:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut prev = GENESIS.to_string();
        let mut out = Vec::new();
        for (i, b) in bodies.iter().enumerate() {
            let seq = i as i32 + 1;
            let hash = link(&prev, seq, at, b);
            out.push((seq, stored_time(at), *b, prev.clone(), hash.clone()));
            prev = hash;
        }
        out
    }

    fn links<'a>(c: &'a [(i32, DateTime<Utc>, &'static str, String, String)]) -> Vec<Link<'a>> {
        c.iter()
            .map(|(seq, at, body, prev, hash)| Link {
                seq: *seq,
                at: *at,
                body,
                prev_hash: prev,
                hash,
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies_and_tampering_is_located() {
        let c = chain(&["a", "b", "c"]);
        let head = c[2].4.clone();
        assert_eq!(verify(&links(&c), &head), Ok(()));

        let mut edited = c.clone();
        edited[1].2 = "B";
        assert_eq!(verify(&links(&edited), &head).unwrap_err().0, 1);

        let mut deleted = c.clone();
        deleted.remove(1);
        assert_eq!(verify(&links(&deleted), &head).unwrap_err().0, 1);

        let mut swapped = c.clone();
        swapped.swap(0, 1);
        assert_eq!(verify(&links(&swapped), &head).unwrap_err().0, 0);

        let cut = &c[..2];
        assert_eq!(verify(&links(cut), &head).unwrap_err().0, 1);
    }
}
