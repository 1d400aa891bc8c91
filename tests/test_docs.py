"""The documentation stays true: the config reference matches the schema, README.org stays a front door,
and nothing in the repository points at files it does not ship."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tracked_files():
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        return [p for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts and ".git" not in p.parts]
    return [ROOT / f for f in out.stdout.splitlines() if (ROOT / f).is_file()]


def test_config_reference_is_generated_from_the_current_schema():
    proc = subprocess.run([sys.executable, "scripts/config_reference.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = (ROOT / "docs" / "config.md").read_text()
    from model_code import config

    for name, typ, _, _ in config.field_help():
        assert f"`{name}`" in text, name


def test_readme_is_a_front_door_of_at_most_300_lines():
    assert len((ROOT / "README.org").read_text().splitlines()) <= 300


def test_nothing_points_at_files_the_repository_does_not_ship():
    bad = re.compile(r"seeds/|shared/notes|ARCHITECTURE")
    hits = []
    for path in tracked_files():
        if path.suffix not in (".py", ".md", ".org", ".sh", ".json", ".yaml", ".yml", ".txt", ".cfg", ".ini") \
                and path.name != "Makefile":
            continue
        if path.name == "test_docs.py":
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if bad.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


def test_links_in_readme_and_docs_exist():
    missing = []
    org_link = re.compile(r"\[\[(?:file:)?([^\]:]+?)\](?:\[[^\]]*\])?\]")
    md_link = re.compile(r"\]\(([^)#:]+)(?:#[^)]*)?\)")
    for doc in [ROOT / "README.org", *(ROOT / "docs").glob("*.md")]:
        text = doc.read_text()
        for target in org_link.findall(text) + md_link.findall(text):
            if target.startswith(("http", "mailto")):
                continue
            if not (doc.parent / target).exists() and not (ROOT / target).exists():
                missing.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not missing, "\n".join(missing)


def _train_py(*args):
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True)


def test_train_help_is_short_flags_common_keys_and_where_every_key_is():
    import train
    from model_code import config

    out = _train_py("--help")
    assert out.returncode == 0 and out.stderr == ""
    lines = out.stdout.splitlines()
    assert len(lines) < 60 and len(out.stdout) < 6000, (len(lines), len(out.stdout))
    for flag in ("--config", "--cfg", "--savedir", "--workdir", "--quiet", "--help-config"):
        assert flag in out.stdout, flag
    defaults = {name: default for name, typ, default, _ in config.field_help()}
    for key in train.COMMON_KEYS:
        (line,) = [line for line in lines if line.startswith(f"  {key} ")]
        assert key in config.SCHEMA_KEYS and line.endswith(f"[default {defaults[key]}]"), line
    assert lines[-1] == "every key, and the older spellings accepted: python train.py --help-config (or docs/config.md)"


def test_train_help_config_lists_every_key_as_docs_config_md_does():
    from model_code import config

    out = _train_py("--help-config")
    assert out.returncode == 0 and out.stderr == ""
    text = (ROOT / "docs" / "config.md").read_text()
    for name, typ, default, _ in config.field_help():
        if typ != "group":
            assert f"  {name} " in out.stdout and f"[default {default}]" in out.stdout, name
            assert f"`{name}`" in text, name
    assert "--config X.py reads the X.yaml" in out.stdout
