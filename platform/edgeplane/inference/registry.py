"""The model registry on disk: ``<root>/<name>/<version>/{model.onnx, manifest.json}``.

A registry has one writable root (the site's ``inference.models`` folder, where ``edgeplane
models add`` writes) and any number of read-only roots (folders plugins ship through the
``edgeplane_register_models`` hook). A name in the writable root hides the same name elsewhere.

Everything here is blocking file I/O: the service calls it from a worker thread.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from edgeplane.inference.errors import IntegrityError, ManifestError, ModelNotFoundError
from edgeplane.inference.manifest import NAME_RE, ModelManifest, Provenance, file_sha256, read_onnx_signature
from edgeplane.inference.trust import TrustPolicy, sign_manifest

__all__ = ["ModelEntry", "ModelRegistry", "VerifiedModel", "version_key"]

MANIFEST = "manifest.json"


def version_key(version: str) -> tuple[Any, ...]:
    """Sort key for versions: numeric parts compare as numbers ('10' > '9', '1.10' > '1.9')."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[._-]", version))


@dataclass(frozen=True)
class ModelEntry:
    """One model version found on disk (its manifest not yet verified against the file)."""

    name: str
    version: str
    folder: Path
    writable: bool

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def manifest(self) -> ModelManifest:
        manifest = ModelManifest.read(self.manifest_path)
        if (manifest.name, manifest.version) != (self.name, self.version):
            raise ManifestError(
                f"{self.manifest_path} describes {manifest.name!r} version {manifest.version!r} but lies in "
                f"{self.name}/{self.version}/: move it or re-add the model"
            )
        return manifest

    def model_path(self, manifest: ModelManifest) -> Path:
        return self.folder / manifest.file


@dataclass(frozen=True)
class VerifiedModel:
    """A model whose bytes matched its manifest's sha256 and passed the trust policy."""

    entry: ModelEntry
    manifest: ModelManifest
    model_bytes: bytes
    trust: str  # "unsigned" or "signed by <key id>"


class ModelRegistry:
    """Models on disk, by name and version."""

    def __init__(self, root: Path, extra_roots: Iterable[Path] = ()):
        self.root = Path(root)
        self.extra_roots = [Path(r) for r in extra_roots]

    def _roots(self) -> list[tuple[Path, bool]]:
        return [(self.root, True), *((r, False) for r in self.extra_roots)]

    def names(self) -> list[str]:
        found: set[str] = set()
        for root, _ in self._roots():
            if root.is_dir():
                found.update(p.name for p in root.iterdir() if p.is_dir() and NAME_RE.match(p.name) and self._versions_in(p))
        return sorted(found)

    @staticmethod
    def _versions_in(folder: Path) -> list[str]:
        return [p.name for p in folder.iterdir() if p.is_dir() and (p / MANIFEST).exists()] if folder.is_dir() else []

    def _home(self, name: str) -> tuple[Path, bool] | None:
        for root, writable in self._roots():
            if self._versions_in(root / name):
                return root / name, writable
        return None

    def versions(self, name: str) -> list[str]:
        """The versions of ``name``, oldest first."""
        home = self._home(name)
        return sorted(self._versions_in(home[0]), key=version_key) if home else []

    def entry(self, name: str, version: str | None = None) -> ModelEntry:
        """A model version (the newest when ``version`` is None)."""
        home = self._home(name)
        if home is None:
            known = ", ".join(self.names()) or "none"
            raise ModelNotFoundError(
                f"no model {name!r} in the registry ({self.root}); known models: {known}. "
                f"Add it with `edgeplane models add FILE --name {name} --version 1`"
            )
        versions = sorted(self._versions_in(home[0]), key=version_key)
        if version is None:
            version = versions[-1]
        elif version not in versions:
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}; it has {', '.join(versions)}")
        return ModelEntry(name, version, home[0] / version, home[1])

    def entries(self) -> list[ModelEntry]:
        return [self.entry(name, version) for name in self.names() for version in self.versions(name)]

    def verify(self, name: str, version: str | None, trust: TrustPolicy) -> VerifiedModel:
        """Read a model, check its sha256 and signature; raise a clear error if either fails."""
        entry = self.entry(name, version)
        manifest = entry.manifest()
        path = entry.model_path(manifest)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ManifestError(
                f"model {name!r} version {entry.version!r}: cannot read {path}: {e.strerror}; restore it or re-add the model"
            ) from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != manifest.sha256:
            raise IntegrityError(
                f"model {name!r} version {entry.version!r} is refused: sha256 of {path} is {digest[:16]}..., "
                f"its manifest says {manifest.sha256[:16]}... (the file was changed or corrupted). Restore the "
                f"original file, or add the new one as a new version with `edgeplane models add`"
            )
        status = trust.check(manifest, str(entry.manifest_path))
        return VerifiedModel(entry, manifest, data, status)

    def add(
        self,
        source: Path,
        name: str,
        version: str,
        provenance: Provenance | None = None,
        *,
        sign_key: Any = None,
        replace: bool = False,
        manifest: ModelManifest | None = None,
    ) -> ModelManifest:
        """Copy an ONNX file into the writable root with a new manifest (signed if ``sign_key``).

        ``manifest``: keep this one (and its signature) instead, e.g. the signed manifest a model
        from the fleet travels with; it must describe exactly this file (name, version, sha256,
        size, inputs and outputs), else :class:`ManifestError`."""
        source = Path(source)
        if not source.is_file():
            raise ManifestError(f"{source} is not a file: give the path of an .onnx model")
        try:
            inputs, outputs = read_onnx_signature(source)
        except Exception as e:  # noqa: BLE001 - onnx raises many kinds for a bad file
            raise ManifestError(f"{source} is not a readable ONNX model: {type(e).__name__}: {e}") from None
        if manifest is not None:
            actual = {"name": name, "version": version, "sha256": file_sha256(source), "size": source.stat().st_size,
                      "inputs": inputs, "outputs": outputs}
            wrong = [k for k, v in actual.items() if getattr(manifest, k) != v]
            if wrong:
                raise ManifestError(f"the manifest that came with model {name} {version} does not describe its file "
                                    f"({', '.join(wrong)} differ): refused; publish the model with its own manifest")
        manifest = manifest or ModelManifest(
            name=name,
            version=version,
            sha256=file_sha256(source),
            size=source.stat().st_size,
            inputs=inputs,
            outputs=outputs,
            provenance=provenance or Provenance(),
        )
        if sign_key is not None:
            manifest = sign_manifest(manifest, sign_key)
        folder = self.root / name / version
        if (folder / MANIFEST).exists() and not replace:
            raise ManifestError(
                f"model {name!r} version {version!r} already exists in {self.root}: pick a new version "
                f"(versions are immutable so that a node can always roll back)"
            )
        folder.mkdir(parents=True, exist_ok=True)
        # write the model first and the manifest last: a half-added model has no manifest and is ignored
        tmp = folder / (manifest.file + ".tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(folder / manifest.file)
        tmp_manifest = folder / (MANIFEST + ".tmp")
        tmp_manifest.write_text(manifest.to_json())
        tmp_manifest.replace(folder / MANIFEST)
        return manifest

    def remove(self, name: str, version: str | None = None) -> list[str]:
        """Delete one version (or, with ``version=None``, every version) of a model in the writable root."""
        home = self.root / name
        versions = self._versions_in(home)
        if not versions:
            raise ModelNotFoundError(f"no model {name!r} in the writable registry {self.root}")
        targets = versions if version is None else [version]
        if version is not None and version not in versions:
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}; it has {', '.join(sorted(versions, key=version_key))}")
        for v in targets:
            shutil.rmtree(home / v)
        if not any(home.iterdir()):
            home.rmdir()
        return sorted(targets, key=version_key)
