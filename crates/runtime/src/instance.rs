//! One running Latchkey per user: the tray app and `latchkey serve` take the same lock, so two
//! processes never refresh the same account. The instance file tells the CLI which port the
//! running instance listens on; the control token (in the keychain, never on disk) proves to it
//! that a CLI call comes from the same user.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

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
    pub fn code(&self) -> &'static str {
        match self {
            Self::AlreadyRunning => "already_running",
            Self::Io { .. } => "instance_io",
            Self::NotRunning => "not_running",
        }
    }
}

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

/// The held lock; released when dropped (and by the OS if the process dies).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    info_path: PathBuf,
}

impl InstanceLock {
    /// Claims the single-instance lock.
    pub fn acquire(paths: &Paths) -> Result<Self, InstanceError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| InstanceError::Io { path, source }
        };
        paths.ensure_data_dir().map_err(io(paths.data_dir()))?;
        let lock_path = paths.lock_file();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(InstanceError::AlreadyRunning),
            Err(TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        Ok(Self {
            _file: file,
            info_path: paths.instance_file(),
        })
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
    }
}

/// Reads the running instance's published info; `NotRunning` when there is none or its lock is free.
pub fn running(paths: &Paths) -> Result<InstanceInfo, InstanceError> {
    let text = std::fs::read(paths.instance_file()).map_err(|_| InstanceError::NotRunning)?;
    let info: InstanceInfo =
        serde_json::from_slice(&text).map_err(|_| InstanceError::NotRunning)?;
    // A stale file from a crashed instance: the lock is free.
    if let Ok(file) = OpenOptions::new().write(true).open(paths.lock_file())
        && file.try_lock().is_ok()
    {
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
        let lock = InstanceLock::acquire(&paths).expect("lock");
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

    #[test]
    fn control_tokens_are_long_random_and_prefixed() {
        let a = new_control_token();
        let b = new_control_token();
        assert!(a.expose().starts_with(CONTROL_TOKEN_PREFIX));
        assert!(a.len() >= 40);
        assert!(!a.ct_eq(&b));
    }
}
