//! What BuildKit's dockerfile2llb decides about a stage's config and WORKDIR that kiln follows:
//! the default PATH (`convert.go`: "make sure that PATH is always set", `system.DefaultPathEnv`),
//! base ONBUILD triggers not carried over (`dispatchState.init`: "onbuild triggers to not carry
//! over from base stage" — the plan has already run them), and the owner of the directories WORKDIR creates (`dispatchWorkdir`: `llb.Mkdir(wd, 0755,
//! WithParents, WithUser(d.image.Config.User))`, resolved by `ops/user_linux.go` `readUser`).

use crate::context::SourceRoot;

use crate::engine::copy::fsutil::{resolve_chown, ChownError};
use crate::image::ImageConfig;

/// `system.DefaultPathEnv` for Linux.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The config a stage starts from, given its base's: OnBuild cleared, and `PATH=<default>`
/// appended when Env has no variable named exactly `PATH` (not on Windows, BuildKit #5445). An
/// existing PATH is left alone; a later `ENV PATH=…` replaces it in place.
pub(crate) fn init_stage_config(config: &mut ImageConfig) {
    config.config.on_build.clear();
    if config.platform.os == "windows" {
        return;
    }
    let env = &mut config.config.env;
    let has_path = env
        .iter()
        .any(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == "PATH");
    if !has_path {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
}

/// The owner of directories WORKDIR creates: the current USER resolved against the image's own
/// /etc/passwd and /etc/group (no USER: root).
pub(crate) fn workdir_owner(
    image: &SourceRoot,
    user: Option<&str>,
) -> Result<(u32, u32), ChownError> {
    match user {
        None | Some("") => Ok((0, 0)),
        Some(u) => resolve_chown(image, u),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_only_when_absent() {
        let mut c = ImageConfig::new(&crate::image::Platform::host());
        init_stage_config(&mut c);
        assert_eq!(c.config.env, vec![format!("PATH={DEFAULT_PATH}")]);
        let mut c = ImageConfig::new(&crate::image::Platform::host());
        c.config.env = vec!["PATHX=1".into(), "PATH=/x".into()];
        init_stage_config(&mut c);
        assert_eq!(c.config.env, vec!["PATHX=1", "PATH=/x"]);
    }
}
