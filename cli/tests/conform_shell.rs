//! `presence shell`, the text interface the conformance kit's Python adapter drives and
//! operators type into: a scenario of SPEC.md whose every answer is written here from the
//! rules (versions R5.6, causes R5.7, a kick R2.5, owners R8.5, a restart R8.4), with notice
//! lines compared as a set (the order of recipients is not specified).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The answers of `presence shell` to `input`, one list of lines per request. The shell is
/// killed if it has not ended ten seconds after its input closed.
fn shell(input: &str) -> Vec<Vec<String>> {
    struct Guard(Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Command::new(env!("CARGO_BIN_EXE_presence"))
        .arg("shell")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    guard.0.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    // The input is closed: the shell answers everything and ends.
    let mut stdout = guard.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "presence shell did not end at the end of its input");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    let mut answers = vec![Vec::new()];
    for line in reader.join().unwrap().lines() {
        answers.last_mut().unwrap().push(line.to_string());
        if line.starts_with("ok") || line.starts_with("error ") || line.starts_with("bad ") {
            answers.push(Vec::new());
        }
    }
    assert_eq!(answers.pop(), Some(Vec::new()), "every answer ends with ok, error or bad");
    answers
}

fn sorted(lines: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    lines.sort();
    lines
}

#[test]
fn a_scenario_answers_as_the_spec_says() {
    let input = r#"
# comments and blank lines are ignored
config max_devices_per_user=1
at 100 login alice phone
at 110 login bob pc gw1
at 120 subscribe bob pc alice carol
at 130 set_status alice phone "in a meeting"
at 140 login alice tablet
check devices alice
at 150 get_status bob pc alice
at 160 heartbeat alice phone
at 170 disconnect_sessions gw1
check status bob
at 180 restart disconnect
check status alice
at 190 login "a b" p
at 200 login "" p
at 210 fly
show carol
"#;
    let expected: Vec<Vec<&str>> = vec![
        vec!["ok"],
        vec![
            "notice to=alice device=phone about=alice status=ONLINE custom=\"\" version=1 cause=login cause_device=phone",
            "ok",
        ],
        vec!["notice to=bob device=pc about=bob status=ONLINE custom=\"\" version=1 cause=login cause_device=pc", "ok"],
        vec![
            "result user=alice status=ONLINE custom=\"\" version=1",
            "result user=carol status=UNLOGINED custom=\"\" version=0",
            "ok",
        ],
        vec![
            "notice to=alice device=phone about=alice status=ONLINE custom=\"in a meeting\" version=2 cause=custom_status cause_device=phone",
            "notice to=bob device=pc about=alice status=ONLINE custom=\"in a meeting\" version=2 cause=custom_status cause_device=phone",
            "ok",
        ],
        // One device allowed: the tablet opens first and the phone is kicked, so alice stays
        // ONLINE with her custom status (R2.5) and only the kicked device hears (R5.5).
        vec!["kicked to=alice device=phone", "ok"],
        vec!["device user=alice device=tablet connected=true login_at=140 heartbeat_at=140", "ok"],
        // Two more changes of her sessions: the tablet opened, the phone removed (R5.6).
        vec!["result user=alice status=ONLINE custom=\"in a meeting\" version=4", "ok"],
        vec!["error 6014 NotLoggedIn (6014): user \"alice\" has no session on device \"phone\""],
        // bob's only session was gw1's; nobody connected is interested in bob (R5.3).
        vec!["ok disconnected=1 remaining=0"],
        vec!["status user=bob status=OFFLINE custom=\"\" last_online=170", "ok"],
        vec!["ok"],
        vec!["status user=alice status=OFFLINE custom=\"\" last_online=180", "ok"],
        vec![
            "notice to=\"a b\" device=p about=\"a b\" status=ONLINE custom=\"\" version=1 cause=login cause_device=p",
            "ok",
        ],
        vec!["error 6017 InvalidParameter (6017): user id is empty"],
        vec!["bad unknown operation \"fly\" (try help)"],
        vec!["status user=carol status=UNLOGINED custom=\"\" last_online=never", "ok"],
    ];
    let answers = shell(input);
    assert_eq!(answers.len(), expected.len(), "{answers:#?}");
    for (index, (got, want)) in answers.iter().zip(&expected).enumerate() {
        let (got_last, want_last) = (got.last().unwrap(), want.last().unwrap());
        if want_last.starts_with("error ") {
            // The code and name are the spec's; the message is for people.
            let prefix: String = want_last.split(':').next().unwrap().to_string();
            assert!(got_last.starts_with(&prefix), "answer {index}: {got:?}");
            assert_eq!(got.len(), 1, "answer {index}: {got:?}");
            continue;
        }
        assert_eq!(got_last, want_last, "answer {index}: {got:?}");
        let body = |lines: &[String]| lines[..lines.len() - 1].to_vec();
        if want.iter().any(|l| l.starts_with("notice")) {
            assert_eq!(
                sorted(&body(got).iter().map(String::as_str).collect::<Vec<_>>()),
                sorted(&want[..want.len() - 1]),
                "answer {index}"
            );
        } else {
            assert_eq!(
                body(got),
                want[..want.len() - 1].iter().map(|l| l.to_string()).collect::<Vec<_>>(),
                "answer {index}"
            );
        }
    }
}

#[test]
fn help_lists_every_request_and_bad_quotes_are_bad() {
    let answers = shell("help\nat 5 login \"alice phone\nconfig colour=blue\n");
    let help = answers[0].join("\n");
    for request in [
        "config",
        "login",
        "set_status",
        "subscribe",
        "disconnect_sessions",
        "tick",
        "restart",
        "check",
        "show",
    ] {
        assert!(help.contains(request), "help does not mention {request}:\n{help}");
    }
    assert!(answers[1][0].starts_with("bad a bad quoted string"), "{answers:?}");
    assert!(answers[2][0].starts_with("bad bad config: unknown field `colour`"), "{answers:?}");
}
