//! `ADD <URL>`: download the file, as BuildKit's HTTP source does (`source/http/source.go`,
//! `frontend/dockerfile/dockerfile2llb/convert_copy.go`): the file is named after the last
//! component of the URL path (`__unnamed__` when there is none), written mode 0600 (`--chmod`
//! changes it), not unpacked unless `--unpack=true`, and checked against `--checksum` (a digest;
//! a mismatch fails with "digest mismatch"). Each URL is fetched once per build: the step's cache
//! key is its URL and content digest, the copy reads the same file.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingWriter};

#[derive(Debug, thiserror::Error)]
pub(crate) enum UrlError {
    #[error("downloading {url}: {source}")]
    Get {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("downloading {url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("downloading {url} into {path}: {source}")]
    Io {
        url: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid --checksum {value:?}: want sha256:<64 hex digits>")]
    BadChecksum { value: String },
    #[error("digest mismatch for {url}: {got} (expected: {want})")]
    Mismatch {
        url: String,
        got: String,
        want: String,
    },
}

/// `path.Base(u.Path)` of the URL, or `__unnamed__` (convert_copy.go).
pub(crate) fn file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let path = path.split(['?', '#']).next().unwrap_or("");
    match path.trim_end_matches('/').rsplit('/').next() {
        Some(b) if !b.is_empty() && b != "." => b.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

/// A downloaded file and its sha256.
pub(crate) struct Downloaded {
    pub path: PathBuf,
    pub digest: Digest,
}

/// Download `url` into `dir` (once: a second call for the same URL reads what the first wrote).
pub(crate) fn fetch(dir: &Path, url: &str, checksum: Option<&str>) -> Result<Downloaded, UrlError> {
    let want = match checksum {
        None => None,
        Some(c) => match c.strip_prefix("sha256:") {
            Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(format!("sha256:{}", h.to_ascii_lowercase()))
            }
            _ => {
                return Err(UrlError::BadChecksum {
                    value: c.to_string(),
                })
            }
        },
    };
    let slot = dir.join(Digest::of(url.as_bytes()).hex());
    let path = slot.join(file_name(url));
    let io_err = |path: &Path, source| UrlError::Io {
        url: url.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let digest = match fs::read_to_string(slot.join(".digest")) {
        Ok(d) => d
            .parse::<Digest>()
            .map_err(|e| io_err(&slot, io::Error::other(e)))?,
        Err(_) => {
            fs::create_dir_all(&slot).map_err(|e| io_err(&slot, e))?;
            let d = download(url, &path)?;
            fs::write(slot.join(".digest"), d.to_string()).map_err(|e| io_err(&slot, e))?;
            d
        }
    };
    if let Some(want) = want {
        if digest.to_string() != want {
            return Err(UrlError::Mismatch {
                url: url.to_string(),
                got: digest.to_string(),
                want,
            });
        }
    }
    Ok(Downloaded { path, digest })
}

fn download(url: &str, path: &Path) -> Result<Digest, UrlError> {
    let get_err = |source| UrlError::Get {
        url: url.to_string(),
        source,
    };
    let io_err = |source| UrlError::Io {
        url: url.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .map_err(get_err)?;
    let mut resp = client.get(url).send().map_err(get_err)?;
    if !resp.status().is_success() {
        return Err(UrlError::Status {
            url: url.to_string(),
            status: resp.status().as_u16(),
        });
    }
    let file = fs::File::create(path).map_err(io_err)?;
    let mut w = HashingWriter::new(io::BufWriter::new(file));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        w.write_all(&buf[..n]).map_err(io_err)?;
    }
    let (mut inner, digest, _) = w.finish();
    inner.flush().map_err(io_err)?;
    // BuildKit's HTTP source writes the file 0600 (`perm := 0600`).
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_path_base() {
        assert_eq!(file_name("http://h/a/b.tar.gz"), "b.tar.gz");
        assert_eq!(file_name("https://h/a/b?x=1"), "b");
        assert_eq!(file_name("https://h/"), "__unnamed__");
        assert_eq!(file_name("https://h"), "__unnamed__");
        assert_eq!(file_name("https://h/dir/"), "dir");
    }
}
