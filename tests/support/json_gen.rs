//! Structure-aware mutation of JSON documents for tests/misc/fuzz_inputs.rs: a valid document (a
//! manifest, an index, a config, a token answer) has values replaced by hostile ones (numbers
//! past u64/i64, negatives, floats, wrong types, malformed digests, other media types, deep
//! nesting, long strings), keys removed or added, array elements multiplied; then, sometimes,
//! bytes of its text changed or cut.

#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::{json, Value};

/// Values a hostile or broken registry might put anywhere.
pub fn nasty() -> impl Strategy<Value = Value> {
    let digest = |algo: &str, n: usize, c: char| {
        Value::String(format!("{algo}:{}", c.to_string().repeat(n)))
    };
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let fixed = vec![
        json!(0),
        json!(-1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(9_007_199_254_740_993u64),
        json!(1.5),
        json!(1e300),
        json!(-0.0),
        json!(""),
        json!(null),
        json!(true),
        json!([]),
        json!({}),
        digest("sha256", 64, 'a'),
        digest("sha256", 63, 'a'),
        digest("sha256", 64, 'A'),
        digest("sha512", 128, 'a'),
        digest("md5", 32, 'a'),
        json!("sha256:../../../../etc/passwd"),
        json!("application/vnd.oci.image.index.v1+json"),
        json!("application/vnd.oci.image.manifest.v1+json"),
        json!("application/vnd.docker.distribution.manifest.v2+json"),
        json!("application/vnd.docker.distribution.manifest.list.v2+json"),
        json!("application/vnd.docker.distribution.manifest.v1+prettyjws"),
        json!("application/vnd.oci.image.layer.v1.tar+zstd"),
        json!("linux"),
        json!("amd64"),
        json!("arm64"),
        json!("v8"),
        json!("\u{0}\u{ffff}"),
        json!({"architecture": "amd64", "os": "linux"}),
        json!({"os.features": null, "architecture": [], "os": 1}),
        Value::String("x".repeat(10_000)),
        deep,
    ];
    prop_oneof![
        6 => prop::sample::select(fixed),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => "[ -~]{0,20}".prop_map(Value::String),
    ]
}

#[derive(Debug, Clone)]
pub enum Op {
    Replace(Value),
    Remove,
    /// Insert `n` copies of the element (arrays) — many manifests in an index, many layers.
    Multiply(usize),
    /// Add a key (objects).
    Add(String, Value),
}

#[derive(Debug, Clone)]
pub struct JsonMut {
    /// Child choices (mod the number of children) from the root down.
    pub path: Vec<usize>,
    pub op: Op,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => nasty().prop_map(Op::Replace),
        2 => Just(Op::Remove),
        1 => prop_oneof![Just(2usize), Just(50), Just(3000)].prop_map(Op::Multiply),
        2 => (
            prop::sample::select(vec![
                "mediaType", "schemaVersion", "platform", "urls", "annotations", "size",
                "digest", "manifests", "layers", "config", "subject", "artifactType", "x",
            ]),
            nasty()
        )
            .prop_map(|(k, v)| Op::Add(k.to_string(), v)),
    ]
}

pub fn mutations() -> impl Strategy<Value = Vec<JsonMut>> {
    prop::collection::vec(
        (prop::collection::vec(any::<usize>(), 0..5), op())
            .prop_map(|(path, op)| JsonMut { path, op }),
        0..4,
    )
}

pub fn apply(v: &mut Value, muts: &[JsonMut]) {
    for m in muts {
        apply_one(v, &m.path, &m.op);
    }
}

fn apply_one(v: &mut Value, path: &[usize], op: &Op) {
    match (path.split_first(), v) {
        (Some((i, rest)), Value::Object(m)) if !m.is_empty() => {
            let key = m.keys().nth(i % m.len()).unwrap().clone();
            if !rest.is_empty() {
                return apply_one(m.get_mut(&key).unwrap(), rest, op);
            }
            match op {
                Op::Replace(x) => {
                    m.insert(key, x.clone());
                }
                Op::Remove => {
                    m.remove(&key);
                }
                Op::Add(k, x) => {
                    m.insert(k.clone(), x.clone());
                }
                Op::Multiply(_) => {}
            }
        }
        (Some((i, rest)), Value::Array(a)) if !a.is_empty() => {
            let at = i % a.len();
            if !rest.is_empty() {
                return apply_one(&mut a[at], rest, op);
            }
            match op {
                Op::Replace(x) => a[at] = x.clone(),
                Op::Remove => {
                    a.remove(at);
                }
                Op::Multiply(n) => {
                    let x = a[at].clone();
                    a.splice(at..at, std::iter::repeat_n(x, *n));
                }
                Op::Add(..) => {}
            }
        }
        (_, Value::Object(m)) => {
            if let Op::Add(k, x) = op {
                m.insert(k.clone(), x.clone());
            }
        }
        (_, v) => {
            if let Op::Replace(x) = op {
                *v = x.clone();
            }
        }
    }
}

/// Changes to a document's text after serialising.
#[derive(Debug, Clone)]
pub enum TextMut {
    Byte(usize, u8),
    Truncate(usize),
    /// A UTF-8 byte-order mark, or whitespace, before the document.
    Prefix(&'static [u8]),
    /// A second document or garbage after it.
    Suffix(&'static [u8]),
}

pub fn text_mutations() -> impl Strategy<Value = Vec<TextMut>> {
    prop_oneof![
        4 => Just(Vec::new()),
        1 => prop::collection::vec(
            prop_oneof![
                3 => (any::<usize>(), any::<u8>()).prop_map(|(a, b)| TextMut::Byte(a, b)),
                1 => any::<usize>().prop_map(TextMut::Truncate),
                1 => prop::sample::select(vec![&b"\xef\xbb\xbf"[..], b" \n\t", b"\0"])
                    .prop_map(TextMut::Prefix),
                1 => prop::sample::select(vec![&b"{}"[..], b" ", b"\0", b"]"])
                    .prop_map(TextMut::Suffix),
            ],
            1..4,
        ),
    ]
}

pub fn apply_text(bytes: &mut Vec<u8>, muts: &[TextMut]) {
    for m in muts {
        match m {
            TextMut::Byte(at, b) if !bytes.is_empty() => {
                let n = bytes.len();
                bytes[at % n] = *b;
            }
            TextMut::Truncate(at) if !bytes.is_empty() => {
                let n = bytes.len();
                bytes.truncate(at % n);
            }
            TextMut::Prefix(p) => {
                bytes.splice(0..0, p.iter().copied());
            }
            TextMut::Suffix(s) => bytes.extend_from_slice(s),
            _ => {}
        }
    }
}

/// A document mutated structurally, then textually.
pub fn mutate(doc: &Value, muts: &[JsonMut], text: &[TextMut]) -> Vec<u8> {
    let mut v = doc.clone();
    apply(&mut v, muts);
    let mut bytes = serde_json::to_vec(&v).unwrap();
    apply_text(&mut bytes, text);
    bytes
}

/// A field of one descriptor (any object with a `digest`) set to a hostile value: the fields a
/// client acts on (`size` sizes a download, `digest` names a URL and a file, `mediaType` and
/// `platform` choose what to follow).
#[derive(Debug, Clone)]
pub struct DescMut {
    pub which: usize,
    pub field: &'static str,
    pub value: Value,
}

pub fn desc_mutations() -> impl Strategy<Value = Vec<DescMut>> {
    let field = prop::sample::select(vec![
        "size",
        "size",
        "size",
        "digest",
        "mediaType",
        "platform",
        "urls",
    ]);
    let value = prop_oneof![
        3 => prop::sample::select(vec![
            json!(u64::MAX),
            json!(u64::MAX - 1),
            json!(1u64 << 40),
            json!(0),
            json!(-1),
            json!(1.0),
        ]),
        2 => nasty(),
    ];
    prop::collection::vec(
        (any::<usize>(), field, value).prop_map(|(which, field, value)| DescMut {
            which,
            field,
            value,
        }),
        0..3,
    )
}

pub fn apply_desc(v: &mut Value, muts: &[DescMut]) {
    fn count(v: &Value) -> usize {
        match v {
            Value::Object(m) => {
                usize::from(m.contains_key("digest")) + m.values().map(count).sum::<usize>()
            }
            Value::Array(a) => a.iter().map(count).sum(),
            _ => 0,
        }
    }
    for m in muts {
        let n = count(v);
        if n > 0 {
            set_nth(v, m.which % n, &mut 0, m.field, &m.value);
        }
    }
}

fn set_nth(v: &mut Value, n: usize, seen: &mut usize, field: &str, value: &Value) -> bool {
    match v {
        Value::Object(m) => {
            if m.contains_key("digest") {
                if *seen == n {
                    m.insert(field.to_string(), value.clone());
                    return true;
                }
                *seen += 1;
            }
            m.values_mut().any(|x| set_nth(x, n, seen, field, value))
        }
        Value::Array(a) => a.iter_mut().any(|x| set_nth(x, n, seen, field, value)),
        _ => false,
    }
}
