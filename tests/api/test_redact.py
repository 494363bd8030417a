"""gitkube.api.redact (pure): Secret values (and the hash of them) masked in wire dicts and diffs,
changed keys named; free text scrubbed of known values (plain, base64, each
line); log records scrubbed whatever handler writes them."""

from __future__ import annotations

import base64
import logging

import pytest

from gitkube.api.redact import (
    MASK,
    MASK_CHANGED,
    SCRUBBED,
    Scrubber,
    changed_secret_keys,
    redact_diff_pair,
    redact_object,
    remember_secret,
    scrub_message,
    secret_values,
)

VALUE = "pl4nted-hunter2-value"
B64 = base64.b64encode(VALUE.encode()).decode()


def secret(**data: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "db",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": f'{{"x":"{B64}"}}'},
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def test_secret_values_are_masked_keys_kept() -> None:
    data = secret(password=VALUE, user="admin")
    data["metadata"]["annotations"]["gitkube.io/desired-hash"] = "0123abcd"  # type: ignore[index]
    red = redact_object(data)
    assert red["data"] == {"password": MASK, "user": MASK}
    assert red["metadata"]["annotations"]["gitkube.io/desired-hash"] == MASK
    assert VALUE not in repr(red) and B64 not in repr(red)


def test_other_kinds_are_untouched() -> None:
    cm = {"kind": "ConfigMap", "data": {"a": VALUE}}
    assert redact_object(cm) == cm


def test_diff_pair_marks_changed_keys_only() -> None:
    old, new = secret(password=VALUE, user="admin"), secret(password="other-value", user="admin")
    red_old, red_new = redact_diff_pair(old, new)
    assert red_old is not None and red_new is not None
    assert red_new["data"] == {"password": MASK_CHANGED, "user": MASK}
    assert changed_secret_keys(old, new) == ["password"]
    assert VALUE not in repr((red_old, red_new))


def test_scrubber_knows_plain_base64_and_lines() -> None:
    scrubber = Scrubber()
    whole = f"line-one-{VALUE}\nline-two-{VALUE}"
    scrubber.add(secret_values(secret(cert=whole)))
    whole_b64 = base64.b64encode(whole.encode()).decode()
    text = f"bad value line-two-{VALUE} and {whole_b64}"
    assert scrubber.scrub(text) == f"bad value {SCRUBBED} and {SCRUBBED}"


def test_scrub_message_hides_a_secret_documents_values() -> None:
    message = f"data.password: {B64!r} is not valid"
    assert B64 not in scrub_message(message, secret(password=VALUE))


def test_log_records_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    import gitkube  # noqa: F401  (installs the record factory)

    remember_secret(secret(token=VALUE))
    with caplog.at_level(logging.INFO):
        logging.getLogger("gitkube.test").info("leaking %s", VALUE)
    assert VALUE not in caplog.text
    assert SCRUBBED in caplog.text
