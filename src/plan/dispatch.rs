//! One stage's instructions → expanded [`Step`]s, as BuildKit's `dispatch` does: ARG/ENV scopes
//! (ARG values join the build-time environment, ENV also the image's), which instructions are
//! expanded (RUN/CMD/ENTRYPOINT/HEALTHCHECK text is not), WORKDIR resolution, mounts, and the checks
//! that need this context (UndefinedVar, LegacyKeyValueFormat, JSONArgsRecommended, …).
//!
//! Must not: resolve stage names (the caller passes a resolver) or do I/O.

use std::collections::{BTreeMap, BTreeSet};

use super::lint::Lints;
use super::types::{
    Add, Copy, CopySource, Healthcheck, Heredoc, Instruction, Network, Run, Security, ShellOrExec,
    Step,
};
use super::values::{self, ValueError};
use super::PlanError;
use crate::dockerfile::checks;
use crate::dockerfile::shell::{EnvList, Lex};
use crate::dockerfile::{self as df, CmdLine, Command, HealthcheckArgs, Span};

/// The evolving state of a stage (BuildKit's `dispatchState`).
#[derive(Debug, Clone)]
pub(crate) struct StageState {
    /// Build-time environment: image env plus ARG values, later definitions replacing earlier ones.
    pub env: EnvList,
    /// The image config's env.
    pub image_env: EnvList,
    pub workdir: String,
    pub workdir_set: bool,
    pub user: String,
    pub shell: Vec<String>,
    pub custom_shell: bool,
    /// ARG names declared so far (with or without value).
    pub declared: Vec<String>,
    pub arg_values: BTreeMap<String, String>,
    /// This stage's own ONBUILD expressions (triggers for stages built FROM it).
    pub onbuild: Vec<String>,
}

pub(crate) struct Ctx<'a> {
    pub file: &'a str,
    pub escape: char,
    pub meta_env: &'a EnvList,
    pub build_args: &'a BTreeMap<String, String>,
    pub proxy: &'a [(String, String)],
    pub resolve: &'a dyn Fn(&str) -> Result<CopySource, ValueError>,
    pub lints: &'a mut Lints,
    pub used_args: &'a mut BTreeSet<String>,
}

fn at(file: &str, span: Span, what: impl Into<String>, text: impl Into<String>) -> PlanError {
    PlanError::At {
        file: file.to_string(),
        span,
        what: what.into(),
        text: text.into(),
    }
}

impl Ctx<'_> {
    /// Expands one word with the stage's build-time env; reports undefined variables.
    fn expand(
        &mut self,
        st: &StageState,
        word: &str,
        span: Span,
        original: &str,
    ) -> Result<String, PlanError> {
        self.expand_with(&Lex::new(self.escape), st, word, span, original)
    }

    fn expand_with(
        &mut self,
        lex: &Lex,
        st: &StageState,
        word: &str,
        span: Span,
        original: &str,
    ) -> Result<String, PlanError> {
        let r = lex
            .process(word, &st.env)
            .map_err(|e| at(self.file, span, e.0, original))?;
        for var in r.missing {
            if st.declared.contains(&var) {
                continue;
            }
            let keys: Vec<String> = st.env.0.iter().map(|(k, _)| k.clone()).collect();
            let mut msg = format!("Usage of undefined variable '${var}'");
            if let Some(s) = checks::suggest(&var, keys.iter().map(String::as_str), true) {
                msg.push_str(&format!(" (did you mean ${s}?)"));
            }
            self.lints.add(checks::UNDEFINED_VAR, msg, span);
        }
        Ok(r.result)
    }
}

fn cmdline(c: &CmdLine) -> ShellOrExec {
    match c {
        CmdLine::Shell(s) => ShellOrExec::Shell(s.clone()),
        CmdLine::Exec(v) => ShellOrExec::Exec(v.clone()),
    }
}

/// Tracks the last CMD/ENTRYPOINT/HEALTHCHECK for MultipleInstructionsDisallowed.
#[derive(Default)]
pub(crate) struct UsedOnce {
    last: BTreeMap<String, (Span, String)>,
}

impl UsedOnce {
    fn mark(&mut self, kind: &str, keyword: &str, span: Span, lints: &mut Lints) {
        if let Some((prev, prev_kw)) = self
            .last
            .insert(kind.to_string(), (span, keyword.to_string()))
        {
            lints.add(
                checks::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                format!(
                    "Multiple {prev_kw} instructions should not be used in the same stage because only the last one will be used"
                ),
                prev,
            );
        }
    }
}

/// Dispatches one instruction, mutating `st`, and returns its step.
pub(crate) fn dispatch(
    ctx: &mut Ctx,
    st: &mut StageState,
    ins: &df::Instruction,
    on_build: bool,
    once: &mut UsedOnce,
) -> Result<Step, PlanError> {
    let span = ins.span;
    let orig = ins.original.as_str();
    let file = ctx.file;
    let instruction = match &ins.command {
        Command::From { .. } => return Err(at(file, span, "FROM isn't allowed here", orig)),
        Command::Env { pairs, legacy } | Command::Label { pairs, legacy } => {
            let is_env = matches!(ins.command, Command::Env { .. });
            let name = if is_env { "ENV" } else { "LABEL" };
            if *legacy {
                ctx.lints.add(
                    checks::LEGACY_KEY_VALUE_FORMAT,
                    format!("\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"),
                    span,
                );
            }
            let mut out = Vec::new();
            for (k, v) in pairs {
                let k = ctx.expand(st, k, span, orig)?;
                let v = ctx.expand(st, v, span, orig)?;
                if k.is_empty() {
                    return Err(at(
                        file,
                        span,
                        format!("{name} names can not be blank"),
                        orig,
                    ));
                }
                out.push((k, v));
            }
            if is_env {
                for (k, v) in &out {
                    ctx.lints.secret_key("ENV", k, span);
                    st.env.set(k, v);
                    st.image_env.set(k, v);
                }
                Instruction::Env(out)
            } else {
                Instruction::Label(out)
            }
        }
        Command::Arg(pairs) => {
            let mut out = Vec::new();
            for (key, default) in pairs {
                ctx.lints.secret_key("ARG", key, span);
                ctx.used_args.insert(key.clone());
                let value = if let Some(v) = ctx.build_args.get(key) {
                    Some(v.clone())
                } else if let Some(d) = default {
                    Some(ctx.expand(st, d, span, orig)?)
                } else {
                    ctx.meta_env.get(key).map(str::to_string)
                };
                if let Some(v) = &value {
                    st.env.set(key, v);
                    st.arg_values.insert(key.clone(), v.clone());
                }
                if !st.declared.contains(key) {
                    st.declared.push(key.clone());
                }
                out.push((key.clone(), value));
            }
            Instruction::Arg(out)
        }
        Command::Workdir(p) => {
            let p = ctx.expand(st, p, span, orig)?;
            if !p.starts_with('/') && !st.workdir_set {
                ctx.lints.add(
                    checks::WORKDIR_RELATIVE_PATH,
                    format!("Relative workdir {p:?} can have unexpected results if the base image changes"),
                    span,
                );
            }
            st.workdir = values::join_clean(&st.workdir, &p);
            st.workdir_set = true;
            Instruction::Workdir(st.workdir.clone())
        }
        Command::User(u) => {
            st.user = ctx.expand(st, u, span, orig)?;
            Instruction::User(st.user.clone())
        }
        Command::Volume(vols) => {
            let mut out = Vec::new();
            for v in vols {
                let v = ctx.expand(st, v, span, orig)?;
                if v.trim().is_empty() {
                    return Err(at(
                        file,
                        span,
                        "VOLUME specified can not be an empty string",
                        orig,
                    ));
                }
                out.push(v);
            }
            Instruction::Volume(out)
        }
        Command::StopSignal(s) => {
            let s = ctx.expand(st, s, span, orig)?;
            if !values::valid_signal(&s) {
                return Err(at(file, span, "Invalid signal", s));
            }
            Instruction::StopSignal(s)
        }
        Command::Expose(ports) => {
            let mut out: Vec<String> = Vec::new();
            for p in ports {
                let p = ctx.expand(st, p, span, orig)?;
                for word in p.split_whitespace() {
                    if let Some((_, proto)) = word.rsplit_once('/') {
                        if proto != proto.to_lowercase() {
                            ctx.lints.add(
                                checks::EXPOSE_PROTO_CASING,
                                format!("Defined protocol '{word}' in EXPOSE instruction should be lowercase"),
                                span,
                            );
                        }
                    }
                    for n in values::parse_ports(word).map_err(|(w, t)| at(file, span, w, t))? {
                        if !out.contains(&n) {
                            out.push(n);
                        }
                    }
                }
            }
            Instruction::Expose(out)
        }
        Command::Maintainer(m) => {
            ctx.lints.add(
                checks::MAINTAINER_DEPRECATED,
                "Maintainer instruction is deprecated in favor of using label".into(),
                span,
            );
            Instruction::Maintainer(m.clone())
        }
        Command::OnBuild { expression } => {
            st.onbuild.push(expression.clone());
            Instruction::OnBuild(expression.clone())
        }
        Command::Shell(s) => {
            st.shell = s.clone();
            st.custom_shell = true;
            Instruction::Shell(s.clone())
        }
        Command::Cmd(c) | Command::Entrypoint(c) => {
            let is_cmd = matches!(ins.command, Command::Cmd(_));
            once.mark(
                if is_cmd { "cmd" } else { "entrypoint" },
                &ins.keyword,
                span,
                ctx.lints,
            );
            if matches!(c, CmdLine::Shell(_)) && !st.custom_shell {
                ctx.lints.add(
                    checks::JSON_ARGS_RECOMMENDED,
                    format!(
                        "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                        ins.keyword
                    ),
                    span,
                );
            }
            if is_cmd {
                Instruction::Cmd(cmdline(c))
            } else {
                Instruction::Entrypoint(cmdline(c))
            }
        }
        Command::Healthcheck(h) => {
            once.mark("healthcheck", &ins.keyword, span, ctx.lints);
            Instruction::Healthcheck(match h {
                HealthcheckArgs::None => None,
                HealthcheckArgs::Cmd {
                    test,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                } => Some(Healthcheck {
                    test: test.clone(),
                    interval: *interval,
                    timeout: *timeout,
                    start_period: *start_period,
                    start_interval: *start_interval,
                    retries: *retries,
                }),
            })
        }
        Command::Run {
            cmd,
            heredocs,
            mounts,
            network,
            security,
        } => {
            let network = match network.as_deref() {
                None | Some("default") => Network::Default,
                Some("none") => Network::None,
                Some("host") => Network::Host,
                Some(n) => return Err(at(file, span, format!("invalid network mode {n:?}"), orig)),
            };
            let security = match security.as_deref() {
                None | Some("sandbox") => Security::Sandbox,
                Some("insecure") => Security::Insecure,
                Some(s) => {
                    return Err(at(file, span, format!("security {s:?} is not valid"), orig))
                }
            };
            let mut out = Vec::new();
            let mut ssh = 0;
            for m in mounts {
                let st_ref: &StageState = st;
                let mut exp = |w: &str| -> Result<String, ValueError> {
                    Lex::new(ctx.escape)
                        .process_word(w, &st_ref.env)
                        .map_err(|e| (e.0, w.to_string()))
                };
                let mount = values::parse_mount(m, &mut exp, ctx.resolve, &st.workdir, ssh)
                    .map_err(|(w, t)| at(file, span, w, t))?;
                if matches!(mount, super::types::Mount::Ssh { .. }) {
                    ssh += 1;
                }
                out.push(mount);
            }
            let heredocs = heredocs
                .iter()
                .map(|h| Heredoc {
                    name: h.name.clone(),
                    content: h.content.clone(),
                    expand: h.expand,
                })
                .collect();
            Instruction::Run(Run {
                command: cmdline(cmd),
                heredocs,
                mounts: out,
                network,
                security,
            })
        }
        Command::Copy(a) | Command::Add(a) => {
            let is_add = matches!(ins.command, Command::Add(_));
            let mut sources = Vec::new();
            for s in &a.sources {
                sources.push(ctx.expand(st, s, span, orig)?);
            }
            let dest = ctx.expand(st, &a.dest, span, orig)?;
            let opt = |ctx: &mut Ctx, v: &Option<String>| -> Result<Option<String>, PlanError> {
                v.as_ref()
                    .map(|v| ctx.expand(st, v, span, orig))
                    .transpose()
            };
            let chown = opt(ctx, &a.chown)?;
            let chmod = opt(ctx, &a.chmod)?;
            if let Some(m) = &chmod {
                if !values::valid_chmod(m) {
                    return Err(at(
                        file,
                        span,
                        format!("invalid chmod parameter: '{m}'. it should be octal string and between 0 and 07777"),
                        orig,
                    ));
                }
            }
            let mut excludes = Vec::new();
            for e in &a.excludes {
                excludes.push(ctx.expand(st, e, span, orig)?);
            }
            let mut heredocs = Vec::new();
            for h in &a.heredocs {
                let content = if h.expand {
                    // BuildKit's `ExpandRaw`: a fresh `NewLex('\\')` (the file's escape directive
                    // does not apply) with quote processing off; unset names still count for
                    // UndefinedVar.
                    let mut lex = Lex::new('\\');
                    lex.skip_process_quotes = true;
                    ctx.expand_with(&lex, st, &h.content, span, orig)?
                } else {
                    h.content.clone()
                };
                heredocs.push(Heredoc {
                    name: h.name.clone(),
                    content,
                    expand: h.expand,
                });
            }
            if is_add {
                let checksum = opt(ctx, &a.checksum)?;
                if checksum.is_some() && sources.len() + heredocs.len() != 1 {
                    return Err(at(
                        file,
                        span,
                        "checksum can't be specified for multiple sources",
                        orig,
                    ));
                }
                Instruction::Add(Add {
                    sources,
                    heredocs,
                    dest,
                    chown,
                    chmod,
                    link: a.link,
                    excludes,
                    checksum,
                    keep_git_dir: a.keep_git_dir,
                    unpack: a.unpack,
                })
            } else {
                let from = match &a.from {
                    None => None,
                    Some(f) => {
                        super::check_from_unexpanded(&Lex::new(ctx.escape), f)
                            .map_err(|w| at(file, span, w, f.clone()))?;
                        Some((ctx.resolve)(f).map_err(|(w, _)| at(file, span, w, orig))?)
                    }
                };
                Instruction::Copy(Copy {
                    from,
                    sources,
                    heredocs,
                    dest,
                    chown,
                    chmod,
                    link: a.link,
                    parents: a.parents,
                    excludes,
                })
            }
        }
    };
    let mut args = st.arg_values.clone();
    let mut run_env = st.env.clone();
    for (k, v) in ctx.proxy {
        args.entry(k.clone()).or_insert_with(|| v.clone());
        if run_env.get(k).is_none() {
            run_env.set(k, v);
        }
    }
    Ok(Step {
        span,
        source: ins.original.clone(),
        instruction,
        on_build,
        args,
        env: st.image_env.0.clone(),
        run_env: run_env.0,
        workdir: st.workdir.clone(),
        user: st.user.clone(),
        shell: st.shell.clone(),
    })
}
