"""Compilation targets of a pairs dataset: instruction sets, and the cross compilers that build for them.

``--targets x86-64,aarch64,i386`` names instruction sets instead of compilers: each is built by the host's
``gcc`` when it is the host's own, else by Debian's cross compiler for it (``aarch64-linux-gnu-gcc`` from the
package ``gcc-aarch64-linux-gnu``, ...). The ``architecture`` column of a pairs row is read from the object
file's ELF header, as for the corpus (``x86-64``, ``x86`` for i386, ``aarch64``), never from the target's name.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass
from typing import Optional, Sequence

from undertale.settings.pairs import architecture_column


@dataclass(frozen=True)
class Target:
    """One instruction set: its name on the command line, its ``architecture`` column, its GNU triplet."""

    name: str
    architecture: str
    triplet: str
    machines: tuple[str, ...]  # what ``platform.machine()`` says on a host of this instruction set
    debian: str  # Debian's name of the architecture (``arm64``): a library's headers for it are ``libfoo-dev:arm64``

    @property
    def cross_compiler(self) -> str:
        return f"{self.triplet}-gcc"

    @property
    def package(self) -> str:
        """The Debian package of the cross compiler (``gcc-aarch64-linux-gnu``)."""
        return f"gcc-{self.triplet.replace('_', '-')}"


TARGETS = {
    target.name: target for target in (
        Target("x86-64", "x86-64", "x86_64-linux-gnu", ("x86_64", "amd64"), "amd64"),
        Target("aarch64", "aarch64", "aarch64-linux-gnu", ("aarch64", "arm64"), "arm64"),
        Target("i386", "x86", "i686-linux-gnu", ("i386", "i486", "i586", "i686"), "i386"),
    )
}
# the cross compilers Debian packages, by command: their package is named when one is missing
CROSS_PACKAGES = {target.cross_compiler: target.package for target in TARGETS.values()}


def target(name: str) -> Target:
    """The target called ``name`` (or another name of its instruction set: ``amd64``, ``arm64``, ``x86``).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    try:
        column = architecture_column(name)
    except ValueError:
        raise ValueError(f"unknown target {name!r}; targets are {', '.join(TARGETS)}") from None
    return next(chosen for chosen in TARGETS.values() if chosen.architecture == column)


def compiler_for(chosen: Target, machine: Optional[str] = None) -> str:
    """The command that builds for ``chosen`` here: ``gcc`` for the host's own instruction set, else its cross gcc."""
    machine = (machine or platform.machine()).lower()
    return "gcc" if machine in chosen.machines else chosen.cross_compiler


def target_compilers(names: str | Sequence[str], machine: Optional[str] = None) -> dict[str, str]:
    """Compiler command per target (in the order given), checked on PATH.

    Raises:
        ValueError: for no target, an unknown or repeated one, or a compiler not on PATH, naming the
            Debian package that provides it.
    """
    names = [name.strip() for name in (names.split(",") if isinstance(names, str) else names) if name.strip()]
    if not names:
        raise ValueError("no targets given; e.g. --targets x86-64,aarch64,i386")
    compilers: dict[str, str] = {}
    for name in names:
        chosen = target(name)
        if chosen.name in compilers:
            raise ValueError(f"target {chosen.name} given twice")
        command = compiler_for(chosen, machine)
        if shutil.which(command) is None:
            raise ValueError(f"target {chosen.name} needs {command}, which is not on PATH: {missing_hint(command)}")
        compilers[chosen.name] = command
    return compilers


def missing_hint(command: str) -> str:
    """How to get a compiler that is not on PATH: the Debian package of a known cross compiler."""
    package = CROSS_PACKAGES.get(command)
    if package is not None:
        return f"install Debian's {package} (apt install {package})"
    return "install it or put it on PATH"


def header_package(package: str, compiler: str) -> str:
    """How to install a library's headers for ``compiler``: ``libgmp-dev``, or for a cross compiler
    ``libgmp-dev:arm64`` after ``dpkg --add-architecture arm64`` (Debian's multiarch)."""
    for chosen in TARGETS.values():
        if compiler == chosen.cross_compiler:
            return (f"{package}:{chosen.debian} (dpkg --add-architecture {chosen.debian}; apt update; "
                    f"apt install {package}:{chosen.debian})")
    return package
