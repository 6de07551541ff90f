//! `presence conform --exec` and `--generate` as a user runs them: the Python adapter of
//! `conformance/adapters/` (driving `presence shell`, so the engine through another language
//! and a text protocol) passes the conformance traces and random cases; its deliberate mutants
//! are caught and shrunk to a trace of a few lines; adapters that hang, die or answer garbage
//! end the run with status 2 and a message naming the request; generated traces pass on the
//! engine, the model and the adapter.
//!
//! Python 3 is required: without it these tests fail with a message saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The longest any one run may take before the test kills it and fails.
const RUN_LIMIT: Duration = Duration::from_secs(180);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn presence_bin() -> &'static str {
    env!("CARGO_BIN_EXE_presence")
}

/// A child process killed (and reaped) however the test ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `presence ARGS`, killing it (and failing) if it takes longer than [`RUN_LIMIT`].
fn presence(args: &[&str]) -> Output {
    let child = Command::new(presence_bin())
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let mut stdout = guard.0.stdout.take().unwrap();
    let mut stderr = guard.0.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        stdout.read_to_end(&mut text).unwrap();
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        stderr.read_to_end(&mut text).unwrap();
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < RUN_LIMIT, "presence {args:?} ran longer than {RUN_LIMIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// Fails with a clear message when python3 cannot run: these tests never skip.
fn require_python() {
    match Command::new("python3").arg("--version").output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => {
            panic!("python3 --version failed ({}): the Python adapter tests need Python 3", output.status)
        }
        Err(e) => panic!("python3 was not found ({e}): the Python adapter tests need Python 3 on the PATH"),
    }
}

/// The command that runs the Python adapter over this build's `presence shell`.
fn adapter(extra: &str) -> String {
    require_python();
    let script = root().join("conformance/adapters/presence_shell.py");
    format!("python3 '{}' --presence '{}' {extra}", script.display(), presence_bin())
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn last_line(output: &Output) -> String {
    stdout(output).lines().last().unwrap_or("").to_string()
}

fn trace_count() -> usize {
    std::fs::read_dir(root().join("conformance/traces")).unwrap().count()
}

#[test]
fn the_python_adapter_passes_every_conformance_trace() {
    let output = presence(&["conform", "--exec", &adapter(""), "conformance/traces"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(last_line(&output), format!("{} passed, 0 failed", trace_count()));
}

/// The complete adapter of conformance/README.md, as written there.
fn readme_adapter(dir: &Path) -> String {
    require_python();
    let readme = std::fs::read_to_string(root().join("conformance/README.md")).unwrap();
    let start =
        readme.find("```python\n").expect("conformance/README.md has a Python adapter") + "```python\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let file = dir.join("adapter.py");
    std::fs::write(&file, &readme[start..end]).unwrap();
    format!("python3 '{}' '{}'", file.display(), presence_bin())
}

#[test]
fn the_readme_adapter_passes_every_trace_and_random_cases() {
    let dir = tempfile::tempdir().unwrap();
    let command = readme_adapter(dir.path());
    let output = presence(&["conform", "--exec", &command, "conformance/traces"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert_eq!(last_line(&output), format!("{} passed, 0 failed", trace_count()));
    let output = presence(&["conform", "--exec", &command, "--cases", "20", "--seed", "4", "--ops", "all"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert_eq!(last_line(&output), "20 passed, 0 failed");
}

#[test]
fn the_python_adapter_passes_random_cases_with_every_operation() {
    let out = tempfile::tempdir().unwrap();
    let output = presence(&[
        "conform",
        "--exec",
        &adapter(""),
        "--cases",
        "40",
        "--seed",
        "7",
        "--ops",
        "all",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(
        stdout(&output).starts_with("seed 7 (--seed 7 repeats this run), 40 cases"),
        "{}",
        stdout(&output)
    );
    assert_eq!(last_line(&output), "40 passed, 0 failed");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "nothing failed, so nothing is written");
}

#[test]
fn an_adapter_without_versions_or_causes_is_not_held_to_them() {
    // R5.6, R5.7: the kit compares versions and causes only where the adapter reports them.
    let plain = adapter("--plain");
    let output = presence(&["conform", "--exec", &plain, "--cases", "20", "--seed", "9", "--ops", "all"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert_eq!(last_line(&output), "20 passed, 0 failed");
    // A fixed trace that states versions holds the adapter to them (docs/TRACE-FORMAT.md).
    let output = presence(&["conform", "--exec", &plain, "conformance/traces/r5.6-versions.jsonl"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stdout(&output).contains("r5.6-versions.jsonl:"), "{}", stdout(&output));
}

#[test]
fn python_mutants_are_caught_and_shrunk_to_a_few_lines() {
    for (mutant, seed, shows) in [
        ("cap", "31", "\"check\": \"subscriptions\""),
        ("timeout", "32", "\"op\": \"tick\""),
        ("rate", "33", "7008"),
        ("kick", "34", "\"kicked\": true"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().to_str().unwrap();
        let command = adapter(&format!("--mutate {mutant}"));
        let args =
            ["conform", "--exec", &command, "--cases", "300", "--seed", seed, "--ops", "all", "--out", dir];
        let output = presence(&args);
        let text = stdout(&output);
        assert_eq!(output.status.code(), Some(1), "{mutant}: {text}");
        assert!(last_line(&output).ends_with(" passed, 1 failed"), "{mutant}: {text}");
        let file = out.path().join(format!("failure-seed-{seed}.jsonl"));
        let trace =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{mutant}: {file:?}: {e}\n{text}"));
        let lines = trace.lines().count();
        assert!(lines <= 30, "{mutant}: the shrunk trace has {lines} lines:\n{trace}");
        assert!(trace.contains(shows), "{mutant}: the trace does not show {shows}:\n{trace}");
        // FILE:LINE: expected ..., got ..., the line being one of the trace's.
        let prefix = format!("{}:", file.display());
        let failure =
            text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{mutant}: {text}"));
        let line: usize = failure[prefix.len()..].split(':').next().unwrap().parse().unwrap();
        assert!((1..=lines).contains(&line), "{mutant}: {failure}");
        assert!(failure.contains(": expected ") && failure.contains(", got "), "{failure}");
        // The trace passes on the engine and the model, and fails on the mutant at that line.
        let file = file.to_str().unwrap();
        let output = presence(&["conform", file, "--store", "mem", "--store", "sled", "--store", "model"]);
        assert_eq!(output.status.code(), Some(0), "{mutant}: {}", stdout(&output));
        let output = presence(&["conform", "--exec", &command, file]);
        assert_eq!(output.status.code(), Some(1), "{mutant}: {}", stdout(&output));
        assert!(
            stdout(&output).starts_with(&format!("{file}:{line}: expected ")),
            "{mutant}: {}",
            stdout(&output)
        );
    }
}

#[test]
fn an_adapter_that_misbehaves_exits_2_with_a_message_naming_the_request() {
    let cases = |exec: &str, timeout: &str| {
        presence(&["conform", "--exec", exec, "--cases", "5", "--seed", "1", "--timeout-ms", timeout])
    };
    let expect = |output: &Output, says: &[&str]| {
        let text = stdout(output);
        assert_eq!(output.status.code(), Some(2), "{text}");
        for s in says {
            assert!(text.contains(s), "{s:?} not in:\n{text}");
        }
        assert!(last_line(output).ends_with(" passed, 1 failed") || text.contains("cannot start"), "{text}");
    };
    // The third request is the first command of the first case (after the configuration and
    // one more).
    expect(&cases(&adapter("--misbehave hang"), "500"), &["did not answer {\"", "within 500 ms"]);
    expect(
        &cases(&adapter("--misbehave die"), "10000"),
        &["exited (exit status: 1) without answering {\"", "dying on purpose"],
    );
    expect(
        &cases(&adapter("--misbehave garbage"), "10000"),
        &["with I am not a reply: a reply that is not JSON"],
    );
    // `cat` echoes the configuration line back: an object, but not a reply.
    expect(&cases("cat", "10000"), &["answered {\"config\": {", "with {\"config\""]);
    expect(&cases("true", "10000"), &["without answering {\"config\""]);
    expect(
        &cases("no-such-adapter-program --flag", "10000"),
        &["cannot start the adapter `no-such-adapter-program --flag`"],
    );
    // On traces too: the run stops at the first fault, which names the file and line.
    let output = presence(&["conform", "--exec", &adapter("--misbehave die"), "conformance/traces"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("conformance/traces/r0.1-defaults.jsonl:"), "{text}");
    assert_eq!(last_line(&output), "0 passed, 1 failed");
}

#[test]
fn generated_traces_pass_on_the_engine_the_model_and_the_python_adapter() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let output = presence(&["conform", "--generate", "8", "--out", dir, "--seed", "3", "--ops", "all"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let all = "login,logout,disconnect,heartbeat,set_status,get_status,subscribe,unsubscribe,add_friend,\
               remove_friend,disconnect_sessions,tick,restart";
    assert_eq!(stdout(&output).trim(), format!("wrote 8 traces to {dir} (seed 3, operations {all})"));
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 8);
    for args in [vec!["conform", dir], vec!["conform", dir, "--store", "model"]] {
        let output = presence(&args);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", stdout(&output));
        assert_eq!(last_line(&output), "8 passed, 0 failed");
    }
    let output = presence(&["conform", "--exec", &adapter(""), dir]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert_eq!(last_line(&output), "8 passed, 0 failed");
    // The same seed writes the same traces.
    let again = tempfile::tempdir().unwrap();
    let again_dir = again.path().to_str().unwrap();
    presence(&["conform", "--generate", "8", "--out", again_dir, "--seed", "3", "--ops", "all"]);
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let path = entry.unwrap().path();
        let twin = again.path().join(path.file_name().unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), std::fs::read_to_string(twin).unwrap());
    }
}

#[test]
fn bad_arguments_exit_2_with_a_reason() {
    for (args, says) in [
        (vec!["conform", "--exec", "true", "--ops", "login,fly"], "unknown operation \"fly\""),
        (vec!["conform", "--generate", "3"], "--generate needs --out DIR"),
        (vec!["conform"], "name traces to run"),
        (vec!["conform", "--exec", ""], "the adapter's command is empty"),
        (vec!["conform", "--exec", "true", "--steps", "0"], "--steps must be 1 to 10000"),
        (vec!["conform", "--generate", "2000000", "--out", "x"], "at most 1000000 traces"),
        (vec!["conform", "--exec", "sh -c 'unterminated"], "unterminated '"),
    ] {
        let output = presence(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stdout(&output));
        assert!(stdout(&output).contains(says), "{args:?}: {}", stdout(&output));
    }
    // Clap refuses a store with an adapter.
    let output = presence(&["conform", "--exec", "true", "--store", "mem", "conformance/traces"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot be used with"));
}
