"""SOPS-encrypted manifests (the format Flux reads), decrypted at sync time.

A manifest file with a top-level ``sops:`` block is a SOPS file: its values
are ``ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]``, each encrypted with
AES-256-GCM under a 32-byte data key (32-byte IV; the additional data is the
value's path of map keys, each followed by ``:``). The data key is in the
``sops`` block once per recipient: an age recipient (an armored age file) or
an OpenPGP key (an armored PGP message). The ``mac`` is the SHA-512 of every
value in document order (upper-case hex), encrypted under the data key with
``lastmodified`` as additional data: it protects the unencrypted values too
(a renamed Secret breaks it).

Which values are encrypted: those under a key matching ``encrypted_regex``
when set, else every value except under a key ending in
``unencrypted_suffix`` (or only under ``encrypted_suffix``, or matching
``unencrypted_regex``).

``SopsDecryptor.decrypt`` turns the file's bytes into the plaintext manifest,
*line for line* (each ``ENC[…]`` replaced by its value, the ``sops`` block
by blank lines), so validation errors still name the file's own lines. A
file that cannot be decrypted (no matching key, an altered value or MAC) is
a ``SopsError`` with the line; the sync makes it a validation error, and
nothing of the revision applies. Plaintext lives in memory, the store and
the pods; never in a message: errors name paths, never values.

``encrypt_manifest`` writes the format (``gitkube secret encrypt``); the
tests check both directions against the ``sops`` program.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from gitkube.api.redact import SCRUBBER
from gitkube.api.validation import ManifestError
from gitkube.errors import ConfigError
from gitkube.sync.source import OversizedBlob

SOPS_VERSION = "3.11.0"
DEFAULT_SECRET_REGEX = "^(data|stringData)$"
_ENC = re.compile(r"ENC\[AES256_GCM,data:([^,\]]*),iv:([^,\]]*),tag:([^,\]]*),type:([a-z]+)\]")
_SOPS_KEY = re.compile(rb"(?m)^sops:")
_AGE_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"
_AGE_END = "-----END AGE ENCRYPTED FILE-----"
_TIMEOUT = 60.0


class SopsError(Exception):
    """A SOPS file that cannot be decrypted; ``line`` 0 is the whole file."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def is_sops(data: bytes) -> bool:
    """Does this manifest file carry a SOPS block?"""
    return b"ENC[AES256_GCM," in data and _SOPS_KEY.search(data) is not None


# ---------------------------------------------------------------- YAML as SOPS reads it


class _Loader(yaml.SafeLoader):
    """YAML 1.2 core schema scalars (as sops' Go parser types them): booleans are
    true/false only, no timestamps, no sexagesimal numbers."""


_Loader.yaml_implicit_resolvers = {}
for _tag, _regex, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    (
        "tag:yaml.org,2002:int",
        r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$",
        "-+0123456789",
    ),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
):
    _Loader.add_implicit_resolver(_tag, re.compile(_regex), list(_first))


def _construct_bool(loader: _Loader, node: yaml.ScalarNode) -> bool:
    return str(loader.construct_scalar(node)).lower() == "true"


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 0) if text.startswith(("0x", "0X")) else int(text)


_Loader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _load(text: str) -> Any:
    for token in yaml.scan(text, Loader=_Loader):
        if isinstance(token, yaml.AliasToken | yaml.AnchorToken):
            raise SopsError("anchors and aliases are not allowed in a SOPS file")
    try:
        documents = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SopsError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}", mark.line + 1 if mark else 0
        ) from None
    documents = [d for d in documents if d is not None]
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise SopsError("a SOPS file must hold exactly one YAML mapping")
    return documents[0]


def go_bytes(value: Any) -> bytes:
    """The bytes sops hashes and encrypts for a value (Go's formatting; a
    boolean is ``True``/``False``, as sops writes it)."""
    if isinstance(value, bool):
        return b"True" if value else b"False"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return _go_float(value).encode()
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _go_float(value: float) -> str:
    # strconv.FormatFloat(v, 'f', -1, 64): shortest, never an exponent
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer():
        return str(int(value))
    from decimal import Decimal

    return format(Decimal(repr(value)), "f")


# ---------------------------------------------------------------- which values


@dataclass
class _Rules:
    unencrypted_suffix: str = ""
    encrypted_suffix: str = ""
    unencrypted_regex: str = ""
    encrypted_regex: str = ""

    @classmethod
    def of(cls, meta: dict[str, Any]) -> _Rules:
        rules = cls(
            str(meta.get("unencrypted_suffix") or ""),
            str(meta.get("encrypted_suffix") or ""),
            str(meta.get("unencrypted_regex") or ""),
            str(meta.get("encrypted_regex") or ""),
        )
        if not any(vars(rules).values()):
            rules.unencrypted_suffix = "_unencrypted"
        return rules

    def encrypted(self, path: list[str]) -> bool:
        if self.unencrypted_suffix and any(p.endswith(self.unencrypted_suffix) for p in path):
            return False
        if self.encrypted_suffix:
            return any(p.endswith(self.encrypted_suffix) for p in path)
        if self.unencrypted_regex and any(re.search(self.unencrypted_regex, p) for p in path):
            return False
        if self.encrypted_regex:
            return any(re.search(self.encrypted_regex, p) for p in path)
        return True


def _leaves(node: Any, path: list[str]) -> Iterator[tuple[list[str], Any, Any, Any]]:
    """(path, value, container, key) for every leaf, in document order."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, dict | list):
                yield from _leaves(value, [*path, str(key)])
            else:
                yield [*path, str(key)], value, node, key
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, dict | list):
                yield from _leaves(value, path)
            else:
                yield path, value, node, i


# ---------------------------------------------------------------- AES-256-GCM


def _aad(path: list[str]) -> bytes:
    return ("".join(p + ":" for p in path)).encode()


def _b64(data: str) -> bytes:
    return base64.b64decode(data, validate=True)


def encrypt_value(value: Any, key: bytes, aad: bytes) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if isinstance(value, bool):
        kind = "bool"
    elif isinstance(value, int):
        kind = "int"
    elif isinstance(value, float):
        kind = "float"
    else:
        kind = "str"
    plain = go_bytes(value)
    iv = secrets.token_bytes(32)
    sealed = AESGCM(key).encrypt(iv, plain, aad)
    data, tag = sealed[:-16], sealed[-16:]
    enc = base64.b64encode
    return (
        f"ENC[AES256_GCM,data:{enc(data).decode()},iv:{enc(iv).decode()},"
        f"tag:{enc(tag).decode()},type:{kind}]"
    )


def decrypt_value(token: str, key: bytes, aad: bytes) -> tuple[bytes, str]:
    """(plaintext bytes, type) of one ``ENC[…]``; ``ValueError`` when it does not
    authenticate."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    match = _ENC.fullmatch(token.strip())
    if not match:
        raise ValueError("not an ENC[AES256_GCM,…] value")
    try:
        data, iv, tag = _b64(match[1]), _b64(match[2]), _b64(match[3])
        if not iv:
            raise ValueError("empty iv")
        plain = AESGCM(key).decrypt(iv, data + tag, aad)
    except (binascii.Error, InvalidTag, ValueError) as exc:
        raise ValueError("it does not authenticate (altered, or another key)") from exc
    return plain, match[4]


def _typed(plain: bytes, kind: str) -> Any:
    text = plain.decode()
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        return text.lower() == "true"
    return text


def _render(plain: bytes, kind: str) -> str:
    """The plaintext as a one-line YAML scalar of its type."""
    text = plain.decode()
    if kind == "bool":
        return text.lower()
    if kind in ("int", "float"):
        return text
    return json.dumps(text, ensure_ascii=False)


# ---------------------------------------------------------------- data keys


def _armor_age(data: bytes) -> str:
    body = base64.b64encode(data).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([_AGE_BEGIN, *lines, _AGE_END]) + "\n"


def _dearmor_age(text: str) -> bytes:
    inner = text.strip()
    if not (inner.startswith(_AGE_BEGIN) and inner.endswith(_AGE_END)):
        raise ValueError("not an armored age file")
    body = inner[len(_AGE_BEGIN) : -len(_AGE_END)]
    return base64.b64decode("".join(body.split()), validate=True)


def _gpg(home: Path, *args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["gpg", "--batch", "--no-tty", "--quiet", "--yes", *args],
        input=data,
        env={**os.environ, "GNUPGHOME": str(home)},
        capture_output=True,
        timeout=_TIMEOUT,
        check=False,
    )


@dataclass
class SopsDecryptor:
    """Decrypts with the identities of ``--decryption-key-file``: age secret
    keys (``AGE-SECRET-KEY-1…`` lines) and/or armored OpenPGP private keys."""

    key_file: str
    work_dir: Path
    _age: list[Any] = field(default_factory=list)
    _pgp: bytes = b""

    def __post_init__(self) -> None:
        try:
            text = Path(self.key_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"decryption-key-file: cannot read {self.key_file}: {exc}") from exc
        ages = re.findall(r"AGE-SECRET-KEY-1[0-9A-Z]+", text)
        if ages:
            from pyrage import x25519

            try:
                self._age = [x25519.Identity.from_str(a) for a in ages]
            except Exception as exc:  # pyrage raises its own IdentityError
                raise ConfigError(
                    f"decryption-key-file: {self.key_file} holds an age key that is not valid"
                ) from exc
        if "-----BEGIN PGP PRIVATE KEY BLOCK-----" in text:
            self._pgp = text.encode()
        if not self._age and not self._pgp:
            raise ConfigError(
                f"decryption-key-file: {self.key_file} holds no age secret key "
                "(AGE-SECRET-KEY-1…) and no armored OpenPGP private key"
            )

    def _data_key(self, meta: dict[str, Any]) -> bytes | None:
        for stanza in meta.get("age") or []:
            if not self._age or not isinstance(stanza, dict):
                continue
            try:
                import pyrage

                key = bytes(pyrage.decrypt(_dearmor_age(str(stanza.get("enc", ""))), self._age))
            except Exception:  # not for our identities, or damaged
                continue
            if len(key) == 32:
                return key
        stanzas = [s for s in meta.get("pgp") or [] if isinstance(s, dict)]
        if self._pgp and stanzas:
            return self._pgp_data_key(stanzas)
        return None

    def _pgp_data_key(self, stanzas: list[dict[str, Any]]) -> bytes | None:
        # gpg needs its agent for secret keys: a short-lived home (a short path:
        # the agent's socket must fit), the agent ended and the key gone after
        with tempfile.TemporaryDirectory(prefix="gitkube-gpg-", dir="/tmp") as tmp:
            home = Path(tmp)
            try:
                if _gpg(home, "--import", data=self._pgp).returncode != 0:
                    return None
                for stanza in stanzas:
                    proc = _gpg(home, "--decrypt", data=str(stanza.get("enc", "")).encode())
                    if proc.returncode == 0 and len(proc.stdout) == 32:
                        return proc.stdout
                return None
            finally:
                subprocess.run(
                    ["gpgconf", "--kill", "all"],
                    env={**os.environ, "GNUPGHOME": str(home)},
                    capture_output=True,
                    timeout=_TIMEOUT,
                    check=False,
                )

    def decrypt(self, data: bytes) -> bytes:
        """The plaintext of a SOPS file, line for line; ``SopsError`` with the line."""
        return decrypt_file(data, self)


def _line_of(text: str, needle: str) -> int:
    at = text.find(needle)
    return text.count("\n", 0, at) + 1 if at >= 0 else 0


def decrypt_file(data: bytes, decryptor: SopsDecryptor | None) -> bytes:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise SopsError("a SOPS file must be UTF-8") from None
    tree = _load(text)
    sops_line = _line_of(text, "\nsops:") + 1 if not text.startswith("sops:") else 1
    meta = tree.pop("sops", None)
    if not isinstance(meta, dict):
        raise SopsError("the sops block is not a mapping", sops_line)
    if decryptor is None:
        raise SopsError(
            "the file is encrypted with SOPS; give gitkube the key with --decryption-key-file",
            sops_line,
        )
    key = decryptor._data_key(meta)
    if key is None:
        recipients = [
            str(s.get("recipient", "")) for s in meta.get("age") or [] if isinstance(s, dict)
        ]
        recipients += [
            f"pgp:{s.get('fp', '')}" for s in meta.get("pgp") or [] if isinstance(s, dict)
        ]
        raise SopsError(
            "cannot decrypt the data key with the decryption key file: the file is for "
            + (", ".join(r for r in recipients if r) or "no recipient gitkube reads (age, pgp)"),
            sops_line,
        )
    rules = _Rules.of(meta)
    digest = hashlib.sha512()
    replacements: dict[str, str] = {}
    for path, value, _container, _key in _leaves(tree, []):
        if value is None:
            continue  # sops neither encrypts nor hashes nulls
        where = ".".join(path)
        if rules.encrypted(path) and isinstance(value, str) and value.startswith("ENC["):
            try:
                plain, kind = decrypt_value(value, key, _aad(path))
            except ValueError as exc:
                raise SopsError(
                    f"{where}: the value cannot be decrypted: {exc}", _line_of(text, value)
                ) from None
            digest.update(go_bytes(_typed(plain, kind)) if kind != "str" else plain)
            replacements[value] = _render(plain, kind)
        elif rules.encrypted(path):
            raise SopsError(
                f"{where}: the value should be encrypted but is not (added after encryption?)",
                _line_of(text, f"{path[-1]}:") if path else 0,
            )
        else:
            digest.update(go_bytes(value))
    mac_token = str(meta.get("mac") or "")
    modified = meta.get("lastmodified")
    stamp = modified if isinstance(modified, str) else str(modified or "")
    mac_line = _line_of(text, "mac: ENC[") or sops_line
    try:
        stored, _ = decrypt_value(mac_token, key, stamp.encode())
    except ValueError:
        raise SopsError(
            "the MAC cannot be decrypted: the sops block was altered", mac_line
        ) from None
    if stored.decode(errors="replace").upper() != digest.hexdigest().upper():
        raise SopsError(
            "the MAC does not match the values: the file was altered after it was encrypted",
            mac_line,
        )
    # whatever kind the file declares, what was encrypted is secret: no log line
    # or message of this process shows it (gitkube.api.redact)
    secrets_found: set[str] = set()
    for rendered in replacements.values():
        if rendered.startswith('"'):
            plain_text = json.loads(rendered)
            secrets_found.add(plain_text)
            secrets_found.update(line.strip() for line in plain_text.splitlines())
    SCRUBBER.add(secrets_found)
    return _plaintext_text(text, replacements).encode()


def _plaintext_text(text: str, replacements: dict[str, str]) -> str:
    """``text`` with each ENC[…] replaced and the top-level sops block blanked,
    keeping every other line where it was."""
    lines = text.split("\n")
    out = []
    in_sops = False
    for line in lines:
        if line.startswith("sops:"):
            in_sops = True
            out.append("")
            continue
        if in_sops:
            if line and not line[0].isspace() and not line.startswith("#"):
                in_sops = False
            else:
                out.append("")
                continue
        if "ENC[" in line:
            line = _ENC.sub(lambda m: replacements.get(m.group(0), m.group(0)), line)
        out.append(line)
    return "\n".join(out)


def open_manifest(
    data: bytes, path: str, decryptor: SopsDecryptor | None
) -> tuple[bytes, ManifestError | None]:
    """A manifest file's bytes as the sync validates them: a SOPS file
    decrypted, any other as it is; or the located error that stops the revision
    (also for a blob too large to be read)."""
    if isinstance(data, OversizedBlob):
        message = f"file is {data.size} bytes, over the {data.limit}-byte limit (--max-size)"
        return b"", ManifestError(path, 0, 0, "", "", "", message)
    if not is_sops(data):
        return data, None
    try:
        return decrypt_file(data, decryptor), None
    except SopsError as exc:
        return b"", ManifestError(path, exc.line, 0, "", "", "", f"SOPS: {exc.message}")


def placeholder_file(data: bytes) -> bytes:
    """A SOPS file with each ``ENC[…]`` replaced by an empty value of its type
    and the sops block blanked, line for line: what ``gitkube validate`` checks
    without the key (the structure, not the values)."""
    empty = {"int": "0", "float": "0.0", "bool": "false"}
    text = data.decode(errors="replace")
    found = {m.group(0): empty.get(m.group(4), '""') for m in _ENC.finditer(text)}
    return _plaintext_text(text, found).encode()


def validation_opener(
    decryptor: SopsDecryptor | None,
) -> Callable[[bytes, str], tuple[bytes, ManifestError | None]]:
    """How `gitkube validate` opens files: SOPS files decrypted with the key
    when one is given, else checked with empty values."""

    def opener(data: bytes, path: str) -> tuple[bytes, ManifestError | None]:
        if decryptor is None and is_sops(data):
            return placeholder_file(data), None
        return open_manifest(data, path, decryptor)

    return opener


# ---------------------------------------------------------------- encryption


def encrypt_manifest(
    data: bytes,
    *,
    age_recipients: list[str],
    pgp_fingerprints: list[str],
    encrypted_regex: str = DEFAULT_SECRET_REGEX,
    gnupg_home: str = "",
    now: datetime | None = None,
) -> bytes:
    """A SOPS file of a plaintext YAML manifest, for the given recipients."""
    if not age_recipients and not pgp_fingerprints:
        raise ConfigError("give at least one recipient: --age AGE1… or --pgp FINGERPRINT")
    try:
        tree = _load(data.decode())
    except (SopsError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the manifest: {exc}") from None
    if "sops" in tree:
        raise ConfigError("the manifest is already encrypted (it has a sops block)")
    key = secrets.token_bytes(32)
    meta: dict[str, Any] = {}
    if age_recipients:
        import pyrage
        from pyrage import x25519

        stanzas = []
        for recipient in age_recipients:
            try:
                r = x25519.Recipient.from_str(recipient)
            except Exception as exc:
                raise ConfigError(f"--age {recipient!r} is not an age recipient (age1…)") from exc
            stanzas.append({"recipient": recipient, "enc": _armor_age(pyrage.encrypt(key, [r]))})
        meta["age"] = stanzas
    if pgp_fingerprints:
        home = (
            Path(gnupg_home)
            if gnupg_home
            else Path(os.environ.get("GNUPGHOME", Path.home() / ".gnupg"))
        )
        stanzas = []
        for fp in pgp_fingerprints:
            proc = _gpg(home, "--trust-model", "always", "--armor", "--encrypt", "-r", fp, data=key)
            if proc.returncode != 0:
                raise ConfigError(
                    f"--pgp {fp}: gpg cannot encrypt to it: "
                    + " ".join(proc.stderr.decode(errors="replace").split())[:200]
                )
            stanzas.append(
                {
                    "created_at": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "enc": proc.stdout.decode(),
                    "fp": fp,
                }
            )
        meta["pgp"] = stanzas
    rules = _Rules(encrypted_regex=encrypted_regex)
    digest = hashlib.sha512()
    for path, value, container, k in list(_leaves(tree, [])):
        if value is None:
            continue
        digest.update(go_bytes(value))
        if rules.encrypted(path):
            container[k] = encrypt_value(value, key, _aad(path))
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta["lastmodified"] = stamp
    meta["mac"] = encrypt_value(digest.hexdigest().upper(), key, stamp.encode())
    meta["encrypted_regex"] = encrypted_regex
    meta["version"] = SOPS_VERSION
    tree["sops"] = meta
    return yaml.dump(
        tree, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1 << 16
    ).encode()


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the armored keys) as literal blocks, as sops writes them."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)
