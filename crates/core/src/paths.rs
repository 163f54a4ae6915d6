//! Where Latchkey keeps its files: the configuration file and the data directory (the clients and
//! audit database, the single-instance lock). One place, overridable by environment for tests.
//! Secrets are never written here; they live in the OS keychain.

use std::path::{Path, PathBuf};

use directories::ProjectDirs;

/// Overrides the configuration directory.
pub const ENV_CONFIG_DIR: &str = "LATCHKEY_CONFIG_DIR";
/// Overrides the data directory.
pub const ENV_DATA_DIR: &str = "LATCHKEY_DATA_DIR";

/// The directories Latchkey uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    config_dir: PathBuf,
    data_dir: PathBuf,
}

/// No home directory could be found to put Latchkey's files in.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot find a home directory for Latchkey's files: set {ENV_CONFIG_DIR} and {ENV_DATA_DIR}"
)]
pub struct NoHomeError;

impl Paths {
    /// The platform's directories (`~/.config/latchkey` and `~/.local/share/latchkey` on Linux,
    /// `~/Library/Application Support/dev.latchkey.Latchkey` on macOS, `%APPDATA%` on Windows),
    /// unless the environment overrides them.
    pub fn from_env() -> Result<Self, NoHomeError> {
        let project = ProjectDirs::from("dev", "latchkey", "Latchkey");
        let config_dir = std::env::var_os(ENV_CONFIG_DIR)
            .map(PathBuf::from)
            .or_else(|| project.as_ref().map(|p| p.config_dir().to_owned()))
            .ok_or(NoHomeError)?;
        let data_dir = std::env::var_os(ENV_DATA_DIR)
            .map(PathBuf::from)
            .or_else(|| project.as_ref().map(|p| p.data_dir().to_owned()))
            .ok_or(NoHomeError)?;
        Ok(Self {
            config_dir,
            data_dir,
        })
    }

    /// Explicit directories (tests, embedding).
    pub fn new(config_dir: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            config_dir: config_dir.into(),
            data_dir: data_dir.into(),
        }
    }

    /// The configuration directory.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `config.toml` in the configuration directory.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    /// The SQLite database of local clients and the audit log.
    pub fn database_file(&self) -> PathBuf {
        self.data_dir.join("latchkey.db")
    }

    /// The single-instance lock file shared by the tray app and `latchkey serve`.
    pub fn lock_file(&self) -> PathBuf {
        self.data_dir.join("instance.lock")
    }

    /// Where the running instance says which port it listens on (no secrets).
    pub fn instance_file(&self) -> PathBuf {
        self.data_dir.join("instance.json")
    }

    /// Creates the data directory with owner-only permissions.
    pub fn ensure_data_dir(&self) -> std::io::Result<()> {
        create_private_dir(&self.data_dir)
    }

    /// What a `latchkey` process started by an MCP host needs in its environment to find these
    /// directories: `LATCHKEY_CONFIG_DIR` / `LATCHKEY_DATA_DIR` (absolute) for each directory that
    /// differs from where a host's minimal environment (`HOME` and little else) would look. Empty
    /// when both are the defaults. A path that is not UTF-8 is written lossily (JSON needs text).
    pub fn env_overrides(&self) -> std::collections::BTreeMap<String, String> {
        self.overrides_against(Self::minimal_env_default().as_ref())
    }

    fn overrides_against(
        &self,
        default: Option<&Paths>,
    ) -> std::collections::BTreeMap<String, String> {
        let mut env = std::collections::BTreeMap::new();
        let pairs = [
            (
                ENV_CONFIG_DIR,
                &self.config_dir,
                default.map(|d| &d.config_dir),
            ),
            (ENV_DATA_DIR, &self.data_dir, default.map(|d| &d.data_dir)),
        ];
        for (var, dir, default) in pairs {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            if default != Some(&dir) {
                env.insert(var.to_owned(), dir.to_string_lossy().into_owned());
            }
        }
        env
    }

    /// The directories a process with only `HOME` set would use. On Linux and the BSDs that
    /// ignores `XDG_CONFIG_HOME`/`XDG_DATA_HOME`, which hosts do not pass on.
    fn minimal_env_default() -> Option<Paths> {
        if cfg!(any(target_os = "macos", windows)) {
            let project = ProjectDirs::from("dev", "latchkey", "Latchkey")?;
            return Some(Self::new(project.config_dir(), project.data_dir()));
        }
        let home = directories::BaseDirs::new()?.home_dir().to_owned();
        Some(Self::new(
            home.join(".config/latchkey"),
            home.join(".local/share/latchkey"),
        ))
    }
}

/// Creates `dir` (and parents) readable by the owner only.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_live_in_their_directories() {
        let p = Paths::new("/c", "/d");
        assert_eq!(p.config_file(), Path::new("/c/config.toml"));
        assert_eq!(p.database_file(), Path::new("/d/latchkey.db"));
        assert_eq!(p.lock_file(), Path::new("/d/instance.lock"));
    }

    #[test]
    fn default_directories_need_no_environment_and_others_are_named() {
        let default = Paths::new("/home/a/.config/latchkey", "/home/a/.local/share/latchkey");
        assert!(default.overrides_against(Some(&default)).is_empty());
        let sandbox = Paths::new("/home/a/.config/latchkey", "/tmp/sandbox/data");
        let env = sandbox.overrides_against(Some(&default));
        assert_eq!(env.len(), 1, "{env:?}");
        assert_eq!(env[ENV_DATA_DIR], "/tmp/sandbox/data");
        let both = Paths::new("/c", "/d").overrides_against(None);
        assert_eq!(both[ENV_CONFIG_DIR], "/c");
        assert_eq!(both[ENV_DATA_DIR], "/d");
    }

    #[test]
    fn relative_overrides_are_made_absolute() {
        let env = Paths::new("rel/c", "rel/d").overrides_against(None);
        assert!(Path::new(&env[ENV_DATA_DIR]).is_absolute(), "{env:?}");
    }

    #[cfg(unix)]
    #[test]
    fn data_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = Paths::new(tmp.path().join("c"), tmp.path().join("d/e"));
        p.ensure_data_dir().expect("create");
        let mode = std::fs::metadata(p.data_dir())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
