//! The text form of a [`Plan`] (`kiln plan --format text`): stages, dependencies, each step with its
//! source line and its expanded instruction (the instruction's JSON with empty fields dropped).
//!
//! Must not: be parsed back; JSON is the machine format.

use std::fmt::Write;

use serde_json::Value;

use super::types::{Base, Plan, Step};

/// Drops `null`, `false`, `[]` and `{}` members so a line shows only what is set.
fn prune(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, prune(v)))
                .filter(|(_, v)| match v {
                    Value::Null | Value::Bool(false) => false,
                    Value::Array(a) => !a.is_empty(),
                    Value::Object(o) => !o.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(prune).collect()),
        v => v,
    }
}

fn instruction_line(step: &Step) -> String {
    let v = serde_json::to_value(&step.instruction).unwrap_or(Value::Null);
    match v {
        Value::Object(m) => m
            .into_iter()
            .next()
            .map(|(k, inner)| format!("{k} {}", prune(inner)))
            .unwrap_or_default(),
        other => other.to_string(),
    }
}

fn kv(list: impl IntoIterator<Item = (String, String)>) -> String {
    list.into_iter()
        .map(|(k, v)| format!("{k}={}", Value::String(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Plan {
    /// Human-readable plan; stable enough for golden tests.
    pub fn render_text(&self) -> String {
        let mut o = String::new();
        let name = |i: usize| match &self.stages[i].name {
            Some(n) => format!("{i} ({n})"),
            None => i.to_string(),
        };
        let _ = writeln!(o, "target: stage {}", name(self.target));
        let _ = writeln!(
            o,
            "platform: {} (build: {})",
            self.target_platform, self.build_platform
        );
        if let Some(s) = &self.syntax {
            let _ = writeln!(o, "syntax: {s}");
        }
        if let Some(e) = self.source_date_epoch {
            let _ = writeln!(o, "source-date-epoch: {e}");
        }
        let order: Vec<String> = self.order.iter().map(|i| name(*i)).collect();
        let _ = writeln!(o, "order: {}", order.join(", "));
        for st in &self.stages {
            let _ = writeln!(o);
            let base = match &st.base {
                Base::Scratch => "scratch".to_string(),
                Base::Stage(j) => format!("stage {}", name(*j)),
                Base::Image(r) => format!("image {r}"),
            };
            let pruned = if self.order.contains(&st.index) {
                ""
            } else {
                " [pruned]"
            };
            let _ = writeln!(
                o,
                "stage {}{pruned}: {} -- {}",
                name(st.index),
                st.span,
                st.source
            );
            let _ = writeln!(o, "  base: {base}");
            let _ = writeln!(o, "  platform: {}", st.platform);
            let deps: Vec<String> = st.deps.iter().map(|d| name(*d)).collect();
            let _ = writeln!(
                o,
                "  deps: {}",
                if deps.is_empty() {
                    "-".to_string()
                } else {
                    deps.join(", ")
                }
            );
            if !pruned.is_empty() {
                continue;
            }
            let mut prev_env: Option<&Vec<(String, String)>> = None;
            for step in &st.steps {
                let onb = if step.on_build { " (onbuild)" } else { "" };
                let _ = writeln!(
                    o,
                    "  {}{onb} -- {}",
                    step.span,
                    step.source.lines().next().unwrap_or("")
                );
                let _ = writeln!(o, "    {}", instruction_line(step));
                if !step.args.is_empty() {
                    let _ = writeln!(o, "    args: {}", kv(step.args.clone()));
                }
                if prev_env != Some(&step.env) {
                    let _ = writeln!(o, "    env: {}", kv(step.env.clone()));
                }
                prev_env = Some(&step.env);
                let _ = writeln!(
                    o,
                    "    workdir: {}  user: {:?}  shell: {:?}",
                    step.workdir, step.user, step.shell
                );
            }
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(o);
            let _ = writeln!(o, "warnings:");
            for w in &self.warnings {
                let _ = writeln!(o, "  {} {}: {}", w.span, w.rule, w.message);
            }
        }
        o
    }
}
