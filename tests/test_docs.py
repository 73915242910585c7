"""The docs show what the code does: the op table and the examples run."""
import re
import subprocess
import sys
from pathlib import Path

from sakura_uring import ops

ROOT = Path(__file__).resolve().parents[1]


def test_api_doc_has_the_op_table():
    assert ops.markdown_table() in (ROOT / "docs/api.md").read_text()


def test_readme_example_runs():
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("True b'")


def test_examples_run():
    out = subprocess.run([sys.executable, str(ROOT / "examples/cat.py"), "/etc/hostname"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0 and out.stdout == Path("/etc/hostname").read_bytes()
    out = subprocess.run([sys.executable, str(ROOT / "examples/handler_server.py")],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(b"b'HTTP/1.0 200 OK")
    out = subprocess.run([sys.executable, str(ROOT / "examples/kernel_follow.py"), "/etc/hostname"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == Path("/etc/hostname").read_bytes()
    assert b"completions handled in kernel" in out.stderr


def test_many_files_example_runs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 10)
    b.write_bytes(b"y" * 5000)
    out = subprocess.run([sys.executable, str(ROOT / "examples/many_files.py"), str(a),
                          str(tmp_path / "missing"), str(b)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{a}: 10 bytes", f"{tmp_path / 'missing'}: missing",
                                       f"{b}: 4096 bytes"]
    assert "row 1 failed at openat" in out.stderr and "10 bytes (prepared run)" in out.stderr


def test_kernel_handlers_doc_example_handler_compiles_and_runs():
    """The handler written out in docs/kernel-handlers.md is the one that runs."""
    text = (ROOT / "docs/kernel-handlers.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "HandlerResult(result=12, data=b'hello kernel')"


def test_trace_demo_example_runs():
    out = subprocess.run([sys.executable, str(ROOT / "examples/trace_demo.py")],
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
