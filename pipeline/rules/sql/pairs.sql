-- pairs: step-level preference pairs for the PPM (docs/algorithm.md, "PPM pairs"; the
-- `pairs` contract of section 3).
--
-- 1. For every node, count the correct and the wrong terminals in its subtree, the node itself
--    included: correct = graded answer that is right; wrong = graded answer that is wrong.
--    Invalid terminals (too_many_errors, too_deep, unparsable) count as neither, as in the
--    reference (rStar-math, extra_rm_file.py), which labels only graded answers.
-- 2. Visit nodes breadth-first from the root (always visited), descending only into children
--    with both correct and wrong terminals below them.
-- 3. At a visited node: positives = children with a correct terminal below, by Q descending;
--    negatives = children with a wrong terminal below, by Q ascending; equal Q goes to the lower
--    child_index. Take 2 of each; if one side has exactly 1, take up to 4 of the other; a side
--    with none gives no pairs. weight = 1 / (n_pos * n_neg) over the children taken.
-- 4. A positive x negative combination is a candidate when Q(pos) - Q(neg) > 0 and the mean Q
--    of the best continuation from the positive exceeds that of the worst continuation from the
--    negative. Best continuation: from the positive, repeatedly step to the child with the
--    highest Q among the children with a correct terminal below, until there is none; worst
--    continuation: the same with the lowest Q among the children with a wrong terminal below.
--    The mean is over the nodes of the continuation, its start included.
-- 5. Keep candidates with margin = Q(pos) - Q(neg) >= $min_margin and
--    levenshtein(chosen, rejected) >= $min_edit.
--
-- split: 'test' for a problem whose hash_position(problem_id) (pipeline.ids: the first 8 hex
-- digits of its sha256 over 2^32) is below $heldout_fraction, else 'train'; every pair of a problem shares it (section 2: "split into
-- train and held-out by problem").
--
-- prefix: the problem's prompt, $prefix_glue (pipeline.search.steps.generation_prefix("", [])),
-- then the step texts from the root's child down to the node where the pair was formed.
--
-- Reads the tables `node`, `path` and `problem` (with each problem's prompt); parameters
-- $min_margin, $min_edit, $heldout_fraction and $prefix_glue.
WITH RECURSIVE
outcome AS (
    SELECT
        path.anc,
        node.correct IS TRUE AS is_correct,
        node.correct IS FALSE AS is_wrong
    FROM node
    JOIN path USING (nid)
    WHERE node.terminal_kind = 'answer' AND node.correct IS NOT NULL
),
subtree AS MATERIALIZED (
    SELECT
        nid,
        count(*) FILTER (WHERE is_correct) AS n_correct,
        count(*) FILTER (WHERE is_wrong) AS n_wrong
    FROM (SELECT unnest(anc) AS nid, is_correct, is_wrong FROM outcome)
    GROUP BY nid
),
-- Only children with some counted terminal below can be a positive, a negative or a step of
-- a continuation, so the rest of the tree is left out here.
ranked AS MATERIALIZED (
    SELECT
        node.nid,
        node.parent_nid,
        node.child_index,
        node.q,
        node.step_text,
        subtree.n_correct,
        subtree.n_wrong,
        CASE WHEN subtree.n_correct > 0 THEN row_number() OVER (
            PARTITION BY node.parent_nid, subtree.n_correct > 0
            ORDER BY node.q DESC, node.child_index
        ) END AS pos_rank,
        CASE WHEN subtree.n_wrong > 0 THEN row_number() OVER (
            PARTITION BY node.parent_nid, subtree.n_wrong > 0
            ORDER BY node.q ASC, node.child_index
        ) END AS neg_rank
    FROM node
    JOIN subtree USING (nid)
    WHERE node.parent_nid IS NOT NULL
      AND (subtree.n_correct > 0 OR subtree.n_wrong > 0)
),
-- Counts only grow toward the root, so every ancestor of a mixed node is mixed: the nodes the
-- breadth-first walk visits are exactly the roots and the mixed nodes.
visited AS (
    SELECT nid FROM node WHERE parent_id IS NULL
    UNION ALL
    SELECT nid FROM ranked WHERE n_correct > 0 AND n_wrong > 0
),
available AS (
    SELECT
        ranked.parent_nid AS at_nid,
        count(*) FILTER (WHERE ranked.pos_rank IS NOT NULL) AS n_pos_available,
        count(*) FILTER (WHERE ranked.neg_rank IS NOT NULL) AS n_neg_available
    FROM ranked
    SEMI JOIN visited ON visited.nid = ranked.parent_nid
    GROUP BY ranked.parent_nid
),
taken AS MATERIALIZED (
    SELECT
        at_nid,
        least(n_pos_available, CASE WHEN n_neg_available = 1 THEN 4 ELSE 2 END) AS n_pos,
        least(n_neg_available, CASE WHEN n_pos_available = 1 THEN 4 ELSE 2 END) AS n_neg
    FROM available
    WHERE n_pos_available > 0 AND n_neg_available > 0
),
positive AS MATERIALIZED (
    SELECT ranked.*, taken.n_pos, taken.n_neg
    FROM ranked JOIN taken ON taken.at_nid = ranked.parent_nid
    WHERE ranked.pos_rank <= taken.n_pos
),
negative AS MATERIALIZED (
    SELECT ranked.*
    FROM ranked JOIN taken ON taken.at_nid = ranked.parent_nid
    WHERE ranked.neg_rank <= taken.n_neg
),
continuation(start_nid, side, at_nid, n_nodes, sum_q) AS (
    SELECT * FROM (
        SELECT nid, 'best', nid, 1, q FROM positive
        UNION ALL
        SELECT nid, 'worst', nid, 1, q FROM negative
    )
    UNION ALL
    SELECT continuation.start_nid, continuation.side, ranked.nid, continuation.n_nodes + 1,
           continuation.sum_q + ranked.q
    FROM continuation
    JOIN ranked ON ranked.parent_nid = continuation.at_nid
    WHERE (continuation.side = 'best' AND ranked.pos_rank = 1)
       OR (continuation.side = 'worst' AND ranked.neg_rank = 1)
),
continuation_mean AS MATERIALIZED (
    SELECT start_nid, side, arg_max(sum_q, n_nodes) / max(n_nodes) AS mean_q
    FROM continuation
    GROUP BY start_nid, side
),
-- The edit distance is the costly test, so it runs last, on candidates only, and once: it is
-- a column of this materialised table. The distance is at least the difference of the lengths,
-- which settles many pairs without computing it.
candidate AS MATERIALIZED (
    SELECT
        *,
        CASE
            WHEN abs(length(chosen) - length(rejected)) >= $min_edit THEN true
            ELSE levenshtein(chosen, rejected) >= $min_edit
        END AS far_enough
    FROM (
        SELECT
            positive.parent_nid AS at_nid,
            positive.pos_rank,
            negative.neg_rank,
            positive.step_text AS chosen,
            negative.step_text AS rejected,
            positive.q AS chosen_q,
            negative.q AS rejected_q,
            positive.q - negative.q AS margin,
            CAST(1 AS DOUBLE) / (positive.n_pos * positive.n_neg) AS weight
        FROM positive
        JOIN negative ON negative.parent_nid = positive.parent_nid
        JOIN continuation_mean AS best
            ON best.start_nid = positive.nid AND best.side = 'best'
        JOIN continuation_mean AS worst
            ON worst.start_nid = negative.nid AND worst.side = 'worst'
        WHERE positive.q - negative.q > 0
          AND best.mean_q > worst.mean_q
          AND positive.q - negative.q >= $min_margin
    )
),
kept AS MATERIALIZED (
    SELECT * EXCLUDE (far_enough) FROM candidate WHERE far_enough
),
-- The solution text at every visited node: the step texts from the root's child down to it,
-- built along the visited nodes.
visited_solution(nid, solution) AS (
    SELECT nid, '' FROM node WHERE parent_id IS NULL
    UNION ALL
    SELECT ranked.nid, visited_solution.solution || ranked.step_text
    FROM visited_solution
    JOIN ranked ON ranked.parent_nid = visited_solution.nid
    WHERE ranked.n_correct > 0 AND ranked.n_wrong > 0
)
SELECT
    at_node.problem_id,
    at_node.round,
    at_node.node_id,
    problem.prompt || $prefix_glue || visited_solution.solution AS prefix,
    kept.chosen,
    kept.rejected,
    kept.chosen_q,
    kept.rejected_q,
    kept.margin,
    kept.weight,
    CASE
        WHEN hash_position(at_node.problem_id) < $heldout_fraction THEN 'test'
        ELSE 'train'
    END AS split
FROM kept
JOIN node AS at_node ON at_node.nid = kept.at_nid
JOIN path AS at_path ON at_path.nid = kept.at_nid
JOIN problem ON problem.problem_id = at_node.problem_id
JOIN visited_solution ON visited_solution.nid = kept.at_nid
ORDER BY at_node.problem_id, at_node.round, at_path.n_steps, at_path.idx_path,
         kept.pos_rank, kept.neg_rank
