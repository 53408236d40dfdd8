"""The step format: building, parsing and re-assembling solutions."""

from pipeline.search import steps


def test_solution_round_trips_through_split_and_program():
    step_texts = [
        steps.code_step("# half of 48\nmay = 48 // 2"),
        steps.last_code_step("print(48 + may)", "72"),
        steps.answer_step("72"),
    ]
    solution = steps.render_solution(step_texts)
    assert solution.startswith("<code>\n")
    assert steps.split_solution(solution) == step_texts
    assert steps.solution_program(solution) == "# half of 48\nmay = 48 // 2\nprint(48 + may)"


def test_parse_code_step_cuts_after_first_stop_and_strips_opening_marker():
    parsed = steps.parse_step("<code>\nx = 1\n<end_of_step>\nmore text the engine ran on")
    assert parsed.kind == "code" and parsed.code == "x = 1" and not parsed.ends_code
    assert parsed.text == "<code>\nx = 1\n<end_of_step>\n"


def test_parse_last_code_step_and_observation():
    parsed = steps.parse_step("print(3)\n<end_of_code>")
    assert parsed.kind == "code" and parsed.ends_code
    assert (
        steps.with_observation(parsed, "3\n")
        == "print(3)\n<end_of_code>\n<output>3<end_of_output>\n"
    )


def test_parse_answer_and_unparsable_steps():
    assert steps.parse_step("<answer>So \\boxed{4}<end_of_answer>").kind == "answer"
    cut_off = steps.parse_step("x = 1\ny = ")
    assert cut_off.kind == "unparsable" and cut_off.reason == "no stop marker"
    assert steps.parse_step("<answer>4<end_of_answer>").reason == "answer without \\boxed{}"
    assert steps.parse_step("   \n<end_of_step>").reason == "empty step"
    assert steps.parse_step("x = 1 <output>2\n<end_of_step>").reason == "stray marker in code"


def test_long_observations_are_capped():
    block = steps.output_block("9" * 5000)
    assert len(block) < steps.MAX_OBSERVATION_CHARS + 50


def test_prompts():
    assert steps.sft_prompt(" What is 2+2? ") == (
        "<|user|>:\nWhat is 2+2?\n<|assistant|>: Let's think step by step and solve the problem with code."
    )
    few_shot = steps.few_shot_prompt("What is 2+2?")
    assert few_shot.endswith("Question: What is 2+2?") and few_shot.count("Question: ") == 3
    # The asked question meets its solution as the worked examples' questions meet theirs.
    example = steps._FEW_SHOT_EXAMPLES[0][0]
    assert f"Question: {example}\n<code>\n" in few_shot
    assert steps.generation_prefix(few_shot, []).endswith("Question: What is 2+2?\n<code>\n")
    assert steps.generation_prefix("P", ["a\n<end_of_step>\n"]) == "P\n<code>\na\n<end_of_step>\n"
