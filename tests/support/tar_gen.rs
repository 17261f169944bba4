//! A structure-aware generator of hostile layer tars for tests/misc/fuzz_inputs.rs: sequences of
//! entries (files, dirs, symlinks, hard links, whiteouts, opaque markers, devices, FIFOs, unknown
//! types) named from a small vocabulary that includes `..`, `.`, empty components, leading `/`,
//! whiteout prefixes and over-long names; names written as plain ustar, ustar prefix+name, GNU
//! long-name records or PAX headers; then header-field and raw-byte mutations, truncation, and
//! gzip/zstd compression (mutated afterwards too).
//!
//! The headers are written byte by byte, not with the `tar` crate's builder, because the builder
//! refuses exactly the names and fields a hostile layer carries.

#![allow(dead_code)]

use std::io::Write;

use proptest::prelude::*;

/// Replaced by the absolute path of the sandbox's sentinel directory when the tar is encoded.
pub const SENTINEL: &str = "@SENTINEL@";

/// Path components the generator draws from: ordinary names that also exist in the pre-placed
/// tree and in the sentinel (so escapes have something to hit), traversal components, whiteout
/// forms (including the degenerate `.wh.`, `.wh..` and `.wh...`), a NUL, and names at and past
/// NAME_MAX.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => prop::sample::select(vec!["a", "b", "d", "a", "b", "d", "f", "trap", "abs", "sentinel"])
            .prop_map(str::to_string),
        2 => prop::sample::select(vec!["..", ".", ""]).prop_map(str::to_string),
        3 => prop::sample::select(vec![
            ".wh.a", ".wh.b", ".wh.d", ".wh.f", ".wh.trap", ".wh.abs", ".wh..wh..opq",
            ".wh.", ".wh..", ".wh...", ".wh..wh.plnk", ".wh..wh..wh..opq",
        ])
        .prop_map(str::to_string),
        1 => prop::sample::select(vec!["n\0ul", "sp ace", "\u{e9}t\u{e9}", "\\"])
            .prop_map(str::to_string),
        1 => prop::sample::select(vec![255usize, 256, 300]).prop_map(|n| "x".repeat(n)),
    ]
}

/// A tar path: an optional `/`, `./` or `//` prefix, 1–4 components, an optional trailing `/`.
pub fn path() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["", "", "", "/", "./", "//"]),
        prop_oneof![
            3 => prop::collection::vec(component(), 1..=2),
            1 => prop::collection::vec(component(), 1..=4),
        ],
        prop::bool::weighted(0.2),
    )
        .prop_map(|(pre, comps, slash)| {
            let mut p = format!("{pre}{}", comps.join("/"));
            if slash {
                p.push('/');
            }
            p
        })
}

/// A symlink or hardlink target: any generated path, or one aimed at the outside.
fn link_target() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => path(),
        3 => prop::sample::select(vec![
            "../sentinel", "../sentinel", "@SENTINEL@", "@SENTINEL@", "../sentinel/file",
            "../../", "..", "/", "/etc/passwd", "@SENTINEL@/file", "@SENTINEL@/a", "trap/file",
            "abs/file", "trap", "abs", "trapf", "d/f", "f",
        ])
        .prop_map(str::to_string),
    ]
}

#[derive(Debug, Clone)]
pub enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Hardlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    /// An entry type byte kiln does not extract (or a GNU/PAX meta type out of place).
    Other(u8),
}

/// How the entry's names are encoded.
#[derive(Debug, Clone, Copy)]
pub enum NameEnc {
    /// Name in the 100-byte field (cut if longer), ustar prefix used when it fits.
    Ustar,
    /// A GNU `././@LongLink` record (`L` for the name, `K` for the link) before the header.
    Gnu,
    /// A PAX `x` header with `path`/`linkpath` (and the xattr, if any).
    Pax,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub mtime: i64,
    pub enc: NameEnc,
    pub xattr: Option<(String, Vec<u8>)>,
    /// Leave the header checksum wrong.
    pub bad_cksum: bool,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        5 => prop::collection::vec(any::<u8>(), 0..700).prop_map(Kind::File),
        4 => Just(Kind::Dir),
        3 => link_target().prop_map(Kind::Symlink),
        3 => link_target().prop_map(Kind::Hardlink),
        1 => prop::sample::select(vec![(1u32, 3u32), (1, 5), (0, 0), (4095, 1_048_575)])
            .prop_map(|(a, b)| Kind::Char(a, b)),
        1 => prop::sample::select(vec![(7u32, 0u32), (0, 0)]).prop_map(|(a, b)| Kind::Block(a, b)),
        1 => Just(Kind::Fifo),
        1 => prop::sample::select(vec![b'L', b'K', b'x', b'g', b'S', b'V', b'M', b'Z', 0xff])
            .prop_map(Kind::Other),
    ]
}

pub fn entry() -> impl Strategy<Value = Entry> {
    (
        path(),
        kind(),
        prop_oneof![
            Just(0o755u32),
            Just(0o644),
            Just(0o000),
            Just(0o7777),
            Just(0o4755),
            any::<u32>()
        ],
        prop_oneof![Just(0u32), Just(1000), any::<u32>()],
        prop_oneof![
            Just(1_600_000_000i64),
            Just(0),
            Just(-1),
            Just(8_589_934_591)
        ],
        prop::sample::select(vec![NameEnc::Ustar, NameEnc::Gnu, NameEnc::Pax]),
        prop::option::weighted(
            0.1,
            (
                prop::sample::select(vec!["user.k", "trusted.k", "security.capability", ""]),
                prop::collection::vec(any::<u8>(), 0..20),
            )
                .prop_map(|(k, v)| (k.to_string(), v)),
        ),
        prop::bool::weighted(0.03),
    )
        .prop_map(
            |(name, kind, mode, uid, mtime, enc, xattr, bad_cksum)| Entry {
                name,
                kind,
                mode,
                uid,
                mtime,
                enc,
                xattr,
                bad_cksum,
            },
        )
}

#[derive(Debug, Clone, Copy)]
pub enum Compress {
    None,
    Gzip,
    Zstd,
}

/// A mutation of the encoded tar.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Set a byte of the n-th header (mod the header count), then fix its checksum or not.
    HeaderByte {
        header: usize,
        offset: usize,
        value: u8,
        fix_cksum: bool,
    },
    /// Set a byte anywhere (position mod length).
    RawByte { at: usize, value: u8 },
    /// Cut the stream at this position (mod length).
    Truncate(usize),
    /// Insert a copy of the n-th header block after itself (mod the header count).
    DupHeader(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0usize..512, any::<u8>(), prop::bool::weighted(0.85)).prop_map(
            |(header, offset, value, fix_cksum)| Mutation::HeaderByte {
                header,
                offset,
                value,
                fix_cksum
            }
        ),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::RawByte { at, value }),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => any::<usize>().prop_map(Mutation::DupHeader),
    ]
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub entries: Vec<Entry>,
    pub mutations: Vec<Mutation>,
    pub compress: Compress,
    /// Bytes of the compressed stream to overwrite (position mod length, value).
    pub compressed_mutations: Vec<(usize, u8)>,
    /// Leave off the two zero blocks that end an archive.
    pub no_end: bool,
}

/// A path of ordinary names (they exist in the pre-placed tree and in the sentinel).
fn plain_path(min: usize) -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "d"]), min..=3)
}

/// An ancestor swap: an entry deep in a tree, then one of its ancestors replaced by a symlink
/// (to outside, or anywhere), then maybe another entry under the same ancestor, or a link whose
/// target goes through it — the shape of every "write through a link planted earlier" attack,
/// with the entries' kinds left random.
fn ancestor_swap() -> impl Strategy<Value = Vec<Entry>> {
    (
        plain_path(2),
        entry(),
        link_target(),
        prop::option::of(entry()),
        0usize..2,
    )
        .prop_map(|(comps, mut first, target, then, cut)| {
            let deep = comps.join("/");
            let ancestor = comps[..=cut.min(comps.len() - 2)].join("/");
            first.name = deep;
            let mut link = first.clone();
            link.name = ancestor.clone();
            link.kind = Kind::Symlink(target);
            let mut out = vec![first, link];
            if let Some(mut e) = then {
                let under = format!("{ancestor}/{}", e.name.trim_start_matches('/'));
                match &mut e.kind {
                    // A link elsewhere whose target goes through the swapped ancestor.
                    Kind::Hardlink(t) | Kind::Symlink(t) => *t = under,
                    _ => e.name = under,
                }
                out.push(e);
            }
            out
        })
}

/// A layer: `0..12` entries, usually unmutated (so the extraction logic is reached), sometimes
/// mutated (so the parser is).
pub fn layer() -> impl Strategy<Value = Layer> {
    (
        prop::collection::vec(
            prop_oneof![3 => entry().prop_map(|e| vec![e]), 1 => ancestor_swap()],
            0..8,
        )
        .prop_map(|v| v.into_iter().flatten().collect::<Vec<_>>()),
        prop_oneof![
            3 => Just(Vec::new()),
            2 => prop::collection::vec(mutation(), 1..6),
        ],
        prop::sample::select(vec![
            Compress::None,
            Compress::None,
            Compress::Gzip,
            Compress::Zstd,
        ]),
        prop_oneof![
            9 => Just(Vec::new()),
            1 => prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ],
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(entries, mutations, compress, compressed_mutations, no_end)| Layer {
                entries,
                mutations,
                compress,
                compressed_mutations,
                no_end,
            },
        )
}

fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    let s = format!("{v:0w$o}");
    let s = &s.as_bytes()[s.len().saturating_sub(w)..];
    field[..s.len()].copy_from_slice(s);
    field[w] = 0;
}

/// Numeric field, in base-256 (GNU) when the value does not fit in octal or is negative.
fn numeric(field: &mut [u8], v: i64) {
    let w = field.len() - 1;
    if v >= 0 && (v as u64) < 8u64.pow(w as u32) {
        octal(field, v as u64);
    } else {
        let bytes = v.to_be_bytes();
        let n = field.len();
        for (i, b) in field.iter_mut().enumerate() {
            *b = if i + 8 >= n {
                bytes[i + 8 - n]
            } else if v < 0 {
                0xff
            } else {
                0
            };
        }
        field[0] |= 0x80;
    }
}

pub fn set_cksum(h: &mut [u8]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    octal(&mut h[148..155], sum as u64);
    h[155] = b' ';
}

struct Writer {
    out: Vec<u8>,
    /// Offsets of every header block written.
    headers: Vec<usize>,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        name: &[u8],
        typ: u8,
        link: &[u8],
        size: u64,
        e: Option<&Entry>,
        bad_cksum: bool,
    ) {
        let mut h = [0u8; 512];
        // ustar: a name up to 100 bytes goes in `name`; a longer one is split at a `/` into
        // prefix (155) + name (100) when possible, else cut at 100.
        if name.len() <= 100 {
            h[..name.len()].copy_from_slice(name);
        } else if let Some(cut) = name[..name.len().min(156)]
            .iter()
            .rposition(|b| *b == b'/')
            .filter(|c| name.len() - c - 1 <= 100 && *c <= 155)
        {
            h[345..345 + cut].copy_from_slice(&name[..cut]);
            h[..name.len() - cut - 1].copy_from_slice(&name[cut + 1..]);
        } else {
            h[..100].copy_from_slice(&name[..100]);
        }
        let l = link.len().min(100);
        h[157..157 + l].copy_from_slice(&link[..l]);
        let (mode, uid, mtime) = e.map_or((0o644, 0, 0), |e| (e.mode, e.uid, e.mtime));
        octal(&mut h[100..108], (mode & 0o7777777) as u64);
        numeric(&mut h[108..116], uid as i64);
        numeric(&mut h[116..124], uid as i64);
        numeric(&mut h[124..136], size as i64);
        numeric(&mut h[136..148], mtime);
        h[156] = typ;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        if let Some(Kind::Char(a, b) | Kind::Block(a, b)) = e.map(|e| &e.kind) {
            octal(&mut h[329..337], *a as u64);
            octal(&mut h[337..345], *b as u64);
        }
        set_cksum(&mut h);
        if bad_cksum {
            h[148] ^= 1;
        }
        self.headers.push(self.out.len());
        self.out.extend_from_slice(&h);
    }

    fn data(&mut self, d: &[u8]) {
        self.out.extend_from_slice(d);
        self.out
            .extend(std::iter::repeat_n(0u8, (512 - d.len() % 512) % 512));
    }

    fn entry(&mut self, e: &Entry, sentinel: &str) {
        let name = e.name.replace(SENTINEL, sentinel).into_bytes();
        let (typ, link, data): (u8, Vec<u8>, &[u8]) = match &e.kind {
            Kind::File(d) => (b'0', Vec::new(), d),
            Kind::Dir => (b'5', Vec::new(), b""),
            Kind::Symlink(t) => (b'2', t.replace(SENTINEL, sentinel).into_bytes(), b""),
            Kind::Hardlink(t) => (b'1', t.replace(SENTINEL, sentinel).into_bytes(), b""),
            Kind::Char(..) => (b'3', Vec::new(), b""),
            Kind::Block(..) => (b'4', Vec::new(), b""),
            Kind::Fifo => (b'6', Vec::new(), b""),
            Kind::Other(t) => (*t, Vec::new(), b""),
        };
        match e.enc {
            NameEnc::Ustar => {}
            NameEnc::Gnu => {
                for (field, typ) in [(&name, b'L'), (&link, b'K')] {
                    if field.len() > 100 {
                        let mut d = field.clone();
                        d.push(0);
                        self.header(b"././@LongLink", typ, b"", d.len() as u64, None, false);
                        self.data(&d);
                    }
                }
            }
            NameEnc::Pax => {
                let mut recs = Vec::new();
                pax_record(&mut recs, b"path", &name);
                if !link.is_empty() {
                    pax_record(&mut recs, b"linkpath", &link);
                }
                if let Some((k, v)) = &e.xattr {
                    pax_record(&mut recs, format!("SCHILY.xattr.{k}").as_bytes(), v);
                }
                self.header(b"PaxHeaders/x", b'x', b"", recs.len() as u64, None, false);
                self.data(&recs);
            }
        }
        self.header(&name, typ, &link, data.len() as u64, Some(e), e.bad_cksum);
        self.data(data);
    }
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} ").as_bytes());
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

impl Layer {
    /// The blob as a registry would send it.
    pub fn encode(&self, sentinel: &str) -> Vec<u8> {
        let mut w = Writer {
            out: Vec::new(),
            headers: Vec::new(),
        };
        for e in &self.entries {
            w.entry(e, sentinel);
        }
        if !self.no_end {
            w.out.extend_from_slice(&[0u8; 1024]);
        }
        let mut out = w.out;
        for m in &self.mutations {
            mutate(&mut out, &w.headers, m);
        }
        let mut blob = match self.compress {
            Compress::None => out,
            Compress::Gzip => {
                let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                g.write_all(&out).unwrap();
                g.finish().unwrap()
            }
            Compress::Zstd => zstd::encode_all(&out[..], 1).unwrap(),
        };
        if !blob.is_empty() {
            for (at, v) in &self.compressed_mutations {
                let n = blob.len();
                blob[at % n] = *v;
            }
        }
        blob
    }
}

fn mutate(out: &mut Vec<u8>, headers: &[usize], m: &Mutation) {
    if out.is_empty() {
        return;
    }
    match m {
        Mutation::HeaderByte {
            header,
            offset,
            value,
            fix_cksum,
        } if !headers.is_empty() => {
            let at = headers[header % headers.len()];
            if at + 512 <= out.len() {
                out[at + offset] = *value;
                if *fix_cksum {
                    set_cksum(&mut out[at..at + 512]);
                }
            }
        }
        Mutation::HeaderByte { .. } => {}
        Mutation::RawByte { at, value } => {
            let n = out.len();
            out[at % n] = *value;
        }
        Mutation::Truncate(at) => {
            let n = out.len();
            out.truncate(at % n);
        }
        Mutation::DupHeader(h) if !headers.is_empty() => {
            let at = headers[h % headers.len()];
            if at + 512 <= out.len() {
                let block = out[at..at + 512].to_vec();
                out.splice(at..at, block);
            }
        }
        Mutation::DupHeader(_) => {}
    }
}
