//! The build's steps in BuildKit's `buildConfig.llbDefinition` shape (`provenance/buildconfig.go`
//! `toBuildSteps`): a list of `{id: "stepN", op, inputs: ["stepM:0", …]}` in dependency order, each
//! `op` the JSON of an LLB `pb.Op` as BuildKit's Dockerfile frontend would have made it — a
//! `source` op per base image (`docker-image://REF@DIGEST`) and for the context (`local://context`),
//! an `exec` op per RUN (`meta.args` naming the command, `env`, `cwd`, its mounts; secret mounts by
//! id only), a `file` op per COPY/ADD (`copy` actions naming each source, `mkfile` for heredocs) —
//! and a last op without `Op` whose input is the result. Metadata-only instructions make no op, as
//! in BuildKit. `digestMapping` maps each op's digest (sha256 of its canonical JSON) to its id.
//!
//! Must not: name a secret's value or source path.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::BuildFacts;
use crate::digest::Digest;
use crate::plan::{self, Base, CopySource, Instruction, Mount, Plan, ShellOrExec, Step};

/// Every image the built stages read: FROM, `COPY --from=IMAGE`, `RUN --mount from=IMAGE`.
pub(super) fn image_references(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for &i in &plan.order {
        let st = &plan.stages[i];
        if let Base::Image(r) = &st.base {
            out.push(r.clone());
        }
        for step in &st.steps {
            for from in step_sources(step) {
                if let Some(CopySource::Image(r)) = from {
                    out.push(r.clone());
                }
            }
        }
    }
    out
}

/// The `from` of a step's COPY or RUN mounts (None: the context).
fn step_sources(step: &Step) -> Vec<Option<&CopySource>> {
    match &step.instruction {
        Instruction::Copy(c) => vec![c.from()],
        Instruction::Run(r) => r
            .mounts
            .iter()
            .filter_map(|m| match m {
                Mount::Bind { from, .. }
                | Mount::Cache {
                    from: from @ Some(_),
                    ..
                } => Some(from.as_ref()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

struct Graph<'a> {
    facts: &'a BuildFacts<'a>,
    steps: Vec<Value>,
    images: BTreeMap<String, String>,
    context: Option<String>,
    stages: BTreeMap<usize, Option<String>>,
}

impl Graph<'_> {
    fn push(&mut self, op: Value, inputs: Vec<String>) -> String {
        let id = format!("step{}", self.steps.len());
        let mut s = json!({ "id": id, "op": op });
        if !inputs.is_empty() {
            s["inputs"] = json!(inputs);
        }
        self.steps.push(s);
        format!("{id}:0")
    }

    fn platform(&self) -> Value {
        let p = self.facts.platform;
        let mut v = json!({ "Architecture": p.architecture, "OS": p.os });
        if let Some(var) = &p.variant {
            v["Variant"] = json!(var);
        }
        v
    }

    fn image(&mut self, reference: &str) -> String {
        if let Some(s) = self.images.get(reference) {
            return s.clone();
        }
        let name = reference
            .parse::<crate::reference::Reference>()
            .map(|r| r.store_name())
            .unwrap_or_else(|_| reference.to_string());
        let identifier = match self.facts.bases.get(reference) {
            Some(d) => format!("docker-image://{name}@{d}"),
            None => format!("docker-image://{name}"),
        };
        let op = json!({
            "Op": { "source": { "identifier": identifier } },
            "platform": self.platform(),
            "constraints": {},
        });
        let out = self.push(op, Vec::new());
        self.images.insert(reference.to_string(), out.clone());
        out
    }

    fn context(&mut self) -> String {
        if let Some(c) = &self.context {
            return c.clone();
        }
        let op = json!({
            "Op": { "source": {
                "identifier": "local://context",
                "attrs": { "local.sharedkeyhint": "context" },
            } },
            "constraints": {},
        });
        let out = self.push(op, Vec::new());
        self.context = Some(out.clone());
        out
    }

    /// The state a `from` names (None when it is an empty stage).
    fn source(&mut self, from: Option<&CopySource>) -> Option<String> {
        match from {
            None => Some(self.context()),
            Some(CopySource::Stage(i)) => self.stages.get(i).cloned().flatten(),
            Some(CopySource::Image(r)) => Some(self.image(r)),
            Some(CopySource::Context(name)) => Some(self.named_local(name)),
        }
    }

    /// A `--build-context NAME=DIR`: BuildKit's `local://NAME` source (dockerui's named local
    /// context, its shared key hint the name).
    fn named_local(&mut self, name: &str) -> String {
        let identifier = format!("local://{name}");
        if let Some(out) = self.images.get(&identifier) {
            return out.clone();
        }
        let op = json!({
            "Op": { "source": {
                "identifier": identifier,
                "attrs": { "local.sharedkeyhint": name },
            } },
            "constraints": {},
        });
        let out = self.push(op, Vec::new());
        self.images.insert(identifier, out.clone());
        out
    }
}

/// `buildConfig` for the built stages.
pub(super) fn build_config(facts: &BuildFacts<'_>) -> Value {
    let mut g = Graph {
        facts,
        steps: Vec::new(),
        images: BTreeMap::new(),
        context: None,
        stages: BTreeMap::new(),
    };
    let plan = facts.plan;
    for &i in &plan.order {
        let st = &plan.stages[i];
        let mut state = match &st.base {
            Base::Scratch => None,
            Base::Stage(s) => g.stages.get(s).cloned().flatten(),
            Base::Image(r) => Some(g.image(r)),
        };
        for step in &st.steps {
            state = match &step.instruction {
                Instruction::Run(r) => Some(exec_op(&mut g, step, r, state)),
                Instruction::Copy(c) if !c.is_add() => {
                    let src = g.source(c.from());
                    let local = c.local_sources();
                    let sources: Vec<&str> = local.iter().map(String::as_str).collect();
                    Some(file_op(&mut g, state, src, &sources, &c.heredocs, &c.dest))
                }
                Instruction::Copy(a) => {
                    let mut out = state;
                    let local = a.local_sources();
                    for u in a.urls() {
                        let src = g.push(
                            json!({ "Op": { "source": { "identifier": u } }, "constraints": {} }),
                            Vec::new(),
                        );
                        out = Some(file_op(&mut g, out, Some(src), &["/"], &[], &a.dest));
                    }
                    if !local.is_empty() || !a.heredocs.is_empty() {
                        let src = g.context();
                        let local: Vec<&str> = local.iter().map(|s| s.as_str()).collect();
                        out = Some(file_op(
                            &mut g,
                            out,
                            Some(src),
                            &local,
                            &a.heredocs,
                            &a.dest,
                        ));
                    }
                    out
                }
                _ => state,
            };
        }
        g.stages.insert(i, state);
    }
    if let Some(Some(result)) = g.stages.get(&plan.target).cloned() {
        g.push(json!({ "Op": null }), vec![result]);
    }
    let mapping: BTreeMap<String, String> = g
        .steps
        .iter()
        .map(|s| {
            let bytes = crate::image::canonical_json(&s["op"]).unwrap_or_default();
            (
                Digest::of(&bytes).to_string(),
                s["id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    json!({ "llbDefinition": g.steps, "digestMapping": mapping })
}

fn exec_op(g: &mut Graph<'_>, step: &Step, r: &plan::Run, state: Option<String>) -> String {
    let args: Vec<String> = match &r.command {
        ShellOrExec::Shell(cmd) => step.shell.iter().cloned().chain([cmd.clone()]).collect(),
        ShellOrExec::Exec(v) => v.clone(),
    };
    let env: Vec<String> = step
        .run_env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut meta = json!({ "args": args, "env": env, "cwd": step.workdir });
    if !step.user.is_empty() {
        meta["user"] = json!(step.user);
    }
    let mut inputs = Vec::new();
    let mut mounts = Vec::new();
    let root_input = match state {
        Some(s) => {
            inputs.push(s);
            0
        }
        None => -1,
    };
    mounts.push(json!({ "input": root_input, "dest": "/", "output": 0 }));
    for m in &r.mounts {
        mounts.push(mount_json(g, m, &mut inputs));
    }
    let op = json!({
        "Op": { "exec": { "meta": meta, "mounts": mounts } },
        "platform": g.platform(),
        "constraints": {},
    });
    g.push(op, inputs)
}

/// One RUN mount as `pb.Mount` (types: bind 0, secret 1, ssh 2, cache 3, tmpfs 4).
fn mount_json(g: &mut Graph<'_>, m: &Mount, inputs: &mut Vec<String>) -> Value {
    let mut input_of = |g: &mut Graph<'_>, from: Option<&CopySource>| match g.source(from) {
        Some(s) => {
            inputs.push(s);
            inputs.len() as i64 - 1
        }
        None => -1,
    };
    match m {
        Mount::Bind {
            target,
            source,
            from,
            readonly,
        } => {
            let input = input_of(g, from.as_ref());
            json!({ "input": input, "selector": source.clone().unwrap_or_else(|| "/".into()),
                    "dest": target, "output": -1, "readonly": readonly })
        }
        Mount::Cache {
            target, id, from, ..
        } => {
            let input = match from {
                Some(f) => input_of(g, Some(f)),
                None => -1,
            };
            json!({ "input": input, "dest": target, "output": -1, "mountType": 3,
                    "cacheOpt": { "ID": id } })
        }
        Mount::Tmpfs { target, .. } => {
            json!({ "input": -1, "dest": target, "output": -1, "mountType": 4 })
        }
        Mount::Secret {
            id,
            target,
            required,
            uid,
            gid,
            mode,
            ..
        } => {
            let dest = target
                .clone()
                .unwrap_or_else(|| format!("/run/secrets/{id}"));
            json!({ "input": -1, "dest": dest, "output": -1, "mountType": 1,
                    "secretOpt": { "ID": id, "uid": uid, "gid": gid, "mode": mode, "optional": !required } })
        }
        Mount::Ssh {
            id,
            target,
            required,
            uid,
            gid,
            mode,
        } => {
            json!({ "input": -1, "dest": target, "output": -1, "mountType": 2,
                    "SSHOpt": { "ID": id, "uid": uid, "gid": gid, "mode": mode, "optional": !required } })
        }
    }
}

/// A `file` op: a `copy` action per source (then `mkfile` per heredoc), chained as BuildKit
/// chains a FileOp's actions (each reads the previous one's result; the last is output 0).
fn file_op(
    g: &mut Graph<'_>,
    state: Option<String>,
    src: Option<String>,
    sources: &[&str],
    heredocs: &[plan::Heredoc],
    dest: &str,
) -> String {
    let mut inputs = Vec::new();
    let base = match state {
        Some(s) => {
            inputs.push(s);
            0
        }
        None => -1,
    };
    let secondary = match src {
        Some(s) => {
            inputs.push(s);
            inputs.len() as i64 - 1
        }
        None => -1,
    };
    let mut actions: Vec<Value> = Vec::new();
    for s in sources {
        actions.push(json!({ "secondaryInput": secondary, "Action": { "copy": {
            "src": s, "dest": dest, "followSymlink": true, "dirCopyContents": true,
            "createDestPath": true, "allowWildcard": true, "allowEmptyWildcard": true,
        } } }));
    }
    for h in heredocs {
        let path = match dest.ends_with('/') {
            true => format!("{dest}{}", h.name),
            false => dest.to_string(),
        };
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.encode(&h.content);
        actions.push(json!({ "secondaryInput": -1, "Action": { "mkfile": {
            "path": path, "mode": 0o644, "data": data,
        } } }));
    }
    let n = actions.len();
    let first = inputs.len() as i64;
    for (i, a) in actions.iter_mut().enumerate() {
        a["input"] = json!(if i == 0 { base } else { first + i as i64 - 1 });
        a["output"] = json!(if i + 1 == n { 0 } else { -1 });
    }
    let op = json!({
        "Op": { "file": { "actions": actions } },
        "platform": g.platform(),
        "constraints": {},
    });
    g.push(op, inputs)
}
