"""``python -m bench [--quick] [--json FILE] [--list] [CASES...]``: see bench/__init__.py."""
import argparse
import dataclasses
import fnmatch
import json
import os
import sys

from bench import harness
from bench.cases import CASES


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__import__("bench").__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cases", nargs="*", metavar="CASE",
                   help="case names or glob patterns (default: all)")
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats (< 1 min)")
    p.add_argument("--json", metavar="FILE", help="write all results and machine info as JSON")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--pairs", type=int, help="alternating turn pairs per comparison")
    p.add_argument("--repeats", type=int, help="timed repeats per turn")
    args = p.parse_args(argv)

    if args.list:
        for c in CASES.values():
            sizes = ", ".join(c.label.format(**s) for s in c.sizes)
            print(f"{c.name:<13} vs {'+'.join(c.refs):<12} {c.doc}  [{sizes}]")
        return 0
    names = [n for n in CASES
             if not args.cases or any(fnmatch.fnmatch(n, pat) for pat in args.cases)]
    unknown = [pat for pat in args.cases if not fnmatch.filter(CASES, pat)]
    if unknown or not names:
        p.error(f"no case matches {' '.join(unknown) or args.cases}; see --list")

    settings = harness.QUICK if args.quick else harness.FULL
    overrides = {"pairs": args.pairs, "repeats": args.repeats}
    settings = dataclasses.replace(settings,
                                   **{k: v for k, v in overrides.items() if v is not None})
    report = harness.run(names, settings, quick=args.quick)
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
        print(f"results written to {args.json}")
    bad = [r for r in report["results"] if r["status"] != "ok"]
    if bad:
        print(f"{len(bad)} comparison(s) failed", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
