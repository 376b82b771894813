"""Build step: compile the Sparkplug B schema into ``edgeplane_mqtt/sparkplug/sparkplug_b_pb2.py``.

Generated protobuf code is not checked in (protoc marks it "NO CHECKED-IN PROTOBUF GENCODE": it
must match the protobuf runtime), so every build, editable or not, generates it with the
grpcio-tools named in pyproject.toml's build requirements.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SCHEMA_DIR = Path(__file__).parent / "src" / "edgeplane_mqtt" / "sparkplug"


class BuildPyWithSparkplugSchema(build_py):
    def run(self) -> None:
        super().run()
        # editable installs import from src/, so the module is generated next to the schema
        out_dir = SCHEMA_DIR if self.editable_mode else Path(self.build_lib) / "edgeplane_mqtt" / "sparkplug"
        out_dir.mkdir(parents=True, exist_ok=True)
        from grpc_tools import protoc

        status = protoc.main(
            ["grpc_tools.protoc", f"-I{SCHEMA_DIR}", f"--python_out={out_dir}", str(SCHEMA_DIR / "sparkplug_b.proto")]
        )
        if status != 0:
            raise RuntimeError(f"protoc failed ({status}) compiling {SCHEMA_DIR / 'sparkplug_b.proto'}")


setup(cmdclass={"build_py": BuildPyWithSparkplugSchema})
