//! The plan's data types: stages, steps and the fully expanded, typed [`Instruction`]s the build
//! executes. Serialised as the JSON of `kiln plan --format json`.
//!
//! Must not: compute anything beyond trivial accessors (argv construction).

use std::collections::BTreeMap;

use serde::Serialize;

use super::chmod::Chmod;
use super::platform::Platform;
use crate::dockerfile::Span;

/// Shell form (run through the stage's SHELL) or exec form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShellOrExec {
    Shell(String),
    Exec(Vec<String>),
}

impl ShellOrExec {
    /// The argv a runtime uses: `shell + [command]` for shell form, the list itself for exec form.
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            ShellOrExec::Shell(c) => shell
                .iter()
                .cloned()
                .chain(std::iter::once(c.clone()))
                .collect(),
            ShellOrExec::Exec(v) => v.clone(),
        }
    }
}

/// A heredoc body (`<<-` tabs already stripped; for COPY/ADD already expanded when `expand`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    pub expand: bool,
}

/// Where `COPY --from` / `--mount from=` reads: a stage of this Dockerfile or an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CopySource {
    Stage(usize),
    Image(String),
    /// A local `--build-context` directory, by its key.
    Context(String),
}

/// COPY and ADD as one typed instruction: everything the engine applies, expanded and checked
/// once here (BuildKit's `dispatchCopy` serves both instructions the same way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub kind: CopyKind,
    /// In the order written; heredocs come after them, as BuildKit copies them.
    pub sources: Vec<Source>,
    pub heredocs: Vec<Heredoc>,
    /// The destination as written (expanded), relative ones against the step's `workdir`.
    pub dest: String,
    /// The destination made absolute against the step's WORKDIR; a trailing `/` is kept, since
    /// it means "into this directory".
    pub target: String,
    pub chown: Option<String>,
    /// Parsed once here; serialised as written.
    pub chmod: Option<Chmod>,
    pub link: bool,
    pub excludes: Vec<String>,
}

/// What COPY and ADD do differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyKind {
    Copy {
        /// A stage or image to copy out of (`None`: the build context).
        from: Option<CopySource>,
        parents: bool,
    },
    Add {
        checksum: Option<String>,
        keep_git_dir: bool,
        /// `--unpack`: `None` unpacks local archives and leaves downloads as they are.
        unpack: Option<bool>,
    },
}

/// One COPY/ADD source, split once by what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path in the build context or in the `--from` tree (wildcards allowed).
    Local(String),
    /// ADD's http(s) URL, downloaded.
    Url(String),
}

impl Source {
    pub fn as_str(&self) -> &str {
        match self {
            Source::Local(s) | Source::Url(s) => s,
        }
    }
}

impl Copy {
    pub fn is_add(&self) -> bool {
        matches!(self.kind, CopyKind::Add { .. })
    }

    /// `--from`, for COPY.
    pub fn from(&self) -> Option<&CopySource> {
        match &self.kind {
            CopyKind::Copy { from, .. } => from.as_ref(),
            CopyKind::Add { .. } => None,
        }
    }

    /// The context (or `--from` tree) paths.
    pub fn local_sources(&self) -> Vec<String> {
        self.sources
            .iter()
            .filter_map(|s| match s {
                Source::Local(p) => Some(p.clone()),
                Source::Url(_) => None,
            })
            .collect()
    }

    /// ADD's URLs.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().filter_map(|s| match s {
            Source::Url(u) => Some(u.as_str()),
            Source::Local(_) => None,
        })
    }
}

/// The wire form of COPY and ADD: the JSON of `kiln plan` and of every step cache key, so it stays
/// exactly the shape the two instructions had as separate types (golden plans and keys unchanged).
impl Serialize for Copy {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        #[derive(Serialize)]
        struct CopyWire<'a> {
            from: Option<&'a CopySource>,
            sources: Vec<&'a str>,
            heredocs: &'a [Heredoc],
            dest: &'a str,
            chown: &'a Option<String>,
            chmod: &'a Option<Chmod>,
            link: bool,
            parents: bool,
            excludes: &'a [String],
        }
        #[derive(Serialize)]
        struct AddWire<'a> {
            sources: Vec<&'a str>,
            heredocs: &'a [Heredoc],
            dest: &'a str,
            chown: &'a Option<String>,
            chmod: &'a Option<Chmod>,
            link: bool,
            excludes: &'a [String],
            checksum: &'a Option<String>,
            keep_git_dir: bool,
            unpack: Option<bool>,
        }
        let sources: Vec<&str> = self.sources.iter().map(Source::as_str).collect();
        let mut map = ser.serialize_map(Some(1))?;
        match &self.kind {
            CopyKind::Copy { from, parents } => map.serialize_entry(
                "COPY",
                &CopyWire {
                    from: from.as_ref(),
                    sources,
                    heredocs: &self.heredocs,
                    dest: &self.dest,
                    chown: &self.chown,
                    chmod: &self.chmod,
                    link: self.link,
                    parents: *parents,
                    excludes: &self.excludes,
                },
            )?,
            CopyKind::Add {
                checksum,
                keep_git_dir,
                unpack,
            } => map.serialize_entry(
                "ADD",
                &AddWire {
                    sources,
                    heredocs: &self.heredocs,
                    dest: &self.dest,
                    chown: &self.chown,
                    chmod: &self.chmod,
                    link: self.link,
                    excludes: &self.excludes,
                    checksum,
                    keep_git_dir: *keep_git_dir,
                    unpack: *unpack,
                },
            )?,
        }
        map.end()
    }
}

/// `--mount=type=cache,sharing=…`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// A `RUN --mount`, typed per mount type, with BuildKit's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Mount {
    Bind {
        target: String,
        /// Path inside `from` (default: its root).
        source: Option<String>,
        /// `None`: the build context.
        from: Option<CopySource>,
        readonly: bool,
    },
    Cache {
        target: String,
        id: String,
        sharing: Sharing,
        from: Option<CopySource>,
        source: Option<String>,
        readonly: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Tmpfs {
        target: String,
        size: Option<i64>,
    },
    Secret {
        id: String,
        /// `None` when only `env=` was asked for.
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Ssh {
        id: String,
        target: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    Sandbox,
    Insecure,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    /// Left unexpanded: the shell expands it, with the step's `args` and `env` in its environment.
    pub command: ShellOrExec,
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<Mount>,
    pub network: Network,
    pub security: Security,
}

impl Run {
    /// The argv BuildKit runs, heredocs included: a lone `RUN <<EOF` runs the body as the script
    /// (or as a file when it starts with `#!`, which the build materialises); otherwise the bodies
    /// are appended to the command for the shell to read.
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        match (&self.command, self.heredocs.as_slice()) {
            (ShellOrExec::Shell(cmd), [only])
                if cmd
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .starts_with("<<")
                    && cmd.split_whitespace().count() == 1 =>
            {
                ShellOrExec::Shell(only.content.clone()).argv(shell)
            }
            (ShellOrExec::Shell(cmd), docs) if !docs.is_empty() => {
                let mut full = cmd.clone();
                for d in docs {
                    full.push('\n');
                    full.push_str(&d.content);
                    full.push_str(&d.name);
                }
                ShellOrExec::Shell(full).argv(shell)
            }
            (c, _) => c.argv(shell),
        }
    }
}

/// HEALTHCHECK options, durations in nanoseconds as in Docker's image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub start_interval: i64,
    pub retries: i64,
}

/// One instruction with every value a build uses (except RUN/CMD/ENTRYPOINT text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Instruction {
    Run(Run),
    Cmd(ShellOrExec),
    Entrypoint(ShellOrExec),
    Shell(Vec<String>),
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Maintainer(String),
    /// Normalised `port/proto`, ranges expanded.
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    /// Absolute, resolved against the previous WORKDIR.
    Workdir(String),
    Arg(Vec<(String, Option<String>)>),
    #[serde(rename = "ONBUILD")]
    OnBuild(String),
    #[serde(rename = "STOPSIGNAL")]
    StopSignal(String),
    /// `None` for `HEALTHCHECK NONE`.
    Healthcheck(Option<Healthcheck>),
    /// COPY and ADD: serialised by [`Copy`] itself as `{"COPY": …}` / `{"ADD": …}`.
    #[serde(untagged)]
    Copy(Copy),
}

/// One step of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub span: Span,
    /// The instruction as written (continuations joined).
    pub source: String,
    pub instruction: Instruction,
    /// True for a trigger inherited from the base's ONBUILD list.
    pub on_build: bool,
    /// Build args in scope (visible to RUN as environment, never persisted).
    pub args: BTreeMap<String, String>,
    /// The ARG names the stage declared so far (a FROM-stage's first), each once, in declaration
    /// order: what BuildKit's RUN history lists (`runCommandString` over `d.buildArgs`).
    #[serde(skip)]
    pub declared_args: Vec<String>,
    /// The image env after this step (base env + ENVs so far).
    pub env: Vec<(String, String)>,
    /// The environment a RUN at this step sees, in BuildKit's order (image env and ARG values, later
    /// definitions replacing earlier ones) plus proxy build args.
    pub run_env: Vec<(String, String)>,
    pub workdir: String,
    pub user: String,
    pub shell: Vec<String>,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    Scratch,
    Stage(usize),
    Image(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    pub index: usize,
    pub name: Option<String>,
    pub span: Span,
    /// The FROM line as written.
    pub source: String,
    pub base: Base,
    pub platform: Platform,
    pub steps: Vec<Step>,
    /// Stages this one needs (base stage, COPY --from, RUN --mount from), ascending.
    pub deps: Vec<usize>,
}

/// A build check finding (BuildKit rule name and message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub rule: String,
    pub message: String,
    /// `0:0` when the finding has no place in the file.
    pub span: Span,
}

/// The build plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub file_name: String,
    pub syntax: Option<String>,
    pub stages: Vec<Stage>,
    /// Stages to build for the target, dependencies first; pruned stages are absent.
    pub order: Vec<usize>,
    pub target: usize,
    pub target_platform: Platform,
    pub build_platform: Platform,
    /// `SOURCE_DATE_EPOCH` from the build args, when given.
    pub source_date_epoch: Option<i64>,
    pub warnings: Vec<Warning>,
}

impl Plan {
    /// What `docker build --check` (buildx `--call=check`) exits 1 on: any build-check finding.
    /// `# check=error=true` is stricter still: it already makes [`super::plan`] fail.
    pub fn check_failed(&self) -> bool {
        !self.warnings.is_empty()
    }
}
