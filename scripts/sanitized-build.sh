# Sourced by sanitize.sh and fuzz.sh: what their sanitized builds share.
#   toolchain          the Swift toolchain's root (its clang and sanitizer runtimes)
#   address_flags      `swift build` flags for ASan on Swift and C, with UBSan on C, no recovery
#   quietly CMD...     runs a build, showing its pages of linker notes only if it fails
swift=${SWIFT:-swift}
toolchain=$(dirname "$(dirname "$(readlink -f "$(command -v "$swift")")")")
address_flags=(--sanitize=address -Xcc -fsanitize=undefined -Xcc -fno-sanitize-recover=undefined)
build_log=$(mktemp)
quietly() { "$@" > "$build_log" 2>&1 || { cat "$build_log"; exit 1; }; }
