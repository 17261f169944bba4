//! COPY writes its layer straight from the sources (engine/copy/planner.rs), as a user sees it: the
//! image does not depend on how many threads built it, a later step reads exactly the tree the
//! layer holds (links, owners, modes), and `COPY --from` a stage whose last step was such a COPY
//! gets the files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::*;

/// A context with incompressible and compressible data (so stored and deflated blocks mix),
/// hard links, a symlink and a nested tree.
fn mixed_context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let data = ctx.path().join("data");
    fs::create_dir_all(data.join("sub/deeper")).unwrap();
    let random = noise(3 << 20);
    fs::write(data.join("random.bin"), &random).unwrap();
    let text: String = (0..60_000).map(|i| format!("line {i} of text\n")).collect();
    fs::write(data.join("sub/text.txt"), text).unwrap();
    fs::write(data.join("sub/deeper/a"), "shared inode\n").unwrap();
    fs::hard_link(data.join("sub/deeper/a"), data.join("sub/b")).unwrap();
    std::os::unix::fs::symlink("deeper/a", data.join("sub/link")).unwrap();
    fs::set_permissions(data.join("sub/deeper"), fs::Permissions::from_mode(0o750)).unwrap();
    ctx
}

fn config(dir: &Path, threads: usize) -> String {
    let p = dir.join(format!("kiln-{threads}.toml"));
    fs::write(&p, format!("[worker.oci]\nmax-parallelism = {threads}\n")).unwrap();
    p.display().to_string()
}

#[test]
fn the_image_is_the_same_for_one_and_four_threads() {
    let ctx = mixed_context("FROM scratch\nCOPY data /data\nCOPY --chown=7:8 data/sub /again/\n");
    let conf = tempfile::tempdir().unwrap();
    for compression in ["gzip", "zstd"] {
        let digests: Vec<String> = [1, 4]
            .iter()
            .map(|&threads| {
                let root = tempfile::tempdir().unwrap();
                let cfg = config(conf.path(), threads);
                let ctx_arg = ctx.path().display().to_string();
                let args = [
                    "--config",
                    &cfg,
                    "build",
                    "--compression",
                    compression,
                    "--build-arg",
                    "SOURCE_DATE_EPOCH=1700000000",
                    &ctx_arg,
                ];
                kiln_ok(root.path(), &args).trim().to_string()
            })
            .collect();
        assert!(digests[0].starts_with("sha256:"), "{digests:?}");
        assert_eq!(
            digests[0], digests[1],
            "{compression}: 1 and 4 threads built different images"
        );
    }
}

#[test]
fn a_step_after_a_direct_copy_reads_the_tree_the_layer_holds() {
    let df = "FROM busybox\n\
              COPY --chown=7:8 data /d\n\
              RUN stat -c '%n %h %a %u:%g %F' /d/sub/b /d/sub/deeper/a /d/sub/deeper /d/sub/link > /stat \
                  && cat /d/sub/link > /through-link\n\
              FROM scratch AS copied\n\
              COPY data/sub/deeper /deeper/\n\
              FROM busybox\n\
              COPY --from=0 /stat /through-link /\n\
              COPY --from=copied /deeper /from-stage/\n";
    let ctx = mixed_context(df);
    let root = store_with_busybox();
    let (img, _) = build_to_layout(root.path(), ctx.path(), &[]);
    let files = all_entries(&img);
    let stat = String::from_utf8(files["stat"].content.clone().unwrap()).unwrap();
    assert_eq!(
        stat,
        "/d/sub/b 2 644 7:8 regular file\n\
         /d/sub/deeper/a 2 644 7:8 regular file\n\
         /d/sub/deeper 2 750 7:8 directory\n\
         /d/sub/link 1 777 7:8 symbolic link\n",
        "the RUN saw another tree than the COPY layer holds"
    );
    assert_eq!(
        files["through-link"].content.as_deref(),
        Some(&b"shared inode\n"[..])
    );
    assert_eq!(
        files["from-stage/a"].content.as_deref(),
        Some(&b"shared inode\n"[..]),
        "COPY --from a stage whose only step was a direct COPY"
    );
}
