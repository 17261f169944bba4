//! Physical lines → logical instruction lines, as BuildKit's `parser.Parse` does: BOM, CRLF,
//! parser directives at the top, comments, line continuations (with comment and blank lines inside
//! them), and heredoc bodies collected after their instruction line.
//!
//! Must not: interpret instruction arguments beyond finding the keyword and heredoc delimiters.

use super::words::{self, HeredocWord};
use super::{ParseError, Span};

/// One logical line: an instruction with its continuation lines joined and heredoc bodies read.
#[derive(Debug, Clone)]
pub(crate) struct LogicalLine {
    pub span: Span,
    pub end_line: usize,
    /// The joined text (continuations removed), as BuildKit's `Node.Original`.
    pub text: String,
    pub heredocs: Vec<RawHeredoc>,
    pub empty_continuation: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct RawHeredoc {
    pub word: HeredocWord,
    /// Body lines with their line endings, terminator excluded.
    pub content: String,
}

/// Parser directives (`# syntax=`, `# escape=`, `# check=`) from the top of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Directives {
    pub syntax: Option<String>,
    pub escape: Option<String>,
    pub check: Option<String>,
}

struct DirectiveParser {
    done: bool,
    seen: Directives,
    escape: char,
}

impl DirectiveParser {
    /// `line` is left-trimmed with its newline removed.
    fn feed(&mut self, line: &str, span: Span, file: &str) -> Result<(), ParseError> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = directive(line) else {
            self.done = true;
            return Ok(());
        };
        let key = name.to_ascii_lowercase();
        let slot = match key.as_str() {
            "syntax" => &mut self.seen.syntax,
            "escape" => &mut self.seen.escape,
            "check" => &mut self.seen.check,
            _ => {
                self.done = true;
                return Ok(());
            }
        };
        if slot.is_some() {
            return Err(ParseError::new(
                file,
                span,
                format!("only one {key} parser directive can be used"),
                line,
            ));
        }
        *slot = Some(value.to_string());
        if key == "escape" {
            self.escape = match value {
                "`" => '`',
                "\\" => '\\',
                _ => {
                    return Err(ParseError::new(
                        file,
                        span,
                        format!("invalid escape token '{value}' does not match ` or \\"),
                        value,
                    ))
                }
            };
        }
        Ok(())
    }
}

/// `^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$`
fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start_matches([' ', '\t']);
    let name_len = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let name = &rest[..name_len];
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let value = rest[name_len..]
        .trim_start_matches([' ', '\t'])
        .strip_prefix('=')?;
    let value = value.trim_matches([' ', '\t']);
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

/// Go's `unicode.IsSpace` over the start of a line.
fn trim_left(s: &str) -> &str {
    s.trim_start_matches(char::is_whitespace)
}

/// `bytes.TrimRight(line, "\r\n")`
fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(raw: &str) -> bool {
    trim_left(trim_newline(raw)).starts_with('#')
}

/// Removes a trailing escape token (plus spaces/tabs): `(line, is_end_of_line)`.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(body) => (body.to_string(), false),
        None => (line.to_string(), true),
    }
}

/// The result of the line pass.
pub(crate) struct Lexed {
    pub lines: Vec<LogicalLine>,
    pub directives: Directives,
    pub escape: char,
}

/// Whether an instruction line may carry heredocs (RUN/COPY/ADD, also as an ONBUILD trigger, never in
/// JSON form).
fn can_contain_heredoc(line: &str) -> bool {
    let t = line.trim();
    let mut parts = words::split_ws(t, true).into_iter();
    let mut kw = parts.next().unwrap_or_default().to_ascii_lowercase();
    let mut rest = parts.next().unwrap_or_default();
    if kw == "onbuild" {
        let mut p = words::split_ws(rest.trim(), true).into_iter();
        kw = p.next().unwrap_or_default().to_ascii_lowercase();
        rest = p.next().unwrap_or_default();
    }
    if !matches!(kw.as_str(), "run" | "copy" | "add") {
        return false;
    }
    let (_, args) = words::extract_flags(&rest);
    !matches!(words::parse_json_array(args.trim()), Ok(Some(_)) | Err(_))
}

pub(crate) fn lex(text: &str, file: &str) -> Result<Lexed, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let phys: Vec<&str> = text.split_inclusive('\n').collect();
    let mut dp = DirectiveParser {
        done: false,
        seen: Directives::default(),
        escape: '\\',
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < phys.len() {
        let raw = phys[i];
        i += 1;
        let start_line = i;
        let token = trim_left(trim_newline(raw));
        let span = Span {
            line: start_line,
            column: trim_newline(raw).chars().count() - token.chars().count() + 1,
        };
        dp.feed(token, span, file)?;
        let processed = if token.starts_with('#') { "" } else { token };
        let (mut line, mut eol) = trim_continuation(processed, dp.escape);
        if eol && line.is_empty() {
            continue;
        }
        let mut empty_cont = false;
        while !eol && i < phys.len() {
            let raw = phys[i];
            i += 1;
            let tok = trim_newline(raw);
            dp.feed(trim_left(tok), Span { line: i, column: 1 }, file)?;
            if is_comment(raw) {
                continue;
            }
            if trim_left(tok).is_empty() {
                empty_cont = true;
                continue;
            }
            let (c, e) = trim_continuation(tok, dp.escape);
            line.push_str(&c);
            eol = e;
        }
        let mut heredocs = Vec::new();
        if line.contains("<<") && can_contain_heredoc(&line) {
            let words = words::heredocs_from_line(&line)
                .map_err(|e| ParseError::new(file, span, e, &line))?;
            for word in words {
                let mut content = String::new();
                let mut terminated = false;
                while i < phys.len() {
                    let body = phys[i];
                    i += 1;
                    let mut candidate = trim_newline(body);
                    if word.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == word.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(body);
                }
                if !terminated {
                    return Err(ParseError::new(
                        file,
                        span,
                        "unterminated heredoc".into(),
                        format!("<<{}", word.name),
                    ));
                }
                heredocs.push(RawHeredoc { word, content });
            }
        }
        out.push(LogicalLine {
            span,
            end_line: i,
            text: line,
            heredocs,
            empty_continuation: empty_cont,
        });
    }
    Ok(Lexed {
        lines: out,
        directives: dp.seen,
        escape: dp.escape,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_comments_and_blank_lines() {
        let l = lex("FROM a\nRUN echo a \\\n# c\n\n  && echo b\n", "Dockerfile").unwrap();
        assert_eq!(l.lines.len(), 2);
        assert_eq!(l.lines[1].text, "RUN echo a   && echo b");
        assert!(l.lines[1].empty_continuation);
        assert_eq!(l.lines[1].end_line, 5);
    }

    #[test]
    fn directives_only_at_top() {
        let l = lex(
            "# escape=`\n# syntax=docker/dockerfile:1\nFROM a\n# check=skip=all\n",
            "D",
        )
        .unwrap();
        assert_eq!(l.escape, '`');
        assert_eq!(l.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(l.directives.check, None);
        let e = lex("# escape=x\nFROM a\n", "D")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("D:1:1: invalid escape token 'x' does not match ` or \\: x")
        );
    }

    #[test]
    fn crlf_bom_and_heredoc() {
        let l = lex(
            "\u{feff}FROM a\r\nRUN <<-EOF\r\n\techo hi\r\n\tEOF\r\n",
            "D",
        )
        .unwrap();
        assert_eq!(l.lines[0].text, "FROM a");
        assert_eq!(l.lines[1].heredocs[0].content, "\techo hi\r\n");
    }
}
