"""Run every benchmark: python -m benchmarks --out DIR [--quick] [--only NAME] [--baseline-tree DIR].

Writes DIR/results.json (every figure, plus what machine produced it) and DIR/results.md (tables,
each target and whether it was met). Exits 0 even when a target is missed: the files say so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from . import agent_edges, agents, api, daemon, mesh, output, run_cli, telegram, telegram_mesh, web

BENCHMARKS = {
    "run_cli": run_cli,
    "daemon": daemon,
    "output": output,
    "api": api,
    "mesh": mesh,
    "agents": agents,
    "agent_edges": agent_edges,
    "telegram": telegram,
    "telegram_mesh": telegram_mesh,
    "web": web,
}


def machine() -> dict[str, object]:
    tmux = subprocess.run(["tmux", "-V"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "tmux": tmux,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="run only these")
    parser.add_argument(
        "--baseline-tree", type=Path, help="output: also measure the daemon of this checkout (before/after)"
    )
    args = parser.parse_args()
    if args.baseline_tree is not None:
        os.environ[output.BASELINE_ENV] = str(args.baseline_tree.resolve())
    results: dict[str, object] = {"machine": machine(), "quick": args.quick}
    sections = []
    for name, module in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = module.run(args.quick)
        results[name] = result
        sections.append(module.markdown(result))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    info = results["machine"]
    header = (
        f"# trio-bridge benchmarks\n\n{info}\n\n"
        "Compare rows measured in the same run, not absolute times.\n\n"
    )
    (args.out / "results.md").write_text(header + "\n".join(sections))
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
