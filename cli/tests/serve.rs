//! `presence token` and `presence serve` as an operator runs them: tokens the server accepts
//! (and the host's bearer), clear errors with exit status 2 for a bad secret or configuration,
//! a server killed with SIGKILL whose sessions the next start disconnects (R8.4), and SIGTERM
//! closing the sockets (1001), disconnecting their sessions and exiting 0.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

mod serving;

use presence_gateway::Secret;
use presence_testkit::process::{accepts, free_ports, wait_until, ServerProcess};
use serde_json::{json, Value};
use serving::{token, write_secret, Device, WAIT};

fn presence(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_presence")).args(args).output().unwrap()
}

#[test]
fn token_prints_tokens_the_secret_verifies_and_the_host_bearer() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write_secret(dir.path());
    let secret = Secret::from_file(Path::new(&secret_file)).unwrap();
    let token = token(&secret_file, "alice");
    assert_eq!(secret.verify(&token, presence_gateway::token::now_s()).unwrap(), "alice");
    let later = presence_gateway::token::now_s() + 601;
    assert!(secret.verify(&token, later).is_err(), "it lives --ttl-s seconds");

    let output = presence(&["token", "--secret-file", &secret_file, "--host"]);
    assert!(output.status.success());
    assert!(secret.is_host_bearer(String::from_utf8_lossy(&output.stdout).trim()));

    let short = dir.path().join("short");
    std::fs::write(&short, "too short").unwrap();
    for args in [
        vec!["token", "--secret-file", short.to_str().unwrap(), "--user", "alice"],
        vec!["token", "--secret-file", "/nonexistent/secret", "--user", "alice"],
    ] {
        let output = presence(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("secret"), "{args:?}");
    }
}

#[test]
fn serve_refuses_a_bad_configuration_or_secret_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write_secret(dir.path());
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[gateway]\nnode_idd = \"typo\"\n").unwrap();
    let store = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", free_ports(1)[0]);
    let base = ["serve", "--addr", &addr, "--store", store.to_str().unwrap()];
    let mut with_config = base.to_vec();
    with_config.extend(["--secret-file", &secret, "--config", config.to_str().unwrap()]);
    let output = presence(&with_config);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("node_idd"), "names the unknown key: {stderr}");

    let mut without_secret = base.to_vec();
    without_secret.extend(["--secret-file", "/nonexistent/secret"]);
    assert_eq!(presence(&without_secret).status.code(), Some(2));
}

struct Server {
    process: ServerProcess,
    addr: SocketAddr,
}

fn serve(dir: &Path, secret: &str, port: u16) -> Server {
    let store = dir.join("data");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let args: Vec<String> =
        ["serve", "--addr", &addr.to_string(), "--store", store.to_str().unwrap(), "--secret-file", secret]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let mut process =
        ServerProcess::spawn(Path::new(env!("CARGO_BIN_EXE_presence")), &args, &dir.join("serve.log"))
            .unwrap();
    let ready = wait_until(WAIT, "presence serve", || accepts(port) || !process.is_running());
    assert!(ready.is_ok() && process.is_running(), "presence serve did not start: {}", process.log_tail(20));
    Server { process, addr }
}

#[test]
fn a_killed_server_s_sessions_are_disconnected_at_restart_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write_secret(dir.path());
    let port = free_ports(1)[0];

    let first = serve(dir.path(), &secret, port);
    let mut alice = Device::login(first.addr, &secret, "alice");
    assert_eq!(alice.request(json!({"op": "set_status", "custom": "here"})).unwrap()["ok"], true);
    first.process.kill();

    let mut second = serve(dir.path(), &secret, port);
    let mut bob = Device::login(second.addr, &secret, "bob");
    let status = bob.request(json!({"op": "get_status", "targets": ["alice"]})).unwrap();
    assert_eq!(status["statuses"][0]["status"], "OFFLINE", "R8.4: {status}");
    assert_eq!(status["statuses"][0]["custom"], "", "R3.3");

    let exit = second.process.terminate(WAIT).expect("presence serve exits after SIGTERM");
    assert!(exit.success(), "{exit:?}: {}", second.process.log_tail(20));
    assert_eq!(bob.close_code(), Some(1001));
    let log = second.process.log_tail(5);
    assert!(
        log.contains("1 sessions of the previous process were disconnected at start, 1 at shutdown"),
        "{log}"
    );

    let output = presence(&["inspect", dir.path().join("data").to_str().unwrap(), "--user", "bob", "--json"]);
    let bob_state: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(bob_state["status"], "OFFLINE", "bob's disconnect is durable: {bob_state}");
}
