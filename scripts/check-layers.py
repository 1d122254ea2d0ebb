#!/usr/bin/env python3
"""The agent's layering (docs/agent-internals.md, "Layers"), checked.

    check-layers.py AGENT-DIR [--program SHADOWCTL]

Each folder of agent/ is a layer and a static library.  A file of a layer
(its tests included) may include headers of its own layer and of the
layers it is allowed to use, never of a layer above or beside it; a few
system headers belong to one layer only; the pure layers use nothing of
the main loop; and shadowctl links neither SQLite, libvirt nor librbd.

Prints one line per violation, FILE:LINE: what, and exits 1 if any.
meson's include directories already make an upward include fail to
compile; this check names the rule that was broken.
"""
import os
import re
import subprocess
import sys

# layer -> the layers it may use (besides itself); the order is bottom-up
LAYERS = {
    "model": [],
    "qemu": [],
    "policy": ["model"],
    "config": ["policy", "model"],
    "sim": ["policy", "model"],
    "daemon": ["config", "policy", "qemu", "model"],
    "libvirt": ["daemon", "config", "policy", "qemu", "model"],
    "ctl": ["sim", "config", "policy", "model"],
}
# the programs in agent/ itself: main() and wiring
TOP_USES = ["libvirt", "daemon", "config", "policy", "qemu", "model"]

# system headers that only some places may include: (pattern, where, why)
RESERVED = [
    (re.compile(r"^libvirt/"), lambda layer, f: layer == "libvirt",
     "libvirt's headers belong to the libvirt layer"),
    (re.compile(r"^sqlite3\.h$"), lambda layer, f: layer == "daemon" and
     os.path.basename(f) in ("history.c", "test-history.c"),
     "SQLite belongs to daemon/history.c"),
    (re.compile(r"^(rbd|rados)/"), lambda layer, f: layer == "daemon" and
     os.path.basename(f) == "rbdimage.c",
     "librbd belongs to daemon/rbdimage.c"),
    (re.compile(r"^(gio/|glib-unix\.h$)"), lambda layer, f: layer not in ("model", "policy", "sim"),
     "model, policy and sim are pure: no I/O, no main loop"),
]
# calls the pure layers must not make
IMPURE = re.compile(r"\b(g_main_\w+|g_timeout_add\w*|g_idle_add\w*|g_thread_\w+|"
                    r"g_get_monotonic_time|g_get_real_time|GMainContext|GMainLoop)\b")
PURE = ("model", "policy", "sim")

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def headers_of(agent, layer):
    d = os.path.join(agent, layer)
    return {f for f in os.listdir(d) if f.endswith(".h")}


def check_tree(agent):
    problems = []
    owner = {}                      # header name -> layer
    for layer in LAYERS:
        for h in headers_of(agent, layer):
            if h in owner:
                problems.append("agent/%s/%s: a header of that name is also in %s/ "
                                "(header names are unique across layers)" % (layer, h, owner[h]))
            owner[h] = layer

    files = []
    for layer in LAYERS:
        for root, _dirs, names in os.walk(os.path.join(agent, layer)):
            for n in sorted(names):
                if n.endswith((".c", ".h")):
                    files.append((layer, os.path.join(root, n)))
    for n in sorted(os.listdir(agent)):
        if n.endswith((".c", ".h")):
            files.append((None, os.path.join(agent, n)))

    for layer, path in files:
        rel = os.path.relpath(path, os.path.dirname(agent))
        allowed = [layer] + LAYERS[layer] if layer else TOP_USES
        here = os.path.dirname(path)
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        for no, line in enumerate(lines, 1):
            m = INCLUDE.match(line)
            if m:
                quote, name = m.groups()
                if quote == '"':
                    if "/" in name:
                        problems.append('%s:%d: #include "%s": include a header by its name; '
                                        "the layer's include directories find it" % (rel, no, name))
                        continue
                    if os.path.exists(os.path.join(here, name)):
                        continue    # beside it (a test's own helper header)
                    where = owner.get(name)
                    if where is None:
                        problems.append('%s:%d: #include "%s": no layer has this header'
                                        % (rel, no, name))
                    elif where not in allowed:
                        problems.append('%s:%d: #include "%s" is the %s layer\'s, which %s '
                                        "may not use (allowed: %s)"
                                        % (rel, no, name, where,
                                           "agent/%s/" % layer if layer else "the programs",
                                           ", ".join(allowed)))
                else:
                    for pattern, ok, why in RESERVED:
                        if pattern.search(name) and not ok(layer, path):
                            problems.append("%s:%d: #include <%s>: %s" % (rel, no, name, why))
            if layer in PURE:
                code = line.split("//")[0]
                mi = IMPURE.search(code)
                if mi and not line.lstrip().startswith(("*", "/*")):
                    problems.append("%s:%d: %s: the %s layer is pure (no clock, no main loop, "
                                    "no threads)" % (rel, no, mi.group(1), layer))
    return problems


def check_program(program):
    out = subprocess.run(["readelf", "-d", program], capture_output=True, text=True)
    if out.returncode != 0:
        return ["%s: readelf failed: %s" % (program, out.stderr.strip())]
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out.stdout)
    return ["%s links %s, which the ctl layer does not use" % (os.path.basename(program), lib)
            for lib in needed if lib.startswith(("libsqlite3", "libvirt", "librbd", "librados"))]


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    agent = os.path.abspath(args[0])
    problems = check_tree(agent)
    if "--program" in args:
        problems += check_program(args[args.index("--program") + 1])
    for p in problems:
        print(p)
    if problems:
        print("layers: %d problem(s)" % len(problems))
        return 1
    print("layers: ok (%s)" % ", ".join(LAYERS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
