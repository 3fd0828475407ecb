"""``dl1.hub.clip`` is a package split by job, uses open_clip's public names only, and keeps its light part light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dl1.hub.clip as H

PACKAGE = Path(H.__file__).parent


def _private_open_clip_names(path: Path) -> list[str]:
    """Names starting with an underscore taken from open_clip (attributes, imports) and stand-in modules."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("open_clip"):
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in ("open_clip", "meta", "pretrained"):
                found.append(ast.unparse(node))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "open_clip_meta" in node.value:
            found.append(node.value)
    return found


def test_no_private_open_clip_names():
    modules = sorted(PACKAGE.glob("*.py"))
    assert {p.stem for p in modules} >= {"names", "weights", "pretrained", "mini", "mini_store"}
    assert {str(p.name): _private_open_clip_names(p) for p in modules} == {p.name: [] for p in modules}
    assert "_dl1_open_clip_meta" not in sys.modules


def test_the_checker_sees_a_private_name(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import open_clip\nx = open_clip.pretrained._get_safe_alternatives('a.bin')\n")
    assert _private_open_clip_names(bad) == ["open_clip.pretrained._get_safe_alternatives"]


def test_names_and_limits_import_without_torch_and_heavy_names_on_demand():
    code = ("import sys, dl1.hub.clip as H; H.check_prompt_limits('x', 224, 12, 'visual_prompt', 'padding', 30, 0); "
            "print('torch' in sys.modules, 'open_clip' in sys.modules); from dl1.hub.clip import read_weights; "
            "print('torch' in sys.modules, callable(read_weights))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "True", "True"]


def test_safetensors_twins_follow_the_hub_layout():
    from dl1.hub.clip.pretrained import safetensors_twins

    assert safetensors_twins("open_clip_pytorch_model.bin") == ["open_clip_model.safetensors"]
    assert safetensors_twins("weights.pth") == ["weights.safetensors"]
    assert safetensors_twins("ViT-B-32.pt") == []


def test_the_clip_prompt_schema_lives_with_its_experiment():
    from dl1.experiments import clip_prompt_checkpoint as schema

    assert not hasattr(H, "read_prompt_checkpoint") and not hasattr(H, "PROMPT_FIELDS")
    assert {"read_prompt_checkpoint", "checkpoint_config", "check_resume", "PROMPT_FIELDS", "DATA_FIELDS"} <= set(
        vars(schema))


def test_the_clip_reports_do_not_import_open_clip():
    """Rebuilding a CLIP run's figures (``dl1 report``) reads the run folder only: open_clip (seconds to import) stays
    out, as long as the report modules take CLIP's normalisation constants from the torch-free ``dl1.report.clip``."""
    import subprocess

    code = ("import sys, dl1.report.clip; assert 'torch' not in sys.modules, 'report/clip imports torch'; "
            "import dl1.report.clip_prompt; assert 'open_clip' not in sys.modules, 'a CLIP report imports open_clip'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]


def test_the_report_and_model_normalisation_constants_are_open_clips():
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from dl1.models import clip as model_clip
    from dl1.report import clip as report_clip

    for module in (model_clip, report_clip):
        assert module.OPENAI_MEAN == tuple(OPENAI_DATASET_MEAN) and module.OPENAI_STD == tuple(OPENAI_DATASET_STD)
