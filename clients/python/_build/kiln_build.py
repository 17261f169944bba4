"""A minimal PEP 517 build backend (standard library only), so that ``pip install clients/python``
works offline and needs neither setuptools nor wheel: the package is one module."""

import base64
import hashlib
import os
import zipfile

NAME, DIST, VERSION = "kiln-client", "kiln_client", "0.1.0"
MODULE = "kiln_client.py"
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

METADATA = """Metadata-Version: 2.1
Name: {name}
Version: {version}
Summary: Client for the kiln image builder daemon (Unix socket JSON API); standard library only
License: Apache-2.0
Requires-Python: >=3.8
""".format(name=NAME, version=VERSION)

WHEEL = """Wheel-Version: 1.0
Generator: kiln_build
Root-Is-Purelib: true
Tag: py3-none-any
"""


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def _dist_info():
    return "%s-%s.dist-info" % (DIST, VERSION)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    d = os.path.join(metadata_directory, _dist_info())
    os.makedirs(d, exist_ok=True)
    for name, text in (("METADATA", METADATA), ("WHEEL", WHEEL)):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    return _dist_info()


def _record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (path, digest, len(data))


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    wheel = "%s-%s-py3-none-any.whl" % (DIST, VERSION)
    with open(os.path.join(HERE, MODULE), "rb") as f:
        module = f.read()
    files = [
        (MODULE, module),
        (_dist_info() + "/METADATA", METADATA.encode()),
        (_dist_info() + "/WHEEL", WHEEL.encode()),
    ]
    record = [_record_line(p, d) for p, d in files] + [_dist_info() + "/RECORD,,"]
    files.append((_dist_info() + "/RECORD", ("\n".join(record) + "\n").encode()))
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files:
            z.writestr(path, data)
    return wheel
