"""The training loop: one loop for every objective mixture, single process or torchrun DDP/FSDP2.

Order of a step: ``accum`` micro-batches (forward under autocast, mean example loss / accum,
backward; gradient sync only on the last), clip, AdamW step at the scheduled LR; then log,
evaluate and checkpoint on their intervals. Losses stay on the device between log intervals:
a step that neither logs nor checkpoints makes no device-to-host sync (the losses, token counts,
NaN check and, across ranks, the stop flag are read back together where it does). Everything a step depends on -- weights, optimizer,
data cursor, RNG -- is in the checkpoint, so resuming reproduces an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from unimask.config import ConfigError, save_config, to_dict
from unimask.model import load_checkpoint
from unimask.model.convert import ensure_checkpoint
from unimask.objectives import build_objective, mixture_decoder
from unimask.objectives.example import Batch
from unimask.train import checkpoint as ckpt
from unimask.train.batches import MicroBatches, ObjectiveFn, build_objective_fn
from unimask.train.config import ObjectiveSpec, TrainConfig
from unimask.train.distributed import (
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    cleanup,
    gather_objects,
    init_distributed,
)
from unimask.train.factories import amp_dtype_for, build_model, build_source, load_tokenizer, model_config
from unimask.train.metrics import MetricsLogger
from unimask.train.optim import build_optimizer, lr_at
from unimask.train.parallelize import Parallelism, parallelize
from unimask.train.preemption import StopFlag
from unimask.train.validation import autocast_context, validation_loss

log = logging.getLogger(__name__)

# A probe run at every evaluation beside the validation loss (e.g. the induction metric):
# model -> {metric name: value}; every rank calls it, so it may use collectives.
EvalHook = Callable[[torch.nn.Module], dict[str, float]]


def infer_backbone(objectives: list[ObjectiveSpec], tokenizer: Any = None) -> dict[str, Any]:
    """What decoder a checkpoint trained on ``objectives`` needs, as recorded in its ``extra``:
    ``DecoderSpec.to_extra()`` of the active objectives' ``mixture_decoder`` (each objective says its own)."""
    active = [build_objective(o.name, tokenizer, **o.params) for o in objectives if o.weight > 0]
    return mixture_decoder(active).to_extra()


@dataclass
class TrainResult:
    step: int
    out_dir: Path
    checkpoint: Path | None
    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    eval: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False  # stopped early by SIGTERM/SIGINT (checkpointed; rerun to resume)


class Trainer:
    """Build everything from a ``TrainConfig``; components may be injected (tests, experiments)."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        objective: ObjectiveFn | None = None,
        train_source: Any = None,
        val_raws: list[Any] | None = None,
        val_objectives: dict[str, ObjectiveFn] | None = None,
        eval_hooks: Sequence[EvalHook] = (),
    ) -> None:
        self.cfg = cfg
        self.eval_hooks = list(eval_hooks)
        self.info, self.device = init_distributed(cfg.device)
        self.parallel = Parallelism(cfg.distributed, self.info)
        self.amp_dtype = amp_dtype_for(cfg, self.device)
        self.out_dir = Path(cfg.out_dir)
        self.init_extra: dict[str, Any] = {}
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank

        if cfg.init_from and model is None:
            if self.info.rank == 0:  # an HF directory is converted once, by one rank; the others reuse it
                ensure_checkpoint(cfg.init_from)
            barrier(self.info)
            model, loaded_tok, self.init_extra = load_checkpoint(ensure_checkpoint(cfg.init_from))
            tokenizer = tokenizer or loaded_tok
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg)
        self.raw_model = model if model is not None else build_model(cfg, self.tokenizer)
        vocab = getattr(model_config(self.raw_model), "vocab_size", None)
        if vocab is not None and hasattr(self.tokenizer, "check_vocab"):
            self.tokenizer.check_vocab(vocab)
        if cfg.model.activation_checkpointing:
            if not hasattr(self.raw_model, "set_activation_checkpointing"):
                raise ConfigError("this model has no set_activation_checkpointing(); set model.activation_checkpointing=false")
            self.raw_model.set_activation_checkpointing(True)

        self.backbone = infer_backbone(cfg.objectives, self.tokenizer if objective is None else None)
        self.objective = objective if objective is not None else build_objective_fn(cfg.objectives, self.tokenizer)
        self._check_shift_matches_init()
        self.val_objectives = val_objectives
        self.global_stream = cfg.data.sharding == "global"
        self.train_source = train_source if train_source is not None else self._make_source("train")
        self.val_raws = val_raws
        self.stream = MicroBatches(
            self.train_source, self.objective, self.tokenizer.pad_id, cfg.micro_batch_size, cfg.grad_accum,
            self.info.rank, self.info.world_size, cfg.seed, self.global_stream, cfg.data.pad_to_multiple,
        )
        self._check_lengths()
        self.step = 0
        self.tokens = 0
        self.total_steps = self._total_steps()

    # ------------------------------------------------------------------ set-up helpers
    def _check_shift_matches_init(self) -> None:
        """Continuing a diffusion model under the other prediction convention would be silently wrong
        (a Dream model predicts token i+1 at position i; see ``objectives.diffusion.shift_targets``)."""
        if self.init_extra.get("backbone", "ar") == "ar" or self.backbone["backbone"] == "ar":
            return
        shifted = bool(self.init_extra.get("shift", False))
        if shifted != bool(self.backbone.get("shift", False)):
            kind = "a shifted (Dream-style)" if shifted else "an unshifted"
            raise ConfigError(f"init_from {self.cfg.init_from} is {kind} diffusion model but the diffusion objectives "
                              f"are {'un' if shifted else ''}shifted; set shift: {str(shifted).lower()} in every "
                              "diffusion objective's params")

    def _check_lengths(self) -> None:
        """Fail before training if an objective's longest example would not fit the model."""
        limit = getattr(model_config(self.raw_model), "max_seq_len", None)
        max_length = getattr(self.objective, "max_length", None)
        if limit is None or max_length is None:
            return
        n = self.cfg.data.seq_len if self.cfg.data.kind == "packed" else self.cfg.data.max_len
        need = max_length(n)
        if need > limit:
            raise ConfigError(
                f"objectives produce examples of up to {need} tokens from inputs of {n}, but the model's "
                f"max_seq_len is {limit}; lower data.seq_len/data.max_len or raise model.overrides.max_seq_len"
            )

    def _make_source(self, split: str, finite: bool = False) -> Any:
        rank, world = (0, 1) if (self.global_stream or finite) else (self.info.rank, self.info.world_size)
        return build_source(self.cfg, self.tokenizer, split, rank, world, finite)

    def _tokens_per_step(self) -> int:
        per_example = self.cfg.data.seq_len if self.cfg.data.kind == "packed" else self.cfg.data.max_len
        return per_example * self.cfg.micro_batch_size * self.cfg.grad_accum * self.info.world_size

    def _total_steps(self) -> int:
        if self.cfg.token_budget > 0:
            return max(1, math.ceil(self.cfg.token_budget / self._tokens_per_step()))
        return self.cfg.steps

    def _val_raws(self) -> list[Any]:
        if self.val_raws is None:
            n = self.cfg.eval_batches * self.cfg.micro_batch_size * self.info.world_size
            src = self._make_source("val", finite=True)
            raws: list[Any] = []
            if src is not None:
                with contextlib.suppress(FileNotFoundError, ValueError):
                    for raw in src:
                        raws.append(raw)
                        if len(raws) >= n:
                            break
            self.val_raws = raws
        return self.val_raws

    def _val_objectives(self) -> dict[str, ObjectiveFn]:
        if self.val_objectives is None:
            self.val_objectives = {
                s.name: build_objective(s.name, self.tokenizer, **s.params) for s in self.cfg.objectives if s.weight > 0
            }
        return self.val_objectives

    # ------------------------------------------------------------------ checkpoint / resume
    def _extra(self) -> dict[str, Any]:
        return {**self.backbone, "train_config": to_dict(self.cfg), "step": self.step, "tokens": self.tokens,
                "init_from": self.cfg.init_from or None}

    def _full_model_for_save(self) -> torch.nn.Module:
        sd = self.parallel.full_state_dict(self.model)  # a collective: every rank gathers
        if sd is None or not self.info.is_main:
            return self.raw_model
        if not hasattr(self, "_save_copy"):
            # FSDP modules cannot be deep-copied; an unsharded twin built from the config
            # receives the gathered full state dict.
            self._save_copy = type(self.raw_model)(model_config(self.raw_model))
        self._save_copy.load_state_dict(sd)
        return self._save_copy

    def save(self) -> Path | None:
        opt_state = self.parallel.optimizer_state(self.model, self.optimizer)
        model_for_save = self._full_model_for_save()
        per_rank = gather_objects({"data": self.stream.state_dict(), "rng": ckpt.rng_state()}, self.info)
        path = None
        if self.info.is_main:
            state = {
                "step": self.step,
                "tokens": self.tokens,
                "optimizer": opt_state,
                "optimizer_format": self.parallel.optimizer_format,
                "world_size": self.info.world_size,
                "global_stream": self.global_stream,
                "ranks": per_rank,
            }
            path = ckpt.save_training_checkpoint(
                self.out_dir, self.step, model_for_save, self.tokenizer, self._extra(), state, self.cfg.keep_last_k
            )
        barrier(self.info)
        return path

    def _load_weights(self, ckpt_dir: Path) -> None:
        loaded, _, _ = load_checkpoint(ckpt_dir)
        self.raw_model.load_state_dict(loaded.state_dict())

    def _resume_state(self, ckpt_dir: Path) -> None:
        state = ckpt.load_state(ckpt_dir)
        fmt = self.parallel.optimizer_format
        if state["optimizer_format"] != fmt:
            raise ValueError(
                f"{ckpt_dir} was saved with optimizer format {state['optimizer_format']!r} but this run uses {fmt!r}; "
                "resume with the same distributed strategy or start a new out_dir with init_from"
            )
        self.parallel.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        ranks = state["ranks"]
        if len(ranks) != self.info.world_size and not (state["global_stream"] and self.global_stream):
            raise ValueError(
                f"{ckpt_dir} was written by {len(ranks)} ranks; with data.sharding=rank resume needs the same world size"
            )
        mine = ranks[min(self.info.rank, len(ranks) - 1)]
        self.stream.load_state_dict(mine["data"])
        if len(ranks) == self.info.world_size:
            ckpt.set_rng_state(mine["rng"])
        self.step, self.tokens = int(state["step"]), int(state["tokens"])

    # ------------------------------------------------------------------ the loop
    def _micro_step(self, batch: Batch, sync: bool) -> tuple[torch.Tensor, int]:
        """Forward and backward of one host-side micro-batch: its mean loss, left on the device, and
        its real (non-pad) token count, read from the host copy (neither needs a device sync)."""
        plain = batch.attention.is_plain_causal()
        tokens = int((batch.attention.doc_ids >= 0).sum())
        batch = batch.to(self.device)
        with self.parallel.grad_sync(self.model, sync):
            with autocast_context(self.device, self.amp_dtype):  # the model's fused head returns the loss
                loss = self.model(batch.input_ids, None if plain else batch.attention, labels=batch.labels,
                                  loss_weights=batch.loss_weights)
            (loss / self.cfg.grad_accum).backward()
        return loss.detach(), tokens

    def _read_back(self, pending: list[torch.Tensor], local_tokens: int) -> tuple[list[float], int]:
        """The loop's host sync: the ``pending`` steps' losses (mean over ranks) and the tokens all
        ranks trained on in them; raises on the first loss that is not finite."""
        losses = all_reduce_mean(torch.stack(pending), self.info).tolist()
        first = self.step - len(pending) + 1
        for k, value in enumerate(losses):
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at step {first + k}; lower optim.lr or check the data")
        return losses, all_reduce_sum(local_tokens, self.info, self.device)

    def evaluate(self) -> dict[str, float]:
        out = self._validation_loss()
        for hook in self.eval_hooks:
            out.update(hook(self.raw_model))
        return out

    def _validation_loss(self) -> dict[str, float]:
        raws = self._val_raws()
        if not raws:
            if self.info.is_main and not getattr(self, "_warned_no_val", False):
                log.warning("eval_interval > 0 but there is no validation data; skipping evals")
                self._warned_no_val = True
            return {}
        per = len(raws) // self.info.world_size
        lo = self.info.rank * per
        mine = raws[lo : lo + per]

        def reduce(t: torch.Tensor) -> torch.Tensor:
            if self.info.enabled:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
            return t

        out = validation_loss(
            self.model, mine, self._val_objectives(), self.tokenizer.pad_id, self.device,
            self.cfg.micro_batch_size, self.amp_dtype, seed=self.cfg.seed + 1, reduce=reduce, offset=lo,
        )
        self.parallel.after_eval(self.raw_model)
        return out

    def fit(self) -> TrainResult:
        cfg, info = self.cfg, self.info
        resume_from = ckpt.latest_checkpoint(self.out_dir) if cfg.resume else None
        if info.is_main:
            ckpt.clean_stale_temporaries(self.out_dir)
            save_config(cfg, self.out_dir / "config.yaml")
        if resume_from is not None:
            self._load_weights(resume_from)
        self.model = parallelize(self.raw_model, cfg.distributed, info, self.device)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.device)
        if resume_from is not None:
            self._resume_state(resume_from)
        if cfg.model.compile:
            self.model = torch.compile(self.model)
        self.model.train()

        logger = MetricsLogger(self.out_dir, self.total_steps, self.step, enabled=info.is_main,
                               tensorboard=cfg.tensorboard, progress=cfg.progress)
        result = TrainResult(self.step, self.out_dir, resume_from)
        last_saved = self.step if resume_from is not None else -1
        stop = StopFlag()
        pending: list[torch.Tensor] = []  # per-step mean losses not yet read back, on the device
        pending_tokens = 0  # this rank's real tokens in those steps
        log_tokens, log_seconds = 0, 0.0  # since the last log record
        last_loss, last_tps = float("nan"), 0.0
        try:
            while self.step < self.total_steps:
                t0 = time.perf_counter()
                lr = lr_at(self.step, self.total_steps, cfg.optim)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                batches = self.stream.step_batches()
                loss_sum = torch.zeros((), device=self.device)
                for i, batch in enumerate(batches):
                    loss, n = self._micro_step(batch, sync=i == len(batches) - 1)
                    loss_sum += loss
                    pending_tokens += n
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                pending.append(loss_sum / len(batches))
                log_due = self.step % cfg.log_interval == 0 or self.step == self.total_steps
                save_due = cfg.checkpoint_interval > 0 and self.step % cfg.checkpoint_interval == 0
                # one process reads its flag for free; ranks agree on it (a collective) only where they sync anyway
                stopping = (log_due or save_due or not info.enabled) and stop.requested(info, self.device)
                if log_due or save_due or stopping:
                    losses, tokens_all = self._read_back(pending, pending_tokens)
                    pending, pending_tokens = [], 0
                    result.losses += losses
                    last_loss = losses[-1]
                    self.tokens += tokens_all
                    log_tokens += tokens_all
                log_seconds += time.perf_counter() - t0
                if log_due:
                    last_tps = log_tokens / log_seconds
                    logger.log(self.step, {"loss": last_loss, "lr": lr, "grad_norm": float(grad_norm),
                                           "tokens": self.tokens, "tokens_per_s": last_tps})
                    log_tokens, log_seconds = 0, 0.0
                logger.advance(self.step, last_loss, last_tps)
                if cfg.eval_interval > 0 and (self.step % cfg.eval_interval == 0 or self.step == self.total_steps):
                    result.eval = self.evaluate()
                    if result.eval:
                        logger.log(self.step, result.eval, kind="val")
                if save_due:
                    result.checkpoint = self.save()
                    last_saved = self.step
                if stopping:
                    result.interrupted = True
                    break  # SIGTERM/SIGINT: checkpoint below, then return; rerun to resume
            if last_saved != self.step:
                result.checkpoint = self.save()
        finally:
            stop.restore()
            logger.close()
        result.step, result.tokens = self.step, self.tokens
        return result


def train(cfg: TrainConfig, **components: Any) -> TrainResult:
    """Run (or resume) training as configured; see ``Trainer`` for injectable components."""
    trainer = Trainer(cfg, **components)
    try:
        result = trainer.fit()
    except BaseException:
        cleanup(trainer.info, sync=False)
        raise
    cleanup(trainer.info)
    return result
