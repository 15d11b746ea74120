#!/usr/bin/env python3
"""Print the environment a service's Kubernetes Deployment gives its container.

usage: scripts/manifest_env.py SERVICE [--map HOST=ADDR[:PORT] ...] [--probes] [--json]
                               [--manifests DIR]

Reads the base manifests (manifests/<folder>/*.yaml; components/ and overlays/ are not applied)
and resolves, as the kubelet does: every `envFrom` source in order (a ConfigMap's data, a
Secret's base64 `data` and `stringData`, with the optional prefix; later sources win), then the
explicit `env` entries (value with $(VAR) expansion, configMapKeyRef, secretKeyRef), which win
over envFrom. Output: one KEY=VALUE line per variable, sorted, the value quoted for a POSIX
shell, so `eval "$(scripts/manifest_env.py auth)"` or `env $(...)` style use is safe.

--map rewrites host names inside values, and only where a host can stand: the host part of a
URL (`amqp://user:pw@rabbitmq:5672/%2f`, `mongodb://h1,h2/`) and the whole value of a *_HOST /
*_ADDRESS / *_ADDR variable (`auth:5000`, `host.minikube.internal`). So `--map auth=127.0.0.1`
changes AUTH_SVC_ADDRESS but not MYSQL_DB=auth nor MYSQL_USER=auth_user. ADDR may carry a port
(`--map rabbitmq=127.0.0.1:35672`), which then replaces the port too (where there was one).

--probes prints the container's probes instead, one per line: `liveness /healthz 8081`
(httpGet: path and numeric port, named ports resolved), `readiness tcp 5672`, `liveness exec ...`.

Needs PyYAML (`pip install pyyaml`). Exit status 2 on a usage or manifest error.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shlex
import sys
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("manifest_env.py: PyYAML is missing: pip install pyyaml")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MANIFESTS = REPO / "manifests"
# Folders that are not part of what `kubectl apply -k manifests/` deploys as-is.
NOT_BASE = {"components", "overlays"}
HOST_KEY = re.compile(r"_(HOST|ADDRESS|ADDR)$")
ENV_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ManifestError(Exception):
    """The manifests do not define what was asked, or define it inconsistently."""


def load_objects(manifests: Path) -> list[dict]:
    """Every Kubernetes object in the base folders (kustomization files are not objects)."""
    objects = []
    for path in sorted(manifests.rglob("*.y*ml")):
        rel = path.relative_to(manifests)
        if rel.parts[0] in NOT_BASE or path.name in ("kustomization.yaml", "kustomization.yml"):
            continue
        with path.open(encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if isinstance(doc, dict) and doc.get("kind"):
                    doc.setdefault("metadata", {})
                    doc["_file"] = str(rel)
                    objects.append(doc)
    return objects


def find(objects: list[dict], kind: str, name: str) -> dict | None:
    for obj in objects:
        if obj.get("kind") == kind and obj["metadata"].get("name") == name:
            return obj
    return None


def workload(objects: list[dict], service: str) -> dict:
    for kind in ("Deployment", "StatefulSet"):
        obj = find(objects, kind, service)
        if obj is not None:
            return obj
    names = sorted(o["metadata"]["name"] for o in objects if o["kind"] in ("Deployment", "StatefulSet"))
    raise ManifestError(f"no Deployment or StatefulSet named {service!r} (there are: {', '.join(names)})")


def container(obj: dict, service: str) -> dict:
    containers = obj["spec"]["template"]["spec"].get("containers") or []
    for c in containers:
        if c.get("name") == service:
            return c
    if not containers:
        raise ManifestError(f"{obj['_file']}: no containers")
    return containers[0]


def configmap_data(objects: list[dict], name: str) -> dict[str, str] | None:
    cm = find(objects, "ConfigMap", name)
    if cm is None:
        return None
    return {k: str(v) for k, v in (cm.get("data") or {}).items()}


def secret_data(objects: list[dict], name: str) -> dict[str, str] | None:
    secret = find(objects, "Secret", name)
    if secret is None:
        return None
    out = {}
    for k, v in (secret.get("data") or {}).items():
        try:
            out[k] = base64.b64decode(str(v), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError) as e:
            raise ManifestError(f"{secret['_file']}: data.{k} is not base64 of UTF-8 text: {e}") from e
    # The API server merges stringData over data.
    out.update({k: str(v) for k, v in (secret.get("stringData") or {}).items()})
    return out


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables are substituted, $$ is a literal $,
    an undefined reference stays as written."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return ENV_REF.sub(sub, value)


def resolve_env(objects: list[dict], service: str) -> dict[str, str]:
    obj = workload(objects, service)
    c = container(obj, service)
    env: dict[str, str] = {}
    for source in c.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref, data = source["configMapRef"], configmap_data(objects, source["configMapRef"]["name"])
            kind = "ConfigMap"
        elif "secretRef" in source:
            ref, data = source["secretRef"], secret_data(objects, source["secretRef"]["name"])
            kind = "Secret"
        else:
            raise ManifestError(f"{obj['_file']}: unsupported envFrom source {source}")
        if data is None:
            if ref.get("optional"):
                continue
            raise ManifestError(f"{obj['_file']}: envFrom refers to {kind} {ref['name']!r}, which no manifest defines")
        for k, v in data.items():
            env[prefix + k] = v
    for entry in c.get("env") or []:
        name = entry["name"]
        if "value" in entry:
            env[name] = expand(str(entry["value"]), env)
            continue
        value_from = entry.get("valueFrom") or {}
        if "configMapKeyRef" in value_from:
            ref, kind = value_from["configMapKeyRef"], "ConfigMap"
            data = configmap_data(objects, ref["name"])
        elif "secretKeyRef" in value_from:
            ref, kind = value_from["secretKeyRef"], "Secret"
            data = secret_data(objects, ref["name"])
        elif not value_from:
            env[name] = ""
            continue
        else:
            raise ManifestError(f"{obj['_file']}: env {name}: only value, configMapKeyRef and secretKeyRef are supported")
        if data is None or ref["key"] not in data:
            if ref.get("optional"):
                continue
            raise ManifestError(f"{obj['_file']}: env {name} refers to {kind} {ref['name']!r} key {ref['key']!r}, which is not defined")
        env[name] = data[ref["key"]]
    return env


def parse_maps(pairs: list[str]) -> dict[str, tuple[str, str | None]]:
    """HOST=ADDR[:PORT] -> {host: (addr, port or None)}."""
    maps = {}
    for pair in pairs:
        host, sep, addr = pair.partition("=")
        if not sep or not host or not addr:
            raise ManifestError(f"--map {pair!r}: expected HOST=ADDR or HOST=ADDR:PORT")
        if addr.startswith("["):  # [::1] or [::1]:port
            end = addr.index("]") + 1
            ip, port = addr[:end], addr[end + 1 :] if addr[end:].startswith(":") else None
        elif addr.count(":") == 1:
            ip, port = addr.split(":")
        else:
            ip, port = addr, None
        if port is not None and not port.isdigit():
            raise ManifestError(f"--map {pair!r}: port {port!r} is not a number")
        maps[host.lower()] = (ip, port)
    return maps


def map_hostport(hostport: str, maps: dict[str, tuple[str, str | None]]) -> str:
    if hostport.startswith("["):
        return hostport
    host, sep, port = hostport.partition(":")
    if host.lower() not in maps:
        return hostport
    new_host, new_port = maps[host.lower()]
    if sep and new_port is not None:
        port = new_port
    return f"{new_host}{sep}{port}" if sep else new_host


def map_hostlist(hosts: str, maps: dict[str, tuple[str, str | None]]) -> str:
    return ",".join(map_hostport(h, maps) for h in hosts.split(","))


def map_value(key: str, value: str, maps: dict[str, tuple[str, str | None]]) -> str:
    if not maps:
        return value
    if "://" in value:
        scheme, rest = value.split("://", 1)
        end = len(rest)
        for ch in "/?#":
            i = rest.find(ch)
            if i != -1:
                end = min(end, i)
        authority, tail = rest[:end], rest[end:]
        userinfo, at, hosts = authority.rpartition("@")
        return f"{scheme}://{userinfo}{at}{map_hostlist(hosts, maps)}{tail}"
    if HOST_KEY.search(key):
        return map_hostlist(value, maps)
    return value


def probe_lines(objects: list[dict], service: str) -> list[str]:
    c = container(workload(objects, service), service)
    named = {p["name"]: p["containerPort"] for p in c.get("ports") or [] if "name" in p}

    def port_of(port) -> int:
        if isinstance(port, int):
            return port
        if str(port).isdigit():
            return int(port)
        if port not in named:
            raise ManifestError(f"{service}: probe port {port!r} is not a named containerPort")
        return named[port]

    lines = []
    for kind in ("liveness", "readiness", "startup"):
        probe = c.get(f"{kind}Probe")
        if not probe:
            continue
        if "httpGet" in probe:
            lines.append(f"{kind} {probe['httpGet'].get('path', '/')} {port_of(probe['httpGet']['port'])}")
        elif "tcpSocket" in probe:
            lines.append(f"{kind} tcp {port_of(probe['tcpSocket']['port'])}")
        elif "grpc" in probe:
            lines.append(f"{kind} grpc {port_of(probe['grpc']['port'])}")
        elif "exec" in probe:
            lines.append(f"{kind} exec {shlex.join(probe['exec']['command'])}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="manifest_env.py",
        description="Print the environment (or the probes) the Kubernetes manifests give a service.",
    )
    parser.add_argument("service", help="Deployment/StatefulSet name: auth, gateway, converter, notification, rabbitmq")
    parser.add_argument("--map", action="append", default=[], metavar="HOST=ADDR[:PORT]",
                        help="replace host HOST inside URL and *_HOST/*_ADDRESS values (repeatable)")
    parser.add_argument("--probes", action="store_true", help="print the probes (`liveness /healthz 8081`) instead")
    parser.add_argument("--json", action="store_true", help="print the environment as one JSON object")
    parser.add_argument("--manifests", type=Path, default=DEFAULT_MANIFESTS, help="manifests folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        objects = load_objects(args.manifests)
        if args.probes:
            print("\n".join(probe_lines(objects, args.service)))
            return 0
        maps = parse_maps(args.map)
        env = {k: map_value(k, v, maps) for k, v in resolve_env(objects, args.service).items()}
    except ManifestError as e:
        print(f"manifest_env.py: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(dict(sorted(env.items())), indent=2))
    else:
        for key in sorted(env):
            print(f"{key}={shlex.quote(env[key])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
