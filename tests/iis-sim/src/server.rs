//! The HTTP side: the listener, the virtual directory, Windows
//! authentication, handing each request to the ISAPI or native path, and
//! [`RunningSimulator`] (stats, recycling, shutdown).

use super::*;

pub(crate) fn under_vdir(path: &str, vdir: &str) -> bool {
    if vdir == "/" {
        return true;
    }
    let (p, v) = (path.as_bytes(), vdir.as_bytes());
    p.len() >= v.len()
        && p[..v.len()].eq_ignore_ascii_case(v)
        && (p.len() == v.len() || p[v.len()] == b'/' || p[v.len()] == b'?')
}

pub(crate) fn keep_alive_wanted(version: Version, headers: &http::HeaderMap) -> bool {
    let says = |w: &str| {
        headers.get_all(CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(w)))
        })
    };
    match version {
        Version::HTTP_10 | Version::HTTP_09 => says("keep-alive"),
        _ => !says("close"),
    }
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    remote: SocketAddr,
    local: SocketAddr,
) -> Result<Response<SimBody>, Infallible> {
    let (parts, body) = req.into_parts();
    if !under_vdir(parts.uri.path(), &shared.config.vdir) {
        return Ok(plain(StatusCode::NOT_FOUND, "HTTP Error 404.0 - Not Found"));
    }
    let authenticated = match shared.config.auth.authenticate(&parts.headers) {
        Ok(a) => a,
        Err(challenge) => {
            let mut r = plain(StatusCode::UNAUTHORIZED, "HTTP Error 401.2 - Unauthorized");
            if let Ok(v) = HeaderValue::from_str(&challenge.0) {
                r.headers_mut().insert(WWW_AUTHENTICATE, v);
            }
            return Ok(r);
        }
    };
    let mut response = serve(&shared, parts, body, remote, local, authenticated.user).await?;
    shared.config.auth.challenge_401(&mut response);
    if let Some(token) = authenticated.mutual {
        response.headers_mut().append(WWW_AUTHENTICATE, token);
    }
    Ok(response)
}

/// Serves an authenticated request through the loaded extension or module.
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    parts: http::request::Parts,
    body: Incoming,
    remote: SocketAddr,
    local: SocketAddr,
    user: Option<WindowsUser>,
) -> Result<Response<SimBody>, Infallible> {
    // The kind of DLL is fixed by its file; the instance itself is taken
    // once, when the request registers.
    if shared.native_module.load(Ordering::Acquire) {
        return Ok(handle_native(shared, parts, body, remote, local, user).await);
    }

    // Read ahead, as IIS does before calling the extension.
    let declared: Option<u64> = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let mut source = BodySource {
        body: Some(body),
        leftover: Bytes::new(),
        delivered: 0,
    };
    let seq = shared.next_seq.fetch_add(1, Ordering::AcqRel);
    let mut faults = shared
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .for_request(seq);
    let mut preloaded = Vec::new();
    let read_ahead = shared.config.read_ahead;
    let mut limit = declared.map_or(read_ahead, |d| (d.min(read_ahead as u64)) as usize);
    // The faults count the body from its first byte, read-ahead included.
    for cut in [faults.end_body_after, faults.abort_body_after]
        .into_iter()
        .flatten()
    {
        limit = limit.min(usize::try_from(cut).unwrap_or(usize::MAX));
    }
    while preloaded.len() < limit {
        match source.next(limit - preloaded.len()).await {
            Ok(b) if b.is_empty() => break,
            Ok(b) => preloaded.extend_from_slice(&b),
            Err(()) => return Ok(plain(StatusCode::BAD_REQUEST, "the client went away")),
        }
    }
    source.delivered = 0;
    for cut in [&mut faults.end_body_after, &mut faults.abort_body_after]
        .into_iter()
        .flatten()
    {
        *cut = cut.saturating_sub(preloaded.len() as u64);
    }
    let total = match declared {
        // 4 GiB or more does not fit: IIS says 0xFFFFFFFF ("read until no
        // more data"), as for a body of unknown length.
        Some(n) => u32::try_from(n).unwrap_or(HSE_UNKNOWN_LENGTH),
        None if source.is_end() => preloaded.len() as u32,
        None => HSE_UNKNOWN_LENGTH,
    };

    let version = parts.version;
    let info = request_info(shared, parts, remote, local, user);
    let (head_tx, head_rx) = oneshot::channel();
    let (body_tx, body_rx) = mpsc::unbounded_channel();
    let keep_alive_wanted = keep_alive_wanted(info.version, &info.headers);
    let content_type = info
        .headers
        .get(http::header::CONTENT_TYPE)
        .map_or(&[][..], |v| v.as_bytes());
    let mut storage = ffi::EcbStorage::new(ffi::EcbFields {
        conn_id: registry::handle(*shared.index.get().expect("registered"), seq),
        method: info.method.as_str(),
        query: info.query(),
        path_info: info.path(),
        path_translated: &shared.site.dll_path,
        content_type,
        total,
        preloaded,
    });
    let ecb = storage.ptr();
    // The request joins the books under the instance's lock: a recycle,
    // which waits for every request of the old instance, must not miss one
    // that holds the old instance but is not registered yet. (During a
    // recycle this waits, and the request goes to the new instance.)
    let slot = shared.instance.read().await;
    let Some(instance) = slot.clone() else {
        return Ok(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "HTTP Error 503 - the extension is not loaded",
        ));
    };
    let request = Arc::new(SimRequest {
        seq,
        generation: instance.generation,
        shared: Arc::clone(shared),
        info,
        keep_alive_wanted,
        disconnected: AtomicBool::new(false),
        ended: AtomicBool::new(false),
        written: AtomicU64::new(0),
        faults,
        state: Mutex::new(ReqState {
            ecb: Some(storage),
            ecb_ptr: Some(ecb),
            head_tx: Some(head_tx),
            body_tx: Some(body_tx),
            ..ReqState::default()
        }),
        body: tokio::sync::Mutex::new(source),
        native: None,
    });
    shared
        .requests
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(seq, Arc::clone(&request));
    drop(slot);
    shared.counters.requests.fetch_add(1, Ordering::AcqRel);
    let mut guard = DisconnectGuard(Some(Arc::clone(&request)));

    let called = Instant::now();
    let proc_instance = Arc::clone(&instance);
    let status = shared
        .pool
        .run(move || match &proc_instance.lib {
            Loaded::Isapi(lib) => lib.http_extension_proc(ecb),
            Loaded::Native(_) => iis_sys::httpext::HSE_STATUS_ERROR,
        })
        .await;
    let took = called.elapsed().as_micros() as u64;
    shared
        .counters
        .slowest_proc_us
        .fetch_max(took, Ordering::AcqRel);
    drop(instance);
    match status {
        Some(HSE_STATUS_PENDING) => {}
        _ => {
            // Completed synchronously (or failed): the session is over.
            shared.counters.ended_in_call.fetch_add(1, Ordering::AcqRel);
            let _ = request.done(None, "HSE_REQ_DONE_WITH_SESSION");
            if status != Some(iis_sys::httpext::HSE_STATUS_SUCCESS)
                && status != Some(HSE_STATUS_SUCCESS_AND_KEEP_CONN)
                && !request.lock().headers_sent
            {
                guard.0 = None;
                return Ok(plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "HTTP Error 500.0 - the ISAPI extension reported an error",
                ));
            }
        }
    }
    Ok(respond(&request, head_rx, body_rx, version, guard).await)
}

/// The variables' view of a request.
pub(crate) fn request_info(
    shared: &Shared,
    parts: http::request::Parts,
    remote: SocketAddr,
    local: SocketAddr,
    user: Option<WindowsUser>,
) -> vars::RequestInfo {
    let (target, path_end) = match parts.uri.path_and_query() {
        Some(pq) => (pq.as_str().as_bytes().to_vec(), pq.path().len()),
        None => (b"/".to_vec(), 1),
    };
    vars::RequestInfo {
        method: parts.method,
        target,
        path_end,
        version: parts.version,
        headers: parts.headers,
        remote,
        local,
        user,
        vdir: Arc::clone(&shared.site.vdir),
        site_id: shared.config.site_id,
        physical_path: Arc::clone(&shared.site.physical_path),
        absent: Arc::clone(&shared.site.absent),
        header_derived: shared.site.header_derived,
    }
}

/// The response as the DLL made it: the head when it arrives, then the body
/// as it is written.
pub(crate) async fn respond(
    request: &SimRequest,
    head_rx: oneshot::Receiver<Head>,
    body_rx: mpsc::UnboundedReceiver<BodyChunk>,
    version: Version,
    mut guard: DisconnectGuard,
) -> Response<SimBody> {
    let head = head_rx.await;
    guard.0 = None;
    let Ok(head) = head else {
        return plain(
            StatusCode::BAD_GATEWAY,
            "the DLL ended the request without sending a response",
        );
    };
    // What the DLL decided (fKeepConn in the header call, or the absence of
    // SetNeedDisconnect).
    let (keep, ended) = {
        let st = request.lock();
        (st.keep_conn, st.done)
    };
    let mut body = SimBody {
        rx: Some(body_rx),
        fixed: None,
        backlog: Some(Arc::clone(&request.lock().backlog)),
    };
    if ended {
        // The whole response is here (the session ended, often inside the
        // call): it leaves as one piece, as IIS sends a completed response.
        body = body.settle();
        if let Some(declared) = head
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            // Cut short (a write failed): what was written, then the
            // connection closes, as a server that cannot finish does.
            body = body.cut_unless_length(declared);
        }
    }
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    let h = response.headers_mut();
    if !keep && version != Version::HTTP_2 {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Percent-decodes a path as HTTP.sys cooks it (invalid UTF-8 replaced).
pub(crate) fn cook_path(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request for a native module: its objects, the module from the
/// factory, `OnExecuteRequestHandler` on an IIS thread, then completions
/// until the final status.
pub(crate) async fn handle_native(
    shared: &Arc<Shared>,
    parts: http::request::Parts,
    body: Incoming,
    remote: SocketAddr,
    local: SocketAddr,
    user: Option<WindowsUser>,
) -> Response<SimBody> {
    let declared: Option<u64> = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    // A body of unknown length: chunked, or HTTP/2 without Content-Length.
    let chunked = parts.headers.contains_key(http::header::TRANSFER_ENCODING)
        || (declared.is_none() && !hyper::body::Body::is_end_stream(&body));
    let seq = shared.next_seq.fetch_add(1, Ordering::AcqRel);
    let handle = registry::handle(*shared.index.get().expect("registered"), seq);
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| local.to_string(), str::to_owned);
    let raw_url = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .as_bytes()
        .to_vec();
    let cooked_query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let version = match parts.version {
        Version::HTTP_09 => (0, 9),
        Version::HTTP_10 => (1, 0),
        Version::HTTP_2 => (2, 0),
        Version::HTTP_3 => (3, 0),
        _ => (1, 1),
    };
    let raw = native_ffi::RawRequest::new(native_ffi::RawFields {
        method: parts.method.as_str(),
        raw_url: &raw_url,
        origin: &format!("http://{host}"),
        cooked_path: &cook_path(parts.uri.path()),
        cooked_query: &cooked_query,
        version,
        headers: &parts.headers,
        request_id: seq as u64,
        remote,
        local,
    });
    let raw = match raw {
        Ok(r) => r,
        // HTTP.sys refuses what does not fit its USHORT lengths.
        Err(why) => return plain(StatusCode::BAD_REQUEST, &format!("HTTP Error 400 - {why}")),
    };
    // IIS gives an anonymous request a user object with an empty name; a
    // host may give none ([`Variation::no_anonymous_user`]).
    let user_strings = match user.as_ref().filter(|u| !u.name.is_empty()) {
        Some(u) => Some(native_ffi::UserStrings::new(&u.name, &u.auth_type)),
        None if shared.config.variation.no_anonymous_user => None,
        None => Some(native_ffi::UserStrings::new("", "")),
    };
    let version = parts.version;
    let info = request_info(shared, parts, remote, local, user);
    let (head_tx, head_rx) = oneshot::channel();
    let (body_tx, body_rx) = mpsc::unbounded_channel();
    let keep_alive_wanted = keep_alive_wanted(info.version, &info.headers);
    let faults = shared
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .for_request(seq);
    // Registered under the instance's lock, as in `serve`.
    let slot = shared.instance.read().await;
    let Some(instance) = slot.clone() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "HTTP Error 503 - the module is not loaded",
        );
    };
    let generation = instance.generation;
    let request = Arc::new(SimRequest {
        seq,
        generation,
        shared: Arc::clone(shared),
        info,
        keep_alive_wanted,
        disconnected: AtomicBool::new(false),
        ended: AtomicBool::new(false),
        written: AtomicU64::new(0),
        faults,
        state: Mutex::new(ReqState {
            head_tx: Some(head_tx),
            body_tx: Some(body_tx),
            ..ReqState::default()
        }),
        body: tokio::sync::Mutex::new(BodySource {
            body: Some(body),
            leftover: Bytes::new(),
            delivered: 0,
        }),
        native: Some(native::Native::new(
            native_ffi::NativeObjects::new(handle, raw, user_strings),
            Some(instance),
            declared,
            chunked,
        )),
    });
    shared
        .requests
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(seq, Arc::clone(&request));
    drop(slot);
    shared.counters.requests.fetch_add(1, Ordering::AcqRel);
    let guard = DisconnectGuard(Some(Arc::clone(&request)));

    let called = Instant::now();
    let on_pool = Arc::clone(&request);
    let started = shared.pool.run(move || native::execute(&on_pool)).await;
    let took = called.elapsed().as_micros() as u64;
    shared
        .counters
        .slowest_proc_us
        .fetch_max(took, Ordering::AcqRel);
    match started {
        Some(Ok(())) => {}
        Some(Err(why)) => {
            tracing::error!(target: "iis_sim", "{why}");
            let _ = request.done(None, "the module's failure");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("HTTP Error 500.0 - {why}"),
            );
        }
        None => {
            let _ = request.done(None, "the pool's failure");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "HTTP Error 503 - the IIS thread pool is gone",
            );
        }
    }
    respond(&request, head_rx, body_rx, version, guard).await
}

/// A running simulator.
pub struct RunningSimulator {
    pub(crate) addr: SocketAddr,
    pub(crate) shared: Arc<Shared>,
    pub(crate) accept: tokio::task::JoinHandle<()>,
    pub(crate) connections: Arc<Mutex<JoinSet<()>>>,
}

/// Starts a simulator on `listener`: loads the DLL, calls
/// `GetExtensionVersion`, and serves.
pub async fn start(
    config: Config,
    listener: tokio::net::TcpListener,
) -> Result<RunningSimulator, SimError> {
    let dll = std::fs::canonicalize(&config.dll)
        .map_err(|e| SimError::Load(format!("{}: {e}", config.dll.display())))?;
    {
        let mut in_use = DLLS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        if !in_use.get_or_insert_with(HashSet::new).insert(dll.clone()) {
            return Err(SimError::InUse(dll));
        }
    }
    let release = || {
        if let Some(set) = DLLS_IN_USE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            set.remove(&dll);
        }
    };
    let shared = Shared::new(Config {
        dll: dll.clone(),
        ..config
    });
    let instance = match shared.load().await {
        Ok(i) => i,
        Err(e) => {
            release();
            return Err(e);
        }
    };
    *shared.instance.write().await = Some(instance);
    let addr = listener.local_addr()?;
    let connections = Arc::new(Mutex::new(JoinSet::new()));
    let accept = {
        let shared = Arc::clone(&shared);
        let connections = Arc::clone(&connections);
        tokio::spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // http.sys closes a connection whose request headers do not
            // arrive in time.
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(shared.config.header_read_timeout);
            loop {
                let Ok((stream, remote)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(addr);
                let shared = Arc::clone(&shared);
                let service = hyper::service::service_fn(move |req| {
                    handle(Arc::clone(&shared), req, remote, local)
                });
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let mut set = connections.lock().unwrap_or_else(|e| e.into_inner());
                while set.try_join_next().is_some() {}
                set.spawn(async move {
                    let _ = conn.await;
                });
            }
        })
    };
    Ok(RunningSimulator {
        addr,
        shared,
        accept,
        connections,
    })
}

impl RunningSimulator {
    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters and violations so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The requests whose session has not ended, each described in a line
    /// (target, faults, the operation outstanding, what was sent): for the
    /// message of a test that finds one.
    pub fn in_flight(&self) -> Vec<String> {
        let requests: Vec<_> = self
            .shared
            .requests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        requests
            .iter()
            .map(|r| {
                let st = r.lock();
                format!(
                    "request {} {} {}: faults {:?}, outstanding {:?}, headers sent {}, \
                     {} bytes written, client {}",
                    r.seq,
                    r.info.method,
                    String::from_utf8_lossy(&r.info.target),
                    r.faults,
                    st.pending,
                    st.headers_sent,
                    r.written.load(Ordering::Acquire),
                    if r.disconnected.load(Ordering::Acquire) {
                        "gone"
                    } else {
                        "connected"
                    },
                )
            })
            .collect()
    }

    /// Sets the faults for requests that start from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Recycles the extension as IIS recycles an application: new requests
    /// wait, in-flight ones get the shutdown time limit, `TerminateExtension`
    /// is called, the DLL is unloaded and loaded again, and the waiting
    /// requests go to the new instance.
    pub async fn recycle(&self) -> Result<(), SimError> {
        let mut slot = self.shared.instance.write().await;
        if let Some(old) = slot.take() {
            self.shared.unload(old).await;
        }
        *slot = Some(self.shared.load().await?);
        Ok(())
    }

    /// Stops: closes the listener and every connection, drains and
    /// terminates the extension, unloads it, and returns the final stats.
    pub async fn shutdown(self) -> Stats {
        self.accept.abort();
        let _ = self.accept.await;
        let mut set =
            std::mem::take(&mut *self.connections.lock().unwrap_or_else(|e| e.into_inner()));
        set.abort_all();
        while set.join_next().await.is_some() {}
        let old = self.shared.instance.write().await.take();
        if let Some(old) = old {
            self.shared.unload(old).await;
        }
        if let Some(set) = DLLS_IN_USE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            set.remove(&self.shared.config.dll);
        }
        self.shared.stats()
    }
}
