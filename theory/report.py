"""Markdown tables from a sweep's summary.json: measured exponents beside the theorems' rates fitted on
the same cells, n* with floors per cell, and sample ratios between rows.

  python -m theory.report runs/dsd/summary.json
"""
from __future__ import annotations

import json
import sys

RATE_NAMES = {"cnn_upper": "O~(s^2 (k+d))", "lcn_lower": "Omega(s^2 k d)",
              "lcn_upper": "O~(s^2 k (k+d))", "fcn_lower": "Omega(s^2 k^2 d)"}


def _num(v, fmt="{:.0f}") -> str:
  return fmt.format(v) if isinstance(v, (int, float)) else str(v)


def slope(f: dict, axis: str) -> str:
  """'0.93 [0.81, 1.05]', or 'n/a' where the row has no fit along that axis."""
  s, ci = f.get(f"slope_{axis}"), f.get(f"slope_{axis}_ci")
  if s is None:
    return "n/a"
  return f"{s:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{s:.2f}"


def _theory(th: dict, axis: str) -> str:
  def value(v):
    if not isinstance(v, (int, float)) or v != v:  # nan ('nan' in summary.json): the axis is fixed
      return "n/a"
    return f"{round(v, 2) + 0.0:.2f}"

  return "; ".join(f"{RATE_NAMES[n]} {value(t[f'slope_{axis}'])}" for n, t in th.items())


def _cell_order(cell: str) -> tuple[int, int]:
  k, d = cell.split("_")
  return int(k[1:]), int(d[1:])


def markdown(summary: dict) -> str:
  target = ("test error - floor" if summary.get("target") == "excess" else "test error")
  lines = []
  config = summary.get("config", {})
  for ckey, block in summary["results"].items():
    # summary.json is written with sorted keys: restore the config's order of rows and ratios
    order = [m for m in config.get("models", []) if m in block["models"]]
    rows = {m: block["models"][m] for m in order + sorted(set(block["models"]) - set(order))}
    lines += [f"Noise {ckey} (sigma rule {summary['sigma_rule']}), n* where {target} reaches "
              f"eps = {summary['eps']}, design {summary['design']}.", "",
              "| row | slope in k [95% CI] | theorem, same cells | slope in d [95% CI] | "
              "theorem, same cells | cells fitted |", "|---|---|---|---|---|---|"]
    for m, f in rows.items():
      th = f["theory"]
      lines.append(f"| {m} | {slope(f, 'k')} | {_theory(th, 'k')} ({f.get('agreement_k') or '-'}) | "
                   f"{slope(f, 'd')} | {_theory(th, 'd')} ({f.get('agreement_d') or '-'}) | "
                   f"{f['cells_used']}/{f['cells_total']} |")
    cells = sorted({c for f in rows.values() for c in f["n_star"]}, key=_cell_order)
    lines += ["", "| cell | " + " | ".join(f"{m} floor / n* [95% CI]" for m in rows) + " |",
              "|---" * (len(rows) + 1) + "|"]
    for cell in cells:
      row = [cell.replace("_", ", ")]
      for f in rows.values():
        if cell not in f["n_star"]:
          row.append("-")
          continue
        lo, hi = f["n_star_ci"][cell]
        row.append(f"{f['floor'][cell][0]:.3f} / {_num(f['n_star'][cell])} [{_num(lo)}, {_num(hi)}]")
      lines.append("| " + " | ".join(row) + " |")
    ratios = block.get("ratios", {})
    named = [f"{a}/{b}" for a, b in config.get("ratios", []) if f"{a}/{b}" in ratios]
    ratios = {n: ratios[n] for n in named + sorted(set(ratios) - set(named))}
    if ratios:
      lines += ["", "| cell | " + " | ".join(ratios) + " |", "|---" * (len(ratios) + 1) + "|"]
      for cell in cells:
        vals = []
        for r in ratios.values():
          v, ci = r["per_cell"].get(cell, ""), r["per_cell_ci"].get(cell)
          vals.append(_num(v, "{:.2f}") + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
        lines.append(f"| {cell.replace('_', ', ')} | " + " | ".join(vals) + " |")
      for name, r in ratios.items():
        if r["geomean"] is not None:
          ci = r["geomean_ci"]
          lines.append(f"\n{name} sample ratio: geometric mean {r['geomean']:.2f}"
                       + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
                       + f", range {r['min']:.2f} to {r['max']:.2f}.")
  lines.append(f"\nWall time {summary['wall_time_s']:.0f} s ({summary['cells_computed']} cells computed, "
               f"{summary['cells_resumed']} resumed).")
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  if len(argv) != 1:
    sys.stderr.write("usage: python -m theory.report DIR/summary.json\n")
    return 2
  try:
    with open(argv[0]) as f:
      summary = json.load(f)
    text = markdown(summary)
  except (OSError, ValueError, KeyError, TypeError) as e:
    sys.stderr.write(f"theory.report: {argv[0]}: not a readable sweep summary ({type(e).__name__}: {e})\n")
    return 2
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
