//! vitals' rendered platform files, run in real containers: see `tests/`. The crate itself
//! holds only the stand-in agent (`src/bin/agent-standin.rs`).
