"""Markdown tables from a sweep's summary.json: fitted slopes vs theory, n* per cell, sample ratios.

  python -m theory.report runs/dsd/summary.json
"""
from __future__ import annotations

import json
import sys


def _num(v, fmt="{:.0f}") -> str:
  return fmt.format(v) if isinstance(v, (int, float)) else str(v)


def _slope(f: dict, name: str) -> str:
  s, ci = f.get(f"slope_{name}"), f.get(f"slope_{name}_ci")
  if s is None:
    return "n/a"
  return f"{s:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{s:.2f}"


ORDER = ("cnn", "lcn", "fcn")


def markdown(summary: dict) -> str:
  lines = []
  for ckey, block in summary["results"].items():
    block = dict(block, models={m: block["models"][m] for m in ORDER if m in block["models"]})
    lines += [f"Noise {ckey} ({summary['sigma_rule']}), eps = {summary['eps']}, design {summary['design']}.",
              "", "| model | slope in k [95% CI] | slope in d [95% CI] | theorem rate | nominal slopes "
              "(k, d), sigma fixed | theorem slopes (k, d) with this sigma rule, fitted on these cells |",
              "|---|---|---|---|---|---|"]
    for m, f in block["models"].items():
      th = f["theory"]
      names = [n for n in th if isinstance(th[n], dict)]
      rates = {"cnn_upper": "O~(s^2 (k+d))", "lcn_lower": "Omega(s^2 k d)",
               "lcn_upper": "O~(s^2 k (k+d))", "fcn_lower": "Omega(s^2 k^2 d)"}
      lines.append(
          f"| {m.upper()} | {_slope(f, 'k')} | {_slope(f, 'd')} | "
          + ", ".join(rates[n] for n in names)
          + f" | ({th['nominal_slope_k']:.0f}, {th['nominal_slope_d']:.0f}) | "
          + "; ".join(f"{rates[n]}: ({th[n]['slope_k']:.2f}, {th[n]['slope_d']:.2f})" for n in names)
          + " |")
    cells = list(next(iter(block["models"].values()))["n_star"])
    lines += ["", "| cell | " + " | ".join(f"{m.upper()} n* [95% CI]" for m in block["models"])
              + " | LCN/CNN | FCN/LCN |", "|---" * (len(block["models"]) + 3) + "|"]
    for cell in sorted(cells, key=lambda c: (int(c.split("_")[0][1:]), int(c.split("_")[1][1:]))):
      row = [cell.replace("_", ", ")]
      for m, f in block["models"].items():
        lo, hi = f["n_star_ci"][cell]
        row.append(f"{_num(f['n_star'][cell])} [{_num(lo)}, {_num(hi)}]")
      for r in ("ratio_lcn_over_cnn", "ratio_fcn_over_lcn"):
        v = block.get(r, {}).get("per_cell", {}).get(cell, "")
        row.append(_num(v, "{:.2f}"))
      lines.append("| " + " | ".join(row) + " |")
    for r, name in (("ratio_lcn_over_cnn", "LCN/CNN"), ("ratio_fcn_over_lcn", "FCN/LCN")):
      g = block[r]
      if g["geomean"] is not None:
        lines.append(f"\n{name} sample ratio: geometric mean {g['geomean']:.2f}, range "
                     f"{g['min']:.2f} to {g['max']:.2f}.")
  lines.append(f"\nWall time {summary['wall_time_s']:.0f} s ({summary['cells_computed']} cells computed, "
               f"{summary['cells_resumed']} resumed).")
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  if len(argv) != 1:
    sys.stderr.write("usage: python -m theory.report DIR/summary.json\n")
    return 2
  with open(argv[0]) as f:
    print(markdown(json.load(f)))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
