"""The `train` section: the optimisation and training loop, early stopping, and multi-process training
(DDP, FSDP2, DeepSpeed) with the settings of each strategy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tuneforge.config.schema.base import Section, seed_field


class EarlyStoppingSection(Section):
    patience: int | None = Field(
        None,
        ge=1,
        description=(
            "Stop after this many evaluations without improvement of `eval.metric`; null disables early stopping."
        ),
    )
    threshold: float = Field(0.0, ge=0.0, description="Smallest change that counts as an improvement.")


class FsdpSection(Section):
    sharding: Literal["full", "shard_grad_op", "hybrid"] = Field(
        "full",
        description=(
            "What FSDP2 shards: `full` (weights, gradients and optimizer states; weights re-gathered per block), "
            "`shard_grad_op` (weights stay gathered after the forward pass: faster, more memory), `hybrid` (full "
            "sharding inside a node, replicas across nodes: `--nnodes` > 1)."
        ),
    )
    auto_wrap: Literal["auto"] | list[str] = Field(
        "auto",
        description=(
            "Module classes that become one FSDP unit each. `auto`: the model's transformer block class (its "
            "`_no_split_modules`, for example `LlamaDecoderLayer`); or a list of class names."
        ),
    )
    activation_checkpointing: bool = Field(
        False,
        description=(
            "FSDP's own activation checkpointing of every wrapped block (use instead of "
            "`train.gradient_checkpointing`, "
            "not with it)."
        ),
    )
    cpu_offload: bool = Field(
        False,
        description=(
            "Keep sharded parameters and optimizer states in CPU memory between uses (much less GPU memory, slower)."
        ),
    )
    cpu_ram_efficient_loading: bool = Field(
        False,
        description=(
            "Only rank 0 reads the pretrained weights; the others receive them when the model is sharded (less CPU RAM "
            "on nodes with many GPUs)."
        ),
    )
    state_dict_type: Literal["full", "sharded"] = Field(
        "full",
        description=(
            "How checkpoints for `--resume` are written: `full` (gathered on rank 0, FSDP's FULL_STATE_DICT) or "
            "`sharded` (each rank writes its shard: faster for large models). The final `model/` directory is always "
            "the full, gathered model in the usual loadable files."
        ),
    )


class DeepSpeedSection(Section):
    stage: Literal[2, 3] = Field(
        2,
        description=(
            "ZeRO stage: 2 shards gradients and optimizer states, 3 also the weights (gathered into full 16-bit "
            "weights for the saved model)."
        ),
    )
    offload_optimizer: bool = Field(False, description="ZeRO-Offload: keep optimizer states (and the step) on the CPU.")
    offload_params: bool = Field(False, description="Keep the sharded weights on the CPU between uses (stage 3 only).")

    @model_validator(mode="after")
    def _stage3(self):
        if self.offload_params and self.stage != 3:
            raise ValueError("train.distributed.deepspeed.offload_params needs stage: 3 (stage 2 never shards weights)")
        return self


class DistributedSection(Section):
    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp",
        description=(
            "How a run started with `tuneforge train --nproc N` (and `--nnodes`) spreads over its processes: `ddp` "
            "(a full copy of the model per process, gradients averaged; CPU (gloo) or GPUs), `fsdp` (PyTorch FSDP2: "
            "weights, gradients and optimizer states sharded; GPUs), `deepspeed` (DeepSpeed ZeRO; GPUs, "
            "pip install deepspeed). With one process `ddp` changes nothing."
        ),
    )
    fsdp: FsdpSection = Field(default_factory=FsdpSection, description="Settings of `strategy: fsdp`.")
    deepspeed: DeepSpeedSection = Field(
        default_factory=DeepSpeedSection, description="Settings of `strategy: deepspeed`."
    )
    timeout_minutes: int = Field(
        30,
        ge=1,
        le=1440,
        description=("How long a process waits for the others at a collective operation before the run fails."),
    )


class TrainSection(Section):
    epochs: float = Field(3.0, gt=0, description="Number of passes over the training data.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    max_minutes: float | None = Field(
        None,
        gt=0,
        le=525600,
        description=(
            "A time budget: stop after the optimizer step that passes this many minutes of training (evaluation "
            "excluded; counted from this process's start, so a resumed run gets a new budget); the model is saved "
            "and evaluated as for a finished run. The learning-rate schedule still spans `epochs`/`max_steps`."
        ),
    )
    batch_size: int = Field(32, ge=1, le=1_000_000, description="Examples per device per forward pass.")
    eval_batch_size: int | None = Field(
        None, ge=1, le=1_000_000, description="Examples per evaluation batch (default 2x batch_size)."
    )
    gradient_accumulation_steps: int = Field(1, ge=1, le=1_000_000, description="Forward passes per optimizer step.")
    learning_rate: float | None = Field(
        None,
        gt=0,
        description=(
            "Peak learning rate. Default: the method's own (for example 5e-5 for full fine-tuning, 1e-3 for LoRA)."
        ),
    )
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"] = (
        Field("linear", description="Learning-rate schedule after warmup.")
    )
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0, description="Fraction of the steps spent warming up.")
    warmup_steps: int | None = Field(None, ge=0, description="Warmup steps; overrides warmup_ratio when set.")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay (not applied to biases and norms).")
    max_grad_norm: float = Field(1.0, ge=0.0, description="Gradient clipping norm; 0 disables clipping.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description=(
            "`auto`: bf16 mixed precision on GPUs that support it, fp16 on older GPUs; on a CPU with bf16 units "
            "(AVX512-BF16 / AMX) bf16 autocast for models at least 256 wide (fp32 weights and optimizer state kept), "
            "fp32 otherwise. `bf16` on such a CPU always autocasts; fp16 needs a GPU. The run's first lines say which."
        ),
    )
    seed: int = seed_field(42, "Seed for initialisation, shuffling and splits: same config + seed = same metrics.")
    eval_strategy: Literal["epoch", "steps", "no"] = Field("epoch", description="When to evaluate on validation.")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N steps (with eval_strategy: steps).")
    save_steps: int | None = Field(
        None,
        ge=1,
        description=(
            "Save a checkpoint every N steps; default: at every evaluation. `tuneforge train --resume` "
            "continues from the last."
        ),
    )
    save_total_limit: int = Field(
        2, ge=1, description="Keep at most this many checkpoints (the best one is always kept)."
    )
    logging_steps: int = Field(10, ge=1, description="Write a row to metrics.jsonl every N steps.")
    early_stopping: EarlyStoppingSection = Field(default_factory=EarlyStoppingSection, description="Early stopping.")
    group_by_length: bool = Field(True, description="Batch examples of similar length together to cut padding.")
    report_to: Literal["auto", "none", "tensorboard", "mlflow"] = Field(
        "auto", description=("Experiment tracker. `auto`: TensorBoard when installed, else none.")
    )
    num_workers: int = Field(0, ge=0, le=256, description="Data-loader worker processes.")
    # speed and memory levers (tuneforge.training.speed): `auto` = on where it pays off (CUDA), off on CPU
    chunked_loss: Literal["auto"] | bool = Field(
        "auto",
        description=(
            "Causal LM: compute the training loss from the hidden states chunk by chunk, never holding the full "
            "tokens x vocabulary logits (GiBs at long sequences). `auto`: on with CUDA; `true` also on CPU."
        ),
    )
    fused_lora: Literal["auto"] | bool = Field(
        "auto",
        description=(
            "LoRA layers with dropout 0 and no DoRA run as one fused autograd function (less memory traffic, "
            "no float32 copy of each layer input). `auto`: on with CUDA; `true` also on CPU."
        ),
    )
    compile: Literal["auto"] | bool = Field(
        "auto",
        description=(
            "torch.compile each transformer block. `auto`: on with CUDA, off when liger is on; `true` needs a CUDA "
            "device (a config error on CPU, where compiling takes minutes before the first step and does not pay off), "
            "and with liger it compiles around liger's kernels."
        ),
    )
    liger: Literal["auto"] | bool = Field(
        "auto",
        description=(
            "liger-kernel's RMSNorm/RoPE/SwiGLU kernels (pip install 'tuneforge[gpu]'). `auto`: on with CUDA when "
            "installed; `true` fails without them."
        ),
    )
    optimizer: Literal["auto", "adamw", "adamw_fused", "adamw_8bit", "paged_adamw_8bit"] = Field(
        "auto",
        description=(
            "AdamW implementation. `auto`: fused (one kernel for all parameters) on CUDA and torch >= 2.8; "
            "`adamw_8bit` / `paged_adamw_8bit`: bitsandbytes 8-bit states (a quarter of AdamW's state memory)."
        ),
    )
    distributed: DistributedSection = Field(
        default_factory=DistributedSection,
        description=("Multi-process training (`tuneforge train CONFIG --nproc N`): the strategy and its settings."),
    )

    @field_validator("eval_strategy", mode="before")
    @classmethod
    def _no(cls, v):
        # `eval_strategy: no` in a YAML file arrives as False (YAML 1.1 booleans)
        return "no" if v is False else v

    @model_validator(mode="after")
    def _steps(self):
        if self.eval_strategy == "steps" and self.eval_steps is None:
            raise ValueError("train.eval_steps is required when train.eval_strategy is 'steps'")
        return self
