#!/bin/sh
# The man page (docs/token-broker.8) against what it documents, so that neither can drift:
#   1. it renders without a single groff warning (groff -ww, and man -l as users read it);
#   2. every option `token-broker --help` lists is in its OPTIONS section, and every option
#      that section lists is in --help;
#   3. every config key the loader accepts is in its CONFIGURATION section, and each top-level
#      key has an entry of its own. The keys are read from the loader itself: each object's
#      accepted keys are the list given to reject_unknown_keys() in src/config/config.cpp, the
#      one place that decides what "unknown key" means, so a key added there fails this test
#      until it is documented.
# usage: check-man-page.sh TOKEN_BROKER_BINARY MAN_PAGE CONFIG_CPP
set -eu
binary=$1
page=$2
loader=$3
failed=0
fail() {
  echo "FAIL: $*" >&2
  failed=1
}
export LC_ALL=C.UTF-8

# 1. Rendering.
warnings=$(groff -man -ww -z "$page" 2>&1) || fail "groff failed on $page"
[ -z "$warnings" ] || fail "groff warns about $page:
$warnings"
if command -v man >/dev/null 2>&1; then
  warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) || fail "man -l failed"
  [ -z "$warnings" ] || fail "man -l warns about $page:
$warnings"
fi

# A section's roff source, with \- as - and font escapes removed.
section() {
  awk -v name="$1" '
    /^\.SH / { inside = ($0 == ".SH " name || $0 == ".SH \"" name "\""); next }
    inside { print }
  ' "$page" | sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g'
}

# 2. Options, both ways. --help: the indented lines that start with an option. The page: the
# first option named on the line after each .TP of OPTIONS.
help_text=$("$binary" --help) || fail "$binary --help exited non-zero"
help_options=$(printf '%s\n' "$help_text" | sed -n 's/^ \{1,\}\(--[a-z][a-z-]*\).*/\1/p' | sort -u)
page_options=$(section OPTIONS | awk 'after_tp { print; after_tp = 0 } /^\.TP/ { after_tp = 1 }' |
  grep -o -- '--[a-z][a-z-]*' | sort -u)
[ "$(printf '%s\n' "$help_options" | wc -l)" -ge 8 ] ||
  fail "found only these options in --help: $help_options"
for option in $help_options; do
  printf '%s\n' "$page_options" | grep -qx -- "$option" ||
    fail "--help lists $option; the man page's OPTIONS section does not"
done
for option in $page_options; do
  printf '%s\n' "$help_options" | grep -qx -- "$option" ||
    fail "the man page documents $option; --help does not list it"
done
# The status command itself, too.
printf '%s\n' "$help_text" | grep -q 'token-broker status' || fail "--help lacks 'token-broker status'"
section OPTIONS | grep -q 'token-broker status' || fail "OPTIONS lacks the status command"

# 3. Config keys, from the loader's reject_unknown_keys(object, path, {"key", ...}) calls.
lists=$(perl -0777 -ne 'while (/reject_unknown_keys\((.*?)\{([^}]*)\}\s*\)/sg) {
  my ($path, $keys) = ($1, $2); $path =~ s/\s+/ /g;
  print "$path\t", join(" ", $keys =~ /"([^"]+)"/g), "\n" }' "$loader")
keys=$(printf '%s\n' "$lists" | cut -f2 | tr ' ' '\n' | sed '/^$/d' | sort -u)
[ "$(printf '%s\n' "$keys" | wc -l)" -ge 50 ] ||
  fail "read only $(printf '%s\n' "$keys" | wc -l) config keys from $loader: has its form changed?"
top_level=$(printf '%s\n' "$lists" | awk -F '\t' '$1 ~ /^document, "",/ { print $2 }')
[ -n "$top_level" ] || fail "found no top-level key list in $loader"
configuration=$(section CONFIGURATION)
for key in $keys; do
  printf '%s\n' "$configuration" | grep -q -- "\(^\|[^A-Za-z0-9_]\)$key\([^A-Za-z0-9_]\|$\)" ||
    fail "the config loader accepts \"$key\"; the man page's CONFIGURATION section does not name it"
done
for key in $top_level; do
  printf '%s\n' "$configuration" | awk 'after_tp { print; after_tp = 0 } /^\.TP/ { after_tp = 1 }' |
    grep -qx "\.B $key" || fail "top-level config key \"$key\" has no entry (.TP/.B $key)"
done

[ "$failed" -eq 0 ] || exit 1
echo "man page ok: $(printf '%s\n' "$help_options" | wc -l) options, $(printf '%s\n' "$keys" | wc -l) config keys"
