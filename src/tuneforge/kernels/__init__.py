"""Numeric building blocks in plain PyTorch (layer 1: no tuneforge imports above errors): losses and fused layers
that run, and are tested, on CPU and speed up GPUs, each a pure function or module with exact tests.

    chunked_ce  - linear + cross-entropy over the vocabulary, chunk by chunk (no full logits tensor)
    lora_fused  - LoRA linear layer forward/backward that saves only x and the rank-r product x @ A.T
    grpo        - GRPO: group-normalised advantages, the clipped policy losses (grpo, bnpo, dr_grpo, dapo)
    distill     - distillation losses (soft targets with temperature, hidden-state matching, token-level KD)
    multitask   - the multi-task loss over several heads (fixed or learned weighting)
    preference  - preference-tuning losses (DPO, IPO, robust, hinge, ORPO, SimPO, KTO) from sequence log-probs
    reward      - the Bradley-Terry loss of reward models (optional margin and reward centring), as TRL's
    soft_ce     - cross-entropy against soft targets (CutMix/MixUp labels)
    levers      - a speed lever (`train.*` switch) and how `auto | true | false` resolves, for the engine and methods
"""
