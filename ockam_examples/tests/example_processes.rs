//! The guides' examples as a user runs them: separate processes, checked
//! by their output and exit status.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{example, run, Running};

#[test]
fn the_local_guide_examples_run_and_exit_cleanly() {
    let out = run(&mut example("01-node"));
    assert!(out.status.success(), "{out:?}");

    for (name, expect) in [
        ("02-worker", "App Received: Hello Ockam!"),
        ("03-routing", "App Received: Hello Ockam!"),
        (
            "03-routing-many-hops",
            "Return route: 0#h1 => 0#h2 => 0#h3 => 0#echoer",
        ),
    ] {
        let out = run(&mut example(name));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {out:?}");
        assert!(stdout.contains(expect), "{name} printed:\n{stdout}");
    }
}

#[test]
fn a_node_whose_main_returns_ok_keeps_running_until_interrupted() {
    let mut node = Running::start(&mut example("01-node-stays-up"));
    node.wait_for("Node is up");

    // main has returned; the process must still be there.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        node.child.try_wait().expect("wait").is_none(),
        "the node exited after main returned Ok(())"
    );

    // SIGINT stops it gracefully, with a success status.
    let status = node.interrupt();
    assert!(status.success(), "exit status after SIGINT: {status:?}");
}
