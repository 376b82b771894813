"""The CLI of edgeplane-cloud: ``edgeplane cloud serve|ready|push|push-site|status|keygen|ingest``, ``edgeplane fleet``.

``cloud serve|push|status`` are the embedded back end (one process, SQLite), unchanged from when
they lived in the edge host. ``cloud push-site FOLDER`` publishes what of a site folder's file the
cloud may change (it was ``edgeplane site push``: pushing is the cloud's job, so the edge host
carries none of it). ``cloud ingest`` is one scale-out ingest worker (NATS JetStream ->
PostgreSQL). ``fleet`` works on the PostgreSQL store: labels, models, rollouts, the console.
Every ``fleet`` command takes ``--json``; bad input exits 2 with what to fix.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import click

from edgeplane.sync.signing import generate_keypair

from edgeplane_cloud.embedded import CloudServer, CloudStore, push_message

__all__ = ["cloud", "fleet", "with_deletions"]

_broker = click.option("--broker", default="mqtt://127.0.0.1:1883", show_default=True, help="mqtt:// or mqtts:// URL")
_data = click.option("--data", "data_dir", type=click.Path(file_okay=False), default="cloud-data", show_default=True,
                     help="folder of the cloud end's SQLite files")
_tls = [click.option("--ca", default=None, help="CA file"), click.option("--cert", default=None, help="client certificate"),
        click.option("--key", "tls_key", default=None, help="client key"),
        click.option("--username", default=None), click.option("--password", default=None, envvar="EDGEPLANE_CLOUD_PASSWORD")]


def _with_tls(func: Any) -> Any:
    for option in reversed(_tls):
        func = option(func)
    return func


@click.group(name="cloud")
def cloud() -> None:
    """The cloud end of the sync layer: serve site uplinks, push signed desired state, show status."""


@cloud.command()
@_broker
@_data
@click.option("--prefix", default="edgeplane", show_default=True)
@click.option("--http-port", type=int, default=None,
              help="serve /healthz and /readyz (broker subscription, store) on this port of 127.0.0.1; 0: any free port")
@click.option("--http-host", default="127.0.0.1", show_default=True, help="address for --http-port")
@_with_tls
def serve(broker: str, data_dir: str, prefix: str, http_port: int | None, http_host: str, ca: str | None,
          cert: str | None, tls_key: str | None, username: str | None, password: str | None) -> None:
    """Receive every site's uplink into SQLite until interrupted."""
    from edgeplane_cloud.health import HealthServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = CloudServer(broker, data_dir, prefix=prefix, ca=ca, cert=cert, key=tls_key, username=username, password=password)
    health = HealthServer(server.ready_checks(), http_port, http_host).start() if http_port is not None else None
    server.start()
    click.echo(f"cloud: receiving {prefix}/+/up/# from {broker} into {data_dir}", err=True)
    if health is not None:
        click.echo(f"cloud: readiness on {health.url} (liveness /healthz)", err=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        if health is not None:
            health.stop()
        server.stop()


@cloud.command()
@click.option("--url", required=True, help="the /readyz URL of `cloud serve --http-port` or `cloud ingest --health-port`")
@click.option("--wait", "wait_s", type=float, default=0.0, show_default=True,
              help="seconds to keep asking while it is not ready (0: ask once)")
@click.option("--json", "as_json", is_flag=True, help="print the readiness report as JSON")
def ready(url: str, wait_s: float, as_json: bool) -> None:
    """Exit 0 once the cloud process at URL reports ready (broker and store reachable), else 1 with why."""
    from edgeplane_cloud.health import NotReady, wait_ready

    try:
        report = wait_ready(url, wait_s)
    except NotReady as e:
        click.echo(str(e), err=True)
        raise SystemExit(1) from None
    click.echo(json.dumps(report) if as_json else "ready: " + ", ".join(f"{k} {v}" for k, v in report["checks"].items()))


@cloud.command()
@click.argument("site")
@click.argument("kind", type=click.Choice(["config", "model", "command"]))
@click.argument("args", nargs=-1)
@click.option("--signing-key", required=True, type=click.Path(exists=True, dir_okay=False), help="ed25519 private key (PEM)")
@click.option("--ttl", default=None, help="seconds until the message expires (commands need one)")
@click.option("--name", default=None, help="model name")
@click.option("--version", "model_version", default=None, help="model version")
@_broker
@_data
@click.option("--prefix", default="edgeplane", show_default=True)
@_with_tls
def push(site: str, kind: str, args: tuple[str, ...], signing_key: str, ttl: str | None, name: str | None,
         model_version: str | None, broker: str, data_dir: str, prefix: str, ca: str | None, cert: str | None,
         tls_key: str | None, username: str | None, password: str | None) -> None:
    """Publish a signed message to SITE.

    \b
    config OVERLAY.yaml               desired site-file fragment (merged onto the site's own file)
    model FILE --name N --version V   a model version (sent with its sha256)
    command DEVICE POINT VALUE --ttl S  a guarded write with an expiry
    """
    import yaml

    from edgeplane.config import parse_duration

    seconds = parse_duration(ttl) if ttl else None
    if kind == "config":
        if len(args) != 1:
            raise click.UsageError("push SITE config OVERLAY.yaml")
        body: dict[str, Any] = {"overlay": yaml.safe_load(Path(args[0]).read_text()) or {}}
    elif kind == "model":
        if len(args) != 1 or not name or not model_version:
            raise click.UsageError("push SITE model FILE --name NAME --version VERSION")
        data = Path(args[0]).read_bytes()
        body = {"name": name, "version": model_version, "filename": Path(args[0]).name,
                "sha256": hashlib.sha256(data).hexdigest(), "data": base64.b64encode(data).decode()}
    else:
        if len(args) != 3 or seconds is None:
            raise click.UsageError("push SITE command DEVICE POINT VALUE --ttl 60s")
        body = {"device": args[0], "point": args[1], "value": yaml.safe_load(args[2])}
    store = CloudStore(data_dir)
    message = push_message(broker, site, kind, body, signing_key, ttl=seconds, prefix=prefix, store=store,
                           ca=ca, cert=cert, key=tls_key, username=username, password=password)
    store.close()
    click.echo(f"pushed {kind} {message['id']} to {site}")


@cloud.command("push-site")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--cloud", "broker", required=True, help="The cloud broker, mqtt://HOST:1883 or mqtts://HOST:8883.")
@click.option("--signing-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="ed25519 private key the site trusts (default: the operator folder's cloud-signing.key, "
                   "$EDGEPLANE_OPERATOR_DIR or ~/.config/edgeplane/operator).")
@click.option("--prefix", default="edgeplane", show_default=True, help="Topic tree root.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="The cloud end's data folder, to record the desired state for 'edgeplane cloud status'.")
@click.option("--ca", default=None, help="CA file of the broker.")
@click.option("--cert", default=None, help="Client certificate of the cloud operator.")
@click.option("--key", "tls_key", default=None, help="Its private key.")
@click.option("--username", default=None)
@click.option("--password", default=None, envvar="EDGEPLANE_CLOUD_PASSWORD")
def push_site(folder: Path, broker: str, signing_key: Path | None, prefix: str, data_dir: str | None, ca: str | None,
              cert: str | None, tls_key: str | None, username: str | None, password: str | None) -> None:
    """Publish what of the site file in FOLDER the cloud may change (limits, solution parameters, polls, uplink
    policies, model settings) as signed desired state (retained), applied without a restart.
    Everything else (devices, commands, files, the broker, trusted keys) changes only on the site."""
    import yaml

    from edgeplane.provisioning.certs import operator_folder
    from edgeplane.provisioning.site_cli import read_site, validate_site
    from edgeplane.sync.downlink import allowed_only, remote_part

    raw = read_site(folder)
    validate_site(folder, raw, secrets_needed=False)
    key = signing_key or operator_folder() / "cloud-signing.key"
    if not key.is_file():
        raise click.ClickException(f"no signing key {key}: pass --signing-key (the key whose public half is in sync.trust.keys)")
    # the site merges an overlay onto its own file, where null deletes a key: what was pushed
    # before and is gone now is sent as null, so the site ends up with exactly this file
    last_pushed = folder / ".edgeplane" / "pushed.yaml"
    previous = yaml.safe_load(last_pushed.read_text()) if last_pushed.is_file() else None
    part, local_only = remote_part(raw)
    overlay, _ = allowed_only(with_deletions(remote_part(previous)[0] if isinstance(previous, dict) else {}, part), raw)
    if local_only:
        click.echo(f"note: not sent (changed only on the site itself, then restart or SIGHUP it): {', '.join(local_only)}")
    store = CloudStore(data_dir) if data_dir else None
    try:
        # secrets stay references (${env:...}); the site resolves them itself
        message = push_message(broker, str(raw["site"]["id"]), "config", {"overlay": overlay}, key, prefix=prefix,
                               store=store, ca=ca, cert=cert, key=tls_key, username=username, password=password)
    except (OSError, ValueError) as e:
        raise click.ClickException(f"cannot push to {broker}: {e}") from None
    finally:
        if store is not None:
            store.close()
    last_pushed.parent.mkdir(exist_ok=True)
    last_pushed.write_text(yaml.safe_dump(raw, sort_keys=False))
    click.echo(f"pushed desired config {message['id']} for site {raw['site']['id']!r} to {broker} "
               f"({prefix}/{raw['site']['id']}/down/config, retained)")


def with_deletions(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """``current``, plus ``None`` for every mapping key that ``previous`` had and ``current`` lacks."""
    out: dict[str, Any] = dict(current)
    for key, old in previous.items():
        if key not in current:
            out[key] = None
        elif isinstance(old, dict) and isinstance(current[key], dict):
            out[key] = with_deletions(old, current[key])
    return out


@cloud.command()
@_data
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def status(data_dir: str, as_json: bool) -> None:
    """Sites, last seen, backlog and twin differences."""
    store = CloudStore(data_dir)
    rows = store.status()
    store.close()
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        click.echo("no site has reported yet")
    for row in rows:
        seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["last_seen"])) if row["last_seen"] else "never"
        backlog = ", ".join(f"{k} {v}" for k, v in row["backlog"].items()) or "unknown"
        click.echo(f"{row['site']}: last seen {seen}; {row['readings']} readings in {row['records']} records, "
                   f"{row['duplicates']} duplicates dropped, {row['rejected']} rejected; backlog {backlog}")
        for diff in row["twin_differences"]:
            click.echo(f"  twin: {diff}")
        for reason, count in row["refused"].items():
            click.echo(f"  refused downlink: {reason} x{count}")


@cloud.command()
@click.argument("private_key", type=click.Path(dir_okay=False))
@click.argument("public_key", type=click.Path(dir_okay=False))
def keygen(private_key: str, public_key: str) -> None:
    """Make an ed25519 signing key pair; give the public key to sites (sync.trust.keys)."""
    click.echo(f"key id {generate_keypair(private_key, public_key)}")


@cloud.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ingest(args: tuple[str, ...]) -> None:
    """One scale-out ingest worker: NATS JetStream -> PostgreSQL (run several; --help for options)."""
    from edgeplane_cloud.ingest import main

    raise SystemExit(main(list(args)))


# -- fleet -------------------------------------------------------------------------------------

_dsn = click.option("--dsn", envvar="EDGEPLANE_CLOUD_DSN", required=True,
                    help="PostgreSQL connection string of the fleet store (or EDGEPLANE_CLOUD_DSN)")
_json = click.option("--json", "as_json", is_flag=True, help="print one JSON document")


def _open_fleet(dsn: str, signing_key: str | None = None, broker: str | None = None, prefix: str = "edgeplane") -> Any:
    import psycopg

    from edgeplane_cloud.broker import MqttPublisher
    from edgeplane_cloud.fleet import Fleet

    publisher = MqttPublisher(broker, f"edgeplane-fleet-{time.time_ns() % 10**9}") if broker else None
    try:
        fl = Fleet(dsn, signing_key=signing_key, publish=publisher.publish_many if publisher else None, prefix=prefix)
    except psycopg.OperationalError as e:
        if publisher:
            publisher.close()
        raise click.ClickException(f"cannot reach the fleet store {dsn.split('@')[-1]}: {e}") from None
    fl.publisher = publisher
    return fl


def _close_fleet(fl: Any) -> None:
    if fl.publisher is not None:
        fl.publisher.close()
    fl.close()


def _fleet_errors(func: Any) -> Any:
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from edgeplane_cloud.fleet import FleetError

        try:
            return func(*args, **kwargs)
        except FleetError as e:
            raise click.UsageError(str(e)) from None
    return wrapper


@click.group(name="fleet")
def fleet() -> None:
    """Fleet operations on the scale-out store: site labels, model versions, staged rollouts, the console."""


@fleet.command("sites")
@_dsn
@click.option("--selector", default=None, help="label=value[,label=value...]")
@_json
@_fleet_errors
def fleet_sites(dsn: str, selector: str | None, as_json: bool) -> None:
    """Sites with labels, last seen, backlog, health and twin differences."""
    fl = _open_fleet(dsn)
    try:
        rows = fl.sites(selector)
    finally:
        _close_fleet(fl)
    if as_json:
        click.echo(json.dumps(rows))
        return
    for r in rows:
        labels = ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items()))
        seen = time.strftime("%H:%M:%S", time.localtime(r["last_seen"])) if r["last_seen"] else "never"
        click.echo(f"{r['site']:<24} {r['health']:<11} seen {seen}  {r['readings']:>10} readings  "
                   f"dead {r['dead_letters']}  [{labels}]")
        for d in r["twin_differences"]:
            click.echo(f"    twin: {d}")


@fleet.command("label")
@_dsn
@click.argument("site")
@click.argument("labels", nargs=-1, required=True)
@_fleet_errors
def fleet_label(dsn: str, site: str, labels: tuple[str, ...]) -> None:
    """Set labels on SITE: edgeplane fleet label plant-7 region=eu vertical=solar hardware=ipc-4."""
    from edgeplane_cloud.fleet import parse_selector

    parsed = parse_selector(",".join(labels))
    fl = _open_fleet(dsn)
    try:
        fl.set_labels(site, parsed)
    finally:
        _close_fleet(fl)
    click.echo(f"{site}: {parsed}")


@fleet.command("model-add")
@_dsn
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", required=True)
@click.option("--version", "model_version", required=True)
@click.option("--model-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="ed25519 key that signs the model manifest (sites with inference.trust require it)")
@_json
@_fleet_errors
def fleet_model_add(dsn: str, path: str, name: str, model_version: str, model_key: str | None, as_json: bool) -> None:
    """Keep a model version with its manifest in the fleet store, to roll out."""
    fl = _open_fleet(dsn)
    try:
        manifest = fl.add_model(path, name, model_version, model_key=model_key)
    finally:
        _close_fleet(fl)
    click.echo(json.dumps(manifest) if as_json else f"model {name} {model_version} sha256 {manifest['sha256'][:12]} "
               f"{'signed' if manifest.get('signature') else 'unsigned'}")


@fleet.command("rollout")
@_dsn
@click.option("--broker", required=True, help="mqtt:// URL of a broker node the sites are on")
@click.option("--signing-key", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--selector", default="", help="label=value[,...]; empty: every site")
@click.option("--model", "model", default=None, help="NAME:VERSION of a model added with model-add")
@click.option("--config", "overlay", type=click.Path(exists=True, dir_okay=False), default=None,
              help="a desired config overlay (YAML)")
@click.option("--canary", default=0.05, show_default=True, help="share of the sites in the first batch")
@click.option("--batch-size", default=100, show_default=True)
@click.option("--gate-timeout", default=120.0, show_default=True, help="seconds a batch may take to report healthy")
@click.option("--prefix", default="edgeplane", show_default=True)
@_json
@_fleet_errors
def fleet_rollout(dsn: str, broker: str, signing_key: str, selector: str, model: str | None, overlay: str | None,
                  canary: float, batch_size: int, gate_timeout: float, prefix: str, as_json: bool) -> None:
    """Roll a model version or a config overlay out: canary, then batches behind a health gate."""
    import yaml

    if (model is None) == (overlay is None):
        raise click.UsageError("give exactly one of --model NAME:VERSION or --config OVERLAY.yaml")
    target: dict[str, Any]
    if model is not None:
        name, sep, version = model.partition(":")
        if not sep:
            raise click.UsageError(f"--model {model!r}: write NAME:VERSION")
        kind, target = "model", {"name": name, "version": version}
    else:
        assert overlay is not None  # exactly one of the two (checked above)
        doc = yaml.safe_load(Path(overlay).read_text())
        if not isinstance(doc, dict):
            raise click.UsageError(f"{overlay}: a config overlay is a YAML mapping (a fragment of a site file)")
        kind, target = "config", {"overlay": doc}
    fl = _open_fleet(dsn, signing_key, broker, prefix)
    try:
        rid = fl.start_rollout(kind, target, selector, canary=canary, batch_size=batch_size, gate_timeout=gate_timeout)
        started = time.monotonic()
        outcome = fl.run_rollout(rid, on_batch=None if as_json else
                                 lambda b, s: click.echo(f"rollout {rid}: batch {b} {s}", err=True))
        summary = {**fl.rollouts(rid)[0], "outcome": outcome, "seconds": round(time.monotonic() - started, 2)}
    finally:
        _close_fleet(fl)
    click.echo(json.dumps(summary) if as_json else f"rollout {rid}: {outcome} in {summary['seconds']} s "
               f"({summary['applied']} applied, {summary['failed']} failed, {summary['rolled_back']} rolled back)")
    if outcome != "done":
        raise SystemExit(1)


@fleet.command("status")
@_dsn
@click.argument("rollout", type=int, required=False)
@_json
@_fleet_errors
def fleet_status(dsn: str, rollout: int | None, as_json: bool) -> None:
    """Rollouts: state, progress, failures, rollbacks."""
    fl = _open_fleet(dsn)
    try:
        rows = fl.rollouts(rollout)
    finally:
        _close_fleet(fl)
    if rollout is not None and not rows:
        raise click.UsageError(f"no rollout {rollout}: run `edgeplane fleet status` for the list")
    if as_json:
        click.echo(json.dumps(rows))
        return
    for r in rows:
        click.echo(f"rollout {r['id']}: {r['kind']} {r['target'].get('name', '')} {r['target'].get('version', '')} "
                   f"{r['state']}; {r['applied']}/{r['sites']} applied, {r['failed']} failed, "
                   f"{r['rolled_back']} rolled back" + (f"; {r['error']}" if r["error"] else ""))


@fleet.command("rollback")
@_dsn
@click.argument("rollout", type=int)
@click.option("--broker", required=True)
@click.option("--signing-key", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--prefix", default="edgeplane", show_default=True)
@_json
@_fleet_errors
def fleet_rollback(dsn: str, rollout: int, broker: str, signing_key: str, prefix: str, as_json: bool) -> None:
    """Give every site ROLLOUT changed what it had before (new, higher revisions)."""
    fl = _open_fleet(dsn, signing_key, broker, prefix)
    try:
        n = fl.rollback(rollout, reason="rolled back by an operator")
    finally:
        _close_fleet(fl)
    click.echo(json.dumps({"rollout": rollout, "rolled_back": n}) if as_json else f"rollout {rollout}: {n} sites rolled back")


@fleet.command("console")
@_dsn
@click.option("--listen", default="127.0.0.1:8470", show_default=True, help="HOST:PORT")
@click.option("--broker", default=None, help="mqtt:// URL, to run rollouts from the console")
@click.option("--signing-key", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--prefix", default="edgeplane", show_default=True)
def fleet_console(dsn: str, listen: str, broker: str | None, signing_key: str | None, prefix: str) -> None:
    """Serve the fleet console (sites, rollouts, events, plots) until interrupted."""
    from edgeplane_cloud.console import ConsoleServer

    host, _, port = listen.rpartition(":")
    server = ConsoleServer(dsn, host=host or "127.0.0.1", port=int(port), broker=broker, signing_key=signing_key,
                           prefix=prefix)
    server.start()
    click.echo(f"fleet console on http://{server.host}:{server.port}/", err=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
