"""A regular install (`pip install .`, a wheel, `pip install git+URL`) carries the Hydra configs (issue 22).

`conf/` stays at the repository's top level; pyproject.toml ships it inside the package as `zoo/conf`, and
`zoo.cli.CONF_DIR` finds it there. Here a wheel is built from this checkout, installed (no dependencies: they
are this environment's) into a folder of its own, and every console script runs from an unrelated working
folder with that folder first on the path, so that neither the checkout nor the editable install is used.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_package_list_names_every_package_under_zoo():
    """The packages are listed (so that `zoo.conf` can map to the top-level conf/): a new subpackage that is
    not listed would be missing from every regular install."""
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "zoo").rglob("__init__.py")}
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert listed - {"zoo.conf"} == on_disk
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"zoo.conf": "conf"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """This checkout built as a wheel and installed, without dependencies, into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("zoo-*.whl")
    target = tmp / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                           "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr[-3000:]
    return target


@pytest.mark.slow  # builds and installs a wheel
def test_the_wheel_carries_every_config_file_unchanged(installed):
    configs = sorted(p.relative_to(ROOT / "conf") for p in (ROOT / "conf").rglob("*.yaml"))
    assert len(configs) > 40
    for rel in configs:
        shipped = installed / "zoo" / "conf" / rel
        assert shipped.is_file(), f"{rel} is missing from the wheel"
        assert shipped.read_bytes() == (ROOT / "conf" / rel).read_bytes(), rel
    (wheel,) = (installed.parent / "dist").glob("zoo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.startswith("conf/") for n in names), "conf/ must not become a top-level package"


# Runs in one interpreter (torch is imported once): every console script's `--help`, then a real zoo-sample.
RUN_ALL = textwrap.dedent('''
    import importlib, sys
    from importlib.metadata import entry_points
    import zoo, zoo.cli
    print("ZOO", zoo.__file__)
    print("CONF", zoo.cli.CONF_DIR)
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name.startswith("zoo-")}
    for name in sorted(scripts):
        module, _, func = scripts[name].partition(":")
        sys.argv = [name, "--help"]
        try:
            getattr(importlib.import_module(module), func)()
        except SystemExit as e:
            assert e.code in (0, None), (name, e.code)
        print("HELP-OK", name)
''')


@pytest.mark.slow
def test_every_command_runs_from_a_regular_install(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, "-c", RUN_ALL], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert f"ZOO {installed / 'zoo' / '__init__.py'}" in out.stdout  # the installed copy, not the checkout
    assert f"CONF {installed / 'zoo' / 'conf'}" in out.stdout
    helped = {line.split()[1] for line in out.stdout.splitlines() if line.startswith("HELP-OK")}
    assert helped == set(PYPROJECT["project"]["scripts"]), helped
    assert "Primary config directory not found" not in out.stdout + out.stderr

    sample = subprocess.run([sys.executable, "-m", "zoo.sample", "checkpoint=gpt-pydoc", "prompt=The with",
                             "max_new_tokens=12", "seed=1"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert sample.returncode == 0, sample.stderr[-3000:]
    assert "The with" in sample.stdout
    assert not (tmp_path / "conf").exists()
