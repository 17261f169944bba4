//! The image history as BuildKit writes it: each entry's `created_by` (the Dockerfile frontend's
//! `commitToHistory` texts, `dockerfile2llb/convert.go` and `convert_copy.go`) and, without
//! SOURCE_DATE_EPOCH, each entry's `created` and the image's (the image exporter's
//! `normalizeLayersAndHistory` and `patchImageConfig`, `exporter/containerimage/writer.go`).
//!
//! Times: a layer entry carries the time its layer was made — kept in the step's cache record, so a
//! replayed step writes the time of the build that ran it (BuildKit: the cache ref's `createdAt`) —
//! and an empty-layer entry is left without one until [`normalize`] gives it the time of the layers
//! around it; the image's `created` is then its last entry's. A rebuild in which every step hits
//! the cache therefore writes the same config, hence the same digest. With SOURCE_DATE_EPOCH every
//! entry and the image carry the epoch instead, as before.
//!
//! One deliberate difference: build-arg values whose names look like secrets (BuildKit's own
//! `SecretsUsedInArgOrEnv` rule) are written as [`REDACTED`] in `ARG` entries and in RUN's `|N K=V`
//! prefix. BuildKit writes every value there — `docker history` shows them — and kiln has never
//! put a token passed as a build arg into an image; the entry keeps BuildKit's shape.
//!
//! Must not: decide when an entry is written (the stage runner does) or change anything but the
//! history and `created`.

use crate::cache::Record;
use crate::image::ImageConfig;
use crate::plan::{Instruction, Step};

/// What a build-arg value whose name looks like a secret is written as.
pub(crate) const REDACTED: &str = "<redacted>";

/// The `created_by` of a step's entry; None for an instruction BuildKit writes no entry for
/// (ONBUILD: `dispatchOnbuild` only records the trigger).
pub(crate) fn created_by(step: &Step) -> Option<String> {
    let pairs = |kw: &str, p: &[(String, String)]| {
        let items: Vec<String> = p.iter().map(|(k, v)| format!(" {k}={v}")).collect();
        format!("{kw}{}", items.concat())
    };
    Some(match &step.instruction {
        Instruction::Env(p) => pairs("ENV", p),
        Instruction::Label(p) => pairs("LABEL", p),
        Instruction::Workdir(d) => format!("WORKDIR {d}"),
        Instruction::User(u) => format!("USER {u}"),
        Instruction::Maintainer(m) => format!("MAINTAINER {m}"),
        Instruction::Expose(p) => format!("EXPOSE {}", go_list(p)),
        Instruction::Volume(v) => format!("VOLUME {}", go_list(v)),
        Instruction::StopSignal(s) => format!("STOPSIGNAL {s}"),
        Instruction::Shell(s) => format!("SHELL {}", go_list(s)),
        Instruction::Cmd(c) => format!("CMD {}", go_quoted_list(&c.argv(&step.shell))),
        Instruction::Entrypoint(c) => {
            format!("ENTRYPOINT {}", go_quoted_list(&c.argv(&step.shell)))
        }
        Instruction::Arg(args) => {
            let items: Vec<String> = args
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={}", shown_value(k, v)),
                    None => k.clone(),
                })
                .collect();
            format!("ARG {}", items.join(" "))
        }
        Instruction::Run(r) => format!(
            "RUN {}{} # kiln",
            build_arg_prefix(step),
            r.argv(&step.shell).join(" ")
        ),
        Instruction::Copy(c) => copy_text(
            if c.is_add() { "ADD" } else { "COPY" },
            matches!(c.kind, crate::plan::CopyKind::Copy { parents: true, .. }),
            (c.chown.as_deref(), c.chmod.as_ref().map(|m| m.as_str())),
            &c.sources
                .iter()
                .map(|s| s.as_str().to_string())
                .collect::<Vec<_>>(),
            &c.heredocs,
            &c.dest,
        ),
        Instruction::OnBuild(_) => return None,
        Instruction::Healthcheck(_) => {
            let first = step.source.lines().next().unwrap_or("");
            first.split_whitespace().collect::<Vec<_>>().join(" ")
        }
    })
}

/// A build-arg value as history shows it.
fn shown_value<'a>(name: &str, value: &'a str) -> &'a str {
    if crate::plan::secret_name(name) {
        REDACTED
    } else {
        value
    }
}

/// `runCommandString`: `|N K=V … ` for the N ARGs the stage declared so far (a FROM-stage's
/// first, each once, in declaration order), each with the value the RUN sees (an ENV of the same
/// name wins; a declared ARG without value is `K=`).
fn build_arg_prefix(step: &Step) -> String {
    if step.declared_args.is_empty() {
        return String::new();
    }
    let mut out = format!("|{}", step.declared_args.len());
    for k in &step.declared_args {
        let v = step
            .run_env
            .iter()
            .find(|(name, _)| name == k)
            .map_or("", |(_, v)| v.as_str());
        out.push_str(&format!(" {k}={}", shown_value(k, v)));
    }
    out.push(' ');
    out
}

/// `dispatchCopy`'s commit message: the instruction, `--parents`, `--chown`, `--chmod`, the
/// sources, the heredocs as `<<NAME`, the destination, and the builder's mark (BuildKit writes
/// `# buildkit` where kiln writes `# kiln`, as for RUN).
fn copy_text(
    kw: &str,
    parents: bool,
    (chown, chmod): (Option<&str>, Option<&str>),
    sources: &[String],
    heredocs: &[crate::plan::Heredoc],
    dest: &str,
) -> String {
    let mut out = kw.to_string();
    if parents {
        out.push_str(" --parents");
    }
    if let Some(c) = chown.filter(|c| !c.is_empty()) {
        out.push_str(&format!(" --chown={c}"));
    }
    if let Some(m) = chmod {
        out.push_str(&format!(" --chmod={m}"));
    }
    for s in sources {
        out.push_str(&format!(" {s}"));
    }
    for h in heredocs {
        out.push_str(&format!(" <<{}", h.name));
    }
    out.push_str(&format!(" {dest} # kiln"));
    out
}

/// Go's `%v` of a `[]string`: `[a b c]`.
fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `%q` of a `[]string`: `["a" "b c"]`, each element as `strconv.Quote` writes it.
fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// `strconv.Quote`: printable characters as they are, the rest escaped.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `created` of an entry without a layer: the epoch under SOURCE_DATE_EPOCH (the frontend
/// stamps every entry with it), else none yet ([`normalize`] fills it).
pub(crate) fn empty_created(sde: Option<i64>, created: &str) -> Option<&str> {
    sde.map(|_| created)
}

/// The `created` of a replayed step's layer entry: the time the record's layer was made (a
/// record from before kiln kept it: this build's time), or the epoch.
pub(crate) fn replayed_created<'a>(
    sde: Option<i64>,
    created: &'a str,
    record: &'a Record,
) -> &'a str {
    match (sde, &record.created) {
        (None, Some(t)) => t,
        _ => created,
    }
}

/// Fill the `created` of history entries that have none and set the image's: BuildKit's
/// `normalizeLayersAndHistory` (an entry without a time takes the first layer time that follows
/// the first such entry — so the first metadata step after a base image does not get the base's
/// time — and, after a later layer, that layer's) and `patchImageConfig` (the image is as old as
/// its last entry). Used only without SOURCE_DATE_EPOCH.
pub(crate) fn normalize(config: &mut ImageConfig) {
    let mut created: Option<String> = None;
    let mut seen_none = false;
    for h in &config.history {
        match &h.created {
            Some(t) => {
                created = Some(t.clone());
                if seen_none {
                    break;
                }
            }
            None => seen_none = true,
        }
    }
    seen_none = false;
    for h in &mut config.history {
        match &h.created {
            Some(t) => {
                if seen_none {
                    created = Some(t.clone());
                }
            }
            None => {
                seen_none = true;
                h.created = created.clone();
            }
        }
    }
    config.created = config.history.iter().rev().find_map(|h| h.created.clone());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::History;

    fn entry(created: Option<&str>, empty: bool) -> History {
        History {
            created: created.map(str::to_string),
            empty_layer: empty,
            ..History::default()
        }
    }

    fn times(c: &ImageConfig) -> Vec<Option<&str>> {
        c.history.iter().map(|h| h.created.as_deref()).collect()
    }

    #[test]
    fn empty_entries_take_the_next_new_layers_time_then_the_previous_one() {
        let mut c = ImageConfig::new(&crate::image::Platform::host());
        c.history = vec![
            entry(Some("base"), false),
            entry(Some("t1"), false),
            entry(None, true),
            entry(Some("t2"), false),
            entry(None, true),
            entry(Some("t3"), false),
            entry(None, true),
        ];
        normalize(&mut c);
        // As writer.go: the first empty entry gets the first layer time after it (t2), later
        // ones the layer before them.
        assert_eq!(
            times(&c),
            [
                Some("base"),
                Some("t1"),
                Some("t2"),
                Some("t2"),
                Some("t2"),
                Some("t3"),
                Some("t3")
            ]
        );
        assert_eq!(c.created.as_deref(), Some("t3"));
    }

    #[test]
    fn metadata_only_stage_takes_the_bases_last_time() {
        let mut c = ImageConfig::new(&crate::image::Platform::host());
        c.history = vec![entry(Some("b1"), false), entry(Some("b2"), true)];
        c.history.push(entry(None, true));
        normalize(&mut c);
        assert_eq!(times(&c), [Some("b1"), Some("b2"), Some("b2")]);
        assert_eq!(c.created.as_deref(), Some("b2"));
    }

    #[test]
    fn go_formats() {
        assert_eq!(
            go_quoted_list(&["/bin/sh".into(), "-c".into(), "echo \"hi\"\n".into()]),
            r#"["/bin/sh" "-c" "echo \"hi\"\n"]"#
        );
        assert_eq!(
            go_list(&["80/tcp".into(), "53/udp".into()]),
            "[80/tcp 53/udp]"
        );
    }
}
