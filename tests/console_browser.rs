//! The console as a person sees it: headless Chromium renders the workflow list and the
//! pages of a finished and a failed workflow, and the test reads the text it shows. Every
//! page is rendered under the console's Content-Security-Policy: Chromium's log must show
//! no violation, and a screenshot shows the stylesheet applied. A console that asks for a
//! viewer token shows a browser its login page instead, naming nobody.
//! `OFFBOARD_UPDATE_DOCS=1` also saves the screenshots shown in the README (`docs/`).

mod support;

use std::path::Path;
use std::time::Duration;

use offboard::config::Secret;
use offboard::console::Console;
use offboard_simulators::smartsheet::SimUser;
use support::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs headless Chromium on `url` with `action` (`--dump-dom` or `--screenshot=…`);
/// returns what it printed, after checking its log (where the page's console messages
/// go) reports no Content-Security-Policy violation.
async fn chromium(url: &str, action: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,1800",
            "--enable-logging=stderr",
            "--v=0",
            &format!("--user-data-dir={}", profile.path().display()),
            action,
            url,
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium started");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    let violations: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Content Security Policy"))
        .collect();
    assert!(violations.is_empty(), "{url}: {violations:#?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The colour of the pixel at (`x`, `y`) of a screenshot of `url`.
async fn pixel(url: &str, x: usize, y: usize) -> [u8; 3] {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shot.png");
    chromium(url, &format!("--screenshot={}", file.display())).await;
    let bytes = std::fs::read(&file).unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let at = y * info.line_size + x * channels;
    [buf[at], buf[at + 1], buf[at + 2]]
}

/// The text a person reads: the DOM without its tags, entities decoded, spaces folded.
fn visible_text(dom: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    let body = dom.split("<body").last().unwrap_or(dom);
    for c in body.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_renders_the_list_and_both_timelines() {
    if !Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{CHROMIUM} is missing in CI: .ci/run installs the chromium package"
        );
        eprintln!("\n\n!!! SKIPPED: {CHROMIUM} is not installed (apt-get install chromium); the console was not rendered in a browser !!!\n\n");
        return;
    }
    let org = org().await;
    let mallory = org.sim.add_user(SimUser {
        group_admin: true,
        ..SimUser::new("mallory@example.com")
    });
    org.sim.add_group("Mallory's", mallory, &[mallory]);
    let (url, _dir) = fresh_database(Db::Sqlite).await;
    let names = amqp_names();
    let engine = engine(config(&url, names.clone(), &org.sim.base_url()), TOKEN).await;
    let service = serve(&engine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let guarded_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let guarded = format!("http://{}", guarded_listener.local_addr().unwrap());
    let service = service
        .listen(
            listener,
            Console::new(engine.clone(), Some(Secret::new("op-token"))),
        )
        .listen(
            guarded_listener,
            Console::new(engine.clone(), Some(Secret::new("op-token")))
                .with_viewer_token(Secret::new("viewer-token")),
        );
    publish(
        &names,
        "offboarding.requested",
        &event("ev-ok", "offboarding.requested", LEAVER, Some(RECIPIENT)),
    )
    .await;
    publish(
        &names,
        "offboarding.requested",
        &event(
            "ev-bad",
            "offboarding.requested",
            "mallory@example.com",
            Some("nobody@example.com"),
        ),
    )
    .await;
    publish(
        &names,
        "license.reclaim.requested",
        &event("ev-reclaim", "license.reclaim.requested", RECLAIM, None),
    )
    .await;
    let ok = finished(engine.store(), "ev-ok", 1, 30).await.remove(0);
    let bad = finished(engine.store(), "ev-bad", 1, 30).await.remove(0);
    finished(engine.store(), "ev-reclaim", 1, 30).await;

    let list = visible_text(&chromium(&format!("{base}/workflows"), "--dump-dom").await);
    assert!(list.contains("Workflows"), "{list}");
    assert!(list.contains("completed 2"), "counts per state: {list}");
    assert!(list.contains("failed 1"), "counts per state: {list}");
    for email in [LEAVER, RECLAIM, "mallory@example.com"] {
        assert!(list.contains(email), "{email} in {list}");
    }
    assert!(list.contains("SMT-110-B") && list.contains("removed"));

    let done = visible_text(&chromium(&format!("{base}/workflows/{}", ok.id), "--dump-dom").await);
    assert!(done.contains(&format!("{LEAVER} on smartsheet")), "{done}");
    assert!(done.contains("Outcome: removed"), "{done}");
    assert!(done.contains("event source test"), "{done}");
    assert!(
        done.contains(&format!(
            "DELETE /users/{}?removeFromSharing=true&transferTo={}&transferSheets=true -> 200",
            org.leaver, org.recipient
        )),
        "{done}"
    );
    assert!(done.contains("completed: removed"), "{done}");
    assert!(done.contains("Replay OK"), "{done}");

    let failed =
        visible_text(&chromium(&format!("{base}/workflows/{}", bad.id), "--dump-dom").await);
    let info = offboard::codes::Code::Smt110B.info();
    assert!(failed.contains("Error SMT-110-B"), "{failed}");
    assert!(failed.contains(info.message), "{failed}");
    assert!(failed.contains("Remedy"), "{failed}");
    for step in info.remedy {
        assert!(failed.contains(step), "remedy step {step:?} in {failed}");
    }
    assert!(failed.contains("Retry"), "{failed}");

    // The stylesheet applied under the policy: the header is dark, not the default white.
    let [r, g, b] = pixel(&format!("{base}/workflows"), 4, 4).await;
    assert!(r < 60 && g < 60 && b < 80, "header colour {r},{g},{b}");

    // Guarded: a browser without a session sees the login form, and no one's email.
    let login =
        visible_text(&chromium(&format!("{guarded}/workflows/{}", ok.id), "--dump-dom").await);
    assert!(login.contains("Sign in"), "{login}");
    assert!(login.contains("viewer or operator token"), "{login}");
    assert!(
        !login.contains(LEAVER) && !login.contains("@example.com"),
        "{login}"
    );

    if std::env::var_os("OFFBOARD_UPDATE_DOCS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        for (name, path) in [
            ("console-list.png", "/workflows".to_string()),
            ("console-workflow.png", format!("/workflows/{}", ok.id)),
            ("console-failed.png", format!("/workflows/{}", bad.id)),
        ] {
            let file = docs.join(name);
            chromium(
                &format!("{base}{path}"),
                &format!("--screenshot={}", file.display()),
            )
            .await;
            assert!(file.exists(), "{name} written");
        }
    }
    service.stop().await;
}
