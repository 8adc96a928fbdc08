#!/usr/bin/env python
"""Grow the template tasks of data/tasks/*.json to their target size, and write data/neutral_formats.json.

    SNA_GPT2_TOKENIZER=/path/to/gpt2-tokenizer python scripts/make_tasks.py          # rewrite the files
    SNA_GPT2_TOKENIZER=/path/to/gpt2-tokenizer python scripts/make_tasks.py --check  # exit 1 if they differ

Each file keeps its first ``HEAD[task]`` items exactly as written (the original items, and for the
hand-written tasks every item); the items after them are drawn from the task's templates below with a
fixed seed per task, keeping only prompts that are new to the task, whose target is one GPT-2 token
and tokenizes as ``tokens(prompt) + [target]``. data/neutral_formats.json holds each task's templates filled
with content that asks for none of its skill. Running the script twice gives the same files.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path
from typing import Callable

KIT_ROOT = Path(__file__).resolve().parent.parent
TASK_DIR = KIT_ROOT / "data" / "tasks"
MIN_ITEMS = 160  # evaluation half >= 80: >= 40 selection and >= 40 test prompts
GENERATED_SIZE = 168
MAX_PROMPT_TOKENS = 40

# Items kept as written at the head of each file (the rest is regenerated here).
HEAD = {"addition": 56, "multiplication": 56, "number_sequences": 56, "boolean_logic": 52, "syllogisms": 52,
        "python_keywords": 55, "python_syntax": 54, "antonyms": 57, "analogies": 56,
        "famous_verse": None, "rhyme_completion": None, "python_idioms": None}  # None: all items hand-written

Item = tuple[str, str]
Draw = Callable[[random.Random, int], Item]  # (rng, index) -> (prompt, target)


# --- arithmetic -----------------------------------------------------------------------------------

ADD_TEMPLATES = ["Q: What is {a} + {b}?\nA: {a} + {b} =", "{a} + {b} =", "The sum of {a} and {b} is",
                 "If you add {a} and {b}, you get", "3 + 4 = 7\n{a} + {b} =", "{a} plus {b} equals"]
ADD_RANGES = [(1, 9, 1, 9), (10, 99, 1, 9), (10, 99, 10, 99), (100, 499, 1, 99), (100, 499, 100, 499)]
MUL_TEMPLATES = ["{a} x {b} =", "{a} * {b} =", "What is {a} times {b}? Answer:", "2 x 3 = 6\n{a} x {b} =",
                 "The product of {a} and {b} is", "{a} multiplied by {b} equals"]
MUL_RANGES = [(2, 12, 2, 12), (2, 9, 11, 19), (11, 19, 11, 19), (13, 30, 2, 9)]


def _binary(templates: list[str], ranges: list[tuple[int, int, int, int]], op: Callable[[int, int], int]) -> Draw:
    def draw(rng: random.Random, i: int) -> Item:
        lo_a, hi_a, lo_b, hi_b = ranges[i % len(ranges)]
        a, b = rng.randint(lo_a, hi_a), rng.randint(lo_b, hi_b)
        return rng.choice(templates).format(a=a, b=b), f" {op(a, b)}"
    return draw


# --- number sequences -----------------------------------------------------------------------------

SEQ_TEMPLATES = ["{s},", "{s},", "Q: What comes next? {s}\nA:", "The sequence continues: {s},",
                 "What is the next number in the sequence {s}? The next number is"]


def _sequence(rng: random.Random, i: int) -> Item:
    kind, n = i % 5, rng.randint(4, 6)
    if kind == 0:                                   # increasing arithmetic
        a, d = rng.randint(1, 60), rng.randint(2, 15)
        terms = [a + j * d for j in range(n + 1)]
    elif kind == 1:                                 # decreasing arithmetic
        d = rng.randint(2, 12)
        a = rng.randint(n * d + 1, n * d + 90)
        terms = [a - j * d for j in range(n + 1)]
    elif kind == 2:                                 # geometric
        r, a = rng.choice([2, 2, 3]), rng.randint(1, 6)
        terms = [a * r ** j for j in range(min(n, 5) + 1)]
    elif kind == 3:                                 # consecutive squares
        s = rng.randint(2, 20)
        terms = [(s + j) ** 2 for j in range(n + 1)]
    else:                                           # multiples of m from m * s
        m, s = rng.randint(3, 25), rng.randint(1, 6)
        terms = [m * (s + j) for j in range(n + 1)]
    seq = ", ".join(map(str, terms[:-1]))
    return rng.choice(SEQ_TEMPLATES).format(s=seq), f" {terms[-1]}"


# --- Boolean logic --------------------------------------------------------------------------------

def _expr(rng: random.Random, leaves: list[str], ops: tuple[str, str, str], depth: int) -> str:
    """A random expression over ``leaves`` with (and, or, not) spelt as ``ops``."""
    if depth == 0:
        return rng.choice(leaves)
    kind = rng.randrange(3)
    sub = _expr(rng, leaves, ops, depth - 1)
    if kind == 2:
        return f"{ops[2]} {sub}" if depth == 1 else f"{ops[2]} ({sub})"
    other = rng.choice(leaves)
    sub = sub if depth == 1 else f"({sub})"
    return f"{sub} {ops[kind]} {other}" if rng.random() < 0.5 else f"{other} {ops[kind]} {sub}"


PY = ("and", "or", "not")


def _boolean(rng: random.Random, i: int) -> Item:
    form, depth = i % 6, 1 + (i // 6) % 2
    if form in (0, 1, 2):
        e = _expr(rng, ["True", "False"], PY, depth)
        v = str(eval(e))
        return [(f"{e} is", f" {v}"), (f">>> {e}\n", v), (f"Q: What is the value of {e}?\nA:", f" {v}")][form]
    if form == 3:
        x, y = rng.choice(["True", "False"]), rng.choice(["True", "False"])
        e = _expr(rng, ["x", "y"], PY, depth)
        return f"x = {x}\ny = {y}\nprint({e})\n# Output:", f" {eval(e, {'x': eval(x), 'y': eval(y)})}"
    if form == 4:
        e = _expr(rng, ["1", "0"], ("AND", "OR", "NOT"), depth)
        v = int(eval(e.replace("AND", "and").replace("OR", "or").replace("NOT", "not")))
        return rng.choice([f"{e} =", f"In Boolean logic, {e} equals"]), f" {v}"
    e = _expr(rng, ["T", "F"], ("AND", "OR", "NOT"), depth)
    v = eval(e.replace("AND", "and").replace("OR", "or").replace("NOT", "not"), {"T": True, "F": False})
    return f"{e} =", f" {'T' if v else 'F'}"


# --- syllogisms over nonsense words ---------------------------------------------------------------

NONSENSE = ["blorp", "tazz", "fendle", "quib", "snib", "varn", "dreel", "mupp", "zant", "kreb", "plim", "torv",
            "yump", "grell", "fosk", "lunt", "brimp", "chog", "sprock", "wib", "nurl", "gorp", "teeb", "vop"]
NAMES = ["Ada", "Bo", "Cal", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kai", "Lev", "Max", "Ned", "Ola",
         "Pia", "Roy", "Sal", "Ted", "Una", "Val", "Wes", "Zed", "Mia"]
PROPERTIES = ["red", "blue", "green", "tall", "small", "soft", "loud", "cold", "warm", "fast", "slow", "heavy",
              "round", "sharp", "wet", "dry", "old", "young", "happy", "brave", "quiet", "bright", "sweet", "hard"]
SYLLOGISMS = [("All {X}s are {p}. {N} is a {X}. Therefore, {N} is", " {p}"),
              ("Every {X} is {p}. {N} is a {X}. So {N} is", " {p}"),
              ("Premise 1: All {X}s are {p}.\nPremise 2: {N} is a {X}.\nConclusion: {N} is", " {p}"),
              ("All {X}s are {p}. {N} is a {X}. Is {N} {p}? Answer:", " Yes"),
              ("No {X}s are {p}. {N} is a {X}. Is {N} {p}? Answer:", " No"),
              ("All {X}s are {Y}s. All {Y}s are {p}. Therefore, all {X}s are", " {p}"),
              ("If something is a {X}, it is {p}. {N} is a {X}. Therefore, {N} is", " {p}")]


def _syllogism(rng: random.Random, i: int) -> Item:
    x, y = rng.sample(NONSENSE, 2)
    fill = dict(X=x, Y=y, N=rng.choice(NAMES), p=rng.choice(PROPERTIES))
    prompt, target = SYLLOGISMS[i % len(SYLLOGISMS)]
    return prompt.format(**fill), target.format(**fill)


# --- Python keywords and syntax -------------------------------------------------------------------

PLURALS = {"item": "items", "row": "rows", "line": "lines", "word": "words", "name": "names", "key": "keys",
           "idx": "indices", "char": "chars", "child": "children", "node": "nodes", "user": "users", "path": "paths",
           "task": "tasks", "batch": "batches", "epoch": "epochs", "col": "cols", "value": "values", "token": "tokens",
           "record": "records", "entry": "entries", "point": "points"}
VARS = list(PLURALS)
MODULES = ["itertools", "functools", "dataclasses", "pathlib", "datetime", "random", "json", "abc", "enum",
           "contextlib", "statistics", "fractions", "decimal", "copy", "string", "operator", "heapq", "bisect",
           "unittest", "argparse", "logging", "subprocess", "urllib.parse", "torch", "sklearn.linear_model"]
ALIASED = ["pandas", "seaborn", "networkx", "polars", "torch.nn.functional", "matplotlib.pyplot", "xarray"]
KEYWORD_TEMPLATES = [("for {v}", " in"), ("{vs} = [{v}.strip() for {v}", " in"), ("from {m}", " import"),
                     ("if {v} is not", " None"), ("if {v} not", " in"), ("total = sum({v} for {v}", " in"),
                     ("{v} = {v}_a if {v}_a > {v}_b", " else"), ("import {a}", " as"),
                     ("with open({v}_path)", " as"), ("def find_{v}(items):\n    for x in items:\n"
                                                    "        if x:\n            return x\n    return", " None")]


def _keyword(rng: random.Random, i: int) -> Item:
    prompt, target = KEYWORD_TEMPLATES[i % len(KEYWORD_TEMPLATES)]
    v = rng.choice(VARS)
    return prompt.format(v=v, vs=PLURALS[v], m=rng.choice(MODULES), a=rng.choice(ALIASED)), target


FUNCS = ["area", "scale", "load", "parse", "merge", "update", "train", "fetch", "render", "solve"]
SYNTAX_TEMPLATES = [("print({v}", ")"), ("def {f}({v}", "):"), ("def {f}({v}, {w}", "):"),
                    ("for {v} in range({n}", "):"), ("if {v} > {n}", ":"), ("while {v} < {n}", ":"),
                    ("{v} = {ws}[{n}", "]"), ("if {v} == {w}", ":"), ("for {v} in {ws}", ":"),
                    ("{v} = max({v}, {w}", ")"), ("{v} = ({n}, {m}", ")"),
                    ("count = 0\nfor {v} in {ws}:\n    count", " +="), ("print(len({vs}", "))")]


def _syntax(rng: random.Random, i: int) -> Item:
    prompt, target = SYNTAX_TEMPLATES[i % len(SYNTAX_TEMPLATES)]
    v, w = rng.sample(VARS, 2)
    return prompt.format(v=v, w=w, vs=PLURALS[v], ws=PLURALS[w], f=rng.choice(FUNCS), n=rng.randint(2, 99),
                         m=rng.randint(2, 9)), target


# --- antonyms and analogies: hand-written tables, template phrasings ------------------------------

ANTONYM_TEMPLATES = ["The opposite of {a} is", "The antonym of {a} is", "hot -> cold\ngood -> bad\n{a} ->",
                     "Q: What is the opposite of {a}?\nA:", "Word: {a}\nOpposite:"]
ANTONYMS = [("hard", "soft"), ("wide", "narrow"), ("dark", "light"), ("high", "low"), ("asleep", "awake"),
            ("smooth", "rough"), ("sweet", "sour"), ("odd", "even"), ("safe", "dangerous"), ("polite", "rude"),
            ("wild", "tame"), ("success", "failure"), ("floor", "ceiling"), ("sunrise", "sunset"),
            ("entrance", "exit"), ("input", "output"), ("upper", "lower"), ("inner", "outer"),
            ("majority", "minority"), ("optimist", "pessimist"), ("profit", "loss"), ("guilty", "innocent"),
            ("temporary", "permanent"), ("ascend", "descend"), ("singular", "plural"), ("plus", "minus"),
            ("add", "subtract"), ("lend", "borrow"), ("remember", "forget"), ("float", "sink"),
            ("birth", "death"), ("hero", "villain"), ("present", "absent"), ("agree", "disagree"),
            ("honest", "dishonest"), ("possible", "impossible"), ("known", "unknown"), ("internal", "external"),
            ("strength", "weakness"), ("peace", "war"), ("expensive", "cheap"), ("south", "north"),
            ("west", "east"), ("down", "up"), ("out", "in"), ("after", "before"), ("below", "above"),
            ("last", "first"), ("dead", "alive"), ("reject", "accept"), ("exclude", "include"),
            ("invisible", "visible"), ("illegal", "legal"), ("minor", "major"), ("decrease", "increase"),
            ("quiet", "loud"), ("night", "day"), ("no", "yes"), ("cold", "hot"), ("false", "true"),
            ("summer", "winter"), ("question", "answer"), ("masculine", "feminine"), ("sell", "buy")]


def _antonym(rng: random.Random, i: int) -> Item:
    a, b = ANTONYMS[(i // 2) % len(ANTONYMS)]
    templates = ANTONYM_TEMPLATES if a not in ("hot", "good") else ANTONYM_TEMPLATES[:2] + ANTONYM_TEMPLATES[3:]
    return rng.choice(templates).format(a=a), f" {b}"


RELATIONS = {
    "capital": [("France", "Paris"), ("Japan", "Tokyo"), ("Germany", "Berlin"), ("Italy", "Rome"),
                ("Egypt", "Cairo"), ("Russia", "Moscow"), ("Spain", "Madrid"), ("China", "Beijing"),
                ("Greece", "Athens"), ("Canada", "Ottawa"), ("Ireland", "Dublin"), ("Austria", "Vienna"),
                ("Poland", "Warsaw"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Portugal", "Lisbon"),
                ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Cuba", "Havana"), ("Thailand", "Bangkok")],
    "nationality": [("France", "French"), ("Germany", "German"), ("Spain", "Spanish"), ("Italy", "Italian"),
                    ("Japan", "Japanese"), ("China", "Chinese"), ("Russia", "Russian"), ("Greece", "Greek"),
                    ("Poland", "Polish"), ("Sweden", "Swedish"), ("Portugal", "Portuguese"),
                    ("Turkey", "Turkish"), ("Egypt", "Egyptian"), ("Ireland", "Irish"), ("Mexico", "Mexican"),
                    ("Brazil", "Brazilian"), ("Canada", "Canadian"), ("India", "Indian")],
    "female": [("man", "woman"), ("king", "queen"), ("boy", "girl"), ("brother", "sister"),
               ("father", "mother"), ("uncle", "aunt"), ("son", "daughter"), ("husband", "wife"),
               ("prince", "princess"), ("nephew", "niece"), ("actor", "actress"), ("waiter", "waitress"),
               ("grandfather", "grandmother"), ("rooster", "hen"), ("stallion", "mare")],
    "young": [("dog", "puppy"), ("cat", "kitten"), ("cow", "calf"), ("sheep", "lamb"), ("horse", "foal"),
              ("bear", "cub"), ("duck", "duckling"), ("frog", "tadpole"), ("deer", "fawn"), ("pig", "piglet"),
              ("goose", "gosling"), ("butterfly", "caterpillar")],
    "plural": [("child", "children"), ("man", "men"), ("woman", "women"), ("foot", "feet"), ("tooth", "teeth"),
               ("mouse", "mice"), ("goose", "geese"), ("person", "people"), ("box", "boxes"),
               ("leaf", "leaves"), ("knife", "knives"), ("wolf", "wolves"), ("city", "cities"),
               ("baby", "babies")],
    "past": [("go", "went"), ("eat", "ate"), ("see", "saw"), ("run", "ran"), ("take", "took"), ("give", "gave"),
             ("write", "wrote"), ("speak", "spoke"), ("drink", "drank"), ("swim", "swam"), ("sing", "sang"),
             ("fly", "flew"), ("buy", "bought"), ("think", "thought"), ("come", "came"), ("sleep", "slept"),
             ("find", "found"), ("teach", "taught"), ("walk", "walked"), ("play", "played")],
    "comparative": [("big", "bigger"), ("small", "smaller"), ("good", "better"), ("bad", "worse"),
                    ("fast", "faster"), ("tall", "taller"), ("old", "older"), ("young", "younger"),
                    ("strong", "stronger"), ("cold", "colder"), ("hot", "hotter"), ("long", "longer"),
                    ("happy", "happier")],
    "next": [("Monday", "Tuesday"), ("Tuesday", "Wednesday"), ("Wednesday", "Thursday"),
             ("Thursday", "Friday"), ("Friday", "Saturday"), ("Saturday", "Sunday"), ("January", "February"),
             ("February", "March"), ("March", "April"), ("April", "May"), ("May", "June"), ("June", "July"),
             ("July", "August"), ("August", "September"), ("September", "October"),
             ("October", "November"), ("November", "December")],
}
ONE_WAY = {"nationality", "plural", "past", "comparative", "next"}  # the reverse direction is not one-to-one
ANALOGY_TEMPLATES = ["{a} is to {b} as {c} is to", "{a} : {b} :: {c} :"]


def _analogy(rng: random.Random, i: int) -> Item:
    name = sorted(RELATIONS)[i % len(RELATIONS)]
    (a, b), (c, d) = rng.sample(RELATIONS[name], 2)
    if name not in ONE_WAY and rng.random() < 0.5:
        a, b, c, d = b, a, d, c
    return rng.choice(ANALOGY_TEMPLATES).format(a=a, b=b, c=c), f" {d}"


GENERATORS: dict[str, Draw] = {
    "addition": _binary(ADD_TEMPLATES, ADD_RANGES, lambda a, b: a + b),
    "multiplication": _binary(MUL_TEMPLATES, MUL_RANGES, lambda a, b: a * b),
    "number_sequences": _sequence, "boolean_logic": _boolean, "syllogisms": _syllogism,
    "python_keywords": _keyword, "python_syntax": _syntax, "antonyms": _antonym, "analogies": _analogy,
}


# --- format-matched neutral prompts ----------------------------------------------------------------
# Each task's own templates filled with content that asks for none of the task's skill: letters and
# words for numbers, unrelated premises, words without opposites, unrelated word pairs, plain prose
# laid out as two lines of verse (neither memorised nor rhyming), and Python comments instead of code.
# No targets: a discovery reference only.

NEUTRAL_SIZE = 64
NOUNS = ["table", "pencil", "carpet", "window", "basket", "bottle", "ladder", "pillow", "kettle", "ticket",
         "button", "blanket", "candle", "wallet", "folder", "bucket", "helmet", "mirror", "napkin", "saucer"]
LETTERS = ["a", "b", "c", "x", "y", "n", "m", "p", "q", "k"]
PROSE_FIRST = ["The bus was late again this morning,", "My neighbour painted his fence on Sunday,",
               "We met for lunch on Tuesday,", "She opened the kitchen drawer,", "The office closed early today,",
               "I parked the car outside the bank,", "The meeting ran over by an hour,", "He printed the report twice,",
               "They moved to a flat near the station,", "The shop had run out of milk,"]
PROSE_SECOND = ["and later I looked for the", "so we talked about the", "and nobody could find the",
                "and then I cleaned the", "so I went back to the", "and after that we checked the",
                "so she phoned about the", "and in the end he fixed the", "and the children asked about the",
                "so we waited near the"]
COMMENTS = ["load the settings from the", "skip rows that have no", "send the report to the", "keep only the",
            "the user can change the", "remember to update the", "this runs once per", "check the size of the",
            "read the whole file into", "print a short summary of the"]
COMMENT_ENDS = ["file, as", "list, in", "loop.", "call (", "value =", "result, as", "cache, in", "step."]


def _fill(templates: list[str], **pools: list[str]) -> Callable[[random.Random], str]:
    """A drawer: one of ``templates`` with each named field drawn from its pool (distinct within a prompt)."""
    def draw(rng: random.Random) -> str:
        names = sorted(pools)
        values = {}
        for n in names:
            values[n] = rng.choice([v for v in pools[n] if v not in values.values()])
        return rng.choice(templates).format(**values)
    return draw


def _words_as_sequence(rng: random.Random) -> str:
    return rng.choice(SEQ_TEMPLATES).format(s=", ".join(rng.sample(NOUNS, rng.randint(4, 6))))


SYMBOLS = LETTERS + NOUNS
NEUTRAL: dict[str, Callable[[random.Random], str]] = {
    "addition": _fill(ADD_TEMPLATES, a=SYMBOLS, b=SYMBOLS),
    "multiplication": _fill(MUL_TEMPLATES, a=SYMBOLS, b=SYMBOLS),
    "number_sequences": _words_as_sequence,
    "boolean_logic": _fill(["{a} and {b} is", ">>> {a} or {b}\n", "Q: What is the value of {a} and {b}?\nA:",
                            "In Boolean logic, {a} OR {b} equals"], a=NOUNS, b=NOUNS),
    "syllogisms": _fill(["All {x}s are {p}. {n} has a {b}. Therefore, {n} is"],
                        x=NONSENSE, p=PROPERTIES, n=NAMES, b=NOUNS),
    "antonyms": _fill(ANTONYM_TEMPLATES, a=NOUNS),
    "analogies": _fill(ANALOGY_TEMPLATES, a=NOUNS, b=NOUNS, c=NOUNS),
    "famous_verse": _fill(["{f}\n{s}"], f=PROSE_FIRST, s=PROSE_SECOND),
    "rhyme_completion": _fill(["{f}\n{s}"], f=PROSE_FIRST, s=PROSE_SECOND),
    "python_keywords": _fill(["# {c} {v}", "x = 0\n# {c} {v}"], c=COMMENTS, v=VARS),
    "python_syntax": _fill(["{v} = 1\n# {c} {w}", "# {c} {v}"], c=COMMENTS, v=VARS, w=VARS),
    "python_idioms": _fill(["def {f}():\n    # {c} {e}"], f=FUNCS, c=COMMENTS, e=COMMENT_ENDS),
}
NEUTRAL_DESCRIPTION = ("Format-matched neutral prompts: each task's own templates filled with content that asks for "
                       "none of the task's skill (see data/README.md). A discovery reference and off-task side-effect "
                       "set; no targets.")


def neutral_formats(tok, task_prompts: dict[str, set[str]], size: int = NEUTRAL_SIZE) -> dict[str, list[str]]:
    """``size`` distinct format-matched neutral prompts a task (seed: the task name), none a task prompt."""
    out = {}
    for name, draw in NEUTRAL.items():
        rng, found = random.Random(f"sna-neutral:{name}"), []
        for _ in range(200 * size):
            p = draw(rng)
            if p not in found and p not in task_prompts[name] and len(tok(p)["input_ids"]) < MAX_PROMPT_TOKENS:
                found.append(p)
            if len(found) == size:
                break
        else:
            raise RuntimeError(f"{name}: the neutral templates gave only {len(found)} distinct prompts")
        out[name] = found
    return out


def render_neutral(prompts: dict[str, list[str]]) -> str:
    """The text of data/neutral_formats.json."""
    return json.dumps({"description": NEUTRAL_DESCRIPTION, "tasks": prompts}, indent=2, ensure_ascii=False) + "\n"


# --- checks and files -----------------------------------------------------------------------------

def gpt2_tokenizer():
    """The real GPT-2 tokenizer (no BOS) from ``$SNA_GPT2_TOKENIZER``."""
    from transformers import GPT2TokenizerFast

    path = os.environ.get("SNA_GPT2_TOKENIZER")
    if not path:
        sys.exit("Set SNA_GPT2_TOKENIZER to a folder with the GPT-2 vocab.json and merges.txt.")
    return GPT2TokenizerFast.from_pretrained(path)


def item_problem(tok, prompt: str, target: str) -> str | None:
    """Why an item breaks the data rules (data/README.md), or None."""
    ids = tok(prompt)["input_ids"]
    if len(tok(target)["input_ids"]) != 1:
        return f"target {target!r} is not one GPT-2 token"
    if prompt != prompt.rstrip(" ") or not prompt.strip():
        return "prompt is empty or ends with a space"
    if tok(prompt + target)["input_ids"] != ids + tok(target)["input_ids"]:
        return "prompt + target does not tokenize as tokens(prompt) + [target]"
    if len(ids) >= MAX_PROMPT_TOKENS:
        return f"prompt has {len(ids)} tokens (limit {MAX_PROMPT_TOKENS})"
    return None


def grow(name: str, head: list[dict], tok, size: int = GENERATED_SIZE) -> list[dict]:
    """``head`` plus items drawn from the task's generator (seed: the task name) up to ``size``."""
    rng, items, seen = random.Random(f"sna-tasks:{name}"), list(head), {it["prompt"] for it in head}
    for i in range(200 * size):
        if len(items) >= size:
            return items
        prompt, target = GENERATORS[name](rng, i)
        if prompt not in seen and item_problem(tok, prompt, target) is None:
            items.append({"prompt": prompt, "target": target})
            seen.add(prompt)
    raise RuntimeError(f"{name}: the templates gave only {len(items)} valid distinct items")


def render(task: dict) -> str:
    """The file layout of data/tasks/*.json: header fields indented, one item per line."""
    head = [f'  "{k}": {json.dumps(task[k], ensure_ascii=False)},' for k in ("name", "category", "description")]
    items = ",\n".join("    " + json.dumps(it, ensure_ascii=False) for it in task["items"])
    return "\n".join(["{", *head, '  "items": [', items, "  ]", "}"]) + "\n"


def build(name: str, tok, task_dir: Path = TASK_DIR) -> str:
    """The file text the script writes for task ``name``, from the committed file's head items."""
    task = json.loads((task_dir / f"{name}.json").read_text(encoding="utf-8"))
    if HEAD[name] is not None:
        task["items"] = grow(name, task["items"][:HEAD[name]], tok)
    return render(task)


def build_all(tok, task_dir: Path = TASK_DIR) -> dict[Path, str]:
    """Every file the script writes (the task files, then data/neutral_formats.json) and its text."""
    texts = {task_dir / f"{name}.json": build(name, tok, task_dir) for name in HEAD}
    prompts = {path.stem: {it["prompt"] for it in json.loads(text)["items"]} for path, text in texts.items()}
    texts[task_dir.parent / "neutral_formats.json"] = render_neutral(neutral_formats(tok, prompts))
    return texts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file differs")
    args = parser.parse_args()
    stale = []
    for path, text in build_all(gpt2_tokenizer()).items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(path.name)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    verb = "differ" if args.check else "rewritten"
    print(f"{len(stale)} file(s) {verb}: {', '.join(stale) or '-'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
