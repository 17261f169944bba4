//! The deterministic tar writer: a [`ChangeSet`] → one POSIX (ustar + PAX) tar stream.
//!
//! Same input → byte-identical tar: entries sorted by layer path; uid/gid/mode from the file (or the
//! change set's owner overrides, set-wide then per path), empty uname/gname, integral mtimes clamped
//! to `SOURCE_DATE_EPOCH`
//! when given; no atime/ctime; PAX extended headers (named `PaxHeaders.0/<base>` as Go's archive/tar
//! does, mtime 0) only when needed: `path`/`linkpath` longer than the 100-byte ustar fields, `uid`/`gid`
//! above 2097151, `size` above 8 GiB, and `SCHILY.xattr.<name>` for extended attributes (sorted by name).
//! Directories end in `/`. A regular file whose (dev, ino) was already archived becomes a hardlink to the
//! first path. Sockets are skipped (tar cannot carry them; Docker skips them too).
//!
//! xattrs carried: all but `security.selinux` (a host label; it would make layers differ between hosts),
//! `system.*` (ACLs, kernel-encoded) and `trusted.overlay.*` / `user.overlay.*` (overlayfs internals);
//! `user.kiln.owner` is not carried but read as the entry's owner (see `layer::OWNER_XATTR`).
//!
//! Must not: compress, hash, or follow symlinks in the source tree.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::{Attrs, Change, ChangeSet, LayerError, Overrides};

const BLOCK: usize = 512;
/// Largest value of an 8-byte octal field (7 digits + NUL).
const MAX_OCTAL_8: u64 = 0o7777777;
/// Largest value of a 12-byte octal field (11 digits + NUL).
const MAX_OCTAL_12: u64 = 0o77777777777;

/// Write the whole change set as a tar stream into `out`.
pub(crate) fn write_tar<W: Write>(
    changes: &ChangeSet,
    source_date_epoch: Option<i64>,
    out: W,
) -> Result<W, LayerError> {
    let mut w = TarWriter {
        out,
        links: HashMap::new(),
        buf: vec![0u8; 128 * 1024],
        owner: changes.owner(),
        sde: source_date_epoch,
    };
    for (name, change) in changes.sorted()? {
        match change {
            Change::Add { source, .. } => {
                let how = How {
                    owner: changes.owner_of(&name),
                    attrs: Overrides::default(),
                    link_group: 0,
                };
                w.add(&name, source, how)?
            }
            Change::Copied {
                source,
                attrs,
                link_group,
                ..
            } => {
                let how = How {
                    owner: changes.owner_of(&name),
                    attrs: *attrs,
                    link_group: *link_group,
                };
                w.add(&name, source, how)?
            }
            Change::Made { attrs, content, .. } => w.made(&name, attrs, content.as_deref())?,
            Change::Whiteout { .. } | Change::Opaque { .. } => {
                let meta = Meta::marker(source_date_epoch.unwrap_or(0));
                w.header(&name, &meta).map_err(tar_err)?;
            }
        }
    }
    w.out.write_all(&[0u8; 2 * BLOCK]).map_err(tar_err)?;
    Ok(w.out)
}

fn tar_err(source: io::Error) -> LayerError {
    LayerError::WriteTar { source }
}

struct Meta {
    kind: ::tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    size: u64,
    link: Option<Vec<u8>>,
    dev: Option<(u32, u32)>,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    /// Whiteout and opaque markers: empty regular files, mode 0, owned by 0:0.
    fn marker(mtime: i64) -> Meta {
        Meta {
            kind: ::tar::EntryType::Regular,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime,
            size: 0,
            link: None,
            dev: None,
            xattrs: Vec::new(),
        }
    }
}

/// How one entry with a source on disk is archived, besides what its metadata says.
struct How {
    /// Per-path owner override (`ChangeSet::set_owner`), after the set-wide one.
    owner: (Option<u32>, Option<u32>),
    attrs: Overrides,
    /// Files become hard links only to earlier entries of the same group.
    link_group: u32,
}

struct TarWriter<W> {
    out: W,
    /// (link group, dev, ino) → first layer path, for files with more than one link.
    links: HashMap<(u32, u64, u64), String>,
    buf: Vec<u8>,
    owner: Option<(u32, u32)>,
    sde: Option<i64>,
}

impl<W: Write> TarWriter<W> {
    /// An entry the step made up: a directory, or a file whose bytes are `content`.
    fn made(&mut self, name: &str, a: &Attrs, content: Option<&[u8]>) -> Result<(), LayerError> {
        let mut meta = Meta::marker(self.sde.map_or(a.mtime, |e| a.mtime.min(e)));
        meta.mode = a.mode & 0o7777;
        meta.uid = u64::from(a.uid);
        meta.gid = u64::from(a.gid);
        match content {
            None => {
                meta.kind = ::tar::EntryType::Directory;
                self.header(&format!("{name}/"), &meta).map_err(tar_err)
            }
            Some(bytes) => {
                meta.size = bytes.len() as u64;
                self.header(name, &meta).map_err(tar_err)?;
                self.out.write_all(bytes).map_err(tar_err)?;
                pad(&mut self.out, meta.size).map_err(tar_err)
            }
        }
    }

    fn add(&mut self, name: &str, source: &Path, how: How) -> Result<(), LayerError> {
        let over = how.owner;
        let md = std::fs::symlink_metadata(source).map_err(|e| LayerError::Stat {
            path: source.to_path_buf(),
            source: e,
        })?;
        let ft = md.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        let (uid, gid) = match self.owner {
            Some((u, g)) => (u as u64, g as u64),
            None => recorded_owner(source, &ft).unwrap_or((md.uid() as u64, md.gid() as u64)),
        };
        let uid = over.0.map_or(uid, u64::from);
        let gid = over.1.map_or(gid, u64::from);
        let mtime = how.attrs.mtime.unwrap_or(md.mtime());
        let mtime = match self.sde {
            Some(e) => mtime.min(e),
            None => mtime,
        };
        let mut meta = Meta {
            kind: ::tar::EntryType::Regular,
            mode: how.attrs.mode.unwrap_or(md.mode()) & 0o7777,
            uid,
            gid,
            mtime,
            size: 0,
            link: None,
            dev: None,
            xattrs: read_xattrs(source)?,
        };
        let mut entry_name = name.to_string();
        if ft.is_dir() {
            meta.kind = ::tar::EntryType::Directory;
            entry_name.push('/');
        } else if ft.is_symlink() {
            meta.kind = ::tar::EntryType::Symlink;
            let target = std::fs::read_link(source).map_err(|e| LayerError::ReadLink {
                path: source.to_path_buf(),
                source: e,
            })?;
            meta.link = Some(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec());
        } else if ft.is_char_device() || ft.is_block_device() {
            meta.kind = if ft.is_char_device() {
                ::tar::EntryType::Char
            } else {
                ::tar::EntryType::Block
            };
            let rdev = md.rdev();
            meta.dev = Some((rustix::fs::major(rdev), rustix::fs::minor(rdev)));
        } else if ft.is_fifo() {
            meta.kind = ::tar::EntryType::Fifo;
        } else if ft.is_file() {
            if md.nlink() > 1 {
                let inode = (how.link_group, md.dev(), md.ino());
                if let Some(first) = self.links.get(&inode) {
                    meta.kind = ::tar::EntryType::Link;
                    meta.link = Some(first.as_bytes().to_vec());
                    meta.xattrs.clear();
                    return self.header(&entry_name, &meta).map_err(tar_err);
                }
                self.links.insert(inode, name.to_string());
            }
            meta.size = md.size();
            self.header(&entry_name, &meta).map_err(tar_err)?;
            return self.copy_file(source, &md);
        }
        self.header(&entry_name, &meta).map_err(tar_err)
    }

    /// Copy exactly the size recorded in the header, then pad to the 512-byte block.
    fn copy_file(&mut self, source: &Path, md: &Metadata) -> Result<(), LayerError> {
        let read_err = |e| LayerError::ReadSource {
            path: source.to_path_buf(),
            source: e,
        };
        let mut f = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(source)
            .map_err(read_err)?;
        let expected = md.size();
        let mut left = expected;
        while left > 0 {
            let want = (self.buf.len() as u64).min(left) as usize;
            let n = match f.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(LayerError::SourceChanged {
                        path: source.to_path_buf(),
                        expected,
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e)),
            };
            self.out.write_all(&self.buf[..n]).map_err(tar_err)?;
            left -= n as u64;
        }
        let mut probe = [0u8; 1];
        if f.read(&mut probe).map_err(read_err)? != 0 {
            return Err(LayerError::SourceChanged {
                path: source.to_path_buf(),
                expected,
            });
        }
        pad(&mut self.out, expected).map_err(tar_err)
    }

    fn header(&mut self, name: &str, m: &Meta) -> io::Result<()> {
        let mut pax: Vec<u8> = Vec::new();
        let name_b = name.as_bytes();
        if name_b.len() > 100 {
            pax_record(&mut pax, "path", name_b);
        }
        if let Some(link) = &m.link {
            if link.len() > 100 {
                pax_record(&mut pax, "linkpath", link);
            }
        }
        if m.uid > MAX_OCTAL_8 {
            pax_record(&mut pax, "uid", m.uid.to_string().as_bytes());
        }
        if m.gid > MAX_OCTAL_8 {
            pax_record(&mut pax, "gid", m.gid.to_string().as_bytes());
        }
        if m.size > MAX_OCTAL_12 {
            pax_record(&mut pax, "size", m.size.to_string().as_bytes());
        }
        for (k, v) in &m.xattrs {
            pax_record(&mut pax, &format!("SCHILY.xattr.{k}"), v);
        }
        if !pax.is_empty() {
            let base = name.trim_end_matches('/');
            let base = base.rsplit('/').next().unwrap_or(base);
            let mut pname = format!("PaxHeaders.0/{base}");
            truncate_utf8(&mut pname, 100);
            let h = raw_header(
                pname.as_bytes(),
                None,
                ::tar::EntryType::XHeader,
                0,
                0,
                0,
                0,
                pax.len() as u64,
                None,
            )?;
            self.out.write_all(h.as_bytes())?;
            self.out.write_all(&pax)?;
            pad(&mut self.out, pax.len() as u64)?;
        }
        let h = raw_header(
            name_b,
            m.link.as_deref(),
            m.kind,
            m.mode,
            m.uid,
            m.gid,
            m.mtime,
            m.size,
            m.dev,
        )?;
        self.out.write_all(h.as_bytes())
    }
}

#[allow(clippy::too_many_arguments)]
fn raw_header(
    name: &[u8],
    link: Option<&[u8]>,
    kind: ::tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    size: u64,
    dev: Option<(u32, u32)>,
) -> io::Result<::tar::Header> {
    let mut h = ::tar::Header::new_ustar();
    // Over-long values went into PAX records; the ustar fields get a truncated or zero stand-in.
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    if let Some(link) = link {
        let n = link.len().min(100);
        h.as_old_mut().linkname[..n].copy_from_slice(&link[..n]);
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(if uid > MAX_OCTAL_8 { 0 } else { uid });
    h.set_gid(if gid > MAX_OCTAL_8 { 0 } else { gid });
    h.set_mtime((mtime.max(0) as u64).min(MAX_OCTAL_12));
    h.set_size(if size > MAX_OCTAL_12 { 0 } else { size });
    if let Some((major, minor)) = dev {
        h.set_device_major(major)?;
        h.set_device_minor(minor)?;
    }
    h.set_cksum();
    Ok(h)
}

/// Append one PAX record `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body + 1;
    while body + len.to_string().len() != len {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn pad<W: Write>(out: &mut W, len: u64) -> io::Result<()> {
    let rem = (len % BLOCK as u64) as usize;
    if rem != 0 {
        out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// The owner a single-uid kiln could not apply on disk ([`OWNER_XATTR`](super::OWNER_XATTR)).
fn recorded_owner(path: &Path, ft: &std::fs::FileType) -> Option<(u64, u64)> {
    if ft.is_symlink() {
        return None;
    }
    let v = xattr::get(path, super::OWNER_XATTR).ok()??;
    let (u, g) = std::str::from_utf8(&v).ok()?.split_once(':')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}

fn xattr_carried(name: &str) -> bool {
    !(name == "security.selinux"
        || name == super::OWNER_XATTR
        || name.starts_with("system.")
        || name.starts_with("trusted.overlay.")
        || name.starts_with("user.overlay."))
}

/// The carried xattrs of `path` (not following symlinks), sorted by name.
fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>, LayerError> {
    let err = |e| LayerError::ReadXattr {
        path: path.to_path_buf(),
        source: e,
    };
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.kind() == io::ErrorKind::Unsupported => return Ok(Vec::new()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut out = Vec::new();
    for name in names {
        let Some(key) = name.to_str() else { continue };
        if !xattr_carried(key) {
            continue;
        }
        if let Some(value) = xattr::get(path, &name).map_err(err)? {
            out.push((key.to_string(), value));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        for value_len in [0usize, 1, 5, 6, 7, 90, 95, 96, 97, 995, 996, 997] {
            let mut out = Vec::new();
            pax_record(&mut out, "path", &vec![b'x'; value_len]);
            let text = String::from_utf8(out.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), out.len(), "{text}");
        }
    }
}
