"""Run the benchmarks, print the tables and append them to benchmarks/RESULTS.md.

python -m benchmarks                 # all that this machine can run
python -m benchmarks preprocess video streaming followup load convert gpu
"""

from __future__ import annotations

import argparse
import subprocess
import time

from benchmarks import convert, followup, gpu, load, preprocess, streaming, video
from benchmarks.common import REPO, RESULTS, machine

SUITES = {
    "preprocess": preprocess.run,
    "video": video.run,
    "streaming": streaming.run,
    "followup": followup.run,
    "load": load.run,
    "convert": convert.run,
    "gpu": gpu.run,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="*", help=f"any of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args()
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(sorted(unknown))}")
    args.suites = args.suites or list(SUITES)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    header = f"## {time.strftime('%Y-%m-%d %H:%M')} · commit {commit or '?'}\n\n{machine()}\n"
    print(header)
    sections = []
    for name in args.suites:
        started = time.perf_counter()
        section = SUITES[name]()
        section += f"\n\n_{name}: {time.perf_counter() - started:.0f} s_"
        print(section + "\n", flush=True)
        sections.append(section)
    if not args.no_save:
        with RESULTS.open("a") as results:
            results.write("\n" + header + "\n" + "\n\n".join(sections) + "\n")
        print(f"Appended to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
