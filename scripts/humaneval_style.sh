#!/usr/bin/env bash
# Issue 18's measurement: a style skill learned from a repository, on HumanEval's test half, three modes, and its
# composition with tool-habits (BFCL simple_python, first 64 test cases). Hours on 2 CPU cores; one step at a time.
#   scripts/humaneval_style.sh SOURCE TOOL_HABITS_HOME OUT_DIR
# SOURCE: the repository to learn (a clean clone, so its commit is what was read); TOOL_HABITS_HOME: a home whose
# store holds a tool-habits skill on the same base. Homes are made under OUT_DIR (models linked from ~/.habitloop).
# Then: python scripts/humaneval_style.py OUT_DIR (docs/humaneval-style.json + .png).
set -euo pipefail
SOURCE=$1; HABITS=$2; OUT=$3
HL=${HL:-.venv/bin/habitloop}
export HF_HUB_OFFLINE=1 ANONYMIZED_TELEMETRY=False
mkdir -p "$OUT"
home() { mkdir -p "$OUT/$1"; [ -e "$OUT/$1/models" ] || ln -s ~/.habitloop/models "$OUT/$1/models"; echo "$OUT/$1"; }
SKILL=$(home skill); RETR=$(home retrieval)
step() { echo "$(date +%T) $*" >&2; }
if [ ! -d "$SKILL/skills/python-style" ]; then
  step learn-style
  HABITLOOP_HOME=$SKILL $HL skills learn-style "$SOURCE" --name python-style --json > "$OUT/learn.json"
fi
if [ ! -f "$OUT/retrieval-learn.json" ]; then
  step record-only
  HABITLOOP_HOME=$SKILL $HL skills export python-style -o "$OUT/python-style.tar.gz"
  HABITLOOP_HOME=$RETR $HL skills import "$OUT/python-style.tar.gz"
  HABITLOOP_HOME=$RETR $HL skills learn-style "$SOURCE" --name python-style --record-only --json > "$OUT/retrieval-learn.json"
fi
eval_he() {  # name home mode skill
  [ -f "$OUT/he-$1.json" ] && return
  step "humaneval $1"
  HABITLOOP_HOME=$2 $HL eval humaneval --mode "$3" --skill "$4" --split test --json --out "$OUT/he-$1.jsonl" > "$OUT/he-$1.json"
}
eval_he base "$SKILL" base python-style
eval_he retrieval "$RETR" retrieval python-style
eval_he skill "$SKILL" skill python-style
if [ ! -d "$SKILL/skills/tool-habits" ]; then
  HABITLOOP_HOME=$HABITS $HL skills export tool-habits -o "$OUT/tool-habits.tar.gz"
  HABITLOOP_HOME=$SKILL $HL skills import "$OUT/tool-habits.tar.gz"
fi
eval_he composed "$SKILL" skill tool-habits+python-style
eval_bfcl() {  # name skill
  [ -f "$OUT/bfcl-$1.json" ] && return
  step "bfcl $1"
  HABITLOOP_HOME=$SKILL $HL eval bfcl --category simple_python --split test --limit 64 --mode skill --skill "$2" --json --out "$OUT/bfcl-$1.jsonl" > "$OUT/bfcl-$1.json"
}
eval_bfcl habits tool-habits
eval_bfcl composed tool-habits+python-style
step done
