#!/usr/bin/env python3
"""The bytes of an image's layers compressed with `gzip -9`, summed.

    python3 tools/layer_gzip.py IMAGE_TAR

IMAGE_TAR is what `docker save` or `podman save` wrote (docker-archive or OCI
layout): its manifest.json names the layer files, each an uncompressed tar.
Prints one whole number. scripts/build reports it, and bench/bench.py
measures the images with it.

GNU gzip itself compresses, not Python's zlib: the two deflate
implementations make streams of different lengths, and the goals are stated
in gzip -9 bytes.

Exit status: 0, 1 when the archive cannot be read or holds no layer, 64 on a
bad command line.
"""

import json
import shutil
import subprocess
import sys
import tarfile
import threading

EXIT_BAD_ARCHIVE = 1
EXIT_USAGE = 64
CHUNK = 1 << 16


class BadArchive(Exception):
    """The image archive is not what `docker save` writes."""


def layer_paths(manifest_text):
    """The layer files of manifest.json's one image, in order."""
    try:
        manifest = json.loads(manifest_text)
    except ValueError as error:
        raise BadArchive(f"manifest.json is not JSON: {error}") from None
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        raise BadArchive("manifest.json does not describe exactly one image")
    layers = manifest[0].get("Layers")
    if not isinstance(layers, list) or not all(isinstance(p, str) and p for p in layers):
        raise BadArchive("manifest.json has no list of layer files")
    if not layers:
        raise BadArchive("the image has no layer")
    return layers


def gzip9_bytes(stream):
    """The length of `gzip -9` of everything the binary stream holds."""
    gzip = subprocess.Popen(["gzip", "-9", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    # gzip writes while it reads: feed it from a thread, count here.
    def feed():
        try:
            shutil.copyfileobj(stream, gzip.stdin, CHUNK)
        except BrokenPipeError:
            pass
        finally:
            gzip.stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    total = 0
    while True:
        chunk = gzip.stdout.read(CHUNK)
        if not chunk:
            break
        total += len(chunk)
    feeder.join()
    if gzip.wait() != 0:
        raise BadArchive(f"gzip -9 failed with exit status {gzip.returncode}")
    return total


def _member(archive, name):
    for candidate in (name, "./" + name):
        try:
            return archive.getmember(candidate)
        except KeyError:
            continue
    raise BadArchive(f"the archive has no {name}")


def archive_layer_gzip9_bytes(path):
    """gzip -9 bytes of each layer of the image archive at path, summed."""
    try:
        with tarfile.open(path, "r:") as archive:
            with archive.extractfile(_member(archive, "manifest.json")) as manifest:
                layers = layer_paths(manifest.read().decode("utf-8"))
            total = 0
            for layer in layers:
                stream = archive.extractfile(_member(archive, layer))
                if stream is None:
                    raise BadArchive(f"{layer} is not a file in the archive")
                with stream:
                    total += gzip9_bytes(stream)
            return total
    except (OSError, tarfile.TarError, UnicodeDecodeError) as error:
        raise BadArchive(f"cannot read {path}: {error}") from None


def main(args):
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    if len(args) != 1:
        print("usage: tools/layer_gzip.py IMAGE_TAR (try --help)", file=sys.stderr)
        return EXIT_USAGE
    try:
        print(archive_layer_gzip9_bytes(args[0]))
    except BadArchive as error:
        print(f"tools/layer_gzip.py: {error}", file=sys.stderr)
        return EXIT_BAD_ARCHIVE
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
