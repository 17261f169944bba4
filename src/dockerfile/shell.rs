//! BuildKit's word expansion (`frontend/dockerfile/shell/lex.go`): `$V`, `${V}`, the `:-`/`-`,
//! `:+`/`+`, `:?`/`?`, `#`/`##`, `%`/`%%`, `/`/`//` modifiers, single and double quotes and the
//! escape token, with an optional split into whitespace-separated words.
//!
//! Must not: decide which instructions are expanded or where values come from (that is `plan`'s job).

use std::collections::BTreeSet;

/// Variables visible to an expansion.
pub trait EnvLookup {
    fn lookup(&self, key: &str) -> Option<String>;
    fn keys(&self) -> Vec<String>;
}

/// An ordered list of `KEY=VALUE` pairs where a later `set` replaces an earlier value in place,
/// like BuildKit's `EnvList` (Linux: keys are case-sensitive).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EnvList(pub Vec<(String, String)>);

impl EnvList {
    pub fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.0.push((key.to_string(), value.to_string())),
        }
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// Parses `K=V` strings (an image config's `Env`).
    pub fn from_kv_strings(env: &[String]) -> Self {
        let mut out = EnvList::default();
        for e in env {
            let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            out.set(k, v);
        }
        out
    }
    pub fn to_kv_strings(&self) -> Vec<String> {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

impl EnvLookup for EnvList {
    fn lookup(&self, key: &str) -> Option<String> {
        self.get(key).map(str::to_string)
    }
    fn keys(&self) -> Vec<String> {
        self.0.iter().map(|(k, _)| k.clone()).collect()
    }
}

/// No variables at all (heredoc delimiter detection).
pub struct NoEnv;
impl EnvLookup for NoEnv {
    fn lookup(&self, _: &str) -> Option<String> {
        None
    }
    fn keys(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Why an expansion failed; the text is BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExpandError(pub String);

/// The expander's switches, as in BuildKit's `shell.Lex`.
#[derive(Debug, Clone, Copy)]
pub struct Lex {
    pub escape: char,
    pub raw_quotes: bool,
    pub raw_escapes: bool,
    pub skip_unset_env: bool,
    pub skip_process_quotes: bool,
}

/// One expansion: the single-word result, the split words, and which variables were found or
/// missing (every lookup of an unset variable counts, `${V:-x}` included, as BuildKit's `getEnv`
/// records it; in order of first use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WordResult {
    pub result: String,
    pub words: Vec<String>,
    pub matched: BTreeSet<String>,
    pub missing: Vec<String>,
}

impl Lex {
    pub fn new(escape: char) -> Self {
        Lex {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
        }
    }

    /// Expands `word` as one word (quotes removed, whitespace kept).
    pub fn process_word(&self, word: &str, env: &dyn EnvLookup) -> Result<String, ExpandError> {
        Ok(self.process(word, env)?.result)
    }

    /// Expands `word` and reports matched and missing variables.
    pub fn process(&self, word: &str, env: &dyn EnvLookup) -> Result<WordResult, ExpandError> {
        let mut sw = ShellWord {
            chars: word.chars().collect(),
            pos: 0,
            env,
            escape: self.escape,
            raw_quotes: self.raw_quotes,
            raw_escapes: self.raw_escapes,
            skip_unset_env: self.skip_unset_env,
            skip_process_quotes: self.skip_process_quotes,
            matched: BTreeSet::new(),
            missing: Vec::new(),
        };
        let raw = sw.raw_escapes;
        let (result, words) = sw
            .process_stop_on(None, raw)
            .map_err(|e| ExpandError(format!("failed to process {word:?}: {}", e.0)))?;
        Ok(WordResult {
            result,
            words,
            matched: sw.matched,
            missing: sw.missing,
        })
    }

    /// Expands `word` and splits it into words the way a shell would.
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn EnvLookup,
    ) -> Result<Vec<String>, ExpandError> {
        Ok(self.process(word, env)?.words)
    }
}

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct ShellWord<'a> {
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn EnvLookup,
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset_env: bool,
    skip_process_quotes: bool,
    matched: BTreeSet<String>,
    missing: Vec<String>,
}

fn err(s: impl Into<String>) -> ExpandError {
    ExpandError(s.into())
}

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), ExpandError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            let special = ch == '$' || (!self.skip_process_quotes && (ch == '\'' || ch == '"'));
            if special {
                let tmp = match ch {
                    '$' => self.process_dollar()?,
                    '\'' => self.process_single_quote()?,
                    _ => self.process_double_quote()?,
                };
                result.push_str(&tmp);
                if ch == '$' {
                    words.add_string(&tmp);
                } else {
                    words.add_raw_string(&tmp);
                }
                continue;
            }
            let mut ch = self.next().unwrap_or_default();
            if ch == self.escape {
                if self.raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                match self.next() {
                    None => break,
                    Some(c) => {
                        ch = c;
                        words.add_raw_char(ch);
                    }
                }
            } else {
                words.add_char(ch);
            }
            result.push(ch);
        }
        if let Some(s) = stop {
            return Err(err(format!(
                "unexpected end of statement while looking for matching {s}"
            )));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, ExpandError> {
        let mut result = String::new();
        let open = self.next().unwrap_or('\'');
        if self.raw_quotes {
            result.push(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(err(
                        "unexpected end of statement while looking for matching single-quote",
                    ))
                }
                Some('\'') => {
                    if self.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, ExpandError> {
        let mut result = String::new();
        let open = self.next().unwrap_or('"');
        if self.raw_quotes {
            result.push(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(err(
                        "unexpected end of statement while looking for matching double-quote",
                    ))
                }
                Some('"') => {
                    self.next();
                    if self.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.escape {
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                if self.raw_escapes {
                                    result.push(ch);
                                }
                                ch = self.next().unwrap_or_default();
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v)
            }
            None => {
                if !self.missing.iter().any(|m| m == name) {
                    self.missing.push(name.to_string());
                }
                None
            }
        }
    }

    /// `$name`, `${name}` and `${name<op>word}`: a port of BuildKit's `processDollar`
    /// (`frontend/dockerfile/shell/lex.go`) as one function, so its cases map one to one.
    fn process_dollar(&mut self) -> Result<String, ExpandError> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            let v = self.get_env(&name);
            if v.is_none() && self.skip_unset_env {
                return Ok(format!("${name}"));
            }
            return Ok(v.unwrap_or_default());
        }
        self.next();
        match self.peek() {
            None => return Err(err("syntax error: missing '}'")),
            Some('{') | Some('}') | Some(':') => return Err(err("syntax error: bad substitution")),
            _ => {}
        }
        let name = self.process_name();
        let mut ch = self.next();
        let mut chs: String = ch.map(String::from).unwrap_or_default();
        let mut null_is_unset = false;
        match ch {
            Some('}') => {
                let v = self.get_env(&name);
                if v.is_none() && self.skip_unset_env {
                    return Ok(format!("${{{name}}}"));
                }
                Ok(v.unwrap_or_default())
            }
            Some(':') | Some('+') | Some('-') | Some('?') | Some('#') | Some('%') => {
                if ch == Some(':') {
                    null_is_unset = true;
                    ch = self.next();
                    if let Some(c) = ch {
                        chs.push(c);
                    }
                }
                let op = match ch {
                    Some(c @ ('+' | '-' | '?' | '#' | '%')) => c,
                    _ => return Err(err(format!("unsupported modifier ({chs}) in substitution"))),
                };
                let raw = op == '#' || op == '%';
                if null_is_unset && raw {
                    return Err(err(format!("unsupported modifier ({chs}) in substitution")));
                }
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(err("syntax error: missing '}'"));
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let set = value.is_some();
                let value = value.unwrap_or_default();
                let empty_as_unset = !set || (null_is_unset && value.is_empty());
                match op {
                    '-' => Ok(if empty_as_unset { word } else { value }),
                    '+' => Ok(if empty_as_unset { String::new() } else { word }),
                    '?' => {
                        if !set {
                            let m = if word.is_empty() {
                                "is not allowed to be unset".into()
                            } else {
                                word
                            };
                            return Err(err(format!("{name}: {m}")));
                        }
                        if null_is_unset && value.is_empty() {
                            let m = if word.is_empty() {
                                "is not allowed to be empty".into()
                            } else {
                                word
                            };
                            return Err(err(format!("{name}: {m}")));
                        }
                        Ok(value)
                    }
                    _ => {
                        let (greedy, pat) = match word.strip_prefix(op) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        let toks = compile_pattern(&pat)?;
                        let v: Vec<char> = value.chars().collect();
                        if op == '#' {
                            Ok(trim_prefix(&toks, &v, greedy))
                        } else {
                            Ok(trim_suffix(&toks, &v, greedy))
                        }
                    }
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(err("syntax error: missing '/' in ${}"));
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(err("syntax error: missing '}'"));
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let toks = compile_pattern(&pattern)?;
                let v: Vec<char> = value.unwrap_or_default().chars().collect();
                Ok(replace(&toks, &v, &replacement, replace_all))
            }
            None => Err(err("syntax error: missing '}'")),
            _ => Err(err(format!("unsupported modifier ({chs}) in substitution"))),
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }
}

/// A shell pattern token: `*`, `?` or a literal (Go's `.` does not match a newline).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Star,
    Any,
    Lit(char),
}

fn compile_pattern(p: &str) -> Result<Vec<Tok>, ExpandError> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => out.push(Tok::Star),
            '?' => out.push(Tok::Any),
            '\\' => {
                if chars.get(i + 1) == Some(&'}') {
                    i += 1;
                    continue;
                }
                match chars.get(i + 1) {
                    Some(&c @ ('*' | '?' | '\\')) => {
                        out.push(Tok::Lit(c));
                        i += 1;
                    }
                    other => {
                        let c = other.map(|c| c.to_string()).unwrap_or_default();
                        return Err(err(format!(
                            "invalid pattern ({p}) in substitution: invalid escape '\\{c}'"
                        )));
                    }
                }
            }
            c => out.push(Tok::Lit(c)),
        }
        i += 1;
    }
    Ok(out)
}

/// Whether `toks` matches all of `s`.
fn full_match(toks: &[Tok], s: &[char]) -> bool {
    // dp[j]: toks[..i] matches s[..j]
    let mut dp = vec![false; s.len() + 1];
    dp[0] = true;
    for t in toks {
        let mut next = vec![false; s.len() + 1];
        match t {
            Tok::Star => {
                let mut reach = false;
                for j in 0..=s.len() {
                    if dp[j] {
                        reach = true;
                    } else if j > 0 && s[j - 1] == '\n' {
                        reach = false;
                    }
                    next[j] = reach;
                }
            }
            Tok::Any => (1..=s.len()).for_each(|j| next[j] = dp[j - 1] && s[j - 1] != '\n'),
            Tok::Lit(c) => (1..=s.len()).for_each(|j| next[j] = dp[j - 1] && s[j - 1] == *c),
        }
        dp = next;
    }
    dp[s.len()]
}

fn trim_prefix(toks: &[Tok], v: &[char], greedy: bool) -> String {
    let ends: Box<dyn Iterator<Item = usize>> = if greedy {
        Box::new((0..=v.len()).rev())
    } else {
        Box::new(0..=v.len())
    };
    for end in ends {
        if full_match(toks, &v[..end]) {
            return v[end..].iter().collect();
        }
    }
    v.iter().collect()
}

fn trim_suffix(toks: &[Tok], v: &[char], greedy: bool) -> String {
    let starts: Box<dyn Iterator<Item = usize>> = if greedy {
        Box::new(0..=v.len())
    } else {
        Box::new((0..=v.len()).rev())
    };
    for start in starts {
        if full_match(toks, &v[start..]) {
            return v[..start].iter().collect();
        }
    }
    v.iter().collect()
}

fn replace(toks: &[Tok], v: &[char], replacement: &str, all: bool) -> String {
    let mut out = String::new();
    let mut i = 0;
    let mut replaced = false;
    while i <= v.len() {
        if !replaced || all {
            if let Some(end) = (i..=v.len()).rev().find(|&e| full_match(toks, &v[i..e])) {
                out.push_str(replacement);
                replaced = true;
                if end > i {
                    i = end;
                    continue;
                }
            }
        }
        if i < v.len() {
            out.push(v[i]);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvList {
        let mut e = EnvList::default();
        e.set("A", "hello");
        e.set("E", "");
        e.set("P", "/usr/local/bin/app.tar.gz");
        e.set("S", "a b  c");
        e
    }

    fn w(s: &str) -> String {
        Lex::new('\\').process_word(s, &env()).unwrap()
    }

    #[test]
    fn buildkit_expansion_table() {
        assert_eq!(w("$A"), "hello");
        assert_eq!(w("${A}x"), "hellox");
        assert_eq!(w("${U:-def}"), "def");
        assert_eq!(w("${E:-def}"), "def");
        assert_eq!(w("${E-def}"), "");
        assert_eq!(w("${A:+alt}"), "alt");
        assert_eq!(w("${E:+alt}"), "");
        assert_eq!(w("${E+alt}"), "alt");
        assert_eq!(w("${P#*/}"), "usr/local/bin/app.tar.gz");
        assert_eq!(w("${P##*/}"), "app.tar.gz");
        assert_eq!(w("${P%.*}"), "/usr/local/bin/app.tar");
        assert_eq!(w("${P%%.*}"), "/usr/local/bin/app");
        assert_eq!(w("${A/l/L}"), "heLlo");
        assert_eq!(w("${A//l/L}"), "heLLo");
        assert_eq!(w("'$A'"), "$A");
        assert_eq!(w("\"$A\""), "hello");
        assert_eq!(w("\\$A"), "$A");
        assert_eq!(w("$"), "$");
        assert_eq!(w("a\\ b"), "a b");
        assert_eq!(
            Lex::new('\\').process_words("$S x\"y z\"", &env()).unwrap(),
            vec!["a", "b", "c", "xy z"]
        );
    }

    #[test]
    fn errors_are_buildkits() {
        let l = Lex::new('\\');
        let e = |s: &str| l.process_word(s, &env()).unwrap_err().0;
        assert!(e("${U:?must be set}").ends_with("U: must be set"));
        assert!(e("${E:?}").ends_with("E: is not allowed to be empty"));
        assert!(e("${:x}").ends_with("syntax error: bad substitution"));
        assert!(e("${A").ends_with("syntax error: missing '}'"));
        assert!(e("'abc")
            .ends_with("unexpected end of statement while looking for matching single-quote"));
        assert!(e("${A:#x}").ends_with("unsupported modifier (:#) in substitution"));
    }

    #[test]
    fn backtick_escape() {
        let l = Lex::new('`');
        assert_eq!(l.process_word("C:\\dir`$A", &env()).unwrap(), "C:\\dir$A");
    }
}
