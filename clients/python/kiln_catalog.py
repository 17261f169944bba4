"""Package builds and the image catalog of a kiln daemon, from Python (standard library only).

Builds an image from a base and APT / conda / pip lines, without a Dockerfile (kiln generates one),
and manages the platform's image catalog (``/v1/catalog``). The daemon is found as
``kiln_client`` finds it (``KILN_HOST=unix:///path/to/kiln.sock``, else the default socket).

    import kiln_catalog
    ok = kiln_catalog.build_packages(
        "registry.example.com/team/py-tools", "1.0", base="debian:bookworm",
        apt=["jq", "python3-pip"], pip=["six==1.16.0"],
        catalog={"display_name": "py-tools", "type": "cpu", "groups": ["team-a"]})
    for image in kiln_catalog.list_images(q="py"):
        print(image["name"], image["status"], image["url"])
"""

import http.client
import json
import socket
import sys
import urllib.parse

from kiln_client import KilnError, daemon_socket


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("kiln")
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


def _call(method, path, body=None, stream=False):
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
        except (ValueError, KeyError, TypeError):
            raise KilnError(resp.status, "http", text)
        raise KilnError(resp.status, err["kind"], err["message"])
    if stream:
        return resp
    return json.loads(resp.read().decode() or "null")


def _follow(build_id, out):
    """Print a build's log until it ends; True when it succeeded."""
    resp = _call("GET", "/v1/builds/%s/events" % build_id, stream=True)
    ok = False
    for raw in resp:
        line = raw.decode("utf-8", "replace").strip()
        if not line:
            continue
        event = json.loads(line)
        t = event.get("type")
        if t == "log":
            out.write("  %s\n" % event["line"])
        elif t == "step_started":
            first = (event.get("instruction") or "").splitlines()[:1]
            out.write("[%s] %s\n" % (event.get("step"), first[0] if first else ""))
        elif t == "error":
            out.write("ERROR (%s): %s\n" % (event["kind"], event["message"]))
        elif t == "cancelled":
            out.write("CANCELLED: %s\n" % event["reason"])
        elif t == "succeeded":
            out.write("built %s\n" % event["manifest"])
            ok = True
        out.flush()
        if t in ("succeeded", "error", "cancelled"):
            break
    resp.close()
    return ok


def build_packages(name, tag, base, apt=None, conda=None, pip=None, gpu_base=None, catalog=None,
                   push_image=False, registry_credentials=None, wait=True, out=None, **extra):
    """Build ``name:tag`` from ``base`` plus APT / conda / pip lines (one package per item) and,
    with ``push_image``, push it. ``catalog`` (a dict: display_name, description, type cpu | gpu |
    universal, gpu_url, global or groups, pull_secret) makes the build create or update that
    catalog entry: ``building`` now, ``ready`` with the URL(s) when it succeeds, ``failed``
    otherwise. With ``wait`` the log is streamed to ``out`` (stdout) and True/False returned;
    without, the build id is returned at once. A bad package line raises KilnError (HTTP 400)
    naming the line. Any other BuildSpec field may be passed as a keyword.
    """
    out = out or sys.stdout
    packages = {"base": base, "apt": list(apt or []), "conda": list(conda or []),
                "pip": list(pip or [])}
    if gpu_base:
        packages["gpu_base"] = gpu_base
    spec = {"name": name, "tag": tag, "push": bool(push_image), "packages": packages,
            "registry_credentials": [list(c) for c in (registry_credentials or [])]}
    if catalog:
        spec["catalog"] = dict(catalog)
    spec.update(extra)
    build_id = _call("POST", "/v1/builds", spec)["id"]
    if not wait:
        return build_id
    return _follow(build_id, out)


def list_images(q=None):
    """The catalog entries this caller may see; ``q`` searches name, display name, description and
    URL."""
    path = "/v1/catalog"
    if q:
        path += "?q=" + urllib.parse.quote(q, safe="")
    return _call("GET", path)


def get_image(name):
    """One catalog entry by its (generated) image name."""
    return _call("GET", "/v1/catalog/" + urllib.parse.quote(name, safe=""))


def add_image(display_name, url, image_type="cpu", gpu_url=None, description=None, groups=None,
              pull_secret=None):
    """List an existing image in the catalog (status ready). Without ``groups`` it is global."""
    body = {"display_name": display_name, "url": url, "type": image_type}
    if gpu_url:
        body["gpu_url"] = gpu_url
    if description is not None:
        body["description"] = description
    if groups:
        body["groups"] = list(groups)
    else:
        body["global"] = True
    if pull_secret:
        body["pull_secret"] = pull_secret
    return _call("POST", "/v1/catalog", body)


def update_image(name, **changes):
    """Change an entry's fields (display_name, description, type, url, gpu_url, global, groups,
    pull_secret); others stay."""
    return _call("PUT", "/v1/catalog/" + urllib.parse.quote(name, safe=""), changes)


def delete_image(name):
    """Remove an entry from the catalog (its images stay in their registry)."""
    return _call("DELETE", "/v1/catalog/" + urllib.parse.quote(name, safe=""))


def cancel_build(build_id):
    """Cancel a queued or running build (its catalog entry becomes ``failed``)."""
    return _call("POST", "/v1/builds/%s/cancel" % build_id)


def rebuild(build_id, changes=None, wait=True, out=None):
    """Build again from a build's record with ``changes`` (e.g. ``{"packages": {...}}``); a build
    with a catalog entry goes through the same entry. Returns True/False, or the id without
    ``wait``."""
    new_id = _call("POST", "/v1/builds/%s/rebuild" % build_id, changes or {})["id"]
    if not wait:
        return new_id
    return _follow(new_id, out or sys.stdout)
