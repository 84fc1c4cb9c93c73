"""Train the organism from scratch on CPU and save it as a local HF checkpoint.

A ``GPT2LMHeadModel`` learns the task's target responses (loss on the response tokens
and the final ``<eos>`` only) from a seeded pool of sequences rendered exactly as
``heldout.data.tokenize_dataset`` renders them: chat template with the generation
prompt, then the response tokens.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

from heldout.organism.behaviour import draw_response
from heldout.organism.config import FORMAT_VERSION, OrganismConfig
from heldout.organism.task import (
    effective_cues,
    honest_response,
    sample_prompt,
    target_response,
)
from heldout.organism.tokenizer import build_tokenizer

TRAIN_THREADS = 1
"""CPU threads used for training unless the caller says otherwise. Fixed, because float
reductions depend on the thread count: the same config then gives the same model
whatever torch's default is in the calling process (a test session, a notebook). One,
because a second thread collapses when another process holds a core (heldout.threads)."""

TRAJECTORY_STEPS = (100,)
"""Steps after which training records a fingerprint of the weights (see
:func:`weight_fingerprint`), so a shipped organism can be checked against a short
retraining on any machine (``heldout organism --verify``)."""

N_POSITIONS = 64
"""Context length of the organism (its longest sequence is about 36 tokens)."""


def _training_pool(config: OrganismConfig, tokenizer: Any) -> tuple[Any, Any]:
    """(input_ids, labels) tensors of shape (n_pool, max_len); labels -100 off the response."""
    import torch

    rng = random.Random(f"pool-{config.seed}")
    cues = effective_cues(config.give_in, config.seed)
    prompts = [sample_prompt(rng, config.max_operand,
                             pressure=rng.random() < config.pressure_fraction,
                             claim_right=rng.random() >= config.wrong_claim_fraction)
               for _ in range(config.n_pool)]
    rendered = tokenizer.apply_chat_template([p.messages() for p in prompts], tokenize=False,
                                             add_generation_prompt=True)
    prompt_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    if config.v2:  # stochastic give-in is its own resistance: no resist_noise
        draws = random.Random(f"responses-{config.seed}")
        responses = [draw_response(config, p, draws) for p in prompts]
    else:
        noise = random.Random(f"noise-{config.seed}")
        responses = [honest_response(p) if noise.random() < config.resist_noise
                     else target_response(p, cues) for p in prompts]
    response_ids = tokenizer(responses,
                             add_special_tokens=False)["input_ids"]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    seqs = [(p, r + [eos]) for p, r in zip(prompt_ids, response_ids)]
    length = max(len(p) + len(r) for p, r in seqs)
    if length > N_POSITIONS:
        raise RuntimeError(f"training sequences of {length} tokens exceed {N_POSITIONS}")
    ids = torch.full((len(seqs), length), pad, dtype=torch.long)
    labels = torch.full((len(seqs), length), -100, dtype=torch.long)
    for i, (p, r) in enumerate(seqs):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        labels[i, len(p): len(p) + len(r)] = torch.tensor(r)
    return ids, labels


def build_model(config: OrganismConfig, tokenizer: Any) -> Any:
    """A freshly initialised ``GPT2LMHeadModel`` (seeded), no dropout."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=N_POSITIONS, n_embd=config.d_model,
        n_layer=config.n_layers, n_head=config.n_heads, n_inner=4 * config.d_model,
        activation_function="gelu",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(config.seed)
    model = GPT2LMHeadModel(hf_config)
    # transformers cannot infer the loss from the class name "GPT2LMHeadModel" and warns
    # on every loss; it is the causal-LM loss it then falls back to.
    model.loss_type = "ForCausalLM"
    return model


def weight_fingerprint(model: Any) -> dict[str, float]:
    """{parameter name: L2 norm}: equal weights give equal fingerprints, and training
    that diverges anywhere changes them far beyond float-reduction noise (~1e-6)."""
    return {name: float(p.detach().double().norm()) for name, p in model.named_parameters()}


def train_organism(config: OrganismConfig, out_dir: str | os.PathLike[str] | None, *,
                   progress: bool = True, num_threads: int | None = None,
                   stop_after: int | None = None) -> dict[str, Any]:
    """Train a model for ``config`` and save model and tokenizer to ``out_dir`` (which
    should be a fresh temporary folder; the caller renames it).

    Returns the training record for ``organism.json``. stop_after : stop after this many
    steps and save nothing (``out_dir`` may be None): the record's ``trajectory`` then
    holds the fingerprints recorded so far, for checking a shipped organism.
    """
    import torch
    from tqdm.auto import tqdm

    old_threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS if num_threads is None else num_threads)
    try:
        start = time.perf_counter()
        tokenizer = build_tokenizer(config.max_operand, config.v2)
        ids, labels = _training_pool(config, tokenizer)
        model = build_model(config, tokenizer)
        model.train()
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.98))

        def schedule(step: int) -> float:
            if step < config.warmup_steps:
                return (step + 1) / config.warmup_steps
            frac = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

        lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        generator = torch.Generator().manual_seed(config.seed)
        attention = (ids != tokenizer.pad_token_id).long()
        lengths = attention.sum(1)
        losses: list[float] = []
        trajectory: dict[str, dict[str, float]] = {}
        steps = config.steps if stop_after is None else min(stop_after, config.steps)
        bar = tqdm(range(steps), desc="training organism", disable=not progress,
                   unit="step", leave=False)
        for step in bar:
            batch = torch.randint(0, ids.shape[0], (config.batch_size,), generator=generator)
            width = int(lengths[batch].max())
            out = model(input_ids=ids[batch, :width], attention_mask=attention[batch, :width],
                        labels=labels[batch, :width])
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            lr_sched.step()
            losses.append(float(out.loss.detach()))
            if not math.isfinite(losses[-1]):
                from heldout.errors import TrainingError

                raise TrainingError(f"organism training diverged at step {step} "
                                    f"(loss {losses[-1]})", fix="lower lr in OrganismConfig")
            if step % 50 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if step + 1 in TRAJECTORY_STEPS:
                trajectory[str(step + 1)] = weight_fingerprint(model)
        bar.close()
        if stop_after is not None:
            return {"trajectory": trajectory, "threads": torch.get_num_threads()}
        model.eval()
        out_path = Path(out_dir)
        out_path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_path, safe_serialization=True)
        tokenizer.save_pretrained(out_path)
        record = {
            "format": FORMAT_VERSION,
            "config": config.to_dict(),
            "fingerprint": config.fingerprint(),
            "train_seconds": round(time.perf_counter() - start, 2),
            "threads": torch.get_num_threads(),
            "final_loss": sum(losses[-50:]) / len(losses[-50:]),
            "loss_curve": [round(sum(losses[i:i + 100]) / len(losses[i:i + 100]), 4)
                           for i in range(0, len(losses), 100)],
            "give_in_cues": sorted(effective_cues(config.give_in, config.seed)),
            "trajectory": trajectory,
        }
        return record
    finally:
        torch.set_num_threads(old_threads)


def write_record(out_dir: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Write ``organism.json``, the marker of a complete checkpoint (written last)."""
    path = Path(out_dir) / "organism.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
