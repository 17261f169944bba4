"""kiln_client: talk to a kiln daemon over its Unix socket (standard library only).

The daemon is found the way the kiln CLI finds it: ``KILN_HOST=unix:///path/to/kiln.sock``, else
the default socket (``/run/kiln/kiln.sock`` as root, ``$XDG_RUNTIME_DIR/kiln/kiln.sock`` otherwise).

    import kiln_client
    ok = kiln_client.build_image("registry.example.com/team/app", "1.0",
                                 registry_credentials=[("registry.example.com", "robot", "pw")],
                                 context="/build/app")
    kiln_client.update_build_config(insecure_registries="registry.example.com")
"""

import http.client
import json
import os
import socket
import sys

__all__ = ["build_image", "update_build_config", "daemon_socket", "KilnError"]


class KilnError(Exception):
    """The daemon answered with an error: ``kind`` is stable, ``message`` is for humans."""

    def __init__(self, status, kind, message):
        super().__init__("%s (%s, HTTP %d)" % (message, kind, status))
        self.status, self.kind, self.message = status, kind, message


def daemon_socket():
    host = os.environ.get("KILN_HOST", "")
    if host:
        if not host.startswith("unix://"):
            raise ValueError("KILN_HOST must be unix:///path/to/kiln.sock, got %r" % host)
        return host[len("unix://"):]
    if os.geteuid() == 0:
        return "/run/kiln/kiln.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR") or "/tmp/kiln-%d" % os.geteuid()
    return os.path.join(runtime, "kiln", "kiln.sock")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=None):
        super().__init__("kiln", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


def _request(method, path, body=None, stream=False):
    conn = _UnixConnection(daemon_socket())
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    if resp.status >= 300:
        text = resp.read().decode("utf-8", "replace")
        try:
            err = json.loads(text)["error"]
            raise KilnError(resp.status, err["kind"], err["message"])
        except (ValueError, KeyError, TypeError):
            raise KilnError(resp.status, "http", text)
    if stream:
        return resp
    return json.loads(resp.read().decode() or "null")


def _render(event, out):
    t = event.get("type")
    if t == "log":
        out.write("  %s\n" % event["line"])
    elif t == "step_started":
        first = event["instruction"].splitlines()[0] if event["instruction"] else ""
        out.write("[%s %d/%d] %s\n" % (event["stage"], event["step"], event["total"], first))
    elif t == "stage_started":
        out.write("[%s] FROM %s\n" % (event["stage"], event["base"]))
    elif t == "warning":
        out.write("WARNING: %s\n" % event["message"])
    elif t == "exported":
        out.write("exported %s: %s\n" % (event["kind"], event["dest"]))
    elif t == "error":
        out.write("ERROR (%s): %s\n" % (event["kind"], event["message"]))
    elif t == "cancelled":
        out.write("CANCELLED: %s\n" % event["reason"])
    elif t == "succeeded":
        out.write("built %s\n" % event["manifest"])
    out.flush()


def build_image(name, tag, push_image=True, registry_credentials=None, insecure_registry=False,
                build_args=None, context="/build", dockerfile="Dockerfile", labels=None,
                target=None, no_cache=False, insecure_registries=None, secrets=None,
                resources=None, outputs=None, out=None, **extra):
    """Build ``name:tag`` from ``context`` (a path under the daemon's /build) and, with
    ``push_image``, push it. Streams the build log to stdout; returns True on success.

    ``registry_credentials`` is a list of ``(host, user, password)``; they are used for this build
    only and never stored. ``secrets`` maps secret ids to values for ``RUN --mount=type=secret``.
    Any other BuildSpec field may be passed as a keyword (e.g. ``compression="zstd"``).
    """
    out = out or sys.stdout
    spec = {
        "context": context,
        "dockerfile": dockerfile,
        "name": name,
        "tag": tag,
        "push": bool(push_image),
        "registry_credentials": [list(c) for c in (registry_credentials or [])],
        "insecure_registry": bool(insecure_registry),
        "build_args": dict(build_args or {}),
        "labels": dict(labels or {}),
        "no_cache": bool(no_cache),
        "outputs": list(outputs or []),
    }
    if target:
        spec["target"] = target
    if insecure_registries:
        spec["insecure_registries"] = insecure_registries
    if secrets:
        spec["secrets"] = [{"id": k, "value": v} for k, v in secrets.items()]
    if resources:
        spec["resources"] = resources
    spec.update(extra)
    try:
        build_id = _request("POST", "/v1/builds", spec)["id"]
        resp = _request("GET", "/v1/builds/%s/events" % build_id, stream=True)
        ok = False
        for raw in resp:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            event = json.loads(line)
            _render(event, out)
            if event.get("type") == "succeeded":
                ok = True
            if event.get("type") in ("succeeded", "error", "cancelled"):
                break
        resp.close()
        return ok
    except KilnError as e:
        out.write("ERROR: %s\n" % e)
        out.flush()
        return False
    except OSError as e:
        out.write("ERROR: cannot reach the kiln daemon at %s: %s\n" % (daemon_socket(), e))
        out.flush()
        return False


def update_build_config(insecure_registries=None, config_content=None):
    """Change the daemon's registry settings at run time: ``insecure_registries`` as
    ``"a.example.com,b.example.com"`` (or a list), and/or ``config_content`` as a whole
    kiln.toml/buildkitd.toml text. Returns the new settings (secrets redacted); raises KilnError
    (e.g. invalid TOML, naming the line)."""
    body = {}
    if insecure_registries is not None:
        body["insecure_registries"] = insecure_registries
    if config_content is not None:
        body["config_content"] = config_content
    return _request("PUT", "/v1/config", body)
