"""An `ImageStore` on plain directories, for tests of the core (the database one records rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmux_site.core.criu import DumpResult, RestoreResult
from llmux_site.core.images import fingerprint, is_image, read_meta
from llmux_site.core.processes import EngineProcess
from llmux_site.core.switching import EngineTarget


@dataclass
class DirectoryImages:
    """root/<model>/<n>: an image per dump; a marker file says how it ended."""

    root: Path
    events: list[tuple[str, str]] = field(default_factory=list)  # (event, image dir name)
    progress_seen: list[tuple[str, int, int]] = field(default_factory=list)
    room: int | None = None  # bytes an image may take; None: no limit
    reuse: bool = False  # keep_images: a restored engine evicted again keeps its image
    _origins: dict[tuple[int, float], Path] = field(default_factory=dict)
    restores: dict[Path, int] = field(default_factory=dict)  # image -> times restored

    def _model_dir(self, target: EngineTarget) -> Path:
        return self.root / target.name.replace("/", "_")

    def new_image(self, target: EngineTarget, expected_bytes: int) -> Path:
        from llmux_site.core.images import DiskBudgetExceeded

        if self.room is not None and expected_bytes > self.room:
            raise DiskBudgetExceeded(f"needs {expected_bytes} bytes, {self.room} left")
        model_dir = self._model_dir(target)
        model_dir.mkdir(parents=True, exist_ok=True)
        taken = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
        return model_dir / str(max(taken, default=0) + 1)

    def progress(self, images_dir: Path, done: int, total: int) -> None:
        self.progress_seen.append((images_dir.name, done, total))

    def dumped(self, target: EngineTarget, images_dir: Path, result: DumpResult) -> None:
        assert is_image(images_dir)  # described before it is called ready
        (images_dir / "READY").write_text(str(result.bytes))
        self.events.append(("dumped", images_dir.name))

    def dump_failed(self, target: EngineTarget, images_dir: Path, error: str) -> None:
        self.events.append(("dump_failed", images_dir.name))

    def latest(self, target: EngineTarget) -> Path | None:
        model_dir = self._model_dir(target)
        ready = [
            p
            for p in (model_dir.iterdir() if model_dir.exists() else [])
            if (p / "READY").exists() and not (p / "FAILED").exists()
        ]
        newest = max(ready, key=lambda p: int(p.name), default=None)
        meta = read_meta(newest) if newest else None
        return newest if meta and meta.fingerprint == fingerprint(target) else None

    def restoring(self, images_dir: Path) -> None:
        self.events.append(("restoring", images_dir.name))

    def restored(self, target: EngineTarget, images_dir: Path, result: RestoreResult) -> None:
        self._origins[result.process.identity] = images_dir
        self.restores[images_dir] = self.restores.get(images_dir, 0) + 1
        self.events.append(("restored", images_dir.name))

    def reusable(self, target: EngineTarget, process: EngineProcess) -> Path | None:
        kept = self._origins.get(process.identity) if self.reuse else None
        return kept if kept is not None and (kept / "READY").exists() else None

    def reused(self, target: EngineTarget, images_dir: Path) -> None:
        self.events.append(("reused", images_dir.name))

    def restore_failed(self, target: EngineTarget, images_dir: Path, error: str) -> None:
        (images_dir / "FAILED").write_text(error)
        self.events.append(("restore_failed", images_dir.name))

    def verified(self, target: EngineTarget, images_dir: Path) -> None:
        self.events.append(("verified", images_dir.name))

    def size(self, target: EngineTarget, name: str) -> int:
        return int((self._model_dir(target) / name / "READY").read_text())
