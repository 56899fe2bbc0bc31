"""The user documents tell the truth about themselves: README.md and docs/*.md.

- Every relative link resolves (a file that exists; a `#anchor` that is a heading of its target, as
  GitHub spells heading anchors).
- Every shell block says how it is checked, in an HTML comment on the line before its fence:
  `<!-- tested: tests/test_x.py::test_y [more ids] -->`  the named tests exist, and between them their
                                                        sources hold every distinctive word of every
                                                        command in the block (below);
  `<!-- run by: Makefile -->`                           the named file (.ci/run, the Makefile) holds each
                                                        command line (`lorakit x` also as `-m lorakit x`);
  `<!-- not run in CI: <why> -->`                       said honestly, with the reason.
  A command's distinctive words: `lorakit <subcommand>`'s subcommand, or the program and any notebook
  it is given, and every option (`--jobs`, `-f`) and `-p` parameter name. A test's source is its own
  function, the module-level helpers and constants of its file (not other tests), and
  tests/conftest.py; a word counts when it is a whole word of a string literal there.
- Every install claim is the Makefile's and pyproject's: the README's table of what each make target
  installs, every extra the docs name, and every "`make T` installs" / "does not" said beside an extra.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (pyproject allows it): pytest brings tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# the other Markdown files the docs link to: their links are checked too (their shell blocks are not, yet)
LINKED = [ROOT / "bench" / "README.md", ROOT / "data" / "README.md", *sorted((ROOT / "params").glob("*/README.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"^<!--\s*(tested|run by|not run in CI):\s*(.*?)\s*-->$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


# --- links -------------------------------------------------------------------------------------------

def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (code blocks skipped; repeats get -1, -2 as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            slug = github_anchor(line.lstrip("#"))
            out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """`file:line: target (why)` for each relative link of `path` that does not resolve."""
    out = []
    in_code = False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        for m in LINK.finditer(line):
            target = m.group(1) or m.group(2)
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(root)}:{n}: {target}"
            if not dest.exists():
                out.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                out.append(f"{where} (no heading #{anchor} in {dest.relative_to(root)})")
    return out


def test_every_relative_link_resolves():
    assert [b for path in DOCS + LINKED for b in broken_links(path)] == []


def test_the_link_checker_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n## Dev sets choose, test sets report\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#dev-sets-choose-test-sets-report) [x](gone.md) [y](a.md#nothing)\n"
                    "```bash\n[not a link](in-code.md)\n```\n")
    found = broken_links(page, root=tmp_path)
    assert found == ["b.md:1: gone.md (no such file)", "b.md:1: a.md#nothing (no heading #nothing in a.md)"]


# --- shell blocks and the tests that run them --------------------------------------------------------

def shell_blocks(path: Path) -> list[tuple[int, str | None, list[str]]]:
    """(line of the fence, the marker comment above it or None, the block's lines) per shell block. A
    fence without a language counts as shell: commands cannot hide in one (diagrams say `text`)."""
    lines = path.read_text().splitlines()
    out = []
    n = 0
    while n < len(lines):
        fence = re.match(r"^```(\w*)", lines[n])
        if not fence:
            n += 1
            continue
        end = next(i for i in range(n + 1, len(lines)) if lines[i].startswith("```"))
        if fence.group(1) in SHELL_LANGUAGES or not fence.group(1):
            above = lines[n - 1].strip() if n else ""
            out.append((n + 1, above if MARKER.match(above) else None, lines[n + 1:end]))
        n = end + 1
    return out


def commands(block: list[str]) -> list[list[str]]:
    """The block's commands as words: `\\` continuations joined, `#` comments and `&&` chains split."""
    joined, current = [], ""
    for line in block:
        current += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            joined.append(current)
            current = ""
    out = []
    for text in joined:
        cmd: list[str] = []
        depth = 0  # inside `[...]`, the usage notation of optional arguments, `|` separates alternatives
        for w in shlex.split(text, comments=True) + ["&&"]:
            if w in ("&&", "||", ";") or (w == "|" and not depth):
                if cmd:
                    out.append(cmd)
                cmd = []
            elif w != "|":
                depth += w.count("[") - w.count("]")
                cmd.append(w)
    return out


def distinctive_words(cmd: list[str]) -> list[str]:
    """What a test must hold to run this command: see the module docstring."""
    words = [w.strip("[]") for w in cmd if w.strip("[]")]
    if words and words[0].endswith("python") and words[1:2] == ["-m"]:
        words = words[2:]
    out = [words[1]] if words[0] == "lorakit" and len(words) > 1 else [words[0]]
    out += [Path(w).name for w in words[1:] if w.endswith(".ipynb") and not w.startswith("executed/")]
    for i, w in enumerate(words[1:], 1):
        if w.startswith("-") and w not in ("-", "--"):
            out.append(w.split("=")[0])
            if w == "-p" and i + 1 < len(words):
                out.append(words[i + 1])
    return list(dict.fromkeys(out))


def string_words(source: str) -> set[str]:
    """Every whole word of every string literal in `source` (f-strings' literal parts included), docstrings
    and other bare string statements left out: a test that only *says* a word does not run it."""
    tree = ast.parse(source)
    prose = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    words = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            words.update(node.value.split())
            words.update(Path(w).name for w in node.value.split())
    return words


def source_of_test(test_id: str) -> str:
    """The source a test id runs: its function (or class), its file's non-test top-level code, conftest."""
    file, _, name = test_id.partition("::")
    name = name.split("[")[0]
    path = ROOT / file
    if not path.exists():
        raise LookupError(f"{test_id}: no file {file}")
    text = path.read_text()
    tree = ast.parse(text)
    parts = name.split("::")
    nodes = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    target = nodes.get(parts[0])
    for part in parts[1:]:
        target = next((n for n in getattr(target, "body", []) if getattr(n, "name", None) == part), None)
    if target is None:
        raise LookupError(f"{test_id}: no test {name} in {file}")
    helpers = [ast.get_source_segment(text, n) for n in tree.body
               if not (getattr(n, "name", "").startswith("test_") or isinstance(n, ast.ClassDef))]
    return "\n".join([ast.get_source_segment(text, target), *helpers, (ROOT / "tests" / "conftest.py").read_text()])


def block_problems(path: Path, root: Path = ROOT) -> list[str]:
    """`file:line: why` for each shell block whose check is missing or does not hold (the test ids and
    runner files a marker names are paths in the project)."""
    out = []
    for line, marker, block in shell_blocks(path):
        where = f"{path.relative_to(root)}:{line}"
        if marker is None:
            out.append(f"{where}: shell block without a <!-- tested: ... --> or <!-- not run in CI: ... --> comment")
            continue
        kind, rest = MARKER.match(marker).groups()
        if kind == "not run in CI":
            if not rest:
                out.append(f"{where}: 'not run in CI' without a reason")
            continue
        if kind == "run by":
            runner = " ".join(((ROOT / rest).read_text() if (ROOT / rest).is_file() else "").split())
            for c in commands(block):  # `lorakit x` is also run as `python -m lorakit x` (the Makefile's form)
                if " ".join(c) not in runner and f"-m {' '.join(c)}" not in runner:
                    out.append(f"{where}: {rest} does not run `{' '.join(c)}`")
            continue
        words: set[str] = set()
        for test_id in rest.split():
            try:
                words |= string_words(source_of_test(test_id))
            except LookupError as e:
                out.append(f"{where}: {e}")
        for cmd in commands(block):
            missing = [w for w in distinctive_words(cmd) if w not in words]
            if missing:
                out.append(f"{where}: `{' '.join(cmd)}`: the named tests never use {missing}")
    return out


def test_every_shell_block_is_run_by_a_named_test_or_says_why_not():
    assert [p for path in DOCS for p in block_problems(path)] == []


def test_the_block_checker_catches_an_unmarked_block_a_missing_test_and_an_unused_option(tmp_path):
    page = tmp_path / "probe.md"
    page.write_text(
        "```bash\nlorakit matrix\n```\n\n"
        "<!-- tested: tests/test_docs.py::test_no_such_test -->\n```bash\nlorakit matrix\n```\n\n"
        "<!-- tested: tests/test_search.py::test_jobs_and_ray_together_are_refused_before_anything_runs -->\n"
        "```bash\nlorakit search x.yaml --jobs 2 --ray local\nlorakit search x.yaml --storage URL\n```\n\n"
        "<!-- not run in CI: -->\n```bash\nmake demo\n```\n\n"
        "<!-- run by: Makefile -->\n```bash\nlorakit real-speech\nlorakit real-speech --out x\n```\n\n"
        "<!-- not run in CI: needs a GPU -->\n```sh\nnvidia-smi\n```\n\n"
        "```text\nlorakit/  a diagram\n```\n\n```\nlorakit run x.yaml\n```\n")
    found = block_problems(page, root=tmp_path)
    assert found == [
        "probe.md:1: shell block without a <!-- tested: ... --> or <!-- not run in CI: ... --> comment",
        "probe.md:6: tests/test_docs.py::test_no_such_test: no test test_no_such_test in tests/test_docs.py",
        "probe.md:6: `lorakit matrix`: the named tests never use ['matrix']",
        "probe.md:11: `lorakit search x.yaml --storage URL`: the named tests never use ['--storage']",
        "probe.md:17: 'not run in CI' without a reason",
        "probe.md:22: Makefile does not run `lorakit real-speech --out x`",
        "probe.md:36: shell block without a <!-- tested: ... --> or <!-- not run in CI: ... --> comment",
    ]


def test_distinctive_words_of_a_command():
    assert [distinctive_words(c) for c in commands(["lorakit sweep s.yaml [--jobs 2 | --ray auto]  # many runs"])] == [
        ["sweep", "--jobs", "--ray"]]
    assert distinctive_words(["papermill", "notebooks/train.ipynb", "executed/run.ipynb", "-p", "lr", "5e-5"]) == [
        "papermill", "train.ipynb", "-p", "lr"]
    assert commands(["lorakit run a.yaml -p report_to wandb && wandb sync x   # after login",
                     "papermill a.ipynb b.ipynb \\", "  -p seed 3"]) == [
        ["lorakit", "run", "a.yaml", "-p", "report_to", "wandb"], ["wandb", "sync", "x"],
        ["papermill", "a.ipynb", "b.ipynb", "-p", "seed", "3"]]


# --- the architecture page -------------------------------------------------------------------------

def test_the_architecture_page_names_every_module():
    """docs/architecture.md's `lorakit/` listing names each module of the package, so a new file is
    placed in the house (and its side) by whoever adds it."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    listing = set(re.findall(r"[\w.]+", text.split("```text\nlorakit/")[1].split("```")[0]))
    modules = [p for p in sorted((ROOT / "lorakit").rglob("*.py")) if not p.stem.startswith("__")]
    assert [str(p.relative_to(ROOT)) for p in modules if p.stem not in listing and p.name not in listing] == []


# --- install claims ----------------------------------------------------------------------------------

def makefile() -> tuple[dict[str, str], dict[str, tuple[list[str], list[str]]]]:
    """The Makefile's variables (unexpanded) and rules {target: (prerequisites, recipe lines)}."""
    variables, rules = {}, {}
    current = None
    for raw in (ROOT / "Makefile").read_text().splitlines():
        if raw.startswith("\t") and current:
            rules[current][1].append(raw.strip())
            continue
        line = raw.split("#")[0].rstrip() if not raw.startswith("\t") else raw
        var = re.match(r"^([A-Z_]+)\s*(\?=|:=|=)\s*(.*)$", line)
        rule = re.match(r"^([^\s:=]+)\s*:(?!=)\s*(.*)$", line)
        if var:
            variables[var.group(1)] = var.group(3).strip()
            current = None
        elif rule and not rule.group(1).startswith("."):
            current = rule.group(1)
            rules[current] = (rule.group(2).replace("|", " ").split(), [])
        elif line.strip():
            current = None
    return variables, rules


def expand(text: str, variables: dict[str, str]) -> str:
    """`$(VAR)` replaced by its value, recursively; `$(shell ...)` and unknown names left as they are."""
    for _ in range(10):
        new = re.sub(r"\$\(([A-Z_]+)\)", lambda m: variables.get(m.group(1), m.group(0)), text)
        if new == text:
            return text
        text = new
    return text


def installs(target: str) -> tuple[set[str], set[str], list[str]]:
    """What `make target` installs: (pyproject extras, apt packages, every pip install line), following
    its prerequisites through the Makefile."""
    variables, rules = makefile()
    rules = {expand(t, variables): (p, r) for t, (p, r) in rules.items()}
    extras, apt, pip = set(), set(), []
    todo, seen = [target], set()
    while todo:
        name = expand(todo.pop(), variables)
        if name in seen or name not in rules:
            continue
        seen.add(name)
        prereqs, recipe = rules[name]
        todo += prereqs
        for line in (expand(r, variables) for r in recipe):
            for m in re.finditer(r"pip install ([^;&]*)", line):
                pip.append(m.group(1).strip())
                for group in re.findall(r"\.\[([^\]]+)\]", m.group(1)):
                    extras |= set(group.split(","))
            apt |= set(re.findall(r'missing="\$\$missing ([\w.+-]+)"', line))
            if "command -v $$b" in line or "for b in" in line:
                apt |= set(re.search(r"for b in ([^;]*);", line).group(1).split())
            for m in re.finditer(r"apt-get install((?: -\S+)*)((?: [a-z][\w.+-]*)+)", line):
                apt |= set(m.group(2).split())
    return extras, apt, pip


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def readme_install_table() -> dict[str, tuple[set[str], set[str]]]:
    """README's 'what each target installs' table: {target: (extras, apt packages)}."""
    out = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.match(r"^`make (\S+)`", cells[0]) if len(cells) == 3 else None
        if m:
            names = [set(re.findall(r"`([^`]+)`", c)) for c in cells[1:]]
            out[m.group(1)] = names[0], names[1]
    return out


def test_the_readme_install_table_is_what_the_makefile_installs():
    table = readme_install_table()
    assert set(table) == {"demo", "test", "lab", "bench"}
    for target, (extras, apt) in table.items():
        assert (extras, apt) == installs(target)[:2], target


def test_make_demo_installs_only_the_base_dependencies_and_make_test_every_extra():
    extras, _, pip = installs("demo")
    assert extras == set() and "-e ." in pip, pip
    assert all(line == "-e ." or line.startswith(("torch", '"torch')) for line in pip), pip
    assert installs("test")[0] == set(pyproject()["optional-dependencies"]), "make test leaves an extra out"


def extras_named(text: str) -> set[str]:
    """The extras a passage names: `lorakit[a,b]`, `.[a]`, or "the `a` extra"."""
    found = set()
    for group in re.findall(r"(?:lorakit|\.)\[([\w,-]+)\]", text):
        found |= set(group.split(","))
    found |= set(re.findall(r"the `([\w-]+)` extra", text))
    return found


def install_claims(text: str) -> list[tuple[str, str, set[str]]]:
    """(target, "installs" | "does not", extras) for each sentence that names an extra and says that
    `make <target>` installs it or does not."""
    out = []
    for sentence in re.split(r"(?<=\.)\s+(?=[A-Z`(])|\n\n", text):
        sentence = " ".join(sentence.split())
        extras = extras_named(sentence)
        if not extras:
            continue
        for m in re.finditer(r"`make (\w[\w-]*)`((?: and `make [\w-]+`)*) (installs|install|does not)", sentence):
            for target in [m.group(1), *re.findall(r"`make ([\w-]+)`", m.group(2))]:
                out.append((target, "does not" if m.group(3) == "does not" else "installs", extras))
        for m in re.finditer(r"`make (\w[\w-]*)`, which installs them all", sentence):
            out.append((m.group(1), "installs", extras))
    return out


def test_every_install_claim_beside_an_extra_holds():
    known = set(pyproject()["optional-dependencies"])
    wrong = []
    for path in DOCS:
        text = path.read_text()
        wrong += [f"{path.relative_to(ROOT)}: no extra {e!r} in pyproject.toml" for e in extras_named(text) - known]
        for target, claim, extras in install_claims(text):
            have = installs(target)[0]
            held = extras <= have if claim == "installs" else not (extras & have)
            if not held:
                said = "installs" if claim == "installs" else "does not install"
                wrong.append(f"{path.relative_to(ROOT)}: '`make {target}` {said} {', '.join(sorted(extras))}' is false:"
                             f" it installs {', '.join(sorted(have)) or 'no extra'}")
    assert wrong == []


def test_the_claim_checker_catches_the_claim_issue_29_found_false():
    """The README used to say the deploy extra comes with `make setup`: it does not."""
    old = "`--to ct2` (needs `pip install 'lorakit[deploy]'`, which `make\nsetup` installs) converts the merged model"
    assert install_claims(old) == [("setup", "installs", {"deploy"})]
    assert not {"deploy"} <= installs("setup")[0]
    assert install_claims("needs `pip install 'lorakit[deploy]'`; `make test` and `make lab` install it, "
                          "`make demo` does not") == [
        ("test", "installs", {"deploy"}), ("lab", "installs", {"deploy"}), ("demo", "does not", {"deploy"})]
