//! Issue 17: the hub's Prometheus metrics, scraped over HTTP by a real
//! client (Python's urllib) from a real hub process, move with what the
//! hub does.

mod common;

use common::{free_address, open_stream, request, HubProcess};
use ockam_core::{route, TCP};
use ockam_node::start_node;
use ockam_stream_client::protocol::{
    IndexRequest, ProtocolPayload, PushRequest, STREAM_INDEX, STREAM_PUSH,
};
use ockam_transport_tcp::TcpTransport;
use serde_bare::Uint;
use std::time::{Duration, Instant};

/// The metrics page at `addr`, fetched with Python's HTTP client.
fn scrape(addr: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())",
            &format!("http://{addr}/metrics"),
        ])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "scraping {addr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of the sample of `name` whose labels include every one of
/// `labels` (`key="value"`), in Prometheus text format.
fn sample(page: &str, name: &str, labels: &[&str]) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name && labels.iter().all(|want| rest.contains(want))
        })
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn the_metrics_page_counts_what_the_hub_does() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_address();
    let metrics = free_address();
    let hub = HubProcess::start(
        &addr,
        &[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--metrics-listen",
            &metrics,
        ],
    );
    hub.wait_for_log("serving Prometheus metrics", Duration::from_secs(10));
    hub.wait_for_log("hub up", Duration::from_secs(10));
    let before = scrape(&metrics);
    assert_eq!(
        sample(
            &before,
            "ockam_hub_pushed_messages_total",
            &[r#"service="stream""#]
        ),
        Some(0.0),
        "{before}"
    );

    let (mut ctx, mut executor) = start_node();
    let (a, m) = (addr.clone(), metrics.clone());
    executor
        .execute(async move {
            let (addr, metrics) = (a, m);
            let _tcp = TcpTransport::create(&ctx).await?;
            let worker =
                open_stream(&mut ctx, route![(TCP, addr.as_str()), "stream"], "m-1").await?;
            for i in 0..10u64 {
                let req = PushRequest {
                    request_id: Uint(i),
                    data: vec![7; 100],
                };
                request(&mut ctx, worker.clone(), STREAM_PUSH, &req).await?;
            }
            let save = IndexRequest::Save {
                client_id: "c".into(),
                stream_name: "m-1".into(),
                index: Uint(4),
            };
            let index = route![(TCP, addr.as_str()), "stream_index"];
            ctx.send(index.clone(), ProtocolPayload::new(STREAM_INDEX, &save)?)
                .await?;
            // A request the hub refuses: a name it does not take.
            let bad = IndexRequest::Get {
                client_id: "no spaces".into(),
                stream_name: "m-1".into(),
            };
            request(&mut ctx, index, STREAM_INDEX, &bad).await?;
            // While this node's connection is open, the hub counts it.
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let m = metrics.clone();
                let page = tokio::task::spawn_blocking(move || scrape(&m))
                    .await
                    .unwrap();
                if sample(&page, "ockam_hub_connections", &[]) == Some(1.0) {
                    break;
                }
                assert!(Instant::now() < deadline, "connections after 15 s:\n{page}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            ctx.stop().await
        })
        .unwrap();

    // Gauges are sampled every second.
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let page = scrape(&metrics);
        let lag = sample(
            &page,
            "ockam_hub_consumer_lag_messages",
            &[r#"client="c""#, r#"stream="m-1""#],
        );
        if lag == Some(6.0) {
            break page;
        }
        assert!(Instant::now() < deadline, "lag {lag:?} after 15 s:\n{page}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let s = |name: &str, labels: &[&str]| {
        sample(&page, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{page}"))
    };
    let stream = r#"service="stream""#;
    assert_eq!(s("ockam_hub_pushed_messages_total", &[stream]), 10.0);
    assert_eq!(
        s(
            "ockam_hub_requests_total",
            &[stream, r#"protocol="stream_push""#]
        ),
        10.0
    );
    assert_eq!(
        s(
            "ockam_hub_requests_total",
            &[stream, r#"protocol="stream_create""#]
        ),
        1.0
    );
    assert_eq!(
        s(
            "ockam_hub_requests_total",
            &[stream, r#"protocol="stream_index""#]
        ),
        2.0
    );
    assert_eq!(
        s("ockam_hub_refusals_total", &[r#"protocol="stream_index""#]),
        1.0
    );
    assert!(
        s("ockam_hub_store_commit_seconds_count", &[]) >= 2.0,
        "a commit for the pushes and one for the index"
    );
    assert_eq!(s("ockam_hub_streams", &[stream]), 1.0);
    assert_eq!(s("ockam_hub_stored_messages", &[stream]), 10.0);
    assert!(s("ockam_hub_stored_bytes", &[]) > 0.0);
    assert!(s("ockam_hub_workers", &[]) >= 4.0, "services at least");
    drop(hub);
}
