#!/usr/bin/python3
"""kube_local.py - the dev overlay's rendered manifests made playable by
`podman kube play` on one machine (tests/container/run_stack).

    kube_local.py RENDERED.yaml SECRETS.yaml SECRET_DIR IMAGE PGSOCK PGGID PORT_BASE OUT.yaml

Keeps the Deployments (init container, hardening, envFrom ConfigMaps, Secret
and ConfigMap volumes) and their ConfigMaps, and changes only what one
machine without Kubernetes needs: the image is the locally built one; every
Secret volume becomes a hostPath directory (SECRET_DIR/<secret>/<key>, made
here from SECRETS.yaml; podman 4.3's kube play crashes on secret volumes);
the pods share the host network, so each service gets its own loopback
ports from PORT_BASE (gRPC +0..4, health +10..14, metrics +20..24, admin
+30) and the gateway dials 127.0.0.1; PostgreSQL is the test cluster's unix
socket PGSOCK (group PGGID) in place of the CloudNativePG cluster.  And
four things podman 4.3 does differently from Kubernetes: kubelet's gRPC
probes and the containers' port lists are left out (podman runs no gRPC
probe and refuses port mappings on the host network); the ConfigMaps'
values are inlined as env (podman lets envFrom override env); the restart
policy is OnFailure (under Always podman restarts the finished init
container while removing it); each pod's emptyDir and ConfigMap volume get
a name of this run (podman keeps them as named volumes shared by name).
Jobs, Services, NetworkPolicies, ServiceAccounts, the Namespace and the
CloudNativePG resources are left out: kube play has no use for them.
"""
import base64
import os
import sys

import yaml

SERVICES = ["gateway", "vault", "consent", "revocation", "pseudonym"]


def main(rendered, secrets, secret_dir, image, pgsock, pggid, base, out):
    base = int(base)
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    made = [d for d in yaml.safe_load_all(open(secrets)) if d]
    for s in made:
        if s["kind"] != "Secret":
            continue
        d = os.path.join(secret_dir, s["metadata"]["name"])
        os.makedirs(d, exist_ok=True)
        for key, value in (s.get("data") or {}).items():
            path = os.path.join(d, key)
            with open(path, "wb") as f:
                f.write(base64.b64decode(value))
            os.chmod(path, 0o644)  # read by the init container, which makes owner-only copies
    port = {svc: base + i for i, svc in enumerate(SERVICES)}
    cms = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}
    keep = []
    for d in docs:
        if d["kind"] == "ConfigMap":
            keep.append(d)
        if d["kind"] != "Deployment":
            continue
        svc = d["metadata"]["name"]
        i = SERVICES.index(svc)
        pod = d["spec"]["template"]["spec"]
        pod.setdefault("securityContext", {})["supplementalGroups"] = [int(pggid)]
        # podman 4.3 makes an emptyDir a named volume shared by every pod that
        # names it the same: give each pod's its own name.
        renamed = {}
        for v in pod.get("volumes") or []:
            if "emptyDir" in v:
                renamed[v["name"]] = v["name"] = f"{svc}-{v['name']}-{base}"
        for c in (pod.get("initContainers") or []) + pod["containers"]:
            for m in c.get("volumeMounts") or []:
                m["name"] = renamed.get(m["name"], m["name"])
        for v in pod.get("volumes") or []:
            if "configMap" in v:  # podman keeps it as a named volume: one per run
                v["configMap"]["name"] = f"{v['configMap']['name']}-{base}"
            if "secret" in v:
                name = v.pop("secret")["secretName"]
                os.makedirs(os.path.join(secret_dir, name), exist_ok=True)
                v["hostPath"] = {"path": os.path.join(secret_dir, name), "type": "Directory"}
        pod["volumes"].append({"name": "pgsock", "hostPath": {"path": pgsock, "type": "Directory"}})
        for c in (pod.get("initContainers") or []) + pod["containers"]:
            c["image"] = image
        main_ctr = pod["containers"][0]
        main_ctr.pop("ports", None)  # the host network: ports need no mapping (podman refuses one)
        main_ctr.pop("readinessProbe", None)
        main_ctr.pop("livenessProbe", None)
        main_ctr.setdefault("volumeMounts", []).append({"name": "pgsock", "mountPath": "/pgsock"})
        env = {
            "VEIL_LISTEN_ADDR": f"127.0.0.1:{port[svc]}",
            "VEIL_HEALTH_ADDR": f"127.0.0.1:{base + 10 + i}",
            "VEIL_METRICS_ADDR": f"127.0.0.1:{base + 20 + i}",
            "VEIL_DRAIN_DELAY_MS": "0",
        }
        if svc != "pseudonym":
            env["VEIL_DATABASE_URL"] = f"host=/pgsock dbname=kp_{svc} user=kp_{svc}"
        if svc == "gateway":
            for other in SERVICES[1:]:
                env[f"GATEWAY_{other.upper()}_ADDR"] = f"127.0.0.1:{port[other]}"
            env["GATEWAY_ADMIN_ADDR"] = f"127.0.0.1:{base + 30}"
        # podman 4.3 lets envFrom override env (Kubernetes does the reverse), so the
        # ConfigMaps' values are inlined here, the overrides last.
        merged = {}
        for ref in main_ctr.pop("envFrom", []) or []:
            merged.update(cms[ref["configMapRef"]["name"]])
        merged.update(env)
        main_ctr["env"] = [{"name": k, "value": v} for k, v in merged.items()]
        # podman applies the pod's restart policy to init containers too: with
        # Always it restarts the finished secret-files container while removing it
        pod["restartPolicy"] = "OnFailure"
        d["metadata"]["name"] = f"{svc}-{base}"  # pods <svc>-<base>-pod-0: runs side by side
        keep.append(d)
    for m in made:
        if m["kind"] == "ConfigMap":  # vault-proofing, named per run like its volume
            m["metadata"]["name"] = f"{m['metadata']['name']}-{base}"
            keep.append(m)
    with open(out, "w") as f:
        yaml.safe_dump_all(keep, f)


if __name__ == "__main__":
    if len(sys.argv) != 9:
        sys.exit(__doc__)
    main(*sys.argv[1:])
