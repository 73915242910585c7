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


def test_kernel_handlers_doc_example_handler_compiles_and_runs(tmp_path):
    """The handlers written out in docs/kernel-handlers.md, Python and C, are the ones
    that run (the Python one from a file: a handler's source is read from its file)."""
    text = (ROOT / "docs/kernel-handlers.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    c_code = re.search(r"```c\n(.*?)```", text, re.S).group(1)
    (tmp_path / "echo.py").write_text(code)
    (tmp_path / "echo_c.py").write_text(
        "import tempfile\nfrom sakura_uring.kernel import KernelRing\n"
        f"SRC = {c_code!r}\n"
        "with tempfile.TemporaryFile() as f, KernelRing(SRC, name='echo.c') as kr:\n"
        "    print(kr.run(f.fileno(), data=b'hello kernel', timeout=5))\n")
    for script in ("echo.py", "echo_c.py"):
        out = subprocess.run([sys.executable, str(tmp_path / script)], capture_output=True,
                             text=True, timeout=120, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "HandlerResult(result=12, data=b'hello kernel')"


def test_trace_demo_example_runs():
    out = subprocess.run([sys.executable, str(ROOT / "examples/trace_demo.py")],
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_kernel_wc_example_counts_what_python_counts(tmp_path):
    f = tmp_path / "lines"
    f.write_bytes(b"".join(b"y" * (i % 97) + b"\n" for i in range(40_000)) + b"tail")
    out = subprocess.run([sys.executable, str(ROOT / "examples/kernel_wc.py"), str(f)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(f.read_bytes().count(b"\n")) == "40000"
    assert "the same count: True" in out.stderr
