#!/usr/bin/env python3
"""The architecture's rules, checked on the source tree: check_layers.py ROOT [FOLDER...]

1. The common/ libraries depend one way: a library includes headers of itself and of the
   libraries below it only, and outside libraries only where its layer allows them (compute
   includes no network, JSON or regex header; only its backends include BLAS, OpenMP, oneDNN or CUDA).
2. No circles between the files of ps/, worker/ and tools/: a file "uses" another when it calls a
   function or names a type defined there; those uses form no loop.

Prints each violation and exits 1 if there is any."""
import os, re, sys
from collections import defaultdict

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
COMMON = os.path.join(ROOT, 'common')

# Each library: the libraries it may include, and the outside headers it may include.
LAYERS = {
    'base': ([], {'xxhash.h'}),
    'compute': (['base'], set()),  # the families reach BLAS and threads through ops.h only
    'compute/cpu': (['base', 'compute'], {'cblas.h', 'omp.h', 'oneapi/dnnl/dnnl.h'}),
    'compute/cuda': (['base', 'compute'], {'cuda_runtime.h', 'cuda_bf16.h', 'cublasLt.h',
                                           'cublas_v2.h', 'cudnn.h', 'cuda.h', 'mma.h'}),
    'text': (['base'], {'jansson.h', 'pcre2.h', 'utf8proc.h'}),
    'formats': (['base', 'compute'], {'jansson.h', 'pcre2.h', 'sodium.h', 'xxhash.h',
                                     'tensorboard.pb-c.h', 'isa-l/crc.h'}),
    'train': (['base', 'compute', 'text', 'formats'], {'jansson.h'}),
    'net': (['base', 'compute', 'text', 'formats', 'train'],
            {'zmq.h', 'microhttpd.h', 'sodium.h', 'jansson.h', 'loraps.pb-c.h'}),
}
# Headers of outside libraries (anything else in <...> is the C library or POSIX).
OUTSIDE = {'cblas.h', 'omp.h', 'oneapi/dnnl/dnnl.h', 'jansson.h', 'pcre2.h', 'zmq.h', 'microhttpd.h', 'sodium.h',
           'utf8proc.h', 'xxhash.h', 'loraps.pb-c.h', 'protobuf-c/protobuf-c.h', 'cmocka.h',
           'tensorboard.pb-c.h', 'isa-l/crc.h'}
OUTSIDE_PREFIXES = ('cuda', 'cublas', 'cudnn', 'nccl', 'protobuf-c/', 'sodium/', 'oneapi/', 'dnnl')

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def sources(folder, recurse=False):
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith(('.c', '.h', '.cu', '.cuh')):
            yield path


def library_headers():
    owner = {}
    for lib in LAYERS:
        folder = os.path.join(COMMON, lib)
        if not os.path.isdir(folder):
            continue
        for path in sources(folder):
            if path.endswith(('.h', '.cuh')):
                owner[os.path.basename(path)] = lib
    return owner


def check_layers():
    owner = library_headers()
    problems = []
    for lib, (below, outside_ok) in LAYERS.items():
        folder = os.path.join(COMMON, lib)
        if not os.path.isdir(folder):
            continue
        for path in sources(folder):
            text = open(path, encoding='utf-8').read()
            rel = os.path.relpath(path, ROOT)
            for kind, header in INCLUDE.findall(text):
                base = os.path.basename(header)
                if kind == '"' and base in owner:
                    if owner[base] != lib and owner[base] not in below:
                        problems.append(f'{rel}: includes "{header}" of common/{owner[base]}, '
                                        f'which common/{lib} must not depend on')
                    continue
                outside = header in OUTSIDE or base in OUTSIDE or header.startswith(OUTSIDE_PREFIXES)
                if outside and header not in outside_ok and base not in outside_ok:
                    problems.append(f'{rel}: includes <{header}>, an outside library '
                                    f'common/{lib} does not link')
                if kind == '"' and not outside and base not in owner:
                    problems.append(f'{rel}: includes "{header}", which no library defines')
    for lib in os.listdir(COMMON):
        if os.path.isdir(os.path.join(COMMON, lib)) and lib not in LAYERS:
            problems.append(f'common/{lib}: a library the layer table does not know')
    return problems


DEFINED_FN = re.compile(r'^[A-Za-z_][\w \*]*?\b([a-z_]\w*)\s*\([^;{]*\)\s*\{', re.M)
DEFINED_TYPE = re.compile(r'^typedef\s+(?:struct|enum|union)\s+\w*\s*\{.*?\}\s*(\w+)\s*;', re.M | re.S)
IDENT = re.compile(r'\b[A-Za-z_]\w*\b')
# Comments and string or character literals, in one pass: a "//" inside a string (a URL) is no
# comment, and a quote inside a comment opens no string.
LITERAL = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|/\*.*?\*/|//[^\n]*', re.S)


def code_only(text):
    return LITERAL.sub(lambda m: '""' if m.group(0)[0] in '"\'' else ' ', text)


def circles(folder):
    """Loops of uses between the files of one folder (a .c and its .h count as one file; what a
    header declares is not a use, what a .c file calls or names is)."""
    unit = lambda p: os.path.splitext(os.path.basename(p))[0]
    defined, text_of = {}, defaultdict(str)
    for path in sources(folder):
        text = code_only(open(path, encoding='utf-8').read())
        if path.endswith(('.c', '.cu')):
            text_of[unit(path)] += text
            for m in DEFINED_FN.finditer(text):
                if not m.group(0).startswith('static'):
                    defined.setdefault(m.group(1), unit(path))
        for m in DEFINED_TYPE.finditer(text):
            defined.setdefault(m.group(1), unit(path))
    uses = defaultdict(set)
    for u, text in text_of.items():
        for ident in set(IDENT.findall(text)):
            v = defined.get(ident)
            if v and v != u:
                uses[u].add((v, ident))
    edges = {u: {v for v, _ in vs} for u, vs in uses.items()}
    # strongly connected components (Tarjan)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(u):
        index[u] = low[u] = counter[0]
        counter[0] += 1
        stack.append(u)
        on.add(u)
        for v in edges.get(u, ()):
            if v not in index:
                visit(v)
                low[u] = min(low[u], low[v])
            elif v in on:
                low[u] = min(low[u], index[v])
        if low[u] == index[u]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == u:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for u in list(text_of):
        if u not in index:
            visit(u)
    problems = []
    for comp in out:
        ties = [f'{u} -> {v} ({n})' for u in comp for v, n in sorted(uses[u]) if v in comp]
        problems.append(f'{os.path.relpath(folder, ROOT)}: a circle of {", ".join(comp)}: '
                        + '; '.join(ties[:8]))
    return problems


def main():
    problems = check_layers()
    for folder in sys.argv[2:]:
        problems += circles(os.path.join(ROOT, folder))
    for p in problems:
        print(p)
    print(f'check_layers: {len(problems)} problem(s)')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
