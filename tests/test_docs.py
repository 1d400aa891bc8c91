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
