"""Unit tests of kiln_client that need no daemon (run by tests/daemon/client_python.rs with
``python3 -m unittest``; pytest collects them too)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import kiln_client  # noqa: E402


class BuildArgs(unittest.TestCase):
    def test_dict_values_become_strings(self):
        got = kiln_client._build_args({"N": 3, "F": 1.5, "B": True, "OFF": False, "S": "x",
                                       "NONE": None})
        self.assertEqual(got, {"N": "3", "F": "1.5", "B": "true", "OFF": "false", "S": "x"})

    def test_json_text_and_kv_list(self):
        self.assertEqual(kiln_client._build_args('{"A": 1, "B": "two"}'), {"A": "1", "B": "two"})
        self.assertEqual(kiln_client._build_args(["A=1", "B=x=y"]), {"A": "1", "B": "x=y"})
        self.assertEqual(kiln_client._build_args(""), {})

    def test_bad_input_says_what(self):
        with self.assertRaisesRegex(ValueError, "JSON object"):
            kiln_client._build_args("[1, 2]")
        with self.assertRaisesRegex(ValueError, "K=V"):
            kiln_client._build_args(["novalue"])
        with self.assertRaisesRegex(ValueError, "L must be"):
            kiln_client._build_args({"L": [1]})


class Socket(unittest.TestCase):
    def setUp(self):
        self.saved = {k: os.environ.get(k) for k in ("KILN_HOST", "XDG_RUNTIME_DIR")}

    def tearDown(self):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def test_kiln_host_wins(self):
        os.environ["KILN_HOST"] = "unix:///x/y.sock"
        self.assertEqual(kiln_client.daemon_socket(), "/x/y.sock")
        os.environ["KILN_HOST"] = "tcp://h:1"
        self.assertRaises(ValueError, kiln_client.daemon_socket)

    def test_missing_daemon_is_one_clear_error(self):
        os.environ["KILN_HOST"] = "unix:///nonexistent/kiln.sock"
        with self.assertRaises(kiln_client.DaemonUnreachable) as cm:
            kiln_client.info()
        self.assertIn("/nonexistent/kiln.sock", str(cm.exception))
        self.assertIsNone(cm.exception.__cause__)


class Render(unittest.TestCase):
    def test_lines_match_the_cli(self):
        r = kiln_client.render_event
        self.assertEqual(r({"type": "step_finished", "step": 2, "duration_ms": 1234,
                            "cached": True, "layer": {"digest": "sha256:" + "ab" * 32,
                                                      "diff_id": "x", "size": 2500,
                                                      "uncompressed_size": 999}}),
                         "  #2 CACHED: layer sha256:abababababab 2.5 kB (999 B uncompressed)")
        self.assertEqual(r({"type": "step_finished", "step": 3, "duration_ms": 1234}),
                         "  #3 done in 1.23s: config")
        self.assertEqual(r({"type": "transferred", "kind": "pushed", "reference": "r/x:1",
                            "bytes": 1234567}), "pushed 1.2 MB for r/x:1")
        self.assertIsNone(r({"type": "step_progress", "step": 1, "bytes": 5}))


def specs_sent(*calls):
    """The build specs ``build_image("app", "1", **kw)`` sends for each call's keywords, with the
    daemon faked (every build accepted and followed to success)."""
    sent = []

    def fake_request(method, path, body=None):
        sent.append(body)
        return {"id": "b1"}

    saved = (kiln_client._request, kiln_client.follow_build)
    kiln_client._request = fake_request
    kiln_client.follow_build = lambda build_id, out: True
    try:
        for kw in calls:
            assert kiln_client.build_image("app", "1", **kw)
    finally:
        kiln_client._request, kiln_client.follow_build = saved
    return sent


class CacheKwargs(unittest.TestCase):
    def test_cache_from_and_to_reach_the_spec(self):
        [sent] = specs_sent(dict(
            push_image=True,
            cache_from="type=registry,ref=r.example.com/t/cache:main",
            cache_to=["type=registry,ref=r.example.com/t/cache:main,mode=max", "type=inline"]))
        self.assertEqual(sent["cache_from"], ["type=registry,ref=r.example.com/t/cache:main"])
        self.assertEqual(sent["cache_to"], ["type=registry,ref=r.example.com/t/cache:main,mode=max",
                                            "type=inline"])


class PlatformsKwarg(unittest.TestCase):
    def test_platforms_reach_the_spec_as_a_list(self):
        sent = specs_sent(dict(platforms="linux/amd64,linux/arm64"),
                          dict(platforms=("linux/amd64", "linux/arm/v7")), dict())
        self.assertEqual(sent[0]["platforms"], ["linux/amd64,linux/arm64"])
        self.assertEqual(sent[1]["platforms"], ["linux/amd64", "linux/arm/v7"])
        self.assertNotIn("platforms", sent[2])


class BuildxFlagKwargs(unittest.TestCase):
    def test_buildx_flags_reach_the_spec(self):
        saved = os.environ.get("SSH_AUTH_SOCK")
        os.environ["SSH_AUTH_SOCK"] = "/build/agent.sock"
        try:
            sent, bare = specs_sent(dict(
                push_image=False,
                build_contexts={"base": "docker-image://busybox:1"},
                ssh=["default", "git=/build/keys/id"], add_hosts="db:10.0.0.5", pull=True,
                no_cache_filter="deps", shm_size="128m", ulimits=["nofile=1024:2048"]),
                dict(push_image=False))
        finally:
            if saved is None:
                del os.environ["SSH_AUTH_SOCK"]
            else:
                os.environ["SSH_AUTH_SOCK"] = saved
        self.assertEqual(sent["build_contexts"], {"base": "docker-image://busybox:1"})
        self.assertEqual(sent["ssh"], ["default=/build/agent.sock", "git=/build/keys/id"])
        self.assertEqual(sent["add_hosts"], ["db:10.0.0.5"])
        self.assertTrue(sent["pull"])
        self.assertEqual(sent["no_cache_filter"], ["deps"])
        self.assertEqual(sent["shm_size"], "128m")
        self.assertEqual(sent["ulimits"], ["nofile=1024:2048"])
        # Not given: not sent, so an older daemon still takes the spec.
        for k in ("build_contexts", "ssh", "add_hosts", "pull", "no_cache_filter", "shm_size",
                  "ulimits"):
            self.assertNotIn(k, bare)


class AttestKwargs(unittest.TestCase):
    def test_attestations_and_metadata_files_reach_the_spec(self):
        [sent] = specs_sent(dict(
            provenance="mode=max", sbom=True,
            annotations="index:org.opencontainers.image.title=app",
            metadata_file="/build/out/meta.json", iidfile="/build/out/iid"))
        self.assertEqual(sent["provenance"], "mode=max")
        self.assertEqual(sent["sbom"], "true")
        self.assertEqual(sent["annotations"], ["index:org.opencontainers.image.title=app"])
        self.assertEqual(sent["metadata_file"], "/build/out/meta.json")
        self.assertEqual(sent["iidfile"], "/build/out/iid")
        self.assertNotIn("digest_file", sent)


if __name__ == "__main__":
    unittest.main()
