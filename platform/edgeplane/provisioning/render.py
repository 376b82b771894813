"""``edgeplane site render DIR k8s|systemd``: deployment files for a site folder.

Kubernetes/K3s (one multi-document YAML):

* a ConfigMap with the site file (its ``http`` bound to 0.0.0.0 for the probes, its store on the
  data volume) and its profiles;
* a Deployment (one replica, ``Recreate``: one writer per outbox) with resource requests and
  limits, ``nvidia.com/gpu`` when the site's inference prefers CUDA, a non-root securityContext
  that drops every capability on a read-only root file system, ``/healthz`` and ``/readyz``
  probes, the outbox on a PersistentVolumeClaim, and Secrets mounted or referenced by name only
  (``edgeplane-<site>-tls`` with the certificates, ``edgeplane-<site>-env`` for ``${env:NAME}``);
* a PersistentVolumeClaim for the outbox and store, a Service for ``/metrics``.

The Secrets themselves are never rendered: the command prints the ``kubectl create secret`` lines.

systemd: one hardened unit (``edgeplane-<site>.service``) running as a dedicated user with its
state in ``/var/lib/edgeplane``, and the config in ``/etc/edgeplane/<site>``.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["K8sOptions", "Rendered", "render_k8s", "render_systemd", "site_secrets"]

CONTAINER_SITE_DIR = "/etc/edgeplane/site"
CONTAINER_DATA_DIR = "/var/lib/edgeplane"
DEFAULT_HTTP_PORT = 8710
_ENV_RE = re.compile(r"\$\{env:([^}]+)\}")
_FILE_RE = re.compile(r"\$\{file:([^}]+)\}")


@dataclass
class K8sOptions:
    image: str = "ghcr.io/edgeplane/edgeplane:0.1"
    namespace: str = "edgeplane"
    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_request: str = "512Mi"
    memory_limit: str = "2Gi"
    storage: str = "2Gi"
    storage_class: str | None = None
    gpu: bool | None = None  # None: from the site's inference providers


@dataclass
class Rendered:
    files: dict[str, str]
    notes: list[str] = field(default_factory=list)


class _ManifestDumper(yaml.SafeDumper):
    """Plain YAML for people and kubectl: no anchors, multi-line strings as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and all(line == line.rstrip() for line in value.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _represent_str)


def _dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_ManifestDumper, sort_keys=False, width=120)


def _walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk_strings(v)
    elif isinstance(value, str):
        yield value


def site_secrets(site: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Environment variables (``${env:NAME}``) and secret files (``${file:PATH}``, TLS files) a site needs."""
    env, files = [], []
    for text in _walk_strings(site):
        env += [m.strip() for m in _ENV_RE.findall(text)]
        files += [m.strip() for m in _FILE_RE.findall(text)]
    uplink = ((site.get("sync") or {}).get("uplink") or {})
    files += [uplink[k] for k in ("cert", "key", "ca") if isinstance(uplink.get(k), str) and "${" not in uplink[k]]
    for entry in (site.get("devices") or {}).values():
        security = (entry or {}).get("security") if isinstance(entry, dict) else None
        if isinstance(security, dict):
            files += [security[k] for k in ("certificate", "private_key", "server_certificate")
                      if isinstance(security.get(k), str) and "${" not in security[k]]
    return sorted(set(env)), sorted({f for f in files if not Path(f).is_absolute()})


def _trust_files(site: dict[str, Any]) -> list[str]:
    keys = list(((site.get("sync") or {}).get("trust") or {}).get("keys") or [])
    keys += list(((site.get("inference") or {}).get("trust") or {}).get("keys") or [])
    return [k for k in keys if isinstance(k, str) and not Path(k).is_absolute()]


def uses_gpu(site: dict[str, Any]) -> bool:
    """True when the site has an inference section whose first choice of provider is CUDA."""
    inference = site.get("inference")
    if not isinstance(inference, dict):
        return False
    providers = inference.get("providers") or ["cuda", "cpu"]
    return bool(providers) and providers[0] == "cuda"


def _config_key(rel: str) -> str:
    # ConfigMap keys allow [-._a-zA-Z0-9]; the projected volume puts each back at its path
    return re.sub(r"[^-._a-zA-Z0-9]", "_", rel)


def _container_site(site: dict[str, Any], http_port: int) -> dict[str, Any]:
    out = copy.deepcopy(site)
    out["http"] = {**(out.get("http") or {}), "host": "0.0.0.0", "port": http_port}
    out["store"] = {**(out.get("store") or {}), "path": CONTAINER_DATA_DIR}
    return out


def render_k8s(folder: Path, site: dict[str, Any], options: K8sOptions | None = None) -> Rendered:
    """The manifests of the site in ``folder`` (its parsed site file ``site``)."""
    options = options or K8sOptions()
    site_id = site["site"]["id"]
    base = f"edgeplane-{site_id}"
    labels = {"app.kubernetes.io/name": "edgeplane", "app.kubernetes.io/instance": site_id}
    http_port = int((site.get("http") or {}).get("port") or DEFAULT_HTTP_PORT)
    env_names, secret_files = site_secrets(site)
    gpu = uses_gpu(site) if options.gpu is None else options.gpu

    config_data = {"site.yaml": yaml.safe_dump(_container_site(site, http_port), sort_keys=False)}
    config_items = [{"key": "site.yaml", "path": "site.yaml"}]
    for rel in list(site.get("profiles") or []) + _trust_files(site):
        path = folder / rel
        if path.is_file():
            config_data[_config_key(rel)] = path.read_text()
            config_items.append({"key": _config_key(rel), "path": str(Path(rel))})
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": f"{base}-site", "namespace": options.namespace, "labels": labels},
                  "data": config_data}

    sources: list[dict[str, Any]] = [{"configMap": {"name": f"{base}-site", "items": config_items}}]
    if secret_files:
        sources.append({"secret": {"name": f"{base}-tls",
                                   "items": [{"key": _config_key(f), "path": str(Path(f)), "mode": 0o400} for f in secret_files]}})
    env: list[dict[str, Any]] = [{"name": "EDGEPLANE_DATA_DIR", "value": CONTAINER_DATA_DIR}]
    env += [{"name": name, "valueFrom": {"secretKeyRef": {"name": f"{base}-env", "key": name}}} for name in env_names]

    limits: dict[str, Any] = {"cpu": options.cpu_limit, "memory": options.memory_limit}
    if gpu:
        limits["nvidia.com/gpu"] = 1
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3}
    container = {
        "name": "edgeplane",
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["edgeplane", "run", f"{CONTAINER_SITE_DIR}/site.yaml", "--log-format", "json"],
        "ports": [{"name": "http", "containerPort": http_port, "protocol": "TCP"}],
        "env": env,
        "resources": {"requests": {"cpu": options.cpu_request, "memory": options.memory_request}, "limits": limits},
        "startupProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2, "failureThreshold": 60},
        "livenessProbe": probe,
        "readinessProbe": {**probe, "httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "site", "mountPath": CONTAINER_SITE_DIR, "readOnly": True},
            {"name": "data", "mountPath": CONTAINER_DATA_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        # the host flushes its outbox on SIGTERM; give it the time its supervision allows
        "terminationGracePeriodSeconds": 60,
        "containers": [container],
        "volumes": [
            {"name": "site", "projected": {"defaultMode": 0o440, "sources": sources}},
            {"name": "data", "persistentVolumeClaim": {"claimName": f"{base}-data"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        ],
    }
    if gpu:
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": base, "namespace": options.namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # two pods must never share one outbox
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels, "annotations": {
                "prometheus.io/scrape": "true", "prometheus.io/port": str(http_port), "prometheus.io/path": "/metrics"}},
                "spec": pod_spec},
        },
    }
    pvc_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": options.storage}}}
    if options.storage_class:
        pvc_spec["storageClassName"] = options.storage_class
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": f"{base}-data", "namespace": options.namespace, "labels": labels}, "spec": pvc_spec}
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": base, "namespace": options.namespace, "labels": labels},
               "spec": {"selector": labels, "ports": [{"name": "http", "port": http_port, "targetPort": "http"}]}}
    docs = [config_map, pvc, deployment, service]
    header = (f"# edgeplane site {site_id}: rendered by 'edgeplane site render . k8s'.\n"
              f"# Secrets are referenced, never rendered; create them first (see deploy/SECRETS.md).\n")
    text = header + "---\n".join(_dump(d) for d in docs)

    commands = [f"kubectl create namespace {options.namespace} --dry-run=client -o yaml | kubectl apply -f -"]
    if secret_files:
        parts = " ".join(f"--from-file={_config_key(f)}={shlex.quote(f)}" for f in secret_files)
        commands.append(f"kubectl -n {options.namespace} create secret generic {base}-tls {parts}")
    if env_names:
        parts = " ".join(f"--from-literal={n}=\"${n}\"" for n in env_names)
        commands.append(f"kubectl -n {options.namespace} create secret generic {base}-env {parts}")
    commands.append("kubectl apply -f deploy/k8s.yaml")
    secrets_doc = ("# Secrets for the site's Deployment\n\nRun in the site folder (the files stay on your machine; "
                   "the values of environment variables come from your shell):\n\n```sh\n" + "\n".join(commands) + "\n```\n")
    notes = [f"GPU: {'requests nvidia.com/gpu: 1 (inference prefers cuda)' if gpu else 'none requested'}"]
    return Rendered({"k8s.yaml": text, "SECRETS.md": secrets_doc}, notes)


def render_systemd(folder: Path, site: dict[str, Any], *, executable: str = "/opt/edgeplane/bin/edgeplane",
                   user: str = "edgeplane", realtime_priority: int | None = None) -> Rendered:
    """A hardened systemd unit for the site; the site folder is installed to /etc/edgeplane/<site>.

    ``realtime_priority``: run the host under SCHED_RR at that priority. A host with decision deadlines
    (a signal controller's 10 ms) misses them on a busy node because its threads, woken once a second,
    wait for a core behind ordinary processes; under SCHED_RR they do not (``benchmarks/RESULTS.md``,
    issue 17). systemd sets the policy as it starts the process, so the process itself still may not
    change it (``RestrictRealtime=yes``), and processes the host starts run as ordinary ones."""
    site_id = site["site"]["id"]
    env_names, _ = site_secrets(site)
    serial = any(isinstance(e, dict) and str(e.get("url", "")).startswith(("rtu://", "serial://", "/dev/"))
                 for e in (site.get("devices") or {}).values())
    gpu = uses_gpu(site)
    devices = []
    if serial:
        devices += ["DeviceAllow=char-ttyUSB rw", "DeviceAllow=char-ttyS rw", "SupplementaryGroups=dialout"]
    if gpu:
        devices += ["DeviceAllow=char-nvidiactl rw", "DeviceAllow=char-nvidia-uvm rw", "DeviceAllow=/dev/nvidia0 rw"]
    private_devices = "no" if (serial or gpu) else "yes"
    env_file = [f"EnvironmentFile=-/etc/edgeplane/{site_id}/secrets.env  # {', '.join(env_names)}"] if env_names else []
    realtime = [
        "CPUSchedulingPolicy=rr  # decision deadlines: every thread of the host ahead of ordinary processes",
        f"CPUSchedulingPriority={realtime_priority}",
        "CPUSchedulingResetOnFork=yes  # companions the host starts run as ordinary processes",
    ] if realtime_priority is not None else []
    lines = [
        f"# edgeplane site {site_id}: rendered by 'edgeplane site render . systemd'.",
        f"# Install: useradd --system --no-create-home {user}; copy the site folder to /etc/edgeplane/{site_id}",
        f"# (private keys 0640 root:{user}); cp this file /etc/systemd/system/; systemctl enable --now edgeplane-{site_id}",
        "[Unit]",
        f"Description=edgeplane edge host, site {site_id}",
        "Wants=network-online.target",
        "After=network-online.target",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=exec",
        f"User={user}",
        f"Group={user}",
        f"ExecStart={executable} run /etc/edgeplane/{site_id}/site.yaml --log-format json",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=60",
        "Restart=on-failure",
        "RestartSec=5",
        "Environment=EDGEPLANE_DATA_DIR=/var/lib/edgeplane",
        *env_file,
        *realtime,
        "StateDirectory=edgeplane",
        "StateDirectoryMode=0750",
        f"WorkingDirectory=/etc/edgeplane/{site_id}",
        "UMask=0077",
        "# hardening: no privileges, read-only system, only what the host needs",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        f"PrivateDevices={private_devices}",
        *devices,
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX" + (" AF_NETLINK" if gpu else ""),
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RemoveIPC=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged",
        "ReadWritePaths=/var/lib/edgeplane",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    # systemd does not allow comments after a value: move them to their own line
    text = "\n".join(f"# {line.split('  # ', 1)[1]}\n{line.split('  # ', 1)[0]}" if "  # " in line else line
                     for line in lines)
    notes = [f"serial ports: {'allowed' if serial else 'none'}", f"GPU devices: {'allowed' if gpu else 'none'}"]
    deadlines = sorted(name for name, spec in (site.get("solutions") or {}).items() if isinstance(spec, dict) and "deadline" in spec)
    if realtime_priority is not None:
        notes.append(f"scheduling: SCHED_RR priority {realtime_priority} (the kernel still keeps 5 % of each core for "
                     "ordinary processes: sched_rt_runtime_us)")
    elif deadlines:
        notes.append(f"solutions {', '.join(deadlines)} have decision deadlines: on a busy node their p99 grows past them "
                     "while the host waits for a core; --realtime-priority 1 runs the host under SCHED_RR")
    return Rendered({f"edgeplane-{site_id}.service": text}, notes)
