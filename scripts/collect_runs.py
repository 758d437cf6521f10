"""results.json: every run's metrics.json / evaluation.json, the bench table; key numbers on stdout."""
import json
import re
import sys
from pathlib import Path

out, runs, logs, work = (Path(p) for p in sys.argv[1:5])


def load(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


results = {"runs": {}, "bench": {}}
for run in sorted(p for p in runs.iterdir() if p.is_dir()):
    entry = {"metrics": load(run / "metrics.json"), "evaluation": load(run / "evaluation.json"),
             "similarity": load(run / "similarity.json"), "wandb": load(run / "wandb.json")}
    checkpoints = run / "checkpoints"
    if checkpoints.is_dir():
        entry["checkpoints"] = {p.name: (p.stat().st_size if p.is_file() else "dir")
                                for p in sorted(checkpoints.iterdir())}
    results["runs"][run.name] = entry
before = load(work / "metrics-gpu-before-resume.json")
if before is not None:
    results["runs"].setdefault("gpu", {})["metrics_before_resume"] = before

bench = logs / "bench.log"
if bench.is_file():
    text = bench.read_text(errors="replace")
    rows, in_table = [], False
    for line in text.splitlines():
        if "tokens/s" in line and "step ms" in line:
            in_table = True
            continue
        if in_table:
            if not line.strip():
                in_table = False
                continue
            match = re.match(r"^(.{36})\s*([\d,.]+)\s+(\S+)\s+(\S+)\s+(\S+)\s*(.*)$", line)
            if match:
                rows.append({"row": match.group(1).strip(), "tokens_per_s": match.group(2),
                             "step_ms": match.group(3), "peak_gb": match.group(4),
                             "ceiling": match.group(5), "note": match.group(6).strip()})
    results["bench"] = {
        "header": [l for l in text.splitlines() if l.startswith(("machine:", "device:", "shape:", "corpus lengths:"))],
        "rows": rows,
        "ratios": [l for l in text.splitlines() if "x" in l and ("/ HuggingFace" in l or "packed / padded" in l)],
    }
(out / "results.json").write_text(json.dumps(results, indent=2, default=str))

keys = ("status", "global_step", "seconds", "train/loss", "train/tokens_per_sec", "train/mfu", "val/loss",
        "val/accuracy", "baseline/most_frequent_token_accuracy", "val/mrr", "val/recall@1", "baseline/tfidf_mrr",
        "world_size", "error")
for name, entry in results["runs"].items():
    for label in ("metrics_before_resume", "metrics"):
        metrics = entry.get(label)
        if metrics:
            shown = ", ".join(f"{k}={metrics[k]:.4g}" if isinstance(metrics.get(k), float) else f"{k}={metrics[k]}"
                              for k in keys if k in metrics)
            print(f"  {name}{' (before resume)' if label == 'metrics_before_resume' else ''}: {shown}")
    evaluation = entry.get("evaluation")
    if evaluation:
        overall = evaluation.get("overall", evaluation) if isinstance(evaluation, dict) else {}
        shown = {k: overall[k] for k in ("loss", "accuracy", "perplexity", "targets") if k in overall}
        print(f"  {name} evaluation: {shown or list(evaluation)[:8]}")
    for comparison, scores in ((entry.get("similarity") or {}).get("comparisons") or {}).items():
        for system, pools in scores["systems"].items():
            cells = ", ".join(f"MRR@{size} {score['mrr']:.3f}" for size, score in pools.items() if score["mrr"] is not None)
            print(f"  {name} search {comparison} ({scores['pairs']} pairs) {system}: {cells}")
    if entry.get("checkpoints"):
        print(f"  {name} checkpoints: {entry['checkpoints']}")
for line in results["bench"].get("header", []) + [
        f"{r['row']:<36} {r['tokens_per_s']:>14} {r['step_ms']:>9} {r['peak_gb']:>7} {r['ceiling']:>7}  {r['note']}"
        for r in results["bench"].get("rows", [])] + results["bench"].get("ratios", []):
    print(f"  bench: {line}")
