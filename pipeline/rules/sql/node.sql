-- node: the search trees of the `nodes` table (docs/data-contracts.md), one row per node.
--
-- A tree is one (problem_id, round). Columns are cast to the types the rules expect, and every
-- node gets an integer key `nid` plus its parent's key `parent_nid`, so the recursive walks and
-- the joins of the rules run on integers instead of 16-character ids.
-- Reads the view `nodes_input`; the root has parent_id NULL.
WITH typed AS MATERIALIZED (
    SELECT
        row_number() OVER () AS nid,
        CAST(problem_id AS VARCHAR) AS problem_id,
        round,
        CAST(node_id AS VARCHAR) AS node_id,
        CAST(parent_id AS VARCHAR) AS parent_id,
        CAST(child_index AS BIGINT) AS child_index,
        coalesce(CAST(step_text AS VARCHAR), '') AS step_text,
        coalesce(CAST(q AS DOUBLE), 0.0) AS q,
        coalesce(CAST(is_error AS BOOLEAN), false) AS is_error,
        CAST(terminal_kind AS VARCHAR) AS terminal_kind,
        CAST(correct AS BOOLEAN) AS correct,
        CAST(final_answer AS VARCHAR) AS final_answer
    FROM nodes_input
)
SELECT child.*, parent.nid AS parent_nid
FROM typed AS child
LEFT JOIN typed AS parent
    ON parent.problem_id = child.problem_id
    AND parent.round = child.round
    AND parent.node_id = child.parent_id
