"""pyproject.toml installs every package under the pingan namespace (docs/architecture.md, "Installed names").

setuptools' package-dir maps the top-level folders api/, schemas/, streams/ and producers/ to pingan.api, ...;
with a mapping the packages are listed by hand, so a new subfolder left out of the list would be missing from
the wheel while every test (run from the checkout) still passed. This test is what notices.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def folders_with_code() -> set[str]:
    found = set()
    for package, folder in SETUPTOOLS["package-dir"].items():
        root = REPO / folder
        for path in root.rglob("*.py"):
            found.add(".".join([*package.split("."), *path.parent.relative_to(root).parts]))
    return found


def test_every_folder_with_code_is_a_listed_package() -> None:
    assert sorted(folders_with_code()) == sorted(SETUPTOOLS["packages"])


def test_everything_installs_under_pingan() -> None:
    assert {name.split(".")[0] for name in SETUPTOOLS["packages"]} == {"pingan"}
    assert SETUPTOOLS["package-dir"] == {
        "pingan": "pingan",
        "pingan.api": "api",
        "pingan.schemas": "schemas",
        "pingan.streams": "streams",
        "pingan.producers": "producers",
    }
    # Each mapped folder is a regular package (an __init__.py), as in the installed wheel.
    assert all((REPO / folder / "__init__.py").is_file() for folder in SETUPTOOLS["package-dir"].values())
