#!/usr/bin/env bash
# bench/readme-table.sh - the README's benchmark table from the latest
# bench/results/all-YYYY-MM-DD.md (written by bench/all.sh).
#
# USAGE
#   bench/readme-table.sh [REPORT]            # prints the Markdown block
#   bench/readme-table.sh --write [REPORT]    # puts it into README.md, between
#                                             # <!-- bench-table:start --> and
#                                             # <!-- bench-table:end -->
#   REPORT defaults to the newest bench/results/all-*.md (by its date).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export LC_ALL=C

die() { echo "readme-table: $*" >&2; exit 1; }
WRITE=0
REPORT=
while (($#)); do
  case $1 in
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --write) WRITE=1 ;;
    -*) die "unknown option $1" ;;
    *) REPORT=$1 ;;
  esac
  shift
done
if [[ -z $REPORT ]]; then
  REPORT=$(find bench/results -maxdepth 1 -name 'all-[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*.md' | sort | awk 'END { print }')
  [[ -n $REPORT ]] || die "no bench/results/all-*.md: run bench/all.sh first"
fi
[[ -f $REPORT ]] || die "no report $REPORT"
grep -q '^<!-- summary:start -->$' "$REPORT" || die "$REPORT has no summary (<!-- summary:start -->)"
if grep -q '^\*\*Quick smoke-test settings' "$REPORT"; then die "$REPORT is a --quick smoke test, not results"; fi

block() {
  local date machine
  date=$(awk 'NR == 1 { print $NF }' "$REPORT")
  machine=$(awk -F'host: ' '/^- started / { split($2, a, ";"); print a[1]; exit }' "$REPORT")
  echo "From \`$REPORT\` (\`bench/all.sh\`, $date; $machine):"
  echo
  awk '/^<!-- summary:end -->$/ { on = 0 } on; /^<!-- summary:start -->$/ { on = 1 }' "$REPORT"
}

if ((WRITE)); then
  if ! grep -q '^<!-- bench-table:start -->$' README.md || ! grep -q '^<!-- bench-table:end -->$' README.md; then
    die "README.md has no <!-- bench-table:start --> / <!-- bench-table:end --> markers"
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  block >"$tmp/table"
  awk -v f="$tmp/table" '
    /^<!-- bench-table:start -->$/ { print; while ((getline l < f) > 0) print l; skip = 1; next }
    /^<!-- bench-table:end -->$/ { skip = 0 }
    !skip' README.md >"$tmp/README.md"
  cat "$tmp/README.md" >README.md
  echo "README.md: benchmark table from $REPORT" >&2
else
  block
fi
