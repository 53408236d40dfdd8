-- path: for every node, the path from its tree's root down to it (docs/algorithm.md: a
-- trajectory is a root-to-terminal path, and the partial solution at a node is the
-- concatenation of the step texts on its path). One recursive walk serves every rule:
--
--   anc        keys of the nodes from the root down to the node, both included
--   idx_path   child_index of each step (root excluded); orders paths earliest-first
--   n_steps    number of steps (root excluded)
--   sum_q      Q summed over the steps, root first, so sum_q / n_steps is the mean Q
--   min_q      smallest Q over the steps (NULL at the root)
--   has_error  some step on the path has code that errored
--
-- Reads the table `node`.
WITH RECURSIVE walk(nid, anc, idx_path, n_steps, sum_q, min_q, has_error) AS (
    SELECT nid, [nid], CAST([] AS BIGINT[]), 0, CAST(0.0 AS DOUBLE), CAST(NULL AS DOUBLE), false
    FROM node
    WHERE parent_id IS NULL
    UNION ALL
    SELECT
        child.nid,
        list_append(walk.anc, child.nid),
        list_append(walk.idx_path, child.child_index),
        walk.n_steps + 1,
        walk.sum_q + child.q,
        least(walk.min_q, child.q),
        walk.has_error OR child.is_error
    FROM walk
    JOIN node AS child ON child.parent_nid = walk.nid
)
SELECT * FROM walk
