"""Which installed packages differ from the lock file: ``python tools/lock_drift.py [requirements.lock]``.

Prints one line per package whose installed version is not the locked one (or that is installed but not
locked, or locked for this platform but not installed), or that the environment matches the lock.
``make test-latest`` runs it in an environment of the newest releases pyproject.toml allows, so that it
names what moved since ``make lock``; the test suite uses :func:`drift` to check that ``make install``
put exactly the lock into ``.venv``. Exit status 0 either way (a difference is news, not a failure);
2 when the lock file cannot be read.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

#: the project itself (installed from the checkout, not from the lock) and what every venv is made with
NOT_LOCKED = {"snnconv", "pip", "setuptools", "wheel"}


def read_lock(path: str | Path) -> dict[str, str]:
    """The lock's pins that apply to this interpreter and platform: {canonical name: version}.

    The lock is ``uv pip compile --universal`` output: ``name==version ; marker \\`` lines, each followed by
    its ``--hash`` lines and ``# via`` comments; a marker is evaluated here, so a Linux-only package is
    left out on macOS."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip().removesuffix("\\").strip()
        if not line or line.startswith(("#", "--")) or raw[:1].isspace():
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as error:
            raise ValueError(f"{path}:{number}: not a pinned requirement: {line!r} ({error})") from None
        (specifier,) = requirement.specifier  # exactly one ==version per pin
        if specifier.operator != "==":
            raise ValueError(f"{path}:{number}: {line!r} is not pinned with ==")
        if requirement.marker is None or requirement.marker.evaluate():
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def installed() -> dict[str, str]:
    """The distributions installed in this environment's site-packages: {canonical name: version}.

    Only site-packages: other entries of ``sys.path`` are not what pip installed (Ray, once imported,
    adds its own copies of psutil and colorama to it)."""
    folders = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return {canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions(path=folders)}


def drift(pins: dict[str, str], present: dict[str, str]) -> list[tuple[str, str, str]]:
    """(name, locked version or "-", installed version or "-") for every package that differs, by name."""
    names = sorted((set(pins) | set(present)) - (NOT_LOCKED - set(pins)))
    return [(name, pins.get(name, "-"), present.get(name, "-")) for name in names
            if pins.get(name) != present.get(name)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", nargs="?", default="requirements.lock", help="the lock file (requirements.lock)")
    args = parser.parse_args(argv)
    try:
        pins = read_lock(args.lock)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = drift(pins, installed())
    if not rows:
        print(f"this environment matches {args.lock} ({len(pins)} packages)")
        return 0
    print(f"{len(rows)} package(s) differ from {args.lock}:")
    width = max(len(name) for name, _, _ in rows)
    print(f"  {'package':<{width}}  {'locked':<14} installed")
    for name, locked, present in rows:
        print(f"  {name:<{width}}  {locked:<14} {present}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
