//! Reading an adapter's replies (docs/CONFORMANCE-PROTOCOL.md): strictly, so that a typo in
//! an adapter is a clear message rather than a silent difference.

use presence_engine::UserId;
use serde_json::{Map, Value};

use crate::observe::{FlatNotice, Refusal, Response, ResultStatus};
use crate::trace::{check_object, notice_object, status_object, Check, Fields};

/// The reply must be one JSON object.
fn object(reply: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(reply) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err("a reply must be a JSON object".into()),
        Err(e) => Err(format!("a reply that is not JSON ({e})")),
    }
}

/// `{"ok": true}` to a configuration line.
pub(crate) fn config(reply: &str) -> Result<(), String> {
    let mut fields = Fields::new(object(reply)?);
    ok(&mut fields)?;
    fields.done()
}

fn ok(fields: &mut Fields) -> Result<(), String> {
    match fields.take("ok")? {
        Value::Bool(true) => Ok(()),
        other => Err(format!("\"ok\" must be true, not {other}")),
    }
}

/// The reply to a command, tick or restart: `{"ok": true, "statuses": [S...], "notices":
/// [N...]}` (statuses optional) or `{"error": CODE, "notices": []}` (a `"message"` allowed).
pub(crate) fn step(reply: &str) -> Result<Result<Response, Refusal>, String> {
    let object = object(reply)?;
    let mut fields = Fields::new(object);
    if fields.has("error") {
        let code = fields.u64("error")?;
        let code = u32::try_from(code).map_err(|_| format!("error code {code} is too large"))?;
        let message = fields.optional_string("message")?.unwrap_or_default();
        let notices = fields.objects("notices")?;
        if !notices.is_empty() {
            return Err("notices with an error: a refused command notifies nobody (R7.1), so \
                        \"notices\" must be []"
                .into());
        }
        fields.done()?;
        return Ok(Err(Refusal { code, message }));
    }
    if !fields.has("ok") {
        return Err("a reply needs \"ok\": true or \"error\": CODE".into());
    }
    ok(&mut fields)?;
    let statuses = match fields.has("statuses") {
        true => Some(
            fields
                .objects("statuses")?
                .into_iter()
                .map(|s| {
                    status_object(s).map(|s| ResultStatus {
                        user: s.user,
                        status: s.status,
                        version: s.version,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("in \"statuses\": {e}"))?,
        ),
        false => None,
    };
    let notices: Vec<FlatNotice> = fields
        .objects("notices")?
        .into_iter()
        .map(notice_object)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("in \"notices\": {e}"))?;
    fields.done()?;
    let mut response = Response { statuses, notices, disconnected: None };
    response.notices.sort();
    Ok(Ok(response))
}

/// The reply to a check: the check asked for, with its fields filled in.
pub(crate) fn check(reply: &str, kind: &str, user: &str) -> Result<Check, String> {
    let check = check_object(object(reply)?)?;
    let (got_kind, got_user) = match &check {
        Check::Status { user, .. } => ("status", user),
        Check::Subscriptions { user, .. } => ("subscriptions", user),
        Check::Friends { user, .. } => ("friends", user),
        Check::Devices { user, .. } => ("devices", user),
    };
    if (got_kind, got_user.as_str()) != (kind, user) {
        return Err(format!(
            "the {got_kind} check of {got_user:?} in answer to the {kind} check of {user:?}"
        ));
    }
    Ok(check)
}

/// The names of a list check.
pub(crate) fn ids(list: Vec<String>) -> Vec<UserId> {
    list.into_iter().map(UserId::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_strictly() {
        assert_eq!(config(r#"{"ok": true}"#), Ok(()));
        for bad in [r#"{"ok": false}"#, r#"{"ok": true, "x": 1}"#, "[]", "ok", r#"{}"#] {
            assert!(config(bad).is_err(), "{bad}");
        }
        let done = step(r#"{"ok": true, "notices": [{"to": "b", "device": "p", "kicked": true}]}"#)
            .unwrap()
            .unwrap();
        assert_eq!((done.statuses, done.notices.len()), (None, 1));
        let listed = step(
            r#"{"ok": true, "statuses": [{"user": "a", "status": "ONLINE", "custom": ""}], "notices": []}"#,
        );
        assert_eq!(listed.unwrap().unwrap().statuses.unwrap()[0].version, None);
        let refused = step(r#"{"error": 6014, "message": "no session", "notices": []}"#).unwrap();
        assert_eq!(refused, Err(Refusal { code: 6014, message: "no session".into() }));
        for (bad, why) in [
            (r#"{"ok": true}"#, "missing \"notices\""),
            (r#"{"error": 6014}"#, "missing \"notices\""),
            (r#"{"error": 6014, "notices": [{"to": "b", "device": "p", "kicked": true}]}"#, "R7.1"),
            (r#"{"error": -1, "notices": []}"#, "non-negative"),
            (
                r#"{"ok": true, "notices": [], "statuses": [{"user": "a", "status": "AWAY", "custom": ""}]}"#,
                "in \"statuses\"",
            ),
            (r#"{"ok": true, "notices": [{"to": "b"}]}"#, "in \"notices\""),
            (r#"{"ok": true, "notice": []}"#, "missing \"notices\""),
            (r#"{"ok": true, "notices": [], "extra": 1}"#, "unknown field \"extra\""),
            (r#"{"statuses": []}"#, "\"ok\": true or \"error\""),
        ] {
            let error = step(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn a_check_must_answer_the_check_asked() {
        let status =
            check(r#"{"check": "status", "user": "a", "status": "OFFLINE", "custom": ""}"#, "status", "a");
        assert!(matches!(status, Ok(Check::Status { .. })));
        let other_user = check(r#"{"check": "friends", "user": "b", "friends": []}"#, "friends", "a");
        assert!(other_user.unwrap_err().contains("in answer to the friends check of \"a\""));
        let unfilled = check(r#"{"check": "devices", "user": "a"}"#, "devices", "a");
        assert!(unfilled.unwrap_err().contains("missing \"connected\""));
    }
}
