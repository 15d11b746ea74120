#!/usr/bin/env python3
"""Cross-checks of the Kubernetes manifests that no schema validator or linter makes.

usage: scripts/check_manifests.py RENDERED.yaml [RENDERED.yaml ...]

Each RENDERED.yaml is the output of `kubectl kustomize` of one kustomization (the first one the
base, manifests/). Checked, per rendered set:
  - every reference resolves: envFrom / env ConfigMaps and Secrets (Secrets may be left to
    scripts/minikube-up.sh only where components/script-secrets dropped them), volumes'
    ConfigMaps, probe and Service target ports, Ingress backends, HPA / ScaledObject targets,
    KEDA TriggerAuthentication Secrets, PodDisruptionBudget and Service selectors;
  - every object (but the Namespace) is in namespace mp3converter;
  - pod hardening: runAsNonRoot, a numeric runAsUser (10001 for our images, as docker/Dockerfile's
    USER), no privilege escalation, capabilities dropped, RuntimeDefault seccomp, liveness and
    readiness probes, CPU and memory requests and limits, no service account token;
  - SHUTDOWN_GRACE_SECONDS + preStop sleep < terminationGracePeriodSeconds;
  - no Ingress path routes /metrics; every service's pod has prometheus.io scrape annotations
    naming one of its ports; PodMonitors select pods and name their ports;
  - our images are mp3converter/<target>:dev and <target> is a stage of docker/Dockerfile;
  - the first (base) set: every variable docs/configuration.md lists for a service is set by its
    manifests, and nothing undocumented is;
  - every later set contains every object of the base, except what a component removes on
    purpose (the CPU HPA under KEDA, placeholder Secrets under script-secrets);
  - deployment secrets (issue 13): no rendered set carries a Secret object or a value anyone
    can read (guest, Auth123, the former placeholders); every Secret a workload names has a
    template with empty values in manifests/secret-templates/ (the deploy script makes it);
    RabbitMQ takes its users from definitions (no RABBITMQ_DEFAULT_*); with the in-cluster
    databases both require a password and no ConfigMap holds a MongoDB URI;
  - the cluster's inside: every Ingress has TLS for each of its hosts, none reaches the RabbitMQ
    management port; each of our four Deployments has an Egress NetworkPolicy, and the
    converter's allows DNS, RabbitMQ and MongoDB only.
Prints one line per problem and a summary; exit status 1 if there is any problem.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manifest_env  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "mp3converter"
OUR_UID = 10001
SERVICES = ("auth", "gateway", "converter", "notification")
WORKLOADS = ("Deployment", "StatefulSet")
# Objects a component removes on purpose: (kind, name) or (kind, None) for "any of that kind".
MAY_BE_REMOVED = {("HorizontalPodAutoscaler", "converter"), ("Secret", None)}
# Secret values anyone can read: RabbitMQ's default account, dev-seed.sql's MySQL password and
# the placeholders this repository used to deploy.
KNOWN_SECRETS = ("guest", "Auth123", "dev-placeholder-jwt-secret-change-me-not-for-production",
                 "dev-placeholder-root-password", "placeholder-gmail-app-password", "dev-placeholder-download-link-secret-not-for-production")
# The converter parses hostile media: what it may reach (DNS, AMQP, MongoDB).
CONVERTER_EGRESS_PORTS = {53, 5672, 27017}


def load(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]


def by_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o.get("kind") == kind}


def dockerfile_targets() -> set[str]:
    targets = set()
    for df in (REPO / "docker").glob("*Dockerfile*"):
        for line in df.read_text(encoding="utf-8").splitlines():
            m = re.match(r"\s*FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
            if m:
                targets.add(m.group(1))
    return targets


def documented_vars() -> dict[str, set[str]]:
    """docs/configuration.md: the variables each service reads (every backticked NAME in the
    first column of a table row; the shared table's second column says who uses it)."""
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    out: dict[str, set[str]] = {s: set() for s in SERVICES}
    section = None
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip().lower()
            section = next((s for s in SERVICES if heading.startswith(s)), "shared" if "shared" in heading else None)
            continue
        if not line.startswith("|") or section is None:
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        if not names:
            continue
        if section == "shared":
            users = cells[1].lower()
            targets = SERVICES if users == "all" else [s for s in SERVICES if s in users]
        else:
            targets = [section]
        for s in targets:
            out[s].update(names)
    return out


class Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.checks = 0

    def expect(self, ok: bool, where: str, message: str) -> None:
        self.checks += 1
        if not ok:
            self.problems.append(f"{where}: {message}")

    def check_set(self, label: str, objs: list[dict], secrets_external: bool, targets: set[str]) -> None:
        cms, secrets = by_kind(objs, "ConfigMap"), by_kind(objs, "Secret")
        services, workloads = by_kind(objs, "Service"), {}
        for kind in WORKLOADS:
            workloads.update({n: o for n, o in by_kind(objs, kind).items()})
        for o in objs:
            md = o.get("metadata", {})
            where = f"{label} {o.get('kind')}/{md.get('name')}"
            if o.get("kind") != "Namespace":
                self.expect(md.get("namespace") == NAMESPACE, where, f"namespace is {md.get('namespace')!r}, not {NAMESPACE}")
        for name, w in workloads.items():
            self.check_workload(f"{label} {w['kind']}/{name}", w, cms, secrets, secrets_external, targets)
        for name, svc in services.items():
            where = f"{label} Service/{name}"
            pods = [w for w in workloads.values() if selects(svc["spec"].get("selector"), w)]
            self.expect(bool(pods), where, f"selector {svc['spec'].get('selector')} matches no workload")
            for port in svc["spec"].get("ports", []):
                tp = port.get("targetPort", port["port"])
                self.expect(all(has_port(w, tp) for w in pods), where, f"targetPort {tp!r} is not a port of the selected pods")
        for name, ing in by_kind(objs, "Ingress").items():
            for rule in ing["spec"].get("rules", []):
                for path in rule.get("http", {}).get("paths", []):
                    backend = path["backend"]["service"]
                    svc = services.get(backend["name"])
                    where = f"{label} Ingress/{name} {rule.get('host')}{path.get('path')}"
                    self.expect(svc is not None, where, f"backend Service {backend['name']!r} does not exist")
                    # Our services serve /metrics on their HTTP port (RabbitMQ's management UI does not).
                    if backend["name"] in SERVICES:
                        self.expect(not routes_metrics(path), where, "routes /metrics: the services' metrics are not public")
                    if svc is not None:
                        number = backend["port"].get("number")
                        self.expect(any(p["port"] == number for p in svc["spec"]["ports"]), where, f"Service has no port {number}")
        # Prometheus finds every service's /metrics: scrape annotations naming a port of the pod,
        # and (Prometheus Operator component) PodMonitors whose ports and selectors resolve.
        for name in SERVICES:
            w = workloads.get(name)
            if w is None:
                continue
            ann = w["spec"]["template"]["metadata"].get("annotations", {})
            where = f"{label} {w['kind']}/{name}"
            self.expect(ann.get("prometheus.io/scrape") == "true", where, "no prometheus.io/scrape annotation")
            port = ann.get("prometheus.io/port", "")
            self.expect(port.isdigit() and has_port(w, int(port)), where, f"prometheus.io/port {port!r} is not a port of the pod")
        for name, pm in by_kind(objs, "PodMonitor").items():
            where = f"{label} PodMonitor/{name}"
            pods = [w for w in workloads.values() if selects_expr(pm["spec"]["selector"], w)]
            self.expect(bool(pods), where, "selector matches no workload")
            for ep in pm["spec"].get("podMetricsEndpoints", []):
                self.expect(any(has_port(w, ep["port"]) for w in pods), where, f"port {ep['port']!r} is a port of no selected pod")
        for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            for name, obj in by_kind(objs, kind).items():
                ref = obj["spec"]["scaleTargetRef"]
                self.expect(ref["name"] in workloads, f"{label} {kind}/{name}", f"target {ref['name']!r} does not exist")
        # KEDA objects have no schema in kubernetes-validate: their references are checked here.
        auths = by_kind(objs, "TriggerAuthentication")
        for name, so in by_kind(objs, "ScaledObject").items():
            where = f"{label} ScaledObject/{name}"
            self.expect(bool(so["spec"].get("triggers")), where, "no triggers")
            for trigger in so["spec"].get("triggers", []):
                ref = trigger.get("authenticationRef", {}).get("name")
                self.expect(ref is None or ref in auths, where, f"authenticationRef {ref!r} does not exist")
        for name, ta in auths.items():
            for ref in ta["spec"].get("secretTargetRef", []):
                secret = secrets.get(ref["name"])
                ok = secrets_external or (secret is not None and ref["key"] in {**secret.get("data", {}), **secret.get("stringData", {})})
                self.expect(ok, f"{label} TriggerAuthentication/{name}", f"Secret {ref['name']!r} key {ref['key']!r} does not exist")
        for name, pdb in by_kind(objs, "PodDisruptionBudget").items():
            pods = [w for w in workloads.values() if selects(pdb["spec"]["selector"]["matchLabels"], w)]
            where = f"{label} PodDisruptionBudget/{name}"
            self.expect(bool(pods), where, "selector matches no workload")
            for w in pods:
                replicas = w["spec"].get("replicas", 1)
                self.expect(replicas > pdb["spec"].get("minAvailable", 0), where, f"minAvailable >= replicas ({replicas}) blocks every eviction")

    def check_secrets_and_network(self, label: str, objs: list[dict]) -> None:
        templates = {o["metadata"]["name"]: o for p in sorted((REPO / "manifests" / "secret-templates").glob("*.yaml")) for o in load(p)}
        for name, t in templates.items():
            filled = sorted(k for k, v in (t.get("stringData") or {}).items() if v) + sorted((t.get("data") or {}))
            self.expect(not filled, f"secret-templates {name}", f"a template must carry no value: {filled}")

        def strings(node):
            if isinstance(node, dict):
                for v in node.values():
                    yield from strings(v)
            elif isinstance(node, list):
                for v in node:
                    yield from strings(v)
            elif isinstance(node, str):
                yield node

        for o in objs:
            where = f"{label} {o['kind']}/{o['metadata']['name']}"
            self.expect(o["kind"] != "Secret" or o["metadata"].get("labels", {}).get("mp3converter.dev/placeholder") == "true",
                        where, "the manifests ship a Secret: its values would be public (make it in the deploy script)")
            known = sorted({k for v in strings(o) for k in KNOWN_SECRETS if v == k or f":{k}@" in v})
            self.expect(not known, where, f"carries a publicly known secret value: {known}")
            pod = o.get("spec", {}).get("template", {}).get("spec") if o["kind"] in WORKLOADS else None
            if pod is None:
                continue
            named = set()
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                named |= {s["secretRef"]["name"] for s in c.get("envFrom", []) if "secretRef" in s}
                named |= {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
                env_names = {e["name"] for e in c.get("env", [])}
                self.expect(not env_names & {"RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"}, where, "RabbitMQ's users come from definitions, not RABBITMQ_DEFAULT_*")
            named |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
            for n in sorted(named - {"mp3converter-tls"}):
                self.expect(n in templates, where, f"Secret {n!r} has no template in manifests/secret-templates/ (what must the deployer create?)")
            name = o["metadata"]["name"]
            if name == "rabbitmq":
                mounted = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
                self.expect("rabbitmq-definitions" in mounted, where, "does not mount the rabbitmq-definitions Secret")
            if name in ("mongo", "mysql"):
                env_from = {s["secretRef"]["name"] for c in pod["containers"] for s in c.get("envFrom", []) if "secretRef" in s}
                self.expect(f"{name}-secret" in env_from, where, f"{name} without its {name}-secret: no authentication")
        rabbit_conf = "".join(by_kind(objs, "ConfigMap").get("rabbitmq-configmap", {}).get("data", {}).values())
        self.expect("load_definitions" in rabbit_conf, f"{label} ConfigMap/rabbitmq-configmap", "no load_definitions: RabbitMQ would create guest")
        if "mongo" in by_kind(objs, "StatefulSet"):
            for name, cm in by_kind(objs, "ConfigMap").items():
                self.expect("MONGODB_URI" not in cm.get("data", {}), f"{label} ConfigMap/{name}",
                            "MONGODB_URI of the authenticated in-cluster MongoDB belongs in the service's Secret")

        for name, ing in by_kind(objs, "Ingress").items():
            where = f"{label} Ingress/{name}"
            tls_hosts = {h for t in ing["spec"].get("tls", []) for h in t.get("hosts", [])}
            for rule in ing["spec"].get("rules", []):
                self.expect(rule.get("host") in tls_hosts, where, f"host {rule.get('host')!r} is served without TLS")
                for path in rule.get("http", {}).get("paths", []):
                    backend = path["backend"]["service"]
                    self.expect(backend["name"] != "rabbitmq" and backend["port"].get("number") != 15672, where,
                                "the RabbitMQ management UI must not be on an ingress")
        policies = by_kind(objs, "NetworkPolicy")
        for svc in SERVICES:
            if svc not in by_kind(objs, "Deployment"):
                continue
            where = f"{label} Deployment/{svc}"
            egress = [p for p in policies.values()
                      if "Egress" in p["spec"].get("policyTypes", []) and p["spec"]["podSelector"].get("matchLabels", {}).get("app") == svc]
            self.expect(bool(egress), where, "no Egress NetworkPolicy selects it")
            if svc == "converter":
                ports = {p.get("port") for pol in egress for rule in pol["spec"].get("egress", []) for p in rule.get("ports", [{"port": "any"}])}
                self.expect(bool(egress) and ports <= CONVERTER_EGRESS_PORTS, where,
                            f"the converter may reach ports {sorted(map(str, ports))}; only {sorted(CONVERTER_EGRESS_PORTS)} (DNS, RabbitMQ, MongoDB)")

    def check_workload(self, where, w, cms, secrets, secrets_external, targets) -> None:
        pod = w["spec"]["template"]["spec"]
        self.expect(selects(w["spec"]["selector"]["matchLabels"], w), where, "selector does not match the pod template's labels")
        self.expect(pod.get("automountServiceAccountToken") is False, where, "automountServiceAccountToken is not false")
        psc = pod.get("securityContext", {})
        self.expect(psc.get("runAsNonRoot") is True, where, "pod runAsNonRoot is not true")
        self.expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where, "pod seccompProfile is not RuntimeDefault")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for v in volumes.values():
            if "configMap" in v and v["configMap"]["name"] != "mysql-initdb":  # made from init.sql by the script
                self.expect(v["configMap"]["name"] in cms, where, f"volume ConfigMap {v['configMap']['name']!r} does not exist")
        claim_names = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        for c in pod["containers"]:
            cw = f"{where} container {c['name']}"
            ours = c["image"].startswith("mp3converter/")
            sc = c.get("securityContext", {})
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            self.expect(isinstance(uid, int) and uid > 0, cw, f"runAsUser {uid!r} is not a numeric non-root uid")
            self.expect(sc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation is not false")
            self.expect(sc.get("capabilities", {}).get("drop") == ["ALL"], cw, "capabilities do not drop ALL")
            for probe in ("livenessProbe", "readinessProbe"):
                self.expect(probe in c, cw, f"no {probe}")
                port = next((c.get(probe, {}).get(k, {}).get("port") for k in ("httpGet", "tcpSocket") if k in c.get(probe, {})), None)
                if port is not None:
                    self.expect(has_port(w, port), cw, f"{probe} port {port!r} is not a containerPort")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    self.expect(r in res.get(part, {}), cw, f"no {r} {part[:-1]}")
            for m in c.get("volumeMounts", []):
                self.expect(m["name"] in volumes or m["name"] in claim_names, cw, f"volumeMount {m['name']!r} has no volume")
            env_names = set()
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    name = source["configMapRef"]["name"]
                    self.expect(name in cms, cw, f"envFrom ConfigMap {name!r} does not exist")
                    env_names |= set(cms.get(name, {}).get("data", {}))
                if "secretRef" in source:
                    name = source["secretRef"]["name"]
                    self.expect(name in secrets or secrets_external, cw, f"envFrom Secret {name!r} does not exist")
            if ours:
                image, _, tag = c["image"].partition(":")
                target = image.split("/", 1)[1]
                self.expect(target in targets, cw, f"image {c['image']!r}: docker/Dockerfile has no stage {target!r}")
                self.expect(tag == "dev" and c.get("imagePullPolicy") == "Never", cw, "our images are :dev with imagePullPolicy Never (built in minikube)")
                self.expect(uid == OUR_UID, cw, f"runAsUser {uid} is not docker/Dockerfile's USER {OUR_UID}")
                self.expect(sc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem is not true")
                tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
                self.expect(bool(tmp) and "emptyDir" in volumes.get(tmp[0]["name"], {}), cw, "no emptyDir at /tmp")
                drain = int(next((cms[s["configMapRef"]["name"]]["data"].get("SHUTDOWN_GRACE_SECONDS", 20)
                                  for s in c.get("envFrom", []) if "configMapRef" in s and s["configMapRef"]["name"] in cms), 20))
                pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
                sleep = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
                self.expect(drain + sleep < grace, cw, f"SHUTDOWN_GRACE_SECONDS {drain} + preStop {sleep}s >= terminationGracePeriodSeconds {grace}")

    def check_docs(self) -> None:
        docs = documented_vars()
        objects = manifest_env.load_objects(REPO / "manifests")
        for s in SERVICES:
            env = set(manifest_env.resolve_env(objects, s))
            self.expect(not docs[s] - env, f"base {s}", f"documented in docs/configuration.md but not set: {sorted(docs[s] - env)}")
            self.expect(not env - docs[s], f"base {s}", f"set but not documented in docs/configuration.md: {sorted(env - docs[s])}")


def selects(selector: dict | None, workload: dict) -> bool:
    labels = workload["spec"]["template"]["metadata"].get("labels", {})
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def routes_metrics(path: dict) -> bool:
    """Whether an Ingress path would send GET /metrics to its backend."""
    p = path.get("path", "/")
    if path.get("pathType") == "Exact":
        return p == "/metrics"
    # Prefix (and ImplementationSpecific, which nginx treats as a prefix): by path segment.
    p = p.rstrip("/")
    return p in ("", "/metrics") or "/metrics".startswith(p + "/")


def selects_expr(selector: dict, workload: dict) -> bool:
    """A label selector with matchLabels and/or matchExpressions (In only) against a pod template."""
    labels = workload["spec"]["template"]["metadata"].get("labels", {})
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] != "In" or labels.get(expr["key"]) not in expr["values"]:
            return False
    return bool(selector)


def has_port(workload: dict, port) -> bool:
    for c in workload["spec"]["template"]["spec"]["containers"]:
        for p in c.get("ports", []):
            if port in (p.get("name"), p["containerPort"]):
                return True
    return False


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    checker = Checker()
    targets = dockerfile_targets()
    base = None
    for path in map(Path, paths):
        objs = load(path)
        label = path.stem
        kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
        secrets_external = not any(o["kind"] == "Secret" for o in objs)
        checker.check_set(label, objs, secrets_external, targets)
        checker.check_secrets_and_network(label, objs)
        if base is None:
            base = kinds
            continue
        for kind, name in sorted(base - kinds):
            removable = (kind, name) in MAY_BE_REMOVED or (kind, None) in MAY_BE_REMOVED
            checker.expect(removable, label, f"{kind}/{name} of the base is missing")
    checker.check_docs()
    for p in checker.problems:
        print(f"  {p}")
    print(f"check_manifests: {checker.checks - len(checker.problems)} of {checker.checks} assertions hold, {len(checker.problems)} problems")
    return 1 if checker.problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
