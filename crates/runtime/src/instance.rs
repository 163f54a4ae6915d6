//! One running Latchkey per user: the tray app and `latchkey serve` take the same lock, so two
//! processes never refresh the same account. The instance file tells the CLI which port the
//! running instance listens on; the control token (handed out on the instance's Unix socket, see
//! [`crate::socket`], and kept in the keychain, never on disk) proves to it that a CLI call comes
//! from the same user. Only the lock's holder may bind that socket, so a second instance can
//! never take it over and a leftover socket file is known to be stale.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use latchkey_core::Code;
use latchkey_core::paths::Paths;
use latchkey_core::secret::Secret;

/// Prefix of the control token, so it is recognisable in a leak scan.
pub const CONTROL_TOKEN_PREFIX: &str = "lkc_";

/// Why the instance could not be claimed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceError {
    /// Another Latchkey holds the lock.
    #[error(
        "Latchkey is already running (the tray app or `latchkey serve`): quit it first, or use it"
    )]
    AlreadyRunning,
    /// Another `latchkey` command holds the data directory for longer than a moment (a login
    /// waiting for the browser): nothing serves, so "already running" would send the person
    /// looking for a tray app that is not there. The same code as [`Self::AlreadyRunning`]: the
    /// data directory is taken, and a command waits a moment for either.
    #[error(
        "another `latchkey` command is using Latchkey's data right now (a `latchkey login` waiting for the browser, for example): let it finish or stop it, then try again"
    )]
    InUse,
    /// The lock or instance file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No running instance was found.
    #[error("Latchkey is not running: start the tray app or `latchkey serve`")]
    NotRunning,
}

impl InstanceError {
    /// Stable code.
    pub fn code(&self) -> Code {
        match self {
            Self::AlreadyRunning | Self::InUse => Code::AlreadyRunning,
            Self::Io { .. } => Code::InstanceIo,
            Self::NotRunning => Code::NotRunning,
        }
    }
}

/// How long a serving instance starting waits for a one-shot command holding the lock.
const COMMAND_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the running instance publishes about itself (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Process id.
    pub pid: u32,
    /// The proxy port.
    pub port: u16,
    /// Start time, unix seconds.
    pub started_at: i64,
}

/// Where the running instance's control socket lives: next to the lock, in the `0700` data
/// directory.
pub fn socket_path(paths: &Paths) -> PathBuf {
    paths.data_dir().join("instance.sock")
}

/// The claim a serving instance (the tray app, `latchkey serve`) holds from before it takes the
/// lock until it exits, beside the lock itself: a command about to run a local instance (no
/// proxy) sees it and stands back, instead of taking the lock from under an instance that is
/// starting. Without it, a script polling `latchkey status` every few milliseconds while the tray
/// app starts kept the lock busy for the app's whole wait, and the app gave up ("already
/// running") with nothing else running.
fn serving_claim_path(paths: &Paths) -> PathBuf {
    paths.data_dir().join("serving.lock")
}

/// A serving instance's claim; released when dropped (and by the OS if the process dies).
#[derive(Debug)]
pub struct ServingClaim {
    _file: File,
}

impl ServingClaim {
    /// Claims the data directory for a serving instance; `AlreadyRunning` when another serving
    /// instance holds the claim (running, or starting).
    pub fn acquire(paths: &Paths) -> Result<Self, InstanceError> {
        let file = open_lock_file(paths, &serving_claim_path(paths))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(InstanceError::AlreadyRunning),
            Err(TryLockError::Error(e)) => Err(InstanceError::Io {
                path: serving_claim_path(paths),
                source: e,
            }),
        }
    }

    /// Whether a serving instance holds the claim (it runs, or is starting).
    pub fn held(paths: &Paths) -> Result<bool, InstanceError> {
        let file = open_lock_file(paths, &serving_claim_path(paths))?;
        match file.try_lock_shared() {
            Ok(()) => Ok(false),
            Err(TryLockError::WouldBlock) => Ok(true),
            Err(TryLockError::Error(e)) => Err(InstanceError::Io {
                path: serving_claim_path(paths),
                source: e,
            }),
        }
    }
}

/// Opens (creating) a lock file in the data directory.
fn open_lock_file(paths: &Paths, path: &Path) -> Result<File, InstanceError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| InstanceError::Io { path, source }
    };
    paths.ensure_data_dir().map_err(io(paths.data_dir()))?;
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io(path))
}

/// The held lock; released when dropped (and by the OS if the process dies).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    info_path: PathBuf,
    socket_path: PathBuf,
    /// A serving instance's claim, released after the lock (fields drop after `Drop::drop`).
    _serving: Option<ServingClaim>,
}

impl InstanceLock {
    /// Claims the single-instance lock.
    pub fn acquire(paths: &Paths) -> Result<Self, InstanceError> {
        let lock_path = paths.lock_file();
        let file = open_lock_file(paths, &lock_path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(InstanceError::AlreadyRunning),
            Err(TryLockError::Error(e)) => {
                return Err(InstanceError::Io {
                    path: lock_path,
                    source: e,
                });
            }
        }
        Ok(Self {
            _file: file,
            info_path: paths.instance_file(),
            socket_path: socket_path(paths),
            _serving: None,
        })
    }

    /// Claims the lock for a new instance: a serving one (`serving`: the tray app, `latchkey
    /// serve`) or a command's own. A serving instance waits a few seconds for a one-shot command
    /// (`latchkey status` run while nothing serves takes the lock for a moment) but never for
    /// another serving instance, which publishes its port for commands to use. When the lock
    /// stays taken, the error says by whom: a serving instance ([`InstanceError::AlreadyRunning`])
    /// or another command ([`InstanceError::InUse`]). Whoever holds the lock cannot tell
    /// (`flock` lets this process claim its own lock again), so the serving claim decides.
    pub async fn claim(paths: &Paths, serving: bool) -> Result<Self, InstanceError> {
        if !serving {
            // A serving instance running or on its way: the command uses it, never the lock
            // under it.
            if ServingClaim::held(paths)? {
                return Err(InstanceError::AlreadyRunning);
            }
            return match Self::acquire(paths) {
                // Nothing claimed the directory to serve a moment ago, so the lock's holder is
                // another command. (A serving instance that claimed it since is found by the
                // command's next look, within its wait: the message is never shown for it.)
                Err(InstanceError::AlreadyRunning) => Err(InstanceError::InUse),
                other => other,
            };
        }
        // Claimed first, so commands starting after this stand back. Holding the claim, no other
        // serving instance runs: whoever holds the lock is a command's local instance (whatever
        // a killed instance's file still says), and is waited for.
        let claim = ServingClaim::acquire(paths)?;
        let deadline = tokio::time::Instant::now() + COMMAND_WAIT;
        loop {
            match Self::acquire(paths) {
                Ok(lock) => return Ok(lock.with_claim(claim)),
                Err(InstanceError::AlreadyRunning) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                // Holding the claim, the lock's holder is a command, never another serving
                // instance.
                Err(InstanceError::AlreadyRunning) => return Err(InstanceError::InUse),
                Err(e) => return Err(e),
            }
        }
    }

    /// Keeps a serving instance's claim for as long as this lock is held.
    pub fn with_claim(mut self, claim: ServingClaim) -> Self {
        self._serving = Some(claim);
        self
    }

    /// Binds the control socket, mode `0600`. Holding the lock proves no other instance runs, so
    /// a socket file already there is a crashed instance's and is replaced. The socket is bound
    /// under a temporary name, restricted, then renamed into place, so it is never reachable with
    /// looser permissions.
    #[cfg(unix)]
    pub fn bind_socket(&self) -> Result<std::os::unix::net::UnixListener, InstanceError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| InstanceError::Io { path, source }
        };
        let tmp = self.socket_path.with_extension("sock.tmp");
        for stale in [&tmp, &self.socket_path] {
            match std::fs::remove_file(stale) {
                Ok(()) => tracing::debug!(path = %stale.display(), "stale control socket removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(stale)(e)),
            }
        }
        let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(io(&tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.socket_path).map_err(io(&self.socket_path))?;
        Ok(listener)
    }

    /// Publishes the port for the CLI.
    pub fn publish(&self, info: &InstanceInfo) -> Result<(), InstanceError> {
        let io = |source| InstanceError::Io {
            path: self.info_path.clone(),
            source,
        };
        let json = serde_json::to_vec(info).map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = self.info_path.with_extension("json.tmp");
        let mut f = private_file(&tmp).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.info_path).map_err(io)?;
        Ok(())
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.info_path);
        // Still holding the lock: any socket file is this instance's or a stale one.
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// Reads the running instance's published info; `NotRunning` when there is none or its lock is free.
pub fn running(paths: &Paths) -> Result<InstanceInfo, InstanceError> {
    let text = std::fs::read(paths.instance_file()).map_err(|_| InstanceError::NotRunning)?;
    let info: InstanceInfo =
        serde_json::from_slice(&text).map_err(|_| InstanceError::NotRunning)?;
    // A stale file from a crashed (or killed) instance: the lock is free, or held by a command's
    // local instance, which never holds the serving claim.
    if let Ok(file) = OpenOptions::new().write(true).open(paths.lock_file())
        && file.try_lock().is_ok()
    {
        return Err(InstanceError::NotRunning);
    }
    let claimed = OpenOptions::new()
        .write(true)
        .open(serving_claim_path(paths))
        .is_ok_and(|file| matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock)));
    if !claimed {
        return Err(InstanceError::NotRunning);
    }
    Ok(info)
}

/// A fresh control token: `lkc_` + 256 random bits.
pub fn new_control_token() -> Secret {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Secret::new(format!(
        "{CONTROL_TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

fn private_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).truncate(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_paths() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = Paths::new(dir.path().join("config"), dir.path().join("data"));
        (dir, paths)
    }

    /// While another command holds the data directory (a login waiting for the browser), a
    /// command or a serving instance is told that, not that Latchkey is already running.
    #[tokio::test]
    async fn a_command_holding_the_data_directory_is_named_as_such() {
        let (_dir, paths) = temp_paths();
        let command = InstanceLock::acquire(&paths).expect("a command's lock");

        let other = InstanceLock::claim(&paths, false)
            .await
            .expect_err("the lock is taken");
        assert!(matches!(other, InstanceError::InUse), "{other:?}");
        assert!(
            other.to_string().contains("another `latchkey` command"),
            "{other}"
        );
        assert_eq!(
            other.code(),
            Code::AlreadyRunning,
            "waited for like a start"
        );

        let started = tokio::time::Instant::now();
        let serving = InstanceLock::claim(&paths, true)
            .await
            .expect_err("still taken after the wait");
        assert!(matches!(serving, InstanceError::InUse), "{serving:?}");
        assert!(
            started.elapsed() >= COMMAND_WAIT,
            "a serving instance waits for a command"
        );
        drop(command);
        InstanceLock::claim(&paths, true)
            .await
            .expect("free once the command ends");
    }

    /// A running serving instance is still reported as one, to commands and to a second serving
    /// instance, which does not wait for it.
    #[tokio::test]
    async fn a_serving_instance_is_reported_as_already_running() {
        let (_dir, paths) = temp_paths();
        let _serving = InstanceLock::claim(&paths, true).await.expect("serving");
        let command = InstanceLock::claim(&paths, false).await.expect_err("taken");
        assert!(
            matches!(command, InstanceError::AlreadyRunning),
            "{command:?}"
        );
        assert!(command.to_string().contains("already running"), "{command}");

        let started = tokio::time::Instant::now();
        let second = InstanceLock::claim(&paths, true)
            .await
            .expect_err("one serving instance");
        assert!(
            matches!(second, InstanceError::AlreadyRunning),
            "{second:?}"
        );
        assert!(started.elapsed() < COMMAND_WAIT, "not waited for");
    }

    #[test]
    fn second_instance_is_refused_until_the_first_exits() {
        let (_dir, paths) = temp_paths();
        let first = InstanceLock::acquire(&paths).expect("first instance");
        let second = InstanceLock::acquire(&paths);
        assert!(
            matches!(second, Err(InstanceError::AlreadyRunning)),
            "{second:?}"
        );
        drop(first);
        InstanceLock::acquire(&paths).expect("free again after the first exits");
    }

    #[test]
    fn published_info_is_found_while_running_only() {
        let (_dir, paths) = temp_paths();
        assert!(matches!(running(&paths), Err(InstanceError::NotRunning)));
        let lock = InstanceLock::acquire(&paths)
            .expect("lock")
            .with_claim(ServingClaim::acquire(&paths).expect("claim"));
        let info = InstanceInfo {
            pid: 42,
            port: 47821,
            started_at: 1,
        };
        lock.publish(&info).expect("publish");
        assert_eq!(running(&paths).expect("running"), info);
        drop(lock);
        assert!(matches!(running(&paths), Err(InstanceError::NotRunning)));
    }

    /// A serving instance killed without cleaning up leaves its instance file; a command's local
    /// instance then holding the lock does not make that file look alive (it holds no claim).
    #[test]
    fn a_killed_instances_file_is_stale_while_a_command_holds_the_lock() {
        let (_dir, paths) = temp_paths();
        paths.ensure_data_dir().expect("dir");
        let info = InstanceInfo {
            pid: 42,
            port: 47821,
            started_at: 1,
        };
        // What a killed instance leaves: its file, no lock, no claim.
        std::fs::write(
            paths.instance_file(),
            serde_json::to_vec(&info).expect("json"),
        )
        .expect("write");
        let local = InstanceLock::acquire(&paths).expect("a command's local instance");
        assert!(
            matches!(running(&paths), Err(InstanceError::NotRunning)),
            "not taken for a running instance"
        );
        // A serving instance holds the claim as well: then the file is believed.
        let serving = local.with_claim(ServingClaim::acquire(&paths).expect("claim"));
        assert_eq!(running(&paths).expect("running"), info);
        drop(serving);
    }

    #[cfg(unix)]
    #[test]
    fn the_socket_is_private_in_a_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, paths) = temp_paths();
        let lock = InstanceLock::acquire(&paths).expect("lock");
        let _listener = lock.bind_socket().expect("bind");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&socket_path(&paths)), 0o600, "socket");
        assert_eq!(mode(paths.data_dir()), 0o700, "data directory");
        assert!(
            !socket_path(&paths).with_extension("sock.tmp").exists(),
            "no temporary name left behind"
        );
        drop(lock);
        assert!(
            !socket_path(&paths).exists(),
            "the socket goes with the instance"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_stale_socket_is_replaced_by_the_lock_holder() {
        let (_dir, paths) = temp_paths();
        paths.ensure_data_dir().expect("dir");
        // A crashed instance's socket: bound, then its process (here: the listener) gone.
        let stale = std::os::unix::net::UnixListener::bind(socket_path(&paths)).expect("bind");
        drop(stale);
        assert!(socket_path(&paths).exists());
        assert!(std::os::unix::net::UnixStream::connect(socket_path(&paths)).is_err());

        let lock = InstanceLock::acquire(&paths).expect("lock");
        let listener = lock.bind_socket().expect("bind over the stale socket");
        let _client =
            std::os::unix::net::UnixStream::connect(socket_path(&paths)).expect("connect");
        let (_conn, _) = listener.accept().expect("the new socket answers");
    }

    /// Something at the socket's path that is not a stale socket (here a directory) stops the
    /// bind before anything is created: an error naming the path, no temporary socket left.
    #[cfg(unix)]
    #[test]
    fn a_socket_path_that_cannot_be_cleared_fails_before_binding() {
        let (_dir, paths) = temp_paths();
        let lock = InstanceLock::acquire(&paths).expect("lock");
        std::fs::create_dir(socket_path(&paths)).expect("a directory in the way");
        let err = lock
            .bind_socket()
            .expect_err("cannot bind over a directory");
        assert!(
            matches!(&err, InstanceError::Io { path, .. } if *path == socket_path(&paths)),
            "{err:?}"
        );
        assert!(
            !socket_path(&paths).with_extension("sock.tmp").exists(),
            "nothing bound before the path was cleared"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_second_instance_cannot_take_the_socket() {
        let (_dir, paths) = temp_paths();
        let first = InstanceLock::acquire(&paths).expect("first");
        let listener = first.bind_socket().expect("bind");
        // The second instance stops at the lock, before it could touch the socket file.
        assert!(matches!(
            InstanceLock::acquire(&paths),
            Err(InstanceError::AlreadyRunning)
        ));
        let _client =
            std::os::unix::net::UnixStream::connect(socket_path(&paths)).expect("connect");
        let (_conn, _) = listener
            .accept()
            .expect("the first instance still owns the socket");
    }

    #[test]
    fn control_tokens_are_long_random_and_prefixed() {
        let a = new_control_token();
        let b = new_control_token();
        assert!(a.expose().starts_with(CONTROL_TOKEN_PREFIX));
        assert!(a.len() >= 40);
        assert!(!a.ct_eq(&b));
    }
}
