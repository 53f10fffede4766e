//! In-process vs out-of-process: the conformance app as an ISAPI extension
//! and as a native module inside the IIS simulator, and the same app on
//! host-hyper in a separate process behind the simulator acting as a
//! reverse proxy (with the pairing secret). Alternating rounds over
//! loopback; prints requests per second of each and the in-process/out of
//! process ratios (goal: in process ≥ 2 × out of process), and a
//! ceiling: the app on host-hyper in this process with nothing in front,
//! which no in-process host can beat (it shares the simulator's HTTP work
//! and the load generator's, but has no IIS glue at all). Besides requests
//! per second, each column's CPU time per request (both processes), which
//! is steadier than throughput on a shared machine.
//!
//! ```text
//! cargo run --release -p iis-sim --bin iis-bench [-- --seconds 2 --rounds 8 --connections 16 --warmup-ms 1000 --only in,out]
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderName;
use iis_sim::proxy::ProxyConfig;
use iis_sim::{Config, Users, WindowsAuth};

const SECRET: &str = "bench-pairing-secret-0123456789abcdef";
const PATH: &str = "/conformance/echo";

fn auth() -> WindowsAuth {
    WindowsAuth::Basic {
        domain: "EXAMPLE".into(),
        users: Users::Listed([("alice".to_owned(), "pw".to_owned())].into()),
        anonymous: false,
    }
}

/// host-hyper serving the conformance app on loopback, trusting the proxy.
async fn hyper_server() -> host_hyper::RunningServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let setup = kallithea_conformance::Setup::main();
    let dispatcher = kallithea_conformance::dispatcher(&setup).expect("dispatcher");
    let trust = host_hyper::ProxyTrust::new(vec!["127.0.0.1/32".parse().expect("cidr")], SECRET);
    host_hyper::Server::new()
        .path_base(setup.path_base)
        .trust(trust)
        .start(listener, dispatcher)
        .expect("server")
}

/// The back end: [`hyper_server`] in a child process. Prints its address,
/// serves until standard input closes.
async fn backend() -> ExitCode {
    let server = hyper_server().await;
    println!("{}", server.local_addr());
    let _ = std::io::stdout().flush();
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await;
    server.shutdown(Duration::from_secs(2)).await;
    ExitCode::SUCCESS
}

/// What one run of the load measured.
struct Measured {
    /// Requests per second.
    rate: f64,
    /// Requests that failed (at any time).
    failed: u64,
    /// CPU time of `pids` per request while measuring, in µs.
    cpu_per_request: Option<f64>,
}

/// Runs the load for `warmup`, then measures it for `seconds`.
///
/// The warm-up is not counted: each run opens fresh connections, and the
/// first moment after another column ran (its connections, its memory, its
/// threads) is slower than what follows — an effect of running the columns
/// in turn, not of the column measured.
///
/// Each connection sends one GET at a time over keep-alive and reads the
/// whole response (status line, headers, `Content-Length` body) before the
/// next. The client is deliberately lean — the request is encoded once and
/// a response is parsed only for its status and length — because it shares
/// the two cores with the servers it measures: whatever it spends is spent
/// by every column alike and pulls their ratios towards 1 (a load generator
/// on its own machine would cost the servers nothing).
async fn load(
    addr: SocketAddr,
    connections: usize,
    warmup: Duration,
    seconds: u64,
    pids: &[u32],
) -> Measured {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let request: Arc<[u8]> = format!(
        "GET {PATH} HTTP/1.1\r\nHost: bench\r\nAuthorization: {}\r\n\r\n",
        iis_sim::basic_credentials("alice", "pw")
    )
    .into_bytes()
    .into();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (done, failed, stop, request) =
            (done.clone(), failed.clone(), stop.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = match LoadConnection::open(addr).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("iis-bench: connecting to {addr}: {e}");
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = conn.exchange(&request).await {
                    eprintln!("iis-bench: {addr}: {e}");
                    failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(warmup).await;
    let (done_before, cpu_before, started) =
        (done.load(Ordering::Relaxed), cpu_of(pids), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (done_after, cpu_after, elapsed) = (
        done.load(Ordering::Relaxed),
        cpu_of(pids),
        started.elapsed(),
    );
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let n = done_after - done_before;
    Measured {
        rate: n as f64 / elapsed.as_secs_f64(),
        failed: failed.load(Ordering::Relaxed),
        cpu_per_request: match (cpu_before, cpu_after) {
            (Some(b), Some(a)) if n > 0 => Some((a - b) / n as f64 * 1e6),
            _ => None,
        },
    }
}

/// A keep-alive connection of the load generator.
struct LoadConnection {
    stream: tokio::net::TcpStream,
    /// Bytes read and not yet taken by a response.
    buf: Vec<u8>,
}

impl LoadConnection {
    async fn open(addr: SocketAddr) -> std::io::Result<LoadConnection> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(LoadConnection {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends `request` and reads its response whole; an error for anything
    /// but a `200` with a `Content-Length` body on a connection that stays
    /// open.
    async fn exchange(&mut self, request: &[u8]) -> Result<(), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.stream
            .write_all(request)
            .await
            .map_err(|e| format!("sending: {e}"))?;
        loop {
            if let Some(len) = response_length(&self.buf)? {
                if self.buf.len() >= len {
                    self.buf.drain(..len);
                    return Ok(());
                }
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("receiving: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
        }
    }
}

/// The length of the response at the start of `buf` (head and body), once
/// its head is complete.
fn response_length(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("unreadable response: {e}")),
    };
    if response.code != Some(200) {
        return Err(format!("status {:?}, not 200", response.code));
    }
    let mut length = None;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        } else if h.name.eq_ignore_ascii_case("connection")
            && h.value.eq_ignore_ascii_case(b"close")
        {
            return Err("the server ends the connection after this response".into());
        }
    }
    let length = length.ok_or("a response without a Content-Length")?;
    Ok(Some(head + length))
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// CPU time (user and system) `pid` has used so far, in seconds, where
/// the system says (`/proc` on Linux; its clock ticks are 1/100 s there).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

/// The processor's model name, where the system says (`/proc/cpuinfo` on
/// Linux).
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    model_name(&info)
}

fn model_name(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, name)| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// CPU seconds used by `pids` together.
fn cpu_of(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

/// One column of the benchmark.
struct Side {
    key: &'static str,
    label: &'static str,
    addr: SocketAddr,
}

impl Side {
    fn new(key: &'static str, label: &'static str, addr: SocketAddr) -> Self {
        Self { key, label, addr }
    }
}

fn arg(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a number")),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--backend") {
        return backend().await;
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: iis-bench [--seconds N] [--rounds N] [--connections N] [--warmup-ms N] [--only in|native|out|direct[,…]]"
        );
        return ExitCode::SUCCESS;
    }
    let (seconds, rounds, connections, warmup) = match (
        arg(&args, "--seconds", 3),
        arg(&args, "--rounds", 3),
        arg(&args, "--connections", 16),
        arg(&args, "--warmup-ms", 1000),
    ) {
        (Ok(s), Ok(r), Ok(c), Ok(w)) => (s, r as usize, c as usize, Duration::from_millis(w)),
        (s, r, c, w) => {
            eprintln!(
                "iis-bench: {}",
                [s.err(), r.err(), c.err(), w.err()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            return ExitCode::from(2);
        }
    };

    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    if only.is_some_and(|o| {
        o.split(',')
            .any(|k| !["in", "native", "out", "direct"].contains(&k))
    }) {
        eprintln!("iis-bench: --only takes in, native, out or direct, or a comma-separated list");
        return ExitCode::from(2);
    }

    // In process: the extension DLL, and the native module, each in a
    // simulator.
    let dir = std::env::temp_dir().join(format!("iis-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (sim, native) = match (
        in_process(&dir, "conformance-isapi").await,
        in_process(&dir, "conformance-native").await,
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("iis-bench: {e}");
            return ExitCode::FAILURE;
        }
    };

    // Out of process: host-hyper in a child process behind the proxy.
    let exe = std::env::current_exe().expect("own path");
    let mut child = std::process::Command::new(exe)
        .arg("--backend")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the back end");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("back end address");
    let backend: SocketAddr = line.trim().parse().expect("back end address");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy_addr = listener.local_addr().expect("addr");
    let proxy = iis_sim::proxy::start(
        ProxyConfig {
            backend,
            secret: SECRET.into(),
            secret_header: HeaderName::from_static(host_hyper::DEFAULT_SECRET_HEADER),
            user_header: HeaderName::from_static(host_hyper::DEFAULT_IDENTITY_HEADER),
            auth: auth(),
        },
        listener,
    );

    // The ceiling: the app on host-hyper in this process, nothing in front.
    let direct = hyper_server().await;

    let sides: Vec<Side> = [
        Side::new("in", "in process (ISAPI)", sim.local_addr()),
        Side::new("native", "in process (native module)", native.local_addr()),
        Side::new("out", "out of process (proxy → host-hyper)", proxy_addr),
        Side::new(
            "direct",
            "ceiling (host-hyper, no IIS)",
            direct.local_addr(),
        ),
    ]
    .into_iter()
    // `--only` runs some sides, for profiling one alone.
    .filter(|s| only.is_none_or(|o| o.split(',').any(|k| k == s.key)))
    .collect();
    println!(
        "iis-bench: GET {PATH}, {connections} connections, {rounds} rounds of {seconds} s each \
         (after {} ms of warm-up)",
        warmup.as_millis()
    );
    // The ratios differ between processor models (on the 2-core test VMs,
    // about 2.1 on one kind, 1.7–1.8 on another): say which one this is.
    println!(
        "iis-bench: {} × {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
            .as_deref()
            .unwrap_or("(processor model unknown)")
    );
    // Both processes' CPU time, around each run: what a request costs in
    // CPU is steadier on a shared machine than what it gets done per second.
    let pids = [std::process::id(), child.id()];
    let mut results = vec![Vec::new(); sides.len()];
    let mut cpu = vec![Vec::new(); sides.len()];
    for round in 1..=rounds {
        // Each round starts one column later than the one before: no
        // column always follows the same other one.
        let mut cells = vec![String::new(); sides.len()];
        for k in 0..sides.len() {
            let i = (round - 1 + k) % sides.len();
            let side = &sides[i];
            let Measured {
                rate,
                failed,
                cpu_per_request: per_request,
            } = load(side.addr, connections, warmup, seconds, &pids).await;
            if failed > 0 {
                eprintln!("iis-bench: {failed} requests failed {}", side.label);
                let _ = child.kill();
                let _ = child.wait();
                return ExitCode::FAILURE;
            }
            let cell = &mut cells[i];
            cell.push_str(&format!("   {} {rate:>7.0} req/s", side.label));
            if let Some(us) = per_request {
                cell.push_str(&format!(" ({us:.1} µs CPU/req)"));
                cpu[i].push(us);
            }
            results[i].push(rate);
        }
        println!("round {round}:{}", cells.concat());
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut line = "mean:".to_owned();
    for ((side, results), cpu) in sides.iter().zip(&results).zip(&cpu) {
        line.push_str(&format!("   {} {:.0} req/s", side.label, mean(results)));
        if !cpu.is_empty() {
            line.push_str(&format!(" ({:.1} µs CPU/req)", mean(cpu)));
        }
    }
    println!("{line}");
    let cpu_of_side = |key: &str| {
        sides
            .iter()
            .position(|s| s.key == key)
            .filter(|&i| !cpu[i].is_empty())
            .map(|i| mean(&cpu[i]))
    };
    for key in ["in", "native"] {
        if let (Some(a), Some(b)) = (cpu_of_side(key), cpu_of_side("out")) {
            println!(
                "CPU per request out/{key} {:.2} (load generator included on both sides)",
                b / a
            );
        }
    }
    let of = |key: &str| {
        sides
            .iter()
            .position(|s| s.key == key)
            .map(|i| mean(&results[i]))
    };
    // The ratio is the median of the rounds' ratios: each round measures
    // the columns back to back, and on a shared machine a burst of someone
    // else's work lasting a few seconds lands on one column of one round;
    // the median leaves that round out, the ratio of the means does not.
    let ratios = |key: &str| -> Option<Vec<f64>> {
        let i = sides.iter().position(|s| s.key == key)?;
        let o = sides.iter().position(|s| s.key == "out")?;
        Some(
            results[i]
                .iter()
                .zip(&results[o])
                .map(|(a, b)| a / b)
                .collect(),
        )
    };
    for key in ["in", "native"] {
        let (Some(each), Some(a), Some(b)) = (ratios(key), of(key), of("out")) else {
            continue;
        };
        let shown: Vec<String> = each.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "ratio {key}/out {:.2} (goal ≥ 2.00; median of the rounds {}; of the means {:.2})",
            median(each),
            shown.join(" "),
            a / b
        );
    }
    if let (Some(c), Some(b)) = (of("direct"), of("out")) {
        println!(
            "ratio ceiling/out {:.2} (the most any in-process host could reach on this machine)",
            c / b
        );
    }
    direct.shutdown(Duration::from_secs(2)).await;
    proxy.abort();
    drop(child.stdin.take());
    let _ = child.wait();
    let mut violations = sim.shutdown().await.violations;
    violations.extend(native.shutdown().await.violations);
    let _ = std::fs::remove_dir_all(&dir);
    if !violations.is_empty() {
        eprintln!("iis-bench: IIS contract violations: {violations:#?}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The conformance app built as `package`, in a simulator of its own.
async fn in_process(
    dir: &std::path::Path,
    package: &str,
) -> Result<iis_sim::RunningSimulator, String> {
    let dll = iis_sim::build_cdylib(package)?;
    let dir = dir.join(package);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let copy = dir.join("app.so");
    std::fs::copy(&dll, &copy).map_err(|e| format!("copying {}: {e}", dll.display()))?;
    std::fs::write(
        dir.join("app.toml"),
        "worker_threads = 2\nlog_filter = \"warn\"\n",
    )
    .map_err(|e| format!("writing the configuration: {e}"))?;
    let mut config = Config::new(&copy);
    config.vdir = "/conformance".into();
    config.auth = auth();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    iis_sim::start(config, listener)
        .await
        .map_err(|e| format!("simulator for {package}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::{median, model_name, response_length};

    #[test]
    fn the_processor_model_is_read_from_cpuinfo() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(model_name(info).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(model_name("processor\t: 0\n"), None);
        assert_eq!(model_name("model name\t:  \n"), None);
    }

    #[test]
    fn the_median_is_the_middle_value() {
        assert_eq!(median(vec![2.3, 1.7, 2.1]), 2.1);
        assert_eq!(median(vec![2.0, 1.0, 4.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn a_response_is_its_head_and_content_length() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1";
        assert_eq!(response_length(r), Ok(Some(r.len() - "HTTP/1.1".len())));
        assert_eq!(response_length(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        assert_eq!(response_length(b""), Ok(None));
    }

    #[test]
    fn anything_but_a_kept_open_200_with_a_length_is_a_failure() {
        for bad in [
            &b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            b"not http\r\n\r\n",
        ] {
            assert!(
                response_length(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
