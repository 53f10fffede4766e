//! The in-process hosts' own guarantees, through the IIS simulator, for the
//! ISAPI extension (host-isapi) and the native module (host-iis-native)
//! alike: start-up failures and retries, recycling under load, injected
//! faults, a tiny IIS thread pool, termination with requests in flight, and
//! keep-alive. Each test runs once per host (`isapi::…`, `native::…`); the
//! ones every host must pass whatever it varies in (completions, variables,
//! support functions, read-ahead) run under every simulator profile
//! ([`Profile::ALL`]), with a table of profile × case
//! (`…::host_cases_under_every_profile`).
//!
//! Longer than ~600 lines: each behaviour both IIS bindings must show is
//! written once here and run for both; split, the two lists would drift.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use iis_sim::{Completions, Faults, Profile};
use kallithea_conformance::client::Client;
use kallithea_conformance::Outcome;
use kallithea_core::Body;
use support::*;

/// Each test, once per host.
macro_rules! for_both_hosts {
    ($($name:ident),* $(,)?) => {
        mod isapi {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("conformance-isapi").await;
                }
            )*
        }
        mod native {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("conformance-native").await;
                }
            )*
        }
    };
}

for_both_hosts!(
    a_failed_start_answers_with_the_reason_and_recovers_without_a_recycle,
    a_missing_or_invalid_configuration_is_named_on_the_error_page,
    a_short_last_piece_is_written_synchronously_and_the_rest_streams,
    with_the_first_step_off_iis_threads_only_hand_requests_over,
    host_variables_are_iis_own_and_read_only_while_the_request_runs,
    the_connection_is_mapped_with_few_calls_into_iis,
    every_optional_variable_may_be_absent,
    host_cases_under_every_profile,
    a_client_that_sends_its_headers_too_slowly_is_cut_off,
);

/// One case of the profile matrix.
type HostCase = fn(&'static str) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

macro_rules! host_cases {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |p| Box::pin($name(p)))),*]
    };
}

/// The cases every host profile must pass.
const PROFILE_CASES: &[(&str, HostCase)] = host_cases!(
    two_thousand_requests_across_a_recycle_all_succeed,
    injected_faults_end_every_session_cleanly,
    one_iis_thread_is_enough_because_the_host_never_blocks_it,
    termination_cancels_what_outlives_the_drain_time_and_ends_every_session,
    keep_alive_follows_the_request_and_the_response,
    an_http2_body_without_a_declared_length_arrives_whole,
    a_malformed_body_is_answered_and_never_taken_for_success,
    a_body_the_host_ends_early_is_a_body_error_and_still_answered,
    a_url_header_cannot_choose_the_path_the_app_runs,
    an_end_asked_for_inside_an_inline_completion_never_hangs,
);

/// Every case of [`PROFILE_CASES`] under every profile (each case in its own
/// task, so that one failing does not hide the rest), then the table.
async fn host_cases_under_every_profile(package: &'static str) {
    let mut columns = Vec::new();
    let mut failed = Vec::new();
    for profile in Profile::ALL {
        let mut outcomes = Vec::new();
        for (name, case) in PROFILE_CASES {
            let run = tokio::spawn(PROFILE.scope(profile, case(package)));
            let outcome = match run.await {
                Ok(()) => Outcome::Pass,
                Err(e) => {
                    let why = match e.try_into_panic() {
                        Ok(p) => kallithea_core::panic_message(p.as_ref()).to_owned(),
                        Err(e) => e.to_string(),
                    };
                    failed.push(format!("{name} [{}]", profile.name()));
                    Outcome::Fail(why.lines().next().unwrap_or_default().to_owned())
                }
            };
            outcomes.push(((*name).to_owned(), outcome));
        }
        columns.push((profile.name().to_owned(), outcomes));
    }
    kallithea_conformance::print_matrix(
        &format!("host cases × simulator profile — {package}"),
        &columns,
    );
    assert!(failed.is_empty(), "failed (table above): {failed:#?}");
}

async fn a_failed_start_answers_with_the_reason_and_recovers_without_a_recycle(package: &str) {
    let dll = install(
        package,
        "startup",
        "[app]\nfail_start = \"database unreachable at db.example:5432\"\n",
    );
    let sim = start(&dll, |_| {}).await;
    let client = Client::new(sim.local_addr());

    let r = client.get("/anything").await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key(http::header::RETRY_AFTER));
    assert!(
        r.text().contains("database unreachable at db.example:5432"),
        "a local client sees the reason: {}",
        r.text()
    );
    let log = std::fs::read_to_string(dll.with_extension("log")).unwrap();
    assert!(
        log.contains("database unreachable at db.example:5432"),
        "{log}"
    );

    // The administrator fixes the configuration; the next attempt (after the
    // one-second back-off) starts the app, with no recycle.
    std::fs::write(dll.with_extension("toml"), "[app]\n").unwrap();
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = client.get("/echo").await.unwrap().status;
        if status == StatusCode::OK {
            break;
        }
    }
    assert_eq!(status, StatusCode::OK, "the app started on a retry");
    let stats = finish(sim).await;
    assert_eq!(stats.loads, 1, "no recycle was needed");
}

async fn a_missing_or_invalid_configuration_is_named_on_the_error_page(package: &str) {
    let dll = install(package, "config", "worker_threads = 0\n");
    let sim = start(&dll, |_| {}).await;
    let r = Client::new(sim.local_addr()).get("/").await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().contains("worker_threads"), "{}", r.text());
    finish(sim).await;

    std::fs::remove_file(dll.with_extension("toml")).unwrap();
    let sim = start(&dll, |_| {}).await;
    let r = Client::new(sim.local_addr()).get("/").await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().contains("app.toml"), "{}", r.text());
    finish(sim).await;
}

async fn two_thousand_requests_across_a_recycle_all_succeed(package: &str) {
    let dll = install(package, "recycle", "worker_threads = 2\n");
    let sim = Arc::new(start(&dll, |_| {}).await);
    let client = Client::new(sim.local_addr());
    let total = 2000;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, next) = (client.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            let mut failures = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return failures;
                }
                let path = format!("/echo?n={i}");
                let req = client
                    .request("POST", &path)
                    .body(Body::from(format!("body {i}")))
                    .unwrap();
                match client.fetch(req).await {
                    Ok(r)
                        if r.status == StatusCode::OK
                            && r.text().contains(&format!("query: n={i}\n"))
                            && r.text().contains(&format!(
                                "body_bytes: {}\n",
                                format!("body {i}").len()
                            )) => {}
                    Ok(r) => failures.push(format!("{i}: {} {}", r.status, r.text())),
                    Err(e) => failures.push(format!("{i}: {e}")),
                }
            }
        });
    }
    // Recycle while the load runs.
    for _ in 0..200 {
        if next.load(Ordering::Relaxed) >= 400 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sim.recycle().await.unwrap();
    let mut failures = Vec::new();
    while let Some(r) = tasks.join_next().await {
        failures.extend(r.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let sim = Arc::try_unwrap(sim).ok().unwrap();
    let stats = finish(sim).await;
    assert_eq!((stats.loads, stats.terminations), (2, 2), "{stats:?}");
    assert_eq!(stats.requests, total as u64);
    assert_eq!(stats.sessions_ended, total as u64);
}

async fn injected_faults_end_every_session_cleanly(package: &str) {
    let dll = install(package, "faults", "worker_threads = 2\n");
    let sim = start(&dll, |_| {}).await;
    let client = Client::new(sim.local_addr());

    // The client vanishes in the middle of an upload. What the real client
    // sees after that is the simulator's business (it may be an error or a
    // cut response), never the whole echo; what the host must do is end the
    // session exactly once, with no protocol violation.
    sim.set_faults(Faults {
        abort_body_after: Some(200_000),
        ..Faults::default()
    });
    let req = client
        .request("POST", "/echo")
        .body(Body::from(vec![b'u'; 1 << 20]))
        .unwrap();
    let r = Client::new(sim.local_addr()).fetch(req).await;
    let whole = matches!(&r, Ok(r) if r.status == StatusCode::OK && r.text().contains("body_bytes: 1048576\n"));
    assert!(!whole, "a cut upload cannot echo whole: {r:?}");
    settled(&sim, 1).await;

    // Writes start failing in the middle of a download: the client cannot
    // receive the whole body, and the session ends once.
    sim.set_faults(Faults {
        fail_writes_after: Some(100_000),
        ..Faults::default()
    });
    // A fresh connection: the cut upload may have left the last one closed,
    // and a request that never reaches the server would test nothing.
    let r = Client::new(sim.local_addr())
        .get("/download?bytes=1048576")
        .await;
    let whole = matches!(&r, Ok(r) if r.body.len() >= 1 << 20);
    assert!(!whole, "a failed write cannot deliver the whole body");
    settled(&sim, 2).await;

    // Slow reads still deliver the whole body, in order.
    sim.set_faults(Faults {
        slow_reads: Some(Duration::from_millis(5)),
        ..Faults::default()
    });
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let checksum = |text: String| {
        text.lines()
            .find(|l| l.starts_with("body_checksum"))
            .map(str::to_owned)
    };
    let req = client
        .request("PUT", "/echo")
        .body(Body::from(body.clone()))
        .unwrap();
    let slow = client.fetch(req).await.unwrap();
    assert_eq!(slow.status, StatusCode::OK);
    assert!(
        slow.text().contains("body_bytes: 300000\n"),
        "{}",
        slow.text()
    );

    sim.set_faults(Faults::default());
    let req = client
        .request("PUT", "/echo")
        .body(Body::from(body))
        .unwrap();
    let fast = client.fetch(req).await.unwrap();
    assert_eq!(
        checksum(slow.text()),
        checksum(fast.text()),
        "the same bytes either way"
    );
    assert_eq!(client.get("/echo").await.unwrap().status, StatusCode::OK);
    for _ in 0..100 {
        if sim.stats().in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sim.stats().in_flight, 0, "every faulted session ended");
    finish(sim).await;
}

async fn one_iis_thread_is_enough_because_the_host_never_blocks_it(package: &str) {
    let dll = install(package, "pool", "worker_threads = 2\n");
    let sim = start(&dll, |c| c.iis_threads = 1).await;
    let client = Client::new(sim.local_addr());
    let n = 40;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let client = client.clone();
        tasks.spawn(async move {
            client
                .get(&format!("/barrier?id=pool&n={n}"))
                .await
                .map(|r| r.status)
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        if r.unwrap() == Ok(StatusCode::OK) {
            ok += 1;
        }
    }
    assert_eq!(
        ok, n,
        "all {n} requests were in the app at once, with one IIS thread"
    );
    finish(sim).await;
}

async fn termination_cancels_what_outlives_the_drain_time_and_ends_every_session(package: &str) {
    let dll = install(package, "terminate", "drain_timeout = \"300ms\"\n");
    let sim = start(&dll, |c| c.shutdown_time_limit = Duration::from_millis(100)).await;
    let client = Client::new(sim.local_addr());
    let hanging = {
        let client = client.clone();
        tokio::spawn(async move { client.get("/hang?id=t1").await })
    };
    for _ in 0..100 {
        if client.get("/hang-status?id=t1").await.unwrap().text() == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The status requests end just after their responses reach the client.
    for _ in 0..100 {
        if sim.stats().in_flight == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sim.stats().in_flight, 1, "only the hanging request is left");
    let stats = finish(sim).await;
    assert_eq!(stats.terminations, 1);
    hanging.abort();
}

async fn keep_alive_follows_the_request_and_the_response(package: &str) {
    use kallithea_conformance::client::RawConn;
    let dll = install(package, "keepalive", "worker_threads = 2\n");
    let sim = start(&dll, |_| {}).await;

    // HTTP/1.1: two requests on one connection.
    let mut conn = RawConn::connect(sim.local_addr()).await.unwrap();
    for _ in 0..2 {
        conn.send(b"GET /echo HTTP/1.1\r\nHost: k\r\n\r\n")
            .await
            .unwrap();
        let r = conn.read_response(false).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.header_values("connection").is_empty(), "{:?}", r.headers);
    }

    // HTTP/1.1 asking to close, and HTTP/1.0 without keep-alive: the
    // extension tells IIS not to keep the connection.
    for request in [
        &b"GET /echo HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n"[..],
        &b"GET /echo HTTP/1.0\r\nHost: k\r\n\r\n"[..],
    ] {
        let mut conn = RawConn::connect(sim.local_addr()).await.unwrap();
        conn.send(request).await.unwrap();
        let r = conn.read_response(false).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header_values("connection"),
            [&b"close"[..]],
            "{:?}",
            r.headers
        );
    }

    // A 204 has no body written and keeps the connection for the next
    // request.
    let mut conn = RawConn::connect(sim.local_addr()).await.unwrap();
    conn.send(b"GET /status/204 HTTP/1.1\r\nHost: k\r\n\r\n")
        .await
        .unwrap();
    let r = conn.read_response(false).await.unwrap();
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    conn.send(b"GET /echo HTTP/1.1\r\nHost: k\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(conn.read_response(false).await.unwrap().status, 200);
    finish(sim).await;
}

/// A host may lack any of the variables the mapping can do without (the
/// table in `host_iis::mapping`): the request still runs, with the
/// fallback. The raw URL absent, the decoded `URL` (or `UNICODE_URL`) and
/// `QUERY_STRING` give the same target, encoded again.
async fn every_optional_variable_may_be_absent(package: &str) {
    let dll = install(package, "absent", "worker_threads = 2\n");
    let optional = [
        "HTTP_URL",
        "UNICODE_URL",
        "LOCAL_ADDR",
        "SERVER_PORT",
        "REMOTE_PORT",
        "HTTPS",
        "SERVER_PROTOCOL",
        "APPL_MD_PATH",
        "INSTANCE_ID",
        "APPL_PHYSICAL_PATH",
        "UNICODE_REMOTE_USER",
    ];
    let sets: Vec<Vec<String>> = optional.iter().map(|v| vec![(*v).to_owned()]).collect();
    for absent in sets {
        let label = absent.join(",");
        let sim = start(&dll, |c| c.absent_variables = absent).await;
        let r = Client::new(sim.local_addr())
            .get("/echo/caf%C3%A9%20x?q=1%2F2&r=%20")
            .await
            .unwrap();
        let text = r.text();
        assert_eq!(r.status, StatusCode::OK, "without {label}: {text}");
        assert!(
            // The echo app writes `%` as `%25`.
            text.contains("path: /echo/caf%25C3%25A9%2520x\n"),
            "without {label}: {text}"
        );
        assert!(
            text.contains("query: q=1%252F2&r=%2520\n"),
            "without {label}: {text}"
        );
        finish(sim).await;
    }

    // All of them absent at once: an ASCII path still arrives whole; a
    // non-ASCII one only in the host's code page (no raw or UNICODE_ form),
    // which is refused rather than guessed.
    let all: Vec<String> = optional.iter().map(|v| (*v).to_owned()).collect();
    let sim = start(&dll, |c| c.absent_variables = all).await;
    let client = Client::new(sim.local_addr());
    let r = client.get("/echo/a%20b?q=1").await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("path: /echo/a%2520b\n"), "{}", r.text());
    let r = client.get("/echo/caf%C3%A9").await.unwrap();
    if package.contains("native") {
        // The native module takes the path from HTTP_REQUEST, not from
        // server variables.
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    } else {
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
        assert!(r.text().contains("UNICODE_URL"), "{}", r.text());
    }
    finish(sim).await;
}

/// A host that turns every request header into `HTTP_<NAME>` lets a
/// client's `URL:` header stand in for `HTTP_URL`: the ISAPI extension
/// checks the path against the host's own decoded URL and refuses the
/// request; the native module reads the path from `HTTP_REQUEST` anyway.
async fn a_url_header_cannot_choose_the_path_the_app_runs(package: &str) {
    use kallithea_conformance::client::RawConn;
    let dll = install(package, "urlheader", "worker_threads = 2\n");
    for derived in [false, true] {
        let sim = start(&dll, |c| c.header_derived_variables = derived).await;
        let mut conn = RawConn::connect(sim.local_addr()).await.unwrap();
        conn.send(b"GET /echo/public HTTP/1.1\r\nHost: k\r\nURL: /echo/admin?x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let r = conn.read_response(false).await.unwrap();
        let text = String::from_utf8_lossy(&r.body).into_owned();
        if derived && !package.contains("native") {
            assert_eq!(r.status, 400, "{text}");
            assert!(text.contains("URL header"), "{text}");
        } else {
            assert_eq!(r.status, 200, "derived {derived}: {text}");
            assert!(text.contains("path: /echo/public\n"), "{text}");
        }
        // Without the header, nothing to check: served.
        let r = Client::new(sim.local_addr())
            .get("/echo/public")
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        finish(sim).await;
    }
}

/// A body that fails (here a malformed chunk) reaches the app as a body
/// error and the client still gets an answer — the app's, or the server's
/// own 400 — never an empty 200 that passes for success.
async fn a_malformed_body_is_answered_and_never_taken_for_success(package: &str) {
    use kallithea_conformance::client::RawConn;
    let dll = install(package, "badbody", "worker_threads = 2\n");
    let sim = start(&dll, |_| {}).await;
    let mut conn = RawConn::connect(sim.local_addr()).await.unwrap();
    conn.send(b"POST /echo HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n")
        .await
        .unwrap();
    let r = conn.read_response(false).await.unwrap();
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let app_saw_it = r.status == 200 && text.contains("body_error");
    assert!(
        r.status == 400 || app_saw_it,
        "status {} with {text:?}",
        r.status
    );
    settled(&sim, sim.stats().requests).await;
    finish(sim).await;
}

async fn an_http2_body_without_a_declared_length_arrives_whole(package: &str) {
    let dll = install(package, "h2-body", "worker_threads = 2\n");
    let sim = start(&dll, |_| {}).await;
    let client = Client::new(sim.local_addr());
    // HTTP/2 needs neither Content-Length nor chunked encoding: IIS cannot
    // tell the body's length in advance.
    let (mut tx, body) = Body::channel(1);
    let feed = tokio::spawn(async move {
        for i in 0..3u8 {
            tx.send(bytes::Bytes::from(vec![b'a' + i; 10_000]))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let req = client.request("POST", "/echo").body(body).unwrap();
    let resp = client.send_h2(req).await.unwrap();
    let full = kallithea_conformance::client::read_full(resp)
        .await
        .unwrap();
    feed.await.unwrap();
    assert_eq!(full.status, StatusCode::OK);
    assert!(
        full.text().contains("body_bytes: 30000\n"),
        "{}",
        full.text()
    );
    finish(sim).await;
}

/// A short last piece of the body goes out with a synchronous write (no
/// completion round trip); longer bodies stream with asynchronous writes,
/// one at a time, and arrive whole. A request that needs no wait ends
/// inside the call IIS made (its return value, no `DONE_WITH_SESSION`); one
/// that writes asynchronously ends later, through the completion path.
async fn a_short_last_piece_is_written_synchronously_and_the_rest_streams(package: &str) {
    use kallithea_conformance::client::RawConn;
    let dll = install(package, "lastwrite", "worker_threads = 2\n");
    let sim = start(&dll, |_| {}).await;
    let mut conn = RawConn::connect(sim.local_addr()).await.unwrap();

    let before = sim.stats();
    conn.send(b"GET /echo HTTP/1.1\r\nHost: w\r\n\r\n")
        .await
        .unwrap();
    let r = conn.read_response(false).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.body.is_empty());
    let after = sim.stats();
    assert_eq!(
        (
            after.sync_writes - before.sync_writes,
            after.async_writes - before.async_writes
        ),
        (1, 0),
        "{after:?}"
    );
    assert_eq!(after.ended_in_call - before.ended_in_call, 1, "{after:?}");
    assert_eq!(after.sessions_ended - before.sessions_ended, 1, "{after:?}");
    conn.send(b"GET /thread HTTP/1.1\r\nHost: w\r\n\r\n")
        .await
        .unwrap();
    let r = conn.read_response(false).await.unwrap();
    assert_ne!(
        r.body, b"kallithea-isapi\n",
        "the app ran on the IIS thread"
    );

    let total = 3 * 64 * 1024 + 1000;
    let before = sim.stats();
    conn.send(format!("GET /download?bytes={total} HTTP/1.1\r\nHost: w\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let r = conn.read_response(false).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), total);
    // The session ends once the last write's completion is back, which may
    // be just after the client has the last byte.
    for _ in 0..500 {
        if sim.stats().in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = sim.stats();
    assert!(
        after.async_writes - before.async_writes >= 3,
        "64 KiB pieces are written asynchronously: {after:?}"
    );
    assert!(after.sync_writes - before.sync_writes <= 1, "{after:?}");
    assert_eq!(after.ended_in_call, before.ended_in_call, "{after:?}");
    assert_eq!(after.sessions_ended - before.sessions_ended, 1, "{after:?}");
    finish(sim).await;
}

/// `first_step_on_iis_thread = false`: IIS threads only hand requests over;
/// the app runs on the runtime's threads. (A request may still end before
/// the call returns, when the runtime is quick: then the call returns its
/// final status, and no `DONE_WITH_SESSION` is sent.)
async fn with_the_first_step_off_iis_threads_only_hand_requests_over(package: &str) {
    use kallithea_conformance::client::RawConn;
    let dll = install(
        package,
        "handover",
        "worker_threads = 2\nfirst_step_on_iis_thread = false\n",
    );
    let sim = start(&dll, |_| {}).await;
    let mut conn = RawConn::connect(sim.local_addr()).await.unwrap();
    for _ in 0..3 {
        conn.send(b"GET /thread HTTP/1.1\r\nHost: w\r\n\r\n")
            .await
            .unwrap();
        let r = conn.read_response(false).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"kallithea-isapi\n", "the app ran on the runtime");
    }
    let stats = finish(sim).await;
    assert_eq!(stats.sessions_ended, 3, "{stats:?}");
}

/// The request is mapped with as few calls into IIS as the host allows,
/// and the client's address comes through whole: the ISAPI extension asks
/// for 11 server variables (target, protocol, headers, four for the
/// addresses, four kept ones), the native module for 4 (the kept ones; the
/// rest it reads from the request object, addresses through
/// `GetRemoteAddress`/`GetLocalAddress`).
async fn the_connection_is_mapped_with_few_calls_into_iis(package: &str) {
    use kallithea_conformance::client::RawConn;
    let dll = install(package, "fewcalls", "worker_threads = 2\n");
    let sim = start(&dll, |c| {
        c.vdir = "/app".into();
        c.auth = iis_sim::WindowsAuth::Fixed {
            user: "EXAMPLE\\alice".into(),
        };
    })
    .await;
    let mut conn = RawConn::connect(sim.local_addr()).await.unwrap();
    let client = conn.local_addr();
    let before = sim.stats().server_variable_calls;
    conn.send(b"GET /app/echo HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let r = conn.read_response(false).await.unwrap();
    assert_eq!(r.status, 200);
    let body = String::from_utf8(r.body).unwrap();
    assert!(
        body.lines().any(|l| l == format!("remote: {client}")),
        "the app did not see {client}: {body}"
    );
    assert!(body.contains("identity: EXAMPLE"), "{body}");
    let calls = sim.stats().server_variable_calls - before;
    let expected = if package == "conformance-isapi" {
        11
    } else {
        4
    };
    assert_eq!(calls, expected, "GetServerVariable calls for one request");
    drop(conn);
    finish(sim).await;
}

/// The kept host variables through the real calls: each as IIS reports it.
/// Both hosts read those the mapping does not need only when the app asks
/// (while the request runs; afterwards they are not there, and no call
/// reaches IIS for them).
async fn host_variables_are_iis_own_and_read_only_while_the_request_runs(package: &str) {
    use kallithea_conformance::client::RawConn;
    let dll = install(package, "hostvars", "worker_threads = 2\n");
    let sim = start(&dll, |c| {
        c.vdir = "/app".into();
        c.site_id = 3;
        c.auth = iis_sim::WindowsAuth::Fixed {
            user: "EXAMPLE\\jörg".into(),
        };
    })
    .await;
    let mut conn = RawConn::connect(sim.local_addr()).await.unwrap();
    let mut get = async |path: &str| {
        let request = format!("GET /app{path} HTTP/1.1\r\nHost: example.test:8080\r\n\r\n");
        conn.send(request.as_bytes()).await.unwrap();
        let r = conn.read_response(false).await.unwrap();
        assert_eq!(r.status, 200, "{path}");
        String::from_utf8(r.body).unwrap()
    };
    let physical = dll.parent().unwrap().display().to_string();
    let all = get("/host-variables?names=SERVER_NAME,INSTANCE_ID,APPL_PHYSICAL_PATH,LOGON_USER,AUTH_USER,APPL_MD_PATH,REMOTE_USER,NOT_A_VARIABLE&keep=all").await;
    let user = "EXAMPLE\\j%C3%B6rg";
    assert_eq!(
        all,
        format!(
            "SERVER_NAME: example.test\nINSTANCE_ID: 3\nAPPL_PHYSICAL_PATH: {physical}\n\
             LOGON_USER: {user}\nAUTH_USER: {user}\nAPPL_MD_PATH: /LM/W3SVC/3/ROOT/app\n\
             REMOTE_USER: {user}\nNOT_A_VARIABLE: none\n"
        )
    );
    let one = get("/host-variables?names=SERVER_NAME&keep=one").await;
    assert_eq!(one, "SERVER_NAME: example.test\n");

    // After those requests ended.
    let names = |listing: &str| -> Vec<String> {
        let mut names: Vec<String> = listing
            .lines()
            .filter_map(|l| Some(l.split_once(": ")?.0.to_owned()))
            .collect();
        names.sort();
        names
    };
    let every = [
        "APPL_MD_PATH",
        "APPL_PHYSICAL_PATH",
        "AUTH_TYPE",
        "AUTH_USER",
        "HTTPS",
        "INSTANCE_ID",
        "LOGON_USER",
        "REMOTE_USER",
        "SERVER_NAME",
    ];
    assert_eq!(names(&get("/kept-host-variables?id=all").await), every);
    // What the mapping read, and what the app asked for in time.
    assert_eq!(
        names(&get("/kept-host-variables?id=one").await),
        [
            "APPL_MD_PATH",
            "AUTH_TYPE",
            "HTTPS",
            "REMOTE_USER",
            "SERVER_NAME"
        ]
    );
    drop(conn);
    // No variable was asked for after its request ended (the simulator
    // records that as a violation).
    finish(sim).await;
}

/// A host may deliver a completion inline, on the thread that started or
/// cancelled the operation, before that call returns. Here the session's
/// end is asked for while a body read is outstanding (termination cancels a
/// request whose client stopped sending): the host cancels the read, the
/// cancellation completes inside `HSE_REQ_CANCEL_IO`, and that completion
/// ends the session — on the thread still inside the call. The session
/// must end exactly once, without the extension waiting for itself.
async fn an_end_asked_for_inside_an_inline_completion_never_hangs(package: &str) {
    use kallithea_conformance::client::RawConn;
    if package.ends_with("native") {
        // A native module hears of an operation that finished at once from
        // the call's own result (`pfCompletionExpected`), never from a
        // completion inside the call: the case is ISAPI's.
        return;
    }
    let dll = install(package, "inline-end", "drain_timeout = \"200ms\"\n");
    let sim = start(&dll, |c| {
        // Inline completions of a cancellation: this case needs a host that
        // cancels (one that cannot is the lean profile's `no_cancel_io`).
        c.variation.no_cancel_io = false;
        c.variation.completions = Completions::Inline;
        c.read_ahead = 0;
        c.shutdown_time_limit = Duration::from_millis(100);
    })
    .await;
    // Inline completions on the ordinary paths first: reads that find the
    // body there, writes that go out at once.
    let client = Client::new(sim.local_addr());
    for n in [0usize, 10, 200_000] {
        let req = client
            .request("POST", "/echo")
            .body(Body::from(vec![b'i'; n]))
            .unwrap();
        let r = client.fetch(req).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            r.text().contains(&format!("body_bytes: {n}\n")),
            "{}",
            r.text()
        );
    }
    // Half a body: the app waits for the rest with a read outstanding.
    let mut conn = RawConn::connect(sim.local_addr()).await.unwrap();
    conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nhalf")
        .await
        .unwrap();
    for _ in 0..250 {
        if sim.stats().requests == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        sim.stats().in_flight,
        1,
        "the half-sent upload is in flight"
    );
    // A recycle, the client still connected: the drain time runs out and
    // the extension ends the session with the read outstanding. A deadlock
    // there blocks the threads a timeout would run on: a watchdog thread
    // ends the test process instead.
    let watchdog = Watchdog::new(
        Duration::from_secs(30),
        "the extension deadlocked ending a session from an inline completion",
    );
    sim.recycle().await.unwrap();
    drop(watchdog);
    let stats = sim.stats();
    assert_eq!((stats.requests, stats.sessions_ended), (4, 4), "{stats:?}");
    assert_eq!(stats.terminations, 1, "{stats:?}");
    drop(conn);
    finish(sim).await;
}

/// A host may report the end of the body before the declared length (it
/// lost the rest). The app sees a body error, not a shorter body taken for
/// the whole; a client still connected gets an answer; the session ends
/// once, and the connection is not reused.
async fn a_body_the_host_ends_early_is_a_body_error_and_still_answered(package: &str) {
    let dll = install(package, "early-end", "worker_threads = 2\n");
    let sim = start(&dll, |_| {}).await;
    sim.set_faults(Faults {
        end_body_after: Some(1000),
        ..Faults::default()
    });
    let client = Client::new(sim.local_addr());
    let req = client
        .request("POST", "/echo")
        .body(Body::from(vec![b'e'; 300_000]))
        .unwrap();
    let r = client.fetch(req).await.unwrap();
    let text = r.text();
    assert!(
        r.status == StatusCode::BAD_REQUEST
            || (r.status == StatusCode::OK && text.contains("body_error")),
        "a cut body is an error the app sees: {} {text}",
        r.status
    );
    assert!(!text.contains("body_bytes: 300000\n"), "{text}");
    sim.set_faults(Faults::default());
    settled(&sim, 1).await;
    finish(sim).await;
}

/// As http.sys does (`HeaderWaitTimeout`), the simulator closes a
/// connection whose request headers do not arrive in time; the DLL never
/// sees such a request, and a prompt client on the same simulator is
/// served.
async fn a_client_that_sends_its_headers_too_slowly_is_cut_off(package: &str) {
    use kallithea_conformance::client::RawConn;
    use tokio::io::AsyncReadExt;
    let dll = install(package, "header-wait", "worker_threads = 2\n");
    let sim = start(&dll, |c| {
        c.header_read_timeout = Some(Duration::from_millis(300))
    })
    .await;
    let mut slow = RawConn::connect(sim.local_addr()).await.unwrap();
    slow.send(b"GET /echo HTTP/1.1\r\nHost: k\r\n")
        .await
        .unwrap();
    let mut stream = slow.into_inner();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the slow connection is still open after 10 s"
    );
    let r = Client::new(sim.local_addr()).get("/echo").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let stats = finish(sim).await;
    assert_eq!(stats.requests, 1, "only the prompt request reached the DLL");
}
