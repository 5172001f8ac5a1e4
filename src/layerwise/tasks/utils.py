"""Helper functions that the local lm-eval task YAMLs name with ``!function utils.<name>``.

lm-eval resolves ``!function`` relative to the YAML file, so :mod:`layerwise.evals` copies this file
next to the rendered YAMLs. It must therefore import nothing from ``layerwise``.

The MATH answer extraction mirrors lm-eval 0.4.13's ``tasks/minerva_math/utils.py`` (Minerva,
Lewkowycz et al. 2022, appendix D). It is written out here because that module refuses to import
without ``math_verify`` and ``antlr4-python3-runtime==4.11`` (neither is a dependency of this
project); answers are compared as normalised strings, then as numbers, instead of with sympy's
LaTeX parser.
"""

from __future__ import annotations

import re
from typing import Any

INVALID_ANSWER = "[invalidanswer]"


# ---------------------------------------------------------------------------------------------
# rolling log-likelihood (held-out prose)
# ---------------------------------------------------------------------------------------------


def rolling_process_results(doc: dict, results: list[float]) -> dict[str, tuple[float, int]]:
    """Per-document (log-likelihood, weight) pairs, as lm-eval's wikitext task.

    Weights are the document's words (word perplexity) and UTF-8 bytes (byte perplexity and bits per
    byte, which do not depend on the tokenizer and so compare models with different vocabularies).
    """
    (loglikelihood,) = results
    text = doc["text"]
    words = len(re.split(r"\s+", text))
    nbytes = len(text.encode("utf-8"))
    return {
        "word_perplexity": (loglikelihood, words),
        "byte_perplexity": (loglikelihood, nbytes),
        "bits_per_byte": (loglikelihood, nbytes),
    }


# ---------------------------------------------------------------------------------------------
# MATH (Minerva prompt and answer normalisation)
# ---------------------------------------------------------------------------------------------


def math_doc_to_text(doc: dict) -> str:
    return "Problem:" + "\n" + doc["problem"] + "\n\n" + "Solution:"


def math_process_docs(dataset: Any) -> Any:
    """Gold answer = the normalised content of the solution's last ``\\boxed{}`` (as Minerva)."""

    def _one(doc: dict) -> dict:
        boxed = last_boxed_only_string(doc["solution"])
        return {"problem": doc["problem"], "solution": doc["solution"],
                "answer": normalize_final_answer(remove_boxed(boxed) if boxed else doc.get("answer", ""))}

    return dataset.map(_one)


def math_fewshot_samples() -> list[dict]:
    """Minerva's four-shot prompt (the same exemplars as lm-eval's minerva_math)."""
    tail = ".\nFinal Answer: The final answer is ${}$. I hope it is correct."
    return [
        {"problem": "Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
         "solution": "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, "
                     "so $x\\ge2$, and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to "
                     "zero, so $5-x>0$, which gives $x<5$. Therefore, the domain of the expression is "
                     "$\\boxed{[2,5)}$" + tail.format("[2,5)"), "few_shot": "1"},
        {"problem": "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find "
                    "$\\det (\\mathbf{A} \\mathbf{B}).$",
         "solution": "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) "
                     "= (2)(12) = \\boxed{24}.$" + tail.format("24")[1:], "few_shot": "1"},
        {"problem": "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights "
                    "instead, how many times must Terrell lift them in order to lift the same total weight?",
         "solution": "If Terrell lifts two 20-pound weights 12 times, he lifts a total of "
                     "$2\\cdot 12\\cdot20=480$ pounds of weight.  If he lifts two 15-pound weights instead for "
                     "$n$ times, he will lift a total of $2\\cdot15\\cdot n=30n$ pounds of weight.  Equating "
                     "this to 480 pounds, we can solve for $n$:\n\\begin{align*}\n30n&=480\\\\\n"
                     "\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}" + tail.format("16")[1:],
         "few_shot": "1"},
        {"problem": "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}"
                    "has a solution $(x, y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ "
                    "assuming $b$ is nonzero.",
         "solution": "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n"
                     "$$6y-9x=-\\frac{3}{2}a.$$Since we also know that $6y-9x=b$, we have\n\n"
                     "$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$"
                     + tail.format("-\\frac{2}{3}")[1:], "few_shot": "1"},
    ]


def math_process_results(doc: dict, results: list[str]) -> dict[str, int]:
    """``exact_match``: Minerva's "Final Answer: ..." sentence; ``exact_match_boxed``: that, or
    else the last ``\\boxed{}`` of the generation (what LLaDA's and Dream's reports extract)."""
    text = results[0]
    minerva = normalize_final_answer(get_unnormalized_answer(text))
    em = int(is_equiv(minerva, doc["answer"]))
    boxed = last_boxed_only_string(text)
    em_boxed = em or int(boxed is not None and is_equiv(normalize_final_answer(remove_boxed(boxed)), doc["answer"]))
    return {"exact_match": em, "exact_match_boxed": em_boxed}


def extract_math_answer(text: str) -> str:
    """The normalised Minerva answer of a generation (``[invalidanswer]`` when there is none)."""
    return normalize_final_answer(get_unnormalized_answer(text))


def get_unnormalized_answer(text: str) -> str:
    text += "I hope it is correct."
    match = re.search(r"Final Answer: The final answer is(.*?). I hope it is correct.", text)
    return match.group(1).strip() if match else INVALID_ANSWER


def last_boxed_only_string(string: str) -> str | None:
    """The last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces, or None."""
    if "\\boxed " in string:
        return "\\boxed " + string.split("\\boxed ")[-1].split("$")[0]
    idx = string.rfind("\\boxed")
    if idx < 0:
        idx = string.rfind("\\fbox")
        if idx < 0:
            return None
    depth = 0
    for i in range(idx, len(string)):
        if string[i] == "{":
            depth += 1
        elif string[i] == "}":
            depth -= 1
            if depth == 0:
                return string[idx: i + 1]
    return None


def remove_boxed(s: str) -> str:
    if s.startswith("\\boxed "):
        return s[len("\\boxed "):]
    for left in ("\\boxed{", "\\fbox{"):
        if s.startswith(left) and s.endswith("}"):
            return s[len(left): -1]
    return s


SUBSTITUTIONS = [
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
]
REMOVED_EXPRESSIONS = [
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots",
    "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters",
    "meals", "edges", "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}",
    "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;",
    r",\!", "{,}", '"', "\\dots",
]


def normalize_final_answer(final_answer: str) -> str:
    """Normalise a final answer as Minerva (appendix D) and lm-eval 0.4.13 do."""
    final_answer = final_answer.split("=")[-1]
    for expr in REMOVED_EXPRESSIONS:
        if expr.isalpha():
            final_answer = re.sub(rf"(?<!\\)\b{expr}\b", "", final_answer)
    for before, after in SUBSTITUTIONS:
        final_answer = final_answer.replace(before, after)
    for expr in REMOVED_EXPRESSIONS:
        if expr.isalpha():
            segments = re.split(r"(\\[a-zA-Z]+)", final_answer)  # never cut inside a LaTeX command
            for i in range(0, len(segments), 2):
                segments[i] = segments[i].replace(expr, "")
            final_answer = "".join(segments)
        else:
            final_answer = final_answer.replace(expr, "")
    final_answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", final_answer)
    final_answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", final_answer)
    final_answer = re.sub(r"(sqrt)(\[[^\]]*\])(\w)", "\\1\\2{\\3}", final_answer)
    final_answer = re.sub(r"(sqrt)(?!\[)([^{])", "sqrt{\\2}", final_answer)
    final_answer = final_answer.replace("$", "")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", final_answer):
        final_answer = final_answer.replace(",", "")
    return final_answer


def is_equiv(x1: str, x2: str) -> bool:
    """Normalised strings equal, or both plain numbers with the same value."""
    if not x1 or x1 == INVALID_ANSWER:
        return False
    if x1 == x2:
        return True
    try:
        return abs(float(x1) - float(x2)) < 1e-9
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# HumanEval: pass@k by executing the completed programs (only with HF_ALLOW_CODE_EVAL=1)
# ---------------------------------------------------------------------------------------------

#: seconds each program may run (the code_eval metric's default)
CODE_TIMEOUT = 3.0
#: the switch lm-eval's code_eval metric reads; layerwise.evals sets it for allow_code_execution=True
CODE_EVAL_ENV = "HF_ALLOW_CODE_EVAL"

# Run first in the child process, as human-eval's and code_eval's reliability_guard: caps memory,
# and removes the functions a program could use to delete files, kill processes or start new ones.
_GUARD = """
import builtins, faulthandler, os, resource, shutil, subprocess, sys
for _lim in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
    try:
        resource.setrlimit(_lim, (4 << 30, 4 << 30))
    except (ValueError, OSError):
        pass
faulthandler.disable()
builtins.exit = builtins.quit = None
for _name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
              "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
              "chroot", "lchown", "getcwd", "chdir"):
    setattr(os, _name, None)
shutil.rmtree = shutil.move = shutil.chown = None
subprocess.Popen = None
for _mod in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
    sys.modules[_mod] = None
"""


def build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """The programs to test: the prompt (signature and docstring) followed by each completion."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


def run_program(program: str, timeout: float = CODE_TIMEOUT) -> bool:
    """Whether ``program`` exits cleanly within ``timeout`` seconds, run in a fresh, isolated Python
    subprocess (``-I``, empty environment, a temporary working folder, the guard above)."""
    import os
    import subprocess
    import sys
    import tempfile

    if os.environ.get(CODE_EVAL_ENV) != "1":
        raise ValueError(f"executing model-written code is switched off: set {CODE_EVAL_ENV}=1 (layerwise: "
                         "allow_code_execution=True) to run it")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            done = subprocess.run([sys.executable, "-I", "-c", _GUARD + "\n" + program], cwd=tmp, env={},
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0


def pass_at_k(references: list[str], predictions: list[list[str]], k: list[int] | int | None = None) -> dict:
    """``{"pass@k": estimate}`` for each k, as the code_eval metric: each candidate program followed by
    its reference tests runs in :func:`run_program`; the unbiased estimator of Chen et al. (2021)."""
    from math import comb

    ks = [1] if k is None else ([k] if isinstance(k, int) else list(k))
    scores: dict[str, float] = {f"pass@{x}": 0.0 for x in ks}
    for ref, candidates in zip(references, predictions):
        n = len(candidates)
        c = sum(run_program(f"{prog}\n{ref}\n") for prog in candidates)
        for x in ks:
            if n >= x:
                scores[f"pass@{x}"] += 1.0 - (comb(n - c, x) / comb(n, x) if n - c >= x else 0.0)
    return {key: v / max(len(references), 1) for key, v in scores.items()}
