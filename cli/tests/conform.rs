//! `presence conform` as a user runs it: the built binary on the conformance traces (exit 0,
//! closing `N passed, 0 failed`), on a trace with a wrong expectation (exit 1, the failing
//! `FILE:LINE`), and on an unparsable trace (exit 2).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn presence(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_presence")).args(args).output().unwrap()
}

fn traces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/traces")
}

fn last_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or("").to_string()
}

#[test]
fn the_conformance_traces_pass_on_every_store() {
    let count = std::fs::read_dir(traces_dir()).unwrap().count();
    for store in [
        None,
        Some("mem"),
        Some("sled"),
        Some("model"),
        Some("sharded:2"),
        Some("sharded:3"),
        Some("sharded:8"),
    ] {
        let dir = traces_dir();
        let mut args = vec!["conform", dir.to_str().unwrap()];
        if let Some(store) = store {
            args.extend(["--store", store]);
        }
        let output = presence(&args);
        assert_eq!(output.status.code(), Some(0), "{store:?}: {}", String::from_utf8_lossy(&output.stdout));
        assert_eq!(last_line(&output), format!("{count} passed, 0 failed"));
    }
}

#[test]
fn an_unknown_store_is_refused_with_the_ones_there_are() {
    for bad in ["sharded:0", "sharded:x", "sharded", "postgres"] {
        let dir = traces_dir();
        let output = presence(&["conform", dir.to_str().unwrap(), "--store", bad]);
        assert_eq!(output.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("mem, sled, model or sharded:N"), "{bad}: {stderr}");
    }
}

#[test]
fn a_wrong_expectation_exits_1_and_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wrong.jsonl");
    let text = concat!(
        "# rules: R2.1\n",
        "{\"at\": 0, \"op\": \"login\", \"user\": \"alice\", \"device\": \"phone\"}\n",
        "{\"check\": \"status\", \"user\": \"alice\", \"status\": \"OFFLINE\", \"custom\": \"\"}\n",
    );
    std::fs::write(&file, text).unwrap();
    let good = traces_dir().join("r2.1-login.jsonl");
    let output = presence(&["conform", file.to_str().unwrap(), good.to_str().unwrap(), "--store", "mem"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let expected = format!("{}:3: expected alice {{\"custom\":\"\",\"status\":\"OFFLINE\"}}", file.display());
    assert!(stdout.contains(&expected), "{stdout}");
    assert_eq!(last_line(&output), "1 passed, 1 failed");
}

#[test]
fn an_unparsable_trace_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    std::fs::write(&file, "# rules: R2.1\n{\"at\": 0, \"op\": \"login\", \"user\": \"alice\"\n").unwrap();
    let output = presence(&["conform", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains(&format!("{}:2: cannot parse", file.display())), "{stdout}");
    let output = presence(&["conform", dir.path().join("missing.jsonl").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
}
