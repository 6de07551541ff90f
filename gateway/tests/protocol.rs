//! The protocol of docs/PROTOCOL.md over real sockets: logins with good, forged and expired
//! tokens; every malformed frame answered with its code while the socket goes on; the
//! operations and their notices with versions; logout and kicks closing with their codes.

mod common;

use common::{secret, start, status_of, token, Client};
use presence_gateway::Secret;
use serde_json::json;
use tungstenite::Message;

#[test]
fn a_good_token_logs_in_and_the_device_hears_its_own_login() {
    let gateway = start("");
    let mut alice = Client::connect(gateway.addr());
    let reply = alice.request(json!({"op": "login", "token": token("alice"), "device": "phone"}));
    assert_eq!(reply, json!({"id": 1, "ok": true, "user": "alice", "device": "phone"}));
    let notice = alice.notice_about("alice");
    assert_eq!(notice, json!({"user": "alice", "status": "ONLINE", "custom": "", "version": 1}));
}

#[test]
fn forged_and_expired_tokens_are_refused_and_change_nothing() {
    let gateway = start("");
    let mut bob = Client::login(gateway.addr(), "bob", "pc");
    let mut mallory = Client::connect(gateway.addr());

    let other_secret = Secret::new(*b"not the server's secret, 32 b...").unwrap();
    let good = token("alice");
    let parts: Vec<&str> = good.split('.').collect();
    let renamed = format!("v1.{}.{}.{}", token("mallory").split('.').nth(1).unwrap(), parts[2], parts[3]);
    for (forged, code) in [
        (other_secret.mint_for("alice", 3_600), 8006),
        (renamed, 8006),
        ("alice".to_string(), 8006),
        (secret().mint("alice", 1), 8007),
    ] {
        let reply = mallory.request(json!({"op": "login", "token": forged, "device": "phone"}));
        assert_eq!(reply["ok"], false, "{reply}");
        assert_eq!(reply["code"], code, "{reply}");
        assert!(reply["message"].as_str().unwrap().len() > 10, "a clear message: {reply}");
    }
    assert_eq!(
        status_of(&mut bob, "alice"),
        json!({"user": "alice", "status": "UNLOGINED", "custom": "", "version": 0}),
        "no login happened"
    );
    let before_login = mallory.request(json!({"op": "set_status", "custom": "pwned"}));
    assert_eq!(before_login["code"], 8004);

    // The same socket is still usable: a genuine token logs it in.
    let reply = mallory.request(json!({"op": "login", "token": good, "device": "phone"}));
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(status_of(&mut bob, "alice")["status"], "ONLINE");
    let again = mallory.request(json!({"op": "login", "token": token("alice"), "device": "pc"}));
    assert_eq!(again["code"], 8005, "one login per socket: {again}");
    assert_eq!(gateway.stats().bad_tokens, 4);
}

#[test]
fn malformed_frames_are_answered_with_their_codes_and_the_socket_goes_on() {
    let gateway = start("[gateway]\nmax_frame_bytes = 1024\n");
    let mut alice = Client::login(gateway.addr(), "alice", "phone");
    let mut bob = Client::login(gateway.addr(), "bob", "pc");

    let cases: [(&str, Option<u64>, u32); 7] = [
        ("not json", None, 8000),
        ("[1, 2]", None, 8000),
        (r#"{"op": "set_status", "custom": "x"}"#, None, 8001),
        (r#"{"id": 41, "op": "dance"}"#, Some(41), 8002),
        (r#"{"id": 42, "op": "set_status"}"#, Some(42), 8001),
        (r#"{"id": 43, "op": "set_status", "custom": "x", "mood": "y"}"#, Some(43), 8001),
        (r#"{"id": 44, "op": "subscribe", "targets": "bob"}"#, Some(44), 8001),
    ];
    for (frame, id, code) in cases {
        alice.send_text(frame);
        let reply = alice.reply_to(id);
        assert_eq!(
            (reply["ok"].as_bool(), reply["code"].as_u64()),
            (Some(false), Some(code as u64)),
            "{frame}: {reply}"
        );
    }
    alice.send(Message::binary(vec![1, 2, 3]));
    assert_eq!(alice.reply_to(None)["code"], 8000);
    let oversized = format!(r#"{{"id": 45, "op": "set_status", "custom": "{}"}}"#, "x".repeat(2_000));
    alice.send_text(&oversized);
    assert_eq!(alice.reply_to(None)["code"], 8003);

    assert_eq!(
        status_of(&mut bob, "alice"),
        json!({"user": "alice", "status": "ONLINE", "custom": "", "version": 1})
    );
    let reply = alice.request(json!({"op": "set_status", "custom": "still here"}));
    assert_eq!(reply, json!({"id": 2, "ok": true}));
    assert_eq!(status_of(&mut bob, "alice")["custom"], "still here");
}

#[test]
fn a_frame_beyond_the_transport_limit_closes_the_socket_with_1009() {
    let gateway = start("[gateway]\nmax_frame_bytes = 1024\n");
    let mut alice = Client::login(gateway.addr(), "alice", "phone");
    let mut bob = Client::login(gateway.addr(), "bob", "pc");
    assert_eq!(bob.request(json!({"op": "subscribe", "targets": ["alice"]}))["ok"], true);
    alice.send_text(&"x".repeat(1024 * 16 + 1));
    assert_eq!(alice.close_code(), 1009);
    // The socket is gone, so is the session's connection (R2.2).
    assert_eq!(bob.notice_about("alice")["status"], "OFFLINE");
}

#[test]
fn engine_errors_carry_the_codes_of_r7_1_and_change_nothing() {
    let gateway = start("");
    let mut alice = Client::login(gateway.addr(), "alice", "phone");
    let too_many: Vec<String> = (0..101).map(|i| format!("user{i}")).collect();
    for (request, code) in [
        (json!({"op": "subscribe", "targets": ["alice"]}), 6017),
        (json!({"op": "subscribe", "targets": too_many}), 6017),
        (json!({"op": "subscribe", "targets": []}), 6017),
        (json!({"op": "set_status", "custom": "x".repeat(51)}), 6017),
        (json!({"op": "get_status", "targets": [""]}), 6017),
    ] {
        let reply = alice.request(request.clone());
        assert_eq!(
            (reply["ok"].as_bool(), reply["code"].as_u64()),
            (Some(false), Some(code)),
            "{request}: {reply}"
        );
        assert_eq!(reply["name"], "InvalidParameter");
    }
    assert_eq!(
        status_of(&mut alice, "alice"),
        json!({"user": "alice", "status": "ONLINE", "custom": "", "version": 1})
    );
    let mut bad_device = Client::connect(gateway.addr());
    let reply = bad_device.request(json!({"op": "login", "token": token("carol"), "device": ""}));
    assert_eq!(reply["code"], 6017, "{reply}");
    assert_eq!(status_of(&mut alice, "carol")["status"], "UNLOGINED");
}

#[test]
fn subscriptions_queries_and_status_changes_reach_the_watchers_with_versions() {
    let gateway = start("");
    let mut alice = Client::login(gateway.addr(), "alice", "phone");
    let mut bob = Client::login(gateway.addr(), "bob", "pc");
    let mut carol = Client::login(gateway.addr(), "carol", "tablet");

    let reply = bob.request(json!({"op": "subscribe", "targets": ["alice", "dave"]}));
    assert_eq!(
        reply["statuses"],
        json!([
            {"user": "alice", "status": "ONLINE", "custom": "", "version": 1},
            {"user": "dave", "status": "UNLOGINED", "custom": "", "version": 0},
        ])
    );
    assert_eq!(alice.request(json!({"op": "set_status", "custom": "in a meeting"}))["ok"], true);
    let notice = bob.notice_about("alice");
    assert_eq!(notice, json!({"user": "alice", "status": "ONLINE", "custom": "in a meeting", "version": 2}));
    assert_eq!(alice.notice_about("alice")["version"], 2, "the device that made the change hears it (R5.2)");
    assert_eq!(alice.request(json!({"op": "heartbeat"})), json!({"id": 3, "ok": true}));

    // After unsubscribing, bob hears nothing of alice: carol's later change is the next thing
    // bob hears, and notices reach a socket in the order they were made.
    assert_eq!(bob.request(json!({"op": "subscribe", "targets": ["carol"]}))["ok"], true);
    assert_eq!(bob.request(json!({"op": "unsubscribe", "targets": ["alice"]}))["ok"], true);
    assert_eq!(alice.request(json!({"op": "set_status", "custom": "free"}))["ok"], true);
    assert_eq!(carol.request(json!({"op": "set_status", "custom": "here"}))["ok"], true);
    assert_eq!(
        bob.pushed()["notice"],
        json!({"user": "carol", "status": "ONLINE", "custom": "here", "version": 2})
    );
    assert_eq!(bob.request(json!({"op": "unsubscribe"}))["ok"], true, "no targets: the whole list (R4.4)");
}

#[test]
fn logout_answers_then_closes_with_1000() {
    let gateway = start("");
    let mut alice = Client::login(gateway.addr(), "alice", "phone");
    let mut bob = Client::login(gateway.addr(), "bob", "pc");
    assert_eq!(bob.request(json!({"op": "subscribe", "targets": ["alice"]}))["ok"], true);
    assert_eq!(alice.request(json!({"op": "logout"})), json!({"id": 2, "ok": true}));
    assert_eq!(alice.close_code(), 1000);
    assert_eq!(
        bob.notice_about("alice"),
        json!({"user": "alice", "status": "UNLOGINED", "custom": "", "version": 2})
    );
}

#[test]
fn a_kicked_device_is_told_then_closed_with_4000() {
    let gateway = start("[engine]\nmax_devices_per_user = 1\n");
    let mut phone = Client::login(gateway.addr(), "alice", "phone");
    let mut bob = Client::login(gateway.addr(), "bob", "pc");
    assert_eq!(bob.request(json!({"op": "subscribe", "targets": ["alice"]}))["ok"], true);
    let _pc = Client::login(gateway.addr(), "alice", "pc");
    assert_eq!(phone.pushed(), json!({"kicked": true}));
    assert_eq!(phone.close_code(), 4000);
    assert_eq!(status_of(&mut bob, "alice")["status"], "ONLINE", "the kick kept alice online (R2.5)");
}

#[test]
fn a_socket_that_never_logs_in_is_closed_with_4003() {
    let gateway = start("[gateway]\nlogin_timeout_ms = 200\n");
    let mut idle = Client::connect(gateway.addr());
    assert_eq!(idle.close_code(), 4003);
}

#[test]
fn the_page_and_its_script_are_served() {
    let gateway = start("");
    let page = common::http_text(gateway.addr(), "/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("<script src=\"/app.js\">"));
    let script = common::http_text(gateway.addr(), "/app.js");
    assert!(script.contains("content-type: text/javascript"), "{script}");
    assert!(script.contains("new WebSocket"));
}
