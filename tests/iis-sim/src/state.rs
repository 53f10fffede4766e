//! What every request of one simulator shares: the loaded DLL, the site's
//! facts, the counters and the registry of live requests.

use super::*;

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) sessions_ended: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) terminations: AtomicU64,
    pub(crate) slowest_proc_us: AtomicU64,
    pub(crate) disposed: AtomicU64,
    pub(crate) sync_writes: AtomicU64,
    pub(crate) async_writes: AtomicU64,
    pub(crate) ended_in_call: AtomicU64,
    pub(crate) server_variable_calls: AtomicU64,
}

/// Strings that describe the site and are the same for every request.
pub(crate) struct Site {
    /// The virtual directory (`/` or `/portal`).
    pub(crate) vdir: Arc<str>,
    /// The folder the DLL is in (`APPL_PHYSICAL_PATH`).
    pub(crate) physical_path: Arc<str>,
    /// The DLL's path (`lpszPathTranslated`).
    pub(crate) dll_path: String,
    /// The variables this host does not report, shared by every request.
    pub(crate) absent: Arc<[String]>,
    /// [`Config::header_derived_variables`].
    pub(crate) header_derived: bool,
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) site: Site,
    pub(crate) index: OnceLock<usize>,
    pub(crate) next_seq: AtomicUsize,
    pub(crate) requests: RwLock<HashMap<usize, Arc<SimRequest>>>,
    pub(crate) instance: tokio::sync::RwLock<Option<Arc<Instance>>>,
    pub(crate) generation: AtomicU64,
    pub(crate) pool: IisPool,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) counters: Counters,
    pub(crate) violations: Mutex<Vec<String>>,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) native_module: AtomicBool,
    /// Draws for [`Completions::Mixed`].
    pub(crate) draws: AtomicU64,
}

impl Shared {
    /// A registered simulator with nothing loaded yet, on the current runtime.
    pub(crate) fn new(config: Config) -> Arc<Shared> {
        let site = Site {
            vdir: config.vdir.as_str().into(),
            physical_path: config
                .dll
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
                .into(),
            dll_path: config.dll.display().to_string(),
            absent: config.absent_variables.clone().into(),
            header_derived: config.header_derived_variables,
        };
        let shared = Arc::new(Shared {
            pool: IisPool::new(config.iis_threads),
            config,
            site,
            index: OnceLock::new(),
            next_seq: AtomicUsize::new(1),
            requests: RwLock::new(HashMap::new()),
            instance: tokio::sync::RwLock::new(None),
            generation: AtomicU64::new(0),
            faults: Mutex::new(Faults::default()),
            counters: Counters::default(),
            violations: Mutex::new(Vec::new()),
            rt: tokio::runtime::Handle::current(),
            native_module: AtomicBool::new(false),
            draws: AtomicU64::new(0),
        });
        let _ = shared.index.set(registry::register_simulator(&shared));
        shared
    }

    /// Whether the operation being started completes before its call
    /// returns, when it can ([`Config::variation`]).
    pub(crate) fn complete_inline(&self) -> bool {
        match self.config.variation.completions {
            Completions::Elsewhere => false,
            Completions::Inline => true,
            Completions::Mixed(seed) => {
                let n = self.draws.fetch_add(1, Ordering::Relaxed);
                settings::splitmix(seed ^ n) & 1 == 1
            }
        }
    }

    /// The most a read hands over when `asked` bytes were asked for.
    pub(crate) fn read_size(&self, asked: usize) -> usize {
        if self.config.variation.short_reads {
            (asked / 3).max(1)
        } else {
            asked
        }
    }

    pub(crate) fn request(&self, seq: usize) -> Option<Arc<SimRequest>> {
        self.requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&seq)
            .cloned()
    }

    pub(crate) fn issued(&self, seq: usize) -> bool {
        seq > 0 && seq < self.next_seq.load(Ordering::Acquire)
    }

    pub(crate) fn violation(&self, what: String) {
        tracing::error!(target: "iis_sim", "IIS contract violation: {what}");
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            requests: self.counters.requests.load(Ordering::Acquire),
            sessions_ended: self.counters.sessions_ended.load(Ordering::Acquire),
            loads: self.counters.loads.load(Ordering::Acquire),
            terminations: self.counters.terminations.load(Ordering::Acquire),
            in_flight: self
                .requests
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .len(),
            violations: self
                .violations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            slowest_extension_proc: Duration::from_micros(
                self.counters.slowest_proc_us.load(Ordering::Acquire),
            ),
            native_module: self.native_module.load(Ordering::Acquire),
            disposed: self.counters.disposed.load(Ordering::Acquire),
            sync_writes: self.counters.sync_writes.load(Ordering::Acquire),
            async_writes: self.counters.async_writes.load(Ordering::Acquire),
            ended_in_call: self.counters.ended_in_call.load(Ordering::Acquire),
            server_variable_calls: self.counters.server_variable_calls.load(Ordering::Acquire),
        }
    }

    /// Loads the DLL and calls `GetExtensionVersion`, or `RegisterModule`
    /// for a native module (on a blocking thread).
    pub(crate) async fn load(self: &Arc<Self>) -> Result<Arc<Instance>, SimError> {
        let dll = self.config.dll.clone();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let sim_handle = registry::handle(*self.index.get().expect("registered"), 0);
        let lib = tokio::task::spawn_blocking(move || {
            if native_ffi::is_native_module(&dll)? {
                return Ok(Loaded::Native(native_ffi::ModuleLibrary::load(
                    &dll, sim_handle,
                )?));
            }
            let lib = ffi::Library::load(&dll)?;
            let (version, desc) = lib.get_extension_version()?;
            tracing::info!(target: "iis_sim", dll = %dll.display(), version = format!("{:#x}", version), desc, "extension loaded");
            Ok::<_, String>(Loaded::Isapi(lib))
        })
        .await
        .map_err(|e| SimError::Load(format!("loading the extension panicked: {e}")))?
        .map_err(SimError::Load)?;
        self.counters.loads.fetch_add(1, Ordering::AcqRel);
        self.native_module
            .store(matches!(lib, Loaded::Native(_)), Ordering::Release);
        Ok(Arc::new(Instance { lib, generation }))
    }

    /// Waits for the instance's requests (up to the shutdown time limit),
    /// calls `TerminateExtension`, checks that every session ended, and lets
    /// the library go.
    pub(crate) async fn unload(self: &Arc<Self>, instance: Arc<Instance>) {
        let generation = instance.generation;
        let deadline = Instant::now() + self.config.shutdown_time_limit;
        let outstanding = |s: &Shared| {
            s.requests
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .filter(|r| r.generation == generation)
                .count()
        };
        while outstanding(self) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let this = Arc::clone(self);
        let native = matches!(instance.lib, Loaded::Native(_));
        let ended = tokio::task::spawn_blocking(move || {
            match &instance.lib {
                Loaded::Isapi(lib) => {
                    lib.terminate_extension(HSE_TERM_MUST_UNLOAD);
                }
                Loaded::Native(lib) => lib.terminate(),
            }
            this.counters.terminations.fetch_add(1, Ordering::AcqRel);
            drop(instance);
        })
        .await;
        if ended.is_err() {
            self.violation("TerminateExtension (or the factory's Terminate) panicked".into());
        }
        let left: Vec<usize> = self
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| r.generation == generation)
            .map(|r| r.seq)
            .collect();
        for seq in left {
            self.violation(if native {
                format!(
                    "request {seq} never completed (no final notification status), though the \
                     factory's Terminate returned"
                )
            } else {
                format!(
                    "request {seq} never got HSE_REQ_DONE_WITH_SESSION, though TerminateExtension returned"
                )
            });
        }
    }
}

/// Waits for `work` on the calling thread, as a synchronous IIS call blocks
/// its caller. The work runs on a thread of its own: the caller may be one of
/// the runtime's own threads (an extension calling back from inside
/// `HttpExtensionProc`), where the runtime cannot be blocked on. Such a
/// caller also hands its share of the runtime to another thread while it
/// waits: in IIS a blocked worker thread does not stop the server's I/O,
/// and here the work may need the very connection tasks this thread would
/// otherwise run. `None` if the work panicked.
pub(crate) fn block_here<T: Send>(
    rt: &tokio::runtime::Handle,
    work: impl Future<Output = T> + Send,
) -> Option<T> {
    let wait = || std::thread::scope(|s| s.spawn(|| rt.block_on(work)).join().ok());
    let on_a_worker = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if on_a_worker {
        tokio::task::block_in_place(wait)
    } else {
        wait()
    }
}
