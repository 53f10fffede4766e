//! Load benchmark: the same hello app served by host-hyper and by bare
//! hyper-util, in alternating rounds, over loopback; prints requests per second
//! of each and their ratio (goal: host-hyper ≥ 0.95 × bare).
//!
//! ```text
//! cargo run --release -p kallithea-examples --bin bench-hyper [-- --seconds 3 --rounds 3 --connections 32]
//! ```
//! Servers and the load generator run on separate single-thread runtimes, so
//! each gets one of the machine's cores.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kallithea_core::Dispatcher;
use tower_service_shim::call_router;

/// The app both servers run.
fn hello() -> Router {
    Router::new().route("/", get(|| async { "Hello, world!" }))
}

mod tower_service_shim {
    use axum::Router;
    use http::{Request, Response};

    /// Calls the router the way axum::serve does: a clone per request.
    pub async fn call_router(
        router: &Router,
        req: Request<hyper::body::Incoming>,
    ) -> Response<axum::body::Body> {
        use tower::ServiceExt;
        router
            .clone()
            .oneshot(req.map(axum::body::Body::new))
            .await
            .unwrap_or_else(|e| match e {})
    }
}

struct Options {
    seconds: u64,
    rounds: usize,
    connections: usize,
    /// Send exactly this many requests per round instead of running for
    /// `seconds` (for instruction counting under callgrind).
    requests: Option<u64>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        seconds: 3,
        rounds: 3,
        connections: 32,
        requests: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|&v| v > 0)
                .ok_or(format!("{name} needs a positive number"))
        };
        match a.as_str() {
            "--seconds" => o.seconds = num("--seconds")?,
            "--rounds" => o.rounds = num("--rounds")? as usize,
            "--connections" => o.connections = num("--connections")? as usize,
            "--requests" => o.requests = Some(num("--requests")?),
            other => {
                return Err(format!(
                "unknown argument {other:?} (use --seconds, --rounds, --connections, --requests)"
            ))
            }
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench-hyper: {e}");
            return ExitCode::from(2);
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("bench-hyper: warning: debug build; run with --release for meaningful numbers");
    }

    // Each server on a runtime of its own, one thread each (named, so a profiler
    // can tell them apart); the load generator on a third.
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let (host_rt, bare_rt, client_rt) = (
        runtime("bench-host"),
        runtime("bench-bare"),
        runtime("bench-client"),
    );

    let running = host_rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        host_hyper::Server::new()
            .start(l, Dispatcher::new(hello()))
            .expect("start host-hyper")
    });
    // `running` stays alive (and host-hyper serving) until main returns.
    let host_addr = running.local_addr();
    let bare_addr = bare_rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(bare_server(l, hello()));
        addr
    });

    println!(
        "bench-hyper: GET / over {} keep-alive HTTP/1.1 connections, {} s per round, {} rounds each, alternating",
        opts.connections, opts.seconds, opts.rounds
    );
    let mut host = Vec::new();
    let mut bare = Vec::new();
    let budget = match opts.requests {
        Some(n) => Budget::Requests(n),
        None => Budget::Time(Duration::from_secs(opts.seconds)),
    };
    if opts.requests.is_none() {
        // One short warm-up each, not counted.
        let warm = Budget::Time(Duration::from_millis(500));
        client_rt.block_on(load(host_addr, opts.connections, warm));
        client_rt.block_on(load(bare_addr, opts.connections, warm));
    }
    let (mut host_cpu, mut bare_cpu) = (Vec::new(), Vec::new());
    for round in 1..=opts.rounds {
        let cpu0 = thread_cpu("bench-host");
        let (h, hn) = client_rt.block_on(load(host_addr, opts.connections, budget));
        let cpu1 = thread_cpu("bench-host");
        let bpu0 = thread_cpu("bench-bare");
        let (b, bn) = client_rt.block_on(load(bare_addr, opts.connections, budget));
        let bpu1 = thread_cpu("bench-bare");
        let (hc, bc) = (
            per_request_us(cpu1 - cpu0, hn),
            per_request_us(bpu1 - bpu0, bn),
        );
        println!(
            "  round {round}: host-hyper {h:>8.0} req/s {hc:>6.2} µs CPU/req   bare hyper-util {b:>8.0} req/s {bc:>6.2} µs CPU/req   ratio {:.3}",
            h / b
        );
        host.push(h);
        bare.push(b);
        host_cpu.push(hc);
        bare_cpu.push(bc);
    }
    let (h, b) = (median(&mut host), median(&mut bare));
    let (hc, bc) = (median(&mut host_cpu), median(&mut bare_cpu));
    println!("median: host-hyper {h:.0} req/s ({hc:.2} µs server CPU/req), bare hyper-util {b:.0} req/s ({bc:.2} µs server CPU/req)");
    println!("ratio host-hyper / bare = {:.3} req/s (goal >= 0.95); server CPU per request ratio = {:.3}", h / b, hc / bc);
    ExitCode::SUCCESS
}

/// CPU time used so far by this process's threads named `name` (Linux; zero
/// elsewhere), in clock ticks of 1/100 s.
fn thread_cpu(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .map(|stat| {
            // Fields after the parenthesised name: utime is the 14th and stime the
            // 15th field of the whole line.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            field(11) + field(12)
        })
        .sum()
}

fn per_request_us(ticks: u64, requests: u64) -> f64 {
    ticks as f64 * 10_000.0 / requests.max(1) as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The baseline: what `axum::serve` does, straight on hyper-util.
async fn bare_server(listener: tokio::net::TcpListener, app: Router) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(call_router(&app, req).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// How long a load run lasts.
#[derive(Clone, Copy)]
enum Budget {
    Time(Duration),
    Requests(u64),
}

/// Runs `connections` closed-loop clients until the budget is spent; returns
/// requests/s and the number of requests.
async fn load(addr: SocketAddr, connections: usize, budget: Budget) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (done, stop) = (done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let _ = stream.set_nodelay(true);
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                if let Budget::Requests(n) = budget {
                    if done.fetch_add(1, Ordering::Relaxed) >= n {
                        done.fetch_sub(1, Ordering::Relaxed);
                        break;
                    }
                }
                let req = http::Request::get("/")
                    .header("host", "bench")
                    .body(Empty::<bytes::Bytes>::new())
                    .expect("request");
                let Ok(resp) = send.send_request(req).await else {
                    break;
                };
                if resp.status() != 200 || resp.into_body().collect().await.is_err() {
                    break;
                }
                if let Budget::Time(_) = budget {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    if let Budget::Time(d) = budget {
        tokio::time::sleep(d).await;
        stop.store(true, Ordering::Relaxed);
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = done.load(Ordering::Relaxed);
    (count as f64 / elapsed, count)
}
