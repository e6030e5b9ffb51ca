#!/usr/bin/env bash
# Compile one csrc/*.cu (or ops.cpp) with the extension's exact flags, to /tmp, without linking:
# a quick syntax/template check before the file joins a full build.
#   bash scripts/compile_one.sh csrc/rope.cu
# Needs one prior in-place build (python setup.py build_ext --inplace) for its compile_commands.json.
set -euo pipefail
src=$(realpath "$1")
db=$(ls build/temp.*/cmake/compile_commands.json 2>/dev/null | head -n 1)
[ -n "$db" ] || { echo "no compile_commands.json: run python setup.py build_ext --inplace once"; exit 1; }
python3 - "$db" "$src" <<'PY'
import json, os, re, shlex, subprocess, sys
db, src = sys.argv[1], sys.argv[2]
entries = json.load(open(db))
kind = ".cu" if src.endswith(".cu") else ".cpp"
template = next(e for e in entries if e["file"].endswith(kind))
cmd = template["command"].replace(template["file"], src)
cmd = re.sub(r"-o \S+", f"-o /tmp/compile_one_{os.path.basename(src)}.o", cmd)
print("+", os.path.basename(src))
sys.exit(subprocess.run(cmd, shell=True, cwd=template["directory"]).returncode)
PY
