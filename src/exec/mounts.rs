//! The sandbox's mount table, built by pid 1 inside its own mount namespace: rootfs, /proc,
//! minimal /dev, read-only /sys, resolv.conf/hosts, extra mounts, then `pivot_root`. Also the CA
//! injection: the platform's CA bundle (host system roots + `/usr/local/share/ca-certificates/
//! *.crt`) at `/run/kiln/ca-certificates.crt` and read-only over the image's own CA files during
//! RUN, with `SSL_CERT_FILE` & co. and kiln's proxy variables in the step's environment.
//!
//! Must not: write the bundle or a variable into the step's root filesystem (binds and
//! environment only, so neither can reach a layer or the image config), or bind through a
//! symlink in the image.

use super::{ExtraMount, Rung, SandboxSpec};
use crate::snapshot::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

type R<T> = Result<T, String>;

fn m(
    src: Option<&Path>,
    dst: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> R<()> {
    mount(src, dst, fstype, flags, data).map_err(|e| {
        format!(
            "mounting {} {} on {}: {e}",
            fstype.unwrap_or("bind"),
            src.map(|s| s.display().to_string()).unwrap_or_default(),
            dst.display()
        )
    })
}

/// Inside a user namespace other than the initial one (rootless kiln, or the single-uid rung).
/// The xattr that marks a directory opaque in a snapshot this process's overlays will mount:
/// `user.overlay.opaque` when mounts are made with `userxattr` (inside a user namespace: trusted.*
/// is not writable there), else `trusted.overlay.opaque`.
pub fn overlay_opaque_xattr() -> &'static str {
    if in_user_namespace() || !rustix::process::geteuid().is_root() {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    }
}

pub(crate) fn in_user_namespace() -> bool {
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let first: Vec<&str> = map.split_whitespace().take(3).collect();
    first != ["0", "0", "4294967295"]
}

/// Remounts a bind mount read-only, keeping the flags the kernel locks in a user namespace.
pub(crate) fn remount_ro(p: &Path) -> R<()> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let st = statvfs(p).map_err(|e| format!("statvfs {}: {e}", p.display()))?;
    let f = st.flags();
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (a, b) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(a) {
            flags |= b;
        }
    }
    m(None, p, None, flags, None)
}

fn bind(src: &Path, dst: &Path, readonly: bool) -> R<()> {
    m(
        Some(src),
        dst,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    if readonly {
        remount_ro(dst)?;
    }
    Ok(())
}

fn join_lower(lower: &[PathBuf]) -> String {
    lower
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Mount data must fit in one page (`PAGE_SIZE`, what `mount(2)` copies in); keep room for the
/// upper, work and flag options.
const LOWERDIR_MAX: usize = 3000;

/// The `lowerdir=` value for `lower`: absolute paths, or — when they would not fit in one page
/// (a deep chain of committed snapshots) — names relative to the directory the snapshots share,
/// after a chdir there. containerd does the same (`mount_linux.go`, `compactLowerdirOption` and
/// the chdir before mount); overlay resolves each lower at mount time, from this process's cwd.
/// The helper is single-threaded and changes its root right after, so the chdir harms nothing.
fn lowerdir_option(lower: &[PathBuf]) -> R<String> {
    let full = join_lower(lower);
    if full.len() <= LOWERDIR_MAX {
        return Ok(full);
    }
    let Some(parent) = lower.first().and_then(|p| p.parent()) else {
        return Ok(full);
    };
    std::env::set_current_dir(parent).map_err(|e| format!("chdir {}: {e}", parent.display()))?;
    let compact: Vec<String> = lower
        .iter()
        .map(|p| match p.strip_prefix(parent) {
            Ok(rel) => rel.display().to_string(),
            Err(_) => p.display().to_string(),
        })
        .collect();
    let joined = compact.join(":");
    if joined.len() > LOWERDIR_MAX {
        return Err(format!(
            "{} snapshot layers do not fit in one overlay mount ({} bytes of lowerdir)",
            lower.len(),
            joined.len()
        ));
    }
    Ok(joined)
}

/// Mounts the rootfs at `target`; `skel` is appended as the lowest overlay layer.
pub(crate) fn mount_rootfs(rootfs: &[Mount], target: &Path, skel: &Path) -> R<()> {
    for mnt in rootfs {
        match mnt {
            Mount::Overlay {
                lower,
                upper,
                work,
                userxattr,
            } => {
                let mut lower = lower.clone();
                lower.push(skel.to_path_buf());
                let mut opts = format!("lowerdir={}", lowerdir_option(&lower)?);
                if let (Some(u), Some(w)) = (upper, work) {
                    opts += &format!(",upperdir={},workdir={}", u.display(), w.display());
                }
                // trusted.* xattrs cannot be written from a non-initial user namespace.
                if *userxattr || in_user_namespace() {
                    opts += ",userxattr";
                }
                let flags = if upper.is_none() {
                    MsFlags::MS_RDONLY
                } else {
                    MsFlags::empty()
                };
                m(
                    Some(Path::new("overlay")),
                    target,
                    Some("overlay"),
                    flags,
                    Some(&opts),
                )?;
            }
            Mount::FuseOverlay { lower, upper, work } => {
                let mut lower = lower.clone();
                lower.push(skel.to_path_buf());
                let mut opts = format!("lowerdir={}", join_lower(&lower));
                if let (Some(u), Some(w)) = (upper, work) {
                    opts += &format!(",upperdir={},workdir={}", u.display(), w.display());
                }
                let out = std::process::Command::new("fuse-overlayfs")
                    .arg("-o")
                    .arg(&opts)
                    .arg(target)
                    .output()
                    .map_err(|e| format!("running fuse-overlayfs: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "fuse-overlayfs failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            Mount::Bind { source, readonly } => bind(source, target, *readonly)?,
        }
    }
    Ok(())
}

/// The mount points the sandbox needs: (path relative to the rootfs, is a file).
pub(crate) fn mount_points(spec: &SandboxSpec) -> Vec<(PathBuf, bool)> {
    let extra = &spec.mounts;
    let mut v: Vec<(PathBuf, bool)> = vec![
        ("proc".into(), false),
        ("dev".into(), false),
        ("sys".into(), false),
    ];
    for f in ["etc/resolv.conf", "etc/hosts"] {
        let own_hosts = f == "etc/hosts" && !spec.extra_hosts.is_empty();
        if own_hosts || Path::new("/").join(f).exists() {
            v.push((f.into(), true));
        }
    }
    for e in extra {
        v.push((e.target().trim_start_matches('/').into(), e.is_file()));
    }
    v
}

/// Creates `rel` (and missing parents) below `root`; returns what it created, parents first.
pub(crate) fn create_point(root: &Path, rel: &Path, file: bool) -> R<Vec<PathBuf>> {
    let mut made = Vec::new();
    let mut cur = root.to_path_buf();
    let n = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        cur.push(c);
        if std::fs::symlink_metadata(&cur).is_ok() {
            continue;
        }
        let r = if file && i + 1 == n {
            std::fs::File::create(&cur).map(|_| ())
        } else {
            std::fs::create_dir(&cur)
        };
        r.map_err(|e| format!("creating mount point {}: {e}", cur.display()))?;
        made.push(cur.clone());
    }
    Ok(made)
}

const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// /proc, /dev, /sys, resolv.conf, hosts and the extra mounts, below the mounted `root`.
pub(crate) fn setup(root: &Path, spec: &SandboxSpec, secrets: &Path) -> R<Vec<String>> {
    let (rung, extra) = (spec.rung, &spec.mounts);
    let mut warnings = Vec::new();
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_ = root.join("proc");
    let fresh = rung != Rung::NoProc;
    let fresh_ok = fresh && m(Some(Path::new("proc")), &proc_, Some("proc"), nosuid, None).is_ok();
    if !fresh_ok {
        if rung == Rung::Full {
            return Err(
                "mounting a fresh /proc was refused (the no-proc rung binds the host's)".into(),
            );
        }
        bind(Path::new("/proc"), &proc_, false)?;
    }
    let dev = root.join("dev");
    m(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for d in DEVICES {
        let p = dev.join(d);
        std::fs::File::create(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
        bind(&Path::new("/dev").join(d), &p, false)?;
    }
    let pts = dev.join("pts");
    let shm = dev.join("shm");
    for d in [&pts, &shm] {
        std::fs::create_dir(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let pts_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    if let Err(e) = m(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        pts_flags,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    ) {
        warnings.push(format!("no /dev/pts in the sandbox: {e}"));
    }
    // Docker's default /dev/shm is 64 MiB; `--shm-size` sets it (BuildKit's `WithShmSize`).
    let shm_opts = match spec.shm_size {
        Some(bytes) => format!("mode=1777,size={bytes}"),
        None => "mode=1777,size=65536k".to_string(),
    };
    m(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        nosuid,
        Some(&shm_opts),
    )?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link))
            .map_err(|e| format!("creating /dev/{link}: {e}"))?;
    }
    bind(Path::new("/sys"), &root.join("sys"), true)?;
    for f in ["etc/resolv.conf", "etc/hosts"] {
        let host = Path::new("/").join(f);
        if f == "etc/hosts" && !spec.extra_hosts.is_empty() {
            // `--add-host`: the host's lines plus the extra ones, on the step's private tmpfs
            // (never in the rootfs, so never in a layer).
            let base = std::fs::read_to_string(&host).unwrap_or_default();
            let own = secrets.join("hosts");
            std::fs::write(&own, super::limits::hosts_file(&base, &spec.extra_hosts))
                .map_err(|e| format!("writing {}: {e}", own.display()))?;
            bind(&own, &root.join(f), true)?;
        } else if host.exists() {
            bind(&host, &root.join(f), true)?;
        }
    }
    for (i, e) in extra.iter().enumerate() {
        let dst = root.join(e.target().trim_start_matches('/'));
        match e {
            ExtraMount::Bind {
                source, readonly, ..
            } => bind(source, &dst, *readonly)?,
            ExtraMount::Cache { source, .. } => bind(source, &dst, false)?,
            ExtraMount::Tmpfs { size, .. } => {
                let opts = size.map(|s| format!("size={s}")).unwrap_or_default();
                m(
                    Some(Path::new("tmpfs")),
                    &dst,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(&opts),
                )?;
            }
            ExtraMount::Secret {
                source,
                mode,
                uid,
                gid,
                ..
            } => {
                let staged = secrets.join(i.to_string());
                std::fs::copy(source, &staged)
                    .map_err(|e| format!("staging secret {}: {e}", source.display()))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| format!("chmod secret: {e}"))?;
                std::os::unix::fs::chown(&staged, Some(*uid), Some(*gid))
                    .map_err(|e| format!("chown secret: {e}"))?;
                bind(&staged, &dst, true)?;
            }
        }
    }
    bind_ca_over_image(root, extra)?;
    Ok(warnings)
}

/// The step's emulator, read-only on the sandbox's private `/dev` tmpfs (never in a layer);
/// BuildKit binds it at `/dev/.buildkit_qemu_emulator` the same way.
pub(crate) fn bind_emulator(root: &Path, emulator: &Path) -> R<()> {
    let dst = root.join(super::emulate::EMULATOR_PATH.trim_start_matches('/'));
    std::fs::File::create(&dst).map_err(|e| format!("creating {}: {e}", dst.display()))?;
    bind(emulator, &dst, true)
}

/// A private tmpfs for secrets, outside the rootfs (and so outside every layer).
pub(crate) fn secrets_tmpfs(dir: &Path) -> R<()> {
    m(
        Some(Path::new("tmpfs")),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=700,size=16m"),
    )
}

/// `pivot_root(".", ".")` then detach the old root: no directory is created in the rootfs.
pub(crate) fn pivot(root: &Path) -> R<()> {
    nix::unistd::chdir(root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
}

pub(crate) fn make_private() -> R<()> {
    m(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
}

/// Where a RUN step finds the platform's CA bundle (always; bound read-only, never in a layer).
pub const CA_TARGET: &str = "/run/kiln/ca-certificates.crt";

/// The images' own CA bundle locations (Debian/Ubuntu, Alpine, RHEL/Fedora, SUSE): the platform
/// bundle is bound read-only over each one that is a regular file in the step's root.
pub(super) const IMAGE_CA_PATHS: [&str; 5] = [
    "etc/ssl/certs/ca-certificates.crt",
    "etc/ssl/cert.pem",
    "etc/pki/tls/certs/ca-bundle.crt",
    "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "etc/ssl/ca-bundle.pem",
];

/// Where platforms mount a private CA (one PEM per `*.crt`), as Debian's update-ca-certificates.
pub const PLATFORM_CA_DIR: &str = "/usr/local/share/ca-certificates";

/// The host's system bundle, first that exists.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The variables that point TLS clients at a bundle, set for the step only.
pub(super) const CA_ENV: [&str; 4] = [
    "SSL_CERT_FILE",
    "PIP_CERT",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
];

/// Proxy variables passed from kiln's environment to RUN steps, as BuildKit's predefined args:
/// in the step's environment, never in the image config or the history.
pub(super) const PROXY_ENV: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Write the bundle RUN steps trust to `out`: the host's system bundle plus every
/// `PLATFORM_CA_DIR/*.crt`. `None` when the platform mounted no private CA (nothing to inject).
pub fn platform_ca_bundle(ca_dir: &Path, out: &Path) -> std::io::Result<Option<PathBuf>> {
    let mut certs: Vec<PathBuf> = match std::fs::read_dir(ca_dir) {
        Ok(d) => d
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "crt") && p.is_file())
            .collect(),
        Err(_) => return Ok(None),
    };
    if certs.is_empty() {
        return Ok(None);
    }
    certs.sort();
    let mut bundle = String::new();
    if let Some(sys) = SYSTEM_BUNDLES.iter().find(|p| Path::new(p).is_file()) {
        bundle.push_str(&std::fs::read_to_string(sys)?);
    }
    for c in certs {
        let pem = std::fs::read_to_string(&c)?;
        if !bundle.contains(pem.trim()) {
            if !bundle.is_empty() && !bundle.ends_with('\n') {
                bundle.push('\n');
            }
            bundle.push_str(&pem);
        }
    }
    std::fs::write(out, bundle)?;
    Ok(Some(out.to_path_buf()))
}

/// The step's environment plus the CA variables (when a bundle is injected) and kiln's proxy
/// variables, each only where the step does not set it itself.
pub fn step_env(env: &mut Vec<String>, ca: bool, host_env: impl Fn(&str) -> Option<String>) {
    let has = |env: &[String], k: &str| env.iter().any(|e| e.split('=').next() == Some(k));
    if ca {
        for k in CA_ENV {
            if !has(env, k) {
                env.push(format!("{k}={CA_TARGET}"));
            }
        }
    }
    for k in PROXY_ENV {
        if let (false, Some(v)) = (has(env, k), host_env(k)) {
            env.push(format!("{k}={v}"));
        }
    }
}

/// `rel` below `root` is a regular file reached through real directories only (a symlink on
/// the way could point a bind mount outside the step's root).
fn plain_file_below(root: &Path, rel: &str) -> bool {
    let mut cur = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, c) in parts.iter().enumerate() {
        cur.push(c);
        let Ok(m) = std::fs::symlink_metadata(&cur) else {
            return false;
        };
        let last = i + 1 == parts.len();
        if (last && !m.file_type().is_file()) || (!last && !m.file_type().is_dir()) {
            return false;
        }
    }
    true
}

/// Bind the injected bundle (the extra mount at `CA_TARGET`, if any) read-only over the image's
/// own CA files, below the mounted `root` and before `pivot_root`.
pub(crate) fn bind_ca_over_image(root: &Path, extra: &[ExtraMount]) -> R<()> {
    let bundle = extra.iter().find_map(|e| match e {
        ExtraMount::Bind { source, target, .. } if target == CA_TARGET => Some(source),
        _ => None,
    });
    let Some(bundle) = bundle else {
        return Ok(());
    };
    for rel in IMAGE_CA_PATHS {
        if plain_file_below(root, rel) {
            bind(bundle, &root.join(rel), true)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod ca_tests {
    use super::*;

    #[test]
    fn the_bundle_holds_the_platform_certs_and_env_is_added_only_where_unset() {
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca");
        std::fs::create_dir(&ca).unwrap();
        let out = d.path().join("bundle.crt");
        assert_eq!(platform_ca_bundle(&ca, &out).unwrap(), None);
        std::fs::write(
            ca.join("corp.crt"),
            "-----BEGIN CERTIFICATE-----\nCORP\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(ca.join("notes.txt"), "not a cert").unwrap();
        assert_eq!(platform_ca_bundle(&ca, &out).unwrap(), Some(out.clone()));
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("CORP") && !text.contains("not a cert"));
        let mut env = vec!["PIP_CERT=/mine.pem".to_string()];
        step_env(&mut env, true, |k| {
            (k == "HTTPS_PROXY").then(|| "http://proxy:3128".into())
        });
        assert!(env.contains(&"PIP_CERT=/mine.pem".to_string()));
        assert!(env.contains(&format!("SSL_CERT_FILE={CA_TARGET}")));
        assert!(env.contains(&"HTTPS_PROXY=http://proxy:3128".to_string()));
        assert!(!env.iter().any(|e| e.starts_with("PIP_CERT=/run")));
    }

    #[test]
    fn only_plain_files_are_bound_over() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc/ssl/certs")).unwrap();
        std::fs::write(r.join("etc/ssl/certs/ca-certificates.crt"), "x").unwrap();
        std::os::unix::fs::symlink(
            "/etc/ssl/certs/ca-certificates.crt",
            r.join("etc/ssl/cert.pem"),
        )
        .unwrap();
        std::fs::create_dir_all(r.join("etc/pki")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("etc/pki/tls")).unwrap();
        assert!(plain_file_below(r, "etc/ssl/certs/ca-certificates.crt"));
        assert!(!plain_file_below(r, "etc/ssl/cert.pem"));
        assert!(!plain_file_below(r, "etc/pki/tls/certs/ca-bundle.crt"));
    }
}
