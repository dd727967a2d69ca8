"""The human summary of an export.json."""

from __future__ import annotations


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _labels(p: dict) -> str:
    """Label agreement and accuracy of a classifier's (or one head's) parity."""
    acc = next((k.removeprefix("export_") for k in p if k.startswith("export_") and "accuracy" in k), None)
    text = f"label agreement {p['label_agreement'] * 100:.2f}%"
    if acc:
        text += f", {acc} {p['export_' + acc]:.4f} vs {p['reference_' + acc]:.4f}"
        if "accuracy_delta_points" in p:
            text += f" ({p['accuracy_delta_points']:+.2f} points)"
    return text + f", max |logit diff| {p['max_abs_logit_diff']:.3g}"


def summary(report: dict) -> str:
    """A few lines: size, parity and speed of an export against the trained model."""
    lines = [
        f"exported {report['format']} ({report['task']}, {report['method']} run): "
        f"{_mb(report['size_bytes'])} on disk (merged fp32: {_mb(report['reference_size_bytes'])})"
    ]
    p = report.get("parity", {})
    if "label_agreement" in p:
        lines.append(f"parity on the {p['split']} split ({p['rows']} rows): {_labels(p)}")
    elif "tasks" in p:  # one head per sub-task: a line each
        lines.append(
            f"parity on the {p['split']} split ({p['rows']} rows), max |logit diff| {p['max_abs_logit_diff']:.3g}:"
        )
        lines += [
            f"  {name} ({t['rows']} labelled rows): {_labels(t)}"
            for name, t in p["tasks"].items()
            if t.get("label_agreement") is not None
        ]
    elif p:
        lines.append(
            f"parity on the {p['split']} split ({p['rows']} rows, {p['positions']} positions): "
            f"next-token agreement {p['next_token_agreement'] * 100:.2f}%, "
            f"max |logit diff| {p['max_abs_logit_diff']:.3g}"
        )
    agreements = [p.get("label_agreement", p.get("next_token_agreement"))] + [
        t.get("label_agreement") for t in (p.get("tasks") or {}).values()
    ]
    agreement = min((a for a in agreements if a is not None), default=None)
    if agreement is not None and agreement < 0.9:
        lines.append(
            f"warning: the export agrees with the trained model on only {agreement * 100:.1f}% of "
            f"predictions; check its quality before deploying it"
        )
    g = report.get("gguf")
    if g:
        lines.append(
            f"GGUF {g['quant']} ({g['architecture']}): {g['file']}, chat template embedded, stop tokens "
            f"{', '.join(g['stop_tokens']) or '-'}; Ollama: {g['ollama']} (the Modelfile is beside it)"
        )
    s = report.get("speed")
    if s:
        r, e = s["reference"], s["export"]
        lines.append(
            f"CPU ({s['threads']} threads) batch 1 p50/p95: {e['latency_ms_p50_batch1']:.1f}/"
            f"{e['latency_ms_p95_batch1']:.1f} ms vs {r['latency_ms_p50_batch1']:.1f}/"
            f"{r['latency_ms_p95_batch1']:.1f} ms fp32 ({s['speedup_batch1_p50']:.2f}x); batch 32: "
            f"{e['throughput_rows_per_s_batch32']:.1f} vs {r['throughput_rows_per_s_batch32']:.1f} rows/s "
            f"({s['speedup_batch32_throughput']:.2f}x)"
        )
    return "\n".join(lines)
