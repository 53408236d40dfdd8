"""Evaluation on held-out problems: greedy, pass@N, maj@N, PPM best-of-N and PPM-guided MCTS.

``evaluate`` (the methods and their Wilson intervals), ``sharded`` (the same in shards on an
executor) and ``results`` (the rounds' metrics as one table, ``rstar results``).
"""
