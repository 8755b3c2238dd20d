"""Download the wheels a set of requirements needs on the lent GPU machine, minus what its image has.

    python3 scripts/wheel_closure.py --out DIR [--have scripts/gpu_image_packages.txt] \
        [--skip NAME ...] REQUIREMENT [REQUIREMENT ...]

pip cannot resolve these sets here (torch's CUDA pins have no wheels for this platform
tag set), so this walks the dependency graph itself: each requirement not in the image
list is downloaded with ``pip download --no-deps`` for CPython 3.12 / manylinux x86-64,
(a pure-Python project that ships only an sdist is built into a wheel here), its ``Requires-Dist`` lines are evaluated for that target (extras only where asked for),
and the walk goes on. The first version chosen for a name wins (a wheel cached in ``--out`` by an
earlier walk is replaced when it does not satisfy that first requirement); a later, conflicting
specifier is printed as a warning, not resolved. ``--skip`` names distributions that are
never carried (big optional ones, or ones vLLM imports lazily).

Prints one line per wheel carried and the total size; exit 1 if a download fails.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

TARGET_ENV = default_environment() | {
    "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
    "platform_machine": "x86_64", "platform_system": "Linux", "sys_platform": "linux", "os_name": "posix",
    "platform_python_implementation": "CPython",
}
PLATFORMS = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64", "manylinux_2_35_x86_64",
             "manylinux1_x86_64", "linux_x86_64"]


def read_have(path: Path) -> set[str]:
    return {canonicalize_name(line.strip()) for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def wheel_for(name: str, out: Path) -> Path | None:
    stem = re.sub(r"[-_.]+", "_", name).lower()
    for w in out.glob("*.whl"):
        if re.sub(r"[-_.]+", "_", w.name.split("-")[0]).lower() == stem:
            return w
    return None


def download(req: Requirement, out: Path) -> Path:
    spec = f"{req.name}{req.specifier}"
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
           "--abi", "abi3", "--abi", "none"]
    for p in PLATFORMS + ["any"]:
        cmd += ["--platform", p]
    got = subprocess.run(cmd + ["-d", str(out), spec], stderr=subprocess.DEVNULL)
    if got.returncode != 0:  # an sdist only (e.g. sqlitedict): build it here, if it is pure Python
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                        "-w", str(out), spec], check=True, stderr=subprocess.DEVNULL)
        built = wheel_for(req.name, out)
        if built is None or not built.name.endswith("-none-any.whl"):
            raise RuntimeError(f"{spec} has no wheel for the GPU machine and is not pure Python")
    found = wheel_for(req.name, out)
    if found is None:
        raise RuntimeError(f"pip downloaded no wheel for {spec}")
    return found


def requires(wheel: Path, extras: set[str]) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(z.read(meta).decode())
    out = []
    for line in msg.get_all("Requires-Dist") or []:
        r = Requirement(line)
        if r.marker is None:
            out.append(r)
            continue
        for extra in extras or {""}:
            if r.marker.evaluate(TARGET_ENV | {"extra": extra}):
                out.append(r)
                break
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("requirements", nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--have", type=Path, default=Path(__file__).with_name("gpu_image_packages.txt"))
    ap.add_argument("--skip", nargs="*", default=[])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    have = read_have(args.have)
    skip = {canonicalize_name(s) for s in args.skip}
    chosen: dict[str, Requirement] = {}
    queue = [Requirement(r) for r in args.requirements]
    while queue:
        req = queue.pop(0)
        key = canonicalize_name(req.name)
        if key in have or key in skip:
            continue
        if key in chosen:
            if req.extras - chosen[key].extras:  # new extras: walk their requirements too
                chosen[key].extras |= req.extras
                queue += requires(wheel_for(req.name, args.out), req.extras)
            continue
        chosen[key] = req
        cached = wheel_for(req.name, args.out)
        if cached is not None and req.specifier and not req.specifier.contains(cached.name.split("-")[1], prereleases=True):
            cached.unlink()  # left by an earlier walk whose first requirement was another version
            cached = None
        try:
            wheel = cached or download(req, args.out)
        except (subprocess.CalledProcessError, RuntimeError) as e:
            print(f"wheel_closure: cannot download {req}: {e}", file=sys.stderr)
            return 1
        version = wheel.name.split("-")[1]
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            print(f"wheel_closure: warning: {wheel.name} does not satisfy {req}", file=sys.stderr)
        queue += requires(wheel, set(req.extras))
    total = 0
    for key in sorted(chosen):
        w = wheel_for(key, args.out)
        total += w.stat().st_size
        print(f"{w.stat().st_size / 2**20:7.2f} MiB  {w.name}")
    print(f"{total / 2**20:7.2f} MiB  in {len(chosen)} wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
