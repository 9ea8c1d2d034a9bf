# Sourced by scripts/test and .ci/run: the steps that install what the build and the tests need
# where it is missing (Debian's packages, the s3s-fs S3 server, a python with the readers'
# packages), keeping the slow parts under ~/.cache/fruits-ci, and `phase`; exports where the
# tools are.
# shellcheck shell=bash

CACHE="$HOME/.cache/fruits-ci"
export CARGO_TERM_COLOR=never

# `phase NAME COMMAND...`: runs COMMAND, then prints how long it took (the CI log's timings),
# failed or not, and returns its status.
phase() {
    local name=$1 start=$SECONDS rc=0
    shift
    echo "== phase $name: started"
    "$@" || rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "== phase $name: $((SECONDS - start)) s"
    else
        echo "== phase $name: $((SECONDS - start)) s, failed (exit $rc)"
    fi
    return "$rc"
}

# Debian's packages: nasm (libjpeg-turbo's SIMD decoder; mozjpeg-sys builds without it, only
# slower, so it comes before the first build), chromium + chromium-driver (the browser tests),
# iproute2 (`ip`: tests/hosts.rs runs the cluster across network namespaces, as root),
# and shellcheck, which .ci/run checks the shell scripts with.
apt_missing() {
    local missing=()
    command -v nasm >/dev/null 2>&1 || missing+=(nasm)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
    echo "${missing[@]}"
}
install_apt() {
    local missing
    missing=$(apt_missing)
    [ -n "$missing" ] || return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        # shellcheck disable=SC2086 # one word per package
        (apt-get update -qq && apt-get install -y -qq $missing >/dev/null) \
            || echo "warning: could not install $missing; the tests that need them will fail"
    else
        echo "warning: $missing missing (install them as root); the tests that need them will skip"
    fi
}

# s3s-fs: the real S3 server the S3 tests start on loopback (~5 min to build cold).
install_s3s_fs() {
    if [ ! -x "$CACHE/tools/bin/s3s-fs" ]; then
        cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$CACHE/tools"
    fi
}

# A python with pyarrow, pandas and DuckDB (tests/readers.rs reads a result with each, and a
# Delta table with deltalake and polars) and PyYAML (tests/deploy.rs reads the compose file and
# the Kubernetes manifests).
install_python() {
    local py="$CACHE/py-readers"
    if [ ! -x "$py/bin/python" ] \
        || ! "$py/bin/python" -c "import pyarrow, pandas, duckdb, yaml, deltalake, polars" 2>/dev/null; then
        rm -rf "$py"
        python3 -m venv "$py"
        "$py/bin/pip" install -q pyarrow==26.0.1 pandas==3.1.1 duckdb==2.0.1 pyyaml==6.0.2 \
            deltalake==1.6.6 polars==2.1.0
    fi
}

export PATH="$CACHE/tools/bin:$PATH"
export FRUITS_PYTHON="${FRUITS_PYTHON:-$CACHE/py-readers/bin/python}"
