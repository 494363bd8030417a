"""Shared test set-up. Fixture modules in tests/fixtures/ are loaded as plugins.

Real services only: a test that needs etcd, Docker or git gets the real one.
Under CI=true a missing service fails the test; elsewhere it is skipped with
the reason (see ``tests.fixtures.require``).
"""

from __future__ import annotations

import os
import pkgutil

import tests.fixtures as _fixtures

# as root, --proxy-mode auto would program nftables in the machine's own
# network namespace: every test that wants the kernel path asks for it inside
# a namespace it creates (tests/nftables), the others stay in user space
os.environ.setdefault("GITKUBE_PROXY_MODE", "userspace")

pytest_plugins = [
    f"tests.fixtures.{m.name}"
    for m in pkgutil.iter_modules(_fixtures.__path__)
    if not m.name.startswith("_") and m.name != "require"
]
