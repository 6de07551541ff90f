//! The process's limit on open files: `presence serve` and `presence node` raise the soft
//! limit to the hard one at start (every socket is a descriptor, and the usual soft limit of
//! 1 024 is far below a gateway's connections), say what it is, and keep the gateway's
//! connection cap under it with room for the store.

use presence_gateway::config::descriptors_reserved;
use presence_gateway::GatewayConfig;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs the result on stderr as
/// `name`; returns the soft limit now in force (`None`: unlimited).
pub(crate) fn raise_nofile_limit(name: &str) -> Option<u64> {
    let before = getrlimit(Resource::Nofile);
    let raised = match (before.current, before.maximum) {
        (Some(soft), Some(hard)) if soft < hard => {
            match setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) }) {
                Ok(()) => Some(soft),
                Err(e) => {
                    eprintln!("{name}: cannot raise the open files limit from {soft} to {hard}: {e}");
                    None
                }
            }
        }
        _ => None,
    };
    let now = getrlimit(Resource::Nofile).current;
    let shown = now.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    match raised {
        Some(from) => eprintln!("{name}: open files limit {shown} (raised from {from})"),
        None => eprintln!("{name}: open files limit {shown}"),
    }
    now
}

/// Lowers the gateway's `max_connections` to fit `nofile` descriptors (keeping
/// [`descriptors_reserved`] for the store, the listener and the rest) and says so.
pub(crate) fn fit_connections(config: &mut GatewayConfig, nofile: Option<u64>, name: &str) {
    let Some(nofile) = nofile else { return };
    let before = config.gateway.max_connections;
    if let Some(cap) = config.fit_descriptors(nofile) {
        eprintln!(
            "{name}: max_connections lowered from {before} to {cap}: the open files limit is {nofile}, \
             {} of them kept for the store and the rest",
            descriptors_reserved(nofile)
        );
    }
}
