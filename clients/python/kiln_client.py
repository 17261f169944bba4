"""kiln_client: talk to a kiln daemon over its Unix socket (standard library only).

The daemon is found the way the kiln CLI finds it: ``KILN_HOST=unix:///path/to/kiln.sock``, else
the default socket: ``/run/kiln/kiln.sock`` as root, ``$XDG_RUNTIME_DIR/kiln/kiln.sock`` otherwise,
``/tmp/kiln-<uid>/kiln.sock`` when ``XDG_RUNTIME_DIR`` is not set (the daemon's own fallback).

    import kiln_client
    ok = kiln_client.build_image("registry.example.com/team/app", "1.0",
                                 registry_credentials=[("registry.example.com", "robot", "pw")],
                                 context="/build/app")
    kiln_client.update_build_config(insecure_registries="registry.example.com")

``build_image`` prints the same lines as ``kiln build --progress plain`` (and the daemon's
``/v1/builds/{id}/logs``). Interrupting it (Ctrl-C, a notebook's "stop" button) cancels the build
on the daemon, then raises ``KeyboardInterrupt`` again.
"""

import http.client
import json
import os
import socket
import sys
import warnings

__version__ = "0.1.0"

__all__ = [
    "build_image", "follow_build", "cancel_build", "list_builds", "get_build", "get_logs",
    "rebuild", "get_build_config", "update_build_config", "info", "daemon_socket",
    "render_event", "KilnError", "DaemonUnreachable", "KilnConfigWarning",
]

TERMINAL = ("succeeded", "error", "cancelled")


class KilnError(Exception):
    """The daemon answered with an error: ``kind`` is stable, ``message`` is for humans."""

    def __init__(self, status, kind, message):
        super().__init__("%s (%s, HTTP %d)" % (message, kind, status))
        self.status, self.kind, self.message = status, kind, message


class DaemonUnreachable(KilnError):
    """No kiln daemon answers on the socket: ``socket`` is the path that was tried."""

    def __init__(self, path, reason):
        self.socket = path
        msg = ("cannot reach the kiln daemon at %s: %s (is `kiln daemon` running? set "
               "KILN_HOST=unix:///path/to/kiln.sock to use another socket)" % (path, reason))
        Exception.__init__(self, msg)
        self.status, self.kind, self.message = 0, "unreachable", msg


class KilnConfigWarning(UserWarning):
    """A setting of a config the daemon accepted but does not use."""


def daemon_socket():
    """The socket path: ``KILN_HOST`` when set, else the default the daemon listens on."""
    host = os.environ.get("KILN_HOST", "")
    if host:
        if host.startswith("unix://"):
            return host[len("unix://"):]
        if "://" in host:
            raise ValueError("KILN_HOST must be unix:///path/to/kiln.sock, got %r" % host)
        return host
    uid = os.geteuid()
    if uid == 0:
        return "/run/kiln/kiln.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/"):
        return os.path.join(runtime, "kiln", "kiln.sock")
    return "/tmp/kiln-%d/kiln.sock" % uid


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=None):
        super().__init__("kiln", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if isinstance(self.timeout, (int, float)):
            self.sock.settimeout(self.timeout)
        try:
            self.sock.connect(self._path)
        except OSError:
            self.sock.close()
            self.sock = None
            raise


def _request(method, path, body=None, stream=False, raw=False, timeout=None):
    where = daemon_socket()
    conn = _UnixConnection(where, timeout=timeout)
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
    except (FileNotFoundError, ConnectionRefusedError, PermissionError) as e:
        raise DaemonUnreachable(where, e.strerror or str(e)) from None
    if resp.status >= 300:
        text = resp.read().decode("utf-8", "replace")
        try:
            err = json.loads(text)["error"]
            kind, message = err["kind"], err["message"]
        except (ValueError, KeyError, TypeError):
            kind, message = "http", text
        raise KilnError(resp.status, kind, message)
    if stream:
        return resp
    text = resp.read().decode("utf-8", "replace")
    if raw:
        return text
    return json.loads(text or "null")


def _human(n):
    units = ["B", "kB", "MB", "GB", "TB"]
    v, u = float(n), 0
    while v >= 1000.0 and u < len(units) - 1:
        v /= 1000.0
        u += 1
    return "%d B" % n if u == 0 else "%.1f %s" % (v, units[u])


def _short(digest):
    algo, _, hexpart = digest.partition(":")
    return "%s:%s" % (algo, hexpart[:12]) if hexpart else digest


def _step_finished(e):
    layer = e.get("layer")
    if layer:
        what = "layer %s %s (%s uncompressed)" % (
            _short(layer["digest"]), _human(layer["size"]), _human(layer["uncompressed_size"]))
    else:
        what = "config"
    if e.get("cached"):
        return "  #%d CACHED: %s" % (e["step"], what)
    return "  #%d done in %.2fs: %s" % (e["step"], e["duration_ms"] / 1000.0, what)


def render_event(e):
    """One event as the line(s) ``kiln build --progress plain`` prints; None for silent ones."""
    t = e.get("type")
    if t == "queued":
        return "queued (position %d)" % e["position"]
    if t == "started":
        return "build %s started" % e["id"]
    if t in ("push_progress", "step_progress"):
        return None
    if t == "error":
        return "ERROR (%s): %s" % (e["kind"], e["message"])
    if t == "cancelled":
        return "CANCELLED: %s" % e["reason"]
    if t == "succeeded":
        return "succeeded: %s" % e["manifest"]
    if t == "planned":
        return "planned %d stage(s), %d step(s)" % (e["stages"], e["steps"])
    if t == "warning":
        return "WARNING: %s" % e["message"]
    if t == "stage_started":
        return "[%s] FROM %s" % (e["stage"], e["base"])
    if t == "step_started":
        first = (e.get("instruction") or "").split("\n")[0]
        return "[%s %d/%d] %s" % (e["stage"], e["step"], e["total"], first)
    if t == "sandbox":
        text = "sandbox: %s rung, %s snapshots" % (e["rung"], e["snapshotter"])
        return "".join([text] + ["\nWARNING: %s" % w for w in e.get("warnings", [])])
    if t == "log":
        return "  %s" % e["line"]
    if t == "step_finished":
        return _step_finished(e)
    if t == "exported":
        return "exported %s: %s" % (e["kind"], e["dest"])
    if t == "transferred":
        return "%s %s for %s" % (e["kind"], _human(e["bytes"]), e["reference"])
    if t == "finished":
        tags = e.get("tags") or []
        return "built %s (%s) in %.2fs%s" % (
            e["manifest"], _human(e["size"]), e["duration_ms"] / 1000.0,
            ", tagged %s" % ", ".join(tags) if tags else "")
    return None


def _build_args(value):
    """A dict (numbers and booleans become strings), the JSON text of one, or ``K=V`` strings."""
    if value is None:
        return {}
    if isinstance(value, (str, bytes)):
        text = value.decode() if isinstance(value, bytes) else value
        if not text.strip():
            return {}
        try:
            value = json.loads(text)
        except ValueError as e:
            raise ValueError("build_args: not a JSON object: %s" % e) from None
        if not isinstance(value, dict):
            raise ValueError("build_args: expected a JSON object, got %s" % type(value).__name__)
    elif isinstance(value, (list, tuple)):
        pairs = {}
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError("build_args: expected K=V strings, got %r" % (item,))
            k, v = item.split("=", 1)
            pairs[k] = v
        value = pairs
    out = {}
    for k, v in dict(value).items():
        if v is None:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (int, float)):
            v = str(v)
        elif not isinstance(v, str):
            raise ValueError("build_args: %s must be a string, number or boolean, got %s"
                             % (k, type(v).__name__))
        out[str(k)] = v
    return out


def _write(out, text):
    out.write(text + "\n")
    out.flush()


def follow_build(build_id, out=None):
    """Print a build's events (from the start) until it ends; True when it succeeded.
    Interrupting it cancels the build on the daemon, then raises KeyboardInterrupt."""
    out = out or sys.stdout
    resp = None
    try:
        resp = _request("GET", "/v1/builds/%s/events" % build_id, stream=True)
        for raw in resp:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            event = json.loads(line)
            text = render_event(event)
            if text is not None:
                _write(out, text)
            if event.get("type") in TERMINAL:
                return event["type"] == "succeeded"
        _write(out, "ERROR: the daemon closed the event stream of build %s early" % build_id)
        return False
    except KeyboardInterrupt:
        _write(out, "interrupted: cancelling build %s" % build_id)
        try:
            cancel_build(build_id)
            _wait_terminal(build_id, out)
        except (KilnError, OSError) as e:
            _write(out, "ERROR: cancelling build %s: %s" % (build_id, e))
        raise
    finally:
        if resp is not None:
            resp.close()


def _wait_terminal(build_id, out, timeout=30):
    """After a cancel: show the build's last event (bounded wait)."""
    conn_resp = _request("GET", "/v1/builds/%s/events" % build_id, stream=True, timeout=timeout)
    try:
        for raw in conn_resp:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                event = json.loads(line)
                if event.get("type") in TERMINAL:
                    _write(out, render_event(event))
                    return
    except (socket.timeout, OSError):
        pass
    finally:
        conn_resp.close()


def _string_list(value):
    """One string, or an iterable of strings, as a list (a lone string is one item, not one item
    per character)."""
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _ssh_value(value):
    """buildx's ``--ssh``: ``default`` or a bare id is the agent at ``$SSH_AUTH_SOCK``."""
    if "=" in value:
        return value
    sock = os.environ.get("SSH_AUTH_SOCK")
    if not sock:
        raise ValueError("ssh %r: SSH_AUTH_SOCK is not set (give %s=SOCKET|KEYFILE)" % (value, value))
    return "%s=%s" % (value, sock)


def _ci_flags(spec, build_contexts, ssh, add_hosts, pull, no_cache_filter, shm_size, ulimits):
    """The ``docker buildx build`` flags' fields, given only when set."""
    if build_contexts:
        spec["build_contexts"] = {str(k): str(v) for k, v in dict(build_contexts).items()}
    if ssh:
        spec["ssh"] = [_ssh_value(v) for v in _string_list(ssh)]
    if add_hosts:
        spec["add_hosts"] = _string_list(add_hosts)
    if pull:
        spec["pull"] = True
    if no_cache_filter:
        spec["no_cache_filter"] = _string_list(no_cache_filter)
    if shm_size is not None:
        spec["shm_size"] = shm_size
    if ulimits:
        spec["ulimits"] = _string_list(ulimits)


def build_image(name, tag, push_image=True, registry_credentials=None, insecure_registry=False,
                build_args=None, context="/build", dockerfile=None, labels=None,
                target=None, no_cache=False, insecure_registries=None, secrets=None,
                resources=None, outputs=None, cache_from=None, cache_to=None, out=None,
                platforms=None, build_contexts=None, ssh=None, add_hosts=None, pull=False,
                no_cache_filter=None, shm_size=None, ulimits=None,
                provenance=None, sbom=None, attest=None, annotations=None, iidfile=None,
                metadata_file=None, digest_file=None, image_name_with_digest_file=None, **extra):
    """Build ``name:tag`` from ``context`` (a path under the daemon's /build) and, with
    ``push_image``, push it. Prints the build log; returns True on success, False when the build
    failed or the daemon refused it (the reason is printed).

    ``registry_credentials`` is a list of ``(host, user, password)``; they are used for this build
    only and never stored. ``build_args`` is a dict (numbers and booleans become strings) or its
    JSON text. ``secrets`` maps secret ids to values for ``RUN --mount=type=secret``.
    ``cache_from`` / ``cache_to`` take BuildKit's cache values (one string or a list), e.g.
    ``cache_from="type=registry,ref=reg.example.com/team/cache:main"`` and
    ``cache_to="type=registry,ref=reg.example.com/team/cache:main,mode=max"``. ``platforms``
    (one string such as ``"linux/amd64,linux/arm64"``, or a list) builds every platform into one
    image index (foreign RUN steps are emulated). Any other
    build spec field may be passed as a keyword (e.g. ``compression="zstd"``).
    ``provenance`` / ``sbom`` take buildx's values (``True``, ``"mode=max"``,
    ``"format=cyclonedx"``; off by default), ``attest`` and ``annotations`` buildx's
    ``--attest`` / ``--annotation`` strings (one or a list). ``iidfile``, ``metadata_file``,
    ``digest_file`` and ``image_name_with_digest_file`` are paths under the daemon's roots where
    buildx's and kaniko's files are written for the caller. A daemon that does
    not answer raises ``DaemonUnreachable``; Ctrl-C cancels the build and re-raises.

    ``docker buildx build`` flags: ``build_contexts`` maps names to ``PATH`` (under /build),
    ``docker-image://REF`` or ``oci-layout://PATH[@DIGEST]``; ``ssh`` is ``"default"`` (this
    process's ``$SSH_AUTH_SOCK``), ``"ID=SOCKET"``, ``"ID=KEY[,KEY]"`` or a list of them (paths
    under /build); ``add_hosts`` is ``"NAME:IP"`` or a list; ``pull`` re-resolves every base;
    ``no_cache_filter`` names stages; ``shm_size`` is bytes or ``"128m"``; ``ulimits`` is
    ``"nofile=1024:2048"`` or a list.
    """
    out = out or sys.stdout
    spec = {"context": context, "name": name, "tag": tag, "push": bool(push_image)}
    if dockerfile:
        spec["dockerfile"] = dockerfile
    if registry_credentials:
        spec["registry_credentials"] = [list(c) for c in registry_credentials]
    if insecure_registry:
        spec["insecure_registry"] = True
    args = _build_args(build_args)
    if args:
        spec["build_args"] = args
    if labels:
        spec["labels"] = {str(k): str(v) for k, v in dict(labels).items()}
    if no_cache:
        spec["no_cache"] = True
    if outputs:
        spec["outputs"] = list(outputs)
    if cache_from:
        spec["cache_from"] = _string_list(cache_from)
    if cache_to:
        spec["cache_to"] = _string_list(cache_to)
    if platforms:
        spec["platforms"] = _string_list(platforms)
    if target:
        spec["target"] = target
    if insecure_registries:
        spec["insecure_registries"] = insecure_registries
    if secrets:
        spec["secrets"] = [{"id": k, "value": v} for k, v in secrets.items()]
    if resources:
        spec["resources"] = resources
    _ci_flags(spec, build_contexts, ssh, add_hosts, pull, no_cache_filter, shm_size, ulimits)
    for key, value in (("provenance", provenance), ("sbom", sbom)):
        if value is not None:
            spec[key] = str(value).lower() if isinstance(value, bool) else str(value)
    if attest:
        spec["attest"] = _string_list(attest)
    if annotations:
        spec["annotations"] = _string_list(annotations)
    for key, value in (("iidfile", iidfile), ("metadata_file", metadata_file),
                       ("digest_file", digest_file),
                       ("image_name_with_digest_file", image_name_with_digest_file)):
        if value:
            spec[key] = str(value)
    spec.update(extra)
    try:
        build_id = _request("POST", "/v1/builds", spec)["id"]
    except DaemonUnreachable:
        raise
    except KilnError as e:
        _write(out, "ERROR: %s" % e)
        return False
    return follow_build(build_id, out)


def cancel_build(build_id):
    """Cancel a queued or running build."""
    return _request("POST", "/v1/builds/%s/cancel" % build_id)


def list_builds(status=None, limit=None):
    """Build records, newest first (``status``: queued, running, succeeded, failed, cancelled)."""
    query = []
    if status:
        query.append("status=%s" % status)
    if limit:
        query.append("limit=%d" % int(limit))
    return _request("GET", "/v1/builds" + ("?" + "&".join(query) if query else ""))


def get_build(build_id):
    """One build record: redacted spec, status, peer, Dockerfile, steps, result."""
    return _request("GET", "/v1/builds/%s" % build_id)


def get_logs(build_id):
    """A build's log as text (the same lines ``build_image`` prints)."""
    return _request("GET", "/v1/builds/%s/logs" % build_id, raw=True)


def rebuild(build_id, follow=True, out=None, **changes):
    """Build again from a record with optional changes (credentials must be given again).
    With ``follow`` prints the log and returns True/False, else returns the new build's id."""
    new_id = _request("POST", "/v1/builds/%s/rebuild" % build_id, changes)["id"]
    if not follow:
        return new_id
    return follow_build(new_id, out)


def info():
    """The daemon's version, rootless mode, sandbox rung, snapshotter, storage and queue."""
    return _request("GET", "/v1/info")


def get_build_config():
    """The daemon's registry settings (secrets redacted), its insecure list and warnings."""
    return _request("GET", "/v1/config")


def update_build_config(insecure_registries=None, config_content=None):
    """Change the daemon's registry settings at run time.

    ``insecure_registries`` (``"a.example.com,b.example.com"`` or a list) replaces the insecure
    list, which is kept as its own layer: a later ``config_content`` does not drop it.
    ``config_content`` is a whole kiln.toml or buildkitd.toml text; settings kiln does not use come
    back as ``warnings`` (also issued as ``KilnConfigWarning``). Returns the new settings;
    raises KilnError for invalid TOML or a value of the wrong type."""
    body = {}
    if insecure_registries is not None:
        if isinstance(insecure_registries, (list, tuple)):
            insecure_registries = ",".join(insecure_registries)
        body["insecure_registries"] = insecure_registries
    if config_content is not None:
        body["config_content"] = config_content
    view = _request("PUT", "/v1/config", body)
    for w in (view or {}).get("warnings", []):
        warnings.warn(w, KilnConfigWarning, stacklevel=2)
    return view
