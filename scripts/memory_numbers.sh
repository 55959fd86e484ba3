#!/usr/bin/env bash
# The BFCL memory numbers in the README: play every user's conversations, consolidate each user's facts into their
# memory adapter, ask every question cold in all five modes, then the leak matrix. DEV users by default;
# `scripts/memory_numbers.sh --final` also runs the FINAL users (healthcare, student): run that once, for the
# final numbers only. Runs in $HABITLOOP_HOME (default ~/.habitloop); hours on 2 cores.
set -euo pipefail
final=()
users=(customer finance notetaker)
if [ "${1:-}" = "--final" ]; then final=(--final); users+=(healthcare student); fi
habitloop practice memory --scenario all "${final[@]}" --json > /dev/null
for user in "${users[@]}"; do
    habitloop consolidate --instance "$user" --facts --json > "/tmp/habitloop-consolidate-$user.json"
done
habitloop eval memory --scenario all "${final[@]}" --mode all --isolation --json --out reports/memory-eval.jsonl
