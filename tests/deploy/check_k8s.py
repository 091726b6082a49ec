#!/usr/bin/python3
"""check_k8s.py - checks veil's Kubernetes manifests and container image recipe.

    check_k8s.py SOURCE_DIR              render deploy/k8s/overlays/{dev,production}
                                         with `kubectl kustomize` and check them,
                                         the Dockerfile and make-dev-secrets
    check_k8s.py --self-test SOURCE_DIR  run the checks on the deliberately broken
                                         fixtures in tests/deploy/fixtures/ and
                                         fail unless each reports what it expects

Exit status: 0 all good, 1 violations found, 77 kubectl is not installed (ctest
reports the test as skipped; the self-test needs no kubectl and never skips).

What is checked, per overlay: pod hardening and resources of every container,
native gRPC probes on the health port, Secrets used only as files (and key and
password files only through the owner-only copy), no key material in
ConfigMaps or Secrets in the manifests, one Deployment, Service, ServiceAccount
and (for the four data owners) migration Job per service, the configuration
each service needs, the access-log retention CronJob, the owner-only copy of
key and password files (the secret-files init container and the secret-sync
sidecar in every server pod; no container runs a shell), the NetworkPolicies
(by evaluating who can reach whom, not by matching their text), the
CloudNativePG cluster and, in production,
autoscaling, disruption budgets and spreading.  Also the Dockerfile's
structure and that make-dev-secrets produces every Secret the manifests name.

With VEIL_TEST_BIN (set by tests/run) it also runs every service binary built
there with the dev overlay's configuration on a file layout like its pod's:
`<service> config` must accept it, and the pseudonym service, which needs no
database, must answer kubelet's gRPC probe SERVING, report NOT_SERVING after
SIGTERM and exit 0; and it runs the rendered secret-files init container and
secret-sync sidecar (the built secret-files) on kubelet-style Secret volumes,
replaying a kubelet update ("..data" swapped) while the sidecar runs.
"""
import base64
import copy
import ipaddress
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import yaml

SKIP = 77
PORTS = {"gateway": 7100, "vault": 7101, "consent": 7102, "revocation": 7103, "pseudonym": 7104}
SERVICES = list(PORTS)
DATA_OWNERS = ["gateway", "vault", "consent", "revocation"]
INTERNAL = ["vault", "consent", "revocation", "pseudonym"]
KEY_PURPOSES = {
    "gateway": ["assertion", "auditref"],
    "vault": ["master", "blind", "audit", "webcert", "ticket"],
    "consent": ["receipt"],
    "pseudonym": ["pseudonym"],
}
HEALTH_PORT = 8081
ADMIN_PORT = 7110  # the gateway's Admin API listener
METRICS_PORT = 9090  # GET /metrics on every server
PG_PORT = 5432
NAME = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"
PART_OF = "app.kubernetes.io/part-of"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")
RUNTIME_PACKAGES = {"libgrpc29", "libprotobuf-c1", "libsodium23", "libpq5", "libjansson4", "libqrencode4",
                    "libmicrohttpd12", "libgnutls30", "libyaml-0-2"}
BINARIES = {"gateway", "vault", "pseudonym", "consent", "revocation", "veilctl", "secret-files"}
# A 32-byte key in base64 is 44 characters ending in one '='.
KEY_B64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{43}=(?![A-Za-z0-9+/=])")


class Checker:
    """Collects violations under a label (an overlay or a file)."""

    def __init__(self, label):
        self.label = label
        self.violations = []

    def fail(self, msg):
        self.violations.append(msg)

    def expect(self, cond, msg):
        if not cond:
            self.fail(msg)
        return bool(cond)


# ---------------------------------------------------------------- helpers

def pod_of(obj):
    """The pod template spec and its labels of a workload object."""
    spec = obj.get("spec") or {}
    if obj["kind"] == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    tmpl = spec.get("template") or {}
    return (tmpl.get("spec") or {}), ((tmpl.get("metadata") or {}).get("labels") or {})


def containers_of(pod):
    return [("init", c) for c in pod.get("initContainers") or []] + \
           [("main", c) for c in pod.get("containers") or []]


def selector_matches(sel, labels):
    """Kubernetes label selector semantics; None matches nothing, {} everything."""
    if sel is None:
        return False
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        key, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and key in labels and labels[key] in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def by_kind(objs, kind):
    return [o for o in objs if o.get("kind") == kind]


def find(objs, kind, name):
    for o in objs:
        if o.get("kind") == kind and o["metadata"]["name"] == name:
            return o
    return None


def effective_env(objs, container):
    """Environment of a container: envFrom ConfigMaps, then env values."""
    env = {}
    for ef in container.get("envFrom") or []:
        ref = ef.get("configMapRef")
        if ref:
            cm = find(objs, "ConfigMap", ref["name"])
            if cm:
                env.update(cm.get("data") or {})
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
    return env


def volume_for_path(pod, container, path):
    """The volume whose mount holds path in this container, or None."""
    best = None
    for m in container.get("volumeMounts") or []:
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best["mountPath"].rstrip("/")):
                best = m
    if not best:
        return None
    for v in pod.get("volumes") or []:
        if v["name"] == best["name"]:
            return v
    return None


def command_of(ctr):
    return (ctr.get("command") or []) + (ctr.get("args") or [])


def is_copier(ctr):
    """The init container secret-files or the sidecar secret-sync: the program
    that makes owner-only copies of the Secrets (services/secret-files)."""
    return command_of(ctr)[:1] == ["secret-files"]


def secret_volumes(pod):
    return [v for v in pod.get("volumes") or [] if "secret" in v]


# ------------------------------------------------------ pod and container rules

def check_pod_hardening(c, objs):
    for obj in objs:
        if obj.get("kind") not in WORKLOAD_KINDS:
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        pod, _ = pod_of(obj)
        psc = pod.get("securityContext") or {}
        c.expect(pod.get("automountServiceAccountToken") is False,
                 f"{where}: automountServiceAccountToken must be false")
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            c.expect(not pod.get(flag), f"{where}: {flag} must not be set")
        for kind, ctr in containers_of(pod):
            cw = f"{where} container {ctr.get('name')}"
            sc = ctr.get("securityContext") or {}
            non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            c.expect(non_root is True, f"{cw}: runAsNonRoot must be true (container or pod)")
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            c.expect(uid != 0, f"{cw}: runAsUser must not be 0")
            c.expect(sc.get("readOnlyRootFilesystem") is True, f"{cw}: readOnlyRootFilesystem must be true")
            c.expect(sc.get("allowPrivilegeEscalation") is False,
                     f"{cw}: allowPrivilegeEscalation must be false")
            c.expect(not sc.get("privileged"), f"{cw}: must not be privileged")
            caps = sc.get("capabilities") or {}
            c.expect("ALL" in (caps.get("drop") or []), f"{cw}: capabilities.drop must contain ALL")
            c.expect(not caps.get("add"), f"{cw}: must not add capabilities")
            seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            c.expect(seccomp == "RuntimeDefault", f"{cw}: seccompProfile must be RuntimeDefault (container or pod)")
            res = ctr.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    c.expect(r in (res.get(part) or {}), f"{cw}: resources.{part}.{r} missing")
            image = ctr.get("image", "")
            c.expect(re.search(r"(:[\w][\w.-]*|@sha256:[0-9a-f]{64})$", image.split("/")[-1])
                     and not image.endswith(":latest"), f"{cw}: image {image!r} needs a fixed tag or digest")
            c.expect(ctr.get("imagePullPolicy") == "IfNotPresent", f"{cw}: imagePullPolicy must be IfNotPresent")
            for e in ctr.get("env") or []:
                vf = e.get("valueFrom") or {}
                c.expect("secretKeyRef" not in vf,
                         f"{cw}: env {e['name']} uses secretKeyRef: Secrets are mounted as files, never env")
            for ef in ctr.get("envFrom") or []:
                c.expect("secretRef" not in ef, f"{cw}: envFrom.secretRef: Secrets are mounted as files, never env")


def check_secret_files(c, objs):
    """Secret volumes: owner-only defaultMode; key and passfile Secrets only
    through the init container's owner-only copy (fsGroup makes a mounted
    Secret group-readable, which veil's key loader and libpq refuse)."""
    for obj in objs:
        if obj.get("kind") not in WORKLOAD_KINDS:
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        pod, _ = pod_of(obj)
        for v in secret_volumes(pod):
            name = v["secret"].get("secretName", "")
            sensitive = re.search(r"-(keys|db|tls)$", name)
            if sensitive:
                mode = v["secret"].get("defaultMode")
                c.expect(mode in (0o400, 0o600),
                         f"{where}: Secret volume {v['name']} ({name}) needs defaultMode 0400")
            if re.search(r"-(keys|db)$", name):
                for kind, ctr in containers_of(pod):
                    for m in ctr.get("volumeMounts") or []:
                        if m["name"] == v["name"] and not is_copier(ctr):
                            c.fail(f"{where}: container {ctr['name']} mounts {name} directly; key and password "
                                   f"files must come through the owner-only copy (fsGroup makes Secret files 0440)")
        for kind, ctr in containers_of(pod):
            cmd = command_of(ctr)
            c.expect(not cmd or not re.search(r"(^|/)(ba|da)?sh$", cmd[0]),
                     f"{where}: container {ctr.get('name')} runs a shell ({cmd[0] if cmd else ''}); "
                     f"the image has none")
        if obj["kind"] == "Deployment" and any(re.search(r"-(keys|db)$", v["secret"].get("secretName", ""))
                                               for v in secret_volumes(pod)):
            init = [x for k, x in containers_of(pod) if k == "init" and is_copier(x)]
            sync = [x for k, x in containers_of(pod) if k == "main" and is_copier(x)]
            c.expect(init and sync and command_of(sync[0]) == command_of(init[0]) + ["--watch"]
                     and sorted(m["mountPath"] for m in sync[0].get("volumeMounts") or [])
                     == sorted(m["mountPath"] for m in init[0].get("volumeMounts") or []),
                     f"{where}: needs the secret-files init container and a secret-sync sidecar running the "
                     f"same copy with --watch on the same mounts (a changed Secret must reach the service)")


def check_metadata(c, objs):
    """Everything in the namespace veil, labelled as part of veil; every
    ConfigMap a container reads exists."""
    for o in objs:
        where = f"{o.get('kind')}/{o['metadata'].get('name')}"
        if o.get("kind") != "Namespace":
            c.expect(o["metadata"].get("namespace") == "veil", f"{where}: must be in namespace veil")
        c.expect((o["metadata"].get("labels") or {}).get(PART_OF) == "veil", f"{where}: needs label {PART_OF}: veil")
        if o.get("kind") in WORKLOAD_KINDS:
            c.expect(NAME in (o["metadata"].get("labels") or {}), f"{where}: needs label {NAME}")
            for _, ctr in containers_of(pod_of(o)[0]):
                for ef in ctr.get("envFrom") or []:
                    ref = (ef.get("configMapRef") or {}).get("name")
                    c.expect(not ref or find(objs, "ConfigMap", ref),
                             f"{where}: container {ctr.get('name')} reads ConfigMap {ref}, which is not rendered")


def check_manifest_material(c, objs, text):
    """No key material in the manifests: no Secret with data, nothing
    key-like in ConfigMaps, and never the development plaintext switch."""
    for bad in ("VEIL_DEV_PLAINTEXT", "VEIL_DEV_IDENTITY"):
        c.expect(bad not in text, f"{bad} appears in the rendered manifests")
    for s in by_kind(objs, "Secret"):
        if s.get("data") or s.get("stringData"):
            c.fail(f"Secret object {s['metadata']['name']} with data in the manifests: "
                   f"Secrets are created by the operator, never committed")
    for cm in by_kind(objs, "ConfigMap"):
        for k, v in (cm.get("data") or {}).items():
            v = str(v)
            if "-----BEGIN" in v:
                c.fail(f"ConfigMap {cm['metadata']['name']} key {k}: PEM material (-----BEGIN) in a ConfigMap")
            if KEY_B64.search(v):
                c.fail(f"ConfigMap {cm['metadata']['name']} key {k}: a 44-character base64 value that looks "
                       f"like a 32-byte key")
            if re.search(r"(^|\s)password\s*=", v, re.I):
                c.fail(f"ConfigMap {cm['metadata']['name']} key {k}: a password in a connection string")


# ------------------------------------------------------------ service rules

def check_services(c, objs):
    deployments = by_kind(objs, "Deployment")
    for svc in SERVICES:
        port = PORTS[svc]
        mine = [d for d in deployments if (pod_of(d)[1].get(NAME) == svc)]
        if not c.expect(len(mine) == 1, f"{svc}: expected one Deployment, found {len(mine)}"):
            continue
        dep = mine[0]
        pod, labels = pod_of(dep)
        c.expect(dep["metadata"].get("labels", {}).get(PART_OF) == "veil" and labels.get(PART_OF) == "veil",
                 f"{svc}: Deployment and pod need label {PART_OF}: veil")
        c.expect(selector_matches(dep["spec"].get("selector"), labels),
                 f"{svc}: Deployment selector does not match its pod labels")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        main = [ctr for kind, ctr in containers_of(pod) if kind == "main" and not is_copier(ctr)]
        if not c.expect(len(main) == 1, f"{svc}: expected one server container, found {len(main)}"):
            continue
        ctr = main[0]
        args = (ctr.get("command") or []) + (ctr.get("args") or [])
        c.expect(args[:2] == [svc, "serve"], f"{svc}: container must run `{svc} serve` (args {args})")
        ports = {p.get("name"): p["containerPort"] for p in ctr.get("ports") or []}
        c.expect(port in ports.values(), f"{svc}: container does not expose gRPC port {port}")
        for probe in ("livenessProbe", "readinessProbe"):
            p = ctr.get(probe) or {}
            grpc_port = (p.get("grpc") or {}).get("port")
            c.expect(grpc_port == HEALTH_PORT,
                     f"{svc}: {probe} must be a native gRPC probe on port {HEALTH_PORT} (has {p or 'none'})")
        env = effective_env(objs, ctr)
        c.expect(env.get("VEIL_LISTEN_ADDR") == f"0.0.0.0:{port}",
                 f"{svc}: VEIL_LISTEN_ADDR must be 0.0.0.0:{port} (is {env.get('VEIL_LISTEN_ADDR')})")
        c.expect(env.get("VEIL_HEALTH_ADDR") == f"0.0.0.0:{HEALTH_PORT}",
                 f"{svc}: VEIL_HEALTH_ADDR must be 0.0.0.0:{HEALTH_PORT}")
        c.expect(env.get("VEIL_METRICS_ADDR") == f"0.0.0.0:{METRICS_PORT}" and METRICS_PORT in ports.values(),
                 f"{svc}: must serve metrics on {METRICS_PORT} (VEIL_METRICS_ADDR and a container port)")
        ann = (dep["spec"]["template"]["metadata"].get("annotations") or {})
        c.expect(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(METRICS_PORT)
                 and ann.get("prometheus.io/path", "/metrics") == "/metrics",
                 f"{svc}: pod lacks the prometheus.io/scrape, port {METRICS_PORT} and path annotations")
        try:
            drain = int(env.get("VEIL_DRAIN_DELAY_MS", "0")) + int(env.get("VEIL_DRAIN_GRACE_MS", "10000"))
            c.expect(int(env.get("VEIL_DRAIN_DELAY_MS", "0")) >= 1000,
                     f"{svc}: VEIL_DRAIN_DELAY_MS must give endpoints time to update (>= 1000)")
            c.expect(grace * 1000 >= drain + 5000,
                     f"{svc}: terminationGracePeriodSeconds {grace} must exceed drain delay + grace "
                     f"({drain} ms) by at least 5 s")
        except ValueError:
            c.fail(f"{svc}: VEIL_DRAIN_* are not numbers")
        for var in ("VEIL_TLS_CA", "VEIL_TLS_CERT", "VEIL_TLS_KEY"):
            path = env.get(var)
            vol = volume_for_path(pod, ctr, path) if path else None
            c.expect(vol and (vol.get("secret") or {}).get("secretName") == f"{svc}-tls",
                     f"{svc}: {var} ({path}) must be a file from the {svc}-tls Secret volume")
        # Least privilege: a pod mounts its own Secrets and the database CA only.
        for v in secret_volumes(pod):
            name = v["secret"].get("secretName", "")
            c.expect(name.startswith(svc + "-") or name == "veil-db-ca",
                     f"{svc}: mounts Secret {name}, which is not its own")
        if svc in KEY_PURPOSES:
            kd = env.get("VEIL_KEYS_DIR", "")
            vol = volume_for_path(pod, ctr, kd) if kd else None
            c.expect(vol and (vol.get("emptyDir") or {}).get("medium") == "Memory",
                     f"{svc}: VEIL_KEYS_DIR ({kd or 'unset'}) must be on the memory-backed owner-only copy")
            c.expect(any(v["secret"].get("secretName") == f"{svc}-keys" for v in secret_volumes(pod)),
                     f"{svc}: its pod must carry the {svc}-keys Secret")
        if svc in DATA_OWNERS:
            url = env.get("VEIL_DATABASE_URL", "")
            for need in ("sslmode=verify-full", f"dbname={svc}", f"user={svc}", "passfile=", "sslrootcert="):
                c.expect(need in url, f"{svc}: VEIL_DATABASE_URL lacks {need}")
            m = re.search(r"passfile=(\S+)", url)
            vol = volume_for_path(pod, ctr, m.group(1)) if m else None
            c.expect(vol and (vol.get("emptyDir") or {}).get("medium") == "Memory",
                     f"{svc}: the passfile must be on the memory-backed owner-only copy")
            c.expect(any(v["secret"].get("secretName") == f"{svc}-db" for v in secret_volumes(pod)),
                     f"{svc}: its pod must carry the {svc}-db Secret")
        else:
            c.expect("VEIL_DATABASE_URL" not in env, f"{svc}: must have no database")
        # ServiceAccount and Service.
        c.expect(pod.get("serviceAccountName") == svc, f"{svc}: serviceAccountName must be {svc}")
        sa = find(objs, "ServiceAccount", svc)
        c.expect(sa is not None and sa.get("automountServiceAccountToken") is False,
                 f"{svc}: ServiceAccount {svc} missing or mounts its token")
        s = find(objs, "Service", svc)
        if c.expect(s is not None, f"{svc}: Service missing"):
            sel = s["spec"].get("selector") or {}
            c.expect(sel and all(labels.get(k) == v for k, v in sel.items()),
                     f"{svc}: Service selector does not select the Deployment's pods")
            for job in by_kind(objs, "Job"):
                jl = pod_of(job)[1]
                c.expect(not (sel and all(jl.get(k) == v for k, v in sel.items())),
                         f"{svc}: Service selector also selects Job {job['metadata']['name']}'s pods")
            sp = [p for p in s["spec"].get("ports") or [] if p.get("port") == port]
            if c.expect(sp, f"{svc}: Service does not offer port {port}"):
                tp = sp[0].get("targetPort", port)
                c.expect(tp == port or ports.get(tp) == port,
                         f"{svc}: Service targetPort {tp} is not the container's port {port}")
        if svc == "gateway":
            check_admin_listener(c, objs, pod, ctr, ports, env)


def check_admin_listener(c, objs, pod, ctr, ports, env):
    """The Admin API on its own port and certificate, behind a ClusterIP
    Service of its own; the public Service never carries it."""
    c.expect(ADMIN_PORT in ports.values(), f"gateway: container does not expose the admin port {ADMIN_PORT}")
    c.expect(env.get("GATEWAY_ADMIN_ADDR") == f"0.0.0.0:{ADMIN_PORT}",
             f"gateway: GATEWAY_ADMIN_ADDR must be 0.0.0.0:{ADMIN_PORT} (is {env.get('GATEWAY_ADMIN_ADDR')})")
    for var in ("GATEWAY_ADMIN_TLS_CERT", "GATEWAY_ADMIN_TLS_KEY", "GATEWAY_ADMIN_TLS_CA"):
        path = env.get(var)
        vol = volume_for_path(pod, ctr, path) if path else None
        c.expect(vol and (vol.get("secret") or {}).get("secretName") == "gateway-admin-tls",
                 f"gateway: {var} ({path}) must be a file from the gateway-admin-tls Secret volume")
    for s in by_kind(objs, "Service"):
        sel = s["spec"].get("selector") or {}
        if sel.get(NAME) != "gateway":
            continue
        offers_admin = any(p.get("port") == ADMIN_PORT or p.get("targetPort") in (ADMIN_PORT, "admin")
                           for p in s["spec"].get("ports") or [])
        name = s["metadata"]["name"]
        if name == "gateway-admin":
            c.expect(offers_admin, f"gateway-admin: Service does not offer port {ADMIN_PORT}")
            c.expect(s["spec"].get("type", "ClusterIP") == "ClusterIP",
                     f"gateway-admin: Service must be ClusterIP, not {s['spec'].get('type')}")
            c.expect(all(p.get("port") == ADMIN_PORT for p in s["spec"].get("ports") or []),
                     "gateway-admin: Service must offer the admin port only")
        else:
            c.expect(not offers_admin, f"{name}: the public Service must not carry the admin port {ADMIN_PORT}")
    c.expect(find(objs, "Service", "gateway-admin") is not None, "gateway-admin: Service missing")


def check_migrations(c, objs):
    deployments = {pod_of(d)[1].get(NAME): d for d in by_kind(objs, "Deployment")}
    jobs = by_kind(objs, "Job")
    for svc in SERVICES:
        mine = [j for j in jobs if pod_of(j)[1].get(NAME) == svc]
        runs = []
        for j in mine:
            for kind, ctr in containers_of(pod_of(j)[0]):
                if kind == "main":
                    runs.append((j, ctr, (ctr.get("command") or []) + (ctr.get("args") or [])))
        migrating = [r for r in runs if r[2][:2] == [svc, "migrate"]]
        if svc not in DATA_OWNERS:
            c.expect(not migrating, f"{svc}: has no database, so no migration Job")
            continue
        if not c.expect(migrating, f"{svc}: no migration Job running `{svc} migrate`"):
            continue
        job, ctr, _ = migrating[0]
        pod, labels = pod_of(job)
        c.expect(pod.get("restartPolicy") in ("Never", "OnFailure"), f"{svc}: migration Job restartPolicy")
        dep = deployments.get(svc)
        if dep:
            server = [x for k, x in containers_of(pod_of(dep)[0]) if k == "main" and not is_copier(x)][0]
            c.expect(ctr.get("image") == server.get("image"), f"{svc}: migration Job must use the server's image")
            same = [e.get("configMapRef", {}).get("name") for e in ctr.get("envFrom") or []] == \
                   [e.get("configMapRef", {}).get("name") for e in server.get("envFrom") or []]
            c.expect(same, f"{svc}: migration Job must read the server's configuration")
        c.expect(any(v["secret"].get("secretName") == f"{svc}-db" for v in secret_volumes(pod)),
                 f"{svc}: migration Job must carry the {svc}-db Secret")
        c.expect(not any(v["secret"].get("secretName") == f"{svc}-keys" for v in secret_volumes(pod)),
                 f"{svc}: migration Job must not carry {svc}-keys (migrate reads no keys)")


def check_retention(c, objs):
    """The access log's partitions are made and old ones dropped daily by a
    CronJob running `vault access-log-retention` with the vault server's image
    and configuration (so both agree on the retention period), its database
    Secret and not its keys."""
    server = next((x for d in by_kind(objs, "Deployment") if pod_of(d)[1].get(NAME) == "vault"
                   for k, x in containers_of(pod_of(d)[0]) if k == "main" and not is_copier(x)), None)
    runs = [(cj, x) for cj in by_kind(objs, "CronJob") for k, x in containers_of(pod_of(cj)[0])
            if k == "main" and command_of(x)[:2] == ["vault", "access-log-retention"]]
    if not c.expect(len(runs) == 1, "vault: expected one CronJob running `vault access-log-retention`"):
        return
    cj, ctr = runs[0]
    spec, (pod, labels) = cj["spec"], pod_of(cj)
    c.expect(spec.get("schedule") and spec.get("concurrencyPolicy") == "Forbid",
             "vault-access-log-retention: needs a schedule and concurrencyPolicy Forbid")
    c.expect(pod.get("restartPolicy") in ("Never", "OnFailure"), "vault-access-log-retention: restartPolicy")
    c.expect(labels.get(NAME) == "vault", "vault-access-log-retention: pods must be labelled as the vault's "
                                          "(the database NetworkPolicies admit them by that label)")
    if server:
        c.expect(ctr.get("image") == server.get("image"), "vault-access-log-retention: must use the server's image")
        c.expect([e.get("configMapRef", {}).get("name") for e in ctr.get("envFrom") or []]
                 == [e.get("configMapRef", {}).get("name") for e in server.get("envFrom") or []],
                 "vault-access-log-retention: must read the vault server's configuration")
    c.expect(any(v["secret"].get("secretName") == "vault-db" for v in secret_volumes(pod)),
             "vault-access-log-retention: must carry the vault-db Secret")
    c.expect(not any(v["secret"].get("secretName") == "vault-keys" for v in secret_volumes(pod)),
             "vault-access-log-retention: must not carry vault-keys (retention reads no keys)")


def check_database(c, objs, profile):
    clusters = [o for o in by_kind(objs, "Cluster") if o.get("apiVersion") == "postgresql.cnpg.io/v1"]
    if not c.expect(len(clusters) == 1, f"expected one CloudNativePG Cluster, found {len(clusters)}"):
        return
    cl = clusters[0]
    spec = cl.get("spec") or {}
    want = 3 if profile == "production" else 1
    c.expect(spec.get("instances") == want, f"CloudNativePG Cluster must have instances: {want} "
                                             f"(has {spec.get('instances')})")
    roles = {r["name"]: r for r in (spec.get("managed") or {}).get("roles") or []}
    dbs = {d["spec"]["name"]: d for d in by_kind(objs, "Database")}
    for svc in DATA_OWNERS:
        r = roles.get(svc)
        c.expect(r and r.get("login") and (r.get("passwordSecret") or {}).get("name") == f"{svc}-db"
                 and not r.get("superuser") and not r.get("createrole") and not r.get("createdb"),
                 f"database role {svc}: missing, or not a plain login role with password from {svc}-db")
        d = dbs.get(svc)
        c.expect(d and d["spec"].get("owner") == svc, f"database {svc}: missing or not owned by role {svc}")
    c.expect("pseudonym" not in roles and "pseudonym" not in dbs, "pseudonym must have no database or role")
    c.expect(spec.get("enableSuperuserAccess") is not True, "the postgres superuser must not be reachable")
    if profile == "production":
        c.expect(spec.get("plugins") or (spec.get("backup") or {}).get("barmanObjectStore"),
                 "production database has no backup configuration")
        c.expect(by_kind(objs, "ScheduledBackup"), "production database has no ScheduledBackup")


def check_scaling(c, objs, profile):
    deps = {pod_of(d)[1].get(NAME): d for d in by_kind(objs, "Deployment")}
    if profile != "production":
        for svc, d in deps.items():
            c.expect(d["spec"].get("replicas", 1) == 1, f"{svc}: development runs one replica")
        return
    for svc in ("gateway", "pseudonym"):
        hpas = [h for h in by_kind(objs, "HorizontalPodAutoscaler")
                if h["spec"]["scaleTargetRef"].get("name") == svc
                and h["spec"]["scaleTargetRef"].get("kind") == "Deployment"]
        if c.expect(hpas, f"production: no HorizontalPodAutoscaler for {svc}"):
            h = hpas[0]
            c.expect(h.get("apiVersion") == "autoscaling/v2", f"{svc}: HPA must be autoscaling/v2")
            c.expect(any((m.get("resource") or {}).get("name") == "cpu" for m in h["spec"].get("metrics") or []),
                     f"{svc}: HPA must scale on CPU")
            c.expect(h["spec"].get("minReplicas", 1) >= 2, f"{svc}: HPA minReplicas must be at least 2")
            if svc in deps:
                c.expect("replicas" not in deps[svc]["spec"],
                         f"{svc}: Deployment sets replicas although the HPA owns the count")
        pod_labels = pod_of(deps[svc])[1] if svc in deps else {}
        pdbs = [p for p in by_kind(objs, "PodDisruptionBudget")
                if pod_labels and selector_matches(p["spec"].get("selector"), pod_labels)]
        if c.expect(pdbs, f"production: no PodDisruptionBudget for {svc}"):
            p = pdbs[0]
            c.expect(p.get("apiVersion") == "policy/v1", f"{svc}: PDB must be policy/v1")
            c.expect("minAvailable" in p["spec"] or "maxUnavailable" in p["spec"],
                     f"{svc}: PDB needs minAvailable or maxUnavailable")
    gw = deps.get("gateway")
    if gw:
        pod = pod_of(gw)[0]
        c.expect(pod.get("topologySpreadConstraints") or (pod.get("affinity") or {}).get("podAntiAffinity"),
                 "production: gateway needs topology spread or pod anti-affinity")
    for svc in ("vault", "consent", "revocation"):
        if svc in deps:
            c.expect(deps[svc]["spec"].get("replicas", 1) >= 2, f"production: {svc} needs at least 2 replicas")


# ---------------------------------------------------------- network policies

class Endpoint:
    """A pod (namespace, labels, named ports, address) or an outside address."""

    def __init__(self, name, ns=None, labels=None, ports=None, ip=None):
        self.name, self.ns, self.labels = name, ns, labels or {}
        self.ports = ports or {}
        self.ip = ipaddress.ip_address(ip)
        self.is_pod = ns is not None


def peer_matches(peer, ep, policy_ns, ns_labels):
    if "ipBlock" in peer:
        b = peer["ipBlock"]
        net = ipaddress.ip_network(b["cidr"], strict=False)
        if ep.ip.version != net.version or ep.ip not in net:
            return False
        return not any(ep.ip in ipaddress.ip_network(x, strict=False) for x in b.get("except") or []
                       if ipaddress.ip_network(x, strict=False).version == ep.ip.version)
    if not ep.is_pod:
        return False
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], ns_labels.get(ep.ns, {})):
            return False
    elif ep.ns != policy_ns:
        return False
    if "podSelector" in peer:
        return selector_matches(peer["podSelector"], ep.labels)
    return True


def port_matches(ports, dst, port, proto):
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != proto:
            continue
        want = p.get("port")
        if want is None:
            return True
        if isinstance(want, str):
            want = dst.ports.get(want)
        if want is None:
            continue
        if want == port or (p.get("endPort") and want <= port <= p["endPort"]):
            return True
    return False


def policy_types(pol):
    spec = pol["spec"]
    if spec.get("policyTypes"):
        return set(spec["policyTypes"])
    return {"Ingress"} | ({"Egress"} if spec.get("egress") else set())


def allowed(policies, ns_labels, src, dst, port, proto="TCP"):
    """Whether src may open a connection to dst:port under the policies.
    ipBlocks are taken to match pod addresses too (the conservative reading)."""
    if dst.is_pod:
        sel = [p for p in policies if p["metadata"].get("namespace") == dst.ns
               and "Ingress" in policy_types(p) and selector_matches(p["spec"].get("podSelector"), dst.labels)]
        if sel and not any(
                (not rule.get("from") or any(peer_matches(pe, src, p["metadata"].get("namespace"), ns_labels)
                                             for pe in rule["from"]))
                and port_matches(rule.get("ports"), dst, port, proto)
                for p in sel for rule in p["spec"].get("ingress") or []):
            return False
    if src.is_pod:
        sel = [p for p in policies if p["metadata"].get("namespace") == src.ns
               and "Egress" in policy_types(p) and selector_matches(p["spec"].get("podSelector"), src.labels)]
        if sel and not any(
                (not rule.get("to") or any(peer_matches(pe, dst, p["metadata"].get("namespace"), ns_labels)
                                           for pe in rule["to"]))
                and port_matches(rule.get("ports"), dst, port, proto)
                for p in sel for rule in p["spec"].get("egress") or []):
            return False
    return True


def check_network(c, objs, profile="dev"):
    policies = by_kind(objs, "NetworkPolicy")
    ns = "veil"
    for p in policies:
        p["metadata"].setdefault("namespace", ns)
    deny = [p for p in policies if p["spec"].get("podSelector") == {}
            and {"Ingress", "Egress"} <= policy_types(p)
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    c.expect(deny, "network: no default-deny policy covering ingress and egress of every pod")

    ns_labels = {}
    for n in ("veil", "apps", "ingress-nginx", "kube-system", "cnpg-system", "veil-admin", "monitoring"):
        ns_labels[n] = {"kubernetes.io/metadata.name": n}
    for o in by_kind(objs, "Namespace"):
        ns_labels[o["metadata"]["name"]] = dict(o["metadata"].get("labels") or {},
                                                **{"kubernetes.io/metadata.name": o["metadata"]["name"]})
    # Every pod the manifests make, plus the pods and addresses around them.
    pods, n = [], 10
    for obj in objs:
        if obj.get("kind") in WORKLOAD_KINDS:
            pod, labels = pod_of(obj)
            named = {p["name"]: p["containerPort"] for _, ctr in containers_of(pod)
                     for p in ctr.get("ports") or [] if "name" in p}
            n += 1
            pods.append(Endpoint(f"{obj['kind']}/{obj['metadata']['name']}",
                                 obj["metadata"].get("namespace", ns), labels, named, f"10.244.0.{n}"))
    postgres = Endpoint("PostgreSQL instance", ns, {"cnpg.io/cluster": "veil-db", "cnpg.io/podRole": "instance"},
                        {"postgresql": PG_PORT, "metrics": 9187, "status": 8000}, "10.244.1.1")
    stray = Endpoint("an unlabelled pod in the namespace", ns, {"run": "debug"}, {}, "10.244.1.2")
    app = Endpoint("an app's pod in another namespace", "apps", {"app": "shop"}, {}, "10.244.2.1")
    ingress = Endpoint("an ingress controller", "ingress-nginx",
                       {NAME: "ingress-nginx"}, {}, "10.244.3.1")
    dns = Endpoint("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, {}, "10.244.4.1")
    prometheus = Endpoint("Prometheus", "monitoring", {NAME: "prometheus"}, {}, "10.244.7.1")
    console = Endpoint("the operators' console", "veil-admin", {"veil.io/operator-console": "true"},
                       {}, "10.244.6.1")
    admin_stray = Endpoint("another pod in the operators' namespace", "veil-admin", {"run": "debug"},
                           {}, "10.244.6.2")
    operator = Endpoint("the CNPG operator", "cnpg-system", {NAME: "cloudnative-pg"}, {}, "10.244.5.1")
    outside = Endpoint("an address outside the cluster", ip="203.0.113.7")
    everyone = pods + [postgres, stray, app, ingress, dns, operator, outside, console, admin_stray,
                       prometheus]

    def server(svc):
        return [p for p in pods if p.labels.get(NAME) == svc and p.labels.get(COMPONENT) == "server"]

    def of(svc):
        return [p for p in pods if p.labels.get(NAME) == svc]

    def must(src, dst, port, proto="TCP"):
        c.expect(allowed(policies, ns_labels, src, dst, port, proto),
                 f"network: {src.name} cannot reach {dst.name}:{port}/{proto}, which it must")

    def must_not(src, dst, port, why):
        if allowed(policies, ns_labels, src, dst, port):
            c.fail(f"network: {src.name} can reach {dst.name}:{port} ({why})")

    probe_ports = sorted(set(PORTS.values()) | {PG_PORT, 8000, 9187, 443, 80, 6443, ADMIN_PORT})
    for gw in server("gateway"):
        for src in (app, ingress, outside):
            must(src, gw, PORTS["gateway"])
        # The Admin API: the operators' console only; apps, the load balancer's
        # sources and other pods never reach its port.
        must(console, gw, ADMIN_PORT)
        for src in [app, ingress, outside, stray, dns, operator] + [p for p in pods if p is not gw]:
            must_not(src, gw, ADMIN_PORT, "only the operators' console reaches the Admin API")
        if profile == "production":
            must_not(admin_stray, gw, ADMIN_PORT, "in production only the console pods reach the Admin API")
        for svc in INTERNAL:
            for dst in server(svc):
                must(gw, dst, PORTS[svc])
    for svc in SERVICES:
        for dst in server(svc):
            must(outside, dst, HEALTH_PORT)
            # Metrics: Prometheus only.
            must(prometheus, dst, METRICS_PORT)
            for src in [app, ingress, outside, stray, console] + [p for p in pods if p is not dst]:
                must_not(src, dst, METRICS_PORT, "only Prometheus scrapes the metrics port")
    for svc in DATA_OWNERS:
        for src in of(svc):
            must(src, postgres, PG_PORT)
    for p in pods + [postgres]:
        must(p, dns, 53, "UDP")
        must(p, dns, 53, "TCP")
    must(postgres, postgres, PG_PORT)
    must(operator, postgres, 8000)
    must(operator, postgres, PG_PORT)

    gateways = server("gateway")
    for svc in INTERNAL:
        for dst in server(svc):
            for src in everyone:
                if src is dst:
                    continue
                for port in probe_ports:
                    if src in gateways and port == PORTS[svc]:
                        continue
                    if src is prometheus and port == METRICS_PORT:
                        continue
                    must_not(src, dst, port, f"only the gateway may reach {svc}, and only on {PORTS[svc]}")
    clients = [p for svc in DATA_OWNERS for p in of(svc)]
    for src in everyone:
        if src in clients or src in (postgres, operator):
            continue
        must_not(src, postgres, PG_PORT, "only the four data-owning services reach PostgreSQL")
    for src in of("pseudonym"):
        for dst in everyone:
            if dst is dns or dst is src:
                continue
            for port in probe_ports:
                must_not(src, dst, port, "the pseudonym service calls nothing")
    for src in pods:
        for port in (443, 80):
            must_not(src, outside, port, "veil's pods have no route out of the cluster")
    for src in (stray,):
        for dst in pods:
            for port in probe_ports:
                must_not(src, dst, port, "unlisted pods are denied")


# ------------------------------------------------ the init script and secrets

def kubelet_secret(base, content, stamp="..2024_01_01_00_00_00.000000001"):
    """Lays out a Secret volume at base as the kubelet does: a timestamped
    folder of 0440 files (defaultMode 0400 under fsGroup), "..data" pointing
    at it, one name -> ..data/name link per file; returns the folder."""
    folder = os.path.join(base, stamp)
    os.makedirs(folder)
    for name, text in content.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
        os.chmod(os.path.join(folder, name), 0o440)
        if not os.path.lexists(os.path.join(base, name)):
            os.symlink(os.path.join("..data", name), os.path.join(base, name))
    if not os.path.lexists(os.path.join(base, "..data")):
        os.symlink(stamp, os.path.join(base, "..data"))
    return folder


def kubelet_update(base, content, stamp):
    """The kubelet's update of a Secret volume: a new timestamped folder,
    "..data_tmp" renamed over "..data", links for new names, stale links and
    the old folder removed."""
    old = os.readlink(os.path.join(base, "..data"))
    folder = kubelet_secret(base, content, stamp)
    os.symlink(stamp, os.path.join(base, "..data_tmp"))
    os.rename(os.path.join(base, "..data_tmp"), os.path.join(base, "..data"))
    for name in os.listdir(base):
        if not name.startswith("..") and name not in content:
            os.unlink(os.path.join(base, name))
    shutil.rmtree(os.path.join(base, old))
    return folder


def run_copier(ctr, bindir, root, watch=False):
    """Runs a rendered secret-files container's command with the built binary,
    its paths moved under root; returns the CompletedProcess or the Popen."""
    cmd = [a.replace("/var/run/veil", root) for a in command_of(ctr)]
    cmd[0] = os.path.join(bindir, cmd[0])
    if watch:  # its log in root/secret-sync.log
        with open(os.path.join(root, "secret-sync.log"), "w") as log:
            return subprocess.Popen(cmd, stdout=log, stderr=log, text=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def check_secret_copy(c, objs, bindir):
    """Runs the rendered secret-files init container and secret-sync sidecar
    (the built binary) against kubelet-style Secret volumes: the copies are
    owner-only files; an update of the Secrets, replayed as the kubelet makes
    it, reaches the copies while the sidecar runs (a new key file, a removed
    one); SIGTERM stops the sidecar with status 0."""
    dep = next((d for d in by_kind(objs, "Deployment") if pod_of(d)[1].get(NAME) == "vault"), None)
    pod = pod_of(dep)[0] if dep else {}
    init = next((x for k, x in containers_of(pod) if k == "init" and is_copier(x)), None)
    sync = next((x for k, x in containers_of(pod) if k == "main" and is_copier(x)), None)
    if not c.expect(init and sync, "vault: no secret-files init container and secret-sync sidecar"):
        return
    if not bindir or not os.access(os.path.join(bindir, "secret-files"), os.X_OK):
        print("check_k8s: note: no secret-files binary (VEIL_TEST_BIN); the copy was not run")
        return

    def key():
        return base64.b64encode(os.urandom(32)).decode() + "\n"

    def copied(root, files):
        """Whether the copies are exactly files, each a 0400 regular file with the same content."""
        for vol, content in files.items():
            out = os.path.join(root, "secrets", vol)
            if not os.path.isdir(out) or sorted(os.listdir(out)) != sorted(content):
                return False
            for name, text in content.items():
                p = os.path.join(out, name)
                st = os.lstat(p)
                if os.path.islink(p) or (st.st_mode & 0o777) != 0o400 or open(p).read() != text:
                    return False
        return True

    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "run")
        files = {"keys": {"master-1.key": key(), "master-2.key": key()},
                 "db": {"pgpass": "*:*:vault:vault:secret\n"}}
        for vol, content in files.items():
            kubelet_secret(os.path.join(root, "secret-src", vol), content)
        os.makedirs(os.path.join(root, "secrets"))
        r = run_copier(init, bindir, root)
        if not c.expect(r.returncode == 0, f"secret-files failed: {r.stderr.strip()}"):
            return
        c.expect(copied(root, files), f"secret-files: the copies are not the Secrets' files as 0400 files: "
                                      f"{sorted(os.listdir(os.path.join(root, 'secrets', 'keys')))}")
        proc = run_copier(sync, bindir, root, watch=True)
        try:
            files["keys"] = {"master-2.key": files["keys"]["master-2.key"], "master-3.key": key()}
            files["db"] = {"pgpass": "*:*:vault:vault:rotated\n"}
            log = os.path.join(root, "secret-sync.log")
            deadline = time.monotonic() + 20  # the sidecar's first pass and its watches
            while time.monotonic() < deadline and "watching the Secrets" not in open(log).read():
                time.sleep(0.1)
            for vol, content in files.items():
                kubelet_update(os.path.join(root, "secret-src", vol), content, "..2024_01_02_00_00_00.000000002")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not copied(root, files):
                time.sleep(0.1)
            c.expect(copied(root, files), "secret-sync: a Secret updated as the kubelet does (..data swapped) "
                                          "did not reach the copies within 10 s")
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
            c.expect(proc.returncode == 0, f"secret-sync: exit status {proc.returncode} after SIGTERM: "
                                           f"{open(log).read().strip()[-300:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def check_dev_secrets(c, out, objs):
    """make-dev-secrets (which wrote into out) must produce every Secret and
    ConfigMap the dev manifests name, in the shape the services and
    CloudNativePG read."""
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(out, "secrets.yaml")) as f:
            made = [d for d in yaml.safe_load_all(f) if d]
        secrets = {s["metadata"]["name"]: s for s in made if s["kind"] == "Secret"}
        cms = {s["metadata"]["name"]: s for s in made if s["kind"] == "ConfigMap"}
        for s in made:
            c.expect(s["metadata"].get("namespace") == "veil", f"make-dev-secrets: {s['metadata']['name']} "
                                                               f"not in namespace veil")

        def data(s, key):
            return base64.b64decode((s.get("data") or {}).get(key, ""))

        # Everything the pods mount (CNPG makes veil-db-ca itself).
        for obj in objs:
            if obj.get("kind") not in WORKLOAD_KINDS:
                continue
            pod = pod_of(obj)[0]
            for v in pod.get("volumes") or []:
                if "secret" in v and v["secret"]["secretName"] != "veil-db-ca":
                    name = v["secret"]["secretName"]
                    if c.expect(name in secrets, f"make-dev-secrets makes no Secret {name}"):
                        for it in v["secret"].get("items") or []:
                            c.expect(it["key"] in (secrets[name].get("data") or {}),
                                     f"make-dev-secrets: Secret {name} lacks key {it['key']}")
                if "configMap" in v and not find(objs, "ConfigMap", v["configMap"]["name"]):
                    c.expect(v["configMap"]["name"] in cms,
                             f"make-dev-secrets makes no ConfigMap {v['configMap']['name']}")
        for svc, purposes in KEY_PURPOSES.items():
            s = secrets.get(f"{svc}-keys", {})
            for p in purposes:
                try:
                    size = len(base64.b64decode(data(s, f"{p}-1.key"), validate=False))
                except ValueError:
                    size = -1
                c.expect(size == 32, f"make-dev-secrets: {svc}-keys/{p}-1.key is not 32 bytes in base64")
        for svc in DATA_OWNERS:
            s = secrets.get(f"{svc}-db", {})
            c.expect(s.get("type") == "kubernetes.io/basic-auth"
                     and (s["metadata"].get("labels") or {}).get("cnpg.io/reload") == "true",
                     f"make-dev-secrets: {svc}-db must be basic-auth with label cnpg.io/reload")
            user, pw = data(s, "username").decode(), data(s, "password").decode()
            c.expect(user == svc and pw and data(s, "pgpass").decode() == f"*:*:{svc}:{svc}:{pw}\n",
                     f"make-dev-secrets: {svc}-db username/password/pgpass disagree")
        gw = find(objs, "ConfigMap", next((o["metadata"]["name"] for o in by_kind(objs, "ConfigMap")
                                           if o["metadata"]["name"].startswith("gateway-config")), ""))
        for svc in SERVICES:
            s = secrets.get(f"{svc}-tls", {})
            crt = os.path.join(tmp, f"{svc}.crt")
            with open(crt, "wb") as f:
                f.write(data(s, "tls.crt"))
            r = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-ext", "subjectAltName"],
                               capture_output=True, text=True)
            sans = r.stdout
            c.expect(f"URI:spiffe://veil/svc/{svc}" in sans, f"make-dev-secrets: {svc} certificate lacks "
                                                              f"its spiffe identity")
            if svc != "gateway" and gw:
                host = (gw.get("data") or {}).get(f"GATEWAY_{svc.upper()}_ADDR", "").rsplit(":", 1)[0]
                c.expect(host and f"DNS:{host}" in sans,
                         f"make-dev-secrets: {svc} certificate has no DNS SAN {host!r} the gateway dials")


# ------------------------------------- the services under the rendered config

def grpc_health_check(port, timeout=2.0):
    """grpc.health.v1.Health/Check over plaintext HTTP/2, as kubelet's gRPC
    probe sends it.  Returns the serving status (1 SERVING, 2 NOT_SERVING)
    or None when there is no answer."""

    def frame(ftype, flags, stream, payload=b""):
        return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload

    def literal(index, value, name=None):
        # HPACK literal header field without indexing, no Huffman coding.
        head = bytes([0x00]) + bytes([len(name)]) + name if name else \
            (bytes([index]) if index < 15 else bytes([0x0F, index - 15]))
        return head + bytes([len(value)]) + value

    headers = (b"\x83\x86" + literal(4, b"/grpc.health.v1.Health/Check")
               + literal(1, f"127.0.0.1:{port}".encode()) + literal(31, b"application/grpc")
               + literal(0, b"trailers", name=b"te"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 4, 1, headers)
                      + frame(0, 1, 1, b"\x00\x00\x00\x00\x00"))
            buf = b""
            while True:
                while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                    n = int.from_bytes(buf[:3], "big")
                    ftype, flags, stream, payload = buf[3], buf[4], int.from_bytes(buf[5:9], "big"), buf[9:9 + n]
                    buf = buf[9 + n:]
                    if ftype == 4 and not flags & 1:
                        s.sendall(frame(4, 1, 0))
                    elif ftype in (3, 7):  # RST_STREAM, GOAWAY
                        return None
                    elif ftype == 0 and stream == 1 and len(payload) >= 7 and payload[5] == 0x08:
                        return payload[6]
                    elif ftype == 1 and stream == 1 and flags & 1:
                        return None  # trailers only: an error status
                data = s.recv(65536)
                if not data:
                    return None
                buf += data
    except OSError:
        return None


def check_services_run(c, objs, dev_secrets, bindir, group_readable=False):
    """Runs each built service binary with the configuration the dev overlay
    renders, on a file layout like its pod's (Secrets as the kubelet writes
    them, then the init container's copy): `config` must accept it, and the
    pseudonym service (no database needed) must start, answer the health
    probe SERVING, report NOT_SERVING once sent SIGTERM and exit 0."""
    ran = 0
    for svc in SERVICES:
        binary = os.path.join(bindir, svc)
        dep = next((d for d in by_kind(objs, "Deployment") if pod_of(d)[1].get(NAME) == svc), None)
        if not os.access(binary, os.X_OK) or not dep:
            continue
        ran += 1
        pod = pod_of(dep)[0]
        server = [x for k, x in containers_of(pod) if k == "main" and not is_copier(x)][0]
        init = [x for k, x in containers_of(pod) if k == "init" and is_copier(x)][0]
        with tempfile.TemporaryDirectory() as root:
            def at(path):
                return root + path

            # What the kubelet would mount, at the mount paths of the manifests.
            sources = {f"{svc}-tls": {"tls.crt": f"tls/{svc}.crt", "tls.key": f"tls/{svc}.key", "ca.crt": "tls/ca.crt"},
                       f"{svc}-admin-tls": {"tls.crt": f"tls/{svc}-admin.crt", "tls.key": f"tls/{svc}-admin.key",
                                            "ca.crt": "tls/ca.crt"},
                       f"{svc}-db": {"pgpass": f"db/{svc}.pgpass"},
                       "veil-db-ca": {"ca.crt": "tls/ca.crt"}}
            if svc in KEY_PURPOSES:
                sources[f"{svc}-keys"] = {f"{p}-1.key": f"keys/{svc}/{p}-1.key" for p in KEY_PURPOSES[svc]}
            for ctr in (init, server):
                for m in ctr.get("volumeMounts") or []:
                    vol = next(v for v in pod["volumes"] if v["name"] == m["name"])
                    base = at(m["mountPath"])
                    os.makedirs(base, exist_ok=True)
                    if "secret" in vol and not os.path.lexists(os.path.join(base, "..data")):
                        content = {}
                        for key, rel in sources[vol["secret"]["secretName"]].items():
                            with open(os.path.join(dev_secrets, rel)) as f:
                                content[key] = f.read()
                        kubelet_secret(base, content)
                    elif "configMap" in vol and vol["configMap"]["name"] == "vault-proofing":
                        shutil.copyfile(os.path.join(dev_secrets, "proofing", "proofing-authority.pub"),
                                        os.path.join(base, "proofing-authority.pub"))
            r = run_copier(init, bindir, at("/var/run/veil"))
            if not c.expect(r.returncode == 0, f"{svc}: secret-files failed: {r.stderr.strip()}"):
                continue
            if group_readable:  # what a plain Secret volume under fsGroup would give
                for d, _, names in os.walk(at("/var/run/veil/secrets")):
                    for n in names:
                        os.chmod(os.path.join(d, n), 0o440)
            env = {k: v for k, v in os.environ.items()
                   if k in ("PATH", "ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS")}
            for k, v in effective_env(objs, server).items():
                env[k] = re.sub(r"(?<![\w/])/(var/run/veil|etc/veil)/", lambda m: at("/" + m.group(1) + "/"), v)
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                health = s.getsockname()[1]
            env.update(VEIL_LISTEN_ADDR="127.0.0.1:0", VEIL_HEALTH_ADDR=f"127.0.0.1:{health}",
                       VEIL_METRICS_ADDR="127.0.0.1:0", GATEWAY_ADMIN_ADDR="127.0.0.1:0",
                       VEIL_DRAIN_DELAY_MS="1000")
            r = subprocess.run([binary, "config"], env=env, capture_output=True, text=True, timeout=60)
            c.expect(r.returncode == 0, f"{svc} config rejects the rendered configuration: "
                                        f"{(r.stderr or r.stdout).strip()}")
            if svc in DATA_OWNERS or r.returncode != 0:
                continue
            args = (server.get("command") or []) + (server.get("args") or [])
            proc = subprocess.Popen([binary] + args[1:], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            try:
                status = None
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and proc.poll() is None:
                    status = grpc_health_check(health)
                    if status == 1:
                        break
                    time.sleep(0.2)
                c.expect(status == 1, f"{svc}: the readiness probe on the health port never saw SERVING")
                proc.send_signal(signal.SIGTERM)
                time.sleep(0.3)
                draining = grpc_health_check(health)
                c.expect(draining == 2, f"{svc}: after SIGTERM the probe saw {draining}, not NOT_SERVING")
                _, err = proc.communicate(timeout=30)
                c.expect(proc.returncode == 0, f"{svc}: exit status {proc.returncode} after SIGTERM: "
                                               f"{err.strip()[-500:]}")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
    if not ran:
        print(f"check_k8s: note: no service binaries in {bindir}; the services were not run")


# ------------------------------------------------------------- Dockerfile

def check_dockerfile(c, text, bootstrap_packages, dockerignore):
    lines, buf = [], ""
    for raw in text.splitlines():
        if raw.strip().startswith("#") and not buf:
            continue
        if raw.endswith("\\"):
            buf += raw[:-1] + " "
            continue
        buf += raw
        if buf.strip():
            lines.append(buf.strip())
        buf = ""
    stages, cur = [], None
    for ln in lines:
        word, _, rest = ln.partition(" ")
        word = word.upper()
        if word == "FROM":
            parts = rest.split()
            cur = {"from": parts[0], "lines": [],
                   "name": parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None}
            stages.append(cur)
        elif cur is not None:
            cur["lines"].append((word, rest.strip()))
    if not c.expect(len(stages) >= 2, "Dockerfile: must be multi-stage (a build and a runtime stage)"):
        return
    base = lambda s: s["from"].split("@")[0]
    c.expect(base(stages[0]) == "debian:bookworm", f"Dockerfile: build stage must be FROM debian:bookworm "
                                                   f"(is {stages[0]['from']})")
    final = stages[-1]
    # The runtime image is FROM scratch, filled from a stage FROM debian:bookworm-slim that
    # installs the runtime packages and copies the programs (files, the final stage's one COPY
    # source); a final stage FROM bookworm-slim would be both, and carry the base's shell.
    c.expect(base(final) == "scratch", f"Dockerfile: runtime stage must be FROM scratch, so the image has "
                                       f"no shell (is {final['from']})")
    sources = {m.group(1) for word, rest in final["lines"] if word == "COPY"
               for m in [re.search(r"--from=(\S+)", rest)] if m}
    files = next((st for st in stages if st.get("name") in sources), None)
    if not c.expect(files and base(files) == "debian:bookworm-slim",
                    "Dockerfile: the runtime stage must copy from a stage FROM debian:bookworm-slim"):
        files = final
    users = [rest for word, rest in final["lines"] if word == "USER"]
    if c.expect(users, "Dockerfile: runtime stage has no USER"):
        uid = users[-1].split(":")[0]
        c.expect(uid.isdigit() and int(uid) != 0, f"Dockerfile: USER must be a numeric non-root uid "
                                                  f"(is {users[-1]})")
    for i, st in enumerate(stages):
        for word, rest in st["lines"]:
            if word in ("COPY", "ADD"):
                if word == "ADD" and re.search(r"https?://", rest):
                    c.fail("Dockerfile: ADD of a URL")
                # (bin/secret-files is the program that copies Secrets at run time, not one)
                if re.search(r"(\.key\b|\.pem\b|pgpass|secret|var/|\.password)",
                             rest.replace("bin/secret-files", "bin/"), re.I):
                    c.fail(f"Dockerfile: {word} {rest} looks like it puts secret material in the image")
            if word in ("ENV", "ARG") and re.search(r"(PASSWORD|SECRET|TOKEN|_KEY\b|VEIL_DEV_PLAINTEXT)", rest):
                c.fail(f"Dockerfile: {word} {rest} puts a secret or development switch in the image")

    def installs(st):
        pk = []
        for word, rest in st["lines"]:
            if word == "RUN":
                for m in re.finditer(r"apt-get install ([^&;|]*)", rest):
                    pk += [w for w in m.group(1).split() if not w.startswith("-")]
        return set(pk)
    build_pk = installs(stages[0])
    c.expect(build_pk and build_pk <= set(bootstrap_packages),
             f"Dockerfile: build stage installs packages not in deploy/bootstrap --list: "
             f"{sorted(build_pk - set(bootstrap_packages))}")
    build_text = " ".join(r for w, r in stages[0]["lines"] if w == "RUN")
    for flag in ("-DCMAKE_BUILD_TYPE=Release", "-DBUILD_TESTING=OFF"):
        c.expect(flag in build_text, f"Dockerfile: build stage must configure with {flag}")
    run_pk = installs(files)
    c.expect(not any(p.endswith("-dev") for p in run_pk), "Dockerfile: runtime stage installs -dev packages")
    c.expect(run_pk == RUNTIME_PACKAGES, f"Dockerfile: runtime packages must be {sorted(RUNTIME_PACKAGES)} "
                                         f"(are {sorted(run_pk)})")
    copied = set()
    for word, rest in files["lines"]:
        if word == "COPY" and "--from=" in rest:
            parts = rest.split()
            if parts[-1].rstrip("/") == "/usr/local/bin":
                copied |= {os.path.basename(p) for p in parts[:-1] if not p.startswith("--")}
    c.expect(copied == BINARIES, f"Dockerfile: must copy exactly {sorted(BINARIES)} to /usr/local/bin "
                                 f"(copies {sorted(copied)})")
    if dockerignore is not None:
        entries = [ln.strip().rstrip("/") for ln in dockerignore.splitlines()
                   if ln.strip() and not ln.startswith("#")]
        c.expect(any(e in ("build", "build*") for e in entries), ".dockerignore must exclude build/")
        c.expect("var" in entries, ".dockerignore must exclude var/ (development keys)")


# ------------------------------------------------------------------ driver

ALERTS_NEEDED = {
    "feed lag": "veil_feed_lag_seconds",
    "error rate": "veil_rpc_calls_total",
    "vault commit latency": "veil_vault_commit_seconds",
    "key overlap about to end": "veil_key_overlap_started_timestamp_seconds",
    "key versions in use": "veil_key_version{",
}


def check_alerts(c, objs, profile, src=None):
    """Production ships PrometheusRule alerts for what an operator must know,
    and every metric they name is one veil exports (found in services/)."""
    if profile != "production":
        return
    rules = [r for pr in by_kind(objs, "PrometheusRule") for g in pr["spec"].get("groups") or []
             for r in g.get("rules") or [] if "alert" in r]
    exprs = " ".join(str(r.get("expr", "")) for r in rules)
    for what, metric in ALERTS_NEEDED.items():
        c.expect(metric in exprs, f"alerts: no PrometheusRule alert on {what} ({metric})")
    if src:
        code = ""
        for d, _, names in os.walk(os.path.join(src, "services")):
            for n in names:
                if n.endswith(".c"):
                    with open(os.path.join(d, n), errors="replace") as f:
                        code += f.read()
        for m in sorted(set(re.findall(r"\bveil_[a-z_]+", exprs))):
            base = re.sub(r"_(bucket|count|sum)$", "", m)
            c.expect(f'"{base}"' in code, f"alerts: {m} is not a metric any service exports")


def check_overlay(c, objs, text, profile, src=None):
    check_metadata(c, objs)
    check_pod_hardening(c, objs)
    check_secret_files(c, objs)
    check_manifest_material(c, objs, text)
    check_services(c, objs)
    check_migrations(c, objs)
    check_retention(c, objs)
    check_database(c, objs, profile)
    check_scaling(c, objs, profile)
    check_network(c, objs, profile)
    check_alerts(c, objs, profile, src)


def report(checkers):
    bad = 0
    for c in checkers:
        for v in c.violations:
            print(f"check_k8s: {c.label}: {v}")
        print(f"check_k8s: {c.label}: {'ok' if not c.violations else f'{len(c.violations)} violation(s)'}")
        bad += bool(c.violations)
    print(f"{len(checkers) - bad} passed, {bad} failed")
    return 1 if bad else 0


def bootstrap_list(src):
    r = subprocess.run([os.path.join(src, "deploy", "bootstrap"), "--list"], capture_output=True, text=True,
                       check=True)
    return r.stdout.split()


def main(src):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print("check_k8s: SKIP: kubectl is not installed, so the overlays cannot be rendered "
              "(deploy/bootstrap says how to get it)")
        return SKIP
    checkers = []
    rendered = {}
    for overlay in ("dev", "production"):
        c = Checker(f"overlays/{overlay}")
        checkers.append(c)
        r = subprocess.run([kubectl, "kustomize", os.path.join(src, "deploy", "k8s", "overlays", overlay)],
                           capture_output=True, text=True)
        if not c.expect(r.returncode == 0, f"kubectl kustomize failed: {r.stderr.strip()}"):
            continue
        objs = [d for d in yaml.safe_load_all(r.stdout) if d]
        rendered[overlay] = objs
        check_overlay(c, copy.deepcopy(objs), r.stdout, overlay, src)
        check_secret_copy(c, objs, os.environ.get("VEIL_TEST_BIN"))
    with tempfile.TemporaryDirectory() as tmp:
        dev_secrets = os.path.join(tmp, "dev-secrets")
        c = Checker("make-dev-secrets")
        checkers.append(c)
        r = subprocess.run([os.path.join(src, "deploy", "k8s", "make-dev-secrets"), dev_secrets],
                           capture_output=True, text=True)
        if c.expect(r.returncode == 0, f"make-dev-secrets failed: {r.stderr.strip()}") and "dev" in rendered:
            check_dev_secrets(c, dev_secrets, rendered["dev"])
            bindir = os.environ.get("VEIL_TEST_BIN")
            if bindir:
                c = Checker("services run with the dev overlay's configuration")
                checkers.append(c)
                check_services_run(c, rendered["dev"], dev_secrets, bindir)
            else:
                print("check_k8s: note: VEIL_TEST_BIN is not set (tests/run sets it); the services were not run")
    c = Checker("unfinished work")
    checkers.append(c)
    for base in (os.path.join(src, "deploy", "k8s"), os.path.join(src, "deploy", "docker")):
        for d, _, names in os.walk(base):
            for n in names:
                with open(os.path.join(d, n), errors="replace") as f:
                    for i, line in enumerate(f, 1):
                        if re.search(r"\b(TODO|FIXME|XXX|CHANGEME)\b|placeholder", line, re.I):
                            c.fail(f"{os.path.relpath(os.path.join(d, n), src)}:{i}: {line.strip()}")
    c = Checker("deploy/docker/Dockerfile")
    checkers.append(c)
    with open(os.path.join(src, "deploy", "docker", "Dockerfile")) as f:
        text = f.read()
    ignore = os.path.join(src, ".dockerignore")
    dockerignore = open(ignore).read() if os.path.exists(ignore) else ""
    check_dockerfile(c, text, bootstrap_list(src), dockerignore)
    return report(checkers)


def self_test(src):
    """Each fixture names, in '# expect:' lines, violations it must produce."""
    fixtures = os.path.join(src, "tests", "deploy", "fixtures")
    results = []
    for name in sorted(os.listdir(fixtures)):
        path = os.path.join(fixtures, name)
        with open(path) as f:
            text = f.read()
        expects = re.findall(r"^# expect: (.+)$", text, re.M)
        profile = (re.findall(r"^# profile: (\w+)$", text, re.M) or ["dev"])[0]
        c = Checker(f"fixtures/{name}")
        if name.startswith("Dockerfile"):
            check_dockerfile(c, text, bootstrap_list(src), "# nothing ignored\n")
        else:
            objs = [d for d in yaml.safe_load_all(text) if d]
            check_overlay(c, objs, text, profile)
        t = Checker(f"self-test {name}")
        t.expect(expects, "fixture names no '# expect:' violation")
        for e in expects:
            t.expect(any(e in v for v in c.violations),
                     f"the checker did not report {e!r}; it reported: {c.violations}")
        results.append(t)
    # The run check must fail when a service cannot start: with key files left
    # group-readable (what a Secret volume under fsGroup gives), the pseudonym
    # service must refuse them.  Needs kubectl and the built binaries.
    bindir, kubectl = os.environ.get("VEIL_TEST_BIN"), shutil.which("kubectl")
    if bindir and kubectl and os.access(os.path.join(bindir, "pseudonym"), os.X_OK):
        r = subprocess.run([kubectl, "kustomize", os.path.join(src, "deploy", "k8s", "overlays", "dev")],
                           capture_output=True, text=True, check=True)
        objs = [d for d in yaml.safe_load_all(r.stdout) if d]
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([os.path.join(src, "deploy", "k8s", "make-dev-secrets"), tmp + "/dev"],
                           check=True, capture_output=True)
            c = Checker("group-readable keys")
            check_services_run(c, objs, tmp + "/dev", bindir, group_readable=True)
        t = Checker("self-test group-readable keys")
        t.expect(any("never saw SERVING" in v for v in c.violations),
                 f"the pseudonym service started with group-readable keys: {c.violations}")
        results.append(t)
    return report(results)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--self-test":
        sys.exit(self_test(args[1] if len(args) > 1 else "."))
    sys.exit(main(args[0] if args else "."))
