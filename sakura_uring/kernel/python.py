"""Kernel handlers written in Python: a class whose on_complete(self, e) is written in a
small subset of Python and translated, once, to the C that bpf/sakura.h and bcc compile.

    import errno, os
    from sakura_uring.kernel import Arg, Step, handler, sdk as sk

    @handler
    class cat:
        fd: Arg                # request arguments, in order: kr.run(fd)
        READ: Step             # named steps
        got: int               # per-request state, kept between events

        def on_complete(self, e):
            if e.step == sk.START:
                return sk.read(e, self.READ, self.fd, 0, 4096, 0)
            if e.res < 0:
                return e.res
            return sk.finish(e, e.res, 0, e.res)

The subset (docs/kernel-handlers.md): integers (every value is a signed 64-bit int; `//`
and `%` divide as unsigned); if/elif/else; `for i in range(constant)`; break, continue;
locals; `self.<arg>`, `self.<state>`, `self.<Step>`, `self.in_len`, `self.buf[i]`; `e.step`,
`e.res`, `e.cflags`, `e.req`, `e.sqe_flags`, `e.personality`; the SDK's calls
(sakura_uring.kernel.sdk); other methods of the class as helpers; integer constants by
name from any module (os.O_RDONLY, socket.MSG_NOSIGNAL, errno.ENOENT) or scope. Anything
else is refused here, naming the construct and its Python line; the C carries #line
directives, so compiler and verifier messages name the Python line too."""
from __future__ import annotations

import ast
import builtins
import inspect
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Any, NoReturn

from . import sdk
from .program import MAX_ARGS, HandlerCompileError, Source
from .._native import lib as _lib

MAX_STATE = _lib.SK_VARS


class Arg:
    """Annotation: `fd: Arg` is a request argument (kr.run's integers, in order)."""


class Step:
    """Annotation: `READ: Step` is a named step (its push's completion has e.step == READ)."""


class HandlerTranslateError(HandlerCompileError):
    """The Python handler uses something outside the kernel subset; .line is its line."""

    def __init__(self, what: str, filename: str, line: int | None, code: str = "",
                 hint: str = ""):
        text = f"{hint}\n  {line}: {code.strip()}" if code else hint
        super().__init__(what, filename, "", text.strip("\n"), line=line)


@dataclass
class Handler:
    """A Python kernel handler, translated: give it to KernelRing. `.source` is the C."""
    name: str
    filename: str
    source: str
    args: tuple = ()
    steps: dict = field(default_factory=dict)     # name -> e.step value
    state: dict = field(default_factory=dict)     # name -> v[] index

    @property
    def nargs(self) -> int:
        return len(self.args)

    def c_source(self) -> Source:
        """What KernelRing compiles (program.handler_source asks for it)."""
        return Source(self.filename, self.source, self.nargs, self.args)

    def __repr__(self) -> str:
        return f"<kernel handler {self.name} ({self.filename}), args {self.args}>"


def handler(cls=None):
    """Translate a class written in the kernel subset into a Handler (see the module doc).
    Refused constructs raise HandlerTranslateError with the Python line."""
    frame = inspect.currentframe().f_back
    scope = {**frame.f_globals, **frame.f_locals}
    del frame
    if cls is None:
        return lambda c: _translate(c, scope)
    return _translate(cls, scope)


# ---- the class: its parts -------------------------------------------------------------

_EVENT_READ = {"step": "e->step", "res": "e->res", "cflags": "e->cflags", "req": "e->req"}
_EVENT_WRITE = {"sqe_flags": "e->sqe_flags", "personality": "e->personality"}
_BIN = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.BitAnd: "&", ast.BitOr: "|",
        ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>"}
_UNSIGNED = {ast.FloorDiv: "/", ast.Mod: "%"}
_CMP = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_UNARY = {ast.USub: "-", ast.Invert: "~", ast.Not: "!", ast.UAdd: "+"}
# what a refused node is called in the message, and what to do instead
_REFUSED = {
    ast.While: ("a while loop", "loops are `for i in range(N)` with a constant N: the "
                "verifier must see the bound"),
    ast.Div: ("true division (/)", "integers only: use //, which divides as unsigned"),
    ast.Pow: ("** (power)", "multiply, or shift for powers of two"),
    ast.Try: ("try/except", "a push reports failure in its result: test it"),
    ast.With: ("a with block", "there is nothing to enter or leave in a kernel handler"),
    ast.Lambda: ("a lambda", "write a method of the class and call it as self.name(e, ...)"),
    ast.FunctionDef: ("a nested function", "write a method of the class"),
    ast.ListComp: ("a list comprehension", "kernel handlers have no lists; use self.buf"),
    ast.List: ("a list", "kernel handlers have no lists; use self.buf or state fields"),
    ast.Tuple: ("a tuple", "assign one name at a time"),
    ast.Dict: ("a dict", "kernel handlers have no dicts"),
    ast.JoinedStr: ("an f-string", "kernel handlers have no strings"),
    ast.Global: ("global", "state between events lives in annotated fields (name: int)"),
    ast.Nonlocal: ("nonlocal", "state between events lives in annotated fields (name: int)"),
    ast.Raise: ("raise", "return -errno.E... ends the request with that error"),
    ast.Import: ("import", "import at module level; constants are read by name"),
    ast.ImportFrom: ("import", "import at module level; constants are read by name"),
    ast.Delete: ("del", ""), ast.Assert: ("assert", "test and return -errno.E..."),
    ast.Match: ("match", "use if/elif"), ast.Is: ("is", "compare integers with =="),
    ast.IsNot: ("is not", "compare integers with !="), ast.In: ("in", "compare with =="),
    ast.NotIn: ("not in", "compare with !="), ast.Yield: ("yield", ""),
    ast.Await: ("await", ""), ast.AsyncFunctionDef: ("async def", ""),
    ast.Starred: ("*args", "pass each argument"), ast.Slice: ("a slice", "index one byte"),
    ast.Set: ("a set", ""), ast.GeneratorExp: ("a generator", ""),
    ast.NamedExpr: ("the walrus :=", "assign on its own line"),
}


@dataclass
class _Parts:
    name: str
    filename: str
    lines: list
    args: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    state: list = field(default_factory=list)
    consts: dict = field(default_factory=dict)
    # name -> (ast.FunctionDef, filename, lines, the names its body sees)
    methods: dict = field(default_factory=dict)


def _class_ast(cls) -> tuple[ast.ClassDef, str, list[str]]:
    try:
        lines, first = inspect.getsourcelines(cls)
        filename = inspect.getsourcefile(cls) or "<handler>"
    except (OSError, TypeError) as exc:
        raise HandlerTranslateError(
            f"the source of {cls.__qualname__} is not available", "<handler>", None,
            hint=f"hint: a Python handler is read from its file ({exc}); define it in a .py "
                 f"file, not in an interactive prompt or python -c") from None
    tree = ast.parse(textwrap.dedent("".join(lines)))
    ast.increment_lineno(tree, first - 1)
    node = tree.body[0]
    if not isinstance(node, ast.ClassDef):
        raise TypeError(f"@handler decorates a class, not {type(node).__name__}")
    return node, filename, open(filename).read().splitlines() if filename[0] != "<" else []


def _parts(cls, scope) -> _Parts:
    if not inspect.isclass(cls):
        raise TypeError(f"@handler decorates a class with an on_complete(self, e) method, not "
                        f"{type(cls).__name__}")
    parts: _Parts | None = None
    for klass in reversed([k for k in cls.__mro__ if k is not object]):
        node, filename, lines = _class_ast(klass)
        # what a name in this class's body means: its module's globals, and for the
        # decorated class the scope it was decorated in (locals before globals, as Python)
        names = dict(vars(sys.modules[klass.__module__]))
        if klass is cls:
            names.update(scope)
        if parts is None:
            parts = _Parts(cls.__name__, filename, lines)
        for st in node.body:
            if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name):
                kind = _annotation_kind(st.annotation, names)
                name = st.target.id
                if kind is None:
                    _refuse(parts, st, f"the annotation of {name}",
                            "fields are `name: Arg` (an argument), `NAME: Step` (a step) or "
                            "`name: int` (per-request state)", filename, lines)
                if name in ("buf", "in_len"):
                    _refuse(parts, st, f"a field named {name}", f"self.{name} is the "
                            f"request's {'buffer' if name == 'buf' else 'input length'}: "
                            f"name the field otherwise", filename, lines)
                for group in (parts.args, parts.steps, parts.state):
                    if name in group:
                        group.remove(name)
                {"arg": parts.args, "step": parts.steps, "int": parts.state}[kind].append(name)
                if st.value is not None:
                    _refuse(parts, st, f"a default for {name}",
                            "fields start at 0 (state) or are given by the caller (arguments)",
                            filename, lines)
            elif isinstance(st, ast.FunctionDef):
                parts.methods[st.name] = (st, filename, lines, names)
            elif isinstance(st, ast.Assign) and len(st.targets) == 1 and \
                    isinstance(st.targets[0], ast.Name):
                value = getattr(klass, st.targets[0].id, None)
                if isinstance(value, bool) or not isinstance(value, int):
                    _refuse(parts, st, f"the class attribute {st.targets[0].id}",
                            "class attributes are integer constants", filename, lines)
                parts.consts[st.targets[0].id] = value
            elif isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant):
                continue                              # the docstring
            elif isinstance(st, ast.Pass):
                continue
            else:
                _refuse(parts, st, _what(st), "a handler class holds annotated fields, integer "
                        "constants and methods", filename, lines)
    assert parts is not None                  # cls itself is in its MRO
    if "on_complete" not in parts.methods:
        raise HandlerTranslateError(f"{cls.__name__} has no on_complete(self, e) method",
                                    parts.filename, None)
    if len(parts.args) > MAX_ARGS:
        raise HandlerTranslateError(f"{cls.__name__} declares {len(parts.args)} arguments",
                                    parts.filename, None, hint=f"a request takes at most "
                                    f"{MAX_ARGS}")
    if len(parts.state) > MAX_STATE:
        raise HandlerTranslateError(f"{cls.__name__} declares {len(parts.state)} state fields",
                                    parts.filename, None, hint=f"a request keeps at most "
                                    f"{MAX_STATE} (r->v[]); keep more in self.buf")
    return parts


def _annotation_kind(node, names: dict) -> str | None:
    try:
        value = eval(compile(ast.Expression(node), "<annotation>", "eval"), dict(names))
    except Exception:
        value = getattr(node, "id", None) or getattr(node, "attr", None)
    if value is Arg or value == "Arg":
        return "arg"
    if value is Step or value == "Step":
        return "step"
    if value is int or value == "int":
        return "int"
    return None


def _what(node) -> str:
    for kind, (what, _) in _REFUSED.items():
        if isinstance(node, kind):
            return what
    return {"Expr": "an expression statement", "ClassDef": "a nested class"}.get(
        type(node).__name__, f"`{type(node).__name__}`")


def _refuse(parts, node, what, hint, filename=None, lines=None, plain=False) -> NoReturn:
    """Refuse `what` (a construct: "... is outside the subset"; plain: a whole message)."""
    line = getattr(node, "lineno", None)
    lines = parts.lines if lines is None else lines
    code = lines[line - 1] if line and line <= len(lines) else ""
    raise HandlerTranslateError(what if plain else f"{what} is outside the kernel-handler subset",
                                filename or parts.filename, line, code,
                                f"hint: {hint}" if hint else "")


def _translate(cls, scope: dict) -> Handler:
    parts = _parts(cls, scope)
    name = parts.name
    out = [f"/* generated from {name} ({parts.filename}) by sakura_uring.kernel.handler */\n",
           f"SK_NARGS({len(parts.args)});\n"]
    if parts.steps:
        out.append("enum { " + ", ".join(f"STEP_{s} = {i}" for i, s in
                                         enumerate(parts.steps, 1)) + " };\n")
    _refuse_recursion(parts)
    fns = []
    for node, filename, lines, names in parts.methods.values():
        fns.append(_Function(parts, names, node, filename, lines))
    for fn in fns:
        if fn.name != "on_complete":
            out.append(fn.prototype() + ";\n")
    for fn in fns:
        out.append(fn.emit())
    return Handler(name, parts.filename, "".join(out), tuple(parts.args),
                   {s: i for i, s in enumerate(parts.steps, 1)},
                   {s: i for i, s in enumerate(parts.state)})


def _state(i: int) -> str:
    """State field i, r->v[i], read and written through volatile: the verifier then knows
    nothing of it at the top of a loop iteration, and prunes (docs/kernel-handlers.md,
    Verifier budget, habit 4); a value held in a local stays in a register."""
    return f"*(volatile u64 *)&e->r->v[{i}]"


def _parens(c: str) -> str:
    """c in one pair of parentheses (an expression is already in one when they match)."""
    if c.startswith("(") and c.endswith(")"):
        depth = 0
        for i, ch in enumerate(c):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(c) - 1:
                return f"({c})"
        return c
    return f"({c})"


def _refuse_recursion(parts: _Parts) -> None:
    """Helper methods are inlined: one that calls itself, directly or not, can't be."""
    calls = {}
    for name, (node, *_) in parts.methods.items():
        calls[name] = [(c.func.attr, c) for c in ast.walk(node) if isinstance(c, ast.Call)
                       and isinstance(c.func, ast.Attribute) and isinstance(c.func.value, ast.Name)
                       and c.func.value.id == "self" and c.func.attr in parts.methods]

    def visit(name, path):
        for callee, call in calls.get(name, []):
            if callee in path:
                node, filename, lines, _ = parts.methods[name]
                _refuse(parts, call, f"a recursive call of self.{callee}()",
                        "helpers are inlined into on_complete: loop with for i in range(N), "
                        "or go on at the next event (sk.nop)", filename, lines)
            visit(callee, path | {callee})
    for name in calls:
        visit(name, {name})


def _c_file(filename: str) -> str:
    return filename.replace("\\", "/").replace('"', "'").replace("\n", " ")


def _literal(v: int) -> str:
    if isinstance(v, bool):
        v = int(v)
    if -(1 << 63) <= v < (1 << 63):
        return f"{v}LL" if v >= 0 else f"({v}LL)" if v > -(1 << 63) else "(-9223372036854775807LL - 1)"
    if v < (1 << 64):
        return f"((s64){v}ULL)"
    raise OverflowError(v)


# ---- one method: statements and expressions --------------------------------------------

class _Function:
    """One method in C. Its locals and parameters are py_<name> there, so that no Python
    name collides with a C keyword, type or SDK name."""

    def __init__(self, parts: _Parts, names: dict, node: ast.FunctionDef, filename, lines):
        self.parts, self.node, self.filename, self.lines = parts, node, filename, lines
        self.scope = names
        self.name = node.name
        self.uses_buf = False
        a = node.args
        if a.vararg or a.kwarg or a.kwonlyargs or a.defaults or a.posonlyargs:
            self.refuse(node, "*args, **kwargs, keyword-only or default parameters",
                        "a method takes self, e and integers")
        params = [x.arg for x in a.args]
        if params[:2] != ["self", "e"] or (self.name == "on_complete" and len(params) != 2):
            self.refuse(node, f"the parameters ({', '.join(params)}) of {self.name}",
                        "on_complete is (self, e); a helper method is (self, e, ...integers)")
        self.params = params[2:]
        self.locals = [n for n in _assigned(node) if n not in self.params]

    def refuse(self, node, what, hint="", plain=False) -> NoReturn:
        _refuse(self.parts, node, what, hint, self.filename, self.lines, plain)

    def lit(self, node, v: int) -> str:
        if not -(1 << 63) <= v < (1 << 64):
            self.refuse(node, f"the integer {v}, which does not fit in 64 bits",
                        "values are signed 64-bit integers (unsigned up to 2**64 - 1)",
                        plain=True)
        return _literal(v)

    def prototype(self) -> str:
        ps = "".join(f", s64 py_{p}" for p in self.params)
        return f"static __always_inline s64 m_{self.name}(struct sk_event *e{ps})"

    def emit(self) -> str:
        body = []
        for st in self.node.body:
            body += self.stmt(st, 1)
        head = ("static int on_complete(struct sk_event *e)" if self.name == "on_complete"
                else self.prototype())
        pre = [f'#line {self.node.lineno} "{_c_file(self.filename)}"\n', head + "\n{\n"]
        for n in self.locals:
            pre.append(f"    s64 py_{n} = 0;\n")
        if self.uses_buf:
            pre.append("    struct sk_buf *sk__b = sk_buf(e);\n    if (!sk__b)\n"
                       "        return -EFAULT;\n")
        return "".join(pre + body) + "    return 0;\n}\n"

    # statements
    def stmt(self, st, depth: int) -> list[str]:
        pad = "    " * depth
        line = [f'#line {st.lineno} "{_c_file(self.filename)}"\n']
        if isinstance(st, ast.Expr):
            if isinstance(st.value, ast.Constant) and isinstance(st.value.value, str):
                return []                              # a docstring
            if not isinstance(st.value, ast.Call):
                self.refuse(st, "an expression whose value is dropped", "call a function, or "
                            "assign the value")
            return line + [f"{pad}{self.expr(st.value)};\n"]
        if isinstance(st, ast.Return):
            return line + [f"{pad}return {self.expr(st.value) if st.value else '0'};\n"]
        if isinstance(st, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            return line + [pad + self.assign(st) + "\n"]
        if isinstance(st, ast.If):
            out = line + [f"{pad}if {_parens(self.expr(st.test))} {{\n"]
            for s in st.body:
                out += self.stmt(s, depth + 1)
            if st.orelse:
                out.append(f"{pad}}} else {{\n")
                for s in st.orelse:
                    out += self.stmt(s, depth + 1)
            return out + [f"{pad}}}\n"]
        if isinstance(st, ast.For):
            return line + self.for_loop(st, depth)
        if isinstance(st, ast.Break):
            return line + [f"{pad}break;\n"]
        if isinstance(st, ast.Continue):
            return line + [f"{pad}continue;\n"]
        if isinstance(st, ast.Pass):
            return []
        self.refuse(st, _what(st), _REFUSED.get(type(st), ("", ""))[1])

    def for_loop(self, st: ast.For, depth: int) -> list[str]:
        pad = "    " * depth
        it: Any = st.iter
        if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and
                it.func.id == "range" and not it.keywords and 1 <= len(it.args) <= 3):
            self.refuse(st, "a for loop over anything but range()",
                        "loops are `for i in range(N)` with a constant N")
        target: Any = st.target
        if not isinstance(target, ast.Name):
            self.refuse(st, "a for loop target that is not a name")
        if st.orelse:
            self.refuse(st, "for ... else", "test after the loop")
        bounds = [self.constant(a) for a in it.args]
        if any(b is None for b in bounds):
            self.refuse(st, "range() with a bound that is not a constant",
                        "the verifier must see the bound: range(N) with N a literal or a "
                        "named constant; test a variable limit inside and break")
        start, stop, step = (0, bounds[0], 1) if len(bounds) == 1 else \
            (bounds[0], bounds[1], bounds[2] if len(bounds) == 3 else 1)
        if step == 0:
            self.refuse(st, "range() with a step of 0")
        v = "py_" + target.id
        cmp = "<" if step > 0 else ">"
        out = [f"{pad}for ({v} = {self.lit(st, start)}; {v} {cmp} {self.lit(st, stop)}; "
               f"{v} += {self.lit(st, step)}) {{\n"]
        for s in st.body:
            out += self.stmt(s, depth + 1)
        return out + [f"{pad}}}\n"]

    def assign(self, st) -> str:
        if isinstance(st, ast.Assign):
            if len(st.targets) != 1:
                self.refuse(st, "a chained assignment (a = b = ...)", "assign one at a time")
            target, value, op = st.targets[0], st.value, "="
        elif isinstance(st, ast.AnnAssign):
            if st.value is None:
                return ";"
            target, value, op = st.target, st.value, "="
        else:
            target, value = st.target, st.value
            if type(st.op) in _BIN:
                op = _BIN[type(st.op)] + "="
            elif type(st.op) in _UNSIGNED:
                t = self.target(target, st)
                return f"{t} = {self.unsigned(type(st.op), self.expr(target), self.expr(value))};"
            else:
                self.refuse(st, _REFUSED.get(type(st.op), (f"the operator {type(st.op).__name__}",))[0])
        if isinstance(target, ast.Subscript):
            if op != "=":
                self.refuse(st, "an augmented assignment to self.buf[...]",
                            "read the byte into a local, change it, store it")
            self.buffer(target, st)
            return f"sk_putc(sk__b, (u64)({self.expr(target.slice)}), {self.expr(value)});"
        return f"{self.target(target, st)} {op} {self.expr(value)};"

    def target(self, t, st) -> str:
        if isinstance(t, ast.Name):
            if t.id in self.params or t.id in self.locals:
                return "py_" + t.id
        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name):
            if t.value.id == "self" and t.attr in self.parts.state:
                return _state(self.parts.state.index(t.attr))
            if t.value.id == "self" and t.attr in self.parts.args:
                self.refuse(st, f"self.{t.attr} is an argument, and arguments are read-only",
                            "copy it into a state field (name: int)", plain=True)
            if t.value.id == "self":
                self.refuse(st, f"self.{t.attr} is assigned but the class declares no such "
                            f"state field", f"declare it in the class: {t.attr}: int", plain=True)
            if t.value.id == "e" and t.attr in _EVENT_WRITE:
                return _EVENT_WRITE[t.attr]
            if t.value.id == "e":
                self.refuse(st, f"assignment to e.{t.attr}",
                            "the event's sqe_flags and personality can be set; the rest is "
                            "read-only")
        if isinstance(t, ast.Tuple):
            self.refuse(st, "unpacking into several names", "assign one name at a time")
        self.refuse(st, f"assignment to {ast.unparse(t)}")

    def buffer(self, node, st):
        v = node.value
        if not (isinstance(v, ast.Attribute) and isinstance(v.value, ast.Name) and
                v.value.id == "self" and v.attr == "buf"):
            self.refuse(st, f"indexing {ast.unparse(v)}", "the one indexable thing is self.buf")
        if isinstance(node.slice, ast.Slice):
            self.refuse(st, "a slice of self.buf", "index one byte at a time, or use "
                        "sk.compare / sk.find_byte / sk.count_byte")
        self.uses_buf = True

    # expressions: every value is an s64
    def constant(self, node):
        """The integer a node names at translation time (a literal, a named constant), or
        None."""
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, int) else None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            v = self.constant(node.operand)
            return None if v is None else -v
        obj = self.resolve(node)
        if isinstance(obj, int) and not isinstance(obj, bool):
            return obj
        return None

    def resolve(self, node) -> Any:
        """The Python object a name or dotted name denotes in the handler's scope, or
        _MISSING (locals, fields and steps are not looked up here)."""
        if isinstance(node, ast.Name):
            if node.id in self.locals or node.id in self.params or node.id in ("self", "e"):
                return _MISSING
            if node.id in self.parts.steps:
                return _MISSING
            return self.scope.get(node.id, getattr(builtins, node.id, _MISSING))
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            if base is _MISSING or isinstance(base, int):
                return _MISSING
            return getattr(base, node.attr, _MISSING)
        return _MISSING

    def expr(self, node) -> str:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, int):
                return self.lit(node, node.value)
            what = "a string" if isinstance(node.value, (str, bytes)) else repr(node.value)
            self.refuse(node, what, "kernel handlers have integers only; a byte is ord('x')")
        if isinstance(node, ast.Name):
            if node.id in self.params or node.id in self.locals:
                return "py_" + node.id
            if node.id in self.parts.steps:
                return f"STEP_{node.id}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "self":
                return self.field(node)
            if node.value.id == "e":
                if node.attr in _EVENT_READ or node.attr in _EVENT_WRITE:
                    return f"((s64){_EVENT_READ.get(node.attr) or _EVENT_WRITE[node.attr]})"
                self.refuse(node, f"e.{node.attr}", "the event has step, res, cflags, req, "
                            "sqe_flags and personality")
        if isinstance(node, (ast.Name, ast.Attribute)):
            obj = self.resolve(node)
            if isinstance(obj, sdk.Layout):
                return f"((s64){obj.macro})"
            if isinstance(obj, int):
                return self.lit(node, obj)
            if obj is _MISSING:
                self.refuse(node, f"the name {ast.unparse(node)} is no local, argument, "
                            f"state field, step or integer constant",
                            "assign locals before use; declare fields in the class; "
                            "constants come from any module by name (os.O_RDONLY)", plain=True)
            self.refuse(node, f"{ast.unparse(node)} (a {type(obj).__name__})",
                        "kernel handlers compute with integers")
        if isinstance(node, ast.BinOp):
            a, b = self.expr(node.left), self.expr(node.right)
            if type(node.op) in _BIN:
                return f"({a} {_BIN[type(node.op)]} {b})"
            if type(node.op) in _UNSIGNED:
                return self.unsigned(type(node.op), a, b)
            self.refuse(node, *_REFUSED.get(type(node.op), (type(node.op).__name__, "")))
        if isinstance(node, ast.UnaryOp):
            return f"({_UNARY[type(node.op)]}{self.expr(node.operand)})"
        if isinstance(node, ast.BoolOp):
            op = " && " if isinstance(node.op, ast.And) else " || "
            return "(" + op.join(f"({self.expr(v)} != 0)" for v in node.values) + ")"
        if isinstance(node, ast.Compare):
            terms, left = [], node.left
            for cmp, right in zip(node.ops, node.comparators):
                if type(cmp) not in _CMP:
                    self.refuse(node, *_REFUSED.get(type(cmp), (type(cmp).__name__, "")))
                terms.append(f"({self.expr(left)} {_CMP[type(cmp)]} {self.expr(right)})")
                left = right
            return terms[0] if len(terms) == 1 else "(" + " && ".join(terms) + ")"
        if isinstance(node, ast.IfExp):
            return f"({self.expr(node.test)} ? {self.expr(node.body)} : {self.expr(node.orelse)})"
        if isinstance(node, ast.Subscript):
            self.buffer(node, node)
            return f"((s64)sk_getc(sk__b, (u64)({self.expr(node.slice)})))"
        if isinstance(node, ast.Call):
            return self.call(node)
        self.refuse(node, _what(node), _REFUSED.get(type(node), ("", ""))[1])

    @staticmethod
    def unsigned(op, a: str, b: str) -> str:
        # BPF divides unsigned only (LLVM 14 refuses signed division)
        return f"((s64)((u64)({a}) {_UNSIGNED[op]} (u64)({b})))"

    def field(self, node) -> str:
        attr = node.attr
        if attr in self.parts.state:
            return f"((s64){_state(self.parts.state.index(attr))})"
        if attr in self.parts.args:
            return f"((s64)e->r->arg[{self.parts.args.index(attr)}])"
        if attr in self.parts.steps:
            return f"STEP_{attr}"
        if attr in self.parts.consts:
            return self.lit(node, self.parts.consts[attr])
        if attr == "in_len":
            return "((s64)e->r->in_len)"
        if attr == "buf":
            self.refuse(node, "self.buf as a value", "index it: self.buf[i]")
        self.refuse(node, f"self.{attr} is not declared by the class",
                    f"declare it: `{attr}: int` (state), `{attr}: Arg` or `{attr}: Step`",
                    plain=True)

    def call(self, node: ast.Call) -> str:
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and \
                f.value.id == "self":
            if f.attr not in self.parts.methods or f.attr == "on_complete":
                self.refuse(node, f"self.{f.attr}(), which is no helper method of the class")
            if node.keywords:
                self.refuse(node, "keyword arguments to a helper method")
            params = [a.arg for a in self.parts.methods[f.attr][0].args.args][1:]
            if len(node.args) != len(params):
                self.refuse(node, f"self.{f.attr}() with {len(node.args)} arguments",
                            f"it takes ({', '.join(params)})")
            args = [self.event_arg(node.args[0], node)] + [self.expr(a) for a in node.args[1:]]
            return f"m_{f.attr}({', '.join(args)})"
        if isinstance(f, ast.Name) and f.id in ("ord", "min", "max", "abs", "int", "bool"):
            return self.builtin(f.id, node)
        fn: Any = self.resolve(f)
        c_name = getattr(fn, "c_name", None)
        is_sdk = c_name is not None and sdk.CALLS.get(getattr(fn, "__name__", "")) is fn
        if not is_sdk:
            self.refuse(node, f"a call of {ast.unparse(f)}()",
                        "a handler calls the SDK (sakura_uring.kernel.sdk), its own methods "
                        "(self.name(e, ...)) and ord/min/max/abs")
        sig = inspect.signature(fn)
        try:
            bound = sig.bind(*node.args, **{str(k.arg): k.value for k in node.keywords})
        except TypeError as exc:
            self.refuse(node, f"{ast.unparse(f)}() is called with the wrong arguments ({exc})",
                        f"its signature: {fn.__name__}{sig}", plain=True)
        bound.apply_defaults()
        args = []
        for pname, value in bound.arguments.items():
            if pname == "e":
                args.append(self.event_arg(value, node))
            elif isinstance(value, ast.AST):
                args.append(self.expr(value))
            else:
                args.append(self.lit(node, value))
        return f"((s64){c_name}({', '.join(args)}))"

    def event_arg(self, node, call) -> str:
        if not (isinstance(node, ast.Name) and node.id == "e"):
            self.refuse(call, f"{ast.unparse(call.func)}() with {ast.unparse(node)} first",
                        "the first argument is the event, e")
        return "e"

    def builtin(self, name: str, node: ast.Call) -> str:
        args = node.args
        if node.keywords:
            self.refuse(node, f"keyword arguments to {name}()")
        if name == "ord":
            if len(args) == 1 and isinstance(args[0], ast.Constant) and \
                    isinstance(args[0].value, (str, bytes)) and len(args[0].value) == 1:
                v = args[0].value
                return self.lit(node, v[0] if isinstance(v, bytes) else ord(v))
            self.refuse(node, "ord() of anything but a one-character literal")
        if name in ("int", "bool", "abs") and len(args) == 1:
            x = self.expr(args[0])
            return {"int": x, "bool": f"((s64)({x} != 0))",
                    "abs": f"({x} < 0 ? -{x} : {x})"}[name]
        if name in ("min", "max") and len(args) >= 2:
            out = self.expr(args[0])
            for a in args[1:]:
                b = self.expr(a)
                out = f"({out} {'<' if name == 'min' else '>'} {b} ? {out} : {b})"
            return out
        self.refuse(node, f"{name}() with {len(args)} arguments")


class _Missing:
    def __repr__(self):
        return "<missing>"


_MISSING = _Missing()


def _assigned(fn: ast.FunctionDef) -> list[str]:
    """Local names, in order of first assignment (for loop variables too)."""
    seen: dict[str, None] = {}
    for node in ast.walk(fn):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    seen.setdefault(t.id)
        elif isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            seen.setdefault(node.target.id)
    return list(seen)
