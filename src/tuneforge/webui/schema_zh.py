"""Simplified Chinese (简体中文) translations of the config schema's field descriptions, shown as help text in the
web UI; tests/test_webui.py fails when a config field's description has no entry here."""

from __future__ import annotations

#: English field description (exactly as in the schema) -> its Simplified Chinese translation
DESCRIPTIONS_ZH: dict[str, str] = {
    (
        "Base model: a builtin alias (`tuneforge models` lists them), a local transformers model directory, a timm "
        "model directory, a torchvision/timm ResNet or MobileNetV2 checkpoint file (.pth, .pt, .bin, .ckpt, "
        ".safetensors; converted once), or a hub id (needs network access)."
    ): (
        "基础模型：内置别名（`tuneforge models` 可列出）、本地 transformers 模型目录、timm 模型目录、"
        "torchvision/timm 的 ResNet 或 MobileNetV2 检查点文件（.pth、.pt、.bin、.ckpt、.safetensors；只转换一次），"
        "或 Hub 模型 ID（需要联网）。"
    ),
    "Hub revision (branch, tag or commit) for hub ids.": "Hub 模型 ID 所用的版本（分支、标签或提交）。",
    "Weight dtype when loading. `auto`: float32 on CPU, bfloat16 on GPUs that support it.": (
        "加载权重时使用的 dtype。`auto`：CPU 上为 float32，支持 bfloat16 的 GPU 上为 bfloat16。"
    ),
    "Allow custom modelling code from the model directory.": "允许执行模型目录中的自定义建模代码。",
    (
        "Build a smaller student by keeping some transformer blocks of `name` (DistilBERT-style initialisation): a "
        "count (evenly spread, first and last kept) or the block indices, e.g. [0, 2, 4]. BERT- and Llama-family "
        "models. Null: all blocks."
    ): (
        "保留 `name` 的部分 Transformer 块，构建一个更小的学生模型（DistilBERT 式初始化）："
        "可以是一个数量（均匀分布，保留首尾两块），也可以是块的索引，例如 [0, 2, 4]。"
        "适用于 BERT 和 Llama 系列模型。null：保留全部块。"
    ),
    (
        "Training data: a csv/tsv/json/jsonl/parquet file, a directory saved by `datasets`, or a builtin data set "
        "(`builtin:rotten-tomatoes`; images: a folder of class folders, or `builtin:fashion-mnist`, "
        "`builtin:digits`). Without `validation`/`test` files it is split."
    ): (
        "训练数据：csv/tsv/json/jsonl/parquet 文件、由 `datasets` 保存的目录，"
        "或内置数据集（`builtin:rotten-tomatoes`；图像：按类别分文件夹的目录，或 `builtin:fashion-mnist`、"
        "`builtin:digits`）。没有 `validation`/`test` 文件时会自动从中划分。"
    ),
    "Optional validation file (same columns as train).": "可选的验证集文件（列与训练集相同）。",
    "Optional test file (same columns as train).": "可选的测试集文件（列与训练集相同）。",
    "Column holding the input text.": "存放输入文本的列。",
    (
        "Longest example in tokens (the cutoff length); longer ones are truncated. Default: the task's (128 for "
        "classification). Batches are padded only to their own longest example, never to this length."
    ): (
        "单个样本的最大 token 数（截断长度）；更长的样本会被截断。默认：取决于任务（分类任务为 128）。"
        "每个批次只填充到该批次中最长的样本，而不会填充到这一长度。"
    ),
    "Use only this many training rows (a stratified sample), for quick experiments.": "只使用这么多行训练数据（分层抽样），用于快速实验。",
    (
        "A record that cannot be used (SFT: a turn that is empty, missing or not text, an unknown role, no assistant "
        "turn; classification: a label that is a list, a text that is a list or bytes that are not UTF-8): `error` "
        "stops with a message naming the record, `skip` leaves such records out, counts them in the log and lists "
        "them in the run's data/report.md. Unreadable files are errors either way."
    ): (
        "无法使用的记录（SFT：轮次为空、缺失或不是文本，角色未知，没有 assistant 轮次；分类：标签是列表，"
        "文本是列表或不是 UTF-8 的字节）：`error` 会报错停止并指明该记录，`skip` 会跳过这些记录，"
        "在日志中计数并在运行目录的 data/report.md 中列出。无法读取的文件在两种情况下都会报错。"
    ),
    "Fraction of the data held out for validation when no `data.validation` file is given.": (
        "未提供 `data.validation` 文件时，留出作为验证集的数据比例。"
    ),
    "Fraction held out for the final test when no `data.test` file is given.": "未提供 `data.test` 文件时，留出作为最终测试集的数据比例。",
    "Keep class proportions equal across splits (classification).": "在各个划分中保持相同的类别比例（分类任务）。",
    (
        "Keep rows sharing this column's value in one split (for example `movie_name`), so near-identical texts "
        "cannot leak from train into test."
    ): ("该列取值相同的行会放在同一个划分中（例如 `movie_name`），避免近乎相同的文本从训练集泄漏到测试集。"),
    "Seed of the split; defaults to `train.seed`. An integer from 0 to 4294967295.": (
        "数据划分的随机种子；默认使用 `train.seed`。取值为 0 到 4294967295 之间的整数。"
    ),
    "Number of passes over the training data.": "遍历训练数据的轮数（epoch）。",
    "Stop after this many optimizer steps (overrides epochs).": "达到这么多优化器步数后停止（会覆盖 epochs）。",
    "Examples per device per forward pass.": "每个设备每次前向传播的样本数。",
    "Examples per evaluation batch (default 2x batch_size).": "评估时每个批次的样本数（默认为 batch_size 的 2 倍）。",
    "Forward passes per optimizer step.": "每个优化器步对应的前向传播次数（梯度累积）。",
    "Peak learning rate. Default: the method's own (for example 5e-5 for full fine-tuning, 1e-3 for LoRA).": (
        "峰值学习率。默认：取决于方法（例如全参数微调为 5e-5，LoRA 为 1e-3）。"
    ),
    "Learning-rate schedule after warmup.": "预热结束后的学习率调度策略。",
    "Fraction of the steps spent warming up.": "预热步数占总步数的比例。",
    "Warmup steps; overrides warmup_ratio when set.": "预热步数；设置后会覆盖 warmup_ratio。",
    "AdamW weight decay (not applied to biases and norms).": "AdamW 的权重衰减（不作用于偏置和归一化层）。",
    "Gradient clipping norm; 0 disables clipping.": "梯度裁剪的范数阈值；0 表示不裁剪。",
    "Recompute activations in backward to save memory.": "在反向传播时重新计算激活值，以节省显存。",
    "`auto`: bf16 mixed precision on GPUs that support it, fp16 on older GPUs, fp32 on CPU.": (
        "`auto`：在支持 bf16 的 GPU 上使用 bf16 混合精度，较旧的 GPU 上使用 fp16，CPU 上使用 fp32。"
    ),
    (
        "Seed for initialisation, shuffling and splits: same config + seed = same metrics. An integer from 0 to "
        "4294967295."
    ): (
        "用于初始化、打乱数据和数据划分的随机种子：相同的配置 + 相同的种子 = 相同的指标。"
        "取值为 0 到 4294967295 之间的整数。"
    ),
    "When to evaluate on validation.": "何时在验证集上进行评估。",
    "Evaluate every N steps (with eval_strategy: steps).": "每 N 步评估一次（需设置 eval_strategy: steps）。",
    (
        "Save a checkpoint every N steps; default: at every evaluation. `tuneforge train --resume` continues from "
        "the last."
    ): ("每 N 步保存一次检查点；默认：每次评估时保存。`tuneforge train --resume` 会从最后一个检查点继续训练。"),
    "Keep at most this many checkpoints (the best one is always kept).": "最多保留这么多个检查点（最佳检查点始终保留）。",
    "Write a row to metrics.jsonl every N steps.": "每 N 步向 metrics.jsonl 写入一行。",
    "Stop after this many evaluations without improvement of `eval.metric`; null disables early stopping.": (
        "连续这么多次评估 `eval.metric` 都没有提升时停止训练；null 表示关闭早停。"
    ),
    "Smallest change that counts as an improvement.": "被视为提升的最小变化量。",
    "Batch examples of similar length together to cut padding.": "将长度相近的样本放入同一批次，以减少填充。",
    "Experiment tracker. `auto`: TensorBoard when installed, else none.": "实验跟踪工具。`auto`：已安装 TensorBoard 时使用它，否则不使用。",
    "Data-loader worker processes.": "数据加载器的工作进程数。",
    (
        "Causal LM: compute the training loss from the hidden states chunk by chunk, never holding the full tokens x "
        "vocabulary logits (GiBs at long sequences). `auto`: on with CUDA; `true` also on CPU."
    ): (
        "因果语言模型：从隐藏状态分块计算训练损失，"
        "从不保存完整的 token 数 x 词表大小的 logits（长序列时可达数 GiB）。`auto`："
        "使用 CUDA 时开启；`true` 在 CPU 上也开启。"
    ),
    (
        "LoRA layers with dropout 0 and no DoRA run as one fused autograd function (less memory traffic, no float32 "
        "copy of each layer input). `auto`: on with CUDA; `true` also on CPU."
    ): (
        "dropout 为 0 且不使用 DoRA 的 LoRA 层作为一个融合的 autograd 函数运行（减少内存访问量，"
        "不会为每层输入生成 float32 副本）。`auto`：使用 CUDA 时开启；`true` 在 CPU 上也开启。"
    ),
    (
        "torch.compile each transformer block. `auto`: on with CUDA, off when liger is on; `true` needs a CUDA "
        "device (a config error on CPU, where compiling takes minutes before the first step and does not pay off), "
        "and with liger it compiles around liger's kernels."
    ): (
        "对每个 Transformer 块执行 torch.compile。`auto`：使用 CUDA 时开启，"
        "启用 liger 时关闭；`true` 需要 CUDA 设备（在 CPU 上属于配置错误："
        "CPU 上在第一步之前编译就要花费数分钟，得不偿失），与 liger 同时使用时会围绕 liger 的内核进行编译。"
    ),
    (
        "liger-kernel's RMSNorm/RoPE/SwiGLU kernels (pip install 'tuneforge[gpu]'). `auto`: on with CUDA when "
        "installed; `true` fails without them."
    ): (
        "liger-kernel 的 RMSNorm/RoPE/SwiGLU 内核（pip install 'tuneforge[gpu]'）"
        "。`auto`：使用 CUDA 且已安装时开启；`true` 在未安装时会报错。"
    ),
    (
        "AdamW implementation. `auto`: fused (one kernel for all parameters) on CUDA and torch >= 2.8; `adamw_8bit` "
        "/ `paged_adamw_8bit`: bitsandbytes 8-bit states (a quarter of AdamW's state memory)."
    ): (
        "AdamW 的实现方式。`auto`：在 CUDA 且 torch >= 2.8 时使用 fused（所有参数共用一个内核）"
        "；`adamw_8bit` / `paged_adamw_8bit`："
        "bitsandbytes 的 8-bit 优化器状态（占用 AdamW 状态内存的四分之一）。"
    ),
    (
        "How a run started with `tuneforge train --nproc N` (and `--nnodes`) spreads over its processes: `ddp` (a "
        "full copy of the model per process, gradients averaged; CPU (gloo) or GPUs), `fsdp` (PyTorch FSDP2: "
        "weights, gradients and optimizer states sharded; GPUs), `deepspeed` (DeepSpeed ZeRO; GPUs, pip install "
        "deepspeed). With one process `ddp` changes nothing."
    ): (
        "用 `tuneforge train --nproc N`（以及 `--nnodes`）启动的运行如何分布到各个进程："
        "`ddp`（每个进程持有一份完整的模型副本，梯度取平均；支持 CPU（gloo）或 GPU），"
        "`fsdp`（PyTorch FSDP2：权重、梯度和优化器状态均分片；仅 GPU），"
        "`deepspeed`（DeepSpeed ZeRO；仅 GPU，需 pip install deepspeed）。"
        "只有一个进程时，`ddp` 不产生任何影响。"
    ),
    (
        "What FSDP2 shards: `full` (weights, gradients and optimizer states; weights re-gathered per block), "
        "`shard_grad_op` (weights stay gathered after the forward pass: faster, more memory), `hybrid` (full "
        "sharding inside a node, replicas across nodes: `--nnodes` > 1)."
    ): (
        "FSDP2 对哪些内容分片：`full`（权重、梯度和优化器状态；每个块重新聚合权重），"
        "`shard_grad_op`（前向传播后权重保持聚合：更快，但占用更多显存），`hybrid`（节点内完全分片，"
        "节点间复制：需 `--nnodes` > 1）。"
    ),
    (
        "Module classes that become one FSDP unit each. `auto`: the model's transformer block class (its "
        "`_no_split_modules`, for example `LlamaDecoderLayer`); or a list of class names."
    ): (
        "各自作为一个 FSDP 单元的模块类。`auto`："
        "模型的 Transformer 块类（即其 `_no_split_modules`，"
        "例如 `LlamaDecoderLayer`）；也可以是类名列表。"
    ),
    (
        "FSDP's own activation checkpointing of every wrapped block (use instead of `train.gradient_checkpointing`, "
        "not with it)."
    ): ("由 FSDP 自身对每个被包装的块执行激活检查点（用来替代 `train.gradient_checkpointing`，不要同时使用）。"),
    "Keep sharded parameters and optimizer states in CPU memory between uses (much less GPU memory, slower).": (
        "在两次使用之间将分片后的参数和优化器状态保存在 CPU 内存中（大幅减少显存占用，但速度更慢）。"
    ),
    (
        "Only rank 0 reads the pretrained weights; the others receive them when the model is sharded (less CPU RAM "
        "on nodes with many GPUs)."
    ): ("只有 rank 0 读取预训练权重；其他 rank 在模型分片时接收权重（在有多块 GPU 的节点上减少 CPU 内存占用）。"),
    (
        "How checkpoints for `--resume` are written: `full` (gathered on rank 0, FSDP's FULL_STATE_DICT) or "
        "`sharded` (each rank writes its shard: faster for large models). The final `model/` directory is always the "
        "full, gathered model in the usual loadable files."
    ): (
        "用于 `--resume` 的检查点的写入方式：`full`（在 rank 0 上聚合，"
        "即 FSDP 的 FULL_STATE_DICT）或 `sharded`（每个 rank 写入自己的分片：对大模型更快）。"
        "最终的 `model/` 目录始终是聚合后的完整模型，以常规的可加载文件保存。"
    ),
    (
        "ZeRO stage: 2 shards gradients and optimizer states, 3 also the weights (gathered into full 16-bit weights "
        "for the saved model)."
    ): ("ZeRO 阶段：2 对梯度和优化器状态分片，3 还对权重分片（保存模型时聚合为完整的 16 位权重）。"),
    "ZeRO-Offload: keep optimizer states (and the step) on the CPU.": "ZeRO-Offload：将优化器状态（以及优化器的更新计算）放在 CPU 上。",
    "Keep the sharded weights on the CPU between uses (stage 3 only).": "在两次使用之间将分片后的权重保存在 CPU 上（仅适用于 stage 3）。",
    "How long a process waits for the others at a collective operation before the run fails.": (
        "进程在集合通信操作处等待其他进程的最长时间，超时则运行失败。"
    ),
    (
        "Knowledge distillation: the teacher, a finished tuneforge run directory (any method; its adapters are "
        "applied), a `tuneforge export` directory or a local model directory of the same task. Null: no distillation."
    ): (
        "知识蒸馏：教师模型，可以是已完成的 tuneforge 运行目录（任意方法；会应用其适配器）、"
        "`tuneforge export` 目录，或同一任务的本地模型目录。null：不进行蒸馏。"
    ),
    (
        "Softmax temperature of teacher and student (the soft term is scaled by T^2). Default: the task's "
        "(classification 4, causal_lm 1)."
    ): ("教师和学生模型的 softmax 温度（软损失项按 T^2 缩放）。默认：取决于任务（分类为 4，causal_lm 为 1）。"),
    "Weight of the distillation term; 1 - alpha weighs the ordinary loss on the true labels/tokens.": (
        "蒸馏损失项的权重；1 - alpha 为基于真实标签/token 的普通损失的权重。"
    ),
    (
        "Classification: a file of extra texts (column `data.text_column`) without labels that only the teacher "
        "labels; only the distillation term applies to them."
    ): (
        "分类：一个包含额外文本（列为 `data.text_column`）但没有标签的文件，仅由教师模型打标签；"
        "这些文本只参与蒸馏损失项。"
    ),
    (
        "Classification: weight of a mean-squared error between the student's block outputs and those of the teacher "
        "blocks they were cut from (`model.keep_layers` of the teacher's own model directory, so the hidden sizes "
        "and the tokenizer match). 0: off."
    ): (
        "分类："
        "学生模型各块输出与其裁剪来源的教师块输出之间均方误差的权重（使用教师自身模型目录的 `model.keep_layers`，"
        "以保证隐藏层大小和分词器一致）。0：关闭。"
    ),
    (
        "causal_lm token-level distillation: KL(teacher || student), KL(student || teacher) or the generalised "
        "Jensen-Shannon divergence with weight `beta`."
    ): (
        "causal_lm 的 token 级蒸馏：KL(teacher || student)、"
        "KL(student || teacher)，或带权重 `beta` 的广义 Jensen-Shannon 散度。"
    ),
    "Weight of the teacher in `jsd`'s mixture.": "`jsd` 混合分布中教师模型的权重。",
    (
        "causal_lm: `token` matches the teacher's next-token distributions on the trained tokens (teacher and "
        "student must share a vocabulary); `sequence` has the teacher answer the training prompts once (cached) and "
        "trains the student on those answers with ordinary SFT (any tokenizers)."
    ): (
        "causal_lm："
        "`token` 在参与训练的 token 上拟合教师模型的下一个 token 分布（教师与学生必须共用同一词表）；"
        "`sequence` 让教师模型对训练提示词生成一次回答（会缓存），"
        "再用普通 SFT 在这些回答上训练学生模型（分词器可以不同）。"
    ),
    (
        "Validation metric for best-model selection and early stopping. Default: the task's (classification: "
        "accuracy; others: loss). Classification offers accuracy, f1_macro, f1_weighted, precision_macro, "
        "recall_macro, auc_roc, loss."
    ): (
        "用于选择最佳模型和早停的验证指标。默认：取决于任务（分类：accuracy；其他：loss）。"
        "分类任务可选 accuracy、f1_macro、f1_weighted、precision_macro、"
        "recall_macro、auc_roc、loss。"
    ),
    "At the end, restore the checkpoint with the best `eval.metric`.": "训练结束时，恢复 `eval.metric` 最佳的检查点。",
    "Run directory; default `runs/<name>-<timestamp>`.": "运行目录；默认为 `runs/<name>-<timestamp>`。",
    (
        "Run name; default the config file's name. A plain name (no slashes, no `..`, no control characters); where "
        "the run is written is `output.dir`."
    ): (
        "运行名称；默认为配置文件的名称。须为普通名称（不含斜杠、`..` 或控制字符）；"
        "运行的写入位置由 `output.dir` 决定。"
    ),
    "Allow writing into an existing run directory that is not being resumed.": "允许写入一个已存在、且并非用于继续训练的运行目录。",
    "Longest answer, in tokens (chat/generate default).": "回答的最大长度，以 token 计（chat/generate 的默认值）。",
    "Sampling temperature; 0 decodes greedily.": "采样温度；0 表示贪心解码。",
    "Nucleus sampling: smallest token set with this probability.": "核采样（nucleus sampling）：取累计概率达到该值的最小 token 集合。",
    "Penalty > 1 discourages repeating tokens (1 = off).": "重复惩罚：大于 1 时抑制重复的 token（1 = 关闭）。",
    "Held-out prompts answered by the base and the tuned model, side by side, in eval/report.md.": (
        "留出的提示词，由基础模型和微调后的模型分别回答，并在 eval/report.md 中并排展示。"
    ),
    "Longest answer in the report (greedy decoding).": "报告中回答的最大长度（贪心解码）。",
    (
        "Also measure the base model's loss/perplexity and answers on the held-out split (LoRA-type methods switch "
        "the adapter off; others reload the base)."
    ): ("同时在留出集上测量基础模型的损失/困惑度及其回答（LoRA 类方法会关闭适配器；其他方法会重新加载基础模型）。"),
    (
        "SFT record format: `alpaca` (instruction/input/output, optional system/history), `sharegpt` (conversations "
        "of from/value), `messages` (OpenAI-style role/content lists), `text` (plain continued pre-training on "
        "`text_column`), `auto` (detected from the columns)."
    ): (
        "SFT 数据格式：`alpaca`（instruction/input/output，可选 system/history），"
        "`sharegpt`（由 from/value 组成的 conversations），"
        "`messages`（OpenAI 风格的 role/content 列表），"
        "`text`（在 `text_column` 上进行纯文本增量预训练），`auto`（根据列自动识别）。"
    ),
    (
        "Chat template (SFT): `auto` uses the tokenizer's own and needs one; a name (`chatml`, `llama3`, `alpaca`, "
        "`vicuna`) uses that template instead. The template used is saved with the model."
    ): (
        "对话模板（SFT）：`auto` 使用分词器自带的模板，要求分词器带有模板；指定名称（`chatml`、`llama3`、"
        "`alpaca`、`vicuna`）则改用该模板。所用模板会随模型一起保存。"
    ),
    (
        "System message added to every conversation that has none, in training and in chat (saved with the model). "
        "null: the template's own behaviour (some templates insert a default system prompt)."
    ): (
        "为每个没有系统消息的对话添加的系统消息，训练和对话时均生效（随模型保存）。null："
        "采用模板自身的行为（部分模板会插入默认的系统提示词）。"
    ),
    (
        "Values for `{{name}}` placeholders in the SFT data and system prompt (for example the new name and author "
        "of `builtin:identity`)."
    ): ("SFT 数据和系统提示词中 `{{name}}` 占位符的取值（例如 `builtin:identity` 的新名称和作者）。"),
    (
        "SFT: compute the loss on prompt tokens too. Default: on assistant turns only (each including its "
        "end-of-turn token)."
    ): ("SFT：提示词部分的 token 也计算损失。默认：只在 assistant 轮次上计算（每轮都包含其结束 token）。"),
    (
        "SFT examples longer than `max_length`: `truncate` cuts them at max_length, `drop` leaves them out. Either "
        "way they are counted in the log and the run's eval/metrics.json."
    ): (
        "长度超过 `max_length` 的 SFT 样本：`truncate` 在 max_length 处截断，"
        "`drop` 将其丢弃。两种情况都会在日志和运行目录的 eval/metrics.json 中计数。"
    ),
    (
        "SFT: pack several examples into each row of up to `max_length` tokens; attention and positions restart at "
        "every example, so examples never see each other."
    ): (
        "SFT：将多个样本打包（packing）到每行最多 `max_length` 个 token 中；"
        "注意力和位置编码在每个样本处重新开始，因此样本之间互不可见。"
    ),
    "Column with the conversation for `sharegpt`/`messages` (default `conversations` / `messages`).": (
        "`sharegpt`/`messages` 格式中存放对话的列（默认分别为 `conversations` / `messages`）。"
    ),
    (
        "Role names of the data mapped to `system`/`user`/`assistant`, added to the known ones (human, user, gpt, "
        "assistant, bot, model, system), for example {customer: user, agent: assistant}."
    ): (
        "将数据中的角色名映射到 `system`/`user`/`assistant`，作为已知角色名（human、user、"
        "gpt、assistant、bot、model、system）的补充，"
        "例如 {customer: user, agent: assistant}。"
    ),
    "The label names in id order. Default: inferred from the training data (sorted; numbers numerically).": (
        "按 id 顺序排列的标签名称。默认：从训练数据推断（排序；数字按数值大小排序）。"
    ),
    "Optional second text column (sentence pairs).": "可选的第二个文本列（句子对）。",
    "Column holding the label (strings or integers).": "存放标签的列（字符串或整数）。",
    (
        "How duplicates are found: `exact` (after NFKC, case and whitespace normalisation), `near` (exact plus "
        "MinHash/LSH near-duplicates above `near_threshold`), or `none`. Applies within train and across splits."
    ): (
        "查找重复项的方式：`exact`（经 NFKC、大小写和空白归一化后完全相同），`near`（在 exact 基础上，"
        "再加上 MinHash/LSH 检测出的相似度高于 `near_threshold` 的近似重复），或 `none`。"
        "在训练集内部以及各划分之间生效。"
    ),
    "Jaccard similarity of character 4-gram shingles above which two texts count as near-duplicates.": (
        "字符 4-gram shingle 的 Jaccard 相似度阈值，高于该值的两段文本视为近似重复。"
    ),
    (
        "Duplicates inside the training split: `drop` keeps the first of each group (per label), `report` only "
        "counts them."
    ): ("训练集内部的重复项：`drop` 保留每组（按标签）中的第一条，`report` 只计数。"),
    (
        "Training rows that duplicate a validation or test row (leakage): `drop` removes them from train, `report` "
        "only lists them. Validation and test are never changed."
    ): (
        "与验证集或测试集中某行重复的训练行（数据泄漏）：`drop` 将其从训练集中删除，`report` 只列出。"
        "验证集和测试集永远不会被修改。"
    ),
    (
        "Duplicate groups in train whose labels disagree: `report` keeps one row per label, `drop` removes the whole "
        "group, `majority` keeps one row with the most frequent label (ties are dropped)."
    ): (
        "训练集中标签不一致的重复组：`report` 每个标签保留一行，`drop` 删除整组，"
        "`majority` 保留一行并使用出现次数最多的标签（票数相同则删除）。"
    ),
    (
        "Label-error detection on train (confident learning on out-of-fold probabilities of the detector "
        "`noise_features`): `report` lists suspects, `drop` removes them, `relabel` gives them the predicted label."
    ): (
        "训练集上的标签错误检测（基于检测器 `noise_features` 的折外概率进行置信学习）："
        "`report` 列出可疑样本，`drop` 将其删除，`relabel` 将其改为预测的标签。"
    ),
    (
        "The label-noise detector: a logistic regression on `tfidf` (word or character n-grams; seconds), on `model` "
        "(mean-pooled sentence embeddings of `model.name`, frozen; a forward pass over the training split, better on "
        "paraphrased or short texts) or `both` (the two models' probabilities averaged: fewer false suspects at "
        "about the same recall, at the cost of `model`); or `finetune`: the run's own model, method and training "
        "settings fine-tuned once per fold (`noise_folds` extra trainings: the most accurate detector and by far the "
        "slowest)."
    ): (
        "标签噪声检测器：基于 `tfidf`（词或字符 n-gram；耗时几秒）的逻辑回归，"
        "基于 `model`（`model.name` 的平均池化句向量，冻结；需对训练集做一次前向传播，"
        "对改写过的文本或短文本效果更好）的逻辑回归，或 `both`（两个模型的概率取平均：召回率相近而误报更少，"
        "代价与 `model` 相同）；或 `finetune`：用本次运行自身的模型、"
        "方法和训练设置在每一折上微调一次（额外训练 `noise_folds` 次：最准确的检测器，也远比其他方式慢）。"
    ),
    "`drop`/`relabel` act only on suspects whose out-of-fold probability for the suggested label is at least this.": (
        "`drop`/`relabel` 只作用于建议标签的折外概率不低于该值的可疑样本。"
    ),
    "Cross-validation folds for the out-of-fold probabilities.": "计算折外概率所用的交叉验证折数。",
    "Add augmented copies of training examples (validation and test are never augmented).": (
        "为训练样本添加增强副本（验证集和测试集永远不做增强）。"
    ),
    (
        "Augmented copies per training example; a fraction adds a copy to that share of examples (1.5: every example "
        "gets one, half get two)."
    ): (
        "每个训练样本的增强副本数；小数部分表示为相应比例的样本再添加一份副本（1.5：每个样本得到一份，其中一半得到两份）。"
    ),
    "Copies per example for the named labels, overriding `num_per_example` (to top up rare classes).": (
        "为指定标签单独设置每个样本的副本数，覆盖 `num_per_example`（用于补充稀有类别）。"
    ),
    (
        "Operations; each copy uses one, chosen at random. `back_translation` needs "
        "`augment.back_translation.to_model` and `back_model`."
    ): (
        "增强操作；每份副本随机选用其中一种。"
        "`back_translation` 需要设置 `augment.back_translation.to_model` 和 `back_model`。"
    ),
    "Share of words replaced by a synonym (WordNet / Cilin).": "被替换为同义词的词所占的比例（WordNet / Cilin）。",
    "Share of words for which a synonym is inserted at a random place.": "在随机位置插入其同义词的词所占的比例。",
    "Share of words swapped with another word.": "与另一个词交换位置的词所占的比例。",
    "Probability of deleting each word.": "每个词被删除的概率。",
    "Language of the texts: `auto` detects it per example from the script (Han characters: zh, else en).": (
        "文本的语言：`auto` 根据文字逐个样本检测（含汉字为 zh，否则为 en）。"
    ),
    "Words that are never replaced, moved or deleted.": "永远不会被替换、移动或删除的词。",
    "Never change numbers or capitalised words inside a sentence (likely names and entities).": (
        "从不修改句子中间的数字或首字母大写的词（它们很可能是人名和实体）。"
    ),
    "Never change, move or delete negations (not, never, isn't, 不, 没有, ...): losing one can flip the label.": (
        "从不修改、移动或删除否定词（not、never、isn't、不、没有……）：丢失一个否定词可能会使标签反转。"
    ),
    (
        "English synonyms come from this many most frequent WordNet senses of a word per part of speech; 0 takes "
        "every sense (the EDA paper's choice, which also gives rare ones such as great -> 'with child')."
    ): (
        "英文同义词取自一个词在每种词性下最常用的这么多个 WordNet 词义；0 表示采用全部词义（EDA 论文的做法，"
        "也会得到罕见的词义，例如 great -> 'with child'）。"
    ),
    "Seed of the augmentation; defaults to `train.seed`. An integer from 0 to 4294967295.": (
        "数据增强的随机种子；默认使用 `train.seed`。取值为 0 到 4294967295 之间的整数。"
    ),
    "Local seq2seq translation model directory (source language -> pivot), e.g. a Marian en-de model.": (
        "本地 seq2seq 翻译模型目录（源语言 -> 中间语言），例如 Marian en-de 模型。"
    ),
    "Local seq2seq model directory (pivot -> source language).": "本地 seq2seq 模型目录（中间语言 -> 源语言）。",
    "Texts per translation batch.": "每个翻译批次的文本数。",
    "Longest generated translation, in tokens.": "生成译文的最大长度，以 token 计。",
    "Beam width (1 = greedy, fastest).": "束搜索宽度（1 = 贪心解码，最快）。",
    "Sample (top-k 50) instead of greedy/beam search, for more varied paraphrases.": (
        "使用采样（top-k 50）代替贪心/束搜索，以得到更多样的改写。"
    ),
    (
        "Class-weighted loss: `balanced` (inverse class frequency in the final training split), a mapping label -> "
        "weight, or `none`."
    ): ("类别加权损失：`balanced`（按最终训练集中类别频率的倒数加权）、标签 -> 权重的映射，或 `none`。"),
    (
        "Resample the training split: `oversample` repeats rare-class rows, `undersample` drops frequent-class rows, "
        "`augment` tops up rare classes with augmented copies (data.augment's operations and rates)."
    ): (
        "对训练集重采样：`oversample` 重复稀有类别的行，`undersample` 丢弃高频类别的行，"
        "`augment` 用增强副本补充稀有类别（使用 data.augment 的操作和比例）。"
    ),
    (
        "Target size of every class relative to the largest (over/augment) or the floor relative to the smallest "
        "(undersample keeps at most smallest/ratio rows per class)."
    ): (
        "每个类别相对于最大类别的目标规模（over/augment），"
        "或相对于最小类别的下限（undersample 时每个类别最多保留 smallest/ratio 行）。"
    ),
    (
        "The sub-tasks by name (letters, digits, underscores): each `{label_column, problem, labels, weight, metric, "
        "train, validation, test}`."
    ): (
        "按名称定义的子任务（名称由字母、数字、下划线组成）："
        "每个为 `{label_column, problem, labels, weight, metric, train, validation, test}`。"
    ),
    (
        "`fixed`: the loss is sum(weight_i * loss_i); `uncertainty`: learned per-task weights (Kendall et al. 2018), "
        "sum(weight_i * (exp(-s_i) * loss_i + s_i / 2))."
    ): (
        "`fixed`：损失为 sum(weight_i * loss_i)；`uncertainty`："
        "学习每个任务的权重（Kendall et al. 2018），"
        "sum(weight_i * (exp(-s_i) * loss_i + s_i / 2))。"
    ),
    (
        "How batches mix rows of different data files (sub-tasks with their own `train`): `proportional` to their "
        "sizes, `temperature` (sizes^(1/sampling_temperature): small sources more often) or `round_robin` (equal "
        "shares). One file: a plain shuffle."
    ): (
        "批次如何混合来自不同数据文件的行（带有自己 `train` 的子任务）：`proportional` 按文件大小成比例，"
        "`temperature`（sizes^(1/sampling_temperature)：小数据源被更频繁地采样）"
        "或 `round_robin`（均等份额）。只有一个文件时：普通打乱。"
    ),
    "T of `sampling: temperature`.": "`sampling: temperature` 中的 T。",
    (
        "The vector the heads read: `mean` of the real tokens, the `first` ([CLS]) or the `last` real token. `auto`: "
        "last for decoders, mean for encoders (with [CLS] an easy sub-task can leave the others at chance)."
    ): (
        "各任务头读取的向量：真实 token 的平均（`mean`）、第一个 token（`first`，即 [CLS]）"
        "或最后一个真实 token（`last`）。`auto`：解码器用 last，编码器用 mean（使用 [CLS] 时，"
        "一个简单的子任务可能让其他子任务停留在随机猜测水平）。"
    ),
    (
        "`houlsby`: an adapter after the attention output and one after the feed-forward of every block; `pfeiffer`: "
        "only after the feed-forward (half the parameters, usually as accurate)."
    ): (
        "`houlsby`：在每个块的注意力输出之后和前馈层之后各加一个适配器；`pfeiffer`：只加在前馈层之后（参数量减半，"
        "准确率通常相当）。"
    ),
    "Width of the adapter's bottleneck. Give this or reduction_factor.": "适配器瓶颈层的宽度。与 reduction_factor 二选一。",
    "Bottleneck width = hidden size / this factor (default 16 when bottleneck_size is not given).": (
        "瓶颈宽度 = 隐藏层大小 / 该因子（未指定 bottleneck_size 时默认为 16）。"
    ),
    "Non-linearity in the bottleneck.": "瓶颈层中的非线性激活函数。",
    "Dropout inside the adapter, before the up-projection.": "适配器内部、上投影之前的 dropout。",
    (
        "Layer-wise learning-rate decay: the top block trains at the learning rate, each block below at decay x the "
        "one above, the embeddings below the bottom block (for example 0.9). Null: one rate."
    ): (
        "逐层学习率衰减：最顶层的块使用设定的学习率，往下每个块为其上一块的学习率乘以 decay，"
        "嵌入层低于最底部的块（例如 0.9）。null：统一学习率。"
    ),
    "Learning rate of the task head (for example `classifier`); default: the run's learning rate.": (
        "任务头（例如 `classifier`）的学习率；默认：使用本次运行的学习率。"
    ),
    "Learning rate of the embeddings; default: from the layer-wise decay chain (or the run's rate).": (
        "嵌入层的学习率；默认：由逐层衰减链得出（或使用本次运行的学习率）。"
    ),
    (
        "Progressive unfreezing (ULMFiT), for example `{start: head, every_epochs: 1, group_size: 1}`: begin with "
        "the head, unfreeze one more group of blocks from the top at each interval."
    ): (
        "逐步解冻（ULMFiT），"
        "例如 `{start: head, every_epochs: 1, group_size: 1}`：先只训练任务头，"
        "每隔一个间隔从顶部再解冻一组块。"
    ),
    (
        "Train the top N transformer blocks (0: the task head only). Default 2 when neither `frozen_layers` nor "
        "`trainable_modules` is given."
    ): (
        "训练最顶部的 N 个 Transformer 块（0：只训练任务头）。"
        "既未设置 `frozen_layers` 也未设置 `trainable_modules` 时默认为 2。"
    ),
    "Alternatively: freeze the bottom N blocks and train every block above them.": "另一种方式：冻结最底部的 N 个块，训练其上的所有块。",
    (
        "Alternatively: regular expressions searched in parameter names (for example `attention` or `layer\\.5\\.`); "
        "matching parameters train, everything else except the task head is frozen."
    ): (
        "另一种方式：在参数名中搜索的正则表达式（例如 `attention` 或 `layer\\.5\\.`）；"
        "匹配的参数参与训练，除任务头外的其他参数全部冻结。"
    ),
    "Also train the embeddings (frozen by default).": "同时训练嵌入层（默认冻结）。",
    "Keep the embeddings fixed (saves memory, often no loss).": "保持嵌入层固定（节省显存，通常不影响效果）。",
    (
        "Layers whose activations get a learned scaling vector: a list of module-name suffixes, one regular "
        "expression, or `all-linear`. Null: PEFT's choice for the architecture (keys, values and the feed-forward "
        "output)."
    ): (
        "激活值乘以可学习缩放向量的层：模块名后缀列表、一个正则表达式，或 `all-linear`。null："
        "由 PEFT 根据模型架构选择（键、值和前馈层输出）。"
    ),
    (
        "Which of target_modules are feed-forward layers (scaled on their input rather than output). Null: PEFT's "
        "choice for the architecture; must be a subset of target_modules when both are given."
    ): (
        "target_modules 中哪些是前馈层（对其输入而非输出进行缩放）。null：由 PEFT 根据模型架构选择；"
        "两者都设置时必须是 target_modules 的子集。"
    ),
    "Rank of the low-rank update.": "低秩更新的秩。",
    "Scaling numerator (update scaled by alpha/r); default 2*r.": "缩放系数的分子（更新按 alpha/r 缩放）；默认为 2*r。",
    "Dropout on the LoRA input.": "LoRA 输入上的 dropout。",
    (
        "Layers that get LoRA: `all-linear` (every linear layer but the head; in a convolutional network without "
        "linear layers, every convolution that is not grouped), a list of module-name suffixes (for example "
        "[query, value]), or one regular expression matched against full module names."
    ): (
        "应用 LoRA 的层：`all-linear`（除任务头外的所有线性层；在没有线性层的卷积网络中，为所有非分组卷积）、"
        "模块名后缀列表（例如 [query, value]），或一个与完整模块名匹配的正则表达式。"
    ),
    "Rank-stabilised scaling alpha/sqrt(r) (rsLoRA).": "秩稳定的缩放 alpha/sqrt(r)（rsLoRA）。",
    "Weight-decomposed LoRA (DoRA): learns magnitude and direction.": "权重分解的 LoRA（DoRA）：分别学习幅度和方向。",
    (
        "Initialisation of the LoRA matrices, as PEFT offers them (`default`: B=0, A Kaiming-uniform; `gaussian`: A "
        "Gaussian; `pissa` / `olora`: from the principal directions / a QR of the base weight, which then changes "
        "the base; full-precision bases only)."
    ): (
        "LoRA 矩阵的初始化方式，与 PEFT 提供的选项一致（`default`：B=0，A 为 Kaiming 均匀初始化；"
        "`gaussian`：A 为高斯初始化；`pissa` / `olora`：分别基于基础权重的主方向 / QR 分解，"
        "此时会改动基础权重；仅适用于全精度基础模型）。"
    ),
    "Which biases train.": "哪些偏置参与训练。",
    "LoRA+: learning rate of the B matrices = this ratio x learning rate (16 is the paper's choice).": (
        "LoRA+：B 矩阵的学习率 = 该比例 x 学习率（论文采用 16）。"
    ),
    (
        "QLoRA: load the frozen base quantized by bitsandbytes (`nf4` is QLoRA's choice; `fp4`; `int8`). The task "
        "head stays in full precision. Null: a full-precision base."
    ): (
        "QLoRA：用 bitsandbytes 加载量化后的冻结基础模型（`nf4` 为 QLoRA 的选择；`fp4`；"
        "`int8`）。任务头保持全精度。null：全精度基础模型。"
    ),
    "4-bit only: also quantize the quantization constants (about 0.4 bits per weight saved).": (
        "仅 4-bit：对量化常数也进行量化（每个权重约节省 0.4 bit）。"
    ),
    "4-bit only: dtype of the matrix products (`auto`: bfloat16 on GPUs that support it, else float32).": (
        "仅 4-bit：矩阵乘法的 dtype（`auto`：支持 bfloat16 的 GPU 上为 bfloat16，否则为 float32）。"
    ),
    "Length of the learned prefix prepended to the keys and values of every attention layer.": (
        "添加在每个注意力层的键和值之前的可学习前缀的长度。"
    ),
    "Reparametrise the prefix through a two-layer MLP while training (more stable, more parameters).": (
        "训练时通过两层 MLP 对前缀进行重参数化（更稳定，参数更多）。"
    ),
    "Hidden width of that MLP; default: the model's hidden size.": "该 MLP 的隐藏层宽度；默认：模型的隐藏层大小。",
    "Length of the learned soft prompt (tokens).": "可学习软提示的长度（token 数）。",
    (
        "Initialise the soft prompt from the embeddings of this text (repeated or cut to num_virtual_tokens), for "
        "example 'Classify the sentiment of this review:'. Null: random initialisation."
    ): (
        "用这段文本的嵌入初始化软提示（重复或截断到 num_virtual_tokens），"
        "例如 'Classify the sentiment of this review:'。null：随机初始化。"
    ),
    "Quantization of the frozen base (`nf4` default for `qlora`; `fp4`; `int8`; null: full precision).": (
        "冻结基础模型的量化方式（`qlora` 默认为 `nf4`；`fp4`；`int8`；null：全精度）。"
    ),
    # ---- image classification ----
    (
        "Start from randomly initialised weights of `name`'s architecture instead of its pretrained weights (the "
        "from-scratch baseline that fine-tuning is measured against)."
    ): "不加载预训练权重，而是从 `name` 所指架构的随机初始化权重开始训练（作为衡量微调效果的从零训练基线）。",
    "Column holding the image path (tables and `datasets` dirs).": "存放图像路径的列（表格和 `datasets` 目录）。",
    (
        "Keep at most this many training images per class (a seeded sample): a low-resource set is one setting."
    ): "每个类别最多保留这么多训练图像（按种子抽样）：一个设置即可构造低资源数据集。",
    "Keep at most this many validation and test images per class (quicker evaluation).": (
        "每个类别最多保留这么多验证和测试图像（加快评估）。"
    ),
    "Side of the square model input in pixels. Default: the model's own (its preprocessor_config.json).": (
        "正方形模型输入的边长（像素）。默认：模型自身的设置（其 preprocessor_config.json）。"
    ),
    (
        "Random resized crop of training images: the [min, max] fraction of the image area a crop keeps. Null: "
        "no random crop (training images are resized like evaluation images)."
    ): (
        "训练图像的随机缩放裁剪：裁剪保留图像面积的 [最小, 最大] 比例。null：不做随机裁剪"
        "（训练图像与评估图像一样只做缩放）。"
    ),
    "Flip training images horizontally at random (off for digits, text, ...).": (
        "随机水平翻转训练图像（数字、文字等图像应关闭）。"
    ),
    "RandAugment on training images ({num_ops, magnitude}); null: off.": (
        "对训练图像使用 RandAugment（{num_ops, magnitude}）；null：关闭。"
    ),
    (
        "CutMix on training batches ({alpha, prob}): a box of each image is replaced by its neighbour's, and the "
        "target mixes both labels by area. Null: off."
    ): (
        "对训练批次使用 CutMix（{alpha, prob}）：每张图像的一个矩形区域被相邻图像的对应区域替换，"
        "目标按面积混合两个标签。null：关闭。"
    ),
    (
        "MixUp on training batches ({alpha, prob}): images and labels blended with weight lambda ~ "
        "Beta(alpha, alpha). With cutmix too, each batch uses one of them. Null: off."
    ): (
        "对训练批次使用 MixUp（{alpha, prob}）：图像和标签按权重 lambda ~ Beta(alpha, alpha) 混合。"
        "同时启用 cutmix 时，每个批次只使用其中一种。null：关闭。"
    ),
    "Label smoothing of the training targets.": "训练目标的标签平滑系数。",
}
