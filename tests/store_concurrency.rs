//! Appends that race for the same trail position (a duplicate delivery noted while a
//! worker records a step) both land, and the chain stays intact, on PostgreSQL.

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
                keyed_since: engine.store().keyed_since().await.unwrap(),
            }
        ),
        Ok(())
    );
}
