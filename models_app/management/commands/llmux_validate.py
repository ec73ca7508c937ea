"""`python manage.py llmux_validate MODEL [--policies a+b,...]` (llmux's --validate)."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from django.core.management.base import CommandError, CommandParser

from models_app.management.base import LlmuxCommand
from models_app.models import ModelDefinition, ValidationRun, Verdict
from models_app.services.validation import parse_policies, validate
from models_app.services.waiting import OperationError


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


NOT_PASSED = (Verdict.FAIL, Verdict.UNVERIFIED, Verdict.REFUSED)


def _verdict(run: ValidationRun) -> str:
    return run.verdict.upper() if run.verdict == Verdict.FAIL else str(run.verdict)


def _mib(value: int | None) -> str:
    return "—" if value is None else f"{value / 1024**2:,.1f}"


class Command(LlmuxCommand):
    help = "Check that MODEL sleeps and wakes correctly under each eviction policy."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")
        parser.add_argument(
            "--policies",
            help="comma-separated weights+process labels (default: every policy this host "
            "supports), e.g. offload+keep_running,discard+checkpoint",
        )
        parser.add_argument("--timeout", type=float, default=1800.0)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            model = ModelDefinition.objects.get(name=options["model"])
        except ModelDefinition.DoesNotExist:
            raise CommandError(f"no model named {options['model']!r}") from None
        try:
            policies = parse_policies(options["policies"]) if options["policies"] else None
        except OperationError as exc:
            raise CommandError(str(exc)) from None
        header = (
            f"{'policy':<24} {'result':<10} {'evict ms':>9} {'bring-up ms':>12} "
            f"{'MiB before':>10} {'evicted':>8} {'after':>8}  answer"
        )
        self.stdout.write(header)

        def show(run: ValidationRun) -> None:
            answer = {True: "same", False: "DIFFERS", None: "—"}[run.answer_matches]
            self.stdout.write(
                f"{run.policy:<24} {_verdict(run):<10} {_ms(run.evict_ms):>9} "
                f"{_ms(run.bringup_ms):>12} {_mib(run.memory_before):>10} "
                f"{_mib(run.memory_evicted):>8} {_mib(run.memory_after):>8}  {answer}"
                + (f"\n    {run.error}" if run.error else "")
            )

        runs = validate(model, policies, timeout=options["timeout"], on_run=show)
        if not runs:
            raise CommandError("no policy to validate on this host")
        counts = Counter(run.verdict for run in runs)
        others = ", ".join(f"{counts[v]} {v}" for v in NOT_PASSED if counts[v])
        summary = f"{counts[Verdict.PASS]} of {len(runs)} policies passed"
        self.stdout.write(f"{summary} ({others})" if others else summary)
        if counts[Verdict.PASS] != len(runs):  # unverified is not a pass either
            sys.exit(1)
