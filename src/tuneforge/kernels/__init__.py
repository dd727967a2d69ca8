"""Training kernels written in plain PyTorch: they cut memory traffic and peak memory without new
dependencies, so they run (and are tested) on CPU and speed up GPUs.

    chunked_ce  - linear + cross-entropy over the vocabulary, chunk by chunk (no full logits tensor)
    lora_fused  - LoRA linear layer forward/backward that saves only x and the rank-r product x @ A.T
    levers      - a speed lever (`train.*` switch) and how `auto | true | false` resolves, for the engine and methods
"""
