-- trajectories: every root-to-terminal path of the search trees (docs/algorithm.md, "SFT
-- set"; the `trajectories` contract of section 3).
--
-- A trajectory ends at a node created terminal (terminal_kind not NULL: a graded answer, or an
-- invalid step: too_deep, unparsable, too_many_errors). A node that only became terminal
-- because all its children are terminal does not end one. Lists run from the root's child down
-- to the leaf (root excluded). `correct` is true only for a graded answer equivalent to the
-- ground truth; `has_error` is true when some step's code errored.
--
-- Reads the tables `node` and `path`.
WITH
leaf AS (
    SELECT node.*, path.anc, path.idx_path, path.n_steps, path.sum_q, path.min_q, path.has_error
    FROM node
    JOIN path USING (nid)
    WHERE node.terminal_kind IS NOT NULL
      AND node.parent_id IS NOT NULL
),
leaf_steps AS (
    SELECT
        leaf.nid,
        list(step.node_id ORDER BY s.pos) AS node_ids,
        list(step.step_text ORDER BY s.pos) AS steps,
        list(step.q ORDER BY s.pos) AS q_values
    FROM leaf,
         unnest(leaf.anc[2:]) WITH ORDINALITY AS s(step_nid, pos)
    JOIN node AS step ON step.nid = s.step_nid
    GROUP BY leaf.nid
)
SELECT
    leaf.problem_id,
    leaf.round,
    leaf.node_id AS leaf_id,
    leaf_steps.node_ids,
    leaf_steps.steps,
    leaf_steps.q_values,
    leaf.sum_q / leaf.n_steps AS mean_q,
    leaf.min_q,
    leaf.final_answer,
    coalesce(leaf.terminal_kind = 'answer' AND leaf.correct, false) AS correct,
    leaf.has_error
FROM leaf
JOIN leaf_steps USING (nid)
ORDER BY leaf.problem_id, leaf.round, leaf.idx_path
