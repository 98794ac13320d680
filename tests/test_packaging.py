"""The wheel as a user gets it: built from this checkout, installed into a fresh virtual
environment (the dependencies reused from this one, offline) and run from an empty folder, with
nothing written into the installed package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, small_cells

BUNDLED = ("firmware", "device_profiles", "search", "tools/litert-converter-requirements.txt")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel` of the checkout's files (tracked, and new ones git does not ignore)."""
    root = tmp_path_factory.mktemp("wheel")
    files = _run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (root / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / "src" / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(root / "dist"), str(root / "src")])
    (found,) = (root / "dist").glob("hwnas_deploy-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("user")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    site = Path(_run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
                .stdout.strip())
    # the dependencies: this environment's packages, after the new one's own (not its editable
    # hwnas_deploy: a .pth names a folder, whose own .pth files are not read)
    (site / "_hwnas_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
          "--force-reinstall", str(wheel)])
    home, work = root / "home", root / "work"
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "HWNAS_PROFILE_DIRS",
                                                              "HWNAS_RECIPE_DIRS", "XDG_CONFIG_HOME")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(venv), HOME=str(home),
               PYTHONUNBUFFERED="1", HWNAS_LITERT_PYTHON=str(REPO / ".venv-litert" / "bin" / "python"))
    return {"venv": venv, "site": site, "share": venv / "share" / "hwnas-deploy", "home": home, "work": work,
            "env": env}


def _hwnas(installed, *args: str) -> str:
    proc = _run([str(installed["venv"] / "bin" / "hwnas"), *args], cwd=installed["work"], env=installed["env"])
    return proc.stdout + proc.stderr


def _snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file but Python's own bytecode caches."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for folder in folders for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_the_wheel_carries_every_bundled_file(wheel):
    tracked = set(_run(["git", "ls-files", *BUNDLED], cwd=REPO).stdout.split())
    prefix = f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.data/data/share/hwnas-deploy/"
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n[len(prefix):] for n in zf.namelist() if n.startswith(prefix)}
        python = {n for n in zf.namelist() if n.startswith("hwnas_deploy/") and n.endswith(".py")}
    assert shipped == tracked  # a new board or profile not mapped in pyproject.toml fails here
    ours = {n for n in _run(["git", "ls-files", "-co", "--exclude-standard", "hwnas_deploy"], cwd=REPO).stdout.split()
            if n.endswith(".py")}
    assert ours <= python


def test_installed_from_the_wheel_it_works_from_any_folder_and_writes_nothing_into_the_package(installed):
    before = _snapshot(installed["site"] / "hwnas_deploy", installed["share"])
    assert installed["share"].is_dir()

    doctor = _hwnas(installed, "doctor", "--strict")
    assert f"at {installed['share'] / 'firmware'}" in doctor and "17 of 17 pieces found" in doctor

    # profiles: the bundled ones, a user's config folder's, and the project folder's (first wins)
    mine = installed["home"] / ".config" / "hwnas-deploy" / "device_profiles"
    mine.mkdir(parents=True)
    local = (installed["share"] / "device_profiles" / "local-cpu.yaml").read_text()
    (mine / "my-cpu.yaml").write_text(local.replace("name: local-cpu", "name: my-cpu"))
    (installed["work"] / "device_profiles").mkdir()
    (installed["work"] / "device_profiles" / "qemu-m7.yaml").write_text(
        (installed["share"] / "device_profiles" / "qemu-m7.yaml").read_text())
    rows = {line.split()[0]: line.split() for line in _hwnas(installed, "devices").splitlines()[2:]}
    assert rows["local-cpu"][3] == "bundled" and str(installed["share"]) in rows["local-cpu"][4]
    assert rows["my-cpu"][3:5] == ["user", "config"] and rows["qemu-m7"][3] == "./device_profiles"
    assert len(rows) == 9

    recipes = _hwnas(installed, "search", "--list")
    assert "mcu-mbnet-qemu-m7" in recipes and f"bundled           {installed['share']}" in recipes

    elf = Path(_hwnas(installed, "firmware", "build", "--board", "qemu-mps2-an500").strip().splitlines()[-1])
    assert elf.name == "firmware.elf" and elf.is_file()
    assert installed["venv"] not in elf.parents and "firmware" in elf.parts  # the user cache, by version

    configs = installed["work"] / "two.jsonl"
    configs.write_text("".join(json.dumps(c) + "\n" for c in small_cells(2)))
    for device, runtime, extra in (("local-cpu", "onnxruntime", ["--sentinel-every", "0"]),
                                   ("qemu-m7", "firmware", [])):
        out = _hwnas(installed, "profile", "--device", device, "--space", "nb201", "--configs", str(configs),
                     "--runtime", runtime, "--db", "lab.sqlite", "--quiet", *extra)
        assert "measured 2, already stored 0, failed 0 of 2" in out, out

    assert _snapshot(installed["site"] / "hwnas_deploy", installed["share"]) == before
