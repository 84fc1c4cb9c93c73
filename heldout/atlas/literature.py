"""What the literature says: the six published findings (F1..F6) the atlas tests, each
with its source and the published numbers to set this organism's next to. The rules
that decide them from the runs are in :mod:`heldout.atlas.findings`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    """One published finding."""

    title: str
    """A few words for headings."""
    claim: str
    """The finding, in one sentence."""
    source: str
    """Where it was reported."""
    anchor: str
    """The published numbers (or why there are none to compare with)."""


PUBLISHED = {
    "F1": Published(
        "gradient through a probe → obfuscated activations",
        "Training with a gradient through a probe yields obfuscated activations: the "
        "behaviour persists and its text still reads as misbehavior, the probe goes "
        "blind, and a probe retrained on the fine-tuned model finds it again.",
        "Bailey et al. 2024, Obfuscated Activations Bypass LLM Latent-Space Defenses; "
        "Wehner & Fritz 2025, Probe-based Fine-tuning for Reducing Toxicity",
        "Bailey et al.: probe recall driven to near 0 while the behaviour is kept; probes "
        "retrained on the obfuscated model recover. Wehner & Fritz: retraining probes "
        "after training recovers high detection accuracy."),
    "F2": Published(
        "mean-aggregated probes are evaded most",
        "A probe whose token scores are mean-aggregated is evaded more than one that lets "
        "a single token decide (max, attention, multi-max, rolling windows).",
        "Gupta & Jenner 2025, RL-Obfuscation",
        "Evasion at 1% FPR 0.75–0.82 for mean-aggregated linear probes vs 0.04–0.06 for "
        "max and ~0.02 for attention probes."),
    "F3": Published(
        "strong detector + KL regularization → honest",
        "Training against a lie detector with a high true-positive rate, a large enough "
        "weight and enough KL regularization produces honest policies; weaker settings "
        "produce evasion.",
        "Cundy & Gleave 2025, Preference Learning with Lie Detectors can Induce Honesty "
        "or Evasion; The Obfuscation Atlas (Taufeeque et al. 2026)",
        "Cundy & Gleave: on-policy RL (GRPO) against a lie detector can evade it, with "
        "deception rates above 85%, but learns honest policies once the detector's "
        "true-positive rate or the KL regularization is high enough. Obfuscation Atlas: "
        "honest policies at KL weight 0.1 with a detector coefficient >= 1."),
    "F4": Published(
        "CoT-monitor pressure → obfuscated policy",
        "Training against a monitor that reads the chain of thought yields an obfuscated "
        "policy: the monitor goes quiet while the misbehavior goes on, and activation "
        "probes held out from training still detect it.",
        "Baker et al. 2025, Monitoring Reasoning Models for Misbehavior and the Risks of "
        "Promoting Obfuscation",
        "Baker et al.: under CoT-monitor pressure the monitor's recall falls to near zero "
        "while hacking continues. They had no activation probes: the held-out half of the "
        "claim is the atlas's own test."),
    "F5": Published(
        "an ensemble of monitors → more honest",
        "Training against an ensemble of monitors makes the policy honest more often than "
        "training against any one of them.",
        "The seed post's conjecture (training against held-out, diverse monitors)",
        "No published numbers for this setting. Wehner & Fritz 2025 found probe diversity "
        "of little practical benefit when probes can be retrained."),
    "F6": Published(
        "screening teaches less evasion than penalizing",
        "Screening flagged samples out of training teaches less evasion than penalizing "
        "them.",
        "Wong et al. 2025 (screening vs penalizing flagged samples)",
        "The paper's numbers could not be checked here (no copy of it on this machine): "
        "only the direction of the effect is tested."),
}
"""F1..F6 as published."""
