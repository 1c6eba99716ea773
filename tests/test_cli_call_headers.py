"""`python -m engine call -H`: extra headers (the signer's, for a contract signature),
never one of the signature's own."""

from __future__ import annotations

import pytest

from engine.cli.call import UsageError, extra_headers


def test_extra_headers_are_parsed() -> None:
    lines = ["X-Signer-IP: 203.0.113.7", "X-Signer-Device-Id:ios:17:ab"]
    assert extra_headers(lines) == {
        "X-Signer-IP": "203.0.113.7",
        "X-Signer-Device-Id": "ios:17:ab",
    }


@pytest.mark.parametrize("line", ["no colon", "Bad Name: x", "X-Signature: forged", ": x"])
def test_bad_or_signing_headers_are_refused(line: str) -> None:
    with pytest.raises(UsageError):
        extra_headers([line])
