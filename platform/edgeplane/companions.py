"""Companion processes of a site (its ``simulators:`` section): device simulators, a local broker, the demo's cloud end.

A reference deployment runs against simulators that speak the real protocols on the loopback.
The site file lists them under ``simulators:``; the host starts each as a subprocess before any
connector, waits until it accepts TCP connections on its ``ready`` address, supervises it like
any other part (restart with backoff when it exits), logs its output, and stops it after the
connectors (SIGTERM to its process group, SIGKILL after ``stop_timeout``).

No simulator outlives its host. Each runs under a small guard process, in a process group of its
own (so a stop reaches its children too). The guard holds a parent-death signal (Linux
``PR_SET_PDEATHSIG``): when the host dies, even by SIGKILL, the guard terminates the whole group,
and kills it after 5 s if something ignores SIGTERM. The guard is needed because the kernel
clears a parent-death signal in a program that changes its user, as Mosquitto does when it drops
root. :func:`kill_all` (also run at interpreter exit) kills every group still running, for a host
that must exit at once (a second Ctrl-C)::

    simulators:
      inv1:
        command: ["{python}", "-m", "edgeplane.cli", "modbus", "simulate", "sunspec", "--port", "15021"]
        ready: tcp://127.0.0.1:15021

``{python}`` is the host's own interpreter, ``{site_dir}`` the site file's folder.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import os
import shutil
import signal
import sys
from urllib.parse import urlsplit

from edgeplane.components import Context, _Supervised
from edgeplane.config import SimulatorConfig

__all__ = ["SimulatorConfig", "CompanionProcess", "kill_all"]

_running_groups: set[int] = set()  # process groups of simulators started and not yet reaped


# Runs with ``python -I -c`` (no site packages, nothing of edgeplane): argv is the host's pid,
# then the simulator's command. It is the group leader; the simulator runs as its child.
_GUARD = r"""
import ctypes, os, signal, subprocess, sys
host, argv = int(sys.argv[1]), sys.argv[2:]
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: told when the host dies
except (OSError, AttributeError):
    pass
if os.getppid() != host:
    sys.exit(1)  # the host died before the line above: nothing would ever tell us
def stop(signum, frame):
    if os.getppid() == host:
        return  # the host's own stop signalled the whole group: the simulator has it already
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the host is gone: end the group, escalate later
    try:
        os.killpg(0, signal.SIGTERM)
    except OSError:
        pass
    signal.signal(signal.SIGALRM, lambda *a: os.killpg(0, signal.SIGKILL))
    signal.alarm(5)
signal.signal(signal.SIGTERM, stop)
child = subprocess.Popen(argv)
code = child.wait()
sys.exit(code if code >= 0 else 128 - code)
"""
def kill_all(sig: int = signal.SIGKILL) -> int:
    """Signal every simulator process group still running (for an immediate exit); returns how many."""
    count = 0
    for group in list(_running_groups):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
            count += 1
        _running_groups.discard(group)
    return count


atexit.register(kill_all)


class CompanionProcess(_Supervised):
    """One simulator subprocess, supervised by the host as the part ``simulator:<name>``."""

    config: SimulatorConfig

    def __init__(self, name: str, config: SimulatorConfig, context: Context) -> None:
        super().__init__(name, config, context)
        self.process: asyncio.subprocess.Process | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        self._pump: asyncio.Task[None] | None = None

    def argv(self) -> list[str]:
        site_dir = str(self.context.site_dir)
        return [arg.replace("{python}", sys.executable).replace("{site_dir}", site_dir) for arg in self.config.command]

    async def start(self) -> None:
        argv = self.argv()
        cwd = self.context.site_dir / self.config.cwd if self.config.cwd else self.context.site_dir
        env = {**os.environ, **self.config.env}
        # found here, not by the guard: a wrong command is a clear error, not an early exit
        program = shutil.which(argv[0], path=env.get("PATH")) if os.sep not in argv[0] else argv[0]
        if program is None or not os.access(cwd / program if not os.path.isabs(program) else program, os.X_OK):
            raise RuntimeError(f"simulator {self.name!r} cannot start {argv[0]!r}: not found or not executable; "
                               f"check 'command:'")
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-c", _GUARD, str(os.getpid()), *argv, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, cwd=cwd, env=env,
                start_new_session=True,  # its own group: stop reaches children
            )
        except OSError as e:
            raise RuntimeError(f"simulator {self.name!r} cannot start {argv[0]!r}: {e.strerror}; check 'command:'") from None
        _running_groups.add(self.process.pid)
        self._pump = asyncio.create_task(self._log_output())
        if self.config.ready:
            await self._wait_ready(self.config.ready)
        self.log.info("simulator %s running (pid %d)", self.name, self.process.pid)

    def _reap_group(self) -> None:
        """The simulator has exited: what it left in its group (children) goes too."""
        if self.process is None:
            return
        group = self.process.pid
        _running_groups.discard(group)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)

    async def _wait_ready(self, ready: str) -> None:
        process = self.process
        assert process is not None  # started just before
        address = urlsplit(ready)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.ready_timeout
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"simulator {self.name!r} exited with {process.returncode} before it was ready: "
                                   + " | ".join(self._tail))
            try:
                _, writer = await asyncio.open_connection(address.hostname, address.port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return
            except OSError:
                if loop.time() > deadline:
                    raise RuntimeError(f"simulator {self.name!r} does not accept connections on {self.config.ready} "
                                       f"after {self.config.ready_timeout:g} s") from None
                await asyncio.sleep(0.05)

    async def _log_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._tail.append(line)
                self.log.info("%s", line)

    async def run(self) -> None:
        assert self.process is not None
        code = await self.process.wait()
        self._reap_group()
        raise RuntimeError(f"simulator {self.name!r} exited with {code}: " + " | ".join(list(self._tail)[-3:]))

    async def stop(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self.config.stop_timeout)
            except TimeoutError:
                self.log.warning("simulator %s ignored SIGTERM for %g s; killing it", self.name, self.config.stop_timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if process is not None:
            self._reap_group()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        self.process = None
