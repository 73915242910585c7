"""One row per kernel, and docs/kernels.md made from the rows."""
from __future__ import annotations

import collections
import datetime
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import ops as _ops

BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"


@dataclass
class Row:
    label: str
    release: str
    package: str
    accel: str
    seconds: float
    result: dict | None     # what the guest's inside.py reported
    error: str              # why there is no result
    date: str = ""

    def __post_init__(self):
        self.date = self.date or datetime.date.today().isoformat()

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Row":
        return cls(**d)

    @property
    def counts(self) -> collections.Counter:
        return collections.Counter(t["outcome"] for t in ((self.result or {}).get("tests") or {}).values())

    @property
    def ok(self) -> bool:
        c = self.counts
        return bool(self.result) and not self.error and not c["failed"] and not c["error"] \
            and c["passed"] > 0

    def engine(self, name: str) -> str:
        e = ((self.result or {}).get("engines") or {}).get(name)
        if e is None:
            return "?"
        return "yes" if e["available"] else "no"

    def skips(self) -> collections.Counter:
        return collections.Counter(t.get("reason", "") for t in self.tests("skipped"))

    def tests(self, outcome: str) -> list:
        return [dict(t, id=i) for i, t in ((self.result or {}).get("tests") or {}).items()
                if t["outcome"] == outcome]


def summary(r: Row) -> str:
    if not r.result:
        return f"{r.release}: NO RESULT - {r.error}"
    c = r.counts
    return (f"{r.release}: {r.result.get('opcodes', '?')} io_uring ops; engines link "
            f"{r.engine('link')}, kernel {r.engine('kernel')}; tests {c['passed']} passed, "
            f"{c['skipped']} skipped, {c['failed'] + c['error']} failed "
            f"({r.seconds:.0f} s{', ' + r.accel if r.accel != 'native' else ''})"
            + (f"; {r.error}" if r.error else ""))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rows: list) -> str:
    ours = [op.name for op in _ops.OPS]
    out = ["| kernel | release | io_uring ops | sakura_uring ops missing | link engine | kernel handlers "
           "| tests passed / skipped / failed | run |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        res = r.result or {}
        if not res:
            out.append(f"| {r.label} | {_cell(r.release)} | – | – | – | – | **no result**: "
                       f"{_cell(r.error[:200])} | {r.date} |")
            continue
        have = set(res.get("ops") or [])
        missing = ", ".join(o for o in ours if o not in have) or "none"
        c = r.counts
        how = "native" if r.accel == "native" else f"QEMU {r.accel.upper()}"
        out.append(f"| {r.label} | {_cell(r.release)} | {res.get('opcodes', '?')} | {missing} | "
                   f"{r.engine('link')} | {r.engine('kernel')} | {c['passed']} / {c['skipped']} / "
                   f"{c['failed'] + c['error']} | {r.date}, {how}, {r.seconds:.0f} s |")
    out.append("")
    for r in rows:
        res = r.result or {}
        out.append(f"### {r.label}: {r.release}")
        out.append("")
        out.append(f"Package: {r.package}." if r.label != "host" else "The host kernel, natively.")
        if not res:
            out += ["", f"No result: {r.error}", ""]
            continue
        if res.get("probe_error"):
            out.append(f"Probe: {res['probe_error']}")
        if res.get("features"):
            out.append(f"io_uring features: {' '.join(res['features'])}.")
        out.append("")
        for name in ("link", "kernel"):
            e = (res.get("engines") or {}).get(name, {})
            label = {"link": "Link engine (`Ring`)", "kernel": "Kernel handlers (`KernelRing`)"}[name]
            out.append(f"- {label}: " + ("available." if e.get("available")
                                         else f"unavailable — {e.get('reason', '?')}"))
        if "tracer_missing" in res:
            out.append("- Tracer: " + ("every column." if not res["tracer_missing"] else
                                       "not on this kernel: " + "; ".join(res["tracer_missing"])
                                       + "."))
        skips = r.skips()
        if skips:
            out.append(f"- Skipped ({sum(skips.values())}):")
            for reason, n in sorted(skips.items(), key=lambda x: -x[1]):
                out.append(f"  - {n} × {_cell(reason)}")
        bad = r.tests("failed") + r.tests("error")
        if bad:
            out.append(f"- **Failed ({len(bad)})**:")
            for t in bad:
                out.append(f"  - `{t['id']}`: {_cell(t.get('reason', '')[:300])}")
        out.append("")
    return "\n".join(out)


def oldest_with_handlers(rows: list) -> Row | None:
    ok = [r for r in rows if r.label != "host" and r.engine("kernel") == "yes"]
    return min(ok, key=lambda r: _ops.release_tuple(r.release)) if ok else None


def write_doc(rows: list, path: Path) -> Path:
    body = render(rows)
    old = oldest_with_handlers(rows)
    newest_without = [r for r in rows if r.engine("kernel") == "no"]
    verdict = (f"Oldest kernel in the matrix on which kernel handlers work: **{old.release}** "
               f"({old.label})." if old else "No kernel in the matrix ran kernel handlers.")
    if newest_without and old:
        prev = max(newest_without, key=lambda r: _ops.release_tuple(r.release))
        verdict += f" The newest one without them: {prev.release} ({prev.label})."
    block = f"{BEGIN}\n{verdict}\n\n{body}\n{END}"
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda m: block, text, flags=re.S)
    else:
        text = (text or "# Kernels\n\n") + block + "\n"
    path.write_text(text)
    return path
