"""Unit tests of tools/layer_gzip.py (run by scripts/test):
python3 -m unittest discover -s tools -p 'test_*.py'"""

import contextlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
import unittest

import layer_gzip
from layer_gzip import BadArchive, archive_layer_gzip9_bytes, layer_paths


def gzip9_length(data):
    return len(subprocess.run(["gzip", "-9", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout)


def add_file(archive, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


class Archives(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        # Compressible, yet not trivially: gzip's level matters for it.
        self.layers = [
            b"".join(f"line {i} of layer one\n".encode() for i in range(20000)),
            os.urandom(3000) + b"\0" * 5000,
        ]

    def tearDown(self):
        self.directory.cleanup()

    def archive(self, manifest, members):
        path = os.path.join(self.directory.name, "image.tar")
        with tarfile.open(path, "w") as archive:
            if manifest is not None:
                add_file(archive, "manifest.json", json.dumps(manifest).encode())
            for name, data in members.items():
                add_file(archive, name, data)
        return path

    def test_docker_archive_layers_are_summed_at_gzip_9(self):
        path = self.archive(
            [{"Config": "c.json", "RepoTags": ["a:b"], "Layers": ["aa/layer.tar", "bb/layer.tar"]}],
            {"aa/layer.tar": self.layers[0], "bb/layer.tar": self.layers[1], "c.json": b"{}"},
        )
        expected = gzip9_length(self.layers[0]) + gzip9_length(self.layers[1])
        self.assertEqual(archive_layer_gzip9_bytes(path), expected)
        # Not what the default level makes, so the level is really 9.
        default = len(subprocess.run(["gzip", "-1", "-c"], input=self.layers[0], stdout=subprocess.PIPE).stdout)
        self.assertNotEqual(gzip9_length(self.layers[0]), default)

    def test_oci_layout_blob_paths(self):
        path = self.archive(
            [{"Config": "blobs/sha256/cc", "Layers": ["blobs/sha256/aa"]}],
            {"blobs/sha256/aa": self.layers[1], "blobs/sha256/cc": b"{}"},
        )
        self.assertEqual(archive_layer_gzip9_bytes(path), gzip9_length(self.layers[1]))

    def test_a_missing_layer_file_is_named(self):
        path = self.archive([{"Layers": ["aa/layer.tar"]}], {})
        with self.assertRaisesRegex(BadArchive, "no aa/layer.tar"):
            archive_layer_gzip9_bytes(path)

    def test_no_manifest(self):
        path = self.archive(None, {"aa/layer.tar": b"x"})
        with self.assertRaisesRegex(BadArchive, "no manifest.json"):
            archive_layer_gzip9_bytes(path)

    def test_not_a_tar(self):
        path = os.path.join(self.directory.name, "junk")
        with open(path, "wb") as file:
            file.write(b"not a tar at all" * 100)
        with self.assertRaisesRegex(BadArchive, "cannot read"):
            archive_layer_gzip9_bytes(path)


class Manifest(unittest.TestCase):
    def test_layers_in_order(self):
        self.assertEqual(layer_paths('[{"Layers": ["a/layer.tar", "b/layer.tar"]}]'), ["a/layer.tar", "b/layer.tar"])

    def test_refusals(self):
        for text, message in [
            ("{", "not JSON"),
            ("[]", "exactly one image"),
            ('[{"Layers": []}, {"Layers": []}]', "exactly one image"),
            ('[{"RepoTags": []}]', "no list of layer files"),
            ('[{"Layers": [1]}]', "no list of layer files"),
            ('[{"Layers": []}]', "no layer"),
        ]:
            with self.assertRaisesRegex(BadArchive, message, msg=text):
                layer_paths(text)


class Main(unittest.TestCase):
    def test_usage_and_bad_archive_exit_codes(self):
        with contextlib.redirect_stderr(io.StringIO()) as err:
            self.assertEqual(layer_gzip.main([]), layer_gzip.EXIT_USAGE)
            self.assertEqual(layer_gzip.main(["/nonexistent/image.tar"]), layer_gzip.EXIT_BAD_ARCHIVE)
        self.assertIn("usage:", err.getvalue())
        self.assertIn("tools/layer_gzip.py: cannot read /nonexistent/image.tar", err.getvalue())
        with contextlib.redirect_stdout(io.StringIO()) as out:
            self.assertEqual(layer_gzip.main(["--help"]), 0)
        self.assertIn("IMAGE_TAR", out.getvalue())


if __name__ == "__main__":
    unittest.main()
