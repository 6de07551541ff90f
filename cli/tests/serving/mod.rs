//! What the tests of `presence serve` share: a secret file, tokens signed with it by the
//! `presence token` command, and a device that logs in over a WebSocket and makes requests.

#![allow(dead_code)] // Each test binary uses its own part of it.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// The longest any wait of these tests lasts.
pub const WAIT: Duration = Duration::from_secs(30);

/// Writes a secret into `dir` and returns the file's path.
pub fn write_secret(dir: &Path) -> String {
    let path = dir.join("secret");
    std::fs::write(&path, "c2VjcmV0IGZvciB0aGUgY2xpIHRlc3RzLCBsb25nIGVub3VnaA==\n").unwrap();
    path.to_str().unwrap().to_string()
}

/// A login token for `user`, from `presence token` with the secret file `secret`.
pub fn token(secret: &str, user: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["token", "--secret-file", secret, "--user", user, "--ttl-s", "600"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// A logged-in device, and the id of its last request.
pub struct Device(WebSocket<TcpStream>, u64);

impl Device {
    /// Logs `user` in on device `d` at `addr`; fails the test if the login is refused.
    pub fn login(addr: SocketAddr, secret: &str, user: &str) -> Device {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let (socket, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).unwrap();
        let mut device = Device(socket, 0);
        let reply = device.request(json!({"op": "login", "token": token(secret, user), "device": "d"}));
        assert_eq!(reply.as_ref().map(|r| &r["ok"]), Some(&json!(true)), "{reply:?}");
        device
    }

    /// Sends `request` with the next id and returns its reply, skipping notices; `None` once
    /// the server has closed the socket. Any frame but text or a close fails the test.
    pub fn request(&mut self, mut request: Value) -> Option<Value> {
        self.1 += 1;
        request["id"] = json!(self.1);
        self.0.send(Message::text(request.to_string())).ok()?;
        loop {
            match self.0.read().ok()? {
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                    if frame["id"] == json!(self.1) {
                        return Some(frame);
                    }
                }
                Message::Close(_) => return None,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The close code the server sends after whatever else comes first (`None`: none).
    pub fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.0.read() {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}
