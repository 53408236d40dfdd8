"""Seeded generator of arithmetic and algebra word problems with reference solutions.

The embedded default seed source (docs/algorithm.md): nothing to download, and since
the generator knows each computation it also writes a reference solution in the step format,
which the warm start (round 0) fine-tunes on. Five difficulty levels:

1. one operation on small numbers;
2. two operations;
3. three or more operations on larger numbers;
4. fractions, percentages, rates and ratios;
5. a linear equation, a small linear system, work rates, a reverse percentage, consecutive
   integers (sympy in the solution code).

Answers are exact (:class:`fractions.Fraction`) and written the way MATH answers are: integers
as ``42``, other rationals as ``\\frac{7}{2}`` (sign in front). A solution's program prints
Python's ``str`` of the value (``42`` or ``7/2``). Problem ``i`` depends only on ``(seed, i)``,
so a larger ``n`` extends a smaller one.

Each kind of problem is a function that draws its numbers, lists its solution steps and names
its parameters; the parameters fill the kind's question templates and go into ``meta``, so a
test can recompute every answer independently.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from math import gcd

from pipeline.ids import problem_id
from pipeline.search.steps import answer_step, code_step, last_code_step, render_solution

LEVELS = (1, 2, 3, 4, 5)
GENERATOR_VERSION = 1

Params = dict[str, int | str]
Steps = list[tuple[str, str]]  # (comment, code) per code step; the last one prints the answer


@dataclass(frozen=True)
class GeneratedProblem:
    """One problem: its text, exact answer, solution steps and how it was built."""

    question: str
    value: Fraction
    steps: tuple[tuple[str, str], ...]
    level: int
    kind: str
    operations: tuple[str, ...]
    params: Params = field(default_factory=dict)

    @property
    def answer(self) -> str:
        return format_answer(self.value)

    @property
    def solution(self) -> str:
        """The reference solution: commented code steps, the printed output, the answer."""
        texts = [
            f"# Step {i}: {comment}\n{code}" for i, (comment, code) in enumerate(self.steps, 1)
        ]
        closing = [last_code_step(texts[-1], str(self.value)), answer_step(self.answer)]
        return render_solution([code_step(text) for text in texts[:-1]] + closing)

    @property
    def meta(self) -> dict[str, object]:
        return {
            "level": self.level,
            "kind": self.kind,
            "operations": list(self.operations),
            "params": self.params,
            "generator": GENERATOR_VERSION,
        }


def format_answer(value: Fraction) -> str:
    """``42``, ``-3``, ``\\frac{7}{2}`` or ``-\\frac{7}{2}``: what graders and MATH expect."""
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


# --------------------------------------------------------------------------- vocabulary

_PEOPLE = (  # (name, pronoun)
    ("Ava", "she"), ("Liam", "he"), ("Mia", "she"), ("Noah", "he"), ("Sofia", "she"),
    ("Mateo", "he"), ("Aisha", "she"), ("Kenji", "he"), ("Priya", "she"), ("Omar", "he"),
    ("Zoe", "she"), ("Diego", "he"), ("Fatima", "she"), ("Chen", "he"), ("Elena", "she"),
    ("Kwame", "he"), ("Hana", "she"), ("Lucas", "he"), ("Amara", "she"), ("Ravi", "he"),
    ("Ingrid", "she"), ("Tomas", "he"), ("Yara", "she"), ("Jonah", "he"), ("Leila", "she"),
    ("Marcus", "he"), ("Nadia", "she"), ("Felix", "he"), ("Rosa", "she"), ("Arjun", "he"),
    ("Grace", "she"), ("Mohammed", "he"), ("Chloe", "she"), ("Ivan", "he"), ("Lucia", "she"),
    ("Samuel", "he"), ("Naomi", "she"), ("Pedro", "he"), ("Keiko", "she"), ("Ethan", "he"),
)  # fmt: skip
_ITEMS = (
    "apples", "marbles", "stickers", "pencils", "cookies", "books", "seashells", "cards",
    "stamps", "balloons", "cupcakes", "toy cars", "beads", "crayons", "oranges", "muffins",
    "notebooks", "ribbons", "shells", "coins", "erasers", "tomatoes", "buttons", "postcards",
)  # fmt: skip
_CONTAINERS = (
    ("box", "boxes"), ("bag", "bags"), ("jar", "jars"), ("basket", "baskets"), ("tin", "tins"),
    ("crate", "crates"), ("tray", "trays"), ("bucket", "buckets"), ("pouch", "pouches"),
)  # fmt: skip
_GOODS = (  # (singular, plural, lowest price, highest price) in dollars
    ("notebook", "notebooks", 2, 6), ("pen", "pens", 1, 4), ("sandwich", "sandwiches", 4, 9),
    ("movie ticket", "movie tickets", 8, 15), ("plant", "plants", 5, 20),
    ("T-shirt", "T-shirts", 8, 25), ("mug", "mugs", 3, 12), ("ball", "balls", 4, 15),
    ("book", "books", 6, 20), ("candle", "candles", 2, 9), ("puzzle", "puzzles", 7, 18),
    ("pizza", "pizzas", 9, 16), ("bus pass", "bus passes", 3, 10), ("scarf", "scarves", 6, 22),
)  # fmt: skip
_BIG_GOODS = ("bike", "jacket", "tablet", "guitar", "camera", "sofa", "lamp", "pair of boots")
_STOCK = ("shirts", "hats", "backpacks", "lamps", "jackets", "toys", "plates", "towels")
_FAST = ("drives", "rides the train", "takes the bus", "sails", "rides a motorbike")
_SLOW = ("cycles", "rides a scooter", "skates", "rows a boat", "rides a horse")
_FILLERS = ("pipe", "pump", "hose", "tap")
_JOBS = ("babysitting", "tutoring", "at the bakery", "at the library", "walking dogs", "at a café")
_EVENTS = ("school play", "concert", "museum", "zoo", "science fair", "puppet show")
_EXPENSES = ("rent", "groceries", "a bike", "books", "a gift", "a concert ticket", "clothes")

# --------------------------------------------------------------------------- question templates
# Fields: a kind's parameters, the person ({name} {he} {He} {his} {him}) and its extra words.

TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": (
        "{name} has {a} {items}. {He} finds {b} more. How many {items} does {name} have now?",
        "There are {a} {items} in a {box}, and {name} puts in {b} more. How many {items} are in the {box} now?",
        "{name} collected {a} {items} on Monday and {b} {items} on Tuesday. How many {items} did {he} collect in all?",
    ),
    "subtract": (
        "{name} had {a} {items} and gave {b} of them to a friend. How many {items} does {name} have left?",
        "A {box} holds {a} {items}. {name} takes out {b}. How many {items} are still in the {box}?",
        "{name} needs {a} {items} for a project and already has {b}. How many more {items} does {he} need?",
    ),
    "multiply": (
        "{name} has {groups} {boxes} of {items} with {each} {items} in each {box}. How many {items} does {he} have?",
        "There are {each} {items} in every {box}. How many {items} are there in {groups} {boxes}?",
        "{name} buys {groups} packs of {items}. Each pack has {each} {items}. How many {items} did {he} buy?",
    ),
    "divide": (
        "{name} shares {total} {items} equally among {people} friends. How many {items} does each friend get?",
        "{total} {items} are packed into {people} {boxes} with the same number in each. How many {items} are in each {box}?",
        "A teacher hands out {total} {items} so that each of {people} students gets the same number. How many {items} does each student get?",
    ),
    "buy_change": (
        "{name} buys {count} {many} that cost ${price} each and pays with a ${paid} bill. How much change does {he} get, in dollars?",
        "One {one} costs ${price}. {name} pays for {count} {many} with ${paid}. How many dollars of change should {he} receive?",
        "At a market, {many} sell for ${price} apiece. If {name} hands over ${paid} for {count} {many}, how much change, in dollars, comes back?",
    ),
    "groups_plus_extra": (
        "{name} has {groups} {boxes} with {each} {items} in each, plus {extra} loose {items}. How many {items} does {he} have altogether?",
        "A shop packs {items} in {boxes} of {each}. It has {groups} full {boxes} and {extra} more {items} on the counter. How many {items} does the shop have?",
        "{name} filled {groups} {boxes} with {each} {items} each and still had {extra} {items} left over. How many {items} did {he} start with?",
    ),
    "gain_then_lose": (
        "{name} had {start} {items}. {He} got {gained} more for {his} birthday and then lost {lost}. How many {items} does {he} have now?",
        "A {box} contained {start} {items}. Someone added {gained} {items}, and later {lost} {items} were taken out. How many {items} are in the {box}?",
        "{name} starts the week with {start} {items}, buys {gained} on Wednesday and gives away {lost} on Friday. How many {items} are left at the end of the week?",
    ),
    "keep_then_share": (
        "{name} has {total} {items}. {He} keeps {kept} for {him}self and shares the rest equally among {friends} friends. How many {items} does each friend get?",
        "Out of {total} {items}, {name} sets aside {kept} and splits the others evenly into {friends} gift bags. How many {items} go in each bag?",
    ),
    "two_items_change": (
        "{name} buys {n1} {many1} at ${p1} each and {n2} {many2} at ${p2} each. {He} pays with ${paid}. How much change does {he} get, in dollars?",
        "{Many1} cost ${p1} each and {many2} cost ${p2} each. If {name} buys {n1} {many1} and {n2} {many2} and pays ${paid}, how many dollars of change does {he} receive?",
    ),
    "wage_weeks": (
        "{name} earns ${rate} an hour {job}. {He} works {hours} hours a day, {days} days a week. How many dollars does {he} earn in {weeks} weeks?",
        "Working {job} pays {name} ${rate} per hour. If {he} works {hours} hours on each of {days} days every week, how much money does {he} make in {weeks} weeks?",
    ),
    "average_needed": (
        "{name} scored {listed} on {his} first {done} tests. What score does {he} need on test number {tests} to have an average of exactly {target}?",
        "After {done} quizzes with scores {listed}, {name} wants an average of {target} over all {tests} quizzes. What must {he} score on the last quiz?",
    ),
    "reading_plan": (
        "{name} is reading a {book}-page book. {He} reads {monday} pages on Monday, twice as many on Tuesday, and {fewer} fewer pages on Wednesday than on Tuesday. How many pages are left to read?",
        "A novel has {book} pages. On Monday {name} read {monday} pages; on Tuesday {he} read double that, and on Wednesday {he} read {fewer} pages less than on Tuesday. How many pages does {he} still have to read?",
    ),
    "fraction_then_percent": (
        "A store has {total} {stock}. It sells {num}/{den} of them in the morning and {percent}% of the remaining {stock} in the afternoon. How many {stock} are left?",
        "{name} has {total} {stock} to sell. {He} sells {num}/{den} of them on Saturday and then {percent}% of what is left on Sunday. How many {stock} remain unsold?",
    ),
    "discount_coupon": (
        "A {good} costs ${price}. It is on sale for {percent}% off, and {name} also uses a ${coupon} coupon after the discount. How many dollars does {name} pay?",
        "{name} wants a ${price} {good}. The shop takes {percent}% off the price, then {name}'s ${coupon} voucher is applied. What is the final price in dollars?",
    ),
    "travel_time": (
        "{name} {fast} {dist1} {unit} at {speed1} {unit} per hour, then {slow} the remaining {dist2} {unit} at {speed2} {unit} per hour. How many hours does the whole trip take?",
        "A trip has two parts: {dist1} {unit} at an average speed of {speed1} {unit} per hour and {dist2} {unit} at {speed2} {unit} per hour. How long, in hours, is the trip in total?",
    ),
    "unit_rate": (
        "If {known} {many} cost ${cost}, how many dollars do {wanted} {many} cost at the same price?",
        "{name} paid ${cost} for {known} {many}. At that rate, how much would {wanted} {many} cost, in dollars?",
    ),
    "ratio_share": (
        "{name} and {other} share ${total} in the ratio {a}:{b}. How many dollars does {name} get?",
        "A prize of ${total} is split between {name} and {other} in the ratio {a} to {b}. What is {name}'s share in dollars?",
    ),
    "linear_equation": (
        "Solve for x: {left} = {right}.",
        "Find the value of x that satisfies {left} = {right}.",
        "What value of x makes the equation {left} = {right} true?",
    ),
    "tickets_system": (
        "Tickets to the {event} cost ${adult_price} for adults and ${child_price} for children. {total} tickets were sold for a total of ${revenue}. How many {asked} tickets were sold?",
        "The {event} sold {total} tickets and took in ${revenue}. An adult ticket costs ${adult_price} and a child ticket ${child_price}. How many {asked} tickets were sold?",
    ),
    "work_rate": (
        "One {filler} can fill a tank in {first} hours and a second {filler} can fill it in {second} hours. How many hours does it take to fill the tank with both {filler}s working together?",
        "Working alone, a {filler} fills a pool in {first} hours; another {filler} needs {second} hours. If both run at once, how long does filling the pool take, in hours?",
    ),
    "reverse_percent": (
        "{name} spent {num}/{den} of {his} money on {first_buy} and then {percent}% of what was left on {second_buy}. {He} now has ${left}. How many dollars did {he} have at first?",
        "After spending {num}/{den} of {his} savings on {first_buy} and {percent}% of the remainder on {second_buy}, {name} has ${left} left. How much were {his} savings at the start, in dollars?",
    ),
    "consecutive_sum": (
        "The sum of {count} consecutive {numbers} is {total}. What is the {ask} of them?",
        "{count} consecutive {numbers} add up to {total}. Find the {ask} one.",
    ),
}  # fmt: skip


def _make(
    rng: random.Random,
    kind: str,
    value: Fraction | int,
    params: Params,
    steps: Steps,
    person: tuple[str, str] | None = None,
    **words: str,
) -> GeneratedProblem:
    """Fill one of the kind's templates with its parameters, a person and extra words."""
    name, he = person or rng.choice(_PEOPLE)
    his, him = ("his", "him") if he == "he" else ("her", "her")
    fields = {"name": name, "he": he, "He": he.capitalize(), "his": his, "him": him}
    question = rng.choice(TEMPLATES[kind]).format(**fields, **words, **params)
    level = next(level for level, kinds in KINDS.items() if kind in {k.__name__[1:] for k in kinds})
    return GeneratedProblem(
        question, Fraction(value), tuple(steps), level, kind, OPERATIONS[kind], params
    )


def _items(rng: random.Random) -> dict[str, str]:
    box, boxes = rng.choice(_CONTAINERS)
    return {"items": rng.choice(_ITEMS), "box": box, "boxes": boxes}


# --------------------------------------------------------------------------- level 1


def _add(rng: random.Random) -> GeneratedProblem:
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    steps = [
        ("write down the two amounts", f"first = {a}\nsecond = {b}"),
        (
            "putting them together means adding; print the total",
            "total = first + second\nprint(total)",
        ),
    ]
    return _make(rng, "add", a + b, {"a": a, "b": b}, steps, **_items(rng))


def _subtract(rng: random.Random) -> GeneratedProblem:
    a = rng.randint(6, 20)
    b = rng.randint(1, a - 1)
    steps = [
        ("the starting amount and the part taken away", f"start = {a}\ntaken = {b}"),
        ("what remains is the difference; print it", "remaining = start - taken\nprint(remaining)"),
    ]
    return _make(rng, "subtract", a - b, {"a": a, "b": b}, steps, **_items(rng))


def _multiply(rng: random.Random) -> GeneratedProblem:
    groups, each = rng.randint(2, 10), rng.randint(2, 10)
    steps = [
        (
            "the number of equal groups and the size of each",
            f"groups = {groups}\nper_group = {each}",
        ),
        (
            "equal groups combine by multiplying; print the total",
            "total = groups * per_group\nprint(total)",
        ),
    ]
    params = {"groups": groups, "each": each}
    return _make(rng, "multiply", groups * each, params, steps, **_items(rng))


def _divide(rng: random.Random) -> GeneratedProblem:
    people, each = rng.randint(2, 10), rng.randint(2, 10)
    total = people * each
    steps = [
        ("the total and the number of equal shares", f"total = {total}\nshares = {people}"),
        (
            "sharing equally is division; it comes out exact, so use //",
            "each = total // shares\nprint(each)",
        ),
    ]
    params = {"total": total, "people": people}
    return _make(rng, "divide", each, params, steps, **_items(rng))


# --------------------------------------------------------------------------- level 2


def _buy_change(rng: random.Random) -> GeneratedProblem:
    one, many, low, high = rng.choice(_GOODS)
    count, price = rng.randint(2, 9), rng.randint(low, high)
    paid = next(bill for bill in (20, 50, 100, 200, 500) if bill >= count * price)
    steps = [
        (f"the {many} cost {count} times ${price}", f"cost = {count} * {price}"),
        (
            "the change is what was paid minus the cost; print it",
            f"paid = {paid}\nchange = paid - cost\nprint(change)",
        ),
    ]
    params = {"count": count, "price": price, "paid": paid}
    return _make(rng, "buy_change", paid - count * price, params, steps, one=one, many=many)


def _groups_plus_extra(rng: random.Random) -> GeneratedProblem:
    groups, each, extra = rng.randint(3, 12), rng.randint(3, 12), rng.randint(1, 20)
    steps = [
        ("the full groups hold groups times size items", f"in_groups = {groups} * {each}"),
        (
            "add the loose ones and print the total",
            f"loose = {extra}\ntotal = in_groups + loose\nprint(total)",
        ),
    ]
    params = {"groups": groups, "each": each, "extra": extra}
    return _make(rng, "groups_plus_extra", groups * each + extra, params, steps, **_items(rng))


def _gain_then_lose(rng: random.Random) -> GeneratedProblem:
    start, gained = rng.randint(10, 60), rng.randint(5, 40)
    lost = rng.randint(1, start + gained - 1)
    steps = [
        ("first add what was gained to the start", f"after_gain = {start} + {gained}"),
        (
            "then take away what was lost; print the rest",
            f"left = after_gain - {lost}\nprint(left)",
        ),
    ]
    params = {"start": start, "gained": gained, "lost": lost}
    return _make(rng, "gain_then_lose", start + gained - lost, params, steps, **_items(rng))


def _keep_then_share(rng: random.Random) -> GeneratedProblem:
    friends, each, kept = rng.randint(2, 8), rng.randint(2, 12), rng.randint(1, 15)
    total = kept + friends * each
    steps = [
        ("what gets shared is the total minus what is kept", f"shared = {total} - {kept}"),
        (
            "split it evenly (it comes out exact, so //); print one share",
            f"each = shared // {friends}\nprint(each)",
        ),
    ]
    params = {"total": total, "kept": kept, "friends": friends}
    return _make(rng, "keep_then_share", each, params, steps, **_items(rng))


# --------------------------------------------------------------------------- level 3


def _two_items_change(rng: random.Random) -> GeneratedProblem:
    (_, many1, low1, high1), (_, many2, low2, high2) = rng.sample(_GOODS, 2)
    n1, p1 = rng.randint(2, 8), rng.randint(low1, high1)
    n2, p2 = rng.randint(2, 8), rng.randint(low2, high2)
    paid = next(bill for bill in (50, 100, 200, 500) if bill >= n1 * p1 + n2 * p2)
    steps = [
        (f"cost of the {many1}", f"cost_first = {n1} * {p1}"),
        (f"cost of the {many2}", f"cost_second = {n2} * {p2}"),
        ("the bill is both costs; the change is the payment minus the bill; print it",
         f"bill = cost_first + cost_second\nchange = {paid} - bill\nprint(change)"),
    ]  # fmt: skip
    params = {"n1": n1, "p1": p1, "n2": n2, "p2": p2, "paid": paid}
    words = {"many1": many1, "Many1": many1.capitalize(), "many2": many2}
    return _make(rng, "two_items_change", paid - n1 * p1 - n2 * p2, params, steps, **words)


def _wage_weeks(rng: random.Random) -> GeneratedProblem:
    hours, days, rate, weeks = (
        rng.randint(2, 8),
        rng.randint(2, 6),
        rng.randint(8, 25),
        rng.randint(2, 6),
    )
    steps = [
        ("hours worked in one week", f"hours_per_week = {hours} * {days}"),
        ("pay for one week at the hourly rate", f"pay_per_week = hours_per_week * {rate}"),
        (
            "pay for all the weeks; print it",
            f"total_pay = pay_per_week * {weeks}\nprint(total_pay)",
        ),
    ]
    params = {"hours": hours, "days": days, "rate": rate, "weeks": weeks}
    return _make(
        rng, "wage_weeks", hours * days * rate * weeks, params, steps, job=rng.choice(_JOBS)
    )


def _average_needed(rng: random.Random) -> GeneratedProblem:
    tests, target = rng.randint(3, 5), rng.randint(70, 92)
    scores = [rng.randint(60, 98) for _ in range(tests - 1)]
    needed = target * tests - sum(scores)
    if not 40 <= needed <= 100:  # not a score a test can give: draw again
        return _average_needed(rng)
    steps = [
        (f"an average of {target} over {tests} tests needs this many points", f"points_needed = {target} * {tests}"),
        ("points already earned", f"scores = {scores}\npoints_so_far = sum(scores)"),
        ("the last test must make up the difference; print it",
         "last_score = points_needed - points_so_far\nprint(last_score)"),
    ]  # fmt: skip
    params = {"tests": tests, "target": target, "scores": ",".join(map(str, scores))}
    listed = ", ".join(map(str, scores[:-1])) + f" and {scores[-1]}"
    return _make(rng, "average_needed", needed, params, steps, listed=listed, done=str(tests - 1))


def _reading_plan(rng: random.Random) -> GeneratedProblem:
    monday, fewer = rng.randint(8, 40), rng.randint(1, 7)
    book = monday + 2 * monday + (2 * monday - fewer) + rng.randint(5, 120)
    steps = [
        ("Tuesday is twice Monday", f"monday = {monday}\ntuesday = 2 * monday"),
        ("Wednesday is a few pages fewer than Tuesday", f"wednesday = tuesday - {fewer}"),
        ("pages left are the book minus the three days of reading; print it",
         f"read = monday + tuesday + wednesday\nleft = {book} - read\nprint(left)"),
    ]  # fmt: skip
    left = book - monday - 2 * monday - (2 * monday - fewer)
    return _make(rng, "reading_plan", left, {"book": book, "monday": monday, "fewer": fewer}, steps)


# --------------------------------------------------------------------------- level 4


def _fraction_then_percent(rng: random.Random) -> GeneratedProblem:
    den = rng.choice((2, 3, 4, 5, 8))
    num, percent = rng.randint(1, den - 1), rng.choice((10, 20, 25, 40, 50, 60, 75))
    unit = 100 // gcd(100, percent)  # the remainder must be a multiple of this
    block = den * (unit // gcd(unit, den - num))  # smallest total that keeps both steps whole
    total = block * rng.randint(1, max(1, 400 // block))
    rest = Fraction(den - num, den) * total
    steps = [
        (f"{num}/{den} of the {total} are sold first; use exact fractions",
         f"from fractions import Fraction\ntotal = {total}\nsold_first = Fraction({num}, {den}) * total"),
        ("what remains after the first sale", "remaining = total - sold_first"),
        (f"{percent}% of the remainder is sold next; print what is left",
         f"sold_second = Fraction({percent}, 100) * remaining\nleft = remaining - sold_second\nprint(left)"),
    ]  # fmt: skip
    params = {"total": total, "num": num, "den": den, "percent": percent}
    left = rest * Fraction(100 - percent, 100)
    return _make(rng, "fraction_then_percent", left, params, steps, stock=rng.choice(_STOCK))


def _discount_coupon(rng: random.Random) -> GeneratedProblem:
    percent, price = rng.choice((10, 15, 20, 25, 30, 40, 50)), 20 * rng.randint(2, 25)
    coupon = rng.randint(1, 10)
    steps = [
        (f"the discount is {percent}% of the price",
         f"from fractions import Fraction\nprice = {price}\ndiscount = Fraction({percent}, 100) * price"),
        ("take off the discount, then the coupon; print the final price",
         f"sale_price = price - discount\nfinal_price = sale_price - {coupon}\nprint(final_price)"),
    ]  # fmt: skip
    final = Fraction(price * (100 - percent), 100) - coupon
    params = {"price": price, "percent": percent, "coupon": coupon}
    return _make(rng, "discount_coupon", final, params, steps, good=rng.choice(_BIG_GOODS))


def _travel_time(rng: random.Random) -> GeneratedProblem:
    speed1, speed2 = rng.choice((30, 40, 50, 60, 80)), rng.choice((8, 10, 12, 15, 20))
    dist1, dist2 = speed1 * rng.randint(1, 6) // 2, speed2 * rng.randint(1, 8) // 4
    steps = [
        ("time is distance over speed; keep it exact",
         f"from fractions import Fraction\nfirst_leg = Fraction({dist1}, {speed1})"),
        ("the second leg the same way", f"second_leg = Fraction({dist2}, {speed2})"),
        ("total time in hours; print it", "total_hours = first_leg + second_leg\nprint(total_hours)"),
    ]  # fmt: skip
    hours = Fraction(dist1, speed1) + Fraction(dist2, speed2)
    params = {"dist1": dist1, "speed1": speed1, "dist2": dist2, "speed2": speed2}
    words = {
        "unit": rng.choice(("km", "miles")),
        "fast": rng.choice(_FAST),
        "slow": rng.choice(_SLOW),
    }
    return _make(rng, "travel_time", hours, params, steps, **words)


def _unit_rate(rng: random.Random) -> GeneratedProblem:
    _, many, low, high = rng.choice(_GOODS)
    unit_price = Fraction(rng.randint(2 * low, 2 * high), 2)  # whole or half dollars
    known = rng.choice((2, 4, 6, 8)) if unit_price.denominator == 2 else rng.randint(2, 9)
    wanted = rng.randint(2, 12) * unit_price.denominator
    wanted += unit_price.denominator if wanted == known else 0
    cost = unit_price * known
    steps = [
        ("one item costs the total divided by the count",
         f"from fractions import Fraction\nunit_price = Fraction({cost}, {known})"),
        ("multiply by the number wanted; print the cost", f"cost = unit_price * {wanted}\nprint(cost)"),
    ]  # fmt: skip
    params = {"known": known, "cost": int(cost), "wanted": wanted}
    return _make(rng, "unit_rate", unit_price * wanted, params, steps, many=many)


def _ratio_share(rng: random.Random) -> GeneratedProblem:
    a, b = rng.sample(range(1, 10), 2)
    total = (a + b) * rng.randint(2, 30)
    steps = [
        (f"the ratio {a}:{b} splits the money into equal parts", f"parts = {a} + {b}"),
        ("the value of one part", f"one_part = {total} // parts"),
        (f"the first share is {a} parts; print it", f"share = {a} * one_part\nprint(share)"),
    ]
    (name, he), (other, _) = rng.sample(_PEOPLE, 2)
    params = {"total": total, "a": a, "b": b}
    return _make(rng, "ratio_share", total * a // (a + b), params, steps, (name, he), other=other)


# --------------------------------------------------------------------------- level 5


def _linear_equation(rng: random.Random) -> GeneratedProblem:
    a, c = rng.sample([k for k in range(-9, 10) if k], 2)
    b, d = rng.randint(-20, 20), rng.randint(-20, 20)
    steps = [
        ("write the equation with a sympy symbol",
         "from sympy import symbols, Eq, solve\nx = symbols('x')\n"
         + f"equation = Eq({_linear(a, b, '*x')}, {_linear(c, d, '*x')})"),
        ("solve it for x and print the root", "root = solve(equation, x)[0]\nprint(root)"),
    ]  # fmt: skip
    words = {"left": _linear(a, b), "right": _linear(c, d)}
    params = {"a": a, "b": b, "c": c, "d": d}
    return _make(rng, "linear_equation", Fraction(d - b, a - c), params, steps, **words)


def _linear(slope: int, constant: int, times: str = "x") -> str:
    """slope*x + constant as people write it (``3x - 4``, ``-x + 2``) or as code (``3*x - 4``)."""
    term = {1: "x", -1: "-x"}.get(slope, f"{slope}{times}")
    if constant == 0:
        return term
    return f"{term} {'+' if constant > 0 else '-'} {abs(constant)}"


def _tickets_system(rng: random.Random) -> GeneratedProblem:
    adult_price, child_price = rng.randint(9, 20), rng.randint(3, 8)
    adults, children = rng.randint(20, 150), rng.randint(20, 150)
    asked = rng.choice(("adult", "child"))
    revenue = adult_price * adults + child_price * children
    unknown = "adults" if asked == "adult" else "children"
    steps = [
        ("unknowns: adult and child tickets; one equation counts tickets, one counts money",
         "from sympy import symbols, Eq, solve\nadults, children = symbols('adults children')\n"
         + f"count = Eq(adults + children, {adults + children})\n"
         + f"money = Eq({adult_price}*adults + {child_price}*children, {revenue})"),
        (f"solve the system and print the number of {asked} tickets",
         f"solution = solve([count, money], [adults, children])\nprint(solution[{unknown}])"),
    ]  # fmt: skip
    params = {"adult_price": adult_price, "child_price": child_price, "total": adults + children,
              "revenue": revenue, "asked": asked}  # fmt: skip
    value = adults if asked == "adult" else children
    return _make(rng, "tickets_system", value, params, steps, event=rng.choice(_EVENTS))


def _work_rate(rng: random.Random) -> GeneratedProblem:
    first, second = rng.sample(range(2, 13), 2)
    steps = [
        ("each one fills a fraction of the tank per hour",
         f"from fractions import Fraction\nrate_one = Fraction(1, {first})\nrate_two = Fraction(1, {second})"),
        ("working together, their rates add up", "rate_together = rate_one + rate_two"),
        ("one whole tank takes 1 divided by the combined rate; print it", "hours = 1 / rate_together\nprint(hours)"),
    ]  # fmt: skip
    together = Fraction(first * second, first + second)
    params = {"first": first, "second": second}
    return _make(rng, "work_rate", together, params, steps, filler=rng.choice(_FILLERS))


def _reverse_percent(rng: random.Random) -> GeneratedProblem:
    den, percent = rng.choice((3, 4, 5)), rng.choice((10, 20, 25, 50))
    num = rng.randint(1, den - 1)
    block = den * (100 // gcd(100, percent))  # keeps every amount in whole dollars
    start = block * rng.randint(1, max(1, 600 // block))
    left = Fraction(den - num, den) * start * Fraction(100 - percent, 100)
    steps = [
        ("let m be the starting money; after the first purchase 1 - num/den of it is left",
         f"from sympy import symbols, Eq, Rational, solve\nm = symbols('m')\nafter_first = m * (1 - Rational({num}, {den}))"),
        (f"then {percent}% of that is spent", f"after_second = after_first * (1 - Rational({percent}, 100))"),
        ("what is left is known; solve for m and print it", f"start = solve(Eq(after_second, {left}), m)[0]\nprint(start)"),
    ]  # fmt: skip
    first_buy, second_buy = rng.sample(_EXPENSES, 2)
    params = {"num": num, "den": den, "percent": percent, "left": int(left)}
    words = {"first_buy": first_buy, "second_buy": second_buy}
    return _make(rng, "reverse_percent", start, params, steps, **words)


def _consecutive_sum(rng: random.Random) -> GeneratedProblem:
    count, gap = rng.randint(3, 6), rng.choice((1, 2))
    first = gap * rng.randint(-10, 60)
    total = sum(first + gap * i for i in range(count))
    ask, last = rng.choice(("largest", "smallest")), gap * (count - 1)
    numbers = "even integers" if gap == 2 else "integers"
    term = "n + 2 * i" if gap == 2 else "n + i"
    steps = [
        (f"call the smallest n; the {numbers} are n, n + {gap}, ..., n + {last}",
         f"from sympy import symbols, Eq, solve\nn = symbols('n')\nterms = [{term} for i in range({count})]"),
        ("their sum is given; solve for n", f"smallest = solve(Eq(sum(terms), {total}), n)[0]"),
        (f"the {ask} one; print it",
         f"{ask} = smallest + {last}\nprint({ask})" if ask == "largest" else "print(smallest)"),
    ]  # fmt: skip
    params = {"count": count, "gap": gap, "total": total, "ask": ask}
    value = first + last if ask == "largest" else first
    return _make(rng, "consecutive_sum", value, params, steps, numbers=numbers)


KINDS: dict[int, tuple[Callable[[random.Random], GeneratedProblem], ...]] = {
    1: (_add, _subtract, _multiply, _divide),
    2: (_buy_change, _groups_plus_extra, _gain_then_lose, _keep_then_share),
    3: (_two_items_change, _wage_weeks, _average_needed, _reading_plan),
    4: (_fraction_then_percent, _discount_coupon, _travel_time, _unit_rate, _ratio_share),
    5: (_linear_equation, _tickets_system, _work_rate, _reverse_percent, _consecutive_sum),
}
OPERATIONS: dict[str, tuple[str, ...]] = {
    "add": ("add",), "subtract": ("subtract",), "multiply": ("multiply",), "divide": ("divide",),
    "buy_change": ("multiply", "subtract"), "groups_plus_extra": ("multiply", "add"),
    "gain_then_lose": ("add", "subtract"), "keep_then_share": ("subtract", "divide"),
    "two_items_change": ("multiply", "multiply", "add", "subtract"),
    "wage_weeks": ("multiply", "multiply", "multiply"),
    "average_needed": ("multiply", "add", "subtract"),
    "reading_plan": ("multiply", "subtract", "add", "subtract"),
    "fraction_then_percent": ("fraction", "subtract", "percent", "subtract"),
    "discount_coupon": ("percent", "subtract", "subtract"),
    "travel_time": ("divide", "divide", "add"), "unit_rate": ("divide", "multiply"),
    "ratio_share": ("add", "divide", "multiply"), "linear_equation": ("equation",),
    "tickets_system": ("system",), "work_rate": ("fraction", "add", "divide"),
    "reverse_percent": ("fraction", "percent", "equation"), "consecutive_sum": ("equation",),
}  # fmt: skip


def generate_problems(
    n: int, seed: int = 0, levels: Sequence[int] = LEVELS
) -> list[GeneratedProblem]:
    """``n`` distinct problems, levels in turn, each from its own ``(seed, attempt)`` stream.

    A duplicate question (same normalised text) is skipped and drawn again, so the result has
    exactly ``n`` different problems.
    """
    levels = list(levels)
    if n < 0 or not levels or not set(levels) <= set(KINDS):
        raise ValueError(f"need n >= 0 and levels from {list(LEVELS)}; got n={n}, levels={levels}")
    problems: list[GeneratedProblem] = []
    seen: set[str] = set()
    for attempt in range(50 * n + 100):
        if len(problems) == n:
            break
        rng = random.Random(f"rstar-generator:{seed}:{attempt}")
        problem = rng.choice(KINDS[levels[len(problems) % len(levels)]])(rng)
        if problem_id(problem.question) not in seen:
            seen.add(problem_id(problem.question))
            problems.append(problem)
    if len(problems) < n:
        raise ValueError(f"could only make {len(problems)} distinct problems for levels {levels}")
    return problems
