# vitals recipes; CI runs `scripts/test-all`, which is `just test`.

# Run the sidecar (no config: no dependencies, ready at once on 0.0.0.0:8080).
run *ARGS:
    cargo run --release -p vitals-cli -- serve {{ARGS}}

fmt:
    cargo fmt --all

lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Install test services and run the whole suite (the same command CI runs).
test:
    scripts/test-all

# Render examples/*/health.toml into examples/*/rendered/ (commit the result).
render-examples:
    scripts/render-examples

# Fail on stale example renders, then validate them with the platforms' own schemas.
check-examples:
    scripts/check-examples

# Load benchmark of the probe routes against a bare hyper server; results go in BENCHMARKS.md.
bench:
    scripts/bench-probes

# Wall time of `vitals check` against `curl -fsS` (hyperfine), and the binary's size.
bench-check:
    scripts/bench-check
