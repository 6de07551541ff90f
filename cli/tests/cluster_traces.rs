//! Every conformance trace, and the kit's random cases, on a cluster (docs/SPEC.md R9.4): the
//! nodes in one process over a nats-server with JetStream, each trace or case on a deployment
//! of its own with its engine configuration, every step followed by the nodes' quiescence
//! (`presence_cli::cluster_subject`). The cluster must answer as one engine does: results,
//! error codes, notices (versions and causes included) and reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use presence_cli::cluster_subject::ClusterSubject;
use presence_testkit::NatsServer;

/// One cluster at a time: two would compete for the machine's cores, and a node starved
/// long enough misses its heartbeats and loses its shards.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What a user runs: `presence conform --store cluster:2 conformance/traces`, on a nats-server
/// it starts itself. To look at one trace, name its file instead of the directory.
#[test]
fn every_trace_passes_on_a_cluster() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let traces = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/traces");
    let traces = std::env::var("PRESENCE_TRACE").map(Into::into).unwrap_or(traces);
    let output = Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["conform", "--store", "cluster:2"])
        .arg(&traces)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let (passed, failed) = last
        .strip_suffix(" failed")
        .and_then(|l| l.split_once(" passed, "))
        .map(|(p, f)| (p.parse::<usize>().unwrap(), f.parse::<usize>().unwrap()))
        .unwrap_or_else(|| panic!("no `N passed, M failed` line:\n{stdout}"));
    assert!(output.status.success() && failed == 0, "{stdout}");
    if std::env::var("PRESENCE_TRACE").is_err() {
        assert!(passed >= 40, "only {passed} traces ran:\n{stdout}");
    }
}

/// A cluster that is not there is a clear error, not a hang or a panic.
#[test]
fn a_cluster_on_nats_that_is_not_there_is_an_error_with_exit_2() {
    let port = presence_testkit::process::free_ports(1)[0];
    let trace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/traces");
    let output = Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["conform", "--store", "cluster:2", "--nats", &format!("nats://127.0.0.1:{port}")])
        .arg(&trace)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("cluster:2"), "{stdout}");
    let bad = Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["conform", "--store", "cluster:0"])
        .arg(&trace)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cluster:N takes 1 to 8 nodes"));
}

/// The conformance kit's random cases against the cluster, as another implementation would run
/// them: each case on a fresh deployment of two nodes, compared with the reference model after
/// every step (fewer and shorter cases than on one engine: a case starts two nodes).
#[test]
fn the_kit_passes_on_a_cluster() {
    use presence_conformance::kit::{self, KitOptions, Ops};
    use presence_conformance::observe::Refusal;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let nats = NatsServer::start();
    let options = KitOptions { cases: 6, seed: 31, ops: Ops::all(), max_steps: 30, shrink_iters: 20 };
    let mut next = 0;
    let report = kit::check(&options, |config| {
        next += 1;
        ClusterSubject::start(&nats.url(), &format!("kit{next}"), config.clone(), 2).map_err(|e| Refusal {
            code: 9000,
            message: format!("{e}; nats-server's log ends:\n{}", nats.log_tail(30)),
        })
    });
    assert!(report.is_ok(), "{report:#?}");
    assert_eq!(report.passed, options.cases);
}
