//! Dockerfile text → typed, unexpanded instructions with spans, exactly as BuildKit's
//! `frontend/dockerfile/parser` and `instructions` packages read them: parser directives, line
//! continuations, heredocs, JSON and shell forms, instruction flags. Word expansion lives in
//! [`shell`]; build checks' names and messages in [`checks`].
//!
//! Must not: touch the filesystem, expand variables into instructions (that is `plan`'s job), or know
//! build arguments.

pub mod checks;
mod flags;
mod instruction;
mod lexer;
pub mod shell;
mod words;

use std::fmt;

pub use instruction::{CmdLine, Command, CopyArgs, HealthcheckArgs, Heredoc};
pub use lexer::Directives;
pub use words::chomp_heredoc;

/// A 1-based position in the Dockerfile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Span {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why a Dockerfile was refused: `<file>:<line>:<col>: <what is wrong>: <offending text>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{span}: {what}: {text}")]
pub struct ParseError {
    pub file: String,
    pub span: Span,
    pub what: String,
    pub text: String,
}

impl ParseError {
    pub(crate) fn new(file: &str, span: Span, what: String, text: impl Into<String>) -> Self {
        ParseError {
            file: file.to_string(),
            span,
            what,
            text: text.into(),
        }
    }
}

/// One instruction as written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Instruction {
    pub span: Span,
    pub end_line: usize,
    /// The keyword as written (`run`, `Run`, `RUN`).
    pub keyword: String,
    /// The logical line (continuations joined), heredoc bodies excluded.
    pub original: String,
    pub command: Command,
}

/// A `FROM` and the instructions up to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StageDef {
    pub from: Instruction,
    /// The image or stage reference, unexpanded.
    pub base: String,
    /// `AS name`, lowercased as BuildKit does.
    pub name: Option<String>,
    /// The name as written (for the StageNameCasing check).
    pub name_as_written: Option<String>,
    /// The `AS` keyword as written (for the FromAsCasing check).
    pub as_keyword: Option<String>,
    pub platform: Option<String>,
    pub instructions: Vec<Instruction>,
}

/// A warning found while reading lines (BuildKit's `NoEmptyContinuation`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParseWarning {
    pub rule: &'static str,
    pub message: String,
    pub span: Span,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dockerfile {
    pub file_name: String,
    pub directives: Directives,
    pub escape: char,
    /// `ARG` instructions before the first `FROM`.
    pub global_args: Vec<Instruction>,
    pub stages: Vec<StageDef>,
    pub warnings: Vec<ParseWarning>,
}

/// Parses Dockerfile text. `file_name` only labels errors.
pub fn parse(text: &str, file_name: &str) -> Result<Dockerfile, ParseError> {
    let lexed = lexer::lex(text, file_name)?;
    let mut df = Dockerfile {
        file_name: file_name.to_string(),
        directives: lexed.directives,
        escape: lexed.escape,
        global_args: Vec::new(),
        stages: Vec::new(),
        warnings: Vec::new(),
    };
    if text.is_empty() {
        return Err(ParseError::new(
            file_name,
            Span { line: 1, column: 1 },
            "the Dockerfile cannot be empty".into(),
            file_name,
        ));
    }
    if lexed.lines.is_empty() {
        let line = text.lines().count().max(1);
        return Err(ParseError::new(
            file_name,
            Span { line, column: 1 },
            "file with no instructions".into(),
            file_name,
        ));
    }
    for line in &lexed.lines {
        if line.empty_continuation {
            df.warnings.push(ParseWarning {
                rule: checks::NO_EMPTY_CONTINUATION,
                message: "Empty continuation line".into(),
                span: line.span,
            });
        }
        let ins = instruction::parse_line(line, lexed.escape, file_name)?;
        match &ins.command {
            Command::From {
                base,
                name,
                name_as_written,
                as_keyword,
                platform,
            } => {
                df.stages.push(StageDef {
                    base: base.clone(),
                    name: name.clone(),
                    name_as_written: name_as_written.clone(),
                    as_keyword: as_keyword.clone(),
                    platform: platform.clone(),
                    from: ins,
                    instructions: Vec::new(),
                });
            }
            _ => match df.stages.last_mut() {
                Some(stage) => stage.instructions.push(ins),
                None if matches!(ins.command, Command::Arg(_)) => df.global_args.push(ins),
                None => {
                    return Err(ParseError::new(
                        file_name,
                        ins.span,
                        "no build stage in current context".into(),
                        ins.original.clone(),
                    ))
                }
            },
        }
    }
    if df.stages.is_empty() {
        let span = df.global_args.last().map(|a| a.span).unwrap_or_default();
        return Err(ParseError::new(
            file_name,
            span,
            "dockerfile contains no stages to build".into(),
            file_name,
        ));
    }
    Ok(df)
}

/// Parses one ONBUILD trigger expression (a base image's `OnBuild` entry) as BuildKit does.
pub fn parse_trigger(expr: &str, file_name: &str, span: Span) -> Result<Instruction, ParseError> {
    let lexed = lexer::lex(expr, file_name).map_err(|mut e| {
        e.span = span;
        e
    })?;
    if lexed.lines.len() != 1 {
        return Err(ParseError::new(
            file_name,
            span,
            "onbuild trigger should be a single expression".into(),
            expr,
        ));
    }
    let mut ins = instruction::parse_line(&lexed.lines[0], '\\', file_name).map_err(|mut e| {
        e.span = span;
        e
    })?;
    if let Command::From { .. } | Command::Maintainer(_) | Command::OnBuild { .. } = ins.command {
        return Err(ParseError::new(
            file_name,
            span,
            format!(
                "{} isn't allowed as an ONBUILD trigger",
                ins.keyword.to_ascii_uppercase()
            ),
            expr,
        ));
    }
    ins.span = span;
    Ok(ins)
}
