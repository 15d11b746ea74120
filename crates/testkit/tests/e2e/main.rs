//! The end-to-end tests: the four service binaries (or the common consumer loop) against the real
//! servers, one test binary for the whole workspace's cross-service behaviour, so the dependency
//! tree is linked once (zero-to-production's tests/api/main.rs).
//!
//! The `faults` tests, all named `fault_*`, stop or restart shared servers: scripts/test.sh and
//! .config/nextest.toml run them one at a time, apart from the rest.

mod consumer;
mod faults;
mod hostile;
mod manifests;
mod observe;
mod pipeline;
mod schemathesis;
mod shutdown;
mod web;
