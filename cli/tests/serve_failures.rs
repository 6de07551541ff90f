//! `presence serve` when the machine fails it: a flood of sockets that exhausts its file
//! descriptors must not stop it (the store syncs without opening files), and a store that
//! cannot make a turn durable stops the runtime, and the process exits non-zero with the
//! cause (docs/DESIGN.md, "When the store fails"), so that a supervisor restarts it.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

mod serving;

use presence_testkit::process::{accepts, free_ports, http_status, wait_until, ServerProcess};
use serde_json::json;
use serving::{write_secret, Device, WAIT};

/// `presence serve` on `port`, started by bash after `limits` (shell commands such as
/// `ulimit -n 256`), so that the limits hold for the server itself (bash execs it).
fn serve_limited(dir: &Path, secret: &str, port: u16, limits: &str, config: Option<&Path>) -> ServerProcess {
    let store = dir.join("data");
    let mut args: Vec<String> = vec![
        "-c".into(),
        format!("{limits}; exec \"$0\" \"$@\""),
        env!("CARGO_BIN_EXE_presence").into(),
        "serve".into(),
        "--addr".into(),
        format!("127.0.0.1:{port}"),
        "--store".into(),
        store.to_str().unwrap().into(),
        "--secret-file".into(),
        secret.into(),
    ];
    if let Some(config) = config {
        args.extend(["--config".into(), config.to_str().unwrap().into()]);
    }
    let mut process = ServerProcess::spawn(Path::new("bash"), &args, &dir.join("serve.log")).unwrap();
    let ready = wait_until(WAIT, "presence serve", || accepts(port) || !process.is_running());
    assert!(ready.is_ok() && process.is_running(), "presence serve did not start: {}", process.log_tail(20));
    process
}

/// The descriptors process `pid` has open (Linux: its `/proc/PID/fd`).
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |entries| entries.count())
}

/// The server's descriptor limit in the flood test, soft and hard alike.
const FLOOD_NOFILE: usize = 256;

/// More anonymous connections than the server has descriptors.
const FLOOD_SOCKETS: usize = FLOOD_NOFILE + 100;

// Issue 22, problem 1: a flood of anonymous sockets takes every descriptor the server has;
// a logged-in device's write must not stop the runtime, and once the flood is gone a fresh
// device is served.
#[test]
fn a_descriptor_flood_does_not_stop_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write_secret(dir.path());
    let port = free_ports(1)[0];
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut server = serve_limited(dir.path(), &secret, port, &format!("ulimit -n {FLOOD_NOFILE}"), None);
    let pid = server.id();
    let mut alice = Device::login(addr, &secret, "alice");
    let before = alice.request(json!({"op": "set_status", "custom": "before"}));
    assert_eq!(before.as_ref().map(|r| &r["ok"]), Some(&json!(true)), "{before:?}");
    let calm = open_descriptors(pid);

    let mut flood = Vec::with_capacity(FLOOD_SOCKETS);
    for _ in 0..FLOOD_SOCKETS {
        let mut socket = TcpStream::connect(addr).unwrap();
        socket.write_all(b"G").unwrap();
        flood.push(socket);
    }
    // The server takes the flood in until it has no descriptor left, or until whatever caps
    // its connections stops it: wait until its count reaches the limit or stays put a while.
    let started = Instant::now();
    let (mut last, mut since) = (open_descriptors(pid), Instant::now());
    loop {
        let now = open_descriptors(pid);
        if now >= FLOOD_NOFILE || since.elapsed() > Duration::from_secs(3) || started.elapsed() > WAIT {
            break;
        }
        if now != last {
            (last, since) = (now, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("the flood holds {} of the server's {FLOOD_NOFILE} descriptors", open_descriptors(pid));

    let during = alice.request(json!({"op": "set_status", "custom": "during the flood"}));
    assert_eq!(
        during.as_ref().map(|r| &r["ok"]),
        Some(&json!(true)),
        "a write during the flood: {during:?}\n{}",
        server.log_tail(20)
    );

    drop(flood);
    // The server sees the flood's sockets close in its own time; until then they still count
    // against its limits (a login meanwhile would be refused 503, as it should be).
    let released =
        wait_until(WAIT, "the server let go of the flood's sockets", || open_descriptors(pid) <= calm + 2);
    assert!(released.is_ok(), "{released:?}: {} descriptors open, {calm} before", open_descriptors(pid));
    let mut bob = Device::login(addr, &secret, "bob");
    let after = bob.request(json!({"op": "set_status", "custom": "after the flood"}));
    assert_eq!(after.as_ref().map(|r| &r["ok"]), Some(&json!(true)), "{after:?}\n{}", server.log_tail(20));
    assert_eq!(http_status(addr, "/healthz", WAIT), 200);
    assert!(server.is_running());
    let exit = server.terminate(WAIT).expect("presence serve exits after SIGTERM");
    assert!(exit.success(), "{exit:?}: {}", server.log_tail(20));
}

// When the store cannot make a turn durable (here: sled's log reaches the file-size limit,
// as on a full disk), the runtime stops, and `presence serve` closes its sockets and exits
// non-zero with the cause, instead of listening on and answering 8009.
#[test]
fn serve_exits_non_zero_with_the_cause_when_its_store_cannot_sync() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write_secret(dir.path());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[engine]\nmax_custom_status_bytes = 100000\n[gateway]\nmax_frame_bytes = 131072\n",
    )
    .unwrap();
    let port = free_ports(1)[0];
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Files may grow to 1 MiB; a write beyond fails with EFBIG (SIGXFSZ ignored, as bash
    // leaves it for the exec'd server).
    let mut server = serve_limited(dir.path(), &secret, port, "trap '' XFSZ; ulimit -f 1024", Some(&config));
    let mut alice = Device::login(addr, &secret, "alice");
    let mut failed = None;
    for round in 0..40 {
        // A new status each time: setting the same one logs nothing.
        let custom = format!("{round:02}{}", "x".repeat(90_000));
        match alice.request(json!({"op": "set_status", "custom": custom})) {
            Some(reply) if reply["ok"] == true => continue,
            other => {
                failed = Some(other);
                break;
            }
        }
    }
    let failed = failed.expect("the log outgrew 1 MiB without a failure");
    if let Some(reply) = &failed {
        assert_eq!(reply["code"], 9000, "{reply}");
    }
    let exit = server.wait_exit(WAIT).unwrap_or_else(|| panic!("still running: {}", server.log_tail(20)));
    assert!(!exit.success(), "{exit:?}");
    let log = server.log_tail(20);
    assert!(
        log.contains("presence serve: the presence runtime stopped") && log.contains("File too large"),
        "the cause is printed: {log}"
    );
    assert_eq!(exit.code(), Some(1), "{log}");
    // The runtime's own tracing error reaches the server's log too, with the store's cause.
    assert!(
        log.lines().any(|line| line.contains("ERROR") && line.contains("could not sync")),
        "the runtime logs why it stopped: {log}"
    );
    assert!(!accepts(port), "nothing listens any more");
}
