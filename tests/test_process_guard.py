"""The process guard fails a test that leaves a process behind, and kills the process."""

from __future__ import annotations

import os
import subprocess

import psutil
import pytest

pytest_plugins = ["pytester"]

GUARD_ARGS = (
    *("-p", "tests.plugins.process_guard"),
    *("-p", "no:django", "-p", "no:asyncio", "-p", "no:cacheprovider"),
)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_test_that_leaks_a_process_fails_naming_it_and_the_process_is_killed(
    pytester: pytest.Pytester,
) -> None:
    pid_file = pytester.path / "leaked.pid"
    pytester.makepyfile(
        f"""
        import subprocess

        def test_leaks():
            leaked = subprocess.Popen(["sleep", "30"], start_new_session=True)
            open({str(pid_file)!r}, "w").write(str(leaked.pid))

        def test_next_one_is_clean():
            pass
        """
    )

    result = pytester.runpytest_inprocess(*GUARD_ARGS)

    result.assert_outcomes(passed=2, errors=1)
    leaked_pid = int(pid_file.read_text())
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks*",
            "*test left 1 process(es) running (killed)*",
            f"*pid {leaked_pid} (pgid {leaked_pid}): sleep 30*",
        ]
    )
    assert gone(leaked_pid)


def test_a_test_that_cleans_up_after_itself_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import subprocess

        def test_cleans_up():
            child = subprocess.Popen(["sleep", "30"], start_new_session=True)
            child.kill()
            child.wait()
        """
    )

    result = pytester.runpytest_inprocess(*GUARD_ARGS)

    result.assert_outcomes(passed=1)
    assert result.ret == 0


def test_a_process_surviving_the_session_fails_the_run(pytester: pytest.Pytester) -> None:
    pid_file = pytester.path / "survivor.pid"
    pytester.makepyfile(
        f"""
        import subprocess
        import pytest

        @pytest.fixture(scope="session")
        def server(process_guard):
            child = subprocess.Popen(["sleep", "30"], start_new_session=True)
            process_guard.allowed.add(child.pid)  # session-long: exempt from per-test checks
            open({str(pid_file)!r}, "w").write(str(child.pid))
            yield child  # and "forgets" to stop it

        def test_uses_server(server):
            pass

        def test_uses_server_again(server):
            assert server.poll() is None  # not killed between tests
        """
    )

    result = pytester.runpytest_inprocess(*GUARD_ARGS)

    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    survivor = int(pid_file.read_text())
    result.stdout.fnmatch_lines(
        ["*process guard: 1 process(es) survived the session (killed)*", f"*pid {survivor} *"]
    )
    assert gone(survivor)


def test_a_child_started_with_a_scrubbed_environment_is_still_caught(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import subprocess

        def test_leaks_without_marker():
            subprocess.Popen(["sleep", "30"], env={"PATH": "/usr/bin:/bin"})
        """
    )

    result = pytester.runpytest_inprocess(*GUARD_ARGS)

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*sleep 30*"])


def test_processes_started_in_tests_inherit_the_run_marker() -> None:
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        environ = psutil.Process(child.pid).environ()
    finally:
        child.kill()
        child.wait()

    assert environ["LLMUX_TEST_RUN"] == os.environ["LLMUX_TEST_RUN"] != ""
