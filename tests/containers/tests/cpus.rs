//! The CPUs a container is given, as the gate in the vitals image counts them.

mod common;

use common::*;

/// Where vitals has one CPU, the gate sends the requests it read together to the upstream
/// together; with more, each at once (BENCHMARKS.md measures both). In a container, one CPU is
/// what the container is given, not the machine's cores: a CPU quota of one core or less
/// (`--cpus`, a Kubernetes CPU limit) or a cpuset of one CPU.
#[test]
fn the_gate_counts_the_cpus_its_container_is_given() {
    let _serial = serial_blocking();
    let image = vitals_image();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test needs two CPUs to tell the cases apart: {cpus}"
    );
    let config = "VITALS_CONFIG_TOML=[gate]\nlisten = \"127.0.0.1:8081\"\nupstream = \"http://127.0.0.1:9\"\nmax_concurrent = 2\n";
    for (limit, one) in [
        ("--cpus=1", true),
        ("--cpus=0.5", true),
        ("--cpuset-cpus=0", true),
        ("--cpus=2", false),
    ] {
        // vitals serves until SIGTERM: timeout's, passed on to it by podman.
        let out = std::process::Command::new("timeout")
            .args([
                "4",
                "podman",
                "run",
                "--rm",
                limit,
                "-e",
                "RUST_LOG=debug",
                "-e",
                config,
            ])
            .args([image, "serve"])
            .output()
            .expect("timeout runs podman");
        let log = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        let said = if one {
            "gate: one CPU: requests read together go to the upstream together"
        } else {
            "gate: more than one CPU: each request goes to the upstream at once"
        };
        assert!(log.contains(said), "podman run {limit}: {log}");
    }
}
