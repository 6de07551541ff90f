//! A gateway on a loopback port for each test, and a small blocking WebSocket client that
//! keeps the notices it reads on the way to a reply.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use presence_gateway::{Gateway, GatewayConfig, RunningGateway, Secret};
use presence_storage_mem::MemStore;
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// How long a test waits for anything before it fails.
pub const WAIT: Duration = Duration::from_secs(15);

pub fn secret() -> Secret {
    Secret::new(*b"the test secret, 32 bytes long..").unwrap()
}

pub fn token(user: &str) -> String {
    secret().mint_for(user, 3_600)
}

/// A gateway on an in-memory store, configured by `toml`.
pub fn start(toml: &str) -> RunningGateway {
    let config = GatewayConfig::from_toml(toml).unwrap();
    Gateway::open(MemStore::new(), config, secret()).unwrap().spawn("127.0.0.1:0".parse().unwrap()).unwrap()
}

/// One socket, read with a timeout.
pub struct Client {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// Notices (and kicks) read while waiting for replies, oldest first.
    pub pushed: VecDeque<Value>,
    /// The close code, once the server closed.
    pub closed: Option<u16>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let (socket, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).unwrap();
        Client { socket, next_id: 1, pushed: VecDeque::new(), closed: None }
    }

    /// A socket logged in as `user` on `device` (its own ONLINE notice consumed).
    pub fn login(addr: SocketAddr, user: &str, device: &str) -> Client {
        let mut client = Client::connect(addr);
        let reply = client.request(json!({"op": "login", "token": token(user), "device": device}));
        assert_eq!(reply["ok"], true, "{reply}");
        client.pushed.clear();
        client
    }

    pub fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).unwrap();
    }

    pub fn send(&mut self, message: Message) {
        self.socket.send(message).unwrap();
    }

    /// The next frame, or `None` once `WAIT` has passed or the socket closed.
    pub fn read(&mut self, wait: Duration) -> Option<Value> {
        let started = Instant::now();
        while self.closed.is_none() && started.elapsed() < wait {
            match self.socket.read() {
                Ok(Message::Text(text)) => return Some(serde_json::from_str(text.as_str()).unwrap()),
                Ok(Message::Close(frame)) => {
                    self.closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => self.closed = Some(1006),
            }
        }
        None
    }

    /// Sends a request (an `id` is added) and returns its reply; notices read meanwhile are
    /// kept in `pushed`.
    pub fn request(&mut self, mut request: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        self.send_text(&request.to_string());
        self.reply_to(Some(id))
    }

    /// The reply with this `id` (`None`: a reply with `"id": null`).
    pub fn reply_to(&mut self, id: Option<u64>) -> Value {
        let started = Instant::now();
        while started.elapsed() < WAIT {
            let Some(frame) = self.read(WAIT) else { break };
            if frame.get("notice").is_some() || frame.get("kicked").is_some() {
                self.pushed.push_back(frame);
                continue;
            }
            assert_eq!(frame["id"].as_u64(), id, "replies come in order: {frame}");
            return frame;
        }
        panic!("no reply to request {id:?} (closed: {:?})", self.closed);
    }

    /// The next pushed frame, waiting at most `WAIT`.
    pub fn pushed(&mut self) -> Value {
        if let Some(frame) = self.pushed.pop_front() {
            return frame;
        }
        match self.read(WAIT) {
            Some(frame) => frame,
            None => panic!("nothing pushed (closed: {:?})", self.closed),
        }
    }

    /// The next status notice about `user`, skipping notices about others.
    pub fn notice_about(&mut self, user: &str) -> Value {
        loop {
            let frame = self.pushed();
            if frame["notice"]["user"] == user {
                return frame["notice"].clone();
            }
        }
    }

    /// Reads until the server closes; returns the close code (1006: no close frame).
    pub fn close_code(&mut self) -> u16 {
        let started = Instant::now();
        while self.closed.is_none() && started.elapsed() < WAIT {
            if let Some(frame) = self.read(WAIT) {
                self.pushed.push_back(frame);
            }
        }
        self.closed.unwrap_or_else(|| panic!("the server did not close the socket"))
    }

    /// Closes politely.
    pub fn close(mut self) {
        let _ = self
            .socket
            .close(Some(tungstenite::protocol::CloseFrame { code: CloseCode::Normal, reason: "".into() }));
        let _ = self.socket.flush();
    }

    /// Vanishes: the TCP connection closes without a close frame (an app killed).
    pub fn vanish(self) {
        let stream = self.socket.into_inner();
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
}

/// The status of `user` as `client` reads it.
pub fn status_of(client: &mut Client, user: &str) -> Value {
    let reply = client.request(json!({"op": "get_status", "targets": [user]}));
    assert_eq!(reply["ok"], true, "{reply}");
    reply["statuses"][0].clone()
}

/// A plain HTTP/1.1 request; returns the status code and the JSON body (Null if none).
pub fn http(addr: SocketAddr, method: &str, path: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let auth = bearer.map(|b| format!("Authorization: Bearer {b}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Raw HTTP: the whole response as text.
pub fn http_text(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// Polls `ready` until it holds or `WAIT` passes.
pub fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < WAIT, "{what}: not after {WAIT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
