//! The image history and `created` as BuildKit writes them, through the real `kiln build`: the
//! entries' texts (`dockerfile2llb` `commitToHistory`), build-arg values with secret-looking names
//! kept out of the image, and — without SOURCE_DATE_EPOCH — a rebuild in which every step hits the
//! cache returning the same image digest (exporter `normalizeLayersAndHistory`/`patchImageConfig`).

use std::fs;

use crate::support::*;

fn history(img: &LayoutImage) -> Vec<serde_json::Value> {
    img.config["history"].as_array().unwrap().clone()
}

fn created_by(img: &LayoutImage) -> Vec<String> {
    history(img)
        .iter()
        .map(|h| h["created_by"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn history_entries_read_as_buildkit_writes_them_without_secret_values() {
    let root = store_with_busybox();
    let df = "FROM busybox\n\
ARG DEBIAN_FRONTEND=noninteractive\n\
ARG API_TOKEN\n\
ENV B=2\n\
RUN echo \"$DEBIAN_FRONTEND\" > /f\n\
COPY --chmod=644 app.txt /app.txt\n\
ONBUILD RUN true\n\
CMD echo hi\n";
    let ctx = context(&[("Dockerfile", df), ("app.txt", "app")]);
    let (img, _) = build_to_layout(
        root.path(),
        ctx.path(),
        &[
            "--source-date-epoch",
            "0",
            "--build-arg",
            "API_TOKEN=s3cret-value",
        ],
    );
    let texts = created_by(&img);
    let ours: Vec<&str> = texts
        .iter()
        .map(String::as_str)
        .rev()
        .take(6)
        .rev()
        .collect();
    assert_eq!(
        ours,
        [
            "ARG DEBIAN_FRONTEND=noninteractive",
            "ARG API_TOKEN=<redacted>",
            "ENV B=2",
            "RUN |2 DEBIAN_FRONTEND=noninteractive API_TOKEN=<redacted> /bin/sh -c echo \"$DEBIAN_FRONTEND\" > /f # kiln",
            "COPY --chmod=644 app.txt /app.txt # kiln",
            "CMD [\"/bin/sh\" \"-c\" \"echo hi\"]",
        ],
        "ONBUILD writes no entry"
    );
    assert_eq!(img.config["config"]["ArgsEscaped"], true);
    let config_text = img.config.to_string();
    assert!(
        !config_text.contains("s3cret-value"),
        "a secret-named build arg's value is not in the image:\n{config_text}"
    );
    // With SOURCE_DATE_EPOCH every new entry and the image carry the epoch.
    assert_eq!(img.config["created"], "1970-01-01T00:00:00Z");
    for h in history(&img).iter().rev().take(6) {
        assert_eq!(h["created"], "1970-01-01T00:00:00Z", "{h}");
    }
}

#[test]
fn rebuild_from_cache_without_source_date_epoch_is_the_same_image() {
    let root = store_with_busybox();
    let df = "FROM busybox\n\
ENV MODE=prod\n\
RUN echo built > /built\n\
COPY app.txt /app.txt\n\
CMD [\"cat\", \"/app.txt\"]\n";
    let ctx = context(&[("Dockerfile", df), ("app.txt", "v1")]);
    let (first, err1) = build_to_layout(root.path(), ctx.path(), &[]);
    assert!(
        step_outcomes(&err1).iter().all(|s| !s.1),
        "a cold build:\n{err1}"
    );
    // `created` has one-second resolution: a rebuild that restamped times would now differ.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (second, err2) = build_to_layout(root.path(), ctx.path(), &[]);
    assert!(
        !err2.contains("sandbox:"),
        "every step came from the cache:\n{err2}"
    );
    assert_eq!(
        second.manifest_digest, first.manifest_digest,
        "a no-op rebuild is the same image"
    );
    assert_eq!(second.config, first.config);
    // The image is as old as its last entry; metadata entries take their layers' times.
    let h = history(&first);
    let last = h.last().unwrap();
    assert_eq!(first.config["created"], last["created"]);
    assert!(h.iter().all(|e| e["created"].is_string()), "{h:?}");

    fs::write(ctx.path().join("app.txt"), "v2").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (third, _) = build_to_layout(root.path(), ctx.path(), &[]);
    assert_ne!(
        third.manifest_digest, first.manifest_digest,
        "a changed file"
    );
    let h3 = history(&third);
    let n = h3.len();
    // The RUN came from the cache and keeps its time; the new COPY layer is newer, and so is the
    // image.
    assert_eq!(h3[n - 3]["created"], h[n - 3]["created"], "RUN entry");
    assert_ne!(h3[n - 2]["created"], h[n - 2]["created"], "COPY entry");
    assert_eq!(third.config["created"], h3[n - 2]["created"]);
}
