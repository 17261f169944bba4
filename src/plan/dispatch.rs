//! One stage's instructions → expanded [`Step`]s, as BuildKit's `dispatch` does: ARG/ENV scopes
//! (ARG values join the build-time environment, ENV also the image's), which instructions are
//! expanded (RUN/CMD/ENTRYPOINT/HEALTHCHECK text is not), WORKDIR resolution, mounts, and the checks
//! that need this context (UndefinedVar, LegacyKeyValueFormat, JSONArgsRecommended, …).
//!
//! [`dispatch`] routes each instruction to one `dispatch_<instruction>` function named after its
//! BuildKit counterpart in `frontend/dockerfile/dockerfile2llb/convert.go` (`dispatchEnv`,
//! `dispatchRun`, `dispatchCopy`, …), so a change upstream maps to one function here.
//!
//! Must not: resolve stage names (the caller passes a resolver) or do I/O.

use std::collections::{BTreeMap, BTreeSet};

use super::chmod::Chmod;
use super::lint::Lints;
use super::types::{
    Copy, CopyKind, CopySource, Healthcheck, Heredoc, Instruction, Network, Run, Security,
    ShellOrExec, Source, Step,
};
use super::values::{self, ValueError};
use super::PlanError;
use crate::dockerfile::checks;
use crate::dockerfile::shell::{EnvList, Lex};
use crate::dockerfile::{self as df, CmdLine, Command, HealthcheckArgs, Span};

/// The evolving state of a stage (BuildKit's `dispatchState`).
#[derive(Debug, Clone)]
pub(crate) struct DispatchState {
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

pub(super) fn at(
    file: &str,
    span: Span,
    what: impl Into<String>,
    text: impl Into<String>,
) -> PlanError {
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
        st: &DispatchState,
        word: &str,
        span: Span,
        original: &str,
    ) -> Result<String, PlanError> {
        self.expand_with(&Lex::new(self.escape), st, word, span, original)
    }

    fn expand_with(
        &mut self,
        lex: &Lex,
        st: &DispatchState,
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

/// Dispatches one instruction, mutating `st`, and returns its step (BuildKit's `dispatch`: the
/// switch over instruction types, then the step's recorded state).
pub(crate) fn dispatch(
    ctx: &mut Ctx,
    st: &mut DispatchState,
    ins: &df::Instruction,
    on_build: bool,
    once: &mut UsedOnce,
) -> Result<Step, PlanError> {
    let instruction = match &ins.command {
        Command::From { .. } => {
            return Err(at(
                ctx.file,
                ins.span,
                "FROM isn't allowed here",
                &ins.original,
            ))
        }
        Command::Env { pairs, legacy } => dispatch_env(ctx, st, ins, pairs, *legacy)?,
        Command::Label { pairs, legacy } => dispatch_label(ctx, st, ins, pairs, *legacy)?,
        Command::Arg(pairs) => dispatch_arg(ctx, st, ins, pairs)?,
        Command::Workdir(p) => dispatch_workdir(ctx, st, ins, p)?,
        Command::User(u) => dispatch_user(ctx, st, ins, u)?,
        Command::Volume(vols) => dispatch_volume(ctx, st, ins, vols)?,
        Command::StopSignal(s) => dispatch_stop_signal(ctx, st, ins, s)?,
        Command::Expose(ports) => dispatch_expose(ctx, st, ins, ports)?,
        Command::Maintainer(m) => dispatch_maintainer(ctx, ins, m),
        Command::OnBuild { expression } => dispatch_onbuild(st, expression),
        Command::Shell(s) => dispatch_shell(st, s),
        Command::Cmd(c) => dispatch_cmd(ctx, st, ins, c, once),
        Command::Entrypoint(c) => dispatch_entrypoint(ctx, st, ins, c, once),
        Command::Healthcheck(h) => dispatch_healthcheck(ctx, ins, h, once),
        Command::Run {
            cmd,
            heredocs,
            mounts,
            network,
            security,
        } => dispatch_run(ctx, st, ins, cmd, heredocs, mounts, network, security)?,
        Command::Copy(a) => dispatch_copy(ctx, st, ins, a)?,
        Command::Add(a) => dispatch_add(ctx, st, ins, a)?,
    };
    Ok(step(ctx, st, ins, instruction, on_build))
}

/// The step of `instruction` with the stage's state after it; proxy build args reach RUN's
/// environment without being declared (BuildKit's `proxyEnvFromBuildArgs`).
fn step(
    ctx: &Ctx,
    st: &DispatchState,
    ins: &df::Instruction,
    instruction: Instruction,
    on_build: bool,
) -> Step {
    let mut args = st.arg_values.clone();
    let mut run_env = st.env.clone();
    for (k, v) in ctx.proxy {
        args.entry(k.clone()).or_insert_with(|| v.clone());
        if run_env.get(k).is_none() {
            run_env.set(k, v);
        }
    }
    Step {
        span: ins.span,
        source: ins.original.clone(),
        instruction,
        on_build,
        args,
        declared_args: st.declared.clone(),
        env: st.image_env.0.clone(),
        run_env: run_env.0,
        workdir: st.workdir.clone(),
        user: st.user.clone(),
        shell: st.shell.clone(),
    }
}

/// LegacyKeyValueFormat for `ENV k v` / `LABEL k v`, then every key and value expanded.
fn expand_pairs(
    ctx: &mut Ctx,
    st: &DispatchState,
    ins: &df::Instruction,
    name: &str,
    pairs: &[(String, String)],
    legacy: bool,
) -> Result<Vec<(String, String)>, PlanError> {
    let (span, orig) = (ins.span, ins.original.as_str());
    if legacy {
        ctx.lints.add(
            checks::LEGACY_KEY_VALUE_FORMAT,
            format!(
                "\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"
            ),
            span,
        );
    }
    let mut out = Vec::new();
    for (k, v) in pairs {
        let k = ctx.expand(st, k, span, orig)?;
        let v = ctx.expand(st, v, span, orig)?;
        if k.is_empty() {
            return Err(at(
                ctx.file,
                span,
                format!("{name} names can not be blank"),
                orig,
            ));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// BuildKit's `dispatchEnv`: into both the build-time and the image environment.
fn dispatch_env(
    ctx: &mut Ctx,
    st: &mut DispatchState,
    ins: &df::Instruction,
    pairs: &[(String, String)],
    legacy: bool,
) -> Result<Instruction, PlanError> {
    let out = expand_pairs(ctx, st, ins, "ENV", pairs, legacy)?;
    for (k, v) in &out {
        ctx.lints.secret_key("ENV", k, ins.span);
        st.env.set(k, v);
        st.image_env.set(k, v);
    }
    Ok(Instruction::Env(out))
}

/// BuildKit's `dispatchLabel`.
fn dispatch_label(
    ctx: &mut Ctx,
    st: &DispatchState,
    ins: &df::Instruction,
    pairs: &[(String, String)],
    legacy: bool,
) -> Result<Instruction, PlanError> {
    let out = expand_pairs(ctx, st, ins, "LABEL", pairs, legacy)?;
    Ok(Instruction::Label(out))
}

/// BuildKit's `dispatchArg`: the value is the build arg, else the expanded default, else the
/// global ARG of that name; it joins the build-time environment only.
fn dispatch_arg(
    ctx: &mut Ctx,
    st: &mut DispatchState,
    ins: &df::Instruction,
    pairs: &[(String, Option<String>)],
) -> Result<Instruction, PlanError> {
    let mut out = Vec::new();
    for (key, default) in pairs {
        ctx.lints.secret_key("ARG", key, ins.span);
        ctx.used_args.insert(key.clone());
        let value = if let Some(v) = ctx.build_args.get(key) {
            Some(v.clone())
        } else if let Some(d) = default {
            Some(ctx.expand(st, d, ins.span, &ins.original)?)
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
    Ok(Instruction::Arg(out))
}

/// BuildKit's `dispatchWorkdir`: relative to the current workdir, cleaned; WorkdirRelativePath
/// when the first WORKDIR of a stage is relative.
fn dispatch_workdir(
    ctx: &mut Ctx,
    st: &mut DispatchState,
    ins: &df::Instruction,
    p: &str,
) -> Result<Instruction, PlanError> {
    let p = ctx.expand(st, p, ins.span, &ins.original)?;
    if !p.starts_with('/') && !st.workdir_set {
        ctx.lints.add(
            checks::WORKDIR_RELATIVE_PATH,
            format!("Relative workdir {p:?} can have unexpected results if the base image changes"),
            ins.span,
        );
    }
    st.workdir = values::join_clean(&st.workdir, &p);
    st.workdir_set = true;
    Ok(Instruction::Workdir(st.workdir.clone()))
}

/// BuildKit's `dispatchUser`.
fn dispatch_user(
    ctx: &mut Ctx,
    st: &mut DispatchState,
    ins: &df::Instruction,
    u: &str,
) -> Result<Instruction, PlanError> {
    st.user = ctx.expand(st, u, ins.span, &ins.original)?;
    Ok(Instruction::User(st.user.clone()))
}

/// BuildKit's `dispatchVolume`: no empty paths.
fn dispatch_volume(
    ctx: &mut Ctx,
    st: &DispatchState,
    ins: &df::Instruction,
    vols: &[String],
) -> Result<Instruction, PlanError> {
    let mut out = Vec::new();
    for v in vols {
        let v = ctx.expand(st, v, ins.span, &ins.original)?;
        if v.trim().is_empty() {
            return Err(at(
                ctx.file,
                ins.span,
                "VOLUME specified can not be an empty string",
                &ins.original,
            ));
        }
        out.push(v);
    }
    Ok(Instruction::Volume(out))
}

/// BuildKit's `dispatchStopSignal`: a known signal name or number.
fn dispatch_stop_signal(
    ctx: &mut Ctx,
    st: &DispatchState,
    ins: &df::Instruction,
    s: &str,
) -> Result<Instruction, PlanError> {
    let s = ctx.expand(st, s, ins.span, &ins.original)?;
    if !values::valid_signal(&s) {
        return Err(at(ctx.file, ins.span, "Invalid signal", s));
    }
    Ok(Instruction::StopSignal(s))
}

/// BuildKit's `dispatchExpose`: ranges expanded, duplicates dropped, ExposeProtoCasing.
fn dispatch_expose(
    ctx: &mut Ctx,
    st: &DispatchState,
    ins: &df::Instruction,
    ports: &[String],
) -> Result<Instruction, PlanError> {
    let span = ins.span;
    let mut out: Vec<String> = Vec::new();
    for p in ports {
        let p = ctx.expand(st, p, span, &ins.original)?;
        for word in p.split_whitespace() {
            if let Some((_, proto)) = word.rsplit_once('/') {
                if proto != proto.to_lowercase() {
                    ctx.lints.add(
                        checks::EXPOSE_PROTO_CASING,
                        format!(
                            "Defined protocol '{word}' in EXPOSE instruction should be lowercase"
                        ),
                        span,
                    );
                }
            }
            for n in values::parse_ports(word).map_err(|(w, t)| at(ctx.file, span, w, t))? {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
    }
    Ok(Instruction::Expose(out))
}

/// BuildKit's `dispatchMaintainer` (MaintainerDeprecated is reported here, not by the parser).
fn dispatch_maintainer(ctx: &mut Ctx, ins: &df::Instruction, m: &str) -> Instruction {
    ctx.lints.add(
        checks::MAINTAINER_DEPRECATED,
        "Maintainer instruction is deprecated in favor of using label".into(),
        ins.span,
    );
    Instruction::Maintainer(m.to_string())
}

/// BuildKit's `dispatchOnbuild`: recorded for stages built FROM this one.
fn dispatch_onbuild(st: &mut DispatchState, expression: &str) -> Instruction {
    st.onbuild.push(expression.to_string());
    Instruction::OnBuild(expression.to_string())
}

/// BuildKit's `dispatchShell`.
fn dispatch_shell(st: &mut DispatchState, s: &[String]) -> Instruction {
    st.shell = s.to_vec();
    st.custom_shell = true;
    Instruction::Shell(s.to_vec())
}

/// MultipleInstructionsDisallowed and JSONArgsRecommended, shared by CMD and ENTRYPOINT.
fn check_cmdline(
    ctx: &mut Ctx,
    st: &DispatchState,
    ins: &df::Instruction,
    kind: &str,
    c: &CmdLine,
    once: &mut UsedOnce,
) {
    once.mark(kind, &ins.keyword, ins.span, ctx.lints);
    if matches!(c, CmdLine::Shell(_)) && !st.custom_shell {
        ctx.lints.add(
            checks::JSON_ARGS_RECOMMENDED,
            format!(
                "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                ins.keyword
            ),
            ins.span,
        );
    }
}

/// BuildKit's `dispatchCmd` (the text is not expanded).
fn dispatch_cmd(
    ctx: &mut Ctx,
    st: &DispatchState,
    ins: &df::Instruction,
    c: &CmdLine,
    once: &mut UsedOnce,
) -> Instruction {
    check_cmdline(ctx, st, ins, "cmd", c, once);
    Instruction::Cmd(cmdline(c))
}

/// BuildKit's `dispatchEntrypoint` (the text is not expanded).
fn dispatch_entrypoint(
    ctx: &mut Ctx,
    st: &DispatchState,
    ins: &df::Instruction,
    c: &CmdLine,
    once: &mut UsedOnce,
) -> Instruction {
    check_cmdline(ctx, st, ins, "entrypoint", c, once);
    Instruction::Entrypoint(cmdline(c))
}

/// BuildKit's `dispatchHealthcheck` (the test is not expanded).
fn dispatch_healthcheck(
    ctx: &mut Ctx,
    ins: &df::Instruction,
    h: &HealthcheckArgs,
    once: &mut UsedOnce,
) -> Instruction {
    once.mark("healthcheck", &ins.keyword, ins.span, ctx.lints);
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

/// BuildKit's `dispatchRun`: `--network`, `--security` and `--mount` typed (mount values are
/// expanded, the command is not).
#[allow(clippy::too_many_arguments)] // one per field of the parsed RUN, as upstream's RunCommand
fn dispatch_run(
    ctx: &mut Ctx,
    st: &DispatchState,
    ins: &df::Instruction,
    cmd: &CmdLine,
    heredocs: &[df::Heredoc],
    mounts: &[String],
    network: &Option<String>,
    security: &Option<String>,
) -> Result<Instruction, PlanError> {
    let (file, span, orig) = (ctx.file, ins.span, ins.original.as_str());
    let network = match network.as_deref() {
        None | Some("default") => Network::Default,
        Some("none") => Network::None,
        Some("host") => Network::Host,
        Some(n) => return Err(at(file, span, format!("invalid network mode {n:?}"), orig)),
    };
    let security = match security.as_deref() {
        None | Some("sandbox") => Security::Sandbox,
        Some("insecure") => Security::Insecure,
        Some(s) => return Err(at(file, span, format!("security {s:?} is not valid"), orig)),
    };
    let mut out = Vec::new();
    let mut ssh = 0;
    for m in mounts {
        let mut exp = |w: &str| -> Result<String, ValueError> {
            Lex::new(ctx.escape)
                .process_word(w, &st.env)
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
    Ok(Instruction::Run(Run {
        command: cmdline(cmd),
        heredocs,
        mounts: out,
        network,
        security,
    }))
}

/// Expands one optional flag value.
fn expand_opt(
    ctx: &mut Ctx,
    st: &DispatchState,
    ins: &df::Instruction,
    v: &Option<String>,
) -> Result<Option<String>, PlanError> {
    v.as_ref()
        .map(|v| ctx.expand(st, v, ins.span, &ins.original))
        .transpose()
}

/// BuildKit's `dispatchCopy`, shared by COPY and ADD: sources (split into context paths and
/// ADD's URLs), destination (made absolute against WORKDIR), `--chown`, `--chmod` (parsed once),
/// `--exclude` and heredoc bodies, expanded; the instruction's own flags come in `kind`.
fn dispatch_copy_like(
    ctx: &mut Ctx,
    st: &DispatchState,
    ins: &df::Instruction,
    a: &df::CopyArgs,
    kind: CopyKind,
) -> Result<Instruction, PlanError> {
    let (span, orig) = (ins.span, ins.original.as_str());
    let add = matches!(kind, CopyKind::Add { .. });
    let mut sources = Vec::new();
    for s in &a.sources {
        let s = ctx.expand(st, s, span, orig)?;
        sources.push(classify_source(ctx.file, span, orig, add, s)?);
    }
    let dest = ctx.expand(st, &a.dest, span, orig)?;
    let chown = expand_opt(ctx, st, ins, &a.chown)?;
    // BuildKit's `dispatchCopy`: an empty value is no `--chmod`; any other is parsed here, once,
    // and the engine applies what was parsed.
    let chmod = match expand_opt(ctx, st, ins, &a.chmod)?.filter(|m| !m.is_empty()) {
        Some(m) => Some(Chmod::parse(&m).map_err(|e| at(ctx.file, span, e.to_string(), orig))?),
        None => None,
    };
    let mut excludes = Vec::new();
    for e in &a.excludes {
        excludes.push(ctx.expand(st, e, span, orig)?);
    }
    let mut heredocs = Vec::new();
    for h in &a.heredocs {
        let content = if h.expand {
            // BuildKit's `ExpandRaw`: a fresh `NewLex('\\')` (the file's escape directive does
            // not apply) with quote processing off; unset names still count for UndefinedVar.
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
    Ok(Instruction::Copy(Copy {
        kind,
        sources,
        heredocs,
        target: absolute_dest(&st.workdir, &dest),
        dest,
        chown,
        chmod,
        link: a.link,
        excludes,
    }))
}

/// A source as COPY or ADD reads it. BuildKit's `dispatchCopy` refuses a URL for COPY; ADD
/// downloads http(s) URLs; a git source (which BuildKit's ADD clones) kiln does not fetch.
fn classify_source(
    file: &str,
    span: crate::dockerfile::Span,
    orig: &str,
    add: bool,
    s: String,
) -> Result<Source, PlanError> {
    // BuildKit's `isHTTPSource`.
    let url = s.starts_with("http://") || s.starts_with("https://");
    if url && !add {
        return Err(at(file, span, "source can't be a URL for COPY", orig));
    }
    if add && (s.starts_with("git@") || s.starts_with("git://")) {
        return Err(at(
            file,
            span,
            format!("ADD from a git repository ({s}) is not supported by kiln"),
            orig,
        ));
    }
    Ok(if url {
        Source::Url(s)
    } else {
        Source::Local(s)
    })
}

/// The destination against the WORKDIR a step runs in: an absolute one as written, a relative
/// one joined to WORKDIR (`/` when unset), its trailing `/` kept.
fn absolute_dest(workdir: &str, dest: &str) -> String {
    if dest.starts_with('/') {
        return dest.to_string();
    }
    let base = if workdir.is_empty() { "/" } else { workdir };
    format!("{}/{}", base.trim_end_matches('/'), dest)
}

/// BuildKit's `dispatchCopy` for COPY: `--from` takes no variables and names a stage or image.
fn dispatch_copy(
    ctx: &mut Ctx,
    st: &DispatchState,
    ins: &df::Instruction,
    a: &df::CopyArgs,
) -> Result<Instruction, PlanError> {
    let from = match &a.from {
        None => None,
        Some(f) => {
            let file = ctx.file;
            super::check_from_unexpanded(&Lex::new(ctx.escape), f)
                .map_err(|w| at(file, ins.span, w, f.clone()))?;
            Some((ctx.resolve)(f).map_err(|(w, _)| at(file, ins.span, w, &ins.original))?)
        }
    };
    let kind = CopyKind::Copy {
        from,
        parents: a.parents,
    };
    dispatch_copy_like(ctx, st, ins, a, kind)
}

/// BuildKit's `dispatchCopy` for ADD: `--checksum` only with a single source.
fn dispatch_add(
    ctx: &mut Ctx,
    st: &DispatchState,
    ins: &df::Instruction,
    a: &df::CopyArgs,
) -> Result<Instruction, PlanError> {
    let checksum = expand_opt(ctx, st, ins, &a.checksum)?;
    if checksum.is_some() && a.sources.len() + a.heredocs.len() != 1 {
        return Err(at(
            ctx.file,
            ins.span,
            "checksum can't be specified for multiple sources",
            &ins.original,
        ));
    }
    let kind = CopyKind::Add {
        checksum,
        keep_git_dir: a.keep_git_dir,
        unpack: a.unpack,
    };
    dispatch_copy_like(ctx, st, ins, a, kind)
}
