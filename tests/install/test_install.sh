#!/usr/bin/env bash
# Installs the build tree into a temporary prefix, builds the consumer project
# (tests/install) against it with CMake and with pkg-config, and runs the
# consumer and the installed ssm from a directory unrelated to the source
# and build trees, where no models/ folder can be found.
#   test_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/ssm_install_test.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

step() { echo "== $*"; }
check_file() { [ -e "$prefix/$1" ] || { echo "FAIL: cmake --install did not install $1"; ls -R "$prefix" | head -50; exit 1; }; }

step "cmake --install into a temporary prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log"; exit 1; }
for f in bin/ssm lib/libssm.so include/ssm/c_api.h include/ssm/model.hpp lib/cmake/ssm/ssmConfig.cmake \
         lib/pkgconfig/ssm.pc lib/ladspa/ssm_denoise.so share/ssm/denoiser/denoiser.safetensors; do
  check_file "$f"
done
model=$prefix/share/ssm/denoiser/denoiser.safetensors

step "the installed headers: the public ones (lib/include/ssm), no internal one (lib/internal/ssm)"
for h in "$src"/lib/include/ssm/*; do
  check_file "include/ssm/$(basename "$h")"
done
# blas.hpp by name as well, so that the check cannot pass on an empty lib/internal.
for h in "$src"/lib/internal/ssm/* "$src"/lib/internal/ssm/blas.hpp; do
  if [ -e "$prefix/include/ssm/$(basename "$h")" ]; then
    echo "FAIL: cmake --install installed the internal header ssm/$(basename "$h")"; exit 1
  fi
done
# Every installed header compiles against the installed tree alone: none of
# them includes an internal header.
all_headers=$work/all_headers.cpp
for h in "$prefix"/include/ssm/*; do echo "#include \"ssm/$(basename "$h")\""; done >"$all_headers"
${CXX:-c++} -std=c++20 -fsyntax-only -I"$prefix/include" "$all_headers" 2>"$work/headers.log" ||
  { echo "FAIL: the installed headers do not compile on their own:"; cat "$work/headers.log"; exit 1; }

run_dir=$work/elsewhere
mkdir -p "$run_dir"

step "consumer built with find_package(ssm)"
cmake -S "$src/tests/install" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
  >"$work/configure.log" 2>&1 || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/cmake-build" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
(cd "$run_dir" && "$work/cmake-build/consumer" "$model")

step "consumer built with pkg-config"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
cc_flags=$(pkg-config --cflags --libs ssm)
${CC:-cc} -o "$work/consumer-pc" "$src/tests/install/consumer.c" $cc_flags -lm -Wl,-rpath,"$prefix/lib"
(cd "$run_dir" && "$work/consumer-pc" "$model")

step "the installed ssm denoises with its built-in model"
cp "$src/samples/noisy_speech.flac" "$run_dir/noisy.flac"
cd "$run_dir"
"$prefix/bin/ssm" --version
"$prefix/bin/ssm" denoise noisy.flac builtin.wav 2>"$work/builtin.log" || { cat "$work/builtin.log"; exit 1; }
grep -q "built-in" "$work/builtin.log" || { echo "FAIL: ssm did not say it used the built-in model:"; cat "$work/builtin.log"; exit 1; }
"$prefix/bin/ssm" denoise noisy.flac file.wav --model "$model" 2>"$work/file.log" || { cat "$work/file.log"; exit 1; }
cmp builtin.wav file.wav || { echo "FAIL: the built-in model's output differs from the shipped model's"; exit 1; }

if [ -e "$build/lib/libssm_cuda.so" ]; then
  step "the installed ssm finds the installed CUDA module (P/lib/libssm_cuda.so)"
  check_file lib/libssm_cuda.so
  # A bad --math fails fast once the module is loaded (with a GPU); without
  # a GPU the module says so. Either way no "CUDA module ... not found".
  "$prefix/bin/ssm" bench kernels --math bogus >"$work/module.log" 2>&1 || true
  if grep -q "CUDA module" "$work/module.log" || ! grep -qE "no usable GPU|--math" "$work/module.log"; then
    echo "FAIL: the installed ssm did not load its CUDA module:"; cat "$work/module.log"; exit 1
  fi
  cat "$work/module.log"
fi

step "a missing --model is an error naming it"
if "$prefix/bin/ssm" denoise noisy.flac never.wav --model missing.safetensors 2>"$work/missing.log"; then
  echo "FAIL: a missing model was accepted"; exit 1
fi
grep -q "missing.safetensors" "$work/missing.log" || { cat "$work/missing.log"; exit 1; }
[ ! -e never.wav ] && [ ! -e never.wav.part ] || { echo "FAIL: output left behind"; exit 1; }
step "the installed plugin runs the built-in model (sox's ladspa effect)"
sox_help=$(sox --help-effect ladspa 2>&1 || true)
if command -v sox >/dev/null && [[ $sox_help == *"ladspa MODULE"* ]]; then
  LADSPA_PATH=$prefix/lib/ladspa sox noisy.flac -e floating-point plugin_builtin.wav ladspa ssm_denoise.so
  SSM_DENOISER_MODEL=$model LADSPA_PATH=$prefix/lib/ladspa sox noisy.flac -e floating-point plugin_file.wav ladspa ssm_denoise.so
  cmp plugin_builtin.wav plugin_file.wav || { echo "FAIL: the plugin's built-in model differs from the shipped one"; exit 1; }
else
  echo "skipped: no sox with a ladspa effect"
fi
echo "install test passed"
