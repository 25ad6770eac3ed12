# Sourced by the scripts: tool locations (PATH order matters: npm's wasm-opt before any other).
NPM_TOOLS="${NPM_TOOLS:-$PWD/.tools/npm}"
export PATH="$NPM_TOOLS/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export NPM_TOOLS
# Python tools (kosoku, the Autobahn cases) in a venv
PY_TOOLS="${PY_TOOLS:-$PWD/.tools/py}"
export PY_TOOLS
