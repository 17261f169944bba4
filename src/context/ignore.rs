//! `.dockerignore` with Docker's rules (moby/patternmatcher + the dockerignore reader), not
//! gitignore's: patterns are anchored at the context root and cleaned (`/a/./b` → `a/b`), `*` and `?`
//! never cross `/`, `**` matches any number of directories, `!` re-includes, the last matching
//! pattern wins, and a pattern matching a parent directory excludes everything below it. The
//! Dockerfile and `.dockerignore` may themselves be excluded: the builder still reads them, but
//! COPY/ADD do not see them. `<Dockerfile>.dockerignore` beside the Dockerfile takes precedence over
//! the context's `.dockerignore`.
//!
//! Must not: read files or walk directories (callers pass text and relative paths); depends only on
//! std and thiserror.

/// Why a `.dockerignore` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    #[error("illegal exclusion pattern: {0:?}")]
    IllegalExclusion(String),
    #[error("syntax error in pattern {0:?}")]
    BadPattern(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// `**` followed by more pattern: any number of directories (`(.*/)?`).
    AnyDirs,
    /// `**` at the end: anything.
    AnyTail,
    Star,
    Question,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Lit(char),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    text: String,
    exclusion: bool,
    toks: Vec<Tok>,
}

/// Parsed `.dockerignore` patterns, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

/// `filepath.Clean` for slash paths (result relative unless it started with `/`).
fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

fn compile(p: &str) -> Result<Vec<Tok>, IgnoreError> {
    let cs: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        i += 1;
        match c {
            '*' if cs.get(i) == Some(&'*') => {
                i += 1;
                if cs.get(i) == Some(&'/') {
                    i += 1;
                }
                out.push(if i >= cs.len() {
                    Tok::AnyTail
                } else {
                    Tok::AnyDirs
                });
            }
            '*' => out.push(Tok::Star),
            '?' => out.push(Tok::Question),
            '\\' => match cs.get(i) {
                Some(n) => {
                    out.push(Tok::Lit(*n));
                    i += 1;
                }
                None => return Err(IgnoreError::BadPattern(p.into())),
            },
            '[' => {
                let mut negated = false;
                if matches!(cs.get(i), Some('^')) {
                    negated = true;
                    i += 1;
                }
                let mut ranges = Vec::new();
                let mut closed = false;
                while i < cs.len() {
                    let mut a = cs[i];
                    if a == ']' && !ranges.is_empty() {
                        closed = true;
                        i += 1;
                        break;
                    }
                    if a == '\\' {
                        i += 1;
                        a = *cs.get(i).ok_or_else(|| IgnoreError::BadPattern(p.into()))?;
                    }
                    i += 1;
                    if cs.get(i) == Some(&'-') && cs.get(i + 1).is_some_and(|c| *c != ']') {
                        let b = cs[i + 1];
                        i += 2;
                        if b < a {
                            return Err(IgnoreError::BadPattern(p.into()));
                        }
                        ranges.push((a, b));
                    } else {
                        ranges.push((a, a));
                    }
                }
                if !closed {
                    return Err(IgnoreError::BadPattern(p.into()));
                }
                out.push(Tok::Class { negated, ranges });
            }
            c => out.push(Tok::Lit(c)),
        }
    }
    Ok(out)
}

fn matches(toks: &[Tok], s: &[char]) -> bool {
    // memo[t][i]: toks[t..] matches s[i..]
    let mut memo = vec![vec![None::<bool>; s.len() + 1]; toks.len() + 1];
    fn go(t: usize, i: usize, toks: &[Tok], s: &[char], memo: &mut Vec<Vec<Option<bool>>>) -> bool {
        if let Some(v) = memo[t][i] {
            return v;
        }
        let r = match toks.get(t) {
            None => i == s.len(),
            Some(Tok::AnyTail) => true,
            Some(Tok::AnyDirs) => {
                // zero directories, or any prefix ending in '/'
                go(t + 1, i, toks, s, memo)
                    || (i..s.len()).any(|j| s[j] == '/' && go(t + 1, j + 1, toks, s, memo))
            }
            Some(Tok::Star) => {
                let mut j = i;
                loop {
                    if go(t + 1, j, toks, s, memo) {
                        break true;
                    }
                    if j >= s.len() || s[j] == '/' {
                        break false;
                    }
                    j += 1;
                }
            }
            Some(Tok::Question) => i < s.len() && s[i] != '/' && go(t + 1, i + 1, toks, s, memo),
            Some(Tok::Class { negated, ranges }) => {
                i < s.len() && {
                    let inr = ranges.iter().any(|(a, b)| (*a..=*b).contains(&s[i]));
                    inr != *negated && go(t + 1, i + 1, toks, s, memo)
                }
            }
            Some(Tok::Lit(c)) => i < s.len() && s[i] == *c && go(t + 1, i + 1, toks, s, memo),
        };
        memo[t][i] = Some(r);
        r
    }
    go(0, 0, toks, s, &mut memo)
}

impl DockerIgnore {
    /// Reads `.dockerignore` text the way Docker's reader does.
    pub fn parse(text: &str) -> Result<Self, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut p = line.trim();
            if p.is_empty() {
                continue;
            }
            let exclusion = p.starts_with('!');
            if exclusion {
                p = p[1..].trim();
                if p.is_empty() {
                    return Err(IgnoreError::IllegalExclusion(line.trim().into()));
                }
            }
            let mut c = clean(p);
            if c.len() > 1 && c.starts_with('/') {
                c.remove(0);
            }
            let toks = compile(&c)?;
            patterns.push(Pattern {
                text: c,
                exclusion,
                toks,
            });
        }
        Ok(DockerIgnore { patterns })
    }

    /// The cleaned patterns (`!` kept), in order.
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                if p.exclusion {
                    format!("!{}", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }

    /// Whether `rel_path` (relative to the context root, `/`-separated) is left out of the context.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let mut path = clean(rel_path.trim_start_matches('/'));
        if path.starts_with('/') {
            path.remove(0);
        }
        let chars: Vec<char> = path.chars().collect();
        let parents: Vec<usize> = chars
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == '/')
            .map(|(i, _)| i)
            .collect();
        let mut excluded = false;
        for p in &self.patterns {
            let mut m = matches(&p.toks, &chars);
            if !m {
                m = parents.iter().any(|&end| matches(&p.toks, &chars[..end]));
            }
            if m {
                excluded = !p.exclusion;
            }
        }
        excluded
    }
}

/// The ignore files consulted for a Dockerfile, in precedence order: BuildKit's dockerui
/// (`<dockerfile path>.dockerignore` beside the Dockerfile, then the context's `.dockerignore`),
/// and — for podman/buildah users, never preferred over Docker's names — `.containerignore` last.
pub fn ignore_file_for(dockerfile_path: &str) -> [String; 3] {
    [
        format!("{dockerfile_path}.dockerignore"),
        ".dockerignore".to_string(),
        ".containerignore".to_string(),
    ]
}
