//! The "IIS threads": a small fixed pool that calls into the DLL, as IIS's
//! own threads do; a DLL that blocks them starves the pool.

use super::*;

pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The threads IIS calls `HttpExtensionProc` on.
pub(crate) struct IisPool {
    pub(crate) jobs: Option<Mutex<std::sync::mpsc::Sender<Job>>>,
}

impl IisPool {
    pub(crate) fn new(threads: usize) -> Self {
        if threads == 0 {
            return IisPool { jobs: None };
        }
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("iis-sim-pool-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .expect("spawning an IIS pool thread");
        }
        IisPool {
            jobs: Some(Mutex::new(tx)),
        }
    }

    pub(crate) async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let Some(jobs) = &self.jobs else {
            // On this thread, as IIS calls the extension from the thread that
            // read the request.
            return Some(f());
        };
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        jobs.lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .ok()?;
        rx.await.ok()
    }
}
