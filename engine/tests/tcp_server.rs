//! The TCP example server (`examples/tcp_server.rs`) driven over loopback by real sockets:
//! logins, a subscription and the status notice it brings (R4.1, R4.6, R5.1), queries (R6.1),
//! engine errors returned with their codes (R7.1) and protocol errors, a socket closed without
//! `logout` becoming a disconnect that subscribers hear about (R2.2, R3.3), a logout (R2.2),
//! a kick with one device allowed (R2.5, R5.5), the same device taking over from its old
//! connection, and a stop that disconnects every device. Every read has a timeout and every
//! loop a bound, so a broken server fails the test instead of hanging it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use presence_engine::{Config, Engine, GeneralStatus};
use presence_storage_mem::MemStore;

#[allow(dead_code)] // its `main`
#[path = "../examples/tcp_server.rs"]
mod server;

const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines a test may skip while looking for the one it expects.
const LINES_MAX: usize = 50;

struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    done: mpsc::Receiver<Engine<MemStore>>,
}

impl Server {
    fn start(config: Config) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (done, finished) = mpsc::channel();
        let flag = Arc::clone(&stop);
        thread::spawn(move || {
            let engine = server::serve(listener, config, MemStore::new(), flag).unwrap();
            let _ = done.send(engine);
        });
        Server { addr, stop, done: finished }
    }

    fn client(&self) -> Client {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            pushed: VecDeque::new(),
        }
    }

    /// Stops the server and returns its engine, failing if that takes more than a few seconds.
    fn stop(self) -> Engine<MemStore> {
        self.stop.store(true, Ordering::SeqCst);
        self.done.recv_timeout(Duration::from_secs(10)).expect("the server did not stop")
    }
}

/// A device on the wire. Pushed lines (`notice`, `kicked`, `replaced`) may arrive before or
/// after the answer to a request, so the client sets them aside while it reads answers.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pushed: VecDeque<String>,
}

impl Client {
    /// The next line, or `None` once the server has closed the connection.
    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line.trim_end_matches('\n').to_owned()),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
            Err(e) => panic!("no line from the server within {READ_TIMEOUT:?}: {e}"),
        }
    }

    /// Sends a request and returns its answer: any `status` lines and the final `ok` or
    /// `error ...` line.
    fn request(&mut self, request: &str) -> Vec<String> {
        writeln!(self.writer, "{request}").unwrap();
        let mut answer = Vec::new();
        for _ in 0..LINES_MAX {
            let line = self.line().unwrap_or_else(|| panic!("connection closed during {request:?}"));
            if line.starts_with("status ") {
                answer.push(line);
            } else if line == "ok" || line.starts_with("error ") {
                answer.push(line);
                return answer;
            } else {
                self.pushed.push_back(line);
            }
        }
        panic!("no answer to {request:?} within {LINES_MAX} lines");
    }

    fn ok(&mut self, request: &str) {
        assert_eq!(self.request(request), ["ok"], "answer to {request:?}");
    }

    /// The next pushed line, in the order the server sent them.
    fn pushed(&mut self) -> String {
        if let Some(line) = self.pushed.pop_front() {
            return line;
        }
        self.line().expect("the connection closed while a pushed line was expected")
    }

    /// Asserts that the server closes the connection, with no more lines before.
    fn expect_closed(&mut self) {
        assert_eq!(self.pushed.pop_front(), None);
        assert_eq!(self.line(), None, "the server should have closed the connection");
    }

    /// Closes the socket without a `logout`, as a killed app would.
    fn vanish(self) {
        drop(self);
    }
}

fn login(server: &Server, user: &str, device: &str) -> Client {
    let mut client = server.client();
    client.ok(&format!("login {user} {device}"));
    // R5.3: a device that logs in hears its own user's change, when there is one.
    client
}

// R4.1, R4.6, R5.1, R6.1, R2.2, R3.3: the happy path of two devices, and a third that vanishes.
#[test]
fn subscribers_hear_status_changes_and_disconnects() {
    let server = Server::start(Config::default());
    let mut alice = login(&server, "alice", "phone");
    assert_eq!(alice.pushed(), "notice alice ONLINE");
    let mut bob = login(&server, "bob", "pc");
    assert_eq!(bob.pushed(), "notice bob ONLINE");

    assert_eq!(bob.request("subscribe alice carol"), ["status alice ONLINE", "status carol UNLOGINED", "ok"]);
    alice.ok("status in a meeting");
    assert_eq!(alice.pushed(), "notice alice ONLINE in a meeting", "R5.2: the user itself hears");
    assert_eq!(bob.pushed(), "notice alice ONLINE in a meeting");
    assert_eq!(bob.request("get alice"), ["status alice ONLINE in a meeting", "ok"]);
    alice.ok("heartbeat");

    let mut carol = login(&server, "carol", "tablet");
    assert_eq!(bob.pushed(), "notice carol ONLINE");
    assert_eq!(carol.pushed(), "notice carol ONLINE");
    carol.ok("status   spaces kept ");
    assert_eq!(bob.pushed(), "notice carol ONLINE   spaces kept ");
    carol.ok("status");
    assert_eq!(bob.pushed(), "notice carol ONLINE", "an empty status clears it (R3.1)");
    assert_eq!(carol.pushed(), "notice carol ONLINE   spaces kept ");
    assert_eq!(carol.pushed(), "notice carol ONLINE");

    // R2.2: the socket closes without a logout; the server disconnects the session, the
    // custom status goes with it (R3.3), and the subscriber hears.
    alice.vanish();
    assert_eq!(bob.pushed(), "notice alice OFFLINE");
    assert_eq!(bob.request("get alice"), ["status alice OFFLINE", "ok"]);

    // R2.2: a logout ends the session and the connection.
    carol.ok("logout");
    carol.expect_closed();
    assert_eq!(bob.pushed(), "notice carol UNLOGINED");

    let engine = server.stop();
    assert_eq!(engine.status("alice").general, GeneralStatus::Offline);
    assert_eq!(engine.status("bob").general, GeneralStatus::Offline, "stopping disconnects bob");
    assert_eq!(engine.status("carol").general, GeneralStatus::Unlogined);
}

// R7.1, R7.2: the engine's refusals come back with their codes; lines that do not parse get
// 6017 and commands before `login` 6014, and the connection goes on.
#[test]
fn errors_come_back_with_their_codes() {
    let server = Server::start(Config::default());
    let mut dave = server.client();
    assert!(dave.request("heartbeat")[0].starts_with("error 6014 "));
    assert!(dave.request("dance")[0].starts_with("error 6017 "));
    assert!(dave.request("login dave")[0].starts_with("error 6017 "));
    let too_long = "x".repeat(40);
    assert!(dave.request(&format!("login {too_long} phone"))[0].starts_with("error 6017 InvalidParameter"));
    dave.ok("login dave phone");
    assert_eq!(dave.pushed(), "notice dave ONLINE");

    let answer = dave.request("subscribe dave");
    assert_eq!(answer.len(), 1);
    assert!(answer[0].starts_with("error 6017 InvalidParameter: "), "{answer:?}");
    assert!(dave.request("subscribe")[0].starts_with("error 6017 "), "R4.1: 1 to 100 targets");
    assert!(dave.request(&format!("status {}", "y".repeat(51)))[0].starts_with("error 6017 "), "R3.1");
    assert!(dave.request("friend dave")[0].starts_with("error 6017 "), "R5.4");
    assert!(dave.request("login erin phone")[0].starts_with("error 6017 "), "one device per connection");
    dave.ok("friend erin");
    dave.ok("unsubscribe");
    dave.ok("unfriend erin");
    dave.ok("login dave phone"); // R2.1: again on the same connection refreshes the heartbeat
    assert_eq!(dave.request("get dave"), ["status dave ONLINE", "ok"]);
    server.stop();
}

// R2.5, R5.5: with one device allowed, a login on a second device kicks the first, whose
// connection is told and closed; subscribers hear nothing, as the user stays ONLINE.
#[test]
fn a_second_device_kicks_the_first_when_one_is_allowed() {
    let server = Server::start(Config { max_devices_per_user: 1, ..Config::default() });
    let mut watcher = login(&server, "watcher", "pc");
    assert_eq!(watcher.pushed(), "notice watcher ONLINE");
    watcher.request("subscribe erin");
    let mut phone = login(&server, "erin", "phone");
    assert_eq!(phone.pushed(), "notice erin ONLINE");
    assert_eq!(watcher.pushed(), "notice erin ONLINE");

    let mut tablet = login(&server, "erin", "tablet");
    assert_eq!(phone.pushed(), "kicked");
    phone.expect_closed();
    tablet.ok("status on the tablet");
    assert_eq!(watcher.pushed(), "notice erin ONLINE on the tablet", "no OFFLINE in between");
    assert_eq!(tablet.pushed(), "notice erin ONLINE on the tablet");

    let engine = server.stop();
    let devices: Vec<String> = engine.sessions("erin").iter().map(|s| s.device.to_string()).collect();
    assert_eq!(devices, ["tablet"]);
}

// The same device logging in on a new connection takes over: the old connection is told
// `replaced` and closed, and its closing does not disconnect the new session.
#[test]
fn a_new_connection_for_the_same_device_takes_over() {
    let server = Server::start(Config::default());
    let mut watcher = login(&server, "watcher", "pc");
    assert_eq!(watcher.pushed(), "notice watcher ONLINE");
    watcher.request("subscribe frank");
    let mut old = login(&server, "frank", "phone");
    assert_eq!(watcher.pushed(), "notice frank ONLINE");

    let mut new = login(&server, "frank", "phone");
    assert_eq!(old.pushed(), "notice frank ONLINE");
    assert_eq!(old.pushed(), "replaced");
    old.expect_closed();
    new.ok("status still here");
    assert_eq!(watcher.pushed(), "notice frank ONLINE still here", "no OFFLINE in between");
    new.ok("heartbeat");
    assert_eq!(new.request("get frank"), ["status frank ONLINE still here", "ok"]);
    server.stop();
}
