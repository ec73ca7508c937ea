"""The cause of a failed start, as found in real vLLM logs (tests/core/engine_logs).

The logs are real: vLLM 0.32.0's CPU build started on this machine kind with a bad flag or a
bad setting, and one that died serving its first request (exit noise at the end), trimmed
of its route list and of its multi-kilobyte input dumps.
"""

from __future__ import annotations

from pathlib import Path

from llmux_site.core.engine_log import failure_cause, read_failure_cause, run_marker_line
from llmux_site.core.processes import read_log_tail

LOGS = Path(__file__).parent / "engine_logs"


def test_sleep_mode_refused_on_cpu_is_shown_with_its_message() -> None:
    cause = read_failure_cause(LOGS / "vllm_cpu_sleep_mode_refused.log")

    assert cause.startswith("Traceback (most recent call last):")
    assert "Sleep mode is not supported on current platform." in cause
    assert cause.splitlines()[-2].startswith("  Value error, Sleep mode")
    assert len(cause.splitlines()) <= 24


def test_a_stale_socket_shows_address_already_in_use_last() -> None:
    cause = read_failure_cause(LOGS / "vllm_cpu_stale_socket.log")

    assert cause.splitlines()[-1] == "OSError: [Errno 98] Address already in use"
    assert "sock.bind(path)" in cause


def test_the_first_traceback_of_a_multiprocess_failure_is_the_root_cause() -> None:
    # The worker's traceback comes first; the engine core's and the API server's repeat it
    # ("See root cause above").
    cause = read_failure_cause(LOGS / "vllm_cpu_kv_cache_too_big.log")

    lines = cause.splitlines()
    assert lines[0] == "(Worker pid=5669) WorkerProc hit an exception."
    assert lines[-1].startswith("(Worker pid=5669) ValueError: Available memory on node 0")
    assert "Decrease --kv-cache-memory-bytes" in lines[-1]
    assert "Engine core initialization failed" not in cause
    assert " 12-07 10:51:27 [multiproc_executor.py" not in cause  # timestamps are dropped


def test_exit_noise_at_the_end_is_never_the_cause() -> None:
    log = LOGS / "vllm_cpu_worker_died.log"
    assert "nanobind" in read_log_tail(log)  # what llmux used to show

    cause = read_failure_cause(log)

    assert cause.startswith("(EngineCore pid=6731) Worker proc VllmWorker-0 died unexpectedly")
    assert "nanobind" not in cause
    assert "resource_tracker" not in cause


def test_a_warning_that_mentions_an_error_is_not_the_cause() -> None:
    text = (
        "(APIServer pid=1) WARNING 12-07 10:52:05 [system_utils.py:255] Found ulimit of 20000:"
        " this can cause `OSError: [Errno 24] Too many open files`\n"
        "vllm serve: error: unrecognized arguments: --no-such-flag\n"
    )

    assert failure_cause(text) == "vllm serve: error: unrecognized arguments: --no-such-flag"


def test_a_log_without_an_error_falls_back_to_its_last_lines_without_noise() -> None:
    text = "\n".join(
        [
            "http_engine 12 starting",
            "CUDA out of memory while loading weights",
            "nanobind: leaked 4 instances!",
            ' - leaked instance 0x7f of type "triton._C.libtriton.ir.attribute"',
        ]
    )

    assert failure_cause(text) == (
        "http_engine 12 starting\nCUDA out of memory while loading weights"
    )


def test_only_the_newest_run_of_an_appended_log_is_searched(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    earlier = (LOGS / "vllm_cpu_stale_socket.log").read_text()
    log.write_text(
        f"{run_marker_line('2026-12-07T10:00:00+00:00')}{earlier}\n"
        f"{run_marker_line('2026-12-07T11:00:00+00:00')}"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "RuntimeError: the newest run's failure\n"
    )

    cause = read_failure_cause(log)

    assert cause.splitlines()[-1] == "RuntimeError: the newest run's failure"
    assert "Address already in use" not in cause


def test_a_chained_exception_stops_at_the_first_one() -> None:
    text = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "a.py", line 3, in load',
            "    open(path)",
            "FileNotFoundError: [Errno 2] No such file: '/models/x'",
            "During handling of the above exception, another exception occurred:",
            "Traceback (most recent call last):",
            '  File "b.py", line 9, in main',
            "RuntimeError: load failed",
        ]
    )

    assert failure_cause(text).splitlines()[-1] == (
        "FileNotFoundError: [Errno 2] No such file: '/models/x'"
    )


def test_an_unreadable_log_has_no_cause(tmp_path: Path) -> None:
    assert read_failure_cause(tmp_path / "missing.log") == ""
    assert read_failure_cause(None) == ""
