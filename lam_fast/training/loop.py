"""The training loop: video clips -> frozen encoder -> LatentActionWorldModel -> engine step.

Importable without DeepSpeed (the engine is chosen at run time). Rank 0 writes ``metrics.jsonl``
(one JSON object per logged step), TensorBoard scalars and the progress bar; every rank writes
its optimizer shard into each checkpoint. Rank 0 holds the run directory's lock (``OUT/.lock``,
:class:`lam_fast.io.DirectoryLock`) from the start of a Trainer to the end of :meth:`Trainer.train`:
a second run on the same ``--out`` is refused with :class:`~lam_fast.errors.RunLocked`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from lam_fast.errors import RunLocked, UserError
from lam_fast.io import (DirectoryLock, fault_point, load_tree, save_safetensors_atomic, save_tree, versions,
                         write_json_atomic, write_text_atomic)
from lam_fast.models import LatentActionWorldModel
from lam_fast.training import checkpoint as ckpt
from lam_fast.training.config import ConfigError, TrainConfig, make_config, save_config
from lam_fast.training.engine import make_engine
from lam_fast.training.optim import warmup_cosine


#: Config keys a resumed run may change without altering its trajectory: where the run and the data
#: are, how often it checkpoints and logs, how many decoding workers (they take whole batches in
#: sampler order).
_BOOKKEEPING = frozenset({"out", "save_every", "keep_last", "log_every", "num_workers", "data"})
#: ``steps`` may change as well, to extend (or shorten) a run, but it does alter the trajectory: the
#: warm-up and the cosine are stretched over the total (``optim.warmup_cosine``), so from the resumed
#: step on the rates follow the new total's schedule, which neither an uninterrupted run of the old
#: nor of the new length would have taken. A resume that changes it says so (ScheduleChangeWarning).
_SCHEDULE = frozenset({"steps"})
_RESUMABLE = _BOOKKEEPING | _SCHEDULE


class ScheduleChangeWarning(UserWarning):
    """A resumed run changed ``steps``: its learning-rate schedule changes from the resumed step on."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf; the run stopped without writing a checkpoint of the bad state."""


@dataclass
class TrainResult:
    out: Path
    first_loss: float | None
    last_loss: float | None
    step: int
    checkpoint: Path | None
    skipped: int


def _device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


class Trainer:
    def __init__(self, cfg: TrainConfig, *, resume: bool = False):
        from lam_fast.models.encoders import build_encoder

        if cfg.data is None:
            raise ValueError("no training data: set --data to a folder of videos, a CSV list, tar shards "
                             "or a state cache")
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.device = _device()
        torch.manual_seed(cfg.seed)
        from lam_fast.data.cache import is_state_cache

        # A state cache holds encoded clips: the frozen encoder (V-JEPA 2 at paper scale) is not
        # even loaded; its name, width and token grid come from the cache's manifest.
        self.from_cache = is_state_cache(cfg.data)
        self.encoder = None if self.from_cache else \
            build_encoder(cfg.encoder, cfg.image_size, **cfg.encoder_options()).to(self.device)
        self.dataset = self._dataset()
        if self.from_cache:
            info = self.dataset.encoder_info
            self.encoder_meta = {"name": info["name"], "dim": info["dim"], "grid": list(info["grid"])}
        else:
            self.encoder_meta = {"name": self.encoder.name, "dim": self.encoder.dim, "grid": list(self.encoder.grid)}
        model = LatentActionWorldModel(cfg.model_config(), state_dim=self.encoder_meta["dim"],
                                       grid=tuple(self.encoder_meta["grid"]))
        self._shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}  # before ZeRO-3 splits
        self.engine = make_engine(model, cfg, self.device)
        self.model: LatentActionWorldModel = self.engine.module
        self.rank, self.world_size = self.engine.rank, self.engine.world_size
        self._lock = self._lock_out()
        try:
            self._check_same_data()
            torch.manual_seed(cfg.seed + 1_000_003 * self.rank)  # independent latent noise per rank
            self.step = 0
            self.batches_read = 0  # data position: batches drawn from the sampler (>= step if a batch was empty)
            self.videos_seen = 0
            self.read_failures = 0
            self.resumed_from: Path | None = None
            self._start(resume)
        except BaseException:
            self.close()
            raise
        # bf16 autocast (default on GPU); the DeepSpeed engine also keeps bf16 weights + fp32 master
        self.autocast = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")

    def _dataset(self):
        """Clips of cfg.data: decoded video (through cfg.decoder), or states from a `lam-fast encode` cache."""
        from lam_fast.data import VideoClipDataset, make_decoder
        from lam_fast.data.cache import StateCacheDataset

        cfg = self.cfg
        if self.from_cache:
            expect = {"encoder": cfg.encoder, "encoder_options": cfg.encoder_options(),
                      "image_size": cfg.image_size, "fps": cfg.fps}
            try:
                return StateCacheDataset(cfg.data, num_frames=cfg.num_frames, seed=cfg.seed, expect=expect)
            except ValueError as error:
                raise ConfigError(f"--data {cfg.data}: {error}") from error
        decoder = make_decoder(cfg.decoder, self.device if cfg.decoder in ("auto", "dali") else "cpu")
        return VideoClipDataset(cfg.data, num_frames=cfg.num_frames, fps=cfg.fps, image_size=cfg.image_size,
                                seed=cfg.seed, decoder=decoder)

    def _lock_out(self) -> DirectoryLock | None:
        """Rank 0 locks ``out`` for the life of the run, before writing anything there; when another
        run holds it, every rank raises RunLocked (the message names the holder's pid and host)."""
        lock = refused = None
        if self.rank == 0:
            try:
                lock = DirectoryLock(self.out).acquire()
            except RunLocked as error:
                refused = error
        if self.engine.sum_over_ranks([refused is not None])[0]:
            raise refused or RunLocked(f"{self.out} is in use by another run (rank 0 could not lock it)")
        return lock

    def close(self) -> None:
        """Release the run directory's lock (:meth:`train` does, also when it fails)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _start(self, resume: bool) -> None:
        """Resume, or refuse a fresh run in a run's folder; rank 0 clears staging leftovers."""
        if resume:
            self._resume()
        elif ckpt.list_checkpoints(self.out):
            raise ConfigError(f"{self.out} already holds checkpoints of a run: pass --resume to continue it, "
                              "or choose another --out")
        elif self.rank == 0:
            ckpt.prune(self.out, self.cfg.keep_last)

    def _check_same_data(self) -> None:
        """Every rank probed the data on its own: refuse to train if they disagree (a file that was
        readable on one rank only would shift every sampler position, silently)."""
        if self.world_size == 1:
            return
        names = [video.path for video in self.dataset.videos]  # VideoRecord: files and cached videos alike
        digest = zlib.crc32("\n".join(names).encode()) & 0xFFFFF  # 20 bits: squares stay exact in float64
        count = len(self.dataset)
        total, squares, digests, digest_squares = self.engine.sum_over_ranks([count, count * count, digest, digest * digest])
        if total * total != self.world_size * squares or digests * digests != self.world_size * digest_squares:
            raise ConfigError(f"the ranks see different data in {self.cfg.data} (this rank: {len(names)} usable videos, "
                              f"{count} clips per epoch); check that every rank reads the same files")

    # ---------------------------------------------------------------- checkpoints
    def _select_checkpoint(self) -> Path | None:
        """The newest intact checkpoint (every rank picks the same: each checks every rank's files);
        rank 0 then moves the broken newer ones aside and prunes to ``keep_last``."""
        def expect(saved: TrainConfig):  # another model's config is refused after the selection, by _resume
            return self._shapes if not self._changed(saved.to_dict()) else None

        path, broken = ckpt.select_checkpoint(self.out, lambda p: ckpt.checkpoint_problem(p, resume=True, expect=expect))
        self.engine.barrier()
        if self.rank == 0:
            ckpt.move_aside(broken, path)
            ckpt.prune(self.out, self.cfg.keep_last, keep=path)
        return path

    def _resume(self) -> None:
        path = self._select_checkpoint()
        if path is None:
            return
        meta = json.loads((path / "trainer.json").read_text())
        if meta["world_size"] != self.world_size or meta["engine"] != self.engine.name:
            raise ConfigError(f"{path} was written by {meta['world_size']} rank(s) of the {meta['engine']} engine; "
                              f"resuming needs the same, got {self.world_size} of {self.engine.name}")
        saved = make_config(path / "config.yaml").to_dict()
        changed = self._changed(saved)
        if changed:
            listing = ", ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in sorted(changed.items()))
            raise ConfigError(f"resuming {path} with a different configuration ({listing}); use the run's settings")
        if saved["steps"] != self.cfg.steps:
            self._warn_schedule_change(path, saved["steps"], meta["step"])
        self.engine.load_model_state(load_file(str(path / "model.safetensors")))
        shard = load_tree(path / f"optimizer_rank{self.rank}")
        self.engine.load_optimizer_state(shard["engine"])
        ckpt.set_rng_state(shard["rng"])
        self.step, self.videos_seen, self.read_failures = meta["step"], meta["videos_seen"], meta["read_failures"]
        self.batches_read = meta["batches_read"]
        self.resumed_from = path

    def _changed(self, saved: dict) -> dict:
        """The settings that alter the trajectory on which ``saved`` (a checkpoint's) and this run differ."""
        return {k: (saved.get(k), v) for k, v in self.cfg.to_dict().items() if k not in _RESUMABLE and saved.get(k) != v}

    def _warn_schedule_change(self, path: Path, old_steps: int, step: int) -> None:
        frac = self.cfg.warmup_frac
        before, after = warmup_cosine(old_steps, frac)(step), warmup_cosine(self.cfg.steps, frac)(step)
        warnings.warn(f"resuming {path} with steps {old_steps} -> {self.cfg.steps}: the warm-up + cosine schedule "
                      f"now spans {self.cfg.steps} steps, so the learning-rate factor at step {step}: {before:g} -> "
                      f"{after:g}; the run is no longer the one its first {step} steps began",
                      ScheduleChangeWarning, stacklevel=3)

    def save(self) -> Path:
        fault_point("save:start")
        stage = ckpt.staging_dir(self.out, self.step)
        if self.rank == 0:
            shutil.rmtree(stage, ignore_errors=True)  # a leftover of a crashed save
            stage.mkdir(parents=True)
        self.engine.barrier()
        state = self.engine.model_state()
        reg = self.model.regularizer
        if reg is not None and reg.kind == "discrete" and self.world_size > 1:
            # code usage since the last reset, summed over ranks: what the next reset decides on
            usage = reg.quantizer.usage.clone()
            torch.distributed.all_reduce(usage)
            state["regularizer.quantizer.usage"] = usage.cpu()
        save_tree({"engine": self.engine.optimizer_state(), "rng": ckpt.rng_state()}, stage / f"optimizer_rank{self.rank}")
        fault_point("save:after_optimizer")
        if self.rank == 0:
            save_safetensors_atomic(stage / "model.safetensors", state, metadata={"step": str(self.step)})
            save_config(self.cfg, stage / "config.yaml")
            write_json_atomic(stage / "versions.json", versions(), sort_keys=True)
            meta = {
                "step": self.step,
                "videos_seen": self.videos_seen,
                "batches_read": self.batches_read,
                "read_failures": self.read_failures,
                "world_size": self.world_size,
                "engine": self.engine.name,
                "zero_stage": self.engine.zero_stage,
                "encoder": self.encoder_meta,
            }
            write_json_atomic(stage / "trainer.json", meta, sort_keys=True)
        self.engine.barrier()
        final = ckpt.checkpoint_root(self.out) / ckpt.step_dir_name(self.step)
        if self.rank == 0:
            final = ckpt.publish(self.out, self.step, self.cfg.keep_last)
        self.engine.barrier()
        return final

    # ---------------------------------------------------------------- loop
    def _vq_reset(self, before: int) -> dict[str, float]:
        reg = self.model.regularizer
        every = self.cfg.vq_reset_every
        if reg is None or reg.kind != "discrete" or self.videos_seen // every == before // every:
            return {}
        dead, rows = reg.reset_dead_codes()
        if dead.numel():
            self.engine.set_rows(reg.quantizer.embedding, dead, rows)
        return {"vq/codes_reset": float(dead.numel())}

    def _stop(self, what: str) -> None:
        good = ckpt.latest_checkpoint(self.out)
        raise NonFiniteLossError(f"{what}; stopping. Last good checkpoint: {good if good else 'none written yet'}")

    def _drop_metrics_after(self, step: int) -> None:
        """Steps logged after the checkpoint a run resumes from are replayed: drop their old records.
        A torn last line (a crash while it was written) is dropped with a warning; any other line that
        is not a record is a UserError naming the file and line (the file is left as it is)."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        kept = []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
                record_step = record["step"] if isinstance(record, dict) else None
            except (json.JSONDecodeError, KeyError):
                record_step = None
            if isinstance(record_step, int):
                kept += [line] if record_step <= step else []
            elif number == len(lines):
                warnings.warn(f"{path}: dropped its torn last line {line[:80]!r} (a crash while it was written)",
                              stacklevel=2)
            else:
                raise UserError(f"{path}: line {number} is not a metrics record ({line[:80]!r}); fix or remove it")
        write_text_atomic(path, "".join(line + "\n" for line in kept))

    def skipped(self) -> int:
        return len(self.dataset.skipped) + self.read_failures

    def _open_logs(self):
        """Rank 0: (TensorBoard writer, metrics.jsonl open for appending); other ranks: (None, None)."""
        if self.rank != 0:
            return None, None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.out / "tensorboard")), open(self.out / "metrics.jsonl", "a")

    def _step(self, batch: dict) -> tuple[float, dict, float, dict] | None:
        """One optimiser step on ``batch``: (loss, the model's outputs, gradient norm, VQ-reset
        metrics), or None when some rank's whole batch failed to decode (every rank skips it)."""
        data = batch["states"] if "states" in batch else batch["video"]
        # one reduction gives every rank the same clip and failure counts, and says whether
        # some rank's whole batch failed to decode (then all ranks skip the step together)
        clips, failed, empty = self.engine.sum_over_ranks([data.shape[0], batch["skipped"], data.shape[0] == 0])
        self.read_failures += int(failed)
        if empty:
            return None
        data = data.to(self.device, non_blocking=True)
        states = data if "states" in batch else self.encoder.encode(data)
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.model(states)
        loss = out["loss"]
        if self.engine.sum_over_ranks([not math.isfinite(loss.item())])[0]:
            self._stop(f"loss became {loss.item()} at step {self.step + 1} (on this or another rank)")
        grad_norm = self.engine.step(loss)
        if not math.isfinite(grad_norm):  # the global norm: the same on every rank
            self._stop(f"gradient norm became {grad_norm} at step {self.step + 1}")
        before = self.videos_seen
        self.videos_seen += int(clips)
        self.step += 1
        extra = self._vq_reset(before)
        return loss.item(), out, grad_norm, extra

    def _log(self, logs, value: float, out: dict, grad_norm: float, extra: dict, seconds: float) -> None:
        """Rank 0: the step's metrics.jsonl record and TensorBoard scalars (``seconds``: since the last log)."""
        writer, metrics_file = logs
        record = {"step": self.step, "loss": value}
        record.update({k: float(v.detach()) for k, v in out.items() if k != "loss"})
        record.update(self.engine.learning_rates())
        record.update(extra)
        record.update({"grad_norm": grad_norm, "videos_seen": self.videos_seen,
                       "data/skipped": self.skipped(), "time/step_s": seconds})
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        for key, val in record.items():
            if key != "step":
                writer.add_scalar(key, val, self.step)

    def _logs_now(self) -> bool:
        return self.rank == 0 and (self.step % self.cfg.log_every == 0 or self.step in (self.cfg.steps, 1))

    def train(self) -> TrainResult:
        """Train to ``cfg.steps``, then release the run directory's lock (also when training fails)."""
        try:
            return self._train()
        finally:
            self.close()

    def _train(self) -> TrainResult:
        from tqdm import tqdm

        from lam_fast.data import make_dataloader

        cfg = self.cfg
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
            self._drop_metrics_after(self.step)
        loader = make_dataloader(
            self.dataset, batch_size=cfg.batch_size, seed=cfg.seed, rank=self.rank, world_size=self.world_size,
            start_step=self.batches_read, num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
        )
        logs = self._open_logs()
        first = last = None
        checkpoint = self.resumed_from
        bar = tqdm(total=cfg.steps, initial=self.step, disable=self.rank != 0, desc=f"train {cfg.reg}", dynamic_ncols=True)
        rng = torch.get_rng_state()
        batches = iter(loader)  # DataLoader draws a base seed from the global RNG: keep resume exact
        torch.set_rng_state(rng)
        try:
            t_last = time.perf_counter()
            while self.step < cfg.steps:
                batch = next(batches)
                self.batches_read += 1
                result = self._step(batch)
                if result is None:
                    continue
                value, out, grad_norm, extra = result
                first = value if first is None else first
                last = value
                bar.update(1)
                if self._logs_now():
                    now = time.perf_counter()
                    self._log(logs, value, out, grad_norm, extra, now - t_last)
                    t_last = now
                    bar.set_postfix(loss=f"{value:.4f}")
                if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                    checkpoint = self.save()
        finally:
            bar.close()
            close = getattr(loader, "close", None)  # the batched (DALI) loader's prefetch thread
            if close is not None:
                close()
            del batches
            if logs[0] is not None:
                logs[0].close()
                logs[1].close()
        return TrainResult(self.out, first, last, self.step, checkpoint, self.skipped())


def train(cfg: TrainConfig, *, resume: bool = False) -> TrainResult:
    return Trainer(cfg, resume=resume).train()
