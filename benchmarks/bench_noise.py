"""The noise campaign over the real captures (tests/corpus/real-*.log): bits flipped at 1e-4,
1e-3 and 1e-2, lines dropped and duplicated at the same rates; each damaged copy replayed and
judged against the original (tests/noise.py says what a wrong diagnosis is).  Prints, per kind
and rate, the inputs, the wrong diagnoses (goal: 0 at every rate), the verdicts seen, and the
first few wrong ones.

Usage: python benchmarks/bench_noise.py [INPUTS_PER_LOG_AND_RATE] [SEED]
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from kexectest.analysis.replay import analyze_bytes  # noqa: E402
from kexectest.errors import KexectestError  # noqa: E402
from noise import KINDS, RATES, mutate, wrong_diagnosis  # noqa: E402

LOGS = sorted((ROOT / "tests" / "corpus").glob("real-*.log"))


def campaign(per: int, seed: int) -> int:
    originals = {p: analyze_bytes(p.read_bytes()).to_dict() for p in LOGS}
    print(f"{len(LOGS)} real captures: " + ", ".join(f"{p.stem} ({d['verdict']})" for p, d in originals.items()))
    print(f"{'kind':5s} {'rate':>7s} {'inputs':>7s} {'wrong':>6s} {'ms/input':>9s}  verdicts")
    total_wrong = 0
    for kind in KINDS:
        for rate in RATES:
            rng = random.Random(f"{seed}-{kind}-{rate}")
            wrong, seen, examples, t0, n = 0, Counter(), [], time.perf_counter(), 0
            for path, orig in originals.items():
                data = path.read_bytes()
                for _ in range(per):
                    n += 1
                    try:
                        mut = analyze_bytes(mutate(data, kind, rate, rng)).to_dict()
                    except KexectestError as exc:  # an empty log after heavy damage: one clear line
                        seen[f"error {int(exc.code)}"] += 1
                        continue
                    seen[mut["verdict"]] += 1
                    why = wrong_diagnosis(orig, mut)
                    if why:
                        wrong += 1
                        if len(examples) < 3:
                            examples.append(f"    {path.stem}: {why[0]}")
            ms = (time.perf_counter() - t0) * 1000 / max(n, 1)
            print(f"{kind:5s} {rate:7.0e} {n:7d} {wrong:6d} {ms:9.1f}  "
                  + ", ".join(f"{v} {c}" for v, c in seen.most_common()))
            for line in examples:
                print(line)
            total_wrong += wrong
    print(f"wrong diagnoses in all: {total_wrong}")
    return total_wrong


if __name__ == "__main__":
    per = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    sys.exit(1 if campaign(per, seed) else 0)
