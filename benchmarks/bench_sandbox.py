"""Steps per second of the warm sandbox pool against a fresh ``python -c`` per step.

Both runners get the same programs (a mix of sympy and plain-arithmetic steps in the format of
pipeline/search/steps.py, each a whole program: ancestors' code plus the new step) and the same
parallelism: 2 workers against 2 concurrent subprocesses. The baseline runs a smaller sample
(a fresh interpreter importing sympy costs about a second), cycling the same mix. The last line
is ``speedup: N.Nx``.

    .venv/bin/python benchmarks/bench_sandbox.py [--steps N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.execution.sandbox import Sandbox

WORKERS = 2

PROGRAMS = [
    # sympy: set up and solve an equation (the few-shot example's shape)
    (
        "# Step 1: set up the equation\nfrom sympy import symbols, Eq, solve\nx = symbols('x')\n"
        "equation = Eq(3 * x + 7, 25)\n# Step 2: solve it\nprint(solve(equation, x)[0])\n"
    ),
    # plain arithmetic, two steps
    "# Step 1: half of 48\nclips_may = 48 / 2\n# Step 2: total\nprint(48 + clips_may)\n",
    # sympy: exact fractions
    (
        "# Step 1: a quarter off\nfrom sympy import Rational\nprice = Rational(80)\n"
        "sale = price * (1 - Rational(1, 4))\n# Step 2: plus 5% tax\nprint(sale * Rational(105, 100))\n"
    ),
    # plain arithmetic, three steps
    (
        "# Step 1: muffins sold\nsold = 24 * 3 // 4\n# Step 2: left over\nleft = 24 - sold\n"
        "# Step 3: in boxes of 2\nprint(left // 2)\n"
    ),
    # sympy: simplify an expression
    (
        "# Step 1: the expression\nfrom sympy import symbols, simplify\nx = symbols('x')\n"
        "expr = (x**2 - 9) / (x - 3)\n# Step 2: simplify and evaluate at 4\n"
        "print(simplify(expr).subs(x, 4))\n"
    ),
    # plain: a loop
    (
        "# Step 1: sum of the first 100 odd numbers\ntotal = sum(2 * k + 1 for k in range(100))\n"
        "print(total)\n"
    ),
    # math module
    (
        "# Step 1: ways to choose 3 of 10\nimport math\nways = math.comb(10, 3)\n"
        "# Step 2: as a share of all orderings\nprint(ways / math.perm(10, 3))\n"
    ),
    # fractions
    (
        "# Step 1: exact share\nfrom fractions import Fraction\nshare = Fraction(3, 8) * 64\n"
        "# Step 2: what is left\nprint(64 - share)\n"
    ),
]


def run_pool(programs: list[str]) -> tuple[list[str], float, float]:
    started = time.perf_counter()
    with Sandbox(workers=WORKERS, timeout_s=30.0, memory_mb=1024) as sandbox:
        startup = time.perf_counter() - started
        sandbox.run_many(programs[:WORKERS])  # let each worker serve once before timing
        started = time.perf_counter()
        results = sandbox.run_many(programs)
        seconds = time.perf_counter() - started
    failed = [r.error for r in results if r.error]
    if failed:
        raise SystemExit(f"sandbox runs failed: {failed[:3]}")
    return [r.stdout for r in results], seconds, startup


def run_fresh(programs: list[str]) -> tuple[list[str], float]:
    def one(code: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
        )
        return done.stdout

    started = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        outputs = list(pool.map(one, programs))
    return outputs, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=240, help="programs run by the pool")
    parser.add_argument(
        "--baseline-steps",
        type=int,
        default=None,
        help="programs run as fresh interpreters (default: steps / 8, whole rounds of the mix)",
    )
    args = parser.parse_args()
    mix = len(PROGRAMS)
    steps = max(args.steps, mix)
    baseline_steps = args.baseline_steps or max(mix, steps // 8 // mix * mix)
    programs = [PROGRAMS[i % mix] for i in range(steps)]

    pool_out, pool_s, startup_s = run_pool(programs)
    fresh_out, fresh_s = run_fresh(programs[:baseline_steps])
    if fresh_out != pool_out[:baseline_steps]:
        raise SystemExit("the pool and fresh interpreters printed different outputs")

    pool_rate, fresh_rate = steps / pool_s, baseline_steps / fresh_s
    print(f"{'runner':<36}{'steps':>7}{'seconds':>10}{'steps/s':>10}{'ms/step':>10}")
    rows = (
        (f"fresh `python -c` ({WORKERS} at a time)", baseline_steps, fresh_s, fresh_rate),
        (f"sandbox pool ({WORKERS} workers)", steps, pool_s, pool_rate),
    )
    for name, count, seconds, rate in rows:
        print(f"{name:<36}{count:>7}{seconds:>10.2f}{rate:>10.1f}{1000 / rate:>10.1f}")
    uses_sympy = sum("sympy" in program for program in PROGRAMS)
    print(f"pool startup (once): {startup_s:.2f} s; mix: {mix} programs, {uses_sympy} use sympy")
    print(f"speedup: {pool_rate / fresh_rate:.1f}x")


if __name__ == "__main__":
    main()
