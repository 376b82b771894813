"""``edgeplane site init DIR --vertical ...``: a site folder from a vertical's reference deployment.

Each vertical's reference site is a site file inside its solution plugin's package, registered
through ``edgeplane_register_reference_sites`` (the repository's ``configs/*.yaml`` are links to
them); the core names no vertical. ``--from FILE`` starts from any other site file instead. The
site file's profiles are copied next to it, so the folder is self-contained.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from edgeplane.plugins import ReferenceSite, Registry

__all__ = ["InitResult", "init_site", "reference_site", "site_id_from_name"]


@dataclass
class InitResult:
    site_file: Path
    source: str
    site_id: str
    copied: list[Path] = field(default_factory=list)


def reference_site(vertical: str, registry: Registry) -> ReferenceSite:
    """The reference site ``vertical`` that an installed plugin registered."""
    sites = registry.reference_sites
    if vertical not in sites:
        known = ", ".join(sorted(sites)) or "none (install a solution plugin, e.g. pip install edgeplane-solar)"
        raise ValueError(f"no reference site {vertical!r}: the installed plugins offer {known}; "
                         "or start from a site file with --from FILE")
    return sites[vertical]


def site_id_from_name(name: str) -> str:
    """A site id (lowercase, digits, '-', '_') made from a human name: 'Plant 07 (Golden)' -> 'plant-07-golden'."""
    slug = re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-_")[:63]
    if not slug or not slug[0].isalnum():
        raise ValueError(f"cannot make a site id from {name!r}: give a name with letters or digits")
    return slug


def _with_identity(text: str, data: dict[str, Any], site_id: str, name: str | None) -> str:
    """The site file text with site.id (and site.name) changed, comments kept where possible."""
    wanted = dict(data)
    wanted["site"] = {**(data.get("site") or {}), "id": site_id, **({"name": name} if name else {})}
    old_id = str((data.get("site") or {}).get("id", ""))
    if old_id:
        # the id appears once in the site block, inline ({id: x}) or as a key (id: x)
        candidate = re.sub(rf"(\bid:\s*['\"]?){re.escape(old_id)}(['\"]?)", rf"\g<1>{site_id}\g<2>", text, count=1)
        old_name = (data.get("site") or {}).get("name")
        if name and old_name:
            # JSON strings are YAML strings: quoting this way keeps any name intact
            candidate = re.sub(rf"(\bname:\s*)(['\"]?){re.escape(str(old_name))}\2", lambda m: m.group(1) + json.dumps(name),
                               candidate, count=1)
        try:
            if yaml.safe_load(candidate) == wanted:
                return candidate
        except yaml.YAMLError:
            pass
    return "# written by 'edgeplane site init'\n" + yaml.safe_dump(wanted, sort_keys=False)


def _readme(result: InitResult, made_by: str, data: dict[str, Any]) -> str:
    devices = ", ".join(f"{n} ({(e or {}).get('connector')})" for n, e in (data.get("devices") or {}).items())
    has_sync = "sync" in data
    steps = [
        f"edgeplane validate {result.site_file.name}     # every key checked against the installed plugins",
        "edgeplane site certs .              # site key (0600), CSR, certificate, CA, downlink trust key",
        "edgeplane site doctor .             # preflight: devices, broker, clock, disk, certificates",
        f"edgeplane run {result.site_file.name}          # runs it; /metrics, /healthz, /readyz on the http port",
        "edgeplane site render . k8s         # or: systemd; deployment files in deploy/",
    ]
    if has_sync:
        steps.append("edgeplane cloud push-site . --cloud mqtts://BROKER:8883 --ca CA --cert CERT --key KEY   # signed desired state")
    lines = "\n".join(steps)
    return f"""# Site {result.site_id}

Made by `edgeplane site init {made_by}` from `{result.source}`.

Devices: {devices or 'none'}.

## Next steps

```sh
{lines}
```

1. Edit `{result.site_file.name}`: device addresses (`url:`), site location and time zone, the
   uplink broker (`sync.uplink.url`), limits of what solutions may command.
2. Certificates: `edgeplane site certs .` makes a lab CA when you give none. In the field, have
   `certs/site.csr` signed by your CA (or pass `--ca-cert/--ca-key`) and pass the cloud's
   downlink public key with `--trust-key`. Private keys are written 0600 and never printed; the
   lab CA and the downlink signing key go to the operator folder (`--operator-dir`, default
   `~/.config/edgeplane/operator`), never into this folder.
3. `edgeplane site doctor .` prints one PASS/FAIL line per check; fix every FAIL before going live.
4. `edgeplane cloud push-site .` (from edgeplane-cloud) sends what of this file the cloud may
   change (limits, solution parameters, polls, uplink policies, model settings), signed, as the
   site's desired state; the running site applies it without a restart. Devices, commands, files
   and keys change only on the site itself. `.edgeplane/pushed.yaml` remembers what was pushed
   last, so a parameter you delete here is deleted on the site at the next push.
5. Monitoring: import `configs/grafana-dashboard.json` from the edgeplane repository into
   Grafana, with Prometheus scraping the host's `/metrics`.
"""


def _absolutize(data: Any, base: Path, skip: set[str], path: str = "") -> list[str]:
    """Turn relative paths that exist next to the reference file (models, recordings) into absolute ones.

    The new site folder does not hold them; pointing at the originals keeps the site runnable.
    Returns the key paths changed, for the README.
    """
    changed: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if where in skip:
                continue
            if isinstance(value, str) and _looks_relative(value) and (base / value).exists():
                data[key] = str((base / value).resolve())
                changed.append(where)
            else:
                changed += _absolutize(value, base, skip, where)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            if isinstance(value, str) and _looks_relative(value) and (base / value).exists():
                data[i] = str((base / value).resolve())
                changed.append(f"{path}[{i}]")
            else:
                changed += _absolutize(value, base, skip, f"{path}[{i}]")
    return changed


def _looks_relative(value: str) -> bool:
    return ("/" in value or "." in value) and "://" not in value and "${" not in value and "{" not in value \
        and not value.startswith("/") and " " not in value and len(value) < 300


def init_site(folder: Path, vertical: str | None = None, name: str | None = None, *, registry: Registry | None = None,
              source_file: Path | None = None, force: bool = False) -> InitResult:
    """Create ``folder`` with ``site.yaml`` from a vertical's reference site (or ``source_file``), its
    profiles and a README."""
    if (vertical is None) == (source_file is None):
        raise ValueError("give either a vertical (--vertical) or a site file to start from (--from), not both")
    if source_file is not None:
        source, made_by, described = Path(source_file), f"--from {source_file}", str(source_file)
        if not source.is_file():
            raise ValueError(f"--from {source_file}: no such site file")
    else:
        assert vertical is not None
        if registry is None:
            from edgeplane.plugins import Plugins

            registry = Plugins.load().registry
        reference = reference_site(vertical, registry)
        source, made_by = reference.path, f"--vertical {vertical}"
        described = f"{source} (the {vertical} reference site of plugin {registry.reference_site_table.owners[vertical]})"
    folder = Path(folder)
    site_file = folder / "site.yaml"
    if site_file.exists() and not force:
        raise FileExistsError(f"{site_file} exists: choose another folder or pass --force to overwrite it")
    text = source.read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{source} is not a site file (a mapping at the top)")
    site_id = site_id_from_name(name) if name else str((data.get("site") or {}).get("id", vertical or "site"))
    folder.mkdir(parents=True, exist_ok=True)
    result = InitResult(site_file=site_file, source=described, site_id=site_id)

    # profiles are listed relative to the site file; copy them to the same place in the new folder
    # (one that lies outside the source's folder goes to profiles/ and the list is rewritten)
    profiles = list(data.get("profiles") or [])
    rewritten = []
    for rel in profiles:
        src = (source.parent / rel).resolve()
        inside = src.is_relative_to(source.parent.resolve())
        target_rel = Path(rel) if inside and not Path(rel).is_absolute() else Path("profiles") / src.name
        if src.is_file():
            (folder / target_rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, folder / target_rel)
            result.copied.append(folder / target_rel)
        elif src.is_dir():
            shutil.copytree(src, folder / target_rel, dirs_exist_ok=True)
            result.copied.append(folder / target_rel)
        rewritten.append(str(target_rel))
    absolute = _absolutize(data, source.parent, skip={"profiles"})
    if rewritten != [str(p) for p in profiles] or absolute:
        data["profiles"] = rewritten
        text = "# written by 'edgeplane site init'\n" + yaml.safe_dump(data, sort_keys=False)
    site_file.write_text(_with_identity(text, data, site_id, name))
    (folder / "README.md").write_text(_readme(result, made_by, data))
    return result
