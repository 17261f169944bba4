//! Parsed Dockerfile + build args + target → [`Plan`]: stages with resolved bases, the DAG of stage
//! dependencies pruned to the target, every step fully expanded, and BuildKit's build checks.
//! Follows BuildKit's `dockerfile2llb` (global ARGs, FROM expansion, `COPY --from`/`--mount from`
//! resolution, ONBUILD triggers, circular-dependency detection).
//!
//! Must not: do I/O (base image facts come through [`BaseImages`]) or compute cache keys of file
//! content.

mod dispatch;
mod lint;
pub mod platform;
mod render;
mod types;
mod values;

use std::collections::{BTreeMap, BTreeSet};

pub use platform::Platform;
pub use types::*;

use crate::dockerfile::checks::{self, CheckConfig};
use crate::dockerfile::shell::{EnvList, Lex};
use crate::dockerfile::{self as df, Command, Dockerfile, Span};
use dispatch::{Ctx, StageState, UsedOnce};
use lint::Lints;

/// What a plan is computed for.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Target platform (default: the host's, linux/<arch>).
    pub platform: Platform,
    pub file_name: String,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            build_args: BTreeMap::new(),
            target: None,
            platform: Platform::host(),
            file_name: "Dockerfile".into(),
        }
    }
}

/// Config facts of a base image that expansion needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseImageInfo {
    /// `K=V` entries.
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub shell: Option<Vec<String>>,
    pub on_build: Vec<String>,
}

/// Looks up base image configs (the store, a registry, or nothing).
pub trait BaseImages {
    /// Config facts of a FROM image, for expansion (`ENV PATH=$PATH:/x` needs the base's env).
    fn lookup(&self, reference: &str, platform: &Platform) -> Option<BaseImageInfo>;
}

/// No image configs known (`kiln plan` without a store): images start with Docker's default PATH.
pub struct NoBaseImages;

impl BaseImages for NoBaseImages {
    fn lookup(&self, _: &str, _: &Platform) -> Option<BaseImageInfo> {
        None
    }
}

/// Why no plan could be made: `<file>:<line>:<col>: <what is wrong>: <offending text>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{file}:{span}: {what}: {text}")]
    At {
        file: String,
        span: Span,
        what: String,
        text: String,
    },
    #[error("{file}: {what}: {text}")]
    File {
        file: String,
        what: String,
        text: String,
    },
}

/// Docker's default PATH for Linux images.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn is_proxy_arg(k: &str) -> bool {
    matches!(
        k,
        "HTTP_PROXY"
            | "http_proxy"
            | "HTTPS_PROXY"
            | "https_proxy"
            | "FTP_PROXY"
            | "ftp_proxy"
            | "NO_PROXY"
            | "no_proxy"
            | "ALL_PROXY"
            | "all_proxy"
    )
}

struct Header {
    base: Base,
    platform: Platform,
    info: Option<BaseImageInfo>,
}

/// Computes the plan.
pub fn plan(d: &Dockerfile, opts: &PlanOptions, bases: &dyn BaseImages) -> Result<Plan, PlanError> {
    let file = opts.file_name.as_str();
    let at = |span: Span, what: String, text: String| PlanError::At {
        file: file.to_string(),
        span,
        what,
        text,
    };
    let cfg_text = opts
        .build_args
        .get("BUILDKIT_DOCKERFILE_CHECK")
        .or(d.directives.check.as_ref());
    let cfg = match cfg_text {
        Some(t) => CheckConfig::parse(t).map_err(|e| {
            at(
                Span { line: 1, column: 1 },
                "failed to parse check options".into(),
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

    // Predefined platform args, then global ARGs, form the scope of FROM lines.
    let build = Platform::host();
    let target_platform = opts.platform.clone();
    let target_name = match &opts.target {
        Some(t) => t.clone(),
        None => d
            .stages
            .last()
            .and_then(|s| s.name.clone())
            .unwrap_or_default(),
    };
    let mut predefined = EnvList::default();
    let v = |p: &Option<String>| p.clone().unwrap_or_default();
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
        ("TARGETSTAGE", target_name.clone()),
    ] {
        predefined.set(k, opts.build_args.get(k).unwrap_or(&val));
    }
    let escape = d.escape;
    let lex = Lex::new(escape);
    let mut meta_env = predefined.clone();
    let mut defaults_env = predefined.clone();
    let mut meta_declared: Vec<String> = Vec::new();
    let mut used_args: BTreeSet<String> = BTreeSet::new();
    for ins in &d.global_args {
        let Command::Arg(pairs) = &ins.command else {
            continue;
        };
        for (k, default) in pairs {
            lints.secret_key("ARG", k, ins.span);
            used_args.insert(k.clone());
            meta_declared.push(k.clone());
            if let Some(dv) = default {
                let e = lex
                    .process_word(dv, &defaults_env)
                    .map_err(|e| at(ins.span, e.0, ins.original.clone()))?;
                defaults_env.set(k, &e);
            }
            let value = match (opts.build_args.get(k), default) {
                (Some(b), _) => Some(b.clone()),
                (None, Some(dv)) => Some(
                    lex.process_word(dv, &meta_env)
                        .map_err(|e| at(ins.span, e.0, ins.original.clone()))?,
                ),
                (None, None) => None,
            };
            if let Some(v) = value {
                meta_env.set(k, &v);
            }
        }
    }

    // Stage headers: expanded FROM, base resolution, platform.
    let mut headers: Vec<Header> = Vec::new();
    let known_in_from: Vec<String> = meta_declared
        .iter()
        .cloned()
        .chain(meta_env.0.iter().map(|(k, _)| k.clone()))
        .collect();
    for (i, st) in d.stages.iter().enumerate() {
        let span = st.from.span;
        let orig = st.from.original.clone();
        let r = lex
            .process(&st.base, &meta_env)
            .map_err(|e| at(span, e.0, orig.clone()))?;
        let report_undefined = |missing: &[String], lints: &mut Lints| {
            for m in missing {
                if known_in_from.contains(m) {
                    continue;
                }
                let mut msg = format!("FROM argument '{m}' is not declared");
                if let Some(s) = checks::suggest(m, known_in_from.iter().map(String::as_str), true)
                {
                    msg.push_str(&format!(" (did you mean {s}?)"));
                }
                lints.add(checks::UNDEFINED_ARG_IN_FROM, msg, span);
            }
        };
        report_undefined(&r.missing, &mut lints);
        if let Ok(def) = lex.process_word(&st.base, &defaults_env) {
            if values::check_reference(&def).is_err() {
                lints.add(
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
            return Err(at(
                span,
                format!("base name ({}) should not be blank", st.base),
                st.base.clone(),
            ));
        }
        let mut platform = target_platform.clone();
        let mut explicit_platform = false;
        if let Some(p) = &st.platform {
            let pr = lex
                .process(p, &meta_env)
                .map_err(|e| at(span, e.0, orig.clone()))?;
            report_undefined(&pr.missing, &mut lints);
            if pr.matched.len() == 1
                && pr.missing.is_empty()
                && pr.matched.contains("TARGETPLATFORM")
                && meta_env.get("TARGETPLATFORM") == Some(pr.result.as_str())
            {
                lints.add(
                    checks::REDUNDANT_TARGET_PLATFORM,
                    format!("Setting platform to predefined {p} in FROM is redundant as this is the default behavior"),
                    span,
                );
            }
            let parsed = Platform::parse(&pr.result)
                .map_err(|e| at(span, format!("failed to parse platform {e}"), orig.clone()))?;
            if pr.matched.is_empty() && pr.missing.is_empty() {
                let sn = st.name.clone().unwrap_or_default();
                if !sn.contains(&parsed.os) && !sn.contains(&parsed.architecture) {
                    lints.add(
                        checks::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                        format!(
                            "FROM --platform flag should not use constant value {:?}",
                            pr.result
                        ),
                        span,
                    );
                }
            }
            platform = parsed;
            explicit_platform = true;
        }
        let lname = name.to_ascii_lowercase();
        let earlier = d.stages[..i]
            .iter()
            .rposition(|s| s.name.as_deref() == Some(lname.as_str()));
        let (base, info) = if let Some(j) = earlier {
            if !explicit_platform {
                platform = headers[j].platform.clone();
            }
            (Base::Stage(j), None)
        } else if name == "scratch" {
            (Base::Scratch, None)
        } else {
            values::check_reference(&name).map_err(|e| {
                at(
                    span,
                    format!("failed to parse stage name {name:?}: {e}"),
                    orig.clone(),
                )
            })?;
            let info = bases.lookup(&name, &platform);
            (Base::Image(name), info)
        };
        headers.push(Header {
            base,
            platform,
            info,
        });
    }

    // Target.
    let target = match &opts.target {
        None => d.stages.len() - 1,
        Some(t) => {
            let lt = t.to_ascii_lowercase();
            match d
                .stages
                .iter()
                .rposition(|s| s.name.as_deref() == Some(lt.as_str()))
            {
                Some(i) => i,
                None => {
                    let names: Vec<&str> =
                        d.stages.iter().filter_map(|s| s.name.as_deref()).collect();
                    let mut what = format!("target stage {t:?} could not be found");
                    if let Some(s) = checks::suggest(t, names, true) {
                        what.push_str(&format!(" (did you mean {s}?)"));
                    }
                    return Err(PlanError::File {
                        file: file.to_string(),
                        what,
                        text: t.clone(),
                    });
                }
            }
        }
    };

    // Dependencies (with the span that creates each, for cycle errors).
    let stage_names: Vec<Option<String>> = d.stages.iter().map(|s| s.name.clone()).collect();
    let n_stages = d.stages.len();
    let resolve = |f: &str| -> Result<CopySource, values::ValueError> {
        let lf = f.to_ascii_lowercase();
        if let Some(i) = stage_names
            .iter()
            .rposition(|n| n.as_deref() == Some(lf.as_str()))
        {
            return Ok(CopySource::Stage(i));
        }
        if let Ok(idx) = f.parse::<i64>() {
            if idx < 0 || idx as usize >= n_stages {
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
    };
    let mut triggers: Vec<Vec<df::Instruction>> = Vec::new();
    let mut deps: Vec<Vec<(usize, Span)>> = Vec::new();
    for (i, st) in d.stages.iter().enumerate() {
        let mut list: Vec<(usize, Span)> = Vec::new();
        let mut trig_exprs: Vec<String> = Vec::new();
        match &headers[i].base {
            Base::Stage(j) => {
                list.push((*j, st.from.span));
                trig_exprs.extend(d.stages[*j].instructions.iter().filter_map(|ins| {
                    match &ins.command {
                        Command::OnBuild { expression } => Some(expression.clone()),
                        _ => None,
                    }
                }));
            }
            Base::Image(_) => {
                trig_exprs.extend(headers[i].info.iter().flat_map(|i| i.on_build.clone()))
            }
            Base::Scratch => {}
        }
        let mut trig = Vec::new();
        for e in trig_exprs {
            trig.push(
                df::parse_trigger(&e, file, st.from.span)
                    .map_err(|e| at(e.span, e.what, e.text))?,
            );
        }
        for ins in trig.iter().chain(st.instructions.iter()) {
            let froms: Vec<String> = match &ins.command {
                Command::Copy(a) => a.from.iter().cloned().collect(),
                Command::Run { mounts, .. } => {
                    mounts.iter().filter_map(|m| mount_from(m)).collect()
                }
                _ => Vec::new(),
            };
            for f in froms {
                let is_run = matches!(ins.command, Command::Run { .. });
                if is_run && f.find('$').is_some_and(|i| i + 1 != f.len()) {
                    return Err(at(
                        ins.span,
                        "'from' doesn't support variable expansion, define alias stage instead"
                            .into(),
                        f,
                    ));
                }
                // BuildKit's `toCommand` expands `COPY --from` against an empty environment and
                // refuses any value that changes: neither global nor stage ARGs reach `--from`.
                if !is_run {
                    check_from_unexpanded(&lex, &f).map_err(|w| at(ins.span, w, f.clone()))?;
                }
                if let CopySource::Stage(j) =
                    resolve(&f).map_err(|(w, _)| at(ins.span, w, ins.original.clone()))?
                {
                    list.push((j, ins.span));
                }
            }
        }
        triggers.push(trig);
        deps.push(list);
    }
    check_cycles(&deps, &stage_names, file)?;

    let mut order = Vec::new();
    post_order(target, &deps, &mut vec![false; n_stages], &mut order);
    let mut all_order = Vec::new();
    let mut seen = vec![false; n_stages];
    for i in 0..n_stages {
        post_order(i, &deps, &mut seen, &mut all_order);
    }

    // Expansion, dependencies first.
    let proxy: Vec<(String, String)> = opts
        .build_args
        .iter()
        .filter(|(k, _)| is_proxy_arg(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut finals: Vec<Option<StageState>> = vec![None; n_stages];
    let mut stages: Vec<Option<Stage>> = vec![None; n_stages];
    for &i in &all_order {
        let st = &d.stages[i];
        let h = &headers[i];
        let initial = match &h.base {
            Base::Stage(j) => {
                let mut s = finals[*j].clone().unwrap_or_else(|| image_state(None));
                s.onbuild.clear();
                s
            }
            Base::Scratch => image_state(Some(&BaseImageInfo::default())),
            Base::Image(_) => image_state(h.info.as_ref()),
        };
        let mut state = initial;
        let mut stage_lints = Lints::new(lints.cfg.clone());
        let mut stage_used = BTreeSet::new();
        let mut ctx = Ctx {
            file,
            escape,
            meta_env: &meta_env,
            build_args: &opts.build_args,
            proxy: &proxy,
            resolve: &resolve,
            lints: &mut stage_lints,
            used_args: &mut stage_used,
        };
        let mut once = UsedOnce::default();
        let mut steps = Vec::new();
        let mut failure = None;
        let all = triggers[i]
            .iter()
            .map(|t| (t, true))
            .chain(st.instructions.iter().map(|t| (t, false)));
        for (ins, on_build) in all {
            match dispatch::dispatch(&mut ctx, &mut state, ins, on_build, &mut once) {
                Ok(step) => steps.push(step),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let reachable = order.contains(&i);
        if let Some(e) = failure {
            if reachable {
                return Err(e);
            }
            steps.clear();
        }
        for w in stage_lints.warnings {
            lints.add(&w.rule, w.message, w.span);
        }
        if reachable {
            used_args.extend(stage_used);
        }
        let mut dl: Vec<usize> = deps[i].iter().map(|(j, _)| *j).collect();
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
    let stages: Vec<Stage> = stages.into_iter().flatten().collect();
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
    let source_date_epoch = match opts.build_args.get("SOURCE_DATE_EPOCH") {
        None => None,
        Some(v) => Some(v.parse::<i64>().map_err(|_| PlanError::File {
            file: file.to_string(),
            what: "invalid SOURCE_DATE_EPOCH".into(),
            text: v.clone(),
        })?),
    };
    Ok(Plan {
        file_name: file.to_string(),
        syntax: d.directives.syntax.clone(),
        stages,
        order,
        target,
        target_platform,
        build_platform: build,
        source_date_epoch,
        warnings,
    })
}

/// `COPY --from` takes no variables: BuildKit processes the value with no environment and fails
/// when that changes it (`$X`, `${X}`, escapes, quotes).
pub(crate) fn check_from_unexpanded(lex: &Lex, from: &str) -> Result<(), String> {
    const WHAT: &str = "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround";
    match lex.process_word(from, &EnvList::default()) {
        Ok(r) if r == from => Ok(()),
        Ok(_) => Err(WHAT.into()),
        Err(e) => Err(e.0),
    }
}

/// The raw `from=` of a `--mount` value, if any.
fn mount_from(spec: &str) -> Option<String> {
    spec.split(',').find_map(|f| {
        let (k, v) = f.split_once('=')?;
        k.eq_ignore_ascii_case("from").then(|| v.to_string())
    })
}

/// The state a stage starts in from an image config (`None`: unknown image, Docker defaults).
fn image_state(info: Option<&BaseImageInfo>) -> StageState {
    let info = info.cloned().unwrap_or_default();
    let mut image_env = EnvList::from_kv_strings(&info.env);
    if image_env.get("PATH").is_none() {
        image_env.set("PATH", DEFAULT_PATH);
    }
    let custom_shell = info.shell.as_ref().is_some_and(|s| !s.is_empty());
    StageState {
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

fn check_cycles(
    deps: &[Vec<(usize, Span)>],
    names: &[Option<String>],
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
                let name = names[j].clone().unwrap_or_else(|| j.to_string());
                return Err(PlanError::At {
                    file: file.to_string(),
                    span,
                    what: "circular dependency detected on stage".into(),
                    text: name,
                });
            }
        }
    }
    Ok(())
}
