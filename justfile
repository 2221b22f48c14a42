# Task runner; CI runs `cluster/test` (the same stages as `just check`).

# fmt check, clippy and every test, with the services the tests need
check:
    cluster/test

# every benchmark with its gate and one summary table (slow; not in CI)
bench:
    cluster/bench

# the zero-set-up local relay
dev:
    cargo run --release -- dev

# validate a config file
check-config FILE:
    cargo run -- check-config --config {{FILE}}

# the deterministic simulation tests
sim:
    cargo test -p aegis-relay-simulation
