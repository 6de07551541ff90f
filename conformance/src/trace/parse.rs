//! Reading a trace (docs/TRACE-FORMAT.md) into a [`Trace`]. Never panics, whatever the text.

use presence_engine::{Cause, CauseKind, Command, Config, DeviceId, GeneralStatus, UserId, UserStatus};
use serde_json::{Map, Value};

use crate::observe::{FlatNotice, ResultStatus};

/// A parsed trace: its configuration and its commands and checks, each with its line number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// The configuration line's values over SPEC.md's defaults.
    pub config: Config,
    /// Commands (with their expectations) and checks, in file order.
    pub items: Vec<Item>,
    /// The number of lines in the file (where the final replay check reports).
    pub lines: usize,
}

/// A command with its expectations, or a check of the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A command or tick.
    Step {
        /// Its line (1-based).
        line: usize,
        /// Its time.
        at_ms: u64,
        /// What it does.
        op: Op,
        /// The expectation lines that follow it, with their line numbers.
        expectations: Vec<(usize, Expectation)>,
    },
    /// A check of the state through the direct reads.
    Check {
        /// Its line (1-based).
        line: usize,
        /// What it checks.
        check: Check,
    },
}

/// A command, a clock tick, or a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// One of the engine's commands.
    Command(Command),
    /// A clock tick.
    Tick,
    /// The implementation is stopped and started again over what it stored (R8.2, R8.4),
    /// keeping its connected sessions or disconnecting them at the line's time.
    Restart {
        /// Whether the restart disconnects every restored session (R8.4).
        disconnect: bool,
    },
}

/// An expectation about the command just above it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// It succeeded.
    Ok,
    /// It was refused with this code.
    Error(u32),
    /// Its result is exactly these statuses, in order (each version only where given).
    Statuses(Vec<ExpectedStatus>),
    /// Its notices are exactly these, in any order.
    Notices(Vec<FlatNotice>),
}

/// One status a trace expects in a result: the version is compared only where the trace
/// states one (R5.6: an implementation may not report versions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedStatus {
    /// The target.
    pub user: UserId,
    /// Its status.
    pub status: UserStatus,
    /// Its version, if the trace states one.
    pub version: Option<u64>,
}

impl ExpectedStatus {
    /// Whether `got` is this status (and this version, when one is stated).
    pub fn matches(&self, got: &ResultStatus) -> bool {
        self.user == got.user
            && self.status == got.status
            && self.version.is_none_or(|v| got.version == Some(v))
    }
}

/// A check of the state, read through the host's direct API (R6.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The user's status is this.
    Status {
        /// The user.
        user: String,
        /// The expected status.
        status: UserStatus,
    },
    /// The user's subscription list is exactly this, oldest first.
    Subscriptions {
        /// The user.
        user: String,
        /// The expected list.
        targets: Vec<String>,
    },
    /// The user's friends are exactly these, sorted.
    Friends {
        /// The user.
        user: String,
        /// The expected friends.
        friends: Vec<String>,
    },
    /// The user's sessions are these, each list sorted.
    Devices {
        /// The user.
        user: String,
        /// The connected devices.
        connected: Vec<String>,
        /// The disconnected devices.
        disconnected: Vec<String>,
    },
}

/// Why a trace could not be parsed, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The line (1-based).
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Parses a trace's text. Blank lines and lines starting with `#` are comments.
pub fn parse(text: &str) -> Result<Trace, ParseError> {
    let mut trace = Trace { config: Config::default(), items: Vec::new(), lines: 0 };
    let mut seen_content = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        trace.lines = line;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let error = |message: String| ParseError { line, message };
        let first = !seen_content;
        seen_content = true;
        let object = match serde_json::from_str::<Value>(content) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(error("a line must be a JSON object".into())),
            Err(e) => return Err(error(format!("not JSON: {e}"))),
        };
        parse_line(&mut trace, object, line, first).map_err(error)?;
    }
    Ok(trace)
}

fn parse_line(trace: &mut Trace, object: Map<String, Value>, line: usize, first: bool) -> Result<(), String> {
    let kinds: Vec<&str> =
        ["config", "op", "expect", "check"].into_iter().filter(|k| object.contains_key(*k)).collect();
    match kinds[..] {
        ["config"] => {
            if !first {
                return Err("the config line must be the first non-comment line".into());
            }
            let mut fields = Fields::new(object);
            trace.config = config(fields.take("config")?)?;
            fields.done()
        }
        ["op"] => {
            let mut fields = Fields::new(object);
            let at_ms = fields.u64("at")?;
            let op = op(&mut fields)?;
            fields.done()?;
            trace.items.push(Item::Step { line, at_ms, op, expectations: Vec::new() });
            Ok(())
        }
        ["expect"] => {
            let mut fields = Fields::new(object);
            let expectation = expectation(&mut fields)?;
            fields.done()?;
            match trace.items.last_mut() {
                Some(Item::Step { expectations, .. }) => {
                    expectations.push((line, expectation));
                    Ok(())
                }
                _ => Err("an expectation must follow a command (or another expectation)".into()),
            }
        }
        ["check"] => {
            let mut fields = Fields::new(object);
            let check = check(&mut fields)?;
            fields.done()?;
            trace.items.push(Item::Check { line, check });
            Ok(())
        }
        [] => Err("a line needs one of \"config\", \"op\", \"expect\" or \"check\"".into()),
        _ => Err(format!("a line cannot be both {}", kinds.join(" and "))),
    }
}

fn config(value: Value) -> Result<Config, String> {
    let config: Config = serde_json::from_value(value).map_err(|e| format!("bad config: {e}"))?;
    config.validate().map_err(|e| format!("bad config: {e}"))?;
    Ok(config)
}

fn op(fields: &mut Fields) -> Result<Op, String> {
    let name = fields.string("op")?;
    let command = match name.as_str() {
        "tick" => return Ok(Op::Tick),
        "restart" => {
            let disconnect = match fields.string("sessions")?.as_str() {
                "keep" => false,
                "disconnect" => true,
                other => return Err(format!("\"sessions\" is \"keep\" or \"disconnect\", not {other:?}")),
            };
            return Ok(Op::Restart { disconnect });
        }
        "login" => {
            let (user, device) = (fields.string("user")?, fields.string("device")?);
            match fields.optional_string("owner")? {
                Some(owner) => Command::login_with_owner(user, device, owner),
                None => Command::login(user, device),
            }
        }
        "disconnect_sessions" => match fields.optional_string("owner")? {
            Some(owner) => Command::disconnect_owner(owner),
            None => Command::disconnect_all(),
        },
        "logout" => Command::logout(fields.string("user")?, fields.string("device")?),
        "disconnect" => Command::disconnect(fields.string("user")?, fields.string("device")?),
        "heartbeat" => Command::heartbeat(fields.string("user")?, fields.string("device")?),
        "set_status" => {
            Command::set_status(fields.string("user")?, fields.string("device")?, fields.string("custom")?)
        }
        "get_status" => {
            Command::get_status(fields.string("user")?, fields.string("device")?, fields.strings("targets")?)
        }
        "subscribe" => {
            Command::subscribe(fields.string("user")?, fields.string("device")?, fields.strings("targets")?)
        }
        "unsubscribe" => {
            Command::unsubscribe(fields.string("user")?, fields.string("device")?, fields.strings("targets")?)
        }
        "add_friend" => Command::add_friend(fields.string("user")?, fields.string("friend")?),
        "remove_friend" => Command::remove_friend(fields.string("user")?, fields.string("friend")?),
        other => return Err(format!("unknown op {other:?}")),
    };
    Ok(Op::Command(command))
}

fn expectation(fields: &mut Fields) -> Result<Expectation, String> {
    let kind = fields.string("expect")?;
    match kind.as_str() {
        "ok" => Ok(Expectation::Ok),
        "error" => {
            let code = fields.u64("code")?;
            let code = u32::try_from(code).map_err(|_| format!("error code {code} is too large"))?;
            Ok(Expectation::Error(code))
        }
        "statuses" => {
            let list = fields.objects("statuses")?;
            list.into_iter().map(expected_status).collect::<Result<_, _>>().map(Expectation::Statuses)
        }
        "notices" => {
            let list = fields.objects("notices")?;
            list.into_iter().map(notice).collect::<Result<_, _>>().map(Expectation::Notices)
        }
        other => Err(format!("unknown expectation {other:?}")),
    }
}

fn check(fields: &mut Fields) -> Result<Check, String> {
    let kind = fields.string("check")?;
    let user = fields.string("user")?;
    match kind.as_str() {
        "status" => Ok(Check::Status { user, status: user_status(fields)? }),
        "subscriptions" => Ok(Check::Subscriptions { user, targets: fields.strings("targets")? }),
        "friends" => Ok(Check::Friends { user, friends: fields.strings("friends")? }),
        "devices" => Ok(Check::Devices {
            user,
            connected: fields.strings("connected")?,
            disconnected: fields.strings("disconnected")?,
        }),
        other => Err(format!("unknown check {other:?}")),
    }
}

/// A whole check object, as an adapter answers one (docs/CONFORMANCE-PROTOCOL.md).
pub(crate) fn check_object(object: Map<String, Value>) -> Result<Check, String> {
    let mut fields = Fields::new(object);
    let check = check(&mut fields)?;
    fields.done()?;
    Ok(check)
}

/// A status `S` of a result, from a trace or an adapter's answer.
pub(crate) fn status_object(object: Map<String, Value>) -> Result<ExpectedStatus, String> {
    expected_status(object)
}

/// A notice `N`, from a trace or an adapter's answer.
pub(crate) fn notice_object(object: Map<String, Value>) -> Result<FlatNotice, String> {
    notice(object)
}

/// `"status"` and `"custom"` of an `S`, a status notice or a status check.
fn user_status(fields: &mut Fields) -> Result<UserStatus, String> {
    let name = fields.string("status")?;
    let general = match GeneralStatus::from_name(&name) {
        Some(g @ (GeneralStatus::Online | GeneralStatus::Offline | GeneralStatus::Unlogined)) => g,
        _ => return Err(format!("status {name:?} is not ONLINE, OFFLINE or UNLOGINED")),
    };
    let custom = fields.string("custom")?;
    Ok(UserStatus { general, custom: custom.into() })
}

fn expected_status(object: Map<String, Value>) -> Result<ExpectedStatus, String> {
    let mut fields = Fields::new(object);
    let user = UserId::from(fields.string("user")?);
    let status = user_status(&mut fields)?;
    let version = fields.optional_u64("version")?;
    fields.done()?;
    Ok(ExpectedStatus { user, status, version })
}

fn notice(object: Map<String, Value>) -> Result<FlatNotice, String> {
    let mut fields = Fields::new(object);
    let to = fields.string("to")?;
    let device = fields.string("device")?;
    let notice = if fields.has("kicked") {
        match fields.take("kicked")? {
            Value::Bool(true) => FlatNotice::Kicked { to, device },
            _ => return Err("\"kicked\" must be true".into()),
        }
    } else {
        let about = fields.string("about")?;
        let status = user_status(&mut fields)?;
        let version = fields.optional_u64("version")?;
        let cause = match fields.has("cause") {
            true => Some(cause(fields.take("cause")?)?),
            false => None,
        };
        FlatNotice::Status {
            to,
            device,
            about,
            status: status.general,
            custom: status.custom.to_string(),
            version,
            cause,
        }
    };
    fields.done()?;
    Ok(notice)
}

/// A notice's `"cause"`: `{"kind": "login", "device": "phone"}` (R5.7).
fn cause(value: Value) -> Result<Cause, String> {
    let Value::Object(object) = value else { return Err("\"cause\" must be an object".into()) };
    let mut fields = Fields::new(object);
    let name = fields.string("kind")?;
    let kind = CauseKind::from_name(&name).ok_or_else(|| format!("unknown cause {name:?}"))?;
    let device = fields.optional_string("device")?.map(DeviceId::from);
    fields.done()?;
    Ok(Cause { kind, device })
}

/// The fields of one JSON object, taken one by one; [`Fields::done`] refuses the rest.
pub(crate) struct Fields {
    object: Map<String, Value>,
}

impl Fields {
    pub(crate) fn new(object: Map<String, Value>) -> Self {
        Self { object }
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.object.contains_key(key)
    }

    pub(crate) fn take(&mut self, key: &str) -> Result<Value, String> {
        self.object.remove(key).ok_or_else(|| format!("missing {key:?}"))
    }

    pub(crate) fn string(&mut self, key: &str) -> Result<String, String> {
        match self.take(key)? {
            Value::String(s) => Ok(s),
            other => Err(format!("{key:?} must be a string, not {other}")),
        }
    }

    /// `key` if present: a string.
    pub(crate) fn optional_string(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.has(key) {
            true => self.string(key).map(Some),
            false => Ok(None),
        }
    }

    /// `key` if present: a non-negative integer.
    pub(crate) fn optional_u64(&mut self, key: &str) -> Result<Option<u64>, String> {
        match self.has(key) {
            true => self.u64(key).map(Some),
            false => Ok(None),
        }
    }

    pub(crate) fn u64(&mut self, key: &str) -> Result<u64, String> {
        match self.take(key)? {
            Value::Number(n) => {
                n.as_u64().ok_or_else(|| format!("{key:?} must be a non-negative integer, not {n}"))
            }
            other => Err(format!("{key:?} must be an integer, not {other}")),
        }
    }

    pub(crate) fn array(&mut self, key: &str) -> Result<Vec<Value>, String> {
        match self.take(key)? {
            Value::Array(list) => Ok(list),
            other => Err(format!("{key:?} must be an array, not {other}")),
        }
    }

    pub(crate) fn strings(&mut self, key: &str) -> Result<Vec<String>, String> {
        let list = self.array(key)?;
        list.into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(format!("{key:?} must hold strings, not {other}")),
            })
            .collect()
    }

    pub(crate) fn objects(&mut self, key: &str) -> Result<Vec<Map<String, Value>>, String> {
        let list = self.array(key)?;
        list.into_iter()
            .map(|v| match v {
                Value::Object(o) => Ok(o),
                other => Err(format!("{key:?} must hold objects, not {other}")),
            })
            .collect()
    }

    pub(crate) fn done(self) -> Result<(), String> {
        match self.object.keys().next() {
            None => Ok(()),
            Some(key) => Err(format!("unknown field {key:?}")),
        }
    }
}
