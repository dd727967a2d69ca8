"""The Trainer subclass of the one training path: the method's optimizer groups (layer-wise rates, LoRA+, no decay on
norms), the task's own loss and training order, and an efficiency meter that leaves evaluation time out."""

from __future__ import annotations

import contextlib
import time


@contextlib.contextmanager
def full_precision(model):
    """The model's forward without mixed precision for the duration: accelerate's autocast wrapper around the
    forward swapped for the original it keeps (`_original_forward`), and any outer autocast off."""
    import torch

    inner = model
    while hasattr(inner, "module") and isinstance(inner.module, torch.nn.Module):  # DDP
        inner = inner.module
    patched = inner.__dict__.get("forward")
    original = getattr(inner, "_original_forward", None)
    if patched is not None and original is not None:
        inner.forward = original
    device = next(inner.parameters()).device.type
    try:
        with torch.autocast(device_type=device, enabled=False):
            yield
    finally:
        if patched is not None and original is not None:
            inner.forward = patched


def make_trainer_class():
    from transformers import Trainer

    class TuneforgeTrainer(Trainer):
        """Trainer whose optimizer groups come from the method (layer-wise rates, LoRA+, no decay on norms)
        and whose efficiency meter does not count evaluation time."""

        def __init__(self, *a, method=None, meter=None, loss=None, sampler=None, eval_fp32=False, **kw):
            self.tf_method, self.tf_meter, self.tf_loss, self.tf_sampler = method, meter, loss, sampler
            self.tf_eval_fp32 = eval_fp32  # the task evaluates in full precision (Task.evaluate_in_fp32)
            super().__init__(*a, **kw)
            if loss is not None:
                self.loss_is_scaled_for_ga = False  # the task's loss is a batch mean: divide by accumulation

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.tf_loss is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss, outputs = self.tf_loss(model, dict(inputs))
            return (loss, outputs) if return_outputs else loss

        def log(self, logs, *a, **kw):
            # a task's loss may keep its own per-step figures (GRPO: rewards, lengths, KL): into the training logs
            pop = getattr(self.tf_loss, "pop_logs", None)
            if pop is not None and "loss" in logs:
                logs = {**logs, **pop()}
            return super().log(logs, *a, **kw)

        def _get_train_sampler(self, *a, **kw):
            from tuneforge.data.sampling import epoch_seeded

            if self.tf_sampler is not None:  # the task's own order (for example mixing several data sources)
                return self.tf_sampler

            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return epoch_seeded(super()._get_train_sampler(*a, **kw), seed)

        def create_optimizer(self, model=None):
            if self.optimizer is None:
                model = model if model is not None else self.model
                groups = self.tf_method.param_groups(model, self.args.learning_rate, self.args.weight_decay)
                cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
                kwargs.pop("lr", None)
                self.optimizer = cls(groups, **kwargs)
            return self.optimizer

        def _precision(self):
            return full_precision(self.model) if self.tf_eval_fp32 else contextlib.nullcontext()

        def predict(self, *a, **kw):
            with self._precision():
                return super().predict(*a, **kw)

        def evaluate(self, *a, **kw):
            if self.tf_meter is None:
                with self._precision():
                    return super().evaluate(*a, **kw)
            self.tf_meter.pause()
            t0 = time.perf_counter()
            try:
                with self._precision():
                    return super().evaluate(*a, **kw)
            finally:
                self.tf_meter.eval_seconds += time.perf_counter() - t0
                self.tf_meter.resume()

    return TuneforgeTrainer
