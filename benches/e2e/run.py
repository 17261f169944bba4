#!/usr/bin/env python3
"""kiln vs buildah, end to end (issue 11): build + push to a local registry, side by side.

    python3 benches/e2e/run.py                 # everything, median of 3
    N=1 ONLY=w2,w5 python3 benches/e2e/run.py  # a subset, one rep
    KILN=target/release/kiln python3 benches/e2e/run.py

Workloads (generated with a fixed seed under $WORK, default /tmp/kiln-e2e):
  w1  FROM scratch, COPY of 512 MiB (half random, half text), cold
  w2  FROM scratch, COPY of 50,000 small files, cold
  w3  FROM busybox, one RUN writing 200 MiB (half random, half text), cold
  w4  four independent busybox stages (one RUN of 48 MiB each) + a final FROM scratch COPY --from each, cold
  w5  warm no-op rebuild of w2 (same store/storage and registry as a preceding cold w2 build)
plus
  real   FROM scratch + COPY data /data of ~20,000 real files from /usr/lib and /usr/share (kiln build,
         no push, cold store) vs `tar -cf - data | pigz -p2 -6 | sha256sum` on the same directory
  rss    kiln's peak RSS (/usr/bin/time -v) while building and pushing w1, and w2 (memory per file)
  prof   strace -f -c of kiln building w2 and real (syscalls per file) and kiln's --progress plain
         lines, time-stamped, for a rough split of the wall time (PROF=0 skips it)

"cold" = empty kiln root / empty buildah storage (fresh temp dirs) and an empty registry (a fresh
docker-registry on a free 127.0.0.1 port). The busybox base is imported into both before the timer
starts. kiln and buildah alternate which goes first; each cell is the median of N wall times.

buildah (Debian's package) is a peer to measure against, installed here if missing; kiln never
depends on it. buildah runs with overlay storage under a temp --root/--runroot, `bud --jobs 2
--layers --isolation chroot`, then `buildah push --tls-verify=false`. Every command has a timeout
(TIMEOUT, default 900 s), so the script stops by itself.
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
N = int(os.environ.get("N", "3"))
WORK = os.environ.get("WORK", "/tmp/kiln-e2e")
TIMEOUT = int(os.environ.get("TIMEOUT", "900"))
ONLY = set(filter(None, os.environ.get("ONLY", "w1,w2,w3,w4,w5,real,rss,prof").split(",")))
SEED = int(os.environ.get("SEED", "11"))
REAL_FILES = int(os.environ.get("REAL_FILES", "20000"))
REAL_BYTES = int(os.environ.get("REAL_BYTES", str(800 * 10**6)))
DRIVER = os.environ.get("BUILDAH_DRIVER", "overlay")
NICE = ["nice", "-n", os.environ.get("NICE", "10")]
MiB = 1 << 20


def find_kiln():
    k = os.environ.get("KILN")
    if k:
        return os.path.abspath(k)
    for t in [os.environ.get("CARGO_TARGET_DIR", ""), os.path.join(REPO, "target"), "/work/main/target"]:
        p = os.path.join(t, "release", "kiln") if t else ""
        if p and os.access(p, os.X_OK):
            return p
    sys.exit("no release kiln binary: run `cargo build --release` (or set KILN=)")


KILN = find_kiln()
COMMANDS = []  # every distinct command line shown once


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def show(cmd):
    s = re.sub(r"127\.0\.0\.1:\d+", "REG", " ".join(cmd))
    s = re.sub(r"/stores/(kiln|buildah)-[\w-]+", r"/stores/\1-RUN", s)
    if s not in COMMANDS:
        COMMANDS.append(s)


def run(cmd, timeout=TIMEOUT, check=True, quiet=True, record=True, **kw):
    """Run cmd under nice; returns (seconds, CompletedProcess). Kills the process group on timeout."""
    if record:
        show(cmd)
    t0 = time.monotonic()
    p = subprocess.Popen(NICE + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise RuntimeError(f"timed out after {timeout}s: {' '.join(cmd)}")
    dt = time.monotonic() - t0
    if check and p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {' '.join(cmd)}\n{err.decode(errors='replace')[-3000:]}")
    return dt, subprocess.CompletedProcess(cmd, p.returncode, out, err)


# ---------------------------------------------------------------- tools

def ensure_tools():
    missing = [pkg for tool, pkg in [("buildah", "buildah"), ("docker-registry", "docker-registry"),
                                     ("pigz", "pigz"), ("strace", "strace"), ("busybox", "busybox-static")]
               if shutil.which(tool) is None and not (tool == "busybox" and os.path.exists("/bin/busybox"))]
    if missing:
        log("installing peers/tools:", *missing)
        subprocess.run(["apt-get", "install", "-y", *missing], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------- registry

class Registry:
    def __init__(self, tag):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.addr = f"127.0.0.1:{self.port}"
        self.dir = os.path.join(WORK, "reg", f"{tag}-{self.port}")
        os.makedirs(self.dir, exist_ok=True)
        cfg = os.path.join(self.dir, "config.yml")
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {self.dir}/data\n"
                    f"  delete:\n    enabled: true\nhttp:\n  addr: {self.addr}\n  secret: kiln-e2e\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "log"), "w"), start_new_session=True)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("docker-registry did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- workloads

WORDS = None


def text_bytes(rng, n):
    """n bytes of seeded English-ish text: lines drawn from a pool of 65,536 random lines."""
    global WORDS
    if WORDS is None:
        WORDS = ["".join(rng.choice("etaoinshrdlucmfwypvbgkqjxz") for _ in range(rng.randint(2, 9)))
                 for _ in range(4096)]
    pool = [(" ".join(rng.choices(WORDS, k=rng.randint(4, 14))) + "\n").encode() for _ in range(65536)]
    out = bytearray()
    while len(out) < n:
        out += b"".join(rng.choices(pool, k=20000))
    return bytes(out[:n])


def gen_w1(d):
    rng = random.Random(SEED)
    os.makedirs(os.path.join(d, "data"))
    with open(os.path.join(d, "data", "random.bin"), "wb") as f:
        for _ in range(256):
            f.write(rng.randbytes(MiB))
    with open(os.path.join(d, "data", "text.txt"), "wb") as f:
        f.write(text_bytes(rng, 256 * MiB))
    write(d, "Dockerfile", "FROM scratch\nCOPY data /data\n")


def gen_w2(d):
    rng = random.Random(SEED + 2)
    blob = text_bytes(rng, 8 * MiB)
    for i in range(50_000):
        sub = os.path.join(d, "files", f"d{i // 100:03d}")
        if i % 100 == 0:
            os.makedirs(sub)
        n = rng.randint(0, 4096)
        off = rng.randint(0, len(blob) - n)
        with open(os.path.join(sub, f"f{i:05d}.txt"), "wb") as f:
            f.write(blob[off:off + n])
    write(d, "Dockerfile", "FROM scratch\nCOPY files /files\n")


RUN_HALF = ("head -c {n} /dev/urandom > {p}.bin && "
            "yes 'kiln e2e bench: a line of text, 0123456789 abcdefghijklmnopqrstuvwxyz' | head -c {n} > {p}.txt")


def gen_w3(d):
    write(d, "Dockerfile", "FROM busybox\nRUN " + RUN_HALF.format(n=100 * MiB, p="/big") + "\n")


def gen_w4(d):
    df = []
    for s in range(4):
        df.append(f"FROM busybox AS s{s}\nRUN mkdir /out && echo {s} > /out/id && "
                  + RUN_HALF.format(n=24 * MiB, p="/out/data") + "\n")
    df.append("FROM scratch\n" + "".join(f"COPY --from=s{s} /out /s{s}\n" for s in range(4)))
    write(d, "Dockerfile", "\n".join(df))


def gen_real(d):
    """REAL_FILES regular files (<= 16 MiB) from /usr/lib and /usr/share: a seeded weighted sample
    (Efraimidis-Spirakis, weight size^0.1, which on Debian 12 gives ~20,000 files / ~800 MB), copied
    under data/ with their relative paths; stops adding files past REAL_BYTES."""
    cands = []
    for top in ["/usr/lib", "/usr/share"]:
        for root, dirs, names in os.walk(top):
            for name in names:
                src = os.path.join(root, name)
                try:
                    st = os.lstat(src)
                except OSError:
                    continue
                if os.path.isfile(src) and not os.path.islink(src) and st.st_size <= 16 * MiB:
                    cands.append((src, st.st_size))
    cands.sort()
    rng = random.Random(SEED)
    picked = sorted(cands, key=lambda t: -rng.random() ** (1 / ((t[1] + 1) ** 0.1)))[:REAL_FILES]
    picked.sort()
    data = os.path.join(d, "data")
    files, total = 0, 0
    for src, size in picked:
        if total + size > REAL_BYTES:
            continue
        dst = os.path.join(data, os.path.relpath(src, "/usr"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        try:
            shutil.copy2(src, dst)
        except OSError:
            continue
        files += 1
        total += size
    write(d, "Dockerfile", "FROM scratch\nCOPY data /data\n")
    with open(os.path.join(d, "STATS"), "w") as f:
        json.dump({"files": files, "bytes": total}, f)


def write(d, name, text):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "w") as f:
        f.write(text)


GENS = {"w1": gen_w1, "w2": gen_w2, "w3": gen_w3, "w4": gen_w4, "real": gen_real}


def context(name):
    d = os.path.join(WORK, "ctx", name)
    if not os.path.exists(os.path.join(d, "Dockerfile")):
        shutil.rmtree(d, ignore_errors=True)
        log(f"generating {name} in {d} (seed {SEED})")
        t0 = time.monotonic()
        GENS[name](d)
        log(f"  {time.monotonic() - t0:.1f}s")
    return d


# ---------------------------------------------------------------- builders

BUSYBOX = None


def busybox_layout():
    global BUSYBOX
    if BUSYBOX is None:
        BUSYBOX = os.path.join(WORK, "busybox-layout")
        shutil.rmtree(BUSYBOX, ignore_errors=True)
        subprocess.run(["bash", os.path.join(REPO, "testdata/busybox/make-image.sh"), BUSYBOX, "latest"],
                       check=True, stdout=subprocess.DEVNULL)
    return BUSYBOX


class Kiln:
    name = "kiln"

    def __init__(self, tag, base):
        self.root = os.path.join(WORK, "stores", f"kiln-{tag}")
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root)
        if base:
            run([KILN, "--root", self.root, "import", busybox_layout() + ":latest", "--tag", "busybox:latest"])

    def build_cmd(self, ctx, ref, reg, push=True):
        cmd = [KILN, "--root", self.root, "build", "--progress", "plain", "-t", ref]
        if push:
            cmd += ["--push", "--insecure-registry", reg.addr]
        return cmd + [ctx]

    def build_push(self, ctx, ref, reg):
        dt, _ = run(self.build_cmd(ctx, ref, reg))
        return dt

    def clean(self):
        shutil.rmtree(self.root, ignore_errors=True)


class Buildah:
    name = "buildah"

    def __init__(self, tag, base):
        self.root = os.path.join(WORK, "stores", f"buildah-{tag}")
        self.clean()
        os.makedirs(self.root)
        self.g = ["buildah", "--root", self.root + "/root", "--runroot", self.root + "/run", "--storage-driver", DRIVER]
        if base:
            _, p = run(self.g + ["pull", "-q", "oci:" + busybox_layout() + ":latest"])
            run(self.g + ["tag", p.stdout.decode().strip().splitlines()[-1], "docker.io/library/busybox:latest"])

    def build_push(self, ctx, ref, reg):
        t0 = time.monotonic()
        run(self.g + ["bud", "--jobs", "2", "--layers", "--isolation", "chroot", "--pull=false", "-t", ref, ctx])
        run(self.g + ["push", "--tls-verify=false", ref, "docker://" + ref])
        return time.monotonic() - t0

    def clean(self):
        if os.path.isdir(self.root):
            # overlay mounts must go before the directory does
            subprocess.run(["buildah", "--root", self.root + "/root", "--runroot", self.root + "/run",
                            "--storage-driver", DRIVER, "rm", "--all"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=120)
            subprocess.run(["umount", "-R", self.root + "/root/overlay"], stderr=subprocess.DEVNULL)
            shutil.rmtree(self.root, ignore_errors=True)


def one(builder_cls, wl, rep, tag_sfx=""):
    """One cold build+push of wl (and, for w2, the warm no-op rebuild w5 right after). Returns dict."""
    ctx = context("w2" if wl == "w5" else wl)
    base = wl in ("w3", "w4")
    tag = f"{wl}-{rep}{tag_sfx}"
    reg = Registry(f"{builder_cls.name}-{tag}")
    b = builder_cls(tag, base)
    try:
        ref = f"{reg.addr}/bench/{wl}:{builder_cls.name}"
        res = {"cold": b.build_push(ctx, ref, reg)}
        if wl == "w2" and "w5" in ONLY:
            res["warm"] = b.build_push(ctx, ref, reg)
        return res
    finally:
        b.clean()
        reg.stop()


def fmt_s(x):
    return f"{x:.2f}s"


def bench_matrix(results):
    rows = []
    names = {"w1": "COPY of 512 MiB (half random, half text), cold",
             "w2": "COPY of 50,000 small files, cold",
             "w3": "one RUN writing 200 MiB, cold",
             "w4": "four independent stages + a final COPY --from each, cold",
             "w5": "warm no-op rebuild of the 50,000 files"}
    wls = [w for w in ["w1", "w2", "w3", "w4"] if w in ONLY]
    if "w5" in ONLY and "w2" not in wls:
        wls.append("w2")
    for wl in wls:
        times = {"kiln": [], "buildah": []}
        warm = {"kiln": [], "buildah": []}
        for rep in range(N):
            order = [Kiln, Buildah] if rep % 2 == 0 else [Buildah, Kiln]
            for cls in order:
                log(f"{wl} rep {rep + 1}/{N}: {cls.name}")
                try:
                    r = one(cls, wl, rep)
                except Exception as e:  # noqa: BLE001 — record the failure, keep going
                    log(f"  FAILED: {e}")
                    results.setdefault("failures", []).append(f"{wl} {cls.name}: {str(e)[:500]}")
                    continue
                times[cls.name].append(r["cold"])
                if "warm" in r:
                    warm[cls.name].append(r["warm"])
                log(f"  cold {fmt_s(r['cold'])}" + (f", warm {fmt_s(r['warm'])}" if "warm" in r else ""))
        for key, src in ([(wl, times)] if wl != "w2" or "w2" in ONLY else []) + ([("w5", warm)] if wl == "w2" and "w5" in ONLY else []):
            k, bb = src["kiln"], src["buildah"]
            if k and bb:
                mk, mb = statistics.median(k), statistics.median(bb)
                rows.append((names[key], mk, mb, mk / mb, k, bb))
            else:
                rows.append((names[key], None, None, None, k, bb))
    results["matrix"] = rows


# ---------------------------------------------------------------- real files vs tar|pigz

def bench_real(results):
    ctx = context("real")
    stats = json.load(open(os.path.join(ctx, "STATS")))
    floor_cmd = f"tar -cf - data | pigz -p2 -6 | sha256sum"
    show(["(cd", ctx, "&&", floor_cmd + ")"])
    kt, ft = [], []
    for rep in range(N):
        for which in (["kiln", "floor"] if rep % 2 == 0 else ["floor", "kiln"]):
            if which == "kiln":
                k = Kiln(f"real-{rep}", False)
                try:
                    dt, _ = run(k.build_cmd(ctx, "bench/real:latest", None, push=False))
                    kt.append(dt)
                finally:
                    k.clean()
            else:
                dt, _ = run(["bash", "-o", "pipefail", "-c", floor_cmd], cwd=ctx, record=False)
                ft.append(dt)
            log(f"real rep {rep + 1}/{N} {which}: {fmt_s(dt)}")
    results["real"] = {"files": stats["files"], "bytes": stats["bytes"], "kiln": kt, "floor": ft,
                       "ratio": statistics.median(kt) / statistics.median(ft)}


# ---------------------------------------------------------------- peak RSS

def peak_rss(wl):
    """kiln's peak RSS (KiB) and wall time building + pushing workload `wl`, cold."""
    ctx = context(wl)
    reg = Registry("rss")
    k = Kiln("rss", False)
    try:
        cmd = ["/usr/bin/time", "-v"] + k.build_cmd(ctx, f"{reg.addr}/bench/{wl}:rss", reg)
        dt, p = run(cmd)
        rss = None
        for line in p.stderr.decode(errors="replace").splitlines():
            if "Maximum resident set size" in line:
                rss = int(line.split(":")[-1].strip())
        return {"kib": rss, "seconds": dt}
    finally:
        k.clean()
        reg.stop()


def bench_rss(results):
    # w1: one big layer; w2: the same question with 50,000 files (memory per file).
    results["rss"] = peak_rss("w1")
    results["rss_files"] = peak_rss("w2")


# ---------------------------------------------------------------- where kiln spends time

def bench_prof(results):
    prof = {}
    outdir = os.path.join(WORK, "prof")
    os.makedirs(outdir, exist_ok=True)
    for wl in [w for w in ["w2", "real"] if w in ONLY or "prof" in ONLY]:
        ctx = context(wl)
        nfiles = 50_000 if wl == "w2" else json.load(open(os.path.join(ctx, "STATS")))["files"]
        entry = {"files": nfiles}
        # 1. time-stamped --progress plain lines (no strace), build + push
        reg = Registry(f"prof-{wl}")
        k = Kiln(f"prof-{wl}", False)
        try:
            cmd = k.build_cmd(ctx, f"{reg.addr}/bench/{wl}:prof", reg)
            show(cmd)
            t0 = time.monotonic()
            p = subprocess.Popen(NICE + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
            lines = []
            deadline = t0 + TIMEOUT
            for raw in p.stderr:
                lines.append((time.monotonic() - t0, raw.decode(errors="replace").rstrip()))
                if time.monotonic() > deadline:
                    os.killpg(p.pid, signal.SIGKILL)
                    break
            p.wait()
            lines.append((time.monotonic() - t0, f"(exit {p.returncode})"))
            entry["timeline"] = lines
        finally:
            k.clean()
            reg.stop()
        # 2. strace -f -c of the build alone (no push), cold
        k = Kiln(f"strace-{wl}", False)
        try:
            out = os.path.join(outdir, f"strace-{wl}.txt")
            cmd = ["strace", "-f", "-c", "-o", out] + k.build_cmd(ctx, f"bench/{wl}:strace", None, push=False)
            dt, _ = run(cmd, timeout=TIMEOUT * 2)
            entry["strace_seconds"] = dt
            entry["strace"] = parse_strace(out)
            shutil.copy(out, os.path.join(outdir, f"strace-{wl}.keep"))
        finally:
            k.clean()
        prof[wl] = entry
    results["prof"] = prof


def parse_strace(path):
    rows = []
    for line in open(path):
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] not in ("total",):
            try:
                calls = int(parts[3])
            except ValueError:
                continue
            errors = int(parts[4]) if len(parts) == 6 else 0
            rows.append({"syscall": parts[-1], "calls": calls, "errors": errors, "pct_time": float(parts[0])})
    rows.sort(key=lambda r: -r["calls"])
    return rows


# ---------------------------------------------------------------- report

def report(results):
    p = print
    p()
    p(f"## kiln vs buildah, end to end (build + push to a local docker-registry), median of {N}")
    p(f"kiln: {KILN}; buildah: {subprocess.run(['buildah', '--version'], capture_output=True, text=True).stdout.strip()}"
      f" ({DRIVER} storage); {os.cpu_count()} cores, load at end: {os.getloadavg()[0]:.2f}")
    p()
    if "matrix" in results:
        p("| bench | kiln | buildah | kiln / buildah |")
        p("|---|---|---|---|")
        for name, mk, mb, r, k, bb in results["matrix"]:
            if r is None:
                p(f"| {name} | {k} | {bb} | (failed) |")
            else:
                p(f"| {name} | {mk:.2f} s | {mb:.2f} s | {r:.2f}× |")
        p()
        p("all runs (s):")
        for name, mk, mb, r, k, bb in results["matrix"]:
            p(f"  {name}: kiln {[round(x, 2) for x in k]}, buildah {[round(x, 2) for x in bb]}")
    if "real" in results:
        r = results["real"]
        p()
        p(f"real files: {r['files']} files, {r['bytes'] / 1e6:.0f} MB from /usr/lib + /usr/share")
        p(f"| FROM scratch + COPY data /data (kiln build, cold, no push) vs tar -cf - data \\| pigz -p2 -6 \\| sha256sum |"
          f" {statistics.median(r['kiln']):.2f} s vs {statistics.median(r['floor']):.2f} s | {r['ratio']:.2f}× |")
        p(f"  runs: kiln {[round(x, 2) for x in r['kiln']]}, floor {[round(x, 2) for x in r['floor']]}")
    if "rss" in results:
        r = results["rss"]
        p()
        p(f"kiln peak RSS building + pushing w1 (512 MiB COPY): {r['kib'] / 1024:.1f} MiB ({r['kib']} KiB, {r['seconds']:.2f} s under /usr/bin/time -v)")
    if "rss_files" in results:
        r = results["rss_files"]
        p(f"kiln peak RSS building + pushing w2 (50,000 files): {r['kib'] / 1024:.1f} MiB ({r['kib']} KiB, {r['seconds']:.2f} s)")
    if "prof" in results:
        for wl, e in results["prof"].items():
            p()
            p(f"### where kiln spends time: {wl} ({e['files']} files)")
            p("--progress plain, time-stamped on arrival (build + push, cold):")
            for t, line in e["timeline"]:
                p(f"  {t:8.2f}s  {line}")
            p(f"strace -f -c of the build alone ({e['strace_seconds']:.1f} s under strace); calls per file:")
            for row in e["strace"][:18]:
                p(f"  {row['syscall']:<18} {row['calls']:>9}  {row['calls'] / e['files']:7.2f}/file"
                  f"  errors {row['errors']:>7}  {row['pct_time']:5.1f}% time")
    if results.get("failures"):
        p()
        p("FAILED:")
        for f in results["failures"]:
            p("  " + f)
    p()
    p(f"commands (each run under `{' '.join(NICE)}`; REG = a fresh docker-registry on 127.0.0.1:PORT per run):")
    for c in COMMANDS:
        p("  " + c)
    with open(os.path.join(WORK, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)


def main():
    ensure_tools()
    os.makedirs(WORK, exist_ok=True)
    if "gen" in ONLY:  # ONLY=gen: just generate the contexts (timed runs reuse them)
        for name in GENS:
            context(name)
        return
    for sub in ("stores", "reg"):
        shutil.rmtree(os.path.join(WORK, sub), ignore_errors=True)
    results = {}
    started = time.monotonic()
    sections = [("matrix", bench_matrix, bool(ONLY & {"w1", "w2", "w3", "w4", "w5"})),
                ("real", bench_real, "real" in ONLY), ("rss", bench_rss, "rss" in ONLY),
                ("prof", bench_prof, "prof" in ONLY)]
    for name, fn, wanted in sections:
        if not wanted:
            continue
        try:
            fn(results)
        except KeyboardInterrupt:
            log("interrupted: reporting what finished")
            break
        except Exception as e:  # noqa: BLE001 — one section failing does not hide the others
            log(f"{name} FAILED: {e}")
            results.setdefault("failures", []).append(f"{name}: {str(e)[:1000]}")
    results["wall_seconds"] = time.monotonic() - started
    report(results)


if __name__ == "__main__":
    main()
