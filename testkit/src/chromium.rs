//! Headless Chromium for tests of the gateway's page, driven over the DevTools protocol: a
//! browser process of its own (fresh profile in a temporary directory, DevTools on a port
//! it picks on 127.0.0.1), pages opened as targets, JavaScript evaluated in them, bounded
//! waits for a condition, and screenshots.
//!
//! The client is small on purpose: one blocking WebSocket (tungstenite) to the browser's
//! endpoint, flat sessions (`Target.attachToTarget` with `flatten`), and four methods of the
//! protocol (`Target.createTarget`, `Runtime.evaluate`, `Page.captureScreenshot`,
//! `Browser.close`). The browser is started with the flags this network-less machine needs
//! (no first run, no background networking, no component updates, no sync, no QUIC) and is
//! killed, with every process it started, when dropped. When Chromium is not installed,
//! starting fails with a message naming `scripts/install-programs.sh`: tests never skip.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::process::find_program;

/// How long the browser may take to start and open its DevTools endpoint.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one DevTools call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The flags every test browser gets: headless, and nothing that reaches for the network.
pub const FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1000,720",
];

/// A page (a DevTools target) of the browser.
#[derive(Clone, Debug)]
pub struct Page {
    target: String,
    session: String,
}

/// A headless Chromium with a DevTools connection; killed (with its children) when dropped.
pub struct Chromium {
    child: Child,
    devtools: WebSocket<TcpStream>,
    next_id: u64,
    _profile: tempfile::TempDir,
    log: PathBuf,
}

impl std::fmt::Debug for Chromium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chromium").field("pid", &self.child.id()).finish()
    }
}

impl Chromium {
    /// Starts the browser and connects to it. Panics, naming `scripts/install-programs.sh`,
    /// when chromium is not installed, or with the browser's log when it does not start.
    pub fn start() -> Chromium {
        let program = find_program("chromium").unwrap_or_else(|e| panic!("{e}"));
        let profile = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary directory: {e}"));
        let log = profile.path().join("chromium.log");
        let out =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let data = profile.path().join("profile");
        let mut command = Command::new(&program);
        command
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", data.display()))
            .arg("--remote-debugging-address=127.0.0.1")
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group, so that every process it starts is killed with it.
            .process_group(0);
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut starting = Starting { child: Some(child), log: log.clone() };
        let endpoint = starting.endpoint(&data.join("DevToolsActivePort"));
        let stream = TcpStream::connect(endpoint.0)
            .unwrap_or_else(|e| starting.fail(&format!("cannot connect to DevTools: {e}")));
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap_or_else(|e| starting.fail(&e.to_string()));
        let started = Instant::now();
        let mut handshake = tungstenite::client(endpoint.1.as_str(), stream);
        let devtools = loop {
            match handshake {
                Ok((devtools, _)) => break devtools,
                // A read that timed out mid-handshake: go on with it, within the deadline.
                Err(tungstenite::HandshakeError::Interrupted(mid)) if started.elapsed() < START_TIMEOUT => {
                    handshake = mid.handshake();
                }
                Err(e) => starting.fail(&format!("DevTools handshake failed: {e}")),
            }
        };
        let child = starting.child.take().unwrap_or_else(|| unreachable!("the child is still held"));
        Chromium { child, devtools, next_id: 1, _profile: profile, log }
    }

    /// The browser's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Calls a DevTools method (on a page's session, or on the browser) and returns its
    /// result, skipping the events that arrive meanwhile.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            request["sessionId"] = json!(session);
        }
        self.devtools.send(Message::text(request.to_string())).map_err(|e| format!("{method}: {e}"))?;
        let started = Instant::now();
        while started.elapsed() < CALL_TIMEOUT {
            let message = match self.devtools.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => return Err(format!("{method}: the DevTools connection failed: {e}")),
            };
            let Ok(reply) = serde_json::from_str::<Value>(message.as_str()) else { continue };
            if reply["id"] != json!(id) {
                continue;
            }
            if let Some(error) = reply.get("error") {
                return Err(format!("{method}: {error}"));
            }
            return Ok(reply["result"].clone());
        }
        Err(format!("{method}: no answer in {CALL_TIMEOUT:?}"))
    }

    /// Opens `url` in a new page.
    pub fn open(&mut self, url: &str) -> Page {
        let target =
            self.call(None, "Target.createTarget", json!({"url": url})).unwrap_or_else(|e| panic!("{e}"));
        let target =
            target["targetId"].as_str().unwrap_or_else(|| panic!("no targetId in {target}")).to_string();
        let attached = self
            .call(None, "Target.attachToTarget", json!({"targetId": target, "flatten": true}))
            .unwrap_or_else(|e| panic!("{e}"));
        let session = attached["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {attached}"))
            .to_string();
        Page { target, session }
    }

    /// Evaluates `expression` in `page` (promises awaited) and returns its value.
    pub fn eval(&mut self, page: &Page, expression: &str) -> Result<Value, String> {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self.call(Some(&page.session), "Runtime.evaluate", params)?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {exception}"));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Waits until `condition` (a JavaScript expression) is true in `page`, at most
    /// `timeout`; panics naming `what`, with the page's text, if it never is.
    pub fn wait_for(&mut self, page: &Page, condition: &str, what: &str, timeout: Duration) {
        let started = Instant::now();
        let mut last = Ok(Value::Null);
        while started.elapsed() < timeout {
            last = self.eval(page, &format!("Boolean({condition})"));
            if last == Ok(Value::Bool(true)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = self.eval(page, "document.body ? document.body.innerText : ''").unwrap_or_default();
        panic!("{what}: not true after {timeout:?} ({condition}; last: {last:?}); the page shows:\n{text}");
    }

    /// Saves a PNG of `page` at `path` (creating its folder).
    pub fn screenshot(&mut self, page: &Page, path: &Path) {
        let shot = self
            .call(Some(&page.session), "Page.captureScreenshot", json!({"format": "png"}))
            .unwrap_or_else(|e| panic!("{e}"));
        let data = shot["data"].as_str().unwrap_or_else(|| panic!("no screenshot data"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Closes `page` (its sockets close with it).
    pub fn close(&mut self, page: &Page) {
        self.call(None, "Target.closeTarget", json!({"targetId": page.target}))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The last lines of the browser's log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::process::log_tail(&self.log, lines)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.call(None, "Browser.close", json!({}));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_group(&mut self.child);
    }
}

/// Kills the browser's whole process group and reaps the browser.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// A browser that is starting: killed if starting fails.
struct Starting {
    child: Option<Child>,
    log: PathBuf,
}

impl Starting {
    /// The DevTools address and WebSocket URL, once the browser wrote them to its profile.
    fn endpoint(&mut self, port_file: &Path) -> (String, String) {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.fail(&format!("chromium exited at once ({status})"));
                }
            }
            if let Ok(text) = std::fs::read_to_string(port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    let addr = format!("127.0.0.1:{}", port.trim());
                    return (addr.clone(), format!("ws://{addr}{}", path.trim()));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.fail(&format!("no DevTools endpoint after {START_TIMEOUT:?}"))
    }

    fn fail(&mut self, what: &str) -> ! {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
        panic!("chromium: {what}; its log ends:\n{}", crate::process::log_tail(&self.log, 30));
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}
