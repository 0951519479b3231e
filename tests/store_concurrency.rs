//! Appends that race for the same trail position (a duplicate delivery noted while a
//! worker records a step) both land, and the chain stays intact, on PostgreSQL; an append
//! under a lease taken over writes nothing, on both back-ends.

mod support;

use offboard::domain::chain::{self, Link};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_appends_all_land_and_the_chain_holds() {
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Postgres).await;
    let engine = engine(config(&url, amqp_names(), &org.sim.base_url()), TOKEN).await;
    let body = event("ev-race", "license.reclaim.requested", RECLAIM, None);
    let request = offboard::domain::event::parse(&body, &["smartsheet".into()]).unwrap();
    engine.accept(&request, "{}").await.unwrap().unwrap();

    // The workflow runs while twenty duplicate deliveries are noted on its trail.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let engine = engine.clone();
        let request = request.clone();
        tasks.spawn(async move { engine.accept(&request, "{}").await.unwrap().unwrap() });
    }
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .run_until_settled(std::time::Duration::from_secs(30))
                .await
        })
    };
    while let Some(accepted) = tasks.join_next().await {
        assert_eq!(accepted.unwrap(), offboard::store::Accepted::Duplicate);
    }
    runner.await.unwrap().unwrap();

    let wf = &engine.store().by_event("ev-race").await.unwrap()[0];
    assert_eq!(wf.outcome.as_deref(), Some("downgraded"));
    let trail = engine.store().trail(&wf.id).await.unwrap();
    assert_eq!(
        trail
            .iter()
            .filter(|r| r.kind == "duplicate_received")
            .count(),
        20
    );
    let links: Vec<Link<'_>> = trail
        .iter()
        .map(|r| Link {
            seq: r.seq,
            at: r.at,
            body: &r.body,
            prev_hash: &r.prev_hash,
            hash: &r.hash,
        })
        .collect();
    assert_eq!(
        chain::verify(
            &links,
            &wf.trail_head,
            chain::Verifier {
                key: engine.store().audit_key(),
                plain: engine.store().plain_links(&wf.id).await.unwrap(),
            }
        ),
        Ok(())
    );
}

/// An append whose lease was taken over writes nothing (no record, no outbox entry); the
/// same append under the current lease writes all of it. On both back-ends, since each
/// sends its compare-and-set and inserts differently (one statement; one batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_append_writes_nothing_and_a_current_one_writes_everything() {
    use offboard::store::{Lease, StoreError};
    use sea_orm::ConnectionTrait;

    let org = org().await;
    for db in [Db::Postgres, Db::Sqlite] {
        let (engine, _, claim, _dir) = claimed_reclaim(db, &org, "ev-stale").await;
        let store = engine.store();
        // Another process claims it after A's lease lapsed: the epoch moves on.
        store
            .connection()
            .execute_unprepared("UPDATE workflows SET lease_epoch = lease_epoch + 1")
            .await
            .unwrap();
        let before = trail(store, &claim.id).await.len();
        let stale = append_start(store, &claim, &claim.lease).await;
        assert!(
            matches!(stale, Err(StoreError::LeaseLost)),
            "{db:?}: {stale:?}"
        );
        assert_eq!(trail(store, &claim.id).await.len(), before, "{db:?}");
        assert_eq!(store.outbox_len().await.unwrap(), 0, "{db:?}");

        let current = Lease {
            epoch: claim.lease.epoch + 1,
            ..claim.lease.clone()
        };
        let written = append_start(store, &claim, &current).await.unwrap();
        assert_eq!(written.end.seq as usize, before + 1, "{db:?}");
        assert!(written.outbox.is_some(), "{db:?}");
        assert_eq!(trail(store, &claim.id).await.len(), before + 1, "{db:?}");
        assert_eq!(store.outbox_len().await.unwrap(), 1, "{db:?}");
    }
}

/// A transaction that fails half-way leaves nothing behind and leaves no transaction open
/// on the connection: an append whose audit insert collides writes neither its row update
/// nor its outbox entry, and the next append and a duplicate accept (which rolls back)
/// work. On both back-ends, since SQLite sends a transaction's statements together with its
/// `BEGIN` and `COMMIT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_append_rolls_back_whole_and_the_store_goes_on() {
    use offboard::store::{Accepted, StoreError};
    use sea_orm::ConnectionTrait;

    let org = org().await;
    for db in [Db::Postgres, Db::Sqlite] {
        let (engine, request, claim, _dir) = claimed_reclaim(db, &org, "ev-half").await;
        let store = engine.store();
        // A record already sits where the append's record would go.
        let next = claim.end.seq + 1;
        store
            .connection()
            .execute_unprepared(&format!(
                "INSERT INTO audit_records (workflow_id, seq, at, kind, body, prev_hash, hash) \
                 SELECT id, {next}, updated_at, 'note', '{{}}', trail_head, 'x' FROM workflows"
            ))
            .await
            .unwrap();
        let failed = append_start(store, &claim, &claim.lease).await;
        assert!(
            matches!(failed, Err(StoreError::Db(_))),
            "{db:?}: {failed:?}"
        );
        let row = store.get(&claim.id).await.unwrap().unwrap();
        assert_eq!(
            row.trail_seq, claim.end.seq,
            "{db:?}: the row update stayed"
        );
        assert_eq!(store.outbox_len().await.unwrap(), 0, "{db:?}");

        store
            .connection()
            .execute_unprepared(&format!("DELETE FROM audit_records WHERE seq = {next}"))
            .await
            .unwrap();
        let written = append_start(store, &claim, &claim.lease).await.unwrap();
        assert_eq!(written.end.seq, next, "{db:?}");
        assert_eq!(
            engine.accept(&request, "{}").await.unwrap().unwrap(),
            Accepted::Duplicate,
            "{db:?}"
        );
        let other = event("ev-after", "license.reclaim.requested", RECLAIM, None);
        let other = offboard::domain::event::parse(&other, &["smartsheet".into()]).unwrap();
        assert!(matches!(
            engine.accept(&other, "{}").await.unwrap().unwrap(),
            Accepted::New(_)
        ));
        // Everything above was committed, not left in a transaction a closed store drops.
        let url = engine.config().database_url.clone();
        drop(engine);
        let reopened = offboard::store::Store::connect(&url).await.unwrap();
        assert_eq!(reopened.list(None).await.unwrap().len(), 2, "{db:?}");
        assert_eq!(reopened.outbox_len().await.unwrap(), 1, "{db:?}");
        // The append's record, then the duplicate delivery's note.
        let row = reopened.get(&claim.id).await.unwrap().unwrap();
        assert_eq!(row.trail_seq, next + 1, "{db:?}");
    }
}

/// An engine on a fresh database of `db` with one licence reclaim (event `event_id`)
/// accepted and claimed by worker "a"; also the request, to deliver it again, and the
/// database's directory (SQLite), which must outlive the engine.
async fn claimed_reclaim(
    db: Db,
    org: &Org,
    event_id: &str,
) -> (
    std::sync::Arc<offboard::runtime::engine::Engine>,
    offboard::domain::event::Request,
    offboard::store::Claim,
    Option<tempfile::TempDir>,
) {
    let (url, dir) = fresh_database(db).await;
    let engine = engine(config(&url, amqp_names(), &org.sim.base_url()), TOKEN).await;
    let body = event(event_id, "license.reclaim.requested", RECLAIM, None);
    let request = offboard::domain::event::parse(&body, &["smartsheet".into()]).unwrap();
    engine.accept(&request, "{}").await.unwrap().unwrap();
    let claim = engine
        .store()
        .claim_due("a", 30.0, 1, &[])
        .await
        .unwrap()
        .remove(0);
    (engine, request, claim, dir)
}

/// Appends the first step's start to the claimed workflow under `lease`, with an outbox
/// entry, extending the lease.
async fn append_start(
    store: &offboard::store::Store,
    claim: &offboard::store::Claim,
    lease: &offboard::store::Lease,
) -> Result<offboard::store::Appended, offboard::store::StoreError> {
    use offboard::domain::machine::Record;
    use offboard::store::{Fence, OutboxEntry};
    let record = Record::StepStarted {
        step: 0,
        attempt: 1,
    };
    let entry = OutboxEntry {
        routing_key: "workflow.completed".into(),
        body: r#"{"data":{}}"#.into(),
    };
    store
        .append(
            Fence {
                id: &claim.id,
                lease,
                end: &claim.end,
            },
            &[(chrono::Utc::now(), record)],
            &claim.state,
            Some(entry),
            Some(30.0),
        )
        .await
}
