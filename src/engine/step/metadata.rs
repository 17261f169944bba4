//! What the config-only instructions do to an image config, as a pure function: ENV, LABEL, EXPOSE,
//! VOLUME, USER, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD, STOPSIGNAL, MAINTAINER, and WORKDIR's
//! config half. Ports BuildKit's `dispatchEnv`, `dispatchLabel`, `dispatchExpose`, `dispatchVolume`,
//! `dispatchUser`, `dispatchCmd`, `dispatchEntrypoint`, `dispatchShell`, `dispatchHealthcheck`,
//! `dispatchOnbuild`, `dispatchStopSignal`, `dispatchMaintainer` and `dispatchWorkdir`
//! (frontend/dockerfile/dockerfile2llb/convert.go).
//!
//! Must not: touch a filesystem, the store or history — the stage runner records history and makes
//! the layers (RUN, COPY/ADD, a WORKDIR that creates a directory).

use crate::image::{Healthcheck, ImageConfig};
use crate::plan::{Instruction, ShellOrExec};

/// What a stage's dispatch remembers between instructions (BuildKit's `dispatchState.cmdSet`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaState {
    /// A CMD was given in this stage: a later ENTRYPOINT keeps it.
    pub cmd_set: bool,
}

/// Apply `instruction` to `config` if it is a config-only instruction (or WORKDIR, whose config half
/// is this). Returns false, changing nothing, for RUN, COPY, ADD and ARG.
pub fn apply_metadata(
    config: &mut ImageConfig,
    instruction: &Instruction,
    st: &mut MetaState,
) -> bool {
    let c = &mut config.config;
    match instruction {
        Instruction::Env(pairs) => pairs.iter().for_each(|(k, v)| c.env_set(k, v)),
        Instruction::Label(pairs) => {
            for (k, v) in pairs {
                c.labels.insert(k.clone(), v.clone());
            }
        }
        Instruction::Expose(ports) => {
            for p in ports {
                c.exposed_ports.insert(expose_key(p), Default::default());
            }
        }
        Instruction::Volume(vols) => {
            for v in vols {
                c.volumes.insert(v.clone(), Default::default());
            }
        }
        Instruction::User(u) => c.user = Some(u.clone()),
        Instruction::Cmd(cmd) => {
            c.cmd = Some(argv(cmd, &c.shell));
            // dispatchCmd sets ArgsEscaped (deprecated in the OCI spec, kept by BuildKit for the
            // Docker image spec); dispatchEntrypoint leaves it as it was.
            c.args_escaped = Some(true);
            st.cmd_set = true;
        }
        Instruction::Entrypoint(ep) => {
            c.entrypoint = Some(argv(ep, &c.shell));
            // dispatchEntrypoint: `if !d.cmdSet { d.image.Config.Cmd = nil }` — an ENTRYPOINT
            // drops a CMD inherited from the base, not one set earlier in this stage.
            if !st.cmd_set {
                c.cmd = None;
            }
        }
        Instruction::Shell(sh) => c.shell = sh.clone(),
        Instruction::Healthcheck(hc) => c.healthcheck = Some(healthcheck(hc.as_ref())),
        Instruction::OnBuild(t) => c.on_build.push(t.clone()),
        Instruction::StopSignal(s) => c.stop_signal = Some(s.clone()),
        Instruction::Maintainer(m) => config.author = Some(m.clone()),
        Instruction::Workdir(dir) => c.working_dir = Some(dir.clone()),
        Instruction::Run(_) | Instruction::Copy(_) | Instruction::Arg(_) => return false,
    }
    true
}

/// `80` → `80/tcp`, `53/UDP` → `53/udp` (nat.ParsePortSpecs as dispatchExpose uses it).
fn expose_key(p: &str) -> String {
    if p.contains('/') {
        p.to_lowercase()
    } else {
        format!("{p}/tcp")
    }
}

/// `HEALTHCHECK NONE` → `["NONE"]`; zero durations and retries are left out of the config, as
/// Docker writes them (they mean "inherit the default").
fn healthcheck(hc: Option<&crate::plan::Healthcheck>) -> Healthcheck {
    match hc {
        None => Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        },
        Some(h) => {
            let set = |v: i64| (v != 0).then_some(v);
            Healthcheck {
                test: h.test.clone(),
                interval: set(h.interval),
                timeout: set(h.timeout),
                start_period: set(h.start_period),
                start_interval: set(h.start_interval),
                retries: set(h.retries),
            }
        }
    }
}

/// The argv a CMD/ENTRYPOINT stores: exec form as written, shell form wrapped in the SHELL
/// (`/bin/sh -c` when none was set).
pub(crate) fn argv(cmd: &ShellOrExec, shell: &[String]) -> Vec<String> {
    let default_shell = ["/bin/sh".to_string(), "-c".to_string()];
    let shell = if shell.is_empty() {
        &default_shell[..]
    } else {
        shell
    };
    cmd.argv(shell)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Platform;

    fn cfg() -> ImageConfig {
        ImageConfig::new(&Platform::host())
    }

    fn sh(s: &str) -> ShellOrExec {
        ShellOrExec::Shell(s.into())
    }

    #[test]
    fn entrypoint_drops_an_inherited_cmd_but_not_one_set_in_this_stage() {
        let mut c = cfg();
        c.config.cmd = Some(vec!["base".into()]);
        let mut st = MetaState::default();
        apply_metadata(&mut c, &Instruction::Entrypoint(sh("run")), &mut st);
        assert_eq!(c.config.cmd, None);
        assert_eq!(
            c.config.entrypoint,
            Some(vec!["/bin/sh".into(), "-c".into(), "run".into()])
        );

        let mut c = cfg();
        let mut st = MetaState::default();
        apply_metadata(
            &mut c,
            &Instruction::Cmd(ShellOrExec::Exec(vec!["a".into()])),
            &mut st,
        );
        apply_metadata(&mut c, &Instruction::Entrypoint(sh("run")), &mut st);
        assert_eq!(c.config.cmd, Some(vec!["a".into()]));
    }

    #[test]
    fn shell_wraps_shell_form_cmd() {
        let mut c = cfg();
        let mut st = MetaState::default();
        let bash = vec![
            "/bin/bash".to_string(),
            "-o".into(),
            "pipefail".into(),
            "-c".into(),
        ];
        apply_metadata(&mut c, &Instruction::Shell(bash.clone()), &mut st);
        apply_metadata(&mut c, &Instruction::Cmd(sh("echo hi")), &mut st);
        let mut want = bash;
        want.push("echo hi".into());
        assert_eq!(c.config.cmd, Some(want));
    }

    #[test]
    fn env_replaces_in_place_and_expose_normalises() {
        let mut c = cfg();
        let mut st = MetaState::default();
        let env = |k: &str, v: &str| Instruction::Env(vec![(k.into(), v.into())]);
        apply_metadata(&mut c, &env("A", "1"), &mut st);
        apply_metadata(&mut c, &env("B", "2"), &mut st);
        apply_metadata(&mut c, &env("A", "3"), &mut st);
        assert_eq!(c.config.env, ["A=3", "B=2"]);
        apply_metadata(
            &mut c,
            &Instruction::Expose(vec!["80".into(), "53/UDP".into()]),
            &mut st,
        );
        let ports: Vec<&String> = c.config.exposed_ports.keys().collect();
        assert_eq!(ports, ["53/udp", "80/tcp"]);
    }

    #[test]
    fn healthcheck_zero_values_are_left_out_and_none_is_a_test() {
        let mut c = cfg();
        let mut st = MetaState::default();
        let h = crate::plan::Healthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval: 0,
            timeout: 5_000_000_000,
            start_period: 0,
            start_interval: 0,
            retries: 0,
        };
        apply_metadata(&mut c, &Instruction::Healthcheck(Some(h)), &mut st);
        let got = c.config.healthcheck.clone().unwrap();
        assert_eq!(
            (got.interval, got.timeout, got.retries),
            (None, Some(5_000_000_000), None)
        );
        apply_metadata(&mut c, &Instruction::Healthcheck(None), &mut st);
        assert_eq!(c.config.healthcheck.unwrap().test, ["NONE"]);
    }

    #[test]
    fn maintainer_sets_author_and_layer_instructions_are_refused() {
        let mut c = cfg();
        let mut st = MetaState::default();
        assert!(apply_metadata(
            &mut c,
            &Instruction::Maintainer("me".into()),
            &mut st
        ));
        assert_eq!(c.author.as_deref(), Some("me"));
        assert!(!apply_metadata(&mut c, &Instruction::Arg(vec![]), &mut st));
        assert!(apply_metadata(
            &mut c,
            &Instruction::Workdir("/app".into()),
            &mut st
        ));
        assert_eq!(c.config.working_dir.as_deref(), Some("/app"));
    }
}
