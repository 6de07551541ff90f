//! Replays the fuzz corpora: every file of `fuzz/corpus/<target>/` and every kept crash
//! `fuzz/artifacts/<target>/crash-*` goes through the target's function in
//! `presence_conformance::fuzzing`, so that CI checks on the stable toolchain what the
//! fuzzer found, and a crash saved into a corpus stays fixed. Each failing file is named.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use presence_conformance::fuzzing;

/// The corpus files of `target`, then its kept crashes, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = files_in(&fuzz.join("corpus").join(target), |_| true);
    assert!(files.len() >= 10, "fuzz/corpus/{target} holds {} files, fewer than 10", files.len());
    files.extend(files_in(&fuzz.join("artifacts").join(target), |name| name.starts_with("crash-")));
    files
}

/// The files of `dir` whose names pass `keep` (none if `dir` does not exist), sorted;
/// hidden files are libFuzzer's bookkeeping and are skipped.
fn files_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            !name.starts_with('.') && keep(name)
        })
        .collect();
    files.sort();
    files
}

/// Runs every input of `target` through `function` and fails naming each input that panics.
fn replay(target: &str, function: fn(&[u8])) {
    let mut failed = Vec::new();
    let files = inputs(target);
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        if catch_unwind(AssertUnwindSafe(|| function(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs failed:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn commands_corpus() {
    replay("commands", fuzzing::commands);
}

#[test]
fn codec_corpus() {
    replay("codec", fuzzing::codec);
}

#[test]
fn trace_corpus() {
    replay("trace", fuzzing::trace);
}
