//! `presence load --against both` on a small scale: it starts `presence serve` on a sled
//! store, then a redis-server (from scripts/install-programs.sh) with `presence redis-peer`,
//! drives the same devices over real WebSockets against each, and reports what each did.
//! The figures themselves are the README's; here only that the run happened as described:
//! every request answered, notices delivered and timed, server CPU measured.

use std::process::Command;

use serde_json::Value;

#[test]
fn load_races_the_gateway_and_the_redis_design_with_the_same_devices() {
    presence_testkit::process::find_program("redis-server").unwrap_or_else(|e| panic!("{e}"));
    let output = Command::new(env!("CARGO_BIN_EXE_presence"))
        .args([
            "load",
            "--against",
            "both",
            "--devices",
            "40",
            "--duration-s",
            "3",
            "--warmup-s",
            "2",
            "--status-every-ms",
            "300",
            "--session-s",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    let servers: Vec<&str> = results.iter().map(|r| r["server"].as_str().unwrap()).collect();
    assert_eq!(servers, ["gateway", "redis"]);
    for result in results {
        let count = |key: &str| result[key].as_u64().unwrap_or_else(|| panic!("{key} in {result}"));
        assert!(count("requests_answered") > 0, "{result}");
        assert!(count("notices") > 0, "{result}");
        assert!(count("latency_samples") > 0, "{result}");
        assert!(count("sessions_started") > 0, "sessions end and start again within the window: {result}");
        assert_eq!((count("busy"), count("refused"), count("connect_failures")), (0, 0, 0), "{result}");
        assert!(result["cpu_s_total"].as_f64().unwrap() > 0.0, "the server's CPU time was read: {result}");
    }
    let redis_cpu = results[1]["cpu_s"].as_object().unwrap();
    assert!(
        redis_cpu.contains_key("redis-server") && redis_cpu.contains_key("presence redis-peer"),
        "{redis_cpu:?}"
    );
}

#[test]
fn load_refuses_an_address_without_a_side_or_a_secret() {
    let output = Command::new(env!("CARGO_BIN_EXE_presence"))
        .args(["load", "--addr", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--against"));
}
