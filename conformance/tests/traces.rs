//! The conformance traces of `conformance/traces/`, run on the engine (mem and sled stores) and
//! on the reference model, so that each trace is checked by two implementations; that every
//! rule of docs/SPEC.md is cited by some trace (R0.1); and the runner's own behaviour:
//! `FILE:LINE` failures, the implicit `ok`, exit statuses, and no panic on any text.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use presence_conformance::trace::{parse, run_text, Target};
use proptest::prelude::*;

fn traces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("traces")
}

fn trace_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(traces_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

fn run(text: &str, targets: &[Target]) -> (i32, String) {
    let mut out = Vec::new();
    let status = run_text("t.jsonl", text, targets, &mut out);
    (status, String::from_utf8(out).unwrap())
}

#[test]
fn every_trace_passes_on_the_engine_and_the_model() {
    let files = trace_files();
    assert!(files.len() >= 30, "only {} traces", files.len());
    for target in [Target::Mem, Target::Sled, Target::Model] {
        let mut out = Vec::new();
        let status = presence_conformance::trace::run_paths(&[traces_dir()], &[target], &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(status, 0, "on {}:\n{out}", target.name());
        assert_eq!(out.lines().last(), Some(format!("{} passed, 0 failed", files.len()).as_str()));
    }
}

/// R9.4: every trace also passes on sharded deployments, each step waiting until the shards
/// are at rest (what `presence conform --store sharded:N` runs).
#[test]
fn every_trace_passes_on_sharded_deployments() {
    let files = trace_files();
    for target in [Target::Sharded(2), Target::Sharded(3), Target::Sharded(8)] {
        let mut out = Vec::new();
        let status = presence_conformance::trace::run_paths(&[traces_dir()], &[target], &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(status, 0, "on {}:\n{out}", target.name());
        assert_eq!(out.lines().last(), Some(format!("{} passed, 0 failed", files.len()).as_str()));
    }
}

/// The rule ids of docs/SPEC.md (`R` digits `.` digits), without a regex crate.
fn rule_ids(text: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices('R') {
        let rest = &bytes[i + 1..];
        let major = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if major == 0 || rest.get(major) != Some(&b'.') {
            continue;
        }
        let minor = rest[major + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if minor > 0 {
            ids.insert(text[i..i + 1 + major + 1 + minor].to_string());
        }
    }
    ids
}

#[test]
fn every_spec_rule_is_cited_by_a_trace() {
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/SPEC.md")).unwrap();
    let rules = rule_ids(&spec);
    assert!(rules.contains("R0.1") && rules.contains("R8.3"), "{rules:?}");
    let mut cited = BTreeSet::new();
    for file in trace_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let first = text.lines().next().unwrap_or("");
        let list =
            first.strip_prefix("# rules:").unwrap_or_else(|| panic!("{file:?} must start with `# rules:`"));
        for id in list.split_whitespace() {
            assert!(rules.contains(id), "{file:?} cites {id}, which docs/SPEC.md does not have");
            cited.insert(id.to_string());
        }
    }
    let missing: Vec<&String> = rules.difference(&cited).collect();
    assert!(missing.is_empty(), "rules no trace cites: {missing:?}");
}

#[test]
fn a_wrong_expectation_fails_with_file_and_line() {
    let text = "# a comment\n{\"at\": 0, \"op\": \"login\", \"user\": \"a\", \"device\": \"p\"}\n{\"expect\": \"error\", \"code\": 6014}\n";
    for target in [Target::Mem, Target::Model] {
        let (status, out) = run(text, &[target]);
        assert_eq!(status, 1, "{out}");
        let expected = format!("t.jsonl:3: expected error 6014, got ok (on {})", target.name());
        assert!(out.contains(&expected), "{out}");
        assert_eq!(out.lines().last(), Some("0 passed, 1 failed"));
    }
}

#[test]
fn an_unexpected_error_fails_the_implicit_ok() {
    let text = "{\"at\": 0, \"op\": \"heartbeat\", \"user\": \"a\", \"device\": \"p\"}\n";
    let (status, out) = run(text, &[Target::Mem]);
    assert_eq!(status, 1);
    assert!(out.starts_with("t.jsonl:1: expected ok, got error 6014"), "{out}");
}

#[test]
fn failures_go_on_to_the_end_of_the_trace() {
    let text = concat!(
        "{\"at\": 0, \"op\": \"login\", \"user\": \"a\", \"device\": \"p\"}\n",
        "{\"expect\": \"notices\", \"notices\": []}\n",
        "{\"check\": \"status\", \"user\": \"a\", \"status\": \"OFFLINE\", \"custom\": \"\"}\n",
        "{\"check\": \"devices\", \"user\": \"a\", \"connected\": [], \"disconnected\": [\"p\"]}\n",
        "{\"at\": 1, \"op\": \"get_status\", \"user\": \"a\", \"device\": \"p\", \"targets\": [\"a\"]}\n",
        "{\"expect\": \"statuses\", \"statuses\": [{\"user\": \"a\", \"status\": \"UNLOGINED\", \"custom\": \"\"}]}\n",
    );
    let (status, out) = run(text, &[Target::Mem]);
    assert_eq!(status, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with("t.jsonl:2: expected notices []"), "{out}");
    assert!(lines[0].contains("unexpected"), "{out}");
    assert!(lines[1].starts_with("t.jsonl:3: expected a {\"custom\":\"\",\"status\":\"OFFLINE\"}"), "{out}");
    assert!(lines[2].starts_with("t.jsonl:4: expected devices of a"), "{out}");
    assert!(lines[3].starts_with("t.jsonl:6: expected statuses"), "{out}");
}

#[test]
fn unparsable_traces_exit_with_2() {
    let bad = [
        ("not json", 1),
        ("{\"config\": {\"max_subscriptionz\": 3}}", 1),
        ("{\"config\": {\"max_subscriptions\": \"3\"}}", 1),
        ("{\"config\": {\"max_subscriptions\": 0}}", 1),
        ("{\"at\": 0, \"op\": \"tick\"}\n{\"config\": {}}", 2),
        ("{\"expect\": \"ok\"}", 1),
        ("{\"at\": 0, \"op\": \"fly\"}", 1),
        ("{\"at\": -1, \"op\": \"tick\"}", 1),
        ("{\"at\": 0.5, \"op\": \"tick\"}", 1),
        ("{\"at\": 0, \"op\": \"login\", \"user\": \"a\"}", 1),
        ("{\"at\": 0, \"op\": \"login\", \"user\": \"a\", \"device\": \"p\", \"extra\": 1}", 1),
        ("{\"at\": 0, \"op\": \"tick\"}\n\n# c\n{\"expect\": \"statuses\", \"statuses\": [{\"user\": \"a\", \"status\": \"UNKNOWN\", \"custom\": \"\"}]}", 4),
        ("{\"at\": 0, \"op\": \"tick\"}\n{\"expect\": \"notices\", \"notices\": [{\"to\": \"a\", \"device\": \"p\", \"kicked\": false}]}", 2),
        ("{\"check\": \"weather\", \"user\": \"a\"}", 1),
        ("[1, 2]", 1),
    ];
    for (text, line) in bad {
        let (status, out) = run(text, &[Target::Mem]);
        assert_eq!(status, 2, "{text}: {out}");
        assert!(out.starts_with(&format!("t.jsonl:{line}: cannot parse")), "{text}: {out}");
        assert_eq!(out.lines().last(), Some("0 passed, 1 failed"), "{text}");
    }
}

#[test]
fn missing_paths_and_empty_directories_exit_with_2() {
    let mut out = Vec::new();
    let missing = traces_dir().join("no-such-trace.jsonl");
    assert_eq!(presence_conformance::trace::run_paths(&[missing], &[Target::Mem], &mut out), 2);
    let empty = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    assert_eq!(presence_conformance::trace::run_paths(&[empty.path()], &[Target::Mem], &mut out), 2);
}

#[test]
fn every_trace_parses_and_ends_where_the_file_ends() {
    for file in trace_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let trace = parse(&text).unwrap_or_else(|e| panic!("{file:?}: {e:?}"));
        assert_eq!(trace.lines, text.lines().count());
    }
}

/// Fragments that look like trace lines, to reach deep into the parser.
fn line() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "{\"at\": 0, \"op\": \"login\", \"user\": \"a\", \"device\": \"p\"}",
        "{\"at\": 1, \"op\": \"tick\"}",
        "{\"expect\": \"ok\"}",
        "{\"expect\": \"error\", \"code\": 6014}",
        "{\"expect\": \"notices\", \"notices\": []}",
        "{\"check\": \"status\", \"user\": \"a\", \"status\": \"ONLINE\", \"custom\": \"\"}",
        "{\"config\": {\"max_devices_per_user\": 1}}",
        "# comment",
        "",
    ]);
    prop_oneof![3 => pieces.prop_map(String::from), 1 => any::<String>(), 1 => "[{}\\[\\]\":,0-9a-z ]{0,40}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The runner never panics, whatever the text, and always closes with its summary line.
    #[test]
    fn the_runner_never_panics(lines in prop::collection::vec(line(), 0..12)) {
        let text = lines.join("\n");
        let (status, out) = run(&text, &[Target::Mem, Target::Model]);
        prop_assert!((0..=2).contains(&status));
        let last = out.lines().last().unwrap_or("");
        prop_assert!(last.ends_with(" passed, 0 failed") || last.ends_with(" passed, 1 failed"));
    }
}
