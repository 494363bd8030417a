#!/usr/bin/env bash
# Install gitkube into .venv and run it on manifests-example/ with the embedded
# defaults: the SQLite store in ./.gitkube/, the process runtime (nothing but
# Python needed), the HTTP server on 127.0.0.1:9080. The git source is this
# checkout itself (its current branch); Ctrl-C stops gitkube, pods keep running
# until you `gitkube run` again or stop them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/gitkube ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e .
fi

repo=.
branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null || true)
if [ -z "$branch" ] || [ "$branch" = HEAD ]; then
    # Not a git checkout (e.g. an unpacked archive): make a repository of the example.
    repo=.gitkube/example-repo
    if [ ! -d "$repo/.git" ]; then
        mkdir -p "$repo"
        cp -r manifests-example "$repo/"
        git -C "$repo" init -q -b main
        git -C "$repo" add -A
        git -C "$repo" -c user.name=gitkube -c user.email=gitkube@localhost commit -q -m "example"
    fi
    branch=main
fi

# The userspace proxy serves each Service port on 127.0.0.1 (the web Service on
# :8080) as root or not; the nftables mode (`auto` picks it as root when `nft`
# works) serves Services on their cluster IPs only (`gitkube get svc`).
echo "gitkube: syncing manifests-example/ from $repo ($branch); try: curl http://127.0.0.1:8080/"
exec .venv/bin/gitkube run --repo "$repo" --branch "$branch" --path manifests-example \
    --runtime process --proxy-mode userspace "$@"
