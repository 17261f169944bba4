//! The one place that tells a compressed stream by its first bytes: gzip, bzip2, xz, zstd or none.
//! Layer application (gzip, zstd, plain) and ADD's archive detection (all five, like
//! moby/go-archive's `compression.DetectCompression`, which BuildKit's `isArchivePath` uses) both
//! ask here, so the magic numbers are written down once.

use std::io::{self, BufReader, Read};

/// How a stream is compressed, judged from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressed {
    Gzip,
    Bzip2,
    Xz,
    Zstd,
    None,
}

/// How many leading bytes [`Compressed::sniff`] needs to tell every kind apart.
pub const SNIFF_LEN: usize = 6;

impl Compressed {
    /// go-archive's `DetectCompression` magic numbers (zstd: the frame magic, little endian).
    pub fn sniff(prefix: &[u8]) -> Compressed {
        if prefix.starts_with(&[0x1f, 0x8b, 0x08]) {
            Compressed::Gzip
        } else if prefix.starts_with(b"BZh") {
            Compressed::Bzip2
        } else if prefix.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compressed::Xz
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compressed::Zstd
        } else {
            Compressed::None
        }
    }

    /// A reader giving the decompressed bytes of `r` (which starts with the sniffed prefix).
    pub fn decoder<'a, R: Read + 'a>(self, r: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compressed::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
                BufReader::with_capacity(128 * 1024, r),
            )),
            Compressed::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
            Compressed::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(r)),
            Compressed::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
            Compressed::None => Box::new(r),
        })
    }
}

/// Read up to `buf.len()` bytes (fewer only at the end of the stream).
pub fn read_prefix<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_told_by_its_magic() {
        assert_eq!(Compressed::sniff(&[0x1f, 0x8b, 8, 0]), Compressed::Gzip);
        assert_eq!(Compressed::sniff(b"BZh91AY"), Compressed::Bzip2);
        assert_eq!(
            Compressed::sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Compressed::Xz
        );
        assert_eq!(
            Compressed::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compressed::Zstd
        );
        assert_eq!(Compressed::sniff(b"hello"), Compressed::None);
        assert_eq!(Compressed::sniff(b""), Compressed::None);
    }
}
