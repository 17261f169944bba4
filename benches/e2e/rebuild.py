#!/usr/bin/env python3
"""Rebuilds of a big image: kiln vs buildah vs Docker's BuildKit, side by side (issue 19).

    python3 benches/e2e/rebuild.py                 # everything, median of N=3 per cell
    N=1 PEERS=kiln,buildkit python3 benches/e2e/rebuild.py
    BASE_BYTES=1000000000 python3 benches/e2e/rebuild.py

The base (generated once under $WORK, default /tmp/kiln-rebuild): busybox plus BASE_FILES real files
from /usr/lib and /usr/share (a seeded sample, BASE_BYTES in all, default ~1 GB unpacked), built once
by kiln into an OCI layout and a docker-archive and loaded into every builder before any timer starts.

Workloads, each in a fresh store per builder:
  run4   `FROM base` + `RUN echo build-<i> > /n`, four builds in a row (a new RUN each time): every
         time, the total of builds 2-4, and the 4th over the 2nd (cost must not grow with use)
  edit   `FROM base` + RUN + `COPY app /app` + WORKDIR + USER, built once; one app file edited; the
         rebuild is timed
  noop   the edit workload built again with nothing changed: the time, and whether the image
         digest (kiln, buildah) or image ID (docker) is the one the previous build made
  debian a real Debian image (mmdebstrap's bookworm minbase + `apt-get install python3-venv` + a
         venv with `pip install flask requests` + COPY app), one app file edited, rebuild timed;
         DEBIAN=0 skips it (it needs Debian's archive and PyPI; the machine's CA bundle is copied
         into the image so pip trusts it, the same for every builder)

Peers (installed here if missing, never dependencies of kiln): Debian's `buildah` (overlay storage,
`bud --layers --isolation chroot`) and Debian's `docker.io` 20.10 with BuildKit (DOCKER_BUILDKIT=1),
served by a private dockerd (`--bridge=none --iptables=false`, its own data root and socket; RUN with
`--network host`). Every command runs under `nice -n 10` with a timeout; the script stops by itself.
"""

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as e2e  # noqa: E402  (the shared helpers: run(), KILN, busybox_layout(), log())

N = int(os.environ.get("N", "3"))
WORK = os.environ.get("WORK", "/tmp/kiln-rebuild")
e2e.WORK = WORK
PEERS = [p for p in os.environ.get("PEERS", "kiln,buildah,buildkit").split(",") if p]
BASE_BYTES = int(os.environ.get("BASE_BYTES", str(1000 * 10**6)))
BASE_FILES = int(os.environ.get("BASE_FILES", "60000"))
run, log = e2e.run, e2e.log


def ensure_peers():
    want = {"buildah": "buildah", "buildkit": "docker.io"}
    missing = [pkg for p, pkg in want.items() if p in PEERS and shutil.which(pkg.split(".")[0]) is None]
    if missing:
        log("installing peers:", *missing)
        subprocess.run(["apt-get", "install", "-y", *missing], check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def make_base():
    """The base image as an OCI layout and a docker-archive (made once, by kiln)."""
    out = os.path.join(WORK, "base")
    if os.path.exists(os.path.join(out, "done")):
        return out
    shutil.rmtree(out, ignore_errors=True)
    data = os.path.join(out, "ctx", "data")
    rng = random.Random(19)
    files = []
    for top in ["/usr/lib", "/usr/share"]:
        for d, _, names in os.walk(top):
            for n in names:
                p = os.path.join(d, n)
                if os.path.isfile(p) and not os.path.islink(p):
                    files.append(p)
    rng.shuffle(files)
    total = 0
    for i, p in enumerate(files[:BASE_FILES]):
        size = os.path.getsize(p)
        if size > 16 << 20 or total + size > BASE_BYTES:
            continue
        dst = os.path.join(data, f"d{i % 300}", f"{i}-{os.path.basename(p)}")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        try:
            shutil.copyfile(p, dst)
        except OSError:
            continue
        total += size
    with open(os.path.join(out, "ctx", "Dockerfile"), "w") as f:
        f.write("FROM busybox\nCOPY data /data\n")
    store = os.path.join(out, "store")
    run([e2e.KILN, "--root", store, "import", e2e.busybox_layout() + ":latest", "--tag", "busybox:latest"])
    run([e2e.KILN, "--root", store, "build", "-t", "bigbase:1", "--source-date-epoch", "0",
         "-o", f"type=oci,dest={out}/oci", "-o", f"type=docker,dest={out}/base.tar",
         os.path.join(out, "ctx")])
    shutil.rmtree(store, ignore_errors=True)
    open(os.path.join(out, "done"), "w").close()
    log(f"base: {total / 1e9:.2f} GB in {len(os.listdir(data))} directories")
    return out


class Kiln:
    name = "kiln"

    def __init__(self, base, tag):
        self.root = os.path.join(WORK, "stores", f"kiln-{tag}")
        shutil.rmtree(self.root, ignore_errors=True)
        run([e2e.KILN, "--root", self.root, "import", f"{base}/oci:1", "--tag", "bigbase:1"])

    def build(self, ctx):
        dt, p = run([e2e.KILN, "--root", self.root, "build", "--progress", "plain", "-t", "t:1", ctx])
        return dt, p.stdout.decode().strip().splitlines()[-1]

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


class Buildah:
    name = "buildah"

    def __init__(self, base, tag):
        self.root = os.path.join(WORK, "stores", f"buildah-{tag}")
        self.g = ["buildah", "--root", self.root + "/root", "--runroot", self.root + "/run",
                  "--storage-driver", "overlay"]
        _, p = run(self.g + ["pull", "-q", f"oci:{base}/oci:1"])
        run(self.g + ["tag", p.stdout.decode().strip().splitlines()[-1], "bigbase:1"])

    def build(self, ctx):
        dt, p = run(self.g + ["bud", "--layers", "--isolation", "chroot", "--pull=false", "-q",
                              "-t", "t:1", ctx])
        return dt, p.stdout.decode().strip().splitlines()[-1]

    def close(self):
        subprocess.run(self.g + ["rmi", "--all", "--force"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=300)
        subprocess.run(["umount", "-R", self.root + "/root/overlay"], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.root, ignore_errors=True)


class BuildKit:
    name = "buildkit"

    def __init__(self, base, tag):
        self.dir = os.path.join(WORK, "stores", f"docker-{tag}")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "docker.sock")
        self.proc = subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false", "--data-root",
             self.dir + "/data", "--exec-root", self.dir + "/exec", "--pidfile", self.dir + "/pid",
             "-H", "unix://" + self.sock], stdout=subprocess.DEVNULL,
            stderr=open(self.dir + "/log", "w"), start_new_session=True)
        # Debian's 20.10 client: it builds with BuildKit itself (DOCKER_BUILDKIT=1); a newer
        # client earlier on PATH would insist on the buildx plugin.
        client = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
        self.d = [client, "-H", "unix://" + self.sock]
        for _ in range(300):
            if subprocess.run(self.d + ["info"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("dockerd did not start: see " + self.dir + "/log")
        _, p = run(self.d + ["load", "-q", "-i", f"{base}/base.tar"])
        loaded = p.stdout.decode().strip().split()[-1]
        run(self.d + ["tag", loaded, "bigbase:1"])

    def build(self, ctx):
        dt, p = run(self.d + ["build", "-q", "--network", "host", "-t", "t:1", ctx],
                    env=dict(os.environ, DOCKER_BUILDKIT="1"))
        return dt, p.stdout.decode().strip().splitlines()[-1]

    def close(self):
        subprocess.run(self.d + ["system", "prune", "-af"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=300)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        subprocess.run(["umount", "-R", self.dir], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


BUILDERS = {"kiln": Kiln, "buildah": Buildah, "buildkit": BuildKit}
DEBIAN = os.environ.get("DEBIAN", "1") == "1"
# SYNTH=0 runs only the Debian workload.
SYNTH = os.environ.get("SYNTH", "1") == "1"


def make_debian():
    """mmdebstrap's bookworm minbase as an OCI layout and a docker-archive (made once)."""
    out = os.path.join(WORK, "debian")
    if os.path.exists(os.path.join(out, "done")):
        return out
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    run(["bash", os.path.join(e2e.REPO, "testdata/packages/make-debian-image.sh"), out + "/oci", "1"],
        timeout=600)
    store = os.path.join(out, "store")
    run([e2e.KILN, "--root", store, "import", out + "/oci:1", "--tag", "bigbase:1"])
    run([e2e.KILN, "--root", store, "export", "bigbase:1", "-o", f"type=docker,dest={out}/base.tar"])
    shutil.rmtree(store, ignore_errors=True)
    open(os.path.join(out, "done"), "w").close()
    return out


def debian_edit(b, tag):
    ctx = os.path.join(WORK, "ctx", f"debian-{tag}")
    cas = "/usr/local/share/ca-certificates"
    os.makedirs(os.path.join(ctx, "ca"), exist_ok=True)
    for n in os.listdir(cas) if os.path.isdir(cas) else []:
        shutil.copy(os.path.join(cas, n), os.path.join(ctx, "ca", n))
    write(os.path.join(ctx, "Dockerfile"),
          "FROM bigbase:1\n"
          "ENV DEBIAN_FRONTEND=noninteractive PIP_CERT=/etc/ssl/certs/ca-certificates.crt\n"
          "COPY ca/ /usr/local/share/ca-certificates/\n"
          "RUN apt-get update && apt-get install -y --no-install-recommends python3-venv ca-certificates"
          " && update-ca-certificates && rm -rf /var/lib/apt/lists/*\n"
          "RUN python3 -m venv /venv && /venv/bin/pip install --no-cache-dir flask requests\n"
          "COPY app /app\nWORKDIR /app\nUSER 1000\n")
    for i in range(20):
        write(os.path.join(ctx, "app", f"mod{i}.py"), f"X = {i}\n" * 200)
    first, _ = b.build(ctx)
    write(os.path.join(ctx, "app", "mod7.py"), "X = 'edited'\n")
    edit, _ = b.build(ctx)
    return {"first": first, "edit": edit}


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def run4(b, tag):
    ctx = os.path.join(WORK, "ctx", f"run4-{tag}")
    times = []
    for i in range(4):
        write(os.path.join(ctx, "Dockerfile"), f"FROM bigbase:1\nRUN echo build-{tag}-{i} > /n\n")
        times.append(b.build(ctx)[0])
    return {"builds": times, "total_2_4": sum(times[1:]), "fourth_over_second": times[3] / times[1]}


def edit_and_noop(b, tag):
    ctx = os.path.join(WORK, "ctx", f"edit-{tag}")
    write(os.path.join(ctx, "Dockerfile"),
          "FROM bigbase:1\nRUN echo setup > /setup\nCOPY app /app\nWORKDIR /app\nUSER 1000\n")
    for i in range(20):
        write(os.path.join(ctx, "app", f"mod{i}.py"), f"X = {i}\n" * 200)
    b.build(ctx)
    write(os.path.join(ctx, "app", "mod7.py"), "X = 'edited'\n")
    edit, first = b.build(ctx)
    noop, second = b.build(ctx)
    return {"edit": edit, "noop": noop, "noop_same_digest": first == second}


def main():
    ensure_peers()
    os.makedirs(WORK, exist_ok=True)
    base = make_base() if SYNTH else None
    debian = make_debian() if DEBIAN else None
    results = {}
    for rep in range(N):
        for name in PEERS:
            tag = f"{name}-{rep}"
            r = results.setdefault(name, {"run4": [], "edit": []})
            if SYNTH:
                b = BUILDERS[name](base, tag)
                try:
                    r["run4"].append(run4(b, tag))
                    r["edit"].append(edit_and_noop(b, tag))
                    log(name, rep, r["run4"][-1], r["edit"][-1])
                finally:
                    b.close()
            if debian and rep == 0:
                b = BUILDERS[name](debian, tag + "-debian")
                try:
                    results[name]["debian"] = debian_edit(b, tag)
                    log(name, "debian", results[name]["debian"])
                finally:
                    b.close()
    with open(os.path.join(WORK, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    med = statistics.median
    print("| builder | run4: builds 1-4 (s) | builds 2-4 total | 4th / 2nd | edit rebuild | no-op rebuild | no-op same digest |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if not r["run4"]:
            continue
        b = [med(x["builds"][i] for x in r["run4"]) for i in range(4)]
        print(f"| {name} | {', '.join(f'{t:.2f}' for t in b)} | {med(x['total_2_4'] for x in r['run4']):.2f} "
              f"| {med(x['fourth_over_second'] for x in r['run4']):.2f} | {med(x['edit'] for x in r['edit']):.2f} "
              f"| {med(x['noop'] for x in r['edit']):.2f} | {all(x['noop_same_digest'] for x in r['edit'])} |")
    if DEBIAN:
        print("\n| builder | Debian + apt + venv + pip: first build | edit rebuild |\n|---|---|---|")
        for name, r in results.items():
            if "debian" in r:
                print(f"| {name} | {r['debian']['first']:.1f} s | {r['debian']['edit']:.2f} s |")
    print("\ncommands:\n" + "\n".join("  " + c for c in e2e.COMMANDS))


if __name__ == "__main__":
    main()
