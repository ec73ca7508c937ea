"""An `ImageStore` on plain directories, for tests of the core (the database one records rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmux_site.core.criu import DumpResult, RestoreResult
from llmux_site.core.switching import EngineTarget


@dataclass
class DirectoryImages:
    """root/<model>/<n>: an image per dump; a marker file says how it ended."""

    root: Path
    events: list[tuple[str, str]] = field(default_factory=list)  # (event, image dir name)

    def _model_dir(self, target: EngineTarget) -> Path:
        return self.root / target.name.replace("/", "_")

    def new_image(self, target: EngineTarget) -> Path:
        model_dir = self._model_dir(target)
        model_dir.mkdir(parents=True, exist_ok=True)
        taken = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
        return model_dir / str(max(taken, default=0) + 1)

    def dumped(self, target: EngineTarget, images_dir: Path, result: DumpResult) -> None:
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
        return max(ready, key=lambda p: int(p.name), default=None)

    def restored(self, target: EngineTarget, images_dir: Path, result: RestoreResult) -> None:
        self.events.append(("restored", images_dir.name))

    def restore_failed(self, target: EngineTarget, images_dir: Path, error: str) -> None:
        (images_dir / "FAILED").write_text(error)
        self.events.append(("restore_failed", images_dir.name))

    def size(self, target: EngineTarget, name: str) -> int:
        return int((self._model_dir(target) / name / "READY").read_text())
