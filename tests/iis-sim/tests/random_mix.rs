//! The seeded random mix against both IIS bindings, one after the other in
//! a process of its own: the memory it reports is theirs alone.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iis_sim::{Faults, Profile};
use kallithea_conformance::client::Client;
use kallithea_core::Body;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_requests_under_random_faults_each_end_once_on_both_hosts() {
    ten_thousand_random_requests_under_random_faults_each_end_once("conformance-isapi").await;
    ten_thousand_random_requests_under_random_faults_each_end_once("conformance-native").await;
}

/// The seeded random mix: 10 000 requests of random kinds (small and large
/// uploads, downloads, panics, 204s, HTTP/1.0) over 16 connections, with
/// completions inline or deferred at random and, per request, a random
/// fault (the client leaving mid-upload or mid-download, slow reads, the
/// body ended early) or none. Every request is bounded in time (no hang),
/// every session ends exactly once without a contract violation, and the
/// process's memory after the run is what it was after a warm-up.
async fn ten_thousand_random_requests_under_random_faults_each_end_once(package: &str) {
    const SEED: u64 = 0x00c0_ffee;
    const TOTAL: usize = 10_000;
    const WARM_UP: usize = 1_000;
    let dll = install(package, "random-mix", "worker_threads = 2\n");
    let sim = Arc::new(
        start(&dll, |c| {
            Profile::Mixed(SEED).apply(c);
        })
        .await,
    );
    sim.set_faults(Faults {
        random: Some(SEED),
        ..Faults::default()
    });
    let next = Arc::new(AtomicUsize::new(0));
    let rss = |what: &str| {
        let rss = kallithea_conformance::resident_memory_of("self").unwrap_or(0);
        report(format_args!(
            "random mix ({package}): resident memory {what}: {:.1} MiB",
            rss as f64 / 1048576.0
        ));
        rss
    };
    let run = |until: usize| {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (sim, next) = (Arc::clone(&sim), Arc::clone(&next));
            tasks.spawn(async move {
                let (mut answered, mut hung) = (0usize, Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= until {
                        return (answered, hung);
                    }
                    let draw = mix(SEED, i as u64);
                    // A fresh client now and then: a connection a fault
                    // closed must not make the next request test nothing.
                    let client = Client::new(sim.local_addr());
                    let req = match draw % 10 {
                        0..=2 => client.request("GET", "/echo").body(Body::empty()),
                        3..=5 => client
                            .request("POST", "/echo")
                            .body(Body::from(vec![b'm'; (draw >> 16) as usize % 200_000])),
                        6 | 7 => client
                            .request(
                                "GET",
                                &format!("/download?bytes={}", (draw >> 16) % 300_000),
                            )
                            .body(Body::empty()),
                        8 if draw % 100 == 8 => client.request("GET", "/panic").body(Body::empty()),
                        8 => client.request("GET", "/status/204").body(Body::empty()),
                        _ => client
                            .request("GET", "/echo")
                            .version(http::Version::HTTP_10)
                            .body(Body::empty()),
                    }
                    .unwrap();
                    match tokio::time::timeout(Duration::from_secs(30), client.fetch(req)).await {
                        Ok(Ok(_)) => answered += 1,
                        // A fault may cut the exchange: the client sees an
                        // error, the session still ends (checked below).
                        Ok(Err(_)) => {}
                        Err(_) => hung.push(i),
                    }
                }
            });
        }
        tasks
    };
    let mut answered = 0;
    let mut hung = Vec::new();
    let mut memory = Vec::new();
    for (from, until, label) in [
        (0, WARM_UP, "after the warm-up"),
        (WARM_UP, TOTAL, "after the run"),
    ] {
        next.store(from, Ordering::Relaxed);
        let mut tasks = run(until);
        while let Some(r) = tasks.join_next().await {
            let (a, h) = r.unwrap();
            answered += a;
            hung.extend(h);
        }
        settled(&sim, sim.stats().requests).await;
        memory.push(rss(label));
    }
    assert!(hung.is_empty(), "requests that hung: {hung:?}");
    // Bodies of up to 300 KB: a leak of one per request would be gigabytes.
    assert!(
        memory[1] < memory[0] + 16 * 1024 * 1024,
        "memory grew from {} to {} bytes over {} requests",
        memory[0],
        memory[1],
        TOTAL - WARM_UP
    );
    let stats = sim.stats();
    report(format_args!(
        "random mix ({package}): {TOTAL} requests, {answered} answered, {} handed to the DLL, {} sessions ended",
        stats.requests, stats.sessions_ended
    ));
    assert_eq!(stats.requests, stats.sessions_ended, "{stats:?}");
    // A client that leaves during the read-ahead never reaches the DLL.
    assert!(stats.requests >= TOTAL as u64 * 9 / 10, "{stats:?}");
    assert!(
        answered >= TOTAL / 2,
        "most requests are answered: {answered}"
    );
    let sim = Arc::try_unwrap(sim).ok().unwrap();
    finish(sim).await;
}

/// The `i`th draw of the mix from `seed`.
fn mix(seed: u64, i: u64) -> u64 {
    iis_sim::splitmix(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A line for the log, past the test harness's capture: the figures are
/// what the run is for.
fn report(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
