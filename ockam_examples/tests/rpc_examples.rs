//! Seed 004 with typed streams, as processes: the bidirectional
//! MessageService server and client exchange a message a second each way.

mod common;

use common::{example, Running};

#[test]
fn the_bidi_stream_examples_exchange_messages_both_ways() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let server = Running::start(example("17-bidi-stream-server").arg(&addr));
    server.wait_for("MessageService on");
    let mut client = Running::start(example("17-bidi-stream-client").arg(&addr).arg("3"));
    let got = client.wait_for("Received message:");
    assert!(got.contains("Hello, world!"), "{got}");
    client.wait_for("Done after 3 messages");
    assert!(client.child.wait().unwrap().success());
    // The server read the client's requests, and saw its clean end.
    server.wait_for("Received request:");
    server.wait_for("The client closed its stream");
}
