//! Word-level helpers of BuildKit's parser: leading `--flag` extraction, quote-aware word splitting
//! (`parseWords`), whitespace splitting, JSON-array detection and heredoc delimiter detection.
//!
//! Must not: expand variables (except the empty-environment expansion BuildKit uses to find heredoc
//! delimiters) or know instruction semantics.

use super::shell::{Lex, NoEnv};

/// BuildKit's `reWhitespace`: `[\t\v\f\r ]+`.
pub(crate) fn is_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// `reWhitespace.Split(s, n)` for n = 2 (`Some`) or unlimited (`None`).
pub(crate) fn split_ws(s: &str, two: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if two && out.len() == 1 {
            out.push(rest.to_string());
            return out;
        }
        match rest.find(is_ws) {
            None => {
                out.push(rest.to_string());
                return out;
            }
            Some(i) => {
                out.push(rest[..i].to_string());
                let after = &rest[i..];
                rest = after.trim_start_matches(is_ws);
            }
        }
    }
}

/// BuildKit's `extractBuilderFlags`: the leading `--name[=value]` words (quotes removed) and the
/// rest of the line.
pub(crate) fn extract_flags(line: &str) -> (Vec<String>, String) {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut quote = '\0';
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut phase = Phase::Spaces;
    let mut i = 0;
    while i <= chars.len() {
        let at_end = i == chars.len();
        let (off, ch) = if at_end { (line.len(), '\0') } else { chars[i] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            let next_dash = chars.get(i + 1).map(|c| c.1) == Some('-');
            if ch != '-' || !next_dash {
                return (words, line[off..].to_string());
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (words, line[off..].to_string());
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                i += 1;
                continue;
            }
            let mut c = ch;
            if ch == '\\' {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                i += 1;
                c = chars[i].1;
            }
            word.push(c);
            i += 1;
            continue;
        }
        // in quote
        if ch == quote {
            phase = Phase::Word;
            i += 1;
            continue;
        }
        let mut c = ch;
        if ch == '\\' {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            i += 1;
            c = chars[i].1;
        }
        word.push(c);
        i += 1;
    }
    (words, String::new())
}

/// BuildKit's `parseWords`: whitespace-separated words, quotes and escapes kept in the words.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut quote = '\0';
    let mut in_word = false;
    let mut in_quote = false;
    let mut i = 0;
    while i <= chars.len() {
        let at_end = i == chars.len();
        let ch = if at_end { '\0' } else { chars[i] };
        if !in_word && !in_quote {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            in_word = true;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        if in_word {
            if ch.is_whitespace() {
                in_word = false;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                i += 1;
                continue;
            }
            let mut c = ch;
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                in_word = false;
                in_quote = true;
            }
            if ch == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
                c = chars[i];
            }
            word.push(c);
            i += 1;
            continue;
        }
        // in quote
        let mut c = ch;
        if ch == quote {
            in_quote = false;
            in_word = true;
        }
        if ch == escape && quote != '\'' {
            if i + 1 == chars.len() {
                in_quote = false;
                in_word = true;
                i += 1;
                continue;
            }
            i += 1;
            word.push(ch);
            c = chars[i];
        }
        word.push(c);
        i += 1;
    }
    words
}

/// Why a JSON form was rejected outright (BuildKit does not fall back to shell form for this).
pub(crate) const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// BuildKit's `parseJSON`: `Ok(Some(list))` for a JSON string array, `Ok(None)` when the text is
/// not JSON (the caller falls back), `Err` for an array holding non-strings.
pub(crate) fn parse_json_array(rest: &str) -> Result<Option<Vec<String>>, &'static str> {
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let v: serde_json::Value = match serde_json::from_str(rest) {
        Ok(v) => v,
        Err(_) => return Ok(None),
    };
    let Some(items) = v.as_array() else {
        return Ok(None);
    };
    items
        .iter()
        .map(|i| i.as_str().map(str::to_string).ok_or(NOT_STRING_ARRAY))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A heredoc delimiter found on an instruction line (`<<EOF`, `<<-EOF`, `<<"EOF"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeredocWord {
    pub name: String,
    pub expand: bool,
    pub chomp: bool,
}

/// BuildKit's `ParseHeredoc` on one word: `^(\d*)<<(-?)([^<]*)$`.
pub(crate) fn parse_heredoc_word(src: &str) -> Result<Option<HeredocWord>, String> {
    let digits = src.chars().take_while(char::is_ascii_digit).count();
    let Some(after) = src[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let mut lex = Lex::new('\\');
    lex.skip_unset_env = true;
    let words = lex.process_words(rest, &NoEnv).map_err(|e| e.0)?;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw = lex.process_words(rest, &NoEnv).map_err(|e| e.0)?;
    if raw.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.matches(['\'', '"']).count();
    let expand = quotes(&words[0]) == quotes(&raw[0]);
    Ok(Some(HeredocWord {
        name: words[0].clone(),
        expand,
        chomp,
    }))
}

/// BuildKit's `heredocsFromLine`.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<HeredocWord>, String> {
    let mut lex = Lex::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    let words = lex.process_words(line, &NoEnv).map_err(|e| e.0)?;
    let mut out = Vec::new();
    for w in words {
        if let Some(h) = parse_heredoc_word(&w)? {
            out.push(h);
        }
    }
    Ok(out)
}

/// BuildKit's `ChompHeredocContent`: leading tabs removed from every line.
pub fn chomp_heredoc(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    for line in content.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_extracted_like_buildkit() {
        let (f, rest) = extract_flags("--from=build --chown=\"a b\" src dst");
        assert_eq!(f, vec!["--from=build", "--chown=a b"]);
        assert_eq!(rest, "src dst");
        let (f, rest) = extract_flags("-- --notaflag x");
        assert!(f.is_empty());
        assert_eq!(rest, " --notaflag x");
    }

    #[test]
    fn words_keep_quotes() {
        assert_eq!(
            parse_words("a=\"b c\" d='e f' g\\ h", '\\'),
            vec!["a=\"b c\"", "d='e f'", "g\\ h"]
        );
    }

    #[test]
    fn heredoc_words() {
        let h = parse_heredoc_word("<<-\"EOF\"").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand, h.chomp), ("EOF", false, true));
        let h = parse_heredoc_word("<<EOF").unwrap().unwrap();
        assert!(h.expand);
        assert_eq!(parse_heredoc_word("<<").unwrap(), None);
        let hs = heredocs_from_line("RUN cat <<A > a && cat <<B > b").unwrap();
        assert_eq!(
            hs.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            vec!["A", "B"]
        );
    }

    #[test]
    fn json_detection() {
        assert_eq!(
            parse_json_array("[\"a\", \"b\"]"),
            Ok(Some(vec!["a".into(), "b".into()]))
        );
        assert_eq!(parse_json_array("[\"a\" \"b\"]"), Ok(None));
        assert_eq!(parse_json_array("[1]"), Err(NOT_STRING_ARRAY));
    }
}
