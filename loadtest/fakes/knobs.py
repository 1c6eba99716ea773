"""Knobs of the fakes: how slow and how unreliable the outside world is.

    environment at start-up            POST /fake/knobs at run time
    FAKE_CORE_LATENCY_MS=20     --+    {"fail_ratio": 1.0}
    FAKE_CORE_FAIL_RATIO=0.2      +--> Knobs (frozen, validated) <-- KnobsUpdate (only the
    FAKE_CORE_TIMEOUT_RATIO=0.1 --+                                    fields it names)
    FAKE_CORE_BATCH_TIMEOUT_MODE=whole

Every value is checked against a bound here, in one place; a bad value stops the
fake at start-up (`KnobsError`) or answers 400 at run time. A fake says which
knobs it has (`supported`): the SMS gateway has no time-outs, so asking it for
a time-out ratio is an error rather than a silent no-op.

Also here: the few environment helpers the fakes share (host, port, path, seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, get_args

import msgspec

LATENCY_MS_MAX = 60_000
TIMEOUT_HANG_S_MAX = 600.0
PORT_MAX = 65_535

BatchTimeoutMode = Literal["item", "whole"]
BATCH_TIMEOUT_MODES: tuple[BatchTimeoutMode, ...] = get_args(BatchTimeoutMode)


class KnobsError(ValueError):
    """A knob outside its bounds, or one the fake does not have."""


class Knobs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The behaviour of a fake. Ratios are probabilities per new request."""

    latency_ms: int = 0  # added to every API call (not to /healthz, /metrics, /fake/*)
    fail_ratio: float = 0.0  # definite failure
    timeout_ratio: float = 0.0  # answer withheld for timeout_hang_s (core only)
    timeout_hang_s: float = 30.0  # how long a "time-out" hangs (core only)
    inquiry_fail_ratio: float = 0.0  # status inquiry answers 503 (core only)
    # A batch item that draws a time-out (core only): "item", that item alone is answered
    # {"status": "unavailable"} at once; "whole", the whole batch's answer is withheld.
    batch_timeout_mode: BatchTimeoutMode = "item"


class KnobsUpdate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of `POST /fake/knobs`: any subset of the knobs; absent ones keep their value."""

    latency_ms: int | None = None
    fail_ratio: float | None = None
    timeout_ratio: float | None = None
    timeout_hang_s: float | None = None
    inquiry_fail_ratio: float | None = None
    batch_timeout_mode: BatchTimeoutMode | None = None


KNOB_NAMES: tuple[str, ...] = Knobs.__struct_fields__
# How `{prefix}_{KNOB}` is read from the environment; any knob not named here is a float.
_ENV_PARSERS: dict[str, Callable[[str], int | float | str]] = {
    "latency_ms": int,
    "batch_timeout_mode": str.strip,
}


def _check_ratio(name: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise KnobsError(f"{name} must be between 0 and 1, got {value!r}")


def validate(knobs: Knobs) -> Knobs:
    """Return `knobs` unchanged if every value is within its bound; raise `KnobsError` if not."""
    if isinstance(knobs.latency_ms, bool) or not 0 <= knobs.latency_ms <= LATENCY_MS_MAX:
        raise KnobsError(f"latency_ms must be between 0 and {LATENCY_MS_MAX}")
    _check_ratio("fail_ratio", knobs.fail_ratio)
    _check_ratio("timeout_ratio", knobs.timeout_ratio)
    _check_ratio("inquiry_fail_ratio", knobs.inquiry_fail_ratio)
    if knobs.fail_ratio + knobs.timeout_ratio > 1.0:
        raise KnobsError("fail_ratio + timeout_ratio must not exceed 1")
    hang_s = knobs.timeout_hang_s
    if not (math.isfinite(hang_s) and 0.0 <= hang_s <= TIMEOUT_HANG_S_MAX):
        raise KnobsError(f"timeout_hang_s must be between 0 and {TIMEOUT_HANG_S_MAX}")
    if knobs.batch_timeout_mode not in BATCH_TIMEOUT_MODES:
        modes = " or ".join(repr(mode) for mode in BATCH_TIMEOUT_MODES)
        raise KnobsError(f"batch_timeout_mode must be {modes}, got {knobs.batch_timeout_mode!r}")
    return knobs


def apply_update(knobs: Knobs, update: KnobsUpdate, supported: frozenset[str]) -> Knobs:
    """The knobs after `update`, validated; naming a knob the fake lacks is an error."""
    changes = {
        name: getattr(update, name) for name in KNOB_NAMES if getattr(update, name) is not None
    }
    unsupported = sorted(set(changes) - supported)
    if unsupported:
        raise KnobsError(f"this fake has no knob {', '.join(unsupported)}")
    return validate(msgspec.structs.replace(knobs, **changes))


def knobs_from_env(
    prefix: str, defaults: Knobs, supported: frozenset[str], environ: Mapping[str, str]
) -> Knobs:
    """Read `{prefix}_{KNOB}` (e.g. FAKE_CORE_FAIL_RATIO) for each supported knob."""
    assert supported <= set(KNOB_NAMES), supported
    changes: dict[str, int | float | str] = {}
    for name in sorted(supported):
        variable = f"{prefix}_{name.upper()}"
        raw = environ.get(variable)
        if raw is None or raw.strip() == "":
            continue
        try:
            changes[name] = _ENV_PARSERS.get(name, float)(raw)
        except ValueError as exc:
            raise KnobsError(f"{variable}={raw!r} is not a number") from exc
    try:
        return validate(msgspec.structs.replace(defaults, **changes))
    except KnobsError as exc:
        raise KnobsError(f"{prefix}_*: {exc}") from exc


def env_text(environ: Mapping[str, str], variable: str, default: str) -> str:
    value = environ.get(variable, "").strip()
    return value or default


def env_port(environ: Mapping[str, str], variable: str, default: int) -> int:
    raw = env_text(environ, variable, str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= PORT_MAX:
        raise KnobsError(f"{variable}={raw!r} is not a TCP port")
    return int(raw)


def env_path(environ: Mapping[str, str], variable: str, default: str) -> Path:
    return Path(env_text(environ, variable, default))


def env_seed(environ: Mapping[str, str], variable: str) -> int | None:
    """An optional integer seed for the fake's random draws (reproducible runs)."""
    raw = env_text(environ, variable, "")
    if raw == "":
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise KnobsError(f"{variable}={raw!r} is not an integer") from exc
