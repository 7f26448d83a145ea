//! `#[ockam::node]`, `#[ockam::worker]` and `#[async_worker]`: the right
//! shapes compile, wrong shapes get a clear compile error.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

#[test]
fn macro_shapes() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
