"""Small helpers for the validation tests: load text, show errors as the CLI prints them."""

from __future__ import annotations

import textwrap

from gitkube.api.validation import IgnoredField, Manifest, ManifestError, load_manifests

VALID_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: nginx
"""


def load(
    text: str | bytes, path: str = "m.yaml", **kwargs: int
) -> tuple[list[Manifest], list[ManifestError], list[IgnoredField]]:
    data = textwrap.dedent(text).encode() if isinstance(text, str) else text
    return load_manifests(data, path, **kwargs)


def errors(text: str | bytes, path: str = "m.yaml", **kwargs: int) -> list[str]:
    """Every error as ``FILE:LINE: KIND/NAME: FIELD: message``."""
    return [str(e) for e in load(text, path, **kwargs)[1]]


def one_error(text: str | bytes, path: str = "m.yaml", **kwargs: int) -> ManifestError:
    found = load(text, path, **kwargs)[1]
    assert len(found) == 1, [str(e) for e in found]
    return found[0]
