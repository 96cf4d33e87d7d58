"""Unit tests of tools/push_report.py (run by scripts/test):
python3 -m unittest discover -s tools -p 'test_*.py'"""

import contextlib
import io
import json
import os
import tempfile
import unittest

import push_report
from push_report import BadInput, docker_bytes_pushed, layer_outcomes, registry_manifest, seconds

A = "sha256:" + "04d3fcf602c7" + "a" * 52
B = "sha256:" + "5f70bf18a086" + "b" * 52
MANIFEST_DIGEST = "sha256:" + "afa1ba911a38" + "c" * 52


def manifest(sizes, key="SchemaV2Manifest", digest=MANIFEST_DIGEST):
    """What `docker manifest inspect -v` prints for one image."""
    return json.dumps(
        {
            "Ref": "127.0.0.1:5000/x/s2s:latest",
            "Descriptor": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": digest, "size": 527},
            "Raw": "e30=",
            key: {
                "schemaVersion": 2,
                "config": {"size": 3440, "digest": "sha256:" + "d" * 64},
                "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": s, "digest": "sha256:" + "e" * 64} for s in sizes],
            },
        },
        indent="\t",
    )


def push_log(*layers):
    """docker push's output off a terminal, each layer's lines in turn."""
    lines = ["The push refers to repository [127.0.0.1:5000/x/s2s]"]
    lines += [f"{short}: Preparing" for short, _ in layers]
    lines += [f"{short}: Waiting" for short, _ in layers]
    lines += [f"{short}: {final}" for short, final in layers]
    lines.append(f"latest: digest: {MANIFEST_DIGEST} size: 527")
    return "\n".join(lines) + "\n"


class LayerOutcomes(unittest.TestCase):
    def test_final_words(self):
        log = push_log(("04d3fcf602c7", "Pushed"), ("5f70bf18a086", "Layer already exists"), ("0123456789ab", "Mounted from x/other"))
        self.assertEqual(layer_outcomes(log), {"04d3fcf602c7": True, "5f70bf18a086": False, "0123456789ab": False})

    def test_intermediate_words_and_other_lines_say_nothing(self):
        log = "04d3fcf602c7: Preparing\n04d3fcf602c7: Retrying in 5 seconds\nlatest: digest: x size: 1\n\n"
        self.assertEqual(layer_outcomes(log), {})

    def test_carriage_returns_are_ignored(self):
        self.assertEqual(layer_outcomes("04d3fcf602c7: Pushed\r\n"), {"04d3fcf602c7": True})


class RegistryManifest(unittest.TestCase):
    def test_docker_and_oci_manifests(self):
        self.assertEqual(registry_manifest(manifest([154036])), (MANIFEST_DIGEST, [154036]))
        self.assertEqual(registry_manifest(manifest([1, 2], key="OCIManifest")), (MANIFEST_DIGEST, [1, 2]))

    def test_refusals(self):
        for text, message in [
            ("{", "not JSON"),
            ("[]", "list of manifests"),
            (manifest([1], digest="sha256:short"), "no sha256 digest"),
            (manifest([1], key="Other"), "no layers"),
            (manifest(["12"]), "has no size"),
            (manifest([True]), "has no size"),
        ]:
            with self.assertRaisesRegex(BadInput, message, msg=text):
                registry_manifest(text)


class BytesPushed(unittest.TestCase):
    def test_only_uploaded_layers_count(self):
        log = push_log(("04d3fcf602c7", "Pushed"), ("5f70bf18a086", "Layer already exists"))
        result = docker_bytes_pushed(log, json.dumps([A, B]), manifest([1000, 200]))
        self.assertEqual(result, (MANIFEST_DIGEST, 1000, 1, 2))

    def test_sizes_follow_manifest_order(self):
        log = push_log(("04d3fcf602c7", "Layer already exists"), ("5f70bf18a086", "Pushed"))
        self.assertEqual(docker_bytes_pushed(log, json.dumps([A, B]), manifest([1000, 200]))[1], 200)

    def test_a_second_push_moves_nothing(self):
        log = push_log(("04d3fcf602c7", "Layer already exists"))
        self.assertEqual(docker_bytes_pushed(log, json.dumps([A]), manifest([154036])), (MANIFEST_DIGEST, 0, 0, 1))

    def test_a_layer_the_output_does_not_mention(self):
        with self.assertRaisesRegex(BadInput, "says nothing about layer 5f70bf18a086"):
            docker_bytes_pushed(push_log(("04d3fcf602c7", "Pushed")), json.dumps([A, B]), manifest([1, 2]))

    def test_layer_counts_must_agree(self):
        with self.assertRaisesRegex(BadInput, "lists 1 layers, the image has 2"):
            docker_bytes_pushed(push_log(("04d3fcf602c7", "Pushed")), json.dumps([A, B]), manifest([1]))

    def test_bad_layer_list(self):
        for text in ("[]", '["md5:x"]', "{}", "nope"):
            with self.assertRaises(BadInput, msg=text):
                docker_bytes_pushed("", text, manifest([1]))


class Seconds(unittest.TestCase):
    def test_three_decimals_truncated(self):
        self.assertEqual(seconds(0, 1_234_999_999), "1.234")
        self.assertEqual(seconds(10, 10 + 45_000_000), "0.045")
        self.assertEqual(seconds(5, 5), "0.000")
        with self.assertRaises(BadInput):
            seconds(2, 1)


class Main(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.directory.cleanup()

    def file(self, name, text):
        path = os.path.join(self.directory.name, name)
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
        return path

    def run_main(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = push_report.main(list(argv))
            except SystemExit as exit:
                status = exit.code
        return status, out.getvalue(), err.getvalue()

    def test_docker_report(self):
        status, out, err = self.run_main(
            "docker",
            "--remote", "127.0.0.1:5000/x/s2s:latest",
            "--push-log", self.file("log", push_log(("04d3fcf602c7", "Pushed"))),
            "--layers-json", self.file("layers", json.dumps([A]) + "\n"),
            "--manifest-json", self.file("manifest", manifest([154036])),
            "--started-ns", "1000000000",
            "--finished-ns", "2500000000",
        )
        self.assertEqual(status, 0, err)
        self.assertEqual(
            out,
            "pushed:       127.0.0.1:5000/x/s2s:latest\n"
            f"digest:       {MANIFEST_DIGEST}\n"
            "bytes pushed: 154036  (compressed layers uploaded: 1 of 1; the registry had the others)\n"
            "seconds:      1.500\n",
        )

    def test_podman_report(self):
        status, out, _ = self.run_main(
            "podman", "--remote", "r", "--digest-file", self.file("digest", MANIFEST_DIGEST),
            "--started-ns", "0", "--finished-ns", "1",
        )
        self.assertEqual(status, 0)
        self.assertIn("bytes pushed: unknown  (podman does not say which layers it uploaded)\n", out)
        self.assertIn(f"digest:       {MANIFEST_DIGEST}\n", out)

    def test_bad_input_is_one_line_and_exit_1(self):
        status, out, err = self.run_main(
            "podman", "--remote", "r", "--digest-file", self.file("digest", "garbage"),
            "--started-ns", "0", "--finished-ns", "1",
        )
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err, "scripts/push: podman's digest file holds no sha256 digest: 'garbage'\n")
        status, _, err = self.run_main(
            "podman", "--remote", "r", "--digest-file", "/nonexistent", "--started-ns", "0", "--finished-ns", "1"
        )
        self.assertEqual(status, 1)
        self.assertIn("cannot read podman's digest file /nonexistent", err)

    def test_docker_needs_its_three_files(self):
        status, _, err = self.run_main("docker", "--remote", "r", "--started-ns", "0", "--finished-ns", "1")
        self.assertEqual(status, 2)
        self.assertIn("docker needs --push-log", err)


if __name__ == "__main__":
    unittest.main()
