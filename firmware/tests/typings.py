"""Gather the MicroPython stubs installed in the venv into one folder for mypy.

micropython-esp32-stubs (the board's modules) and the micropython-stdlib-stubs it brings
(MicroPython's standard library, laid out as a typeshed) land loose in site-packages next
to everything else; mypy needs them alone in one folder, used both as the typeshed and as
the search path. Usage: ``python firmware/tests/typings.py build/mpy-typings``.
"""

import importlib.metadata
import pathlib
import shutil
import sys

DISTRIBUTIONS = ("micropython-esp32-stubs", "micropython-stdlib-stubs")


def main(dest: pathlib.Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    for name in DISTRIBUTIONS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            sys.exit(f"{name} is not installed: run scripts/bootstrap.sh (the dev extra)")
        for f in dist.files or []:
            if f.suffix == ".pyi" or f.name == "VERSIONS":
                target = dest / f
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f.locate(), target)


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
