//! The datagrams between workers and listeners: Unix sockets in the trace
//! folder, or loopback UDP with a `.port` file on Windows; and [`Listener`].

use super::*;

#[cfg(unix)]
pub(crate) mod imp {
    use std::io::ErrorKind;
    use std::os::unix::net::UnixDatagram;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::Ordering;
    use std::sync::OnceLock;

    use super::{DROPPED, LISTENERS};

    pub(crate) const LISTENER_EXTENSION: &str = "sock";

    fn socket() -> Option<&'static UnixDatagram> {
        static SOCKET: OnceLock<Option<UnixDatagram>> = OnceLock::new();
        SOCKET
            .get_or_init(|| {
                let s = UnixDatagram::unbound().ok()?;
                s.set_nonblocking(true).ok()?;
                Some(s)
            })
            .as_ref()
    }

    pub(crate) fn send(line: &str) {
        let Some(socket) = socket() else {
            return;
        };
        let cut = super::cut(line);
        let bytes = cut.as_bytes();
        let listeners = LISTENERS.read().unwrap_or_else(|e| e.into_inner()).clone();
        for l in &listeners {
            match socket.send_to(bytes, l) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    // Gone (a stale socket file): until the next scan.
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                    forget(l);
                }
            }
        }
    }

    fn forget(listener: &Path) {
        let mut l = LISTENERS.write().unwrap_or_else(|e| e.into_inner());
        l.retain(|p| p != listener);
        // The watch's next scan settles `ACTIVE` (and tracing's interest
        // cache, which must not be rebuilt from inside an event).
    }

    /// A bound listener socket.
    pub(crate) struct Bound {
        pub socket: UnixDatagram,
        pub path: PathBuf,
    }

    pub(crate) fn bind(dir: &Path) -> std::io::Result<Bound> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        // Sockets of listeners that died without cleaning up.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "sock")
                    && UnixDatagram::unbound().and_then(|s| s.connect(&p)).is_err()
                {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        let mut n = 0;
        loop {
            let path = dir.join(format!("listener-{}-{n}.sock", std::process::id()));
            match UnixDatagram::bind(&path) {
                Ok(socket) => {
                    // Workers of the same group may send.
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o770));
                    return Ok(Bound { socket, path });
                }
                Err(e) if e.kind() == ErrorKind::AddrInUse && n < 100 => n += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

/// `line`, cut to [`MAX_EVENT_BYTES`] at a character boundary.
pub(crate) fn cut(line: &str) -> std::borrow::Cow<'_, str> {
    if line.len() <= MAX_EVENT_BYTES {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut end = MAX_EVENT_BYTES - 8;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…[cut]", &line[..end]))
}

#[cfg(not(unix))]
pub(crate) mod imp {
    use std::io::ErrorKind;
    use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::Ordering;
    use std::sync::OnceLock;

    use super::{DROPPED, LISTENERS};

    pub(crate) const LISTENER_EXTENSION: &str = "port";

    fn socket() -> Option<&'static UdpSocket> {
        static SOCKET: OnceLock<Option<UdpSocket>> = OnceLock::new();
        SOCKET
            .get_or_init(|| {
                let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
                s.set_nonblocking(true).ok()?;
                Some(s)
            })
            .as_ref()
    }

    /// The port a listener's file names (read at each send: files are tiny
    /// and sends happen only while someone listens).
    fn port_of(file: &Path) -> Option<u16> {
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    pub(crate) fn send(line: &str) {
        let Some(socket) = socket() else {
            return;
        };
        let cut = super::cut(line);
        let listeners = LISTENERS.read().unwrap_or_else(|e| e.into_inner()).clone();
        for l in &listeners {
            let Some(port) = port_of(l) else {
                continue;
            };
            let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            if socket.send_to(cut.as_bytes(), to).is_err() {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A bound listener socket and its port file.
    pub(crate) struct Bound {
        pub socket: UdpSocket,
        pub path: PathBuf,
    }

    pub(crate) fn bind(dir: &Path) -> std::io::Result<Bound> {
        std::fs::create_dir_all(dir)?;
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = socket.local_addr()?.port();
        let mut n = 0;
        loop {
            let path = dir.join(format!("listener-{}-{n}.port", std::process::id()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    std::io::Write::write_all(&mut f, port.to_string().as_bytes())?;
                    return Ok(Bound { socket, path });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

/// A listener: receives every worker's events until dropped (which removes
/// its socket).
pub struct Listener {
    bound: imp::Bound,
}

impl Listener {
    /// Binds a listener socket in `dir` (created, private, if missing).
    pub fn bind(dir: &std::path::Path) -> std::io::Result<Listener> {
        Ok(Listener {
            bound: imp::bind(dir)?,
        })
    }

    /// The listener's socket file.
    pub fn path(&self) -> &std::path::Path {
        &self.bound.path
    }

    /// The next event, waiting at most `timeout` (`None` on timeout or when
    /// a signal interrupted the wait).
    pub fn recv(&self, timeout: Duration) -> std::io::Result<Option<String>> {
        let s = &self.bound.socket;
        s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut buf = vec![0u8; MAX_EVENT_BYTES + 64];
        match s.recv(&mut buf) {
            Ok(n) => Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned())),
            Err(e) if nothing_received(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A receive that ended without an event: a timeout or an interrupted wait,
/// and on Windows (UDP) a send to a closed port elsewhere, reported on this socket.
pub(crate) fn nothing_received(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    ) || (cfg!(not(unix)) && e.kind() == ErrorKind::ConnectionReset)
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.bound.path);
    }
}
