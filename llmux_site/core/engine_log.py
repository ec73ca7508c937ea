"""What an engine's log says about why it failed: the cause, not the last lines.

A failed start of vLLM ends its log with exit noise (triton's "nanobind: leaked ..." lines,
multiprocessing's resource_tracker warnings), and the last 40 lines of a log are often all
noise, the real cause scrolled away above them. So the cause is looked for from the start of
the run: the first Python traceback or error line, with its context; only a log with neither
falls back to its tail. Pure functions over text, plus one reader.

Engine logs are appended to across starts; `spawn` writes `RUN_MARKER` before each start,
so only the newest run is searched.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

__all__ = ["RUN_MARKER", "failure_cause", "read_failure_cause", "run_marker_line"]

RUN_MARKER = "--- llmux: engine start"
MAX_CAUSE_LINES = 24
READ_BYTES = 256 * 1024

# vLLM prefixes lines of its processes: "(EngineCore pid=12) ERROR 12-07 10:51:27 [core.py:1510] ".
_PREFIX = re.compile(
    r"^(?P<tag>\([\w.-]+ pid=\d+\) )?"
    r"(?:(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) \d\d-\d\d [\d:.]+ \[[^\]]*\] )?"
)
_TRACEBACK = "Traceback (most recent call last):"
# `ValueError: ...`, `vllm.x.EngineDeadError: ...`, argparse's `vllm serve: error: ...`.
_ERROR_TEXT = re.compile(r"(?:^|[\s.])[A-Za-z_]*(?:Error|Exception)\b:|\berror: ")
_QUIET_LEVELS = ("DEBUG", "INFO", "WARNING")
# Python 3.11's markers under a frame's code line: room better spent on frames.
_CARETS = re.compile(r"^\s*[\^~]+\s*$")
_NOISE = (
    re.compile(r"^nanobind: "),
    re.compile(r"^ - (?:leaked |\.\.\. skipped remainder)"),
    re.compile(r"^See https://nanobind\."),
    re.compile(r"resource_tracker: There appear to be"),
    re.compile(r"^\s*warnings\.warn\('resource_tracker"),
)


def run_marker_line(when: str) -> str:
    """The line `spawn` writes into an engine log before each start."""
    return f"{RUN_MARKER} {when} ---\n"


def _split(line: str) -> tuple[str, str | None, str]:
    """(process tag, log level, message) of one log line."""
    match = _PREFIX.match(line)
    assert match is not None  # every group is optional
    return match.group("tag") or "", match.group("level"), line[match.end() :]


def _is_noise(message: str) -> bool:
    return any(pattern.search(message) for pattern in _NOISE)


def _shown(line: str) -> str:
    """A line as shown: the process tag stays, the timestamp and source go."""
    tag, _level, message = _split(line)
    return f"{tag}{message}".rstrip()


def _traceback_end(lines: Sequence[str], start: int) -> int:
    """The index after the traceback starting at `start`: its frames (indented), then its
    exception line and that message's own lines (indented, or a few plain ones). A chained
    exception's "During handling ..." ends it: the first exception is the cause."""
    tag = _split(lines[start])[0]
    index, message_lines = start + 1, 0
    while index < len(lines):
        line_tag, level, message = _split(lines[index])
        if line_tag != tag or _is_noise(message) or message.startswith(_TRACEBACK):
            break
        if not message[:1].isspace():
            chained = message.startswith(("During handling", "The above exception"))
            if message_lines and (chained or level in _QUIET_LEVELS or message_lines > 3):
                break
            message_lines += 1
        index += 1
    return index


def _first_event(lines: Sequence[str]) -> int | None:
    """The first line that starts a traceback or reports an error (not a quiet log level)."""
    for index, line in enumerate(lines):
        _tag, level, message = _split(line)
        if _is_noise(message):
            continue
        if message.startswith(_TRACEBACK) or level in ("ERROR", "CRITICAL"):
            return index
        if level not in _QUIET_LEVELS and _ERROR_TEXT.search(message):
            return index
    return None


def _clip(block: list[str], limit: int) -> list[str]:
    """At most `limit` lines: the first one, then the end (a traceback's message is last)."""
    if len(block) <= limit:
        return block
    return [block[0], f"  ... ({len(block) - limit + 1} lines left out)", *block[-(limit - 2) :]]


def failure_cause(text: str, *, max_lines: int = MAX_CAUSE_LINES) -> str:
    """The part of an engine log that says why it failed ('' for an empty log).

    The first traceback (or error line) and what belongs to it: an error line is followed
    by the traceback it announces and a few lines more. Without either, the last lines
    that are not exit noise.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    start = _first_event(lines)
    if start is None:
        quiet = [_shown(line) for line in lines if not _is_noise(_split(line)[2])]
        return "\n".join(quiet[-max_lines:])
    traceback_at = next(
        (
            i
            for i in range(start, min(start + 3, len(lines)))
            if _split(lines[i])[2].startswith(_TRACEBACK)
        ),
        None,
    )
    if traceback_at is not None:
        end = _traceback_end(lines, traceback_at)
    else:
        end = start + 1
        while end < min(start + 4, len(lines)) and not _is_noise(_split(lines[end])[2]):
            end += 1
    block = [_shown(line) for line in lines[start:end] if not _CARETS.match(_split(line)[2])]
    return "\n".join(_clip(block, max_lines))


def _newest_run(text: str) -> str:
    at = text.rfind(RUN_MARKER)
    if at < 0:
        return text
    return text[text.find("\n", at) + 1 :] if "\n" in text[at:] else ""


def read_failure_cause(
    log_path: str | os.PathLike[str] | None, *, max_lines: int = MAX_CAUSE_LINES
) -> str:
    """`failure_cause` of the newest run in an engine log; '' when unreadable."""
    if log_path is None:
        return ""
    try:
        with open(log_path, "rb") as log_file:
            size = log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, size - READ_BYTES))
            data = log_file.read()
    except OSError:
        return ""
    return failure_cause(_newest_run(data.decode("utf-8", errors="replace")), max_lines=max_lines)
