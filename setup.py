"""Map the repository's top-level component folders onto the ``mimamori.*`` namespace.

Each folder in COMPONENTS is installed as ``mimamori.<folder>``; ``mimamori/`` holds only
the root package (version and the ``mimamori`` command). firmware/ is not installed: it
runs on the sensor boards under MicroPython.
"""

from pathlib import Path

from setuptools import setup

COMPONENTS = ("protocol", "detect", "edge", "cloud", "dashboards", "simulators")
ROOT = Path(__file__).parent


def _packages() -> tuple[list[str], dict[str, str]]:
    packages = ["mimamori"]
    package_dir = {"mimamori": "mimamori"}
    for component in COMPONENTS:
        base = ROOT / component
        package_dir[f"mimamori.{component}"] = component
        for init in sorted(base.rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT).parts
            packages.append(".".join(("mimamori", *rel)))
    return packages, package_dir


PACKAGES, PACKAGE_DIR = _packages()

setup(
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={
        pkg: ["*.toml", "*.sql", "*.json", "*.service", "*.conf", "*.yaml", "*.txt", "*.csv"]
        for pkg in PACKAGES
    },
    include_package_data=True,
)
