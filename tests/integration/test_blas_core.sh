#!/usr/bin/env bash
# OpenBLAS' core at start-up, with real processes: auto restarts a process whose OpenBLAS chose
# kernels below what the CPU runs (arguments intact, one line on stderr, the core taken), keep
# and an OPENBLAS_CORETYPE already set are left alone, a bad LORAPS_BLAS_CORE fails clearly; and
# the golden-vector tests pass under every core this CPU can be switched to.
source "$(dirname "$0")/lib.sh"
P=$B/blas_core_probe
unset OPENBLAS_CORETYPE LORAPS_BLAS_CORE

value() { sed -n "s/^$1 //p" "$2"; }
level() { # a core's f32 level, as compute/cpu/blas_core.c's auto ranks them (Cooperlake's f32
    # kernels are SkylakeX's)
    case $1 in
    Cooperlake | SkylakeX) echo 3 ;; Haswell | Zen) echo 2 ;;
    Sandybridge | Bulldozer | Piledriver | Steamroller | Excavator) echo 1 ;; *) echo 0 ;;
    esac
}

# keep: OpenBLAS' own choice, silently
LORAPS_BLAS_CORE=keep "$P" >"$TMP/own.out" 2>"$TMP/own.err"
own=$(value core "$TMP/own.out")
best=$(value best "$TMP/own.out")
[ -s "$TMP/own.err" ] && fail "keep printed: $(cat "$TMP/own.err")"
echo "OpenBLAS chose $own; the best core for this CPU: $best"

# auto
"$P" one "two words" >"$TMP/auto.out" 2>"$TMP/auto.err"
grep -qx "arg one" "$TMP/auto.out" && grep -qx "arg two words" "$TMP/auto.out" ||
    fail "the arguments did not survive: $(cat "$TMP/auto.out")"
[ "$(value marker "$TMP/auto.out")" = unset ] || fail "the restart marker leaked into the process"
if [ "$best" != none ] && [ "$(level "$own")" -lt "$(level "$best")" ]; then
    [ "$(value core "$TMP/auto.out")" = "$best" ] || fail "auto runs $(value core "$TMP/auto.out"), not $best"
    [ "$(value coretype "$TMP/auto.out")" = "$best" ] || fail "OPENBLAS_CORETYPE is not $best"
    [ "$(wc -l <"$TMP/auto.err")" = 1 ] || fail "auto said more than one line: $(cat "$TMP/auto.err")"
    grep -q "OpenBLAS chose its $own kernels.*restarting with OPENBLAS_CORETYPE=$best" "$TMP/auto.err" ||
        fail "auto's line: $(cat "$TMP/auto.err")"
else
    [ "$(value core "$TMP/auto.out")" = "$own" ] || fail "auto changed a core that matches the CPU"
    [ -s "$TMP/auto.err" ] && fail "auto printed: $(cat "$TMP/auto.err")"
fi

# a named core: a switch that every AVX machine can make, in any direction
if [ "$(level "$best")" -ge 1 ]; then
    LORAPS_BLAS_CORE=sandybridge "$P" >"$TMP/named.out" 2>"$TMP/named.err"
    [ "$(value core "$TMP/named.out")" = Sandybridge ] || fail "LORAPS_BLAS_CORE=sandybridge runs $(value core "$TMP/named.out")"
    grep -q "LORAPS_BLAS_CORE asks for Sandybridge" "$TMP/named.err" || fail "no line for the named core"
fi

# an OPENBLAS_CORETYPE already set is never overridden
OPENBLAS_CORETYPE=Prescott LORAPS_BLAS_CORE=Haswell "$P" >"$TMP/set.out" 2>"$TMP/set.err"
[ "$(value core "$TMP/set.out")" = Prescott ] || fail "a set OPENBLAS_CORETYPE was overridden"
grep -q "OPENBLAS_CORETYPE=Prescott is set and kept: LORAPS_BLAS_CORE=Haswell is not applied" \
    "$TMP/set.err" || fail "no line for the kept OPENBLAS_CORETYPE: $(cat "$TMP/set.err")"
OPENBLAS_CORETYPE=Prescott "$P" >"$TMP/set2.out" 2>"$TMP/set2.err"
[ "$(value core "$TMP/set2.out")" = Prescott ] || fail "auto overrode a set OPENBLAS_CORETYPE"

# a bad setting fails, naming itself
rc=0
LORAPS_BLAS_CORE=fastest "$P" >"$TMP/bad.out" 2>"$TMP/bad.err" || rc=$?
[ $rc = 2 ] || fail "LORAPS_BLAS_CORE=fastest exited $rc, not 2"
grep -q "blas_core_probe: error: LORAPS_BLAS_CORE=fastest: not auto, keep or an OpenBLAS core" \
    "$TMP/bad.err" || fail "bad setting's message: $(cat "$TMP/bad.err")"

# the golden vectors under every core this CPU can be switched to, OpenBLAS' own and generic SSE3
cores="Prescott $own"
for c in Sandybridge Haswell SkylakeX Cooperlake; do
    [ "$(level "$c")" -le "$(level "$best")" ] && [ "$best" != none ] && cores="$cores $c"
done
for c in $cores; do
    for t in test_golden_gpt2 test_llama_golden; do
        OPENBLAS_CORETYPE=$c "$B/$t" >"$TMP/$t.$c.out" 2>&1 || fail "$t fails with OPENBLAS_CORETYPE=$c"
    done
done
echo "golden vectors pass with: $cores"
echo "PASS: test_blas_core"
