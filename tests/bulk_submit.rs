//! `offboard submit --csv` through the binary against the real broker: 1,000 rows
//! become 1,000 confirmed messages; a file with one bad row is named and nothing at all
//! is published.

mod support;

use support::procs::{cli, ConfigFile};
use support::*;

/// How many messages wait in the test's request queue (nothing consumes it here).
async fn queued(names: &offboard::config::AmqpNames) -> u32 {
    let ch = channel().await;
    offboard::intake::declare(&ch, names).await.unwrap();
    ready_count(&ch, &names.queue).await
}

fn leavers(rows: usize, bad_row: Option<usize>) -> String {
    let mut text = String::from("email,transfer_to,type,not_before,connections\n");
    for i in 0..rows {
        if Some(i) == bad_row {
            text.push_str("person-without-at-sign,,,,smartsheet\n");
            continue;
        }
        let kind = if i % 4 == 0 {
            "license.reclaim.requested"
        } else {
            "offboarding.requested"
        };
        text.push_str(&format!(
            "leaver{i}@example.com,boss{i}@example.com,{kind},2026-12-01,smartsheet\n"
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rows_are_published_and_a_bad_file_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let names = amqp_names();
    let config = ConfigFile::new("sqlite://unused.db?mode=rwc", &names, "http://127.0.0.1:9")
        .write(&dir.path().join("offboard.toml"));

    // One bad line among a thousand: named by row and column, nothing published.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, leavers(1000, Some(499))).unwrap();
    let (code, stdout, stderr) = cli(&config, &["submit", "--csv", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("row 501, column email"), "{stderr}");
    assert!(stderr.contains("nothing was published"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(queued(&names).await, 0);

    // A thousand good rows: each confirmed, each printed with its id, plain progress.
    let good = dir.path().join("leavers.csv");
    std::fs::write(&good, leavers(1000, None)).unwrap();
    let (code, stdout, stderr) = cli(&config, &["submit", "--csv", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 1000);
    assert!(stdout.lines().all(|l| l.starts_with("csv-")));
    assert!(stderr.contains("published 500/1000"), "{stderr}");
    assert!(
        stderr.contains("published 1000 events") && stderr.contains("250 licence reclaim"),
        "{stderr}"
    );
    eventually(10, "1,000 messages in the queue", || async {
        (queued(&names).await == 1000).then_some(())
    })
    .await;
}

/// An HR export as it comes: its own header spellings, and names, departments and
/// managers besides. Published, the extra columns named once; with `--strict` refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hr_export_with_extra_columns_is_published_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    let names = amqp_names();
    let config = ConfigFile::new("sqlite://unused.db?mode=rwc", &names, "http://127.0.0.1:9")
        .write(&dir.path().join("offboard.toml"));
    let export = dir.path().join("export.csv");
    std::fs::write(
        &export,
        "Employee Name,Work Email,Department,Transfer To,Manager\n\
         Ada Lovelace,ada@example.com,R&D,grace@example.com,Grace Hopper\n\
         Linus T,linus@example.com,Kernel,,Grace Hopper\n",
    )
    .unwrap();
    let path = export.to_str().unwrap();

    let (code, stdout, stderr) = cli(&config, &["submit", "--csv", path, "--strict"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("unknown column \"Employee Name\""),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(queued(&names).await, 0);

    let (code, stdout, stderr) = cli(&config, &["submit", "--csv", path]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr.matches("ignoring column").count(),
        1,
        "named once: {stderr}"
    );
    assert!(
        stderr.contains("\"Employee Name\", \"Department\", \"Manager\""),
        "{stderr}"
    );
    let printed: Vec<&str> = stdout.lines().collect();
    assert_eq!(printed.len(), 2, "{stdout}");
    assert!(printed[0].ends_with(" ada@example.com"), "{stdout}");
    eventually(10, "2 messages in the queue", || async {
        (queued(&names).await == 2).then_some(())
    })
    .await;
}
