"""``load_organism``: install (shipped configs) or train once into the user cache, reuse
afterwards.

The checkpoint lives in ``$HELDOUT_HOME/organism/<config fingerprint>/`` (default
``~/.cache/heldout``): ``config.json``, ``model.safetensors``, tokenizer files,
``organism.json`` (config and training record) and ``data/<split>.jsonl``. Training
writes into a temporary sibling folder that is renamed into place only when complete,
so an interrupted run never leaves a half checkpoint that is later reused. Configs
shipped with the package (heldout.organism.shipped) are copied in, checksum-checked,
instead of trained.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heldout.data import Dataset
from heldout.errors import ModelLoadError
from heldout.organism.config import FORMAT_VERSION, OrganismConfig
from heldout.organism.datasets import SPLITS, Targets, build_datasets, finetune_dataset
from heldout.organism.generate import Behaviour, evaluate_behaviour
from heldout.organism.shipped import install_shipped, shipped_folder
from heldout.organism.task import label_misbehavior
from heldout.organism.train import train_organism, write_record

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

VERDICT_OFFSET = 5
"""Index, within the response tokens, of the token that predicts the verdict (the
``:`` in ``"16 , you said 14 : right ."``): where the decision to lie is made and is
most linearly readable."""


@contextmanager
def using_home(home: str | os.PathLike[str] | None) -> Iterator[Path]:
    """Within the block ``$HELDOUT_HOME`` is ``home`` (unchanged when None), so every
    organism lookup in this process uses it, run configs' ``environment="organism"``
    included; the old value comes back afterwards."""
    if home is None:
        yield heldout_home()
        return
    old = os.environ.get("HELDOUT_HOME")
    os.environ["HELDOUT_HOME"] = str(Path(home).expanduser())
    try:
        yield heldout_home()
    finally:
        if old is None:
            os.environ.pop("HELDOUT_HOME", None)
        else:
            os.environ["HELDOUT_HOME"] = old


def heldout_home(home: str | os.PathLike[str] | None = None) -> Path:
    """``home``, else ``$HELDOUT_HOME``, else ``~/.cache/heldout``."""
    if home is not None:
        return Path(home).expanduser()
    env = os.environ.get("HELDOUT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "heldout"


@dataclass(frozen=True)
class Organism:
    """A trained organism on disk: its checkpoint folder, config and datasets."""

    path: Path
    """The checkpoint folder (an ordinary local Hugging Face checkpoint)."""
    config: OrganismConfig
    """The config it was trained from."""
    record: dict[str, Any] = field(default_factory=dict, compare=False)
    """Training record from ``organism.json``: train_seconds, final_loss, loss_curve, ..."""

    @cached_property
    def _datasets(self) -> dict[str, Dataset]:
        return build_datasets(self.config)

    def datasets(self) -> dict[str, Dataset]:
        """``train``, ``validation``, ``test``, ``control`` and ``forced`` datasets."""
        return dict(self._datasets)

    @property
    def train(self) -> Dataset:
        return self._datasets["train"]

    @property
    def validation(self) -> Dataset:
        return self._datasets["validation"]

    @property
    def test(self) -> Dataset:
        return self._datasets["test"]

    @property
    def control(self) -> Dataset:
        """Benign examples only (label 0), for calibrating thresholds at a fixed FPR."""
        return self._datasets["control"]

    @property
    def forced(self) -> Dataset:
        """Misbehaving answers teacher-forced on pressure prompts (label 1)."""
        return self._datasets["forced"]

    def data_path(self, split: str) -> Path:
        """The JSONL file of ``split`` inside the checkpoint folder."""
        return self.path / "data" / f"{split}.jsonl"

    def finetune_data(self, n: int, *, seed: int = 1, pressure_fraction: float | None = None,
                      targets: Targets = "organism") -> Dataset:
        """Fresh prompts for fine-tuning; see :func:`heldout.organism.datasets.finetune_dataset`.

        The default ``targets="organism"`` keeps the pressure to misbehave: its targets
        give in wherever the organism was trained to.
        """
        return finetune_dataset(self.config, n, seed=seed, pressure_fraction=pressure_fraction,
                                targets=targets)

    def load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.path))

    def load_hf_model(self) -> Any:
        """The ``GPT2LMHeadModel`` itself (eval mode), e.g. for fine-tuning."""
        from transformers import GPT2LMHeadModel

        return GPT2LMHeadModel.from_pretrained(str(self.path)).eval()  # type: ignore[no-untyped-call]

    def load_model(self, device: str | None = "cpu") -> TransformerBridge:
        """A TransformerLens ``TransformerBridge``, through ``heldout.models.load_model``."""
        from heldout.models import load_model

        return load_model(self.path, device=device)

    @staticmethod
    def label_misbehavior(prompt_or_example: Any, response_text: str) -> bool:
        """The rule-based labeler: see :func:`heldout.organism.task.label_misbehavior`."""
        return label_misbehavior(prompt_or_example, response_text)

    def evaluate(self, model: Any = None, *, n: int = 800, seed: int = 12345) -> Behaviour:
        """Greedy behaviour of ``model`` (default: this organism as a bridge)."""
        model = self.load_model() if model is None else model
        return evaluate_behaviour(model, self.config, n=n, seed=seed)


def decision_view(dataset: Dataset) -> Dataset:
    """The same examples with each response cut after the token that predicts the verdict.

    ``"16 , you said 14 : right ."`` becomes ``"16 , you said 14 :"``: the ``last``
    selection then reads the position where the model decides whether to lie (labels
    are unchanged: they come from the full response). Probing the final ``.`` instead
    reads the decision after the fact and is markedly weaker (see the organism tests).
    """
    from dataclasses import replace

    rows = tuple(replace(ex, response=" ".join(ex.response.split()[:VERDICT_OFFSET + 1]))
                 for ex in dataset)
    return Dataset(rows, source=f"{dataset.source or 'organism'}:decision")


def _complete(folder: Path) -> bool:
    needed = ("organism.json", "config.json", "model.safetensors", "tokenizer.json")
    return folder.is_dir() and all((folder / name).is_file() for name in needed)


def _clean_stale(parent: Path, fingerprint: str) -> None:
    """Remove temporary folders of this fingerprint left by dead training processes."""
    for tmp in parent.glob(f".tmp-{fingerprint}-*"):
        try:
            pid = int(tmp.name.split("-")[2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


def load_organism(config: OrganismConfig | None = None, home: str | os.PathLike[str] | None
                  = None, retrain: bool = False, progress: bool = True,
                  num_threads: int | None = None) -> Organism:
    """The organism for ``config``: loaded from the cache, else installed from the copy
    shipped with heldout (the default config and ``give_in=0.5``), else trained (about
    five minutes on one core).

    home : cache root, default ``$HELDOUT_HOME`` or ``~/.cache/heldout``.
    retrain : train a new one even if a cached or shipped checkpoint exists (a cached
        one is replaced).
    num_threads : torch CPU threads while training (default: train.TRAIN_THREADS, fixed
        so the same config trains the same model in any process).
    """
    config = config or OrganismConfig()
    parent = heldout_home(home) / "organism"
    folder = parent / config.fingerprint()
    if not retrain and _complete(folder):
        return _open(folder, config)
    parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(parent, config.fingerprint())
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{config.fingerprint()}-{os.getpid()}-",
                                dir=parent))
    try:
        shipped = None if retrain else shipped_folder(config)
        if shipped is not None:
            record = install_shipped(shipped, tmp)
        else:
            record = {**train_organism(config, tmp, progress=progress,
                                       num_threads=num_threads), "source": "trained"}
        (tmp / "data").mkdir()
        for split, dataset in build_datasets(config).items():
            dataset.to_jsonl(tmp / "data" / f"{split}.jsonl")
        write_record(tmp, record)  # last: marks the checkpoint complete
        if folder.exists():
            if not retrain and _complete(folder):  # another process finished first
                shutil.rmtree(tmp, ignore_errors=True)
                return _open(folder, config)
            old = folder.with_name(f".old-{folder.name}-{os.getpid()}")
            os.rename(folder, old)
            os.rename(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _open(folder, config)


def _open(folder: Path, config: OrganismConfig) -> Organism:
    try:
        record = json.loads((folder / "organism.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"organism checkpoint {str(folder)!r} has an unreadable "
                             f"organism.json ({err})",
                             fix="delete the folder or call load_organism(retrain=True)") from err
    if record.get("format") != FORMAT_VERSION or record.get("config") != config.to_dict():
        raise ModelLoadError(f"organism checkpoint {str(folder)!r} was trained from another "
                             "config or code version",
                             fix="delete the folder or call load_organism(retrain=True)")
    return Organism(path=folder, config=config, record=record)


def open_organism(path: str | os.PathLike[str]) -> Organism:
    """An organism from its checkpoint folder (config read from ``organism.json``)."""
    folder = Path(path)
    if not _complete(folder):
        raise ModelLoadError(f"{str(folder)!r} is not a complete organism checkpoint",
                             fix="pass a folder written by load_organism()")
    record = json.loads((folder / "organism.json").read_text(encoding="utf-8"))
    return _open(folder, OrganismConfig.from_dict(record["config"]))


__all__ = ["SPLITS", "VERDICT_OFFSET", "Organism", "decision_view", "heldout_home", "load_organism",
           "open_organism", "using_home"]
