#!/usr/bin/env python3
"""The Docker build context holds what docker/Dockerfile's builder needs.

usage: scripts/check_docker_context.py

`COPY . .` must see Cargo.toml, Cargo.lock (`cargo build --locked`) and every workspace member
(none excluded by .dockerignore), and every `-p NAME` the Dockerfile builds must be a package of
the workspace; the converter's minimal ffmpeg must have a demuxer for each of the converter's
INPUT_FORMATS. Exit status 1 otherwise. Used by scripts/check-deploy.sh.
"""

import fnmatch
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def excluded(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(p, pat) for p in prefixes for pat in patterns)


def main() -> int:
    patterns = [
        line.strip().strip("/").removeprefix("**/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    members = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))["workspace"]["members"]
    needed = ["Cargo.toml", "Cargo.lock", *members]
    problems = [f"{p} is excluded by .dockerignore" for p in needed if excluded(p, patterns)]
    problems += [f"{p} does not exist" for p in ("Cargo.lock",) if not (ROOT / p).exists()]
    packages = {
        tomllib.loads((ROOT / m / "Cargo.toml").read_text(encoding="utf-8"))["package"]["name"] for m in members
    }
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8")
    built = {p for line in re.findall(r"cargo build[^\n]*", dockerfile) for p in re.findall(r"-p (\S+)", line)}
    problems += [f"docker/Dockerfile builds -p {b}, which is no workspace package" for b in sorted(built - packages)]
    # The converter image's minimal ffmpeg must have a demuxer for every input format the
    # converter allows (INPUT_FORMATS); ffmpeg names the mpegps demuxer "mpeg".
    ffmpeg_rs = (ROOT / "services" / "converter" / "src" / "ffmpeg.rs").read_text(encoding="utf-8")
    allowed = re.search(r'INPUT_FORMATS: &str = "([^"]*)"', ffmpeg_rs)
    demuxers = {d.strip() for m in re.findall(r"--enable-demuxer=(\S+)", dockerfile) for d in m.split(",")}
    if allowed:
        wanted = {"mpegps" if f == "mpeg" else f for f in allowed.group(1).split(",")}
        problems += [f"docker/Dockerfile's ffmpeg has no {f} demuxer, which INPUT_FORMATS allows" for f in sorted(wanted - demuxers)]
    for p in problems:
        print(p)
    print(f"check_docker_context: {len(needed)} paths kept, {len(built)} packages built, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
