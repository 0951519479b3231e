//! A workflow waiting on a timer is, at every moment, either due (a claim takes it) or
//! ahead of now (`Store::next_wake` names it): both are read on the database's one clock,
//! so a driver waiting for the next wake-up (`run_until_settled`, the serve loop) never
//! takes a waiting workflow for settled. SQLite's clock counts whole milliseconds and this
//! process's microseconds: a timer between the two was once neither, and a workflow
//! still retrying was left behind as if it had ended.

mod support;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_just_ahead_of_the_database_clock_is_due_or_the_next_wake_up() {
    let org = org().await;
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let engine = engine(config(&url, amqp_names(), &org.sim.base_url()), TOKEN).await;
    let body = event("ev-timer", "license.reclaim.requested", RECLAIM, None);
    let request = offboard::domain::event::parse(&body, &["smartsheet".into()]).unwrap();
    engine.accept(&request, "{}").await.unwrap().unwrap();
    let store = engine.store();
    let id = store.by_event("ev-timer").await.unwrap()[0].id.clone();
    let db = store.connection();
    for _ in 0..50 {
        let now = db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') AS now",
            ))
            .await
            .unwrap()
            .unwrap();
        let now: String = now.try_get("", "now").unwrap();
        let db_now = DateTime::parse_from_rfc3339(&now)
            .unwrap()
            .with_timezone(&Utc);
        // Within the database's current millisecond, and likely behind this process's
        // clock already.
        let due = db_now + chrono::Duration::microseconds(400);
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "UPDATE workflows SET due_at = $1 WHERE id = $2",
            [due.into(), id.clone().into()],
        ))
        .await
        .unwrap();
        let next_wake = store.next_wake().await.unwrap();
        let due_now = store.any_due().await.unwrap();
        assert!(
            next_wake == Some(due) || due_now,
            "a timer at {due} is neither due nor the next wake-up ({next_wake:?})"
        );
    }
}
