//! The running instance's Unix socket: how a `latchkey` command started by an MCP host, with only
//! the host's minimal environment (no D-Bus session, so no keychain), finds the instance and gets
//! what it needs to use the control API.
//!
//! The design follows ssh-agent, gpg-agent and `docker.sock`: a socket file in a directory only
//! the user can enter, the file itself `0600`, and the kernel's word on who connected
//! (`SO_PEERCRED` / `getpeereid`) checked on every connection, so the file system and the peer
//! check each stand on their own. Unlike docker we do not serve the control API on the socket:
//! the instance writes one JSON line — `{"version":1,"pid":…,"port":…,"control_token":"lkc_…"}` —
//! and closes. The CLI then talks HTTP to the loopback port exactly as before, so the control
//! router's token check stays the only door to the control API and nothing else changes. The
//! token is the same one the instance stores in the keychain; the socket is a second way to hand
//! it over, not a second credential.
//!
//! The socket lives in the data directory (`instance.sock`, next to the lock) and is bound only by
//! the holder of the single-instance lock ([`crate::instance::InstanceLock::bind_socket`]), which
//! is what makes removing a stale socket safe. The client checks the server's uid too, so a
//! socket left by someone else (root, a misconfigured shared directory) is never believed.
//! Windows keeps the keychain path; this module is Unix only.

use std::future::Future;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::zeroize::Zeroize;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

use latchkey_core::secret::Secret;

use crate::Latchkey;
use crate::instance::CONTROL_TOKEN_PREFIX;

use latchkey_core::Code;

/// Version of the hand-off line.
const VERSION: u32 = 1;
/// Longest hand-off line a client reads.
const MAX_LINE: u64 = 4096;
/// How long either side waits for the other.
const TIMEOUT: Duration = Duration::from_secs(2);

/// What the instance hands a same-user `latchkey` command.
#[derive(Debug)]
pub struct Handoff {
    /// The instance's process id.
    pub pid: u32,
    /// The loopback port of the proxy and the control API.
    pub port: u16,
    /// The control token (redacted in `Debug`).
    pub control_token: Secret,
}

/// The wire form. No `Debug`: it holds the token in the clear.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    version: u32,
    pid: u32,
    port: u16,
    control_token: &'a str,
}

/// Why the socket gave no hand-off.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// No socket file, or nobody listening on it (a crashed instance's leftover).
    #[error("no Latchkey instance listens on {path}")]
    Absent {
        /// The socket.
        path: PathBuf,
    },
    /// The process on the other end runs as another user.
    #[error(
        "{path} is served by another user (uid {uid}), not by your Latchkey: remove it or fix the directory's owner"
    )]
    ForeignPeer {
        /// The socket.
        path: PathBuf,
        /// The peer's uid.
        uid: u32,
    },
    /// Connecting or reading took too long.
    #[error("Latchkey did not answer on {path} in time: is it hung? restart it")]
    Timeout {
        /// The socket.
        path: PathBuf,
    },
    /// The answer was not a hand-off this build understands.
    #[error("{path} answered something that is not Latchkey's hand-off: restart Latchkey")]
    Malformed {
        /// The socket.
        path: PathBuf,
    },
    /// Another I/O error.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl SocketError {
    /// Stable code.
    pub fn code(&self) -> Code {
        match self {
            Self::Absent { .. } => Code::NotRunning,
            Self::ForeignPeer { .. } => Code::SocketForeignPeer,
            Self::Timeout { .. } => Code::SocketTimeout,
            Self::Malformed { .. } => Code::SocketMalformed,
            Self::Io { .. } => Code::SocketIo,
        }
    }
}

/// The decision on a connecting (or answering) peer: only our own uid. `None` (the kernel gave no
/// credentials) is refused.
pub fn admit(own_uid: u32, peer_uid: Option<u32>) -> bool {
    peer_uid == Some(own_uid)
}

/// This process's effective uid, as the kernel reports it for a socket pair we own (no `unsafe`
/// `geteuid` call needed).
async fn own_uid() -> std::io::Result<u32> {
    let (a, _b) = UnixStream::pair()?;
    Ok(a.peer_cred()?.uid())
}

/// Asks the instance listening on `path` for its hand-off.
pub async fn fetch(path: &Path) -> Result<Handoff, SocketError> {
    let io = |source: std::io::Error| SocketError::Io {
        path: path.to_owned(),
        source,
    };
    let timeout = || SocketError::Timeout {
        path: path.to_owned(),
    };
    let mut stream = match tokio::time::timeout(TIMEOUT, UnixStream::connect(path)).await {
        Err(_) => return Err(timeout()),
        Ok(Err(e)) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Err(SocketError::Absent {
                path: path.to_owned(),
            });
        }
        Ok(Err(e)) => return Err(io(e)),
        Ok(Ok(stream)) => stream,
    };
    let own = own_uid().await.map_err(io)?;
    let peer = stream.peer_cred().map_err(io)?.uid();
    if !admit(own, Some(peer)) {
        return Err(SocketError::ForeignPeer {
            path: path.to_owned(),
            uid: peer,
        });
    }
    let mut bytes = Vec::with_capacity(256);
    let read = async { (&mut stream).take(MAX_LINE).read_to_end(&mut bytes).await };
    match tokio::time::timeout(TIMEOUT, read).await {
        Err(_) => return Err(timeout()),
        Ok(Err(e)) => return Err(io(e)),
        Ok(Ok(_)) => {}
    }
    let handoff = parse(&bytes).ok_or_else(|| SocketError::Malformed {
        path: path.to_owned(),
    });
    bytes.zeroize();
    handoff
}

fn parse(bytes: &[u8]) -> Option<Handoff> {
    let line = bytes.strip_suffix(b"\n")?;
    let wire: Wire<'_> = serde_json::from_slice(line).ok()?;
    if wire.version != VERSION
        || wire.port == 0
        || !wire.control_token.starts_with(CONTROL_TOKEN_PREFIX)
    {
        return None;
    }
    Some(Handoff {
        pid: wire.pid,
        port: wire.port,
        control_token: Secret::new(wire.control_token),
    })
}

fn line(handoff: &Handoff) -> Option<Secret> {
    let wire = Wire {
        version: VERSION,
        pid: handoff.pid,
        port: handoff.port,
        control_token: handoff.control_token.expose(),
    };
    let mut text = serde_json::to_string(&wire).ok()?;
    text.push('\n');
    Some(Secret::new(text))
}

/// Answers every connection on `listener` until `shutdown`: a same-uid peer gets the hand-off
/// line, anyone else is logged and disconnected without a byte.
pub async fn serve(
    listener: UnixListener,
    handoff: Handoff,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let own = own_uid().await?;
    let line = line(&handoff)
        .ok_or_else(|| std::io::Error::other("cannot encode the control socket's hand-off"))?;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        answer(stream, own, &line).await;
    }
}

async fn answer(mut stream: UnixStream, own: u32, line: &Secret) {
    let cred = stream.peer_cred().ok();
    let peer_uid = cred.as_ref().map(tokio::net::unix::UCred::uid);
    if !admit(own, peer_uid) {
        warn!(
            peer_uid = ?peer_uid,
            peer_pid = ?cred.and_then(|c| c.pid()),
            "control socket refused a peer of another user"
        );
        return;
    }
    let write = async {
        stream.write_all(line.expose().as_bytes()).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(TIMEOUT, write).await {
        Ok(Ok(())) => debug!(peer_pid = ?cred.and_then(|c| c.pid()), "control socket hand-off"),
        Ok(Err(e)) => debug!(error = %e, "control socket peer went away"),
        Err(_) => debug!("control socket peer did not read in time"),
    }
}

impl Latchkey {
    /// Binds the control socket and serves it until shutdown. A failure is logged, not fatal:
    /// commands that have the keychain still find the instance through it.
    pub(crate) fn serve_socket(&self, control_token: &Secret, port: u16) {
        let bound = self.inner.lock.bind_socket().map_err(|e| e.to_string());
        let listener = bound.and_then(|std| {
            std.set_nonblocking(true).map_err(|e| e.to_string())?;
            UnixListener::from_std(std).map_err(|e| e.to_string())
        });
        let listener = match listener {
            Ok(listener) => listener,
            Err(error) => {
                warn!(%error, "control socket not available; the CLI will need the keychain");
                return;
            }
        };
        let handoff = Handoff {
            pid: std::process::id(),
            port,
            control_token: control_token.clone(),
        };
        let shutdown = self.shutdown_signal();
        self.spawn(async move {
            if let Err(e) = serve(listener, handoff, shutdown).await {
                warn!(error = %e, "control socket stopped");
            }
        });
        info!(
            path = %crate::instance::socket_path(self.paths()).display(),
            "control socket listening"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_uid_is_admitted() {
        assert!(admit(1000, Some(1000)));
        assert!(!admit(1000, Some(1001)), "another user");
        assert!(!admit(1000, Some(0)), "not even root");
        assert!(
            !admit(0, Some(1000)),
            "a root instance does not serve users"
        );
        assert!(!admit(1000, None), "no credentials, no hand-off");
    }

    #[test]
    fn the_line_round_trips_and_rejects_what_is_not_a_handoff() {
        let handoff = Handoff {
            pid: 7,
            port: 47821,
            control_token: Secret::new("lkc_abc"),
        };
        let line = line(&handoff).expect("line");
        assert!(line.expose().ends_with('\n'));
        let back = parse(line.expose().as_bytes()).expect("parse");
        assert_eq!((back.pid, back.port), (7, 47821));
        assert_eq!(back.control_token.expose(), "lkc_abc");
        assert!(
            !format!("{back:?}").contains("lkc_abc"),
            "Debug hides the token"
        );
        for bad in [
            &b""[..],
            b"{\"version\":1,\"pid\":1,\"port\":2,\"control_token\":\"lkc_a\"}",
            b"{\"version\":2,\"pid\":1,\"port\":2,\"control_token\":\"lkc_a\"}\n",
            b"{\"version\":1,\"pid\":1,\"port\":0,\"control_token\":\"lkc_a\"}\n",
            b"{\"version\":1,\"pid\":1,\"port\":2,\"control_token\":\"lk_client\"}\n",
            b"HTTP/1.1 400 Bad Request\r\n\r\n",
        ] {
            assert!(parse(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn a_same_user_peer_gets_the_handoff_and_the_connection_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("instance.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Handoff {
                pid: std::process::id(),
                port: 40000,
                control_token: Secret::new("lkc_same-user"),
            },
            async {
                let _ = stopped.await;
            },
        ));
        for _ in 0..2 {
            let handoff = fetch(&path).await.expect("hand-off");
            assert_eq!(handoff.port, 40000);
            assert_eq!(handoff.pid, std::process::id());
            assert_eq!(handoff.control_token.expose(), "lkc_same-user");
        }
        let _ = stop.send(());
        server.await.expect("join").expect("served");
        let gone = fetch(&path)
            .await
            .expect_err("nobody listens after shutdown");
        assert_eq!(gone.code(), latchkey_core::Code::NotRunning, "{gone}");
    }

    /// The real kernel check: a process of another uid that can reach the socket file (its
    /// permissions opened up here on purpose) gets no byte. Needs root to start that process.
    #[tokio::test]
    async fn a_peer_of_another_uid_gets_nothing_even_when_the_file_lets_it_in() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let python = Path::new("/usr/bin/python3");
        if own_uid().await.expect("uid") != 0 || !python.exists() {
            eprintln!("skipped: needs root and /usr/bin/python3 to run a peer as another uid");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let path = dir.path().join("instance.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Handoff {
                pid: std::process::id(),
                port: 40000,
                control_token: Secret::new("lkc_not-for-nobody"),
            },
            async {
                let _ = stopped.await;
            },
        ));
        let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nd=b''\nwhile True:\n    c=s.recv(4096)\n    if not c: break\n    d+=c\nprint('connected', len(d))";
        let mut peer = std::process::Command::new(python);
        peer.args(["-c", script])
            .arg(&path)
            .uid(65534)
            .gid(65534)
            .env_clear();
        let out = tokio::task::spawn_blocking(move || peer.output())
            .await
            .expect("join")
            .expect("run the peer");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the peer connected: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.trim(), "connected 0", "another uid is sent nothing");
        // The same user still gets the hand-off afterwards.
        let handoff = fetch(&path).await.expect("same uid");
        assert_eq!(handoff.control_token.expose(), "lkc_not-for-nobody");
        let _ = stop.send(());
        server.await.expect("join").expect("served");
    }

    #[tokio::test]
    async fn a_missing_socket_means_not_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = fetch(&dir.path().join("instance.sock"))
            .await
            .expect_err("absent");
        assert!(matches!(err, SocketError::Absent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn something_else_on_the_socket_is_not_believed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("instance.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let impostor = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.write_all(b"{\"hello\":true}\n").await.expect("write");
        });
        let err = fetch(&path).await.expect_err("malformed");
        assert_eq!(err.code(), latchkey_core::Code::SocketMalformed, "{err}");
        impostor.await.expect("join");
    }
}
