#!/usr/bin/env python3
"""What scripts/push prints after a push: the remote name, the manifest
digest, the compressed bytes uploaded and the seconds taken.

    python3 tools/push_report.py docker --remote REF --push-log FILE \\
        --layers-json FILE --manifest-json FILE --started-ns N --finished-ns N
    python3 tools/push_report.py podman --remote REF --digest-file FILE \\
        --started-ns N --finished-ns N

docker:
  --push-log       what `docker push` wrote (not on a terminal): each layer
                   ends as "<id>: Pushed", "<id>: Layer already exists" or
                   "<id>: Mounted from <repository>", where <id> is the first
                   12 hex digits of the layer's uncompressed digest
  --layers-json    `docker image inspect --format '{{json .RootFS.Layers}}'`
                   of the local image: its uncompressed layer digests, in
                   manifest order
  --manifest-json  `docker manifest inspect -v REF` after the push: the
                   registry's own manifest, its digest and each layer's
                   compressed size
  Bytes pushed are the compressed sizes of the layers docker uploaded; a
  layer the registry already held, or mounted from another repository of
  the same registry, costs nothing.
podman:
  --digest-file    what `podman push --digestfile` wrote. Podman's output
                   does not tell uploaded layers from skipped ones, so the
                   bytes are "unknown".

Prints four lines, `pushed:`, `digest:`, `bytes pushed:` and `seconds:`.
Exit status: 0; 1 when the inputs contradict each other or cannot be read
(one line on stderr says how); 2 on a bad command line.
"""

import argparse
import json
import re
import sys

EXIT_BAD_INPUT = 1

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
LAYER_LINE = re.compile(r"^([0-9a-f]{12}): (.+?)\s*$")
UPLOADED = "Pushed"
ALREADY_THERE = ("Layer already exists", "Mounted from ")


class BadInput(Exception):
    """The push's outputs are missing, malformed or disagree."""


def layer_outcomes(push_log):
    """{short id: True when uploaded, False when the registry had it}, from
    the last final word docker printed for each layer."""
    outcomes = {}
    for line in push_log.splitlines():
        match = LAYER_LINE.match(line.strip("\r"))
        if not match:
            continue
        short, status = match.groups()
        if status == UPLOADED:
            outcomes[short] = True
        elif status.startswith(ALREADY_THERE):
            outcomes[short] = False
    return outcomes


def diff_ids(layers_json):
    """The image's uncompressed layer digests, from RootFS.Layers as JSON."""
    try:
        layers = json.loads(layers_json)
    except ValueError as error:
        raise BadInput(f"the image's layer list is not JSON: {error}") from None
    if not isinstance(layers, list) or not layers or not all(isinstance(d, str) and DIGEST.match(d) for d in layers):
        raise BadInput(f"the image's layer list is not a list of sha256 digests: {layers_json.strip()[:200]}")
    return layers


def registry_manifest(manifest_json):
    """(manifest digest, [compressed size of each layer]) from the JSON of
    `docker manifest inspect -v` for one image (not a list of platforms)."""
    try:
        document = json.loads(manifest_json)
    except ValueError as error:
        raise BadInput(f"the registry's manifest is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadInput("the registry holds a list of manifests (several platforms), not one image's")
    digest = (document.get("Descriptor") or {}).get("digest")
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise BadInput("the registry's manifest has no sha256 digest in its Descriptor")
    manifest = document.get("SchemaV2Manifest") or document.get("OCIManifest")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        raise BadInput("the registry's manifest has no layers")
    sizes = []
    for layer in manifest["layers"]:
        size = layer.get("size") if isinstance(layer, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadInput(f"a layer of the registry's manifest has no size: {layer!r}")
        sizes.append(size)
    return digest, sizes


def docker_bytes_pushed(push_log, layers_json, manifest_json):
    """(digest, bytes uploaded, layers uploaded, layers in all)."""
    ids = diff_ids(layers_json)
    digest, sizes = registry_manifest(manifest_json)
    if len(sizes) != len(ids):
        raise BadInput(f"the registry's manifest lists {len(sizes)} layers, the image has {len(ids)}")
    outcomes = layer_outcomes(push_log)
    uploaded = 0
    total = 0
    for diff_id, size in zip(ids, sizes):
        short = diff_id[len("sha256:") :][:12]
        if short not in outcomes:
            raise BadInput(f"the push output says nothing about layer {short}")
        if outcomes[short]:
            uploaded += 1
            total += size
    return digest, total, uploaded, len(ids)


def seconds(started_ns, finished_ns):
    """Elapsed nanoseconds as seconds with three decimals, truncated."""
    if finished_ns < started_ns:
        raise BadInput("the push finished before it started")
    millis = (finished_ns - started_ns) // 1_000_000
    return f"{millis // 1000}.{millis % 1000:03d}"


def report(remote, digest, bytes_text, note, elapsed):
    return (
        f"pushed:       {remote}\n"
        f"digest:       {digest}\n"
        f"bytes pushed: {bytes_text}  ({note})\n"
        f"seconds:      {elapsed}\n"
    )


def read(path, what):
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as error:
        raise BadInput(f"cannot read {what} {path}: {error.strerror}") from None


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="tools/push_report.py",
        description="Prints what scripts/push reports after a push (see the module's docstring).",
    )
    parser.add_argument("engine", choices=("docker", "podman"))
    parser.add_argument("--remote", required=True)
    parser.add_argument("--started-ns", type=int, required=True)
    parser.add_argument("--finished-ns", type=int, required=True)
    parser.add_argument("--push-log")
    parser.add_argument("--layers-json")
    parser.add_argument("--manifest-json")
    parser.add_argument("--digest-file")
    args = parser.parse_args(argv)
    needed = ["push_log", "layers_json", "manifest_json"] if args.engine == "docker" else ["digest_file"]
    for name in needed:
        if getattr(args, name) is None:
            parser.error(f"{args.engine} needs --{name.replace('_', '-')}")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        elapsed = seconds(args.started_ns, args.finished_ns)
        if args.engine == "docker":
            digest, total, uploaded, layers = docker_bytes_pushed(
                read(args.push_log, "the push log"),
                read(args.layers_json, "the image's layer list"),
                read(args.manifest_json, "the registry's manifest"),
            )
            text = report(
                args.remote,
                digest,
                str(total),
                f"compressed layers uploaded: {uploaded} of {layers}; the registry had the others",
                elapsed,
            )
        else:
            digest = read(args.digest_file, "podman's digest file").strip()
            if not DIGEST.match(digest):
                raise BadInput(f"podman's digest file holds no sha256 digest: {digest[:100]!r}")
            text = report(args.remote, digest, "unknown", "podman does not say which layers it uploaded", elapsed)
    except BadInput as error:
        print(f"scripts/push: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
