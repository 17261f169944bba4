#!/usr/bin/env python3
"""deploy/seccomp/kiln.json from the container runtime's default profile.

    python3 deploy/seccomp/make-profile.py [/usr/share/containers/seccomp.json] > deploy/seccomp/kiln.json

The base is containers-common's default profile (Debian package golang-github-containers-common,
the profile podman and CRI-O apply). kiln.json is that profile plus an unconditional rule for each
syscall kiln's sandbox needs that the base allows only with a capability the pod does not have
(see README.md next to this file); those syscalls leave the base's capability-gated ALLOW/ERRNO
rules (two rules of different actions for one syscall are a conflict for libseccomp). Nothing
else changes.
"""
import json
import sys

# Syscall → why kiln needs it. One the base does not allow unconditionally gets an
# unconditional ALLOW rule.
NEEDED = {
    "unshare": "user, mount, pid, ipc, uts (and with --network=none net) namespaces for each RUN step",
    "mount": "the step's rootfs overlay, /proc, /dev, /sys, binds, tmpfs inside its mount namespace",
    "umount2": "detaching the old root after pivot_root",
    "pivot_root": "entering the step's rootfs",
    "sethostname": "the step's hostname in its own uts namespace",
    "seccomp": "the single-uid rung's user-notification filter (SECCOMP_FILTER_FLAG_NEW_LISTENER)",
    "ioctl": "SECCOMP_IOCTL_NOTIF_RECV/SEND/ID_VALID on the listener",
}


def allowed_unconditionally(profile, name):
    for rule in profile["syscalls"]:
        if name not in rule["names"] or rule["action"] != "SCMP_ACT_ALLOW":
            continue
        if not rule.get("args") and not (rule.get("includes") or {}) and not (rule.get("excludes") or {}):
            return True
    return False


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/containers/seccomp.json"
    with open(src) as f:
        profile = json.load(f)
    added = [n for n in NEEDED if not allowed_unconditionally(profile, n)]
    if added:
        rules = []
        for rule in profile["syscalls"]:
            gated = (rule.get("includes") or {}).get("caps") or (rule.get("excludes") or {}).get("caps")
            if gated:
                rule["names"] = [n for n in rule["names"] if n not in added]
            if rule["names"]:
                rules.append(rule)
        profile["syscalls"] = rules
        profile["syscalls"].append({
            "names": added,
            "action": "SCMP_ACT_ALLOW",
            "args": [],
            "comment": "kiln sandbox: " + "; ".join(f"{n}: {NEEDED[n]}" for n in added),
            "includes": {},
            "excludes": {},
        })
    json.dump(profile, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    print("added: " + (", ".join(added) or "nothing"), file=sys.stderr)


main()
