//! One generated case, and the two things every part of the kit does with it: run a step on
//! a subject, and read a user's state as a trace's checks would state it.

use presence_engine::Config;

use crate::observe::{Refusal, Response};
use crate::subject::Subject;
use crate::trace::{step_line, Check, Op};

/// One case of the kit: a configuration and the timed operations to run on a fresh instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// The configuration the instance starts with.
    pub config: Config,
    /// The operations, in order.
    pub steps: Vec<TimedOp>,
}

/// An operation at a time: a line of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedOp {
    /// Its time in milliseconds (R1.3: an earlier time than the latest seen counts as that).
    pub at_ms: u64,
    /// What it does.
    pub op: Op,
}

impl TimedOp {
    /// Runs it on `subject`: a restart answers an empty [`Response`].
    pub fn run_on<S: Subject>(&self, subject: &mut S) -> Result<Response, Refusal> {
        match &self.op {
            Op::Command(command) => subject.execute(command.clone(), self.at_ms),
            Op::Tick => subject.tick(self.at_ms),
            Op::Restart { disconnect } => {
                subject.restart(self.at_ms, *disconnect).map(|()| Response::default())
            }
        }
    }

    /// Its trace line (docs/TRACE-FORMAT.md).
    pub fn line(&self) -> String {
        step_line(self.at_ms, &self.op)
    }
}

/// What the direct reads of `subject` say about `user` (R6.4), as the four checks of a trace
/// would state it: status, subscriptions, friends, devices. This is everything the kit
/// compares after each step, so that every difference it finds can be written as a trace.
pub fn reads<S: Subject>(subject: &S, user: &str) -> [Check; 4] {
    let names = |list: Vec<presence_engine::UserId>| list.iter().map(|t| t.to_string()).collect();
    let sessions = subject.sessions(user);
    let devices = |on: bool| -> Vec<String> {
        let mut list: Vec<String> =
            sessions.iter().filter(|s| s.connected == on).map(|s| s.device.to_string()).collect();
        list.sort();
        list
    };
    let user = user.to_string();
    [
        Check::Status { user: user.clone(), status: subject.status(&user) },
        Check::Subscriptions { user: user.clone(), targets: names(subject.subscriptions(&user)) },
        Check::Friends { user: user.clone(), friends: names(subject.friends(&user)) },
        Check::Devices { user, connected: devices(true), disconnected: devices(false) },
    ]
}
