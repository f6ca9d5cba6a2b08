#!/usr/bin/env bash
# A longer fuzzing run of every target (default 300 s each; ./scripts/test
# runs 5 s each), printed as a Markdown table with the date and commit.
#   bench/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
echo "# Fuzzing, $(date -u +%Y-%m-%d), $(git rev-parse --short HEAD), ${secs}s per target"
echo
echo '| target | runs | time | new corpus | seeds |'
echo '| --- | --- | --- | --- | --- |'
scripts/fuzz "$secs" | awk '{printf "| %s | %s | %s | %s | %s |\n", $1, $2, $5, $8, $11}'
