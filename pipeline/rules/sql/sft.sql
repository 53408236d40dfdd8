-- sft: the policy's fine-tuning set (docs/algorithm.md, "SFT set"; the `sft` contract of
-- section 3).
--
-- Per problem and round, the correct trajectories are the root-to-terminal paths that end in a
-- graded answer equivalent to the ground truth (terminal_kind 'answer', correct) and have no
-- step whose code errored. They are ordered by the mean Q of their steps (root excluded)
-- descending, then their min Q descending, then, for full ties, by their path of child_index
-- values ascending (the earliest path first, section 2 "Ties"); the first $per_problem are kept
-- with rank 1, 2, ...
--
-- The response is the solution text: $solution_open (pipeline.search.steps.render_solution([])) and
-- the step texts of the path, root excluded.
--
-- Reads the tables `node`, `path` and `problem` (with each problem's prompt); parameters
-- $per_problem and $solution_open.
WITH
correct_trajectory AS (
    SELECT
        node.nid,
        node.problem_id,
        node.round,
        path.anc,
        path.idx_path,
        path.sum_q / path.n_steps AS mean_q,
        path.min_q
    FROM node
    JOIN path USING (nid)
    WHERE node.terminal_kind = 'answer'
      AND node.correct IS TRUE
      AND NOT path.has_error
),
top AS (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY problem_id, round
            ORDER BY mean_q DESC, min_q DESC, idx_path ASC
        ) AS rank
    FROM correct_trajectory
    QUALIFY rank <= $per_problem
),
response_steps AS (
    SELECT top.nid, list(step.step_text ORDER BY s.pos) AS texts
    FROM top,
         unnest(top.anc[2:]) WITH ORDINALITY AS s(step_nid, pos)
    JOIN node AS step ON step.nid = s.step_nid
    GROUP BY top.nid
)
SELECT
    top.problem_id,
    top.round,
    problem.prompt,
    $solution_open || array_to_string(response_steps.texts, '') AS response,
    top.mean_q,
    top.rank
FROM top
JOIN response_steps USING (nid)
JOIN problem USING (problem_id)
ORDER BY top.problem_id, top.round, top.rank
