#!/bin/bash
# man-gate.sh: the gate for the man pages in man/ (DESIGN.md, "Man pages").
#
#   * every man/*.[1-8] passes `mandoc -T lint -W warning` without printing anything;
#   * every binary in bins/ (bins/NAME.rs or bins/NAME/) has a page man/NAME.[1-8];
#   * every long option that `NAME --help` prints, and for binaries with subcommands every
#     long option of every subcommand's --help (recursively), appears in that page, written
#     as roff (\-\-dir, \-\-tls\-cert) or plainly (--dir). roff comment lines do not count.
#   * every program's page (section 1 or 8) has the sections NAME, SYNOPSIS, DESCRIPTION,
#     OPTIONS, ENVIRONMENT, FILES, EXIT STATUS, EXAMPLES and SEE ALSO, in that order (other
#     sections may come between them).
#
# The binaries are those in target/debug; `cargo build --bins` runs first when one of them
# is missing or older than the sources (bins/, lib/, Cargo.toml, Cargo.lock).
#
# Prints one line per page checked; exits 1 with a message per problem if any check fails.
# Environment: CARGO (default cargo).
set -uo pipefail

PROG=man-gate
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=$ROOT/target/debug

die() { echo "$PROG: $*" >&2; exit 1; }

command -v mandoc >/dev/null || die "mandoc not found (Debian package: mandoc)"
command -v grep >/dev/null && echo x | grep -qP 'x' 2>/dev/null || die "grep -P (PCRE) not available"

cd "$ROOT" || die "cannot cd to $ROOT"

# Binaries: bins/NAME.rs and bins/NAME/ (a binary made of several files).
bins=()
for f in bins/*.rs bins/*/; do
  [ -e "$f" ] || continue
  n=${f%/}; n=${n##*/}; n=${n%.rs}
  bins+=("$n")
done

pages=()
for p in man/*.[1-8]; do [ -e "$p" ] && pages+=("$p"); done
[ ${#pages[@]} -gt 0 ] || die "no man pages in $ROOT/man"

# Build when a binary is missing or older than the newest source file.
need_build=no
newest=$(find bins lib Cargo.toml Cargo.lock -type f -printf '%T@\n' 2>/dev/null | sort -n | tail -n1)
for n in "${bins[@]}"; do
  b=$BIN_DIR/$n
  if [ ! -x "$b" ]; then need_build=yes; break; fi
  t=$(stat -c '%.Y' "$b" 2>/dev/null || stat -c '%Y' "$b")
  if [ -n "$newest" ] && awk -v a="$newest" -v b="$t" 'BEGIN { exit !(a > b) }'; then
    need_build=yes; break
  fi
done
if [ $need_build = yes ]; then
  log=$(mktemp "${TMPDIR:-/tmp}/man-gate.XXXXXX")
  trap 'rm -f "$log"' EXIT
  echo "$PROG: cargo build --bins (a binary is missing or older than the sources)"
  if ! "${CARGO:-cargo}" build --bins --quiet >"$log" 2>&1; then
    cat "$log" >&2
    die "cargo build --bins failed"
  fi
fi

failures=0
SECTIONS=(NAME SYNOPSIS DESCRIPTION OPTIONS ENVIRONMENT FILES "EXIT STATUS" EXAMPLES "SEE ALSO")
fail() { echo "$PROG: FAIL $*" >&2; failures=$((failures + 1)); }

# Long options of one command line's --help, as "OPTION<TAB>COMMAND" lines, then the same
# for each of its subcommands. $1: binary path; $2...: the subcommand words so far.
options_of() {
  local bin=$1; shift
  local words=("$@") out rc sub
  out=$("$bin" "${words[@]}" --help 2>&1); rc=$?
  if [ $rc -ne 0 ]; then
    echo "!ERROR	$(basename "$bin")${words[*]:+ ${words[*]}} --help exited $rc"
    return
  fi
  # Option lines: "  -d, --dir <DIR>  ..." or "      --listen <ADDR>  ...".
  printf '%s\n' "$out" |
    sed -nE 's/^[[:space:]]+(-[[:alnum:]], )?(--[[:alnum:]][[:alnum:]-]*).*/\2/p' |
    while read -r o; do printf '%s\t%s\n' "$o" "$(basename "$bin")${words[*]:+ ${words[*]}}"; done
  # Subcommands: the lines of the "Commands:" section up to the next blank line.
  for sub in $(printf '%s\n' "$out" |
      awk '/^Commands:/ { c = 1; next } c && /^[[:space:]]*$/ { c = 0 } c { print $1 }'); do
    [ "$sub" = help ] && continue
    options_of "$bin" "${words[@]}" "$sub"
  done
}

# A pattern that finds --OPT in roff source: each "-" may be written "\-", and the name
# must not continue (so --tls is not found inside --tls-cert).
pattern_of() {
  local h='(?:\\-|-)' out part parts
  IFS=- read -r -a parts <<<"${1#--}"
  out=$h$h${parts[0]}
  for part in "${parts[@]:1}"; do out=$out$h$part; done
  printf '%s(?![[:alnum:]_]|\\\\?-)' "$out"
}

declare -A page_of=()
for n in "${bins[@]}"; do
  found=
  for p in man/"$n".[1-8]; do [ -e "$p" ] && { found=$p; break; }; done
  if [ -z "$found" ]; then
    src=bins/$n.rs; [ -e "$src" ] || src=bins/$n/
    fail "$src has no man page (expected man/$n.1 or man/$n.8)"
  else
    page_of[$found]=$n
  fi
done

for p in "${pages[@]}"; do
  ok=yes
  lint=$(mandoc -T lint -W warning "$p" 2>&1)
  if [ -n "$lint" ]; then
    fail "$p: mandoc -T lint -W warning is not clean:"
    printf '%s\n' "$lint" | sed 's/^/    /' >&2
    ok=no
    note="lint warnings"
  else
    note="lint clean"
  fi
  n=${page_of[$p]:-}
  if [ -n "$n" ]; then
    # The sections every program page has, in this order.
    have=$(sed -n 's/^\.SH[[:space:]]*//p' "$p" | tr -d '"')
    last=0
    for sec in "${SECTIONS[@]}"; do
      at=$(grep -nxF -- "$sec" <<<"$have" | head -n1 | cut -d: -f1)
      if [ -z "$at" ]; then
        fail "$p: no $sec section"; ok=no
      elif [ "$at" -lt "$last" ]; then
        fail "$p: $sec is out of order (expected: ${SECTIONS[*]})"; ok=no
      else
        last=$at
      fi
    done
    bin=$BIN_DIR/$n
    if [ ! -x "$bin" ]; then
      fail "$p: $bin is missing, so its options cannot be checked (cargo build --bins)"
      ok=no
    else
      body=$(sed -e '/^\.\\"/d' -e "/^'\\\\\"/d" "$p")
      count=0; missing=0
      while IFS=$'\t' read -r opt from; do
        if [ "$opt" = '!ERROR' ]; then fail "$p: $from"; ok=no; continue; fi
        count=$((count + 1))
        if ! grep -qP -- "$(pattern_of "$opt")" <<<"$body"; then
          fail "$p: $opt (from '$from --help') is not documented"
          missing=$((missing + 1)); ok=no
        fi
      done < <(options_of "$bin" | sort -u -t$'\t' -k1,1)
      if [ "$count" -eq 0 ]; then
        fail "$p: no long option found in '$n --help' (every program has at least --help)"
        ok=no
      fi
      note="$note; $((count - missing)) of $count long options of '$n --help' documented"
    fi
  fi
  if [ $ok = yes ]; then
    echo "$PROG: ok   $p ($note)"
  else
    echo "$PROG: FAIL $p ($note)"
  fi
done

if [ $failures -gt 0 ]; then
  die "$failures problem(s) found"
fi
echo "$PROG: all ${#pages[@]} man pages pass"
