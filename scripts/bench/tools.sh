# Sourced by the bench scripts that drive scripts/bench/hotpath.c against
# an ldsaref command: `bench_tools WORK` sets $cli (a copy in WORK of
# $LDSAREF_BIN, or of this tree's release build, built first) and $driver
# (hotpath.c compiled into WORK). Run from the repository's root.
bench_tools() { # WORK
    cli=$1/ldsaref
    if [ -n "${LDSAREF_BIN:-}" ]; then
        # Another build to compare (e.g. main's, built in a target dir of its own).
        cp "$LDSAREF_BIN" "$cli"
    else
        cargo build --release -p ldsaref-cli >&2
        cp target/release/ldsaref "$cli"
    fi
    driver=$1/hotpath
    gcc -O2 -Wall -Wextra -o "$driver" scripts/bench/hotpath.c
}
