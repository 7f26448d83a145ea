//! The attribute macros used through this crate alone, without the `ockam`
//! facade: `#[ockam_node::node]` and `#[ockam_node::worker]` expand to paths
//! of this crate (the facade's own cases are in `ockam/tests/ui`, a renamed
//! facade's in `ockam_core/tests/ui`). trybuild builds and runs
//! each case as a program of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

#[test]
fn macros_without_the_facade() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
}
