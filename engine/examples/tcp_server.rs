//! A presence server over TCP: the runtime behind a line protocol, one connection per device.
//!
//! Run it with `cargo run -p presence-engine --example tcp_server -- --addr 127.0.0.1:7878`
//! and talk to it with `nc 127.0.0.1 7878`. Std only: one thread per connection reads and
//! runs commands, one writer thread per connection sends its lines, and the runtime thread
//! owns the engine and ticks it from the system clock.
//!
//! The protocol, one UTF-8 line each way (`\n`, an optional `\r` before it is ignored):
//!
//! | client sends | command |
//! | --- | --- |
//! | `login USER DEVICE` | the first line; later only again with the same ids (R2.1) |
//! | `heartbeat` | R2.4 |
//! | `status TEXT...` | set_status, everything after `status ` verbatim; none clears (R3.1) |
//! | `get USER...` | get_status (R6.1) |
//! | `subscribe USER...` / `unsubscribe [USER...]` | R4.1 / R4.4 (none clears the list) |
//! | `friend USER` / `unfriend USER` | add_friend / remove_friend (R5.4) |
//! | `logout` | R2.2; the server answers and closes the connection |
//!
//! Every request gets exactly one answer: `ok`, or `error CODE MESSAGE` (R7.1's codes; a line
//! that does not parse gets 6017, a command before `login` 6014), and `get` / `subscribe`
//! send one `status USER GENERAL [CUSTOM]` line per target before their `ok`. Pushed at any
//! time, even between a request and its answer: `notice USER GENERAL [CUSTOM]` (R5.1),
//! `kicked` (R5.5) and `replaced` (another connection logged in as the same device), both of
//! which the server follows by closing the connection. A connection that closes without
//! `logout`, or is silent for `heartbeat_timeout_ms`, becomes a `disconnect` (R2.2).

use std::collections::HashMap;
use std::error::Error as StdError;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use presence_engine::runtime::{
    Handle, NoticeSink, PendingReply, Runtime, RuntimeConfig, RuntimeError, SystemClock,
};
use presence_engine::{
    Command, Config, DeviceId, Engine, Error, EventStore, Names, Notice, Recipient, Reply, UserId, UserStatus,
};
use presence_storage_mem::MemStore;

/// Connections served at once; one more is told `busy` and closed.
const CONNECTIONS_MAX: usize = 1_024;
/// Lines waiting to be written to one connection (see [`Peer::push`] for what happens beyond).
const OUTBOUND_LINES_MAX: usize = 256;
/// The longest request line accepted, whatever the configuration allows.
const LINE_BYTES_LIMIT: usize = 1 << 20;
/// How often the accept loop looks at the stop flag.
const ACCEPT_POLL_MS: u64 = 20;
/// How long a write to a client may block before the connection is dropped.
const WRITE_TIMEOUT_MS: u64 = 10_000;
/// R7.1's codes that the server itself answers with: for lines that do not parse, for commands
/// before `login`, and for a runtime that has stopped.
const INVALID_PARAMETER_CODE: u32 = 6017;
const NOT_LOGGED_IN_CODE: u32 = 6014;
const STORAGE_CODE: u32 = 9000;

/// A server error: the listener, or the engine failing to open or to shut down cleanly.
pub type ServeError = Box<dyn StdError + Send + Sync>;

/// Serves the line protocol on `listener` until `stop` is set, then closes every connection
/// (each one a `disconnect`, R2.2), shuts the runtime down and hands back the engine.
pub fn serve<S: EventStore + Send + 'static>(
    listener: TcpListener,
    config: Config,
    store: S,
    stop: Arc<AtomicBool>,
) -> Result<Engine<S>, ServeError> {
    let line_bytes_max = line_bytes_max(&config);
    let idle_timeout = Duration::from_millis(config.heartbeat_timeout_ms);
    let engine = Engine::open(config, store)?;
    let routes = Routes::default();
    let sink = RouteSink { routes: Arc::clone(&routes) };
    // Every turn ticks at the system clock's time, and an idle runtime ticks at least every
    // `tick_interval_ms`, which is what expires silent sessions (R2.4) and lists (R4.5).
    let (runtime, handle) = Runtime::spawn(engine, SystemClock, sink, RuntimeConfig::default());
    let shared = Arc::new(Shared { handle, routes, claims: Mutex::new(()), line_bytes_max, idle_timeout });

    listener.set_nonblocking(true)?;
    let mut connections: HashMap<u64, (TcpStream, JoinHandle<()>)> = HashMap::new();
    let mut next_id: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        connections.retain(|_, (_, thread)| !thread.is_finished());
        let socket = match listener.accept() {
            Ok((socket, _)) => socket,
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    // Running out of file descriptors and the like: wait and go on serving.
                    eprintln!("tcp_server: accept failed: {e}");
                }
                thread::sleep(Duration::from_millis(ACCEPT_POLL_MS));
                continue;
            }
        };
        if connections.len() >= CONNECTIONS_MAX {
            refuse(socket);
            continue;
        }
        next_id += 1;
        match start_connection(&shared, next_id, socket) {
            Ok(started) => {
                connections.insert(next_id, started);
            }
            Err(e) => eprintln!("tcp_server: cannot start connection {next_id}: {e}"),
        }
    }

    // Closing the sockets wakes each connection thread, which disconnects its device.
    for (socket, _) in connections.values() {
        let _ = socket.shutdown(Shutdown::Both);
    }
    for (_, (_, thread)) in connections {
        let _ = thread.join();
    }
    drop(shared);
    Ok(runtime.shutdown()?)
}

/// The longest line a valid request can need under `config`: the biggest batch of the longest
/// ids, or the longest custom status, plus the command word. Longer lines close the connection.
fn line_bytes_max(config: &Config) -> usize {
    let batch = config.max_query_batch.max(config.max_subscribe_batch) as usize;
    let ids = batch.saturating_mul(config.max_user_id_bytes as usize + 1);
    let login = config.max_user_id_bytes as usize + config.max_device_id_bytes as usize + 1;
    let longest = ids.max(login).max(config.max_custom_status_bytes as usize);
    longest.saturating_add(16).min(LINE_BYTES_LIMIT)
}

fn refuse(socket: TcpStream) {
    let _ = socket.set_write_timeout(Some(Duration::from_millis(WRITE_TIMEOUT_MS)));
    let _ = (&socket).write_all(b"busy\n");
}

/// Which connection serves each (user, device), for the sink. A device reached by no
/// connection (a session restored from the log before its client reconnected, R8.2) simply
/// misses its notices until it logs in again or times out (R2.4).
type Routes = Arc<Mutex<HashMap<(UserId, DeviceId), Peer>>>;

struct Shared {
    handle: Handle,
    routes: Routes,
    /// Held while a connection claims or releases a (user, device) and queues the matching
    /// `login`, `logout` or `disconnect`, so that the runtime sees those commands in the order
    /// the claims were made: a socket that closes just as the same device reconnects on a new
    /// one cannot disconnect the new session. The runtime thread never takes this lock, so
    /// waiting for room in its queue while holding it cannot deadlock (the sink takes only
    /// `routes`, and only briefly).
    claims: Mutex<()>,
    line_bytes_max: usize,
    idle_timeout: Duration,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked while holding a lock left a map of plain values, still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a connection's writer thread is given.
enum Outbound {
    /// A line (or several, for a query's answer, kept together).
    Line(String),
    /// A line, after which the writer closes the connection.
    Last(String),
}

/// The sending side of one connection.
#[derive(Clone)]
struct Peer {
    id: u64,
    outbound: SyncSender<Outbound>,
    socket: Arc<TcpStream>,
}

impl Peer {
    /// Queues output without ever blocking (the sink runs on the runtime thread). When the
    /// queue is full the client reads slower than it is told things, and the connection is
    /// dropped rather than the notice: a client that silently missed a status change would show
    /// a wrong presence with no way to know, while a dropped one reconnects and reads the
    /// current statuses again (a subscribe returns them, R4.6). Its reader then sees the
    /// socket close and disconnects the device (R2.2).
    fn push(&self, out: Outbound) {
        match self.outbound.try_send(out) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                let _ = self.socket.shutdown(Shutdown::Both);
            }
        }
    }
}

/// The host's [`NoticeSink`]: each notice becomes a line on the connection of each recipient.
struct RouteSink {
    routes: Routes,
}

impl NoticeSink for RouteSink {
    fn deliver(&mut self, notices: &[Notice], names: &Names<'_>) {
        let routes = lock(&self.routes);
        let send = |recipient: Recipient, out: Outbound| {
            let (user, device) = names.resolve(recipient);
            if let Some(peer) = routes.get(&(user.clone(), device.clone())) {
                peer.push(out);
            }
        };
        for notice in notices {
            match notice {
                Notice::Status(change) => {
                    let line = status_line("notice", &change.about, &change.status);
                    for &recipient in &change.recipients {
                        send(recipient, Outbound::Line(line.clone()));
                    }
                }
                // R5.5: the session is gone; the connection has nothing left to serve.
                Notice::Kicked(recipient) => send(*recipient, Outbound::Last("kicked".into())),
            }
        }
    }
}

/// `WORD USER GENERAL [CUSTOM]`, control characters in the custom status escaped so that it
/// stays one line.
fn status_line(word: &str, user: &UserId, status: &UserStatus) -> String {
    let mut line = format!("{word} {user} {}", status.general);
    if !status.custom.is_empty() {
        line.push(' ');
        for c in status.custom.chars() {
            match c.is_control() {
                true => line.extend(c.escape_debug()),
                false => line.push(c),
            }
        }
    }
    line
}

fn error_line(code: u32, message: impl std::fmt::Display) -> String {
    format!("error {code} {message}")
}

fn refused(error: &RuntimeError) -> String {
    match error {
        RuntimeError::Refused(e) => error_line(e.code(), describe(e)),
        // The runtime stops only at server shutdown or after its store failed: `Storage`'s code.
        other => error_line(STORAGE_CODE, other),
    }
}

/// `Name: message`, without the code that the line already carries.
fn describe(error: &Error) -> String {
    match error {
        Error::InvalidParameter(m)
        | Error::NotLoggedIn(m)
        | Error::RateLimited(m)
        | Error::EditionNotSupported(m)
        | Error::FeatureNotEnabled(m)
        | Error::InvalidConfig(m) => format!("{}: {m}", error.name()),
        other => other.to_string(),
    }
}

fn start_connection(
    shared: &Arc<Shared>,
    id: u64,
    socket: TcpStream,
) -> io::Result<(TcpStream, JoinHandle<()>)> {
    // Accepted sockets may inherit the listener's non-blocking mode on some platforms.
    socket.set_nonblocking(false)?;
    socket.set_nodelay(true)?;
    socket.set_read_timeout(Some(shared.idle_timeout))?;
    socket.set_write_timeout(Some(Duration::from_millis(WRITE_TIMEOUT_MS)))?;
    let control = socket.try_clone()?;
    let shared = Arc::clone(shared);
    let thread = thread::Builder::new()
        .name(format!("presence-conn-{id}"))
        .spawn(move || run_connection(&shared, id, socket))?;
    Ok((control, thread))
}

fn run_connection(shared: &Shared, id: u64, socket: TcpStream) {
    let (outbound, queue) = mpsc::sync_channel(OUTBOUND_LINES_MAX);
    let writer = match socket.try_clone().and_then(|socket| {
        thread::Builder::new().name(format!("presence-conn-{id}-writer")).spawn(|| write_lines(socket, queue))
    }) {
        Ok(writer) => writer,
        Err(e) => {
            eprintln!("tcp_server: connection {id}: cannot start its writer: {e}");
            return;
        }
    };
    let socket = Arc::new(socket);
    let peer = Peer { id, outbound, socket: Arc::clone(&socket) };
    let mut connection = Connection { shared, peer, identity: None };
    let mut reader = BufReader::new(&*socket);
    let mut line = Vec::new();
    loop {
        // An error here is the socket closing, being shut down, or staying silent for the
        // heartbeat timeout: all of them end the connection.
        match read_line(&mut reader, &mut line, shared.line_bytes_max) {
            Ok(LineRead::Line) => {}
            Ok(LineRead::TooLong) => {
                let max = shared.line_bytes_max;
                connection.reply(error_line(INVALID_PARAMETER_CODE, format!("line longer than {max} bytes")));
                break;
            }
            Ok(LineRead::End) | Err(_) => break,
        }
        let flow = match std::str::from_utf8(&line) {
            Ok(text) => connection.handle(text),
            Err(_) => {
                connection.reply(error_line(INVALID_PARAMETER_CODE, "the line is not UTF-8"));
                Flow::Continue
            }
        };
        if let Flow::Close = flow {
            break;
        }
    }
    connection.close();
    // The writer sends what is queued and ends once every sender is gone: ours now, and the
    // routing table's, which `close` removed.
    drop(connection);
    let _ = writer.join();
}

enum LineRead {
    Line,
    TooLong,
    End,
}

/// Reads one line into `line` (without its `\n` or `\r\n`), reading at most `max` bytes.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>, max: usize) -> io::Result<LineRead> {
    line.clear();
    let read = Read::by_ref(reader).take(max as u64 + 1).read_until(b'\n', line)?;
    if read == 0 {
        return Ok(LineRead::End);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        return Ok(LineRead::Line);
    }
    // No newline: either the line is too long, or it is the last one before the socket closed.
    Ok(if read > max { LineRead::TooLong } else { LineRead::Line })
}

fn write_lines(socket: TcpStream, queue: Receiver<Outbound>) {
    let mut writer = BufWriter::new(&socket);
    while let Ok(first) = queue.recv() {
        let mut next = Some(first);
        // Write everything already queued, then flush once.
        while let Some(out) = next.take() {
            let (text, last) = match out {
                Outbound::Line(text) => (text, false),
                Outbound::Last(text) => (text, true),
            };
            let written = writer.write_all(text.as_bytes()).and_then(|()| writer.write_all(b"\n"));
            if written.is_err() || last {
                let _ = writer.flush();
                let _ = socket.shutdown(Shutdown::Both);
                return;
            }
            next = queue.try_recv().ok();
        }
        if writer.flush().is_err() {
            let _ = socket.shutdown(Shutdown::Both);
            return;
        }
    }
}

enum Flow {
    Continue,
    Close,
}

/// A parsed request line.
enum Request {
    Login(UserId, DeviceId),
    Logout,
    Act(Action),
}

/// A request that runs as the connection's device, once logged in.
enum Action {
    Heartbeat,
    Status(String),
    Get(Vec<UserId>),
    Subscribe(Vec<UserId>),
    Unsubscribe(Vec<UserId>),
    Friend(UserId),
    Unfriend(UserId),
}

impl Action {
    fn command(self, user: UserId, device: DeviceId) -> Command {
        match self {
            Action::Heartbeat => Command::heartbeat(user, device),
            Action::Status(text) => Command::set_status(user, device, text),
            Action::Get(targets) => Command::get_status(user, device, targets),
            Action::Subscribe(targets) => Command::subscribe(user, device, targets),
            Action::Unsubscribe(targets) => Command::unsubscribe(user, device, targets),
            Action::Friend(friend) => Command::add_friend(user, friend),
            Action::Unfriend(friend) => Command::remove_friend(user, friend),
        }
    }
}

/// Splits a line into a request. Only the shape is checked; ids, batch sizes and status
/// lengths are the engine's to judge, so that clients get its codes (R7.1, R7.2).
fn parse(line: &str) -> Result<Request, String> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    if word == "status" {
        return Ok(Request::Act(Action::Status(rest.to_owned())));
    }
    let args: Vec<&str> = rest.split_whitespace().collect();
    let users = || args.iter().map(|&a| UserId::from(a)).collect::<Vec<_>>();
    let action = match (word, args.as_slice()) {
        ("login", &[user, device]) => return Ok(Request::Login(user.into(), device.into())),
        ("logout", []) => return Ok(Request::Logout),
        ("heartbeat", []) => Action::Heartbeat,
        ("get", _) => Action::Get(users()),
        ("subscribe", _) => Action::Subscribe(users()),
        ("unsubscribe", _) => Action::Unsubscribe(users()),
        ("friend", &[user]) => Action::Friend(user.into()),
        ("unfriend", &[user]) => Action::Unfriend(user.into()),
        ("login", _) => return Err("usage: login USER DEVICE".into()),
        ("friend" | "unfriend", _) => return Err(format!("usage: {word} USER")),
        ("heartbeat" | "logout", _) => return Err(format!("usage: {word}")),
        _ => return Err(format!("unknown command {word:?}")),
    };
    Ok(Request::Act(action))
}

/// One connection's state: the device it serves once logged in.
struct Connection<'a> {
    shared: &'a Shared,
    peer: Peer,
    identity: Option<(UserId, DeviceId)>,
}

impl Connection<'_> {
    fn reply(&self, text: String) {
        self.peer.push(Outbound::Line(text));
    }

    fn handle(&mut self, line: &str) -> Flow {
        if line.is_empty() {
            return Flow::Continue;
        }
        let request = match parse(line) {
            Ok(request) => request,
            Err(message) => {
                self.reply(error_line(INVALID_PARAMETER_CODE, message));
                return Flow::Continue;
            }
        };
        let action = match request {
            Request::Login(user, device) => {
                let answer = self.login(user, device);
                self.reply(answer);
                return Flow::Continue;
            }
            Request::Logout => None,
            Request::Act(action) => Some(action),
        };
        let Some((user, device)) = self.identity.clone() else {
            self.reply(error_line(NOT_LOGGED_IN_CODE, "log in first: login USER DEVICE"));
            return Flow::Continue;
        };
        let Some(action) = action else { return self.logout(user, device) };
        let answer = match self.shared.handle.execute(action.command(user, device)) {
            Ok(reply) => answer(&reply),
            Err(e) => refused(&e),
        };
        self.reply(answer);
        Flow::Continue
    }

    /// R2.1. The route goes in before the command is queued, so that the device hears the
    /// notice of its own login (R5.3).
    fn login(&mut self, user: UserId, device: DeviceId) -> String {
        if let Some((u, d)) = &self.identity {
            if (u, d) != (&user, &device) {
                return error_line(
                    INVALID_PARAMETER_CODE,
                    format!("this connection is {u} {d}; use a new one for another device"),
                );
            }
        }
        let key = (user.clone(), device.clone());
        let queued = {
            let _claims = lock(&self.shared.claims);
            let previous = lock(&self.shared.routes).insert(key.clone(), self.peer.clone());
            if let Some(previous) = previous.filter(|p| p.id != self.peer.id) {
                // The same device on a new connection (its client reconnected before the old
                // socket died): the new one takes over, and the old one must not disconnect it.
                // Only a store failure can refuse a login of ids that already logged in; the
                // session then has no connection and times out (R2.4).
                previous.push(Outbound::Last("replaced".into()));
            }
            self.shared.handle.send(Command::login(user.clone(), device.clone()))
        };
        match wait(queued) {
            Ok(_) => {
                self.identity = Some((user, device));
                "ok".into()
            }
            Err(e) => {
                if self.identity.is_none() {
                    self.release(&key);
                }
                refused(&e)
            }
        }
    }

    /// R2.2: the session ends, and so does the connection.
    fn logout(&mut self, user: UserId, device: DeviceId) -> Flow {
        let key = (user.clone(), device.clone());
        let queued = {
            let _claims = lock(&self.shared.claims);
            if !self.owns(&key) {
                self.reply(error_line(
                    NOT_LOGGED_IN_CODE,
                    "this device was taken over by another connection",
                ));
                return Flow::Close;
            }
            self.shared.handle.send(Command::logout(user, device))
        };
        match wait(queued) {
            Ok(_) => {
                self.release(&key);
                self.identity = None;
                self.reply("ok".into());
                Flow::Close
            }
            Err(e) => {
                self.reply(refused(&e));
                Flow::Continue
            }
        }
    }

    /// R2.2: the socket closed without a logout. Nothing to do if another connection has taken
    /// the device over. After a kick the engine answers `NotLoggedIn`, which changes nothing.
    fn close(&mut self) {
        let Some(key) = self.identity.take() else { return };
        let queued = {
            let _claims = lock(&self.shared.claims);
            if !self.release(&key) {
                return;
            }
            self.shared.handle.send(Command::disconnect(key.0, key.1))
        };
        let _ = wait(queued);
    }

    fn owns(&self, key: &(UserId, DeviceId)) -> bool {
        lock(&self.shared.routes).get(key).is_some_and(|p| p.id == self.peer.id)
    }

    /// Removes the route if it is still this connection's; says whether it was.
    fn release(&self, key: &(UserId, DeviceId)) -> bool {
        let mut routes = lock(&self.shared.routes);
        let ours = routes.get(key).is_some_and(|p| p.id == self.peer.id);
        if ours {
            routes.remove(key);
        }
        ours
    }
}

/// A command in the runtime's queue, and where its reply will come (`Handle::send`).
type Queued = Result<PendingReply, RuntimeError>;

fn wait(queued: Queued) -> Result<Reply, RuntimeError> {
    queued?.wait()
}

/// `ok`, after one `status` line per target for queries and subscriptions (R4.6, R6.1), sent
/// as one piece so that no notice lands in between.
fn answer(reply: &Reply) -> String {
    let mut text = String::new();
    if let Reply::Statuses(statuses) = reply {
        for target in statuses {
            text.push_str(&status_line("status", &target.user, &target.status));
            text.push('\n');
        }
    }
    text.push_str("ok");
    text
}

fn main() -> Result<(), ServeError> {
    let mut args = std::env::args().skip(1);
    let mut addr = String::from("127.0.0.1:7878");
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--addr", Some(value)) => addr = value,
            _ => return Err("usage: tcp_server [--addr HOST:PORT]".into()),
        }
    }
    let listener = TcpListener::bind(&addr)?;
    eprintln!(
        "tcp_server: presence on {} (the in-memory store: nothing survives a restart)",
        listener.local_addr()?
    );
    // Nothing sets the flag here: the process runs until it is killed. Hosts that embed
    // `serve` set it from their own shutdown path.
    let stop = Arc::new(AtomicBool::new(false));
    serve(listener, Config::default(), MemStore::new(), stop)?;
    Ok(())
}
