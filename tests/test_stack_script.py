"""`ops/stack.sh` from where a newcomer's checkout may be: a directory only its owner
can enter (`mktemp -d`, root's home), on ports of its own so the suite's stack is not
touched. Run as root, the servers run as `postgres`, which cannot enter such a
directory: the script must still start them (their files elsewhere, linked from
`.run/pg`) or stop at once saying what to do."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="only root runs the servers as another user"
)

# Free ports, so that another checkout's suite running beside this one is not touched.
PG_PORT = str(free_port())
REDIS_PORT = str(free_port())


@pytest.fixture
def private_checkout() -> Iterator[Path]:
    """A copy of ops/ under a fresh 0700 directory, as `git clone` into `mktemp -d` gives."""
    top = Path(tempfile.mkdtemp(prefix="stack-test-"))
    assert top.stat().st_mode & 0o777 == 0o700
    checkout = top / "checkout"
    shutil.copytree(ROOT / "ops", checkout / "ops", ignore=shutil.ignore_patterns("grafana"))
    try:
        yield checkout
    finally:
        _stack(checkout, "down", check=False)
        _stack(checkout, "purge", check=False)
        shutil.rmtree(top, ignore_errors=True)


def _stack(
    checkout: Path, *args: str, check: bool = True, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith("STACK_")}
        | {"STACK_PG_PORTS": PG_PORT, "STACK_REDIS_PORT": REDIS_PORT}
        | (extra or {})
    )
    result = subprocess.run(
        [str(checkout / "ops" / "stack.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def _psql(sql: str) -> str:
    return subprocess.run(
        ["psql", "-X", "-qtA", "-h", "127.0.0.1", "-p", PG_PORT, "-U", "postgres", "-d", "control",
         "-c", sql],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip


def test_stack_starts_from_a_directory_postgres_cannot_enter(private_checkout: Path) -> None:
    up = _stack(private_checkout, "up")
    assert "cannot reach" in up.stderr  # it says where the servers' files went
    link = private_checkout / ".run" / "pg"
    assert link.is_symlink()
    outside = link.resolve()
    assert not outside.is_relative_to(private_checkout.parent)
    assert (outside / "pg0" / "PG_VERSION").is_file()
    assert _psql("SELECT current_database()") == "control"
    assert _stack(private_checkout, "status").returncode == 0
    # Down and up again: the same data directory, found through the link.
    _stack(private_checkout, "down")
    _stack(private_checkout, "up")
    assert _psql("SELECT 1") == "1"
    _stack(private_checkout, "down")
    _stack(private_checkout, "purge")
    assert not outside.exists()
    assert not link.exists()


def test_unreachable_pg_root_stops_at_once_with_what_to_do(private_checkout: Path) -> None:
    unreachable = private_checkout.parent / "pg-here"
    result = _stack(private_checkout, "up", check=False, extra={"STACK_PG_ROOT": str(unreachable)})
    assert result.returncode != 0
    assert "STACK_PG_ROOT" in result.stderr
    assert "Traceback" not in result.stderr
