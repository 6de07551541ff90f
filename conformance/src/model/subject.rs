//! The model as a [`Subject`], so that traces and the conformance kit run on it as on any
//! implementation.

use presence_engine::{Command, SessionView, UserId, UserStatus};

use super::Model;
use crate::observe::{Refusal, Response};
use crate::subject::Subject;

impl Subject for Model {
    fn execute(&mut self, command: Command, at_ms: u64) -> Result<Response, Refusal> {
        Model::execute(self, command, at_ms)
    }

    fn tick(&mut self, at_ms: u64) -> Result<Response, Refusal> {
        Ok(Model::tick(self, at_ms))
    }

    fn status(&self, user: &str) -> UserStatus {
        Model::status(self, user)
    }

    fn sessions(&self, user: &str) -> Vec<SessionView> {
        Model::sessions(self, user)
    }

    fn subscriptions(&self, user: &str) -> Vec<UserId> {
        Model::subscriptions(self, user)
    }

    fn friends(&self, user: &str) -> Vec<UserId> {
        Model::friends(self, user)
    }

    fn restart(&mut self, at_ms: u64, disconnect: bool) -> Result<(), Refusal> {
        Model::restart(self, disconnect.then_some(at_ms));
        Ok(())
    }

    fn finish(self) -> Result<(), String> {
        Ok(())
    }
}
