//! One logical line → a typed, unexpanded [`Command`], following BuildKit's parser dispatch table
//! (`parseMaybeJSON`, `parseNameVal`, …) and `instructions/parse.go` (argument counts, flag sets,
//! HEALTHCHECK options, ONBUILD restrictions).
//!
//! Must not: expand variables or resolve stage names.

use super::flags::{self, Kind};
use super::lexer::LogicalLine;
use super::words::{self, chomp_heredoc};
use super::{Instruction, ParseError, Span};

/// Shell form (a string the shell will parse) or exec form (JSON array).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum CmdLine {
    Shell(String),
    Exec(Vec<String>),
}

/// A heredoc body attached to RUN/COPY/ADD. `content` already has leading tabs removed for `<<-`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    /// False when the delimiter was quoted (`<<"EOF"`): the body is taken literally.
    pub expand: bool,
    pub chomp: bool,
}

/// COPY/ADD arguments and flags, unexpanded.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyArgs {
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    pub unpack: Option<bool>,
    pub sources: Vec<String>,
    /// Heredoc sources (`COPY <<EOF /dest`), in source order.
    pub heredocs: Vec<Heredoc>,
    pub dest: String,
}

/// HEALTHCHECK: `NONE` or a test with Docker's options (durations in nanoseconds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum HealthcheckArgs {
    None,
    Cmd {
        /// `["CMD", args…]` (exec form) or `["CMD-SHELL", command]`.
        test: Vec<String>,
        interval: i64,
        timeout: i64,
        start_period: i64,
        start_interval: i64,
        retries: i64,
    },
}

/// An instruction's arguments, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Command {
    From {
        base: String,
        name: Option<String>,
        name_as_written: Option<String>,
        as_keyword: Option<String>,
        platform: Option<String>,
    },
    Run {
        cmd: CmdLine,
        heredocs: Vec<Heredoc>,
        mounts: Vec<String>,
        network: Option<String>,
        security: Option<String>,
    },
    Cmd(CmdLine),
    Entrypoint(CmdLine),
    Shell(Vec<String>),
    /// `legacy` marks the `ENV key value` form.
    Env {
        pairs: Vec<(String, String)>,
        legacy: bool,
    },
    Label {
        pairs: Vec<(String, String)>,
        legacy: bool,
    },
    Maintainer(String),
    Expose(Vec<String>),
    Add(CopyArgs),
    Copy(CopyArgs),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    Arg(Vec<(String, Option<String>)>),
    OnBuild {
        expression: String,
    },
    StopSignal(String),
    Healthcheck(HealthcheckArgs),
}

pub(crate) const KEYWORDS: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

struct Ctx<'a> {
    file: &'a str,
    span: Span,
    original: &'a str,
    kw_upper: String,
}

impl Ctx<'_> {
    fn err(&self, what: impl Into<String>, text: impl Into<String>) -> ParseError {
        ParseError::new(self.file, self.span, what.into(), text)
    }
    fn at_least_one(&self) -> ParseError {
        self.err(
            format!("{} requires at least one argument", self.kw_upper),
            self.original,
        )
    }
    fn exactly_one(&self) -> ParseError {
        self.err(
            format!("{} requires exactly one argument", self.kw_upper),
            self.original,
        )
    }
    fn flags(
        &self,
        args: &[String],
        spec: &[(&'static str, Kind)],
    ) -> Result<flags::Flags, ParseError> {
        flags::parse(args, spec).map_err(|(what, text)| {
            let text = if text.is_empty() {
                self.original.to_string()
            } else {
                text
            };
            self.err(what, text)
        })
    }
}

/// BuildKit's `parseMaybeJSON`: (list, is_json).
fn maybe_json(rest: &str, c: &Ctx) -> Result<(Vec<String>, bool), ParseError> {
    match words::parse_json_array(rest) {
        Ok(Some(v)) => Ok((v, true)),
        Ok(None) if rest.is_empty() => Ok((Vec::new(), false)),
        Ok(None) => Ok((vec![rest.to_string()], false)),
        Err(e) => Err(c.err(e, rest)),
    }
}

/// BuildKit's `parseMaybeJSONToList`.
fn maybe_json_list(rest: &str, c: &Ctx) -> Result<(Vec<String>, bool), ParseError> {
    match words::parse_json_array(rest) {
        Ok(Some(v)) => Ok((v, true)),
        Ok(None) if rest.is_empty() => Ok((Vec::new(), false)),
        Ok(None) => Ok((words::split_ws(rest, false), false)),
        Err(e) => Err(c.err(e, rest)),
    }
}

fn cmdline((args, json): (Vec<String>, bool)) -> CmdLine {
    if json {
        CmdLine::Exec(args)
    } else {
        CmdLine::Shell(args.join(" "))
    }
}

/// BuildKit's `parseNameVal` for ENV and LABEL: (pairs, legacy).
fn name_val(
    rest: &str,
    escape: char,
    c: &Ctx,
) -> Result<(Vec<(String, String)>, bool), ParseError> {
    let ws = words::parse_words(rest, escape);
    if ws.is_empty() {
        return Err(c.at_least_one());
    }
    if !ws[0].contains('=') {
        let parts = words::split_ws(rest, true);
        if parts.len() < 2 {
            return Err(c.err(
                format!("{} must have two arguments", c.kw_upper),
                c.original,
            ));
        }
        return Ok((vec![(parts[0].clone(), parts[1].clone())], true));
    }
    let mut pairs = Vec::new();
    for w in ws {
        let Some((k, v)) = w.split_once('=') else {
            return Err(c.err(
                "syntax error - can't find = in word, must be of the form name=value",
                w,
            ));
        };
        if k.is_empty() {
            return Err(c.err(format!("{} names can not be blank", c.kw_upper), w));
        }
        pairs.push((k.to_string(), v.to_string()));
    }
    Ok((pairs, false))
}

fn heredocs(line: &LogicalLine) -> Vec<Heredoc> {
    line.heredocs
        .iter()
        .map(|h| Heredoc {
            name: h.word.name.clone(),
            content: if h.word.chomp {
                chomp_heredoc(&h.content)
            } else {
                h.content.clone()
            },
            expand: h.word.expand,
            chomp: h.word.chomp,
        })
        .collect()
}

/// Parses a logical line into an instruction.
pub(crate) fn parse_line(
    line: &LogicalLine,
    escape: char,
    file: &str,
) -> Result<Instruction, ParseError> {
    let trimmed = line.text.trim();
    let mut parts = words::split_ws(trimmed, true).into_iter();
    let keyword = parts.next().unwrap_or_default();
    let after_kw = parts.next().unwrap_or_default();
    let (flag_args, rest) = words::extract_flags(&after_kw);
    let rest = rest.trim().to_string();
    let lower = keyword.to_ascii_lowercase();
    let c = Ctx {
        file,
        span: line.span,
        original: trimmed,
        kw_upper: lower.to_ascii_uppercase(),
    };
    let no_flags = |c: &Ctx| c.flags(&flag_args, &[]).map(|_| ());
    let command = match lower.as_str() {
        "from" => parse_from(&rest, &flag_args, &c)?,
        "run" => parse_run(&rest, &flag_args, line, &c)?,
        "cmd" => {
            no_flags(&c)?;
            Command::Cmd(cmdline(maybe_json(&rest, &c)?))
        }
        "entrypoint" => {
            no_flags(&c)?;
            Command::Entrypoint(cmdline(maybe_json(&rest, &c)?))
        }
        "shell" => {
            no_flags(&c)?;
            let (args, json) = maybe_json(&rest, &c)?;
            if args.is_empty() {
                return Err(c.at_least_one());
            }
            if !json {
                return Err(c.err("SHELL requires the arguments to be in JSON form", trimmed));
            }
            Command::Shell(args)
        }
        "env" | "label" => {
            let (pairs, legacy) = name_val(&rest, escape, &c)?;
            no_flags(&c)?;
            if lower == "env" {
                Command::Env { pairs, legacy }
            } else {
                Command::Label { pairs, legacy }
            }
        }
        "maintainer" => {
            if rest.is_empty() {
                return Err(c.exactly_one());
            }
            no_flags(&c)?;
            Command::Maintainer(rest.clone())
        }
        "expose" => {
            if rest.is_empty() {
                return Err(c.at_least_one());
            }
            no_flags(&c)?;
            let mut ports = words::split_ws(&rest, false);
            ports.sort();
            Command::Expose(ports)
        }
        "add" | "copy" => parse_copy(&lower, &rest, &flag_args, line, &c)?,
        "volume" => {
            no_flags(&c)?;
            let (vols, _) = maybe_json_list(&rest, &c)?;
            if vols.is_empty() {
                return Err(c.at_least_one());
            }
            if vols.iter().any(|v| v.trim().is_empty()) {
                return Err(c.err("VOLUME specified can not be an empty string", trimmed));
            }
            Command::Volume(vols)
        }
        "user" | "workdir" | "stopsignal" => {
            if rest.is_empty() {
                return Err(c.exactly_one());
            }
            no_flags(&c)?;
            match lower.as_str() {
                "user" => Command::User(rest.clone()),
                "workdir" => Command::Workdir(rest.clone()),
                _ => Command::StopSignal(rest.clone()),
            }
        }
        "arg" => parse_arg(&rest, escape, &flag_args, &c)?,
        "onbuild" => parse_onbuild(&keyword, &rest, &flag_args, line, &c)?,
        "healthcheck" => parse_healthcheck(&rest, &flag_args, &c)?,
        _ => {
            let mut what = format!("unknown instruction: {keyword}");
            if let Some(s) = super::checks::suggest(&keyword, KEYWORDS.iter().copied(), false) {
                what.push_str(&format!(" (did you mean {s}?)"));
            }
            return Err(c.err(what, c.original));
        }
    };
    Ok(Instruction {
        span: line.span,
        end_line: line.end_line,
        keyword,
        original: trimmed.to_string(),
        command,
    })
}

/// `FROM [--platform=…] image [AS name]` (BuildKit's `parseFrom`).
fn parse_from(rest: &str, flag_args: &[String], c: &Ctx) -> Result<Command, ParseError> {
    let args = if rest.is_empty() {
        Vec::new()
    } else {
        words::split_ws(rest, false)
    };
    let (name, name_as_written, as_keyword) = match args.len() {
        3 if args[1].eq_ignore_ascii_case("as") => {
            let n = args[2].to_ascii_lowercase();
            if !valid_stage_name(&n) {
                return Err(c.err(
                    format!("invalid name for build stage: {:?}, name can't start with a number or contain symbols", args[2]),
                    c.original,
                ));
            }
            (Some(n), Some(args[2].clone()), Some(args[1].clone()))
        }
        1 => (None, None, None),
        _ => return Err(c.err("FROM requires either one or three arguments", c.original)),
    };
    let f = c.flags(flag_args, &[("platform", Kind::Str)])?;
    Ok(Command::From {
        base: args[0].clone(),
        name,
        name_as_written,
        as_keyword,
        platform: f.string("platform"),
    })
}

/// `RUN [--mount=…] [--network=…] [--security=…] command` (BuildKit's `parseRun`).
fn parse_run(
    rest: &str,
    flag_args: &[String],
    line: &LogicalLine,
    c: &Ctx,
) -> Result<Command, ParseError> {
    let f = c.flags(
        flag_args,
        &[
            ("mount", Kind::Strings),
            ("network", Kind::Str),
            ("security", Kind::Str),
        ],
    )?;
    Ok(Command::Run {
        cmd: cmdline(maybe_json(rest, c)?),
        heredocs: heredocs(line),
        mounts: f.strings("mount"),
        network: f.string("network"),
        security: f.string("security"),
    })
}

/// `ARG name[=default] …` (BuildKit's `parseArg`).
fn parse_arg(
    rest: &str,
    escape: char,
    flag_args: &[String],
    c: &Ctx,
) -> Result<Command, ParseError> {
    let ws = words::parse_words(rest, escape);
    if ws.is_empty() {
        return Err(c.at_least_one());
    }
    c.flags(flag_args, &[])?;
    let mut pairs = Vec::new();
    for w in ws {
        match w.split_once('=') {
            Some(("", _)) => return Err(c.err("ARG names can not be blank", w)),
            Some((k, v)) => pairs.push((k.to_string(), Some(v.to_string()))),
            None => pairs.push((w, None)),
        }
    }
    Ok(Command::Arg(pairs))
}

/// `ONBUILD instruction`: the trigger is kept as written, heredoc bodies included (BuildKit's
/// `parseOnBuild`).
fn parse_onbuild(
    keyword: &str,
    rest: &str,
    flag_args: &[String],
    line: &LogicalLine,
    c: &Ctx,
) -> Result<Command, ParseError> {
    if rest.is_empty() {
        return Err(c.at_least_one());
    }
    c.flags(flag_args, &[])?;
    let trigger = words::split_ws(rest, true)[0].to_ascii_uppercase();
    match trigger.as_str() {
        "ONBUILD" => {
            return Err(c.err(
                "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                c.original,
            ))
        }
        "MAINTAINER" | "FROM" => {
            return Err(c.err(
                format!("{trigger} isn't allowed as an ONBUILD trigger"),
                c.original,
            ))
        }
        _ => {}
    }
    let mut expression = c.original[keyword.len()..].trim_start().to_string();
    for h in &line.heredocs {
        expression.push('\n');
        expression.push_str(&h.content);
        expression.push_str(&h.word.name);
    }
    Ok(Command::OnBuild { expression })
}

/// `^[a-z][a-z0-9-_.]*$`
fn valid_stage_name(n: &str) -> bool {
    let mut cs = n.chars();
    cs.next().is_some_and(|c| c.is_ascii_lowercase())
        && cs.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn parse_copy(
    kw: &str,
    rest: &str,
    flag_args: &[String],
    line: &LogicalLine,
    c: &Ctx,
) -> Result<Command, ParseError> {
    let (args, _) = maybe_json_list(rest, c)?;
    if args.len() < 2 {
        return Err(c.err(
            format!(
                "{} requires at least two arguments, but only one was provided. Destination could not be determined",
                c.kw_upper
            ),
            c.original,
        ));
    }
    let f = if kw == "add" {
        c.flags(
            flag_args,
            &[
                ("chown", Kind::Str),
                ("chmod", Kind::Str),
                ("link", Kind::Bool),
                ("keep-git-dir", Kind::Bool),
                ("checksum", Kind::Str),
                ("exclude", Kind::Strings),
                ("unpack", Kind::Bool),
            ],
        )?
    } else {
        c.flags(
            flag_args,
            &[
                ("from", Kind::Str),
                ("chown", Kind::Str),
                ("chmod", Kind::Str),
                ("link", Kind::Bool),
                ("parents", Kind::Bool),
                ("exclude", Kind::Strings),
            ],
        )?
    };
    let dest = args[args.len() - 1].clone();
    if words::parse_heredoc_word(&dest).ok().flatten().is_some() {
        return Err(c.err(
            format!("{} cannot accept a heredoc as a destination", c.kw_upper),
            dest,
        ));
    }
    let mut sources = Vec::new();
    let mut docs = Vec::new();
    for src in &args[..args.len() - 1] {
        match words::parse_heredoc_word(src).map_err(|e| c.err(e, src.clone()))? {
            Some(h) => {
                let raw = line.heredocs.iter().find(|r| r.word.name == h.name);
                let content = raw.map(|r| r.content.clone()).unwrap_or_default();
                let content = if h.chomp {
                    chomp_heredoc(&content)
                } else {
                    content
                };
                docs.push(Heredoc {
                    name: h.name,
                    content,
                    expand: h.expand,
                    chomp: h.chomp,
                });
            }
            None => sources.push(src.clone()),
        }
    }
    let unpack = if flag_args.iter().any(|a| a.starts_with("--unpack")) {
        Some(f.bool("unpack"))
    } else {
        None
    };
    let a = CopyArgs {
        from: f.string("from"),
        chown: f.string("chown"),
        chmod: f.string("chmod"),
        link: f.bool("link"),
        parents: f.bool("parents"),
        excludes: f.strings("exclude"),
        checksum: f.string("checksum"),
        keep_git_dir: f.bool("keep-git-dir"),
        unpack,
        sources,
        heredocs: docs,
        dest,
    };
    Ok(if kw == "add" {
        Command::Add(a)
    } else {
        Command::Copy(a)
    })
}

fn parse_healthcheck(rest: &str, flag_args: &[String], c: &Ctx) -> Result<Command, ParseError> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Err(c.at_least_one());
    }
    let typ = rest[..sep].to_ascii_uppercase();
    let cmd_text = rest[sep..].trim_start();
    let (args, json) = maybe_json(cmd_text, c)?;
    if typ == "NONE" {
        if !args.is_empty() {
            return Err(c.err("HEALTHCHECK NONE takes no arguments", c.original));
        }
        c.flags(flag_args, &[])?;
        return Ok(Command::Healthcheck(HealthcheckArgs::None));
    }
    let f = c.flags(
        flag_args,
        &[
            ("interval", Kind::Str),
            ("timeout", Kind::Str),
            ("start-period", Kind::Str),
            ("start-interval", Kind::Str),
            ("retries", Kind::Str),
        ],
    )?;
    if typ != "CMD" {
        return Err(c.err(
            format!("Unknown type {:?} in HEALTHCHECK (try CMD)", &rest[..sep]),
            c.original,
        ));
    }
    if args.is_empty() {
        return Err(c.err("Missing command after HEALTHCHECK CMD", c.original));
    }
    let mut test = vec![if json {
        "CMD".to_string()
    } else {
        "CMD-SHELL".to_string()
    }];
    test.extend(args);
    let dur = |name: &str| -> Result<i64, ParseError> {
        let Some(v) = f.string(name) else {
            return Ok(0);
        };
        let d = super::checks::parse_go_duration(&v).map_err(|e| c.err(e, v.clone()))?;
        if d != 0 && d < 1_000_000 {
            return Err(c.err(format!("Interval \"{name}\" cannot be less than 1ms"), v));
        }
        Ok(d)
    };
    let retries = match f.string("retries") {
        None => 0,
        Some(v) => {
            let r: i64 = v
                .parse()
                .map_err(|_| c.err("invalid --retries value", v.clone()))?;
            if r < 0 {
                return Err(c.err("--retries cannot be negative", v));
            }
            r
        }
    };
    Ok(Command::Healthcheck(HealthcheckArgs::Cmd {
        test,
        interval: dur("interval")?,
        timeout: dur("timeout")?,
        start_period: dur("start-period")?,
        start_interval: dur("start-interval")?,
        retries,
    }))
}
