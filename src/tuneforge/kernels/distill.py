"""Knowledge-distillation losses: a student learns a teacher's output distribution (issue 18).

    classification_kd_loss  - Hinton et al. (2015) for sequence classification: a temperature-softened KL
                              to the teacher plus cross-entropy on the rows that have a gold label
    token_kd_loss           - token-level distillation for causal LMs from the hidden states and the two
                              LM heads, chunk by chunk, without the (tokens x vocabulary) logits
    logits_kd_loss          - the same loss from full logits: the reference token_kd_loss is tested against,
                              and the simple path when the logits are small

Conventions shared by all three
-------------------------------
* Temperature T > 0 softens both distributions: p_t = softmax(teacher_logits / T), p_s = softmax(student_logits / T).
  Every divergence is multiplied by T**2 so the gradient's scale does not shrink with T (Hinton et al.).
* Divergences are in nats and computed from log-probabilities (`log_softmax`), never from `log(softmax)`.
  A probability that is exactly 0 (a -inf logit) contributes 0 where it multiplies its own log (0 * log 0 = 0);
  where a distribution puts mass on a class the other gives probability 0, the divergence is +inf, as it is.
* `forward_kl` = KL(p_t || p_s) = sum_c p_t (log p_t - log p_s): mass-covering, the classic KD loss.
  `reverse_kl` = KL(p_s || p_t) = sum_c p_s (log p_s - log p_t): mode-seeking (MiniLLM).
  `jsd` = generalized Jensen-Shannon with weight beta in (0, 1) on the teacher:
        m = beta * p_t + (1 - beta) * p_s,   JSD_beta = beta * KL(p_t || m) + (1 - beta) * KL(p_s || m)
  (the convention of GKD, Agarwal et al. 2024, and TRL's `generalized_jsd_loss` for 0 < beta < 1; it is NOT
  divided by beta * (1 - beta)). beta = 0.5 is the symmetric Jensen-Shannon divergence, bounded by log 2 * T**2.
  At beta = 0 or 1 this expression is identically 0, so those values are refused: use forward_kl / reverse_kl.
* Teacher inputs are detached (no gradient reaches the teacher) and cast to the student's compute dtype.
  The math runs in float32 (float64 when the student's inputs are float64); the loss is returned in that dtype.
* `labels` use -100 (`IGNORE_INDEX`) for "no label here", as transformers and `chunked_ce` do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


# ---- validation ------------------------------------------------------------------------------------------
def _check_temperature(temperature) -> float:
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def _check_divergence(divergence: str, beta) -> float:
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}: expected one of {', '.join(DIVERGENCES)}")
    b = float(beta)
    if divergence == "jsd" and not (0.0 < b < 1.0):
        raise ValueError(
            f"jsd needs 0 < beta < 1, got {beta!r} (at 0 or 1 the generalized JSD is identically 0; "
            "use divergence forward_kl or reverse_kl)"
        )
    return b


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half/bfloat16/float32 inputs, float64 for float64 ones."""
    return torch.promote_types(dtype, torch.float32)


# ---- per-row divergences in log space ---------------------------------------------------------------------
def _xdiff(p: Tensor, log_p: Tensor, log_q: Tensor) -> Tensor:
    """Per-row sum_c p (log_p - log_q), with terms where p == 0 exactly set to 0 (also when log_q = -inf)."""
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros((), dtype=p.dtype, device=p.device)).sum(-1)


def _log_mixture(log_pt: Tensor, log_ps: Tensor, beta: float) -> Tensor:
    """log(beta * p_t + (1 - beta) * p_s), computed stably."""
    return torch.logaddexp(log_pt + math.log(beta), log_ps + math.log1p(-beta))


def _divergence_rows(log_ps: Tensor, log_pt: Tensor, divergence: str, beta: float) -> Tensor:
    """The divergence of each row (last dim = classes), from the student's and teacher's log-probabilities.
    Differentiable by autograd (used by the reference paths)."""
    if divergence == "forward_kl":
        return _xdiff(log_pt.exp(), log_pt, log_ps)
    if divergence == "reverse_kl":
        return _xdiff(log_ps.exp(), log_ps, log_pt)
    log_m = _log_mixture(log_pt, log_ps, beta)
    return beta * _xdiff(log_pt.exp(), log_pt, log_m) + (1.0 - beta) * _xdiff(log_ps.exp(), log_ps, log_m)


# ---- 1. classification --------------------------------------------------------------------------------------
def classification_kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float, alpha: float
) -> Tensor:
    """Distillation loss for classification (Hinton et al., 2015):

        loss = alpha * T**2 * mean_{all rows} KL(softmax(t / T) || softmax(s / T))
             + (1 - alpha) * mean_{labelled rows} CE(s, y)

    Args:
        student_logits: (batch, classes) the student's logits (gradients flow to them).
        teacher_logits: (batch, classes) the teacher's logits, typically cached; detached and cast to the
            student's compute dtype (float16 / float64 caches are fine). A -inf logit is a probability of exactly
            0 and contributes 0 to the KL.
        labels: (batch,) int64 class ids, -100 for rows without a gold label (texts only the teacher labels).
            They take part in the KL term (every row does) but not in the cross-entropy.
        temperature: T > 0. It softens the KL term only; the cross-entropy uses the raw logits (T = 1).
        alpha: weight of the soft term, in [0, 1]. alpha = 0 returns exactly
            `F.cross_entropy(student_logits, labels, ignore_index=-100)` (in the compute dtype); alpha = 1 returns
            only the soft term (labels are then not read).
    The cross-entropy term is 0 (not NaN) when no row of the batch is labelled: the loss is then alpha times the
    soft term. Returns a float32 scalar (float64 for float64 student logits).
    Raises ValueError on bad shapes, alpha outside [0, 1], temperature <= 0, or a label outside [0, classes)
    other than -100."""
    a = float(alpha)
    if not (0.0 <= a <= 1.0):
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    t = _check_temperature(temperature)
    if student_logits.dim() != 2:
        raise ValueError(f"student_logits must be (batch, classes), got {tuple(student_logits.shape)}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits {tuple(teacher_logits.shape)} and student_logits "
            f"{tuple(student_logits.shape)} differ in shape"
        )
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match batch size {student_logits.shape[0]}")

    acc = _acc_dtype(student_logits.dtype)
    s = student_logits.to(acc)
    terms = []
    if a > 0.0:
        teacher = teacher_logits.detach().to(device=s.device, dtype=acc)
        kl = _divergence_rows(F.log_softmax(s / t, dim=-1), F.log_softmax(teacher / t, dim=-1), "forward_kl", 0.5)
        soft = (t * t) * kl.mean()
        if a == 1.0:
            return soft
        terms.append(a * soft)
    y = labels.to(device=s.device, dtype=torch.long)
    labelled = y != IGNORE_INDEX
    n_classes = s.shape[1]
    if bool(((y < 0) | (y >= n_classes))[labelled].any()):
        raise ValueError(f"labels must be class ids in [0, {n_classes}) or {IGNORE_INDEX}")
    if bool(labelled.any()):
        ce = F.cross_entropy(s, y, ignore_index=IGNORE_INDEX)
    else:  # every row unlabelled: the mean over no rows is taken as 0; keeps the graph (and grads of 0)
        ce = F.cross_entropy(s, y, ignore_index=IGNORE_INDEX, reduction="sum")
    if a == 0.0:
        return ce
    terms.append((1.0 - a) * ce)
    return terms[0] + terms[1]


# ---- 3. the reference on full logits --------------------------------------------------------------------------
def _check_labels(labels: Tensor, lead: torch.Size, what: str) -> None:
    if labels.dim() != 2 or labels.shape != lead:
        raise ValueError(f"labels {tuple(labels.shape)} must be (batch, seq) matching {what} {tuple(lead)}")


def _divisor(n_trained: Tensor, num_items_in_batch, device) -> Tensor:
    if num_items_in_batch is None:
        return n_trained.clamp(min=1)
    return torch.as_tensor(num_items_in_batch, device=device)


def logits_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    divergence: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    *,
    num_items_in_batch=None,
) -> Tensor:
    """Token-level distillation from full logits; exactly the semantics of `token_kd_loss`, by plain autograd.

    Args:
        student_logits: (batch, seq, vocab); teacher_logits: (batch, seq, vocab), detached.
        labels: (batch, seq) with -100 where the token is not trained. As in a causal LM loss, the logits at
            position i predict token i + 1, so position i is distilled iff labels[:, i + 1] != -100 (the last
            position never is). The label values themselves are not used, only the mask.
        divergence, temperature, beta: see the module docstring.
        num_items_in_batch: divide the summed loss by this instead of the number of trained positions (the
            Trainer's count over all gradient-accumulation micro-batches).
    Returns T**2 * mean over trained positions of the divergence (0, with a graph, when none is trained);
    float32 (float64 for float64 student logits). Memory: the full (positions x vocab) logits and their
    softmaxes; use `token_kd_loss` for real vocabularies."""
    t = _check_temperature(temperature)
    b = _check_divergence(divergence, beta)
    if student_logits.dim() != 3:
        raise ValueError(f"student_logits must be (batch, seq, vocab), got {tuple(student_logits.shape)}")
    if teacher_logits.dim() != 3 or teacher_logits.shape[:2] != student_logits.shape[:2]:
        raise ValueError(
            f"teacher_logits {tuple(teacher_logits.shape)} do not match student_logits {tuple(student_logits.shape)}"
        )
    if teacher_logits.shape[-1] != student_logits.shape[-1]:
        raise ValueError(
            f"teacher vocabulary size {teacher_logits.shape[-1]} != student vocabulary size "
            f"{student_logits.shape[-1]}: distillation needs a shared vocabulary"
        )
    _check_labels(labels, student_logits.shape[:2], "logits")
    acc = _acc_dtype(student_logits.dtype)
    mask = labels[:, 1:].to(student_logits.device) != IGNORE_INDEX
    s = student_logits[:, :-1][mask].to(acc)
    teacher = teacher_logits.detach()[:, :-1].to(student_logits.device)[mask].to(acc)
    rows = _divergence_rows(F.log_softmax(s / t, dim=-1), F.log_softmax(teacher / t, dim=-1), divergence, b)
    return (t * t) * rows.sum() / _divisor(mask.sum(), num_items_in_batch, s.device).to(acc)


# ---- 2. chunked, from hidden states ---------------------------------------------------------------------------
def _project(h: Tensor, w: Tensor, bias: Tensor | None, acc: torch.dtype, temperature: float) -> Tensor:
    z = h @ w.t()
    if bias is not None:
        z = z + bias
    return z.to(acc).div_(temperature)


class _LinearKD(torch.autograd.Function):
    """Sum over rows of T**2 * D(p_t, p_s) / divisor, where p_s = softmax((hs @ ws.T + bs) / T) and
    p_t = softmax((ht @ wt.T + bt) / T), one chunk of rows at a time.

    As in `chunked_ce`, the gradients are computed in the forward pass while the chunk's logits exist, and
    stashed: recomputing in backward would redo both the student's and the (larger) teacher's
    (chunk x hidden x vocabulary) products. Backward multiplies the stash by the incoming scalar gradient,
    which is exact for any use of the returned scalar (not twice-differentiable).

    With s = z_s / T, a = log p_s, b = log p_t, the gradient of T**2 * D with respect to z_s is T * dD/ds, and
        forward_kl: dD/ds = p_s - p_t
        reverse_kl: dD/ds = p_s * (a - b - KL(p_s || p_t))
        jsd:        dD/ds = (1 - beta) * p_s * (a - log m - KL(p_s || m))
    (for jsd, dD/dp_s = (1 - beta) (log p_s - log m): the terms from m's dependence on p_s cancel)."""

    @staticmethod
    def forward(ctx, sh, sw, sb, th, tw, tb, divisor, chunk, temperature, divergence, beta, need_dh, need_dw, need_db):
        n = sh.shape[0]
        acc = _acc_dtype(sh.dtype)
        zero = torch.zeros((), dtype=acc, device=sh.device)
        loss_sum = zero.clone()
        need_grad = need_dh or need_dw or need_db
        dh = torch.empty_like(sh) if need_dh else None
        dw = torch.zeros_like(sw) if need_dw else None
        db = torch.zeros(sw.shape[0], dtype=acc, device=sh.device) if need_db else None
        scale = (temperature / divisor.to(acc)) if need_grad else None  # T**2 * (1/T) from s = z / T
        for start in range(0, n, chunk):
            h = sh[start : start + chunk]
            a = F.log_softmax(_project(h, sw, sb, acc, temperature), dim=-1)
            b = F.log_softmax(_project(th[start : start + chunk], tw, tb, acc, temperature), dim=-1)
            ps = a.exp()
            if divergence == "forward_kl":
                pt = b.exp()
                loss_sum += _xdiff(pt, b, a).sum()
                g = ps.sub_(pt) if need_grad else None
            elif divergence == "reverse_kl":
                rows = _xdiff(ps, a, b)
                loss_sum += rows.sum()
                if need_grad:
                    # p_s = 0 exactly contributes nothing (also where a - b is -inf - -inf)
                    g = torch.where(ps > 0, ps * (a - b - rows.unsqueeze(1)), zero)
            else:
                log_m = _log_mixture(b, a, beta)
                ks = _xdiff(ps, a, log_m)
                loss_sum += (beta * _xdiff(b.exp(), b, log_m) + (1.0 - beta) * ks).sum()
                if need_grad:
                    g = torch.where(ps > 0, ps * (a - log_m - ks.unsqueeze(1)), zero).mul_(1.0 - beta)
            del a, b
            if not need_grad:
                continue
            g = g.mul_(scale)
            if need_db:
                db += g.sum(0)
            g = g.to(sh.dtype)
            if need_dh:
                torch.mm(g, sw, out=dh[start : start + chunk])
            if need_dw:
                dw.addmm_(g.t(), h)
            del g
        ctx.save_for_backward(dh, dw, db)
        ctx.bias_dtype = sb.dtype if sb is not None else None
        return (temperature * temperature) * loss_sum / divisor.to(acc)

    @staticmethod
    def backward(ctx, grad_loss):
        dh, dw, db = ctx.saved_tensors
        dh = dh * grad_loss.to(dh.dtype) if dh is not None else None
        dw = dw * grad_loss.to(dw.dtype) if dw is not None else None
        db = (db * grad_loss.to(db.dtype)).to(ctx.bias_dtype) if db is not None else None
        return dh, dw, db, None, None, None, None, None, None, None, None, None, None, None


def token_kd_loss(
    student_hidden: Tensor,
    student_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_weight: Tensor,
    labels: Tensor,
    divergence: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    chunk_size: int = 1024,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    *,
    num_items_in_batch=None,
) -> Tensor:
    """Token-level distillation of a causal LM on its trained tokens, from the final hidden states and LM heads,
    without materialising the (positions x vocabulary) logits.

        loss = T**2 * mean over trained positions i of D(softmax(teacher_logits_i / T), softmax(student_logits_i / T))

    with student_logits = student_hidden @ student_weight.T (+ student_bias) and likewise for the teacher; equal
    to `logits_kd_loss` on those logits (up to float rounding).

    Args:
        student_hidden: (batch, seq, hidden_s), the student's final hidden states (after its last norm).
        student_weight: (vocab, hidden_s), the student's LM head. Cast to student_hidden's dtype (differentiably).
        teacher_hidden: (batch, seq, hidden_t); teacher_weight: (vocab, hidden_t). Detached: no gradient reaches
            the teacher. hidden_t may differ from hidden_s; the vocabularies must be the same.
        labels: (batch, seq) with -100 where a token is not trained. The hidden state at position i predicts
            token i + 1, so position i is distilled iff labels[:, i + 1] != -100 (shift as in the causal LM loss;
            the last position never is). Only the mask is used, not the label values.
        divergence: "forward_kl" | "reverse_kl" | "jsd" (see the module docstring for the exact formulas).
        temperature: T > 0; beta: the teacher's weight in jsd, 0 < beta < 1 (ignored by the KLs).
        chunk_size: trained positions per chunk. Peak extra memory is a few (chunk_size x vocab) float32 buffers
            (student and teacher log-probs and the gradient), plus the selected rows' hidden states.
        student_bias / teacher_bias: optional (vocab,) LM-head biases.
        num_items_in_batch: divide the summed loss by this instead of the number of trained positions (the
            Trainer's count of trained tokens over all gradient-accumulation micro-batches).
    Returns a float32 scalar (float64 for float64 student hidden states): 0, still attached to the graph (zero
    gradients), when no position is trained. Gradients flow to student_hidden, student_weight and student_bias
    when they require them.
    Raises ValueError when the vocabulary sizes differ (naming both), on other shape mismatches, an unknown
    divergence, temperature <= 0, beta outside (0, 1) for jsd, or chunk_size < 1."""
    t = _check_temperature(temperature)
    b = _check_divergence(divergence, beta)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    if student_weight.dim() != 2 or teacher_weight.dim() != 2:
        raise ValueError(
            f"LM head weights must be (vocab, hidden), got student {tuple(student_weight.shape)} "
            f"and teacher {tuple(teacher_weight.shape)}"
        )
    if student_weight.shape[0] != teacher_weight.shape[0]:
        raise ValueError(
            f"teacher vocabulary size {teacher_weight.shape[0]} != student vocabulary size "
            f"{student_weight.shape[0]}: distillation needs a shared vocabulary"
        )
    vocab = student_weight.shape[0]
    if student_hidden.dim() != 3 or student_hidden.shape[-1] != student_weight.shape[1]:
        raise ValueError(
            f"student_hidden {tuple(student_hidden.shape)} must be (batch, seq, "
            f"{student_weight.shape[1]}) to match student_weight {tuple(student_weight.shape)}"
        )
    if (
        teacher_hidden.dim() != 3
        or teacher_hidden.shape[:2] != student_hidden.shape[:2]
        or teacher_hidden.shape[-1] != teacher_weight.shape[1]
    ):
        raise ValueError(
            f"teacher_hidden {tuple(teacher_hidden.shape)} must be "
            f"{tuple(student_hidden.shape[:2]) + (teacher_weight.shape[1],)} to match student_hidden "
            f"and teacher_weight {tuple(teacher_weight.shape)}"
        )
    for name, bias in (("student_bias", student_bias), ("teacher_bias", teacher_bias)):
        if bias is not None and bias.shape != (vocab,):
            raise ValueError(f"{name} {tuple(bias.shape)} must be ({vocab},)")
    _check_labels(labels, student_hidden.shape[:2], "hidden states")

    device = student_hidden.device
    mask = labels[:, 1:].to(device) != IGNORE_INDEX
    sh = student_hidden[:, :-1][mask]  # (positions, hidden_s): a copy of the trained rows only
    th = teacher_hidden.detach()[:, :-1].to(device)[mask]
    tw = teacher_weight.detach().to(device=device, dtype=th.dtype)
    tb = teacher_bias.detach().to(device=device, dtype=th.dtype) if teacher_bias is not None else None
    sw = student_weight if student_weight.dtype == sh.dtype else student_weight.to(sh.dtype)
    sb = student_bias if student_bias is None or student_bias.dtype == sh.dtype else student_bias.to(sh.dtype)
    divisor = _divisor(mask.sum(), num_items_in_batch, device)
    grad = torch.is_grad_enabled()
    return _LinearKD.apply(
        sh,
        sw,
        sb,
        th,
        tw,
        tb,
        divisor,
        chunk_size,
        t,
        divergence,
        b,
        grad and sh.requires_grad,
        grad and sw.requires_grad,
        grad and sb is not None and sb.requires_grad,
    )
