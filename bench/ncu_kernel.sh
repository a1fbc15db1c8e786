#!/usr/bin/env bash
# Profiles one kernel of a `qkv2ctx run` on the GPU machine with Nsight Compute: the headline
# metrics (time, instructions, issue activity, stall reasons per issued instruction), the executed
# instructions grouped by how often their line ran (per-warp code vs loop bodies), and the SASS lines
# with the most warp stall samples, so a kernel change can be judged by where its cycles go.
# Usage (repo root, after bench/device.sh built build-device):
#   bash bench/ncu_kernel.sh KERNEL_REGEX OUT_PREFIX -- <qkv2ctx run flags>
set -uo pipefail
regex="$1" prefix="$2"
shift 3
Q=build-device/tools/qkv2ctx/qkv2ctx
metrics=gpu__time_duration.sum,smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active
for r in barrier short_scoreboard long_scoreboard wait mio_throttle math_pipe_throttle not_selected dispatch_stall; do
  metrics+=",smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio"
done
ncu --kernel-name "regex:$regex" --launch-count 1 --set full --import-source no --metrics "$metrics" \
  -o "$prefix" -f "$Q" run "$@" >/dev/null 2>&1
ncu --import "$prefix.ncu-rep" --page raw --csv --metrics "$metrics" 2>/dev/null |
  python3 -c '
import csv, sys
rows = list(csv.reader(sys.stdin))
for name, value in zip(rows[0], rows[-1]):
    if "__" in name: print(f"{name:80s} {value}")'
# Source view: SASS with per-instruction stall samples; print the 40 hottest lines.
ncu --import "$prefix.ncu-rep" --page source --csv --print-source sass >"$prefix.sass.csv" 2>/dev/null
python3 - "$prefix.sass.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
while rows and "Source" not in rows[0]: rows.pop(0)  # a kernel-name line comes first
if not rows: sys.exit("no source page")
head = rows[0]
def col(*names):
    for n in names:
        for i, h in enumerate(head):
            if h.strip().lower() == n.lower(): return i
    return None
src = col("Source"); samp = col("Warp Stall Sampling (All Samples)", "Sampling Data (All)")
exe = col("Instructions Executed")
stall_cols = [(i, h[6:]) for i, h in enumerate(head) if h.startswith("stall_") and "Not Issued" not in h]
if src is None or samp is None:
    print("columns:", head); sys.exit()
def num(v):
    try: return float(v or 0)
    except ValueError: return 0.0
data, by_reason, by_opcode = [], {}, {}
for r in rows[1:]:
    if len(r) <= max(src, samp): continue
    s = num(r[samp])
    top = max(stall_cols, key=lambda c: num(r[c[0]]), default=(0, ""))
    data.append((s, r[src].strip(), r[exe] if exe is not None else "", top[1]))
    for i, name in stall_cols: by_reason[name] = by_reason.get(name, 0) + num(r[i])
    op = r[src].split()[0] if r[src].split() else "?"
    if op.startswith("@"): op = r[src].split()[1]
    by_opcode[op.split(".")[0]] = by_opcode.get(op.split(".")[0], 0) + s
# Executed instructions grouped by how often their SASS line ran: the class run by every warp once is
# per-warp (prologue/epilogue) code, multiples of it are loop bodies (e.g. once per K/V tile).
by_exec = {}
for s, line, e, why in data:
    n = num(e)
    if n > 0: by_exec[n] = by_exec.get(n, 0) + n
all_exec = sum(by_exec.values()) or 1
print("executed instructions by per-line count (count x lines: share):",
      ", ".join(f"{k:.0f} x {v / k:.0f}: {100 * v / all_exec:.1f}%" for k, v in sorted(by_exec.items(), key=lambda x: -x[1])[:5]))
total = sum(d[0] for d in data) or 1
print(f"stall samples: {total:.0f}")
print("by reason:", ", ".join(f"{k} {100*v/total:.1f}%" for k, v in sorted(by_reason.items(), key=lambda x: -x[1])[:8]))
print("by opcode:", ", ".join(f"{k} {100*v/total:.1f}%" for k, v in sorted(by_opcode.items(), key=lambda x: -x[1])[:12]))
for s, line, e, why in sorted(data, reverse=True)[:40]:
    print(f"{100*s/total:5.1f}%  exec {e:>10s}  {why:12s} {line}")
PY
