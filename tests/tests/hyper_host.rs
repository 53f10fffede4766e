//! host-hyper behaviours beyond the shared conformance cases: graceful drain,
//! the drain deadline, the header read timeout, and the front-proxy rules.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use host_hyper::{ProxyTrust, RunningServer, Server};
use http::{Request, Response};
use kallithea_conformance::client::RawConn;
use kallithea_core::{service_fn, Body, Dispatcher, RequestExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "host-hyper-test-pairing-secret";

/// An app that counts its calls; `/slow` takes 300 ms, `/stuck` never answers,
/// `/facts` reports the connection facts and identity.
fn app(calls: Arc<AtomicUsize>) -> Dispatcher {
    Dispatcher::new(service_fn(move |req: Request<Body>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            match req.uri().path() {
                "/slow" => tokio::time::sleep(Duration::from_millis(300)).await,
                "/stuck" => std::future::pending::<()>().await,
                _ => {}
            }
            let c = req
                .connection_info()
                .expect("host-hyper sets connection info");
            let who = req
                .identity()
                .map_or("none".to_owned(), |i| i.name().to_owned());
            let proxy = c.proxy.map_or("none".to_owned(), |p| p.to_string());
            // Identity and pairing headers that reached the app.
            let seen: Vec<&str> = req
                .headers()
                .keys()
                .map(|k| k.as_str())
                .filter(|k| k.contains("kallithea") || k.contains("user"))
                .collect();
            let text = format!(
                "remote={} secure={} proxy={proxy} identity={who} seen={}",
                c.remote,
                c.secure,
                seen.join(",")
            );
            Ok::<_, Infallible>(Response::new(Body::from(text)))
        }
    }))
}

async fn start(server: Server, calls: Arc<AtomicUsize>) -> RunningServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    server.start(listener, app(calls)).unwrap()
}

async fn get(addr: SocketAddr, path: &str, headers: &str) -> Result<(u16, String), String> {
    let mut conn = RawConn::connect(addr).await?;
    conn.send(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let r = conn.read_response(false).await?;
    Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
}

/// Reads until the peer closes; returns how long that took (bounded).
async fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_connections() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = start(Server::new(), calls.clone()).await;
    let addr = server.local_addr();
    let slow = tokio::spawn(get(addr, "/slow", ""));
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = server.shutdown(Duration::from_secs(5)).await;
    let (status, _) = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(status, 200);
    assert_eq!((report.in_flight, report.aborted), (1, 0), "{report:?}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener must be closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_ends_requests_that_do_not_finish() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = start(Server::new(), calls.clone()).await;
    let stuck = tokio::spawn(get(server.local_addr(), "/stuck", ""));
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let report = server.shutdown(Duration::from_millis(200)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!((report.in_flight, report.aborted), (1, 1), "{report:?}");
    assert!(
        stuck.await.unwrap().is_err(),
        "the stuck request's connection is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_keep_alive_connections_are_closed_after_the_header_read_timeout() {
    let calls = Arc::new(AtomicUsize::new(0));
    let timeout = Duration::from_millis(300);
    let server = start(Server::new().header_read_timeout(timeout), calls.clone()).await;
    let addr = server.local_addr();

    // A slowloris client: half a request head, then nothing.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .unwrap();
    // The server's clock starts before this one (at accept, or when it read
    // the last request): allow it that head start.
    let slack = Duration::from_millis(100);
    let closed = time_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(
        closed.is_some_and(|d| d + slack >= timeout),
        "slow client closed after {closed:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a partial head never reaches the app"
    );

    // A keep-alive connection that served a request and then went quiet.
    let mut conn = RawConn::connect(addr).await.unwrap();
    conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(conn.read_response(false).await.unwrap().status, 200);
    let mut stream = conn.into_inner();
    let closed = time_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(
        closed.is_some_and(|d| d + slack >= timeout && d < 3 * timeout),
        "idle connection closed after {closed:?}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pairing_secret_is_refused_before_the_app() {
    let calls = Arc::new(AtomicUsize::new(0));
    let trust = ProxyTrust::new(vec!["127.0.0.1/32".parse().unwrap()], SECRET);
    let server = start(Server::new().trust(trust), calls.clone()).await;
    let addr = server.local_addr();
    let (status, body) = get(
        addr,
        "/",
        "X-Kallithea-Pairing: not-the-secret\r\nX-Kallithea-User: mallory\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the app must not see the request"
    );
    let (status, body) = get(
        addr,
        "/",
        &format!("X-Kallithea-Pairing: {SECRET}\r\nX-Kallithea-User: alice\r\n"),
    )
    .await
    .unwrap();
    assert_eq!(
        (status, body.contains("identity=alice")),
        (200, true),
        "{body}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

/// Each trust rule, end to end through a real connection: what reaches the
/// app, and as whom.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trust_rule_holds_end_to_end() {
    let calls = Arc::new(AtomicUsize::new(0));
    let trust = ProxyTrust::new(vec!["127.0.0.1/32".parse().unwrap()], SECRET);
    let server = start(Server::new().trust(trust), calls.clone()).await;
    let addr = server.local_addr();
    let refused = [
        (SECRET[..SECRET.len() - 1].to_owned(), "a truncated secret"),
        (format!("{SECRET}x"), "a secret with more after it"),
        (SECRET.to_uppercase(), "the secret in other case"),
        (String::new(), "an empty secret"),
    ];
    for (secret, what) in &refused {
        let (status, body) = get(
            addr,
            "/",
            &format!("X-Kallithea-Pairing: {secret}\r\nX-Kallithea-User: alice\r\n"),
        )
        .await
        .unwrap();
        assert_eq!(status, 400, "{what}: {body}");
    }
    let (status, _) = get(
        addr,
        "/",
        &format!(
            "X-Kallithea-Pairing: {SECRET}\r\nX_Kallithea_Pairing: guess\r\nX-Kallithea-User: alice\r\n"
        ),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "a second spelling with a wrong secret");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no refused request reached the app"
    );

    // The underscore twin of the identity header, smuggled past the proxy:
    // never believed, never shown to the app.
    let (_, body) = get(
        addr,
        "/",
        &format!("X-Kallithea-Pairing: {SECRET}\r\nX_Kallithea_User: mallory\r\n"),
    )
    .await
    .unwrap();
    assert!(body.contains("identity=none seen="), "{body}");
    assert!(body.ends_with("seen="), "{body}");
    let (_, body) = get(
        addr,
        "/",
        &format!(
            "X-Kallithea-Pairing: {SECRET}\r\nX_Kallithea_User: mallory\r\nX-Kallithea-User: alice\r\n"
        ),
    )
    .await
    .unwrap();
    assert!(
        body.contains("identity=alice seen=x-kallithea-user"),
        "{body}"
    );
    assert!(!body.contains("x_kallithea_user"), "{body}");
    // No secret: the identity header is removed, not passed on.
    let (_, body) = get(
        addr,
        "/",
        "X-Kallithea-User: alice\r\nRemote-User: alice\r\n",
    )
    .await
    .unwrap();
    assert!(body.ends_with("identity=none seen="), "{body}");
    server.shutdown(Duration::from_secs(1)).await;

    // No trust configured at all: the framework's own headers are removed
    // too, so an app that reads them directly is not fooled.
    let server = start(Server::new(), calls).await;
    let (_, body) = get(
        server.local_addr(),
        "/",
        &format!(
            "X-Kallithea-User: alice\r\nX_Kallithea_User: alice\r\nX-Kallithea-Pairing: {SECRET}\r\n"
        ),
    )
    .await
    .unwrap();
    assert!(body.ends_with("identity=none seen="), "{body}");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paired_proxy_reports_the_client_address_and_scheme_strangers_cannot() {
    let calls = Arc::new(AtomicUsize::new(0));
    let forwarded = "X-Forwarded-For: 203.0.113.5, 198.51.100.7\r\nX-Forwarded-Proto: https\r\n";

    let trust = ProxyTrust::new(vec!["127.0.0.1/32".parse().unwrap()], SECRET);
    let server = start(Server::new().trust(trust), calls.clone()).await;
    let (_, body) = get(
        server.local_addr(),
        "/",
        &format!("X-Kallithea-Pairing: {SECRET}\r\n{forwarded}"),
    )
    .await
    .unwrap();
    assert!(
        body.contains("remote=198.51.100.7:0 secure=true proxy=127.0.0.1"),
        "{body}"
    );
    let (_, body) = get(server.local_addr(), "/", forwarded).await.unwrap();
    assert!(
        body.contains("remote=127.0.0.1:") && body.contains("secure=false proxy=none"),
        "{body}"
    );
    server.shutdown(Duration::from_secs(1)).await;

    // Trust configured for other addresses: the same headers, even with the
    // secret, are not believed from loopback.
    let elsewhere = ProxyTrust::new(vec!["10.9.9.0/24".parse().unwrap()], SECRET);
    let server = start(Server::new().trust(elsewhere), calls).await;
    let (_, body) = get(
        server.local_addr(),
        "/",
        &format!("X-Kallithea-Pairing: {SECRET}\r\nX-Kallithea-User: alice\r\n{forwarded}"),
    )
    .await
    .unwrap();
    assert!(
        body.contains("remote=127.0.0.1:") && body.contains("identity=none"),
        "{body}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

/// A client that sends its whole (too large) body before it reads: without a
/// lingering close the server's close would find unread body bytes and reset
/// the connection, destroying the 413 before the client reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_413_reaches_a_client_still_sending_its_body() {
    use kallithea_core::{ByteLimit, Limits};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let limits = Limits {
        max_body_bytes: ByteLimit::Bytes(64 * 1024),
        ..Limits::default()
    };
    let app = service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::from("read nothing")))
    });
    let dispatcher = Dispatcher::builder(app).limits(limits).build();
    let server = Server::new().start(listener, dispatcher).unwrap();
    let addr = server.local_addr();
    let body_len = 8 * 1024 * 1024;
    for round in 0..10 {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        let writer = tokio::spawn(async move {
            let head =
                format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {body_len}\r\n\r\n");
            wr.write_all(head.as_bytes()).await?;
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..body_len / chunk.len() {
                wr.write_all(&chunk).await?;
            }
            Ok::<_, std::io::Error>(())
        });
        // Read only once the client is done writing (or was stopped).
        let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
        let mut response = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut response)).await;
        let text = String::from_utf8_lossy(&response);
        assert!(
            text.starts_with("HTTP/1.1 413"),
            "round {round}: {read:?} {:?}",
            &text[..text.len().min(200)]
        );
    }
    server.shutdown(Duration::from_secs(1)).await;
}
