//! A hub restarted after `kill -9` uses no more memory than one restarted
//! after a clean stop, on the same data (issue 18: the 30-minute soak
//! found 76.0 MiB against 9.9 MiB, because redb's repair of an uncleanly
//! closed file read the whole file through the page cache, and the cache
//! kept it).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{free_address, rss_mib, HubProcess};
use ockam_hub::store::{DurableStore, StreamStore, Ticket};
use std::time::Duration;

/// Data in the store: well past the store's 64 MiB page cache.
const MESSAGES: usize = 100_000;
const SIZE: usize = 1024;

/// The hub's resident memory once it has settled, idle, in MiB.
fn settled_rss(hub: &HubProcess) -> f64 {
    std::thread::sleep(Duration::from_secs(2));
    rss_mib(hub.child.id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restarted_after_kill_9_uses_no_more_memory_than_after_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = DurableStore::open(dir.path()).unwrap();
        for chunk in 0..MESSAGES / 1000 {
            let pending: Vec<_> = (0..1000)
                .map(|i| {
                    let data = vec![(chunk + i) as u8; SIZE];
                    store.submit_push(&format!("s{}", i % 10), data, Ticket::alone())
                })
                .collect();
            for p in pending {
                p.await.unwrap();
            }
        }
    }
    let data = dir.path().to_str().unwrap().to_string();
    let addr = free_address();
    let args = ["--data-dir", data.as_str()];

    // Opened, then killed: the file is left marked for repair.
    let mut hub = HubProcess::start(&addr, &args);
    hub.kill9();
    let mut hub = HubProcess::start(&addr, &args);
    hub.wait_for_log("repaired", Duration::from_secs(30));
    let after_kill = settled_rss(&hub);
    hub.terminate();

    let mut hub = HubProcess::start(&addr, &args);
    let after_clean_stop = settled_rss(&hub);
    hub.terminate();

    eprintln!(
        "hub RSS on {} MiB of data: after kill -9 {after_kill:.1} MiB, after a clean stop {after_clean_stop:.1} MiB",
        MESSAGES * SIZE / (1024 * 1024)
    );
    assert!(
        after_kill <= after_clean_stop * 1.2 + 1.0,
        "a hub restarted after kill -9 holds {after_kill:.1} MiB, one restarted after a clean stop {after_clean_stop:.1} MiB"
    );
}
