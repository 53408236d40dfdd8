-- round_stats: what one round of self-evolution produced (README.md: every stage
-- writes a small JSON of its own statistics), per round, in total and per difficulty.
--
-- Difficulty is the `level` key of the problem's meta JSON, or 'all' when a problem has none.
-- Per group:
--   problems               problems with a tree in the round
--   solved                 problems with at least one correct graded answer
--   trajectories           root-to-terminal paths (nodes created terminal)
--   correct_trajectories   of those, graded answers equivalent to the ground truth
--   sft_rows, pairs        rows of the sft and pairs tables (0 when a table is not given)
--   mean_terminal_depth    mean depth of the nodes created terminal
--   code_error_rate        share of code steps (non-empty `code`) whose code errored
--   tokens                 generated tokens, summed over the nodes
--
-- Reads the views `nodes_input`, `problems_input`, `sft_input` and `pairs_input`.
WITH
difficulty AS (
    SELECT
        CAST(problem_id AS VARCHAR) AS problem_id,
        coalesce(
            any_value(TRY(json_extract_string(CAST(meta AS VARCHAR), '$.level'))),
            'all'
        ) AS difficulty
    FROM problems_input
    GROUP BY 1
),
per_problem AS (
    SELECT
        nodes_input.round,
        CAST(nodes_input.problem_id AS VARCHAR) AS problem_id,
        coalesce(bool_or(terminal_kind = 'answer' AND correct), false) AS solved,
        count(*) FILTER (WHERE terminal_kind IS NOT NULL) AS trajectories,
        count(*) FILTER (WHERE terminal_kind = 'answer' AND correct) AS correct_trajectories,
        sum(depth) FILTER (WHERE terminal_kind IS NOT NULL) AS terminal_depth_sum,
        count(*) FILTER (WHERE coalesce(code, '') <> '') AS code_steps,
        count(*) FILTER (WHERE coalesce(code, '') <> '' AND is_error) AS error_steps,
        coalesce(sum(tokens), 0) AS tokens
    FROM nodes_input
    GROUP BY 1, 2
),
sft_rows AS (
    SELECT round, CAST(problem_id AS VARCHAR) AS problem_id, count(*) AS n
    FROM sft_input GROUP BY 1, 2
),
pair_rows AS (
    SELECT round, CAST(problem_id AS VARCHAR) AS problem_id, count(*) AS n
    FROM pairs_input GROUP BY 1, 2
),
classified AS (
    SELECT
        per_problem.*,
        coalesce(difficulty.difficulty, 'all') AS difficulty,
        coalesce(sft_rows.n, 0) AS sft_rows,
        coalesce(pair_rows.n, 0) AS pairs
    FROM per_problem
    LEFT JOIN difficulty USING (problem_id)
    LEFT JOIN sft_rows USING (round, problem_id)
    LEFT JOIN pair_rows USING (round, problem_id)
)
SELECT
    round,
    grouping(difficulty) = 1 AS is_total,
    difficulty,
    count(*) AS problems,
    count(*) FILTER (WHERE solved) AS solved,
    sum(trajectories) AS trajectories,
    sum(correct_trajectories) AS correct_trajectories,
    sum(sft_rows) AS sft_rows,
    sum(pairs) AS pairs,
    sum(terminal_depth_sum) / nullif(sum(trajectories), 0) AS mean_terminal_depth,
    sum(error_steps) / nullif(sum(code_steps), 0) AS code_error_rate,
    sum(tokens) AS tokens
FROM classified
GROUP BY GROUPING SETS ((round, difficulty), (round))
ORDER BY round, is_total DESC, difficulty
