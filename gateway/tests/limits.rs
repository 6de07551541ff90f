//! What a client that never logs in can hold, and for how long: half-sent requests are closed
//! by the header timeout, idle keep-alive connections by the idle timeout, anonymous sockets
//! cannot lock a real device out, one address cannot take every place, and a frame before
//! login is refused before it is read whole.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{eventually, start, Client, WAIT};
use serde_json::json;
use tungstenite::{Message, WebSocket};

/// Reads until the server closes the connection (end of stream, or a reset); false if it is
/// still open after `wait`.
fn closed_by_server(stream: &mut TcpStream, wait: Duration) -> bool {
    let started = Instant::now();
    stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 4096];
    while started.elapsed() < wait {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A WebSocket that has not logged in, or `None` if the server refused or closed it.
fn anonymous_socket(addr: SocketAddr) -> Option<WebSocket<TcpStream>> {
    let stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let (socket, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).ok()?;
    socket.get_ref().set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    Some(socket)
}

/// The close code the server sends on `socket` within `WAIT` (1006: none, the connection just
/// ended).
fn close_code(socket: &mut WebSocket<TcpStream>) -> u16 {
    let started = Instant::now();
    while started.elapsed() < WAIT {
        match socket.read() {
            Ok(Message::Close(frame)) => return frame.map_or(1005, |f| u16::from(f.code)),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return 1006,
        }
    }
    panic!("the server did not close the socket");
}

#[test]
fn half_sent_request_headers_are_closed_by_the_header_timeout() {
    let gateway = start("[gateway]\nheader_read_timeout_ms = 300\nhttp_idle_timeout_ms = 60000\n");
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(gateway.addr()).unwrap();
        stream.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n").unwrap();
        slow.push(stream);
    }
    // A byte now and then, never the end of the head: only the header timeout can close them.
    let started = Instant::now();
    let mut open = slow.len();
    while open > 0 && started.elapsed() < WAIT {
        open = 0;
        for stream in &mut slow {
            if stream.write_all(b"X").is_ok() && !closed_by_server(stream, Duration::from_millis(100)) {
                open += 1;
            }
        }
    }
    assert_eq!(open, 0, "half-sent requests still open after {WAIT:?}");
    eventually("their places are given back", || gateway.stats().connections_open == 0);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let gateway = start("[gateway]\nheader_read_timeout_ms = 60000\nhttp_idle_timeout_ms = 300\n");
    let mut stream = TcpStream::connect(gateway.addr()).unwrap();
    stream.write_all(b"GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // The whole response first (keep-alive: the server does not close after it).
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    let length = loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the response");
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned)
                })
                .and_then(|value| value.trim().parse().ok())
                .expect("a content-length");
            if body.len() >= length {
                break length;
            }
        }
    };
    assert!(length > 0 && String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"));
    assert!(closed_by_server(&mut stream, WAIT), "the idle keep-alive connection is still open");
    eventually("its place is given back", || gateway.stats().connections_open == 0);
}

#[test]
fn anonymous_sockets_cannot_lock_out_a_device() {
    let gateway = start("[gateway]\nmax_connections = 20\nmax_anonymous_connections = 15\nmax_connections_per_address = 1000\n");
    let addr = gateway.addr();
    let mut early = Client::login(addr, "early", "phone");
    // Three times the cap: bare TCP connections and WebSockets that never log in.
    let mut bare = Vec::new();
    let mut sockets = Vec::new();
    for i in 0..60 {
        if i % 2 == 0 {
            bare.push(TcpStream::connect(addr).unwrap());
        } else if let Some(socket) = anonymous_socket(addr) {
            sockets.push(socket);
        }
    }
    assert!(!sockets.is_empty());
    // A new device still gets in, logs in and is answered; the one logged in before is not
    // evicted and still answered.
    let mut late = Client::login(addr, "late", "pc");
    let reply = late.request(json!({"op": "set_status", "custom": "here"}));
    assert_eq!(reply["ok"], true, "{reply}");
    let reply = early.request(json!({"op": "get_status", "targets": ["late"]}));
    assert_eq!(reply["statuses"][0]["custom"], "here", "{reply}");
    // The anonymous sockets made room for each other: the oldest were closed with 1013.
    assert_eq!(close_code(&mut sockets[0]), 1013);
    let stats = gateway.stats();
    assert!(stats.connections_evicted >= 40, "{stats:?}");
    eventually("at most the cap is open", || gateway.stats().connections_open <= 20);
    drop(bare);
}

#[test]
fn connections_beyond_the_per_address_limit_are_refused() {
    let gateway = start("[gateway]\nmax_connections_per_address = 3\n");
    let addr = gateway.addr();
    let mut held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    eventually("three connections open", || gateway.stats().connections_open == 3);
    let mut fourth = TcpStream::connect(addr).unwrap();
    assert!(closed_by_server(&mut fourth, WAIT), "the fourth connection from one address was served");
    let stats = gateway.stats();
    assert_eq!((stats.connections_refused_address, stats.connections_open), (1, 3), "{stats:?}");
    // A place given back is a place for the address again.
    drop(held.pop());
    eventually("the place is given back", || gateway.stats().connections_open == 2);
    let mut client = Client::login(addr, "alice", "phone");
    assert_eq!(client.request(json!({"op": "heartbeat"}))["ok"], true);
}

#[test]
fn a_frame_before_login_longer_than_a_login_is_closed_before_it_is_read() {
    let gateway = start("[gateway]\nmax_login_frame_bytes = 2048\nlogin_timeout_ms = 60000\n");
    let addr = gateway.addr();

    // Only the header of a 1 MiB frame and a little of it: the server cannot have waited for
    // the rest, it closes with 1009 at once.
    let mut socket = anonymous_socket(addr).unwrap();
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 20).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    header.extend(std::iter::repeat_n(b'x', 1_000));
    socket.get_mut().write_all(&header).unwrap();
    assert_eq!(close_code(&mut socket), 1009);

    // A whole frame longer than a login, sent by a client library, is refused the same way.
    let mut socket = anonymous_socket(addr).unwrap();
    socket.send(Message::text("x".repeat(4_000))).unwrap();
    assert_eq!(close_code(&mut socket), 1009);

    // Once logged in, the socket's frames may be as long as `max_frame_bytes`.
    let mut alice = Client::login(addr, "alice", "phone");
    let custom = "y".repeat(40);
    let padding = " ".repeat(8_000);
    alice.send_text(&format!(r#"{{"id": 7, "op": "set_status", "custom": "{custom}"}}{padding}"#));
    assert_eq!(alice.reply_to(Some(7))["ok"], true);
}

#[test]
fn a_long_frame_sent_with_the_handshake_is_caught_too() {
    let gateway = start("[gateway]\nlogin_timeout_ms = 60000\n");
    let addr = gateway.addr();
    // Frames must wait for the handshake's answer (RFC 6455 4.1); this client does not: the
    // header of a 1 MiB frame arrives with its request, in hyper's buffer before the upgrade.
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    bytes.extend_from_slice(&[0x81, 0x80 | 127]);
    bytes.extend_from_slice(&(1u64 << 20).to_be_bytes());
    bytes.extend_from_slice(&[1, 2, 3, 4, b'x']);
    stream.write_all(&bytes).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    // The 101, then a close frame with 1009 (0x03f1), then the end.
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let head_end = text.find("\r\n\r\n").unwrap() + 4;
    let frames = &received[head_end..];
    assert_eq!(frames.get(..4), Some(&[0x88, frames[1], 0x03, 0xf1][..]), "{frames:?}");
}

#[test]
fn an_upgrade_must_be_the_first_request_of_its_connection() {
    let gateway = start("");
    let addr = gateway.addr();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(format!("GET /stats HTTP/1.1\r\nHost: {addr}\r\n\r\n{upgrade}").as_bytes()).unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("8001") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 401"), "the first request is answered: {text}");
    assert!(text.contains("HTTP/1.1 400") && !text.contains(" 101 "), "{text}");
}

// Found by attacking the hardened server: plain HTTP had no request limit, and four
// keep-alive connections pipelining `GET /healthz` had it answer 94 000 requests a second.
// Requests on one connection now share the rate a socket's frames have.

#[test]
fn pipelined_http_requests_beyond_the_rate_are_answered_429_and_the_connection_closes() {
    let gateway = start("[gateway]\nrequest_rate_per_s = 1\nrequest_burst = 5\n");
    let mut stream = TcpStream::connect(gateway.addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", gateway.addr());
    stream.write_all(request.repeat(20).as_bytes()).unwrap();
    // Read until the server closes the connection (read_to_string returns once it has).
    let mut answers = String::new();
    let _ = stream.read_to_string(&mut answers);
    let statuses: Vec<&str> = answers
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|answer| answer.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(statuses, ["200", "200", "200", "200", "200", "429"], "{answers}");
    assert!(answers.contains("\"code\":8010"), "{answers}");
}
