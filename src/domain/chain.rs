//! The audit trail's hash chain: each record's link covers the previous record's link, its
//! position, its time and its body, so an edited, deleted, inserted or reordered record
//! breaks the chain from that point on.
//!
//! Two versions of link live side by side. Version 0 is plain SHA-256: anyone with write
//! access to the database can edit a record and recompute every later link, so it proves
//! order but not authorship. Version 1 is HMAC-SHA256 under the audit key
//! (`OFFBOARD_AUDIT_KEY`), written as `hmac1:` followed by the hex MAC: without the key
//! nobody can produce a link that verifies.
//!
//! Plain links are accepted only where no key could have written them. In a database that
//! never used the key, every trail is plain. Once the key is in use, the store lists, once,
//! the trails that held plain links at that moment (the legacy trails, each with the
//! position of its last plain record); from then on a plain link is a break anywhere else,
//! whatever its date — a date is part of the record and anyone rewriting it can choose
//! it. In any trail, a plain link after a keyed one is a break (a downgrade). The key and
//! the legacy list are passed in ([`Verifier`]): this module does no I/O.

use chrono::{DateTime, SubsecRound, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The `prev_hash` of a workflow's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What marks a keyed (version 1) link.
const KEYED: &str = "hmac1:";

/// The secret that keys the chain. Its `Debug` prints `***`: it never reaches a log.
#[derive(Clone)]
pub struct AuditKey(Vec<u8>);

impl AuditKey {
    /// A key from its bytes; `None` when empty (an empty key protects nothing).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<AuditKey> {
        let bytes = bytes.into();
        (!bytes.is_empty()).then_some(AuditKey(bytes))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(***)")
    }
}

/// A time as stored and hashed: microsecond precision (what PostgreSQL keeps).
pub fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// The bytes a link covers, in order.
fn covered(prev_hash: &str, seq: i32, at: DateTime<Utc>, body: &str) -> [Vec<u8>; 4] {
    [
        prev_hash.as_bytes().to_vec(),
        seq.to_string().into_bytes(),
        stored_time(at).timestamp_micros().to_string().into_bytes(),
        body.as_bytes().to_vec(),
    ]
}

/// The plain (version 0) link of a record at position `seq` (from 1) written at `at` with
/// JSON `body`.
pub fn plain_link(prev_hash: &str, seq: i32, at: DateTime<Utc>, body: &str) -> String {
    let mut h = Sha256::new();
    for (i, part) in covered(prev_hash, seq, at, body).iter().enumerate() {
        if i > 0 {
            h.update(b"\n");
        }
        h.update(part);
    }
    hex::encode(h.finalize())
}

fn keyed_mac(
    key: &AuditKey,
    prev_hash: &str,
    seq: i32,
    at: DateTime<Utc>,
    body: &str,
) -> Hmac<Sha256> {
    let mut m = key.mac();
    for (i, part) in covered(prev_hash, seq, at, body).iter().enumerate() {
        if i > 0 {
            m.update(b"\n");
        }
        m.update(part);
    }
    m
}

/// The link a writer stores: keyed when there is a key, plain otherwise.
pub fn link(
    key: Option<&AuditKey>,
    prev_hash: &str,
    seq: i32,
    at: DateTime<Utc>,
    body: &str,
) -> String {
    match key {
        Some(k) => format!(
            "{KEYED}{}",
            hex::encode(
                keyed_mac(k, prev_hash, seq, at, body)
                    .finalize()
                    .into_bytes()
            )
        ),
        None => plain_link(prev_hash, seq, at, body),
    }
}

/// One record chained onto a trail, ready to store: its position, the link before it,
/// its time (as stored), the record, its JSON body and its own link.
#[derive(Clone, Debug)]
pub struct Chained<'r, R> {
    /// Position, from 1.
    pub seq: i32,
    /// The link of the record before it (or [`GENESIS`]).
    pub prev: String,
    /// Written at, at the precision the database keeps.
    pub at: DateTime<Utc>,
    /// The record.
    pub record: &'r R,
    /// Its JSON body, as hashed and stored.
    pub body: String,
    /// Its link.
    pub hash: String,
}

/// Chains `records` (each with its time) after a trail that ends at position `seq` with
/// link `head` (0 and [`GENESIS`] for a new trail): the one place a writer computes links,
/// keyed when there is a key. The last element's `seq` and `hash` are the trail's new end.
pub fn chain_after<'r, R: serde::Serialize>(
    key: Option<&AuditKey>,
    seq: i32,
    head: &str,
    records: impl IntoIterator<Item = (DateTime<Utc>, &'r R)>,
) -> Result<Vec<Chained<'r, R>>, serde_json::Error> {
    let (mut seq, mut prev) = (seq, head.to_string());
    let mut chained = Vec::new();
    for (at, record) in records {
        let at = stored_time(at);
        let body = serde_json::to_string(record)?;
        seq += 1;
        let hash = link(key, &prev, seq, at, &body);
        let before = std::mem::replace(&mut prev, hash.clone());
        chained.push(Chained {
            seq,
            prev: before,
            at,
            record,
            body,
            hash,
        });
    }
    Ok(chained)
}

/// Whether a stored link is keyed (version 1).
pub fn is_keyed(hash: &str) -> bool {
    hash.starts_with(KEYED)
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

/// Which plain (version 0) links a trail may hold, besides none after a keyed one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlainLinks {
    /// The database has never used the audit key: plain links stand.
    #[default]
    Accepted,
    /// The audit key is in use: a plain link stands only at a position up to this one.
    /// For a legacy trail, the position of its last plain record when the key was first
    /// used; 0 for every other trail (none of its links may be plain).
    Through(i32),
}

impl PlainLinks {
    /// The rule for one trail: `key_in_use` says whether the database has recorded the
    /// key's first use, `legacy` the position the trail was listed with then, if it was.
    pub fn of(key_in_use: bool, legacy: Option<i32>) -> PlainLinks {
        match (key_in_use, legacy) {
            (false, _) => PlainLinks::Accepted,
            (true, through) => PlainLinks::Through(through.unwrap_or(0)),
        }
    }
}

/// What a verifier knows beyond the trail: the key, and which plain links the trail may
/// hold (see [`PlainLinks`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Verifier<'a> {
    /// The audit key; without it keyed links cannot be checked.
    pub key: Option<&'a AuditKey>,
    /// Where plain links stand in this trail.
    pub plain: PlainLinks,
}

/// Whether one record's stored link is the one its content gives; `Err` says why not.
// Private, and its message becomes the text of `verify`'s `(index, why)` verdict, which
// the CLI prints and the console renders: a reason for people, not an error to match on.
fn check_link(v: Verifier<'_>, prev: &str, l: &Link<'_>, after_keyed: bool) -> Result<(), String> {
    let key = v.key;
    match l.hash.strip_prefix(KEYED) {
        Some(mac) => {
            let key =
                key.ok_or("a keyed link, and no audit key to check it (set OFFBOARD_AUDIT_KEY)")?;
            let mac = hex::decode(mac).map_err(|_| "its keyed link is not hex".to_string())?;
            // Constant time: a verifier's timing says nothing about the right MAC.
            keyed_mac(key, prev, l.seq, l.at, l.body)
                .verify_slice(&mac)
                .map_err(|_| "its content does not match its keyed link (edited, or written without the audit key)".to_string())
        }
        None if after_keyed => Err(
            "a plain link after keyed ones (the trail was rewritten without the audit key)".into(),
        ),
        None => match v.plain {
            PlainLinks::Through(0) => Err(
                "a plain link in a trail that was not plain when this database's chain was keyed (rewritten without the audit key)"
                    .into(),
            ),
            PlainLinks::Through(last) if l.seq > last => Err(format!(
                "a plain link past the {last} records this trail held when the chain was keyed (rewritten without the audit key)"
            )),
            _ if plain_link(prev, l.seq, l.at, l.body) != l.hash => {
                Err("its content does not match its hash (edited)".into())
            }
            _ => Ok(()),
        },
    }
}

/// Checks a trail (ordered by position) against its stored head, as far as `verifier`
/// can; on a break, returns the 0-based index of the first bad record and why.
pub fn verify(
    links: &[Link<'_>],
    head: &str,
    verifier: Verifier<'_>,
) -> Result<(), (usize, String)> {
    let mut prev = GENESIS.to_string();
    let mut after_keyed = false;
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
        check_link(verifier, &prev, l, after_keyed).map_err(|why| (i, why))?;
        after_keyed |= is_keyed(l.hash);
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

    type Row = (i32, DateTime<Utc>, String, String, String);

    fn with(key: Option<&AuditKey>) -> Verifier<'_> {
        Verifier {
            key,
            plain: PlainLinks::Accepted,
        }
    }

    /// A trail of `bodies`, each linked with `keys[i]` (the last key repeats).
    fn chain(bodies: &[&'static str], keys: &[Option<&AuditKey>]) -> Vec<Row> {
        let at = DateTime::parse_from_rfc3339("2026-11-23T10:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut prev = GENESIS.to_string();
        let mut out = Vec::new();
        for (i, b) in bodies.iter().enumerate() {
            let seq = i as i32 + 1;
            let key = keys[i.min(keys.len() - 1)];
            let hash = link(key, &prev, seq, at, b);
            out.push((
                seq,
                stored_time(at),
                b.to_string(),
                prev.clone(),
                hash.clone(),
            ));
            prev = hash;
        }
        out
    }

    fn links(c: &[Row]) -> Vec<Link<'_>> {
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
    fn a_trail_chained_in_two_appends_verifies_keyed_and_plain() {
        let at = DateTime::parse_from_rfc3339("2026-11-23T10:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let key = AuditKey::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap();
        let records = ["created", "step_started", "step_succeeded"].map(json_kind);
        for key in [None, Some(&key)] {
            let first = chain_after(key, 0, GENESIS, records[..1].iter().map(|r| (at, r))).unwrap();
            let end = first.last().unwrap();
            let rest = chain_after(
                key,
                end.seq,
                &end.hash,
                records[1..].iter().map(|r| (at, r)),
            )
            .unwrap();
            let all: Vec<_> = first.iter().chain(&rest).collect();
            assert_eq!(all.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2, 3]);
            assert_eq!(all[0].at, stored_time(at));
            assert_eq!(all[1].prev, all[0].hash);
            let stored: Vec<Row> = all
                .iter()
                .map(|c| (c.seq, c.at, c.body.clone(), c.prev.clone(), c.hash.clone()))
                .collect();
            let head = &all[2].hash;
            assert_eq!(verify(&links(&stored), head, with(key)), Ok(()));
            assert_eq!(is_keyed(head), key.is_some());
        }
    }

    fn json_kind(kind: &str) -> serde_json::Value {
        serde_json::json!({ "kind": kind })
    }

    /// Edits record `at` and recomputes it and every later link with `key` (an attacker
    /// with write access but, unless `key` is the real one, without the audit key).
    fn rewrite(c: &[Row], at: usize, key: Option<&AuditKey>) -> (Vec<Row>, String) {
        let mut out = c.to_vec();
        out[at].2 = "forged".into();
        let mut prev = out[at].3.clone();
        for r in out.iter_mut().skip(at) {
            r.3 = prev.clone();
            r.4 = link(key, &prev, r.0, r.1, &r.2);
            prev = r.4.clone();
        }
        (out, prev)
    }

    #[test]
    fn intact_chain_verifies_and_tampering_is_located() {
        let key = AuditKey::new(*b"k").unwrap();
        for k in [None, Some(&key)] {
            let c = chain(&["a", "b", "c"], &[k]);
            let head = c[2].4.clone();
            assert_eq!(verify(&links(&c), &head, with(Some(&key))), Ok(()));

            let mut edited = c.clone();
            edited[1].2 = "B".into();
            assert_eq!(
                verify(&links(&edited), &head, with(Some(&key)))
                    .unwrap_err()
                    .0,
                1
            );

            let mut deleted = c.clone();
            deleted.remove(1);
            assert_eq!(
                verify(&links(&deleted), &head, with(Some(&key)))
                    .unwrap_err()
                    .0,
                1
            );

            let mut swapped = c.clone();
            swapped.swap(0, 1);
            assert_eq!(
                verify(&links(&swapped), &head, with(Some(&key)))
                    .unwrap_err()
                    .0,
                0
            );

            let cut = &c[..2];
            assert_eq!(
                verify(&links(cut), &head, with(Some(&key))).unwrap_err().0,
                1
            );
        }
    }

    #[test]
    fn a_keyed_trail_rewritten_without_the_key_is_detected() {
        let key = AuditKey::new(*b"the audit key").unwrap();
        let other = AuditKey::new(*b"a guessed key").unwrap();
        let c = chain(&["a", "b", "c", "d"], &[Some(&key)]);
        for forger in [None, Some(&other)] {
            let (forged, head) = rewrite(&c, 1, forger);
            assert_eq!(
                verify(&links(&forged), &head, with(Some(&key)))
                    .unwrap_err()
                    .0,
                1
            );
        }
        // Only the key's holder can rewrite it: that is offboard's own write.
        let (rewritten, head) = rewrite(&c, 1, Some(&key));
        assert_eq!(verify(&links(&rewritten), &head, with(Some(&key))), Ok(()));
        // A verifier without the key cannot vouch for keyed links.
        assert!(verify(&links(&c), &c[3].4, with(None)).is_err());
    }

    #[test]
    fn plain_trails_from_before_the_key_still_verify_and_may_continue_keyed() {
        let key = AuditKey::new(*b"k").unwrap();
        let old = chain(&["a", "b"], &[None]);
        assert_eq!(verify(&links(&old), &old[1].4, with(Some(&key))), Ok(()));
        let mixed = chain(&["a", "b", "c"], &[None, None, Some(&key)]);
        assert_eq!(
            verify(&links(&mixed), &mixed[2].4, with(Some(&key))),
            Ok(())
        );
        let downgraded = chain(&["a", "b", "c"], &[Some(&key), None]);
        assert_eq!(
            verify(&links(&downgraded), &downgraded[2].4, with(Some(&key)))
                .unwrap_err()
                .0,
            1
        );
    }

    /// Once the key is in use, dates prove nothing: a keyed trail rewritten plain is a
    /// break whatever time its records claim, unless it is a legacy trail, and then only
    /// within the part that was plain when the key was first used.
    #[test]
    fn once_the_key_is_in_use_plain_links_stand_only_in_legacy_trails() {
        let key = AuditKey::new(*b"k").unwrap();
        let keyed = chain(&["a", "b"], &[Some(&key)]);
        let (plain, head) = rewrite(&keyed, 0, None);
        let rule = |plain| Verifier {
            key: Some(&key),
            plain,
        };
        // A database that never used the key cannot tell.
        assert_eq!(
            verify(&links(&plain), &head, rule(PlainLinks::Accepted)),
            Ok(())
        );
        // One that did refuses it at its first record, listed as legacy or not.
        for listed in [None, Some(0)] {
            let v = rule(PlainLinks::of(true, listed));
            assert_eq!(verify(&links(&plain), &head, v).unwrap_err().0, 0);
        }

        // A legacy trail: two plain records when the key arrived, keyed ones after.
        let legacy = chain(&["a", "b", "c", "d"], &[None, None, Some(&key)]);
        let head = legacy[3].4.clone();
        let v = rule(PlainLinks::of(true, Some(2)));
        assert_eq!(verify(&links(&legacy), &head, v), Ok(()));
        // Its keyed records rewritten plain: a break at the first of them.
        let (downgraded, head) = rewrite(&legacy, 2, None);
        assert_eq!(verify(&links(&downgraded), &head, v).unwrap_err().0, 2);
        // A plain record added past the listed part, even with no keyed one before it.
        let grown = chain(&["a", "b", "c"], &[None]);
        assert_eq!(verify(&links(&grown), &grown[2].4, v).unwrap_err().0, 2);
        // Its plain part edited and relinked: plain SHA-256 cannot tell (the limit of
        // version 0), but the keyed record after it no longer points at it.
        let (edited, head) = rewrite(&legacy[..2], 0, None);
        let mut relinked = edited.clone();
        relinked.extend(legacy[2..].iter().cloned());
        assert_eq!(verify(&links(&edited), &head, v), Ok(()));
        assert_eq!(verify(&links(&relinked), &legacy[3].4, v).unwrap_err().0, 2);
    }

    #[test]
    fn the_key_never_prints() {
        let key = AuditKey::new(*b"s3cret").unwrap();
        assert!(!format!("{key:?}").contains("s3cret"));
        assert!(AuditKey::new(Vec::new()).is_none());
    }
}
