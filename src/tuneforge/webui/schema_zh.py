"""Simplified Chinese (简体中文) help text of every config field in the web UI, keyed by the field's path.

A path is `FieldSpec.path` (webui/fields.py): `train.batch_size`, `method[lora].r`,
`task[causal_lm].generation.temperature`, `data[image_classification].cutmix`; rewording a field's English
description keeps its translation. An entry may name several tasks or methods whose field is the same, comma-
separated in the brackets (`method[lora,qlora].r`). tests/test_webui.py fails when a field has no entry or an entry
names no field.
"""

from __future__ import annotations

from tuneforge.webui.fields import FieldSpec

#: field path (tasks or methods that share the field comma-separated in its brackets) -> its Chinese help text
HELP_ZH: dict[str, str] = {
    "model.name": (
        "基础模型：内置别名（`tuneforge models` 可列出）、本地 transformers 模型目录、"
        "GGUF 文件（或包含一个 GGUF 文件的目录；transformers 能读取的架构：llama、mistral、qwen2、qwen3、gemma2/3、phi3 等；"
        "反量化并只转换一次）、timm 模型目录、"
        "torchvision/timm 的 ResNet 或 MobileNetV2 检查点文件（.pth、.pt、.bin、.ckpt、.safetensors；只转换一次），"
        "或 Hub 模型 ID（需要联网）。"
    ),
    "model.revision": "Hub 模型 ID 所用的版本（分支、标签或提交）。",
    "model.dtype": "加载权重时使用的 dtype。`auto`：CPU 上为 float32，支持 bfloat16 的 GPU 上为 bfloat16。",
    "model.trust_remote_code": "允许执行模型目录中的自定义建模代码。",
    "model.keep_layers": (
        "保留 `name` 的部分 Transformer 块，构建一个更小的学生模型（DistilBERT 式初始化）："
        "可以是一个数量（均匀分布，保留首尾两块），也可以是块的索引，例如 [0, 2, 4]。"
        "适用于 BERT 和 Llama 系列模型。null：保留全部块。"
    ),
    "model.random_init": "不加载预训练权重，而是从 `name` 所指架构的随机初始化权重开始训练（作为衡量微调效果的从零训练基线）。",
    "model.extend_vocabulary": (
        "词表扩充：从语料（`corpus`、`new_tokens`、`min_frequency`）学习新词元并加入分词器，扩大词嵌入（以及未绑定的输出层），"
        "每个新行初始化为旧分词器切出的各子词行的平均值。扩充后的分词器随运行一起保存。null：使用基础模型的词表。"
    ),
    "model.add_tokens": "原样加入分词器的词元（初始化方式与 `extend_vocabulary` 相同）。",
    "model.add_special_tokens": (
        "要加入的特殊词元（从不拆分，decode(skip_special_tokens=True) 时跳过），例如工具或角色标记；初始化方式与 `add_tokens` 相同。"
    ),
    "model.train_embeddings": (
        "在 LoRA/DoRA/QLoRA 下加入新词元时：`new` 只训练词嵌入中新词元的行（以及未绑定输出层的对应行，通过 PEFT 的 "
        "trainable tokens），只保存这些行；`all` 训练并保存整个词嵌入矩阵（PEFT 的 modules_to_save：内存和检查点中多一份副本）。"
        "全量微调无论如何都训练所有行。"
    ),
    "data.train": (
        "训练数据：csv/tsv/json/jsonl/parquet 文件、由 `datasets` 保存的目录，"
        "或内置数据集（`builtin:rotten-tomatoes`；图像：按类别分文件夹的目录，或 `builtin:fashion-mnist`、"
        "`builtin:digits`）。没有 `validation`/`test` 文件时会自动从中划分。"
    ),
    "data.validation": "可选的验证集文件（列与训练集相同）。",
    "data.test": "可选的测试集文件（列与训练集相同）。",
    "data.text_column": "存放输入文本的列。",
    "data.max_length": (
        "单个样本的最大 token 数（截断长度）；更长的样本会被截断。默认：取决于任务（分类任务为 128）。"
        "每个批次只填充到该批次中最长的样本，而不会填充到这一长度。"
    ),
    "data.max_train_samples": "只使用这么多行训练数据（分层抽样），用于快速实验。",
    "data.bad_records": (
        "无法使用的记录（SFT：轮次为空、缺失或不是文本，角色未知，没有 assistant 轮次；分类：标签是列表，"
        "文本是列表或不是 UTF-8 的字节）：`error` 会报错停止并指明该记录，`skip` 会跳过这些记录，"
        "在日志中计数并在运行目录的 data/report.md 中列出。无法读取的文件在两种情况下都会报错。"
    ),
    "data.split.validation": "未提供 `data.validation` 文件时，留出作为验证集的数据比例。",
    "data.split.test": "未提供 `data.test` 文件时，留出作为最终测试集的数据比例。",
    "data.split.stratify": "在各个划分中保持相同的类别比例（分类任务）。",
    "data.split.group_column": "该列取值相同的行会放在同一个划分中（例如 `movie_name`），避免近乎相同的文本从训练集泄漏到测试集。",
    "data.split.seed": "数据划分的随机种子；默认使用 `train.seed`。取值为 0 到 4294967295 之间的整数。",
    "train.epochs": "遍历训练数据的轮数（epoch）。",
    "train.max_steps": "达到这么多优化器步数后停止（会覆盖 epochs）。",
    "train.max_minutes": (
        "时间预算：训练时间（不含评估；从本进程开始计时，因此续训会重新获得一份预算）超过这么多分钟后，在当前优化器步结束时停止；"
        "随后像正常结束的运行一样保存并评估模型。学习率调度仍按 `epochs`/`max_steps` 计算。"
    ),
    "train.batch_size": "每个设备每次前向传播的样本数。",
    "train.eval_batch_size": "评估时每个批次的样本数（默认为 batch_size 的 2 倍）。",
    "train.gradient_accumulation_steps": "每个优化器步对应的前向传播次数（梯度累积）。",
    "train.learning_rate": "峰值学习率。默认：取决于方法（例如全参数微调为 5e-5，LoRA 为 1e-3）。",
    "train.scheduler": "预热结束后的学习率调度策略。",
    "train.warmup_ratio": "预热步数占总步数的比例。",
    "train.warmup_steps": "预热步数；设置后会覆盖 warmup_ratio。",
    "train.weight_decay": "AdamW 的权重衰减（不作用于偏置和归一化层）。",
    "train.max_grad_norm": "梯度裁剪的范数阈值；0 表示不裁剪。",
    "train.gradient_checkpointing": "在反向传播时重新计算激活值，以节省显存。",
    "train.precision": (
        "`auto`：在支持 bf16 的 GPU 上使用 bf16 混合精度，较旧的 GPU 上使用 fp16；在有 bf16 单元（AVX512-BF16 / AMX）"
        "的 CPU 上，隐藏维度不小于 256 的模型使用 bf16 自动混合精度（权重和优化器状态仍为 fp32），其余情况使用 fp32。"
        "`bf16` 在有 bf16 单元的 CPU 上总是启用自动混合精度；fp16 需要 GPU。"
    ),
    "train.seed": (
        "用于初始化、打乱数据和数据划分的随机种子：相同的配置 + 相同的种子 = 相同的指标。"
        "取值为 0 到 4294967295 之间的整数。"
    ),
    "train.eval_strategy": "何时在验证集上进行评估。",
    "train.eval_steps": "每 N 步评估一次（需设置 eval_strategy: steps）。",
    "train.save_steps": "每 N 步保存一次检查点；默认：每次评估时保存。`tuneforge train --resume` 会从最后一个检查点继续训练。",
    "train.save_total_limit": "最多保留这么多个检查点（最佳检查点始终保留）。",
    "train.logging_steps": "每 N 步向 metrics.jsonl 写入一行。",
    "train.early_stopping.patience": "连续这么多次评估 `eval.metric` 都没有提升时停止训练；null 表示关闭早停。",
    "train.early_stopping.threshold": "被视为提升的最小变化量。",
    "train.group_by_length": "将长度相近的样本放入同一批次，以减少填充。",
    "train.report_to": "实验跟踪工具。`auto`：已安装 TensorBoard 时使用它，否则不使用。",
    "train.num_workers": "数据加载器的工作进程数。",
    "train.chunked_loss": (
        "因果语言模型：从隐藏状态分块计算训练损失，"
        "从不保存完整的 token 数 x 词表大小的 logits（长序列时可达数 GiB）。`auto`："
        "使用 CUDA 时开启；`true` 在 CPU 上也开启。"
    ),
    "train.fused_lora": (
        "dropout 为 0 且不使用 DoRA 的 LoRA 层作为一个融合的 autograd 函数运行（减少内存访问量，"
        "不会为每层输入生成 float32 副本）。`auto`：使用 CUDA 时开启；`true` 在 CPU 上也开启。"
    ),
    "train.compile": (
        "对每个 Transformer 块执行 torch.compile。`auto`：使用 CUDA 时开启，"
        "启用 liger 时关闭；`true` 需要 CUDA 设备（在 CPU 上属于配置错误："
        "CPU 上在第一步之前编译就要花费数分钟，得不偿失），与 liger 同时使用时会围绕 liger 的内核进行编译。"
    ),
    "train.liger": (
        "liger-kernel 的 RMSNorm/RoPE/SwiGLU 内核（pip install 'tuneforge[gpu]'）"
        "。`auto`：使用 CUDA 且已安装时开启；`true` 在未安装时会报错。"
    ),
    "train.optimizer": (
        "AdamW 的实现方式。`auto`：在 CUDA 且 torch >= 2.8 时使用 fused（所有参数共用一个内核）"
        "；`adamw_8bit` / `paged_adamw_8bit`："
        "bitsandbytes 的 8-bit 优化器状态（占用 AdamW 状态内存的四分之一）。"
    ),
    "train.distributed.strategy": (
        "用 `tuneforge train --nproc N`（以及 `--nnodes`）启动的运行如何分布到各个进程："
        "`ddp`（每个进程持有一份完整的模型副本，梯度取平均；支持 CPU（gloo）或 GPU），"
        "`fsdp`（PyTorch FSDP2：权重、梯度和优化器状态均分片；仅 GPU），"
        "`deepspeed`（DeepSpeed ZeRO；仅 GPU，需 pip install deepspeed）。"
        "只有一个进程时，`ddp` 不产生任何影响。"
    ),
    "train.distributed.fsdp.sharding": (
        "FSDP2 对哪些内容分片：`full`（权重、梯度和优化器状态；每个块重新聚合权重），"
        "`shard_grad_op`（前向传播后权重保持聚合：更快，但占用更多显存），`hybrid`（节点内完全分片，"
        "节点间复制：需 `--nnodes` > 1）。"
    ),
    "train.distributed.fsdp.auto_wrap": (
        "各自作为一个 FSDP 单元的模块类。`auto`："
        "模型的 Transformer 块类（即其 `_no_split_modules`，"
        "例如 `LlamaDecoderLayer`）；也可以是类名列表。"
    ),
    "train.distributed.fsdp.activation_checkpointing": "由 FSDP 自身对每个被包装的块执行激活检查点（用来替代 `train.gradient_checkpointing`，不要同时使用）。",
    "train.distributed.fsdp.cpu_offload": "在两次使用之间将分片后的参数和优化器状态保存在 CPU 内存中（大幅减少显存占用，但速度更慢）。",
    "train.distributed.fsdp.cpu_ram_efficient_loading": "只有 rank 0 读取预训练权重；其他 rank 在模型分片时接收权重（在有多块 GPU 的节点上减少 CPU 内存占用）。",
    "train.distributed.fsdp.state_dict_type": (
        "用于 `--resume` 的检查点的写入方式：`full`（在 rank 0 上聚合，"
        "即 FSDP 的 FULL_STATE_DICT）或 `sharded`（每个 rank 写入自己的分片：对大模型更快）。"
        "最终的 `model/` 目录始终是聚合后的完整模型，以常规的可加载文件保存。"
    ),
    "train.distributed.deepspeed.stage": "ZeRO 阶段：2 对梯度和优化器状态分片，3 还对权重分片（保存模型时聚合为完整的 16 位权重）。",
    "train.distributed.deepspeed.offload_optimizer": "ZeRO-Offload：将优化器状态（以及优化器的更新计算）放在 CPU 上。",
    "train.distributed.deepspeed.offload_params": "在两次使用之间将分片后的权重保存在 CPU 上（仅适用于 stage 3）。",
    "train.distributed.timeout_minutes": "进程在集合通信操作处等待其他进程的最长时间，超时则运行失败。",
    "distill.teacher": (
        "知识蒸馏：教师模型，可以是已完成的 tuneforge 运行目录（任意方法；会应用其适配器）、"
        "`tuneforge export` 目录，或同一任务的本地模型目录。null：不进行蒸馏。"
    ),
    "distill.temperature": "教师和学生模型的 softmax 温度（软损失项按 T^2 缩放）。默认：取决于任务（分类为 4，causal_lm 为 1）。",
    "distill.alpha": "蒸馏损失项的权重；1 - alpha 为基于真实标签/token 的普通损失的权重。",
    "distill.unlabeled": (
        "分类：一个包含额外文本（列为 `data.text_column`）但没有标签的文件，仅由教师模型打标签；"
        "这些文本只参与蒸馏损失项。"
    ),
    "distill.hidden_weight": (
        "分类："
        "学生模型各块输出与其裁剪来源的教师块输出之间均方误差的权重（使用教师自身模型目录的 `model.keep_layers`，"
        "以保证隐藏层大小和分词器一致）。0：关闭。"
    ),
    "distill.divergence": (
        "causal_lm 的 token 级蒸馏：KL(teacher || student)、"
        "KL(student || teacher)，或带权重 `beta` 的广义 Jensen-Shannon 散度。"
    ),
    "distill.beta": "`jsd` 混合分布中教师模型的权重。",
    "distill.mode": (
        "causal_lm："
        "`token` 在参与训练的 token 上拟合教师模型的下一个 token 分布（教师与学生必须共用同一词表）；"
        "`sequence` 让教师模型对训练提示词生成一次回答（会缓存），"
        "再用普通 SFT 在这些回答上训练学生模型（分词器可以不同）。"
    ),
    "eval.metric": (
        "用于选择最佳模型和早停的验证指标。默认：取决于任务（分类：accuracy；其他：loss）。"
        "分类任务可选 accuracy、f1_macro、f1_weighted、precision_macro、"
        "recall_macro、auc_roc、loss。"
    ),
    "eval.load_best_model": "训练结束时，恢复 `eval.metric` 最佳的检查点。",
    "output.dir": "运行目录；默认为 `runs/<name>-<timestamp>`。",
    "output.name": (
        "运行名称；默认为配置文件的名称。须为普通名称（不含斜杠、`..` 或控制字符）；"
        "运行的写入位置由 `output.dir` 决定。"
    ),
    "output.overwrite": "允许写入一个已存在、且并非用于继续训练的运行目录。",
    "task[causal_lm,preference,grpo].generation.max_new_tokens": "回答的最大长度，以 token 计（chat/generate 的默认值）。",
    "task[causal_lm,preference,grpo].generation.temperature": "采样温度；0 表示贪心解码。",
    "task[causal_lm,preference,grpo].generation.top_p": "核采样（nucleus sampling）：取累计概率达到该值的最小 token 集合。",
    "task[causal_lm,preference,grpo].generation.repetition_penalty": "重复惩罚：大于 1 时抑制重复的 token（1 = 关闭）。",
    "task[causal_lm,preference].report_prompts": "留出的提示词，由基础模型和微调后的模型分别回答，并在 eval/report.md 中并排展示。",
    "task[causal_lm,preference].report_max_new_tokens": "报告中回答的最大长度（贪心解码）。",
    "task[causal_lm,preference].compare_base": "同时在留出集上测量基础模型的损失/困惑度及其回答（LoRA 类方法会关闭适配器；其他方法会重新加载基础模型）。",
    "task[preference].loss": (
        "偏好损失：`dpo`（sigmoid；设置 `label_smoothing` 时为保守 DPO）、`ipo`、`robust`（rDPO）、`hinge`（SLiC）、"
        "`orpo`（优势比项加上被选回答的 NLL，无需参考模型）、`simpo`（按长度归一化，间隔为 `gamma`，无需参考模型）、"
        "`kto`（未成对、标注好坏的回答；成对数据按一好一坏读取）。"
        "每种损失都与 TRL 的实现一致。"
    ),
    "task[preference].beta": "偏好项的强度（除 orpo 外的所有损失）：策略模型可以偏离参考模型多远。默认：0.1（simpo 为 2.0）。",
    "task[preference].label_smoothing": "dpo、robust、simpo：假定被标反的偏好对所占比例（0 = 没有；默认 0）。",
    "task[preference].gamma": "simpo：目标奖励间隔（默认 0.5）。",
    "task[preference].orpo_alpha": "orpo：优势比项相对于 NLL 的权重（论文中的 lambda；默认 0.1）。",
    "task[preference].desirable_weight": "kto：好回答的损失权重（默认 1；好回答较少时调高）。",
    "task[preference].undesirable_weight": "kto：坏回答的损失权重（默认 1；坏回答较少时调高）。",
    "task[grpo].compare_base": "同时用基础模型回答留出的提示词（LoRA 类方法关闭适配器，其他方法重新加载基础模型）。",
    "task[grpo].rewards": (
        "奖励函数，按权重相加：内置的 `exact_answer`（从回答中抽取最后一个数字、`\\boxed{}` 或正则分组，与记录的某一列比较）、"
        "`format`（正则匹配）、`length`（长度惩罚）、`repetition`（重复惩罚），或 Python 函数"
        "（`path/to/file.py:func` 或 `module:func`，调用方式 func(prompts=..., completions=..., **fields)，"
        "每个回答返回一个浮点数），或训练好的奖励模型运行（`{run: runs/rm}`：由奖励模型为提示词加回答打分），"
        "各自可带 `weight`（默认 1）。见 docs/grpo.md。"
    ),
    "task[grpo].reward_errors": (
        "奖励函数抛出异常、返回数量不对、非数值、NaN 或 inf 时：`raise` 用一行信息（奖励名和记录）停止训练；"
        "`zero` 记 0 分并在日志中计数。"
    ),
    "task[grpo].num_generations": "每个提示词采样的回答数（一组）。",
    "task[grpo].max_new_tokens": "回答的最大长度，以 token 计（更长的会被截断）。",
    "task[grpo].temperature": "采样回答时的温度。",
    "task[grpo].top_p": "采样回答时的核采样（1 = 关闭）。",
    "task[grpo].beta": "到参考模型的 KL 项的权重（参考模型为关闭适配器的策略模型，否则为基础模型的冻结副本）；0 = 不使用参考模型（TRL 的默认值）。",
    "task[grpo].epsilon": "重要性比率的裁剪（下界）。",
    "task[grpo].epsilon_high": "重要性比率的上界裁剪（DAPO 的 clip-higher）；默认等于 `epsilon`。",
    "task[grpo].loss_type": (
        "token 损失的平均方式：`grpo`（先对每个回答平均，再对回答平均）、`bnpo`（对批次的 token 平均）、"
        "`dr_grpo`（token 求和 / (回答数 x max_new_tokens)：无长度偏差）、`dapo`（对整个生成批次的 token 平均；TRL 的默认值）。"
    ),
    "task[grpo].scale_rewards": "优势 = 奖励减去组内均值，再除以 `group`（GRPO）或 `batch` 的标准差，`none` 不除（Dr. GRPO）。",
    "task[grpo].num_iterations": "每个生成批次的更新次数（GRPO 的 mu）：大于 1 时复用该批次的回答，并用相对于采样时策略的重要性比率。",
    "task[grpo].mask_truncated": "在 `max_new_tokens` 处被截断（没有结束符）的回答不计入损失（DAPO）。",
    "task[grpo].reference": "KL 项（beta > 0）的参考模型：`adapters`（关闭适配器的策略模型）、`copy`（基础模型的冻结副本）、`auto`（方法有适配器时用 adapters，否则 copy）。",
    "task[grpo].reference_model": "另一个参考模型（beta > 0），分词器须与策略模型相同：已完成的全量训练运行或一个模型。",
    "task[grpo].report_samples": "eval/report.md 中展示其组内最好和最差采样回答的留出提示词个数。",
    "data[grpo].format": (
        "提示词记录格式：`prompt`（`prompt_column` 列为文本或聊天消息列表）、`alpaca`（instruction/input；`output` "
        "作为奖励可读取的字段）、`sharegpt` / `messages`（对话：最后一个助手回合之前的回合是提示词，该回合若记录没有 "
        "`answer` 列则成为字段 `answer`）、`auto`（根据列自动识别）。其他所有列都作为字段传给奖励函数。"
    ),
    "data[grpo].prompt_column": "`prompt` 格式的列名。",
    "data[grpo].conversation_column": "`sharegpt`/`messages` 格式的对话列（默认 conversations / messages）。",
    "data[grpo].template": "聊天模板：`auto` 使用分词器自带的模板（必须有）；填写名称（`chatml`、`llama3`、`alpaca`、`vicuna`）则使用该模板。所用模板随模型保存。",
    "data[grpo].system_prompt": "在训练和对话中，为每个没有系统消息的提示词加上的系统消息。",
    "data[grpo].variables": "提示词和系统提示词中 `{{name}}` 占位符的取值。",
    "data[grpo].roles": "数据中的角色名映射到 `system`/`user`/`assistant`，作为已知角色名（human、user、gpt、assistant、bot、model、system）的补充。",
    "data[grpo].max_prompt_length": "提示词的最大长度（套用模板后，含生成提示），以 token 计；更长的提示词是坏记录（`data.bad_records`）：提示词从不截断。默认：`max_length` 减去 `task.max_new_tokens`。",
    "task[preference].reference": (
        "参考模型的对数概率从哪里来（orpo 和 simpo 之外的所有损失）：`adapters`（关闭方法的适配器后的策略模型："
        "不需要第二份模型；仅适配器类方法）、`copy`（基础模型或 `reference_model` 的冻结副本，整个训练期间占用内存）、"
        "`precompute`（训练前为每个偏好对计算一次，缓存在运行目录的 reference/ 中，--resume 时复用；"
        "训练期间不占模型内存；kto 不支持）、`auto`（默认：方法有适配器时用 `adapters`，否则 `precompute`，kto 用 `copy`）。"
    ),
    "task[preference].reference_model": (
        "参考模型不是本次运行的基础模型时填写：一个已完成的全量训练运行目录、本地模型目录或已缓存的 hub id，"
        "分词器须与策略模型相同。通过 `precompute`（默认）或 `copy` 使用。"
    ),
    "task[preference].sft_weight": (
        "加上该权重乘以被选回答每个 token 的 NLL（RPO）；0 = 关闭。orpo 总是以权重 1 加上这一项（它是 ORPO 的一部分）。"
    ),
    "data[preference].format": (
        "偏好数据格式：`alpaca`（instruction/input/chosen/rejected，LLaMA-Factory）、`sharegpt`"
        "（conversations 加上 chosen/rejected 消息，LLaMA-Factory）、`trl`（prompt/chosen/rejected，"
        "可以是文本或消息列表）、`kto`（未成对：一个提示词或对话、一个回答和布尔值 `label` / `kto_tag`）、"
        "`auto`（根据列自动识别）。"
    ),
    "data[preference].system_prompt": "在训练和对话中，为每个没有系统消息的提示词加上的系统消息。",
    "data[preference,reward].variables": "提示词、回答和系统提示词中 `{{name}}` 占位符的取值。",
    "data[preference,reward].roles": "数据中的角色名映射到 `system`/`user`/`assistant`，作为已知角色名（human、user、gpt、assistant、bot、model、system）的补充。",
    "data[preference].max_prompt_length": (
        "提示词（回答之前经过模板渲染的对话）的最大 token 数；更长的提示词是坏记录（见 `data.bad_records`）："
        "提示词从不截断。默认：`max_length` 的一半。回答会被截断，使提示词加回答不超过 `max_length`；"
        "被截断的偏好对会在 data/report.md 中计数。"
    ),
    "data[reward].format": (
        "偏好对数据格式：`alpaca`（instruction/input/chosen/rejected，LLaMA-Factory）、`sharegpt`"
        "（conversations 加上 chosen/rejected 消息，LLaMA-Factory）、`trl`（prompt/chosen/rejected，"
        "可以是文本或消息列表）、`auto`（根据列自动识别）。可选的 `margin` 列（每个偏好对一个数值，"
        "与 TRL 的奖励数据相同）表示被选回答的奖励至少要比被拒回答高出的间隔。"
        "`kto`（未成对的回答）不适用：奖励模型从成对数据中学习。"
    ),
    "data[reward].template": (
        "对话模板：`auto` 使用分词器自带的模板，分词器没有模板的模型（如 MiniLM 这类编码器）"
        "会把提示词和回答作为文本对打分；指定名称（`chatml`、`llama3`、`alpaca`、`vicuna`）则改用该模板。"
        "使用模板时，打分的文本是经过模板渲染的对话（提示词加回答，包括回合结束 token）；所用模板会随模型一起保存。"
    ),
    "data[reward].system_prompt": "在训练中，以及训练好的运行为提示词和回答打分时，为每个没有系统消息的提示词加上的系统消息（随模型保存）。",
    "data[reward].max_prompt_length": (
        "提示词的最大 token 数（回答之前经过模板渲染的对话；没有对话模板时为带分词器特殊 token 的提示词文本）；"
        "更长的提示词是坏记录（见 `data.bad_records`）：提示词从不截断。默认：`max_length` 的一半。"
        "回答会被截断，使提示词加回答不超过 `max_length`；被截断的偏好对会在 data/report.md 中计数。"
    ),
    "task[reward].center_rewards_coefficient": (
        "在损失上加上该权重乘以 mean((r_chosen + r_rejected)^2)，使奖励保持以 0 为中心"
        "（沿用 TRL 的名称；Eisenstein 等人 2023 年使用 0.01）。null：关闭。"
    ),
    "task[reward].disable_dropout": "训练时关闭模型的 dropout（TRL 的默认做法），使同一偏好对中的被选回答和被拒回答由同一个网络打分。",
    "task[reward].report_pairs": "在 eval/report.md 中展示的留出偏好对数量，并列出每个回答的奖励。",
    "data[causal_lm].format": (
        "SFT 数据格式：`alpaca`（instruction/input/output，可选 system/history），"
        "`sharegpt`（由 from/value 组成的 conversations），"
        "`messages`（OpenAI 风格的 role/content 列表），"
        "`text`（在 `text_column` 上进行纯文本增量预训练），`auto`（根据列自动识别）。"
    ),
    "data[causal_lm,preference].template": (
        "对话模板（SFT）：`auto` 使用分词器自带的模板，要求分词器带有模板；指定名称（`chatml`、`llama3`、"
        "`alpaca`、`vicuna`）则改用该模板。所用模板会随模型一起保存。"
    ),
    "data[causal_lm].system_prompt": (
        "为每个没有系统消息的对话添加的系统消息，训练和对话时均生效（随模型保存）。null："
        "采用模板自身的行为（部分模板会插入默认的系统提示词）。"
    ),
    "data[causal_lm].variables": "SFT 数据和系统提示词中 `{{name}}` 占位符的取值（例如 `builtin:identity` 的新名称和作者）。",
    "data[causal_lm].train_on_prompt": "SFT：提示词部分的 token 也计算损失。默认：只在 assistant 轮次上计算（每轮都包含其结束 token）。",
    "data[causal_lm].overflow": (
        "长度超过 `max_length` 的 SFT 样本：`truncate` 在 max_length 处截断，"
        "`drop` 将其丢弃。两种情况都会在日志和运行目录的 eval/metrics.json 中计数。"
    ),
    "data[causal_lm].packing": (
        "SFT：将多个样本打包（packing）到每行最多 `max_length` 个 token 中；"
        "注意力和位置编码在每个样本处重新开始，因此样本之间互不可见。"
    ),
    "data[causal_lm].conversation_column": "`sharegpt`/`messages` 格式中存放对话的列（默认分别为 `conversations` / `messages`）。",
    "data[causal_lm].roles": (
        "将数据中的角色名映射到 `system`/`user`/`assistant`，作为已知角色名（human、user、"
        "gpt、assistant、bot、model、system）的补充，"
        "例如 {customer: user, agent: assistant}。"
    ),
    "task[classification,image_classification].labels": "按 id 顺序排列的标签名称。默认：从训练数据推断（排序；数字按数值大小排序）。",
    "data[classification,multitask].text_pair_column": "可选的第二个文本列（句子对）。",
    "data[classification,image_classification].label_column": "存放标签的列（字符串或整数）。",
    "data[classification].clean.dedup": (
        "查找重复项的方式：`exact`（经 NFKC、大小写和空白归一化后完全相同），`near`（在 exact 基础上，"
        "再加上 MinHash/LSH 检测出的相似度高于 `near_threshold` 的近似重复），或 `none`。"
        "在训练集内部以及各划分之间生效。"
    ),
    "data[classification].clean.near_threshold": "字符 4-gram shingle 的 Jaccard 相似度阈值，高于该值的两段文本视为近似重复。",
    "data[classification].clean.within_train": "训练集内部的重复项：`drop` 保留每组（按标签）中的第一条，`report` 只计数。",
    "data[classification].clean.cross_split": (
        "与验证集或测试集中某行重复的训练行（数据泄漏）：`drop` 将其从训练集中删除，`report` 只列出。"
        "验证集和测试集永远不会被修改。"
    ),
    "data[classification].clean.conflicts": (
        "训练集中标签不一致的重复组：`report` 每个标签保留一行，`drop` 删除整组，"
        "`majority` 保留一行并使用出现次数最多的标签（票数相同则删除）。"
    ),
    "data[classification].clean.label_noise": (
        "训练集上的标签错误检测（基于检测器 `noise_features` 的折外概率进行置信学习）："
        "`report` 列出可疑样本，`drop` 将其删除，`relabel` 将其改为预测的标签。"
    ),
    "data[classification].clean.noise_features": (
        "标签噪声检测器：基于 `tfidf`（词或字符 n-gram；耗时几秒）的逻辑回归，"
        "基于 `model`（`model.name` 的平均池化句向量，冻结；需对训练集做一次前向传播，"
        "对改写过的文本或短文本效果更好）的逻辑回归，或 `both`（两个模型的概率取平均：召回率相近而误报更少，"
        "代价与 `model` 相同）；或 `finetune`：用本次运行自身的模型、"
        "方法和训练设置在每一折上微调一次（额外训练 `noise_folds` 次：最准确的检测器，也远比其他方式慢）。"
    ),
    "data[classification].clean.noise_threshold": "`drop`/`relabel` 只作用于建议标签的折外概率不低于该值的可疑样本。",
    "data[classification].clean.noise_folds": "计算折外概率所用的交叉验证折数。",
    "data[classification].augment.enabled": "为训练样本添加增强副本（验证集和测试集永远不做增强）。",
    "data[classification].augment.num_per_example": "每个训练样本的增强副本数；小数部分表示为相应比例的样本再添加一份副本（1.5：每个样本得到一份，其中一半得到两份）。",
    "data[classification].augment.per_class": "为指定标签单独设置每个样本的副本数，覆盖 `num_per_example`（用于补充稀有类别）。",
    "data[classification].augment.ops": (
        "增强操作；每份副本随机选用其中一种。"
        "`back_translation` 需要设置 `augment.back_translation.to_model` 和 `back_model`。"
    ),
    "data[classification].augment.synonym_rate": "被替换为同义词的词所占的比例（WordNet / Cilin）。",
    "data[classification].augment.insert_rate": "在随机位置插入其同义词的词所占的比例。",
    "data[classification].augment.swap_rate": "与另一个词交换位置的词所占的比例。",
    "data[classification].augment.delete_rate": "每个词被删除的概率。",
    "data[classification].augment.language": "文本的语言：`auto` 根据文字逐个样本检测（含汉字为 zh，否则为 en）。",
    "data[classification].augment.protect": "永远不会被替换、移动或删除的词。",
    "data[classification].augment.protect_entities": "从不修改句子中间的数字或首字母大写的词（它们很可能是人名和实体）。",
    "data[classification].augment.protect_negations": "从不修改、移动或删除否定词（not、never、isn't、不、没有……）：丢失一个否定词可能会使标签反转。",
    "data[classification].augment.synonym_senses": (
        "英文同义词取自一个词在每种词性下最常用的这么多个 WordNet 词义；0 表示采用全部词义（EDA 论文的做法，"
        "也会得到罕见的词义，例如 great -> 'with child'）。"
    ),
    "data[classification].augment.seed": "数据增强的随机种子；默认使用 `train.seed`。取值为 0 到 4294967295 之间的整数。",
    "data[classification].augment.back_translation.to_model": "本地 seq2seq 翻译模型目录（源语言 -> 中间语言），例如 Marian en-de 模型。",
    "data[classification].augment.back_translation.back_model": "本地 seq2seq 模型目录（中间语言 -> 源语言）。",
    "data[classification].augment.back_translation.batch_size": "每个翻译批次的文本数。",
    "data[classification].augment.back_translation.max_length": "生成译文的最大长度，以 token 计。",
    "data[classification].augment.back_translation.num_beams": "束搜索宽度（1 = 贪心解码，最快）。",
    "data[classification].augment.back_translation.sample": "使用采样（top-k 50）代替贪心/束搜索，以得到更多样的改写。",
    "data[classification].balance.class_weights": "类别加权损失：`balanced`（按最终训练集中类别频率的倒数加权）、标签 -> 权重的映射，或 `none`。",
    "data[classification].balance.sampling": (
        "对训练集重采样：`oversample` 重复稀有类别的行，`undersample` 丢弃高频类别的行，"
        "`augment` 用增强副本补充稀有类别（使用 data.augment 的操作和比例）。"
    ),
    "data[classification].balance.ratio": (
        "每个类别相对于最大类别的目标规模（over/augment），"
        "或相对于最小类别的下限（undersample 时每个类别最多保留 smallest/ratio 行）。"
    ),
    "data[image_classification].image_column": "存放图像路径的列（表格和 `datasets` 目录）。",
    "data[image_classification].limit_per_class": "每个类别最多保留这么多训练图像（按种子抽样）：一个设置即可构造低资源数据集。",
    "data[image_classification].eval_limit_per_class": "每个类别最多保留这么多验证和测试图像（加快评估）。",
    "data[image_classification].image_size": "正方形模型输入的边长（像素）。默认：模型自身的设置（其 preprocessor_config.json）。",
    "data[image_classification].augment.random_resized_crop": (
        "训练图像的随机缩放裁剪：裁剪保留图像面积的 [最小, 最大] 比例。null：不做随机裁剪"
        "（训练图像与评估图像一样只做缩放）。"
    ),
    "data[image_classification].augment.flip": "随机水平翻转训练图像（数字、文字等图像应关闭）。",
    "data[image_classification].augment.randaugment": "对训练图像使用 RandAugment（{num_ops, magnitude}）；null：关闭。",
    "data[image_classification].cutmix": (
        "对训练批次使用 CutMix（{alpha, prob}）：每张图像的一个矩形区域被相邻图像的对应区域替换，"
        "目标按面积混合两个标签。null：关闭。"
    ),
    "data[image_classification].mixup": (
        "对训练批次使用 MixUp（{alpha, prob}）：图像和标签按权重 lambda ~ Beta(alpha, alpha) 混合。"
        "同时启用 cutmix 时，每个批次只使用其中一种。null：关闭。"
    ),
    "data[image_classification].label_smoothing": "训练目标的标签平滑系数。",
    "task[multitask].tasks": (
        "按名称定义的子任务（名称由字母、数字、下划线组成）："
        "每个为 `{label_column, problem, labels, weight, metric, train, validation, test}`。"
    ),
    "task[multitask].weighting": (
        "`fixed`：损失为 sum(weight_i * loss_i)；`uncertainty`："
        "学习每个任务的权重（Kendall et al. 2018），"
        "sum(weight_i * (exp(-s_i) * loss_i + s_i / 2))。"
    ),
    "task[multitask].sampling": (
        "批次如何混合来自不同数据文件的行（带有自己 `train` 的子任务）：`proportional` 按文件大小成比例，"
        "`temperature`（sizes^(1/sampling_temperature)：小数据源被更频繁地采样）"
        "或 `round_robin`（均等份额）。只有一个文件时：普通打乱。"
    ),
    "task[multitask].sampling_temperature": "`sampling: temperature` 中的 T。",
    "task[multitask].pooling": (
        "各任务头读取的向量：真实 token 的平均（`mean`）、第一个 token（`first`，即 [CLS]）"
        "或最后一个真实 token（`last`）。`auto`：解码器用 last，编码器用 mean（使用 [CLS] 时，"
        "一个简单的子任务可能让其他子任务停留在随机猜测水平）。"
    ),
    "method[adapter].placement": (
        "`houlsby`：在每个块的注意力输出之后和前馈层之后各加一个适配器；`pfeiffer`：只加在前馈层之后（参数量减半，"
        "准确率通常相当）。"
    ),
    "method[adapter].bottleneck_size": "适配器瓶颈层的宽度。与 reduction_factor 二选一。",
    "method[adapter].reduction_factor": "瓶颈宽度 = 隐藏层大小 / 该因子（未指定 bottleneck_size 时默认为 16）。",
    "method[adapter].activation": "瓶颈层中的非线性激活函数。",
    "method[adapter].dropout": "适配器内部、上投影之前的 dropout。",
    "method[freeze,full].layerwise_lr_decay": (
        "逐层学习率衰减：最顶层的块使用设定的学习率，往下每个块为其上一块的学习率乘以 decay，"
        "嵌入层低于最底部的块（例如 0.9）。null：统一学习率。"
    ),
    "method[freeze,full].head_lr": "任务头（例如 `classifier`）的学习率；默认：使用本次运行的学习率。",
    "method[freeze,full].embeddings_lr": "嵌入层的学习率；默认：由逐层衰减链得出（或使用本次运行的学习率）。",
    "method[freeze,full].unfreeze_schedule": (
        "逐步解冻（ULMFiT），"
        "例如 `{start: head, every_epochs: 1, group_size: 1}`：先只训练任务头，"
        "每隔一个间隔从顶部再解冻一组块。"
    ),
    "method[freeze].trainable_layers": (
        "训练最顶部的 N 个 Transformer 块（0：只训练任务头）。"
        "既未设置 `frozen_layers` 也未设置 `trainable_modules` 时默认为 2。"
    ),
    "method[freeze].frozen_layers": "另一种方式：冻结最底部的 N 个块，训练其上的所有块。",
    "method[freeze].trainable_modules": (
        "另一种方式：在参数名中搜索的正则表达式（例如 `attention` 或 `layer\\.5\\.`）；"
        "匹配的参数参与训练，除任务头外的其他参数全部冻结。"
    ),
    "method[freeze].train_embeddings": "同时训练嵌入层（默认冻结）。",
    "method[full].freeze_embeddings": "保持嵌入层固定（节省显存，通常不影响效果）。",
    "method[ia3].target_modules": (
        "激活值乘以可学习缩放向量的层：模块名后缀列表、一个正则表达式，或 `all-linear`。null："
        "由 PEFT 根据模型架构选择（键、值和前馈层输出）。"
    ),
    "method[ia3].feedforward_modules": (
        "target_modules 中哪些是前馈层（对其输入而非输出进行缩放）。null：由 PEFT 根据模型架构选择；"
        "两者都设置时必须是 target_modules 的子集。"
    ),
    "method[lora,qlora].r": "低秩更新的秩。",
    "method[lora,qlora].alpha": "缩放系数的分子（更新按 alpha/r 缩放）；默认为 2*r。",
    "method[lora,qlora].dropout": "LoRA 输入上的 dropout。",
    "method[lora,qlora].target_modules": (
        "应用 LoRA 的层：`all-linear`（除任务头外的所有线性层；在没有线性层的卷积网络中，为所有非分组卷积）、"
        "模块名后缀列表（例如 [query, value]），或一个与完整模块名匹配的正则表达式。"
    ),
    "method[lora,qlora].use_rslora": "秩稳定的缩放 alpha/sqrt(r)（rsLoRA）。",
    "method[lora,qlora].use_dora": "权重分解的 LoRA（DoRA）：分别学习幅度和方向。",
    "method[lora,qlora].init": (
        "LoRA 矩阵的初始化方式，与 PEFT 提供的选项一致（`default`：B=0，A 为 Kaiming 均匀初始化；"
        "`gaussian`：A 为高斯初始化；`pissa` / `olora`：分别基于基础权重的主方向 / QR 分解，"
        "此时会改动基础权重；仅适用于全精度基础模型）。"
    ),
    "method[lora,qlora].bias": "哪些偏置参与训练。",
    "method[lora,qlora].lora_plus_ratio": "LoRA+：B 矩阵的学习率 = 该比例 x 学习率（论文采用 16）。",
    "method[lora].quantization": (
        "QLoRA：用 bitsandbytes 加载量化后的冻结基础模型（`nf4` 为 QLoRA 的选择；`fp4`；"
        "`int8`）。任务头保持全精度。null：全精度基础模型。"
    ),
    "method[lora,qlora].double_quant": "仅 4-bit：对量化常数也进行量化（每个权重约节省 0.4 bit）。",
    "method[lora,qlora].compute_dtype": "仅 4-bit：矩阵乘法的 dtype（`auto`：支持 bfloat16 的 GPU 上为 bfloat16，否则为 float32）。",
    "method[prefix].num_virtual_tokens": "添加在每个注意力层的键和值之前的可学习前缀的长度。",
    "method[prefix].projection": "训练时通过两层 MLP 对前缀进行重参数化（更稳定，参数更多）。",
    "method[prefix].projection_hidden_size": "该 MLP 的隐藏层宽度；默认：模型的隐藏层大小。",
    "method[prompt].num_virtual_tokens": "可学习软提示的长度（token 数）。",
    "method[prompt].init_text": (
        "用这段文本的嵌入初始化软提示（重复或截断到 num_virtual_tokens），"
        "例如 'Classify the sentiment of this review:'。null：随机初始化。"
    ),
    "method[qlora].quantization": "冻结基础模型的量化方式（`qlora` 默认为 `nf4`；`fp4`；`int8`；null：全精度）。",
}


def paths_of(entry: str) -> list[str]:
    """The field paths an entry of HELP_ZH names: `method[lora,qlora].r` -> `method[lora].r`, `method[qlora].r`."""
    head, bracket, rest = entry.partition("[")
    if not bracket:
        return [entry]
    names, _, tail = rest.partition("]")
    return [f"{head}[{name.strip()}]{tail}" for name in names.split(",")]


#: field path -> its Chinese help text (HELP_ZH with the shared entries spelt out)
ZH_BY_PATH: dict[str, str] = {path: zh for entry, zh in HELP_ZH.items() for path in paths_of(entry)}


def help_text(spec: FieldSpec, lang: str) -> str:
    """A field's help text: the schema's description, in Chinese for `zh` (English where it has no translation)."""
    return ZH_BY_PATH.get(spec.path, spec.description) if lang == "zh" else spec.description
