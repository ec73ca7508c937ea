"""Every injected fault behaves as configured, whether set by --sim-fault or POST /sim/faults."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import threading
import time

import pytest

from tests.simulator.harness import Reply, SimEngine, SimLauncher

HOW = ["flag", "runtime"]
PROMPT = {"prompt": "hello there", "max_tokens": 8, "temperature": 0}


def engine_with(sim: SimLauncher, how: str, *specs: str, extra: tuple[str, ...] = ()) -> SimEngine:
    """An engine injecting `specs`, set on its command line or at run time."""
    if how == "flag":
        args = [arg for spec in specs for arg in ("--sim-fault", spec)]
        return sim.start(*args, *extra)
    engine = sim.start(*extra)
    reply = engine.set_faults(*specs)
    assert reply.status == 200, reply.body
    assert sorted(reply.json()["faults"]) == sorted(specs)
    return engine


def assert_hangs(engine: SimEngine, method: str, path: str) -> None:
    with pytest.raises(TimeoutError):
        if method == "GET":
            engine.get(path, timeout=0.3)
        else:
            engine.post(path, timeout=0.3)


def assert_openai_error(reply: Reply, status: int) -> str:
    assert reply.status == status, reply.body
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return str(error["message"])


@pytest.mark.parametrize("how", HOW)
def test_sleep_fail_answers_500_and_stays_awake(sim: SimLauncher, how: str) -> None:
    engine = engine_with(sim, how, "sleep=fail")
    assert "injected" in assert_openai_error(engine.post("/sleep?level=1"), 500)
    assert engine.get("/is_sleeping").json() == {"is_sleeping": False}


@pytest.mark.parametrize("how", HOW)
def test_sleep_hang_never_answers_but_health_does(sim: SimLauncher, how: str) -> None:
    engine = engine_with(sim, how, "sleep=hang")
    assert_hangs(engine, "POST", "/sleep?level=1")
    assert engine.get("/health").status == 200
    assert engine.get("/is_sleeping").json() == {"is_sleeping": False}


@pytest.mark.parametrize("how", HOW)
def test_sleep_noop_says_sleeping_but_frees_nothing(sim: SimLauncher, how: str) -> None:
    engine = engine_with(sim, how, "sleep=noop")
    held = engine.state()["gpu_bytes"]
    assert engine.post("/sleep?level=1").json() == {"status": "sleeping", "level": 1}
    state = engine.state()
    assert (state["is_sleeping"], state["gpu_bytes"]) == (True, held)


@pytest.mark.parametrize("how", HOW)
def test_wake_fail_answers_500_and_stays_asleep(sim: SimLauncher, how: str) -> None:
    engine = engine_with(sim, how, "wake=fail")
    engine.post("/sleep?level=1")
    assert "injected" in assert_openai_error(engine.post("/wake_up"), 500)
    assert engine.get("/is_sleeping").json() == {"is_sleeping": True}


@pytest.mark.parametrize("how", HOW)
def test_wake_hang_never_answers(sim: SimLauncher, how: str) -> None:
    engine = engine_with(sim, how, "wake=hang")
    engine.post("/sleep?level=1")
    assert_hangs(engine, "POST", "/wake_up")
    assert engine.get("/is_sleeping").json() == {"is_sleeping": True}


def test_health_fail_answers_503_from_the_start(sim: SimLauncher) -> None:
    engine = sim.start("--sim-fault", "health=fail", wait=False)
    engine.wait_listening()
    assert engine.get("/health").status == 503


@pytest.mark.parametrize("mode", ["fail", "hang"])
def test_health_faults_set_at_run_time(sim: SimLauncher, mode: str) -> None:
    engine = engine_with(sim, "runtime", f"health={mode}")
    if mode == "fail":
        assert engine.get("/health").status == 503
    else:
        assert_hangs(engine, "GET", "/health")
    engine.set_faults()
    assert engine.get("/health").status == 200


def test_health_hang_from_the_command_line(sim: SimLauncher) -> None:
    engine = sim.start("--sim-fault", "health=hang", wait=False)
    engine.wait_listening()
    assert_hangs(engine, "GET", "/health")


def test_crash_at_startup_exits_before_listening(sim: SimLauncher) -> None:
    engine = sim.start("--sim-fault", "crash=startup", wait=False)
    assert engine.wait_exit(10) == 1
    assert "injected crash at startup" in engine.log_text()


def _crash_step(engine: SimEngine, step: str) -> None:
    if step == "wake":
        engine.post("/sleep?level=1")
    path, body = {
        "sleep": ("/sleep?level=1", None),
        "wake": ("/wake_up", None),
        "request": ("/v1/completions", PROMPT),
    }[step]
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        engine.post(path, body)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("step", ["sleep", "wake", "request"])
def test_crash_at_a_step_kills_the_engine(sim: SimLauncher, how: str, step: str) -> None:
    engine = engine_with(sim, how, f"crash={step}")
    _crash_step(engine, step)
    assert engine.wait_exit(5) == 1
    assert f"injected crash at {step}" in engine.log_text()


@pytest.mark.parametrize("how", HOW)
def test_wake_fails_after_n_cycles(sim: SimLauncher, how: str) -> None:
    engine = engine_with(sim, how, "wake-fail-after=2")
    for _ in range(2):
        engine.post("/sleep?level=1")
        assert engine.post("/wake_up").status == 200
    engine.post("/sleep?level=1")
    assert "after 2 wake cycles" in assert_openai_error(engine.post("/wake_up"), 500)
    assert engine.post("/wake_up").status == 500


@pytest.mark.parametrize("how", HOW)
def test_corrupt_on_wake_is_caught_by_the_checksum(sim: SimLauncher, how: str) -> None:
    engine = engine_with(sim, how, "corrupt-on-wake")
    engine.post("/sleep?level=1")
    engine.post("/wake_up")
    state = engine.state()
    assert (state["awake"], state["weights_ok"]) == (True, False)


@pytest.mark.parametrize("how", HOW)
def test_decode_stall_keeps_health_but_hangs_completions(sim: SimLauncher, how: str) -> None:
    engine = engine_with(sim, how, "decode=stall")
    assert engine.get("/health").status == 200
    with pytest.raises(TimeoutError):
        engine.post("/v1/completions", PROMPT, timeout=0.4)
    engine.set_faults()
    assert engine.post("/v1/completions", PROMPT).status == 200


@pytest.mark.parametrize("how", HOW)
def test_ignore_sigterm_keeps_serving(sim: SimLauncher, how: str) -> None:
    engine = engine_with(sim, how, "ignore-sigterm")
    os.kill(engine.pid, signal.SIGTERM)
    assert engine.wait_exit(0.5) is None
    assert engine.get("/health").status == 200
    assert "ignoring SIGTERM" in engine.log_text()


def test_start_delay_postpones_listening(sim: SimLauncher) -> None:
    engine = sim.start("--sim-fault", "start-delay=0.6")
    assert time.monotonic() - engine.started_at >= 0.6


def test_start_delay_set_at_run_time_is_reported(sim: SimLauncher) -> None:
    engine = engine_with(sim, "runtime", "start-delay=1.5")
    assert engine.get("/sim/faults").json() == {"faults": ["start-delay=1.5"]}


@pytest.mark.parametrize("how", HOW)
def test_sleeping_with_requests_in_flight_crashes_unless_drained(
    sim: SimLauncher, how: str
) -> None:
    engine = engine_with(
        sim, how, "crash-on-sleep-with-inflight", extra=("--sim-tokens-per-sec", "200")
    )
    body = {**PROMPT, "max_tokens": 40}
    done = threading.Event()

    def request() -> None:
        with contextlib.suppress(OSError):  # aborted, or cut off by the crash
            engine.post("/v1/completions", body)
        done.set()

    threading.Thread(target=request).start()
    while engine.state()["in_flight"] == 0:
        time.sleep(0.01)
    assert engine.post("/sleep?level=1&mode=wait").status == 200  # drains first: survives
    assert done.wait(5)
    engine.post("/wake_up")
    threading.Thread(target=request).start()
    done.clear()
    while engine.state()["in_flight"] == 0:
        time.sleep(0.01)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        engine.post("/sleep?level=1&mode=abort")
    assert engine.wait_exit(5) == 1
    assert done.wait(5)


def test_an_invalid_fault_spec_stops_start_up_with_exit_code_2(sim: SimLauncher) -> None:
    engine = sim.start("--sim-fault", "sleep=explode", wait=False)
    assert engine.wait_exit(10) == 2
    assert "sleep='explode'" in engine.log_text()


def test_an_invalid_fault_spec_at_run_time_is_a_400(sim: SimLauncher) -> None:
    engine = sim.start("--sim-fault", "sleep=fail")
    assert_openai_error(engine.set_faults("teleport"), 400)
    assert engine.get("/sim/faults").json() == {"faults": ["sleep=fail"]}


def test_faults_can_come_from_the_environment(sim: SimLauncher) -> None:
    engine = sim.start(env={"LLMUX_SIM_FAULT": "sleep=fail,corrupt-on-wake"})
    assert engine.get("/sim/faults").json() == {"faults": ["sleep=fail", "corrupt-on-wake"]}
