//! The attribute macros through a renamed dependency: this crate's
//! dev-dependencies hold the facade only as `my_ockam` (and no node crate,
//! which the expansion would prefer), so a case passes only if the expansion
//! finds that name (proc-macro-crate) instead of assuming `::ockam`. Here
//! because the core crate is the one crate that does not depend on the node
//! crate. trybuild builds and runs each case.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

#[test]
fn macros_through_a_renamed_facade() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
}
