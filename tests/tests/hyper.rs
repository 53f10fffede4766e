//! host-hyper runs the whole conformance suite, as a trusted-proxy deployment
//! (so the identity cases apply) over loopback.

use std::net::SocketAddr;
use std::time::Duration;

use host_hyper::{ProxyTrust, RunningServer, Server};
use http::{HeaderName, HeaderValue};
use kallithea_conformance::Capabilities;
use kallithea_conformance::{Driver, RunningApp, Setup};
use kallithea_core::{BoxError, BoxFuture};

const SECRET: &str = "conformance-pairing-secret-0123456789";

struct HyperDriver;

struct Running {
    server: Option<RunningServer>,
    addr: SocketAddr,
}

impl Driver for HyperDriver {
    fn name(&self) -> String {
        "host-hyper (trusted-proxy mode)".into()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .streaming(true)
            .identity(true)
            .http2_cleartext(true)
    }

    fn start(&self, setup: Setup) -> BoxFuture<'_, Result<Box<dyn RunningApp>, BoxError>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let dispatcher = kallithea_conformance::dispatcher(&setup)?;
            let trust = ProxyTrust::new(vec!["127.0.0.1/32".parse()?], SECRET);
            let server = Server::new()
                .path_base(setup.path_base)
                .trust(trust)
                .start(listener, dispatcher)?;
            let addr = server.local_addr();
            Ok(Box::new(Running {
                server: Some(server),
                addr,
            }) as Box<dyn RunningApp>)
        })
    }
}

impl RunningApp for Running {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn identity_headers(&self, user: &str) -> Vec<(HeaderName, HeaderValue)> {
        vec![
            (
                HeaderName::from_static(host_hyper::DEFAULT_SECRET_HEADER),
                HeaderValue::from_static(SECRET),
            ),
            (
                HeaderName::from_static(host_hyper::DEFAULT_IDENTITY_HEADER),
                HeaderValue::from_bytes(user.as_bytes())
                    .expect("user names are valid header values"),
            ),
        ]
    }

    fn resident_memory(&self) -> Option<u64> {
        kallithea_conformance::resident_memory_of("self")
    }

    fn stop(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        let server = self.server.take();
        Box::pin(async move {
            if let Some(s) = server {
                s.shutdown(Duration::from_secs(5)).await;
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_hyper_passes_the_conformance_suite() {
    let report = kallithea_conformance::run(&HyperDriver).await;
    report.print();
    assert!(
        report.all_passed(),
        "host-hyper failed conformance cases (table above)"
    );
}
