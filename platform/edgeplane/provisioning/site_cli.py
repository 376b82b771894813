"""``edgeplane site init|certs|revoke|render|doctor``: commission a site folder.

Pushing a site file's remote part as signed desired state is the cloud end's job:
``edgeplane cloud push-site`` (the ``edgeplane-cloud`` distribution) uses :func:`read_site` and
:func:`validate_site` from here.

A site folder holds ``site.yaml``, its profiles, ``certs/``, ``keys/`` and ``deploy/``.
Exit codes: 0 ok, 1 a check or action failed, 2 usage or an invalid site file.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from edgeplane.errors import SiteProblem

__all__ = ["read_site", "site_group", "validate_site"]

_folder = click.argument("folder", type=click.Path(file_okay=False, path_type=Path))


def read_site(folder: Path) -> dict[str, Any]:
    from edgeplane.config import read_yaml_file
    from edgeplane.errors import SiteError

    path = folder / "site.yaml"
    if not path.exists():
        raise click.ClickException(f"no site file {path}: run 'edgeplane site init {folder} --vertical ...' first")
    try:
        data, _ = read_yaml_file(path)  # bounded: size, encoding, aliases, nesting, duplicate keys
    except SiteError as e:
        click.echo(str(e), err=True)
        sys.exit(2)
    if not isinstance(data, dict) or not isinstance(data.get("site"), dict) or "id" not in data["site"]:
        raise click.ClickException(f"{path}: no 'site: {{id: ...}}' section: it is not a site file")
    return data


def _is_secret_problem(problem: SiteProblem) -> bool:
    return ("environment variable" in problem.message and "is not set" in problem.message) \
        or problem.message.startswith("cannot read secret file")


def validate_site(folder: Path, raw: dict[str, Any], *, secrets_needed: bool = True) -> None:
    """Exit 2 with the problems if the site file is invalid.

    With ``secrets_needed=False`` (rendering deployment files on a workstation) unresolvable
    ``${env:}``/``${file:}`` references are noted, not fatal: they resolve where the site runs.
    """
    from edgeplane.config import load_site
    from edgeplane.errors import SiteError
    from edgeplane.plugins import Plugins

    try:
        load_site(folder / "site.yaml", Plugins.load_for_site(raw).registry)
    except SiteError as e:
        rest = [p for p in e.problems if secrets_needed or not _is_secret_problem(p)]
        if rest:
            click.echo(str(SiteError(rest)) if len(rest) != len(e.problems) else str(e), err=True)
            sys.exit(2)
        for problem in e.problems:
            click.echo(f"note: {problem.path}: {problem.message} here; it must resolve where the site runs")


@click.group(name="site")
def site_group() -> None:
    """Commission a site folder: init, certs, revoke, render, doctor (pushing is `edgeplane cloud push-site`)."""


@site_group.command("init")
@_folder
@click.option("--vertical", default=None,
              help="The reference deployment to start from, as the installed plugins offer them "
                   "(solar, factory, intersection with this repository's solutions).")
@click.option("--from", "source_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Start from this site file instead of a reference deployment.")
@click.option("--name", default=None, help="The site's name; its id is made from it (e.g. 'Plant 07' -> plant-07).")
@click.option("--force", is_flag=True, help="Overwrite an existing site.yaml.")
def init(folder: Path, vertical: str | None, source_file: Path | None, name: str | None, force: bool) -> None:
    """Create FOLDER with a reference site file, its device profiles and a README of next steps."""
    from edgeplane.provisioning.site_init import init_site

    try:
        result = init_site(folder, vertical, name, source_file=source_file, force=force)
    except FileExistsError as e:
        raise click.ClickException(str(e)) from None
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"created {result.site_file} (site {result.site_id!r}, from {result.source})")
    for path in result.copied:
        click.echo(f"  copied {path}")
    click.echo(f"next: read {folder / 'README.md'}")


@site_group.command("certs")
@_folder
@click.option("--ca-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="CA certificate to sign with.")
@click.option("--ca-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="That CA's private key.")
@click.option("--trust-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The cloud's ed25519 public key for signed downlink messages (default: a new lab key pair).")
@click.option("--days", default=365, show_default=True, help="Validity of the site certificate.")
@click.option("--force", is_flag=True, help="Make a new site key even if one exists.")
@click.option("--operator-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the lab CA and the downlink signing key live, never inside FOLDER "
                   "(default: $EDGEPLANE_OPERATOR_DIR or ~/.config/edgeplane/operator).")
@click.option("--host", "hosts", multiple=True, metavar="NAME|IP",
              help="A name or address browsers reach the site console at (repeat for each): the certificate then "
                   "also serves the console over TLS (default: the site's http.host, when it has a console: section "
                   "and names one host).")
def certs(folder: Path, ca_cert: Path | None, ca_key: Path | None, trust_key: Path | None, days: int, force: bool,
          operator_dir: Path | None, hosts: tuple[str, ...]) -> None:
    """Site key (0600) and certificate (CN = site id), a CSR for an external CA, and the downlink trust key."""
    from edgeplane.provisioning.certs import provision_certs

    raw = read_site(folder)
    site_id = str(raw["site"]["id"])
    names = list(hosts) or _console_hosts(raw)
    try:
        result = provision_certs(folder, site_id, ca_cert=ca_cert, ca_key=ca_key, trust_key=trust_key, days=days,
                                 force=force, operator_dir=operator_dir, hosts=names)
    except ValueError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    for path in result.written:
        mode = f" (mode {path.stat().st_mode & 0o777:o})" if path.suffix == ".key" else ""
        click.echo(f"wrote {path}{mode}")
    for path in result.kept:
        click.echo(f"kept  {path}")
    for note in result.notes:
        click.echo(f"note: {note}")
    if names:
        click.echo(f"note: certs/site.pem also serves the site console over TLS as {', '.join(names)}")
    elif isinstance(raw.get("console"), dict):
        click.echo("note: the site has a console: section but certs/site.pem names no host, so browsers will refuse "
                   "it for the console's TLS: run again with --host NAME (and --host IP) for each name they use")
    _explain_references(folder, raw)


def _console_hosts(raw: dict[str, Any]) -> list[str]:
    """The console's one host from the site file (``http.host``), when the site has a console and
    binds it to one address; a wildcard bind (0.0.0.0, ::) names no host a browser uses."""
    http = raw.get("http")
    host = str((http.get("host") if isinstance(http, dict) else None) or "127.0.0.1")
    if not isinstance(raw.get("console"), dict) or host in ("0.0.0.0", "::", ""):
        return []
    return [host]


@site_group.command("revoke")
@click.argument("certificates", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ca-cert", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The CA that issued them.")
@click.option("--ca-key", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="That CA's private key (the operator's, never a site's).")
@click.option("--crl", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The revocation list the broker reads (Mosquitto: crlfile); made if absent, else extended.")
@click.option("--days", default=30, show_default=True, help="Validity of the list: issue it again before then.")
def revoke(certificates: tuple[Path, ...], ca_cert: Path, ca_key: Path, crl: Path, days: int) -> None:
    """Revoke site CERTIFICATES: add them to the CA's CRL, which the broker checks at every connect."""
    from edgeplane.provisioning.certs import revoke_certificates

    try:
        added = revoke_certificates(crl, ca_cert, ca_key, list(certificates), days=days)
    except ValueError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    for cert in added:
        click.echo(f"revoked serial {cert.serial_number:x} ({cert.subject.rfc4514_string()})")
    if len(added) < len(certificates):
        click.echo(f"{len(certificates) - len(added)} already revoked")
    click.echo(f"wrote {crl}: valid {days} days; the broker must read it (Mosquitto: 'crlfile {crl}' in the "
               "listener; SIGHUP makes Mosquitto 2 read it again) and get a new one before it expires")


def _explain_references(folder: Path, raw: dict[str, Any]) -> None:
    """Say which site-file keys should point at the files just written, if they do not."""
    sync = raw.get("sync") if isinstance(raw.get("sync"), dict) else None
    if sync is None:
        click.echo("note: the site has no 'sync:' section; to use these with the cloud uplink add:\n"
                   "  sync: {uplink: {url: mqtts://BROKER:8883, cert: certs/site.pem, key: certs/site.key, ca: certs/ca.pem},\n"
                   "         trust: {keys: [keys/cloud.pub]}}")
        return
    uplink = sync.get("uplink") or {}
    wanted = {"cert": "certs/site.pem", "key": "certs/site.key", "ca": "certs/ca.pem"}
    wrong = {k: v for k, v in wanted.items() if uplink.get(k) != v}
    if wrong:
        click.echo("note: set in site.yaml under sync.uplink: " + ", ".join(f"{k}: {v}" for k, v in wrong.items()))
    if "keys/cloud.pub" not in ((sync.get("trust") or {}).get("keys") or []):
        click.echo("note: add keys/cloud.pub to sync.trust.keys in site.yaml")


@site_group.command("render")
@_folder
@click.argument("target", type=click.Choice(["k8s", "systemd"]))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the files (default FOLDER/deploy).")
@click.option("--image", default="ghcr.io/edgeplane/edgeplane:0.1", show_default=True, help="Container image (k8s).")
@click.option("--namespace", default="edgeplane", show_default=True, help="Kubernetes namespace (k8s).")
@click.option("--gpu/--no-gpu", default=None, help="Request nvidia.com/gpu (default: when inference prefers cuda).")
@click.option("--cpu", "cpu_limit", default="2", show_default=True, help="CPU limit (k8s).")
@click.option("--memory", "memory_limit", default="2Gi", show_default=True, help="Memory limit (k8s).")
@click.option("--storage", default="2Gi", show_default=True, help="Size of the outbox volume (k8s).")
@click.option("--executable", default="/opt/edgeplane/bin/edgeplane", show_default=True, help="edgeplane's path (systemd).")
@click.option("--realtime-priority", type=click.IntRange(1, 99), default=None,
              help="Run the host under SCHED_RR at this priority (systemd), so decision deadlines hold on a busy node.")
def render(folder: Path, target: str, output: Path | None, image: str, namespace: str, gpu: bool | None,
           cpu_limit: str, memory_limit: str, storage: str, executable: str, realtime_priority: int | None) -> None:
    """Render Kubernetes/K3s manifests or a hardened systemd unit for the site in FOLDER."""
    from edgeplane.provisioning.render import K8sOptions, render_k8s, render_systemd

    raw = read_site(folder)
    validate_site(folder, raw, secrets_needed=False)
    if target == "k8s" and realtime_priority is not None:
        click.echo("error: --realtime-priority is for systemd: a pod needs CAP_SYS_NICE and a real-time CPU budget from "
                   "its node for SCHED_RR; render systemd, or drop the option", err=True)
        sys.exit(2)
    if target == "k8s":
        rendered = render_k8s(folder, raw, K8sOptions(image=image, namespace=namespace, gpu=gpu, cpu_limit=cpu_limit,
                                                      memory_limit=memory_limit, storage=storage))
    else:
        rendered = render_systemd(folder, raw, executable=executable, realtime_priority=realtime_priority)
    out = output or folder / "deploy"
    out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.files.items():
        (out / name).write_text(text)
        click.echo(f"wrote {out / name}")
    for note in rendered.notes:
        click.echo(f"note: {note}")


@site_group.command("doctor")
@_folder
@click.option("--timeout", default=5.0, show_default=True, help="Seconds each network check may take.")
@click.option("--ntp", default="pool.ntp.org", show_default=True, help="NTP server for the clock check (HOST[:PORT]); '' to skip.")
@click.option("--max-skew", default=2.0, show_default=True, help="Largest clock offset that passes, in seconds.")
@click.option("--warn-days", default=30, show_default=True, help="Fail certificates that expire sooner than this.")
def doctor(folder: Path, timeout: float, ntp: str, max_skew: float, warn_days: int) -> None:
    """Preflight checks with a PASS/FAIL line each: site file, devices, broker, clock, disk, certificates."""
    from edgeplane.provisioning.doctor import run_doctor

    read_site(folder)
    checks = asyncio.run(run_doctor(folder, timeout=timeout, ntp=ntp or None, max_skew=max_skew, warn_days=warn_days))
    for check in checks:
        click.echo(check.line())
    failed = [c for c in checks if c.passed is False]
    click.echo(f"{sum(c.passed is True for c in checks)} passed, {len(failed)} failed, "
               f"{sum(c.passed is None for c in checks)} skipped")
    if failed:
        sys.exit(1)
