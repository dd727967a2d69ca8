"""Which part of a model every parameter belongs to (head, embeddings, a transformer block, or the top), and the
optimizer groups that follow from it (layer-wise learning-rate decay). Shared by `full`, `freeze` (through
`layered`) and progressive unfreezing (`unfreeze`); this module imports neither.

The blocks and the embeddings are found by `tuneforge.models.blocks` (structurally, as everywhere else).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from tuneforge.errors import MethodError, ModelError
from tuneforge.methods.base import is_no_decay
from tuneforge.models.blocks import find_blocks, find_embeddings

#: parameter categories; a block's category is its index
HEAD, TOP, EMBEDDINGS = "head", "top", "embeddings"


@dataclass
class Layout:
    """The parts of one model, as module names (relative to the model it was built from).

    blocks      transformer blocks, bottom (next to the embeddings) to top
    embeddings  input-side modules below the first block (token/position embeddings and their norm)
    head        the task's new modules (always trained), e.g. `classifier`
    top         everything else above the blocks (final norm, pooler, an untied lm_head)
    """

    blocks: list[str]
    embeddings: list[str]
    head: list[str]
    #: id(parameter) -> HEAD | TOP | EMBEDDINGS | block index
    where: dict[int, object] = field(default_factory=dict)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def params_in(self, model: nn.Module, part) -> list[nn.Parameter]:
        """Parameters of `part` (HEAD, TOP, EMBEDDINGS or a block index), each once."""
        return [p for p in unique_parameters(model) if self.where.get(id(p)) == part]


def unique_parameters(model: nn.Module) -> list[nn.Parameter]:
    seen, out = set(), []
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def describe(model: nn.Module, head_modules: list[str] | tuple = ()) -> Layout:
    """Map every parameter of `model` to head, embeddings, a block index, or top.

    Args:
        model: a transformers model (not yet wrapped by PEFT).
        head_modules: names of the task's new modules (MethodContext.head_modules).
    Raises MethodError when no transformer blocks are found."""
    try:
        blocks_name, blocks = find_blocks(model)
    except ModelError:
        raise MethodError(
            f"cannot find the transformer blocks of {type(model).__name__} "
            f"(no list of repeated layers); use method.trainable_modules or method.name=lora"
        ) from None
    emb = find_embeddings(model, blocks_name)
    modules = dict(model.named_modules())
    where: dict[int, object] = {}
    # the head wins over everything (a head tied to the embeddings still trains as the head)
    for h in head_modules:
        for p in modules[h].parameters():
            where.setdefault(id(p), HEAD)
    for i, block in enumerate(blocks):
        for p in block.parameters():
            where.setdefault(id(p), i)
    for e in emb:
        for p in modules[e].parameters():
            where.setdefault(id(p), EMBEDDINGS)
    for p in model.parameters():
        where.setdefault(id(p), TOP)
    return Layout(
        blocks=[f"{blocks_name}.{i}" for i in range(len(blocks))], embeddings=emb, head=list(head_modules), where=where
    )


def lr_scale(layout: Layout, part, decay: float | None) -> float:
    """The learning-rate factor of a part: the top block and everything above it x1, each block further
    down x decay more, the embeddings one step below the bottom block (decay ** num_blocks)."""
    if not decay or decay == 1.0 or part in (HEAD, TOP):
        return 1.0
    depth = layout.num_blocks if part == EMBEDDINGS else layout.num_blocks - 1 - part
    return decay**depth


def layerwise_param_groups(
    model: nn.Module,
    layout: Layout,
    trainable: list[tuple[str, nn.Parameter]],
    lr: float,
    weight_decay: float,
    decay: float | None = None,
    head_lr: float | None = None,
    embeddings_lr: float | None = None,
) -> list[dict]:
    """Optimizer groups with one learning rate per part and no weight decay on biases and norms.

    Args:
        model, layout: the model and its `describe` layout.
        trainable: the (name, parameter) pairs the optimizer holds.
        lr, weight_decay: the run's peak learning rate and weight decay.
        decay: layer-wise decay factor (None or 1: one rate for all).
        head_lr, embeddings_lr: explicit rates for the head / the embeddings (override the decay chain).
    Each group carries a `name` (for example `block.3` or `head/no_decay`) so logs and tests can find it."""
    buckets: dict[tuple, list] = {}
    order: list[tuple] = []
    for name, p in trainable:
        part = layout.where.get(id(p), TOP)
        if part == HEAD and head_lr is not None:
            rate = head_lr
        elif part == EMBEDDINGS and embeddings_lr is not None:
            rate = embeddings_lr
        else:
            rate = lr * lr_scale(layout, part, decay)
        nd = is_no_decay(name, p)
        key = (part, nd)
        if key not in buckets:
            buckets[key] = []
            order.append((key, rate))
        buckets[key].append(p)
    groups = []
    for (part, nd), rate in order:
        label = f"block.{part}" if isinstance(part, int) else part
        groups.append(
            {
                "params": buckets[(part, nd)],
                "lr": rate,
                "weight_decay": 0.0 if nd else weight_decay,
                "name": f"{label}/no_decay" if nd else label,
            }
        )
    return groups
