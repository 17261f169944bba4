//! `kiln build -` and `-f -`, as `docker build` reads them: standard input is read once, before
//! the build, into a private temporary directory. For a context (`-`) it is a tar (plain or gzip)
//! unpacked there, or else a Dockerfile with an empty context; for `-f -` it is the Dockerfile.
//!
//! Must not: follow links out of the directory (tar's `unpack` refuses `..`, absolute names and
//! writes through symlinks) or keep anything after the build (the directory is removed on drop).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{bail, Context as _, Result};

use super::BuildArgs;

/// What standard input held; the directory lives as long as this.
pub(super) struct Stdin {
    _dir: tempfile::TempDir,
}

/// Reads stdin when `args` ask for it and points them at what it held.
pub(super) fn take(args: &mut BuildArgs) -> Result<Option<Stdin>> {
    let ctx_stdin = args.df.context == Path::new("-");
    let file_stdin = args.df.file.as_deref() == Some(Path::new("-"));
    if !ctx_stdin && !file_stdin {
        return Ok(None);
    }
    if ctx_stdin && file_stdin {
        bail!("cannot read both the build context and the Dockerfile from stdin (- and -f -)");
    }
    if file_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the Dockerfile from stdin")?;
        args.df.file = None;
        args.stdin_dockerfile = Some(text);
        return Ok(None);
    }
    let dir = tempfile::Builder::new()
        .prefix("kiln-stdin-")
        .tempdir()
        .context("creating a directory for the context on stdin")?;
    let ctx = dir.path().join("context");
    std::fs::create_dir(&ctx).with_context(|| format!("creating {}", ctx.display()))?;
    let mut spool = tempfile::tempfile_in(dir.path()).context("spooling stdin")?;
    std::io::copy(&mut std::io::stdin().lock(), &mut spool).context("reading stdin")?;
    spool.seek(SeekFrom::Start(0))?;
    let mut head = [0u8; 512];
    let n = read_up_to(&mut spool, &mut head)?;
    spool.seek(SeekFrom::Start(0))?;
    if head[..n].starts_with(&[0x1f, 0x8b]) {
        unpack(flate2::read::GzDecoder::new(spool), &ctx)?;
    } else if n >= 262 && &head[257..262] == b"ustar" {
        unpack(spool, &ctx)?;
    } else {
        // Not an archive: docker build reads it as the Dockerfile, with an empty context.
        let mut text = String::new();
        spool
            .read_to_string(&mut text)
            .context("reading the Dockerfile from stdin (it is not a tar archive)")?;
        args.stdin_dockerfile = Some(text);
    }
    args.df.context = ctx;
    Ok(Some(Stdin { _dir: dir }))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn unpack(r: impl Read, dest: &Path) -> Result<()> {
    let mut a = tar::Archive::new(r);
    a.set_preserve_permissions(true);
    a.unpack(dest)
        .context("unpacking the context tar from stdin")
}
