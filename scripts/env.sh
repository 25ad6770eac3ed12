# Sourced by the scripts: tool locations (PATH order matters: npm's wasm-opt before any other).
NPM_TOOLS="${NPM_TOOLS:-$PWD/.tools/npm}"
export PATH="$NPM_TOOLS/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export NPM_TOOLS
# Python tools (kosoku, the Autobahn cases) in a venv
PY_TOOLS="${PY_TOOLS:-$PWD/.tools/py}"
export PY_TOOLS
# The wasm features the SDK is built with, for every wasm-opt run
export WASM_OPT_FEATURES="--enable-bulk-memory --enable-reference-types --enable-nontrapping-float-to-int --enable-sign-ext --enable-multivalue --enable-mutable-globals"
