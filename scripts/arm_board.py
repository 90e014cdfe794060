#!/usr/bin/env python3
"""Emulated aarch64 boards behind TVM's own RPC tracker, for machines with no ARM board attached.

A "board" is TVM's stock ``tvm.exec.rpc_server`` run by a Debian arm64 Python 3.11 under
``qemu-aarch64-static`` (user mode: no root filesystem, no binfmt_misc, no system change), with the
aarch64 wheels of apache-tvm / apache-tvm-ffi installed beside it. Clients reach it exactly as they
reach a real board: ``tvm.rpc.connect_tracker(host, port).request(key)``.

Subcommands (run with the project's venv Python, which also runs the tracker):

  setup   cache the board (idempotent): host packages (qemu-user-static, g++-aarch64-linux-gnu),
          arm64 Debian Python extracted into a folder, the aarch64 wheels installed for it
  start   start the tracker on 127.0.0.1:PORT (or reuse one already there) and N boards with KEY;
          returns once the tracker lists them
  stop    stop the boards and the tracker started for PORT
  status  what the tracker lists, and which processes this script started for PORT

The cache is ``$TVM_LOWRANK_CACHE/arm64`` (default ``<tmp>/tvm-lowrank-cache/arm64``); process
state and logs are in ``<cache>/arm64-run/<port>/``.

The stock server re-executes ``sys.executable`` (its popen worker), which an aarch64 ELF cannot be
without binfmt_misc; so the board's Python is started with argv[0] set to a host shell wrapper
(qemu's ``-0``), and every re-execution goes through qemu again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TVM_VERSION = "0.27.0.post1"
TVM_FFI_VERSION = "0.1.14.post1"
# The board's Python: the runtime half of TVM needs numpy/ml_dtypes/typing_extensions; the RPC
# server needs psutil, tornado and cloudpickle (the wheel's "rpc" extra).
BOARD_WHEELS = (f"apache-tvm=={TVM_VERSION}", f"apache-tvm-ffi=={TVM_FFI_VERSION}", "numpy",
                "ml_dtypes", "typing_extensions", "psutil", "tornado", "cloudpickle")
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
# Debian bookworm's Python is 3.11, matching the cp311 wheels; apt adds the shared libraries.
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libgcc-s1")
DEBIAN_MIRROR = os.environ.get("TVM_LOWRANK_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
HOST_TOOLS = {"qemu-aarch64-static": "qemu-user-static", "aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu"}

DEFAULT_PORT = 9190
DEFAULT_KEY = "arm-cortex-a72"
DEFAULT_BOARD_PORT = 9090  # TVM's own default; each board takes the first free port from here
BOARD_PORT_SPAN = 100
QEMU_CPUS = ("cortex-a35", "cortex-a53", "cortex-a57", "cortex-a72", "cortex-a76", "neoverse-n1", "a64fx")
LOOPBACK = "127.0.0.1"

WRAPPER = """#!/bin/sh
# aarch64 Python 3.11 under qemu user mode. argv[0] is this script (qemu -0), so sys.executable is
# this script and the RPC server's re-executions of its Python come back through qemu.
# QEMU_CPU (read by qemu itself, inherited by children) picks the emulated core.
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONHOME="$here/root/usr" PYTHONPATH="$here/site" PYTHONNOUSERSITE=1
exec qemu-aarch64-static -L "$here/root" -0 "$here/bin/python3" "$here/root/usr/bin/python3.11" "$@"
"""


class BoardError(RuntimeError):
    """A setup or start step failed; the message says which and where its log is."""


# ---------------------------------------------------------------------------------------- paths

def cache_root() -> Path:
    env = os.environ.get("TVM_LOWRANK_CACHE")
    return Path(env) if env else Path(tempfile.gettempdir()) / "tvm-lowrank-cache"


def board_dir() -> Path:
    return cache_root() / "arm64"


def board_python() -> Path:
    return board_dir() / "bin" / "python3"


def run_dir(port: int) -> Path:
    return cache_root() / "arm64-run" / str(port)


def _spec() -> dict:
    """What a finished cache holds; a cache built from a different spec is rebuilt."""
    return {"debian": [DEBIAN_SUITE, *DEBIAN_PACKAGES], "wheels": list(BOARD_WHEELS),
            "platforms": list(WHEEL_PLATFORMS), "wrapper": hashlib.sha256(WRAPPER.encode()).hexdigest()}


def ready_info() -> dict | None:
    """The cache's READY stamp if the cache is complete and current, else None."""
    stamp = board_dir() / "READY"
    try:
        info = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("spec") == _spec() and board_python().is_file() else None


def missing_host_tools() -> list[str]:
    return [tool for tool in HOST_TOOLS if shutil.which(tool) is None]


def qemu_cpu_for(key: str) -> str:
    """The qemu core for a key such as "arm-cortex-a53" ("max", every feature, when none matches)."""
    for cpu in QEMU_CPUS:
        if key.endswith(cpu):
            return cpu
    return "max"


# ---------------------------------------------------------------------------------------- setup

def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise BoardError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd[:6])} ...\n"
                         + "\n".join(tail))
    return proc


def _install_host_tools() -> None:
    missing = missing_host_tools()
    if not missing:
        return
    packages = sorted({HOST_TOOLS[tool] for tool in missing})
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print(f"installing Debian packages {', '.join(packages)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(sudo + ["apt-get", "update", "-qq"], "apt-get update", env=env)
    _run(sudo + ["apt-get", "install", "-y", "-qq", *packages], "apt-get install", env=env)
    if missing_host_tools():
        raise BoardError(f"still missing after apt-get install: {', '.join(missing_host_tools())}")


def _extract_debian_python(root: Path, work: Path) -> list[str]:
    """Download arm64 Debian packages with a private apt state (the host's apt is not touched)."""
    apt = work / "apt"
    for sub in ("state/lists/partial", "cache/archives/partial", "etc"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").write_text("")
    security = DEBIAN_MIRROR.rstrip("/") + "-security"
    (apt / "etc" / "sources.list").write_text(
        f"deb [arch=arm64 signed-by={DEBIAN_KEYRING}] {DEBIAN_MIRROR} {DEBIAN_SUITE} main\n"
        f"deb [arch=arm64 signed-by={DEBIAN_KEYRING}] {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main\n"
        f"deb [arch=arm64 signed-by={DEBIAN_KEYRING}] {security} {DEBIAN_SUITE}-security main\n")
    options = []
    for name, value in (("Dir::Etc::SourceList", apt / "etc" / "sources.list"),
                        ("Dir::Etc::SourceParts", apt / "etc" / "none"),
                        ("Dir::State", apt / "state"), ("Dir::State::status", apt / "status"),
                        ("Dir::Cache", apt / "cache"), ("APT::Architecture", "arm64"),
                        ("APT::Architectures::", "arm64"), ("Debug::NoLocking", "1")):
        options += ["-o", f"{name}={value}"]
    _run(["apt-get", *options, "update", "-qq"], "apt-get update (arm64, private state)")
    _run(["apt-get", *options, "install", "-y", "-qq", "--download-only", "--no-install-recommends",
          *DEBIAN_PACKAGES], "apt-get download (arm64)")
    debs = sorted((apt / "cache" / "archives").glob("*.deb"))
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}")
    return [deb.name for deb in debs]


def _install_wheels(site: Path, work: Path) -> list[str]:
    wheels = work / "wheels"
    platform_args = [arg for plat in WHEEL_PLATFORMS for arg in ("--platform", plat)]
    common = ["--no-deps", "--only-binary=:all:", *platform_args, "--python-version", "3.11",
              "--implementation", "cp", "--disable-pip-version-check", "-q"]
    _run([sys.executable, "-m", "pip", "download", *common, "-d", str(wheels), *BOARD_WHEELS],
         "pip download (aarch64 wheels)")
    files = sorted(wheels.glob("*.whl"))
    _run([sys.executable, "-m", "pip", "install", *common, "--no-index", "--target", str(site),
          *map(str, files)], "pip install --target (aarch64 wheels)")
    return [f.name for f in files]


def _board_smoke_test(directory: Path) -> str:
    proc = _run([str(directory / "bin" / "python3"), "-c",
                 "import tvm, tvm.rpc, numpy, psutil, tornado, cloudpickle; print(tvm.__version__)"],
                "the board's Python (import tvm under qemu)",
                env={**os.environ, "TVM_USE_RUNTIME_LIB": "1"})
    version = proc.stdout.strip().splitlines()[-1]
    if version != TVM_VERSION:
        raise BoardError(f"the board imports TVM {version}, expected {TVM_VERSION}")
    return version


def setup(force: bool = False) -> Path:
    """Build the board cache unless a current one is there; returns its folder."""
    _install_host_tools()
    target = board_dir()
    if ready_info() is not None and not force:
        print(f"board cache ready at {target}")
        return target
    start = time.time()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="arm64.staging-", dir=target.parent))
    work = Path(tempfile.mkdtemp(prefix="arm64.download-", dir=target.parent))
    try:
        print(f"building the arm64 board in {target} ...", flush=True)
        debs = _extract_debian_python(staging / "root", work)
        wheels = _install_wheels(staging / "site", work)
        (staging / "bin").mkdir()
        (staging / "bin" / "python3").write_text(WRAPPER)
        (staging / "bin" / "python3").chmod(0o755)
        version = _board_smoke_test(staging)
        (staging / "READY").write_text(json.dumps(
            {"spec": _spec(), "debs": debs, "wheels": wheels, "tvm": version}, indent=1))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    print(f"board cache ready at {target} ({time.time() - start:.0f} s)")
    return target


# -------------------------------------------------------------------------------- processes

def _running(pid: int) -> bool:
    """Whether `pid` is alive: not gone and not a zombie (reaped here if it is our child)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _alive(pid_file: Path, marker: str) -> int | None:
    """The pid in `pid_file` if that process is alive and is the `marker` (rpc_server/rpc_tracker)."""
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return None
    # Right after exec the new command line is not set up yet and reads as empty.
    return pid if _running(pid) and (marker in cmdline or not cmdline) else None


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is alive (zombies do not count: a board or tracker
    started by this very process stays a zombie until reaped, and killpg(0) still finds it)."""
    _running(pgid)  # reaps the leader if it is our child
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _kill_group(pgid: int, grace: float = 5.0) -> None:
    """SIGTERM the process group (server, its popen worker, its session child), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + grace
        while time.time() < deadline:
            if not _group_alive(pgid):
                return
            time.sleep(0.1)


def _tracker_answers(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def _summary(port: int) -> dict:
    # The package's client (TVM's own, with timeouts); imported late so that `setup` needs no TVM.
    from tvm_lowrank.remote import DeviceError, tracker_summary

    try:
        return tracker_summary(f"{LOOPBACK}:{port}")
    except DeviceError as exc:
        raise BoardError(str(exc)) from None


def _registered_ports(summary: dict, key: str) -> set[int]:
    return {int(server["addr"][1]) for server in summary["server_info"]
            if server.get("key") == f"server:{key}"}


def _bound_port(log: Path) -> int | None:
    """The port a board bound, from its log ("bind to 127.0.0.1:9091"; the latest start wins)."""
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if "bind to" in line]
    except OSError:
        return None
    return int(lines[-1].rsplit(":", 1)[1]) if lines else None


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _spawn(cmd: list[str], log: Path, env: dict | None = None) -> int:
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=log.parent, env=env, start_new_session=True)
    return proc.pid


def _start_tracker(port: int, state: Path, timeout: float) -> None:
    if _alive(state / "tracker.pid", "rpc_tracker") or _tracker_answers(port):
        return  # ours from an earlier start, or someone's tracker (a real device farm): reuse it
    log = state / "tracker.log"
    pid = _spawn([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", LOOPBACK,
                  "--port", str(port), "--port-end", str(port + 1)], log,
                 env={**os.environ, "TVM_USE_RUNTIME_LIB": "1"})  # the tracker needs no compiler
    (state / "tracker.pid").write_text(str(pid))
    deadline = time.time() + timeout
    while not _tracker_answers(port, timeout=0.5):
        if not _alive(state / "tracker.pid", "rpc_tracker"):
            raise BoardError(f"the RPC tracker on port {port} exited; {log}:\n{_log_tail(log)}")
        if time.time() > deadline:
            raise BoardError(f"the RPC tracker did not answer on port {port} in {timeout:.0f} s")
        time.sleep(0.2)


def start(port: int = DEFAULT_PORT, key: str = DEFAULT_KEY, boards: int = 1, cpu: str | None = None,
          board_port: int = DEFAULT_BOARD_PORT, timeout: float = 180.0) -> dict:
    """Ensure a tracker on `port` and `boards` emulated boards registered with `key`.

    `boards=0` starts only the tracker (no board cache needed).

    Returns {"tracker": "127.0.0.1:PORT", "key": KEY, "boards": {pid: log}, "seconds": wait}.
    """
    if boards > 0 and ready_info() is None:
        raise BoardError(f"no board cache at {board_dir()}: run `{Path(__file__).name} setup` first")
    if boards > 0 and missing_host_tools():
        raise BoardError(f"missing {', '.join(missing_host_tools())}: run `{Path(__file__).name} setup`")
    begin = time.time()
    state = run_dir(port)
    state.mkdir(parents=True, exist_ok=True)
    _start_tracker(port, state, timeout=30.0)
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1", "QEMU_CPU": cpu or qemu_cpu_for(key)}
    running = {}
    index = 0
    while len(running) < boards:
        pid_file = state / f"board-{key}-{index}.pid"
        log = pid_file.with_suffix(".log")
        pid = _alive(pid_file, "rpc_server")
        if pid is None:
            log.unlink(missing_ok=True)
            pid = _spawn([str(board_python()), "-m", "tvm.exec.rpc_server", "--host", LOOPBACK,
                          "--port", str(board_port), "--port-end", str(board_port + BOARD_PORT_SPAN),
                          "--tracker", f"{LOOPBACK}:{port}", "--key", key], log, env=env)
            pid_file.write_text(str(pid))
        running[pid] = log
        index += 1
    deadline = time.time() + timeout
    while True:
        listed = _registered_ports(_summary(port), key)
        if all(_bound_port(log) in listed for log in running.values()):
            break
        dead = [log for pid, log in running.items() if not _running(pid)]
        if dead:
            raise BoardError(f"board exited before registering; {dead[0]}:\n{_log_tail(dead[0])}")
        if time.time() > deadline:
            raise BoardError(f"boards with key {key} not registered on the tracker after "
                             f"{timeout:.0f} s; logs in {state}")
        time.sleep(0.5)
    if running:  # so that clients label these boards' timings as emulated (tvm_lowrank.boards)
        from tvm_lowrank.boards import record_emulated_boards

        emulator = f"qemu-aarch64 user mode ({env['QEMU_CPU']})"
        record_emulated_boards(port, [{"addr": f"{LOOPBACK}:{_bound_port(log)}", "key": key,
                                       "emulator": emulator} for log in running.values()])
    return {"tracker": f"{LOOPBACK}:{port}", "key": key, "boards": running,
            "seconds": round(time.time() - begin, 1)}


def stop(port: int = DEFAULT_PORT) -> list[int]:
    """Stop every board and the tracker this script started for `port`; returns the pids stopped."""
    state = run_dir(port)
    stopped = []
    for pid_file in sorted(state.glob("board-*.pid")) + [state / "tracker.pid"]:
        pid = _alive(pid_file, "rpc_tracker" if pid_file.name == "tracker.pid" else "rpc_server")
        if pid is not None:
            _kill_group(pid)
            stopped.append(pid)
        pid_file.unlink(missing_ok=True)
    from tvm_lowrank.boards import forget_emulated_boards

    forget_emulated_boards(port)
    return stopped


def status(port: int = DEFAULT_PORT) -> dict:
    state = run_dir(port)
    processes = {}
    for pid_file in sorted(state.glob("*.pid")):
        marker = "rpc_tracker" if pid_file.name == "tracker.pid" else "rpc_server"
        processes[pid_file.stem] = _alive(pid_file, marker)
    summary = _summary(port) if _tracker_answers(port) else None
    return {"cache": str(board_dir()), "cache_ready": ready_info() is not None,
            "missing_host_tools": missing_host_tools(), "tracker": f"{LOOPBACK}:{port}",
            "tracker_up": summary is not None, "processes": processes, "summary": summary}


def _text_summary(summary: dict) -> str:
    """The tracker's boards by key, as `python -m tvm.exec.query_rpc_tracker` shows them."""
    lines = [f"{'key':<24} {'boards':>6} {'free':>5} {'pending':>8}  addresses"]
    for key, queue in sorted(summary["queue_info"].items()):
        ports = sorted(_registered_ports(summary, key))
        if ports or queue["pending"]:
            lines.append(f"{key:<24} {len(ports):>6} {queue['free']:>5} {queue['pending']:>8}  "
                         + " ".join(f"{LOOPBACK}:{p}" for p in ports))
    return "\n".join(lines if len(lines) > 1 else lines + ["(no boards registered)"])


# ------------------------------------------------------------------------------------------ CLI

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_setup = sub.add_parser("setup", help="cache the emulated board (idempotent)")
    p_setup.add_argument("--force", action="store_true", help="rebuild the cache even if current")
    p_start = sub.add_parser("start", help="start the tracker and boards; wait until registered")
    p_start.add_argument("--key", default=DEFAULT_KEY, help=f"tracker key (default {DEFAULT_KEY})")
    p_start.add_argument("--boards", type=int, default=1, help="number of boards with this key")
    p_start.add_argument("--cpu", help="qemu core (default: from the key, e.g. cortex-a72; else max)")
    p_start.add_argument("--board-port", type=int, default=DEFAULT_BOARD_PORT,
                         help=f"first port a board tries (default {DEFAULT_BOARD_PORT})")
    p_start.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for boards")
    p_stop = sub.add_parser("stop", help="stop what `start` started")
    p_status = sub.add_parser("status", help="tracker listing and our processes")
    p_status.add_argument("--json", action="store_true")
    for p in (p_start, p_stop, p_status):
        p.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"tracker port on 127.0.0.1 (default {DEFAULT_PORT})")
    args = parser.parse_args(argv)
    try:
        if args.command == "setup":
            setup(force=args.force)
        elif args.command == "start":
            info = start(args.port, args.key, args.boards, args.cpu, args.board_port, args.timeout)
            if args.boards == 0:
                print(f"tracker {info['tracker']} up ({info['seconds']} s)")
            else:
                print(f"tracker {info['tracker']}: {len(info['boards'])} board(s) with key {info['key']} "
                      f"(QEMU_CPU {args.cpu or qemu_cpu_for(args.key)}) ready in {info['seconds']} s; "
                      f"pids {', '.join(map(str, info['boards']))}")
        elif args.command == "stop":
            stopped = stop(args.port)
            print(f"stopped {len(stopped)} process group(s) for port {args.port}")
        else:
            info = status(args.port)
            if args.json:
                print(json.dumps(info, indent=1))
            else:
                print(f"cache {info['cache']}: {'ready' if info['cache_ready'] else 'NOT set up'}")
                if info["missing_host_tools"]:
                    print(f"missing host tools: {', '.join(info['missing_host_tools'])}")
                for name, pid in info["processes"].items():
                    print(f"{name}: {'pid ' + str(pid) if pid else 'not running'}")
                if info["summary"] is None:
                    print(f"no RPC tracker at {info['tracker']}")
                    return 1
                print(_text_summary(info["summary"]))
    except BoardError as exc:
        print(f"arm_board {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
