//! The whole-build phases of making a plan, one function each, in the order BuildKit's
//! `toDispatchState` (`frontend/dockerfile/dockerfile2llb/convert.go`) runs them: lint set-up
//! (`newRuleLinter`), predefined args (`defaultArgs`), global ARGs (`buildMetaArgs`), stage headers
//! (`buildDispatchStates` + `resolveBaseImage`), the target (`resolveTarget`), stage dependencies
//! (`buildStageDependencyGraph`, `initOnBuildTriggers`), reachability (`resolveReachableStages`),
//! expansion (`dispatchStages`), and the whole-build checks at the end. A BuildKit change to one of
//! those functions lands in the function here that names it.
//!
//! Must not: do I/O (base image facts come through [`BaseImages`]) or expand one instruction (that
//! is [`super::dispatch`]'s job).

use std::collections::{BTreeMap, BTreeSet};

use super::dispatch::{self, at, Ctx, DispatchState, UsedOnce};
use super::lint::{self, Lints};
use super::named::{self, Header, NamedSource};
use super::types::{Base, CopySource, Plan, Stage, Step, Warning};
use super::values::{self, ValueError};
use super::{is_proxy_arg, BaseImageInfo, BaseImages, PlanError, PlanOptions, Platform};
use crate::dockerfile::checks::{self, CheckConfig};
use crate::dockerfile::shell::{EnvList, Lex};
use crate::dockerfile::{self as df, Command, Dockerfile, Span};

/// The scope of FROM lines: predefined platform args, then global ARGs (BuildKit's `globalArgs`).
pub(super) struct MetaArgs {
    /// With build-arg overrides: what FROM lines and stage `ARG NAME` without default see.
    pub env: EnvList,
    /// Defaults only, for InvalidDefaultArgInFrom (`validateBaseImagesWithDefaultArgs`).
    pub defaults: EnvList,
    /// Global ARG names, in order, whether or not they have a value.
    pub declared: Vec<String>,
}

/// Which stages each stage reads (with the span that makes it read it, for cycle errors) and the
/// ONBUILD triggers it inherits.
pub(super) struct Graph {
    pub triggers: Vec<Vec<df::Instruction>>,
    pub deps: Vec<Vec<(usize, Span)>>,
}

/// What the phases share (BuildKit's `dispatchContext`).
pub(super) struct DispatchContext<'a> {
    pub d: &'a Dockerfile,
    pub opts: &'a PlanOptions,
    pub file: &'a str,
    pub lex: Lex,
    pub lints: Lints,
    /// Build args something consumed: global ARGs, and ARGs of reachable stages.
    pub used_args: BTreeSet<String>,
}

impl<'a> DispatchContext<'a> {
    /// Check configuration, the parser's warnings and the checks that need no expansion
    /// (BuildKit's `newRuleLinter`, `validateStageNames`, `validateCommandCasing`).
    pub(super) fn new(d: &'a Dockerfile, opts: &'a PlanOptions) -> Result<Self, PlanError> {
        let file = opts.file_name.as_str();
        let cfg_text = opts
            .build_args
            .get("BUILDKIT_DOCKERFILE_CHECK")
            .or(d.directives.check.as_ref());
        let cfg = match cfg_text {
            Some(t) => CheckConfig::parse(t).map_err(|e| {
                at(
                    file,
                    Span { line: 1, column: 1 },
                    "failed to parse check options",
                    e,
                )
            })?,
            None => CheckConfig::default(),
        };
        let mut lints = Lints::new(cfg);
        for w in &d.warnings {
            lints.add(w.rule, w.message.clone(), w.span);
        }
        lint::static_checks(d, &mut lints);
        Ok(DispatchContext {
            d,
            opts,
            file,
            lex: Lex::new(d.escape),
            lints,
            used_args: BTreeSet::new(),
        })
    }

    fn at(&self, span: Span, what: impl Into<String>, text: impl Into<String>) -> PlanError {
        at(self.file, span, what, text)
    }

    /// BuildKit's `defaultArgs`: the platform args and TARGETSTAGE, each overridable by a build arg.
    pub(super) fn default_args(&self, build: &Platform) -> EnvList {
        let target_platform = &self.opts.platform;
        let target_name = match &self.opts.target {
            Some(t) => t.clone(),
            None => self
                .d
                .stages
                .last()
                .and_then(|s| s.name.clone())
                .unwrap_or_default(),
        };
        let v = |p: &Option<String>| p.clone().unwrap_or_default();
        let mut predefined = EnvList::default();
        for (k, val) in [
            ("BUILDPLATFORM", build.to_string()),
            ("BUILDOS", build.os.clone()),
            ("BUILDOSVERSION", String::new()),
            ("BUILDARCH", build.architecture.clone()),
            ("BUILDVARIANT", v(&build.variant)),
            ("TARGETPLATFORM", target_platform.to_string()),
            ("TARGETOS", target_platform.os.clone()),
            ("TARGETOSVERSION", String::new()),
            ("TARGETARCH", target_platform.architecture.clone()),
            ("TARGETVARIANT", v(&target_platform.variant)),
            ("TARGETSTAGE", target_name),
        ] {
            predefined.set(k, self.opts.build_args.get(k).unwrap_or(&val));
        }
        predefined
    }

    /// BuildKit's `buildMetaArgs` (with `validateBaseImagesWithDefaultArgs`' defaults-only scope):
    /// global ARGs in order, each default expanded against the ARGs before it.
    pub(super) fn build_meta_args(&mut self, predefined: &EnvList) -> Result<MetaArgs, PlanError> {
        let mut meta = MetaArgs {
            env: predefined.clone(),
            defaults: predefined.clone(),
            declared: Vec::new(),
        };
        for ins in &self.d.global_args {
            let Command::Arg(pairs) = &ins.command else {
                continue;
            };
            for (k, default) in pairs {
                self.lints.secret_key("ARG", k, ins.span);
                self.used_args.insert(k.clone());
                meta.declared.push(k.clone());
                let expand = |env: &EnvList| {
                    self.lex
                        .process_word(default.as_deref().unwrap_or_default(), env)
                        .map_err(|e| self.at(ins.span, e.0, ins.original.clone()))
                };
                if default.is_some() {
                    let e = expand(&meta.defaults)?;
                    meta.defaults.set(k, &e);
                }
                let value = match (self.opts.build_args.get(k), default) {
                    (Some(b), _) => Some(b.clone()),
                    (None, Some(_)) => Some(expand(&meta.env)?),
                    (None, None) => None,
                };
                if let Some(v) = value {
                    meta.env.set(k, &v);
                }
            }
        }
        Ok(meta)
    }

    /// BuildKit's `buildDispatchStates`: every stage's FROM, expanded and resolved, in order.
    pub(super) fn build_dispatch_states(
        &mut self,
        meta: &MetaArgs,
        bases: &dyn BaseImages,
    ) -> Result<Vec<Header>, PlanError> {
        let known: Vec<String> = meta
            .declared
            .iter()
            .cloned()
            .chain(meta.env.0.iter().map(|(k, _)| k.clone()))
            .collect();
        let mut headers: Vec<Header> = Vec::new();
        for i in 0..self.d.stages.len() {
            let h = self.resolve_base_image(i, &headers, meta, &known, bases)?;
            headers.push(h);
        }
        Ok(headers)
    }

    /// BuildKit's `resolveBaseImage` (without the fetch): the base is an earlier stage, `scratch`
    /// or an image reference; the platform is `--platform`, else the base stage's, else the target.
    fn resolve_base_image(
        &mut self,
        i: usize,
        earlier_headers: &[Header],
        meta: &MetaArgs,
        known: &[String],
        bases: &dyn BaseImages,
    ) -> Result<Header, PlanError> {
        let d = self.d;
        let st = &d.stages[i];
        let span = st.from.span;
        let orig = st.from.original.as_str();
        let r = self
            .lex
            .process(&st.base, &meta.env)
            .map_err(|e| self.at(span, e.0, orig))?;
        self.undefined_arg_in_from(&r.missing, known, span);
        if let Ok(def) = self.lex.process_word(&st.base, &meta.defaults) {
            if values::check_reference(&def).is_err() {
                self.lints.add(
                    checks::INVALID_DEFAULT_ARG_IN_FROM,
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        st.base
                    ),
                    span,
                );
            }
        }
        let name = r.result;
        if name.is_empty() {
            return Err(self.at(
                span,
                format!("base name ({}) should not be blank", st.base),
                st.base.clone(),
            ));
        }
        let explicit = match &st.platform {
            Some(p) => Some(self.stage_platform(i, p, meta, known)?),
            None => None,
        };
        let lname = name.to_ascii_lowercase();
        let earlier = d.stages[..i]
            .iter()
            .rposition(|s| s.name.as_deref() == Some(lname.as_str()));
        let mut platform = explicit
            .clone()
            .unwrap_or_else(|| self.opts.platform.clone());
        if let Some(h) = named::replaced_header(self.opts, &d.stages, i, &platform, bases) {
            return Ok(h);
        }
        let (base, info) = if let Some(j) = earlier {
            if explicit.is_none() {
                platform = earlier_headers[j].platform.clone();
            }
            (Base::Stage(j), None)
        } else if name == "scratch" {
            (Base::Scratch, None)
        } else if let Some((key, src)) = named::lookup(self.opts, &name) {
            let (base, info) = match src {
                NamedSource::Image(r) => (Base::Image(r.clone()), bases.lookup(r, &platform)),
                NamedSource::Local => (Base::Scratch, None),
            };
            let named_local = (*src == NamedSource::Local).then_some(key);
            return Ok(Header {
                base,
                platform,
                info,
                replaced: false,
                named_local,
            });
        } else {
            values::check_reference(&name).map_err(|e| {
                self.at(
                    span,
                    format!("failed to parse stage name {name:?}: {e}"),
                    orig,
                )
            })?;
            let info = bases.lookup(&name, &platform);
            (Base::Image(name), info)
        };
        Ok(Header {
            base,
            platform,
            info,
            replaced: false,
            named_local: None,
        })
    }

    /// UndefinedArgInFrom for each variable a FROM line used that no global ARG declares.
    fn undefined_arg_in_from(&mut self, missing: &[String], known: &[String], span: Span) {
        for m in missing {
            if known.contains(m) {
                continue;
            }
            let mut msg = format!("FROM argument '{m}' is not declared");
            if let Some(s) = checks::suggest(m, known.iter().map(String::as_str), true) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            self.lints.add(checks::UNDEFINED_ARG_IN_FROM, msg, span);
        }
    }

    /// `FROM --platform=…` expanded and parsed, with RedundantTargetPlatform and
    /// FromPlatformFlagConstDisallowed (BuildKit's `resolveBaseImage` platform branch).
    fn stage_platform(
        &mut self,
        i: usize,
        p: &str,
        meta: &MetaArgs,
        known: &[String],
    ) -> Result<Platform, PlanError> {
        let st = &self.d.stages[i];
        let span = st.from.span;
        let orig = st.from.original.as_str();
        let pr = self
            .lex
            .process(p, &meta.env)
            .map_err(|e| self.at(span, e.0, orig))?;
        self.undefined_arg_in_from(&pr.missing, known, span);
        if pr.matched.len() == 1
            && pr.missing.is_empty()
            && pr.matched.contains("TARGETPLATFORM")
            && meta.env.get("TARGETPLATFORM") == Some(pr.result.as_str())
        {
            self.lints.add(
                checks::REDUNDANT_TARGET_PLATFORM,
                format!("Setting platform to predefined {p} in FROM is redundant as this is the default behavior"),
                span,
            );
        }
        let parsed = Platform::parse(&pr.result)
            .map_err(|e| self.at(span, format!("failed to parse platform {e}"), orig))?;
        if pr.matched.is_empty() && pr.missing.is_empty() {
            let sn = st.name.clone().unwrap_or_default();
            if !sn.contains(&parsed.os) && !sn.contains(&parsed.architecture) {
                self.lints.add(
                    checks::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                    format!(
                        "FROM --platform flag should not use constant value {:?}",
                        pr.result
                    ),
                    span,
                );
            }
        }
        Ok(parsed)
    }

    /// BuildKit's `resolveTarget`: `--target` (case-insensitive, last stage of that name) or the
    /// last stage.
    pub(super) fn resolve_target(&self) -> Result<usize, PlanError> {
        let stages = &self.d.stages;
        let Some(t) = &self.opts.target else {
            return Ok(stages.len() - 1);
        };
        let lt = t.to_ascii_lowercase();
        if let Some(i) = stages
            .iter()
            .rposition(|s| s.name.as_deref() == Some(lt.as_str()))
        {
            return Ok(i);
        }
        let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
        let mut what = format!("target stage {t:?} could not be found");
        if let Some(s) = checks::suggest(t, names, true) {
            what.push_str(&format!(" (did you mean {s}?)"));
        }
        Err(PlanError::File {
            file: self.file.to_string(),
            what,
            text: t.clone(),
        })
    }

    /// BuildKit's `buildStageDependencyGraph`: the base stage, ONBUILD triggers, `COPY --from` and
    /// `RUN --mount from=` of every stage.
    pub(super) fn build_stage_dependency_graph(
        &self,
        headers: &[Header],
    ) -> Result<Graph, PlanError> {
        let mut graph = Graph {
            triggers: Vec::new(),
            deps: Vec::new(),
        };
        for (i, st) in self.d.stages.iter().enumerate() {
            let mut list: Vec<(usize, Span)> = Vec::new();
            if let Base::Stage(j) = headers[i].base {
                list.push((j, st.from.span));
            }
            let trig = if headers[i].replaced {
                Vec::new()
            } else {
                self.init_on_build_triggers(i, &headers[i])?
            };
            let own = if headers[i].replaced {
                &[][..]
            } else {
                &st.instructions[..]
            };
            for ins in trig.iter().chain(own.iter()) {
                self.instruction_sources(ins, &mut list)?;
            }
            graph.triggers.push(trig);
            graph.deps.push(list);
        }
        Ok(graph)
    }

    /// BuildKit's `initOnBuildTriggers`: the ONBUILD expressions of the base (stage or image
    /// config), parsed as instructions that run first in this stage.
    fn init_on_build_triggers(
        &self,
        i: usize,
        header: &Header,
    ) -> Result<Vec<df::Instruction>, PlanError> {
        let st = &self.d.stages[i];
        let exprs: Vec<String> = match &header.base {
            Base::Stage(j) => self.d.stages[*j]
                .instructions
                .iter()
                .filter_map(|ins| match &ins.command {
                    Command::OnBuild { expression } => Some(expression.clone()),
                    _ => None,
                })
                .collect(),
            Base::Image(_) => header
                .info
                .iter()
                .flat_map(|i| i.on_build.clone())
                .collect(),
            Base::Scratch => Vec::new(),
        };
        exprs
            .iter()
            .map(|e| {
                df::parse_trigger(e, self.file, st.from.span)
                    .map_err(|e| self.at(e.span, e.what, e.text))
            })
            .collect()
    }

    /// The stages one instruction reads (BuildKit's `toCommand` source resolution), appended to
    /// `list`.
    fn instruction_sources(
        &self,
        ins: &df::Instruction,
        list: &mut Vec<(usize, Span)>,
    ) -> Result<(), PlanError> {
        let froms: Vec<String> = match &ins.command {
            Command::Copy(a) => a.from.iter().cloned().collect(),
            Command::Run { mounts, .. } => mounts.iter().filter_map(|m| mount_from(m)).collect(),
            _ => Vec::new(),
        };
        for f in froms {
            let is_run = matches!(ins.command, Command::Run { .. });
            if is_run && f.find('$').is_some_and(|i| i + 1 != f.len()) {
                return Err(self.at(
                    ins.span,
                    "'from' doesn't support variable expansion, define alias stage instead",
                    f,
                ));
            }
            // BuildKit's `toCommand` expands `COPY --from` against an empty environment and
            // refuses any value that changes: neither global nor stage ARGs reach `--from`.
            if !is_run {
                super::check_from_unexpanded(&self.lex, &f)
                    .map_err(|w| self.at(ins.span, w, f.clone()))?;
            }
            let src = resolve_source(&self.d.stages, &f)
                .map_err(|(w, _)| self.at(ins.span, w, ins.original.clone()))?;
            if let CopySource::Stage(j) = named::redirect(self.opts, &self.d.stages, src) {
                list.push((j, ins.span));
            }
        }
        Ok(())
    }

    /// BuildKit's `dispatchStages`: every stage (dependencies first) dispatched instruction by
    /// instruction. A stage the target does not reach is still expanded for its checks, but its
    /// errors are dropped (BuildKit lints unreachable stages without failing on them).
    pub(super) fn dispatch_stages(
        &mut self,
        meta: &MetaArgs,
        headers: &[Header],
        graph: &Graph,
        order: &[usize],
    ) -> Result<Vec<Stage>, PlanError> {
        let n = self.d.stages.len();
        let mut all_order = Vec::new();
        let mut seen = vec![false; n];
        for i in 0..n {
            post_order(i, &graph.deps, &mut seen, &mut all_order);
        }
        let proxy: Vec<(String, String)> = self
            .opts
            .build_args
            .iter()
            .filter(|(k, _)| is_proxy_arg(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut finals: Vec<Option<DispatchState>> = vec![None; n];
        let mut stages: Vec<Option<Stage>> = vec![None; n];
        for &i in &all_order {
            let h = &headers[i];
            let mut state = match &h.base {
                Base::Stage(j) => {
                    let mut s = finals[*j].clone().unwrap_or_else(|| image_state(None));
                    s.onbuild.clear();
                    s
                }
                Base::Scratch => image_state(Some(&BaseImageInfo::default())),
                Base::Image(_) => image_state(h.info.as_ref()),
            };
            let mut steps = Vec::new();
            if let Some(key) = &h.named_local {
                steps.push(named::base_step(key, self.d.stages[i].from.span, &state));
            }
            if !h.replaced {
                let more =
                    self.dispatch_stage(i, &mut state, meta, &proxy, graph, order.contains(&i))?;
                steps.extend(more);
            }
            let st = &self.d.stages[i];
            let mut dl: Vec<usize> = graph.deps[i].iter().map(|(j, _)| *j).collect();
            dl.sort_unstable();
            dl.dedup();
            stages[i] = Some(Stage {
                index: i,
                name: st.name.clone(),
                span: st.from.span,
                source: st.from.original.clone(),
                base: h.base.clone(),
                platform: h.platform.clone(),
                steps,
                deps: dl,
            });
            finals[i] = Some(state);
        }
        Ok(stages.into_iter().flatten().collect())
    }

    /// One stage's triggers and instructions through [`dispatch::dispatch`] (the loop body of
    /// BuildKit's `dispatchStages`).
    fn dispatch_stage(
        &mut self,
        i: usize,
        state: &mut DispatchState,
        meta: &MetaArgs,
        proxy: &[(String, String)],
        graph: &Graph,
        reachable: bool,
    ) -> Result<Vec<Step>, PlanError> {
        let d = self.d;
        let st = &d.stages[i];
        let opts = self.opts;
        let resolve =
            |f: &str| resolve_source(&d.stages, f).map(|s| named::redirect(opts, &d.stages, s));
        let mut stage_lints = Lints::new(self.lints.cfg.clone());
        let mut stage_used = BTreeSet::new();
        let mut ctx = Ctx {
            file: self.file,
            escape: d.escape,
            meta_env: &meta.env,
            build_args: &self.opts.build_args,
            proxy,
            resolve: &resolve,
            lints: &mut stage_lints,
            used_args: &mut stage_used,
        };
        let mut once = UsedOnce::default();
        let mut steps = Vec::new();
        let mut failure = None;
        let all = graph.triggers[i]
            .iter()
            .map(|t| (t, true))
            .chain(st.instructions.iter().map(|t| (t, false)));
        for (ins, on_build) in all {
            match dispatch::dispatch(&mut ctx, state, ins, on_build, &mut once) {
                Ok(step) => steps.push(step),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            if reachable {
                return Err(e);
            }
            steps.clear();
        }
        for w in stage_lints.warnings {
            self.lints.add(&w.rule, w.message, w.span);
        }
        if reachable {
            self.used_args.extend(stage_used);
        }
        Ok(steps)
    }

    /// The whole-build checks after dispatch (UnusedBuildArgs, `check=error=true`) and the plan
    /// itself (the part of BuildKit's `finalizeResultImage` that is not image config).
    pub(super) fn finalize(
        self,
        stages: Vec<Stage>,
        order: Vec<usize>,
        target: usize,
        build_platform: Platform,
        predefined: &EnvList,
    ) -> Result<Plan, PlanError> {
        let DispatchContext {
            d,
            opts,
            file,
            mut lints,
            used_args,
            ..
        } = self;
        lints.warnings.sort_by_key(|w| w.span);
        let unused: Vec<&String> = opts
            .build_args
            .keys()
            .filter(|k| {
                !used_args.contains(*k)
                    && !is_proxy_arg(k)
                    && predefined.get(k).is_none()
                    && *k != "SOURCE_DATE_EPOCH"
                    && !k.starts_with("BUILDKIT_")
            })
            .collect();
        if lints.cfg.error && !lints.called.is_empty() {
            let rules: Vec<String> = lints.called.iter().cloned().collect();
            return Err(PlanError::File {
                file: file.to_string(),
                what: "lint violation found for rules".into(),
                text: rules.join(", "),
            });
        }
        let mut warnings = lints.warnings;
        if !unused.is_empty() {
            let list: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            warnings.push(Warning {
                rule: checks::UNUSED_BUILD_ARGS.into(),
                message: format!(
                    "One or more build-args [{}] were not consumed",
                    list.join(" ")
                ),
                span: Span::default(),
            });
        }
        let source_date_epoch = source_date_epoch(&opts.build_args, file)?;
        Ok(Plan {
            file_name: file.to_string(),
            syntax: d.directives.syntax.clone(),
            stages,
            order,
            target,
            target_platform: opts.platform.clone(),
            build_platform,
            source_date_epoch,
            warnings,
        })
    }
}

/// The `SOURCE_DATE_EPOCH` build arg, as seconds.
fn source_date_epoch(
    build_args: &BTreeMap<String, String>,
    file: &str,
) -> Result<Option<i64>, PlanError> {
    match build_args.get("SOURCE_DATE_EPOCH") {
        None => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| PlanError::File {
            file: file.to_string(),
            what: "invalid SOURCE_DATE_EPOCH".into(),
            text: v.clone(),
        }),
    }
}

/// A `--from` value → a stage (by name, last one wins, case-insensitive; or by index) or an image
/// (BuildKit's `dispatchStates.findStateByName`/`findStateByIndex`, else an image reference).
fn resolve_source(stages: &[df::StageDef], f: &str) -> Result<CopySource, ValueError> {
    let lf = f.to_ascii_lowercase();
    if let Some(i) = stages
        .iter()
        .rposition(|s| s.name.as_deref() == Some(lf.as_str()))
    {
        return Ok(CopySource::Stage(i));
    }
    if let Ok(idx) = f.parse::<i64>() {
        if idx < 0 || idx as usize >= stages.len() {
            return Err((format!("invalid stage index {idx}"), f.to_string()));
        }
        return Ok(CopySource::Stage(idx as usize));
    }
    values::check_reference(f).map_err(|e| {
        (
            format!("failed to parse stage name {f:?}: {e}"),
            f.to_string(),
        )
    })?;
    Ok(CopySource::Image(f.to_string()))
}

/// The raw `from=` of a `--mount` value, if any.
fn mount_from(spec: &str) -> Option<String> {
    spec.split(',').find_map(|f| {
        let (k, v) = f.split_once('=')?;
        k.eq_ignore_ascii_case("from").then(|| v.to_string())
    })
}

/// The state a stage starts in from an image config (`None`: unknown image, Docker defaults);
/// BuildKit's `dispatchState.init` after `resolveBaseImage`.
fn image_state(info: Option<&BaseImageInfo>) -> DispatchState {
    let info = info.cloned().unwrap_or_default();
    let mut image_env = EnvList::from_kv_strings(&info.env);
    if image_env.get("PATH").is_none() {
        image_env.set("PATH", super::DEFAULT_PATH);
    }
    let custom_shell = info.shell.as_ref().is_some_and(|s| !s.is_empty());
    DispatchState {
        env: image_env.clone(),
        image_env,
        workdir: values::join_clean("/", &info.working_dir),
        workdir_set: false,
        user: info.user.clone(),
        shell: info
            .shell
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]),
        custom_shell,
        declared: Vec::new(),
        arg_values: BTreeMap::new(),
        onbuild: Vec::new(),
    }
}

/// Stage `i` and everything it reads, dependencies first (BuildKit's `resolveReachableStages`).
pub(super) fn reachable(target: usize, deps: &[Vec<(usize, Span)>]) -> Vec<usize> {
    let mut order = Vec::new();
    post_order(target, deps, &mut vec![false; deps.len()], &mut order);
    order
}

fn post_order(i: usize, deps: &[Vec<(usize, Span)>], seen: &mut Vec<bool>, out: &mut Vec<usize>) {
    if seen[i] {
        return;
    }
    seen[i] = true;
    let mut ds: Vec<usize> = deps[i].iter().map(|(j, _)| *j).collect();
    ds.sort_unstable();
    for j in ds {
        post_order(j, deps, seen, out);
    }
    out.push(i);
}

/// Fails on the first dependency cycle, at the instruction that closes it (BuildKit's
/// `buildStageDependencyGraph` "circular dependency detected on stage").
pub(super) fn check_cycles(
    deps: &[Vec<(usize, Span)>],
    stages: &[df::StageDef],
    file: &str,
) -> Result<(), PlanError> {
    // 0 = unvisited, 1 = on the current path, 2 = done
    fn visit(i: usize, deps: &[Vec<(usize, Span)>], mark: &mut Vec<u8>) -> Option<(usize, Span)> {
        mark[i] = 1;
        for &(j, span) in &deps[i] {
            if mark[j] == 1 {
                return Some((j, span));
            }
            if mark[j] == 0 {
                if let Some(c) = visit(j, deps, mark) {
                    return Some(c);
                }
            }
        }
        mark[i] = 2;
        None
    }
    let mut mark = vec![0u8; deps.len()];
    for i in 0..deps.len() {
        if mark[i] == 0 {
            if let Some((j, span)) = visit(i, deps, &mut mark) {
                let name = stages[j].name.clone().unwrap_or_else(|| j.to_string());
                return Err(at(
                    file,
                    span,
                    "circular dependency detected on stage",
                    name,
                ));
            }
        }
    }
    Ok(())
}
