"""Optional backends are pip extras (pyproject.toml): a command that needs a missing one says in one
line which extra installs it (exit 2, nothing written), and the plain install's paths -- the offline
default model, open_clip models, the report -- import none of them."""
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lr0fm.cli import main
from lr0fm.errors import DatasetError
from lr0fm.extras import EXTRA_OF

ROOT = Path(__file__).resolve().parents[1]
ENGINE_MODULES = {"ray": "ray", "submitit": "slurm"}  # named by lr0fm.engines' own messages
OPTIONAL = {**EXTRA_OF, **ENGINE_MODULES}
TUX = Path("/usr/share/tuxpaint/stamps")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("_", "-")


def _one_line_naming(capsys, extra: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lr0fm: error: "), err
    assert err[0].endswith(f"which is not installed: pip install 'lr0fm[{extra}]'"), err
    return err[0]


def _missing(monkeypatch, module: str) -> str:
    """Make ``import module`` fail as if it were not installed; the extra that installs it."""
    monkeypatch.setitem(sys.modules, module, None)
    return OPTIONAL[module]


# -- the extras in pyproject.toml ---------------------------------------------------------------------

def test_each_extra_installs_the_module_its_error_line_names():
    project = _project()
    extras = project["optional-dependencies"]
    for module, extra in OPTIONAL.items():
        assert module in {_name(r) for r in extras[extra]}, (module, extra)
    # none of them is in the plain install, or the extra would be moot
    assert not {_name(r) for r in project["dependencies"]} & set(OPTIONAL)
    # [all] is every extra; [dev] (what `make test` installs) includes [all]
    (everything,) = extras["all"]
    assert everything.startswith("lr0fm[")
    assert set(everything[len("lr0fm["):-1].split(",")) == set(extras) - {"all", "dev"}
    assert "lr0fm[all]" in extras["dev"]


def test_torch_ranges_admit_the_makefile_pins():
    pins = dict(re.findall(r"(?<![\w-])(torch|torchvision)==([0-9.]+)", (ROOT / "Makefile").read_text()))
    assert set(pins) == {"torch", "torchvision"}, pins  # the pair, and not open_clip_torch's pin
    ranges = {_name(r): r for r in _project()["dependencies"]}
    for package, pinned in pins.items():
        low, high = re.fullmatch(rf"{package}>=([0-9.]+),<([0-9]+)", ranges[package]).groups()
        version = tuple(int(p) for p in pinned.split("."))
        assert tuple(int(p) for p in low.split(".")) <= version < (int(high),), (package, pinned, ranges[package])


# -- a missing extra is one line ----------------------------------------------------------------------

def _eval(out, spec, *args):
    return main(["--out", str(out), "eval", "--model", spec, "--no-progress", "--workers", "0", *args])


@pytest.mark.parametrize("module,prefix", [("datasets", "hfds"), ("webdataset", "wds")])
def test_hub_dataset_without_its_package(module, prefix, tiny_open_clip, tmp_path, monkeypatch, capsys):
    extra = _missing(monkeypatch, module)
    (tmp_path / "data").mkdir()
    out = tmp_path / "out"
    assert _eval(out, tiny_open_clip[0], "--dataset", f"{prefix}:{tmp_path / 'data'}") == 2
    assert f"{prefix}: dataset needs {module}" in _one_line_naming(capsys, extra)
    assert not (out / "records").exists()
    # the Python API raises the dataset error with the same line
    import lr0fm
    with pytest.raises(DatasetError, match=re.escape(f"pip install 'lr0fm[{extra}]'")):
        lr0fm.get_dataset(f"{prefix}:{tmp_path / 'data'}")


def test_sr_weights_without_spandrel(tiny_open_clip, image_folder, tmp_path, monkeypatch, capsys):
    extra = _missing(monkeypatch, "spandrel")
    weights = tmp_path / "x2.pth"
    weights.write_bytes(b"\0" * 64)
    out = tmp_path / "out"
    assert _eval(out, tiny_open_clip[0], "--dataset", "imagefolder", "--data-root", str(image_folder),
                 "--sr", str(weights)) == 2
    assert f"--sr {weights} needs spandrel" in _one_line_naming(capsys, extra)
    assert not (out / "records").exists()


def test_synth_without_diffusers(tmp_path, monkeypatch, capsys):
    extra = _missing(monkeypatch, "diffusers")
    captions = tmp_path / "captions.txt"
    captions.write_text("a photo of a cat\n")
    out = tmp_path / "synth"
    assert main(["synth", "--captions", str(captions), "--output", str(out), "--device", "cpu",
                 "--no-progress"]) == 2
    assert "lr0fm synth needs diffusers" in _one_line_naming(capsys, extra)
    assert not out.exists()


def test_analyze_predictions_without_nltk(tiny_open_clip, image_folder, tmp_path, monkeypatch, capsys):
    out, spec = tmp_path / "out", tiny_open_clip[0]
    data = ["--dataset", "imagefolder", "--data-root", str(image_folder)]
    assert _eval(out, spec, *data, "--resolutions", "16,hr") == 0
    wordnet = tmp_path / "wordnet"  # a WordNet folder as far as the files go: only nltk is missing
    wordnet.mkdir()
    (wordnet / "data.noun").write_text("")
    extra = _missing(monkeypatch, "nltk")
    capsys.readouterr()
    assert main(["--out", str(out), "analyze", "predictions", "--model", spec, *data, "--wordnet", str(wordnet)]) == 2
    assert "reading WordNet needs nltk" in _one_line_naming(capsys, extra)
    assert not (out / "analysis").exists()


def test_a_broken_install_is_told_apart_from_a_missing_one(monkeypatch):
    """An optional package that is there but cannot import (a dependency of its own missing) says so."""
    from lr0fm.extras import require

    class Broken:  # a finder whose import of the package fails on a missing dependency
        def find_spec(self, name, path=None, target=None):
            if name == "nltk":
                raise ModuleNotFoundError("No module named 'regex'", name="regex")

    monkeypatch.delitem(sys.modules, "nltk", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    with pytest.raises(DatasetError) as err:
        require("nltk", "reading WordNet", DatasetError)
    assert str(err.value) == ("reading WordNet needs nltk, which is installed but fails to import (No module named "
                              "'regex'); reinstall it: pip install 'lr0fm[wordnet]'")


# -- the plain install's paths import no optional package ---------------------------------------------

CORE_RUN = """
import json, sys
from lr0fm.cli import main
out, spec, folder, tux = sys.argv[1:]
if tux:  # the offline default, as `make run` runs it
    assert main(["--out", out, "eval", "--dataset", "tuxpaint", "--limit", "2", "--no-progress"]) == 0
else:
    assert main(["--out", out, "eval", "--dataset", "imagefolder", "--data-root", folder, "--limit", "2",
                 "--no-progress"]) == 0
assert main(["--out", out, "eval", "--model", spec, "--dataset", "imagefolder", "--data-root", folder,
             "--no-progress"]) == 0
assert main(["--out", out, "report"]) == 0
print(json.dumps(sorted(m for m in sys.modules if m.partition(".")[0] in OPTIONAL)))
"""


def test_the_plain_install_paths_import_no_optional_package(tiny_open_clip, image_folder, tmp_path):
    script = f"OPTIONAL = {sorted(OPTIONAL)!r}\n{CORE_RUN}"
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out"), tiny_open_clip[0], str(image_folder),
                          str(TUX) if TUX.is_dir() else ""],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []
    assert "conse-effnet-lite0" in run.stdout  # the report ran over both models' results
