//! Burst: 64 builds submitted at once to one daemon that runs 8 at a time, with the daemon — and
//! so every sandbox it starts — in a 512 MiB memory cgroup (v2 where the unified hierarchy is
//! mounted, else v1's memory controller): 64 of 64 succeed, the cgroup saw no OOM kill, `kiln fsck`
//! is clean, and the 56 builds that waited were told their place in the queue.

use std::fs;
use std::path::PathBuf;

use crate::support::*;
use serde_json::json;

const LIMIT: u64 = 512 << 20;

/// A memory cgroup of our own, removed when dropped (once its processes are gone).
struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    /// A new cgroup capped at `limit` bytes holding process `pid`; None (loudly) where this
    /// machine gives us none.
    fn with(pid: i32, limit: u64) -> MemoryCgroup {
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let parent = if v2 {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup/memory")
        };
        let dir = parent.join(format!("kiln-burst-{}", std::process::id()));
        let made = fs::create_dir_all(&dir).and_then(|_| {
            let (limit_file, value) = if v2 {
                ("memory.max", limit.to_string())
            } else {
                ("memory.limit_in_bytes", limit.to_string())
            };
            fs::write(dir.join(limit_file), value)?;
            fs::write(dir.join("cgroup.procs"), pid.to_string())
        });
        if let Err(e) = made {
            panic!(
                "LOUD: cannot make a memory cgroup at {} (root and a memory controller needed): {e}",
                dir.display()
            );
        }
        MemoryCgroup { dir, v2 }
    }

    /// How many processes the kernel's OOM killer took in this cgroup.
    fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = fs::read_to_string(self.dir.join(file)).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .map(|n| n.trim().parse().unwrap())
            .expect("an oom_kill count")
    }

    /// The cgroup's peak memory use, bytes.
    fn peak(&self) -> u64 {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        fs::read_to_string(self.dir.join(file))
            .map(|t| t.trim().parse().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

#[test]
fn a_burst_of_64_builds_under_a_512_mib_cap_all_succeed() {
    let mut d = Daemon::start(&["--max-concurrent-builds", "8"]);
    let pids = pids_of(&d.socket().display().to_string());
    assert_eq!(pids.len(), 1, "one daemon process: {pids:?}");
    let cg = MemoryCgroup::with(pids[0], LIMIT);
    let ids: Vec<String> = (0..64)
        .map(|i| {
            let name = format!("burst{i}");
            d.context(
                &name,
                &[
                    // Each RUN waits for a gate file in its (live, read-only) context, opened once
                    // all 64 are submitted: the first 8 hold their slots, so the other 56 queue
                    // whatever the machine's speed (bounded: 30 s).
                    (
                        "Dockerfile",
                        &format!(
                            "FROM busybox:latest\nCOPY f /f\n\
                             RUN --mount=type=bind,source=.,target=/ctx n=0; \
                             until [ -e /ctx/go ] || [ $n -gt 600 ]; do n=$((n+1)); sleep 0.05; done; \
                             cat /f > /n && echo {i} >> /n\n"
                        ),
                    ),
                    ("f", &format!("build {i}\n")),
                ],
            );
            let (s, v) = d.post_json(
                "/v1/builds",
                &json!({"context": name, "tags": [format!("burst:{i}")]}).to_string(),
            );
            assert_eq!(s, 202, "{v}");
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    for i in 0..64 {
        fs::write(d.build_root().join(format!("burst{i}/go")), "").unwrap();
    }
    let mut succeeded = 0;
    let mut farthest = 0;
    for id in &ids {
        let events = d.events(id);
        if events.last().is_some_and(|e| e["type"] == "succeeded") {
            succeeded += 1;
        } else {
            eprintln!("build {id} did not succeed:\n{}", d.log_text(id));
        }
        for e in events.iter().filter(|e| e["type"] == "queued") {
            farthest = farthest.max(e["position"].as_u64().unwrap_or(0));
        }
    }
    eprintln!(
        "burst: {succeeded}/64 succeeded, farthest queue position {farthest}, cgroup peak {} MiB",
        cg.peak() >> 20
    );
    assert_eq!(succeeded, 64);
    assert!(
        farthest > 8,
        "builds that waited were told their place: {farthest}"
    );
    assert_eq!(cg.oom_kills(), 0, "the OOM killer took a process");
    let fsck = kiln_ok(&d.root(), &["fsck"]);
    assert!(fsck.contains("no damage found"), "{fsck}");
    d.stop();
    drop(cg);
}
