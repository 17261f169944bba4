//! Applying a layer blob to a directory: our own extraction loop (the `tar` crate's `unpack` turns
//! devices into plain files and ignores whiteouts; only its entry parser is used here).
//!
//! Compression is detected from the magic bytes (gzip `1f 8b`, zstd `28 b5 2f fd`, else plain tar); the
//! uncompressed stream is hashed on the way, so the result carries the layer's diff_id.
//!
//! Semantics (OCI image-spec "Representing changes"): `<dir>/.wh.<name>` deletes `<dir>/<name>`;
//! `<dir>/.wh..wh..opq` deletes what lower layers have in `<dir>` but keeps entries of this layer
//! (whatever order they come in); other `.wh..wh.*` names (AUFS bookkeeping) are ignored. An entry
//! replaces whatever non-directory (or, unless it is a directory itself, directory) is at its path.
//! Directory modes and mtimes are applied after the last entry, so that read-only directories and
//! children's creation do not interfere.
//!
//! Escape guards, each refused with an error naming the entry:
//! - a `..` component (in a path or a hardlink target) — refused outright, stricter than containerd,
//!   which clamps `..` at the root; no legitimate layer needs one;
//! - any parent component that is a symlink, whether planted by an earlier entry or already in
//!   `dest` — kiln does not resolve symlinks inside the root the way containerd's `fs.RootPath` does,
//!   it refuses, so no write can ever go through a link;
//! - hardlinks whose target is missing, a directory, or reached through a symlink;
//! - whiteouts naming no entry of their directory (`.wh.`, `.wh..`, `.wh...`: the directory itself
//!   or its parent).
//!
//! Deferred directory metadata skips a directory whose path a later entry broke (an ancestor
//! replaced by a symlink), rather than following the link.
//!
//! Absolute paths: a leading `/` is stripped, as containerd (`filepath.Clean` then joined under the
//! root by `fs.RootPath`) and Docker (`filepath.Join(dest, hdr.Name)`) do; such a path names a file
//! inside `dest`, so it cannot escape. The same holds for absolute hardlink targets. Symlink *targets*
//! are stored verbatim: they are resolved inside the container, never by this loop.
//!
//! Devices (char/block) are created only with `allow_devices` (mknod needs CAP_MKNOD); otherwise they
//! are skipped and listed in [`ApplyStats::skipped_devices`]. FIFOs are always created. Owners are
//! applied only with `preserve_owners`; xattrs are set when the filesystem and privileges allow, and
//! counted in [`ApplyStats::skipped_xattrs`] otherwise.
//!
//! Must not: follow a symlink while writing, or read the whole layer into memory.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, Chain, Cursor, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ::tar::EntryType;
use filetime::FileTime;

use super::{LayerError, OPAQUE_MARKER, OWNER_XATTR, WHITEOUT_PREFIX};
use crate::digest::{Digest, HashingReader};

/// How to apply a layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Create char/block devices (needs CAP_MKNOD; only when privileged).
    pub allow_devices: bool,
    /// chown entries to their tar uid/gid (only as root, or in a user namespace mapping them).
    pub preserve_owners: bool,
    /// Apply into an empty directory in overlayfs' on-disk format (a committed snapshot, see
    /// `store::snapshots`) instead of onto a tree: a whiteout becomes a 0/0 character device (the
    /// kernel lets anyone make one since Linux 5.8, `vfs_mknod`'s `is_whiteout`), an opaque marker
    /// sets this xattr to `y`: `trusted.overlay.opaque`, or `user.overlay.opaque` for overlays
    /// mounted with `userxattr` (`exec::overlay_opaque_xattr` says which). Only one: overlay
    /// copies a lower directory's xattrs up, and a marker it does not read would travel into a
    /// RUN's upper directory and read as opaque there.
    pub overlay_opaque_xattr: Option<&'static str>,
}

/// What applying a layer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub devices: u64,
    pub fifos: u64,
    pub whiteouts: u64,
    pub opaques: u64,
    /// Device entries not created because `allow_devices` was off.
    pub skipped_devices: Vec<String>,
    /// xattrs the filesystem or our privileges refused.
    pub skipped_xattrs: u64,
    /// Owners whose ids are not mapped here, kept in [`OWNER_XATTR`](super::OWNER_XATTR) instead.
    pub recorded_owners: u64,
}

type Head<R> = Chain<Cursor<Vec<u8>>, R>;

enum Decoded<R: Read> {
    Gzip(Box<flate2::read::MultiGzDecoder<BufReader<Head<R>>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Head<R>>>>),
    Plain(Head<R>),
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Gzip(d) => d.read(buf),
            Decoded::Zstd(d) => d.read(buf),
            Decoded::Plain(d) => d.read(buf),
        }
    }
}

/// Apply one layer blob (gzip, zstd or plain tar) to `dest`.
pub fn apply_layer<R: Read>(
    mut blob: R,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, LayerError> {
    let read_err = |source| LayerError::ReadArchive { source };
    let mut magic = Vec::with_capacity(super::sniff::SNIFF_LEN);
    (&mut blob)
        .take(super::sniff::SNIFF_LEN as u64)
        .read_to_end(&mut magic)
        .map_err(read_err)?;
    let kind = super::sniff::Compressed::sniff(&magic);
    let head = Cursor::new(magic).chain(blob);
    let decoded = match kind {
        super::sniff::Compressed::Gzip => Decoded::Gzip(Box::new(
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(128 * 1024, head)),
        )),
        super::sniff::Compressed::Zstd => Decoded::Zstd(Box::new(
            zstd::stream::read::Decoder::new(head).map_err(read_err)?,
        )),
        // Layers are gzip, zstd or plain (OCI image spec); anything else is read as a tar and
        // fails as one.
        _ => Decoded::Plain(head),
    };
    let mut archive = ::tar::Archive::new(HashingReader::new(decoded));
    let mut ex = Extractor {
        dest,
        opts,
        unpacked: HashSet::new(),
        dirs: Vec::new(),
        buf: vec![0u8; 128 * 1024],
        stats: Counts::default(),
    };
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        ex.entry(&mut entry)?;
    }
    ex.finish_dirs()?;
    let mut hashing = archive.into_inner();
    // The end-of-archive blocks (and any padding after them) are part of the diff_id.
    io::copy(&mut hashing, &mut io::sink()).map_err(read_err)?;
    let (_, diff_id, uncompressed_size) = hashing.finish();
    let c = ex.stats;
    Ok(ApplyStats {
        diff_id,
        uncompressed_size,
        files: c.files,
        dirs: c.dirs,
        symlinks: c.symlinks,
        hardlinks: c.hardlinks,
        devices: c.devices,
        fifos: c.fifos,
        whiteouts: c.whiteouts,
        opaques: c.opaques,
        skipped_devices: c.skipped_devices,
        skipped_xattrs: c.skipped_xattrs,
        recorded_owners: c.recorded_owners,
    })
}

#[derive(Default)]
struct Counts {
    files: u64,
    dirs: u64,
    symlinks: u64,
    hardlinks: u64,
    devices: u64,
    fifos: u64,
    whiteouts: u64,
    opaques: u64,
    skipped_devices: Vec<String>,
    skipped_xattrs: u64,
    recorded_owners: u64,
}

/// Metadata applied once the entry's content exists.
struct Attrs {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Extractor<'a> {
    dest: &'a Path,
    opts: &'a ApplyOptions,
    /// Paths (relative, `/`-joined) this layer created, which an opaque marker must keep.
    unpacked: HashSet<Vec<u8>>,
    /// Directories whose mode and mtime are applied at the end, by relative path.
    dirs: Vec<(Vec<u8>, String, Attrs)>,
    buf: Vec<u8>,
    stats: Counts,
}

/// Split a tar path into its components: leading `/`, `.` and empty components dropped, `..` refused.
fn components(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("a `..` component could leave the destination"),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn extract_err(
    entry: &str,
    action: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> LayerError {
    let entry = entry.to_string();
    let path = path.to_path_buf();
    move |source| LayerError::Extract {
        entry,
        action,
        path,
        source,
    }
}

/// An entry's mode, owners, mtime and `SCHILY.xattr.*` PAX records, and its device numbers.
/// Like Go's archive/tar, an empty (all-NUL) numeric field reads as 0; only the mode must parse.
fn entry_attrs<R: Read>(
    e: &mut ::tar::Entry<'_, R>,
    name: &str,
) -> Result<(Attrs, (u32, u32)), LayerError> {
    let header_err = |e: io::Error| LayerError::BadEntry {
        entry: name.to_string(),
        reason: e.to_string(),
    };
    let hdr = e.header();
    let mut attrs = Attrs {
        mode: hdr.mode().map_err(header_err)? & 0o7777,
        uid: hdr.uid().unwrap_or(0),
        gid: hdr.gid().unwrap_or(0),
        mtime: hdr.mtime().unwrap_or(0) as i64,
        xattrs: Vec::new(),
    };
    let dev = (
        hdr.device_major().ok().flatten().unwrap_or(0),
        hdr.device_minor().ok().flatten().unwrap_or(0),
    );
    if let Some(exts) = e.pax_extensions().map_err(header_err)? {
        for ext in exts.flatten() {
            if let Ok(key) = ext.key() {
                if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                    attrs
                        .xattrs
                        .push((x.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok((attrs, dev))
}

impl Extractor<'_> {
    fn entry<R: Read>(&mut self, e: &mut ::tar::Entry<'_, R>) -> Result<(), LayerError> {
        let raw = e.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let kind = e.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(());
        }
        let comps = components(&raw).map_err(|reason| LayerError::Escape {
            entry: name.clone(),
            reason: reason.to_string(),
        })?;
        let Some((base, parents)) = comps.split_last() else {
            return Ok(()); // the root itself: `dest` keeps its own metadata
        };
        let rel = comps.join(&b'/');
        if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&name, parents, base, hidden);
        }
        let parent = self.parents(&name, parents, true)?;
        let target = parent.join(OsStr::from_bytes(base));
        let (attrs, dev) = entry_attrs(e, &name)?;
        let link = e.link_name_bytes().map(|l| l.into_owned());
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(md) if md.is_dir() => {}
                    _ => {
                        self.clear(&name, &target)?;
                        fs::create_dir(&target).map_err(extract_err(
                            &name,
                            "creating directory",
                            &target,
                        ))?;
                    }
                }
                self.stats.dirs += 1;
                self.dirs.push((rel.clone(), name, attrs));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.clear(&name, &target)?;
                self.write_file(&name, &target, e)?;
                self.attrs(&name, &target, &attrs, false)?;
                self.stats.files += 1;
            }
            EntryType::Symlink => {
                let link = link.ok_or_else(|| LayerError::BadEntry {
                    entry: name.clone(),
                    reason: "symlink without a target".into(),
                })?;
                self.clear(&name, &target)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target)
                    .map_err(extract_err(&name, "creating symlink", &target))?;
                self.attrs(&name, &target, &attrs, true)?;
                self.stats.symlinks += 1;
            }
            EntryType::Link => {
                let link = link.ok_or_else(|| LayerError::BadEntry {
                    entry: name.clone(),
                    reason: "hardlink without a target".into(),
                })?;
                self.hardlink(&name, &target, &link)?;
                self.stats.hardlinks += 1;
            }
            EntryType::Char | EntryType::Block => {
                if !self.opts.allow_devices {
                    self.stats.skipped_devices.push(name);
                    return Ok(());
                }
                let ft = if kind == EntryType::Char {
                    rustix::fs::FileType::CharacterDevice
                } else {
                    rustix::fs::FileType::BlockDevice
                };
                self.clear(&name, &target)?;
                let dev = rustix::fs::makedev(dev.0, dev.1);
                self.mknod(&name, &target, ft, attrs.mode, dev)?;
                self.attrs(&name, &target, &attrs, false)?;
                self.stats.devices += 1;
            }
            EntryType::Fifo => {
                self.clear(&name, &target)?;
                self.mknod(&name, &target, rustix::fs::FileType::Fifo, attrs.mode, 0)?;
                self.attrs(&name, &target, &attrs, false)?;
                self.stats.fifos += 1;
            }
            other => {
                return Err(LayerError::BadEntry {
                    entry: name,
                    reason: format!("unsupported tar entry type {:?}", other.as_byte() as char),
                })
            }
        }
        self.unpacked.insert(rel);
        Ok(())
    }

    /// Walk `comps` under `dest` without following symlinks. Missing directories are created when
    /// `create` (and recorded as this layer's), otherwise `None` is returned.
    fn walk(
        &mut self,
        name: &str,
        comps: &[&[u8]],
        create: bool,
    ) -> Result<Option<PathBuf>, LayerError> {
        let mut p = self.dest.to_path_buf();
        for (i, c) in comps.iter().enumerate() {
            p.push(OsStr::from_bytes(c));
            let rel = || String::from_utf8_lossy(&comps[..=i].join(&b'/')).into_owned();
            match fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => {}
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(LayerError::Escape {
                        entry: name.to_string(),
                        reason: format!("its path goes through the symlink {:?}", rel()),
                    })
                }
                Ok(_) => {
                    return Err(LayerError::BadEntry {
                        entry: name.to_string(),
                        reason: format!("{:?} is not a directory", rel()),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&p).map_err(extract_err(
                        name,
                        "creating parent directory",
                        &p,
                    ))?;
                    self.unpacked.insert(comps[..=i].join(&b'/'));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(extract_err(name, "inspecting", &p)(e)),
            }
        }
        Ok(Some(p))
    }

    fn parents(
        &mut self,
        name: &str,
        comps: &[&[u8]],
        create: bool,
    ) -> Result<PathBuf, LayerError> {
        self.walk(name, comps, create)?
            .ok_or_else(|| LayerError::BadEntry {
                entry: name.to_string(),
                reason: "a parent directory is missing".into(),
            })
    }

    /// Remove whatever is at `target` (never following a symlink there).
    fn clear(&self, name: &str, target: &Path) -> Result<(), LayerError> {
        match fs::symlink_metadata(target) {
            Ok(md) if md.is_dir() => fs::remove_dir_all(target),
            Ok(_) => fs::remove_file(target),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
        .map_err(extract_err(name, "removing", target))
    }

    fn whiteout(
        &mut self,
        name: &str,
        parents: &[&[u8]],
        base: &[u8],
        hidden: &[u8],
    ) -> Result<(), LayerError> {
        // A whiteout names a sibling in its own directory. `.wh.` names the directory itself and
        // `.wh..` / `.wh...` resolve to it or its parent, so removing "the hidden entry" would
        // delete the destination or what lies beside it. containerd's `validateWhiteout`
        // (pkg/archive/tar.go) refuses any whiteout whose joined path is not strictly inside its
        // directory; these three names are exactly those (a component holds no `/`).
        if matches!(hidden, b"" | b"." | b"..") {
            return Err(LayerError::Escape {
                entry: name.to_string(),
                reason: "a whiteout must name an entry inside its directory".into(),
            });
        }
        if let Some(xattr) = self.opts.overlay_opaque_xattr {
            return self.overlay_whiteout(name, parents, base, hidden, xattr);
        }
        // Nothing to hide when the directory does not exist; a symlinked parent is still refused.
        let Some(dir) = self.walk(name, parents, false)? else {
            return Ok(());
        };
        if base == OPAQUE_MARKER.as_bytes() {
            let prefix = parents.join(&b'/');
            let list = fs::read_dir(&dir).map_err(extract_err(name, "listing", &dir))?;
            for child in list {
                let child = child.map_err(extract_err(name, "listing", &dir))?;
                let mut rel = prefix.clone();
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(child.file_name().as_bytes());
                if !self.unpacked.contains(&rel) {
                    self.clear(name, &child.path())?;
                }
            }
            self.stats.opaques += 1;
        } else if !hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            self.clear(name, &dir.join(OsStr::from_bytes(hidden)))?;
            self.stats.whiteouts += 1;
        }
        Ok(())
    }

    /// A whiteout in overlayfs' format (`ApplyOptions::overlay_opaque_xattr`): the directory is
    /// this layer's own (created when the tar names no entry for it), and the marker hides what
    /// the lower snapshots have when the overlay is mounted.
    fn overlay_whiteout(
        &mut self,
        name: &str,
        parents: &[&[u8]],
        base: &[u8],
        hidden: &[u8],
        xattr: &str,
    ) -> Result<(), LayerError> {
        let dir = self.parents(name, parents, true)?;
        if base == OPAQUE_MARKER.as_bytes() {
            xattr::set(&dir, xattr, b"y").map_err(extract_err(name, "marking opaque", &dir))?;
            self.stats.opaques += 1;
            return Ok(());
        }
        if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return Ok(());
        }
        let mut rel = parents.join(&b'/');
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(hidden);
        if self.unpacked.contains(&rel) {
            return Ok(()); // this layer's own entry of that name stays
        }
        let target = dir.join(OsStr::from_bytes(hidden));
        self.clear(name, &target)?;
        let ft = rustix::fs::FileType::CharacterDevice;
        self.mknod(name, &target, ft, 0, rustix::fs::makedev(0, 0))?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn hardlink(&mut self, name: &str, target: &Path, link: &[u8]) -> Result<(), LayerError> {
        let escape = |reason: String| LayerError::Escape {
            entry: name.to_string(),
            reason,
        };
        let comps = components(link).map_err(|r| escape(format!("hardlink target: {r}")))?;
        let Some((base, parents)) = comps.split_last() else {
            return Err(escape("hardlink to the root directory".into()));
        };
        let missing = || LayerError::BadEntry {
            entry: name.to_string(),
            reason: format!(
                "hardlink target {:?} does not exist",
                String::from_utf8_lossy(link)
            ),
        };
        let dir = self.walk(name, parents, false)?.ok_or_else(missing)?;
        let source = dir.join(OsStr::from_bytes(base));
        match fs::symlink_metadata(&source) {
            Ok(md) if md.is_dir() => {
                return Err(LayerError::BadEntry {
                    entry: name.to_string(),
                    reason: "hardlink to a directory".into(),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(extract_err(name, "inspecting", &source)(e)),
        }
        if source == target {
            return Ok(());
        }
        self.clear(name, target)?;
        // linkat(2) without AT_SYMLINK_FOLLOW: a symlink source is linked itself, never followed.
        fs::hard_link(&source, target).map_err(extract_err(name, "creating hardlink", target))
    }

    fn write_file<R: Read>(
        &mut self,
        name: &str,
        target: &Path,
        e: &mut R,
    ) -> Result<(), LayerError> {
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(target)
            .map_err(extract_err(name, "creating file", target))?;
        loop {
            let n = match e.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(LayerError::ReadArchive { source }),
            };
            f.write_all(&self.buf[..n])
                .map_err(extract_err(name, "writing file", target))?;
        }
        Ok(())
    }

    fn mknod(
        &self,
        name: &str,
        target: &Path,
        ft: rustix::fs::FileType,
        mode: u32,
        dev: u64,
    ) -> Result<(), LayerError> {
        let mode = rustix::fs::Mode::from_raw_mode(mode & 0o777);
        rustix::fs::mknodat(rustix::fs::CWD, target, ft, mode, dev)
            .map_err(|e| extract_err(name, "creating special file", target)(e.into()))
    }

    /// Owner, then mode (chown clears setuid bits), then xattrs (chown clears security.capability),
    /// then mtime.
    fn attrs(
        &mut self,
        name: &str,
        path: &Path,
        a: &Attrs,
        symlink: bool,
    ) -> Result<(), LayerError> {
        if self.opts.preserve_owners {
            let (uid, gid) = (a.uid as u32, a.gid as u32);
            match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
                // A directory applied over one of a lower layer may hold a stale recorded owner.
                Ok(()) if !symlink => {
                    let _ = xattr::remove(path, OWNER_XATTR);
                }
                Ok(()) => {}
                // EINVAL: an id not mapped in our user namespace; EPERM: root without
                // CAP_CHOWN (chown(2)). Kept beside the file instead (symlinks cannot hold
                // user.* xattrs; theirs stays ours).
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EPERM)) => {
                    self.stats.recorded_owners += 1;
                    if !symlink {
                        xattr::set(path, OWNER_XATTR, format!("{uid}:{gid}").as_bytes())
                            .map_err(extract_err(name, "recording the owner of", path))?;
                    }
                }
                Err(e) => return Err(extract_err(name, "changing owner of", path)(e)),
            }
        }
        if !symlink {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(a.mode)).map_err(extract_err(
                name,
                "changing mode of",
                path,
            ))?;
        }
        for (k, v) in &a.xattrs {
            // overlayfs' own markers are never a layer's to set: in a snapshot they would turn
            // a file into a whiteout or hide a lower directory.
            // Nor is kiln's own recorded owner: a layer carrying one would forge the owner a
            // later RUN's layer gives the file.
            let private = [
                "trusted.overlay.",
                "user.overlay.",
                "user.fuseoverlayfs.",
                OWNER_XATTR,
            ];
            if private.iter().any(|p| k.starts_with(p)) {
                self.stats.skipped_xattrs += 1;
                continue;
            }
            if xattr::set(path, k, v).is_err() {
                self.stats.skipped_xattrs += 1;
            }
        }
        let t = FileTime::from_unix_time(a.mtime, 0);
        filetime::set_symlink_file_times(path, t, t).map_err(extract_err(
            name,
            "setting mtime of",
            path,
        ))
    }

    /// Directory metadata, deepest first, once every child exists.
    fn finish_dirs(&mut self) -> Result<(), LayerError> {
        let dirs = std::mem::take(&mut self.dirs);
        for (rel, name, a) in dirs.iter().rev() {
            // A later entry of this layer may have replaced or removed it.
            if let Some(path) = self.still_dir(rel) {
                self.attrs(name, &path, a, false)?;
            }
        }
        Ok(())
    }

    /// `dest/rel` if every component on the way is still a real directory. A later entry may
    /// have replaced an ancestor with a symlink (`a/sub/` then `a -> /etc`): a path checked only
    /// at its end would then chmod, chown and touch `/etc/sub`. containerd re-resolves these
    /// deferred directories with `fs.RootPath` (scoped to the root) before its chtimes
    /// (pkg/archive/tar.go, `applyNaive`); kiln, which never resolves links while extracting,
    /// skips a directory that is no longer there.
    fn still_dir(&self, rel: &[u8]) -> Option<PathBuf> {
        let mut p = self.dest.to_path_buf();
        for c in rel.split(|b| *b == b'/') {
            p.push(OsStr::from_bytes(c));
            if !fs::symlink_metadata(&p).is_ok_and(|md| md.is_dir()) {
                return None;
            }
        }
        Some(p)
    }
}
