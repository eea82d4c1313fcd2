#!/usr/bin/env python3
"""Issue 18's module rule: no source module over 600 lines outside tests.

Counts each `src/**/*.rs` file of the workspace crates up to its `#[cfg(test)] mod ...` (test
modules, inline or in their own file, do not count; nor do `tests/`, `benches/` or the test kit
crate `tests/`). Functions are checked by clippy (`too_many_lines`, clippy.toml)."""
import os
import re
import sys

LIMIT = 600
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_MOD = re.compile(r"\s*#\[cfg\(test\)\]\s*$")
MOD_DECL = re.compile(r"\s*(pub(\([^)]*\))?\s+)?mod\s+(\w+)\s*(;|\{)")


def module_dir(path):
    name = os.path.basename(path)
    if name in ("lib.rs", "main.rs", "mod.rs"):
        return os.path.dirname(path)
    return path[: -len(".rs")]


def main():
    crates = ["src"] + [
        os.path.join(d, "src")
        for d in sorted(os.listdir(root))
        if d != "tests" and os.path.isfile(os.path.join(root, d, "Cargo.toml"))
    ]
    files, test_files = [], set()
    for c in crates:
        for d, _, fs in os.walk(os.path.join(root, c)):
            files += [os.path.join(d, f) for f in fs if f.endswith(".rs")]
    counts = {}
    for p in files:
        lines = open(p, encoding="utf-8").read().split("\n")
        n = len(lines)
        for i, line in enumerate(lines[:-1]):
            m = MOD_DECL.match(lines[i + 1])
            if TEST_MOD.match(line) and m:
                if m.group(4) == ";":
                    test_files.add(os.path.join(module_dir(p), m.group(3) + ".rs"))
                else:
                    n = min(n, i)
        counts[p] = n
    over = [(n, p) for p, n in counts.items() if n > LIMIT and p not in test_files]
    for n, p in sorted(over, reverse=True):
        print(f"{os.path.relpath(p, root)}: {n} lines outside its tests (limit {LIMIT})")
    if over:
        print("split the module along its concerns (foo.rs + foo/*.rs); see DESIGN.md")
        return 1
    biggest = max((n, p) for p, n in counts.items() if p not in test_files)
    print(f"{len(counts)} modules, the largest {os.path.relpath(biggest[1], root)} ({biggest[0]} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
