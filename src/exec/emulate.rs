//! Foreign-architecture RUN steps: decide how a process of another architecture runs here — the
//! kernel's binfmt_misc handler (registered with the F flag, so the interpreter was opened at
//! registration and works inside the sandbox's mount namespace), or a static QEMU user-mode
//! emulator that the sandbox bind-mounts read-only at [`EMULATOR_PATH`] (on the sandbox's private
//! `/dev` tmpfs, so nothing of it reaches a layer) and runs the step's command through. BuildKit
//! does the same in `solver/llbsolver/ops/exec_binfmt.go` (`getEmulator`, `qemuMountName`).
//!
//! Must not: register or change binfmt_misc handlers (the host's state is the operator's), or
//! know plans, steps or layers — it is asked about an architecture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the emulator is bound inside the sandbox (BuildKit: `/dev/.buildkit_qemu_emulator`).
pub const EMULATOR_PATH: &str = "/dev/.kiln_qemu_emulator";

/// Where the kernel lists binfmt_misc handlers.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// How foreign-architecture steps may run (`[worker.oci] binfmt`, `[worker.oci] emulators`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emulation {
    /// Use a registered binfmt_misc handler when there is one (false: always mount the emulator).
    pub binfmt: bool,
    /// Emulator per architecture (OCI names: `arm64`, `arm`, `riscv64`), before PATH.
    pub emulators: BTreeMap<String, PathBuf>,
}

impl Default for Emulation {
    fn default() -> Self {
        Emulation {
            binfmt: true,
            emulators: BTreeMap::new(),
        }
    }
}

/// How processes of one architecture run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runner {
    /// The host's own architecture.
    Native,
    /// The kernel runs them through this binfmt_misc handler (its name under [`BINFMT_DIR`]).
    Binfmt(String),
    /// Through this emulator on the host, mounted at [`EMULATOR_PATH`].
    Mount(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum EmulateError {
    #[error(
        "RUN steps for {platform} need emulation: no binfmt_misc handler for {qemu} is registered \
         with the F flag{binfmt_note} and no emulator was found (looked for {tried}). Install one \
         (`apt-get install qemu-user-static`), or name it in kiln.toml: [worker.oci] emulators = \
         {{ {arch} = \"/path/to/qemu-{qemu}-static\" }}"
    )]
    NoEmulator {
        platform: String,
        arch: String,
        qemu: String,
        binfmt_note: String,
        tried: String,
    },
    #[error("emulator for {arch} ([worker.oci] emulators): {path}: {why}")]
    BadEmulator {
        arch: String,
        path: PathBuf,
        why: String,
    },
}

/// The host's architecture in OCI's vocabulary.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// QEMU's name of an OCI architecture (BuildKit's `qemuArchMap`).
pub fn qemu_arch(arch: &str) -> &str {
    match arch {
        "arm64" => "aarch64",
        "amd64" => "x86_64",
        "386" => "i386",
        "loong64" => "loongarch64",
        other => other,
    }
}

/// How `arch` processes run here; `platform` only names the platform in the error.
pub fn runner(platform: &str, arch: &str, cfg: &Emulation) -> Result<Runner, EmulateError> {
    runner_in(
        Path::new(BINFMT_DIR),
        platform,
        arch,
        cfg,
        std::env::var_os("PATH"),
    )
}

fn runner_in(
    binfmt_dir: &Path,
    platform: &str,
    arch: &str,
    cfg: &Emulation,
    path_env: Option<std::ffi::OsString>,
) -> Result<Runner, EmulateError> {
    if arch == host_arch() {
        return Ok(Runner::Native);
    }
    let qemu = qemu_arch(arch);
    if cfg.binfmt {
        if let Some(name) = binfmt_handler(binfmt_dir, qemu) {
            return Ok(Runner::Binfmt(name));
        }
    }
    if let Some(p) = cfg.emulators.get(arch) {
        return match executable(p) {
            Ok(()) => Ok(Runner::Mount(p.clone())),
            Err(why) => Err(EmulateError::BadEmulator {
                arch: arch.to_string(),
                path: p.clone(),
                why,
            }),
        };
    }
    let names = [format!("qemu-{qemu}-static"), format!("qemu-{qemu}")];
    let dirs: Vec<PathBuf> = path_env
        .as_deref()
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    for name in &names {
        for d in &dirs {
            let p = d.join(name);
            if executable(&p).is_ok() {
                return Ok(Runner::Mount(p));
            }
        }
    }
    Err(EmulateError::NoEmulator {
        platform: platform.to_string(),
        arch: arch.to_string(),
        qemu: qemu.to_string(),
        binfmt_note: if cfg.binfmt {
            String::new()
        } else {
            " (and [worker.oci] binfmt = false ignores handlers)".to_string()
        },
        tried: format!("{} on PATH", names.join(", ")),
    })
}

/// The enabled binfmt_misc handler for `qemu` (named `qemu-<arch>` as Debian's qemu-user-static
/// and tonistiigi/binfmt register it) when it has the F (fix binary) flag: without F the kernel
/// opens the interpreter by path inside the sandbox, where it does not exist.
fn binfmt_handler(dir: &Path, qemu: &str) -> Option<String> {
    let name = format!("qemu-{qemu}");
    let text = std::fs::read_to_string(dir.join(&name)).ok()?;
    let enabled = text.lines().next() == Some("enabled");
    let fixed = text
        .lines()
        .filter_map(|l| l.strip_prefix("flags:"))
        .any(|f| f.trim().contains('F'));
    (enabled && fixed).then_some(name)
}

fn executable(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err("not an executable file".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The command line the sandbox runs for `argv` through the mounted emulator: QEMU takes the
/// program's path (it does not search PATH), so a bare name is looked up in `path` below `root`
/// first, as the kernel's execvp would have.
pub fn emulated_argv(argv: &[String], path: &str, root: &Path) -> Vec<String> {
    let mut out = vec![EMULATOR_PATH.to_string()];
    if let Some((prog, rest)) = argv.split_first() {
        let resolved = if prog.contains('/') {
            prog.clone()
        } else {
            path.split(':')
                .map(|d| format!("{}/{prog}", d.trim_end_matches('/')))
                .find(|c| root.join(c.trim_start_matches('/')).exists())
                .unwrap_or_else(|| prog.clone())
        };
        out.push(resolved);
        out.extend(rest.iter().cloned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn foreign() -> &'static str {
        if host_arch() == "arm64" {
            "amd64"
        } else {
            "arm64"
        }
    }

    #[test]
    fn host_arch_is_native_and_handlers_need_the_f_flag() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Emulation::default();
        assert_eq!(
            runner_in(d.path(), "x", host_arch(), &cfg, None).unwrap(),
            Runner::Native
        );
        let q = qemu_arch(foreign());
        let entry = d.path().join(format!("qemu-{q}"));
        std::fs::write(&entry, "enabled\ninterpreter /usr/bin/q\nflags: OC\n").unwrap();
        let e = runner_in(d.path(), "linux/x", foreign(), &cfg, None).unwrap_err();
        assert!(
            e.to_string().contains("apt-get install qemu-user-static"),
            "{e}"
        );
        assert!(e.to_string().contains("linux/x"), "{e}");
        std::fs::write(&entry, "enabled\ninterpreter /usr/bin/q\nflags: OCF\n").unwrap();
        assert_eq!(
            runner_in(d.path(), "x", foreign(), &cfg, None).unwrap(),
            Runner::Binfmt(format!("qemu-{q}"))
        );
        std::fs::write(&entry, "disabled\nflags: F\n").unwrap();
        assert!(runner_in(d.path(), "x", foreign(), &cfg, None).is_err());
    }

    #[test]
    fn emulators_come_from_the_config_then_path_and_binfmt_false_skips_handlers() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let q = qemu_arch(foreign());
        std::fs::write(d.path().join(format!("qemu-{q}")), "enabled\nflags: F\n").unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let emu = bin.join(format!("qemu-{q}-static"));
        std::fs::write(&emu, "").unwrap();
        std::fs::set_permissions(&emu, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cfg = Emulation {
            binfmt: false,
            ..Default::default()
        };
        let path = Some(bin.clone().into_os_string());
        assert_eq!(
            runner_in(d.path(), "x", foreign(), &cfg, path.clone()).unwrap(),
            Runner::Mount(emu.clone())
        );
        cfg.emulators
            .insert(foreign().to_string(), d.path().join("missing"));
        let e = runner_in(d.path(), "x", foreign(), &cfg, path).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn bare_programs_are_resolved_in_the_sandbox_path() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("bin")).unwrap();
        std::fs::write(d.path().join("bin/sh"), "").unwrap();
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            emulated_argv(&argv(&["sh", "-c", "true"]), "/usr/bin:/bin", d.path()),
            argv(&[EMULATOR_PATH, "/bin/sh", "-c", "true"])
        );
        assert_eq!(
            emulated_argv(&argv(&["/x/y"]), "/bin", d.path()),
            argv(&[EMULATOR_PATH, "/x/y"])
        );
    }
}
