"""`python manage.py llmux serve`: run llmux (web + worker) in one command."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError, CommandParser

from llmux_site import serve
from llmux_site.core.addresses import is_loopback_host
from llmux_site.core.config import ConfigError, load_config_file
from llmux_site.core.threads import quick_thread_handoff
from models_app import image_port
from models_app.management.base import LlmuxCommand
from models_app.models import ModelDefinition, RegistryConfig
from models_app.services.accounts import ensure_initial_admin
from models_app.services.nodes import register_local_node
from models_app.services.reconcile import reconcile
from models_app.services.registry import apply_registry
from models_app.services.registry.demo import DEMO_REGISTRY, demo_spec
from models_app.services.runtime import stop_all_engines
from models_app.services.sweeper import install_schedules, requeue_stranded, stop_sweep
from models_app.services.warmup import schedule_warmup
from models_app.wiring import own_engines_here


class Command(LlmuxCommand):
    help = "llmux control: `serve` runs the web process and the worker together."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(
            dest="action", required=True, parser_class=argparse.ArgumentParser
        )
        serve_parser = sub.add_parser("serve", help="run web + worker until Ctrl-C")
        serve_parser.add_argument("--config", type=Path, help="llmux config file to import first")
        serve_parser.add_argument(
            "--strict",
            action="store_true",
            help="refuse unknown keys in --config's file instead of keeping them (llmux_import)",
        )
        serve_parser.add_argument("--host", default="127.0.0.1")
        serve_parser.add_argument("--port", type=int, default=8000)
        serve_parser.add_argument(
            "--web-processes",
            default=settings.LLMUX_WEB_PROCESSES,
            help="web processes sharing the port: a number, or auto (LLMUX_WEB_PROCESSES)",
        )
        sub.add_parser("worker", help="reconcile, then run the worker cluster (qcluster)")
        sub.add_parser("warmup", help="queue warmup of the models configured for it")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "serve":
            web_processes = options["web_processes"]
            self.serve(
                options["config"],
                options["host"],
                options["port"],
                web_processes,
                strict=options["strict"],
            )
        elif action == "worker":
            self.worker()
        elif action == "warmup":
            self.say(f"warmup queued for GPU group(s): {', '.join(schedule_warmup()) or 'none'}")

    def worker(self) -> None:
        """Adopt what an earlier worker left (engines, leases), then run the cluster."""
        register_local_node()
        report = reconcile()
        if report.died or report.rolled_back or report.abandoned_switches:
            self.say(f"recovered from an earlier run: {report}")
        failed_images = image_port.recover()
        if failed_images:
            self.say(f"images left half-written by an earlier run, marked failed: {failed_images}")
        install_schedules()
        requeue_stranded(immediately=True)
        quick_thread_handoff()  # the cluster's processes are forked: they inherit it
        # This process parents and reaps every engine its cluster's processes start or
        # restore (engine_owner): no engine is ever a zombie of another worker process.
        helper = own_engines_here()
        try:
            call_command("qcluster")
        finally:
            if helper is not None:
                helper.terminate()
                helper.wait(timeout=10)

    def serve(
        self, config: Path | None, host: str, port: int, web_processes: str, *, strict: bool
    ) -> None:
        if not 1 <= port <= 65535:
            raise CommandError(f"--port {port} is out of range 1-65535")
        try:
            web = serve.web_process_count(web_processes, os.cpu_count())
            serve.check_port_free(host, port)
        except serve.ServeError as exc:
            raise CommandError(str(exc)) from None
        self.load_registry(config, strict=strict)
        taken = ModelDefinition.objects.filter(port=port).first()
        if taken is not None:
            raise CommandError(f"model {taken.name} listens on port {port}, llmux's own port")
        admin_port, metrics_port = self.side_ports(port)
        # Metrics start from zero with the processes that write them (Prometheus sees a
        # counter reset, as for any restart); files of earlier processes would linger.
        for stale in Path(settings.LLMUX_DIRS["metrics"]).glob("*.db"):
            stale.unlink(missing_ok=True)
        node = register_local_node()
        warming = schedule_warmup()
        if warming:
            self.say(f"warming up models of GPU group(s) {', '.join(warming)}")
        self.say(f"llmux {settings.PROFILE} profile, node {node.name}, data in {settings.DATA_DIR}")
        self.banner(host, port, admin_port, metrics_port)
        try:
            runner = serve.Runner(
                before_stop=stop_sweep,
                host=host,
                port=port,
                say=self.say,
                children=serve.child_processes(
                    serve.listen(host, port, web),
                    serve.side_listeners([p for p in (admin_port, metrics_port) if p], web),
                ),
            )
            if web > 1:
                self.say(f"  {web} web processes share port {port}")
            env = serve.child_env(host, port, web, admin_port=admin_port, metrics_port=metrics_port)
            code = runner.run(env)
        except serve.ServeError as exc:
            raise CommandError(str(exc)) from None
        finally:
            self.stop_engines()
        if code != 0:
            raise CommandError("llmux stopped because one of its processes died")
        self.say("llmux stopped")

    def banner(
        self, host: str, port: int, admin_port: int | None, metrics_port: int | None
    ) -> None:
        """Where llmux listens, and how to log in."""
        admin = ensure_initial_admin()
        origin = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        self.say(f"  dashboard  {origin}/")
        self.say(f"  admin      {origin}/admin/")
        self.say(f"  gateway    {origin}/v1/   (OpenAI-compatible)")
        if admin_port:
            self.say(f"  control    http://127.0.0.1:{admin_port}/control/   (no login, loopback)")
        if metrics_port:
            self.say(f"  metrics    http://127.0.0.1:{metrics_port}/metrics   (loopback)")
        if admin.password is not None:
            self.say(f"  log in as '{admin.username}' with password {admin.password}")
            self.say(f"  (also saved to {admin.password_file}; change it in the admin)")
        else:
            self.say(
                f"  log in with your admin account (first password was saved to "
                f"{admin.password_file}; reset with `manage.py changepassword {admin.username}`)"
            )
        if not is_loopback_host(host):
            self.say(f"  WARNING: listening on {host}, beyond loopback")

    def side_ports(self, port: int) -> tuple[int | None, int | None]:
        """The config's admin_port and metrics_port, where set (0: llmux's "disabled"):
        llmux_site/side_ports.py serves them on loopback, without authentication."""
        config = RegistryConfig.current()
        admin, metrics = config.admin_port or None, config.metrics_port or None
        for name, side in (("admin_port", admin), ("metrics_port", metrics)):
            if side is None:
                continue
            if side == port or (name == "metrics_port" and side == admin):
                raise CommandError(f"{name} {side} is already llmux's port or admin_port")
            try:
                serve.check_port_free("127.0.0.1", side)
            except serve.ServeError as exc:
                raise CommandError(f"{name}: {exc}") from None
        return admin, metrics

    def stop_engines(self) -> None:
        if settings.LLMUX_KEEP_ENGINES_ON_EXIT:
            self.say("leaving engines running (LLMUX_KEEP_ENGINES_ON_EXIT)")
            return
        stopped = stop_all_engines()
        if stopped:
            self.say(f"stopped engines: {', '.join(stopped)}")

    def load_registry(self, config: Path | None, *, strict: bool = False) -> None:
        """Import `config` (an administrator's file: docs/CONFIG.md), or the demo registry
        into an empty database."""
        if config is None and (
            ModelDefinition.objects.exists() or not settings.LLMUX_DEMO_REGISTRY
        ):
            return
        try:
            if config is None:
                self.say("registry is empty: loading the demo registry of simulated models")
                config = DEMO_REGISTRY
                spec = demo_spec(config)
            else:
                spec = load_config_file(config, strict=strict)
        except (ConfigError, OSError) as exc:
            raise CommandError(f"{config}: {exc}") from None
        try:
            report = apply_registry(spec, confine_paths=False)
        except ConfigError as exc:
            raise CommandError(f"{config}: {exc}") from None
        self.say(str(report))

    def say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()
