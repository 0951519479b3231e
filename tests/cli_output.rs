//! The command line as a shell pipeline sees it: a verb whose reader goes away
//! (`offboard history ID | head`) exits quietly with status 0, and logs carry colours on
//! a terminal only, never with `NO_COLOR` set. Runs `offboard demo` (the in-process simulators and a
//! SQLite file: no broker, no PostgreSQL) for a database with workflows in it.

use std::fs::File;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_offboard");

/// Runs `offboard args` with its stdout a pipe whose reading end is already closed, as
/// `head` leaves it once it has read its lines: the verb's first write finds no reader.
fn with_reader_gone(args: &[&str], env: &[(&str, &str)]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("OFFBOARD_CONFIG")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// The demo's stdout, its stderr written to a file (no terminal), `env` added.
fn demo(env: &[(&str, &str)]) -> (String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let out = Command::new(BIN)
        .arg("demo")
        .envs(env.iter().copied())
        .env_remove("OFFBOARD_CONFIG")
        .stderr(File::create(&log).unwrap())
        .output()
        .unwrap();
    let stderr = std::fs::read(&log).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&stderr));
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

fn assert_quiet_success(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
    assert!(stderr.is_empty(), "{what} wrote to stderr: {stderr}");
}

/// The database URL and one workflow id the demo's output names.
fn demo_database(stdout: &str) -> (String, String) {
    let url = stdout
        .split("OFFBOARD_DATABASE_URL='")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("the demo names its database")
        .to_string();
    let id = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("workflow "))
        .expect("the demo lists its workflows")
        .to_string();
    (url, id)
}

#[test]
fn every_verb_exits_quietly_when_its_reader_goes_away() {
    let (stdout, _) = demo(&[]);
    let (url, id) = demo_database(&stdout);
    let env = [("OFFBOARD_DATABASE_URL", url.as_str())];
    for args in [
        &["history", id.as_str()][..],
        &["history", id.as_str(), "--json"],
        &["show", id.as_str()],
        &["list"],
        &["replay", id.as_str()],
        &["verify", "--all"],
        &["explain", "--list"],
        &["explain", "SMT-100-A"],
        &["demo"],
    ] {
        let out = with_reader_gone(args, &env);
        assert_quiet_success(&out, &args.join(" "));
    }
}

#[test]
fn logs_to_a_file_carry_no_colours_and_the_demo_speaks_in_words() {
    let (stdout, stderr) = demo(&[("NO_COLOR", "")]);
    let log = String::from_utf8_lossy(&stderr);
    assert!(log.contains("event accepted"), "the demo logs: {log}");
    assert!(
        !stderr.contains(&0x1b),
        "ANSI escapes in a log file: {log:?}"
    );

    let header = stdout.lines().next().unwrap();
    assert!(
        header.contains("smartsheet") && header.contains("postman") && header.contains("scim"),
        "{header}"
    );
    assert!(
        stdout.contains("event demo-001: accepted, 3 workflows started"),
        "{stdout}"
    );
    assert!(
        stdout.contains("event demo-001: already received; nothing new started"),
        "{stdout}"
    );
    assert!(
        stdout.contains("event demo-004: rejected with EVT-102"),
        "{stdout}"
    );
    for debug in ["New([", "Duplicate", "Held {"] {
        assert!(!stdout.contains(debug), "{debug} in {stdout}");
    }
}

/// What `offboard demo` writes to a terminal (a pseudo-terminal opened by util-linux's
/// `script`, its stdout thrown away), `NO_COLOR` set to `no_color` when given.
fn demo_on_a_terminal(no_color: Option<&str>) -> Vec<u8> {
    let mut script = Command::new("script");
    script
        .args(["-qec", &format!("'{BIN}' demo >/dev/null"), "/dev/null"])
        .env_remove("NO_COLOR")
        .env_remove("OFFBOARD_CONFIG")
        .stdin(Stdio::null());
    if let Some(value) = no_color {
        script.env("NO_COLOR", value);
    }
    let out = script.output().expect("util-linux's script runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    out.stdout
}

#[test]
fn colours_on_a_terminal_unless_no_color_is_set() {
    let coloured = demo_on_a_terminal(None);
    assert!(
        coloured.contains(&0x1b),
        "no colours on a terminal: {}",
        String::from_utf8_lossy(&coloured)
    );
    assert!(demo_on_a_terminal(Some("")).contains(&0x1b));
    let plain = demo_on_a_terminal(Some("1"));
    assert!(String::from_utf8_lossy(&plain).contains("event accepted"));
    assert!(
        !plain.contains(&0x1b),
        "{}",
        String::from_utf8_lossy(&plain)
    );
}
