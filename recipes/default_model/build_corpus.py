"""Step 1 of the default model's recipe: the training corpus.

Sources: CPython's standard library (PSF licence; test/, idlelib/, site-packages/ left out) and every
package installed in the project's virtual environment whose licence metadata is permissive
(MIT / BSD / Apache / PSF / ISC and the like; anything else, e.g. MPL or GPL, is left out), except
the cross-file benchmark's packages (BENCHMARK_PACKAGES), which no training run may see. Python
files only. Files are filtered (engine.train.sources: binary, generated, huge, secrets), deduplicated
by content, and 2 % of files are held out by a stable hash of their path.

Writes OUT/train.jsonl, OUT/heldout.jsonl (one {"repo", "path", "text"} per line) and OUT/manifest.json
(every source with its version, licence and file counts). Usage:
    python recipes/default_model/build_corpus.py --out /work/runs/default/corpus
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import sysconfig
from email.parser import Parser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.atomic import atomic_file, write_text_atomic  # noqa: E402
from engine.evaluate.crossfile_cases import ALL_PACKAGES  # noqa: E402
from engine.train.sources import SourceFile, dedupe, reject_reason, split_heldout  # noqa: E402

PERMISSIVE = {
    "MIT", "BSD", "BSD-2-CLAUSE", "BSD-3-CLAUSE", "0BSD", "APACHE-2.0", "APACHE", "APACHE 2.0",
    "PSF", "PSF-2.0", "PYTHON-2.0", "ISC", "ZLIB", "CC0-1.0", "BSL-1.0", "LLVM-EXCEPTION",
    "CNRI-PYTHON", "UNLICENSE",
}
CLASSIFIER_OK = ("MIT License", "BSD License", "Apache Software License", "Python Software Foundation",
                 "ISC License")
STDLIB_SKIP = {"test", "idlelib", "site-packages", "lib2to3", "tkinter", "turtledemo", "ensurepip",
               "config-3.11-x86_64-linux-gnu", "__pycache__"}
HELDOUT_FRACTION = 0.02
# Never trained on, even when installed: the packages the cross-file and adaptation benchmarks measure
# with (engine/evaluate/crossfile_cases.py, PACKAGES and UNSEEN_PACKAGES) must stay unseen by the model
# they measure.
BENCHMARK_PACKAGES = frozenset(p.name for p in ALL_PACKAGES)


def is_benchmark_package(name: str) -> bool:
    """Whether a distribution (a PyPI name, or a Debian `python3-*` package name) is one of the
    benchmark's packages."""
    norm = re.sub(r"[-_.]+", "-", name).lower()
    norm = re.sub(r"^python3?-", "", norm)
    return norm in BENCHMARK_PACKAGES


def licence_of(meta: dict[str, str], classifiers: list[str]) -> tuple[str, bool]:
    """(licence text as declared, is it permissive)."""
    expr = meta.get("License-Expression")
    if expr:
        if " OR " in expr and "(" not in expr:  # any alternative will do
            ok = any(t.strip().upper() in PERMISSIVE for t in expr.split(" OR "))
        else:
            terms = [t for t in re.split(r"\s+(?:AND|OR|WITH)\s+|[()]", expr) if t.strip()]
            ok = all(t.strip().upper() in PERMISSIVE for t in terms)
        return expr, ok
    lic = (meta.get("License") or "").strip()
    if lic and len(lic) < 40:
        norm = lic.upper().replace(" LICENSE", "").strip()
        if norm in PERMISSIVE or norm.replace(" ", "-") in PERMISSIVE:
            return lic, True
    hits = [c for c in classifiers if c.startswith("License ::")]
    if hits:
        return "; ".join(h.split("::")[-1].strip() for h in hits), all(
            any(ok in h for ok in CLASSIFIER_OK) for h in hits
        )
    return lic or "unknown", False


def stdlib_files(root: Path) -> list[SourceFile]:
    out = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if set(rel.split("/")[:-1]) & STDLIB_SKIP or rel.split("/")[0] in STDLIB_SKIP:
            continue
        data = p.read_bytes()
        if reject_reason(rel, data) is None:
            out.append(SourceFile("cpython-stdlib", rel, data.decode("utf-8")))
    return out


def package_sources(site: Path) -> tuple[list[SourceFile], list[dict]]:
    files: list[SourceFile] = []
    records: list[dict] = []
    for dist in sorted(site.glob("*.dist-info")):
        raw = (dist / "METADATA").read_text(errors="replace")
        msg = Parser().parsestr(raw, headersonly=True)
        meta = {k: v for k, v in msg.items()}
        name, version = meta.get("Name", dist.name), meta.get("Version", "?")
        lic, ok = licence_of(meta, msg.get_all("Classifier") or [])
        entry = {"name": name, "version": version, "licence": lic, "included": ok, "files": 0}
        if is_benchmark_package(name):
            entry.update(included=False, excluded="cross-file benchmark package")
        records.append(entry)
        if not entry["included"] or not (dist / "RECORD").is_file():
            continue
        for line in (dist / "RECORD").read_text().splitlines():
            rel = line.split(",", 1)[0]
            if not rel.endswith(".py") or rel.startswith(".."):
                continue
            p = site / rel
            if not p.is_file():
                continue
            data = p.read_bytes()
            if reject_reason(rel, data) is None:
                files.append(SourceFile(f"{name}-{version}", rel, data.decode("utf-8")))
                entry["files"] += 1
    return files, records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    ap.add_argument("--site-packages", type=Path, default=Path(sysconfig.get_paths()["purelib"]))
    args = ap.parse_args()

    std = stdlib_files(args.stdlib)
    pkg, records = package_sources(args.site_packages)
    all_files = list(dedupe(std + pkg))
    train, held = split_heldout(all_files, HELDOUT_FRACTION)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.jsonl", train), ("heldout.jsonl", held)):
        with atomic_file(args.out / name) as tmp, open(tmp, "w") as fh:
            for f in part:
                fh.write(json.dumps({"repo": f.repo, "path": f.path, "text": f.text}) + "\n")
    py = sys.version.split()[0]
    manifest = {
        "sources": [{"name": "cpython-stdlib", "version": py, "licence": "PSF-2.0", "included": True,
                     "files": len(std), "path": str(args.stdlib)}] + records,
        "files_after_dedupe": len(all_files),
        "train_files": len(train),
        "heldout_files": len(held),
        "train_chars": sum(len(f.text) for f in train),
        "heldout_chars": sum(len(f.text) for f in held),
        "heldout_fraction": HELDOUT_FRACTION,
        "heldout": [f"{f.repo}/{f.path}" for f in held],
    }
    write_text_atomic(args.out / "manifest.json", json.dumps(manifest, indent=1))
    print(f"{len(all_files)} files ({len(train)} train, {len(held)} held out), "
          f"{manifest['train_chars'] / 1e6:.1f} M train chars")
    for r in manifest["sources"]:
        print(f"  {'+' if r['included'] else '-'} {r['name']} {r['version']} [{r['licence']}] {r['files']}")


if __name__ == "__main__":
    main()
