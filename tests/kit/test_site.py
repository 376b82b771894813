"""site init, certs and render: a site folder from a reference deployment, its keys, its manifests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from edgeplane.config import load_site
from edgeplane.provisioning.render import K8sOptions, render_k8s
from edgeplane.provisioning.site_init import init_site
from edgeplane.plugins import Plugins

from .conftest import new_ca, site_cmd

REPO = Path(__file__).resolve().parents[2]
SITES = Path(__file__).parent / "sites"  # small site files (no simulators) for the kit's tests
VERTICALS = {"solar": "solar-plant.yaml", "factory": "factory.yaml", "intersection": "intersection.yaml"}
K8S_VERSION = "1.30.0"


def validate_site(folder: Path):
    raw = yaml.safe_load((folder / "site.yaml").read_text())
    return load_site(folder / "site.yaml", Plugins.load_for_site(raw).registry)


@pytest.mark.parametrize("vertical", sorted(VERTICALS))
def test_init_makes_a_valid_site_folder_for_each_vertical(tmp_path: Path, vertical: str):
    folder = tmp_path / "site"
    out = site_cmd("init", folder, "--vertical", vertical, "--name", "Plant 07 (Golden)").output
    assert "site 'plant-07-golden'" in out
    site = validate_site(folder)
    assert site.id == "plant-07-golden"
    assert site.core.site.name == "Plant 07 (Golden)"
    assert site.devices, "a reference site has devices"
    readme = (folder / "README.md").read_text()
    assert "edgeplane site certs" in readme and "edgeplane site doctor" in readme
    for rel in yaml.safe_load((folder / "site.yaml").read_text()).get("profiles") or []:
        assert (folder / rel).exists(), f"profile {rel} was not copied"
    assert f"the {vertical} reference site" in out
    # one place per reference site: the repository's configs/ file is a link to the plugin's
    linked = REPO / "configs" / VERTICALS[vertical]
    assert linked.is_symlink() and "reference_sites" in str(linked.resolve())
    site_cmd("render", folder, "k8s")
    assert {d["kind"] for d in k8s_docs(folder)} >= {"ConfigMap", "Deployment"}


def test_init_from_a_site_file_keeps_comments(tmp_path: Path):
    result = init_site(tmp_path / "s", source_file=SITES / "solar.yaml")
    assert result.source == str(SITES / "solar.yaml")
    text = (tmp_path / "s" / "site.yaml").read_text()
    assert text.startswith("# Minimal solar plant site")  # comments survive the id change
    assert validate_site(tmp_path / "s").id == "solar-site"


def test_an_unknown_vertical_names_the_ones_installed(tmp_path: Path):
    out = site_cmd("init", tmp_path / "s", "--vertical", "solr", ok=False)
    assert out.exit_code == 2
    assert "no reference site 'solr'" in out.output and "factory, intersection, intersection-ntcip, solar" in out.output


def test_init_copies_profiles_and_refuses_to_overwrite(tmp_path: Path):
    configs = tmp_path / "configs"
    (configs / "profiles").mkdir(parents=True)
    (configs / "profiles" / "thermo.yaml").write_text(
        "profile: thermo\nconnector: memory\npoints: {temp: {type: float64, unit: degC, value: 20}}\n")
    (configs / "factory.yaml").write_text(
        "site: {id: ref-factory}\nprofiles: [profiles/thermo.yaml]\n"
        "devices: {t1: {connector: memory, profile: thermo}}\n")
    result = init_site(tmp_path / "s", name="Line 4", source_file=configs / "factory.yaml")
    assert (tmp_path / "s" / "profiles" / "thermo.yaml").is_file() and result.copied
    site = validate_site(tmp_path / "s")
    assert site.id == "line-4" and "temp" in site.devices["t1"].points
    site_cmd("init", tmp_path / "s", "--from", configs / "factory.yaml", ok=False)  # site.yaml exists


def test_certs_with_a_lab_ca(tmp_path: Path):
    folder = tmp_path / "site"
    site_cmd("init", folder, "--from", SITES / "solar.yaml", "--name", "plant-7")
    out = site_cmd("certs", folder).output
    assert "PRIVATE KEY" not in out and "BEGIN" not in out  # paths only, never key material
    operator = tmp_path / "operator"  # EDGEPLANE_OPERATOR_DIR (tests/conftest.py): never the site folder
    for key in (folder / "certs/site.key", operator / "lab-ca/ca.key", operator / "cloud-signing.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key
    assert not (folder / "lab-ca").exists()
    cert = x509.load_pem_x509_certificate((folder / "certs/site.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((folder / "certs/ca.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=plant-7"
    cert.verify_directly_issued_by(ca)
    csr = x509.load_pem_x509_csr((folder / "certs/site.csr").read_bytes())
    assert csr.is_signature_valid and csr.subject.rfc4514_string() == "CN=plant-7"
    assert csr.public_key().public_numbers() == cert.public_key().public_numbers()
    from edgeplane.sync.signing import load_public_key

    load_public_key(folder / "keys/cloud.pub")  # the downlink trust key the site file names
    # a second run keeps the key (the CSR an operator sent away stays valid)
    before = (folder / "certs/site.key").read_bytes()
    assert "kept  " in site_cmd("certs", folder).output
    assert (folder / "certs/site.key").read_bytes() == before


def test_certs_for_a_site_console_name_its_hosts(tmp_path: Path):
    from cryptography.x509.oid import ExtendedKeyUsageOID

    def usage_and_names(folder: Path) -> tuple[set, list[str]]:
        cert = x509.load_pem_x509_certificate((folder / "certs/site.pem").read_bytes())
        usage = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        try:
            names = [str(n.value) for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
        except x509.ExtensionNotFound:
            names = []
        return usage, names

    plain = tmp_path / "plain"
    site_cmd("init", plain, "--from", SITES / "solar.yaml", "--name", "plant-7")
    site_cmd("certs", plain)
    assert usage_and_names(plain) == ({ExtendedKeyUsageOID.CLIENT_AUTH}, [])  # the uplink's client certificate only

    folder = tmp_path / "site"
    site_cmd("init", folder, "--from", SITES / "solar.yaml", "--name", "plant-8")
    raw = yaml.safe_load((folder / "site.yaml").read_text())
    raw["http"] = {"host": "0.0.0.0", "port": 8712}
    raw["console"] = {"tls": {"cert": "certs/site.pem", "key": "certs/site.key"}}
    (folder / "site.yaml").write_text(yaml.safe_dump(raw))
    out = site_cmd("certs", folder).output  # bound to every address: no name a browser would use
    assert "run again with --host NAME" in out
    assert usage_and_names(folder)[1] == []
    out = site_cmd("certs", folder, "--host", "edge-8.plant.example", "--host", "10.0.0.8").output
    assert "also serves the site console over TLS as edge-8.plant.example, 10.0.0.8" in out
    usage, names = usage_and_names(folder)
    assert usage == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert names == ["edge-8.plant.example", "10.0.0.8"]
    raw["http"]["host"] = "192.168.7.20"  # one address: the default
    (folder / "site.yaml").write_text(yaml.safe_dump(raw))
    site_cmd("certs", folder)
    assert usage_and_names(folder)[1] == ["192.168.7.20"]


def test_certs_signed_by_the_operators_ca_with_the_clouds_trust_key(tmp_path: Path):
    from edgeplane.sync.signing import generate_keypair

    operator = new_ca(tmp_path / "operator", "Operator Root CA")
    generate_keypair(tmp_path / "cloud.key", tmp_path / "cloud.pub")
    folder = tmp_path / "site"
    site_cmd("init", folder, "--from", SITES / "factory.yaml")
    site_cmd("certs", folder, "--ca-cert", operator / "ca.pem", "--ca-key", operator / "ca.key",
             "--trust-key", tmp_path / "cloud.pub")
    cert = x509.load_pem_x509_certificate((folder / "certs/site.pem").read_bytes())
    assert cert.issuer.rfc4514_string() == "CN=Operator Root CA"
    assert not (folder / "lab-ca").exists()
    assert (folder / "keys/cloud.pub").read_bytes() == (tmp_path / "cloud.pub").read_bytes()
    # a CA key that is not the CA certificate's is refused with a message that says so
    other = new_ca(tmp_path / "other", "Other")
    out = site_cmd("certs", folder, "--ca-cert", operator / "ca.pem", "--ca-key", other / "ca.key", "--force", ok=False).output
    assert "is not the private key of" in out


def k8s_docs(folder: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all((folder / "deploy/k8s.yaml").read_text()) if d]
    for doc in docs:
        # the Kubernetes OpenAPI schema, strict: unknown fields are errors too (offline, bundled schemas)
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    return docs


def test_render_k8s_validates_against_the_kubernetes_schema(tmp_path: Path):
    folder = tmp_path / "site"
    site_cmd("init", folder, "--from", SITES / "solar.yaml", "--name", "plant-7")
    site_cmd("certs", folder)
    site_cmd("render", folder, "k8s", "--image", "registry.local/edgeplane:test")
    docs = {d["kind"]: d for d in k8s_docs(folder)}
    assert set(docs) == {"ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsNonRoot"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and "nvidia.com/gpu" not in container["resources"]["limits"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert any(m["mountPath"] == "/var/lib/edgeplane" for m in container["volumeMounts"])
    # secrets by reference: the TLS files come from a Secret that is named, never rendered
    secrets = [s["secret"] for s in volumes["site"]["projected"]["sources"] if "secret" in s]
    assert secrets and secrets[0]["name"] == "edgeplane-plant-7-tls"
    assert "PRIVATE KEY" not in (folder / "deploy/k8s.yaml").read_text()
    assert "create secret generic edgeplane-plant-7-tls" in (folder / "deploy/SECRETS.md").read_text()
    # the site file in the ConfigMap is valid, serves the probes on all interfaces and keeps its outbox on the volume
    in_pod = yaml.safe_load(docs["ConfigMap"]["data"]["site.yaml"])
    assert in_pod["http"]["host"] == "0.0.0.0" and in_pod["store"]["path"] == "/var/lib/edgeplane"
    (folder / "in-pod.yaml").write_text(docs["ConfigMap"]["data"]["site.yaml"])
    raw = yaml.safe_load((folder / "in-pod.yaml").read_text())
    assert load_site(folder / "in-pod.yaml", Plugins.load_for_site(raw).registry).id == "plant-7"


def test_render_k8s_requests_a_gpu_when_inference_prefers_cuda_and_references_env_secrets(tmp_path: Path):
    folder = tmp_path / "site"
    site_cmd("init", folder, "--from", SITES / "intersection.yaml")
    doc = yaml.safe_load((folder / "site.yaml").read_text())
    doc["inference"] = {"providers": ["cuda", "cpu"], "models": "models"}
    doc["sync"]["uplink"]["username"] = "site"
    doc["sync"]["uplink"]["password"] = "${env:UPLINK_PASSWORD}"
    (folder / "site.yaml").write_text(yaml.safe_dump(doc))
    site_cmd("render", folder, "k8s")
    deployment = next(d for d in k8s_docs(folder) if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in container["env"]}
    assert env["UPLINK_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "edgeplane-intersection-site-env", "key": "UPLINK_PASSWORD"}
    # CPU-first inference asks for no GPU
    rendered = render_k8s(folder, {**doc, "inference": {"providers": ["cpu"]}}, K8sOptions())
    assert "nvidia.com/gpu" not in rendered.files["k8s.yaml"]


def test_render_systemd_unit_is_hardened_and_verifies(tmp_path: Path):
    folder = tmp_path / "site"
    site_cmd("init", folder, "--from", SITES / "factory.yaml", "--name", "line-4")
    site_cmd("render", folder, "systemd", "--executable", "/bin/true")
    unit = (folder / "deploy/edgeplane-line-4.service").read_text()
    settings = [line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")]
    values = {}
    for key, value in settings:
        values.setdefault(key, []).append(value)
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "CapabilityBoundingSet": "", "User": "edgeplane", "Restart": "on-failure"}.items():
        assert values[key] == [value], key
    assert values["ExecStart"] == ["/bin/true run /etc/edgeplane/line-4/site.yaml --log-format json"]
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed to verify the unit: apt-get install systemd"
    done = subprocess.run([analyze, "verify", str(folder / "deploy/edgeplane-line-4.service")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_render_systemd_runs_a_host_with_decision_deadlines_under_sched_rr_when_asked(tmp_path: Path):
    folder = tmp_path / "site"
    site_cmd("init", folder, "--vertical", "intersection", "--name", "crossing-9")
    out = site_cmd("render", folder, "systemd", "--executable", "/bin/true").output
    assert "solutions signal have decision deadlines" in out and "--realtime-priority 1" in out
    unit_path = folder / "deploy/edgeplane-crossing-9.service"
    assert "CPUSchedulingPolicy" not in unit_path.read_text()  # never without being asked
    out = site_cmd("render", folder, "systemd", "--executable", "/bin/true", "--realtime-priority", "1").output
    assert "SCHED_RR priority 1" in out
    unit = unit_path.read_text()
    values = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert (values["CPUSchedulingPolicy"], values["CPUSchedulingPriority"], values["CPUSchedulingResetOnFork"]) == ("rr", "1", "yes")
    assert values["RestrictRealtime"] == "yes"  # the process itself still may not change its scheduling
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed to verify the unit: apt-get install systemd"
    done = subprocess.run([analyze, "verify", str(unit_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "is for systemd" in site_cmd("render", folder, "k8s", "--realtime-priority", "1", ok=False).output


def test_render_refuses_an_invalid_site_file(tmp_path: Path):
    folder = tmp_path / "site"
    site_cmd("init", folder, "--from", SITES / "intersection.yaml")
    text = (folder / "site.yaml").read_text().replace("high: 25", "hihg: 25")
    (folder / "site.yaml").write_text(text)
    out = site_cmd("render", folder, "k8s", ok=False).output
    assert "hihg" in out and "did you mean 'high'" in out
    assert not (folder / "deploy").exists()


def test_push_overlay_deletes_what_was_removed_since_the_last_push():
    from edgeplane_cloud.cli import with_deletions
    from edgeplane.sync.downlink import deep_merge

    before = {"site": {"id": "s"}, "devices": {"a": {"connector": "memory"}, "b": {"connector": "memory", "poll": 1}}}
    now = {"site": {"id": "s"}, "devices": {"a": {"connector": "memory"}}, "limits": {"a/x": {"max": 1}}}
    overlay = with_deletions(before, now)
    assert overlay["devices"]["b"] is None
    assert deep_merge(before, overlay) == now  # the site, merging onto what it had, gets exactly the new file
