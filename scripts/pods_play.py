#!/usr/bin/env python3
"""What scripts/pods-up.sh hands to `podman kube play`, and what it checks afterwards.

  split    --name NAME --rendered FILE --out DIR
           From the rendered overlay keep our four Deployments and their ConfigMaps
           (play.yaml); write each of their Secrets as a podman secret file (secret-<name>.json:
           the `data` map, base64 values, which is what podman 4.3's kube play reads for
           envFrom/secretKeyRef). Refuses a Secret value that is public knowledge (the
           development values this repository once shipped, RabbitMQ's guest), so no known
           secret reaches a container.
  probes   --play FILE      one line per httpGet probe: SERVICE KIND PATH PORT
  inspect  --name NAME --play FILE
           Each running container as its manifest says: the user and group of the pod's
           securityContext, a read-only root filesystem, no added capabilities, and nothing
           written to the root filesystem (`podman diff` is empty: writes went to volumes only).

Needs PyYAML.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
from pathlib import Path

import yaml

SERVICES = ("auth", "gateway", "converter", "notification")
# Values anyone can read: this repository's former placeholders and dev-seed.sql's development password.
KNOWN_SECRETS = {
    "guest",
    "Auth123",
    "dev-placeholder-jwt-secret-change-me-not-for-production",
    "dev-placeholder-root-password",
    "placeholder-gmail-app-password", "dev-placeholder-download-link-secret-not-for-production",
}


def load(path: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if isinstance(d, dict)]


def app_of(obj: dict) -> str | None:
    return (obj.get("metadata", {}).get("labels") or {}).get("app")


def secret_values(obj: dict) -> dict[str, str]:
    vals = {k: str(v) for k, v in (obj.get("stringData") or {}).items()}
    for k, v in (obj.get("data") or {}).items():
        vals[k] = base64.b64decode(v).decode()
    return vals


def split(args: argparse.Namespace) -> int:
    keep, dropped = [], []
    out = Path(args.out)
    for obj in load(args.rendered):
        kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
        if app_of(obj) not in SERVICES or kind not in ("Deployment", "ConfigMap", "Secret"):
            dropped.append(f"{kind}/{name}")
            continue
        if kind == "Secret":
            vals = secret_values(obj)
            known = sorted(k for k, v in vals.items() if v in KNOWN_SECRETS or ":guest@" in v)
            if known:
                print(f"pods_play: Secret {name} keeps the repository's placeholder for {', '.join(known)}", file=sys.stderr)
                return 1
            data = {k: base64.b64encode(v.encode()).decode() for k, v in vals.items()}
            target = out / f"secret-{name}.json"
            target.touch(mode=0o600)
            target.write_text(json.dumps(data))
            continue
        if kind == "Deployment":
            for c in obj["spec"]["template"]["spec"]["containers"]:
                # podman 4.3 refuses port mappings with hostNetwork ("PortMappings can only be used
                # with Bridge or slirp4netns networking") and a hostNetwork container listens on
                # the host anyway: drop `ports`, after giving the probes the numbers they named.
                named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    get = (c.get(probe) or {}).get("httpGet")
                    if get and isinstance(get.get("port"), str):
                        get["port"] = named[get["port"]]
                c.pop("ports", None)
        keep.append(obj)
    (out / "play.yaml").write_text(yaml.safe_dump_all(keep, sort_keys=False))
    print(f"pods_play: {len(keep)} objects to play; not run by podman: {', '.join(dropped)}", file=sys.stderr)
    return 0


def containers(play: str):
    for obj in load(play):
        if obj.get("kind") != "Deployment":
            continue
        spec = obj["spec"]["template"]["spec"]
        for c in spec["containers"]:
            yield obj, spec, c


def probes(args: argparse.Namespace) -> int:
    for obj, _spec, c in containers(args.play):
        named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = (c.get(kind) or {}).get("httpGet")
            if not get:
                continue
            port = get["port"]
            port = named.get(port, port) if isinstance(port, str) else port
            print(app_of(obj), kind.removesuffix("Probe"), get.get("path", "/"), port)
    return 0


def podman_json(*cmd: str):
    return json.loads(subprocess.run(["podman", *cmd], check=True, capture_output=True, text=True).stdout or "null")


def inspect(args: argparse.Namespace) -> int:
    problems = []
    for obj, spec, c in containers(args.play):
        name = f"{obj['metadata']['name']}-pod-0-{c['name']}"
        info = podman_json("inspect", name)[0]
        psc, csc = spec.get("securityContext") or {}, c.get("securityContext") or {}
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        gid = csc.get("runAsGroup", psc.get("runAsGroup"))
        want_user = f"{uid}:{gid}" if gid is not None else str(uid)
        user = info["Config"].get("User", "")
        if uid is not None and user != want_user:
            problems.append(f"{name}: runs as {user!r}, the manifest says {want_user}")
        if csc.get("readOnlyRootFilesystem") and not info["HostConfig"].get("ReadonlyRootfs"):
            problems.append(f"{name}: root filesystem is writable, the manifest says read-only")
        added = info["HostConfig"].get("CapAdd") or []
        if "ALL" in (csc.get("capabilities") or {}).get("drop", []) and info.get("EffectiveCaps"):
            problems.append(f"{name}: has capabilities {info['EffectiveCaps']} (+{added}), the manifest drops ALL")
        changes = podman_json("diff", "--format", "json", name) or {}
        touched = [p for kind in ("changed", "added", "deleted") for p in (changes.get(kind) or [])]
        mounts = [m["Destination"] for m in info.get("Mounts", [])]
        outside = [p for p in touched if not any(p == m or p.startswith(m.rstrip("/") + "/") for m in mounts)]
        # runc creates the mount points and /etc/{hosts,resolv.conf,hostname} of every container.
        outside = [p for p in outside if p not in ("/etc", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/run", "/run/.containerenv", "/dev", "/proc", "/sys")]
        if outside:
            problems.append(f"{name}: wrote outside its volumes: {outside}")
        print(f"{name}: user {user}, read-only root {info['HostConfig'].get('ReadonlyRootfs')}, volumes {mounts}")
    for p in problems:
        print(f"pods_play: {p}", file=sys.stderr)
    return 1 if problems else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split")
    s.add_argument("--name", required=True)
    s.add_argument("--rendered", required=True)
    s.add_argument("--out", required=True)
    p = sub.add_parser("probes")
    p.add_argument("--play", required=True)
    i = sub.add_parser("inspect")
    i.add_argument("--name", required=True)
    i.add_argument("--play", required=True)
    args = ap.parse_args()
    return {"split": split, "probes": probes, "inspect": inspect}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
