"""`plan`'s predicted step against published TPU step rates, side by side (docs/TPU.md, "Checked against
published figures").

  python tools/published_check.py                 # every row below (each one a `jaxformer plan` compile)
  python tools/published_check.py --only=maxtext_32b_v5p_128

Each row is a gin file under jaxformer/gin/published/ that rebuilds a published configuration (model
shape, global batch, remat, attention, mesh, slice) and the figure its authors published. A published
TFLOP/s per chip is turned into tokens/s per chip with the FLOPs per token of the accounting it was
measured under, so the two sides compare as throughput (accounting-free), not as MFUs of different
accountings. MaxText's tables were measured when maxtext_utils.calculate_tflops_training_per_device
counted 6 x all parameters + causal attention (12 L H d_head S / 2 per token); its later per-matmul
formula with non-causal attention gives 2.5% more FLOPs per token for these shapes, so the published
throughput is known to about that. Prints a markdown table; --json writes the rows as JSON lines.
"""

import argparse
import json
import subprocess
import sys
import time

ROWS = {
  # gin (jaxformer/gin/published/; it names the slices), published TFLOP/s per chip, published MFU, source
  "maxtext_16b_v5e_256": (120.0, 0.6110, "MaxText/configs/v5e/README.md, 1x v5e-256, 16B"),
  "maxtext_16b_2x_v5e_256": (117.0, 0.5937, "MaxText/configs/v5e/README.md, 2x v5e-256, 16B"),
  "maxtext_32b_v5p_128": (328.0, 0.7147, "MaxText/configs/v5p/README.md, 1x v5p-128, 32B"),
}
MAIN = "import sys; from jaxformer.cli import main; sys.exit(main(sys.argv[1:]))"
SOURCE = "https://github.com/AI-Hypercomputer/maxtext (read 2026-12-07)"


def maxtext_flops_per_token(params: int, layers: int, heads: int, head_dim: int, length: int) -> float:
  """MaxText's accounting of its published tables: 6 x every parameter + causal attention per token."""
  return 6 * params + 12 * layers * heads * head_dim * length / 2


def plan(name: str) -> dict:
  """`jaxformer plan --json` of the row's gin file: the report's last line."""
  out = subprocess.run(
    [sys.executable, "-c", MAIN, "plan", f"--gin_file=published/{name}.gin", "--json"],
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  return json.loads(out.strip().splitlines()[-1])


def row(name: str, report: dict) -> dict:
  tflops, mfu, source = ROWS[name]
  model, tpu = report["model"], report["tpu"]
  head_dim = model.get("head_size") or model["d_model"] // model["num_heads"]
  per_token = maxtext_flops_per_token(
    report["params"], model["num_layers"], model["num_heads"], head_dim, report["sequence_length"]
  )
  published = tflops * 1e12 / per_token  # tokens/s per chip
  if not tpu["fits"]:
    raise SystemExit(f"{name}: the step does not fit ({tpu['memory_per_device']['total'] / 2**30:.1f} GiB per chip)")
  chips = tpu["devices"]  # every chip of every slice (v5e and v5p: one device a chip)
  tokens = tpu["batch_size"] * tpu["sequence_length"]
  published_step = tokens / (published * chips)
  ours = {k: tokens / tpu[f"step_seconds_{k}"] / chips for k in ("overlapped", "serial")}
  return {
    "name": name,
    "source": source,
    "published_tflops_per_chip": tflops,
    "published_mfu": mfu,
    "published_tokens_per_chip": published,
    "published_step_seconds": published_step,
    "predicted_step_seconds_overlapped": tpu["step_seconds_overlapped"],
    "predicted_step_seconds_serial": tpu["step_seconds_serial"],
    # What the published run made of the chip on the compiled program's own FLOP count (remat included).
    "published_hardware_utilisation": tpu["compiler_flops_per_device"] / published_step / tpu["peak_flops_per_device"],
    "ratio_overlapped": ours["overlapped"] / published,
    "ratio_serial": ours["serial"] / published,
    "bound": tpu["bound"],
    "gib_per_chip": tpu["memory_per_device"]["total"] / 2**30,
    "communication_seconds": tpu["communication_seconds"],
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", default="", help="comma-separated row names (default: all)")
  parser.add_argument("--json", action="store_true", help="print the rows as JSON lines as well")
  parser.add_argument(
    "--report", action="append", default=[], help="NAME=PATH: the row's saved `plan --json` output instead of a compile"
  )
  args = parser.parse_args(argv)
  saved = dict(r.split("=", 1) for r in args.report)
  names = [n for n in args.only.split(",") if n] or list(ROWS)
  unknown = sorted((set(names) | set(saved)) - set(ROWS))
  if unknown:
    parser.error(f"{unknown} are not rows; use {sorted(ROWS)}")
  rows = []
  for name in names:
    start = time.time()
    if name in saved:
      report = json.loads(open(saved[name]).read().strip().splitlines()[-1])
    else:
      report = plan(name)
    rows.append(row(name, report))
    print(f"{name}: planned in {time.time() - start:.0f} s", file=sys.stderr)
  columns = "configuration, published, published step, predicted overlapped, predicted serial, ratio ovl, ratio ser"
  columns = columns.split(", ") + ["bound", "GiB/chip", "published HFU"]
  print("| " + " | ".join(columns) + " |")
  print("|" + "---|" * len(columns))
  for r in rows:
    print(
      f"| {r['name']} | {r['published_tflops_per_chip']:.0f} TFLOP/s/chip ({r['published_mfu']:.2%} MFU), "
      f"{r['published_tokens_per_chip']:,.0f} tokens/s/chip | {r['published_step_seconds']:.2f} s "
      f"| {r['predicted_step_seconds_overlapped']:.2f} s | {r['predicted_step_seconds_serial']:.2f} s "
      f"| {r['ratio_overlapped']:.2f} | {r['ratio_serial']:.2f} | {r['bound']} | {r['gib_per_chip']:.1f} "
      f"| {r['published_hardware_utilisation']:.1%} |"
    )
  print("\nratio: predicted tokens/s over published; published HFU: the compiled step's FLOPs per chip (remat")
  print(f"included) over the published step time and the chip's bf16 peak. Published figures from {SOURCE}")
  if args.json:
    for r in rows:
      print(json.dumps(r))
  return 0


if __name__ == "__main__":
  sys.exit(main())
