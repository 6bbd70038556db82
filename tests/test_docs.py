"""The docs cannot rot: docs/api.md runs as written (its outputs compared), its reference lists
every public name with its signature and every DataFrame column; README's commands exist."""
from __future__ import annotations

import argparse
import inspect
import re
import shlex
from pathlib import Path

import pytest

import lr0fm
from lr0fm.api import result_columns
from lr0fm.cli import build_parser, main
from lr0fm.records import TABLE_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
API_PAGE = ROOT / "docs" / "api.md"
README = ROOT / "README.md"
TUX = Path("/usr/share/tuxpaint/stamps")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def blocks(path: Path, section: str | None = None) -> list[tuple[str, str]]:
    """(language, text) of every fenced block, in order; only those under the heading ``section``
    (up to the next heading of its level) when one is given."""
    text = path.read_text(encoding="utf-8")
    if section is not None:
        level = section.split(" ", 1)[0]
        text = text.split(f"\n{section}\n", 1)[1].split(f"\n{level} ", 1)[0]
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def commands(text: str) -> list[str]:
    """The command lines of a bash block, comments dropped."""
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def run_blocks(path: Path, capsys, section: str | None = None) -> list[tuple[str, str, str | None]]:
    """Run the python and bash blocks of ``path`` (of its ``section``) in order, in the current
    folder, in one namespace; -> (language, what it printed, the output block shown after it, or None)."""
    page = blocks(path, section)
    namespace: dict = {"__name__": "__main__"}
    ran = []
    for i, (lang, text) in enumerate(page):
        shown = page[i + 1][1] if i + 1 < len(page) and page[i + 1][0] == "text" else None
        capsys.readouterr()
        if lang == "python":
            exec(compile(text, f"{path.name} block {i + 1}", "exec"), namespace)
        elif lang == "bash":
            for line in commands(text):
                argv = shlex.split(line)
                assert argv[0] == "lr0fm", f"{path.name} block {i + 1}: only lr0fm commands run here: {line}"
                assert main(argv[1:]) == 0, line
        elif lang == "text":
            continue
        else:
            raise AssertionError(f"{path.name} block {i + 1}: a ```{lang} block; use python, bash or text")
        ran.append((lang, capsys.readouterr().out, shown))
    return ran


def tidy(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


@pytest.mark.slow
@pytest.mark.skipif(not TUX.is_dir(), reason="Debian tuxpaint-stamps-default not installed (make test installs it)")
def test_api_page_runs_as_written_and_prints_what_it_shows(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LR0FM_RESULTS", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    ran = run_blocks(API_PAGE, capsys)
    assert [lang for lang, _, _ in ran].count("python") >= 5 and any(lang == "bash" for lang, _, _ in ran)
    for lang, printed, shown in ran:
        assert shown is not None, f"a {lang} block of {API_PAGE.name} has no output block after it"
        assert tidy(printed) == tidy(shown)
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_api_pages_bad_input_section_runs_as_written(tmp_path, monkeypatch, capsys):
    """The errors the API promises, as the page shows them (without the slow walk-through: these
    calls build nothing)."""
    monkeypatch.chdir(tmp_path)
    ran = run_blocks(API_PAGE, capsys, "## Bad input")
    assert ran and all(lang == "python" and shown is not None for lang, _, shown in ran)
    for _, printed, shown in ran:
        assert tidy(printed) == tidy(shown)
    assert {line.split(":", 1)[0] for _, printed, _ in ran for line in printed.splitlines()} >= \
        {"TypeError", "ValueError", "FileNotFoundError"}
    assert not list(tmp_path.iterdir())  # nothing written


def _signature(obj) -> str:
    """A signature as the reference writes it: names and defaults, no annotations."""
    sig = inspect.signature(obj)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def test_api_page_lists_every_public_name_with_its_signature():
    text = API_PAGE.read_text(encoding="utf-8")
    reference = text.split("## Reference", 1)[1]
    listed = set(re.findall(r"^- `lr0fm\.([\w.]+)\(", reference, re.M))
    assert listed == {*lr0fm.__all__, "LowResolution.for_model"}
    for name in lr0fm.__all__:
        assert f"`lr0fm.{name}{_signature(getattr(lr0fm, name))}`" in reference, name
    assert f"`lr0fm.LowResolution.for_model{_signature(lr0fm.LowResolution.for_model)}`" in reference


def column_table() -> str:
    rows = [(c.name, c.doc) for c in TABLE_COLUMNS]
    return "\n".join(["| column | meaning |", "|---|---|", *(f"| `{name}` | {doc} |" for name, doc in rows)])


def test_api_page_documents_the_columns_of_load_results(tmp_path):
    text = API_PAGE.read_text(encoding="utf-8")
    section = text.split("## Columns of `load_results`", 1)[1]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    assert table == column_table(), "docs/api.md's column table is stale; it should read:\n" + column_table()
    documented = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert documented == list(result_columns()) == list(lr0fm.load_results(tmp_path).columns)


def options_table() -> str:
    """docs/api.md's table of evaluate()'s options, from their one declaration (RunOptions)."""
    from dataclasses import fields

    from lr0fm.options import RunOptions, flag

    rows = []
    for f in fields(RunOptions):
        if f.name == "resolutions":  # evaluate()'s own argument
            continue
        m = f.metadata
        cli = " ".join(f"`{x}`" for x in (m["flags"] or (flag(f.name),))) if m["cli"] else "(API and sweep files)"
        what = m["help"].replace(" (default: %(default)s)", "")
        rows.append(f"| `{f.name}` | {cli} | `{f.default!r}` | {what} |")
    return "\n".join(["| option | `lr0fm eval` | default | meaning |", "|---|---|---|---|", *rows])


def test_api_page_documents_the_options_of_evaluate():
    text = API_PAGE.read_text(encoding="utf-8")
    section = text.split("## Options of `evaluate`", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    assert table == options_table(), "docs/api.md's options table is stale; it should read:\n" + options_table()


# -- README ----------------------------------------------------------------------------------
def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def test_readme_blocks_are_commands_that_exist():
    """README's blocks are shell synopses (placeholders like M[,M2]); each lr0fm command in them
    names subcommands and options the CLI has, each make target exists, and Python blocks run."""
    parser = build_parser()
    makefile = (ROOT / "Makefile").read_text()
    page = blocks(README)
    checked = 0
    for lang, text in page:
        if lang == "python":
            exec(compile(text, "README.md", "exec"), {"__name__": "__main__"})
            continue
        for line in commands(text):
            words = line.split()
            if words[0] == "make":
                assert re.search(rf"^{words[1]}:", makefile, re.M), f"README: no make target {words[1]!r}"
                continue
            words = words[words.index("lr0fm") + 1:]  # also `torchrun ... -m lr0fm eval ...`
            levels, options = [parser], []
            for word in words:
                word = word.strip("[]")
                if word.startswith("-"):
                    options.append(word.split("=")[0])
                elif _subcommands(levels[-1]) and not options:
                    subs = _subcommands(levels[-1])
                    names = word.split("|")
                    assert all(n in subs for n in names), f"README: no subcommand {word!r} in {line!r}"
                    levels.append(subs[names[0]])
            known = set().union(*(_options(p) for p in levels))
            unknown = [o for o in options if o not in known]
            assert not unknown, f"README: {line!r} uses option(s) the CLI does not have: {unknown}"
            checked += 1
    assert checked >= 10
