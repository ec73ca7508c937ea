"""The process supervisor, exercised with real child processes (no mocks but one seam)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from llmux_site.core import processes, supervisor
from llmux_site.core.addresses import ListenAddress
from llmux_site.core.processes import (
    EngineExitedError,
    EngineProcess,
    ProcessSpec,
    SpawnError,
    StartupTimeoutError,
)
from llmux_site.core.supervisor import StopOutcome
from tests.fixtures_bin import HTTP_ENGINE, STUBBORN
from tests.plugins.engines import EngineSpawner, free_port, wait_http_healthy

REPO_ROOT = Path(__file__).resolve().parents[2]
O_APPEND = 0o2000
WORKER = [sys.executable, "-m", "tests.fixtures_bin.earlier_worker"]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]

Spawn = Callable[..., EngineProcess]


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[list[EngineProcess]]:
    """Every engine a test starts or adopts goes here and is stopped afterwards."""
    started: list[EngineProcess] = []
    yield started
    for proc in started:
        supervisor.stop(proc, grace=0.5)


@pytest.fixture
def spawn(tmp_path: Path, engines: list[EngineProcess]) -> Spawn:
    def start(argv: list[str], **spec: object) -> EngineProcess:
        log_path = spec.pop("log_path", tmp_path / "logs" / f"engine{len(engines)}.log")
        proc = processes.spawn(ProcessSpec(argv=argv, log_path=log_path, **spec))  # type: ignore[arg-type]
        engines.append(proc)
        return proc

    return start


def http_engine(*args: str) -> list[str]:
    return [sys.executable, str(HTTP_ENGINE), *args]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def assert_group_gone(pgid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)  # zombies count here, so this also proves they were reaped


def start_stubborn(spawn: Spawn, tmp_path: Path, *flags: str) -> tuple[EngineProcess, int]:
    ready = tmp_path / "ready"
    proc = spawn([sys.executable, str(STUBBORN), str(ready), *flags])
    wait_for(ready.exists)
    parent_pid, child_pid = map(int, ready.read_text().split())
    assert parent_pid == proc.pid
    return proc, child_pid


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Orphaned engine workers come to this process (pid 1 here never reaps them)."""
    processes.set_child_subreaper(True)
    yield
    processes.set_child_subreaper(False)


def start_in_earlier_worker(tmp_path: Path, argv: list[str]) -> dict[str, float]:
    """Start ``argv`` from a separate Python process that then exits without stopping it."""
    done = subprocess.run(
        [*WORKER, str(tmp_path / "old.log"), "--", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    record: dict[str, float] = json.loads(done.stdout)
    return record


@pytest.fixture
def other_worker(tmp_path: Path) -> Iterator[Callable[[list[str]], dict[str, float]]]:
    """Start an engine from another live process that stays its parent (and reaps it)."""
    workers: list[subprocess.Popen[str]] = []

    def start(argv: list[str]) -> dict[str, float]:
        worker = subprocess.Popen(
            [*WORKER, str(tmp_path / "w.log"), "--stay", "--", *argv],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        workers.append(worker)
        assert worker.stdout is not None
        record: dict[str, float] = json.loads(worker.stdout.readline())
        return record

    yield start
    for worker in workers:
        worker.kill()
        worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()


# --- spawning ------------------------------------------------------------------------


def test_it_starts_the_engine_in_a_session_and_process_group_of_its_own(spawn: Spawn) -> None:
    proc = spawn(SLEEPER)

    assert proc.pgid == proc.pid == os.getpgid(proc.pid) == os.getsid(proc.pid)
    assert proc.pgid != os.getpgrp()
    assert proc.create_time == psutil.Process(proc.pid).create_time()
    assert proc.argv == tuple(SLEEPER)


def test_it_appends_output_to_the_log_and_reads_stdin_from_dev_null(
    spawn: Spawn, tmp_path: Path
) -> None:
    log_path = tmp_path / "deep" / "er" / "engine.log"
    log_path.parent.mkdir(parents=True)
    log_path.write_text("from an earlier run\n")
    program = "import sys, time; print('to stdout', flush=True); "
    program += "print('to stderr', file=sys.stderr, flush=True); time.sleep(60)"

    proc = spawn([sys.executable, "-c", program], log_path=log_path)

    wait_for(lambda: "to stderr" in log_path.read_text())
    assert log_path.read_text().startswith("from an earlier run\n")
    assert "to stdout" in log_path.read_text()
    for fd in (1, 2):
        fdinfo = Path(f"/proc/{proc.pid}/fdinfo/{fd}").read_text()
        flags = int(fdinfo.split("flags:")[1].split()[0], 8)
        assert flags & O_APPEND, f"fd {fd} is not O_APPEND: {fdinfo}"
        assert os.readlink(f"/proc/{proc.pid}/fd/{fd}") == str(log_path)
    assert os.readlink(f"/proc/{proc.pid}/fd/0") == "/dev/null"


def test_it_creates_the_log_directory(spawn: Spawn, tmp_path: Path) -> None:
    log_path = tmp_path / "a" / "b" / "engine.log"

    spawn(SLEEPER, log_path=log_path)

    assert log_path.exists()


def test_the_environment_is_the_base_plus_overrides_and_cwd_is_honoured(
    spawn: Spawn, tmp_path: Path
) -> None:
    base = {"PATH": os.environ["PATH"], "KEPT": "base", "REPLACED": "base"}

    proc = spawn(SLEEPER, base_env=base, env={"REPLACED": "override", "ADDED": "1"}, cwd=tmp_path)

    environ = psutil.Process(proc.pid).environ()
    assert environ == {"PATH": base["PATH"], "KEPT": "base", "REPLACED": "override", "ADDED": "1"}
    assert psutil.Process(proc.pid).cwd() == str(tmp_path)


def test_the_default_base_environment_is_this_process_environment(spawn: Spawn) -> None:
    proc = spawn(SLEEPER, env={"LLMUX_EXTRA": "yes"})

    environ = psutil.Process(proc.pid).environ()
    assert environ["PATH"] == os.environ["PATH"]
    assert environ["LLMUX_EXTRA"] == "yes"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ("sleep 60", "not a single string"),
        ([], "argv is empty"),
        (["sleep", 60], "argv[1] is int"),
        (["sleep", "6\x000"], "NUL"),
        (["/nonexistent/engine-binary"], "cannot start '/nonexistent/engine-binary'"),
    ],
)
def test_it_refuses_what_it_cannot_start(tmp_path: Path, argv: object, message: str) -> None:
    with pytest.raises(SpawnError, match=None) as raised:
        processes.spawn(ProcessSpec(argv=argv, log_path=tmp_path / "x.log"))  # type: ignore[arg-type]
    assert message in str(raised.value)


# --- identity and adoption ---------------------------------------------------------


def test_is_alive_follows_the_process_and_reaps_our_child(spawn: Spawn) -> None:
    proc = spawn(SLEEPER)
    assert processes.is_alive(proc)

    os.kill(proc.pid, signal.SIGKILL)

    wait_for(lambda: not processes.is_alive(proc))
    assert processes.exit_code(proc) == -signal.SIGKILL
    assert not psutil.pid_exists(proc.pid)  # reaped, not left as a zombie


def test_an_engine_of_an_earlier_worker_is_adopted_health_waited_and_stopped(
    tmp_path: Path, engines: list[EngineProcess], subreaper: None
) -> None:
    port = free_port()
    record = start_in_earlier_worker(tmp_path, http_engine("--port", str(port)))
    pid, pgid = int(record["pid"]), int(record["pgid"])

    proc = processes.adopt(pid, record["create_time"], pgid, log_path=str(tmp_path / "old.log"))

    assert proc is not None
    engines.append(proc)
    assert not processes.spawned_here(proc)
    assert proc.pgid == pgid == pid
    assert proc.argv == tuple(http_engine("--port", str(port)))
    assert processes.is_alive(proc)
    asyncio.run(wait_http_healthy(proc, ListenAddress.tcp(port), timeout=10))
    result = supervisor.stop(proc, grace=5)
    assert result.outcome is StopOutcome.TERMINATED
    # Its spawner is gone, so as a subreaper we inherited it and reaped it.
    assert result.exit_code == -signal.SIGTERM
    assert not processes.is_alive(proc)
    assert_group_gone(pgid)


def test_a_process_reusing_the_pid_with_another_create_time_is_not_adopted(
    spawn: Spawn,
) -> None:
    other = spawn(SLEEPER)

    assert processes.adopt(other.pid, other.create_time - 1.0, other.pgid) is None
    assert processes.adopt(other.pid, other.create_time + 0.5, other.pgid) is None
    adopted = processes.adopt(other.pid, other.create_time + 0.005, other.pgid)
    assert adopted is not None and adopted.identity == (other.pid, other.create_time + 0.005)


def test_a_dead_pid_is_not_adopted(spawn: Spawn) -> None:
    proc = spawn([sys.executable, "-c", "pass"])
    asyncio.run(supervisor.wait_exit(proc))

    assert processes.adopt(proc.pid, proc.create_time, proc.pgid) is None


def test_a_zombie_is_not_adopted(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait_for(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE)
        create_time = psutil.Process(child.pid).create_time()

        assert processes.adopt(child.pid, create_time, child.pid) is None
    finally:
        child.wait()


def test_attach_records_the_current_identity_of_a_live_pid(spawn: Spawn) -> None:
    proc = spawn(SLEEPER)

    attached = processes.attach(proc.pid)

    assert attached is not None and attached.identity == proc.identity
    assert processes.attach(2**22 + 1) is None  # above pid_max: never a process


def test_stop_never_signals_a_process_that_reused_the_pid(spawn: Spawn) -> None:
    stranger = spawn(SLEEPER)
    stale = EngineProcess(
        pid=stranger.pid, create_time=stranger.create_time - 5, pgid=stranger.pgid
    )

    result = supervisor.stop(stale, grace=0.2)

    assert result.outcome is StopOutcome.ALREADY_GONE
    assert processes.is_alive(stranger)


# --- exit watching -----------------------------------------------------------------


async def test_a_kill_9_of_an_engine_is_noticed_within_a_second(spawn: Spawn) -> None:
    proc = spawn(SLEEPER)
    watcher = asyncio.create_task(supervisor.wait_exit(proc))
    await asyncio.sleep(0.05)
    assert not watcher.done()

    killed_at = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    code = await asyncio.wait_for(watcher, timeout=1.0)

    assert time.monotonic() - killed_at < 1.0
    assert code == -signal.SIGKILL


async def test_a_kill_9_of_an_engine_that_is_not_our_child_is_noticed_within_a_second(
    other_worker: Callable[[list[str]], dict[str, float]], engines: list[EngineProcess]
) -> None:
    record = other_worker(SLEEPER)
    proc = processes.adopt(int(record["pid"]), record["create_time"], int(record["pgid"]))
    assert proc is not None
    engines.append(proc)
    assert psutil.Process(proc.pid).ppid() != os.getpid()
    watcher = asyncio.create_task(supervisor.wait_exit(proc))
    await asyncio.sleep(0.05)
    assert not watcher.done()

    killed_at = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    code = await asyncio.wait_for(watcher, timeout=1.0)

    assert time.monotonic() - killed_at < 1.0
    assert code is None  # its exit status belongs to its parent
    assert not processes.is_alive(proc)


async def test_exit_is_noticed_by_polling_where_pidfds_are_unavailable(
    spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    proc = spawn(SLEEPER)
    watcher = asyncio.create_task(supervisor.wait_exit(proc, poll_interval=0.1))
    await asyncio.sleep(0.05)

    killed_at = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    code = await asyncio.wait_for(watcher, timeout=1.0)

    assert time.monotonic() - killed_at < 1.0
    assert code == -signal.SIGKILL


async def test_waiting_for_the_exit_of_a_dead_engine_returns_at_once(spawn: Spawn) -> None:
    proc = spawn([sys.executable, "-c", "raise SystemExit(7)"])
    assert await asyncio.wait_for(supervisor.wait_exit(proc), timeout=5) == 7

    assert await asyncio.wait_for(supervisor.wait_exit(proc), timeout=0.1) == 7


# --- health ------------------------------------------------------------------------


async def test_wait_healthy_returns_how_long_the_engine_took(spawn: Spawn) -> None:
    port = free_port()
    proc = spawn(http_engine("--port", str(port), "--startup-delay", "0.3"))

    took = await wait_http_healthy(proc, ListenAddress.tcp(port), timeout=10)

    assert 0.3 <= took < 5


async def test_wait_healthy_works_over_a_unix_socket(spawn: Spawn, short_tmp_dir: Path) -> None:
    address = ListenAddress.unix(str(short_tmp_dir / "e.sock"))
    proc = spawn(http_engine("--uds", str(address.uds)))

    took = await wait_http_healthy(proc, address, timeout=10)

    assert took < 5


async def test_a_crash_at_startup_raises_with_the_exit_code_and_log_tail(spawn: Spawn) -> None:
    proc = spawn(http_engine("--crash", "3", "CUDA out of memory while loading weights"))

    async def never_healthy() -> bool:
        return False

    started = time.monotonic()
    with pytest.raises(EngineExitedError) as raised:
        await supervisor.wait_healthy(proc, never_healthy, timeout=30)

    assert time.monotonic() - started < 5
    assert raised.value.exit_code == 3
    assert "CUDA out of memory while loading weights" in raised.value.log_tail
    assert "http_engine" in raised.value.log_tail  # stdout lines are there too
    assert "CUDA out of memory" in str(raised.value)


# A start that fails like vLLM's: the cause, then its exit noise (more than 40 lines).
FAILING_START = """
import sys
print("INFO starting", flush=True)
print("Traceback (most recent call last):", file=sys.stderr)
print('  File "serve.py", line 1, in <module>', file=sys.stderr)
print("ValueError: Sleep mode is not supported on current platform.", file=sys.stderr)
for i in range(45):
    print(f' - leaked type "triton._C.libtriton.ir.t{i}"', file=sys.stderr)
sys.exit(1)
"""


async def test_a_failed_start_shows_its_cause_not_its_exit_noise(
    spawn: Spawn, tmp_path: Path
) -> None:
    log_path = tmp_path / "logs" / "noisy.log"
    log_path.parent.mkdir()
    log_path.write_text("Traceback (most recent call last):\nOSError: an earlier run's failure\n")

    async def never_healthy() -> bool:
        return False

    proc = spawn([sys.executable, "-c", FAILING_START], log_path=log_path)
    with pytest.raises(EngineExitedError) as raised:
        await supervisor.wait_healthy(proc, never_healthy, timeout=30)

    assert raised.value.log_tail.splitlines()[-1] == (
        "ValueError: Sleep mode is not supported on current platform."
    )
    assert "leaked" not in raised.value.log_tail
    assert "an earlier run's failure" not in str(raised.value)


async def test_an_engine_that_never_gets_healthy_times_out(spawn: Spawn) -> None:
    port = free_port()
    proc = spawn(http_engine("--port", str(port), "--unhealthy"))

    started = time.monotonic()
    with pytest.raises(StartupTimeoutError) as raised:
        await wait_http_healthy(proc, ListenAddress.tcp(port), timeout=0.5)

    assert 0.5 <= time.monotonic() - started < 2
    assert raised.value.timeout == 0.5
    assert processes.is_alive(proc)


async def test_a_health_check_that_raises_counts_as_not_healthy(spawn: Spawn) -> None:
    proc = spawn(SLEEPER)
    calls = 0

    async def broken() -> bool:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError("nobody listening")

    with pytest.raises(StartupTimeoutError, match="nobody listening"):
        await supervisor.wait_healthy(proc, broken, timeout=0.3, interval=0.05)
    assert calls >= 3


async def test_a_health_check_that_hangs_is_cut_off_by_the_timeout(spawn: Spawn) -> None:
    proc = spawn(SLEEPER)

    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    started = time.monotonic()
    with pytest.raises(StartupTimeoutError):
        await supervisor.wait_healthy(proc, hangs, timeout=0.3)
    assert time.monotonic() - started < 1


# --- stopping ----------------------------------------------------------------------


def test_stop_terminates_a_cooperative_engine_quickly(spawn: Spawn) -> None:
    proc = spawn(SLEEPER)

    result = supervisor.stop(proc, grace=5)

    assert result.outcome is StopOutcome.TERMINATED
    assert result.duration < 2
    assert result.exit_code == -signal.SIGTERM
    assert_group_gone(proc.pgid)


def test_stop_kills_an_engine_and_its_child_that_ignore_sigterm_after_the_grace_period(
    spawn: Spawn, tmp_path: Path, subreaper: None
) -> None:
    proc, child_pid = start_stubborn(spawn, tmp_path)
    assert os.getpgid(child_pid) == proc.pgid

    result = supervisor.stop(proc, grace=0.5)

    assert result.outcome is StopOutcome.KILLED
    assert 0.5 <= result.duration < 2.5
    assert result.exit_code == -signal.SIGKILL
    assert not psutil.pid_exists(child_pid)
    assert_group_gone(proc.pgid)


async def test_stop_async_kills_a_stubborn_group_without_blocking_the_loop(
    spawn: Spawn, tmp_path: Path, subreaper: None
) -> None:
    proc, child_pid = start_stubborn(spawn, tmp_path)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    result = await supervisor.stop_async(proc, grace=0.3)
    ticking.cancel()

    assert result.outcome is StopOutcome.KILLED
    assert ticks >= 10
    assert not psutil.pid_exists(child_pid)
    assert_group_gone(proc.pgid)


def test_stop_cleans_up_the_group_of_our_engine_whose_leader_already_died(
    spawn: Spawn, tmp_path: Path, subreaper: None
) -> None:
    proc, child_pid = start_stubborn(spawn, tmp_path, "--leader-exits")
    assert asyncio.run(supervisor.wait_exit(proc)) == 0  # the leader is gone and reaped
    assert psutil.pid_exists(child_pid)

    result = supervisor.stop(proc, grace=0.3)

    assert result.outcome is StopOutcome.KILLED
    assert not psutil.pid_exists(child_pid)
    assert_group_gone(proc.pgid)


def test_stopping_a_stopped_engine_is_fine(spawn: Spawn) -> None:
    proc = spawn(SLEEPER)
    supervisor.stop(proc, grace=5)

    again = supervisor.stop(proc, grace=5)

    assert again.outcome is StopOutcome.ALREADY_GONE
    assert again.exit_code == -signal.SIGTERM
    assert again.duration < 0.5


# --- the spawn_engine fixture ------------------------------------------------------


def test_spawn_engine_starts_a_healthy_simulator_and_stops_it(spawn_engine: EngineSpawner) -> None:
    engine = spawn_engine()

    with urllib.request.urlopen(f"{engine.base_url}/health", timeout=5) as response:
        assert response.status == 200
    environ = psutil.Process(engine.process.pid).environ()
    assert environ["LLMUX_SIM_CACHE_DIR"] == str(spawn_engine.cache_dir)
    assert environ["LLMUX_SIM_LEDGER_DIR"] == str(spawn_engine.ledger_dir)
    assert environ["VLLM_SERVER_DEV_MODE"] == "1"
    assert engine.process.argv[1:4] == ("-m", "llmux_site.simulator", "serve")
    assert engine.startup_seconds is not None

    assert spawn_engine.stop_all() == []
    assert not processes.is_alive(engine.process)


def test_spawn_engine_can_listen_on_a_unix_socket(spawn_engine: EngineSpawner) -> None:
    engine = spawn_engine(uds=True)

    assert engine.address.uds is not None
    assert Path(engine.address.uds).is_socket()
    assert len(engine.address.uds) < 108


def test_spawn_engine_runs_a_generic_server_from_a_template(spawn_engine: EngineSpawner) -> None:
    engine = spawn_engine(
        "unused", kind="generic", generic_argv=http_engine("--port", "{port}"), name="generic"
    )

    assert engine.log_path.name == "generic.log"
    assert "http_engine listening" in engine.log_text()


def test_a_subreaper_reaps_inherited_engines_but_no_child_with_a_handle(subreaper: None) -> None:
    """A restored engine is detached from criu and lands here: once it ends, its pid must
    be free again (the next restore of the image needs exactly that pid). A child that a
    Popen handle waits for, in our group or a session of its own, keeps its exit status."""
    from llmux_site.core.processes import inherit_group, reap_stray_children

    code = (
        "import subprocess, sys; p = subprocess.Popen(['sleep', '0.2'], "
        "start_new_session=True); print(p.pid)"
    )
    orphan = int(subprocess.check_output([sys.executable, "-c", code], text=True))
    inherit_group(orphan)  # its own session: its pgid is its pid
    helper = subprocess.Popen(["true"])  # ours, in our process group
    failing = subprocess.Popen(["sh", "-c", "exit 3"], start_new_session=True)
    deadline = time.monotonic() + 5
    reaped: list[int] = []
    # Gone from /proc once reaped: by this call, or by the process's own reaper thread
    # if an earlier test in this process started one (it calls the same function).
    while Path(f"/proc/{orphan}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
        reaped += reap_stray_children()
    time.sleep(0.1)
    reaped += reap_stray_children()  # `failing` has long exited by now
    assert not Path(f"/proc/{orphan}").exists(), "the inherited engine stayed a zombie"
    assert helper.pid not in reaped and failing.pid not in reaped
    assert helper.wait(timeout=5) == 0  # its own handle still gets its exit status
    assert failing.wait(timeout=5) == 3
