"""Steps and search: the step format, the search tree, MCTS, rollouts and the rounds' schedule.

``steps`` (prompt, code steps, markers), ``tree`` (nodes, Q-values, backup), ``mcts`` (select,
expand, simulate, back up), ``rollout`` (MCTS over a round's problems in shards) and ``rounds``
(which problems each round searches, with what budget).
"""
