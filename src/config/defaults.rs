//! Default locations (state root, config file, daemon socket), decided from the user who started
//! kiln. A rootless kiln re-executes itself inside a user namespace where it looks like root, so
//! `main` records the real uid in [`HOST_UID_ENV`] before that re-exec and every default here reads
//! it: a rootless user gets `~/.local/share/kiln`, `~/.config/kiln/kiln.toml` and
//! `$XDG_RUNTIME_DIR/kiln/kiln.sock`, never `/var/lib/kiln` or `/run/kiln`.

use std::path::PathBuf;

/// The uid kiln was started as, set by `main` before entering a user namespace.
pub const HOST_UID_ENV: &str = "_KILN_HOST_UID";

/// Record the real effective uid for the re-executed kiln (first thing in `main`, before any
/// thread exists). An inherited value (we are the re-executed child) is kept.
pub fn pin_host_uid() {
    if std::env::var_os(HOST_UID_ENV).is_none() {
        let uid = rustix::process::geteuid().as_raw();
        std::env::set_var(HOST_UID_ENV, uid.to_string());
    }
}

/// The uid kiln was started as (outside any user namespace kiln entered).
pub fn host_uid() -> u32 {
    std::env::var(HOST_UID_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rustix::process::geteuid().as_raw())
}

/// True when kiln was started by root (not merely root inside its own user namespace).
pub fn host_is_root() -> bool {
    host_uid() == 0
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// What the defaults depend on.
struct Env {
    uid: u32,
    home: PathBuf,
    data_home: Option<PathBuf>,
    config_home: Option<PathBuf>,
    runtime_dir: Option<PathBuf>,
}

impl Env {
    fn current() -> Env {
        Env {
            uid: host_uid(),
            home: env_dir("HOME").unwrap_or_else(|| PathBuf::from(".")),
            data_home: env_dir("XDG_DATA_HOME"),
            config_home: env_dir("XDG_CONFIG_HOME"),
            runtime_dir: env_dir("XDG_RUNTIME_DIR"),
        }
    }

    fn state_root(&self) -> PathBuf {
        if self.uid == 0 {
            return PathBuf::from("/var/lib/kiln");
        }
        match &self.data_home {
            Some(x) => x.join("kiln"),
            None => self.home.join(".local/share/kiln"),
        }
    }

    fn config_file(&self) -> PathBuf {
        if self.uid == 0 {
            return PathBuf::from("/etc/kiln/kiln.toml");
        }
        match &self.config_home {
            Some(x) => x.join("kiln/kiln.toml"),
            None => self.home.join(".config/kiln/kiln.toml"),
        }
    }

    fn socket(&self) -> PathBuf {
        if self.uid == 0 {
            return PathBuf::from("/run/kiln/kiln.sock");
        }
        match &self.runtime_dir {
            Some(x) => x.join("kiln/kiln.sock"),
            None => PathBuf::from(format!("/tmp/kiln-{}/kiln.sock", self.uid)),
        }
    }
}

/// `/var/lib/kiln` as root, else `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln`.
pub fn state_root() -> PathBuf {
    Env::current().state_root()
}

/// `/etc/kiln/kiln.toml` as root, else `$XDG_CONFIG_HOME/kiln/kiln.toml`, else
/// `~/.config/kiln/kiln.toml`.
pub fn config_file() -> PathBuf {
    Env::current().config_file()
}

/// `/run/kiln/kiln.sock` as root, else `$XDG_RUNTIME_DIR/kiln/kiln.sock`, else
/// `/tmp/kiln-<uid>/kiln.sock` (the Python client falls back to the same path).
pub fn socket() -> PathBuf {
    Env::current().socket()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_host_uid_and_xdg() {
        let mut e = Env {
            uid: 1000,
            home: "/home/u".into(),
            data_home: None,
            config_home: None,
            runtime_dir: None,
        };
        assert_eq!(e.state_root(), PathBuf::from("/home/u/.local/share/kiln"));
        assert_eq!(
            e.config_file(),
            PathBuf::from("/home/u/.config/kiln/kiln.toml")
        );
        assert_eq!(e.socket(), PathBuf::from("/tmp/kiln-1000/kiln.sock"));
        e.runtime_dir = Some("/run/user/1000".into());
        e.data_home = Some("/d".into());
        assert_eq!(e.socket(), PathBuf::from("/run/user/1000/kiln/kiln.sock"));
        assert_eq!(e.state_root(), PathBuf::from("/d/kiln"));
        e.uid = 0;
        assert_eq!(e.state_root(), PathBuf::from("/var/lib/kiln"));
        assert_eq!(e.config_file(), PathBuf::from("/etc/kiln/kiln.toml"));
        assert_eq!(e.socket(), PathBuf::from("/run/kiln/kiln.sock"));
    }
}
